/*
 * fakexen: the Xen calls of native/dexen.c, backed by in-memory domains. See fakexen.h for what it models.
 * Everything runs under one lock; a vCPU waiting for the pager and a foreign mapping waiting for a page-in
 * wait on one condition variable, broadcast whenever a P2M entry, a ring or a response changes.
 * The hypervisor-side behaviour follows Xen 4.17's mem_paging.c / mem_sharing.c / vm_event.c; each fake
 * function names the Xen errno it copies. xenstore holds only the domains' names.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <xenctrl.h>
#include <xenevtchn.h>
#include <xenforeignmemory.h>
#include <xenstore.h>
#include <xen/hvm/params.h>
#include <xen/vm_event.h>

#include "fakexen.h"

#define FX_EXPORT __attribute__((visibility("default")))
#define FX_PAGE XC_PAGE_SIZE
#define FX_MAX_DOMAINS 32
#define FX_MAX_FAILS 16
#define FX_MAX_NAME 256

/* P2M entry types, after Xen's p2m_ram_rw / p2m_ram_shared / p2m_ram_paging_out / _paged / _paging_in. */
enum fx_state { FX_ABSENT, FX_RAM, FX_SHARED, FX_PAGING_OUT, FX_PAGED, FX_PAGING_IN };

struct fx_frame {
    uint8_t *bytes;  /* page-aligned */
    uint32_t refs;   /* gfns backed by it, plus Xen's own reference to a ring page */
    uint32_t maps;   /* foreign mappings alive */
    uint64_t handle; /* sharing handle; 0 when not sharable */
    int counted;     /* a guest frame, counted by fakexen_frame_count */
};

struct fx_gfn {
    struct fx_frame *frame;
    uint8_t state;
};

struct fx_domain {
    int used;
    uint32_t domid;
    int pv, shadow;            /* fakexen_set_domain_kind: a PV guest, or HVM without HAP (default: HVM with HAP) */
    uint64_t pages;            /* guest gfns 0..pages-1; gfn pages is the paging ring */
    struct fx_gfn *p2m;        /* pages + 1 entries */
    uint64_t tot_pages, shr_pages, paged_pages;
    uint32_t pause_count;
    int sharing;
    int paging;
    uint32_t remote_port;
    struct fx_frame *ring;     /* the ring page while paging is on */
    vm_event_front_ring_t front;
    xenevtchn_handle *bound;   /* the pager's event channel handle and port */
    uint32_t bound_port;
    int signalled;             /* a notification sits in the pipe */
    uint32_t next_vcpu;
    uint64_t posted;
    int named;                 /* xenstore has /local/domain/<domid>/name */
    char name[FX_MAX_NAME];
};

/* A paused vCPU waiting for the response that resumes it. */
struct fx_waiter {
    uint32_t domid, vcpu;
    int resumed;
    struct fx_waiter *next;
};

/* A foreign mapping handed out by xenforeignmemory_map. */
struct fx_map {
    void *addr;
    size_t count;
    int owned;                 /* addr is a private copy (more than one page, or a failed page) */
    struct fx_map *next;
    struct fx_frame *frames[];
};

struct xc_interface_core { int unused; };
struct xenforeignmemory_handle { int unused; };
struct xenevtchn_handle { int fds[2]; uint32_t next_port; };
struct xs_handle { int unused; };

static struct {
    pthread_mutex_t lock;
    pthread_cond_t changed;
    struct fx_domain domains[FX_MAX_DOMAINS];
    struct { char name[64]; int err; } fails[FX_MAX_FAILS];
    uint32_t nfails;
    uint64_t next_handle;
    uint32_t next_port;
    uint32_t timeout_ms;
    uint64_t frames;
    uint64_t nr_saved_mfns;    /* mem_sharing.c's counters: frames freed by sharing, */
    uint64_t nr_shared_mfns;   /* and frames in the sharable state (nominated or shared) */
    struct fx_waiter *waiters;
    struct fx_map *maps;
} fx = { .lock = PTHREAD_MUTEX_INITIALIZER, .timeout_ms = 10000 };

__attribute__((constructor)) static void fx_init(void)
{
    pthread_condattr_t attr;

    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&fx.changed, &attr);
    pthread_condattr_destroy(&attr);
}

static void fx_lock(void)
{
    pthread_mutex_lock(&fx.lock);
}

/* Unlocks and returns rc, keeping errno. */
static int fx_unlock(int rc)
{
    int saved = errno;

    pthread_mutex_unlock(&fx.lock);
    errno = saved;
    return rc;
}

static void *fx_unlock_ptr(void *p)
{
    int saved = errno;

    pthread_mutex_unlock(&fx.lock);
    errno = saved;
    return p;
}

/* The libxc convention: -1 with errno. */
static int fx_errno(int err)
{
    errno = err;
    return -1;
}

/* 1 (errno set) when a failure was injected for fn; consumes it. Caller holds the lock. */
static int fx_injected(const char *fn)
{
    for (uint32_t i = 0; i < fx.nfails; i++) {
        if (strcmp(fx.fails[i].name, fn) == 0) {
            errno = fx.fails[i].err;
            memmove(&fx.fails[i], &fx.fails[i + 1], (fx.nfails - i - 1) * sizeof fx.fails[0]);
            fx.nfails--;
            return 1;
        }
    }
    return 0;
}

static struct timespec fx_deadline(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    t.tv_sec += fx.timeout_ms / 1000;
    t.tv_nsec += (long)(fx.timeout_ms % 1000) * 1000000L;
    if (t.tv_nsec >= 1000000000L) {
        t.tv_sec++;
        t.tv_nsec -= 1000000000L;
    }
    return t;
}

