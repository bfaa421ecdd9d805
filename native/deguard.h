/*
 * libdeguard.so: the read guard of the engine's own mappings of a QEMU guest's RAM, served by a native thread.
 * The engine maps each memfd region of the guest read-only and registers the mappings, missing mode, on a userfaultfd
 * of its own (user-mode faults only). A read of a hole there is a fault message; this thread answers it without ever
 * entering the .NET runtime (a managed thread could not, while the runtime waits to suspend the reading thread):
 *   - a page the engine punched out itself (its mark set in `punched`) is a bug of the engine: the process stops
 *     (abort), with the reason on stderr, rather than read zeros where the engine holds the page;
 *   - any other hole is a page QEMU let go itself (a balloon, free page reporting, a discard): it gets a zero page
 *     (UFFDIO_ZEROPAGE; a page already there: UFFDIO_WAKE), as any reader of a page let go sees.
 */
#ifndef DEGUARD_H
#define DEGUARD_H

#include <stdint.h>

struct deguard_region {
    uint64_t start;     /* the engine's mapping */
    uint64_t length;    /* bytes, a multiple of 4096 */
    int64_t first_gfn;  /* the guest page at start */
};

struct deguard;

/* Starts the thread. `regions` is copied (at most 64); `punched` (one bit a gfn, gfns 0 to pages - 1) is read, never
 * written, and must outlive the guard. `stopfd` (an eventfd): once written, the thread ends at its next wake-up.
 * 0 and *out set, or an errno. */
int deguard_start(int uffd, int stopfd, const struct deguard_region *regions, int count, const uint64_t *punched,
                  uint64_t pages, int32_t pid, struct deguard **out);

/* Holes given a zero page so far; each counted before its reader is woken. */
uint64_t deguard_filled(const struct deguard *guard);

/* Waits for the thread (after stopfd was written) and frees the guard. */
void deguard_stop(struct deguard *guard);

#endif
