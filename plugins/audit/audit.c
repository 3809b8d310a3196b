/*
 * audit: one JSON line per operation, appended to a file.
 *
 *   {"time":ms,"node":..,"type":"CALL","from":..,"to":..,"name":method|event,
 *    "id":..,"outcome":"ok"|CODE,"delivered":N,"bytes":N,"durationUs":N
 *    [,"payload":...][,"prev":"<sha256 hex of the previous line>"]}
 *
 * Calls to the bus's own service (`lexbus`: stats, reload, token.issue,
 * ...) are recorded like other CALLs, never with their params or result
 * (they may carry tokens).
 *
 * A payload jansson cannot hold (a number beyond double or int64, which
 * the bus forwards as written) is recorded as its JSON text in
 * "paramsText", "payloadText", "dataText" or "errorText".
 *
 * Lines are limited to 64K: a record whose payload would make it longer
 * is written without the payload, with "payloadTruncated":true and
 * "payloadBytes":N, so the operation is still on record.
 *
 * The event loop never touches the disk: lines go into a bounded buffer
 * (`buffer`, default 4M) that a writer thread appends to the file.  When
 * the buffer is full a line is dropped and counted (stats, and a warning)
 * rather than stalling the bus; once there is room again a line
 *   {"time":ms,"node":..,"type":"DROPPED","count":N,"since":ms,"prev":..}
 * marks the gap in the file.  With `chain = yes` every line carries the
 * SHA-256 of the previous line (first line: 64 zeros; after a restart or a
 * reopen, the chain continues from the last line written), so editing,
 * removing or reordering lines is detectable; the hash of the last line
 * is in `lexbus stats` (plugins.audit.lastHash) and logged at shutdown, to
 * compare with the "last" of `lexbus audit verify` (an edit of the last
 * line changes it).  SIGHUP reopens the file (logrotate: rename, then
 * HUP), even when bus.conf cannot be re-read.
 *
 * Every record starts on a line of its own, even after a write cut off
 * part-way (a full disk, or a crash mid-write found at the next start):
 * the missing newline is written first, so the cut line stands alone;
 * lines lost to a failed write are marked by {"type":"LOST","lines":N}
 * once the file takes writes again.  `lexbus audit verify --partial`
 * resynchronises after either.
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
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <lexbus/plugin.h>

#define LINE_MAX_BYTES (64 * 1024)

struct audit {
    struct lb_plugin_ctx *ctx;
    const char *path;
    bool payloads, chain;
    bool staged_payloads;          /* a reload's `payloads`, until reload_done */
    uint64_t cap;
    /* Loop thread only (and unload, once the writer has stopped). */
    char prev[65];                 /* hex SHA-256 of the last line queued */
    unsigned long long warned_at;
    /* The writer's while it runs; load and unload use it when it does not. */
    int fd;
    bool mid_line;                 /* the file ends with a cut line: end it before the next record */
    unsigned long long unmarked;   /* lines lost to failed writes, not yet marked in the file */
    /* Shared with the writer thread, under mu. */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    char *buf;                     /* queued bytes; never NULL after load */
    size_t len;
    char *spare;                   /* the other buffer; NULL while the writer writes it */
    bool reopen, stop;
    pthread_t thread;
    bool thread_started;
    unsigned long long lines, dropped, truncated, write_errors;
    unsigned long long lines_lost;   /* queued, then lost to a failed write */
    unsigned long long errors_logged;  /* write_errors already warned about (loop thread) */
    unsigned long long gap;        /* dropped since the last DROPPED line */
    uint64_t gap_since;            /* when the first of those was dropped */
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

/* Returns how many bytes reached the file (n when all did). */
static size_t write_all(int fd, const char *p, size_t n)
{
    size_t off = 0;
    while (off < n) {
        ssize_t w = fd >= 0 ? write(fd, p + off, n - off) : -1;
        if (w < 0) { if (errno == EINTR) continue; break; }
        off += (size_t)w;
    }
    return off;
}

/* Whether the file open on fd ends in the middle of a line: cut by a
 * crash during a write, or by a full disk.  fd is write-only (O_APPEND):
 * the last byte is read through a second descriptor on the same inode.
 * Only a regular file can be looked at (a FIFO to a log shipper cannot). */
