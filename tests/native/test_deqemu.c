/*
 * The tests of libdeqemu.so (native/deqemu.c): a fake QEMU (fakeguest.c, run with the library preloaded) and this
 * program as the engine, speaking the protocol of deqemu.h and paging the guest's RAM through the userfaultfd it
 * gets: evictions (write-protect, read, store, punch a hole), faults served with UFFDIO_COPY / UFFDIO_ZEROPAGE,
 * evictions racing guest writes, an engine killed with SIGKILL in the middle of a fault and a new one that finds the
 * evicted pages in the state the library held, and a detach after which the guest runs on alone. The guest checks
 * its own memory ("verify"): nothing may be lost.
 * With "own-guests" it runs instead the tests that start a guest of their own, shaped for the test: RAM mapped after
 * an engine said hello, guest RAM memfds without a shared mapping, a guest out of file descriptors.
 * Prints one "ok"/"not ok" line per test and a "# <n> passed, <m> failed" summary; exits 1 on any failure.
 * Usage: test_deqemu <libdeqemu.so> <fakeguest> [own-guests]. Run by
 * tests/DifferenceEngine.Tests/Qemu/NativeQemuLibraryTests.cs, and with own-guests by QemuLibraryFixesTests.cs.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "deqemu.h"

#define PAGE DE_QEMU_PAGE_SIZE
#define GUEST_PAGES 2048u

static int failures, passes;
static char socket_path[108];
static const char *library, *guest_program;

#define CHECK(cond)                                                                                   \
    do {                                                                                              \
        if (!(cond)) {                                                                                \
            printf("#   %s:%d: CHECK(%s) failed (errno %d: %s)\n", __FILE__, __LINE__, #cond, errno,    \
                   strerror(errno));                                                                  \
            return 0;                                                                                 \
        }                                                                                             \
    } while (0)

/* ---- the guest ---- */

typedef struct guest {
    pid_t pid;
    FILE *in, *out;
} guest;

/* Starts the fake guest with the library preloaded; option (or NULL) is its third argument, and its stderr goes to
 * err_fd when that is not -1. */
static int start_guest_with(guest *g, const char *option, int err_fd)
{
    int to[2], from[2];
    if (pipe2(to, O_CLOEXEC) != 0 || pipe2(from, O_CLOEXEC) != 0) return 0;
    g->pid = fork();
    if (g->pid == 0) {
        dup2(to[0], 0);
        dup2(from[1], 1);
        if (err_fd >= 0) dup2(err_fd, 2);
        setenv("LD_PRELOAD", library, 1);
        setenv("DE_QEMU_SOCKET", socket_path, 1);
        char pages[32];
        snprintf(pages, sizeof pages, "%u", GUEST_PAGES);
        execl(guest_program, guest_program, pages, "5", option, (char *)NULL);
        _exit(127);
    }
    close(to[0]);
    close(from[1]);
    g->in = fdopen(to[1], "w");
    g->out = fdopen(from[0], "r");
    char line[128];
    return g->pid > 0 && fgets(line, sizeof line, g->out) != NULL && strncmp(line, "READY ", 6) == 0;
}

static int start_guest(guest *g)
{
    return start_guest_with(g, NULL, -1);
}

/* Tells the guest to quit; 1 when it exited 0. */
static int stop_guest(guest *g)
{
    fprintf(g->in, "quit\n");
    fflush(g->in);
    int status;
    int exited = waitpid(g->pid, &status, 0) == g->pid && WIFEXITED(status) && WEXITSTATUS(status) == 0;
    fclose(g->in);
    fclose(g->out);
    g->pid = 0;
    return exited;
}

/* Sends a command and returns the guest's answer (without the newline) in line. */
static int ask(guest *g, const char *command, char *line, size_t size)
{
    fprintf(g->in, "%s\n", command);
    fflush(g->in);
    if (fgets(line, (int)size, g->out) == NULL) return 0;
    line[strcspn(line, "\n")] = '\0';
    return 1;
}

static int verified(guest *g)
{
    char line[128];
    return ask(g, "verify", line, sizeof line) && strcmp(line, "VERIFY mismatches=0") == 0;
}

/* ---- the engine ---- */

/* What the engine keeps per guest page: whether it took the page away, and its bytes then. The test keeps it in a
 * memfd that it deposits with the library, as a crash-safe engine does. */
typedef struct record {
    uint64_t evicted;
    uint8_t bytes[PAGE];
} record;

/* The engine numbers the guest's pages as QemuLink does: the regions of the hello one after another. */
typedef struct engine {
    int sock, uffd, state_fd;
    int memfds[DE_QEMU_MAX_REGIONS]; /* as the hello sent them: region r's is memfds[hello.regions[r].memfd_index] */
    int memfd_count, fd_count;       /* memfds sent; descriptors sent in all */
    de_qemu_hello hello;
    uint64_t first_gfn[DE_QEMU_MAX_REGIONS];
    uint64_t pages;
    record *state;
    pthread_mutex_t lock;      /* one eviction or one fault at a time: enough for a test */
    uint8_t *cancelled;        /* per page */
    pthread_t faults;
    int stop[2];
    int die_on_fault;          /* SIGKILL itself on the first fault it reads, answering nothing */
    uint64_t copies, zeros, wp_faults;
} engine;

static int connect_socket(void)
{
    int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    strcpy(a.sun_path, socket_path);
    if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof a) != 0) return -1;
    return s;
}

