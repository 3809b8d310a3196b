/*
 * lbbench: one load generator for lexbus and the brokers people would pick
 * instead (NATS, Redis pub/sub, MQTT/Mosquitto), plus the floor (a bare Unix
 * socket between two processes).  Every peer is driven the same way, with a
 * hand-written client for its wire protocol, so no client library's speed
 * decides the result:
 *   - publishers batch messages into 64 KiB writes;
 *   - subscribers read 256 KiB at a time and parse in place;
 *   - a window (bytes in flight between publisher and subscriber, reported
 *     through a pipe) keeps every broker inside its buffer limits, so no peer
 *     drops messages; every message carries a sequence number and the
 *     subscriber checks count and order (zero loss is checked, not assumed).
 *
 *   lbbench PEER ADDRESS WORKLOAD [options]
 *     PEER      lexbus | lexbus-tls | nats | redis | mqtt | floor | relay (rtt only:
 *               the floor with a byte-copying process in the middle)
 *     ADDRESS   unix:/path or tcp:host:port (floor: ignored)
 *     WORKLOAD  stream N SIZE | rtt N | fanout N SIZE SUBS | idle N (lexbus only)
 *   Prints one JSON object with the figures.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
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

#define SEQ_DIGITS 10
#define BATCH (64 * 1024)
#define RBUF (256 * 1024)
#define WINDOW_BYTES (16 * 1024 * 1024)

static const char *g_addr;
static bool g_tls;                 /* lexbus-tls: TLS on the TCP socket */
static SSL_CTX *g_ssl_ctx;
static SSL *g_ssl[65536];          /* by file descriptor */

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

/* A growable read buffer with in-place parsing. */
struct rbuf { char *b; size_t len; };

static ssize_t rb_fill(struct rbuf *r, int fd)
{
    if (r->len == RBUF) die("message larger than the read buffer");
    ssize_t n = io_read(fd, r->b + r->len, RBUF - r->len);
    if (n > 0) r->len += (size_t)n;
    return n;
}

static void rb_consume(struct rbuf *r, size_t n)
{
    memmove(r->b, r->b + n, r->len - n);
    r->len -= n;
}

/* ------------------------------------------------------------------ */
/* Peers: handshake, subscribe, encode a publish, parse deliveries.    */

