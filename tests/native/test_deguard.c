/*
 * The tests of libdeguard.so (native/deguard.c), the engine's native read guard: a memfd mapped read-only and
 * registered (missing mode, user-mode faults only) on a userfaultfd, served by the guard thread.
 *   - present pages read as they are, with no fault;
 *   - a hole the engine did not punch (QEMU let the page go) reads as zeros, gets a zero page in the memfd, and is
 *     counted before the read returns;
 *   - a hole the engine punched out itself (its mark set) stops the process: a child process reads one and must end
 *     by SIGABRT;
 *   - the guard stops when its eventfd is written.
 * Prints one "ok"/"not ok" line per test and a "# <n> passed, <m> failed" summary; exits 1 on any failure.
 * Run by tests/DifferenceEngine.Tests/Qemu/NativeQemuLibraryTests.cs.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/userfaultfd.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "deguard.h"

#define PAGE 4096ull
#define PAGES 64u
#define FIRST_GFN 100u

static int failures, passes;

static void report(int ok, const char *name)
{
    printf("%s - %s\n", ok ? "ok" : "not ok", name);
    fflush(stdout);
    if (ok) passes++;
    else failures++;
}

struct setup {
    int memfd, uffd, stopfd;
    const volatile uint8_t *ram;
    struct deguard *guard;
    uint64_t marks[(PAGES + FIRST_GFN + 63) / 64];
};

/* A guest RAM of PAGES pages, every page filled; pages 8-15 let go (as QEMU does), 16-23 punched and marked (as the
 * engine does); the guard started. 0, or -1 with errno (no userfaultfd: a skip). */
static int set_up(struct setup *s)
{
    memset(s, 0, sizeof *s);
    s->memfd = memfd_create("deguard-test", MFD_CLOEXEC);
    if (s->memfd < 0 || ftruncate(s->memfd, PAGES * PAGE) != 0) return -2;
    uint8_t *writer = mmap(NULL, PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, s->memfd, 0);
    s->ram = mmap(NULL, PAGES * PAGE, PROT_READ, MAP_SHARED, s->memfd, 0);
    if (writer == MAP_FAILED || s->ram == MAP_FAILED) return -2;
    for (unsigned i = 0; i < PAGES; i++) memset(writer + i * PAGE, 0x40 + (int)(i % 16), PAGE);
    munmap(writer, PAGES * PAGE);
    if (fallocate(s->memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 8 * PAGE, 16 * PAGE) != 0) return -2;
    for (unsigned g = 16; g < 24; g++) s->marks[(g + FIRST_GFN) / 64] |= 1ull << ((g + FIRST_GFN) % 64);
    s->uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
    if (s->uffd < 0) return -1;
    struct uffdio_api api = { .api = UFFD_API, .features = UFFD_FEATURE_MISSING_SHMEM };
    if (ioctl(s->uffd, UFFDIO_API, &api) != 0) return -1;
    struct uffdio_register reg = {
        .range = { .start = (uint64_t)(uintptr_t)s->ram, .len = PAGES * PAGE }, .mode = UFFDIO_REGISTER_MODE_MISSING,
    };
    if (ioctl(s->uffd, UFFDIO_REGISTER, &reg) != 0) return -1;
    s->stopfd = eventfd(0, EFD_CLOEXEC);
    struct deguard_region region = { .start = (uint64_t)(uintptr_t)s->ram, .length = PAGES * PAGE, .first_gfn = FIRST_GFN };
    return deguard_start(s->uffd, s->stopfd, &region, 1, s->marks, PAGES + FIRST_GFN, 4242, &s->guard) == 0 ? 0 : -2;
}

int main(int argc, char **argv)
{
    struct setup s;
    if (argc == 2 && strcmp(argv[1], "read-punched") == 0) {
        /* The child: set up, then read a page the engine punched out. The guard must stop the process. */
        if (set_up(&s) != 0) return 3;
        (void)s.ram[16 * PAGE];
        return 0; /* not reached if the guard works */
    }

    int rc = set_up(&s);
    if (rc == -1) {
        printf("ok - skipped: no userfaultfd here (%s)\n# 1 passed, 0 failed\n", strerror(errno));
        return 0;
    }
    report(rc == 0 && s.guard != NULL, "the guard starts");
    if (rc != 0) {
        printf("# %d passed, %d failed\n", passes, failures);
        return 1;
    }

    int present = 1;
    for (unsigned i = 0; i < 8; i++) present &= s.ram[i * PAGE + 17] == 0x40 + (i % 16);
    report(present && deguard_filled(s.guard) == 0, "present pages read as they are, with no fault");

    /* The count is exact as soon as the read returns: the guard counts a fill before it wakes the reader. */
    int zeros = 1, counted = 1;
    for (unsigned i = 8; i < 16; i++) {
        for (unsigned b = 0; b < PAGE; b += 512) zeros &= s.ram[i * PAGE + b] == 0;
        counted &= deguard_filled(s.guard) == i - 7;
    }
    report(zeros && counted, "holes the engine did not punch read as zeros, each filled and counted once, before the read returns");
    report(lseek(s.memfd, 8 * PAGE, SEEK_DATA) == (off_t)(8 * PAGE), "a filled hole is a page of the memfd now");
    report(lseek(s.memfd, 16 * PAGE, SEEK_DATA) == (off_t)(24 * PAGE), "the engine's holes are untouched");

    pid_t child = fork();
    if (child == 0) {
        execl("/proc/self/exe", argv[0], "read-punched", (char *)NULL);
        _exit(4);
    }
    int status = 0;
    waitpid(child, &status, 0);
    report(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT, "a read of a hole the engine punched stops the process (SIGABRT)");

    uint64_t one = 1;
    report(write(s.stopfd, &one, sizeof one) == sizeof one, "the stop is signalled");
    deguard_stop(s.guard);
    report(1, "the guard ends when its eventfd is written");

    printf("# %d passed, %d failed\n", passes, failures);
    return failures ? 1 : 0;
}