/* Waits for a change; 0 or ETIMEDOUT. Caller holds the lock. */
static int fx_wait(const struct timespec *deadline)
{
    return pthread_cond_timedwait(&fx.changed, &fx.lock, deadline);
}

static struct fx_domain *fx_domain(uint32_t domid)
{
    for (int i = 0; i < FX_MAX_DOMAINS; i++)
        if (fx.domains[i].used && fx.domains[i].domid == domid)
            return &fx.domains[i];
    return NULL;
}

/* The start of every faked call on a domain: locks, then returns the domain, or NULL with errno set (the
 * injected failure, or ESRCH). The caller unlocks either way. */
static struct fx_domain *fx_enter(const char *fn, uint32_t domid)
{
    struct fx_domain *d;

    fx_lock();
    if (fx_injected(fn))
        return NULL;
    if ((d = fx_domain(domid)) == NULL)
        errno = ESRCH;
    return d;
}

/* As fx_enter, for the paging calls: also ENODEV when the domain has no pager (as mem_paging_memop). */
static struct fx_domain *fx_enter_pager(const char *fn, uint32_t domid)
{
    struct fx_domain *d = fx_enter(fn, domid);

    if (d != NULL && !d->paging) {
        errno = ENODEV;
        return NULL;
    }
    return d;
}

static struct fx_frame *fx_frame_new(const uint8_t *bytes, int counted)
{
    struct fx_frame *f = calloc(1, sizeof *f);

    if (f == NULL || posix_memalign((void **)&f->bytes, FX_PAGE, FX_PAGE) != 0) {
        free(f);
        return NULL;
    }
    if (bytes != NULL)
        memcpy(f->bytes, bytes, FX_PAGE);
    else
        memset(f->bytes, 0, FX_PAGE);
    f->refs = 1;
    f->counted = counted;
    fx.frames += (uint64_t)counted;
    return f;
}

static void fx_frame_maybe_free(struct fx_frame *f)
{
    if (f->refs == 0 && f->maps == 0) {
        fx.frames -= (uint64_t)f->counted;
        free(f->bytes);
        free(f);
    }
}

static void fx_frame_put(struct fx_frame *f)
{
    f->refs--;
    fx_frame_maybe_free(f);
}

/* Tells the pager: one notification in its pipe until it reads it (xenevtchn_pending). */
static void fx_signal(struct fx_domain *d)
{
    if (d->bound != NULL && !d->signalled) {
        uint32_t port = d->bound_port;
        d->signalled = 1;
        if (write(d->bound->fds[1], &port, sizeof port) != sizeof port)
            d->signalled = 0;
    }
}

/* Puts a paging request on the ring (vm_event_put_request); the caller made sure there is room. */
static void fx_post(struct fx_domain *d, uint64_t gfn, uint32_t flags, uint32_t paging_flags, uint32_t vcpu)
{
    vm_event_request_t req;

    memset(&req, 0, sizeof req);
    req.version = VM_EVENT_INTERFACE_VERSION;
    req.reason = VM_EVENT_REASON_MEM_PAGING;
    req.flags = flags;
    req.vcpu_id = vcpu;
    req.u.mem_paging.gfn = gfn;
    req.u.mem_paging.flags = paging_flags;
    memcpy(RING_GET_REQUEST(&d->front, d->front.req_prod_pvt), &req, sizeof req);
    d->front.req_prod_pvt++;
    RING_PUSH_REQUESTS(&d->front);
    d->posted++;
    fx_signal(d);
}

/* A guest vCPU touched a gfn in a paging state (p2m_mem_paging_populate from the guest): claim a ring
 * slot (waiting, as a guest vCPU does), move the gfn to paging-in, post, pause until resumed.
 * Returns 1 to retry the access, or -errno. */
static int32_t fx_fault(struct fx_domain *d, uint64_t gfn, uint32_t vcpu, const struct timespec *deadline)
{
    struct fx_waiter w = { d->domid, vcpu, 0, NULL };
    struct fx_gfn *e = &d->p2m[gfn];
    uint32_t paging_flags = 0;
    int err = 0;

    while (err == 0 && d->paging && RING_FULL(&d->front))
        err = fx_wait(deadline);
    if (err != 0)
        return -err;
    if (!d->paging)
        return -ENXIO; /* Xen crashes a domain that faults on a paged gfn with no pager */
    if (e->state == FX_PAGING_OUT)
        paging_flags = MEM_PAGING_EVICT_FAIL; /* evict will fail now */
    e->state = FX_PAGING_IN;
    w.next = fx.waiters;
    fx.waiters = &w;
    fx_post(d, gfn, VM_EVENT_FLAG_VCPU_PAUSED, paging_flags, vcpu);
    while (err == 0 && !w.resumed)
        err = fx_wait(deadline);
    for (struct fx_waiter **p = &fx.waiters; *p != NULL; p = &(*p)->next)
        if (*p == &w) {
            *p = w.next;
            break;
        }
    return w.resumed ? 1 : -err;
}

/* The guest's copy-on-write of a sharable gfn (mem_sharing_unshare_page): the last user takes the frame
 * back as private (one sharable frame less), the others get a copy (one saved frame less). Either way the
 * gfn's handle is gone. 0 or ENOMEM. */
static int fx_unshare(struct fx_domain *d, struct fx_gfn *e)
{
    struct fx_frame *f = e->frame;

    if (f->refs > 1) {
        struct fx_frame *copy = fx_frame_new(f->bytes, 1);
        if (copy == NULL)
            return ENOMEM;
        f->refs--;
        e->frame = copy;
        fx.nr_saved_mfns--;
    } else {
        f->handle = 0;
        fx.nr_shared_mfns--;
    }
    e->state = FX_RAM;
    d->shr_pages--;
    d->tot_pages++;
    return 0;
}

