/*
 * lbbench: one load generator for lexbus and the brokers people would pick
 * instead (NATS, Redis pub/sub, MQTT/Mosquitto), plus the floor (a bare Unix
 * socket between two processes).  Every peer is driven the same way, with a
 * hand-written client for its wire protocol, so no client library's speed
 * decides the result, and every client does the same work per message:
 *   - publishers batch messages into 64 KiB writes;
 *   - subscribers read 256 KiB at a time and parse every message in place,
 *     as a real client of that protocol would: the lexbus subscriber runs the
 *     envelope scanner (core/envelope.c, the one liblexbus uses) over each
 *     EVENT, the NATS/Redis/MQTT subscribers parse MSG lines, RESP arrays and
 *     PUBLISH packets; each then checks the topic it subscribed to, takes the
 *     payload where the parse found it and reads the sequence number from it;
 *   - a window keeps every broker inside its buffer limits, so no peer drops
 *     messages: 16 MiB in flight ("blast"), or at most W messages ahead of the
 *     slowest subscriber ("flow-controlled", --window W), reported by the
 *     subscribers through a pipe;
 *   - every message carries a sequence number; count and order are checked
 *     for every workload, round trips included (loss is measured, not assumed);
 *   - fan-out subscribers can be spread over several processes (--procs P)
 *     so one client process is not the bottleneck;
 *   - the CPU time of every client process (getrusage through wait4) and, with
 *     --server-pid, of the broker (its threads' schedstat) is reported, so a
 *     result bound by the load generator is visible.
 *
 *   lbbench PEER ADDRESS WORKLOAD [options]
 *     PEER      lexbus | lexbus-tls | nats | redis | mqtt | floor | relay (rtt only:
 *               the floor with a byte-copying process in the middle)
 *     ADDRESS   unix:/path or tcp:host:port (floor: ignored)
 *     WORKLOAD  stream N SIZE | fanout N SIZE SUBS | rtt N | idle N DAEMON_PID (lexbus only)
 *     options   --window W (flow-controlled: at most W messages ahead of the slowest
 *               subscriber), --procs P (subscriber processes), --server-pid PID,
 *               --batch B (bytes per publisher write, default and at most 64 KiB)
 *   Prints one JSON object with the figures.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <openssl/ssl.h>
#include "envelope.h"
#include "benchcpu.h"

#define SEQ_DIGITS 10
#define BATCH (64 * 1024)
#define RBUF (256 * 1024)
#define WINDOW_BYTES (16 * 1024 * 1024)
#define QUIET_MS 5000          /* nothing delivered for this long: the rest is lost */
#define TOPIC "bench.x"

static const char *g_addr;
static bool g_tls;                 /* lexbus-tls: TLS on the TCP socket */
static SSL_CTX *g_ssl_ctx;
static SSL *g_ssl[65536];          /* by file descriptor */
static pid_t g_server_pid;         /* --server-pid: the broker, for its CPU time */
static size_t g_batch = BATCH;     /* --batch: bytes per publisher write */

static ssize_t io_write(int fd, const void *p, size_t n)
{
    if (fd < 65536 && g_ssl[fd]) {
        int w = SSL_write(g_ssl[fd], p, (int)n);
        if (w <= 0) { errno = EIO; return -1; }
        return w;
    }
    return write(fd, p, n);
}

/* Reads what is available, including records OpenSSL already decrypted
 * (poll() cannot see those). */
static ssize_t io_read(int fd, void *p, size_t n)
{
    if (fd < 65536 && g_ssl[fd]) {
        size_t got = 0;
        do {
            int r = SSL_read(g_ssl[fd], (char *)p + got, (int)(n - got));
            if (r <= 0) return got ? (ssize_t)got : (r == 0 ? 0 : -1);
            got += (size_t)r;
        } while (got < n && SSL_pending(g_ssl[fd]) > 0);
        return (ssize_t)got;
    }
    return read(fd, p, n);
}

static void die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "lbbench: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t w = io_write(fd, c, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            die("write: %s", strerror(errno));
        }
        c += w;
        n -= (size_t)w;
    }
}

static void read_all(int fd, void *p, size_t n, const char *what)
{
    char *c = p;
    while (n) {
        ssize_t r = read(fd, c, n);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) die("%s: %s", what, r ? strerror(errno) : "closed");
        c += r;
        n -= (size_t)r;
    }
}

static int dial(const char *addr)
{
    int fd;
    if (strncmp(addr, "unix:", 5) == 0) {
        struct sockaddr_un sun = { .sun_family = AF_UNIX };
        snprintf(sun.sun_path, sizeof sun.sun_path, "%s", addr + 5);
        fd = socket(AF_UNIX, SOCK_STREAM, 0);
        if (connect(fd, (struct sockaddr *)&sun, sizeof sun)) die("connect %s: %s", addr, strerror(errno));
        return fd;
    }
    if (strncmp(addr, "tcp:", 4) == 0) {
        char host[64];
        int port;
        if (sscanf(addr + 4, "%63[^:]:%d", host, &port) != 2) die("bad address %s", addr);
        struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
        inet_pton(AF_INET, host, &sin.sin_addr);
        fd = socket(AF_INET, SOCK_STREAM, 0);
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (connect(fd, (struct sockaddr *)&sin, sizeof sin)) die("connect %s: %s", addr, strerror(errno));
        if (g_tls) {
            /* Benchmark only: the server certificate is not verified. */
            if (!g_ssl_ctx) g_ssl_ctx = SSL_CTX_new(TLS_client_method());
            SSL *ssl = SSL_new(g_ssl_ctx);
            SSL_set_fd(ssl, fd);
            if (SSL_connect(ssl) != 1) die("TLS handshake with %s failed", addr);
            g_ssl[fd] = ssl;
        }
        return fd;
    }
    die("bad address %s (unix:/path or tcp:host:port)", addr);
    return -1;
}

/* Children die with the parent, so a failed run leaves nothing behind. */
static pid_t fork_child(void)
{
    pid_t parent = getpid(), pid = fork();
    if (pid < 0) die("fork: %s", strerror(errno));
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(1);
    }
    return pid;
}

/* ------------------------------------------------------------------ */
/* CPU time: ours, a child's, the broker's.                           */

/* Stops a child (if `kill_it`) and returns the CPU seconds it used; a
 * child that should have ended by itself must have succeeded. */
static double reap(pid_t pid, bool kill_it)
{
    int st;
    if (kill_it) kill(pid, SIGKILL);
    double s = bc_reap_s(pid, &st);
    if (s < 0) die("wait4: %s", strerror(errno));
    if (!kill_it && !(WIFEXITED(st) && WEXITSTATUS(st) == 0)) die("a client process failed");
    return s;
}

