/*
 * mpbench: what a MessagePack connection costs lexbusd next to a JSON one,
 * measured in one run against one daemon.
 *
 *   mpbench unix:/path/lexbus.sock LEXBUSD_PID [N_STREAM [N_RTT]]
 *
 * For each encoding (both ends JSON, both ends MessagePack, and mixed):
 *   stream   1 -> 1, 128-byte payloads (MPBENCH_SIZE), publisher batching 64 KiB writes
 *            within a 16 MiB window, every delivery's sequence checked;
 *   fanout   1 -> 10 (an EVENT converted once for its MessagePack
 *            subscribers, not ten times);
 *   rtt      sequential CALL -> RESPONSE through the bus, p50/p99.
 * Besides rates and latencies it reports lexbusd's own CPU time per
 * message (from /proc/PID/schedstat, in ns): the bus's cost, apart from
 * what the load generator spends.  One JSON line per result on stdout.
 *
 * MessagePack frames are built with msgpack-c's packer; JSON ones by hand.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <msgpack.h>

#define MAX_SIZE 2048
#define SEQ 10
#define BATCH (64 * 1024)
#define RBUF (1 << 20)
#define WINDOW_BYTES (16 * 1024 * 1024)

static const char *g_path;
static int g_size = 128;          /* payload bytes (MPBENCH_SIZE) */
static pid_t g_busd;

static void fail(const char *what)
{
    fprintf(stderr, "mpbench: %s: %s\n", what, errno ? strerror(errno) : "failed");
    exit(1);
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* lexbusd's time on a CPU so far, in ns. */
static double busd_cpu_ns(void)
{
    char p[64];
    snprintf(p, sizeof p, "/proc/%ld/schedstat", (long)g_busd);
    FILE *f = fopen(p, "r");
    double ns = 0;
    if (!f || fscanf(f, "%lf", &ns) != 1) fail("reading lexbusd's schedstat");
    fclose(f);
    return ns;
}

static void put(int fd, const void *p, size_t n)
{
    for (const char *c = p; n;) {
        ssize_t w = write(fd, c, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) fail("write");
        c += w;
        n -= (size_t)w;
    }
}

static int dial(void)
{
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    snprintf(sun.sun_path, sizeof sun.sun_path, "%s", g_path);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof sun)) fail("connect");
    return fd;
}

static pid_t child(void)
{
    pid_t pid = fork();
    if (pid < 0) fail("fork");
    if (pid == 0) prctl(PR_SET_PDEATHSIG, SIGKILL);
    return pid;
}

struct rbuf { char *b; size_t len; };

static void fill(struct rbuf *r, int fd)
{
    ssize_t n = read(fd, r->b + r->len, RBUF - r->len);
    if (n <= 0) fail("read (the bus closed the connection)");
    r->len += (size_t)n;
}

/* Length of the complete frame at the head of r (header included), or 0. */
static size_t frame_at(const struct rbuf *r, size_t off)
{
    if (r->len - off < 4) return 0;
    uint32_t n;
    memcpy(&n, r->b + off, 4);
    n = ntohl(n);
    return r->len - off >= 4 + (size_t)n ? 4 + n : 0;
}

static void consume(struct rbuf *r, size_t n)
{
    memmove(r->b, r->b + n, r->len - n);
    r->len -= n;
}

/* ---- frames ---------------------------------------------------------- */

/* A frame: 4-byte length, then the body (JSON or MessagePack). */
struct frame { char b[MAX_SIZE + 512]; size_t n; };

static void frame_json(struct frame *f, const char *json)
{
    size_t n = strlen(json);
    uint32_t be = htonl((uint32_t)n);
    memcpy(f->b, &be, 4);
    memcpy(f->b + 4, json, n);
    f->n = n + 4;
}

static void frame_sbuf(struct frame *f, const msgpack_sbuffer *s)
{
    uint32_t be = htonl((uint32_t)s->size);
    memcpy(f->b, &be, 4);
    memcpy(f->b + 4, s->data, s->size);
    f->n = s->size + 4;
}

static void pk_str(msgpack_packer *pk, const char *s)
{
    msgpack_pack_str(pk, strlen(s));
    msgpack_pack_str_body(pk, s, strlen(s));
}

/* type + pairs of string members, in MessagePack. */
static void frame_mp(struct frame *f, int pairs, const char *const *kv, const char *array_key, const char *array_item)
{
    msgpack_sbuffer s;
    msgpack_sbuffer_init(&s);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &s, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, (size_t)pairs + (array_key ? 1 : 0));
    for (int i = 0; i < pairs; i++) { pk_str(&pk, kv[2 * i]); pk_str(&pk, kv[2 * i + 1]); }
    if (array_key) { pk_str(&pk, array_key); msgpack_pack_array(&pk, 1); pk_str(&pk, array_item); }
    frame_sbuf(f, &s);
    msgpack_sbuffer_destroy(&s);
}