static int request(int sock, uint32_t op, int fd)
{
    de_qemu_msg m = { .magic = DE_QEMU_MAGIC, .version = DE_QEMU_VERSION, .op = op };
    char control[CMSG_SPACE(sizeof(int))];
    struct iovec iov = { .iov_base = &m, .iov_len = sizeof m };
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
    if (fd >= 0) {
        memset(control, 0, sizeof control);
        msg.msg_control = control;
        msg.msg_controllen = sizeof control;
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &fd, sizeof fd);
    }
    return sendmsg(sock, &msg, MSG_NOSIGNAL) == (ssize_t)sizeof m;
}

/* Receives a reply into buffer; fds receives the descriptors sent with it. Returns its size, or -1. */
static ssize_t receive(int sock, void *buffer, size_t size, int *fds, int *fd_count)
{
    char control[CMSG_SPACE(sizeof(int) * (DE_QEMU_MAX_REGIONS + 2))];
    struct iovec iov = { .iov_base = buffer, .iov_len = size };
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control, .msg_controllen = sizeof control };
    ssize_t n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
    *fd_count = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); n > 0 && c != NULL; c = CMSG_NXTHDR(&msg, c)) {
        int count = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        memcpy(fds + *fd_count, CMSG_DATA(c), sizeof(int) * (size_t)count);
        *fd_count += count;
    }
    return n;
}

static int reply_op(int sock, uint64_t *arg0)
{
    de_qemu_msg m;
    int fds[4], n;
    if (receive(sock, &m, sizeof m, fds, &n) != (ssize_t)sizeof m || m.magic != DE_QEMU_MAGIC) return -1;
    if (arg0) *arg0 = m.arg0;
    return (int)m.op;
}

/* The hello's region that guest page gfn is in. */
static const de_qemu_region *region_of(const engine *e, uint64_t gfn)
{
    uint32_t r = 0;
    while (r + 1 < e->hello.region_count && gfn >= e->first_gfn[r + 1]) r++;
    return &e->hello.regions[r];
}

static uint64_t address_of(const engine *e, uint64_t gfn)
{
    const de_qemu_region *r = region_of(e, gfn);
    return r->host_address + (gfn - e->first_gfn[r - e->hello.regions]) * PAGE;
}

static uint64_t offset_of(const engine *e, uint64_t gfn)
{
    const de_qemu_region *r = region_of(e, gfn);
    return r->file_offset + (gfn - e->first_gfn[r - e->hello.regions]) * PAGE;
}

static int memfd_of(const engine *e, uint64_t gfn)
{
    return e->memfds[region_of(e, gfn)->memfd_index];
}

/* The guest page at a host address (a fault's), or UINT64_MAX when no region of the hello has it. */
static uint64_t gfn_at(const engine *e, uint64_t address)
{
    for (uint32_t r = 0; r < e->hello.region_count; r++)
        if (address - e->hello.regions[r].host_address < e->hello.regions[r].length)
            return e->first_gfn[r] + (address - e->hello.regions[r].host_address) / PAGE;
    return UINT64_MAX;
}

static int write_protect(engine *e, uint64_t gfn, int on)
{
    struct uffdio_writeprotect wp = {
        .range = { .start = address_of(e, gfn), .len = PAGE },
        .mode = on ? UFFDIO_WRITEPROTECT_MODE_WP : 0,
    };
    return ioctl(e->uffd, UFFDIO_WRITEPROTECT, &wp);
}

/* Takes a page from the guest: write-protect it, store its bytes, then punch it out of the memfd, unless a guest
 * write came between (its write-protect fault cancels the eviction and the page stays). Returns 1 when evicted. */
static int evict(engine *e, uint64_t gfn)
{
    uint8_t bytes[PAGE];
    pthread_mutex_lock(&e->lock);
    if (e->state[gfn].evicted) {
        pthread_mutex_unlock(&e->lock);
        return 0;
    }
    e->cancelled[gfn] = 0;
    int wp = write_protect(e, gfn, 1);
    pthread_mutex_unlock(&e->lock);
    if (wp != 0) return 0;
    if (pread(memfd_of(e, gfn), bytes, PAGE, (off_t)offset_of(e, gfn)) != PAGE) return 0;
    pthread_mutex_lock(&e->lock);
    int done = 0;
    if (!e->cancelled[gfn]) {
        memcpy(e->state[gfn].bytes, bytes, PAGE);
        __atomic_store_n(&e->state[gfn].evicted, 1, __ATOMIC_RELEASE); /* stored before the page goes */
        done = fallocate(memfd_of(e, gfn), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)offset_of(e, gfn), PAGE) == 0;
        if (!done) e->state[gfn].evicted = 0;
    } else {
        (void)write_protect(e, gfn, 0);
    }
    pthread_mutex_unlock(&e->lock);
    return done;
}

/* Takes a page away with no write-protect first (the guest is idle meanwhile): its next access can only be a missing
 * fault, which the userfaultfd must deliver for the page to come back. Returns 1 when taken. */
static int punch(engine *e, uint64_t gfn)
{
    pthread_mutex_lock(&e->lock);
    int done = pread(memfd_of(e, gfn), e->state[gfn].bytes, PAGE, (off_t)offset_of(e, gfn)) == PAGE;
    if (done) {
        e->state[gfn].evicted = 1;
        done = fallocate(memfd_of(e, gfn), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)offset_of(e, gfn), PAGE) == 0;
        if (!done) e->state[gfn].evicted = 0;
    }
    pthread_mutex_unlock(&e->lock);
    return done;
}

