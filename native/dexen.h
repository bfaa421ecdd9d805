/*
 * dexen: DifferenceEngine's shim over Xen 4.17's libxenctrl, libxenforeignmemory, libxenevtchn and libxenstore.
 *
 * The whole ABI the managed side (engine/Xen/XenNative.cs) binds to. Rules, kept for every export:
 *   - every name starts with de_xen_; only fixed-width types cross the boundary;
 *   - a function that can fail returns int32_t: >= 0 on success, -errno on failure. errno is set to the
 *     same value, and de_xen_last_error() returns a message naming the Xen call and its arguments;
 *   - page buffers are exactly DE_XEN_PAGE_SIZE bytes and need no alignment;
 *   - a handle may be used from several threads at once; the paging ring calls (de_xen_ring_*) belong to
 *     one thread, the pager's.
 * linker script dexen.map exports exactly these symbols.
 */
#ifndef DEXEN_H
#define DEXEN_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DE_XEN_PAGE_SIZE 4096u

/* Most domains whose paging ring one handle serves at once. */
#define DE_XEN_MAX_RINGS 64u

/* Most pages one de_xen_read_pages call maps. */
#define DE_XEN_MAX_BATCH 1024u

/* de_xen_domain.flags */
#define DE_XEN_DOMAIN_DYING    (1u << 0)
#define DE_XEN_DOMAIN_HVM      (1u << 1)
#define DE_XEN_DOMAIN_SHUTDOWN (1u << 2)
#define DE_XEN_DOMAIN_PAUSED   (1u << 3)
#define DE_XEN_DOMAIN_BLOCKED  (1u << 4)
#define DE_XEN_DOMAIN_RUNNING  (1u << 5)
#define DE_XEN_DOMAIN_HAP      (1u << 6)

/* de_xen_request.flags: Xen's VM_EVENT_FLAG_VCPU_PAUSED (the faulting vCPU waits for the answer). */
#define DE_XEN_REQUEST_VCPU_PAUSED (1u << 0)

/* de_xen_request.paging_flags: Xen's MEM_PAGING_* flags. */
#define DE_XEN_PAGING_DROP_PAGE  (1u << 0)
#define DE_XEN_PAGING_EVICT_FAIL (1u << 1)

/* Opaque: an xc_interface, an xenforeignmemory handle, an xenevtchn handle, the paging rings and, once
 * de_xen_domain_name needed it, a xenstore connection. */
typedef struct de_xen de_xen;

/* One domain as xc_domain_getinfolist reports it. 40 bytes, no padding. */
typedef struct de_xen_domain {
    uint32_t domid;
    uint32_t flags;       /* DE_XEN_DOMAIN_* */
    uint64_t tot_pages;   /* pages the domain owns now */
    uint64_t max_pages;   /* its memory limit in pages */
    uint64_t shr_pages;   /* its gfns backed by a sharable (nominated or shared) frame */
    uint64_t paged_pages; /* its gfns paged out */
} de_xen_domain;

/* One paging request taken from a domain's ring; answered by passing it back to de_xen_ring_put.
 * 24 bytes, no padding. */
typedef struct de_xen_request {
    uint32_t domid;
    uint32_t vcpu;         /* the vCPU Xen paused, when flags has DE_XEN_REQUEST_VCPU_PAUSED */
    uint64_t gfn;
    uint32_t flags;        /* DE_XEN_REQUEST_* */
    uint32_t paging_flags; /* DE_XEN_PAGING_* */
} de_xen_request;

/* The message of the calling thread's last failure, or "" if none. Valid until that thread's next call. */
const char *de_xen_last_error(void);

/* Opens libxenctrl, libxenforeignmemory and libxenevtchn; *out receives the handle (NULL on failure).
 * Fails with the errno of the first library that could not open (EACCES/EPERM: not root; ENOENT: no Xen). */
int32_t de_xen_open(de_xen **out);

/* Closes a handle from de_xen_open, unbinding and unmapping any paging ring still held (Xen's paging
 * stays enabled for those domains: call de_xen_paging_disable first). NULL is ignored. Returns 0. */
int32_t de_xen_close(de_xen *x);

/* Fills out[0..capacity) with the domains whose id is >= first_domid, in id order.
 * Returns how many were written (0..capacity). */
int32_t de_xen_list_domains(de_xen *x, uint32_t first_domid, de_xen_domain *out, uint32_t capacity);

/* Copies the domain's name (xenstore /local/domain/<domid>/name) into buf, NUL-terminated and truncated to
 * capacity - 1 bytes; returns the length written. xenstore is opened on the first call, not by de_xen_open, so
 * every other call works without xenstored. ENOENT: the domain has no name, does not exist, or xenstore cannot
 * be reached; EACCES/EPERM: not allowed to read it; EINVAL: capacity is 0. */
int32_t de_xen_domain_name(de_xen *x, uint32_t domid, char *buf, uint32_t capacity);