static void send_register(int fd, bool mp, const char *name, struct rbuf *r)
{
    struct frame f;
    if (mp) {
        const char *kv[] = { "type", "REGISTER", "serviceName", name };
        frame_mp(&f, 2, kv, "methods", "echo");
    } else {
        char j[256];
        snprintf(j, sizeof j, "{\"type\":\"REGISTER\",\"serviceName\":\"%s\",\"methods\":[\"echo\"]}", name);
        frame_json(&f, j);
    }
    put(fd, f.b, f.n);
    while (!frame_at(r, 0)) fill(r, fd);
    if ((r->b[4] == '{') == mp) { errno = 0; fail("REGISTER_ACK in the wrong encoding"); }
    consume(r, frame_at(r, 0));
}

static void send_subscribe(int fd, bool mp, struct rbuf *r)
{
    struct frame f;
    if (mp) {
        const char *kv[] = { "type", "SUBSCRIBE", "id", "s" };
        frame_mp(&f, 2, kv, "events", "bench.x");
    } else {
        frame_json(&f, "{\"type\":\"SUBSCRIBE\",\"id\":\"s\",\"events\":[\"bench.x\"]}");
    }
    put(fd, f.b, f.n);
    while (!frame_at(r, 0)) fill(r, fd);
    consume(r, frame_at(r, 0));
}

/* EMIT with a g_size-byte string payload last, so a sequence number can be
 * written into the frame's tail. */
static void emit_frame(struct frame *f, bool mp)
{
    char payload[MAX_SIZE + 1];
    memset(payload, 'x', (size_t)g_size);
    payload[g_size] = 0;
    if (mp) {
        const char *kv[] = { "type", "EMIT", "event", "bench.x", "payload", payload };
        frame_mp(f, 3, kv, NULL, NULL);
    } else {
        char j[MAX_SIZE + 256];
        snprintf(j, sizeof j, "{\"type\":\"EMIT\",\"event\":\"bench.x\",\"payload\":\"%s\"}", payload);
        frame_json(f, j);
    }
}

/* Where the payload starts in an EVENT the bus delivers (payload last:
 * JSON ends with "}, MessagePack with the str itself). */
static const char *payload_of(const char *frame, size_t n, bool mp)
{
    return frame + n - g_size - (mp ? 0 : 2);
}

static void write_seq(char *p, long seq)
{
    for (int i = SEQ - 1; i >= 0; i--) { p[i] = (char)('0' + seq % 10); seq /= 10; }
}

static long read_seq(const char *p)
{
    long v = 0;
    for (int i = 0; i < SEQ; i++) {
        if (p[i] < '0' || p[i] > '9') return -1;
        v = v * 10 + (p[i] - '0');
    }
    return v;
}

/* ---- stream and fan-out ------------------------------------------------ */

static void publisher(bool mp, long n, int progress, long window)
{
    int fd = dial();
    struct rbuf r = { malloc(RBUF), 0 };
    send_register(fd, mp, "mpb-pub", &r);
    struct frame f;
    emit_frame(&f, mp);
    char *batch = malloc(BATCH + sizeof f.b), *seq = f.b + f.n - g_size - (mp ? 0 : 2);
    long sent = 0, acked = 0;
    while (sent < n) {
        while (sent - acked >= window)
            if (read(progress, &acked, sizeof acked) != sizeof acked) fail("progress");
        size_t bl = 0;
        while (sent < n && bl + f.n <= BATCH && sent - acked < window) {
            write_seq(seq, sent++);
            memcpy(batch + bl, f.b, f.n);
            bl += f.n;
        }
        put(fd, batch, bl);
    }
    pause();
}

struct result { double msgs_per_s, cpu_ns_per_msg; long errors, lost; };

