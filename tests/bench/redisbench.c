/*
 * redisbench: the redis plugin's benchmark (tests/bench/redis-bench.sh runs
 * it).  Cross-node CALL round trips and cross-node event throughput, next
 * to the same on one node and next to the floor: two raw Redis clients
 * doing PUBLISH/SUBSCRIBE ping-pong, and redis-server relaying a stream to
 * one subscriber, over the same redis-server.  Every client here speaks
 * its wire by hand (RESP, lexbus frames) over Unix sockets, so no client
 * library's speed decides anything; the other side of each workload is a
 * forked child.  Streams are windowed through a counter the receiver
 * keeps in shared memory, so no buffer overflows and nothing is lost: the
 * receiver counts every message, and a run that loses one never ends.
 *
 *   redisbench floor-rtt   REDIS_SOCK N
 *   redisbench floor-relay REDIS_SOCK N SIZE
 *   redisbench lexbus-rtt    CALLER_SOCK SERVER_SOCK N
 *   redisbench lexbus-stream PUB_SOCK SUB_SOCK N SIZE
 * Prints one JSON object.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define BATCH (64 * 1024)
#define RBUF (256 * 1024)
#define WINDOW 20000                   /* messages in flight in a stream */
#define WARMUP 200

struct shared { _Atomic uint64_t got; _Atomic int ready; _Atomic uint64_t done_ns; };
static struct shared *g_sh;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *what, const char *detail)
{
    fprintf(stderr, "redisbench: %s: %s\n", what, detail);
    exit(1);
}

static int dial(const char *path)
{
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    snprintf(a.sun_path, sizeof a.sun_path, "%s", path);
    for (int i = 0; i < 100; i++) {
        if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0) return fd;
        usleep(20000);
    }
    die("cannot connect", path);
    return -1;
}

static void write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) {
                /* A non-blocking publishing connection: let Redis's replies out of the way. */
                static char junk[65536];
                while (read(fd, junk, sizeof junk) > 0) {}
                usleep(50);
                continue;
            }
            die("write", strerror(errno));
        }
        p += w;
        n -= (size_t)w;
    }
}

