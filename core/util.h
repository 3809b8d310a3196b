/* Small helpers shared by the core. */
#ifndef LB_UTIL_H
#define LB_UTIL_H
#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t sz);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);

struct event_base;
uint64_t now_ms(void);           /* wall clock, cached per loop wake-up */
uint64_t mono_us(void);          /* monotonic, not cached */
void clock_use_base(struct event_base *base);

uint64_t hash_bytes(const void *p, size_t n);

#include "names.h"

/* "1M" / "64K" / "2G" / plain bytes.  Returns 0 or -1. */
int parse_size(const char *s, uint64_t *out);
/* "500ms" / "30s" / "5m" / "1h" / plain seconds.  Returns 0 or -1. */
int parse_duration_ms(const char *s, uint64_t *out);
int parse_bool(const char *s, bool *out);
#endif