/* Gives an evicted page back (on a fault, or before the engine leaves). Caller holds the lock. */
static int install(engine *e, uint64_t gfn)
{
    struct uffdio_copy copy = {
        .dst = address_of(e, gfn), .src = (uint64_t)(uintptr_t)e->state[gfn].bytes, .len = PAGE, .mode = 0 };
    if (ioctl(e->uffd, UFFDIO_COPY, &copy) != 0 && errno != EEXIST) return 0;
    e->state[gfn].evicted = 0;
    e->copies++;
    return 1;
}

static void serve_fault(engine *e, const struct uffd_msg *m)
{
    uint64_t address = m->arg.pagefault.address & ~(uint64_t)(PAGE - 1);
    uint64_t gfn = gfn_at(e, address);
    if (gfn == UINT64_MAX) {
        printf("#   a fault at 0x%llx, in no region of the hello\n", (unsigned long long)address);
        return;
    }
    pthread_mutex_lock(&e->lock);
    if (m->arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP) {
        e->wp_faults++;
        e->cancelled[gfn] = 1;
        (void)write_protect(e, gfn, 0); /* and wakes the writer */
    } else if (e->state[gfn].evicted) {
        if (!install(e, gfn)) printf("#   UFFDIO_COPY of gfn %llu: %s\n", (unsigned long long)gfn, strerror(errno));
    } else {
        /* Missing and never taken by the engine: a page the guest never touched, which is zero. */
        struct uffdio_zeropage zero = { .range = { .start = address, .len = PAGE } };
        if (ioctl(e->uffd, UFFDIO_ZEROPAGE, &zero) == 0) e->zeros++;
        else if (errno != EEXIST) printf("#   UFFDIO_ZEROPAGE of gfn %llu: %s\n", (unsigned long long)gfn, strerror(errno));
    }
    pthread_mutex_unlock(&e->lock);
}

static void *fault_loop(void *arg)
{
    engine *e = arg;
    for (;;) {
        struct pollfd p[2] = { { .fd = e->uffd, .events = POLLIN }, { .fd = e->stop[0], .events = POLLIN } };
        if (poll(p, 2, -1) < 0) continue;
        if (p[1].revents) return NULL;
        struct uffd_msg m;
        ssize_t n = read(e->uffd, &m, sizeof m);
        if (n != (ssize_t)sizeof m) continue; /* EAGAIN: another reader took it, or a spurious wakeup */
        if (m.event != UFFD_EVENT_PAGEFAULT) continue;
        if (e->die_on_fault) raise(SIGKILL);
        serve_fault(e, &m);
    }
}

/* Connects and says hello, expecting that many regions and guest pages in all; maps the state the library held, or
 * makes a new one. The descriptors must be what the engine takes (QemuLink.Connect): the userfaultfd, one memfd per
 * memfd_index up to the largest the regions name, and the state when the hello says there is one. */
static int attach_expecting(engine *e, uint32_t region_count, uint64_t pages)
{
    memset(e, 0, sizeof *e);
    pthread_mutex_init(&e->lock, NULL);
    e->state_fd = -1;
    e->sock = connect_socket();
    CHECK(e->sock >= 0);
    CHECK(request(e->sock, DE_QEMU_HELLO, -1));
    int fds[DE_QEMU_MAX_REGIONS + 2], n;
    CHECK(receive(e->sock, &e->hello, sizeof e->hello, fds, &n) == (ssize_t)sizeof e->hello);
    CHECK(e->hello.op == DE_QEMU_OK && e->hello.region_count == region_count && region_count <= DE_QEMU_MAX_REGIONS);
    uint32_t files = 0;
    for (uint32_t r = 0; r < region_count; r++) {
        if (e->hello.regions[r].memfd_index + 1 > files) files = e->hello.regions[r].memfd_index + 1;
        e->first_gfn[r] = e->pages;
        e->pages += e->hello.regions[r].length / PAGE;
    }
    int state = (e->hello.flags & DE_QEMU_HELLO_STATE) ? 1 : 0;
    e->fd_count = n;
    CHECK(files <= DE_QEMU_MAX_REGIONS && n == 1 + (int)files + state);
    e->uffd = fds[0];
    e->memfd_count = (int)files;
    memcpy(e->memfds, fds + 1, sizeof(int) * files);
    CHECK(e->pages == pages);
    size_t state_size = sizeof(record) * e->pages;
    if (state) {
        e->state_fd = fds[1 + files];
    } else {
        e->state_fd = memfd_create("de-test-state", MFD_CLOEXEC);
        CHECK(e->state_fd >= 0 && ftruncate(e->state_fd, (off_t)state_size) == 0);
    }
    e->state = mmap(NULL, state_size, PROT_READ | PROT_WRITE, MAP_SHARED, e->state_fd, 0);
    CHECK(e->state != MAP_FAILED);
    e->cancelled = calloc(e->pages, 1);
    CHECK(e->cancelled != NULL);
    CHECK(pipe2(e->stop, O_CLOEXEC) == 0);
    CHECK(pthread_create(&e->faults, NULL, fault_loop, e) == 0);
    if (e->hello.flags & DE_QEMU_HELLO_REATTACH) {
        /* Faults an earlier engine read and never answered wait still: wake them all, and they fault again. */
        for (uint32_t r = 0; r < region_count; r++) {
            struct uffdio_range all = { .start = e->hello.regions[r].host_address, .len = e->hello.regions[r].length };
            CHECK(ioctl(e->uffd, UFFDIO_WAKE, &all) == 0);
        }
    }
    return 1;
}

static int attach(engine *e)
{
    return attach_expecting(e, 1, GUEST_PAGES);
}