struct peer {
    const char *name;
    void (*hello)(int fd, const char *who);
    void (*subscribe)(int fd, struct rbuf *r, const char *topic);
    size_t (*publish)(char *out, const char *topic, const char *payload, size_t plen);
    /* Finds one complete delivery at the head of buf; returns its length
     * (0: incomplete) and sets *payload / *plen (plen may be 0 if unknown). */
    size_t (*next)(const char *buf, size_t len, const char **payload, size_t *plen);
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

/* --- lexbus: 4-byte length + JSON --- */
static size_t lx_frame(const char *b, size_t len)
{
    if (len < 4) return 0;
    uint32_t n;
    memcpy(&n, b, 4);
    n = ntohl(n);
    return len >= 4 + (size_t)n ? 4 + n : 0;
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

static size_t lx_next(const char *b, size_t len, const char **payload, size_t *plen)
{
    size_t n = lx_frame(b, len);
    if (!n) return 0;
    /* EVENT frames end with "payload":"<payload>"} */
    *payload = b + n - 2;
    *plen = 0;   /* the caller steps back by the known payload size */
    return n;
}

/* --- NATS text protocol --- */
static size_t line_end(const char *b, size_t len)
{
    const char *e = memmem(b, len, "\r\n", 2);
    return e ? (size_t)(e - b) + 2 : 0;
}

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

static size_t nats_next(const char *b, size_t len, const char **payload, size_t *plen)
{
    for (;;) {
        size_t le = line_end(b, len);
        if (!le) return 0;
        if (le >= 4 && memcmp(b, "MSG ", 4) == 0) {
            /* MSG subject sid [reply] size */
            const char *sp = b + le - 3;
            while (sp > b && *sp != ' ') sp--;
            size_t size = strtoul(sp + 1, NULL, 10);
            if (len < le + size + 2) return 0;
            *payload = b + le;
            *plen = size;
            return le + size + 2;
        }
        /* PING/+OK/INFO from the server: not a delivery. Skip it. */
        *payload = NULL;
        *plen = 0;
        return le;
    }
}

/* --- Redis RESP --- */
static void redis_hello(int fd, const char *who) { (void)fd; (void)who; }

/* One RESP value of any kind at b; returns its length or 0 if incomplete. */
static size_t resp_value(const char *b, size_t len)
{
    size_t le = line_end(b, len);
    if (!le) return 0;
    if (b[0] == '$') {
        long n = strtol(b + 1, NULL, 10);
        if (n < 0) return le;
        return len >= le + (size_t)n + 2 ? le + (size_t)n + 2 : 0;
    }
    if (b[0] == '*') {
        long k = strtol(b + 1, NULL, 10);
        size_t off = le;
        for (long i = 0; i < k; i++) {
            size_t v = resp_value(b + off, len - off);
            if (!v) return 0;
            off += v;
        }
        return off;
    }
    return le;
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

static size_t redis_next(const char *b, size_t len, const char **payload, size_t *plen)
{
    size_t n = resp_value(b, len);
    if (!n) return 0;
    /* *3 $7 message $t topic $p payload: the payload is the last bulk. */
    const char *end = b + n - 2;
    const char *dollar = end;
    while (dollar > b && *dollar != '$') dollar--;
    size_t p = strtoul(dollar + 1, NULL, 10);
    *payload = end - p;
    *plen = p;
    return n;
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

/* Packet length at b (fixed header included) or 0 if incomplete. */
static size_t mqtt_packet(const char *b, size_t len)
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
    return len >= i + v ? i + v : 0;
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

static size_t mqtt_next(const char *b, size_t len, const char **payload, size_t *plen)
{
    size_t n = mqtt_packet(b, len);
    if (!n) return 0;
    if (((unsigned char)b[0] & 0xF0) != 0x30) { *payload = NULL; *plen = 0; return n; }
    *payload = b + n;   /* the payload runs to the end of the packet */
    *plen = 0;
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

static size_t floor_next(const char *b, size_t len, const char **payload, size_t *plen)
{
    size_t n = lx_frame(b, len);
    if (!n) return 0;
    *payload = b + n;
    *plen = 0;
    return n;
}

static const struct peer peers[] = {
    { "lexbus", lx_hello, lx_subscribe, lx_publish, lx_next },
    { "nats", nats_hello, nats_subscribe, nats_publish, nats_next },
    { "redis", redis_hello, redis_subscribe, redis_publish, redis_next },
    { "mqtt", mqtt_hello, mqtt_subscribe, mqtt_publish, mqtt_next },
    { "floor", NULL, NULL, floor_publish, floor_next },
};

/* The payload's first SEQ_DIGITS bytes are the sequence number.  Peers
 * that deliver the payload at the end of the message report its end. */
static long payload_seq(const char *payload, size_t plen, size_t size)
{
    const char *p = plen ? payload : payload - size;
    long v = 0;
    for (int i = 0; i < SEQ_DIGITS; i++) {
        if (p[i] < '0' || p[i] > '9') return -1;
        v = v * 10 + (p[i] - '0');
    }
    return v;
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
/* Workload: stream (one publisher, S subscribers)                     */

static void make_payload(char *p, long seq)
{
    for (int i = SEQ_DIGITS - 1; i >= 0; i--) { p[i] = (char)('0' + seq % 10); seq /= 10; }
}

/* Messages allowed in flight: WINDOW_BYTES across all subscribers. */
static long window_msgs(const struct peer *pr, size_t size, int subs)
{
    char *tmp = malloc(size + 1024), *payload = calloc(1, size + 1);
    size_t msg_bytes = pr->publish(tmp, "bench.x", payload, size);
    free(tmp);
    free(payload);
    long w = (long)(WINDOW_BYTES / (msg_bytes * (size_t)subs));
    return w < 64 ? 64 : w;
}

static void publisher(const struct peer *pr, int fd, long n, size_t size, int progress_fd, long window)
{
    char *batch = malloc(BATCH + size + 8192), *payload = malloc(size + 1);
    memset(payload, 'x', size);
    size_t msg_bytes = pr->publish(batch, "bench.x", payload, size);
    long sent = 0, acked = 0;
    while (sent < n) {
        while (sent - acked >= window) {
            long got;
            if (read(progress_fd, &got, sizeof got) != sizeof got) die("subscriber went away");
            if (got > acked) acked = got;
        }
        size_t bl = 0;
        while (sent < n && bl + msg_bytes <= BATCH && sent - acked < window) {
            make_payload(payload, sent);
            bl += pr->publish(batch + bl, "bench.x", payload, size);
            sent++;
        }
        write_all(fd, batch, bl);
        drain_nonblocking(fd);
    }
    free(batch);
    free(payload);
}

struct sub { int fd; struct rbuf r; long next; };

static void subscribers(const struct peer *pr, struct sub *s, int nsubs, long n, size_t size,
                        long window, int progress_fd, int result_fd)
{
    struct pollfd *pf = calloc((size_t)nsubs, sizeof *pf);
    for (int i = 0; i < nsubs; i++) { pf[i].fd = s[i].fd; pf[i].events = POLLIN; }
    long total = 0, want = n * nsubs, reported = 0, errors = 0;
    long step = window / 8 > 0 ? window / 8 : 1;
    double t0 = 0;
    while (total < want) {
        int k = poll(pf, (nfds_t)nsubs, 5000);
        if (k <= 0) {
            /* The broker dropped messages: report the loss, do not hang. */
            fprintf(stderr, "lbbench: %s: nothing for 5 s, %ld of %ld delivered\n", pr->name, total, want);
            break;
        }
        if (!t0) t0 = now_s();
        for (int i = 0; i < nsubs; i++) {
            if (!(pf[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            if (rb_fill(&s[i].r, s[i].fd) <= 0) die("%s: subscriber %d disconnected after %ld", pr->name, i, s[i].next);
            size_t off = 0;
            for (;;) {
                const char *p;
                size_t plen;
                size_t m = pr->next(s[i].r.b + off, s[i].r.len - off, &p, &plen);
                if (!m) break;
                off += m;
                if (!p) continue;
                long seq = payload_seq(p, plen, size);
                if (seq != s[i].next) errors++;
                s[i].next = seq + 1;
                total++;
            }
            rb_consume(&s[i].r, off);
        }
        /* Progress: the messages every subscriber has. */
        long slowest = n;
        for (int i = 0; i < nsubs; i++) if (s[i].next < slowest) slowest = s[i].next;
        if (slowest - reported >= step || slowest == n) {
            write_all(progress_fd, &slowest, sizeof slowest);
            reported = slowest;
        }
    }
    double dt = now_s() - t0 - (total < want ? 5.0 : 0.0);
    double res[3] = { (double)total, dt, (double)errors };
    write_all(result_fd, res, sizeof res);
    free(pf);
}

static void run_stream(const struct peer *pr, long n, size_t size, int nsubs)
{
    int prog[2], res[2], fl[2] = { -1, -1 };
    if (pipe(prog) || pipe(res)) die("pipe");
    struct sub *s = calloc((size_t)nsubs, sizeof *s);
    bool is_floor = strcmp(pr->name, "floor") == 0;
    if (is_floor) {
        if (nsubs != 1) die("floor supports one subscriber");
        if (socketpair(AF_UNIX, SOCK_STREAM, 0, fl)) die("socketpair");
        s[0].fd = fl[1];
    }
    for (int i = 0; i < nsubs && !is_floor; i++) {
        char who[64];
        snprintf(who, sizeof who, "bench-sub-%d", i);
        s[i].fd = peer_connect(pr, who);
    }
    for (int i = 0; i < nsubs; i++) {
        s[i].r.b = malloc(RBUF);
        if (!is_floor) pr->subscribe(s[i].fd, &s[i].r, "bench.x");
    }
    long window = window_msgs(pr, size, nsubs);
    pid_t pid = fork_child();
    if (pid == 0) {
        close(prog[1]);
        int fd = is_floor ? fl[0] : peer_connect(pr, "bench-pub");
        publisher(pr, fd, n, size, prog[0], window);
        pause();
        _exit(0);
    }
    close(prog[0]);
    subscribers(pr, s, nsubs, n, size, window, prog[1], res[1]);
    double r[3];
    if (read(res[0], r, sizeof r) != sizeof r) die("result");
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    printf("{\"peer\":\"%s\",\"workload\":\"%s\",\"messages\":%ld,\"size\":%zu,\"subscribers\":%d,"
           "\"delivered\":%.0f,\"seconds\":%.4f,\"msgs_per_s\":%.0f,\"mb_per_s\":%.2f,\"order_errors\":%.0f,\"lost\":%.0f}\n",
           g_tls ? "lexbus-tls" : pr->name, nsubs > 1 ? "fanout" : "stream", n, size, nsubs, r[0], r[1], r[0] / r[1],
           r[0] * (double)size / r[1] / 1e6, r[2], (double)n * nsubs - r[0]);
}

/* ------------------------------------------------------------------ */
/* Workload: rtt (sequential request/reply)                            */

static int cmpd(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* One request frame and "wait for the matching reply", per peer. */
static void rtt_lexbus(long n, long warm, double *lat)
{
    int resp = peer_connect(&peers[0], "bench-echo");
    pid_t pid = fork_child();
    if (pid == 0) {
        struct rbuf r = { malloc(RBUF), 0 };
        char out[512];
        for (;;) {
            if (rb_fill(&r, resp) <= 0) _exit(0);
            size_t m;
            while ((m = lx_frame(r.b, r.len))) {
                char *id = memmem(r.b, m, "\"id\":\"", 6);
                if (id) {
                    id += 6;
                    char *e = memchr(id, '"', (size_t)(r.b + m - id));
                    int k = sprintf(out + 4, "{\"type\":\"RESPONSE\",\"id\":\"%.*s\",\"status\":\"success\",\"data\":\"0123456789abcdef\"}",
                                    (int)(e - id), id);
                    uint32_t be = htonl((uint32_t)k);
                    memcpy(out, &be, 4);
                    write_all(resp, out, 4 + (size_t)k);
                }
                rb_consume(&r, m);
            }
        }
    }
    int c = peer_connect(&peers[0], "bench-caller");
    struct rbuf r = { malloc(RBUF), 0 };
    char out[512];
    for (long i = 0; i < n + warm; i++) {
        int k = sprintf(out + 4, "{\"type\":\"CALL\",\"id\":\"r%ld\",\"to\":\"bench-echo\",\"method\":\"echo\",\"params\":\"0123456789abcdef\"}", i);
        uint32_t be = htonl((uint32_t)k);
        memcpy(out, &be, 4);
        double t = now_s();
        write_all(c, out, 4 + (size_t)k);
        size_t m;
        while (!(m = lx_frame(r.b, r.len))) if (rb_fill(&r, c) <= 0) die("lexbus rtt: closed");
        if (!memmem(r.b, m, "\"success\"", 9)) die("lexbus rtt: error reply: %.*s", (int)m - 4, r.b + 4);
        rb_consume(&r, m);
        if (i >= warm) lat[i - warm] = (now_s() - t) * 1e6;
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    free(r.b);
}

/* Ping-pong over two topics for the pub/sub brokers (NATS, Redis, MQTT):
 * the responder echoes `ping` messages to `pong`.  Redis needs a second
 * connection per side to publish while subscribed. */
static void rtt_pubsub(const struct peer *pr, long n, long warm, double *lat)
{
    bool redis = strcmp(pr->name, "redis") == 0;
    const char payload[] = "0123456789abcdef";
    pid_t pid = fork_child();
    if (pid == 0) {
        int sub = peer_connect(pr, "bench-echo-sub"), pub = redis ? peer_connect(pr, "bench-echo-pub") : sub;
        struct rbuf r = { malloc(RBUF), 0 };
        pr->subscribe(sub, &r, "ping");
        char out[512];
        for (;;) {
            size_t m;
            const char *p;
            size_t plen;
            while ((m = pr->next(r.b, r.len, &p, &plen))) {
                if (p) write_all(pub, out, pr->publish(out, "pong", payload, sizeof payload - 1));
                rb_consume(&r, m);
            }
            if (redis) drain_nonblocking(pub);
            if (rb_fill(&r, sub) <= 0) _exit(0);
        }
    }
    int sub = peer_connect(pr, "bench-caller-sub"), pub = redis ? peer_connect(pr, "bench-caller-pub") : sub;
    struct rbuf r = { malloc(RBUF), 0 };
    pr->subscribe(sub, &r, "pong");
    usleep(200000);   /* let the responder subscribe */
    char out[512];
    size_t ol = pr->publish(out, "ping", payload, sizeof payload - 1);
    for (long i = 0; i < n + warm; i++) {
        double t = now_s();
        write_all(pub, out, ol);
        for (;;) {
            const char *p;
            size_t plen;
            size_t m = pr->next(r.b, r.len, &p, &plen);
            if (m) { rb_consume(&r, m); if (p) break; continue; }
            if (rb_fill(&r, sub) <= 0) die("%s rtt: closed", pr->name);
        }
        if (redis) drain_nonblocking(pub);
        if (i >= warm) lat[i - warm] = (now_s() - t) * 1e6;
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
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

static void rtt_floor(long n, long warm, double *lat)
{
    int sv[2], rv[2] = { -1, -1 };
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv)) die("socketpair");
    pid_t relay = 0;
    if (g_relay) {
        /* caller sv[0] <-> relay sv[1] ... relay rv[0] <-> responder rv[1] */
        if (socketpair(AF_UNIX, SOCK_STREAM, 0, rv)) die("socketpair");
        relay = start_relay(sv[1], rv[0]);
        sv[1] = rv[1];
    }
    char out[64];
    size_t ol = floor_publish(out, NULL, "0123456789abcdef", 16);
    pid_t pid = fork_child();
    if (pid == 0) {
        struct rbuf r = { malloc(RBUF), 0 };
        for (;;) {
            size_t m;
            while ((m = lx_frame(r.b, r.len))) { write_all(sv[1], out, ol); rb_consume(&r, m); }
            if (rb_fill(&r, sv[1]) <= 0) _exit(0);
        }
    }
    struct rbuf r = { malloc(RBUF), 0 };
    for (long i = 0; i < n + warm; i++) {
        double t = now_s();
        write_all(sv[0], out, ol);
        size_t m;
        while (!(m = lx_frame(r.b, r.len))) if (rb_fill(&r, sv[0]) <= 0) die("floor rtt: closed");
        rb_consume(&r, m);
        if (i >= warm) lat[i - warm] = (now_s() - t) * 1e6;
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    if (relay) { kill(relay, SIGKILL); waitpid(relay, NULL, 0); }
    free(r.b);
}

static void run_rtt(const struct peer *pr, long n)
{
    long warm = n / 10 > 1000 ? 1000 : n / 10;
    double *lat = calloc((size_t)n, sizeof *lat);
    if (strcmp(pr->name, "lexbus") == 0) rtt_lexbus(n, warm, lat);
    else if (strcmp(pr->name, "floor") == 0) rtt_floor(n, warm, lat);
    else rtt_pubsub(pr, n, warm, lat);
    qsort(lat, (size_t)n, sizeof *lat, cmpd);
    printf("{\"peer\":\"%s\",\"workload\":\"rtt\",\"round_trips\":%ld,\"p50_us\":%.1f,\"p90_us\":%.1f,"
           "\"p99_us\":%.1f,\"p999_us\":%.1f}\n", g_tls ? "lexbus-tls" : g_relay ? "relay" : pr->name, n, lat[n / 2], lat[n * 9 / 10],
           lat[n * 99 / 100], lat[n * 999 / 1000]);
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
    long before = rss_kib(daemon_pid);
    int *fds = calloc((size_t)n, sizeof *fds);
    char msg[256];
    for (long i = 0; i < n; i++) {
        fds[i] = dial(g_addr);
        snprintf(msg, sizeof msg, "{\"type\":\"REGISTER\",\"serviceName\":\"idle-%ld\",\"methods\":[\"m\"],\"subscribe\":[\"idle:%ld\"]}", i, i);
        lx_send(fds[i], msg);
    }
    struct rbuf r = { malloc(RBUF), 0 };
    for (long i = 0; i < n; i++) { r.len = 0; wait_reply(fds[i], &r, lx_frame); }
    usleep(300000);
    long after = rss_kib(daemon_pid);
    printf("{\"peer\":\"lexbus\",\"workload\":\"idle\",\"connections\":%ld,\"rss_before_kib\":%ld,"
           "\"rss_after_kib\":%ld,\"kib_per_connection\":%.2f}\n", n, before, after, (double)(after - before) / (double)n);
    for (long i = 0; i < n; i++) close(fds[i]);
    free(fds);
    free(r.b);
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: lbbench PEER ADDRESS stream N SIZE | rtt N | fanout N SIZE SUBS | idle N DAEMON_PID\n");
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
    if (!strcmp(w, "stream") && argc == 6) run_stream(pr, atol(argv[4]), (size_t)atol(argv[5]), 1);
    else if (!strcmp(w, "fanout") && argc == 7) run_stream(pr, atol(argv[4]), (size_t)atol(argv[5]), atoi(argv[6]));
    else if (!strcmp(w, "rtt") && argc == 5) run_rtt(pr, atol(argv[4]));
    else if (!strcmp(w, "idle") && argc == 6) run_idle(atol(argv[4]), (pid_t)atol(argv[5]));
    else die("bad workload arguments");
    return 0;
}
