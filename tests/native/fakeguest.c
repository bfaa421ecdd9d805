/*
 * fakeguest: a stand-in for QEMU in the tests of libdeqemu.so. It makes its "guest RAM" the way QEMU's
 * memory-backend-memfd does (memfd_create("memory-backend-memfd"), a PROT_NONE reservation, then a shared MAP_FIXED
 * mapping of the memfd over it), so the preloaded library sees exactly QEMU's calls. Then it is the guest: it fills
 * the pages with data it can recompute (zero pages, duplicates, unique pages), keeps a version per page, and obeys
 * commands on stdin, one a line:
 *     write N     rewrites N pages (chosen by a seeded generator), answering "WROTE N"
 *     verify      reads every page and answers "VERIFY mismatches=M" (M pages differ from what it last wrote)
 *     discard A N lets pages A to A+N-1 go as QEMU's ram_block_discard_range does for a memfd (a virtio-balloon, free
 *                 page reporting): the hole punched, then the range dropped from its mapping; they read as zeros since.
 *                 Answers "DISCARDED N"
 *     map N       maps N more pages of guest RAM from a memfd of their own, as a second memory backend (or a hot-plugged
 *                 DIMM) is mapped; they follow the pages there were (write and verify take them too). Answers
 *                 "MAPPED <pages in all>"
 *     private N   makes a guest RAM memfd of N pages and maps it private, as a memory-backend-memfd with share=off is:
 *                 no region of the library's (and no part of what verify checks). Answers "PRIVATE N"
 *     exhaust     takes every free descriptor below 64 and lowers its soft RLIMIT_NOFILE to 64: no new descriptor can be
 *                 made, not even in place of one of 64 or more the library closes, so its accept() fails with EMFILE.
 *                 (A lower limit would fail the library's poll() too: EINVAL when it polls more descriptors than the
 *                 limit.) Answers "EXHAUSTED <descriptors taken in all>"
 *     release     gives back the descriptors taken and restores the limit. Answers "RELEASED <descriptors given back>"
 *     chdir /     changes its folder to /, as QEMU -daemonize does after it made guest RAM. Answers "CHDIR /"
 *     quit        exits 0
 * It says "READY <pid> <pages>" once its RAM is mapped and filled. Usage: fakeguest <pages> <seed> [option], option:
 *     private-first  a share=off memfd of 16 pages is made, as "private 16", before the guest RAM's
 *     fill-first     every free descriptor below 64 is taken (as "exhaust" does, with the limit left alone) before the
 *                    guest RAM is mapped, so that every descriptor the library makes is 64 or more: one it closes later
 *                    is above the limit "exhaust" sets, and cannot be made again. (A blocked accept() holds the
 *                    descriptor it will return from the moment it blocks: the library's first holds one from its start.)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#define PAGE 4096u
#define DISCARDED UINT32_MAX /* a page's version once let go: it reads as zeros */
#define MAX_RAM 8

/* The guest's RAM: its mappings, one after another in page numbers. */
static struct ram {
    uint8_t *base;
    uint64_t first, pages;
    int fd;
} rams[MAX_RAM];
static int ram_count;
static uint32_t *version;
static uint64_t pages;
static uint64_t seed;

#define FD_FLOOR 64
static int spare[FD_FLOOR]; /* descriptors taken by fill-first and "exhaust" */
static int spare_count;
static struct rlimit saved_limit;
static int limited;

static uint64_t mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

/* The bytes page i holds at a version: version 0 is every fourth page zero, every fourth a copy of one of 8 shared
 * pages, the rest unique; later versions are unique. */
static void content(uint64_t i, uint32_t v, uint8_t *out)
{
    uint64_t key;
    if ((v == 0 && i % 4 == 0) || v == DISCARDED) {
        memset(out, 0, PAGE);
        return;
    }
    key = (v == 0 && i % 4 == 1) ? mix(seed * 1000 + i % 8) : mix(seed ^ (i << 20) ^ ((uint64_t)v << 52) ^ 0x9e37);
    for (uint32_t w = 0; w < PAGE / 8; w++) {
        uint64_t x = mix(key + w);
        memcpy(out + w * 8, &x, 8);
    }
}

static struct ram *ram_of(uint64_t i)
{
    for (int r = 0; r < ram_count; r++)
        if (i - rams[r].first < rams[r].pages) return &rams[r];
    return NULL;
}

static uint8_t *page(uint64_t i)
{
    struct ram *r = ram_of(i);
    return r->base + (i - r->first) * PAGE;
}

/* Maps n more pages of guest RAM as QEMU maps a memory-backend-memfd,share=on, and fills them. */
static int map_ram(uint64_t n)
{
    size_t size = n * PAGE;
    if (ram_count == MAX_RAM) return -1;
    int fd = memfd_create("memory-backend-memfd", MFD_CLOEXEC);
    if (fd < 0 || ftruncate(fd, (off_t)size) != 0) return -1;
    void *reserved = mmap(NULL, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (reserved == MAP_FAILED) return -1;
    uint8_t *base = mmap(reserved, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0);
    uint32_t *more = realloc(version, (pages + n) * sizeof *version);
    if (base == MAP_FAILED || more == NULL) return -1;
    version = more;
    memset(version + pages, 0, n * sizeof *version);
    rams[ram_count++] = (struct ram){ .base = base, .first = pages, .pages = n, .fd = fd };
    for (uint64_t i = pages; i < pages + n; i++) content(i, 0, base + (i - pages) * PAGE);
    pages += n;
    return 0;
}

/* A memory-backend-memfd with share=off: QEMU maps its memfd private, so the library sees no shared mapping of it. */
static int map_private(uint64_t n)
{
    size_t size = n * PAGE;
    int fd = memfd_create("memory-backend-memfd", MFD_CLOEXEC);
    if (fd < 0 || ftruncate(fd, (off_t)size) != 0) return -1;
    uint8_t *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) return -1;
    memset(p, 0x5a, size);
    return 0;
}

