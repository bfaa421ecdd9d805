/* libdeguard.so: see deguard.h. */
#define _GNU_SOURCE
#include "deguard.h"

#include <errno.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#define PAGE 4096ull
#define MAX_REGIONS 64

struct deguard {
    int uffd;
    int stopfd;
    int count;
    int32_t pid;
    pthread_t thread;
    struct deguard_region regions[MAX_REGIONS];
    const uint64_t *punched;
    uint64_t pages;
    uint64_t filled;
};

static void stop_process(const struct deguard *g, const char *why, uint64_t address, int64_t gfn, int err)
{
    fprintf(stderr,
            "DifferenceEngine: the read guard of QEMU %d's RAM stops the process: %s (address 0x%llx, gfn %lld%s%s).\n",
            (int)g->pid, why, (unsigned long long)address, (long long)gfn, err ? ", " : "", err ? strerror(err) : "");
    fflush(stderr);
    abort();
}

static int64_t gfn_of(const struct deguard *g, uint64_t address)
{
    for (int i = 0; i < g->count; i++) {
        const struct deguard_region *r = &g->regions[i];
        if (address >= r->start && address < r->start + r->length) return r->first_gfn + (int64_t)((address - r->start) / PAGE);
    }
    return -1;
}

static int punched(const struct deguard *g, int64_t gfn)
{
    return __atomic_load_n(&g->punched[gfn >> 6], __ATOMIC_ACQUIRE) >> (gfn & 63) & 1;
}

static void answer(struct deguard *g, uint64_t address)
{
    int64_t gfn = gfn_of(g, address);
    if (gfn < 0 || (uint64_t)gfn >= g->pages) stop_process(g, "a fault outside the guest's mappings", address, gfn, 0);
    if (punched(g, gfn))
        stop_process(g, "the engine read a page it punched out of the guest's memory and holds (a bug of the engine; "
                        "the crash journal keeps the pages it held)", address, gfn, 0);
    /* Installed without waking, counted, then woken: a reader woken by the fill sees it counted. */
    struct uffdio_zeropage zero = { .range = { .start = address, .len = PAGE }, .mode = UFFDIO_ZEROPAGE_MODE_DONTWAKE };
    for (;;) {
        if (ioctl(g->uffd, UFFDIO_ZEROPAGE, &zero) == 0) {
            __atomic_add_fetch(&g->filled, 1, __ATOMIC_RELEASE);
            break;
        }
        if (errno == EINTR || errno == EAGAIN) continue; /* EAGAIN: the memory map changed under the call */
        if (errno == EEXIST) break;                      /* filled meanwhile (the guest faulted on it too) */
        stop_process(g, "UFFDIO_ZEROPAGE failed", address, gfn, errno);
    }
    struct uffdio_range range = { .start = address, .len = PAGE };
    if (ioctl(g->uffd, UFFDIO_WAKE, &range) != 0) stop_process(g, "UFFDIO_WAKE failed", address, gfn, errno);
}

static void *serve(void *arg)
{
    struct deguard *g = arg;
    struct pollfd fds[2] = { { .fd = g->uffd, .events = POLLIN }, { .fd = g->stopfd, .events = POLLIN } };
    struct uffd_msg messages[16];
    for (;;) {
        if (poll(fds, 2, -1) < 0) {
            if (errno == EINTR) continue;
            stop_process(g, "poll failed", 0, -1, errno);
        }
        if (fds[1].revents) return NULL;
        if (!(fds[0].revents & POLLIN)) continue;
        ssize_t n = read(g->uffd, messages, sizeof messages);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) continue;
            stop_process(g, "reading the guard's messages failed", 0, -1, errno);
        }
        for (size_t i = 0; i < (size_t)n / sizeof messages[0]; i++)
            if (messages[i].event == UFFD_EVENT_PAGEFAULT) answer(g, messages[i].arg.pagefault.address & ~(PAGE - 1));
    }
}

__attribute__((visibility("default")))
int deguard_start(int uffd, int stopfd, const struct deguard_region *regions, int count, const uint64_t *punched_bits,
                  uint64_t pages, int32_t pid, struct deguard **out)
{
    if (out == NULL || regions == NULL || punched_bits == NULL || count < 1 || count > MAX_REGIONS) return EINVAL;
    struct deguard *g = calloc(1, sizeof *g);
    if (g == NULL) return ENOMEM;
    g->uffd = uffd;
    g->stopfd = stopfd;
    g->count = count;
    g->pid = pid;
    memcpy(g->regions, regions, (size_t)count * sizeof regions[0]);
    g->punched = punched_bits;
    g->pages = pages;
    /* Every signal blocked in the thread: the process's handlers (the .NET runtime's) never run on it. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&g->thread, NULL, serve, g);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        free(g);
        return rc;
    }
    *out = g;
    return 0;
}

__attribute__((visibility("default")))
uint64_t deguard_filled(const struct deguard *g)
{
    return g == NULL ? 0 : __atomic_load_n(&g->filled, __ATOMIC_ACQUIRE);
}

__attribute__((visibility("default")))
void deguard_stop(struct deguard *g)
{
    if (g == NULL) return;
    pthread_join(g->thread, NULL);
    free(g);
}
