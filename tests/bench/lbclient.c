/*
 * lbclient: the same 1->1 stream and request/reply workloads as lbbench's
 * lexbus rows, but through liblexbus (include/lexbus/client.h), as an
 * application would write them.  Set next to lbbench's raw-protocol figures
 * it shows what the client library costs: the rule is that the
 * library must not be the bottleneck.
 *
 *   lbclient URL stream N SIZE    one publisher, one subscriber (two processes),
 *                                 payloads as json_t (lexbus_emit / lexbus_on)
 *   lbclient URL stream-raw N SIZE  the same with JSON text (lexbus_emit_json /
 *                                 lexbus_on_raw): no json_t per message
 *   lbclient URL rtt N            sequential calls to an echo service; every reply
 *                                 is checked against the call's sequence number
 *   --server-pid PID (last)       also report the daemon's CPU time
 * Prints one JSON object, like lbbench, with the CPU time of each client
 * process (and of the daemon) so a client-bound figure is visible.
 *
 * The publisher pipelines: it emits in batches and asks for an ACK on the
 * last message of each batch, keeping at most WINDOW_BATCHES batches
 * unacknowledged (the bus's back-pressure does the rest).
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <event2/event.h>
#include <jansson.h>
#include <lexbus/client.h>
#include "benchcpu.h"

#define SEQ_DIGITS 10
#define BATCH 1024
#define WINDOW_BATCHES 16
#define TOPIC "bench:client"

static const char *g_url;
static pid_t g_server_pid;   /* --server-pid */

