/*
 * The plugin host: loading (dlopen, ABI and descriptor checks), the
 * configuration getters of plugin.h, reloads in two steps, unloading.
 *
 * Config strings are interned: a value handed to a plugin stays valid
 * until exit even after the configuration it came from is freed, so a
 * reload frees the old configuration instead of keeping every one ever
 * read, and reloading the same file a thousand times costs nothing.
 */
#include "config.h"
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdarg.h>
#include <unistd.h>
#include "plugin_host.h"
#include "hooks.h"
#include "local.h"
#include "state.h"
#include "stats.h"
#include "sysmethod.h"
#include "log.h"
#include "util.h"

/* plugins_load_all() is running: later sections are not in g_bus.plugins yet. */
static bool g_loading;

/* ---- interning ----------------------------------------------------- */

struct interned { struct ht_node node; size_t len; char s[]; };
static struct htable g_intern;

struct blob { const char *p; size_t n; };

static bool intern_eq(const struct ht_node *node, const void *key)
{
    const struct interned *i = container_of(node, struct interned, node);
    const struct blob *b = key;
    return i->len == b->n && memcmp(i->s, b->p, b->n) == 0;
}

/* A copy of n bytes (plus a NUL) that lives until exit, shared by equal
 * contents. */
static const void *intern(const void *p, size_t n)
{
    if (!g_intern.buckets) ht_init(&g_intern, 256);
    struct blob b = { p, n };
    uint64_t h = hash_bytes(p, n);
    struct ht_node *node = ht_find(&g_intern, h, intern_eq, &b);
    if (node) return container_of(node, struct interned, node)->s;
    struct interned *i = xmalloc(sizeof *i + n + 1);
    i->len = n;
    memcpy(i->s, p, n);
    i->s[n] = 0;
    ht_insert(&g_intern, &i->node, h);
    return i->s;
}

static const char *intern_str(const char *s) { return intern(s, strlen(s)); }

/* An array of interned strings, itself interned (by the pointers). */
static const char *const *intern_array(const char **v, size_t n)
{
    for (size_t i = 0; i < n; i++) v[i] = intern_str(v[i]);
    /* Aligned for pointers: the blob header is a size_t. */
    return intern(v, n * sizeof *v);
}

static void free_interned(struct ht_node *n, void *ud) { (void)ud; free(container_of(n, struct interned, node)); }

/* ---- configuration getters ----------------------------------------- */

static struct conf_entry *get_entry(struct lb_plugin_ctx *ctx, const char *key, int *rc)
{
    bool dup;
    struct conf_entry *e = ctx->sec ? conf_get(ctx->sec, key, &dup) : NULL;
    *rc = 0;
    if (e && dup) {
        lb_plugin_fail(ctx, "%s:%d: key '%s' given more than once", g_bus.conf->path, e->line, key);
        *rc = -1;
    }
    return e;
}

static int bad_value(struct lb_plugin_ctx *ctx, struct conf_entry *e, const char *expect)
{
    lb_plugin_fail(ctx, "%s:%d: bad value '%s' for '%s' (expected %s)",
                   g_bus.conf->path, e->line, e->value, e->key, expect);
    return -1;
}

int lb_conf_str(struct lb_plugin_ctx *ctx, const char *key, const char *def, const char **out)
{
    int rc;
    struct conf_entry *e = get_entry(ctx, key, &rc);
    if (rc) return rc;
    *out = e ? intern_str(e->value) : def;
    return e ? 0 : 1;
}

int lb_conf_bool(struct lb_plugin_ctx *ctx, const char *key, bool def, bool *out)
{
    int rc;
    struct conf_entry *e = get_entry(ctx, key, &rc);
    if (rc) return rc;
    if (!e) { *out = def; return 1; }
    if (parse_bool(e->value, out)) return bad_value(ctx, e, "yes or no");
    return 0;
}

int lb_conf_int(struct lb_plugin_ctx *ctx, const char *key, long long def, long long min, long long max, long long *out)
{
    int rc;
    struct conf_entry *e = get_entry(ctx, key, &rc);
    if (rc) return rc;
    if (!e) { *out = def; return 1; }
    char *end;
    long long v = strtoll(e->value, &end, 0);
    if (end == e->value || *end || v < min || v > max) {
        char expect[96];
        snprintf(expect, sizeof expect, "an integer from %lld to %lld", min, max);
        return bad_value(ctx, e, expect);
    }
    *out = v;
    return 0;
}

