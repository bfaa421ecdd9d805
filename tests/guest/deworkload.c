/*
 * deworkload: the test guests' workload, run as /init of a tiny initramfs under QEMU.
 *
 * It fills de.mem MiB with pages of several kinds (zero pages, pages every guest has, text that compresses, pages
 * that differ from a shared page by a few bytes, random pages), records a 64-bit checksum of every page, then loops:
 * verify every page, rewrite a few, print one line a round on the console:
 *
 *     deworkload round=N pages=P mismatches=M total=T rewritten=W checked=C us=U
 *     deworkload MISMATCH round=N page=G [pfn=F version=V differ=D first=O is=version|zeros|other N]
 *       (what the page holds instead: its guest-physical frame, the bytes that differ from version V last written and
 *       the first of them, and whether it is an older version N of the page, zeros, or neither; not with de.selftest)
 *     deworkload done rounds=N mismatches=T
 *
 * Options (kernel command line; dotted names reach no kernel code and are read from /proc/cmdline):
 *     de.mem=MiB         memory to fill (default 32)
 *     de.seed=N          this guest's seed: its random and similar pages (default 1); shared pages do not depend on it
 *     de.rounds=N        rounds before "done" and power-off; 0 runs until killed (default 3)
 *     de.rewrite=PERMIL  pages rewritten per round, per thousand (default 10)
 *     de.selftest=1      after round 1, change one byte of page 7 behind the checksums' back: round 2 must report it
 *     de.hold=1          after "done", keep the memory as it is and wait (no power-off) until killed
 *     de.grow=MiB        before round 3, fill this much more memory, never touched until then ("deworkload grew")
 *     de.gate=1          before that growth, print "deworkload waiting to grow" and wait for one byte on the console (the
 *                        host's go-ahead: a test attaches first, however slowly it runs next to the guest)
 *     de.mix=N           the kinds of pages: 0 a mix (default: 20% zero, 20% shared, 20% text, 20% similar, 20% unique),
 *                        1 mostly text (an application server: 60% text), 2 mostly unique data (a database: 60% unique)
 *     de.hot=PERCENT     the working set: a round verifies and rewrites only this share of the pages (default 100); the
 *                        rest stays cold and is verified once after the last round ("deworkload verified ...")
 *     de.pause=MS        sleep this long after each round (think time; default 0); a round's us= is its work alone
 *
 * Everything is deterministic for a seed: no clock, no randomness from the system.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096

static uint64_t mix(uint64_t x)
{
    /* splitmix64 */
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static uint64_t checksum(const unsigned char *p)
{
    /* FNV-1a over 64-bit words, then mixed: any changed byte changes it */
    const uint64_t *w = (const uint64_t *)p;
    uint64_t h = 0xcbf29ce484222325ULL;
    for (int i = 0; i < PAGE / 8; i++) h = (h ^ w[i]) * 0x100000001b3ULL;
    return mix(h);
}

static void fill_random(unsigned char *p, uint64_t seed)
{
    uint64_t *w = (uint64_t *)p;
    for (int i = 0; i < PAGE / 8; i++) w[i] = mix(seed * 4099 + (uint64_t)i);
}

static void fill_text(unsigned char *p, uint64_t seed)
{
    static const char *words[] = { "memory", "page", "guest", "share", "patch", "compress", "kernel", "engine",
                                   "frame", "clock", "cold", "hot", "delta", "store", "swap", "fault" };
    int o = 0;
    uint64_t s = seed;
    while (o < PAGE) {
        s = mix(s);
        const char *word = words[s & 15];
        int n = snprintf((char *)p + o, (size_t)(PAGE - o), "%s=%u; ", word, (unsigned)((s >> 8) % 1000));
        if (n <= 0 || n >= PAGE - o) { memset(p + o, ' ', (size_t)(PAGE - o)); break; }
        o += n;
    }
}

/* The mix of page kinds (de.mix): for each, the tenth of pages below which a page is zero, shared, text, similar. */
static const uint64_t mixes[3][4] = { { 2, 4, 6, 8 }, { 1, 2, 8, 9 }, { 1, 2, 3, 4 } };
static long page_mix;

