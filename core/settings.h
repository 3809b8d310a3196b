/* The [bus] section: one table of keys (settings.c) read the same way at
 * start-up and on reload, so a reload accepts exactly what start-up does. */
#ifndef LB_SETTINGS_H
#define LB_SETTINGS_H
#include <stddef.h>
#include "bus.h"

struct conf;

/* Fills *s from the [bus] section of c (defaults for absent keys).
 * Returns 0, or -1 with "file:line: [bus] cause" in err (an unknown key, a
 * duplicate, a bad value).  *s must be freed with settings_free either way. */
int settings_parse(struct conf *c, struct bus_settings *s, char *err, size_t errlen);
void settings_free(struct bus_settings *s);
/* Copies into *cur every setting of *next that may change while running;
 * writes into `kept` (may be NULL) the keys that differ but need a
 * restart (comma-separated). */
void settings_apply(struct bus_settings *cur, const struct bus_settings *next, char *kept, size_t keptlen);
#endif