int lb_conf_size(struct lb_plugin_ctx *ctx, const char *key, uint64_t def, uint64_t *out)
{
    int rc;
    struct conf_entry *e = get_entry(ctx, key, &rc);
    if (rc) return rc;
    if (!e) { *out = def; return 1; }
    if (parse_size(e->value, out)) return bad_value(ctx, e, "a size such as 4096, 64K, 1M or 2G");
    return 0;
}

int lb_conf_ms(struct lb_plugin_ctx *ctx, const char *key, uint64_t def_ms, uint64_t *out_ms)
{
    int rc;
    struct conf_entry *e = get_entry(ctx, key, &rc);
    if (rc) return rc;
    if (!e) { *out_ms = def_ms; return 1; }
    if (parse_duration_ms(e->value, out_ms)) return bad_value(ctx, e, "a duration such as 500ms, 30s, 5m or 1h");
    return 0;
}

static size_t collect(struct lb_plugin_ctx *ctx, const char *key, const char *const **out)
{
    size_t n = 0, cap = ctx->sec ? ctx->sec->n : 0;
    const char **v = cap ? xcalloc(cap, sizeof *v) : NULL;
    for (size_t i = 0; i < cap; i++) {
        struct conf_entry *e = &ctx->sec->e[i];
        if (key && strcmp(e->key, key) != 0) continue;
        if (key) e->used = true;
        v[n++] = key ? e->value : e->key;
    }
    *out = n ? intern_array(v, n) : NULL;
    free(v);
    return n;
}

size_t lb_conf_list(struct lb_plugin_ctx *ctx, const char *key, const char *const **out) { return collect(ctx, key, out); }
size_t lb_conf_keys(struct lb_plugin_ctx *ctx, const char *const **out) { return collect(ctx, NULL, out); }

const char *lb_conf_where_nth(struct lb_plugin_ctx *ctx, const char *key, size_t nth, char *buf, size_t len)
{
    int line = ctx->sec ? ctx->sec->line : 0;
    for (size_t i = 0; ctx->sec && i < ctx->sec->n; i++)
        if (strcmp(ctx->sec->e[i].key, key) == 0 && nth-- == 0) { line = ctx->sec->e[i].line; break; }
    snprintf(buf, len, "%s:%d", g_bus.conf->path, line);
    return buf;
}

const char *lb_conf_where(struct lb_plugin_ctx *ctx, const char *key, char *buf, size_t len)
{
    return lb_conf_where_nth(ctx, key, 0, buf, len);
}

int lb_conf_encoding(struct lb_plugin_ctx *ctx, enum lb_encoding *out)
{
    const char *v = "auto";
    int rc = lb_conf_str(ctx, "encoding", "auto", &v);
    if (rc < 0) return -1;
    if (!strcmp(v, "auto")) *out = LB_ENCODING_AUTO;
    else if (!strcmp(v, "json")) *out = LB_ENCODING_JSON;
    else if (!strcmp(v, "msgpack")) *out = LB_ENCODING_MSGPACK;
    else {
        char where[300];
        lb_plugin_fail(ctx, "%s: bad value '%s' for 'encoding' (expected auto, json or msgpack)",
                       lb_conf_where(ctx, "encoding", where, sizeof where), v);
        return -1;
    }
    return rc;
}

int lb_parse_duration_ms(const char *s, uint64_t *out_ms) { return parse_duration_ms(s, out_ms); }

const char *lb_conf_path(struct lb_plugin_ctx *ctx, const char *path)
{
    (void)ctx;
    char *r = conf_resolve(g_bus.conf, path);
    const char *i = intern_str(r);
    free(r);
    return i;
}

int lb_plugin_position(struct lb_plugin_ctx *ctx, const char *name)
{
    (void)ctx;
    if (g_loading) {
        int pos = 0;
        for (size_t i = 0; i < g_bus.conf->n; i++) {
            if (!g_bus.conf->s[i].name) continue;
            if (strcmp(g_bus.conf->s[i].name, name) == 0) return pos;
            pos++;
        }
        return -1;
    }
    for (size_t i = 0; i < g_bus.n_plugins; i++) {
        const struct lb_plugin_ctx *p = g_bus.plugins[i].ctx;
        if (p->loaded && strcmp(p->name, name) == 0) return (int)p->index;
    }
    return -1;
}

