/*
 * The key-value state API of plugin.h: namespaced per plugin, with
 * optional expiry, persisted to [bus] state_file when one is configured.
 *
 * The file is JSON lines: a header {"lexbus-state":1}, then one entry per
 * line, {"p":plugin,"k":key,"e":expiry_ms,"v":value} ("x": the value in
 * hex when it is not UTF-8; no "e" when it never expires).  Each entry
 * keeps its line ready, so a snapshot is a concatenation the loop thread
 * makes in one pass, and the writer thread (state_writer.c) does the
 * slow part: write, fsync, rename, fsync.  Snapshots are coalesced: at
 * most one per 100 ms.
 */
#include "config.h"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <event2/event.h>
#include <jansson.h>
#include "bus.h"
#include "log.h"
#include "plugin_ctx.h"
#include "state.h"
#include "state_writer.h"
#include "htable.h"
#include "util.h"

#define HEADER "{\"lexbus-state\":1}\n"
#define FORMAT 1
#define MAX_KEY 1024
#define COALESCE_MS 100
#define RETRY_MS 5000              /* after a failed write */

struct kv {
    struct ht_node node;
    char *key;                     /* "<plugin>/<key>" */
    size_t plen;                   /* length of <plugin> */
    char *val;                     /* NUL-terminated copy of the value */
    size_t len;
    uint64_t expires_ms;           /* absolute, wall clock; 0 = never */
    char *line;                    /* its line in the file, '\n' included */
    size_t line_len;
};

static struct htable g_kv;
static bool g_init, g_walking;
static char *g_path;               /* NULL: in memory only */
static uint64_t g_max = 16ull << 20;
static uint64_t g_bytes;           /* sum of line_len: the file's size, less the header */
static struct event *g_timer;
/* Change counter: every mutation bumps it; a snapshot carries the value
 * it covers.  All on the loop thread. */
static uint64_t g_change_gen, g_handed_gen, g_durable_gen, g_reported_gen;
static bool g_failing, g_retry;
static int g_lock_fd = -1;         /* holds the lock on <state_file>.lock */

static bool kv_eq(const struct ht_node *n, const void *key)
{
    return strcmp(container_of(n, struct kv, node)->key, key) == 0;
}

static void ensure_init(void)
{
    if (!g_init) { ht_init(&g_kv, 64); g_init = true; }
}

static char *join_key(const char *plugin, const char *key)
{
    size_t a = strlen(plugin), b = strlen(key);
    char *k = xmalloc(a + b + 2);
    memcpy(k, plugin, a);
    k[a] = '/';
    memcpy(k + a + 1, key, b + 1);
    return k;
}

static void kv_free(struct kv *e)
{
    free(e->key);
    free(e->val);
    free(e->line);
    free(e);
}

static void kv_remove(struct kv *e)
{
    ht_remove(&g_kv, &e->node);
    g_bytes -= e->line_len;
    kv_free(e);
}

static bool expired(const struct kv *e, uint64_t now)
{
    return e->expires_ms && e->expires_ms <= now;
}

/* An expired entry is never returned; it is dropped here unless a walk
 * (lb_state_each) is in progress. */
static struct kv *lookup(const char *k)
{
    ensure_init();
    struct ht_node *n = ht_find(&g_kv, hash_bytes(k, strlen(k)), kv_eq, k);
    if (!n) return NULL;
    struct kv *e = container_of(n, struct kv, node);
    if (!expired(e, now_ms())) return e;
    if (!g_walking) kv_remove(e);
    return NULL;
}

/* ---- the file format ---------------------------------------------------- */

static json_t *hex_value(const char *v, size_t len)
{
    static const char digits[] = "0123456789abcdef";
    char *h = xmalloc(2 * len + 1);
    for (size_t i = 0; i < len; i++) {
        h[2 * i] = digits[(unsigned char)v[i] >> 4];
        h[2 * i + 1] = digits[(unsigned char)v[i] & 15];
    }
    json_t *j = json_stringn(h, 2 * len);
    free(h);
    return j;
}