/* Stops serving faults and closes the connection (the library keeps the userfaultfd). */
static void leave(engine *e)
{
    if (write(e->stop[1], "x", 1) != 1) return;
    pthread_join(e->faults, NULL);
    close(e->stop[0]);
    close(e->stop[1]);
    munmap(e->state, sizeof(record) * e->pages);
    free(e->cancelled);
    close(e->sock);
    close(e->uffd);
    for (int i = 0; i < e->memfd_count; i++) close(e->memfds[i]);
    close(e->state_fd);
}

static uint64_t restore_all(engine *e)
{
    uint64_t n = 0;
    pthread_mutex_lock(&e->lock);
    for (uint64_t g = 0; g < e->pages; g++)
        if (e->state[g].evicted && install(e, g)) n++;
    pthread_mutex_unlock(&e->lock);
    return n;
}

/* A counter of the engine's, read under its lock: a fault's page is installed, and the guest woken, before it is
 * counted, so the guest can answer before the count moves. */
static uint64_t counted(engine *e, const uint64_t *counter)
{
    pthread_mutex_lock(&e->lock);
    uint64_t n = *counter;
    pthread_mutex_unlock(&e->lock);
    return n;
}

static uint64_t allocated_pages(int fd)
{
    struct stat st;
    return fstat(fd, &st) == 0 ? (uint64_t)st.st_blocks * 512 / PAGE : 0;
}

/* ---- the tests ---- */

static guest g;

static int test_hello_describes_the_guest_ram(void)
{
    engine e;
    CHECK(attach(&e));
    CHECK(e.hello.pid == (uint32_t)g.pid);
    CHECK(e.hello.regions[0].file_offset == 0);
    CHECK(e.hello.flags & DE_QEMU_HELLO_WP);
    CHECK(!(e.hello.flags & DE_QEMU_HELLO_STATE));
    struct stat st;
    CHECK(stat(socket_path, &st) == 0 && (st.st_mode & 0777) == 0600);
    leave(&e);
    return 1;
}

static int test_a_second_engine_is_refused_while_one_is_attached(void)
{
    engine e;
    CHECK(attach(&e));
    int other = connect_socket();
    CHECK(other >= 0);
    uint64_t err = 0;
    CHECK(reply_op(other, &err) == DE_QEMU_ERROR && err == EBUSY);
    close(other);
    leave(&e);
    return 1;
}

static int test_another_user_is_refused(void)
{
    if (geteuid() != 0) {
        printf("#   skipped: needs root to connect as another user\n");
        return 1;
    }
    pid_t child = fork();
    if (child == 0) {
        if (setgid(65534) != 0 || setuid(65534) != 0) _exit(2);
        int s = connect_socket();
        uint64_t err = 0;
        /* The socket is 0600 root's: nobody may not even connect. Either refusal will do. */
        _exit(s < 0 ? (errno == EACCES ? 0 : 3) : (reply_op(s, &err) == DE_QEMU_ERROR && err == EACCES ? 0 : 4));
    }
    int status;
    CHECK(waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0);
    return 1;
}

static int test_evicted_pages_are_served_back_on_faults(void)
{
    engine e;
    CHECK(attach(&e));
    uint64_t before = allocated_pages(e.memfds[0]);
    uint64_t evicted = 0;
    for (uint64_t gfn = 0; gfn < e.pages; gfn += 2) evicted += (uint64_t)evict(&e, gfn);
    CHECK(evicted == e.pages / 2);
    CHECK(allocated_pages(e.memfds[0]) + evicted <= before);
    CHECK(verified(&g));
    CHECK(counted(&e, &e.copies) == evicted); /* every evicted page came back once, on the guest's fault */
    leave(&e);
    return 1;
}

/* Evictions race the guest's writes: a write between write-protect and punch cancels the eviction. */
static int test_evictions_racing_guest_writes_lose_nothing(void)
{
    engine e;
    CHECK(attach(&e));
    char line[64];
    fprintf(g.in, "write 20000\n");
    fflush(g.in);
    uint64_t evicted = 0;
    for (int round = 0; round < 4; round++)
        for (uint64_t gfn = (uint64_t)round; gfn < e.pages; gfn += 3) evicted += (uint64_t)evict(&e, gfn);
    CHECK(fgets(line, sizeof line, g.out) != NULL && strcmp(line, "WROTE 20000\n") == 0);
    CHECK(evicted > 0);
    CHECK(verified(&g));
    printf("#   %llu evictions, %llu pages served back, %llu write-protect faults\n", (unsigned long long)evicted,
           (unsigned long long)counted(&e, &e.copies), (unsigned long long)counted(&e, &e.wp_faults));
    restore_all(&e);
    leave(&e);
    return 1;
}

/* An engine evicts pages, deposits its state with the library and is killed with SIGKILL while it holds a guest fault
 * it read and never answered. A new engine gets the state and the userfaultfd, wakes the waiting fault, and the guest
 * goes on and finds every page as it left it. */
