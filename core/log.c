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
