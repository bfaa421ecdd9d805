/*
 * The shim's own tests: native/dexen.c linked against the fake Xen (fakexen/). Prints one "ok"/"not ok"
 * line per test and a "# <n> passed, <m> failed" summary; exits 1 on any failure.
 * Run by tests/DifferenceEngine.Tests/Xen/NativeShimTests.cs, so the totals count in the xunit run.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dexen.h"
#include "fakexen.h"

#define PAGE DE_XEN_PAGE_SIZE

static int failures;

#define CHECK(cond)                                                                                      \
    do {                                                                                                 \
        if (!(cond)) {                                                                                   \
            printf("#   %s:%d: CHECK(%s) failed; de_xen_last_error: \"%s\"\n", __FILE__, __LINE__, #cond,   \
                   de_xen_last_error());                                                                 \
            failures++;                                                                                  \
            return;                                                                                      \
        }                                                                                                \
    } while (0)

/* Page gfn of a domain created with content(seed): every byte a function of both. */
static void pattern(uint8_t *page, uint32_t seed, uint64_t gfn)
{
    for (uint32_t i = 0; i < PAGE; i++)
        page[i] = (uint8_t)(seed * 31u + gfn * 7u + i * 13u + (i >> 8));
}

static uint8_t *content(uint32_t seed, uint64_t pages)
{
    uint8_t *bytes = malloc(pages * PAGE);
    for (uint64_t g = 0; g < pages; g++)
        pattern(bytes + g * PAGE, seed, g);
    return bytes;
}

static int create(uint32_t domid, uint64_t pages, uint32_t seed)
{
    uint8_t *bytes = content(seed, pages);
    int rc = fakexen_create_domain(domid, pages, bytes);
    free(bytes);
    return rc;
}

static de_xen *open_shim(void)
{
    de_xen *x = NULL;
    return de_xen_open(&x) == 0 ? x : NULL;
}

static int find_domain(de_xen *x, uint32_t domid, de_xen_domain *out)
{
    de_xen_domain all[16];
    int n = de_xen_list_domains(x, 0, all, 16);
    for (int i = 0; i < n; i++)
        if (all[i].domid == domid) {
            *out = all[i];
            return 1;
        }
    return 0;
}

/* A guest vCPU (or a foreign reader) on its own thread, since it blocks until the pager answers. */
struct access {
    pthread_t thread;
    de_xen *shim;        /* non-NULL: read through the shim's foreign mapping instead of as the guest */
    uint32_t domid;
    uint64_t gfn;
    int write;
    uint8_t page[PAGE];
    int32_t rc;
};

static void *access_main(void *arg)
{
    struct access *a = arg;
    if (a->shim != NULL)
        a->rc = de_xen_read_page(a->shim, a->domid, a->gfn, a->page);
    else
        a->rc = a->write ? fakexen_guest_write(a->domid, a->gfn, a->page) : fakexen_guest_read(a->domid, a->gfn, a->page);
    return NULL;
}

static void start(struct access *a)
{
    pthread_create(&a->thread, NULL, access_main, a);
}

static void test_open_failure(void)
{
    de_xen *x = (de_xen *)1;
    CHECK(fakexen_fail_next("xenevtchn_open", EACCES) == 0);
    CHECK(de_xen_open(&x) == -EACCES);
    CHECK(x == NULL);
    CHECK(strstr(de_xen_last_error(), "xenevtchn_open") != NULL);
    CHECK(fakexen_fail_next("xc_interface_open", EPERM) == 0);
    CHECK(de_xen_open(&x) == -EPERM && errno == EPERM);
}