static void set_nonblock(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

/* Discards the replies waiting on a (non-blocking) publishing connection. */
static void drain(int fd)
{
    static char junk[65536];
    while (read(fd, junk, sizeof junk) > 0) {}
}

/* ---- reading -------------------------------------------------------------- */

struct rb { int fd; char *b; size_t len, pos; };

/* The last frame a receiver read, told when its connection ends early. */
static char g_last[300];

static void rb_init(struct rb *r, int fd)
{
    r->fd = fd;
    r->b = malloc(2 * RBUF);
    r->len = r->pos = 0;
}

static void rb_fill(struct rb *r)
{
    if (r->pos) {
        memmove(r->b, r->b + r->pos, r->len - r->pos);
        r->len -= r->pos;
        r->pos = 0;
    }
    if (r->len == 2 * RBUF) die("read", "a reply larger than the buffer");
    ssize_t n = read(r->fd, r->b + r->len, 2 * RBUF - r->len);
    if (n <= 0) {
        if (g_last[0]) fprintf(stderr, "redisbench: the last frame read: %s\n", g_last);
        die("read", n ? strerror(errno) : "the peer closed the connection");
    }
    r->len += (size_t)n;
}

/* One complete RESP reply at *at: false when more bytes are needed.
 * bulk and blen: its last bulk string. */
static bool resp_skip(struct rb *r, size_t *at, const char **bulk, size_t *blen)
{
    if (*at >= r->len) return false;
    char *nl = memchr(r->b + *at, '\n', r->len - *at);
    if (!nl) return false;
    char t = r->b[*at];
    long v = strtol(r->b + *at + 1, NULL, 10);
    *at = (size_t)(nl - r->b) + 1;
    if (t == '*') {
        for (long i = 0; i < v; i++)
            if (!resp_skip(r, at, bulk, blen)) return false;
    } else if (t == '$' && v >= 0) {
        if (*at + (size_t)v + 2 > r->len) return false;
        *bulk = r->b + *at;
        *blen = (size_t)v;
        *at += (size_t)v + 2;
    }
    return true;
}

static void resp_next(struct rb *r, const char **bulk, size_t *blen)
{
    for (;;) {
        size_t at = r->pos;
        if (resp_skip(r, &at, bulk, blen)) { r->pos = at; return; }
        rb_fill(r);
    }
}

/* A complete lexbus frame at r->pos (4-byte length + JSON): its body. */
static const char *frame_next(struct rb *r, size_t *n)
{
    for (;;) {
        if (r->len - r->pos >= 4) {
            const unsigned char *p = (const unsigned char *)r->b + r->pos;
            size_t len = (size_t)p[0] << 24 | (size_t)p[1] << 16 | (size_t)p[2] << 8 | p[3];
            if (r->len - r->pos >= 4 + len) {
                const char *body = r->b + r->pos + 4;
                snprintf(g_last, sizeof g_last, "%.*s", (int)(len < 290 ? len : 290), body);
                r->pos += 4 + len;
                *n = len;
                return body;
            }
        }
        rb_fill(r);
    }
}

/* ---- writing ---------------------------------------------------------------- */

static size_t resp_cmd(char *out, int argc, const char **argv, const size_t *len)
{
    size_t o = (size_t)sprintf(out, "*%d\r\n", argc);
    for (int i = 0; i < argc; i++) {
        o += (size_t)sprintf(out + o, "$%zu\r\n", len[i]);
        memcpy(out + o, argv[i], len[i]);
        o += len[i];
        memcpy(out + o, "\r\n", 2);
        o += 2;
    }
    return o;
}

static size_t publish_cmd(char *out, const char *chan, const char *body, size_t n)
{
    const char *argv[] = { "PUBLISH", chan, body };
    size_t len[] = { 7, strlen(chan), n };
    return resp_cmd(out, 3, argv, len);
}

static int subscribe(const char *sock, const char *chan, struct rb *r)
{
    int fd = dial(sock);
    char buf[256];
    const char *argv[] = { "SUBSCRIBE", chan };
    size_t len[] = { 9, strlen(chan) };
    write_all(fd, buf, resp_cmd(buf, 2, argv, len));
    rb_init(r, fd);
    const char *b;
    size_t bl;
    resp_next(r, &b, &bl);              /* the subscribe confirmation */
    return fd;
}

static size_t frame(char *out, const char *json)
{
    size_t n = strlen(json);
    out[0] = (char)(n >> 24);
    out[1] = (char)(n >> 16);
    out[2] = (char)(n >> 8);
    out[3] = (char)n;
    memcpy(out + 4, json, n);
    return n + 4;
}

static int lexbus_client(const char *sock, const char *name, const char *methods, struct rb *r)
{
    int fd = dial(sock);
    char json[512], buf[600];
    snprintf(json, sizeof json, "{\"type\":\"REGISTER\",\"serviceName\":\"%s\",\"methods\":[%s]}", name, methods);
    write_all(fd, buf, frame(buf, json));
    rb_init(r, fd);
    size_t n;
    const char *ack = frame_next(r, &n);
    if (!memmem(ack, n, "REGISTER_ACK", 12)) die("REGISTER refused", name);
    return fd;
}

/* ---- results ----------------------------------------------------------------- */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void print_rtt(const char *what, uint64_t *v, size_t n)
{
    qsort(v, n, sizeof *v, cmp_u64);
    double sum = 0;
    for (size_t i = 0; i < n; i++) sum += (double)v[i];
    printf("{\"workload\":\"%s\",\"n\":%zu,\"mean_us\":%.2f,\"p50_us\":%.2f,\"p99_us\":%.2f,\"min_us\":%.2f}\n", what, n,
           sum / (double)n / 1e3, (double)v[n / 2] / 1e3, (double)v[n * 99 / 100] / 1e3, (double)v[0] / 1e3);
}

static void print_stream(const char *what, size_t n, size_t size, uint64_t ns)
{
    printf("{\"workload\":\"%s\",\"n\":%zu,\"size\":%zu,\"msgs_per_s\":%.0f,\"seconds\":%.3f}\n", what, n, size,
           (double)n / ((double)ns / 1e9), (double)ns / 1e9);
}

static pid_t g_kid;

/* The receiver must still be there: a receiver that died would leave the
 * sender waiting for ever. */
static void kid_alive(void)
{
    int st;
    if (g_kid && waitpid(g_kid, &st, WNOHANG) == g_kid) {
        fprintf(stderr, "redisbench: the receiver ended early (%s %d) after %llu messages\n",
                WIFSIGNALED(st) ? "signal" : "exit", WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st),
                (unsigned long long)atomic_load(&g_sh->got));
        exit(1);
    }
}

typedef void (*child_fn)(char **argv);

static pid_t spawn(child_fn fn, char **argv)
{
    pid_t p = fork();
    if (p < 0) die("fork", strerror(errno));
    if (p == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        fn(argv);
        _exit(0);
    }
    g_kid = p;
    while (!atomic_load(&g_sh->ready)) { kid_alive(); usleep(1000); }
    return p;
}

