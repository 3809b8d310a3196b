/* Prometheus text format 0.0.4: see prom.h. */
#include "config.h"
#include <inttypes.h>
#include <stdio.h>
#include <event2/buffer.h>
#include "prom.h"

void prom_family(struct evbuffer *out, const char *name, const char *type, const char *help)
{
    /* HELP text escapes only \ and newline. */
    evbuffer_add_printf(out, "# HELP %s ", name);
    for (const char *p = help; *p; p++) {
        if (*p == '\\') evbuffer_add(out, "\\\\", 2);
        else if (*p == '\n') evbuffer_add(out, "\\n", 2);
        else evbuffer_add(out, p, 1);
    }
    evbuffer_add_printf(out, "\n# TYPE %s %s\n", name, type);
}

static void label(struct evbuffer *out, const char *k, const char *v)
{
    evbuffer_add_printf(out, "{%s=\"", k);
    for (const char *p = v; *p; p++) {
        if (*p == '\\') evbuffer_add(out, "\\\\", 2);
        else if (*p == '"') evbuffer_add(out, "\\\"", 2);
        else if (*p == '\n') evbuffer_add(out, "\\n", 2);
        else evbuffer_add(out, p, 1);
    }
    evbuffer_add(out, "\"}", 2);
}

void prom_sample(struct evbuffer *out, const char *name, const char *k, const char *v, uint64_t n)
{
    evbuffer_add_printf(out, "%s", name);
    if (k) label(out, k, v);
    evbuffer_add_printf(out, " %" PRIu64 "\n", n);
}

void prom_sample_f(struct evbuffer *out, const char *name, const char *k, const char *v, double n)
{
    evbuffer_add_printf(out, "%s", name);
    if (k) label(out, k, v);
    evbuffer_add_printf(out, " %.6f\n", n);
}

void prom_histogram(struct evbuffer *out, const char *name, const double *bounds, const uint64_t *cum,
                    size_t n, double sum)
{
    for (size_t i = 0; i < n; i++)
        evbuffer_add_printf(out, "%s_bucket{le=\"%g\"} %" PRIu64 "\n", name, bounds[i], cum[i]);
    evbuffer_add_printf(out, "%s_bucket{le=\"+Inf\"} %" PRIu64 "\n%s_sum %.6f\n%s_count %" PRIu64 "\n",
                        name, cum[n], name, sum, name, cum[n]);
}
