/*
 * wsbench: the websocket transport next to the unix one, with one load
 * generator that differs only in framing.  `unix:PATH` speaks 4-byte
 * length + JSON; `ws://127.0.0.1:PORT/lexbus` speaks RFC 6455 (client
 * frames masked with a fresh key each, as browsers do).
 *
 *   wsbench ADDR stream N SIZE     1 -> 1 EMITs, one publisher process, one subscriber
 *   wsbench ADDR rtt N             sequential CALL -> RESPONSE round trips
 *   wsbench floor unix|tcp MB      two processes and a bare socket, no broker: what the
 *                                  kernel's Unix and TCP loopback sockets carry (64 KiB writes)
 *
 * Prints one JSON line per run (the fields of tests/bench/lbbench.c).
 * Publishers batch into 64 KiB writes, the subscriber reads 256 KiB at a
 * time, a 16 MiB window keeps the bus within its buffers, and every
 * message carries a sequence number the subscriber checks.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define BATCH (64 * 1024)
#define RBUF (256 * 1024)

static char *rbuf_alloc(void)
{
    char *p = malloc(RBUF);
    if (!p) { perror("malloc"); exit(1); }
    return p;
}
#define WINDOW_BYTES (16u << 20)
#define SEQ_DIGITS 10

static bool g_ws;
static const char *g_addr;
static uint64_t g_rng = 0x9E3779B97F4A7C15ull;

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "wsbench: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t w = write(fd, c, n);
        if (w < 0) { if (errno == EINTR) continue; die("write: %s", strerror(errno)); }
        c += w;
        n -= (size_t)w;
    }
}

struct rbuf { char *b; size_t len; };

static ssize_t rb_fill(struct rbuf *r, int fd)
{
    if (r->len == RBUF) die("message larger than the read buffer");
    ssize_t n = read(fd, r->b + r->len, RBUF - r->len);
    if (n > 0) r->len += (size_t)n;
    return n;
}

static void rb_consume(struct rbuf *r, size_t n)
{
    memmove(r->b, r->b + n, r->len - n);
    r->len -= n;
}

/* ---- framing ------------------------------------------------------- */

/* One outgoing frame for `json` at out; returns its length. */
static size_t frame(char *out, const char *json, size_t n)
{
    if (!g_ws) {
        uint32_t be = htonl((uint32_t)n);
        memcpy(out, &be, 4);
        memmove(out + 4, json, n);
        return 4 + n;
    }
    unsigned char h[14];
    size_t hl = 2;
    h[0] = 0x81;
    if (n < 126) h[1] = (unsigned char)(0x80 | n);
    else if (n < 65536) { h[1] = 0x80 | 126; h[2] = (unsigned char)(n >> 8); h[3] = (unsigned char)n; hl = 4; }
    else { h[1] = 0x80 | 127; for (int i = 0; i < 8; i++) h[2 + i] = (unsigned char)((uint64_t)n >> (56 - 8 * i)); hl = 10; }
    g_rng ^= g_rng << 13; g_rng ^= g_rng >> 7; g_rng ^= g_rng << 17;
    uint32_t key = (uint32_t)g_rng;
    memcpy(h + hl, &key, 4);
    hl += 4;
    memmove(out + hl, json, n);
    memcpy(out, h, hl);
    uint64_t k8 = (uint64_t)key | (uint64_t)key << 32;
    unsigned char *p = (unsigned char *)out + hl;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) { uint64_t x; memcpy(&x, p + i, 8); x ^= k8; memcpy(p + i, &x, 8); }
    for (; i < n; i++) p[i] ^= ((unsigned char *)&key)[i & 3];
    return hl + n;
}

/* One complete incoming frame at b: its total length (0: incomplete),
 * the JSON body in *body / *blen. */