static int test_an_engine_killed_mid_fault_loses_nothing(void)
{
    int ready[2];
    CHECK(pipe(ready) == 0);
    pid_t child = fork();
    if (child == 0) {
        engine e;
        close(ready[0]);
        if (!attach(&e)) _exit(2);
        for (uint64_t gfn = 1; gfn < e.pages; gfn += 2) evict(&e, gfn);
        if (!request(e.sock, DE_QEMU_DEPOSIT, e.state_fd) || reply_op(e.sock, NULL) != DE_QEMU_OK) _exit(3);
        e.die_on_fault = 1;
        if (write(ready[1], "x", 1) != 1) _exit(4);
        for (;;) pause(); /* until the guest faults and the fault thread kills the process */
    }
    close(ready[1]);
    char x;
    CHECK(read(ready[0], &x, 1) == 1);
    close(ready[0]);
    fprintf(g.in, "verify\n"); /* the guest faults on an evicted page; the engine dies holding the fault */
    fflush(g.in);
    int status;
    CHECK(waitpid(child, &status, 0) == child && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);

    engine e;
    CHECK(attach(&e));
    CHECK(e.hello.flags & DE_QEMU_HELLO_STATE);
    CHECK(e.hello.flags & DE_QEMU_HELLO_REATTACH);
    char line[64];
    CHECK(fgets(line, sizeof line, g.out) != NULL && strcmp(line, "VERIFY mismatches=0\n") == 0);
    CHECK(counted(&e, &e.copies) >= e.pages / 2 - 1);
    restore_all(&e);
    leave(&e);
    return 1;
}

static int test_after_detach_the_guest_runs_alone(void)
{
    engine e;
    CHECK(attach(&e));
    for (uint64_t gfn = 0; gfn < e.pages; gfn += 5) evict(&e, gfn);
    CHECK(restore_all(&e) > 0);
    CHECK(request(e.sock, DE_QEMU_DETACH, -1) && reply_op(e.sock, NULL) == DE_QEMU_OK);
    leave(&e);
    char line[64];
    CHECK(ask(&g, "write 3000", line, sizeof line) && strcmp(line, "WROTE 3000") == 0);
    CHECK(verified(&g));
    engine again;
    CHECK(attach(&again)); /* a fresh userfaultfd, no state */
    CHECK(!(again.hello.flags & (DE_QEMU_HELLO_STATE | DE_QEMU_HELLO_REATTACH)));
    leave(&again);
    return 1;
}

/* ---- tests with a guest of their own ---- */

static guest own;

/* A guest maps a second RAM region after an engine said hello (memory hot-plug, or an engine that attached while QEMU
 * was still mapping its second backend). A later hello advertises it, and it must be registered on the userfaultfd
 * the library handed out: otherwise a page punched out of it reads as zeros with no fault (data lost), and
 * UFFDIO_WRITEPROTECT on it fails. */
static int test_a_region_mapped_after_a_hello_is_registered(void)
{
    CHECK(start_guest_with(&own, NULL, -1));
    engine e;
    CHECK(attach(&e));
    char line[128];
    CHECK(ask(&own, "map 512", line, sizeof line) && strcmp(line, "MAPPED 2560") == 0);
    /* The same engine says hello again on its connection: the new region comes with it, after the first. */
    de_qemu_hello again;
    int fds[DE_QEMU_MAX_REGIONS + 2], n;
    CHECK(request(e.sock, DE_QEMU_HELLO, -1));
    CHECK(receive(e.sock, &again, sizeof again, fds, &n) == (ssize_t)sizeof again);
    for (int i = 0; i < n; i++) close(fds[i]);
    CHECK(again.op == DE_QEMU_OK && again.region_count == 2 && n == 3);
    CHECK(memcmp(&again.regions[0], &e.hello.regions[0], sizeof again.regions[0]) == 0);
    CHECK(again.regions[1].length == 512 * PAGE && again.regions[1].memfd_index == 1);
    leave(&e);

    engine f;
    CHECK(attach_expecting(&f, 2, GUEST_PAGES + 512));
    CHECK(f.hello.flags & DE_QEMU_HELLO_REATTACH);
    /* A page of the new region taken with no write-protect: the guest's read of it must fault, and get it back. */
    CHECK(punch(&f, GUEST_PAGES + 7));
    CHECK(verified(&own));
    CHECK(counted(&f, &f.copies) == 1);
    /* Write-protect works on the new region, and so do evictions from it. */
    CHECK(write_protect(&f, GUEST_PAGES + 3, 1) == 0 && write_protect(&f, GUEST_PAGES + 3, 0) == 0);
    uint64_t evicted = 0;
    for (uint64_t gfn = GUEST_PAGES + 1; gfn < f.pages; gfn += 4) evicted += (uint64_t)evict(&f, gfn);
    CHECK(evicted == 128);
    CHECK(ask(&own, "write 3000", line, sizeof line) && strcmp(line, "WROTE 3000") == 0);
    CHECK(verified(&own));
    CHECK(restore_all(&f) + counted(&f, &f.copies) >= 1 + evicted);
    leave(&f);
    CHECK(stop_guest(&own));
    return 1;
}

/* Guest RAM memfds with no shared mapping (memory-backend-memfd,share=off; or one made and not yet mapped) have no
 * region. The hello sends only the memfds its regions use, numbered 0 .. k-1 in order, so the engine gets the
 * 1 + k (+ state) descriptors it requires; a memfd sent past the last one a region names made it reject the hello. */