/* The broker's CPU seconds, or -1 without --server-pid. */
static double server_cpu_s(void)
{
    if (g_server_pid <= 0) return -1;
    double s = bc_process_s(g_server_pid);
    if (s < 0) die("cannot read the CPU time of process %d", (int)g_server_pid);
    return s;
}

/* The machine's busy share and what of it was neither the broker nor the
 * clients (other load: these figures are only comparable when it is low). */
static void put_other(double machine_s, double ours_s, double wall)
{
    if (wall < 0.25) machine_s = -1;   /* /proc/stat counts 10 ms ticks: too coarse */
    bc_put_pct("machine_cpu_pct", machine_s, wall);
    bc_put_pct("other_cpu_pct", machine_s < 0 ? -1 : machine_s > ours_s ? machine_s - ours_s : 0, wall);
}

static int cpus_allowed(void)
{
    cpu_set_t set;
    return sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : -1;
}

/* ------------------------------------------------------------------ */
/* A read buffer with in-place parsing.                                */

struct rbuf { char *b; size_t len; };

static ssize_t rb_fill(struct rbuf *r, int fd)
{
    if (r->len == RBUF) die("message larger than the read buffer");
    ssize_t n = io_read(fd, r->b + r->len, RBUF - r->len);
    if (n > 0) r->len += (size_t)n;
    return n;
}

/* Reads on fd give up after QUIET_MS (rb_fill returns -1): a lost reply
 * ends the run with a count instead of a hang, with no extra poll() per
 * message on the round-trip path. */
static void set_quiet_timeout(int fd)
{
    struct timeval tv = { QUIET_MS / 1000, (QUIET_MS % 1000) * 1000 };
    if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv)) die("SO_RCVTIMEO: %s", strerror(errno));
}

static void rb_consume(struct rbuf *r, size_t n)
{
    memmove(r->b, r->b + n, r->len - n);
    r->len -= n;
}

/* ------------------------------------------------------------------ */
/* Peers: handshake, subscribe, encode a publish, parse deliveries.    */

/* One message as the parse found it; payload NULL: not a delivery
 * (a PING, +OK, a subscription confirmation...). */
struct msg { const char *topic, *payload; size_t tlen, plen; };

struct peer {
    const char *name;
    void (*hello)(int fd, const char *who);
    void (*subscribe)(int fd, struct rbuf *r, const char *topic);
    size_t (*publish)(char *out, const char *topic, const char *payload, size_t plen);
    /* Parses one complete message at the head of buf: returns its length
     * (0: incomplete) and fills *m.  A malformed message ends the run. */
    size_t (*next)(const char *buf, size_t len, struct msg *m);
};

/* Reads until `pred` accepts the buffer; consumes what it accepted. */
static void wait_reply(int fd, struct rbuf *r, size_t (*pred)(const char *, size_t))
{
    for (;;) {
        size_t n = r->len ? pred(r->b, r->len) : 0;
        if (n) { rb_consume(r, n); return; }
        if (rb_fill(r, fd) <= 0) die("connection closed during handshake");
    }
}

/* A decimal size of 1-9 digits (bounded: no overflow, no reading past n). */
static bool dec(const char *p, size_t n, size_t *out)
{
    if (n == 0 || n > 9) return false;
    size_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') return false;
        v = v * 10 + (size_t)(p[i] - '0');
    }
    *out = v;
    return true;
}

static size_t line_end(const char *b, size_t len)
{
    const char *e = memmem(b, len, "\r\n", 2);
    return e ? (size_t)(e - b) + 2 : 0;
}

/* --- lexbus: 4-byte length + JSON --- */
static size_t lx_frame(const char *b, size_t len)
{
    if (len < 4) return 0;
    uint32_t n;
    memcpy(&n, b, 4);
    n = ntohl(n);
    if (n == 0 || n > RBUF - 4) die("lexbus: bad frame length %u", n);
    return len >= 4 + (size_t)n ? 4 + n : 0;
}

/* Scans one complete frame (from lx_frame) as liblexbus does. */
static void lx_scan(struct envelope *e, const char *frame, size_t n)
{
    const char *why;
    if (envelope_parse(e, frame + 4, n - 4, &why) != ENV_OK)
        die("lexbus: the bus sent a frame the scanner refuses (%s): %.*s", why, (int)(n - 4), frame + 4);
    if (e->type == LB_MSG_ERROR) die("lexbus: error from the bus: %.*s", (int)(n - 4), frame + 4);
}

static void lx_send(int fd, const char *json)
{
    char buf[1024];
    uint32_t n = htonl((uint32_t)strlen(json));
    memcpy(buf, &n, 4);
    memcpy(buf + 4, json, strlen(json));
    write_all(fd, buf, 4 + strlen(json));
}

static void lx_hello(int fd, const char *who)
{
    char msg[256];
    struct rbuf r = { malloc(RBUF), 0 };
    snprintf(msg, sizeof msg, "{\"type\":\"REGISTER\",\"serviceName\":\"%s\",\"methods\":[\"echo\"]}", who);
    lx_send(fd, msg);
    wait_reply(fd, &r, lx_frame);
    free(r.b);
}

static void lx_subscribe(int fd, struct rbuf *r, const char *topic)
{
    char msg[256];
    snprintf(msg, sizeof msg, "{\"type\":\"SUBSCRIBE\",\"id\":\"s\",\"events\":[\"%s\"]}", topic);
    lx_send(fd, msg);
    wait_reply(fd, r, lx_frame);
}

static size_t lx_publish(char *out, const char *topic, const char *payload, size_t plen)
{
    int n = sprintf(out + 4, "{\"type\":\"EMIT\",\"event\":\"%s\",\"payload\":\"%.*s\"}", topic, (int)plen, payload);
    uint32_t be = htonl((uint32_t)n);
    memcpy(out, &be, 4);
    return 4 + (size_t)n;
}

/* An EVENT: the scanner validates the whole frame (strict JSON, UTF-8) and
 * says where `event` and `payload` lie; the payload is a JSON string whose
 * characters are the message. */
static size_t lx_next(const char *b, size_t len, struct msg *m)
{
    size_t n = lx_frame(b, len);
    if (!n) return 0;
    struct envelope e;
    lx_scan(&e, b, n);
    *m = (struct msg){ 0 };
    if (e.type != LB_MSG_EVENT) return n;
    const struct env_val *ev = &e.f[F_EVENT], *p = &e.f[F_PAYLOAD];
    if (ev->kind != J_STRING || ev->escaped || p->kind != J_STRING || p->escaped)
        die("lexbus: unexpected EVENT: %.*s", (int)(n - 4), b + 4);
    *m = (struct msg){ ev->p, p->p, ev->n, p->n };
    return n;
}