static bool ends_mid_line(const char *path, int fd)
{
    struct stat st, rst;
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size == 0) return false;
    int rfd = open(path, O_RDONLY | O_CLOEXEC);
    if (rfd < 0) return false;
    char last = '\n';
    if (fstat(rfd, &rst) != 0 || rst.st_ino != st.st_ino || rst.st_dev != st.st_dev ||
        pread(rfd, &last, 1, rst.st_size - 1) != 1)
        last = '\n';
    close(rfd);
    return last != '\n';
}

/* Lines in p[done..n) never reached the file (the cut one included). */
static unsigned long long lines_in(const char *p, size_t done, size_t n)
{
    unsigned long long lines = 0;
    for (size_t i = done; i < n; i++) lines += p[i] == '\n';
    return lines;
}

/* Ends a cut line.  False while even that newline cannot be written. */
static bool end_cut_line(struct audit *a)
{
    if (a->mid_line && write_all(a->fd, "\n", 1) == 1) a->mid_line = false;
    return !a->mid_line;
}

/* Marks where lines were lost with a line of its own,
 *   {"time":ms,"type":"LOST","lines":N}
 * (not chained: the lines it stands for were, and are gone), so a reader
 * sees the gap even when the failed write cut no line.  False while it
 * cannot be written. */
static bool mark_lost(struct audit *a)
{
    if (!a->unmarked) return true;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);   /* the loop's cached clock is not this thread's */
    char m[128];
    int len = snprintf(m, sizeof m, "{\"time\":%lld,\"type\":\"LOST\",\"lines\":%llu}\n",
                       (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000, a->unmarked);
    size_t done = write_all(a->fd, m, (size_t)len);
    if (done == (size_t)len) {
        a->unmarked = 0;
        return true;
    }
    if (done) {
        a->mid_line = true;
        end_cut_line(a);
    }
    return false;
}

/* Appends whole lines.  Every record starts on a line of its own: after a
 * write that failed part-way (on a full disk the newline ending the cut
 * line fails too) the missing newline goes first, then a LOST line, and
 * while those cannot be written nothing is.  So no record ever runs into
 * a cut line, and `lexbus audit verify --partial` resynchronises after
 * each gap.  Returns how many bytes of p reached the file. */
static size_t append_lines(struct audit *a, const char *p, size_t n)
{
    size_t done = end_cut_line(a) && mark_lost(a) ? write_all(a->fd, p, n) : 0;
    if (done < n) {
        if (done) a->mid_line = p[done - 1] != '\n';
        a->unmarked += lines_in(p, done, n);
        end_cut_line(a);   /* the error may have been passing */
    }
    return done;
}

/* Keeps the old file when the new one cannot be opened: lines still land
 * somewhere, and the failure shows in writeErrors. */
static bool reopen_file(struct audit *a)
{
    int fd = open_file(a->path);
    if (fd < 0) return false;
    if (a->fd >= 0) close(a->fd);
    a->fd = fd;
    a->mid_line = ends_mid_line(a->path, fd);
    return true;
}

static void *writer(void *arg)
{
    struct audit *a = arg;
    pthread_mutex_lock(&a->mu);
    for (;;) {
        while (!a->len && !a->reopen && !a->stop) pthread_cond_wait(&a->cv, &a->mu);
        bool reopen = a->reopen;
        char *chunk = NULL;
        size_t n = a->len;
        a->reopen = false;
        if (n) {
            /* Swap buffers: the loop thread queues into the spare meanwhile. */
            chunk = a->buf;
            a->buf = a->spare;
            a->spare = NULL;
            a->len = 0;
        }
        pthread_mutex_unlock(&a->mu);
        /* The disk may be slow or hung: only this thread waits for it,
         * never while holding the lock the loop thread queues under. */
        unsigned errors = reopen && !reopen_file(a);
        size_t done = n ? append_lines(a, chunk, n) : 0;
        unsigned long long lost = lines_in(chunk, done, n);
        errors += done < n;
        pthread_mutex_lock(&a->mu);
        if (chunk) a->spare = chunk;
        a->write_errors += errors;
        a->lines_lost += lost;
        if (a->stop && !a->len) break;
    }
    pthread_mutex_unlock(&a->mu);
    return NULL;
}