/* A guest access to a present gfn. A write to a nominated-for-paging gfn faults like a paged one. */
static int32_t fx_touch(struct fx_domain *d, struct fx_gfn *e, uint8_t *out, const uint8_t *in)
{
    if (in == NULL) {
        memcpy(out, e->frame->bytes, FX_PAGE);
        return 0;
    }
    if (e->state == FX_SHARED && fx_unshare(d, e) != 0)
        return -ENOMEM;
    memcpy(e->frame->bytes, in, FX_PAGE);
    return 0;
}

static int32_t fx_guest(uint32_t domid, uint64_t gfn, uint8_t *out, const uint8_t *in)
{
    struct timespec deadline = fx_deadline();
    uint32_t vcpu = UINT32_MAX;
    int32_t rc = 1;

    fx_lock();
    while (rc > 0) {
        struct fx_domain *d = fx_domain(domid);
        struct fx_gfn *e;
        if (d == NULL)
            rc = -ESRCH;
        else if (gfn >= d->pages)
            rc = -EINVAL;
        else if ((e = &d->p2m[gfn])->state == FX_RAM || e->state == FX_SHARED ||
                 (e->state == FX_PAGING_OUT && in == NULL)) /* nominated pages stay readable */
            rc = fx_touch(d, e, out, in);
        else {
            if (vcpu == UINT32_MAX)
                vcpu = d->next_vcpu++;
            rc = fx_fault(d, gfn, vcpu, &deadline);
        }
    }
    pthread_mutex_unlock(&fx.lock);
    return rc;
}

/* Resolves one gfn for a foreign mapping: 0 (frame referenced in *out) or an errno. A paged gfn is paged in
 * first: a request without a paused vCPU (p2m_mem_paging_populate from dom0), then the wait that
 * libxenforeignmemory's retry loop does. */
static int fx_resolve(struct fx_domain *d, uint64_t gfn, int prot, const struct timespec *deadline,
                      struct fx_frame **out)
{
    for (;;) {
        struct fx_gfn *e = gfn <= d->pages ? &d->p2m[gfn] : NULL;
        if (e == NULL || e->state == FX_ABSENT)
            return EINVAL;
        if (e->state == FX_RAM || e->state == FX_SHARED || e->state == FX_PAGING_OUT) {
            if ((prot & PROT_WRITE) && e->state == FX_SHARED && fx_unshare(d, e) != 0)
                return ENOMEM;
            e->frame->maps++;
            *out = e->frame;
            return 0;
        }
        if (e->state == FX_PAGED && d->paging && !RING_FULL(&d->front)) {
            e->state = FX_PAGING_IN;
            fx_post(d, gfn, 0, 0, 0);
        }
        if (fx_wait(deadline) != 0)
            return ENOENT;
    }
}

static void fx_map_release(struct fx_map *m)
{
    for (size_t i = 0; i < m->count; i++)
        if (m->frames[i] != NULL) {
            m->frames[i]->maps--;
            fx_frame_maybe_free(m->frames[i]);
        }
    if (m->owned)
        munmap(m->addr, m->count * FX_PAGE);
    free(m);
}

/* The hypervisor's side of a response (vm_event_resume -> p2m_mem_paging_resume): a page-in that kept its
 * frame becomes RAM, the paused vCPU is resumed. */
static void fx_resume(struct fx_domain *d, const vm_event_response_t *rsp)
{
    uint64_t gfn = rsp->u.mem_paging.gfn;

    if (!(rsp->u.mem_paging.flags & MEM_PAGING_DROP_PAGE) && gfn < d->pages &&
        d->p2m[gfn].state == FX_PAGING_IN && d->p2m[gfn].frame != NULL)
        d->p2m[gfn].state = FX_RAM;
    if (rsp->flags & VM_EVENT_FLAG_VCPU_PAUSED)
        for (struct fx_waiter *w = fx.waiters; w != NULL; w = w->next)
            if (w->domid == d->domid && w->vcpu == rsp->vcpu_id)
                w->resumed = 1;
}

static void fx_take_responses(struct fx_domain *d)
{
    while (RING_HAS_UNCONSUMED_RESPONSES(&d->front)) {
        vm_event_response_t rsp;
        RING_IDX cons = d->front.rsp_cons;
        xen_rmb();
        memcpy(&rsp, RING_GET_RESPONSE(&d->front, cons), sizeof rsp);
        d->front.rsp_cons = cons + 1;
        if (rsp.version == VM_EVENT_INTERFACE_VERSION) /* Xen drops other versions */
            fx_resume(d, &rsp);
    }
    pthread_cond_broadcast(&fx.changed);
}

static struct fx_domain *fx_bound(xenevtchn_handle *h, uint32_t port)
{
    for (int i = 0; i < FX_MAX_DOMAINS; i++)
        if (fx.domains[i].used && fx.domains[i].bound == h && fx.domains[i].bound_port == port)
            return &fx.domains[i];
    return NULL;
}

/* A sharable gfn whose frame still has handle, or NULL. */
static struct fx_gfn *fx_shared(struct fx_domain *d, unsigned long gfn, uint64_t handle)
{
    struct fx_gfn *e = gfn < d->pages ? &d->p2m[gfn] : NULL;

    return e != NULL && e->state == FX_SHARED && e->frame->handle == handle ? e : NULL;
}

