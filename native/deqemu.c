/*
 * deqemu: see deqemu.h for what the library does and the protocol it speaks.
 *
 * The interposed calls (memfd_create, mmap, mmap64) are the raw system calls plus bookkeeping: no dlsym, so nothing
 * here can recurse through an allocator that maps memory. The socket is made when guest RAM is first mapped (so it
 * exists once QEMU's RAM does) and served by one thread of the library's; QEMU's own threads only ever take the mutex
 * for the bookkeeping of a mapping.
 */
#define _GNU_SOURCE
#include "deqemu.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))

_Static_assert(sizeof(de_qemu_msg) == 24, "de_qemu_msg is 24 bytes");
_Static_assert(sizeof(de_qemu_region) == 32, "de_qemu_region is 32 bytes");
_Static_assert(sizeof(de_qemu_hello) == 24 + 32 * DE_QEMU_MAX_REGIONS, "de_qemu_hello has no padding");

/* The memfds QEMU made for guest RAM, as the library's own duplicates (kept for QEMU's lifetime). */
typedef struct ram_file {
    int qemu_fd;   /* QEMU's descriptor number when it was made (it may close it; dev/ino tell it apart) */
    int own_fd;    /* the library's duplicate, sent to engines */
    dev_t dev;
    ino_t ino;
} ram_file;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int active;                                  /* DE_QEMU_SOCKET was set */
static char socket_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
static ram_file files[DE_QEMU_MAX_REGIONS];
static uint32_t file_count;
static de_qemu_region regions[DE_QEMU_MAX_REGIONS];
static uint32_t region_count;
static int server_started;

/* Owned by the server thread alone; regions_tried, region_error and region_said, which go with regions[], are used
 * under the lock too. */
static int uffd = -1;          /* registered over the regions it took while an engine may use it */
static int uffd_wp;            /* it takes write-protect faults */
static int uffd_sent;          /* an engine has had it: faults may wait that nobody answers */
static uint32_t regions_tried; /* regions[0 .. regions_tried - 1] were registered on uffd, or failed to be */
static int region_error[DE_QEMU_MAX_REGIONS]; /* of those: 0 if registered (only those are advertised), else errno */
static uint8_t region_said[DE_QEMU_MAX_REGIONS]; /* a failure to register it was said on stderr */
static int state_fd = -1;      /* deposited by an engine */
static int accept_failing;     /* accept has failed since it last worked (its error was said) */
static atomic_uint attached;

/* Formats one line, "deqemu: " and the message and a newline, into line (size bytes); returns its length, 0 if none. */
__attribute__((format(printf, 3, 0))) static size_t format_line(char *line, size_t size, const char *format, va_list args)
{
    static const char prefix[] = "deqemu: ";
    size_t p = sizeof prefix - 1;
    memcpy(line, prefix, p);
    int n = vsnprintf(line + p, size - p - 1, format, args);
    if (n < 0) return 0;
    size_t len = p + ((size_t)n > size - p - 2 ? size - p - 2 : (size_t)n);
    line[len++] = '\n';
    return len;
}

/* Lines said while the lock is held wait here (under the lock) and go to stderr once it is released (said_flush): a
 * write to a stderr nobody drains (a full pipe) must never block QEMU's own mmap or memfd_create, which take the lock,
 * behind a thread that holds it. What does not fit is dropped: these are one-time warnings. */
static char said[2048];
static size_t said_len;

/* One line: written to stderr at once, or, with held (the caller holds the lock), kept for the next said_flush. */
__attribute__((format(printf, 2, 0))) static void vsay(int held, const char *format, va_list args)
{
    char line[512];
    size_t n = format_line(line, sizeof line, format, args);
    if (n == 0) return;
    if (held) {
        if (n > sizeof said - said_len) return;
        memcpy(said + said_len, line, n);
        said_len += n;
        return;
    }
    ssize_t ignored = write(STDERR_FILENO, line, n);
    (void)ignored;
}

__attribute__((format(printf, 1, 2))) static void say(const char *format, ...)
{
    va_list args;
    va_start(args, format);
    vsay(0, format, args);
    va_end(args);
}

/* As say, with the lock held: the line is written by the next said_flush. */
__attribute__((format(printf, 1, 2))) static void say_locked(const char *format, ...)
{
    va_list args;
    va_start(args, format);
    vsay(1, format, args);
    va_end(args);
}

