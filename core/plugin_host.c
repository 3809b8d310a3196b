#include "config.h"
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdarg.h>
#include <unistd.h>
#include "plugin_host.h"
#include "policy.h"
#include "state.h"
#include "log.h"
#include "util.h"

bool g_check_only;
/* plugins_load_all() is running: later sections are not in g_bus.plugins yet. */
static bool g_loading;

static struct sys_method *g_methods;
static size_t g_n_methods;

struct stats_src { char *plugin; lb_stats_fn fn; void *ud; };
static struct stats_src *g_stats;
static size_t g_n_stats;

/* ---- failure and logging ------------------------------------------- */

void lb_plugin_fail(struct lb_plugin_ctx *ctx, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (!ctx->failed) vsnprintf(ctx->fail, sizeof ctx->fail, fmt, ap);
    va_end(ap);
    ctx->failed = true;
}

void lb_log(struct lb_plugin_ctx *ctx, enum lb_log_level lvl, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vmsg(lvl, ctx ? ctx->name : "plugin", fmt, ap);
    va_end(ap);
}

/* ---- configuration getters ----------------------------------------- */

static struct conf_entry *get_entry(struct lb_plugin_ctx *ctx, const char *key, int *rc)
{
    bool dup;
    struct conf_entry *e = conf_get(ctx->sec, key, &dup);
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
    *out = e ? e->value : def;
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

int lb_conf_int(struct lb_plugin_ctx *ctx, const char *key, long long def,
                long long min, long long max, long long *out)
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

static void own(struct lb_plugin_ctx *ctx, void *p)
{
    ctx->owned = xrealloc(ctx->owned, (ctx->n_owned + 1) * sizeof *ctx->owned);
    ctx->owned[ctx->n_owned++] = p;
}

size_t lb_conf_list(struct lb_plugin_ctx *ctx, const char *key, const char *const **out)
{
    size_t n = 0;
    const char **v = NULL;
    for (size_t i = 0; ctx->sec && i < ctx->sec->n; i++) {
        struct conf_entry *e = &ctx->sec->e[i];
        if (strcmp(e->key, key) != 0) continue;
        e->used = true;
        v = xrealloc(v, (n + 1) * sizeof *v);
        v[n++] = e->value;
    }
    if (v) own(ctx, v);
    *out = v;
    return n;
}

size_t lb_conf_keys(struct lb_plugin_ctx *ctx, const char *const **out)
{
    size_t n = ctx->sec ? ctx->sec->n : 0;
    const char **v = n ? xcalloc(n, sizeof *v) : NULL;
    for (size_t i = 0; i < n; i++) v[i] = ctx->sec->e[i].key;
    if (v) own(ctx, v);
    *out = v;
    return n;
}

const char *lb_conf_where(struct lb_plugin_ctx *ctx, const char *key, char *buf, size_t len)
{
    int line = ctx->sec ? ctx->sec->line : 0;
    for (size_t i = 0; ctx->sec && i < ctx->sec->n; i++)
        if (strcmp(ctx->sec->e[i].key, key) == 0) { line = ctx->sec->e[i].line; break; }
    snprintf(buf, len, "%s:%d", g_bus.conf->path, line);
    return buf;
}

int lb_parse_duration_ms(const char *s, uint64_t *out_ms) { return parse_duration_ms(s, out_ms); }

const char *lb_conf_path(struct lb_plugin_ctx *ctx, const char *path)
{
    char *r = conf_resolve(g_bus.conf, path);
    own(ctx, r);
    return r;
}

const char *lb_bus_node(struct lb_plugin_ctx *ctx) { (void)ctx; return g_bus.set.node; }
bool lb_bus_production(struct lb_plugin_ctx *ctx) { (void)ctx; return g_bus.set.production; }
bool lb_check_only(struct lb_plugin_ctx *ctx) { (void)ctx; return g_check_only; }
const char *lb_bus_system_service(struct lb_plugin_ctx *ctx) { (void)ctx; return g_bus.set.system_service; }
struct event_base *lb_event_base(struct lb_plugin_ctx *ctx) { (void)ctx; return g_bus.base; }
void *lb_plugin_data(struct lb_plugin_ctx *ctx) { return ctx->data; }
void lb_plugin_set_data(struct lb_plugin_ctx *ctx, void *data) { ctx->data = data; }
uint64_t lb_now_ms(void) { return now_ms(); }
bool lb_valid_service_name(const char *p, size_t n) { return p && valid_service_name(p, n); }

/* ---- system methods and stats -------------------------------------- */

static int add_method(const char *method, lb_method_fn fn, void *ud)
{
    if (sysmethod_find(method, strlen(method))) return -1;
    g_methods = xrealloc(g_methods, (g_n_methods + 1) * sizeof *g_methods);
    g_methods[g_n_methods++] = (struct sys_method){ xstrdup(method), fn, ud };
    return 0;
}

int lb_system_method_register(struct lb_plugin_ctx *ctx, const char *method, lb_method_fn fn, void *ud)
{
    if (!valid_method_name(method, strlen(method)) || add_method(method, fn, ud)) {
        lb_plugin_fail(ctx, "cannot register system method '%s' (invalid or taken)", method);
        return -1;
    }
    return 0;
}

void sysmethod_add_builtin(const char *name, lb_method_fn fn) { add_method(name, fn, NULL); }

const struct sys_method *sysmethod_find(const char *name, size_t n)
{
    for (size_t i = 0; i < g_n_methods; i++)
        if (strlen(g_methods[i].name) == n && memcmp(g_methods[i].name, name, n) == 0)
            return &g_methods[i];
    return NULL;
}

json_t *sysmethod_names(void)
{
    json_t *a = json_array();
    for (size_t i = 0; i < g_n_methods; i++) json_array_append_new(a, json_string(g_methods[i].name));
    return a;
}

void sysmethods_free(void)
{
    for (size_t i = 0; i < g_n_methods; i++) free(g_methods[i].name);
    free(g_methods);
    g_methods = NULL;
    g_n_methods = 0;
    for (size_t i = 0; i < g_n_stats; i++) free(g_stats[i].plugin);
    free(g_stats);
    g_stats = NULL;
    g_n_stats = 0;
}

int lb_stats_register(struct lb_plugin_ctx *ctx, lb_stats_fn fn, void *ud)
{
    g_stats = xrealloc(g_stats, (g_n_stats + 1) * sizeof *g_stats);
    g_stats[g_n_stats++] = (struct stats_src){ xstrdup(ctx->name), fn, ud };
    return 0;
}

int lb_reopen_register(struct lb_plugin_ctx *ctx, void (*fn)(void *ud), void *ud)
{
    ctx->reopen = fn;
    ctx->reopen_ud = ud;
    return 0;
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
    for (size_t i = 0; i < g_n_stats; i++) {
        json_t *v = g_stats[i].fn(g_stats[i].ud);
        if (v) json_object_set_new(obj, g_stats[i].plugin, v);
    }
}

/* ---- loading ------------------------------------------------------- */

static void *open_plugin(const char *dir, const char *name, char *why, size_t whylen)
{
    char path[4096];
    const char *fmts[] = { "%s/%s.so", "%s/%s/%s.so" };
    why[0] = 0;
    for (int i = 0; i < 2; i++) {
        if (i == 0) snprintf(path, sizeof path, fmts[0], dir, name);
        else snprintf(path, sizeof path, fmts[1], dir, name, name);
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
        log_error("plugins", "%s:%d: [plugin %s] not a lexbus plugin (no 'lexbus_plugin' symbol)",
                  path, ctx->sec->line, ctx->name);
        return -1;
    }
    if (d->abi != LB_PLUGIN_ABI) {
        log_error("plugins", "%s:%d: [plugin %s] plugin ABI mismatch: plugin has ABI %d, lexbusd needs %d (rebuild the plugin)",
                  path, ctx->sec->line, ctx->name, d->abi, LB_PLUGIN_ABI);
        return -1;
    }
    if (!d->name || strcmp(d->name, ctx->name) != 0 || !d->load) {
        log_error("plugins", "%s:%d: [plugin %s] descriptor names '%s' or lacks load()",
                  path, ctx->sec->line, ctx->name, d->name ? d->name : "(null)");
        return -1;
    }
    ctx->desc = d;
    if (d->load(ctx) != 0 || ctx->failed) {
        log_error("plugins", "%s:%d: [plugin %s] failed to load: %s", path, ctx->sec->line, ctx->name,
                  ctx->fail[0] ? ctx->fail : "(no reason given)");
        if (d->unload) d->unload(ctx);
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
    g_bus.plugins = xcalloc(n, sizeof *g_bus.plugins);
    g_bus.n_plugins = 0;
    for (size_t i = 0; i < c->n; i++) {
        if (!c->s[i].name) continue;
        struct lb_plugin_ctx *ctx = xcalloc(1, sizeof *ctx);
        ctx->index = g_bus.n_plugins;
        ctx->name = xstrdup(c->s[i].name);
        ctx->sec = &c->s[i];
        g_bus.plugins[g_bus.n_plugins++].ctx = ctx;
        if (load_one(ctx) != 0) return -1;
    }
    return 0;
}

int plugins_load_all(void)
{
    g_loading = true;
    int rc = load_in_order();
    g_loading = false;
    return rc;
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

bool plugin_loaded(const char *name)
{
    for (size_t i = 0; i < g_bus.n_plugins; i++)
        if (g_bus.plugins[i].ctx->loaded && strcmp(g_bus.plugins[i].ctx->name, name) == 0) return true;
    return false;
}

static void free_owned(struct lb_plugin_ctx *ctx)
{
    for (size_t i = 0; i < ctx->n_owned; i++) free(ctx->owned[i]);
    free(ctx->owned);
    ctx->owned = NULL;
    ctx->n_owned = 0;
}

void plugins_unload_all(void)
{
    /* Reverse order: policies loaded after a transport may hold state that
     * refers to it. */
    for (size_t i = g_bus.n_plugins; i-- > 0;) {
        struct lb_plugin_ctx *ctx = g_bus.plugins[i].ctx;
        if (ctx->loaded && ctx->desc->unload) ctx->desc->unload(ctx);
        ctx->loaded = false;
    }
    for (size_t i = 0; i < g_bus.n_plugins; i++) {
        struct lb_plugin_ctx *ctx = g_bus.plugins[i].ctx;
        /* Sanitizer builds keep the code mapped so leak reports can still
         * symbolize frames from plugins. */
#if !defined(__SANITIZE_ADDRESS__)
        if (ctx->dl) dlclose(ctx->dl);
#endif
        free_owned(ctx);
        free(ctx->name);
        free(ctx);
    }
    free(g_bus.plugins);
    g_bus.plugins = NULL;
    g_bus.n_plugins = 0;
    policy_free();
}

void plugins_reload_all(struct conf *newconf)
{
    for (size_t i = 0; i < g_bus.n_plugins; i++) {
        struct lb_plugin_ctx *ctx = g_bus.plugins[i].ctx;
        struct conf_section *sec = NULL;
        for (size_t k = 0; k < newconf->n; k++)
            if (newconf->s[k].name && strcmp(newconf->s[k].name, ctx->name) == 0) sec = &newconf->s[k];
        if (!sec) {
            log_warn("plugins", "[plugin %s] was removed from %s: unloading a plugin needs a restart; it keeps running",
                     ctx->name, newconf->path);
            continue;
        }
        ctx->sec = sec;
        if (!ctx->desc->reload) {
            /* Mark keys as read so they are not reported: without reload()
             * the plugin keeps its settings until restart. */
            for (size_t k = 0; k < sec->n; k++) sec->e[k].used = true;
            continue;
        }
        ctx->failed = false;
        ctx->fail[0] = 0;
        if (ctx->desc->reload(ctx) != 0 || ctx->failed)
            log_error("plugins", "[plugin %s] reload failed, old settings kept: %s", ctx->name,
                      ctx->fail[0] ? ctx->fail : "(no reason given)");
        struct conf_entry *u = conf_unused(sec);
        if (u) log_warn("plugins", "%s:%d: [plugin %s] unknown key '%s' ignored", newconf->path, u->line, ctx->name, u->key);
    }
    for (size_t k = 0; k < newconf->n; k++) {
        if (newconf->s[k].name && !plugin_loaded(newconf->s[k].name))
            log_warn("plugins", "%s:%d: [plugin %s] is new: loading a plugin needs a restart",
                     newconf->path, newconf->s[k].line, newconf->s[k].name);
    }
}