/* Points every gfn backed by gone at keep (share_pages walks the client page's rmap the same way). */
static void fx_merge(struct fx_frame *keep, struct fx_frame *gone)
{
    for (int i = 0; i < FX_MAX_DOMAINS; i++) {
        struct fx_domain *d = &fx.domains[i];
        for (uint64_t g = 0; d->used && g < d->pages; g++)
            if (d->p2m[g].frame == gone) {
                d->p2m[g].frame = keep;
                keep->refs++;
                gone->refs--;
            }
    }
    fx_frame_maybe_free(gone);
}

/* prepare() of mem_paging.c: a paged or paging-in gfn gets a frame (holding buffer) and is RAM at once. */
static int fx_prepare(struct fx_domain *d, uint64_t gfn, const void *buffer)
{
    struct fx_gfn *e = gfn < d->pages ? &d->p2m[gfn] : NULL;

    if (e == NULL || (e->state != FX_PAGING_IN && e->state != FX_PAGED))
        return fx_errno(ENOENT);
    if (e->frame == NULL) {
        if (buffer == NULL)
            return fx_errno(EINVAL); /* the gfn was evicted: its bytes are needed */
        if ((e->frame = fx_frame_new(buffer, 1)) == NULL)
            return fx_errno(ENOMEM);
        d->paged_pages--;
        d->tot_pages++;
    }
    e->state = FX_RAM;
    pthread_cond_broadcast(&fx.changed);
    return 0;
}

static void fx_domain_free(struct fx_domain *d)
{
    for (uint64_t g = 0; g <= d->pages; g++)
        if (d->p2m[g].frame != NULL)
            fx_frame_put(d->p2m[g].frame);
    if (d->ring != NULL)
        fx_frame_put(d->ring);
    free(d->p2m);
    memset(d, 0, sizeof *d);
}

/* ---- libxenctrl ------------------------------------------------------------------------------------ */

FX_EXPORT xc_interface *xc_interface_open(xentoollog_logger *logger, xentoollog_logger *dombuild_logger,
                                          unsigned open_flags)
{
    (void)logger; (void)dombuild_logger; (void)open_flags;
    fx_lock();
    if (fx_injected(__func__))
        return fx_unlock_ptr(NULL);
    return fx_unlock_ptr(calloc(1, sizeof(xc_interface)));
}

FX_EXPORT int xc_interface_close(xc_interface *xch)
{
    free(xch);
    return 0;
}

FX_EXPORT int xc_domain_getinfolist(xc_interface *xch, uint32_t first_domain, unsigned int max_domains,
                                    xc_domaininfo_t *info)
{
    unsigned int n = 0;

    (void)xch;
    fx_lock();
    if (fx_injected(__func__))
        return fx_unlock(-1);
    for (; n < max_domains; n++) {
        struct fx_domain *next = NULL;
        for (int i = 0; i < FX_MAX_DOMAINS; i++)
            if (fx.domains[i].used && fx.domains[i].domid >= first_domain &&
                (next == NULL || fx.domains[i].domid < next->domid))
                next = &fx.domains[i];
        if (next == NULL)
            break;
        memset(&info[n], 0, sizeof info[n]);
        info[n].domain = (domid_t)next->domid;
        info[n].flags = (next->pv ? 0 : XEN_DOMINF_hvm_guest) | (next->pv || next->shadow ? 0 : XEN_DOMINF_hap) |
                        (next->pause_count ? XEN_DOMINF_paused : XEN_DOMINF_running);
        info[n].tot_pages = next->tot_pages;
        info[n].max_pages = next->pages;
        info[n].shr_pages = next->shr_pages;
        info[n].paged_pages = next->paged_pages;
        first_domain = next->domid + 1;
    }
    return fx_unlock((int)n);
}

FX_EXPORT int xc_domain_maximum_gpfn(xc_interface *xch, uint32_t domid, xen_pfn_t *gpfns)
{
    struct fx_domain *d;

    (void)xch;
    if ((d = fx_enter(__func__, domid)) == NULL)
        return fx_unlock(-1);
    *gpfns = d->p2m[d->pages].state != FX_ABSENT ? d->pages : d->pages - 1;
    return fx_unlock(0);
}

FX_EXPORT int xc_domain_pause(xc_interface *xch, uint32_t domid)
{
    struct fx_domain *d;

    (void)xch;
    if ((d = fx_enter(__func__, domid)) == NULL)
        return fx_unlock(-1);
    d->pause_count++;
    return fx_unlock(0);
}

FX_EXPORT int xc_domain_unpause(xc_interface *xch, uint32_t domid)
{
    struct fx_domain *d;

    (void)xch;
    if ((d = fx_enter(__func__, domid)) == NULL)
        return fx_unlock(-1);
    if (d->pause_count == 0)
        return fx_unlock(fx_errno(EINVAL));
    d->pause_count--;
    return fx_unlock(0);
}

FX_EXPORT int xc_hvm_param_get(xc_interface *handle, uint32_t dom, uint32_t param, uint64_t *value)
{
    struct fx_domain *d;

    (void)handle;
    if ((d = fx_enter(__func__, dom)) == NULL)
        return fx_unlock(-1);
    if (param != HVM_PARAM_PAGING_RING_PFN)
        return fx_unlock(fx_errno(EINVAL));
    *value = d->pages;
    return fx_unlock(0);
}

/* Only the ring gfn can be populated or released: the fake's guest memory is fixed. */
FX_EXPORT int xc_domain_populate_physmap_exact(xc_interface *xch, uint32_t domid, unsigned long nr_extents,
                                               unsigned int extent_order, unsigned int mem_flags,
                                               xen_pfn_t *extent_start)
{
    struct fx_domain *d;

    (void)xch; (void)mem_flags;
    if ((d = fx_enter(__func__, domid)) == NULL)
        return fx_unlock(-1);
    if (nr_extents != 1 || extent_order != 0 || extent_start[0] != d->pages ||
        d->p2m[d->pages].state != FX_ABSENT)
        return fx_unlock(fx_errno(EINVAL));
    if ((d->p2m[d->pages].frame = fx_frame_new(NULL, 0)) == NULL)
        return fx_unlock(fx_errno(ENOMEM));
    d->p2m[d->pages].state = FX_RAM;
    return fx_unlock(0);
}

