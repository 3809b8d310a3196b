/*
 * luabench: JSONLex evaluations per second over the conformance corpus
 * (tests/lua/jsonlex-cases.jsonl), on the plugin's own evaluator
 * (plugins/lua/jsonlex.c) without the daemon around it: compiled once and
 * evaluated over and over; through the cache as lexbus.jsonlex does (hash
 * the expression, look it up, evaluate); and cold (compile + evaluate each
 * time).  What rules cost per message is measured through the real daemon
 * (tests/bench/luarules.py).
 *
 *   luabench CASES.jsonl [SECONDS_PER_ITEM]
 * prints one JSON object (tests/bench/lua-bench.sh runs it).
 */
#include "config.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <jansson.h>
#include "jsonlex.h"

static double secs = 1.0;

/* CPU time of this thread: on a shared, loaded machine wall-clock time
 * would mostly measure the other processes. */
static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
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
    struct jcase *c;
    size_t n = load_cases(argv[1], &c);
    struct jl_cache *cache = jl_cache_new(1024, true);
    double compiled = evals_per_sec(c, n, J_COMPILED, NULL);
    double cached = evals_per_sec(c, n, J_CACHED, cache);
    double cold = evals_per_sec(c, n, J_COLD, NULL);
    jl_cache_free(cache);
    for (size_t i = 0; i < n; i++) { json_decref(c[i].expr); json_decref(c[i].ctx); jl_free(c[i].x); }
    free(c);

    printf("{\"jsonlex_corpus\":{\"cases\":%zu,\"evals_per_sec_compiled\":%.0f,\"evals_per_sec_cached\":%.0f,"
           "\"evals_per_sec_cold\":%.0f}}\n",
           n, compiled, cached, cold);
    return 0;
}