/* ---- queueing (loop thread) --------------------------------------------- */

static bool enqueue(struct audit *a, const char *line, size_t n)
{
    pthread_mutex_lock(&a->mu);
    bool fits = a->len + n <= a->cap;
    if (fits) {
        memcpy(a->buf + a->len, line, n);
        a->len += n;
        a->lines++;
        pthread_cond_signal(&a->cv);
    }
    unsigned long long errors = a->write_errors, lost = a->lines_lost;
    pthread_mutex_unlock(&a->mu);
    if (errors > a->errors_logged) {
        a->errors_logged = errors * 2 - 1;   /* again at twice as many: no log flood */
        lb_log(a->ctx, LB_LOG_ERROR, "cannot write %s (disk full? I/O error?): %llu write errors, %llu lines lost; "
               "the hash chain breaks where lines are missing", a->path, errors, lost);
    }
    return fits;
}

static void count_dropped(struct audit *a)
{
    pthread_mutex_lock(&a->mu);
    if (!a->gap) a->gap_since = lb_now_ms();
    a->gap++;
    unsigned long long dropped = ++a->dropped;
    pthread_mutex_unlock(&a->mu);
    if (dropped >= a->warned_at) {
        lb_log(a->ctx, LB_LOG_WARN, "audit buffer full (disk too slow?): %llu lines dropped so far", dropped);
        a->warned_at = dropped * 2;
    }
}

/* The line for j, chained to the last line queued: malloc'd, *n bytes
 * plus a newline at line[*n].  NULL when it cannot be encoded or would
 * be 64K or longer. */
static char *encode_line(struct audit *a, json_t *j, size_t *n)
{
    if (a->chain) {
        json_object_del(j, "prev");               /* keep it last on a retry */
        json_object_set_new(j, "prev", json_string(a->prev));
    }
    char *line = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!line) return NULL;
    *n = strlen(line);
    if (*n >= LINE_MAX_BYTES) { free(line); return NULL; }
    line[*n] = '\n';   /* json_dumps leaves room for the NUL we overwrite */
    return line;
}

/* Returns 1 when queued, 0 when the buffer is full, -1 when j cannot be
 * made into a line (too long). */
static int queue_json(struct audit *a, json_t *j)
{
    size_t n;
    char *line = encode_line(a, j, &n);
    if (!line) return -1;
    bool queued = enqueue(a, line, n + 1);
    /* The chain covers queued lines only, so a dropped line never breaks
     * it: the next line hashes the last one written. */
    if (queued && a->chain) hex_sha256(line, n, a->prev);
    free(line);
    return queued;
}

static json_t *gap_marker(struct audit *a, unsigned long long count, uint64_t since)
{
    return json_pack("{s:I,s:s,s:s,s:I,s:I}", "time", (json_int_t)lb_now_ms(), "node", lb_bus_node(a->ctx),
                     "type", "DROPPED", "count", (json_int_t)count, "since", (json_int_t)since);
}

/* After lines were dropped, a DROPPED line goes into the file before any
 * later line, so a reader sees the gap where it is.  False while it does
 * not fit (the caller drops its line too, keeping that order). */
static bool queue_gap_marker(struct audit *a)
{
    pthread_mutex_lock(&a->mu);
    unsigned long long gap = a->gap;
    uint64_t since = a->gap_since;
    pthread_mutex_unlock(&a->mu);
    if (!gap) return true;
    json_t *j = gap_marker(a, gap, since);
    int rc = j ? queue_json(a, j) : -1;
    json_decref(j);
    if (rc != 1) return false;
    pthread_mutex_lock(&a->mu);
    a->gap = 0;          /* only this thread adds to it */
    pthread_mutex_unlock(&a->mu);
    lb_log(a->ctx, LB_LOG_DEBUG, "%llu dropped lines marked by a DROPPED line in %s", gap, a->path);
    return true;
}

/* ---- the hook ---------------------------------------------------------- */

static json_t *str_or_null(struct lb_str s)
{
    return s.p ? json_stringn(s.p, s.n) : json_null();
}