FX_EXPORT int xc_domain_decrease_reservation_exact(xc_interface *xch, uint32_t domid, unsigned long nr_extents,
                                                   unsigned int extent_order, xen_pfn_t *extent_start)
{
    struct fx_domain *d;

    (void)xch;
    if ((d = fx_enter(__func__, domid)) == NULL)
        return fx_unlock(-1);
    if (nr_extents != 1 || extent_order != 0 || extent_start[0] != d->pages ||
        d->p2m[d->pages].state == FX_ABSENT)
        return fx_unlock(fx_errno(EINVAL));
    fx_frame_put(d->p2m[d->pages].frame);
    d->p2m[d->pages].frame = NULL;
    d->p2m[d->pages].state = FX_ABSENT;
    return fx_unlock(0);
}

/* ---- memory sharing (mem_sharing.c) ------------------------------------------------------------------ */

FX_EXPORT int xc_memshr_control(xc_interface *xch, uint32_t domid, int enable)
{
    struct fx_domain *d;

    (void)xch;
    if ((d = fx_enter(__func__, domid)) == NULL)
        return fx_unlock(-1);
    d->sharing = enable != 0;
    return fx_unlock(0);
}

FX_EXPORT int xc_memshr_nominate_gfn(xc_interface *xch, uint32_t domid, unsigned long gfn, uint64_t *handle)
{
    struct fx_domain *d;
    struct fx_gfn *e;

    (void)xch;
    if ((d = fx_enter(__func__, domid)) == NULL)
        return fx_unlock(-1);
    if (!d->sharing || gfn >= d->pages)
        return fx_unlock(fx_errno(EINVAL));
    e = &d->p2m[gfn];
    if (e->state == FX_SHARED) {
        *handle = e->frame->handle;
        return fx_unlock(0);
    }
    if (e->state != FX_RAM)
        return fx_unlock(fx_errno(EINVAL)); /* not sharable: a paging state */
    if (e->frame->maps != 0)
        return fx_unlock(fx_errno(E2BIG));  /* someone else holds the page */
    e->frame->handle = ++fx.next_handle;
    e->state = FX_SHARED;
    fx.nr_shared_mfns++;
    d->shr_pages++;
    d->tot_pages--;
    *handle = e->frame->handle;
    return fx_unlock(0);
}

FX_EXPORT int xc_memshr_share_gfns(xc_interface *xch, uint32_t source_domain, unsigned long source_gfn,
                                   uint64_t source_handle, uint32_t client_domain, unsigned long client_gfn,
                                   uint64_t client_handle)
{
    struct fx_domain *s, *c;
    struct fx_gfn *se, *ce;

    (void)xch;
    if ((s = fx_enter(__func__, source_domain)) == NULL)
        return fx_unlock(-1);
    if ((c = fx_domain(client_domain)) == NULL)
        return fx_unlock(fx_errno(ESRCH));
    if (!s->sharing || !c->sharing)
        return fx_unlock(fx_errno(EINVAL));
    if ((se = fx_shared(s, source_gfn, source_handle)) == NULL)
        return fx_unlock(fx_errno(-XENMEM_SHARING_OP_S_HANDLE_INVALID));
    if ((ce = fx_shared(c, client_gfn, client_handle)) == NULL)
        return fx_unlock(fx_errno(-XENMEM_SHARING_OP_C_HANDLE_INVALID));
    if (se->frame != ce->frame) { /* the same frame already: success, and nothing is counted */
        fx_merge(se->frame, ce->frame);
        fx.nr_shared_mfns--;
        fx.nr_saved_mfns++;
    }
    return fx_unlock(0);
}

/* XENMEM_get_sharing_freed_pages: mem_sharing_get_nr_saved_mfns(). */
FX_EXPORT long xc_sharing_freed_pages(xc_interface *xch)
{
    (void)xch;
    fx_lock();
    if (fx_injected(__func__))
        return fx_unlock(-1);
    return fx_unlock((int)fx.nr_saved_mfns);
}

/* XENMEM_get_sharing_shared_pages: mem_sharing_get_nr_shared_mfns(). */
FX_EXPORT long xc_sharing_used_frames(xc_interface *xch)
{
    (void)xch;
    fx_lock();
    if (fx_injected(__func__))
        return fx_unlock(-1);
    return fx_unlock((int)fx.nr_shared_mfns);
}

/* ---- memory paging (mem_paging.c, vm_event.c) -------------------------------------------------------- */

FX_EXPORT int xc_mem_paging_enable(xc_interface *xch, uint32_t domain_id, uint32_t *port)
{
    struct fx_domain *d;

    (void)xch;
    if ((d = fx_enter(__func__, domain_id)) == NULL)
        return fx_unlock(-1);
    if (port == NULL)
        return fx_unlock(fx_errno(EINVAL));
    if (d->paging)
        return fx_unlock(fx_errno(EBUSY));
    if (d->p2m[d->pages].state == FX_ABSENT)
        return fx_unlock(fx_errno(EINVAL)); /* the ring gfn is not populated */
    d->ring = d->p2m[d->pages].frame;
    d->ring->refs++;
    SHARED_RING_INIT((vm_event_sring_t *)d->ring->bytes);
    FRONT_RING_INIT(&d->front, (vm_event_sring_t *)d->ring->bytes, FX_PAGE);
    d->paging = 1;
    d->remote_port = ++fx.next_port;
    d->signalled = 0;
    *port = d->remote_port;
    return fx_unlock(0);
}