static size_t next(const char *b, size_t len, const char **body, size_t *blen)
{
    if (!g_ws) {
        if (len < 4) return 0;
        uint32_t n;
        memcpy(&n, b, 4);
        n = ntohl(n);
        if (len < 4 + (size_t)n) return 0;
        *body = b + 4;
        *blen = n;
        return 4 + n;
    }
    if (len < 2) return 0;
    const unsigned char *u = (const unsigned char *)b;
    size_t n = u[1] & 0x7f, hl = 2;
    if (n == 126) { if (len < 4) return 0; n = (size_t)u[2] << 8 | u[3]; hl = 4; }
    else if (n == 127) { if (len < 10) return 0; n = 0; for (int i = 0; i < 8; i++) n = n << 8 | u[2 + i]; hl = 10; }
    if (len < hl + n) return 0;
    *body = b + hl;
    *blen = (u[0] & 0x0f) == 1 ? n : 0;   /* pings and the like carry no message */
    return hl + n;
}

static int dial(void)
{
    int fd;
    if (!strncmp(g_addr, "unix:", 5)) {
        struct sockaddr_un sun = { .sun_family = AF_UNIX };
        snprintf(sun.sun_path, sizeof sun.sun_path, "%s", g_addr + 5);
        fd = socket(AF_UNIX, SOCK_STREAM, 0);
        if (connect(fd, (struct sockaddr *)&sun, sizeof sun)) die("connect %s: %s", g_addr, strerror(errno));
        return fd;
    }
    int port;
    char path[128];
    if (sscanf(g_addr, "ws://127.0.0.1:%d%127s", &port, path) != 2) die("address %s: unix:PATH or ws://127.0.0.1:PORT/PATH", g_addr);
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    fd = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(fd, (struct sockaddr *)&sin, sizeof sin)) die("connect %s: %s", g_addr, strerror(errno));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    char req[512];
    int k = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", path, port);
    write_all(fd, req, (size_t)k);
    char head[2048];
    size_t hl = 0;
    while (hl < sizeof head - 1) {   /* byte by byte: nothing after the head is read */
        if (read(fd, head + hl, 1) != 1) die("handshake: closed");
        hl++;
        if (hl >= 4 && !memcmp(head + hl - 4, "\r\n\r\n", 4)) break;
    }
    head[hl] = 0;
    if (strncmp(head, "HTTP/1.1 101", 12)) die("handshake refused: %.60s", head);
    return fd;
}

static void send_json(int fd, const char *json)
{
    char out[1024];
    write_all(fd, out, frame(out, json, strlen(json)));
}

/* Reads frames until one whose body contains `want`. */
static void wait_for(int fd, struct rbuf *r, const char *want)
{
    for (;;) {
        const char *b;
        size_t bl, m;
        while ((m = next(r->b, r->len, &b, &bl))) {
            bool hit = bl && memmem(b, bl, want, strlen(want));
            rb_consume(r, m);
            if (hit) return;
        }
        if (rb_fill(r, fd) <= 0) die("closed while waiting for %s", want);
    }
}

static int connect_as(const char *name, const char *extra, struct rbuf *r)
{
    int fd = dial();
    char msg[512];
    snprintf(msg, sizeof msg, "{\"type\":\"REGISTER\",\"serviceName\":\"%s\"%s}", name, extra);
    send_json(fd, msg);
    wait_for(fd, r, "REGISTER_ACK");
    return fd;
}

/* ---- stream -------------------------------------------------------- */

static size_t emit(char *out, const char *payload, size_t size)
{
    char json[65536 + 256];
    int n = snprintf(json, sizeof json, "{\"type\":\"EMIT\",\"event\":\"bench.x\",\"to\":\"bench-sub\",\"payload\":\"%.*s\"}",
                     (int)size, payload);
    return frame(out, json, (size_t)n);
}

static void make_payload(char *p, long seq)
{
    for (int i = SEQ_DIGITS - 1; i >= 0; i--) { p[i] = (char)('0' + seq % 10); seq /= 10; }
}