/* Writes the lines said under the lock; the caller does not hold it. */
static void said_flush(void)
{
    char lines[sizeof said];
    pthread_mutex_lock(&lock);
    size_t n = said_len;
    memcpy(lines, said, n);
    said_len = 0;
    pthread_mutex_unlock(&lock);
    ssize_t ignored = n > 0 ? write(STDERR_FILENO, lines, n) : 0;
    (void)ignored;
}

__attribute__((constructor)) static void deqemu_init(void)
{
    const char *path = getenv("DE_QEMU_SOCKET");
    if (path == NULL || path[0] == '\0') return;
    if (strlen(path) >= sizeof socket_path) {
        say("DE_QEMU_SOCKET is longer than a Unix socket path may be (%zu bytes); the engine cannot attach",
            sizeof socket_path - 1);
        return;
    }
    /* A relative path is made absolute now: QEMU may change its folder before it maps guest RAM, when the socket is bound
     * (-daemonize goes to /), and an engine finding the socket from QEMU's pid reads the bound path
     * (/proc/PID/net/unix). */
    if (path[0] != '/') {
        char cwd[sizeof socket_path];
        if (getcwd(cwd, sizeof cwd) == NULL || strlen(cwd) + 1 + strlen(path) >= sizeof socket_path) {
            say("DE_QEMU_SOCKET (%s) made absolute from this folder is longer than a Unix socket path may be; the engine "
                "cannot attach", path);
            return;
        }
        size_t at = strcmp(cwd, "/") == 0 ? 0 : strlen(cwd); /* lengths checked above */
        memcpy(socket_path, cwd, at);
        socket_path[at] = '/';
        memcpy(socket_path + at + 1, path, strlen(path) + 1);
    } else {
        strcpy(socket_path, path);
    }
    active = 1;
}

/* ---- the socket ---- */

static int send_packet(int sock, const void *data, size_t size, const int *fds, uint32_t fd_count)
{
    char control[CMSG_SPACE(sizeof(int) * (DE_QEMU_MAX_REGIONS + 2))];
    struct iovec iov = { .iov_base = (void *)data, .iov_len = size };
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
    if (fd_count > 0) {
        memset(control, 0, sizeof control);
        msg.msg_control = control;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * fd_count);
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * fd_count);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * fd_count);
    }
    ssize_t n = sendmsg(sock, &msg, MSG_NOSIGNAL);
    return n == (ssize_t)size ? 0 : -1;
}

static void reply(int sock, uint32_t op, uint64_t arg0)
{
    de_qemu_msg m = { .magic = DE_QEMU_MAGIC, .version = DE_QEMU_VERSION, .op = op, .arg0 = arg0 };
    (void)send_packet(sock, &m, sizeof m, NULL, 0);
}

/* A new userfaultfd of this process: missing faults on shared memory, and write-protect faults too when wp (the
 * kernel offers them for shared memory from Linux 5.19, and only when built with PTE markers: it may take the API and
 * leave the feature out of what it answers). Returns the fd, or -errno. */
static int new_uffd(int wp)
{
    int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return -errno;
    uint64_t want = UFFD_FEATURE_MISSING_SHMEM | (wp ? UFFD_FEATURE_WP_HUGETLBFS_SHMEM : 0);
    struct uffdio_api api = { .api = UFFD_API, .features = want };
    int err = ioctl(fd, UFFDIO_API, &api) != 0 ? errno : (api.features & want) != want ? EINVAL : 0;
    if (err == 0) return fd;
    close(fd);
    return -err;
}

/* Registers on uffd, in its mode, the regions mapped since it last did (QEMU maps a second backend, or hot-plugged
 * memory, after an engine attached): a later hello reuses the userfaultfd, and a region it advertises that is not
 * registered would read as zeros, with no fault, once the engine punched a page out of it. Caller holds the lock.
 * Returns how many registered; *err is the errno of the last that did not. */