/* --- NATS text protocol --- */
static size_t nats_pong(const char *b, size_t len)
{
    const char *p = memmem(b, len, "PONG\r\n", 6);
    return p ? (size_t)(p - b) + 6 : 0;
}

static void nats_hello(int fd, const char *who)
{
    (void)who;
    struct rbuf r = { malloc(RBUF), 0 };
    const char *c = "CONNECT {\"verbose\":false,\"pedantic\":false,\"echo\":false}\r\nPING\r\n";
    write_all(fd, c, strlen(c));
    wait_reply(fd, &r, nats_pong);
    free(r.b);
}

static void nats_subscribe(int fd, struct rbuf *r, const char *topic)
{
    char msg[256];
    static int sid;
    snprintf(msg, sizeof msg, "SUB %s %d\r\nPING\r\n", topic, ++sid);
    write_all(fd, msg, strlen(msg));
    wait_reply(fd, r, nats_pong);
}

static size_t nats_publish(char *out, const char *topic, const char *payload, size_t plen)
{
    int n = sprintf(out, "PUB %s %zu\r\n", topic, plen);
    memcpy(out + n, payload, plen);
    memcpy(out + n + plen, "\r\n", 2);
    return (size_t)n + plen + 2;
}

/* MSG <subject> <sid> [reply-to] <#bytes>\r\n<payload>\r\n, tokenised as a
 * client does (the sid picks the subscription, the size finds the end). */
static size_t nats_next(const char *b, size_t len, struct msg *m)
{
    size_t le = line_end(b, len);
    if (!le) return 0;
    *m = (struct msg){ 0 };
    if (le < 4 || memcmp(b, "MSG ", 4) != 0) {
        if (le >= 4 && memcmp(b, "-ERR", 4) == 0) die("nats: %.*s", (int)le - 2, b);
        return le;   /* PING, +OK, INFO: not a delivery */
    }
    const char *tok[4], *p = b + 4, *end = b + le - 2;
    size_t tl[4], nt = 0, size, sid;
    while (p < end) {
        if (*p == ' ') { p++; continue; }
        if (nt == 4) die("nats: bad MSG line");
        tok[nt] = p;
        while (p < end && *p != ' ') p++;
        tl[nt] = (size_t)(p - tok[nt]);
        nt++;
    }
    if (nt < 3 || !dec(tok[1], tl[1], &sid) || !dec(tok[nt - 1], tl[nt - 1], &size)) die("nats: bad MSG line");
    if (len < le + size + 2) return 0;
    if (memcmp(b + le + size, "\r\n", 2) != 0) die("nats: MSG payload not terminated");
    *m = (struct msg){ tok[0], b + le, tl[0], size };
    return le + size + 2;
}

/* --- Redis RESP --- */
static void redis_hello(int fd, const char *who) { (void)fd; (void)who; }

/* One RESP value of any kind at b; returns its length or 0 if incomplete. */
static size_t resp_value(const char *b, size_t len)
{
    size_t le = line_end(b, len), n;
    if (!le) return 0;
    if (b[0] == '$') {
        if (le == 5 && memcmp(b, "$-1", 3) == 0) return le;
        if (!dec(b + 1, le - 3, &n)) die("redis: bad bulk length");
        return len >= le + n + 2 ? le + n + 2 : 0;
    }
    if (b[0] == '*') {
        if (!dec(b + 1, le - 3, &n)) die("redis: bad array length");
        size_t off = le;
        for (size_t i = 0; i < n; i++) {
            size_t v = resp_value(b + off, len - off);
            if (!v) return 0;
            off += v;
        }
        return off;
    }
    if (b[0] == '-') die("redis: %.*s", (int)le - 2, b);
    return le;
}

/* A bulk string $<n>\r\n<bytes>\r\n at b: its length (0: incomplete). */
static size_t resp_bulk(const char *b, size_t len, const char **p, size_t *n)
{
    size_t le = line_end(b, len);
    if (!le) return 0;
    if (b[0] != '$' || !dec(b + 1, le - 3, n)) die("redis: expected a bulk string");
    if (len < le + *n + 2) return 0;
    *p = b + le;
    return le + *n + 2;
}

static void redis_subscribe(int fd, struct rbuf *r, const char *topic)
{
    char msg[256];
    snprintf(msg, sizeof msg, "*2\r\n$9\r\nSUBSCRIBE\r\n$%zu\r\n%s\r\n", strlen(topic), topic);
    write_all(fd, msg, strlen(msg));
    wait_reply(fd, r, resp_value);
}

static size_t redis_publish(char *out, const char *topic, const char *payload, size_t plen)
{
    int n = sprintf(out, "*3\r\n$7\r\nPUBLISH\r\n$%zu\r\n%s\r\n$%zu\r\n", strlen(topic), topic, plen);
    memcpy(out + n, payload, plen);
    memcpy(out + n + plen, "\r\n", 2);
    return (size_t)n + plen + 2;
}

/* A push: *3\r\n $7 message, $<t> channel, $<p> payload, element by element. */
static size_t redis_next(const char *b, size_t len, struct msg *m)
{
    size_t le = line_end(b, len);
    if (!le) return 0;
    *m = (struct msg){ 0 };
    if (le != 4 || memcmp(b, "*3\r\n", 4) != 0) return resp_value(b, len);
    const char *kind, *chan, *pay;
    size_t kl, cl, pl, off = le, k;
    if (!(k = resp_bulk(b + off, len - off, &kind, &kl))) return 0;
    if (kl != 7 || memcmp(kind, "message", 7) != 0) return resp_value(b, len);   /* e.g. a subscribe reply */
    off += k;
    if (!(k = resp_bulk(b + off, len - off, &chan, &cl))) return 0;
    off += k;
    if (!(k = resp_bulk(b + off, len - off, &pay, &pl))) return 0;
    *m = (struct msg){ chan, pay, cl, pl };
    return off + k;
}

/* --- MQTT 3.1.1, QoS 0 --- */
static size_t mqtt_varint(char *out, size_t v)
{
    size_t i = 0;
    do {
        unsigned char c = v % 128;
        v /= 128;
        if (v) c |= 128;
        out[i++] = (char)c;
    } while (v);
    return i;
}

/* The fixed header at b: packet length (header included, 0 if incomplete)
 * and, in *hl, the header's own length. */