static int test_hello_sends_only_the_memfds_of_its_regions(void)
{
    CHECK(start_guest_with(&own, "private-first", -1)); /* a share=off memfd before the guest RAM's */
    char line[128];
    CHECK(ask(&own, "private 16", line, sizeof line) && strcmp(line, "PRIVATE 16") == 0);
    CHECK(ask(&own, "map 256", line, sizeof line) && strcmp(line, "MAPPED 2304") == 0);
    CHECK(ask(&own, "private 16", line, sizeof line) && strcmp(line, "PRIVATE 16") == 0); /* and one after the last */
    engine e;
    CHECK(attach_expecting(&e, 2, GUEST_PAGES + 256));
    CHECK(e.fd_count == 1 + 2 && e.memfd_count == 2);
    CHECK(e.hello.regions[0].memfd_index == 0 && e.hello.regions[1].memfd_index == 1);
    struct stat st;
    CHECK(fstat(e.memfds[0], &st) == 0 && st.st_size == (off_t)GUEST_PAGES * PAGE);
    CHECK(fstat(e.memfds[1], &st) == 0 && st.st_size == (off_t)256 * PAGE);
    /* The renumbered memfds are the regions' own: pages evicted through them come back right. */
    uint64_t evicted = 0;
    for (uint64_t gfn = 5; gfn < e.pages; gfn += 8) evicted += (uint64_t)evict(&e, gfn);
    CHECK(evicted == e.pages / 8);
    CHECK(verified(&own));
    CHECK(request(e.sock, DE_QEMU_DEPOSIT, e.state_fd) && reply_op(e.sock, NULL) == DE_QEMU_OK);
    leave(&e);
    engine f;
    CHECK(attach_expecting(&f, 2, GUEST_PAGES + 256));
    CHECK((f.hello.flags & DE_QEMU_HELLO_STATE) && f.fd_count == 1 + 2 + 1);
    leave(&f);
    CHECK(stop_guest(&own));
    return 1;
}

/* An engine whose link broke (a deposit given up while QEMU was stopped) sends DETACH without waiting and closes with
 * the late deposit's reply unread. Closing a socket with unread data resets the connection: the library's next recvmsg
 * fails with ECONNRESET before the requests still queued, and the library took that as the engine gone, leaving the
 * DETACH unread: the userfaultfd stayed registered with nobody serving it, and the deposit stayed. */
static int test_a_detach_queued_behind_an_unread_reply_is_taken(void)
{
    CHECK(start_guest_with(&own, NULL, -1));
    engine e;
    CHECK(attach(&e));
    CHECK(request(e.sock, DE_QEMU_DEPOSIT, e.state_fd));
    struct pollfd answered = { .fd = e.sock, .events = POLLIN };
    CHECK(poll(&answered, 1, -1) == 1); /* the deposit's reply is in: it stays unread */
    /* QEMU stopped, as when the engine gave the deposit up: the DETACH is still queued when the engine closes. */
    int status;
    CHECK(kill(own.pid, SIGSTOP) == 0 && waitpid(own.pid, &status, WUNTRACED) == own.pid && WIFSTOPPED(status));
    CHECK(request(e.sock, DE_QEMU_DETACH, -1));
    leave(&e); /* closes the socket with the reply unread */
    CHECK(kill(own.pid, SIGCONT) == 0);
    engine f;
    CHECK(attach(&f)); /* served once the first connection is done with: its requests are taken first */
    CHECK(!(f.hello.flags & (DE_QEMU_HELLO_STATE | DE_QEMU_HELLO_REATTACH)));
    leave(&f);
    CHECK(verified(&own));
    CHECK(stop_guest(&own));
    return 1;
}

/* The CPU time (clock ticks) the guest's threads but its main one have used: the library's socket thread. */
static long library_ticks(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
    DIR *tasks = opendir(path);
    if (tasks == NULL) return -1;
    long ticks = 0;
    for (struct dirent *t; (t = readdir(tasks)) != NULL;) {
        int tid = atoi(t->d_name);
        if (tid <= 0 || tid == (int)pid) continue;
        char stat_path[64], text[1024];
        snprintf(stat_path, sizeof stat_path, "/proc/%d/task/%d/stat", (int)pid, tid);
        FILE *f = fopen(stat_path, "r");
        if (f == NULL) continue;
        size_t got = fread(text, 1, sizeof text - 1, f);
        fclose(f);
        text[got] = '\0';
        /* Fields 14 and 15, utime and stime, counted from the state (field 3) after the command's closing paren. */
        char *p = strrchr(text, ')');
        unsigned long utime, stime;
        if (p != NULL && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime, &stime) == 2)
            ticks += (long)(utime + stime);
    }
    closedir(tasks);
    return ticks;
}

/* Lines of the file that contain what. */
static int lines_with(const char *path, const char *what)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) return -1;
    char *line = NULL;
    size_t size = 0;
    int n = 0;
    while (getline(&line, &size, f) >= 0)
        if (strstr(line, what) != NULL) n++;
    free(line);
    fclose(f);
    return n;
}

/* Waits (up to 10 s: not a measure, a bound for a broken library) until the file has a line with what. */
static int wait_for_line(const char *path, const char *what)
{
    for (int i = 0; i < 1000; i++) {
        if (lines_with(path, what) > 0) return 1;
        usleep(10000);
    }
    return 0;
}

static char err_path[128];

/* How long the library's thread is watched while its accept() fails, and the most CPU it may use meanwhile: a fifth.
 * A thread that backs off wakes ten times a second for one failing call and uses next to nothing, however slow the
 * machine; one that spins uses what it gets of a core. The bound only ever errs towards passing a spinning library on
 * a machine too busy to give it CPU; the count of stderr lines (once per streak of failures) does not depend on time. */
#define WATCH_SECONDS 1

static int library_backs_off(pid_t pid, int lines_expected)
{
    long before = library_ticks(pid);
    CHECK(before >= 0);
    struct timespec watch = { .tv_sec = WATCH_SECONDS };
    nanosleep(&watch, NULL);
    long used = library_ticks(pid) - before;
    CHECK(wait_for_line(err_path, "deqemu: accept"));
    int said = lines_with(err_path, "deqemu: accept");
    printf("#   the library's thread used %ld of %ld clock ticks while accept failed; %d accept lines said\n", used,
           WATCH_SECONDS * sysconf(_SC_CLK_TCK), said);
    CHECK(used < WATCH_SECONDS * sysconf(_SC_CLK_TCK) / 5);
    CHECK(said == lines_expected);
    return 1;
}

