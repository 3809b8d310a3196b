#include "config.h"
#include <stdlib.h>
#include <string.h>
#include "stats.h"
#include "util.h"

struct stats g_stats;

#define NAME_(e, s) s,
static const char *const names[LB_E__COUNT] = { LB_ERROR_LIST(NAME_) };
#undef NAME_

const double lb_call_bucket_bounds[LB_CALL_BUCKETS] = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
};

const char *err_code_name(int i) { return i >= 0 && i < LB_E__COUNT ? names[i] : LB_E_INTERNAL_ERROR; }
const char *lb_error_code_name(int i) { return err_code_name(i); }

int err_code_index(const char *code)
{
    for (int i = 0; i < LB_E__COUNT; i++)
        if (strcmp(names[i], code) == 0) return i;
    return -1;
}
int lb_error_code_index(const char *code) { return code ? err_code_index(code) : -1; }

void stats_count_error(const char *code)
{
    int i = err_code_index(code);
    g_stats.errors[i >= 0 ? i : LB_ERR_INTERNAL_ERROR]++;
}

void stats_call_done(uint64_t dur_us)
{
    double s = (double)dur_us / 1e6;
    size_t b = 0;
    while (b < LB_CALL_BUCKETS && s > lb_call_bucket_bounds[b]) b++;
    g_stats.call_buckets[b]++;
    g_stats.call_seconds_sum += s;
}

/* ---- per transport -------------------------------------------------- */

struct transport_count { char *name; uint64_t open; };
static struct transport_count *g_tc;
static size_t g_n_tc;

void stats_transport_open(const char *transport, int delta)
{
    const char *t = transport ? transport : "?";
    for (size_t i = 0; i < g_n_tc; i++) {
        if (strcmp(g_tc[i].name, t) == 0) { g_tc[i].open += (uint64_t)(int64_t)delta; return; }
    }
    g_tc = xrealloc(g_tc, (g_n_tc + 1) * sizeof *g_tc);
    g_tc[g_n_tc++] = (struct transport_count){ xstrdup(t), (uint64_t)(int64_t)delta };
}

void stats_transports_each(void (*fn)(void *ud, const char *transport, uint64_t open), void *ud)
{
    for (size_t i = 0; i < g_n_tc; i++) fn(ud, g_tc[i].name, g_tc[i].open);
}

/* ---- plugin counters ----------------------------------------------- */

static struct plugin_counter *g_pc;
static size_t g_n_pc;

void stats_counter_add(struct lb_plugin_ctx *ctx, const char *name, const char *help, const uint64_t *v, bool gauge)
{
    g_pc = xrealloc(g_pc, (g_n_pc + 1) * sizeof *g_pc);
    g_pc[g_n_pc++] = (struct plugin_counter){ ctx, xstrdup(name), xstrdup(help ? help : ""), v, gauge };
}

void stats_counters_remove(struct lb_plugin_ctx *ctx)
{
    size_t k = 0;
    for (size_t i = 0; i < g_n_pc; i++) {
        if (g_pc[i].ctx == ctx) { free(g_pc[i].name); free(g_pc[i].help); }
        else g_pc[k++] = g_pc[i];
    }
    g_n_pc = k;
}

size_t stats_counters(const struct plugin_counter **out)
{
    *out = g_pc;
    return g_n_pc;
}

void stats_free(void)
{
    for (size_t i = 0; i < g_n_tc; i++) free(g_tc[i].name);
    free(g_tc);
    g_tc = NULL;
    g_n_tc = 0;
    for (size_t i = 0; i < g_n_pc; i++) { free(g_pc[i].name); free(g_pc[i].help); }
    free(g_pc);
    g_pc = NULL;
    g_n_pc = 0;
}