static void test_list_domains(void)
{
    de_xen_domain d[4];
    de_xen *x;
    CHECK(create(3, 8, 1) == 0 && create(1, 4, 2) == 0);
    CHECK((x = open_shim()) != NULL);
    CHECK(de_xen_list_domains(x, 0, d, 4) == 2);
    CHECK(d[0].domid == 1 && d[1].domid == 3);
    CHECK(d[0].tot_pages == 4 && d[0].max_pages == 4 && d[0].shr_pages == 0 && d[0].paged_pages == 0);
    CHECK(d[1].flags == (DE_XEN_DOMAIN_HVM | DE_XEN_DOMAIN_HAP | DE_XEN_DOMAIN_RUNNING));
    CHECK(de_xen_list_domains(x, 0, d, 1) == 1 && d[0].domid == 1);
    CHECK(de_xen_list_domains(x, 2, d, 4) == 1 && d[0].domid == 3);
    CHECK(fakexen_fail_next("xc_domain_getinfolist", EPERM) == 0);
    CHECK(de_xen_list_domains(x, 0, d, 4) == -EPERM);
    CHECK(strstr(de_xen_last_error(), "xc_domain_getinfolist") != NULL);
    de_xen_close(x);
}

static void test_read_pages(void)
{
    uint8_t page[PAGE], expect[PAGE], batch[4 * PAGE];
    int32_t errors[4];
    uint64_t max = 0;
    de_xen *x;
    CHECK(create(3, 8, 5) == 0);
    CHECK((x = open_shim()) != NULL);
    pattern(expect, 5, 6);
    CHECK(de_xen_read_page(x, 3, 6, page) == 0 && memcmp(page, expect, PAGE) == 0);
    CHECK(de_xen_read_pages(x, 3, 6, 4, batch, errors) == 0); /* gfns 6, 7, the ring page, nothing */
    CHECK(errors[0] == 0 && errors[1] == 0 && errors[2] == 0 && errors[3] == EINVAL);
    CHECK(memcmp(batch, expect, PAGE) == 0);
    CHECK(de_xen_read_page(x, 3, 100, page) == -EINVAL);
    CHECK(strstr(de_xen_last_error(), "gfn 0x64") != NULL);
    CHECK(de_xen_read_page(x, 9, 0, page) == -ESRCH);
    CHECK(de_xen_read_pages(x, 3, 0, 0, batch, errors) == -EINVAL);
    CHECK(de_xen_max_gpfn(x, 3, &max) == 0 && max == 8); /* 8 guest pages, then the ring page */
    de_xen_close(x);
}

static void test_share_and_copy_on_write(void)
{
    uint8_t same[PAGE], page[PAGE], other[PAGE];
    uint64_t h1 = 0, h2 = 0, frames;
    de_xen_domain d;
    de_xen *x;
    CHECK(create(1, 4, 1) == 0 && create(2, 4, 2) == 0);
    pattern(same, 9, 9);
    CHECK(fakexen_guest_write(1, 2, same) == 0 && fakexen_guest_write(2, 3, same) == 0);
    CHECK((x = open_shim()) != NULL);
    CHECK(de_xen_sharing_nominate(x, 1, 2, &h1) == -EINVAL); /* sharing not enabled yet */
    CHECK(de_xen_sharing_control(x, 1, 1) == 0 && de_xen_sharing_control(x, 2, 1) == 0);
    frames = fakexen_frame_count();
    CHECK(de_xen_sharing_nominate(x, 1, 2, &h1) == 0 && de_xen_sharing_nominate(x, 2, 3, &h2) == 0);
    CHECK(h1 != 0 && h2 != 0 && h1 != h2);
    CHECK(de_xen_sharing_share(x, 1, 2, h1, 2, 3, h2) == 0);
    CHECK(fakexen_frame_count() == frames - 1);
    CHECK(find_domain(x, 2, &d) && d.shr_pages == 1 && d.tot_pages == 3);
    CHECK(de_xen_read_page(x, 2, 3, page) == 0 && memcmp(page, same, PAGE) == 0);
    /* The guest writes its copy: Xen gives it a private frame again; the other domain keeps the old bytes. */
    pattern(other, 4, 4);
    CHECK(fakexen_guest_write(2, 3, other) == 0);
    CHECK(fakexen_frame_count() == frames);
    CHECK(fakexen_guest_read(1, 2, page) == 0 && memcmp(page, same, PAGE) == 0);
    CHECK(fakexen_guest_read(2, 3, page) == 0 && memcmp(page, other, PAGE) == 0);
    CHECK(find_domain(x, 2, &d) && d.shr_pages == 0 && d.tot_pages == 4);
    /* Its handle died with the write. */
    CHECK(de_xen_sharing_share(x, 1, 2, h1, 2, 3, h2) == -9);
    CHECK(strstr(de_xen_last_error(), "client handle invalid") != NULL);
    CHECK(fakexen_guest_write(1, 2, other) == 0);
    CHECK(de_xen_sharing_share(x, 1, 2, h1, 2, 3, h2) == -10);
    de_xen_close(x);
}