/* Page g of a guest with seed `seed`: its kind is chosen by g alone, so every guest has the same layout. */
static void fill_page(unsigned char *p, uint64_t g, uint64_t seed, uint64_t version)
{
    const uint64_t *t = mixes[page_mix];
    uint64_t r = mix(g ^ 0x5eedULL) % 10;
    /* the kind in the default mix's terms: 0-1 zero, 2-3 shared, 4-5 text, 6-7 similar, 8-9 unique */
    uint64_t kind = r < t[0] ? 0 : r < t[1] ? 2 : r < t[2] ? 4 : r < t[3] ? 6 : 8;
    if (version == 0 && kind < 2) { memset(p, 0, PAGE); return; }              /* zero */
    if (version == 0 && kind < 4) { fill_random(p, 1000000 + g % 64); return; } /* shared: 64 contents, any seed */
    if (kind < 6) { fill_text(p, mix(seed) ^ g ^ (version << 40)); return; }     /* compressible text */
    if (kind < 8) {                                                              /* similar to a shared page */
        fill_random(p, 1000000 + g % 64);
        for (int k = 0; k < 4; k++) p[mix(seed + g * 8 + (uint64_t)k + version) % PAGE] ^= (unsigned char)(1 + k);
        return;
    }
    fill_random(p, mix(seed) ^ (g << 20) ^ version);                             /* unique */
}

static long now_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000L + t.tv_nsec / 1000;
}

static long option(const char *cmdline, const char *name, long fallback)
{
    const char *at = cmdline;
    size_t n = strlen(name);
    while ((at = strstr(at, name)) != NULL) {
        if ((at == cmdline || at[-1] == ' ') && at[n] == '=') return strtol(at + n + 1, NULL, 10);
        at += n;
    }
    return fallback;
}

/* The guest-physical frame of a page of this process (from /proc/self/pagemap; /init runs as root), or -1. */
static long long frame_of(const void *p)
{
    int fd = open("/proc/self/pagemap", O_RDONLY);
    if (fd < 0) return -1;
    uint64_t entry = 0;
    off_t at = (off_t)((uintptr_t)p / PAGE) * 8;
    long long pfn = -1;
    if (pread(fd, &entry, 8, at) == 8 && (entry >> 63)) pfn = (long long)(entry & ((1ULL << 55) - 1));
    close(fd);
    return pfn;
}

/*
 * What a page that failed its check holds instead, for the MISMATCH line: its frame, how many bytes differ from what
 * was last written and where the first is, and whether it is an older version of the page (a write lost), zeros, or
 * neither.
 */
static void describe(unsigned char *page, size_t g, uint64_t seed, uint64_t version, char *out, size_t size)
{
    static unsigned char expected[PAGE];
    fill_page(expected, g, seed, version);
    int differ = 0, first = -1;
    for (int i = 0; i < PAGE; i++)
        if (page[i] != expected[i]) { differ++; if (first < 0) first = i; }
    int zero = 1;
    for (int i = 0; i < PAGE && zero; i++) zero = page[i] == 0;
    long long older = -1;
    for (uint64_t v = version; v-- > 0 && version - v <= 64;) {
        fill_page(expected, g, seed, v);
        if (memcmp(expected, page, PAGE) == 0) { older = (long long)v; break; }
    }
    int n = snprintf(out, size, " pfn=%lld version=%llu differ=%d first=%d is=%s", frame_of(page), (unsigned long long)version,
                     differ, first, older >= 0 ? "version" : zero ? "zeros" : "other");
    if (older >= 0 && n > 0 && (size_t)n < size) snprintf(out + n, size - (size_t)n, " %lld", older);
}

/*
 * Waits for one byte on the console (fd 0, the serial port): the host's go-ahead. The console is put in raw mode without
 * echo first, so that the byte needs no newline and never appears among the workload's lines. False when it closes.
 */
static int wait_for_host(void)
{
    struct termios mode;
    if (tcgetattr(0, &mode) == 0) {
        mode.c_lflag &= ~(tcflag_t)(ICANON | ECHO);
        mode.c_cc[VMIN] = 1;
        mode.c_cc[VTIME] = 0;
        tcsetattr(0, TCSANOW, &mode);
    }
    printf("deworkload waiting to grow\n");
    char byte;
    ssize_t n;
    do n = read(0, &byte, 1); while (n < 0 && errno == EINTR);
    return n == 1;
}