/* *gpfn receives the highest guest frame number the domain has ever had populated. */
int32_t de_xen_max_gpfn(de_xen *x, uint32_t domid, uint64_t *gpfn);

/* Copies guest page gfn of domid into page through a read-only foreign mapping.
 * EINVAL: gfn is not populated (a hole, or beyond the guest). A paged-out gfn is paged in first:
 * the call waits for the domain's pager, which must not be the calling thread. */
int32_t de_xen_read_page(de_xen *x, uint32_t domid, uint64_t gfn, uint8_t *page);

/* Copies count (1..DE_XEN_MAX_BATCH) consecutive guest pages from first_gfn into pages (count pages) with
 * one mapping. errors[i] receives 0 or the errno of page i (whose bytes are then zero); the call itself
 * fails only when nothing could be mapped. */
int32_t de_xen_read_pages(de_xen *x, uint32_t domid, uint64_t first_gfn, uint32_t count,
                          uint8_t *pages, int32_t *errors);

/* Turns memory sharing for domid on (enable != 0) or off. ENODEV: no HAP; EXDEV: a device is passed through. */
int32_t de_xen_sharing_control(de_xen *x, uint32_t domid, uint32_t enable);

/* Makes gfn sharable; *handle receives its sharing handle (the same one while the page stays unwritten).
 * EINVAL: gfn not populated, not sharable, or sharing not enabled; E2BIG: another subsystem holds the page. */
int32_t de_xen_sharing_nominate(de_xen *x, uint32_t domid, uint64_t gfn, uint64_t *handle);

/* Backs the client gfn with the source gfn's frame. Xen checks only the handles, never the bytes: the
 * caller compares the pages after nominating both. -10 / -9 (Xen's XENMEM_SHARING_OP_S/C_HANDLE_INVALID):
 * the source / client page was written since it was nominated. */
int32_t de_xen_sharing_share(de_xen *x, uint32_t source_domid, uint64_t source_gfn, uint64_t source_handle,
                             uint32_t client_domid, uint64_t client_gfn, uint64_t client_handle);

/* Host-wide sharing totals (Xen's nr_saved_mfns and nr_shared_mfns): *freed_pages receives the frames freed by
 * sharing (gfns backed by a sharable frame minus those frames), *used_frames the frames in the sharable state,
 * nominated or shared. Summed over all domains, shr_pages == freed_pages + used_frames.
 * ENOSYS: this Xen is built without memory sharing. */
int32_t de_xen_sharing_totals(de_xen *x, uint64_t *freed_pages, uint64_t *used_frames);

/* Enables mem_paging for domid and takes its paging ring: maps the ring gfn (populating it if needed),
 * enables paging, removes the ring from the guest's physmap and binds the event channel, with the domain
 * paused meanwhile. EBUSY: a pager already serves it; ENODEV: no HAP; EMLINK: IOMMU passthrough;
 * EXDEV: populate-on-demand guest; ENOSPC: this handle serves DE_XEN_MAX_RINGS domains already. */
int32_t de_xen_paging_enable(de_xen *x, uint32_t domid);

/* Disables mem_paging for domid and releases its ring. Page every evicted page back in first. */
int32_t de_xen_paging_disable(de_xen *x, uint32_t domid);

/* Marks gfn to be paged out; the guest's next access cancels that. EBUSY: the page cannot be paged
 * (shared, mapped by someone, not populated). */
int32_t de_xen_paging_nominate(de_xen *x, uint32_t domid, uint64_t gfn);

/* Frees the frame of a nominated gfn. EBUSY: the guest touched it or someone mapped it since nomination. */
int32_t de_xen_paging_evict(de_xen *x, uint32_t domid, uint64_t gfn);

/* Gives a paged-out gfn a new frame holding page's bytes; the guest can use it at once.
 * ENOENT: gfn is not paged out; ENOMEM: Xen has no free frame right now (retry later). */
int32_t de_xen_paging_load(de_xen *x, uint32_t domid, uint64_t gfn, const uint8_t *page);

/* Completes the page-in of a gfn that was nominated but never evicted (its frame is still there).
 * EINVAL: the gfn was evicted, so its bytes are needed: use de_xen_paging_load. */
int32_t de_xen_paging_prep(de_xen *x, uint32_t domid, uint64_t gfn);

/* Waits up to timeout_ms (-1: forever) for a paging request on any ring of this handle.
 * Returns 1 when requests may be waiting, 0 on timeout. */
int32_t de_xen_ring_wait(de_xen *x, int32_t timeout_ms);

/* Takes the next unanswered request from the rings, round robin. Returns 1 (taken) or 0 (none). */
int32_t de_xen_ring_get(de_xen *x, de_xen_request *request);

/* Answers a request from de_xen_ring_get (pass it back as it came) and notifies Xen, which resumes the
 * paused vCPU. ENOENT: the domain's ring is gone (paging disabled). */
int32_t de_xen_ring_put(de_xen *x, const de_xen_request *request);

#ifdef __cplusplus
}
#endif

#endif