static void test_sharing_errors(void)
{
    uint64_t h;
    de_xen *x;
    CHECK(create(1, 4, 1) == 0);
    CHECK((x = open_shim()) != NULL);
    CHECK(fakexen_fail_next("xc_memshr_control", EPERM) == 0);
    CHECK(de_xen_sharing_control(x, 1, 1) == -EPERM);
    CHECK(de_xen_sharing_control(x, 1, 1) == 0);
    CHECK(fakexen_fail_next("xc_memshr_nominate_gfn", ENOMEM) == 0);
    CHECK(de_xen_sharing_nominate(x, 1, 0, &h) == -ENOMEM);
    CHECK(de_xen_sharing_nominate(x, 1, 4, &h) == -EINVAL);
    de_xen_close(x);
}

/* Totals and the invariant of xenctrl.h: the domains' shr_pages add up to freed + used. */
static int totals_are(de_xen *x, uint64_t freed, uint64_t used)
{
    de_xen_domain all[16];
    uint64_t f = ~0ull, u = ~0ull, shr = 0;
    int n = de_xen_list_domains(x, 0, all, 16);
    for (int i = 0; i < n; i++)
        shr += all[i].shr_pages;
    if (de_xen_sharing_totals(x, &f, &u) != 0 || f != freed || u != used || shr != f + u) {
        printf("#   totals: freed %llu used %llu shr_pages %llu; expected freed %llu used %llu\n", (unsigned long long)f,
               (unsigned long long)u, (unsigned long long)shr, (unsigned long long)freed, (unsigned long long)used);
        return 0;
    }
    return 1;
}

/* mem_sharing.c's counters: nominating adds a used frame, sharing moves one to freed, copy-on-write takes one
 * freed page back, the last sharer's write takes its frame back out of the sharable state. */