static uint32_t register_new_regions(int *err)
{
    uint32_t registered = 0;
    for (; regions_tried < region_count; regions_tried++) {
        uint32_t i = regions_tried;
        struct uffdio_register reg = {
            .range = { .start = regions[i].host_address, .len = regions[i].length },
            .mode = UFFDIO_REGISTER_MODE_MISSING | (uffd_wp ? UFFDIO_REGISTER_MODE_WP : 0),
        };
        region_error[i] = ioctl(uffd, UFFDIO_REGISTER, &reg) == 0 ? 0 : errno;
        if (region_error[i] == 0) registered++;
        else *err = region_error[i];
    }
    return registered;
}

/* Makes the userfaultfd if there is none (with write-protect faults where the kernel offers them for shared memory),
 * and registers on it the regions that are new since. Caller holds the lock, and keeps holding it while it copies the
 * reply: what the hello advertises is exactly what is registered. Returns 0 when some region is registered, else
 * -errno (said why). */
static int attach_regions(void)
{
    int err = EINVAL;
    if (uffd >= 0) {
        (void)register_new_regions(&err);
    } else {
        for (int wp = 1; wp >= 0 && uffd < 0; wp--) {
            int fd = new_uffd(wp);
            if (fd < 0) {
                err = -fd;
            } else {
                uffd = fd;
                uffd_wp = wp;
                regions_tried = 0;
                /* Not one region takes write-protect: the kernel does not have it for this memory after all. */
                if (register_new_regions(&err) == 0 && wp) {
                    close(fd); /* closing unregisters whatever was registered */
                    uffd = -1;
                }
            }
            if (uffd < 0 && wp)
                say_locked("no write-protect faults on shared memory here (%s); missing faults only", strerror(err));
        }
        if (uffd < 0) {
            say_locked("userfaultfd: %s (as root, or with vm.unprivileged_userfaultfd=1)", strerror(err));
            return -err;
        }
    }
    uint32_t registered = 0;
    for (uint32_t i = 0; i < regions_tried; i++) {
        if (region_error[i] == 0) {
            registered++;
        } else if (!region_said[i]) {
            region_said[i] = 1;
            say_locked("guest RAM mapping of %llu bytes at 0x%llx: UFFDIO_REGISTER failed (%s); not offered to the engine",
                (unsigned long long)regions[i].length, (unsigned long long)regions[i].host_address,
                strerror(region_error[i]));
        }
    }
    if (registered > 0) return 0;
    /* Nothing to page (QEMU unmapped what it had): no engine had this one, and the next hello tries afresh. */
    close(uffd);
    uffd = -1;
    regions_tried = 0;
    return -err;
}

static void drop_uffd(void)
{
    if (uffd < 0) return;
    pthread_mutex_lock(&lock);
    for (uint32_t i = 0; i < regions_tried; i++) {
        if (region_error[i] != 0) continue;
        struct uffdio_range range = { .start = regions[i].host_address, .len = regions[i].length };
        (void)ioctl(uffd, UFFDIO_UNREGISTER, &range);
    }
    regions_tried = 0;
    pthread_mutex_unlock(&lock);
    close(uffd);
    uffd = -1;
    uffd_sent = 0;
}

static void hello(int sock)
{
    de_qemu_hello h;
    memset(&h, 0, sizeof h);
    h.magic = DE_QEMU_MAGIC;
    h.version = DE_QEMU_VERSION;
    h.op = DE_QEMU_OK;
    h.pid = (uint32_t)getpid();
    int fds[DE_QEMU_MAX_REGIONS + 2];
    uint32_t n = 0;
    pthread_mutex_lock(&lock);
    int err = attach_regions();
    if (err == 0) {
        /* Only the memfds the advertised regions are in, numbered 0 .. k-1 in the order they were made: the engine
         * takes exactly 1 + (the largest memfd_index + 1) (+ state) descriptors, and a memfd with no region (a
         * share=off backend QEMU maps private, or one not mapped yet) would be one too many. */
        int renumbered[DE_QEMU_MAX_REGIONS];
        for (uint32_t f = 0; f < file_count; f++) renumbered[f] = -1;
        for (uint32_t i = 0; i < regions_tried; i++)
            if (region_error[i] == 0) renumbered[regions[i].memfd_index] = 0;
        fds[n++] = uffd;
        for (uint32_t f = 0; f < file_count; f++) {
            if (renumbered[f] < 0) continue;
            renumbered[f] = (int)n - 1;
            fds[n++] = files[f].own_fd;
        }
        for (uint32_t i = 0; i < regions_tried; i++) {
            if (region_error[i] != 0) continue;
            h.regions[h.region_count] = regions[i];
            h.regions[h.region_count++].memfd_index = (uint32_t)renumbered[regions[i].memfd_index];
        }
    }
    pthread_mutex_unlock(&lock);
    if (err != 0) {
        reply(sock, DE_QEMU_ERROR, (uint64_t)-err);
    } else {
        if (uffd_wp) h.flags |= DE_QEMU_HELLO_WP;
        if (uffd_sent) h.flags |= DE_QEMU_HELLO_REATTACH;
        if (state_fd >= 0) {
            h.flags |= DE_QEMU_HELLO_STATE;
            fds[n++] = state_fd;
        }
        if (send_packet(sock, &h, sizeof h, fds, n) == 0) uffd_sent = 1;
    }
    /* What attach_regions said, once the engine has its answer: a stderr nobody reads does not keep the hello waiting. */
    said_flush();
}

