/*
 * dexen: DifferenceEngine's shim over Xen 4.17's control libraries and libxenstore. The contract of each export is in
 * dexen.h; this file keeps to one error path: every failure goes through fail(), which records a message
 * for de_xen_last_error(), sets errno and returns -errno.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <xenctrl.h>
#include <xenevtchn.h>
#include <xenforeignmemory.h>
#include <xenstore.h>
#include <xen/hvm/params.h>
#include <xen/vm_event.h>

#include "dexen.h"

#define DE_EXPORT __attribute__((visibility("default")))

_Static_assert(sizeof(de_xen_domain) == 40, "de_xen_domain is part of the ABI");
_Static_assert(sizeof(de_xen_request) == 24, "de_xen_request is part of the ABI");
_Static_assert(DE_XEN_PAGE_SIZE == XC_PAGE_SIZE, "Xen pages are 4 KiB");
_Static_assert(DE_XEN_REQUEST_VCPU_PAUSED == VM_EVENT_FLAG_VCPU_PAUSED, "flags are Xen's");
_Static_assert(DE_XEN_PAGING_DROP_PAGE == MEM_PAGING_DROP_PAGE, "flags are Xen's");
_Static_assert(DE_XEN_PAGING_EVICT_FAIL == MEM_PAGING_EVICT_FAIL, "flags are Xen's");

/* One domain's paging ring, as this handle serves it. port < 0: the slot is free. */
struct de_xen_ring {
    uint32_t domid;
    int32_t port;
    void *page;
    vm_event_back_ring_t back;
};

struct de_xen {
    xc_interface *xch;
    xenforeignmemory_handle *fmem;
    xenevtchn_handle *xce;
    struct xs_handle *xsh; /* opened by the first de_xen_domain_name; NULL until then */
    pthread_mutex_t xs_lock; /* xsh while it is opened */
    pthread_mutex_t lock; /* rings[] and their back rings */
    uint32_t next;        /* where de_xen_ring_get looks first */
    struct de_xen_ring rings[DE_XEN_MAX_RINGS];
};

static __thread char last_error[256];

/* The libraries log their own failures; our caller gets them as errors instead, so they stay quiet. */
static void quiet_message(struct xentoollog_logger *logger, xentoollog_level level, int errnoval,
                          const char *context, const char *format, va_list args)
{
    (void)logger; (void)level; (void)errnoval; (void)context; (void)format; (void)args;
}

static void quiet_destroy(struct xentoollog_logger *logger)
{
    (void)logger;
}

static xentoollog_logger quiet_logger = { quiet_message, NULL, quiet_destroy };

/* The one error path: records "what: strerror(err)" for this thread, sets errno, returns -err. */
__attribute__((format(printf, 2, 3)))
static int32_t fail(int err, const char *what, ...)
{
    char text[192];
    va_list args;

    if (err <= 0)
        err = EIO;
    va_start(args, what);
    vsnprintf(text, sizeof text, what, args);
    va_end(args);
    snprintf(last_error, sizeof last_error, "%s: %s", text, strerror(err));
    errno = err;
    return -err;
}

/* A per-page error from xenforeignmemory_map as a positive errno (Linux reports them negative). */
static int page_errno(int err)
{
    return err < 0 ? -err : err;
}

static uint32_t domain_flags(uint32_t xen)
{
    return ((xen & XEN_DOMINF_dying) ? DE_XEN_DOMAIN_DYING : 0) |
           ((xen & XEN_DOMINF_hvm_guest) ? DE_XEN_DOMAIN_HVM : 0) |
           ((xen & XEN_DOMINF_shutdown) ? DE_XEN_DOMAIN_SHUTDOWN : 0) |
           ((xen & XEN_DOMINF_paused) ? DE_XEN_DOMAIN_PAUSED : 0) |
           ((xen & XEN_DOMINF_blocked) ? DE_XEN_DOMAIN_BLOCKED : 0) |
           ((xen & XEN_DOMINF_running) ? DE_XEN_DOMAIN_RUNNING : 0) |
           ((xen & XEN_DOMINF_hap) ? DE_XEN_DOMAIN_HAP : 0);
}

