/*
 * audit: one JSON line per operation, appended to a file.
 *
 *   {"time":ms,"node":..,"type":"CALL","from":..,"to":..,"name":method|event,
 *    "id":..,"outcome":"ok"|CODE,"delivered":N,"bytes":N,"durationUs":N
 *    [,"payload":...][,"prev":"<sha256 hex of the previous line>"]}
 *
 * The event loop never touches the disk: lines go into a bounded buffer
 * (`buffer`, default 4M) that a writer thread appends to the file.  When
 * the buffer is full a line is dropped and counted (stats, and a warning)
 * rather than stalling the bus.  With `chain = yes` every line carries the
 * SHA-256 of the previous line (first line: 64 zeros; after a restart or a
 * reopen, the chain continues from the last line written), so editing,
 * removing or reordering lines is detectable.  SIGHUP reopens the file
 * (logrotate: rename, then HUP).
 *
 * [plugin audit]
 * file = /var/log/lexbus/audit.jsonl
 * payloads = no        include params/payload/data/error of the message (a completed
 *                      CALL is recorded when its RESPONSE arrives: its data/error)
 * chain = no           tamper-evident hash chain
 * buffer = 4M
 */
#include "config.h"
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <lexbus/plugin.h>

#define LINE_MAX_BYTES (64 * 1024)

struct audit {
    struct lb_plugin_ctx *ctx;
    const char *path;
    bool payloads, chain;
    uint64_t cap;
    char prev[65];                 /* hex SHA-256 of the last line queued */
    /* Shared with the writer thread, under mu. */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    char *buf;                     /* queued bytes */
    size_t len;
    bool reopen, stop;
    int fd;
    pthread_t thread;
    bool thread_started;
    unsigned long long lines, dropped, write_errors;
    unsigned long long warned_at;
};

static void hex_sha256(const char *p, size_t n, char out[65])
{
    unsigned char md[32];
    unsigned int mdlen = 0;
    EVP_Digest(p, n, md, &mdlen, EVP_sha256(), NULL);
    for (int i = 0; i < 32; i++) snprintf(out + 2 * i, 3, "%02x", md[i]);
}

/* ---- writer thread --------------------------------------------------- */

static int open_file(const char *path)
{
    return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
}

static void *writer(void *arg)
{
    struct audit *a = arg;
    pthread_mutex_lock(&a->mu);
    for (;;) {
        while (!a->len && !a->reopen && !a->stop) pthread_cond_wait(&a->cv, &a->mu);
        if (a->reopen) {
            a->reopen = false;
            int fd = open_file(a->path);
            if (fd >= 0) { if (a->fd >= 0) close(a->fd); a->fd = fd; }
            else a->write_errors++;
        }
        if (a->len) {
            char *chunk = a->buf;
            size_t n = a->len;
            a->buf = malloc(a->cap);
            a->len = 0;
            pthread_mutex_unlock(&a->mu);
            /* The disk may be slow: only this thread waits for it. */
            size_t off = 0;
            while (off < n) {
                ssize_t w = a->fd >= 0 ? write(a->fd, chunk + off, n - off) : -1;
                if (w < 0) { if (errno == EINTR) continue; break; }
                off += (size_t)w;
            }
            free(chunk);
            pthread_mutex_lock(&a->mu);
            if (off < n) a->write_errors++;
            if (!a->buf) { a->buf = malloc(a->cap); if (!a->buf) a->stop = true; }
        }
        if (a->stop && !a->len) break;
    }
    pthread_mutex_unlock(&a->mu);
    return NULL;
}

/* ---- the hook ---------------------------------------------------------- */

static bool enqueue(struct audit *a, const char *line, size_t n)
{
    pthread_mutex_lock(&a->mu);
    bool fits = a->buf && a->len + n <= a->cap;
    if (fits) {
        memcpy(a->buf + a->len, line, n);
        a->len += n;
        a->lines++;
        pthread_cond_signal(&a->cv);
    } else {
        a->dropped++;
    }
    unsigned long long dropped = a->dropped;
    pthread_mutex_unlock(&a->mu);
    if (!fits && dropped >= a->warned_at) {
        lb_log(a->ctx, LB_LOG_WARN, "audit buffer full (disk too slow?): %llu lines dropped so far", dropped);
        a->warned_at = dropped * 2;
    }
    return fits;
}

static json_t *str_or_null(struct lb_str s)
{
    return s.p ? json_stringn(s.p, s.n) : json_null();
}

static void on_audit(void *ud, const struct lb_outcome *o)
{
    struct audit *a = ud;
    json_t *j = json_object();
    json_object_set_new(j, "time", json_integer((json_int_t)lb_now_ms()));
    json_object_set_new(j, "node", json_string(lb_bus_node(a->ctx)));
    json_object_set_new(j, "type", json_string(lb_msg_type_name(o->type)));
    json_object_set_new(j, "from", o->from ? json_string(o->from) : json_null());
    json_object_set_new(j, "to", str_or_null(o->to));
    json_object_set_new(j, "name", str_or_null(o->name));
    json_object_set_new(j, "id", str_or_null(o->id));
    json_object_set_new(j, "outcome", json_string(o->error_code ? o->error_code : "ok"));
    json_object_set_new(j, "delivered", json_integer(o->delivered));
    json_object_set_new(j, "bytes", json_integer((json_int_t)o->bytes));
    json_object_set_new(j, "durationUs", json_integer((json_int_t)o->duration_us));
    if (a->payloads && o->msg) {
        static const char *const fields[] = { "params", "payload", "data", "error" };
        for (size_t i = 0; i < 4; i++) {
            struct lb_str raw = lb_msg_raw(o->msg, fields[i]);
            if (!raw.p) continue;
            json_t *v = json_loadb(raw.p, raw.n, JSON_DECODE_ANY, NULL);
            if (v) json_object_set_new(j, fields[i], v);
        }
    }
    if (a->chain) json_object_set_new(j, "prev", json_string(a->prev));
    char *line = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(j);
    if (!line) return;
    size_t n = strlen(line);
    if (n < LINE_MAX_BYTES) {
        line[n] = '\n';   /* json_dumps leaves room for the NUL we overwrite */
        /* The chain covers queued lines only, so a dropped line never
         * breaks it: the next line hashes the last one written. */
        if (enqueue(a, line, n + 1) && a->chain) hex_sha256(line, n, a->prev);
    }
    free(line);
}

