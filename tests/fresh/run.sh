#!/usr/bin/env bash
# The fresh-machine check: do the README's two commands work, exactly as written, on a Debian 12 machine that has
# nothing but the .NET SDK?
#
# Builds a minimal Debian 12 root with debootstrap (--variant=minbase, plus git, ca-certificates and libicu72, which
# the .NET SDK itself needs), copies in this machine's .NET SDK and the settings every machine here has for reaching
# the package registries (CA certificates, apt sources and acquire settings, NuGet configuration and NUGET_/DOTNET_
# variables), clones this repository's committed HEAD into it, and runs the two commands of the README's "Two
# commands" block there, one after the other, as root in a clean environment. Passes when both exit 0 and the test
# command's last line says "N passed, 0 failed".
#
# Usage (as root): tests/fresh/run.sh [--keep] [--work DIR]
#   --keep      leave the root in place afterwards (it is removed by default)
#   --work DIR  where to build the root (default: a new folder under /var/tmp)
# Logs: <work>/demo.log and <work>/test.log; their last lines are printed.
#
# Why the root is bind-mounted onto itself: a chroot whose root is not a mount point has no "/" entry in
# /proc/self/mountinfo, and PowerShell's file system provider then resolves absolute paths wrongly (it stats
# "/oot/.nuget/..." for "/root/.nuget/..."), so it finds no module at all ("The term 'Join-Path' is not
# recognized", Get-Module -ListAvailable counts 0). Every real machine, container and VM has "/" mounted.
set -euo pipefail

keep=0
work=""
while (($# > 0)); do
  case "$1" in
    --keep) keep=1 ;;
    --work) work="$2"; shift ;;
    *) echo "usage: $0 [--keep] [--work DIR]" >&2; exit 2 ;;
  esac
  shift
done

if [[ $(id -u) -ne 0 ]]; then
  echo "fresh: needs root (debootstrap, mount, chroot)" >&2
  exit 2
fi

repo=$(git -C "$(dirname "${BASH_SOURCE[0]}")" rev-parse --show-toplevel)
readme="$repo/README.md"