/* Takes every free descriptor below FD_FLOOR. */
static void fill(void)
{
    int fd;
    while (spare_count < FD_FLOOR && (fd = dup(0)) >= 0) {
        if (fd >= FD_FLOOR) {
            close(fd);
            break;
        }
        spare[spare_count++] = fd;
    }
}

static void exhaust(void)
{
    struct rlimit low;
    if (!limited && getrlimit(RLIMIT_NOFILE, &saved_limit) != 0) {
        printf("FAILED exhaust\n");
        return;
    }
    low = saved_limit;
    low.rlim_cur = FD_FLOOR;
    if (setrlimit(RLIMIT_NOFILE, &low) != 0) {
        printf("FAILED exhaust\n");
        return;
    }
    limited = 1;
    fill();
    printf("EXHAUSTED %d\n", spare_count);
}

static void release(void)
{
    int n = spare_count;
    while (spare_count > 0) close(spare[--spare_count]);
    if (limited && setrlimit(RLIMIT_NOFILE, &saved_limit) != 0) {
        printf("FAILED release\n");
        return;
    }
    limited = 0;
    printf("RELEASED %d\n", n);
}

int main(int argc, char **argv)
{
    const char *option = argc == 4 ? argv[3] : "";
    if (argc != 3 && !(argc == 4 && (strcmp(option, "private-first") == 0 || strcmp(option, "fill-first") == 0))) {
        fprintf(stderr, "usage: fakeguest <pages> <seed> [private-first | fill-first]\n");
        return 2;
    }
    uint64_t initial = strtoull(argv[1], NULL, 10);
    seed = strtoull(argv[2], NULL, 10);
    if (strcmp(option, "fill-first") == 0) fill();
    if (strcmp(option, "private-first") == 0 && map_private(16) != 0) {
        perror("fakeguest: private memfd");
        return 1;
    }
    if (map_ram(initial) != 0) {
        perror("fakeguest: guest RAM");
        return 1;
    }
    printf("READY %d %llu\n", (int)getpid(), (unsigned long long)pages);
    fflush(stdout);

    uint8_t expected[PAGE];
    uint64_t rng = mix(seed + 77);
    char line[128];
    while (fgets(line, sizeof line, stdin) != NULL) {
        unsigned long long n, a;
        if (strncmp(line, "chdir /", 7) == 0) {
            /* As QEMU -daemonize does once its machine (and guest RAM) is made. */
            printf(chdir("/") == 0 ? "CHDIR /\n" : "FAILED chdir\n");
        } else if (sscanf(line, "discard %llu %llu", &a, &n) == 2) {
            struct ram *r = ram_of(a);
            if (r == NULL || a + n > r->first + r->pages
                || fallocate(r->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)((a - r->first) * PAGE),
                             (off_t)(n * PAGE)) != 0
                || madvise(page(a), n * PAGE, MADV_DONTNEED) != 0) {
                printf("FAILED discard\n");
            } else {
                for (unsigned long long k = 0; k < n; k++) version[a + k] = DISCARDED;
                printf("DISCARDED %llu\n", n);
            }
        } else if (sscanf(line, "write %llu", &n) == 1) {
            for (unsigned long long k = 0; k < n; k++) {
                rng = mix(rng + k);
                uint64_t i = rng % pages;
                version[i] = version[i] == DISCARDED ? 1 : version[i] + 1;
                content(i, version[i], expected);
                memcpy(page(i), expected, PAGE);
            }
            printf("WROTE %llu\n", n);
        } else if (sscanf(line, "map %llu", &n) == 1) {
            if (n == 0 || map_ram(n) != 0) printf("FAILED map\n");
            else printf("MAPPED %llu\n", (unsigned long long)pages);
        } else if (sscanf(line, "private %llu", &n) == 1) {
            if (n == 0 || map_private(n) != 0) printf("FAILED private\n");
            else printf("PRIVATE %llu\n", n);
        } else if (strncmp(line, "exhaust", 7) == 0) {
            exhaust();
        } else if (strncmp(line, "release", 7) == 0) {
            release();
        } else if (strncmp(line, "verify", 6) == 0) {
            uint64_t mismatches = 0;
            for (uint64_t i = 0; i < pages; i++) {
                content(i, version[i], expected);
                if (memcmp(page(i), expected, PAGE) != 0) mismatches++;
            }
            printf("VERIFY mismatches=%llu\n", (unsigned long long)mismatches);
        } else if (strncmp(line, "quit", 4) == 0) {
            return 0;
        } else {
            printf("UNKNOWN %s", line);
        }
        fflush(stdout);
    }
    return 0;
}