static json_t *stats(void *ud)
{
    struct audit *a = ud;
    pthread_mutex_lock(&a->mu);
    json_t *s = json_pack("{s:I,s:I,s:I,s:I}", "lines", (json_int_t)a->lines, "dropped", (json_int_t)a->dropped,
                          "writeErrors", (json_int_t)a->write_errors, "queuedBytes", (json_int_t)a->len);
    pthread_mutex_unlock(&a->mu);
    return s;
}

/* Continue the chain from the last line already in the file. */
static void load_prev(struct audit *a)
{
    memset(a->prev, '0', 64);
    a->prev[64] = 0;
    if (!a->chain) return;
    FILE *f = fopen(a->path, "rb");
    if (!f) return;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    long from = size > LINE_MAX_BYTES ? size - LINE_MAX_BYTES : 0;
    fseek(f, from, SEEK_SET);
    char *buf = malloc((size_t)(size - from) + 1);
    size_t n = buf ? fread(buf, 1, (size_t)(size - from), f) : 0;
    fclose(f);
    if (!buf) return;
    while (n && buf[n - 1] == '\n') n--;
    size_t start = n;
    while (start && buf[start - 1] != '\n') start--;
    if (n > start) hex_sha256(buf + start, n - start, a->prev);
    free(buf);
}

static int read_settings(struct lb_plugin_ctx *ctx, struct audit *a)
{
    const char *file;
    if (lb_conf_str(ctx, "file", NULL, &file) < 0 || lb_conf_bool(ctx, "payloads", false, &a->payloads) < 0 ||
        lb_conf_bool(ctx, "chain", false, &a->chain) < 0 || lb_conf_size(ctx, "buffer", 4u << 20, &a->cap) < 0)
        return -1;
    if (!file) { lb_plugin_fail(ctx, "file = <path> is required"); return -1; }
    if (a->cap < LINE_MAX_BYTES || a->cap > (1ull << 30)) {
        lb_plugin_fail(ctx, "buffer must be from 64K to 1G");
        return -1;
    }
    a->path = lb_conf_path(ctx, file);
    return 0;
}

static int audit_load(struct lb_plugin_ctx *ctx)
{
    struct audit *a = calloc(1, sizeof *a);
    if (!a) { lb_plugin_fail(ctx, "out of memory"); return -1; }
    a->ctx = ctx;
    a->fd = -1;
    a->warned_at = 1;
    lb_plugin_set_data(ctx, a);
    pthread_mutex_init(&a->mu, NULL);
    pthread_cond_init(&a->cv, NULL);
    if (read_settings(ctx, a) < 0) return -1;
    if (lb_check_only(ctx)) return 0;
    a->fd = open_file(a->path);
    if (a->fd < 0) { lb_plugin_fail(ctx, "cannot open %s: %s", a->path, strerror(errno)); return -1; }
    load_prev(a);
    a->buf = malloc(a->cap);
    if (!a->buf || pthread_create(&a->thread, NULL, writer, a) != 0) {
        lb_plugin_fail(ctx, "cannot start the audit writer");
        return -1;
    }
    a->thread_started = true;
    struct lb_hooks h = { .audit = on_audit };
    lb_hooks_register(ctx, &h, a);
    lb_stats_register(ctx, stats, a);
    lb_log(ctx, LB_LOG_INFO, "auditing to %s%s%s", a->path, a->chain ? " (hash chain)" : "",
           a->payloads ? " with payloads" : "");
    return 0;
}

static int audit_reload(struct lb_plugin_ctx *ctx)
{
    struct audit *a = lb_plugin_data(ctx), tmp = { 0 };
    if (read_settings(ctx, &tmp) < 0) return -1;
    if (strcmp(tmp.path, a->path) != 0)
        lb_log(ctx, LB_LOG_WARN, "file changed to %s: takes effect on restart", tmp.path);
    pthread_mutex_lock(&a->mu);
    a->payloads = tmp.payloads;
    a->reopen = true;               /* logrotate moved the file away */
    pthread_cond_signal(&a->cv);
    pthread_mutex_unlock(&a->mu);
    return 0;
}

static void audit_unload(struct lb_plugin_ctx *ctx)
{
    struct audit *a = lb_plugin_data(ctx);
    if (!a) return;
    if (a->thread_started) {
        pthread_mutex_lock(&a->mu);
        a->stop = true;             /* the writer flushes what is queued first */
        pthread_cond_signal(&a->cv);
        pthread_mutex_unlock(&a->mu);
        pthread_join(a->thread, NULL);
    }
    if (a->fd >= 0) close(a->fd);
    free(a->buf);
    pthread_mutex_destroy(&a->mu);
    pthread_cond_destroy(&a->cv);
    free(a);
    lb_plugin_set_data(ctx, NULL);
}

__attribute__((visibility("default")))
const struct lb_plugin lexbus_plugin = {
    .abi = LB_PLUGIN_ABI,
    .name = "audit",
    .version = PACKAGE_VERSION,
    .load = audit_load,
    .unload = audit_unload,
    .reload = audit_reload,
};
