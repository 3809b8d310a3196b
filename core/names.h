/* Names, event patterns and JSON string escaping (names.c), shared by the
 * daemon and liblexbus.  See doc/protocol.md, "Names". */
#ifndef LB_NAMES_H
#define LB_NAMES_H
#include <stdbool.h>
#include <stddef.h>

bool valid_service_name(const char *p, size_t n);
bool valid_method_name(const char *p, size_t n);
bool valid_event_name(const char *p, size_t n);
bool valid_event_pattern(const char *p, size_t n);
/* Does valid pattern `pat` match valid event name `ev`?  `*` matches one
 * segment, a final `>` one or more. */
bool pattern_match(const char *pat, size_t pn, const char *ev, size_t en);
/* Writes s (n bytes of UTF-8) as a quoted JSON string into out, which has
 * room for 6 * n + 2 bytes; returns the bytes written. */
size_t json_escape(char *out, const char *s, size_t n);
#endif