/* The entry's line, newline included, or NULL if the key is not UTF-8. */
static char *encode_line(const char *plugin, const char *key, const char *v, size_t len, uint64_t exp,
                         size_t *n)
{
    json_t *o = json_object(), *k = json_string(key), *val = json_stringn(v, len);
    char *line = NULL;
    if (!k) goto out;
    json_object_set_new(o, "p", json_string(plugin));
    json_object_set_new(o, "k", k);
    k = NULL;
    if (exp) json_object_set_new(o, "e", json_integer((json_int_t)exp));
    if (val) json_object_set(o, "v", val);
    else json_object_set_new(o, "x", hex_value(v, len));
    char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!s) goto out;
    *n = strlen(s) + 1;
    line = xrealloc(s, *n + 1);
    line[*n - 1] = '\n';
    line[*n] = 0;
out:
    json_decref(k);
    json_decref(val);
    json_decref(o);
    return line;
}

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Decodes "x" into a new buffer (*len bytes), or NULL if malformed. */
static char *unhex(const char *h, size_t hl, size_t *len)
{
    if (hl % 2) return NULL;
    char *out = xmalloc(hl / 2 + 1);
    for (size_t i = 0; i < hl / 2; i++) {
        int a = hexval(h[2 * i]), b = hexval(h[2 * i + 1]);
        if (a < 0 || b < 0) { free(out); return NULL; }
        out[i] = (char)(a << 4 | b);
    }
    *len = hl / 2;
    out[*len] = 0;
    return out;
}

/* ---- the store ------------------------------------------------------------ */

static void put(char *fullkey, size_t plen, char *val, size_t len, uint64_t exp, char *line, size_t line_len)
{
    struct kv *e = lookup(fullkey);
    if (e) {
        free(fullkey);
        free(e->val);
        free(e->line);
        g_bytes -= e->line_len;
    } else {
        e = xcalloc(1, sizeof *e);
        e->key = fullkey;
        e->plen = plen;
        ht_insert(&g_kv, &e->node, hash_bytes(fullkey, strlen(fullkey)));
    }
    e->val = val;
    e->len = len;
    e->expires_ms = exp;
    e->line = line;
    e->line_len = line_len;
    g_bytes += line_len;
}

static void sweep_cb(struct ht_node *n, void *ud)
{
    struct kv *e = container_of(n, struct kv, node);
    if (expired(e, *(uint64_t *)ud)) kv_remove(e);
}

static void sweep_expired(void)
{
    uint64_t now = now_ms();
    ensure_init();
    ht_each(&g_kv, sweep_cb, &now);
}

/* ---- writing ---------------------------------------------------------- */

struct snap { char *buf; size_t len; uint64_t now; };

static void snap_cb(struct ht_node *n, void *ud)
{
    struct snap *s = ud;
    struct kv *e = container_of(n, struct kv, node);
    if (expired(e, s->now)) { kv_remove(e); return; }   /* it would be dropped on load anyway */
    memcpy(s->buf + s->len, e->line, e->line_len);
    s->len += e->line_len;
}

/* Hands a snapshot of everything to the writer thread. */
static int submit(void)
{
    ensure_init();
    struct snap s = { xmalloc(sizeof HEADER + g_bytes), 0, now_ms() };
    memcpy(s.buf, HEADER, sizeof HEADER - 1);
    s.len = sizeof HEADER - 1;
    ht_each(&g_kv, snap_cb, &s);
    /* A retry of a failed write covers no new change: give it its own
     * number, so that waiting for it does not see the old failure. */
    if (g_handed_gen == g_change_gen) g_change_gen++;
    g_handed_gen = g_change_gen;
    g_retry = false;
    if (state_writer_submit(g_path, s.buf, s.len, g_handed_gen) == 0) return 0;
    log_error("state", "cannot start the state_file writer: %s", strerror(errno));
    return -1;
}

/* Logs what the writer thread finished since the last look (the thread
 * itself never logs).  Returns whether a write is still queued or running. */
static bool collect(void)
{
    uint64_t gen;
    int err, busy;
    state_writer_status(&gen, &err, &busy);
    if (gen > g_reported_gen) {
        g_reported_gen = gen;
        if (err && !g_failing)
            log_error("state", "cannot write state_file %s: %s (the state is kept in memory; retrying every %d s)",
                      g_path, strerror(err), RETRY_MS / 1000);
        else if (!err && g_failing)
            log_info("state", "state_file %s written again", g_path);
        g_failing = err != 0;
        if (!err) g_durable_gen = gen;
    }
    return busy;
}