/* ---- floor: PUBLISH/SUBSCRIBE ping-pong between two raw clients ----------- */

static void floor_echo(char **argv)
{
    struct rb sub;
    int sfd = subscribe(argv[2], "bench:b", &sub);
    int pfd = dial(argv[2]);
    set_nonblock(pfd);
    atomic_store(&g_sh->ready, 1);
    char out[256];
    for (;;) {
        const char *b;
        size_t bl;
        resp_next(&sub, &b, &bl);
        write_all(pfd, out, publish_cmd(out, "bench:a", b, bl));
        drain(pfd);
    }
    (void)sfd;
}

static int floor_rtt(char **argv)
{
    size_t n = strtoul(argv[3], NULL, 10);
    pid_t kid = spawn(floor_echo, argv);
    struct rb sub;
    subscribe(argv[2], "bench:a", &sub);
    int pfd = dial(argv[2]);
    set_nonblock(pfd);
    uint64_t *v = malloc(n * sizeof *v);
    char out[256];
    for (size_t i = 0; i < n + WARMUP; i++) {
        const char *b;
        size_t bl;
        uint64_t t0 = now_ns();
        write_all(pfd, out, publish_cmd(out, "bench:b", "ping", 4));
        resp_next(&sub, &b, &bl);
        if (i >= WARMUP) v[i - WARMUP] = now_ns() - t0;
        drain(pfd);
    }
    print_rtt("floor-rtt", v, n);
    kill(kid, SIGKILL);
    return 0;
}

/* ---- floor: redis-server relaying a stream to one subscriber -------------- */

static void floor_sink(char **argv)
{
    size_t n = strtoul(argv[3], NULL, 10);
    struct rb sub;
    subscribe(argv[2], "bench:s", &sub);
    atomic_store(&g_sh->ready, 1);
    for (size_t got = 0; got < n; got++) {
        const char *b;
        size_t bl;
        resp_next(&sub, &b, &bl);
        atomic_store_explicit(&g_sh->got, got + 1, memory_order_release);
    }
    atomic_store(&g_sh->done_ns, now_ns());
}

/* Writes n messages of `one` (its length `len`) in 64 KiB batches, never
 * more than WINDOW ahead of what the receiver counted. */
static uint64_t stream(int fd, const char *one, size_t len, size_t n, bool redis)
{
    char *batch = malloc(BATCH + len);
    uint64_t t0 = now_ns();
    size_t sent = 0;
    while (sent < n) {
        size_t b = 0;
        while (sent < n && b + len <= BATCH && sent - atomic_load_explicit(&g_sh->got, memory_order_acquire) < WINDOW) {
            memcpy(batch + b, one, len);
            b += len;
            sent++;
        }
        if (b) write_all(fd, batch, b);
        else { kid_alive(); sched_yield(); }
        if (redis) drain(fd);
    }
    while (!atomic_load(&g_sh->done_ns)) {
        if (redis) drain(fd);
        kid_alive();
        usleep(100);
    }
    free(batch);
    return atomic_load(&g_sh->done_ns) - t0;
}

static int floor_relay(char **argv)
{
    size_t n = strtoul(argv[3], NULL, 10), size = strtoul(argv[4], NULL, 10);
    pid_t kid = spawn(floor_sink, argv);
    int pfd = dial(argv[2]);
    char *body = malloc(size + 1), *one = malloc(size + 64);
    memset(body, 'x', size);
    size_t len = publish_cmd(one, "bench:s", body, size);
    set_nonblock(pfd);
    uint64_t ns = stream(pfd, one, len, n, true);
    print_stream("floor-relay", n, size, ns);
    waitpid(kid, NULL, 0);
    return 0;
}

/* ---- lexbus: CALL round trips ----------------------------------------------- */

static void lexbus_echo(char **argv)
{
    struct rb r;
    int fd = lexbus_client(argv[3], "bench-echo", "\"echo\"", &r);
    atomic_store(&g_sh->ready, 1);
    char json[512], out[600];
    for (;;) {
        size_t n;
        const char *f = frame_next(&r, &n);
        const char *id = memmem(f, n, "\"id\":\"", 6);
        if (!id || !memmem(f, n, "\"CALL\"", 6)) continue;
        id += 6;
        const char *q = memchr(id, '"', (size_t)(f + n - id));
        if (!q) continue;
        snprintf(json, sizeof json, "{\"type\":\"RESPONSE\",\"id\":\"%.*s\",\"status\":\"success\",\"data\":{}}",
                 (int)(q - id), id);
        write_all(fd, out, frame(out, json));
    }
}