/* Engines refused while another is attached: answered EBUSY, then kept until they hang up, with what they sent
 * drained. Closing a Unix socket with unread data in it would reset the connection, and the refused engine could then
 * lose the answer that says why. */
#define MAX_REFUSED 4

/* An accept that fails for want of descriptors or memory (EMFILE, ENFILE, ENOMEM, ENOBUFS) leaves the connection in
 * the queue, and the listener polls ready again at once: the thread waits this long before it tries again, instead of
 * spinning on it (and saying so once a turn) until QEMU has descriptors again. */
#define ACCEPT_BACKOFF_MS 100

/* Accepts a connection on the listener. Returns the socket; -1 when there is nothing to do but try again (EINTR, the
 * connection went away first); -2 when accept failed otherwise, and the caller waits ACCEPT_BACKOFF_MS before it
 * tries again. The error is said once per streak of failures. */
static int accept_connection(int listener, int flags)
{
    int sock = accept4(listener, NULL, NULL, flags);
    if (sock >= 0) {
        accept_failing = 0;
        return sock;
    }
    if (errno == EINTR || errno == ECONNABORTED || errno == EAGAIN) return -1;
    if (!accept_failing)
        say("accept: %s (trying again every %d ms; said once until it works)", strerror(errno), ACCEPT_BACKOFF_MS);
    accept_failing = 1;
    return -2;
}