static void test_sharing_totals(void)
{
    uint8_t same[PAGE], other[PAGE];
    uint64_t h10, h20, h30, h11, freed, used;
    de_xen *x;
    CHECK(create(1, 4, 1) == 0 && create(2, 4, 2) == 0 && create(3, 4, 3) == 0);
    pattern(same, 9, 9);
    pattern(other, 4, 4);
    CHECK(fakexen_guest_write(1, 0, same) == 0 && fakexen_guest_write(2, 0, same) == 0);
    CHECK(fakexen_guest_write(3, 0, same) == 0 && fakexen_guest_write(1, 1, same) == 0);
    CHECK((x = open_shim()) != NULL);
    CHECK(totals_are(x, 0, 0));
    CHECK(de_xen_sharing_control(x, 1, 1) == 0 && de_xen_sharing_control(x, 2, 1) == 0 &&
          de_xen_sharing_control(x, 3, 1) == 0);
    CHECK(de_xen_sharing_nominate(x, 1, 0, &h10) == 0 && de_xen_sharing_nominate(x, 2, 0, &h20) == 0);
    CHECK(totals_are(x, 0, 2));
    CHECK(de_xen_sharing_share(x, 1, 0, h10, 2, 0, h20) == 0);
    CHECK(totals_are(x, 1, 1));
    CHECK(de_xen_sharing_nominate(x, 3, 0, &h30) == 0 && de_xen_sharing_share(x, 1, 0, h10, 3, 0, h30) == 0);
    CHECK(totals_are(x, 2, 1));
    CHECK(de_xen_sharing_nominate(x, 1, 1, &h11) == 0);
    CHECK(totals_are(x, 2, 2));
    CHECK(de_xen_sharing_share(x, 1, 0, h10, 2, 0, h10) == 0); /* already one frame: nothing counted */
    CHECK(totals_are(x, 2, 2));
    CHECK(fakexen_guest_write(2, 0, other) == 0); /* a copy: one saved frame less */
    CHECK(totals_are(x, 1, 2));
    CHECK(fakexen_guest_write(3, 0, other) == 0);
    CHECK(totals_are(x, 0, 2)); /* (1, 0) alone on its frame, still sharable */
    CHECK(fakexen_guest_write(1, 0, other) == 0 && fakexen_guest_write(1, 1, other) == 0);
    CHECK(totals_are(x, 0, 0));
    CHECK(fakexen_fail_next("xc_sharing_used_frames", EPERM) == 0);
    CHECK(de_xen_sharing_totals(x, &freed, &used) == -EPERM);
    CHECK(strstr(de_xen_last_error(), "xc_sharing_used_frames") != NULL);
    CHECK(fakexen_fail_next("xc_sharing_freed_pages", ENOSYS) == 0);
    CHECK(de_xen_sharing_totals(x, &freed, &used) == -ENOSYS && errno == ENOSYS);
    CHECK(strstr(de_xen_last_error(), "xc_sharing_freed_pages") != NULL);
    de_xen_close(x);
}

static void test_domain_names(void)
{
    char name[64];
    de_xen *x;
    CHECK(create(3, 4, 1) == 0);
    CHECK((x = open_shim()) != NULL);
    CHECK(de_xen_domain_name(x, 3, name, sizeof name) == -ENOENT); /* a new domain has none */
    CHECK(strstr(de_xen_last_error(), "xs_read(/local/domain/3/name)") != NULL);
    CHECK(fakexen_set_domain_name(3, "guest-three") == 0);
    CHECK(de_xen_domain_name(x, 3, name, sizeof name) == 11 && strcmp(name, "guest-three") == 0);
    CHECK(de_xen_domain_name(x, 3, name, 6) == 5 && strcmp(name, "guest") == 0);
    CHECK(de_xen_domain_name(x, 3, name, 1) == 0 && name[0] == '\0');
    CHECK(de_xen_domain_name(x, 3, name, 0) == -EINVAL);
    CHECK(de_xen_domain_name(x, 9, name, sizeof name) == -ENOENT);
    CHECK(fakexen_set_domain_name(9, "nine") == -ESRCH);
    CHECK(fakexen_fail_next("xs_read", EACCES) == 0);
    CHECK(de_xen_domain_name(x, 3, name, sizeof name) == -EACCES);
    CHECK(de_xen_domain_name(x, 3, name, sizeof name) == 11);
    CHECK(fakexen_set_domain_name(3, NULL) == 0);
    CHECK(de_xen_domain_name(x, 3, name, sizeof name) == -ENOENT);
    de_xen_close(x);
}