static size_t mqtt_fixed(const char *b, size_t len, size_t *hl)
{
    size_t v = 0, mul = 1, i = 1;
    for (;;) {
        if (i >= len) return 0;
        unsigned char c = (unsigned char)b[i++];
        v += (c & 127) * mul;
        mul *= 128;
        if (!(c & 128)) break;
        if (i > 4) die("bad MQTT length");
    }
    *hl = i;
    return len >= i + v ? i + v : 0;
}

static size_t mqtt_packet(const char *b, size_t len)
{
    size_t hl;
    return mqtt_fixed(b, len, &hl);
}

static void mqtt_hello(int fd, const char *who)
{
    char pkt[256], var[256];
    size_t idlen = strlen(who);
    size_t n = 0;
    memcpy(var, "\x00\x04MQTT\x04\x02\x00\x3c", 10);
    n = 10;
    var[n++] = (char)(idlen >> 8);
    var[n++] = (char)(idlen & 255);
    memcpy(var + n, who, idlen);
    n += idlen;
    pkt[0] = 0x10;
    size_t h = 1 + mqtt_varint(pkt + 1, n);
    memcpy(pkt + h, var, n);
    write_all(fd, pkt, h + n);
    struct rbuf r = { malloc(RBUF), 0 };
    wait_reply(fd, &r, mqtt_packet);   /* CONNACK */
    free(r.b);
}

static void mqtt_subscribe(int fd, struct rbuf *r, const char *topic)
{
    char pkt[256];
    size_t tl = strlen(topic), rem = 2 + 2 + tl + 1, n = 0;
    pkt[n++] = (char)0x82;
    n += mqtt_varint(pkt + n, rem);
    pkt[n++] = 0; pkt[n++] = 1;
    pkt[n++] = (char)(tl >> 8); pkt[n++] = (char)(tl & 255);
    memcpy(pkt + n, topic, tl); n += tl;
    pkt[n++] = 0;
    write_all(fd, pkt, n);
    wait_reply(fd, r, mqtt_packet);    /* SUBACK */
}

static size_t mqtt_publish(char *out, const char *topic, const char *payload, size_t plen)
{
    size_t tl = strlen(topic), rem = 2 + tl + plen, n = 0;
    out[n++] = 0x30;
    n += mqtt_varint(out + n, rem);
    out[n++] = (char)(tl >> 8); out[n++] = (char)(tl & 255);
    memcpy(out + n, topic, tl); n += tl;
    memcpy(out + n, payload, plen);
    return n + plen;
}

/* PUBLISH at QoS 0: topic length, topic, then the payload to the end. */
static size_t mqtt_next(const char *b, size_t len, struct msg *m)
{
    size_t hl, n = mqtt_fixed(b, len, &hl);
    if (!n) return 0;
    *m = (struct msg){ 0 };
    unsigned char h = (unsigned char)b[0];
    if ((h & 0xF0) != 0x30) return n;
    if (h & 0x06) die("mqtt: delivery above QoS 0");
    size_t rem = n - hl;
    if (rem < 2) die("mqtt: short PUBLISH");
    size_t tl = (size_t)(unsigned char)b[hl] << 8 | (unsigned char)b[hl + 1];
    if (2 + tl > rem) die("mqtt: bad topic length");
    *m = (struct msg){ b + hl + 2, b + hl + 2 + tl, tl, rem - 2 - tl };
    return n;
}

/* --- floor: length-prefixed bytes over a socketpair --- */
static size_t floor_publish(char *out, const char *topic, const char *payload, size_t plen)
{
    (void)topic;
    uint32_t be = htonl((uint32_t)plen);
    memcpy(out, &be, 4);
    memcpy(out + 4, payload, plen);
    return 4 + plen;
}

static size_t floor_next(const char *b, size_t len, struct msg *m)
{
    size_t n = lx_frame(b, len);
    if (!n) return 0;
    *m = (struct msg){ NULL, b + 4, 0, n - 4 };
    return n;
}

static const struct peer peers[] = {
    { "lexbus", lx_hello, lx_subscribe, lx_publish, lx_next },
    { "nats", nats_hello, nats_subscribe, nats_publish, nats_next },
    { "redis", redis_hello, redis_subscribe, redis_publish, redis_next },
    { "mqtt", mqtt_hello, mqtt_subscribe, mqtt_publish, mqtt_next },
    { "floor", NULL, NULL, floor_publish, floor_next },
};

/* The sequence number at the start of a delivered payload, after the
 * checks a client makes: the topic it subscribed to (the floor has none)
 * and the payload size.  -1 when either is wrong. */
static long msg_seq(const struct msg *m, const char *topic, size_t size)
{
    if (m->topic && (m->tlen != strlen(topic) || memcmp(m->topic, topic, m->tlen) != 0)) return -1;
    if (m->plen != size || size < SEQ_DIGITS) return -1;
    long v = 0;
    for (int i = 0; i < SEQ_DIGITS; i++) {
        if (m->payload[i] < '0' || m->payload[i] > '9') return -1;
        v = v * 10 + (m->payload[i] - '0');
    }
    return v;
}

static void make_payload(char *p, long seq)
{
    for (int i = SEQ_DIGITS - 1; i >= 0; i--) { p[i] = (char)('0' + seq % 10); seq /= 10; }
}

static int peer_connect(const struct peer *pr, const char *who)
{
    int fd = dial(g_addr);
    if (pr->hello) pr->hello(fd, who);
    return fd;
}

/* Reads and discards whatever the broker sends a publisher (Redis answers
 * every PUBLISH with an integer), without blocking. */
static void drain_nonblocking(int fd)
{
    char tmp[65536];
    if (fd < 65536 && g_ssl[fd]) return;   /* lexbus sends publishers nothing */
    while (recv(fd, tmp, sizeof tmp, MSG_DONTWAIT) > 0) {}
}

/* ------------------------------------------------------------------ */
/* Workload: stream / fanout (one publisher, S subscribers in P        */
/* processes)                                                          */

/* Progress, subscriber process -> publisher: every message that all of
 * the process's subscribers have.  16 bytes: one atomic pipe write. */
struct progress { int32_t proc, pad; int64_t slowest; };

/* Result, subscriber process -> coordinator. */
struct sub_result { int32_t proc, pad; double got, errors, t_first, t_last; };

struct sub { int fd; struct rbuf r; long next; };

/* Messages allowed in flight in blast mode: WINDOW_BYTES across all subscribers. */
static long window_msgs(const struct peer *pr, size_t size, int subs)
{
    char *tmp = malloc(size + 1024), *payload = calloc(1, size + 1);
    size_t msg_bytes = pr->publish(tmp, TOPIC, payload, size);
    free(tmp);
    free(payload);
    long w = (long)(WINDOW_BYTES / (msg_bytes * (size_t)subs));
    return w < 64 ? 64 : w;
}