static long monotonic_ms(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (long)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

static int peer_allowed(int sock);

/* Returns 1 when accept failed and the listener is to be left alone for ACCEPT_BACKOFF_MS. */
static int refuse(int *refused, int listener)
{
    int other = accept_connection(listener, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (other < 0) return other == -2;
    if (!peer_allowed(other)) {
        /* Not even told that an engine is attached. */
        close(other);
        return 0;
    }
    reply(other, DE_QEMU_ERROR, EBUSY);
    shutdown(other, SHUT_WR);
    if (refused[MAX_REFUSED - 1] >= 0) close(refused[MAX_REFUSED - 1]);
    memmove(refused + 1, refused, sizeof(int) * (MAX_REFUSED - 1));
    refused[0] = other;
    return 0;
}

static void drain_refused(int *refused, const struct pollfd *p)
{
    for (int i = 0; i < MAX_REFUSED; i++) {
        if (refused[i] < 0 || !(p[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
        char sink[sizeof(de_qemu_msg)];
        ssize_t n = recv(refused[i], sink, sizeof sink, MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
            close(refused[i]);
            refused[i] = -1;
        }
    }
}

/* Serves one engine's requests until it closes the connection (or dies). Returns when it is gone. */
static void serve_engine(int sock, int listener)
{
    int refused[MAX_REFUSED] = { -1, -1, -1, -1 };
    long listener_resumes = 0; /* after a failed accept, the listener is not polled before this (monotonic ms) */
    for (;;) {
        struct pollfd p[2 + MAX_REFUSED] = { { .fd = sock, .events = POLLIN }, { .fd = listener, .events = POLLIN } };
        for (int i = 0; i < MAX_REFUSED; i++) p[2 + i] = (struct pollfd){ .fd = refused[i], .events = POLLIN };
        int timeout = -1;
        if (listener_resumes != 0) {
            long left = listener_resumes - monotonic_ms();
            if (left > 0) {
                p[1].fd = -1; /* poll skips it */
                timeout = (int)left;
            } else {
                listener_resumes = 0;
            }
        }
        if (poll(p, 2 + MAX_REFUSED, timeout) < 0) {
            if (errno == EINTR) continue;
            break;
        }
        drain_refused(refused, p + 2);
        if (!(p[0].revents & (POLLIN | POLLHUP | POLLERR))) {
            /* Another engine while this one is attached (its requests, and its hang-up, are taken first: an engine
             * that closed before another connected is gone by now): one pager per guest. */
            if ((p[1].revents & POLLIN) && refuse(refused, listener))
                listener_resumes = monotonic_ms() + ACCEPT_BACKOFF_MS;
            continue;
        }

        de_qemu_msg m;
        char control[CMSG_SPACE(sizeof(int) * 4)];
        struct iovec iov = { .iov_base = &m, .iov_len = sizeof m };
        struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control, .msg_controllen = sizeof control };
        ssize_t got = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
        if (got <= 0) {
            /* An engine that closed its end with a reply of ours unread (a DEPOSIT it gave up on, then its DETACH, sent
             * without waiting) resets the connection: the kernel reports ECONNRESET once, before the requests still
             * queued. They are taken (the DETACH among them), then the end of the connection. */
            if (got < 0 && (errno == EINTR || errno == ECONNRESET)) continue;
            break; /* the engine is gone; the userfaultfd stays, and faults wait for the next one */
        }
        int fd = -1;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
            if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
            size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            int *received = (int *)CMSG_DATA(c);
            for (size_t i = 0; i < count; i++) {
                if (fd < 0) fd = received[i];
                else close(received[i]);
            }
        }
        if (got != (ssize_t)sizeof m || (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) || m.magic != DE_QEMU_MAGIC ||
            m.version != DE_QEMU_VERSION) {
            if (fd >= 0) close(fd);
            reply(sock, DE_QEMU_ERROR, EPROTO);
            continue;
        }
        switch (m.op) {
        case DE_QEMU_HELLO:
            if (fd >= 0) close(fd);
            hello(sock);
            break;
        case DE_QEMU_DEPOSIT:
            if (fd < 0) {
                reply(sock, DE_QEMU_ERROR, EPROTO);
                break;
            }
            if (state_fd >= 0) close(state_fd);
            state_fd = fd;
            reply(sock, DE_QEMU_OK, 0);
            break;
        case DE_QEMU_DETACH:
            if (fd >= 0) close(fd);
            drop_uffd();
            if (state_fd >= 0) close(state_fd);
            state_fd = -1;
            reply(sock, DE_QEMU_OK, 0);
            break;
        default:
            if (fd >= 0) close(fd);
            reply(sock, DE_QEMU_ERROR, EPROTO);
            break;
        }
    }
    for (int i = 0; i < MAX_REFUSED; i++)
        if (refused[i] >= 0) close(refused[i]);
}

/* Makes the listening socket. Called when guest RAM is first mapped, before that mmap returns: whoever sees QEMU's
 * RAM mapped can connect. Returns the socket, or -1 (said why). */
static int listen_socket(void)
{
    int listener = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (listener < 0) {
        say("socket: %s", strerror(errno));
        return -1;
    }
    struct sockaddr_un address = { .sun_family = AF_UNIX };
    strcpy(address.sun_path, socket_path);
    /* A socket left by an earlier QEMU is replaced; anything else at the path is left alone. */
    struct stat st;
    if (lstat(socket_path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            say("%s exists and is not a socket: not replaced, so no engine can attach", socket_path);
            close(listener);
            return -1;
        }
        unlink(socket_path);
    }
    /* Owner-only from the start: Linux makes the path with the socket's own mode less the umask, so the mode is set on
     * the socket before bind (no moment with the umask's mode, and the process's umask is left alone), and on the path
     * again after it. A connection is let in only with the right peer credentials anyway. */
    if (fchmod(listener, 0600) != 0 || bind(listener, (struct sockaddr *)&address, sizeof address) != 0 ||
        chmod(socket_path, 0600) != 0 || listen(listener, 4) != 0) {
        say("%s: %s", socket_path, strerror(errno));
        close(listener);
        return -1;
    }
    return listener;
}

/* Only root or this process's own user may talk to the socket (a refused one is said so on stderr). */
static int peer_allowed(int sock)
{
    struct ucred peer = {.pid = 0, .uid = (uid_t)-1, .gid = (gid_t)-1};
    socklen_t size = sizeof peer;
    if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &peer, &size) == 0 && (peer.uid == 0 || peer.uid == geteuid())) return 1;
    say("refused a connection from uid %u: only root or uid %u may attach", (unsigned)peer.uid, (unsigned)geteuid());
    return 0;
}

static void *serve(void *arg)
{
    int listener = (int)(intptr_t)arg;
    for (;;) {
        int sock = accept_connection(listener, SOCK_CLOEXEC);
        if (sock == -2) (void)poll(NULL, 0, ACCEPT_BACKOFF_MS);
        if (sock < 0) continue;
        if (!peer_allowed(sock)) {
            reply(sock, DE_QEMU_ERROR, EACCES);
            close(sock);
            continue;
        }
        atomic_store(&attached, 1);
        serve_engine(sock, listener);
        atomic_store(&attached, 0);
        close(sock);
    }
    return NULL;
}

/* ---- bookkeeping of QEMU's calls ---- */

static void note_ram_file(int fd)
{
    struct stat st;
    if (fstat(fd, &st) != 0) return;
    pthread_mutex_lock(&lock);
    if (file_count < DE_QEMU_MAX_REGIONS) {
        int own = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        if (own >= 0) files[file_count++] = (ram_file){ .qemu_fd = fd, .own_fd = own, .dev = st.st_dev, .ino = st.st_ino };
    } else {
        say_locked("more than %u guest RAM memfds: the rest are not paged by the engine", DE_QEMU_MAX_REGIONS);
    }
    pthread_mutex_unlock(&lock);
    said_flush();
}

static void note_mapping(void *address, size_t length, int fd, off_t offset)
{
    struct stat st;
    if (length < DE_QEMU_PAGE_SIZE || fstat(fd, &st) != 0) return;
    int start = 0;
    pthread_mutex_lock(&lock);
    for (uint32_t i = 0; i < file_count; i++) {
        if (files[i].dev != st.st_dev || files[i].ino != st.st_ino) continue;
        if (region_count == DE_QEMU_MAX_REGIONS) {
            say_locked("more than %u guest RAM mappings: the rest are not paged by the engine", DE_QEMU_MAX_REGIONS);
            break;
        }
        regions[region_count++] = (de_qemu_region){
            .host_address = (uint64_t)(uintptr_t)address,
            .length = length & ~(uint64_t)(DE_QEMU_PAGE_SIZE - 1),
            .file_offset = (uint64_t)offset,
            .memfd_index = i,
        };
        if (!server_started) start = server_started = 1;
        break;
    }
    pthread_mutex_unlock(&lock);
    said_flush();
    if (start) {
        int listener = listen_socket();
        if (listener < 0) return;
        pthread_t thread;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int err = pthread_create(&thread, &attr, serve, (void *)(intptr_t)listener);
        pthread_attr_destroy(&attr);
        if (err != 0) say("cannot start the socket thread: %s", strerror(err));
    }
}

EXPORT int memfd_create(const char *name, unsigned int flags)
{
    int fd = (int)syscall(SYS_memfd_create, name, flags);
    if (fd >= 0 && active && name != NULL && strncmp(name, DE_QEMU_MEMFD_NAME, strlen(DE_QEMU_MEMFD_NAME)) == 0)
        note_ram_file(fd);
    return fd;
}

EXPORT void *mmap(void *address, size_t length, int protection, int flags, int fd, off_t offset)
{
    void *p = (void *)syscall(SYS_mmap, address, length, protection, flags, fd, offset);
    if (p != MAP_FAILED && active && fd >= 0 && (flags & MAP_SHARED) && file_count > 0)
        note_mapping(p, length, fd, offset);
    return p;
}

/* off_t is 64 bits on the 64-bit targets this is built for: mmap64 is the same call. */
EXPORT void *mmap64(void *address, size_t length, int protection, int flags, int fd, off_t offset)
    __attribute__((alias("mmap")));

EXPORT uint32_t de_qemu_region_count(void)
{
    pthread_mutex_lock(&lock);
    uint32_t n = region_count;
    pthread_mutex_unlock(&lock);
    return n;
}

EXPORT uint32_t de_qemu_attached(void)
{
    return atomic_load(&attached);
}
