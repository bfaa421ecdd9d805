/*
 * deqemu: the library QEMU runs with (LD_PRELOAD=libdeqemu.so) so that DifferenceEngine can be the pager of its
 * guest RAM. Nothing in QEMU changes; QEMU must back guest RAM with a shared memfd:
 *
 *     DE_QEMU_SOCKET=/run/de/vm1.sock LD_PRELOAD=/path/to/libdeqemu.so qemu-system-x86_64 \
 *         -object memory-backend-memfd,id=mem,size=1G,share=on -machine memory-backend=mem ...
 *
 * What the library does, and nothing else:
 *   - it watches memfd_create and mmap: a memfd QEMU names "memory-backend-memfd" and maps shared is guest RAM.
 *     It keeps a duplicate of each such memfd, so the memory outlives anything QEMU closes;
 *   - once guest RAM is mapped it listens on the Unix socket $DE_QEMU_SOCKET (SOCK_SEQPACKET, mode 0600; a
 *     connecting process must have the library's own uid, or be root: SO_PEERCRED is checked);
 *   - to the engine that says hello it sends a userfaultfd registered (missing and write-protect faults) over every
 *     guest RAM mapping, and the memfds; the userfaultfd is made in QEMU's process, since a userfaultfd serves the
 *     memory of the process that made it. One engine at a time;
 *   - it keeps its own reference to the userfaultfd: if the engine goes away, a guest touching a page the engine took
 *     away waits in its fault until an engine attaches again, instead of reading zeros;
 *   - it holds one file descriptor for the engine (the engine's state: its store of evicted pages) and gives it back
 *     to the next engine that says hello, so a restarted engine finds what the one before it evicted.
 * Without DE_QEMU_SOCKET the library does nothing at all.
 *
 * This header is the protocol on the socket; engine/Qemu/QemuProtocol.cs mirrors it. Every message is one
 * SOCK_SEQPACKET packet of a fixed-layout struct below (little endian, no padding), with file descriptors as
 * SCM_RIGHTS where said.
 *
 *   engine -> library  DE_QEMU_HELLO      reply: de_qemu_hello, fds: [userfaultfd, memfd 0 .. n-1, state fd?]
 *   engine -> library  DE_QEMU_DEPOSIT    fds: [state fd]; the library holds it (replacing one it held); reply: DE_QEMU_OK
 *   engine -> library  DE_QEMU_DETACH     the library unregisters and closes the userfaultfd (the engine has loaded every
 *                                         page back first) and drops the state fd; reply: DE_QEMU_OK
 * A request the library cannot take is answered with DE_QEMU_ERROR and an errno in arg0 (EBUSY: another engine is
 * attached; EPROTO: a bad message; others: what the failing call set).
 */
#ifndef DEQEMU_H
#define DEQEMU_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DE_QEMU_MAGIC 0x4d514544u /* "DEQM" */
#define DE_QEMU_VERSION 1u
#define DE_QEMU_PAGE_SIZE 4096u

/* Most guest RAM regions (memfd mappings) one QEMU has: one per memory backend. */
#define DE_QEMU_MAX_REGIONS 8u

/* The name QEMU gives the memfd of a memory-backend-memfd (QEMU's TYPE_MEMORY_BACKEND_MEMFD). */
#define DE_QEMU_MEMFD_NAME "memory-backend-memfd"

enum de_qemu_op {
    DE_QEMU_HELLO = 1,
    DE_QEMU_DEPOSIT = 2,
    DE_QEMU_DETACH = 3,
    DE_QEMU_OK = 100,
    DE_QEMU_ERROR = 101,
};

/* A request, and the reply DE_QEMU_OK / DE_QEMU_ERROR. 24 bytes. */
typedef struct de_qemu_msg {
    uint32_t magic;   /* DE_QEMU_MAGIC */
    uint32_t version; /* DE_QEMU_VERSION */
    uint32_t op;      /* de_qemu_op */
    uint32_t reserved;
    uint64_t arg0;    /* DE_QEMU_ERROR: the errno */
} de_qemu_msg;

/* One guest RAM mapping in QEMU's address space. 32 bytes. */
typedef struct de_qemu_region {
    uint64_t host_address; /* where QEMU mapped it */
    uint64_t length;       /* bytes, a multiple of DE_QEMU_PAGE_SIZE */
    uint64_t file_offset;  /* offset of host_address in the memfd */
    uint32_t memfd_index;  /* which of the memfds sent with the hello (0-based) */
    uint32_t reserved;
} de_qemu_region;

/* de_qemu_hello.flags */
#define DE_QEMU_HELLO_WP        (1u << 0) /* the userfaultfd takes write-protect faults (UFFDIO_WRITEPROTECT works) */
#define DE_QEMU_HELLO_STATE     (1u << 1) /* a state fd follows the memfds: an earlier engine deposited it */
#define DE_QEMU_HELLO_REATTACH  (1u << 2) /* the userfaultfd was sent before: faults may wait that an earlier engine
                                             read and never answered; UFFDIO_WAKE over every region retries them */

/* The reply to DE_QEMU_HELLO. 24 + 32 * DE_QEMU_MAX_REGIONS bytes. */
typedef struct de_qemu_hello {
    uint32_t magic;
    uint32_t version;
    uint32_t op;           /* DE_QEMU_OK */
    uint32_t flags;        /* DE_QEMU_HELLO_* */
    uint32_t pid;          /* QEMU's pid */
    uint32_t region_count; /* 1 .. DE_QEMU_MAX_REGIONS */
    de_qemu_region regions[DE_QEMU_MAX_REGIONS];
} de_qemu_hello;

/* The library's own exports, for tests and tools; QEMU never calls them. */

/* How many guest RAM regions the library has seen mapped so far. */
uint32_t de_qemu_region_count(void);

/* 1 while an engine is attached (its connection is open), else 0. */
uint32_t de_qemu_attached(void);

#ifdef __cplusplus
}
#endif

#endif