/* The ring slot serving domid, or NULL. Caller holds x->lock. */
static struct de_xen_ring *find_ring(de_xen *x, uint32_t domid)
{
    for (uint32_t i = 0; i < DE_XEN_MAX_RINGS; i++)
        if (x->rings[i].port >= 0 && x->rings[i].domid == domid)
            return &x->rings[i];
    return NULL;
}

/* A free ring slot, or NULL. Caller holds x->lock. */
static struct de_xen_ring *free_ring(de_xen *x)
{
    for (uint32_t i = 0; i < DE_XEN_MAX_RINGS; i++)
        if (x->rings[i].port < 0 && x->rings[i].page == NULL)
            return &x->rings[i];
    return NULL;
}

/* Maps one gfn read-write, or returns NULL with errno set. */
static void *map_writable(de_xen *x, uint32_t domid, xen_pfn_t gfn)
{
    int err = 0;
    void *page = xenforeignmemory_map(x->fmem, domid, PROT_READ | PROT_WRITE, 1, &gfn, &err);

    if (page != NULL && err != 0) {
        xenforeignmemory_unmap(x->fmem, page, 1);
        errno = page_errno(err);
        return NULL;
    }
    return page;
}

/* Unbinds and unmaps a ring slot. Caller holds x->lock. */
static void release_ring(de_xen *x, struct de_xen_ring *r)
{
    if (r->port >= 0)
        xenevtchn_unbind(x->xce, (evtchn_port_t)r->port);
    if (r->page != NULL)
        xenforeignmemory_unmap(x->fmem, r->page, 1);
    memset(r, 0, sizeof *r);
    r->port = -1;
}

/* Maps the paging ring (populating its gfn if the domain builder did not), enables paging, takes the
 * ring out of the guest's reach and binds its event channel; the sequence of libxc's own
 * xc_vm_event_enable plus xenpaging's ring setup. Domain paused, x->lock held. */
static int32_t take_ring(de_xen *x, struct de_xen_ring *r, uint32_t domid)
{
    uint64_t param;
    xen_pfn_t gfn;
    uint32_t remote;
    int port, err;

    if (xc_hvm_param_get(x->xch, domid, HVM_PARAM_PAGING_RING_PFN, &param) != 0)
        return fail(errno, "xc_hvm_param_get(domain %u, HVM_PARAM_PAGING_RING_PFN)", domid);
    gfn = (xen_pfn_t)param;
    r->page = map_writable(x, domid, gfn);
    if (r->page == NULL && xc_domain_populate_physmap_exact(x->xch, domid, 1, 0, 0, &gfn) != 0)
        return fail(errno, "xc_domain_populate_physmap_exact(domain %u, ring gfn 0x%llx)", domid,
                    (unsigned long long)gfn);
    if (r->page == NULL && (r->page = map_writable(x, domid, gfn)) == NULL)
        return fail(errno, "xenforeignmemory_map(domain %u, ring gfn 0x%llx)", domid, (unsigned long long)gfn);
    if (xc_mem_paging_enable(x->xch, domid, &remote) != 0) {
        err = errno;
        release_ring(x, r);
        return fail(err, "xc_mem_paging_enable(domain %u)", domid);
    }
    /* Xen holds the ring page now; a failure here only leaves the guest able to see it. */
    xc_domain_decrease_reservation_exact(x->xch, domid, 1, 0, &gfn);
    if ((port = xenevtchn_bind_interdomain(x->xce, domid, remote)) < 0) {
        err = errno;
        xc_mem_paging_disable(x->xch, domid);
        release_ring(x, r);
        return fail(err, "xenevtchn_bind_interdomain(domain %u, port %u)", domid, remote);
    }
    SHARED_RING_INIT((vm_event_sring_t *)r->page);
    BACK_RING_INIT(&r->back, (vm_event_sring_t *)r->page, XC_PAGE_SIZE);
    r->domid = domid;
    r->port = port;
    return 0;
}

/* The handle's xenstore connection, opened on first use (a failed open is tried again next time), or NULL with
 * the failure recorded. Without xenstored only the names are missing, so any failure but a refusal is ENOENT. */