static void arm(uint64_t ms)
{
    struct timeval tv = { (time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000 };
    evtimer_add(g_timer, &tv);
}

static void tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what; (void)arg;
    bool busy = collect();
    if (!busy && (g_change_gen > g_handed_gen || g_retry)) busy = submit() == 0;
    if (busy) arm(COALESCE_MS);                 /* look again for its outcome */
    else if (g_failing) { g_retry = true; arm(RETRY_MS); }
}

static void changed(void)
{
    g_change_gen++;
    if (!g_path || g_bus.check_only || !g_bus.base) return;
    if (!g_timer) g_timer = evtimer_new(g_bus.base, tick, NULL);
    if (g_timer && !evtimer_pending(g_timer, NULL)) arm(COALESCE_MS);
}

/* ---- the plugin API ------------------------------------------------------- */

/* A backend (lb_state_backend_register) sees every local change. */
static struct lb_state_backend g_backend;
static void *g_backend_ud;
static struct lb_plugin_ctx *g_backend_ctx;

static void tell_backend(const char *ns, const char *key, const char *value, size_t len, uint64_t exp)
{
    if (g_backend.changed) g_backend.changed(g_backend_ud, ns, key, value, len, exp);
}

static int set_ns(const char *ns, const char *key, const char *value, size_t len, uint64_t exp)
{
    if (g_walking) { errno = EBUSY; return -1; }
    size_t kl = strlen(key), ll = 0;
    if (!kl || kl > MAX_KEY) { errno = EINVAL; return -1; }
    char *line = encode_line(ns, key, value, len, exp, &ll);
    if (!line) { errno = EINVAL; return -1; }
    char *full = join_key(ns, key);
    struct kv *old = lookup(full);
    uint64_t after = g_bytes - (old ? old->line_len : 0) + ll;
    if (after > g_max) {
        sweep_expired();           /* expired entries must not hold the room */
        old = lookup(full);
        after = g_bytes - (old ? old->line_len : 0) + ll;
    }
    if (after > g_max) { free(line); free(full); errno = ENOSPC; return -1; }
    char *v = xmalloc(len + 1);
    memcpy(v, value, len);
    v[len] = 0;
    put(full, strlen(ns), v, len, exp, line, ll);
    changed();
    return 0;
}

int lb_state_set(struct lb_plugin_ctx *ctx, const char *key, const char *value, size_t len, uint64_t ttl_ms)
{
    uint64_t exp = ttl_ms ? now_ms() + ttl_ms : 0;
    if (set_ns(ctx->name, key, value, len, exp) != 0) return -1;
    tell_backend(ctx->name, key, value, len, exp);
    return 0;
}

const char *lb_state_get(struct lb_plugin_ctx *ctx, const char *key, size_t *len)
{
    char *k = join_key(ctx->name, key);
    struct kv *e = lookup(k);
    free(k);
    if (!e) return NULL;
    if (len) *len = e->len;
    return e->val;
}

static int del_ns(const char *ns, const char *key)
{
    if (g_walking) { errno = EBUSY; return -1; }
    char *k = join_key(ns, key);
    struct kv *e = lookup(k);
    free(k);
    if (!e) return -1;
    kv_remove(e);
    changed();
    return 0;
}

int lb_state_del(struct lb_plugin_ctx *ctx, const char *key)
{
    if (del_ns(ctx->name, key) != 0) return -1;
    tell_backend(ctx->name, key, NULL, 0, 0);
    return 0;
}

int lb_state_backend_register(struct lb_plugin_ctx *ctx, const struct lb_state_backend *b, void *ud)
{
    if (g_backend.changed) {
        lb_plugin_fail(ctx, "a state backend is registered already (one at most)");
        return -1;
    }
    if (!b->size) {
        lb_plugin_fail(ctx, "lb_state_backend_register: size is 0 (set it to sizeof(struct lb_state_backend))");
        return -1;
    }
    memset(&g_backend, 0, sizeof g_backend);
    memcpy(&g_backend, b, b->size < sizeof g_backend ? b->size : sizeof g_backend);
    g_backend_ud = ud;
    g_backend_ctx = ctx;
    return 0;
}