/* xenstore opens on the first name, not with the handle: without xenstored only the names are missing. */
static void test_xenstore_opened_lazily(void)
{
    de_xen_domain d[4];
    char name[64];
    de_xen *x;
    CHECK(create(2, 4, 1) == 0 && fakexen_set_domain_name(2, "two") == 0);
    CHECK(fakexen_fail_next("xs_open", ECONNREFUSED) == 0);
    CHECK((x = open_shim()) != NULL);
    CHECK(de_xen_list_domains(x, 0, d, 4) == 1);
    CHECK(de_xen_domain_name(x, 2, name, sizeof name) == -ENOENT); /* the open fails here, as "no xenstore" */
    CHECK(strstr(de_xen_last_error(), "xs_open") != NULL && strstr(de_xen_last_error(), "refused") != NULL);
    CHECK(de_xen_list_domains(x, 0, d, 4) == 1);
    CHECK(de_xen_domain_name(x, 2, name, sizeof name) == 3 && strcmp(name, "two") == 0); /* tried again */
    de_xen_close(x);
    CHECK(fakexen_fail_next("xs_open", EACCES) == 0);
    CHECK((x = open_shim()) != NULL);
    CHECK(de_xen_domain_name(x, 2, name, sizeof name) == -EACCES);
    de_xen_close(x);
}

/* Evict, the guest touches the page, the ring carries the request, the pager loads it back. */
static void test_evict_guest_read_load(void)
{
    uint8_t saved[PAGE], expect[PAGE];
    struct access guest = { .domid = 7, .gfn = 3 };
    de_xen_request req;
    de_xen_domain d;
    de_xen *x;
    CHECK(create(7, 16, 3) == 0);
    CHECK((x = open_shim()) != NULL);
    CHECK(de_xen_paging_enable(x, 7) == 0);
    CHECK(de_xen_paging_nominate(x, 7, 3) == 0);
    CHECK(de_xen_read_page(x, 7, 3, saved) == 0);
    CHECK(de_xen_paging_evict(x, 7, 3) == 0);
    CHECK(find_domain(x, 7, &d) && d.paged_pages == 1 && d.tot_pages == 15);
    CHECK(de_xen_ring_wait(x, 0) == 0);
    start(&guest);
    CHECK(de_xen_ring_wait(x, 5000) == 1);
    CHECK(de_xen_ring_get(x, &req) == 1);
    CHECK(req.domid == 7 && req.gfn == 3 && (req.flags & DE_XEN_REQUEST_VCPU_PAUSED) && req.paging_flags == 0);
    CHECK(de_xen_ring_get(x, &req) == 0 || req.gfn == 3);
    CHECK(de_xen_paging_load(x, 7, 3, saved) == 0);
    CHECK(de_xen_ring_put(x, &req) == 0);
    pthread_join(guest.thread, NULL);
    pattern(expect, 3, 3);
    CHECK(guest.rc == 0 && memcmp(guest.page, expect, PAGE) == 0);
    CHECK(find_domain(x, 7, &d) && d.paged_pages == 0 && d.tot_pages == 16);
    CHECK(fakexen_requests_posted(7) == 1);
    CHECK(de_xen_paging_disable(x, 7) == 0);
    de_xen_close(x);
}

/* A write between nominate and evict cancels the eviction (EVICT_FAIL), and the guest's bytes win. */
static void test_evict_fail(void)
{
    struct access guest = { .domid = 7, .gfn = 4, .write = 1 };
    uint8_t page[PAGE];
    de_xen_request req;
    de_xen *x;
    CHECK(create(7, 8, 3) == 0);
    CHECK((x = open_shim()) != NULL);
    CHECK(de_xen_paging_enable(x, 7) == 0);
    CHECK(de_xen_paging_nominate(x, 7, 4) == 0);
    pattern(guest.page, 8, 8);
    start(&guest);
    CHECK(de_xen_ring_wait(x, 5000) == 1 && de_xen_ring_get(x, &req) == 1);
    CHECK(req.gfn == 4 && (req.paging_flags & DE_XEN_PAGING_EVICT_FAIL));
    CHECK(de_xen_paging_evict(x, 7, 4) == -EBUSY);
    CHECK(de_xen_ring_put(x, &req) == 0);
    pthread_join(guest.thread, NULL);
    CHECK(guest.rc == 0);
    CHECK(de_xen_read_page(x, 7, 4, page) == 0 && memcmp(page, guest.page, PAGE) == 0);
    de_xen_close(x);
}