# The README's two commands: the non-comment lines of the bash block under "## Two commands".
mapfile -t commands < <(awk '
  /^## Two commands/ { section = 1; next }
  /^## / { section = 0 }
  section && /^```bash/ { block = 1; next }
  section && block && /^```/ { block = 0; next }
  section && block && NF && !/^#/ { print }
' "$readme")
if ((${#commands[@]} != 2)); then
  echo "fresh: expected 2 commands in README.md's 'Two commands' block, found ${#commands[@]}" >&2
  exit 1
fi

if ! command -v debootstrap >/dev/null; then
  echo "fresh: installing debootstrap"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
fi

dotnet_exe=$(readlink -f "$(command -v dotnet)")
dotnet_root=$(dirname "$dotnet_exe")

if [[ -z "$work" ]]; then
  work=$(mktemp -d /var/tmp/de-fresh.XXXXXX)
fi
mkdir -p "$work"
root="$work/root"

cleanup() {
  local status=$?
  # Deepest mounts first; /sys and /dev were bound recursively.
  for m in "$root/dev" "$root/sys" "$root/proc" "$root"; do
    if mountpoint -q "$m" 2>/dev/null; then umount -R "$m" 2>/dev/null || umount -lR "$m" 2>/dev/null || true; fi
  done
  if ((keep == 0)) && ! grep -q " $root" /proc/self/mounts; then
    rm -rf "$root"
  fi
  exit "$status"
}
trap cleanup EXIT

step() { echo "==> fresh: $*"; }

# The machine's own Debian mirror (from its apt sources), so the root is made from the same registry.
mirror=$(grep -hoE '^URIs:[[:space:]]*[^[:space:]]+' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{ print $2 }' | grep -v security | head -n 1 || true)
if [[ -z "$mirror" ]]; then
  mirror=$(grep -hoE '^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?[^[:space:]]+' /etc/apt/sources.list 2>/dev/null | awk '{ print $NF }' | head -n 1 || true)
fi

step "debootstrap --variant=minbase bookworm $root"
start=$SECONDS
debootstrap --variant=minbase --include=git,ca-certificates,libicu72 bookworm "$root" ${mirror:+"$mirror"} > "$work/debootstrap.log" 2>&1 \
  || { tail -n 20 "$work/debootstrap.log"; exit 1; }

step "the .NET SDK ($dotnet_root) and this machine's registry settings"
mkdir -p "$root/usr/share"
cp -a "$dotnet_root" "$root/usr/share/dotnet"
ln -sf /usr/share/dotnet/dotnet "$root/usr/bin/dotnet"
cp -a /usr/local/share/ca-certificates/. "$root/usr/local/share/ca-certificates/" 2>/dev/null || true
chroot "$root" update-ca-certificates >/dev/null
rm -f "$root/etc/apt/sources.list"
cp -a /etc/apt/sources.list.d/. "$root/etc/apt/sources.list.d/"
if [[ -f /etc/apt/sources.list ]]; then cp /etc/apt/sources.list "$root/etc/apt/sources.list"; fi
apt-config dump | grep '^Acquire::' | grep -v '^Acquire::IndexTargets' > "$root/etc/apt/apt.conf.d/90machine-acquire" || true
cp /etc/resolv.conf /etc/hosts "$root/etc/"
for config in "${HOME:-/root}/.nuget/NuGet/NuGet.Config" "${HOME:-/root}/.config/NuGet/NuGet.Config"; do
  if [[ -f "$config" ]]; then
    mkdir -p "$root/root/${config#"${HOME:-/root}/"}" && rmdir "$root/root/${config#"${HOME:-/root}/"}"
    cp "$config" "$root/root/${config#"${HOME:-/root}/"}"
  fi
done

step "mounts: the root on itself (so / is in the mount table), /proc, /sys, /dev"
mount --bind "$root" "$root"
mount -t proc proc "$root/proc"
mount --rbind /sys "$root/sys"
mount --rbind /dev "$root/dev"

step "git clone $repo (HEAD $(git -C "$repo" rev-parse --short HEAD))"
git clone --quiet "$repo" "$root/root/DifferenceEngine"

# A clean environment: what a login shell on a fresh machine has, plus the registry variables every machine here has.
environment=(HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 TERM=dumb)
while IFS= read -r variable; do
  environment+=("$variable")
done < <(env | grep -E '^(NUGET|DOTNET)_[A-Z0-9_]*=' || true)

run_command() {
  local name=$1 command=$2
  step "$name: $command"
  local begin=$SECONDS status=0
  chroot "$root" /usr/bin/env -i "${environment[@]}" /bin/bash -c "cd /root/DifferenceEngine && $command" \
    > "$work/$name.log" 2>&1 < /dev/null || status=$?
  echo "---- last lines of $work/$name.log (exit $status, $((SECONDS - begin)) s)"
  tail -n 12 "$work/$name.log"
  return "$status"
}

failed=0
run_command demo "${commands[0]}" || failed=1
run_command test "${commands[1]}" || failed=1
summary=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$work/test.log" | tail -n 1 || true)
if [[ ! "$summary" =~ ^[0-9]+\ passed,\ 0\ failed ]]; then
  failed=1
fi
if ! grep -q 'Report:' "$work/demo.log"; then
  echo "fresh: the Demo wrote no report line" >&2
  failed=1
fi

echo "==> fresh: $((SECONDS - start)) s in all; demo log $work/demo.log, test log $work/test.log"
if ((failed)); then
  echo "fresh: FAILED: the README's commands did not both pass on a fresh Debian 12 root"
  exit 1
fi
echo "fresh: passed: both README commands, as written, on a fresh Debian 12 root ($summary)"