static struct xs_handle *xenstore(de_xen *x, int32_t *rc)
{
    struct xs_handle *xsh;
    int err;

    pthread_mutex_lock(&x->xs_lock);
    if (x->xsh == NULL && (x->xsh = xs_open(XS_OPEN_READONLY)) == NULL) {
        err = errno;
        if (err == EACCES || err == EPERM || err == ENOMEM || err == ENOENT)
            *rc = fail(err, "xs_open");
        else
            *rc = fail(ENOENT, "xs_open: xenstore not reachable (%s)", strerror(err));
    }
    xsh = x->xsh;
    pthread_mutex_unlock(&x->xs_lock);
    return xsh;
}

/* 1 if any ring has a request not taken yet. Caller holds x->lock. */
static int requests_waiting(de_xen *x)
{
    for (uint32_t i = 0; i < DE_XEN_MAX_RINGS; i++)
        if (x->rings[i].port >= 0 && RING_HAS_UNCONSUMED_REQUESTS(&x->rings[i].back))
            return 1;
    return 0;
}

/* Copies the next request of r out, as xenpaging's get_request does. Caller holds x->lock. */
static void take_request(struct de_xen_ring *r, de_xen_request *out)
{
    vm_event_request_t req;
    RING_IDX cons = r->back.req_cons;

    xen_rmb();
    memcpy(&req, RING_GET_REQUEST(&r->back, cons), sizeof req);
    r->back.req_cons = ++cons;
    r->back.sring->req_event = cons + 1;
    out->domid = r->domid;
    out->vcpu = req.vcpu_id;
    out->gfn = req.u.mem_paging.gfn;
    out->flags = req.flags;
    out->paging_flags = req.u.mem_paging.flags;
}

DE_EXPORT const char *de_xen_last_error(void)
{
    return last_error;
}

DE_EXPORT int32_t de_xen_open(de_xen **out)
{
    de_xen *x = calloc(1, sizeof *x);
    int32_t rc = 0;

    *out = NULL;
    if (x == NULL)
        return fail(ENOMEM, "de_xen_open");
    pthread_mutex_init(&x->lock, NULL);
    pthread_mutex_init(&x->xs_lock, NULL);
    for (uint32_t i = 0; i < DE_XEN_MAX_RINGS; i++)
        x->rings[i].port = -1;
    if ((x->xch = xc_interface_open(&quiet_logger, &quiet_logger, 0)) == NULL)
        rc = fail(errno, "xc_interface_open");
    else if ((x->fmem = xenforeignmemory_open(&quiet_logger, 0)) == NULL)
        rc = fail(errno, "xenforeignmemory_open");
    else if ((x->xce = xenevtchn_open(&quiet_logger, 0)) == NULL)
        rc = fail(errno, "xenevtchn_open");
    if (rc != 0) {
        de_xen_close(x);
        errno = -rc;
        return rc;
    }
    *out = x;
    return 0;
}

DE_EXPORT int32_t de_xen_close(de_xen *x)
{
    if (x == NULL)
        return 0;
    for (uint32_t i = 0; i < DE_XEN_MAX_RINGS; i++)
        if (x->rings[i].port >= 0)
            release_ring(x, &x->rings[i]);
    if (x->xsh != NULL)
        xs_close(x->xsh);
    if (x->xce != NULL)
        xenevtchn_close(x->xce);
    if (x->fmem != NULL)
        xenforeignmemory_close(x->fmem);
    if (x->xch != NULL)
        xc_interface_close(x->xch);
    pthread_mutex_destroy(&x->xs_lock);
    pthread_mutex_destroy(&x->lock);
    free(x);
    return 0;
}

DE_EXPORT int32_t de_xen_list_domains(de_xen *x, uint32_t first_domid, de_xen_domain *out, uint32_t capacity)
{
    xc_domaininfo_t info[32];
    uint32_t n = 0;

    while (n < capacity) {
        unsigned int want = capacity - n < 32 ? capacity - n : 32;
        int got = xc_domain_getinfolist(x->xch, first_domid, want, info);
        if (got < 0)
            return fail(errno, "xc_domain_getinfolist(first domain %u)", first_domid);
        for (int i = 0; i < got; i++, n++)
            out[n] = (de_xen_domain){ info[i].domain, domain_flags(info[i].flags), info[i].tot_pages,
                                      info[i].max_pages, info[i].shr_pages, info[i].paged_pages };
        if ((unsigned int)got < want)
            break;
        first_domid = (uint32_t)info[got - 1].domain + 1;
    }
    return (int32_t)n;
}