static void run_stream(long n, size_t size)
{
    if (size < SEQ_DIGITS || size > 65536) die("size must be %d to 65536", SEQ_DIGITS);
    struct rbuf r = { rbuf_alloc(), 0 };
    int sub = connect_as("bench-sub", "", &r);
    int prog[2];
    if (pipe(prog)) die("pipe");
    char *payload = malloc(size + 1), *batch = malloc(BATCH + size + 512);
    memset(payload, 'x', size);
    long window = (long)(WINDOW_BYTES / emit(batch, payload, size));
    pid_t pid = fork();
    if (pid == 0) {
        close(prog[1]);
        struct rbuf pr = { rbuf_alloc(), 0 };
        int fd = connect_as("bench-pub", "", &pr);
        long sent = 0, acked = 0;
        while (sent < n) {
            while (sent - acked >= window) {
                long got;
                if (read(prog[0], &got, sizeof got) != sizeof got) _exit(1);
                if (got > acked) acked = got;
            }
            size_t bl = 0;
            while (sent < n && bl + size + 200 <= BATCH && sent - acked < window) {
                make_payload(payload, sent++);
                bl += emit(batch + bl, payload, size);
            }
            write_all(fd, batch, bl);
        }
        pause();
        _exit(0);
    }
    close(prog[0]);
    long got = 0, errors = 0, reported = 0, step = window / 8 > 0 ? window / 8 : 1;
    double t0 = 0;
    while (got < n) {
        ssize_t k = rb_fill(&r, sub);
        if (k <= 0) die("subscriber closed after %ld", got);
        if (!t0) t0 = now_s();
        size_t off = 0, m, bl;
        const char *b;
        while ((m = next(r.b + off, r.len - off, &b, &bl))) {
            off += m;
            if (bl < size + 2) continue;
            const char *p = b + bl - 2 - size;   /* ..."payload":"<payload>"} */
            long v = 0;
            for (int i = 0; i < SEQ_DIGITS; i++) v = v * 10 + (p[i] - '0');
            if (v != got) errors++;
            got = v + 1;
        }
        rb_consume(&r, off);
        if (got - reported >= step || got == n) { write_all(prog[1], &got, sizeof got); reported = got; }
    }
    double dt = now_s() - t0;
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    printf("{\"peer\":\"%s\",\"workload\":\"stream\",\"messages\":%ld,\"size\":%zu,\"subscribers\":1,\"delivered\":%ld,"
           "\"seconds\":%.4f,\"msgs_per_s\":%.0f,\"mb_per_s\":%.2f,\"order_errors\":%ld,\"lost\":0}\n",
           g_ws ? "lexbus-ws" : "lexbus", n, size, got, dt, (double)got / dt, (double)got * (double)size / dt / 1e6, errors);
}

/* ---- rtt ----------------------------------------------------------- */

