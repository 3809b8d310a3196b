/*
 * luabench: what the lua plugin costs per message, measured on its own
 * code (the files of plugins/lua) without the daemon around it:
 *
 *   - rules: rules_run() on one 128-byte EMIT, for no scripts at all, 20
 *     rules none of which selects the message, a Lua rule that passes, a
 *     Lua rule that edits the payload, a JSONLex transform (C), a fixed
 *     rewrite of the target;
 *   - JSONLex: the conformance corpus (tests/lua/jsonlex-cases.jsonl),
 *     compiled once and evaluated over and over; through the cache as
 *     lexbus.jsonlex does (hash the expression, look it up, evaluate); and
 *     cold (compile + evaluate each time).
 *
 *   luabench CASES.jsonl [SECONDS_PER_ITEM]
 * prints one JSON object (tests/bench/lua-bench.sh runs it).
 */
#include "config.h"
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <jansson.h>
#include "host.h"
#include "rules.h"

/* ---- the host API the plugin's files call -------------------------------- */

void lb_log(struct lb_plugin_ctx *ctx, enum lb_log_level lvl, const char *fmt, ...)
{
    (void)ctx;
    if (lvl < LB_LOG_WARN) return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}
uint64_t lb_now_ms(void) { return (uint64_t)time(NULL) * 1000; }
const char *lb_state_get(struct lb_plugin_ctx *ctx, const char *key, size_t *len) { (void)ctx; (void)key; (void)len; return NULL; }
int lb_state_set(struct lb_plugin_ctx *ctx, const char *key, const char *value, size_t len, uint64_t ttl_ms)
{ (void)ctx; (void)key; (void)value; (void)len; (void)ttl_ms; return 0; }
int lb_state_del(struct lb_plugin_ctx *ctx, const char *key) { (void)ctx; (void)key; return -1; }

static double secs = 1.0;

/* CPU time of this thread: on a shared, loaded machine wall-clock time
 * would mostly measure the other processes. */
static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* ---- rules ------------------------------------------------------------------ */

static const char *ROUTES =
    "local others = {}\n"
    "for i = 1, 20 do others[#others + 1] = { name = 'other' .. i, event = 'other' .. i .. ':*', to = 'x' } end\n"
    "others[#others + 1] = { name = 'pass', event = 'pass:*', fn = function(m) return nil end }\n"
    "others[#others + 1] = { name = 'lua', event = 'lua:*', fn = function(m)\n"
    "  local p = m.payload; p.seen = true; p.title = '[' .. p.title .. ']'; return m end }\n"
    "others[#others + 1] = { name = 'jsonlex', event = 'jl:*', transform = {\n"
    "  id = { ['$var'] = 'payload.id' }, by = { ['$var'] = 'from' },\n"
    "  title = { ['$concat'] = { '[', { ['$var'] = 'payload.title' }, ']' } } } }\n"
    "others[#others + 1] = { name = 'to', event = 'to:*', to = 'elsewhere' }\n"
    "return others\n";

static const char *PAYLOAD = "{\"id\":12345,\"title\":\"hello world\",\"tags\":[\"a\",\"b\",\"c\"],"
                             "\"user\":{\"name\":\"ada\",\"age\":36},\"body\":\"lorem ipsum dolor sit amet\"}";

static char *make_dir(const char *routes)
{
    char tmpl[] = "/tmp/luabench.XXXXXX";
    char *d = mkdtemp(tmpl);
    if (!d) { perror("mkdtemp"); exit(1); }
    d = strdup(d);
    if (routes) {
        char path[300];
        snprintf(path, sizeof path, "%s/routes.lua", d);
        FILE *f = fopen(path, "w");
        fputs(routes, f);
        fclose(f);
    }
    return d;
}

static void rm_dir(char *d)
{
    char path[300];
    snprintf(path, sizeof path, "%s/routes.lua", d);
    unlink(path);
    rmdir(d);
    free(d);
}

static struct lstate *load(struct host *h, const char *dir)
{
    h->conf = (struct lbl_conf){ .dir = (char *)dir, .max_memory = 64u << 20, .max_instructions = 1000000,
                                 .extensions = true, .cache_entries = 1024, .max_steps = 1000000, .max_text = 1u << 20 };
    char err[600];
    struct lstate *s = lstate_load(h, &h->conf, err, sizeof err);
    if (!s) { fprintf(stderr, "luabench: %s\n", err); exit(1); }
    return s;
}