static int lexbus_rtt(char **argv)
{
    size_t n = strtoul(argv[4], NULL, 10);
    pid_t kid = spawn(lexbus_echo, argv);
    struct rb r;
    int fd = lexbus_client(argv[2], "bench-caller", "", &r);
    /* The echo service may have to reach the caller's node first. */
    char json[256], out[300];
    uint64_t *v = malloc(n * sizeof *v);
    for (size_t i = 0; i < n + WARMUP; i++) {
        snprintf(json, sizeof json, "{\"type\":\"CALL\",\"id\":\"c%zu\",\"to\":\"bench-echo\",\"method\":\"echo\",\"params\":{}}", i);
        size_t fl = frame(out, json), got;
        uint64_t t0 = now_ns();
        write_all(fd, out, fl);
        const char *f = frame_next(&r, &got);
        if (!memmem(f, got, "\"success\"", 9)) {
            if (i < WARMUP) { usleep(20000); continue; }       /* not registered there yet */
            die("call failed", strndup(f, got));
        }
        if (i >= WARMUP) v[i - WARMUP] = now_ns() - t0;
    }
    print_rtt("lexbus-rtt", v, n);
    kill(kid, SIGKILL);
    return 0;
}

/* ---- lexbus: an event stream to one service ------------------------------- */

static void lexbus_sink(char **argv)
{
    size_t n = strtoul(argv[4], NULL, 10);
    struct rb r;
    lexbus_client(argv[3], "bench-sink", "", &r);
    atomic_store(&g_sh->ready, 1);
    for (size_t got = 0; got < n;) {
        size_t fl;
        const char *f = frame_next(&r, &fl);
        if (fl < 16 || memcmp(f, "{\"type\":\"EVENT\"", 15)) continue;
        if (memmem(f, fl, "bench:probe", 11)) { atomic_store(&g_sh->ready, 2); continue; }
        atomic_store_explicit(&g_sh->got, ++got, memory_order_release);
    }
    atomic_store(&g_sh->done_ns, now_ns());
}

static int lexbus_stream(char **argv)
{
    size_t n = strtoul(argv[4], NULL, 10), size = strtoul(argv[5], NULL, 10);
    pid_t kid = spawn(lexbus_sink, argv);
    struct rb r;
    int fd = lexbus_client(argv[2], "bench-pub", "", &r);
    /* Wait until the sink hears the publisher: probes until one arrives.
     * An ACK is not enough: a service of that name that just left another
     * node may still be announced for a moment, and take the probe. */
    for (int i = 0; atomic_load(&g_sh->ready) != 2; i++) {
        char out[256];
        write_all(fd, out, frame(out, "{\"type\":\"EMIT\",\"id\":\"probe\",\"event\":\"bench:probe\",\"to\":\"bench-sink\",\"ack\":true}"));
        size_t fl;
        frame_next(&r, &fl);                            /* its ACK, or ERROR SERVICE_NOT_FOUND */
        for (int k = 0; k < 50 && atomic_load(&g_sh->ready) != 2; k++) { kid_alive(); usleep(1000); }
        if (i > 200) die("sink", "never reachable");
    }
    char *pad = malloc(size + 1), *json = malloc(size + 256), *one = malloc(size + 260);
    memset(pad, 'x', size);
    pad[size] = 0;
    snprintf(json, size + 256, "{\"type\":\"EMIT\",\"event\":\"bench:e\",\"to\":\"bench-sink\",\"payload\":\"%s\"}", pad);
    size_t len = frame(one, json);
    uint64_t ns = stream(fd, one, len, n, false);
    print_stream("lexbus-stream", n, size, ns);
    waitpid(kid, NULL, 0);
    return 0;
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    g_sh = mmap(NULL, sizeof *g_sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (g_sh == MAP_FAILED) die("mmap", strerror(errno));
    setvbuf(stderr, NULL, _IONBF, 0);
    if (argc == 4 && !strcmp(argv[1], "floor-rtt")) return floor_rtt(argv);
    if (argc == 5 && !strcmp(argv[1], "floor-relay")) return floor_relay(argv);
    if (argc == 5 && !strcmp(argv[1], "lexbus-rtt")) return lexbus_rtt(argv);
    if (argc == 6 && !strcmp(argv[1], "lexbus-stream")) return lexbus_stream(argv);
    fprintf(stderr, "usage: redisbench floor-rtt SOCK N | floor-relay SOCK N SIZE |\n"
                    "       lexbus-rtt CALLER_SOCK SERVER_SOCK N | lexbus-stream PUB_SOCK SUB_SOCK N SIZE\n");
    return 2;
}
