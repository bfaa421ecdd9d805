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
 *     quit        exits 0
 * It says "READY <pid> <pages>" once its RAM is mapped and filled. Usage: fakeguest <pages> <seed>
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/mman.h>
#include <unistd.h>

#define PAGE 4096u
#define DISCARDED UINT32_MAX /* a page's version once let go: it reads as zeros */

static uint8_t *ram;
static uint32_t *version;
static uint64_t pages;
static uint64_t seed;

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

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: fakeguest <pages> <seed>\n");
        return 2;
    }
    pages = strtoull(argv[1], NULL, 10);
    seed = strtoull(argv[2], NULL, 10);
    size_t size = pages * PAGE;
    int fd = memfd_create("memory-backend-memfd", MFD_CLOEXEC);
    if (fd < 0 || ftruncate(fd, (off_t)size) != 0) {
        perror("fakeguest: memfd");
        return 1;
    }
    void *reserved = mmap(NULL, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    ram = mmap(reserved, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0);
    version = calloc(pages, sizeof *version);
    if (reserved == MAP_FAILED || ram == MAP_FAILED || version == NULL) {
        perror("fakeguest: mmap");
        return 1;
    }
    for (uint64_t i = 0; i < pages; i++) content(i, 0, ram + i * PAGE);
    printf("READY %d %llu\n", (int)getpid(), (unsigned long long)pages);
    fflush(stdout);

    uint8_t expected[PAGE];
    uint64_t rng = mix(seed + 77);
    char line[128];
    while (fgets(line, sizeof line, stdin) != NULL) {
        unsigned long long n, a;
        if (sscanf(line, "discard %llu %llu", &a, &n) == 2) {
            if (a + n > pages || fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)(a * PAGE), (off_t)(n * PAGE)) != 0
                || madvise(ram + a * PAGE, n * PAGE, MADV_DONTNEED) != 0) {
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
                memcpy(ram + i * PAGE, expected, PAGE);
            }
            printf("WROTE %llu\n", n);
        } else if (strncmp(line, "verify", 6) == 0) {
            uint64_t mismatches = 0;
            for (uint64_t i = 0; i < pages; i++) {
                content(i, version[i], expected);
                if (memcmp(ram + i * PAGE, expected, PAGE) != 0) mismatches++;
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