/* A guest out of file descriptors: the library's accept() fails with EMFILE (while a connection waits in the queue),
 * and the listener polls ready again at once. The library must back off instead of spinning on it, say so once per
 * streak of failures (not once a turn), and take the waiting connection once descriptors are free again: with no
 * engine attached (serve's accept) and with one (the refusal of a second). A blocked accept() holds the descriptor it
 * will return from before it blocks, so the guest runs out while an engine is attached, and the engine then leaves:
 * the library's next accept() is one made with no descriptor left. The guest took every descriptor below 64 before it
 * mapped its RAM (fill-first), so the one the library frees when that engine leaves is above the guest's limit then. */
static int test_accept_failing_backs_off(void)
{
    int err_fd = open(err_path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
    CHECK(err_fd >= 0);
    int started = start_guest_with(&own, "fill-first", err_fd);
    close(err_fd);
    CHECK(started);
    char line[128];
    struct timeval patience = { .tv_sec = 10 };
    de_qemu_hello h;
    int fds[DE_QEMU_MAX_REGIONS + 2], n;

    /* No engine attached: the one that was leaves once the guest has no descriptor left, and another's hello waits. */
    int first = connect_socket();
    CHECK(first >= 0 && request(first, DE_QEMU_HELLO, -1));
    CHECK(receive(first, &h, sizeof h, fds, &n) == (ssize_t)sizeof h && h.op == DE_QEMU_OK && n == 2);
    for (int i = 0; i < n; i++) close(fds[i]);
    CHECK(ask(&own, "exhaust", line, sizeof line) && strncmp(line, "EXHAUSTED ", 10) == 0);
    close(first);
    int second = connect_socket();
    CHECK(second >= 0 && setsockopt(second, SOL_SOCKET, SO_RCVTIMEO, &patience, sizeof patience) == 0);
    CHECK(request(second, DE_QEMU_HELLO, -1));
    CHECK(library_backs_off(own.pid, 1));
    CHECK(ask(&own, "release", line, sizeof line) && strncmp(line, "RELEASED ", 9) == 0);
    CHECK(receive(second, &h, sizeof h, fds, &n) == (ssize_t)sizeof h && h.op == DE_QEMU_OK && n == 2);
    for (int i = 0; i < n; i++) close(fds[i]);

    /* That engine attached: a third waits in the queue to be refused, while the guest has no descriptor left. */
    CHECK(ask(&own, "exhaust", line, sizeof line) && strncmp(line, "EXHAUSTED ", 10) == 0);
    int third = connect_socket();
    CHECK(third >= 0 && setsockopt(third, SOL_SOCKET, SO_RCVTIMEO, &patience, sizeof patience) == 0);
    CHECK(library_backs_off(own.pid, 2));
    CHECK(ask(&own, "release", line, sizeof line) && strncmp(line, "RELEASED ", 9) == 0);
    uint64_t err = 0;
    CHECK(reply_op(third, &err) == DE_QEMU_ERROR && err == EBUSY);
    close(third);
    close(second);
    CHECK(stop_guest(&own));
    return 1;
}

/* Whether the guest's main thread is blocked writing to its stderr (/proc/<pid>/syscall: write, on descriptor 2): 1 or
 * 0, or -1 when the kernel does not say (no such file, or it cannot be read). */
static int blocked_on_stderr(pid_t pid)
{
    char path[64], line[256], wanted[32];
    snprintf(path, sizeof path, "/proc/%d/syscall", (int)pid);
    snprintf(wanted, sizeof wanted, "%ld 0x2 ", (long)SYS_write);
    FILE *f = fopen(path, "r");
    if (f == NULL) return -1;
    int got = fgets(line, sizeof line, f) != NULL;
    fclose(f);
    return got ? strncmp(line, wanted, strlen(wanted)) == 0 : -1;
}

/* QEMU's stderr a pipe nobody reads, and full: a warning the library says while it holds its lock (a ninth memfd with
 * the guest RAM's name, one more than it tracks) blocks the guest's thread that says it in write(), which must not hold
 * the lock meanwhile: an engine's hello, which takes the lock, is answered while that thread waits on its stderr. The
 * line is written in full once the pipe is read. Before, it was written under the lock: the hello waited for as long as
 * the pipe stayed full (here, until the 10 s patience ran out). */
static int test_a_full_stderr_never_holds_the_lock(void)
{
    int err[2];
    CHECK(pipe2(err, O_CLOEXEC) == 0);
    int started = start_guest_with(&own, NULL, err[1]);
    /* Filled through the test's own end, non-blocking only meanwhile (the flag is the pipe's, the guest's end's too). */
    int flags = fcntl(err[1], F_GETFL);
    CHECK(started && flags >= 0 && fcntl(err[1], F_SETFL, flags | O_NONBLOCK) == 0);
    char junk[4096];
    memset(junk, '.', sizeof junk);
    while (write(err[1], junk, sizeof junk) > 0) {}
    while (write(err[1], junk, 1) == 1) {}
    CHECK(errno == EAGAIN && fcntl(err[1], F_SETFL, flags) == 0);
    close(err[1]);
    char line[128];
    /* The RAM's memfd and seven more make eight, as many as the library tracks; the ninth's warning waits on the pipe. */
    for (int i = 0; i < 7; i++) CHECK(ask(&own, "private 1", line, sizeof line) && strcmp(line, "PRIVATE 1") == 0);
    fprintf(own.in, "private 1\n");
    fflush(own.in);
    /* Until the guest's thread is in that write (at most 10 s: a guard against a guest that never gets there, not a
     * pass condition). */
    int blocked = 0;
    for (int tries = 0; tries < 10000 && (blocked = blocked_on_stderr(own.pid)) == 0; tries++) {
        struct timespec pause = { .tv_nsec = 1000000 };
        nanosleep(&pause, NULL);
    }
    if (blocked < 0) printf("#   /proc/%d/syscall cannot be read here: which call the guest waits in is not known\n", (int)own.pid);
    CHECK(blocked == 1);
    struct timeval patience = { .tv_sec = 10 };
    int sock = connect_socket();
    CHECK(sock >= 0 && setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &patience, sizeof patience) == 0);
    CHECK(request(sock, DE_QEMU_HELLO, -1));
    de_qemu_hello h;
    int fds[DE_QEMU_MAX_REGIONS + 2], n = 0;
    ssize_t got = receive(sock, &h, sizeof h, fds, &n);
    for (int i = 0; i < n; i++) close(fds[i]);
    close(sock);
    CHECK(got == (ssize_t)sizeof h && h.op == DE_QEMU_OK && h.region_count == 1);
    CHECK(blocked_on_stderr(own.pid) == 1); /* the warning still waits: the hello was answered meanwhile */
    /* Read the pipe: the warning comes out whole, and the guest's ninth memfd is answered. */
    static char said[256 * 1024];
    size_t have = 0;
    while (have < sizeof said - 1) {
        ssize_t r = read(err[0], said + have, sizeof said - 1 - have);
        CHECK(r > 0);
        have += (size_t)r;
        said[have] = '\0';
        if (strstr(said, "deqemu: more than 8 guest RAM memfds: the rest are not paged by the engine\n") != NULL) break;
    }
    CHECK(strstr(said, "deqemu: more than 8 guest RAM memfds: the rest are not paged by the engine\n") != NULL);
    CHECK(fgets(line, sizeof line, own.out) != NULL && strcmp(line, "PRIVATE 1\n") == 0);
    close(err[0]);
    CHECK(stop_guest(&own));
    return 1;
}

