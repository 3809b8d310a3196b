/* Logging: "<time> <level> [<subsystem>] message" on stderr (or syslog-free
 * log file when daemonized).  One line per call. */
#ifndef LB_LOG_H
#define LB_LOG_H
#include <stdarg.h>
#include <lexbus/plugin.h>

void log_set_level(enum lb_log_level lvl);
int log_parse_level(const char *s, enum lb_log_level *out);
bool log_enabled(enum lb_log_level lvl);
void log_msg(enum lb_log_level lvl, const char *subsys, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void log_vmsg(enum lb_log_level lvl, const char *subsys, const char *fmt, va_list ap);

/* At most per_min lines a minute for (subsys, key); what is held back is
 * counted in the next line written.  For events a peer can provoke at will. */
void log_throttled(enum lb_log_level lvl, const char *subsys, const char *key, unsigned per_min,
                   const char *fmt, ...) __attribute__((format(printf, 5, 6)));
void log_vthrottled(enum lb_log_level lvl, const char *subsys, const char *key, unsigned per_min,
                    const char *fmt, va_list ap);

#define log_debug(sub, ...) do { if (log_enabled(LB_LOG_DEBUG)) log_msg(LB_LOG_DEBUG, sub, __VA_ARGS__); } while (0)
#define log_info(sub, ...)  log_msg(LB_LOG_INFO, sub, __VA_ARGS__)
#define log_warn(sub, ...)  log_msg(LB_LOG_WARN, sub, __VA_ARGS__)
#define log_error(sub, ...) log_msg(LB_LOG_ERROR, sub, __VA_ARGS__)
#endif