/* Sends n messages, never more than `window` ahead of the slowest
 * subscriber (the minimum over the subscriber processes' reports). */
static void publisher(const struct peer *pr, int fd, long n, size_t size, int progress_fd, long window, int procs)
{
    char *batch = malloc(g_batch + size + 8192), *payload = malloc(size + 1);
    long *done = calloc((size_t)procs, sizeof *done);
    struct progress in[256];
    memset(payload, 'x', size);
    size_t msg_bytes = pr->publish(batch, TOPIC, payload, size);
    long sent = 0, acked = 0;
    while (sent < n) {
        while (sent - acked >= window) {
            ssize_t k = read(progress_fd, in, sizeof in);
            if (k < 0 && errno == EINTR) continue;
            if (k <= 0) die("subscriber went away");
            for (size_t i = 0; i < (size_t)k / sizeof *in; i++)
                if (in[i].slowest > done[in[i].proc]) done[in[i].proc] = in[i].slowest;
            acked = n;
            for (int i = 0; i < procs; i++) if (done[i] < acked) acked = done[i];
        }
        size_t bl = 0;
        while (sent < n && (bl == 0 || bl + msg_bytes <= g_batch) && sent - acked < window) {
            make_payload(payload, sent);
            bl += pr->publish(batch + bl, TOPIC, payload, size);
            sent++;
        }
        write_all(fd, batch, bl);
        drain_nonblocking(fd);
    }
    free(done);
    free(batch);
    free(payload);
}

/* One subscriber process: reads and parses every delivery on its
 * connections until all n arrived on each, or nothing came for QUIET_MS. */