/* Reading an evicted page through a foreign mapping pages it in first, as libxenforeignmemory does. */
static void test_foreign_read_pages_in(void)
{
    struct access reader = { .domid = 7, .gfn = 6 };
    uint8_t saved[PAGE];
    de_xen_request req;
    de_xen *x;
    CHECK(create(7, 8, 4) == 0);
    CHECK((x = open_shim()) != NULL);
    reader.shim = x;
    CHECK(de_xen_paging_enable(x, 7) == 0);
    CHECK(de_xen_paging_nominate(x, 7, 6) == 0 && de_xen_read_page(x, 7, 6, saved) == 0);
    CHECK(de_xen_paging_evict(x, 7, 6) == 0);
    start(&reader);
    CHECK(de_xen_ring_wait(x, 5000) == 1 && de_xen_ring_get(x, &req) == 1);
    CHECK(req.gfn == 6 && !(req.flags & DE_XEN_REQUEST_VCPU_PAUSED));
    CHECK(de_xen_paging_load(x, 7, 6, saved) == 0 && de_xen_ring_put(x, &req) == 0);
    pthread_join(reader.thread, NULL);
    CHECK(reader.rc == 0 && memcmp(reader.page, saved, PAGE) == 0);
    de_xen_close(x);
}

static void test_prep_and_proactive_load(void)
{
    uint8_t saved[PAGE], page[PAGE];
    de_xen *x;
    CHECK(create(7, 8, 6) == 0);
    CHECK((x = open_shim()) != NULL);
    CHECK(de_xen_paging_enable(x, 7) == 0);
    CHECK(de_xen_paging_nominate(x, 7, 2) == 0 && de_xen_read_page(x, 7, 2, saved) == 0);
    CHECK(de_xen_paging_evict(x, 7, 2) == 0);
    CHECK(de_xen_paging_prep(x, 7, 2) == -EINVAL); /* evicted: only a load with the bytes brings it back */
    CHECK(de_xen_paging_load(x, 7, 2, saved) == 0);
    CHECK(de_xen_paging_load(x, 7, 2, saved) == -ENOENT);
    CHECK(fakexen_guest_read(7, 2, page) == 0 && memcmp(page, saved, PAGE) == 0);
    CHECK(fakexen_requests_posted(7) == 0);
    de_xen_close(x);
}

static void test_paging_errors(void)
{
    de_xen_request req = { .domid = 7 };
    de_xen *x;
    CHECK(create(7, 8, 6) == 0);
    CHECK((x = open_shim()) != NULL);
    CHECK(de_xen_paging_nominate(x, 7, 1) == -ENODEV); /* no pager yet */
    CHECK(fakexen_fail_next("xc_mem_paging_enable", EPERM) == 0);
    CHECK(de_xen_paging_enable(x, 7) == -EPERM);
    CHECK(strstr(de_xen_last_error(), "xc_mem_paging_enable(domain 7)") != NULL);
    CHECK(de_xen_paging_enable(x, 7) == 0);
    CHECK(de_xen_paging_enable(x, 7) == -EBUSY);
    CHECK(de_xen_paging_evict(x, 7, 1) == -EBUSY);  /* not nominated */
    CHECK(de_xen_paging_nominate(x, 7, 99) == -EBUSY);
    CHECK(de_xen_paging_load(x, 7, 1, (const uint8_t *)"") == -ENOENT);
    CHECK(fakexen_fail_next("xc_mem_paging_nominate", ENOMEM) == 0);
    CHECK(de_xen_paging_nominate(x, 7, 1) == -ENOMEM);
    CHECK(de_xen_paging_disable(x, 7) == 0);
    CHECK(de_xen_ring_put(x, &req) == -ENOENT);
    de_xen_close(x);
}

