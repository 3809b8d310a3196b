/* bus.conf: INI-style sections `[bus]` and `[plugin NAME]`, `key = value`,
 * `#` or `;` comments.  Parsing only checks the syntax; the meaning of each
 * key is checked by its reader, which marks it used, so that unknown keys
 * can be reported with file and line afterwards. */
#ifndef LB_CONF_H
#define LB_CONF_H
#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>

struct conf_entry { char *key, *value; int line; bool used; };

struct conf_section {
    char *kind;          /* "bus" or "plugin" */
    char *name;          /* plugin name, or NULL for [bus] */
    int line;
    struct conf_entry *e;
    size_t n, cap;
};

struct conf {
    char *path;          /* as given */
    char *dir;           /* directory of the file, for relative paths */
    struct conf_section *s;
    size_t n, cap;
};

/* Returns 0, or -1 with "file:line: cause" in err. */
int conf_load(const char *path, struct conf **out, char *err, size_t errlen);
void conf_free(struct conf *c);

struct conf_section *conf_bus(struct conf *c);       /* may be NULL */
/* The single entry for key (marked used); NULL if absent.  *dup is set if
 * the key appears more than once. */
struct conf_entry *conf_get(struct conf_section *s, const char *key, bool *dup);
/* First unused entry, or NULL. */
struct conf_entry *conf_unused(struct conf_section *s);
/* Resolves `path` against the config file's directory (caller frees). */
char *conf_resolve(const struct conf *c, const char *path);
#endif