static void subscriber_proc(const struct peer *pr, int proc, struct sub *s, int nsubs, long n, size_t size,
                            long window, int progress_fd, int result_fd)
{
    struct pollfd *pf = calloc((size_t)nsubs, sizeof *pf);
    for (int i = 0; i < nsubs; i++) { pf[i].fd = s[i].fd; pf[i].events = POLLIN; }
    long total = 0, want = n * nsubs, reported = 0, errors = 0;
    long step = window / 8 > 0 ? window / 8 : 1;
    double t_first = 0, t_last = 0;
    while (total < want) {
        int k = poll(pf, (nfds_t)nsubs, QUIET_MS);
        if (k <= 0) {
            /* The broker dropped messages: report the loss, do not hang. */
            fprintf(stderr, "lbbench: %s: nothing for %d ms, %ld of %ld delivered\n", pr->name, QUIET_MS, total, want);
            break;
        }
        long before = total;
        for (int i = 0; i < nsubs; i++) {
            if (!(pf[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            if (rb_fill(&s[i].r, s[i].fd) <= 0) die("%s: subscriber %d disconnected after %ld", pr->name, i, s[i].next);
            size_t off = 0, m;
            struct msg msg;
            while ((m = pr->next(s[i].r.b + off, s[i].r.len - off, &msg))) {
                off += m;
                if (!msg.payload) continue;
                long seq = msg_seq(&msg, TOPIC, size);
                if (seq != s[i].next) errors++;
                s[i].next = seq + 1;
                total++;
            }
            rb_consume(&s[i].r, off);
        }
        if (total > before) {
            t_last = now_s();
            if (!t_first) t_first = t_last;
        }
        long slowest = n;
        for (int i = 0; i < nsubs; i++) if (s[i].next < slowest) slowest = s[i].next;
        if (slowest - reported >= step || (slowest == n && reported != n)) {
            struct progress p = { proc, 0, slowest };
            write_all(progress_fd, &p, sizeof p);
            reported = slowest;
        }
    }
    struct sub_result r = { proc, 0, (double)total, (double)errors, t_first, t_last };
    write_all(result_fd, &r, sizeof r);
    free(pf);
}

static void run_stream(const struct peer *pr, long n, size_t size, int nsubs, int procs, long fc_window)
{
    int prog[2], res[2], ready[2], fl[2] = { -1, -1 };
    if (pipe(prog) || pipe(res) || pipe(ready)) die("pipe");
    if (size < SEQ_DIGITS) die("SIZE must be at least %d", SEQ_DIGITS);
    if (procs < 1) procs = 1;
    if (procs > nsubs) procs = nsubs;
    if (procs > 256) die("at most 256 subscriber processes");
    bool is_floor = strcmp(pr->name, "floor") == 0;
    if (is_floor && nsubs != 1) die("floor supports one subscriber");
    if (is_floor && socketpair(AF_UNIX, SOCK_STREAM, 0, fl)) die("socketpair");
    long window = fc_window > 0 ? fc_window : window_msgs(pr, size, nsubs);
    pid_t *subpid = calloc((size_t)procs, sizeof *subpid);
    for (int k = 0; k < procs; k++) {
        if ((subpid[k] = fork_child())) continue;
        close(ready[0]);
        close(res[0]);
        close(prog[0]);
        int first = k * nsubs / procs, cnt = (k + 1) * nsubs / procs - first;
        struct sub *s = calloc((size_t)cnt, sizeof *s);
        for (int i = 0; i < cnt; i++) {
            char who[64];
            snprintf(who, sizeof who, "bench-sub-%d", first + i);
            s[i].fd = is_floor ? fl[1] : peer_connect(pr, who);
            s[i].r.b = malloc(RBUF);
            if (!is_floor) pr->subscribe(s[i].fd, &s[i].r, TOPIC);
        }
        char one = 1;
        write_all(ready[1], &one, 1);
        close(ready[1]);
        subscriber_proc(pr, k, s, cnt, n, size, window, prog[1], res[1]);
        _exit(0);
    }
    /* Only the subscriber processes keep the write ends: if they all go,
     * the reads below see the end instead of waiting for ever. */
    close(prog[1]);
    close(res[1]);
    close(ready[1]);
    for (int k = 0; k < procs; k++) { char one; read_all(ready[0], &one, 1, "subscriber did not start"); }
    close(ready[0]);
    double srv0 = server_cpu_s(), m0 = bc_machine_busy_s(), w0 = now_s();
    pid_t pub = fork_child();
    if (pub == 0) {
        close(res[0]);
        int fd = is_floor ? fl[0] : peer_connect(pr, "bench-pub");
        publisher(pr, fd, n, size, prog[0], window, procs);
        pause();
        _exit(0);
    }
    close(prog[0]);
    double got = 0, errors = 0, t_first = 0, t_last = 0;
    for (int k = 0; k < procs; k++) {
        struct sub_result r;
        read_all(res[0], &r, sizeof r, "subscriber result");
        got += r.got;
        errors += r.errors;
        if (r.t_first && (!t_first || r.t_first < t_first)) t_first = r.t_first;
        if (r.t_last > t_last) t_last = r.t_last;
    }
    double srv1 = server_cpu_s(), m1 = bc_machine_busy_s(), wall = (t_last ? t_last : now_s()) - w0;
    double pub_cpu = reap(pub, true), sub_cpu = 0, sub_max = 0;
    for (int k = 0; k < procs; k++) {
        double c = reap(subpid[k], false);
        sub_cpu += c;
        if (c > sub_max) sub_max = c;
    }
    double secs = t_last - t_first;
    const char *workload = nsubs > 1 ? (fc_window > 0 ? "fanout-fc" : "fanout") : (fc_window > 0 ? "stream-fc" : "stream");
    printf("{\"peer\":\"%s\",\"workload\":\"%s\",\"messages\":%ld,\"size\":%zu,\"subscribers\":%d,\"sub_procs\":%d,"
           "\"window\":%ld,\"batch\":%zu,\"delivered\":%.0f,\"seconds\":%.4f,\"msgs_per_s\":%.0f,\"mb_per_s\":%.2f,"
           "\"order_errors\":%.0f,\"lost\":%.0f",
           g_tls ? "lexbus-tls" : pr->name, workload, n, size, nsubs, procs, window, g_batch, got, secs,
           secs > 0 ? got / secs : 0, secs > 0 ? got * (double)size / secs / 1e6 : 0, errors, (double)n * nsubs - got);
    double srv_cpu = srv0 < 0 ? -1 : srv1 - srv0;
    bc_put_pct("server_cpu_pct", srv_cpu, wall);
    bc_put_pct("pub_cpu_pct", pub_cpu, wall);
    bc_put_pct("sub_cpu_pct", sub_cpu, wall);
    bc_put_pct("sub_cpu_max_pct", sub_max, wall);
    put_other(m1 - m0, srv_cpu + pub_cpu + sub_cpu, wall);
    /* The same as CPU time per delivered message. */
    if (srv_cpu >= 0 && got > 0) printf(",\"server_ns_per_msg\":%.0f", srv_cpu * 1e9 / got);
    if (got > 0) printf(",\"pub_ns_per_msg\":%.0f,\"sub_ns_per_msg\":%.0f", pub_cpu * 1e9 / got, sub_cpu * 1e9 / got);
    printf(",\"wall_seconds\":%.4f,\"cpus\":%d}\n", wall, cpus_allowed());
    free(subpid);
}

/* ------------------------------------------------------------------ */
/* Workload: rtt (sequential request/reply)                            */
/* Every request carries its sequence number; the responder parses the */
/* request and echoes its payload, the caller parses the reply and      */
/* checks that it answers this request.                                 */

#define RTT_SIZE 16

struct rtt_out { long lost, errors; double responder_cpu, server_cpu; };

static int cmpd(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Waits for one complete message in r (parsed by `next`); false on timeout. */
static bool rtt_wait(int fd, struct rbuf *r, const struct peer *pr, struct msg *m, size_t *mlen)
{
    for (;;) {
        while ((*mlen = pr->next(r->b, r->len, m))) {
            if (m->payload) return true;
            rb_consume(r, *mlen);
        }
        ssize_t k = rb_fill(r, fd);
        if (k < 0) return false;
        if (k == 0) die("%s rtt: connection closed", pr->name);
    }
}

static pid_t rtt_lexbus_responder(void)
{
    int fd = peer_connect(&peers[0], "bench-echo");
    pid_t pid = fork_child();
    if (pid) { close(fd); return pid; }
    struct rbuf r = { malloc(RBUF), 0 };
    char out[512];
    for (;;) {
        if (rb_fill(&r, fd) <= 0) _exit(0);
        size_t m;
        while ((m = lx_frame(r.b, r.len))) {
            struct envelope e;
            lx_scan(&e, r.b, m);
            const struct env_val *id = &e.f[F_ID], *params = &e.f[F_PARAMS];
            if (e.type == LB_MSG_CALL) {
                if (id->kind != J_STRING || params->kind != J_STRING || id->n > 200 || params->n > 200)
                    die("lexbus rtt: unexpected CALL");
                int k = sprintf(out + 4, "{\"type\":\"RESPONSE\",\"id\":\"%.*s\",\"status\":\"success\",\"data\":\"%.*s\"}",
                                (int)id->n, id->p, (int)params->n, params->p);
                uint32_t be = htonl((uint32_t)k);
                memcpy(out, &be, 4);
                write_all(fd, out, 4 + (size_t)k);
            }
            rb_consume(&r, m);
        }
    }
}

/* CALL id "r<i>" to the responder, params the sequence; the RESPONSE must
 * carry the same id, status success and the params echoed as data. */
static void rtt_lexbus(long n, long warm, double *lat, struct rtt_out *o)
{
    pid_t pid = rtt_lexbus_responder();
    int c = peer_connect(&peers[0], "bench-caller");
    set_quiet_timeout(c);
    struct rbuf r = { malloc(RBUF), 0 };
    char out[512], payload[RTT_SIZE + 1] = "0000000000abcdef", want_id[32];
    double srv0 = server_cpu_s();
    long i;
    for (i = 0; i < n + warm; i++) {
        make_payload(payload, i);
        int idn = snprintf(want_id, sizeof want_id, "r%ld", i);
        int k = sprintf(out + 4, "{\"type\":\"CALL\",\"id\":\"%s\",\"to\":\"bench-echo\",\"method\":\"echo\",\"params\":\"%s\"}",
                        want_id, payload);
        uint32_t be = htonl((uint32_t)k);
        memcpy(out, &be, 4);
        double t = now_s();
        write_all(c, out, 4 + (size_t)k);
        size_t m;
        for (;;) {
            while (!(m = lx_frame(r.b, r.len))) {
                ssize_t got = rb_fill(&r, c);
                if (got < 0) goto lost;
                if (got == 0) die("lexbus rtt: closed");
            }
            struct envelope e;
            lx_scan(&e, r.b, m);
            if (e.type == LB_MSG_RESPONSE) {
                struct msg msg = { NULL, e.f[F_DATA].p, 0, e.f[F_DATA].kind == J_STRING ? e.f[F_DATA].n : 0 };
                if (!env_str_eq(&e.f[F_ID], want_id, (size_t)idn) || !env_str_eq(&e.f[F_STATUS], "success", 7) ||
                    msg_seq(&msg, "", RTT_SIZE) != i)
                    o->errors++;
                rb_consume(&r, m);
                break;
            }
            rb_consume(&r, m);
        }
        if (i >= warm) lat[i - warm] = (now_s() - t) * 1e6;
    }
lost:
    o->lost = n + warm - i;
    double srv1 = server_cpu_s();
    o->server_cpu = srv0 < 0 ? -1 : srv1 - srv0;
    o->responder_cpu = reap(pid, true);
    free(r.b);
}

/* Ping-pong over two topics for the pub/sub brokers (NATS, Redis, MQTT):
 * the responder echoes each `ping` payload to `pong`.  Redis needs a
 * second connection per side to publish while subscribed. */
static pid_t rtt_pubsub_responder(const struct peer *pr)
{
    bool redis = strcmp(pr->name, "redis") == 0;
    int ready[2];
    if (pipe(ready)) die("pipe");
    pid_t pid = fork_child();
    if (pid) {
        char one;
        read_all(ready[0], &one, 1, "responder did not start");
        close(ready[0]);
        close(ready[1]);
        return pid;
    }
    int sub = peer_connect(pr, "bench-echo-sub"), pub = redis ? peer_connect(pr, "bench-echo-pub") : sub;
    struct rbuf r = { malloc(RBUF), 0 };
    pr->subscribe(sub, &r, "ping");
    char one = 1, out[512];
    write_all(ready[1], &one, 1);
    for (;;) {
        size_t m;
        struct msg msg;
        while ((m = pr->next(r.b, r.len, &msg))) {
            if (msg.payload) {
                if (msg.plen > 256 || msg.tlen != 4 || memcmp(msg.topic, "ping", 4) != 0) die("%s rtt: unexpected message", pr->name);
                write_all(pub, out, pr->publish(out, "pong", msg.payload, msg.plen));
            }
            rb_consume(&r, m);
        }
        if (redis) drain_nonblocking(pub);
        if (rb_fill(&r, sub) <= 0) _exit(0);
    }
}

static void rtt_pubsub(const struct peer *pr, long n, long warm, double *lat, struct rtt_out *o)
{
    bool redis = strcmp(pr->name, "redis") == 0;
    pid_t pid = rtt_pubsub_responder(pr);
    int sub = peer_connect(pr, "bench-caller-sub"), pub = redis ? peer_connect(pr, "bench-caller-pub") : sub;
    struct rbuf r = { malloc(RBUF), 0 };
    pr->subscribe(sub, &r, "pong");
    set_quiet_timeout(sub);
    char out[512], payload[RTT_SIZE + 1] = "0000000000abcdef";
    double srv0 = server_cpu_s();
    long i;
    for (i = 0; i < n + warm; i++) {
        make_payload(payload, i);
        size_t ol = pr->publish(out, "ping", payload, RTT_SIZE), m;
        double t = now_s();
        write_all(pub, out, ol);
        struct msg msg;
        if (!rtt_wait(sub, &r, pr, &msg, &m)) break;
        if (msg_seq(&msg, "pong", RTT_SIZE) != i) o->errors++;
        rb_consume(&r, m);
        if (redis) drain_nonblocking(pub);
        if (i >= warm) lat[i - warm] = (now_s() - t) * 1e6;
    }
    o->lost = n + warm - i;
    double srv1 = server_cpu_s();
    o->server_cpu = srv0 < 0 ? -1 : srv1 - srv0;
    o->responder_cpu = reap(pid, true);
    free(r.b);
}

/* The relay floor: a process that only copies bytes between two sockets.
 * A round trip through any broker crosses it twice (caller -> broker ->
 * responder -> broker -> caller), so this is what a broker that did no
 * work at all would cost: the fair floor for lexbus's RTT. */
static pid_t start_relay(int a, int b)
{
    pid_t pid = fork_child();
    if (pid) return pid;
    struct pollfd pf[2] = { { a, POLLIN, 0 }, { b, POLLIN, 0 } };
    char buf[65536];
    for (;;) {
        if (poll(pf, 2, -1) < 0) _exit(0);
        for (int i = 0; i < 2; i++) {
            if (!(pf[i].revents & (POLLIN | POLLHUP))) continue;
            ssize_t k = read(pf[i].fd, buf, sizeof buf);
            if (k <= 0) _exit(0);
            write_all(pf[1 - i].fd, buf, (size_t)k);
        }
    }
}

static bool g_relay;   /* rtt through the relay floor */

static void rtt_floor(long n, long warm, double *lat, struct rtt_out *o)
{
    const struct peer *pr = &peers[4];
    int sv[2], rv[2] = { -1, -1 };
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv)) die("socketpair");
    pid_t relay = 0;
    if (g_relay) {
        /* caller sv[0] <-> relay sv[1] ... relay rv[0] <-> responder rv[1] */
        if (socketpair(AF_UNIX, SOCK_STREAM, 0, rv)) die("socketpair");
        relay = start_relay(sv[1], rv[0]);
        sv[1] = rv[1];
    }
    char out[64], payload[RTT_SIZE + 1] = "0000000000abcdef";
    pid_t pid = fork_child();
    if (pid == 0) {
        struct rbuf r = { malloc(RBUF), 0 };
        for (;;) {
            size_t m;
            struct msg msg;
            while ((m = floor_next(r.b, r.len, &msg))) {
                if (msg.plen > 32) die("floor rtt: unexpected message");
                write_all(sv[1], out, floor_publish(out, NULL, msg.payload, msg.plen));
                rb_consume(&r, m);
            }
            if (rb_fill(&r, sv[1]) <= 0) _exit(0);
        }
    }
    struct rbuf r = { malloc(RBUF), 0 };
    set_quiet_timeout(sv[0]);
    long i;
    for (i = 0; i < n + warm; i++) {
        make_payload(payload, i);
        size_t ol = floor_publish(out, NULL, payload, RTT_SIZE), m;
        double t = now_s();
        write_all(sv[0], out, ol);
        struct msg msg;
        if (!rtt_wait(sv[0], &r, pr, &msg, &m)) break;
        if (msg_seq(&msg, "", RTT_SIZE) != i) o->errors++;
        rb_consume(&r, m);
        if (i >= warm) lat[i - warm] = (now_s() - t) * 1e6;
    }
    o->lost = n + warm - i;
    o->responder_cpu = reap(pid, true);
    o->server_cpu = relay ? reap(relay, true) : -1;
    free(r.b);
}

static void run_rtt(const struct peer *pr, long n)
{
    long warm = n / 10 > 1000 ? 1000 : n / 10;
    double *lat = calloc((size_t)n, sizeof *lat);
    struct rtt_out o = { 0, 0, -1, -1 };
    double cpu0 = bc_self_s(), m0 = bc_machine_busy_s(), t0 = now_s();
    if (strcmp(pr->name, "lexbus") == 0) rtt_lexbus(n, warm, lat, &o);
    else if (strcmp(pr->name, "floor") == 0) rtt_floor(n, warm, lat, &o);
    else rtt_pubsub(pr, n, warm, lat, &o);
    double caller_cpu = bc_self_s() - cpu0, wall = now_s() - t0, m1 = bc_machine_busy_s();
    long done = n + warm - o.lost, measured = done > warm ? done - warm : 0;
    if (measured == 0) measured = 1, lat[0] = 0;
    qsort(lat, (size_t)measured, sizeof *lat, cmpd);
    int cpus = cpus_allowed();
    printf("{\"peer\":\"%s\",\"workload\":\"rtt\",\"round_trips\":%ld,\"pinned\":%s,\"cpus\":%d,\"p50_us\":%.1f,"
           "\"p90_us\":%.1f,\"p99_us\":%.1f,\"p999_us\":%.1f,\"lost\":%ld,\"order_errors\":%ld",
           g_tls ? "lexbus-tls" : g_relay ? "relay" : pr->name, n, cpus == 1 ? "true" : "false", cpus,
           lat[measured / 2], lat[measured * 9 / 10], lat[measured * 99 / 100], lat[measured * 999 / 1000], o.lost, o.errors);
    /* CPU per round trip, warm-up included (it is a tenth of the run). */
    double per = 1e6 / (double)(done ? done : 1);
    printf(",\"server_cpu_us_per_rt\":");
    if (o.server_cpu < 0) printf("null"); else printf("%.2f", o.server_cpu * per);
    printf(",\"caller_cpu_us_per_rt\":%.2f,\"responder_cpu_us_per_rt\":%.2f", caller_cpu * per, o.responder_cpu * per);
    bc_put_pct("server_cpu_pct", o.server_cpu, wall);
    put_other(m1 - m0, caller_cpu + o.responder_cpu + (o.server_cpu > 0 ? o.server_cpu : 0), wall);
    printf("}\n");
    free(lat);
}

/* ------------------------------------------------------------------ */
/* Workload: idle (lexbus: resident memory per registered connection)  */

static long rss_kib(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) die("cannot read %s", path);
    long v = -1;
    while (fgets(line, sizeof line, f)) if (sscanf(line, "VmRSS: %ld", &v) == 1) break;
    fclose(f);
    return v;
}

static void run_idle(long n, pid_t daemon_pid)
{
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    if ((long)rl.rlim_cur < n + 64) die("open-files limit %ld is below %ld connections", (long)rl.rlim_cur, n);
    long before = rss_kib(daemon_pid), registered = 0;
    int *fds = calloc((size_t)n, sizeof *fds);
    char msg[256];
    for (long i = 0; i < n; i++) {
        fds[i] = dial(g_addr);
        snprintf(msg, sizeof msg, "{\"type\":\"REGISTER\",\"serviceName\":\"idle-%ld\",\"methods\":[\"m\"],\"subscribe\":[\"idle:%ld\"]}", i, i);
        lx_send(fds[i], msg);
    }
    struct rbuf r = { malloc(RBUF), 0 };
    for (long i = 0; i < n; i++) {
        r.len = 0;
        size_t m;
        set_quiet_timeout(fds[i]);
        while (!(m = lx_frame(r.b, r.len))) if (rb_fill(&r, fds[i]) <= 0) die("idle: no answer to REGISTER %ld", i);
        struct envelope e;
        lx_scan(&e, r.b, m);
        registered += e.type == LB_MSG_REGISTER_ACK;
    }
    usleep(300000);
    long after = rss_kib(daemon_pid);
    printf("{\"peer\":\"lexbus\",\"workload\":\"idle\",\"connections\":%ld,\"registered\":%ld,\"lost\":%ld,"
           "\"rss_before_kib\":%ld,\"rss_after_kib\":%ld,\"kib_per_connection\":%.2f}\n",
           n, registered, n - registered, before, after, (double)(after - before) / (double)n);
    for (long i = 0; i < n; i++) close(fds[i]);
    free(fds);
    free(r.b);
}

/* Takes --window, --procs and --server-pid out of argv (anywhere after
 * the peer); returns the count of what is left. */
static int take_options(int argc, char **argv, long *window, int *procs)
{
    int out = 1;
    for (int i = 1; i < argc; i++) {
        bool opt = i + 1 < argc && strncmp(argv[i], "--", 2) == 0;
        if (opt && !strcmp(argv[i], "--window")) *window = atol(argv[++i]);
        else if (opt && !strcmp(argv[i], "--procs")) *procs = atoi(argv[++i]);
        else if (opt && !strcmp(argv[i], "--server-pid")) g_server_pid = (pid_t)atol(argv[++i]);
        else if (opt && !strcmp(argv[i], "--batch")) g_batch = (size_t)atol(argv[++i]);
        else if (!strncmp(argv[i], "--", 2)) die("unknown option %s", argv[i]);
        else argv[out++] = argv[i];
    }
    if (*window < 0 || *procs < 1 || g_batch < 1 || g_batch > BATCH) die("bad --window, --procs or --batch");
    return out;
}

int main(int argc, char **argv)
{
    long window = 0;
    int procs = 1;
    argc = take_options(argc, argv, &window, &procs);
    if (argc < 4) {
        fprintf(stderr, "usage: lbbench PEER ADDRESS stream N SIZE | fanout N SIZE SUBS | rtt N | idle N DAEMON_PID\n"
                        "               [--window W] [--procs P] [--server-pid PID]\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    const struct peer *pr = NULL;
    const char *pname = argv[1];
    if (!strcmp(pname, "lexbus-tls")) { g_tls = true; pname = "lexbus"; }
    if (!strcmp(pname, "relay")) { g_relay = true; pname = "floor"; }
    for (size_t i = 0; i < sizeof peers / sizeof *peers; i++)
        if (strcmp(peers[i].name, pname) == 0) pr = &peers[i];
    if (!pr) die("unknown peer %s", argv[1]);
    g_addr = argv[2];
    const char *w = argv[3];
    if (!strcmp(w, "stream") && argc == 6) run_stream(pr, atol(argv[4]), (size_t)atol(argv[5]), 1, 1, window);
    else if (!strcmp(w, "fanout") && argc == 7) run_stream(pr, atol(argv[4]), (size_t)atol(argv[5]), atoi(argv[6]), procs, window);
    else if (!strcmp(w, "rtt") && argc == 5) run_rtt(pr, atol(argv[4]));
    else if (!strcmp(w, "idle") && argc == 6) run_idle(atol(argv[4]), (pid_t)atol(argv[5]));
    else die("bad workload arguments");
    return 0;
}