FX_EXPORT int xc_mem_paging_disable(xc_interface *xch, uint32_t domain_id)
{
    struct fx_domain *d;

    (void)xch;
    if ((d = fx_enter(__func__, domain_id)) == NULL)
        return fx_unlock(-1);
    if (d->paging) {
        d->paging = 0;
        d->bound = NULL;
        fx_frame_put(d->ring);
        d->ring = NULL;
        pthread_cond_broadcast(&fx.changed);
    }
    return fx_unlock(0);
}

FX_EXPORT int xc_mem_paging_nominate(xc_interface *xch, uint32_t domain_id, uint64_t gfn)
{
    struct fx_domain *d;
    struct fx_gfn *e;

    (void)xch;
    if ((d = fx_enter_pager(__func__, domain_id)) == NULL)
        return fx_unlock(-1);
    e = gfn < d->pages ? &d->p2m[gfn] : NULL;
    /* nominate(): a valid, pageable frame with exactly one user */
    if (e == NULL || e->state != FX_RAM || e->frame->refs != 1 || e->frame->maps != 0)
        return fx_unlock(fx_errno(EBUSY));
    e->state = FX_PAGING_OUT;
    return fx_unlock(0);
}

FX_EXPORT int xc_mem_paging_evict(xc_interface *xch, uint32_t domain_id, uint64_t gfn)
{
    struct fx_domain *d;
    struct fx_gfn *e;

    (void)xch;
    if ((d = fx_enter_pager(__func__, domain_id)) == NULL)
        return fx_unlock(-1);
    e = gfn < d->pages ? &d->p2m[gfn] : NULL;
    /* evict(): still nominated and nobody mapped it since */
    if (e == NULL || e->state != FX_PAGING_OUT || e->frame->maps != 0)
        return fx_unlock(fx_errno(EBUSY));
    fx_frame_put(e->frame);
    e->frame = NULL;
    e->state = FX_PAGED;
    d->paged_pages++;
    d->tot_pages--;
    return fx_unlock(0);
}

FX_EXPORT int xc_mem_paging_prep(xc_interface *xch, uint32_t domain_id, uint64_t gfn)
{
    struct fx_domain *d;

    (void)xch;
    if ((d = fx_enter_pager(__func__, domain_id)) == NULL)
        return fx_unlock(-1);
    return fx_unlock(fx_prepare(d, gfn, NULL));
}

FX_EXPORT int xc_mem_paging_load(xc_interface *xch, uint32_t domain_id, uint64_t gfn, void *buffer)
{
    struct fx_domain *d;

    (void)xch;
    if ((d = fx_enter_pager(__func__, domain_id)) == NULL)
        return fx_unlock(-1);
    return fx_unlock(buffer == NULL ? fx_errno(EINVAL) : fx_prepare(d, gfn, buffer));
}

/* ---- libxenforeignmemory ------------------------------------------------------------------------------ */

FX_EXPORT xenforeignmemory_handle *xenforeignmemory_open(struct xentoollog_logger *logger, unsigned open_flags)
{
    (void)logger; (void)open_flags;
    fx_lock();
    if (fx_injected(__func__))
        return fx_unlock_ptr(NULL);
    return fx_unlock_ptr(calloc(1, sizeof(xenforeignmemory_handle)));
}

FX_EXPORT int xenforeignmemory_close(xenforeignmemory_handle *fmem)
{
    free(fmem);
    return 0;
}

/* One page mapped alone is the frame itself (live, as a real mapping); several pages are a copy. */
FX_EXPORT void *xenforeignmemory_map(xenforeignmemory_handle *fmem, uint32_t dom, int prot, size_t pages,
                                     const xen_pfn_t arr[], int err[])
{
    struct timespec deadline = fx_deadline();
    struct fx_domain *d;
    struct fx_map *m;
    int first = 0;

    (void)fmem;
    fx_lock();
    if (fx_injected(__func__))
        return fx_unlock_ptr(NULL);
    if ((d = fx_domain(dom)) == NULL || pages == 0) {
        errno = d == NULL ? ESRCH : EINVAL;
        return fx_unlock_ptr(NULL);
    }
    if ((m = calloc(1, sizeof *m + pages * sizeof m->frames[0])) == NULL)
        return fx_unlock_ptr(NULL);
    m->count = pages;
    for (size_t i = 0; i < pages; i++) {
        int e = fx_resolve(d, arr[i], prot, &deadline, &m->frames[i]);
        if (err != NULL)
            err[i] = -e; /* Linux reports per-page errors negative */
        else if (e != 0 && first == 0)
            first = e;
    }
    if (first != 0) {
        fx_map_release(m);
        errno = first;
        return fx_unlock_ptr(NULL);
    }
    if (pages == 1 && m->frames[0] != NULL) {
        m->addr = m->frames[0]->bytes;
    } else {
        m->owned = 1;
        m->addr = mmap(NULL, pages * FX_PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m->addr == MAP_FAILED) {
            m->owned = 0;
            fx_map_release(m);
            return fx_unlock_ptr(NULL);
        }
        for (size_t i = 0; i < pages; i++)
            if (m->frames[i] != NULL)
                memcpy((uint8_t *)m->addr + i * FX_PAGE, m->frames[i]->bytes, FX_PAGE);
        if (!(prot & PROT_WRITE))
            mprotect(m->addr, pages * FX_PAGE, PROT_READ);
    }
    m->next = fx.maps;
    fx.maps = m;
    return fx_unlock_ptr(m->addr);
}