int main(void)
{
    char cmdline[4096] = "";
    if (getpid() == 1) {
        mount("proc", "/proc", "proc", 0, NULL);
        mount("devtmpfs", "/dev", "devtmpfs", 0, NULL);
    }
    int fd = open("/proc/cmdline", O_RDONLY);
    if (fd >= 0) {
        ssize_t n = read(fd, cmdline, sizeof cmdline - 1);
        if (n > 0) cmdline[n] = 0;
        close(fd);
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    long mib = option(cmdline, "de.mem", 32), rounds = option(cmdline, "de.rounds", 3);
    long rewrite = option(cmdline, "de.rewrite", 10), selftest = option(cmdline, "de.selftest", 0);
    long hold = option(cmdline, "de.hold", 0), grow = option(cmdline, "de.grow", 0), gate = option(cmdline, "de.gate", 0);
    uint64_t seed = (uint64_t)option(cmdline, "de.seed", 1);
    long hot = option(cmdline, "de.hot", 100), pause_ms = option(cmdline, "de.pause", 0);
    page_mix = option(cmdline, "de.mix", 0);
    if (page_mix < 0 || page_mix > 2) page_mix = 0;
    if (hot < 1 || hot > 100) hot = 100;
    size_t pages = (size_t)mib * 256, most = (size_t)(mib + grow) * 256;
    unsigned char *mem = aligned_alloc(PAGE, most * PAGE); /* the grown part stays untouched until round 3 */
    uint64_t *sums = calloc(most, sizeof *sums);
    uint64_t *versions = calloc(most, sizeof *versions);
    if (!mem || !sums || !versions) { printf("deworkload FAILED no memory for %ld MiB\n", mib); goto end; }

    for (size_t g = 0; g < pages; g++) {
        fill_page(mem + g * PAGE, g, seed, 0);
        sums[g] = checksum(mem + g * PAGE);
    }
    printf("deworkload ready pages=%zu seed=%llu\n", pages, (unsigned long long)seed);

    long total = 0, round;
    for (round = 1; rounds == 0 || round <= rounds; round++) {
        if (round == 3 && most > pages) {
            if (gate && !wait_for_host()) { printf("deworkload FAILED the console closed before the go-ahead\n"); goto end; }
            for (size_t g = pages; g < most; g++) {
                fill_page(mem + g * PAGE, g, seed, 0);
                sums[g] = checksum(mem + g * PAGE);
            }
            pages = most;
            printf("deworkload grew pages=%zu\n", pages);
        }
        long bad = 0, started = now_us();
        size_t checked = 0;
        for (size_t g = 0; g < pages; g++) {
            if (hot < 100 && mix(g * 31 + seed) % 100 >= (uint64_t)hot) continue; /* cold: left alone */
            checked++;
            if (checksum(mem + g * PAGE) != sums[g]) {
                char what[160] = "";
                if (bad < 20 && !selftest) describe(mem + g * PAGE, g, seed, versions[g], what, sizeof what);
                if (bad < 20) printf("deworkload MISMATCH round=%ld page=%zu%s\n", round, g, what);
                bad++;
                sums[g] = checksum(mem + g * PAGE); /* reported once, not every round */
            }
        }
        total += bad;
        long written = 0;
        for (size_t g = 0; g < pages; g++) {
            if (hot < 100 && mix(g * 31 + seed) % 100 >= (uint64_t)hot) continue;
            if (mix(g * 7919 + (uint64_t)round + seed * 104729) % 1000 < (uint64_t)rewrite) {
                fill_page(mem + g * PAGE, g, seed, ++versions[g]);
                sums[g] = checksum(mem + g * PAGE);
                written++;
            }
        }
        if (selftest && round == 1 && pages > 7) mem[7 * PAGE + 123] ^= 0x40; /* the checker must catch this */
        printf("deworkload round=%ld pages=%zu mismatches=%ld total=%ld rewritten=%ld checked=%zu us=%ld\n", round, pages, bad,
               total, written, checked, now_us() - started);
        if (pause_ms > 0) {
            struct timespec pause = { pause_ms / 1000, (pause_ms % 1000) * 1000000L };
            nanosleep(&pause, NULL);
        }
    }
    if (hot < 100) {
        long bad = 0;
        for (size_t g = 0; g < pages; g++) {
            if (checksum(mem + g * PAGE) != sums[g]) {
                if (bad < 20) printf("deworkload MISMATCH round=%ld page=%zu\n", round, g);
                bad++;
            }
        }
        total += bad;
        printf("deworkload verified pages=%zu mismatches=%ld total=%ld\n", pages, bad, total);
    }
    printf("deworkload done rounds=%ld mismatches=%ld\n", round - 1, total);
    if (hold) for (;;) pause();
end:
    fflush(stdout);
    sync();
    if (getpid() == 1) reboot(RB_POWER_OFF);
    return 0;
}