/* ---- stats and reopen ---------------------------------------------- */

int lb_stats_register(struct lb_plugin_ctx *ctx, lb_stats_fn fn, void *ud)
{
    ctx->stats = fn;
    ctx->stats_ud = ud;
    return 0;
}

static bool counter_name_ok(const char *s)
{
    if (!*s) return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_')) return false;
    return true;
}

int lb_counter_register(struct lb_plugin_ctx *ctx, const char *name, const char *help, const uint64_t *value, bool gauge)
{
    if (!name || !counter_name_ok(name) || !value) {
        lb_plugin_fail(ctx, "lb_counter_register: a counter name is [a-z0-9_]+ ('%s' is not)", name ? name : "(null)");
        return -1;
    }
    stats_counter_add(ctx, name, help, value, gauge);
    return 0;
}

int lb_reopen_register(struct lb_plugin_ctx *ctx, void (*fn)(void *ud), void *ud)
{
    ctx->reopen = fn;
    ctx->reopen_ud = ud;
    return 0;
}

int lb_drain_register(struct lb_plugin_ctx *ctx, void (*fn)(void *ud), void *ud)
{
    ctx->drain = fn;
    ctx->drain_ud = ud;
    return 0;
}

void plugins_drain_all(void)
{
    for (size_t i = 0; i < g_bus.n_plugins; i++) {
        struct lb_plugin_ctx *ctx = g_bus.plugins[i].ctx;
        if (ctx->loaded && ctx->drain) ctx->drain(ctx->drain_ud);
    }
}

void plugins_reopen_all(void)
{
    for (size_t i = 0; i < g_bus.n_plugins; i++) {
        struct lb_plugin_ctx *ctx = g_bus.plugins[i].ctx;
        if (ctx->loaded && ctx->reopen) ctx->reopen(ctx->reopen_ud);
    }
}

void plugin_stats_into(json_t *obj)
{
    const struct plugin_counter *pc;
    size_t n = stats_counters(&pc);
    for (size_t i = 0; i < g_bus.n_plugins; i++) {
        struct lb_plugin_ctx *ctx = g_bus.plugins[i].ctx;
        if (!ctx->loaded) continue;
        json_t *v = ctx->stats ? ctx->stats(ctx->stats_ud) : NULL;
        for (size_t k = 0; k < n; k++) {
            if (pc[k].ctx != ctx) continue;
            if (!v) v = json_object();
            if (json_is_object(v)) json_object_set_new(v, pc[k].name, json_integer((json_int_t)*pc[k].value));
        }
        if (v) json_object_set_new(obj, ctx->name, v);
    }
}

/* ---- loading ------------------------------------------------------- */

static void *open_plugin(const char *dir, const char *name, char *why, size_t whylen)
{
    char path[4096];
    why[0] = 0;
    for (int i = 0; i < 2; i++) {
        if (i == 0) snprintf(path, sizeof path, "%s/%s.so", dir, name);
        else snprintf(path, sizeof path, "%s/%s/%s.so", dir, name, name);
        if (access(path, F_OK) != 0) continue;
        void *dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
        if (dl) return dl;
        snprintf(why, whylen, "cannot load %s: %s", path, dlerror());
        return NULL;
    }
    snprintf(why, whylen, "no %s.so in plugin_dir %s (looked for %s/%s.so and %s/%s/%s.so)",
             name, dir, dir, name, dir, name, name);
    return NULL;
}

/* What a descriptor must be for this lexbusd; NULL when it is fine. */
static const char *descriptor_problem(const struct lb_plugin *d, const char *name, char *buf, size_t len)
{
    if (d->abi != LB_PLUGIN_ABI) {
        snprintf(buf, len, "plugin ABI mismatch: plugin has ABI %d, lexbusd needs %d (rebuild the plugin against "
                 "this lexbus's include/lexbus/plugin.h%s)", d->abi, LB_PLUGIN_ABI,
                 d->abi == 1 ? "; doc/plugins.md says what changed in ABI 2" : "");
        return buf;
    }
    if (d->size < offsetof(struct lb_plugin, reserved)) {
        snprintf(buf, len, "descriptor of %u bytes is too small for ABI %d", d->size, LB_PLUGIN_ABI);
        return buf;
    }
    if (!d->name || strcmp(d->name, name) != 0 || !d->load) {
        snprintf(buf, len, "descriptor names '%s' or lacks load()", d->name ? d->name : "(null)");
        return buf;
    }
    if (d->reload && !d->reload_done) {
        snprintf(buf, len, "descriptor has reload() but no reload_done(): reloads are all or nothing");
        return buf;
    }
    return NULL;
}