FX_EXPORT int xenforeignmemory_unmap(xenforeignmemory_handle *fmem, void *addr, size_t pages)
{
    (void)fmem;
    fx_lock();
    for (struct fx_map **p = &fx.maps; *p != NULL; p = &(*p)->next) {
        struct fx_map *m = *p;
        if (m->addr == addr && m->count == pages) {
            *p = m->next;
            fx_map_release(m);
            return fx_unlock(0);
        }
    }
    return fx_unlock(fx_errno(EINVAL));
}

/* ---- libxenevtchn: a pipe per handle carries the ports that fired ------------------------------------ */

FX_EXPORT xenevtchn_handle *xenevtchn_open(struct xentoollog_logger *logger, unsigned int flags)
{
    xenevtchn_handle *h;

    (void)logger; (void)flags;
    fx_lock();
    if (fx_injected(__func__))
        return fx_unlock_ptr(NULL);
    if ((h = calloc(1, sizeof *h)) != NULL && pipe2(h->fds, O_CLOEXEC | O_NONBLOCK) != 0) {
        free(h);
        h = NULL;
    }
    if (h != NULL)
        h->next_port = 1;
    return fx_unlock_ptr(h);
}

FX_EXPORT int xenevtchn_close(xenevtchn_handle *xce)
{
    if (xce == NULL)
        return 0;
    fx_lock();
    for (int i = 0; i < FX_MAX_DOMAINS; i++)
        if (fx.domains[i].bound == xce)
            fx.domains[i].bound = NULL;
    close(xce->fds[0]);
    close(xce->fds[1]);
    free(xce);
    return fx_unlock(0);
}

FX_EXPORT int xenevtchn_fd(xenevtchn_handle *xce)
{
    return xce->fds[0];
}

FX_EXPORT xenevtchn_port_or_error_t xenevtchn_bind_interdomain(xenevtchn_handle *xce, uint32_t domid,
                                                               evtchn_port_t remote_port)
{
    struct fx_domain *d;

    fx_lock();
    if (fx_injected(__func__))
        return fx_unlock(-1);
    if ((d = fx_domain(domid)) == NULL || !d->paging || d->remote_port != remote_port || d->bound != NULL)
        return fx_unlock(fx_errno(EINVAL));
    d->bound = xce;
    d->bound_port = xce->next_port++;
    d->signalled = 0;
    return fx_unlock((int)d->bound_port);
}

FX_EXPORT int xenevtchn_unbind(xenevtchn_handle *xce, evtchn_port_t port)
{
    struct fx_domain *d;

    fx_lock();
    if ((d = fx_bound(xce, port)) == NULL)
        return fx_unlock(fx_errno(EINVAL));
    d->bound = NULL;
    return fx_unlock(0);
}

/* The pager kicked its port: Xen takes the responses off the ring. */
FX_EXPORT int xenevtchn_notify(xenevtchn_handle *xce, evtchn_port_t port)
{
    struct fx_domain *d;

    fx_lock();
    if (fx_injected(__func__))
        return fx_unlock(-1);
    if ((d = fx_bound(xce, port)) == NULL)
        return fx_unlock(fx_errno(EINVAL));
    fx_take_responses(d);
    return fx_unlock(0);
}

FX_EXPORT xenevtchn_port_or_error_t xenevtchn_pending(xenevtchn_handle *xce)
{
    struct fx_domain *d;
    uint32_t port;

    if (read(xce->fds[0], &port, sizeof port) != sizeof port)
        return -1; /* errno: EAGAIN when nothing fired */
    fx_lock();
    if ((d = fx_bound(xce, port)) != NULL)
        d->signalled = 0;
    return fx_unlock((int)port);
}

FX_EXPORT int xenevtchn_unmask(xenevtchn_handle *xce, evtchn_port_t port)
{
    (void)xce; (void)port;
    fx_lock();
    if (fx_injected(__func__))
        return fx_unlock(-1);
    return fx_unlock(0);
}

/* ---- libxenstore: only the domains' names, /local/domain/<domid>/name ---------------------------------- */

FX_EXPORT struct xs_handle *xs_open(unsigned long flags)
{
    (void)flags;
    fx_lock();
    if (fx_injected(__func__))
        return fx_unlock_ptr(NULL);
    return fx_unlock_ptr(calloc(1, sizeof(struct xs_handle)));
}

FX_EXPORT void xs_close(struct xs_handle *xsh)
{
    free(xsh);
}

/* A malloc'ed, NUL-terminated copy of the value; NULL with errno ENOENT for any other path, as xenstored does
 * for a node that does not exist. */
FX_EXPORT void *xs_read(struct xs_handle *h, xs_transaction_t t, const char *path, unsigned int *len)
{
    struct fx_domain *d = NULL;
    unsigned int domid;
    char *value;
    int end = 0;

    (void)h;
    fx_lock();
    if (fx_injected(__func__))
        return fx_unlock_ptr(NULL);
    if (t != XBT_NULL) {
        errno = EINVAL; /* the fake has no transactions */
        return fx_unlock_ptr(NULL);
    }
    if (path == NULL || sscanf(path, "/local/domain/%u/name%n", &domid, &end) != 1 || end == 0 ||
        path[end] != '\0' || (d = fx_domain(domid)) == NULL || !d->named) {
        errno = ENOENT;
        return fx_unlock_ptr(NULL);
    }
    if ((value = strdup(d->name)) == NULL)
        return fx_unlock_ptr(NULL);
    if (len != NULL)
        *len = (unsigned int)strlen(value);
    return fx_unlock_ptr(value);
}