/* ns per message for one event through rules_run. */
static double per_msg(struct lstate *s, const char *event, const char *expect_rule)
{
    /* LUABENCH_ONLY=lua:x measures one item (for a profiler). */
    const char *only = getenv("LUABENCH_ONLY");
    if (only && strcmp(only, event)) return 0;
    struct rmsg m = { .hook = RH_EVENT };
    m.from = (struct lb_str){ "writer", 6 };
    m.to = (struct lb_str){ "broadcast", 9 };
    m.name = (struct lb_str){ event, strlen(event) };
    m.body = (struct lb_str){ PAYLOAD, strlen(PAYLOAD) };
    struct rresult r;
    rresult_init(&r);
    rules_run(s, &m, &r);
    if (r.kind == RR_ERROR) { fprintf(stderr, "luabench: %s\n", r.message); exit(1); }
    if (expect_rule && (r.n_matched != 1 || strcmp(r.matched[0], expect_rule))) {
        fprintf(stderr, "luabench: %s did not select %s\n", event, expect_rule);
        exit(1);
    }
    if (!expect_rule && r.n_matched) { fprintf(stderr, "luabench: %s selected a rule\n", event); exit(1); }
    long n = 0, fixed = getenv("LUABENCH_ITERS") ? atol(getenv("LUABENCH_ITERS")) : 0;
    double t0 = now(), t;
    do {
        for (int i = 0; i < 1000; i++) rules_run(s, &m, &r);
        n += 1000;
        t = now() - t0;
    } while (fixed ? n < fixed : t < secs);
    rresult_free(&r);
    return t / (double)n * 1e9;
}

/* ---- JSONLex corpus ----------------------------------------------------------- */

struct jcase { json_t *expr, *ctx; struct jl_expr *x; };

static size_t load_cases(const char *path, struct jcase **out)
{
    FILE *f = fopen(path, "r");
    if (!f) { perror(path); exit(1); }
    char *line = NULL;
    size_t cap = 0, n = 0;
    struct jcase *c = NULL;
    while (getline(&line, &cap, f) > 0) {
        json_t *j = json_loads(line, 0, NULL);
        if (!j) continue;
        c = realloc(c, (n + 1) * sizeof *c);
        c[n].expr = json_incref(json_object_get(j, "expr"));
        c[n].ctx = json_incref(json_object_get(j, "context"));
        char err[200];
        c[n].x = jl_compile(c[n].expr, true, err, sizeof err);
        n++;
        json_decref(j);
    }
    free(line);
    fclose(f);
    *out = c;
    return n;
}

enum jmode { J_COMPILED, J_CACHED, J_COLD };

static double evals_per_sec(struct jcase *c, size_t n, enum jmode mode, struct jl_cache *cache)
{
    struct jl_limits lim = { 1000000, 1u << 20 };
    char err[300];
    long evals = 0;
    double t0 = now(), t;
    do {
        for (size_t i = 0; i < n; i++) {
            const struct jl_expr *x = c[i].x;
            struct jl_expr *cold = NULL;
            if (mode == J_CACHED) x = jl_cache_get(cache, c[i].expr, err, sizeof err);
            else if (mode == J_COLD) x = cold = jl_compile(c[i].expr, true, err, sizeof err);
            json_t *out = NULL;
            if (x && jl_eval(x, c[i].ctx, &lim, &out, NULL, err, sizeof err) == 0) json_decref(out);
            jl_free(cold);
            evals++;
        }
        t = now() - t0;
    } while (t < secs);
    return (double)evals / t;
}

int main(int argc, char **argv)
{
    if (argc < 2) { fprintf(stderr, "usage: luabench CASES.jsonl [SECONDS]\n"); return 2; }
    if (argc > 2) secs = atof(argv[2]);
    struct host h = { 0 };
    char *empty = make_dir(NULL), *full = make_dir(ROUTES);
    struct lstate *none = load(&h, empty);
    double ns_none = per_msg(none, "post:created", NULL);
    lstate_free(none);
    struct lstate *s = load(&h, full);
    double ns_unmatched = per_msg(s, "post:created", NULL);
    double ns_pass = per_msg(s, "pass:x", "pass");
    double ns_lua = per_msg(s, "lua:x", "lua");
    double ns_jl = per_msg(s, "jl:x", "jsonlex");
    double ns_to = per_msg(s, "to:x", "to");
    lstate_free(s);
    rm_dir(empty);
    rm_dir(full);
    sbuf_free(&h.out);

    if (getenv("LUABENCH_ONLY")) { printf("%.0f %.0f %.0f\n", ns_pass, ns_lua, ns_jl); return 0; }
    struct jcase *c;
    size_t n = load_cases(argv[1], &c);
    struct jl_cache *cache = jl_cache_new(1024, true);
    double compiled = evals_per_sec(c, n, J_COMPILED, NULL);
    double cached = evals_per_sec(c, n, J_CACHED, cache);
    double cold = evals_per_sec(c, n, J_COLD, NULL);
    jl_cache_free(cache);
    for (size_t i = 0; i < n; i++) { json_decref(c[i].expr); json_decref(c[i].ctx); jl_free(c[i].x); }
    free(c);

    printf("{\"rules_ns_per_message\":{\"no_scripts\":%.1f,\"unmatched_20_rules\":%.1f,\"lua_pass\":%.1f,"
           "\"lua_payload_edit\":%.1f,\"jsonlex_transform\":%.1f,\"fixed_rewrite\":%.1f},"
           "\"jsonlex_corpus\":{\"cases\":%zu,\"evals_per_sec_compiled\":%.0f,\"evals_per_sec_cached\":%.0f,"
           "\"evals_per_sec_cold\":%.0f}}\n",
           ns_none, ns_unmatched, ns_pass, ns_lua, ns_jl, ns_to, n, compiled, cached, cold);
    return 0;
}
