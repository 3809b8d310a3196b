/*
 * prom: the Prometheus text exposition format 0.0.4, written into an
 * evbuffer.  Each family gets its # HELP and # TYPE lines once, before its
 * samples; label values are escaped (\\ \" \n); names are the caller's
 * (fixed strings, checked by the test with a real parser).
 */
#ifndef WS_PROM_H
#define WS_PROM_H
#include <stddef.h>
#include <stdint.h>

struct evbuffer;

/* type: "counter", "gauge" or "histogram". */
void prom_family(struct evbuffer *out, const char *name, const char *type, const char *help);
/* One sample; `label` may be NULL (no labels). */
void prom_sample(struct evbuffer *out, const char *name, const char *label, const char *value, uint64_t v);
void prom_sample_f(struct evbuffer *out, const char *name, const char *label, const char *value, double v);
/* A histogram's samples from cumulative counts (the host's call
 * histogram): cum[i] observations <= bounds[i] for i < n, and cum[n] of
 * them in all (the +Inf bucket and _count). */
void prom_histogram(struct evbuffer *out, const char *name, const double *bounds, const uint64_t *cum,
                    size_t n, double sum);
#endif