/* ---- the test-only API -------------------------------------------------------------------------------- */

FX_EXPORT int32_t fakexen_reset(void)
{
    fx_lock();
    for (int i = 0; i < FX_MAX_DOMAINS; i++)
        if (fx.domains[i].used)
            fx_domain_free(&fx.domains[i]);
    fx.nfails = 0;
    fx.nr_saved_mfns = 0;
    fx.nr_shared_mfns = 0;
    pthread_cond_broadcast(&fx.changed);
    return fx_unlock(0);
}

FX_EXPORT int32_t fakexen_create_domain(uint32_t domid, uint64_t pages, const uint8_t *content)
{
    struct fx_domain *d = NULL;

    fx_lock();
    if (pages == 0)
        return fx_unlock(-EINVAL);
    if (fx_domain(domid) != NULL)
        return fx_unlock(-EEXIST);
    for (int i = 0; i < FX_MAX_DOMAINS && d == NULL; i++)
        if (!fx.domains[i].used)
            d = &fx.domains[i];
    if (d == NULL)
        return fx_unlock(-ENOSPC);
    if ((d->p2m = calloc(pages + 1, sizeof *d->p2m)) == NULL)
        return fx_unlock(-ENOMEM);
    d->used = 1;
    d->domid = domid;
    d->pages = pages;
    for (uint64_t g = 0; g <= pages; g++) {
        const uint8_t *bytes = content != NULL && g < pages ? content + g * FX_PAGE : NULL;
        if ((d->p2m[g].frame = fx_frame_new(bytes, g < pages)) == NULL) {
            fx_domain_free(d);
            return fx_unlock(-ENOMEM);
        }
        d->p2m[g].state = FX_RAM;
    }
    d->tot_pages = pages;
    return fx_unlock(0);
}

FX_EXPORT int32_t fakexen_set_domain_name(uint32_t domid, const char *name)
{
    struct fx_domain *d;

    fx_lock();
    if ((d = fx_domain(domid)) == NULL)
        return fx_unlock(-ESRCH);
    if (name != NULL && strlen(name) >= sizeof d->name)
        return fx_unlock(-EINVAL);
    d->named = name != NULL;
    strcpy(d->name, name != NULL ? name : "");
    return fx_unlock(0);
}

FX_EXPORT int32_t fakexen_set_domain_kind(uint32_t domid, uint32_t hvm, uint32_t hap)
{
    struct fx_domain *d;

    fx_lock();
    if ((d = fx_domain(domid)) == NULL)
        return fx_unlock(-ESRCH);
    if (!hvm && hap)
        return fx_unlock(-EINVAL);
    d->pv = !hvm;
    d->shadow = hvm && !hap;
    return fx_unlock(0);
}

FX_EXPORT int32_t fakexen_drop_ring_page(uint32_t domid)
{
    struct fx_domain *d;

    fx_lock();
    if ((d = fx_domain(domid)) == NULL)
        return fx_unlock(-ESRCH);
    if (d->p2m[d->pages].state != FX_ABSENT) {
        fx_frame_put(d->p2m[d->pages].frame);
        d->p2m[d->pages].frame = NULL;
        d->p2m[d->pages].state = FX_ABSENT;
    }
    return fx_unlock(0);
}

FX_EXPORT int32_t fakexen_remove_pages(uint32_t domid, uint64_t first, uint64_t count)
{
    struct fx_domain *d;

    fx_lock();
    if ((d = fx_domain(domid)) == NULL)
        return fx_unlock(-ESRCH);
    if (first >= d->pages || count > d->pages - first)
        return fx_unlock(-EINVAL);
    for (uint64_t g = first; g < first + count; g++)
        if (d->p2m[g].state != FX_RAM && d->p2m[g].state != FX_ABSENT)
            return fx_unlock(-EBUSY);
    for (uint64_t g = first; g < first + count; g++) {
        if (d->p2m[g].state == FX_ABSENT)
            continue;
        fx_frame_put(d->p2m[g].frame);
        d->p2m[g].frame = NULL;
        d->p2m[g].state = FX_ABSENT;
        d->tot_pages--;
    }
    return fx_unlock(0);
}

FX_EXPORT int32_t fakexen_guest_read(uint32_t domid, uint64_t gfn, uint8_t *page)
{
    return fx_guest(domid, gfn, page, NULL);
}

FX_EXPORT int32_t fakexen_guest_write(uint32_t domid, uint64_t gfn, const uint8_t *page)
{
    return fx_guest(domid, gfn, NULL, page);
}

FX_EXPORT int32_t fakexen_fail_next(const char *function, int32_t err)
{
    fx_lock();
    if (fx.nfails == FX_MAX_FAILS || function == NULL || strlen(function) >= sizeof fx.fails[0].name || err <= 0)
        return fx_unlock(-EINVAL);
    strcpy(fx.fails[fx.nfails].name, function);
    fx.fails[fx.nfails].err = err;
    fx.nfails++;
    return fx_unlock(0);
}

FX_EXPORT int32_t fakexen_set_timeout_ms(uint32_t ms)
{
    fx_lock();
    fx.timeout_ms = ms;
    return fx_unlock(0);
}

FX_EXPORT uint64_t fakexen_frame_count(void)
{
    uint64_t n;

    fx_lock();
    n = fx.frames;
    pthread_mutex_unlock(&fx.lock);
    return n;
}

FX_EXPORT uint64_t fakexen_requests_posted(uint32_t domid)
{
    struct fx_domain *d;
    uint64_t n;

    fx_lock();
    n = (d = fx_domain(domid)) != NULL ? d->posted : 0;
    pthread_mutex_unlock(&fx.lock);
    return n;
}