static void run(const char *name, int (*test)(void))
{
    if (test()) {
        passes++;
        printf("ok %s\n", name);
    } else {
        failures++;
        printf("not ok %s\n", name);
    }
    fflush(stdout);
    if (own.pid > 0) {
        /* A test of its own guest that failed midway: the guest goes with it. */
        kill(own.pid, SIGKILL);
        waitpid(own.pid, NULL, 0);
        fclose(own.in);
        fclose(own.out);
        own.pid = 0;
    }
}

static int run_own_guests(void)
{
    run("a region mapped after a hello is registered and advertised", test_a_region_mapped_after_a_hello_is_registered);
    run("hello sends only the memfds of its regions", test_hello_sends_only_the_memfds_of_its_regions);
    run("accept failing backs off", test_accept_failing_backs_off);
    run("a detach queued behind an unread reply is taken", test_a_detach_queued_behind_an_unread_reply_is_taken);
    run("a full stderr never holds the lock", test_a_full_stderr_never_holds_the_lock);
    printf("# %d passed, %d failed\n", passes, failures);
    return failures ? 1 : 0;
}

int main(int argc, char **argv)
{
    int own_guests = argc == 4 && strcmp(argv[3], "own-guests") == 0;
    if (argc != 3 && !own_guests) {
        fprintf(stderr, "usage: test_deqemu <libdeqemu.so> <fakeguest> [own-guests]\n");
        return 2;
    }
    library = argv[1];
    guest_program = argv[2];
    char dir[] = "/tmp/deqemu-test-XXXXXX";
    if (mkdtemp(dir) == NULL) return 2;
    snprintf(socket_path, sizeof socket_path, "%s/guest.sock", dir);
    signal(SIGPIPE, SIG_IGN);
    if (own_guests) {
        snprintf(err_path, sizeof err_path, "%s/guest.err", dir);
        int status = run_own_guests();
        unlink(socket_path);
        unlink(err_path);
        rmdir(dir);
        return status;
    }
    if (!start_guest(&g)) {
        printf("not ok the fake guest starts with the library preloaded\n# 0 passed, 1 failed\n");
        return 1;
    }
    run("hello describes the guest RAM, and the socket is owner-only", test_hello_describes_the_guest_ram);
    run("a second engine is refused while one is attached", test_a_second_engine_is_refused_while_one_is_attached);
    run("another user is refused", test_another_user_is_refused);
    run("evicted pages are served back on faults", test_evicted_pages_are_served_back_on_faults);
    run("evictions racing guest writes lose nothing", test_evictions_racing_guest_writes_lose_nothing);
    run("an engine killed mid-fault loses nothing", test_an_engine_killed_mid_fault_loses_nothing);
    run("after detach the guest runs alone", test_after_detach_the_guest_runs_alone);
    fprintf(g.in, "quit\n");
    fflush(g.in);
    int status;
    waitpid(g.pid, &status, 0);
    unlink(socket_path);
    rmdir(dir);
    if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
        printf("not ok the fake guest exits cleanly\n");
        failures++;
    }
    printf("# %d passed, %d failed\n", passes, failures);
    return failures ? 1 : 0;
}