static json_t *record(struct audit *a, const struct lb_outcome *o)
{
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
    if (o->error_code && o->refused_by) json_object_set_new(j, "refusedBy", json_string(o->refused_by));
    return j;
}

static const char *const payload_fields[] = { "params", "payload", "data", "error" };
#define N_PAYLOAD_FIELDS (sizeof payload_fields / sizeof payload_fields[0])

/* "<member>Text": where a payload member is kept as JSON text. */
static const char *text_key(size_t i, char key[16])
{
    snprintf(key, 16, "%sText", payload_fields[i]);
    return key;
}

/* Adds the message's payload members; returns their size in bytes.  A
 * value jansson cannot hold (a number such as 1e400, which the bus
 * forwards) is recorded as its JSON text, "<member>Text", never left out. */
static size_t add_payloads(json_t *j, const struct lb_msg *m)
{
    size_t bytes = 0;
    for (size_t i = 0; i < N_PAYLOAD_FIELDS; i++) {
        struct lb_str raw = lb_msg_raw(m, payload_fields[i]);
        if (!raw.p) continue;
        bytes += raw.n;
        json_t *v = json_loadb(raw.p, raw.n, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
        if (v) {
            json_object_set_new(j, payload_fields[i], v);
        } else {
            char key[16];
            json_object_set_new(j, text_key(i, key), json_stringn(raw.p, raw.n));
        }
    }
    return bytes;
}

static void without_payloads(struct audit *a, json_t *j, size_t bytes)
{
    for (size_t i = 0; i < N_PAYLOAD_FIELDS; i++) {
        char key[16];
        json_object_del(j, payload_fields[i]);
        json_object_del(j, text_key(i, key));
    }
    json_object_set_new(j, "payloadTruncated", json_true());
    json_object_set_new(j, "payloadBytes", json_integer((json_int_t)bytes));
    pthread_mutex_lock(&a->mu);
    a->truncated++;
    pthread_mutex_unlock(&a->mu);
}

static void on_audit(void *ud, const struct lb_outcome *o)
{
    struct audit *a = ud;
    if (!queue_gap_marker(a)) { count_dropped(a); return; }
    json_t *j = record(a, o);
    size_t payload_bytes = a->payloads && o->msg ? add_payloads(j, o->msg) : 0;
    int rc = queue_json(a, j);
    if (rc < 0 && payload_bytes) {
        /* Too long with its payload: the operation itself must still be
         * on record. */
        without_payloads(a, j, payload_bytes);
        rc = queue_json(a, j);
    }
    json_decref(j);
    if (rc != 1) count_dropped(a);
}

static json_t *stats(void *ud)
{
    struct audit *a = ud;
    pthread_mutex_lock(&a->mu);
    json_t *s = json_pack("{s:I,s:I,s:I,s:I,s:I,s:I}", "lines", (json_int_t)a->lines, "dropped", (json_int_t)a->dropped,
                          "payloadsTruncated", (json_int_t)a->truncated, "writeErrors", (json_int_t)a->write_errors,
                          "linesLost", (json_int_t)a->lines_lost, "queuedBytes", (json_int_t)a->len);
    pthread_mutex_unlock(&a->mu);
    /* prev belongs to the loop thread, which is the one asking.  It is the
     * last line queued before this stats call's own line. */
    if (a->chain) json_object_set_new(s, "lastHash", json_string(a->prev));
    return s;
}

/* Continue the chain from the last line already in the file. */
static void load_prev(struct audit *a)
{
    memset(a->prev, '0', 64);
    a->prev[64] = 0;
    if (!a->chain) return;
    /* A FIFO (a log shipper reading) has no last line to read back. */
    struct stat st;
    if (stat(a->path, &st) != 0 || !S_ISREG(st.st_mode)) return;
    FILE *f = fopen(a->path, "rb");
    if (!f) return;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    /* Room for a cut line after the last complete one. */
    long from = size > 2 * LINE_MAX_BYTES ? size - 2 * LINE_MAX_BYTES : 0;
    fseek(f, from, SEEK_SET);
    char *buf = malloc((size_t)(size - from) + 1);
    size_t n = buf ? fread(buf, 1, (size_t)(size - from), f) : 0;
    fclose(f);
    if (!buf) return;
    /* A cut last line (a crash mid-write) was never a record: the chain
     * goes on from the last complete line, so a verifier sees nothing but
     * that fragment missing. */
    if (n && buf[n - 1] != '\n')
        while (n && buf[n - 1] != '\n') n--;
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

/* SIGHUP, whether or not bus.conf could be re-read: logrotate has moved
 * the file away. */
static void audit_reopen(void *ud)
{
    struct audit *a = ud;
    pthread_mutex_lock(&a->mu);
    a->reopen = true;
    pthread_cond_signal(&a->cv);
    pthread_mutex_unlock(&a->mu);
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
    a->mid_line = ends_mid_line(a->path, a->fd);
    if (a->mid_line)
        lb_log(ctx, LB_LOG_WARN, "%s ends with a cut line (lexbusd stopped in the middle of a write?): it is "
               "ended, the next record starts a new line%s", a->path,
               a->chain ? " and the chain continues from the last complete line" : "");
    load_prev(a);
    a->buf = malloc(a->cap);
    a->spare = malloc(a->cap);
    if (!a->buf || !a->spare || pthread_create(&a->thread, NULL, writer, a) != 0) {
        lb_plugin_fail(ctx, "cannot start the audit writer");
        return -1;
    }
    a->thread_started = true;
    struct lb_hooks h = { .size = sizeof h, .audit = on_audit };
    lb_hooks_register(ctx, &h, a);
    lb_stats_register(ctx, stats, a);
    lb_reopen_register(ctx, audit_reopen, a);
    lb_log(ctx, LB_LOG_INFO, "auditing to %s%s%s", a->path, a->chain ? " (hash chain)" : "",
           a->payloads ? " with payloads" : "");
    return 0;
}

/* Step 1 of a reload: validate; only `payloads` can change while running. */
static int audit_reload(struct lb_plugin_ctx *ctx)
{
    struct audit *a = lb_plugin_data(ctx), tmp = { 0 };
    if (read_settings(ctx, &tmp) < 0) return -1;
    if (strcmp(tmp.path, a->path) != 0 || tmp.chain != a->chain || tmp.cap != a->cap)
        lb_log(ctx, LB_LOG_WARN, "file, chain and buffer change only on restart: kept");
    a->staged_payloads = tmp.payloads;
    return 0;
}

static void audit_reload_done(struct lb_plugin_ctx *ctx, bool commit)
{
    struct audit *a = lb_plugin_data(ctx);
    if (commit) a->payloads = a->staged_payloads;   /* read by the loop thread only */
}

/* Lines dropped at the very end still leave their mark (the writer has
 * stopped: this thread owns the file now). */
static void write_final_marker(struct audit *a)
{
    if (!a->gap) return;
    json_t *j = gap_marker(a, a->gap, a->gap_since);
    size_t n;
    char *line = j ? encode_line(a, j, &n) : NULL;
    json_decref(j);
    if (line && append_lines(a, line, n + 1) == n + 1) {
        if (a->chain) hex_sha256(line, n, a->prev);
        a->gap = 0;
    }
    free(line);
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
        write_final_marker(a);
        /* Compare with the "last" of `lexbus audit verify`: an edit of the
         * final line, which no later "prev" covers, changes it. */
        if (a->chain)
            lb_log(ctx, LB_LOG_INFO, "audit chain of %s ends at %s (%llu lines, %llu dropped, %llu write errors)",
                   a->path, a->prev, a->lines, a->dropped, a->write_errors);
    }
    if (a->fd >= 0) close(a->fd);
    free(a->buf);
    free(a->spare);
    pthread_mutex_destroy(&a->mu);
    pthread_cond_destroy(&a->cv);
    free(a);
    lb_plugin_set_data(ctx, NULL);
}

__attribute__((visibility("default")))
const struct lb_plugin lexbus_plugin = {
    .abi = LB_PLUGIN_ABI,
    .size = sizeof(struct lb_plugin),
    .name = "audit",
    .version = PACKAGE_VERSION,
    .load = audit_load,
    .unload = audit_unload,
    .reload = audit_reload,
    .reload_done = audit_reload_done,
};