static struct result stream(bool mp_pub, bool mp_sub, int nsubs, long n)
{
    int prog[2];
    if (pipe(prog)) fail("pipe");
    int *fd = calloc((size_t)nsubs, sizeof *fd);
    struct rbuf *r = calloc((size_t)nsubs, sizeof *r);
    long *next = calloc((size_t)nsubs, sizeof *next);
    struct pollfd *pf = calloc((size_t)nsubs, sizeof *pf);
    for (int i = 0; i < nsubs; i++) {
        char name[32];
        snprintf(name, sizeof name, "mpb-sub-%d", i);
        fd[i] = dial();
        r[i].b = malloc(RBUF);
        send_register(fd[i], mp_sub, name, &r[i]);
        send_subscribe(fd[i], mp_sub, &r[i]);
        pf[i] = (struct pollfd){ .fd = fd[i], .events = POLLIN };
    }
    struct frame probe;
    emit_frame(&probe, mp_pub);
    long window = WINDOW_BYTES / ((long)probe.n * nsubs);
    pid_t pid = child();
    if (pid == 0) { close(prog[1]); publisher(mp_pub, n, prog[0], window); _exit(0); }
    close(prog[0]);
    long total = 0, want = n * nsubs, reported = 0, errors = 0, step = window / 8 ? window / 8 : 1;
    double t0 = 0, c0 = 0;
    while (total < want) {
        int k = poll(pf, (nfds_t)nsubs, 5000);
        if (k <= 0) { fprintf(stderr, "mpbench: nothing for 5 s\n"); break; }
        if (!t0) { t0 = now(); c0 = busd_cpu_ns(); }
        for (int i = 0; i < nsubs; i++) {
            if (!pf[i].revents) continue;
            fill(&r[i], fd[i]);
            size_t off = 0, m;
            while ((m = frame_at(&r[i], off))) {
                long s = read_seq(payload_of(r[i].b + off, m, mp_sub));
                if (s != next[i]) errors++;
                next[i] = s + 1;
                total++;
                off += m;
            }
            consume(&r[i], off);
        }
        long slowest = n;
        for (int i = 0; i < nsubs; i++) if (next[i] < slowest) slowest = next[i];
        if (slowest - reported >= step || slowest == n) { put(prog[1], &slowest, sizeof slowest); reported = slowest; }
    }
    double dt = now() - t0, cpu = busd_cpu_ns() - c0;
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    close(prog[1]);
    for (int i = 0; i < nsubs; i++) { close(fd[i]); free(r[i].b); }
    free(fd); free(r); free(next); free(pf);
    /* Per message published: a fan-out's cost covers its deliveries. */
    return (struct result){ total / dt, cpu / (double)n, errors, want - total };
}

/* ---- round trips ----------------------------------------------------- */

/* The id of a CALL (fixstr "id" key then a fixstr, or JSON "id":"..."). */
static int call_id(const char *b, size_t n, bool mp, const char **id)
{
    if (mp) {
        const char *k = memmem(b, n, "\xa2id", 3);
        if (!k || (unsigned char)k[3] < 0xa0 || (unsigned char)k[3] > 0xbf) return -1;
        *id = k + 4;
        return k[3] & 0x1f;
    }
    const char *k = memmem(b, n, "\"id\":\"", 6);
    if (!k) return -1;
    *id = k + 6;
    return (int)((const char *)memchr(*id, '"', (size_t)(b + n - *id)) - *id);
}

static void responder(bool mp)
{
    int fd = dial();
    struct rbuf r = { malloc(RBUF), 0 };
    send_register(fd, mp, "mpb-echo", &r);
    for (;;) {
        fill(&r, fd);
        size_t m;
        while ((m = frame_at(&r, 0))) {
            const char *id;
            int k = call_id(r.b + 4, m - 4, mp, &id);
            if (k < 0) { errno = 0; fail("CALL without an id"); }
            char ids[64];
            snprintf(ids, sizeof ids, "%.*s", k, id);
            struct frame f;
            if (mp) {
                const char *kv[] = { "type", "RESPONSE", "id", ids, "status", "success", "data", "0123456789abcdef" };
                frame_mp(&f, 4, kv, NULL, NULL);
            } else {
                char j[256];
                snprintf(j, sizeof j, "{\"type\":\"RESPONSE\",\"id\":\"%s\",\"status\":\"success\",\"data\":\"0123456789abcdef\"}", ids);
                frame_json(&f, j);
            }
            put(fd, f.b, f.n);
            consume(&r, m);
        }
    }
}