DE_EXPORT int32_t de_xen_domain_name(de_xen *x, uint32_t domid, char *buf, uint32_t capacity)
{
    char path[64];
    struct xs_handle *xsh;
    unsigned int len = 0;
    char *value;
    int32_t rc = 0;

    if (capacity == 0)
        return fail(EINVAL, "de_xen_domain_name(domain %u, capacity 0)", domid);
    if ((xsh = xenstore(x, &rc)) == NULL)
        return rc;
    snprintf(path, sizeof path, "/local/domain/%u/name", domid);
    if ((value = xs_read(xsh, XBT_NULL, path, &len)) == NULL)
        return fail(errno, "xs_read(%s)", path);
    if (len > capacity - 1)
        len = capacity - 1;
    memcpy(buf, value, len);
    buf[len] = '\0';
    free(value);
    return (int32_t)len;
}

DE_EXPORT int32_t de_xen_max_gpfn(de_xen *x, uint32_t domid, uint64_t *gpfn)
{
    xen_pfn_t max;

    if (xc_domain_maximum_gpfn(x->xch, domid, &max) != 0)
        return fail(errno, "xc_domain_maximum_gpfn(domain %u)", domid);
    *gpfn = max;
    return 0;
}

DE_EXPORT int32_t de_xen_read_page(de_xen *x, uint32_t domid, uint64_t gfn, uint8_t *page)
{
    xen_pfn_t pfn = (xen_pfn_t)gfn;
    int err = 0;
    void *map = xenforeignmemory_map(x->fmem, domid, PROT_READ, 1, &pfn, &err);

    if (map == NULL)
        return fail(errno, "xenforeignmemory_map(domain %u, gfn 0x%llx)", domid, (unsigned long long)gfn);
    if (err == 0)
        memcpy(page, map, XC_PAGE_SIZE);
    xenforeignmemory_unmap(x->fmem, map, 1);
    return err == 0 ? 0 : fail(page_errno(err), "xenforeignmemory_map(domain %u, gfn 0x%llx)", domid,
                               (unsigned long long)gfn);
}

DE_EXPORT int32_t de_xen_read_pages(de_xen *x, uint32_t domid, uint64_t first_gfn, uint32_t count,
                                    uint8_t *pages, int32_t *errors)
{
    xen_pfn_t gfns[DE_XEN_MAX_BATCH];
    int err[DE_XEN_MAX_BATCH];
    uint8_t *map;

    if (count == 0 || count > DE_XEN_MAX_BATCH)
        return fail(EINVAL, "de_xen_read_pages(%u pages; 1..%u allowed)", count, DE_XEN_MAX_BATCH);
    for (uint32_t i = 0; i < count; i++)
        gfns[i] = (xen_pfn_t)(first_gfn + i);
    if ((map = xenforeignmemory_map(x->fmem, domid, PROT_READ, count, gfns, err)) == NULL)
        return fail(errno, "xenforeignmemory_map(domain %u, gfn 0x%llx, %u pages)", domid,
                    (unsigned long long)first_gfn, count);
    for (uint32_t i = 0; i < count; i++) {
        errors[i] = page_errno(err[i]);
        if (errors[i] == 0)
            memcpy(pages + (size_t)i * XC_PAGE_SIZE, map + (size_t)i * XC_PAGE_SIZE, XC_PAGE_SIZE);
        else
            memset(pages + (size_t)i * XC_PAGE_SIZE, 0, XC_PAGE_SIZE);
    }
    xenforeignmemory_unmap(x->fmem, map, count);
    return 0;
}

DE_EXPORT int32_t de_xen_sharing_control(de_xen *x, uint32_t domid, uint32_t enable)
{
    if (xc_memshr_control(x->xch, domid, enable != 0) != 0)
        return fail(errno, "xc_memshr_control(domain %u, %s)", domid, enable ? "enable" : "disable");
    return 0;
}

