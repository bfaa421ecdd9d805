/*
 * fakexen: an in-memory stand-in for Xen 4.17's libxenctrl, libxenforeignmemory, libxenevtchn and libxenstore,
 * for tests only (never shipped). libfakexen.so exports the same symbols, with the signatures of the real
 * headers, for every Xen call native/dexen.c makes; the test build of the shim links against it.
 *
 * It models what those calls do in the hypervisor (xen/arch/x86/mm/mem_paging.c, mem_sharing.c):
 * domains with a P2M of 4 KiB frames; sharing (nominate hands out a handle, share backs both gfns with
 * one frame, a guest write to a shared gfn copies it, a write invalidates the gfn's handle); paging
 * (nominate, evict, prep/load, a vm_event ring in a real page the shim maps, an event channel that is a
 * pipe); foreign mappings (a paged-out gfn is paged in first, as libxenforeignmemory retries); the host's
 * sharing totals (mem_sharing.c's nr_saved_mfns / nr_shared_mfns); xenstore as the domains' names only.
 * There is no dom0: only the domains created here exist.
 *
 * Below, the test-only API. Every int32_t result is 0 or -errno.
 */
#ifndef FAKEXEN_H
#define FAKEXEN_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Forgets every domain and pending failure; handles stay valid. */
int32_t fakexen_reset(void);

/* Creates an HVM, HAP domain of pages guest pages (gfns 0..pages-1) plus its paging ring page at gfn
 * pages (HVM_PARAM_PAGING_RING_PFN), populated as a domain builder does. content holds pages * 4096
 * bytes, or is NULL for zeroed memory. EEXIST: domid is taken. */
int32_t fakexen_create_domain(uint32_t domid, uint64_t pages, const uint8_t *content);

/* Sets the domain's xenstore name (/local/domain/<domid>/name), or removes it when name is NULL. A new domain has
 * none (xs_read: ENOENT). ESRCH: no such domain; EINVAL: 256 bytes or longer. */
int32_t fakexen_set_domain_name(uint32_t domid, const char *name);

/* What xc_domain_getinfolist reports the domain as: HVM or PV, with hardware-assisted paging or shadow paging
 * (default HVM with HAP). Only the listed flags change: the fake's sharing and paging still work. EINVAL: PV with HAP. */
int32_t fakexen_set_domain_kind(uint32_t domid, uint32_t hvm, uint32_t hap);

/* Takes the ring page out of the domain's physmap, so the shim must populate it before mapping. */
int32_t fakexen_drop_ring_page(uint32_t domid);

/* Takes gfns first .. first + count - 1 out of the domain's physmap, as an HVM guest's MMIO hole below 4 GiB is: no page
 * there, tot_pages that much less, the highest gfn unchanged (mapping one fails with EINVAL). ESRCH: no such domain;
 * EINVAL: a gfn out of the guest's pages; EBUSY: one of them is shared or paged (only plain RAM pages are taken). */
int32_t fakexen_remove_pages(uint32_t domid, uint64_t first, uint64_t count);

/* A vCPU of the guest reads gfn into page (4096 bytes). On a paging gfn the vCPU is paused: the fake posts
 * a request on the paging ring, signals the event channel and blocks until the pager's response resumes
 * it, then retries. EINVAL: bad gfn; ETIMEDOUT: no answer in time; ENXIO: paged out and no pager. */
int32_t fakexen_guest_read(uint32_t domid, uint64_t gfn, uint8_t *page);

/* As fakexen_guest_read, but writes; a write to a shared gfn first copies the frame (copy-on-write). */
int32_t fakexen_guest_write(uint32_t domid, uint64_t gfn, const uint8_t *page);

/* The next call of the named Xen function (e.g. "xc_memshr_nominate_gfn", "xs_read") fails with err. Up to 16 pending. */
int32_t fakexen_fail_next(const char *function, int32_t err);

/* How long a paused vCPU or a foreign mapping waits for the pager before ETIMEDOUT. Default 10000 ms. */
int32_t fakexen_set_timeout_ms(uint32_t ms);

/* Guest frames alive in the fake (not counting ring pages): what sharing saves shows here. */
uint64_t fakexen_frame_count(void);

/* Requests posted on domid's paging ring since it was created. */
uint64_t fakexen_requests_posted(uint32_t domid);

#ifdef __cplusplus
}
#endif

#endif