static int cmpd(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void rtt(bool mp_caller, bool mp_callee, long n, double *p50, double *p99, double *cpu_per)
{
    pid_t pid = child();
    if (pid == 0) { responder(mp_callee); _exit(0); }
    int fd = dial();
    struct rbuf r = { malloc(RBUF), 0 };
    send_register(fd, mp_caller, "mpb-caller", &r);
    usleep(200000);   /* the responder registers */
    double *lat = malloc(sizeof *lat * (size_t)n), c0 = 0;
    long warm = n / 10;
    for (long i = 0; i < n + warm; i++) {
        char id[32];
        snprintf(id, sizeof id, "r%ld", i);
        struct frame f;
        if (mp_caller) {
            const char *kv[] = { "type", "CALL", "id", id, "to", "mpb-echo", "method", "echo", "params", "0123456789abcdef" };
            frame_mp(&f, 5, kv, NULL, NULL);
        } else {
            char j[256];
            snprintf(j, sizeof j, "{\"type\":\"CALL\",\"id\":\"%s\",\"to\":\"mpb-echo\",\"method\":\"echo\",\"params\":\"0123456789abcdef\"}", id);
            frame_json(&f, j);
        }
        if (i == warm) c0 = busd_cpu_ns();
        double t = now();
        put(fd, f.b, f.n);
        size_t m;
        while (!(m = frame_at(&r, 0))) fill(&r, fd);
        if (!memmem(r.b, m, "success", 7)) { errno = 0; fail("error RESPONSE"); }
        consume(&r, m);
        if (i >= warm) lat[i - warm] = (now() - t) * 1e6;
    }
    *cpu_per = (busd_cpu_ns() - c0) / (double)n;
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    close(fd);
    qsort(lat, (size_t)n, sizeof *lat, cmpd);
    *p50 = lat[n / 2];
    *p99 = lat[n * 99 / 100];
    free(lat);
    free(r.b);
}

/* ---- main ------------------------------------------------------------ */

static const char *enc_name(bool pub, bool sub)
{
    return pub == sub ? (pub ? "msgpack" : "json") : (pub ? "msgpack->json" : "json->msgpack");
}

int main(int argc, char **argv)
{
    if (argc < 3 || strncmp(argv[1], "unix:", 5)) {
        fprintf(stderr, "usage: mpbench unix:/path LEXBUSD_PID [N_STREAM [N_RTT]]\n");
        return 2;
    }
    g_path = argv[1] + 5;
    g_busd = (pid_t)atol(argv[2]);
    long n_stream = argc > 3 ? atol(argv[3]) : 1000000, n_rtt = argc > 4 ? atol(argv[4]) : 20000;
    const char *only;   /* MPBENCH_ONLY=stream|fanout|rtt */
    signal(SIGPIPE, SIG_IGN);
    static const bool combos[][2] = { { false, false }, { true, true }, { true, false }, { false, true } };
    enum { NC = sizeof combos / sizeof *combos, ROUNDS = 3 };
    /* Rounds interleave the encodings: the machine's speed drifts, and
     * each encoding sees the same drift.  The median round is reported. */
    only = getenv("MPBENCH_ONLY");
    if (getenv("MPBENCH_SIZE")) g_size = atoi(getenv("MPBENCH_SIZE"));
    if (g_size < 16 || g_size > MAX_SIZE) { fprintf(stderr, "mpbench: MPBENCH_SIZE is 16 to %d\n", MAX_SIZE); return 2; }
    const char *enc_only = getenv("MPBENCH_ENC");   /* json, msgpack, msgpack->json, json->msgpack */
    for (int w = 0; w < 3; w++) {
        static const char *const names[] = { "stream", "fanout", "rtt" };
        if (only && strcmp(only, names[w])) continue;
        int subs = w == 1 ? 10 : 1;
        double a[NC][ROUNDS], b[NC][ROUNDS], x[NC][ROUNDS];
        long errs[NC] = { 0 }, lost[NC] = { 0 };
        for (int k = 0; k < ROUNDS; k++) {
            for (int c = 0; c < NC; c++) {
                if (w == 1 && combos[c][0] && !combos[c][1]) continue;
                if (enc_only && strcmp(enc_only, enc_name(combos[c][0], combos[c][1]))) continue;
                if (w < 2) {
                    struct result r = stream(combos[c][0], combos[c][1], subs, subs > 1 ? n_stream / 5 : n_stream);
                    a[c][k] = r.msgs_per_s; b[c][k] = r.cpu_ns_per_msg; x[c][k] = 0; errs[c] += r.errors; lost[c] += r.lost;
                } else {
                    rtt(combos[c][0], combos[c][1], n_rtt / ROUNDS, &a[c][k], &x[c][k], &b[c][k]);
                }
            }
        }
        for (int c = 0; c < NC; c++) {
            if (w == 1 && combos[c][0] && !combos[c][1]) continue;
            if (enc_only && strcmp(enc_only, enc_name(combos[c][0], combos[c][1]))) continue;
            qsort(a[c], ROUNDS, sizeof **a, cmpd);
            qsort(b[c], ROUNDS, sizeof **b, cmpd);
            qsort(x[c], ROUNDS, sizeof **x, cmpd);
            if (w < 2)
                printf("{\"workload\":\"%s\",\"encoding\":\"%s\",\"subscribers\":%d,\"size\":%d,\"msgs_per_s\":%.0f,"
                       "\"busd_cpu_ns_per_msg\":%.0f,\"order_errors\":%ld,\"lost\":%ld}\n",
                       names[w], enc_name(combos[c][0], combos[c][1]), subs, g_size, a[c][1], b[c][1], errs[c], lost[c]);
            else
                printf("{\"workload\":\"rtt\",\"encoding\":\"%s\",\"p50_us\":%.1f,\"p99_us\":%.1f,\"busd_cpu_ns_per_call\":%.0f}\n",
                       enc_name(combos[c][0], combos[c][1]), a[c][1], x[c][1], b[c][1]);
        }
        fflush(stdout);
    }
    return 0;
}