DE_EXPORT int32_t de_xen_sharing_nominate(de_xen *x, uint32_t domid, uint64_t gfn, uint64_t *handle)
{
    if (xc_memshr_nominate_gfn(x->xch, domid, (unsigned long)gfn, handle) != 0)
        return fail(errno, "xc_memshr_nominate_gfn(domain %u, gfn 0x%llx)", domid, (unsigned long long)gfn);
    return 0;
}

DE_EXPORT int32_t de_xen_sharing_share(de_xen *x, uint32_t source_domid, uint64_t source_gfn, uint64_t source_handle,
                                       uint32_t client_domid, uint64_t client_gfn, uint64_t client_handle)
{
    if (xc_memshr_share_gfns(x->xch, source_domid, (unsigned long)source_gfn, source_handle, client_domid,
                             (unsigned long)client_gfn, client_handle) == 0)
        return 0;
    return fail(errno, "xc_memshr_share_gfns(source domain %u gfn 0x%llx, client domain %u gfn 0x%llx)%s",
                source_domid, (unsigned long long)source_gfn, client_domid, (unsigned long long)client_gfn,
                errno == -XENMEM_SHARING_OP_S_HANDLE_INVALID ? " [source handle invalid]"
                : errno == -XENMEM_SHARING_OP_C_HANDLE_INVALID ? " [client handle invalid]" : "");
}

DE_EXPORT int32_t de_xen_sharing_totals(de_xen *x, uint64_t *freed_pages, uint64_t *used_frames)
{
    long freed, used;

    if ((freed = xc_sharing_freed_pages(x->xch)) < 0)
        return fail(errno, "xc_sharing_freed_pages");
    if ((used = xc_sharing_used_frames(x->xch)) < 0)
        return fail(errno, "xc_sharing_used_frames");
    *freed_pages = (uint64_t)freed;
    *used_frames = (uint64_t)used;
    return 0;
}

DE_EXPORT int32_t de_xen_paging_enable(de_xen *x, uint32_t domid)
{
    struct de_xen_ring *r;
    int32_t rc;

    pthread_mutex_lock(&x->lock);
    if (find_ring(x, domid) != NULL)
        rc = fail(EBUSY, "de_xen_paging_enable(domain %u): this handle pages it already", domid);
    else if ((r = free_ring(x)) == NULL)
        rc = fail(ENOSPC, "de_xen_paging_enable(domain %u): %u rings in use", domid, DE_XEN_MAX_RINGS);
    else if (xc_domain_pause(x->xch, domid) != 0)
        rc = fail(errno, "xc_domain_pause(domain %u)", domid);
    else {
        rc = take_ring(x, r, domid);
        if (xc_domain_unpause(x->xch, domid) != 0 && rc == 0)
            rc = fail(errno, "xc_domain_unpause(domain %u)", domid);
    }
    pthread_mutex_unlock(&x->lock);
    return rc;
}

DE_EXPORT int32_t de_xen_paging_disable(de_xen *x, uint32_t domid)
{
    struct de_xen_ring *r;
    int32_t rc = 0;

    pthread_mutex_lock(&x->lock);
    if (xc_mem_paging_disable(x->xch, domid) != 0)
        rc = fail(errno, "xc_mem_paging_disable(domain %u)", domid);
    /* A ring Xen still uses stays mapped, unless the domain is gone. */
    if ((rc == 0 || rc == -ESRCH) && (r = find_ring(x, domid)) != NULL)
        release_ring(x, r);
    pthread_mutex_unlock(&x->lock);
    return rc;
}

DE_EXPORT int32_t de_xen_paging_nominate(de_xen *x, uint32_t domid, uint64_t gfn)
{
    if (xc_mem_paging_nominate(x->xch, domid, gfn) != 0)
        return fail(errno, "xc_mem_paging_nominate(domain %u, gfn 0x%llx)", domid, (unsigned long long)gfn);
    return 0;
}