/* A builder that left the ring gfn unpopulated: the shim populates it, as libxc's own setup does. */
static void test_ring_page_populated(void)
{
    uint64_t max = 0;
    de_xen *x;
    CHECK(create(5, 4, 1) == 0 && fakexen_drop_ring_page(5) == 0);
    CHECK((x = open_shim()) != NULL);
    CHECK(de_xen_max_gpfn(x, 5, &max) == 0 && max == 3);
    CHECK(de_xen_paging_enable(x, 5) == 0);
    CHECK(de_xen_max_gpfn(x, 5, &max) == 0 && max == 3); /* the ring left the guest's physmap */
    de_xen_close(x);
}

static void test_rings_of_two_domains(void)
{
    struct access a = { .domid = 1, .gfn = 1 }, b = { .domid = 2, .gfn = 2 };
    uint8_t pa[PAGE], pb[PAGE];
    de_xen_request req;
    int served = 0;
    de_xen *x;
    CHECK(create(1, 4, 1) == 0 && create(2, 4, 2) == 0);
    CHECK((x = open_shim()) != NULL);
    CHECK(de_xen_paging_enable(x, 1) == 0 && de_xen_paging_enable(x, 2) == 0);
    CHECK(de_xen_paging_nominate(x, 1, 1) == 0 && de_xen_read_page(x, 1, 1, pa) == 0 && de_xen_paging_evict(x, 1, 1) == 0);
    CHECK(de_xen_paging_nominate(x, 2, 2) == 0 && de_xen_read_page(x, 2, 2, pb) == 0 && de_xen_paging_evict(x, 2, 2) == 0);
    start(&a);
    start(&b);
    while (served < 2) {
        CHECK(de_xen_ring_wait(x, 5000) == 1);
        while (de_xen_ring_get(x, &req) == 1) {
            CHECK(de_xen_paging_load(x, req.domid, req.gfn, req.domid == 1 ? pa : pb) == 0);
            CHECK(de_xen_ring_put(x, &req) == 0);
            served++;
        }
    }
    pthread_join(a.thread, NULL);
    pthread_join(b.thread, NULL);
    CHECK(a.rc == 0 && memcmp(a.page, pa, PAGE) == 0 && b.rc == 0 && memcmp(b.page, pb, PAGE) == 0);
    de_xen_close(x);
}

int main(void)
{
    static const struct { const char *name; void (*run)(void); } tests[] = {
        { "open fails with the library's errno", test_open_failure },
        { "list domains", test_list_domains },
        { "read pages, bad gfn is EINVAL", test_read_pages },
        { "nominate + share, then copy-on-write", test_share_and_copy_on_write },
        { "sharing errno paths", test_sharing_errors },
        { "sharing totals follow nominate, share and copy-on-write", test_sharing_totals },
        { "domain names from xenstore, truncated, errno paths", test_domain_names },
        { "xenstore is opened lazily; its absence fails only the names", test_xenstore_opened_lazily },
        { "evict, guest read, ring request, load, read back", test_evict_guest_read_load },
        { "a guest write cancels an eviction", test_evict_fail },
        { "a foreign read pages in through the ring", test_foreign_read_pages_in },
        { "prep needs a frame; load works without a request", test_prep_and_proactive_load },
        { "paging errno paths", test_paging_errors },
        { "an unpopulated ring gfn is populated", test_ring_page_populated },
        { "two domains' rings on one handle", test_rings_of_two_domains },
    };
    const int count = (int)(sizeof tests / sizeof tests[0]);
    int failed = 0;

    fakexen_set_timeout_ms(10000);
    printf("1..%d\n", count);
    for (int i = 0; i < count; i++) {
        int before = failures;
        fakexen_reset();
        tests[i].run();
        if (failures != before)
            failed++;
        printf("%s %d - %s\n", failures == before ? "ok" : "not ok", i + 1, tests[i].name);
        fflush(stdout);
    }
    fakexen_reset();
    printf("# %d passed, %d failed\n", count - failed, failed);
    return failed == 0 ? 0 : 1;
}