void state_forget_plugin(struct lb_plugin_ctx *ctx)
{
    if (g_backend_ctx != ctx) return;
    memset(&g_backend, 0, sizeof g_backend);
    g_backend_ud = NULL;
    g_backend_ctx = NULL;
}

int lb_state_apply(struct lb_plugin_ctx *ctx, const char *ns, const char *key, const char *value, size_t len,
                   uint64_t expires_ms)
{
    (void)ctx;
    if (!ns || !*ns || !key) { errno = EINVAL; return -1; }
    if (g_walking) { errno = EBUSY; return -1; }
    if (!value || (expires_ms && expires_ms <= now_ms())) {
        del_ns(ns, key);   /* absent already is as good */
        return 0;
    }
    return set_ns(ns, key, value, len, expires_ms);
}

struct walk {
    const char *plugin, *prefix;
    size_t plen, prelen;
    lb_state_each_fn fn;
    void *ud;
    uint64_t now;
    size_t visited;
    bool stop;
};

static void walk_cb(struct ht_node *n, void *ud)
{
    struct walk *w = ud;
    struct kv *e = container_of(n, struct kv, node);
    if (w->stop || e->plen != w->plen || memcmp(e->key, w->plugin, w->plen) || expired(e, w->now)) return;
    const char *k = e->key + e->plen + 1;
    if (strncmp(k, w->prefix, w->prelen)) return;
    w->visited++;
    if (w->fn(w->ud, k, e->val, e->len)) w->stop = true;
}

size_t lb_state_each(struct lb_plugin_ctx *ctx, const char *prefix, lb_state_each_fn fn, void *ud)
{
    if (g_walking) return 0;
    ensure_init();
    struct walk w = { ctx->name, prefix ? prefix : "", strlen(ctx->name), prefix ? strlen(prefix) : 0,
                      fn, ud, now_ms(), 0, false };
    g_walking = true;
    ht_each(&g_kv, walk_cb, &w);
    g_walking = false;
    return w.visited;
}

bool lb_state_durable(struct lb_plugin_ctx *ctx)
{
    (void)ctx;
    return g_path != NULL;
}

/* Blocks the loop for one write and fsync: for the rare change that must
 * be on disk before it is acknowledged (token.revoke). */
static int sync_now(void)
{
    collect();
    if (g_change_gen <= g_durable_gen) return 0;
    if ((g_change_gen > g_handed_gen || g_failing) && submit() != 0) return -1;
    int rc = state_writer_wait(g_handed_gen), err = errno;
    collect();
    errno = err;
    return rc;
}

int lb_state_sync(struct lb_plugin_ctx *ctx)
{
    (void)ctx;
    if (!g_path || g_bus.check_only) return 1;      /* nothing is ever written */
    return sync_now();
}

/* ---- loading ------------------------------------------------------------ */

/* One entry line.  Returns 1 if kept, 0 if dropped (expired), -1 with
 * *why set if malformed. */
static int load_entry(json_t *o, uint64_t now, const char **why)
{
    json_t *p = json_object_get(o, "p"), *k = json_object_get(o, "k"), *e = json_object_get(o, "e");
    json_t *v = json_object_get(o, "v"), *x = json_object_get(o, "x");
    if (!json_is_object(o)) { *why = "an entry is not a JSON object"; return -1; }
    if (!json_is_string(p) || !json_string_length(p) || strchr(json_string_value(p), '/'))
        { *why = "\"p\" (the plugin) must be a name"; return -1; }
    if (!json_is_string(k) || !json_string_length(k) || json_string_length(k) > MAX_KEY ||
        strlen(json_string_value(k)) != json_string_length(k))
        { *why = "\"k\" (the key) must be a string of 1 to 1024 bytes"; return -1; }
    if (e && (!json_is_integer(e) || json_integer_value(e) < 0)) { *why = "\"e\" must be an integer (ms)"; return -1; }
    if (!json_is_string(v) && !json_is_string(x)) { *why = "the entry has no \"v\" or \"x\" string"; return -1; }
    uint64_t exp = e ? (uint64_t)json_integer_value(e) : 0;
    size_t len = 0;
    char *val = json_is_string(v) ? xstrndup(json_string_value(v), json_string_length(v))
                                  : unhex(json_string_value(x), json_string_length(x), &len);
    if (!val) { *why = "\"x\" is not hex"; return -1; }
    if (json_is_string(v)) len = json_string_length(v);
    if (exp && exp <= now) { free(val); return 0; }
    size_t ll = 0;
    char *line = encode_line(json_string_value(p), json_string_value(k), val, len, exp, &ll);
    if (!line) { free(val); *why = "\"k\" is not UTF-8"; return -1; }
    put(join_key(json_string_value(p), json_string_value(k)), json_string_length(p), val, len, exp, line, ll);
    return 1;
}