static int cmpd(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void echo_server(void)
{
    struct rbuf r = { rbuf_alloc(), 0 };
    int fd = connect_as("bench-echo", ",\"methods\":[\"echo\"]", &r);
    char json[512], out[600];
    for (;;) {
        const char *b;
        size_t bl, m;
        while ((m = next(r.b, r.len, &b, &bl))) {
            const char *id = bl && b ? memmem(b, bl, "\"id\":\"", 6) : NULL;
            if (id && memmem(b, bl, "\"CALL\"", 6)) {
                id += 6;
                const char *e = memchr(id, '"', (size_t)(b + bl - id));
                int k = snprintf(json, sizeof json, "{\"type\":\"RESPONSE\",\"id\":\"%.*s\",\"status\":\"success\","
                                 "\"data\":\"0123456789abcdef\"}", (int)(e - id), id);
                write_all(fd, out, frame(out, json, (size_t)k));
            }
            rb_consume(&r, m);
        }
        if (rb_fill(&r, fd) <= 0) _exit(0);
    }
}

static void run_rtt(long n)
{
    pid_t pid = fork();
    if (pid == 0) echo_server();
    usleep(200000);
    struct rbuf r = { rbuf_alloc(), 0 };
    int fd = connect_as("bench-caller", "", &r);
    long warm = n / 10;
    double *lat = malloc(sizeof *lat * (size_t)n);
    char json[512], out[600];
    for (long i = 0; i < n + warm; i++) {
        int k = snprintf(json, sizeof json, "{\"type\":\"CALL\",\"id\":\"r%ld\",\"to\":\"bench-echo\",\"method\":\"echo\","
                         "\"params\":\"0123456789abcdef\"}", i);
        size_t fl = frame(out, json, (size_t)k);
        double t = now_s();
        write_all(fd, out, fl);
        for (;;) {
            const char *b;
            size_t bl, m = next(r.b, r.len, &b, &bl);
            if (m) {
                bool done = bl && b && memmem(b, bl, "\"RESPONSE\"", 10);
                if (done && !memmem(b, bl, "\"success\"", 9)) die("rtt: error reply: %.*s", (int)bl, b);
                rb_consume(&r, m);
                if (done) break;
                continue;
            }
            if (rb_fill(&r, fd) <= 0) die("rtt: closed");
        }
        if (i >= warm) lat[i - warm] = (now_s() - t) * 1e6;
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    qsort(lat, (size_t)n, sizeof *lat, cmpd);
    printf("{\"peer\":\"%s\",\"workload\":\"rtt\",\"messages\":%ld,\"p50_us\":%.1f,\"p90_us\":%.1f,\"p99_us\":%.1f,"
           "\"p999_us\":%.1f}\n", g_ws ? "lexbus-ws" : "lexbus", n, lat[n / 2], lat[n * 9 / 10], lat[n * 99 / 100],
           lat[n * 999 / 1000]);
}

/* ---- floor: a bare socket between two processes ------------------ */

static void run_floor(bool tcp, long mb)
{
    size_t total = (size_t)mb << 20;
    struct sockaddr_in sin = { .sin_family = AF_INET };
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    snprintf(sun.sun_path, sizeof sun.sun_path, "/tmp/wsbench-floor-%d.sock", (int)getpid());
    int ls = socket(tcp ? AF_INET : AF_UNIX, SOCK_STREAM, 0);
    socklen_t sl = tcp ? sizeof sin : sizeof sun;
    struct sockaddr *sa = tcp ? (struct sockaddr *)&sin : (struct sockaddr *)&sun;
    if (bind(ls, sa, sl) || listen(ls, 1) || getsockname(ls, sa, &sl)) die("floor: %s", strerror(errno));
    pid_t pid = fork();
    if (pid == 0) {
        int c = socket(tcp ? AF_INET : AF_UNIX, SOCK_STREAM, 0);
        if (connect(c, sa, sl)) _exit(1);
        char *b = malloc(BATCH);
        memset(b, 'x', BATCH);
        for (size_t sent = 0; sent < total; sent += BATCH) write_all(c, b, BATCH);
        _exit(0);
    }
    int fd = accept(ls, NULL, NULL);
    char *b = rbuf_alloc();
    size_t got = 0;
    double t0 = now_s();
    while (got < total) {
        ssize_t r = read(fd, b, RBUF);
        if (r <= 0) break;
        got += (size_t)r;
    }
    double dt = now_s() - t0;
    waitpid(pid, NULL, 0);
    if (!tcp) unlink(sun.sun_path);
    printf("{\"peer\":\"floor-%s\",\"workload\":\"floor\",\"bytes\":%zu,\"seconds\":%.4f,\"mb_per_s\":%.1f}\n",
           tcp ? "tcp" : "unix", got, dt, (double)got / dt / 1e6);
}

int main(int argc, char **argv)
{
    if (argc < 4) die("usage: wsbench unix:PATH|ws://127.0.0.1:PORT/lexbus stream N SIZE | rtt N");
    signal(SIGPIPE, SIG_IGN);
    if (!strcmp(argv[1], "floor")) { run_floor(!strcmp(argv[2], "tcp"), atol(argv[3])); return 0; }
    g_addr = argv[1];
    g_ws = !strncmp(g_addr, "ws://", 5);
    g_rng ^= (uint64_t)getpid() * 0x2545F4914F6CDD1Dull;
    if (!strcmp(argv[2], "stream") && argc == 5) run_stream(atol(argv[3]), (size_t)atol(argv[4]));
    else if (!strcmp(argv[2], "rtt")) run_rtt(atol(argv[3]));
    else die("unknown workload %s", argv[2]);
    return 0;
}
