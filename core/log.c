#include "config.h"
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <sys/time.h>
#include "log.h"

static enum lb_log_level g_level = LB_LOG_INFO;
static const char *const level_names[] = { "debug", "info", "warn", "error" };

void log_set_level(enum lb_log_level lvl) { g_level = lvl; }
bool log_enabled(enum lb_log_level lvl) { return lvl >= g_level; }

int log_parse_level(const char *s, enum lb_log_level *out)
{
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(s, level_names[i]) == 0) { *out = (enum lb_log_level)i; return 0; }
    }
    if (strcasecmp(s, "warning") == 0) { *out = LB_LOG_WARN; return 0; }
    return -1;
}

void log_vmsg(enum lb_log_level lvl, const char *subsys, const char *fmt, va_list ap)
{
    if (lvl < g_level)
        return;
    struct timeval tv;
    struct tm tm;
    char ts[32], line[2048];
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    int n = snprintf(line, sizeof line, "%s.%03dZ %-5s [%s] ", ts, (int)(tv.tv_usec / 1000),
                     level_names[lvl], subsys);
    if (n < 0 || (size_t)n >= sizeof line)
        n = 0;
    vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    /* One fputs of a complete line keeps lines whole when stderr is shared. */
    size_t len = strlen(line);
    if (len < sizeof line - 1) { line[len++] = '\n'; line[len] = 0; }
    fputs(line, stderr);
}

void log_msg(enum lb_log_level lvl, const char *subsys, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vmsg(lvl, subsys, fmt, ap);
    va_end(ap);
}

/* ---- throttled lines ------------------------------------------------ */

struct throttle { char key[64]; time_t window; unsigned written; unsigned long long held; };
static struct throttle g_thr[64];

static struct throttle *throttle_slot(const char *subsys, const char *key)
{
    char k[64];
    snprintf(k, sizeof k, "%s/%s", subsys, key);
    struct throttle *free_slot = NULL, *oldest = &g_thr[0];
    for (size_t i = 0; i < sizeof g_thr / sizeof *g_thr; i++) {
        struct throttle *t = &g_thr[i];
        if (t->key[0] && strcmp(t->key, k) == 0) return t;
        if (!t->key[0] && !free_slot) free_slot = t;
        if (t->window < oldest->window) oldest = t;
    }
    struct throttle *t = free_slot ? free_slot : oldest;
    memset(t, 0, sizeof *t);
    snprintf(t->key, sizeof t->key, "%s", k);
    return t;
}

void log_vthrottled(enum lb_log_level lvl, const char *subsys, const char *key, unsigned per_min,
                    const char *fmt, va_list ap)
{
    if (lvl < g_level) return;
    struct throttle *t = throttle_slot(subsys, key);
    time_t now = time(NULL);
    if (now - t->window >= 60) { t->window = now; t->written = 0; }
    if (t->written >= per_min) { t->held++; return; }
    t->written++;
    char line[1536];
    vsnprintf(line, sizeof line, fmt, ap);
    if (t->held) {
        log_msg(lvl, subsys, "%s (and %llu more like it since the last such line)", line, t->held);
        t->held = 0;
    } else {
        log_msg(lvl, subsys, "%s", line);
    }
}

void log_throttled(enum lb_log_level lvl, const char *subsys, const char *key, unsigned per_min,
                   const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vthrottled(lvl, subsys, key, per_min, fmt, ap);
    va_end(ap);
}