static int load_header(json_t *o, const char **why)
{
    json_t *f = json_object_get(o, "lexbus-state");
    if (!f && json_object_get(o, "revoked")) {
        *why = "this is the state file of an older [plugin tokens]: give [bus] state_file another path, and "
               "[plugin tokens] imports this one from its state_file";
        return -1;
    }
    if (!json_is_integer(f)) { *why = "line 1 is not the {\"lexbus-state\":1} header"; return -1; }
    if (json_integer_value(f) != FORMAT) { *why = "format version unknown (written by a newer lexbus?)"; return -1; }
    return 0;
}

/* Reads every line.  Returns 0, or -1 with err ("file:line: why"). */
static int load_file(FILE *f, const char *path, char *err, size_t errlen)
{
    char *line = NULL;
    size_t cap = 0, kept = 0, dropped = 0;
    ssize_t n;
    int lineno = 0, rc = 0;
    uint64_t now = now_ms();
    while (!rc && (n = getline(&line, &cap, f)) >= 0) {
        lineno++;
        json_error_t je;
        const char *why = NULL;
        json_t *o = json_loadb(line, (size_t)n, JSON_ALLOW_NUL, &je);
        int r = !o ? (why = je.text, -1) : lineno == 1 ? load_header(o, &why) : load_entry(o, now, &why);
        json_decref(o);
        if (r < 0) {
            snprintf(err, errlen, "%s:%d: state_file is corrupt (%s): repair it, or move it away to start with an "
                     "empty state (plugins' state, such as token revocations, would be lost)", path, lineno, why);
            rc = -1;
        }
        kept += r == 1;
        dropped += r == 0 && lineno > 1;
    }
    free(line);
    if (!rc && ferror(f)) { snprintf(err, errlen, "cannot read state_file %s: %s", path, strerror(errno)); rc = -1; }
    if (!rc && !lineno) { snprintf(err, errlen, "%s: state_file is empty (no header line): remove it to start with an empty state", path); rc = -1; }
    if (!rc) log_info("state", "%zu entries loaded from %s (%zu expired, dropped)", kept, path, dropped);
    return rc;
}

/* Said at start-up rather than at the first write: a revocation that
 * cannot be written is refused later. */
static int check_dir(const char *path, bool production, char *err, size_t errlen)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash) *(slash == dir ? slash + 1 : slash) = 0;
    else snprintf(dir, sizeof dir, ".");
    if (access(dir, W_OK | X_OK) == 0) return 0;
    if (production) {
        snprintf(err, errlen, "state_file %s: cannot write in %s: %s", path, dir, strerror(errno));
        return -1;
    }
    log_warn("state", "state_file %s: cannot write in %s: %s (state will not survive a restart)", path, dir,
             strerror(errno));
    return 0;
}

/* Whether another process holds a lock on fd's file; *pid is the holder
 * the kernel names, else the one the holder wrote into the file (0 if
 * unknown: an NFS server may not say). */
static bool locked_by(int fd, long *pid)
{
    struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
    if (fcntl(fd, F_GETLK, &fl) != 0 || fl.l_type == F_UNLCK) return false;
    *pid = fl.l_pid;
    if (*pid <= 0) {
        char buf[32] = "";
        ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
        *pid = n > 0 ? strtol(buf, NULL, 10) : 0;
    }
    return true;
}