static void die(const char *what, const struct lexbus_error *e)
{
    fprintf(stderr, "lbclient: %s%s%s%s%s\n", what, e ? ": " : "", e ? e->code : "", e ? " " : "", e ? e->message : "");
    exit(1);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A child's CPU seconds, once it has ended. */
static double reap(pid_t pid)
{
    double s = bc_reap_s(pid, NULL);
    if (s < 0) die("wait4", NULL);
    return s;
}

static struct lexbus_client *connect_as(const char *name)
{
    struct lexbus_options o = { .url = g_url, .service = name, .no_reconnect = true };
    struct lexbus_error e;
    struct lexbus_client *c = lexbus_connect_blocking(&o, 5000, &e);
    if (!c) die("connect", &e);
    return c;
}

/* ---- stream ------------------------------------------------------------ */

struct sub_state { long n, next, errors, got; size_t size; double t0, t1; };

static void count(struct lexbus_client *c, struct sub_state *s, const char *p, size_t len)
{
    long seq = -1;
    if (p && len == s->size) {
        seq = 0;
        for (int i = 0; i < SEQ_DIGITS; i++) seq = seq * 10 + (p[i] - '0');
    }
    if (!s->got++) s->t0 = now_s();
    if (seq != s->next) s->errors++;
    s->next = seq + 1;
    if (s->got == s->n) {
        s->t1 = now_s();
        lexbus_stop(c);
    }
}

static void on_event(struct lexbus_client *c, const char *event, const char *from, json_t *payload, void *ud)
{
    (void)event; (void)from;
    count(c, ud, json_string_value(payload), json_string_length(payload));
}

/* The payload is a JSON string: its text is "<characters>". */
static void on_raw(struct lexbus_client *c, const char *event, const char *from, const char *json, size_t len,
                   void *ud)
{
    (void)event; (void)from;
    count(c, ud, len >= 2 && json[0] == '"' ? json + 1 : NULL, len >= 2 ? len - 2 : 0);
}

struct pub_state {
    struct lexbus_client *c;
    json_t *payload;
    char *text;          /* "<seq>xxx...", quoted: the JSON text of the payload */
    long n, sent, unacked;
    size_t size;
    bool raw;
};

static void pub_fill(struct pub_state *p);

static void on_ack(struct lexbus_client *c, const struct lexbus_error *err, long delivered, void *ud)
{
    (void)c; (void)delivered;
    struct pub_state *p = ud;
    if (err) die("emit ack", err);
    p->unacked--;
    pub_fill(p);
}

/* Emits batches until the window is full or everything is sent. */
static void pub_fill(struct pub_state *p)
{
    while (p->sent < p->n && p->unacked < WINDOW_BATCHES) {
        for (int i = 0; i < BATCH && p->sent < p->n; i++) {
            long seq = p->sent++;
            for (int k = SEQ_DIGITS; k >= 1; k--) { p->text[k] = (char)('0' + seq % 10); seq /= 10; }
            bool last = i == BATCH - 1 || p->sent == p->n;
            lexbus_ack_fn ack = last ? on_ack : NULL;
            int rc;
            if (p->raw) {
                rc = lexbus_emit_json(p->c, TOPIC, p->text, p->size + 2, "broadcast", ack, p);
            } else {
                json_string_setn_nocheck(p->payload, p->text + 1, p->size);
                rc = lexbus_emit(p->c, TOPIC, p->payload, "broadcast", ack, p);
            }
            if (rc < 0) die("emit", NULL);
            if (last) p->unacked++;
        }
    }
    if (p->sent == p->n && p->unacked == 0) lexbus_stop(p->c);
}

static void run_stream(long n, size_t size, bool raw)
{
    if (size < SEQ_DIGITS) size = SEQ_DIGITS;
    int ready[2], res[2];
    if (pipe(ready) || pipe(res)) die("pipe", NULL);
    pid_t pid = fork();
    if (pid < 0) die("fork", NULL);
    if (pid == 0) {
        struct sub_state s = { .n = n, .size = size };
        struct lexbus_client *c = connect_as("bench-client-sub");
        if (raw) lexbus_on_raw(c, TOPIC, on_raw, &s);
        else lexbus_on(c, TOPIC, on_event, &s);
        /* The subscription is sent on connect: a round trip proves it is in. */
        json_t *r = NULL;
        struct lexbus_error e;
        if (lexbus_call_blocking(c, "lexbus", "ping", NULL, 5000, &r, &e) < 0) die("ping", &e);
        json_decref(r);
        char one = 1;
        if (write(ready[1], &one, 1) != 1) _exit(1);
        lexbus_run(c);
        double out[3] = { (double)s.got, s.t1 - s.t0, (double)s.errors };
        if (write(res[1], out, sizeof out) != sizeof out) _exit(1);
        lexbus_free(c);
        _exit(0);
    }
    char one;
    if (read(ready[0], &one, 1) != 1) die("subscriber did not start", NULL);
    double srv0 = bc_process_s(g_server_pid), w0 = now_s(), cpu0 = bc_self_s();
    struct pub_state p = { .c = connect_as("bench-client-pub"), .n = n, .size = size, .raw = raw };
    p.text = malloc(size + 3);
    memset(p.text, 'x', size + 2);
    p.text[0] = p.text[size + 1] = '"';
    p.text[size + 2] = 0;
    p.payload = json_string("");
    pub_fill(&p);
    lexbus_run(p.c);
    double r[3];
    if (read(res[0], r, sizeof r) != sizeof r) die("subscriber result", NULL);
    double wall = now_s() - w0, srv1 = bc_process_s(g_server_pid), pub_cpu = bc_self_s() - cpu0, sub_cpu = reap(pid);
    json_decref(p.payload);
    free(p.text);
    lexbus_free(p.c);
    printf("{\"peer\":\"%s\",\"workload\":\"stream\",\"messages\":%ld,\"size\":%zu,\"subscribers\":1,"
           "\"delivered\":%.0f,\"seconds\":%.4f,\"msgs_per_s\":%.0f,\"mb_per_s\":%.2f,\"order_errors\":%.0f,\"lost\":%.0f",
           raw ? "liblexbus-raw" : "liblexbus", n, size, r[0], r[1], r[0] / r[1], r[0] * (double)size / r[1] / 1e6, r[2],
           (double)n - r[0]);
    bc_put_pct("server_cpu_pct", srv0 < 0 ? -1 : srv1 - srv0, wall);
    bc_put_pct("pub_cpu_pct", pub_cpu, wall);
    bc_put_pct("sub_cpu_pct", sub_cpu, wall);
    bc_put_pct("sub_cpu_max_pct", sub_cpu, wall);
    printf("}\n");
}

/* ---- rtt --------------------------------------------------------------- */

static void echo(struct lexbus_client *c, const char *method, json_t *params, struct lexbus_reply *reply, void *ud)
{
    (void)c; (void)method; (void)ud;
    lexbus_reply_ok(reply, json_incref(params));
}

struct rtt_state { struct lexbus_client *c; json_t *params; long i, n, warm, errors; double t, *lat; };

static void next_call(struct rtt_state *s);

static void on_result(struct lexbus_client *c, const struct lexbus_error *err, json_t *result, void *ud)
{
    (void)c;
    struct rtt_state *s = ud;
    if (err) die("call", err);
    /* The echo must answer this call: its params carry the sequence number. */
    if (!json_equal(result, s->params)) s->errors++;
    if (s->i >= s->warm) s->lat[s->i - s->warm] = (now_s() - s->t) * 1e6;
    s->i++;
    next_call(s);
}

static void next_call(struct rtt_state *s)
{
    if (s->i == s->n + s->warm) { lexbus_stop(s->c); return; }
    char seq[32];
    snprintf(seq, sizeof seq, "%010ldabcdef", s->i);
    json_string_set(s->params, seq);
    s->t = now_s();
    if (lexbus_call(s->c, "bench-client-echo", "echo", s->params, 5000, NULL, on_result, s) < 0) die("call", NULL);
}

static int cmpd(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void run_rtt(long n)
{
    int ready[2];
    if (pipe(ready)) die("pipe", NULL);
    pid_t pid = fork();
    if (pid < 0) die("fork", NULL);
    if (pid == 0) {
        struct lexbus_options o = { .url = g_url, .service = "bench-client-echo", .no_reconnect = true };
        struct event_base *base = event_base_new();
        struct lexbus_client *c = lexbus_new(base, &o);
        lexbus_add_method(c, "echo", echo, NULL);
        lexbus_connect(c);
        /* Registered once the bus answers our own ping. */
        while (!lexbus_is_ready(c)) event_base_loop(base, EVLOOP_ONCE);
        char one = 1;
        if (write(ready[1], &one, 1) != 1) _exit(1);
        event_base_dispatch(base);
        _exit(0);
    }
    char one;
    if (read(ready[0], &one, 1) != 1) die("echo service did not start", NULL);
    struct rtt_state s = { .c = connect_as("bench-client-caller"), .n = n, .warm = n / 10 > 1000 ? 1000 : n / 10 };
    s.params = json_string("0000000000abcdef");
    s.lat = calloc((size_t)n, sizeof *s.lat);
    double srv0 = bc_process_s(g_server_pid), cpu0 = bc_self_s();
    next_call(&s);
    lexbus_run(s.c);
    double srv1 = bc_process_s(g_server_pid), caller = bc_self_s() - cpu0;
    kill(pid, SIGKILL);
    double responder = reap(pid), per = 1e6 / (double)(n + s.warm);
    qsort(s.lat, (size_t)n, sizeof *s.lat, cmpd);
    /* A call that got no reply fails the run (die in on_result): none is lost. */
    printf("{\"peer\":\"liblexbus\",\"workload\":\"rtt\",\"round_trips\":%ld,\"p50_us\":%.1f,\"p90_us\":%.1f,"
           "\"p99_us\":%.1f,\"p999_us\":%.1f,\"lost\":0,\"order_errors\":%ld", n, s.lat[n / 2], s.lat[n * 9 / 10],
           s.lat[n * 99 / 100], s.lat[n * 999 / 1000], s.errors);
    if (srv0 < 0) printf(",\"server_cpu_us_per_rt\":null");
    else printf(",\"server_cpu_us_per_rt\":%.2f", (srv1 - srv0) * per);
    printf(",\"caller_cpu_us_per_rt\":%.2f,\"responder_cpu_us_per_rt\":%.2f}\n", caller * per, responder * per);
    json_decref(s.params);
    free(s.lat);
    lexbus_free(s.c);
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: lbclient URL stream|stream-raw N SIZE | lbclient URL rtt N  [--server-pid PID]\n");
        return 2;
    }
    if (argc >= 6 && !strcmp(argv[argc - 2], "--server-pid")) {
        g_server_pid = (pid_t)atol(argv[argc - 1]);
        argc -= 2;
    }
    g_url = argv[1];
    long n = atol(argv[3]);
    if (n <= 0) die("N must be positive", NULL);
    if (!strcmp(argv[2], "stream") && argc == 5) run_stream(n, (size_t)atol(argv[4]), false);
    else if (!strcmp(argv[2], "stream-raw") && argc == 5) run_stream(n, (size_t)atol(argv[4]), true);
    else if (!strcmp(argv[2], "rtt") && argc == 4) run_rtt(n);
    else { fprintf(stderr, "lbclient: unknown workload\n"); return 2; }
    return 0;
}