/* Everything a plugin registered with the host goes with it. */
static void forget_plugin(struct lb_plugin_ctx *ctx)
{
    local_close_plugin(ctx);
    hooks_remove_plugin(ctx);
    sysmethods_remove_plugin(ctx);
    stats_counters_remove(ctx);
    state_forget_plugin(ctx);
    ctx->stats = NULL;
    ctx->reopen = NULL;
    ctx->drain = NULL;
}

static int load_one(struct lb_plugin_ctx *ctx)
{
    const char *path = g_bus.conf->path;
    char why[4600];
    ctx->dl = open_plugin(g_bus.set.plugin_dir, ctx->name, why, sizeof why);
    if (!ctx->dl) {
        log_error("plugins", "%s:%d: [plugin %s] %s", path, ctx->sec->line, ctx->name, why);
        return -1;
    }
    const struct lb_plugin *d = dlsym(ctx->dl, "lexbus_plugin");
    if (!d) {
        log_error("plugins", "%s:%d: [plugin %s] not a lexbus plugin (no 'lexbus_plugin' symbol)", path,
                  ctx->sec->line, ctx->name);
        return -1;
    }
    if (descriptor_problem(d, ctx->name, why, sizeof why)) {
        log_error("plugins", "%s:%d: [plugin %s] %s", path, ctx->sec->line, ctx->name, why);
        return -1;
    }
    ctx->desc = d;
    if (d->load(ctx) != 0 || ctx->failed) {
        log_error("plugins", "%s:%d: [plugin %s] failed to load: %s", path, ctx->sec->line, ctx->name,
                  ctx->fail[0] ? ctx->fail : "(no reason given)");
        if (d->unload) d->unload(ctx);
        forget_plugin(ctx);
        return -1;
    }
    ctx->loaded = true;
    struct conf_entry *u = conf_unused(ctx->sec);
    if (u) {
        log_error("plugins", "%s:%d: [plugin %s] unknown key '%s'", path, u->line, ctx->name, u->key);
        return -1;
    }
    log_info("plugins", "loaded %s %s", ctx->name, d->version ? d->version : "");
    return 0;
}

static int load_in_order(void)
{
    struct conf *c = g_bus.conf;
    size_t n = 0;
    for (size_t i = 0; i < c->n; i++) if (c->s[i].name) n++;
    g_bus.plugins = xcalloc(n ? n : 1, sizeof *g_bus.plugins);
    g_bus.n_plugins = 0;
    for (size_t i = 0; i < c->n; i++) {
        if (!c->s[i].name) continue;
        struct lb_plugin_ctx *ctx = xcalloc(1, sizeof *ctx);
        ctx->index = g_bus.n_plugins;
        ctx->name = xstrdup(c->s[i].name);
        ctx->sec = &c->s[i];
        g_bus.plugins[g_bus.n_plugins++].ctx = ctx;
    }
    /* Every context exists before the first load: per-connection slots
     * and hook order need the whole list. */
    for (size_t i = 0; i < g_bus.n_plugins; i++)
        if (load_one(g_bus.plugins[i].ctx) != 0) return -1;
    return 0;
}

int plugins_load_all(void)
{
    g_loading = true;
    int rc = load_in_order();
    g_loading = false;
    return rc;
}

void plugins_unload_all(void)
{
    /* Reverse order: policies loaded after a transport may hold state that
     * refers to it. */
    for (size_t i = g_bus.n_plugins; i-- > 0;) {
        struct lb_plugin_ctx *ctx = g_bus.plugins[i].ctx;
        if (ctx->loaded && ctx->desc->unload) ctx->desc->unload(ctx);
        if (ctx->loaded) forget_plugin(ctx);
        ctx->loaded = false;
    }
    for (size_t i = 0; i < g_bus.n_plugins; i++) {
        struct lb_plugin_ctx *ctx = g_bus.plugins[i].ctx;
        /* Sanitizer builds keep the code mapped so leak reports can still
         * symbolize frames from plugins. */
#if !defined(__SANITIZE_ADDRESS__)
        if (ctx->dl) dlclose(ctx->dl);
#endif
        free(ctx->name);
        free(ctx);
    }
    free(g_bus.plugins);
    g_bus.plugins = NULL;
    g_bus.n_plugins = 0;
    hooks_free();
}