DE_EXPORT int32_t de_xen_paging_evict(de_xen *x, uint32_t domid, uint64_t gfn)
{
    if (xc_mem_paging_evict(x->xch, domid, gfn) != 0)
        return fail(errno, "xc_mem_paging_evict(domain %u, gfn 0x%llx)", domid, (unsigned long long)gfn);
    return 0;
}

DE_EXPORT int32_t de_xen_paging_load(de_xen *x, uint32_t domid, uint64_t gfn, const uint8_t *page)
{
    /* libxc bounces the buffer into hypercall-safe memory; it only reads it. */
    if (xc_mem_paging_load(x->xch, domid, gfn, (void *)page) != 0)
        return fail(errno, "xc_mem_paging_load(domain %u, gfn 0x%llx)", domid, (unsigned long long)gfn);
    return 0;
}

DE_EXPORT int32_t de_xen_paging_prep(de_xen *x, uint32_t domid, uint64_t gfn)
{
    if (xc_mem_paging_prep(x->xch, domid, gfn) != 0)
        return fail(errno, "xc_mem_paging_prep(domain %u, gfn 0x%llx)", domid, (unsigned long long)gfn);
    return 0;
}

DE_EXPORT int32_t de_xen_ring_wait(de_xen *x, int32_t timeout_ms)
{
    struct pollfd fd = { .fd = xenevtchn_fd(x->xce), .events = POLLIN };
    int waiting, ready, port;

    pthread_mutex_lock(&x->lock);
    waiting = requests_waiting(x);
    pthread_mutex_unlock(&x->lock);
    if (waiting)
        return 1;
    if ((ready = poll(&fd, 1, timeout_ms)) <= 0)
        return ready == 0 || errno == EINTR ? 0 : fail(errno, "poll(event channel)");
    if ((port = xenevtchn_pending(x->xce)) < 0)
        return errno == EAGAIN ? 0 : fail(errno, "xenevtchn_pending");
    if (xenevtchn_unmask(x->xce, (evtchn_port_t)port) != 0)
        return fail(errno, "xenevtchn_unmask(port %d)", port);
    return 1;
}

DE_EXPORT int32_t de_xen_ring_get(de_xen *x, de_xen_request *request)
{
    int32_t taken = 0;

    pthread_mutex_lock(&x->lock);
    for (uint32_t k = 0; k < DE_XEN_MAX_RINGS && !taken; k++) {
        uint32_t i = (x->next + k) % DE_XEN_MAX_RINGS;
        if (x->rings[i].port >= 0 && RING_HAS_UNCONSUMED_REQUESTS(&x->rings[i].back)) {
            take_request(&x->rings[i], request);
            x->next = i + 1;
            taken = 1;
        }
    }
    pthread_mutex_unlock(&x->lock);
    return taken;
}

DE_EXPORT int32_t de_xen_ring_put(de_xen *x, const de_xen_request *request)
{
    vm_event_response_t rsp;
    struct de_xen_ring *r;
    int32_t port = -1;

    memset(&rsp, 0, sizeof rsp);
    rsp.version = VM_EVENT_INTERFACE_VERSION;
    rsp.reason = VM_EVENT_REASON_MEM_PAGING;
    rsp.flags = request->flags;
    rsp.vcpu_id = request->vcpu;
    rsp.u.mem_paging.gfn = request->gfn;
    rsp.u.mem_paging.flags = request->paging_flags;
    pthread_mutex_lock(&x->lock);
    if ((r = find_ring(x, request->domid)) != NULL) {
        RING_IDX prod = r->back.rsp_prod_pvt;
        memcpy(RING_GET_RESPONSE(&r->back, prod), &rsp, sizeof rsp);
        r->back.rsp_prod_pvt = prod + 1;
        RING_PUSH_RESPONSES(&r->back);
        port = r->port;
    }
    pthread_mutex_unlock(&x->lock);
    if (port < 0)
        return fail(ENOENT, "de_xen_ring_put(domain %u): no paging ring", request->domid);
    if (xenevtchn_notify(x->xce, (evtchn_port_t)port) != 0)
        return fail(errno, "xenevtchn_notify(domain %u, port %d)", request->domid, port);
    return 0;
}
