#include "config.h"
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <stdio.h>
#include <errno.h>
#include <time.h>
#include <sys/time.h>
#include <event2/event.h>
#include "util.h"

void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) { fputs("lexbusd: out of memory\n", stderr); abort(); }
    return p;
}
void *xcalloc(size_t n, size_t sz)
{
    void *p = calloc(n ? n : 1, sz ? sz : 1);
    if (!p) { fputs("lexbusd: out of memory\n", stderr); abort(); }
    return p;
}
void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (!p) { fputs("lexbusd: out of memory\n", stderr); abort(); }
    return p;
}
char *xstrndup(const char *s, size_t n)
{
    char *d = xmalloc(n + 1);
    memcpy(d, s, n);
    d[n] = 0;
    return d;
}
char *xstrdup(const char *s) { return xstrndup(s, strlen(s)); }

static struct event_base *g_clock_base;

void clock_use_base(struct event_base *base) { g_clock_base = base; }

/* Wall-clock ms.  Inside the loop, libevent's time cached when the poll
 * returned: one clock read per wake-up, not per message, and never stale
 * across a blocking wait. */
uint64_t now_ms(void)
{
    struct timeval tv;
    if (!g_clock_base || event_base_gettimeofday_cached(g_clock_base, &tv) != 0) gettimeofday(&tv, NULL);
    return (uint64_t)tv.tv_sec * 1000u + (uint64_t)tv.tv_usec / 1000u;
}

uint64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* FNV-1a: names are short, so a simple byte loop beats anything fancier. */
uint64_t hash_bytes(const void *p, size_t n)
{
    const unsigned char *s = p;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) { h ^= s[i]; h *= 1099511628211ull; }
    return h;
}

static int parse_number_suffix(const char *s, uint64_t *num, const char **suffix)
{
    if (!s || !*s) return -1;
    errno = 0;
    char *end;
    if (*s == '-' || *s == '+') return -1;
    unsigned long long v = strtoull(s, &end, 10);
    if (end == s || errno) return -1;
    while (*end == ' ') end++;
    *num = v;
    *suffix = end;
    return 0;
}

int parse_size(const char *s, uint64_t *out)
{
    uint64_t v, mul = 1;
    const char *suf;
    if (parse_number_suffix(s, &v, &suf)) return -1;
    if (!*suf) mul = 1;
    else if (!strcasecmp(suf, "k") || !strcasecmp(suf, "kb") || !strcasecmp(suf, "kib")) mul = 1024;
    else if (!strcasecmp(suf, "m") || !strcasecmp(suf, "mb") || !strcasecmp(suf, "mib")) mul = 1024 * 1024;
    else if (!strcasecmp(suf, "g") || !strcasecmp(suf, "gb") || !strcasecmp(suf, "gib")) mul = 1024ull * 1024 * 1024;
    else if (!strcasecmp(suf, "b")) mul = 1;
    else return -1;
    if (v > UINT64_MAX / mul) return -1;
    *out = v * mul;
    return 0;
}

int parse_duration_ms(const char *s, uint64_t *out)
{
    uint64_t v, mul;
    const char *suf;
    if (parse_number_suffix(s, &v, &suf)) return -1;
    if (!*suf || !strcmp(suf, "s")) mul = 1000;
    else if (!strcmp(suf, "ms")) mul = 1;
    else if (!strcmp(suf, "m") || !strcmp(suf, "min")) mul = 60000;
    else if (!strcmp(suf, "h")) mul = 3600000;
    else return -1;
    if (v > UINT64_MAX / mul) return -1;
    *out = v * mul;
    return 0;
}

int parse_bool(const char *s, bool *out)
{
    if (!strcasecmp(s, "yes") || !strcasecmp(s, "true") || !strcasecmp(s, "on") || !strcmp(s, "1")) {
        *out = true; return 0;
    }
    if (!strcasecmp(s, "no") || !strcasecmp(s, "false") || !strcasecmp(s, "off") || !strcmp(s, "0")) {
        *out = false; return 0;
    }
    return -1;
}