void plugin_host_free(void)
{
    if (g_intern.buckets) {
        ht_each(&g_intern, free_interned, NULL);
        ht_free(&g_intern);
    }
}

/* ---- reload -------------------------------------------------------- */

static struct conf_section *section_in(struct conf *c, const char *name)
{
    for (size_t k = 0; k < c->n; k++)
        if (c->s[k].name && strcmp(c->s[k].name, name) == 0) return &c->s[k];
    return NULL;
}

static bool sections_differ(const struct conf_section *a, const struct conf_section *b)
{
    if (a->n != b->n) return true;
    for (size_t i = 0; i < a->n; i++)
        if (strcmp(a->e[i].key, b->e[i].key) || strcmp(a->e[i].value, b->e[i].value)) return true;
    return false;
}

static void note(char *buf, size_t len, const char *fmt, const char *name)
{
    size_t n = strlen(buf);
    if (n < len) snprintf(buf + n, len - n, fmt, n ? ", " : "", name);
}

/* One plugin's step 1.  Returns 0, or -1 with the cause in err. */
static int prepare_one(struct lb_plugin_ctx *ctx, struct conf_section *sec, const char *path,
                       char *err, size_t errlen, char *kept, size_t keptlen)
{
    struct conf_section *old = ctx->sec;
    if (!ctx->desc->reload) {
        if (sections_differ(old, sec)) note(kept, keptlen, "%s[plugin %s]", ctx->name);
        for (size_t k = 0; k < sec->n; k++) sec->e[k].used = true;
        ctx->sec = sec;
        return 0;
    }
    ctx->sec = sec;
    ctx->failed = false;
    ctx->fail[0] = 0;
    if (ctx->desc->reload(ctx) != 0 || ctx->failed) {
        snprintf(err, errlen, "[plugin %s] reload failed: %s", ctx->name, ctx->fail[0] ? ctx->fail : "(no reason given)");
        return -1;
    }
    ctx->staged = true;
    struct conf_entry *u = conf_unused(sec);
    if (u) {
        snprintf(err, errlen, "%s:%d: [plugin %s] unknown key '%s'", path, u->line, ctx->name, u->key);
        return -1;
    }
    return 0;
}

static struct conf_section **g_old_secs;   /* for a failed step 1 */

int plugins_reload_prepare(struct conf *newconf, char *err, size_t errlen, char *kept, size_t keptlen)
{
    free(g_old_secs);
    g_old_secs = xcalloc(g_bus.n_plugins ? g_bus.n_plugins : 1, sizeof *g_old_secs);
    for (size_t i = 0; i < g_bus.n_plugins; i++) g_old_secs[i] = g_bus.plugins[i].ctx->sec;
    for (size_t k = 0; k < newconf->n; k++) {
        bool known = false;
        for (size_t i = 0; newconf->s[k].name && i < g_bus.n_plugins; i++)
            known |= strcmp(g_bus.plugins[i].ctx->name, newconf->s[k].name) == 0;
        if (newconf->s[k].name && !known) note(kept, keptlen, "%s[plugin %s] (new)", newconf->s[k].name);
    }
    for (size_t i = 0; i < g_bus.n_plugins; i++) {
        struct lb_plugin_ctx *ctx = g_bus.plugins[i].ctx;
        if (!ctx->loaded) continue;
        struct conf_section *sec = section_in(newconf, ctx->name);
        if (!sec) {
            note(kept, keptlen, "%s[plugin %s] (removed)", ctx->name);
            continue;
        }
        if (prepare_one(ctx, sec, newconf->path, err, errlen, kept, keptlen) != 0) {
            plugins_reload_finish(false);
            return -1;
        }
    }
    return 0;
}

void plugins_reload_finish(bool commit)
{
    for (size_t i = 0; i < g_bus.n_plugins; i++) {
        struct lb_plugin_ctx *ctx = g_bus.plugins[i].ctx;
        if (ctx->staged) ctx->desc->reload_done(ctx, commit);
        ctx->staged = false;
        if (!commit && g_old_secs) ctx->sec = g_old_secs[i];
    }
    free(g_old_secs);
    g_old_secs = NULL;
}