/* Two daemons on one state_file would each replace the other's snapshots
 * (a revocation written by one vanishes at the other's next write).  The
 * state file itself is replaced by rename at every write, so the lock is
 * on a companion file, <state_file>.lock, which is never removed: an fcntl
 * lock dies with the process holding it, so a lock file left by a crash
 * blocks nobody.  fcntl rather than flock: F_GETLK names the holder, and
 * NFS honours it.  `-t` only looks, so it can check a running bus's file. */
static int lock_state(const char *path, bool production, char *err, size_t errlen)
{
    char lock[4096];
    if ((size_t)snprintf(lock, sizeof lock, "%s.lock", path) >= sizeof lock) {
        snprintf(err, errlen, "state_file %s: path too long", path);
        return -1;
    }
    int fd = open(lock, (g_bus.check_only ? O_RDONLY : O_RDWR | O_CREAT) | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0 && g_bus.check_only) return 0;          /* no lock file: no daemon has run on it */
    if (fd < 0) {
        if (production) {
            snprintf(err, errlen, "cannot lock state_file %s: %s: %s", path, lock, strerror(errno));
            return -1;
        }
        log_warn("state", "cannot lock state_file %s (%s: %s): nothing stops another lexbusd from using it too",
                 path, lock, strerror(errno));
        return 0;
    }
    long pid = 0;
    if (g_bus.check_only) {
        if (locked_by(fd, &pid))
            log_warn("state", "state_file %s is in use by lexbusd pid %ld: a second daemon on it would not start",
                     path, pid);
        close(fd);
        return 0;
    }
    struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
    if (fcntl(fd, F_SETLK, &fl) != 0) {
        int e = errno;
        if ((e == EACCES || e == EAGAIN) && locked_by(fd, &pid))
            snprintf(err, errlen, "state_file %s is in use by another lexbusd (pid %ld holds the lock on %s): "
                     "each daemon needs its own state_file", path, pid, lock);
        else
            snprintf(err, errlen, "cannot lock state_file %s: %s: %s", path, lock, strerror(e));
        close(fd);
        return -1;
    }
    /* For people (and the fallback above): the lock is what counts. */
    char text[32];
    int n = snprintf(text, sizeof text, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, text, (size_t)n, 0) != n)
        log_debug("state", "cannot write the pid into %s: %s", lock, strerror(errno));
    g_lock_fd = fd;
    return 0;
}

int state_open(const char *path, uint64_t max_bytes, bool production, char *err, size_t errlen)
{
    ensure_init();
    g_max = max_bytes;
    if (!path) return 0;
    g_path = xstrdup(path);
    if (lock_state(path, production, err, errlen)) return -1;   /* before reading: the holder may be writing */
    FILE *f = fopen(path, "re");
    if (!f && errno != ENOENT) { snprintf(err, errlen, "cannot read state_file %s: %s", path, strerror(errno)); return -1; }
    int rc = f ? load_file(f, path, err, errlen) : 0;
    if (f) fclose(f);
    if (!rc) rc = check_dir(path, production, err, errlen);
    if (!rc && g_bytes > g_max)
        log_warn("state", "state_file %s holds %llu bytes, more than state_max (%llu): new entries are refused until "
                 "it shrinks", path, (unsigned long long)g_bytes, (unsigned long long)g_max);
    return rc;
}

void state_set_max(uint64_t max_bytes) { g_max = max_bytes; }

static void free_cb(struct ht_node *n, void *ud) { (void)ud; kv_free(container_of(n, struct kv, node)); }

void state_close(void)
{
    if (g_path && !g_bus.check_only && sync_now() != 0)
        log_error("state", "state changes since the last write are lost: cannot write state_file %s: %s", g_path,
                  strerror(errno));
    state_writer_stop();
    if (g_timer) event_free(g_timer);
    g_timer = NULL;
    if (g_init) {
        ht_each(&g_kv, free_cb, NULL);
        ht_free(&g_kv);
        g_init = false;
    }
    free(g_path);
    g_path = NULL;
    g_bytes = 0;
    if (g_lock_fd >= 0) close(g_lock_fd);   /* after the last write */
    g_lock_fd = -1;
}
