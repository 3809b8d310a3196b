#include "config.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ctype.h>
#include <errno.h>
#include <libgen.h>
#include "conf.h"
#include "util.h"

#define CONF_MAX_LINE 4096
#define CONF_MAX_BYTES (4u * 1024 * 1024)

static char *trim(char *s)
{
    while (*s && isspace((unsigned char)*s)) s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1])) *--e = 0;
    return s;
}

/* A '#' or ';' starts a comment at the start of a line or after white
 * space (outside quotes), so values such as cipher lists keep their own
 * characters. */
static void strip_comment(char *s)
{
    char quote = 0;
    for (char *p = s; *p; p++) {
        if (quote) { if (*p == quote) quote = 0; continue; }
        if ((*p == '"' || *p == '\'') && (p == s || isspace((unsigned char)p[-1]) || p[-1] == '=')) { quote = *p; continue; }
        if ((*p == '#' || *p == ';') && (p == s || isspace((unsigned char)p[-1]))) {
            *p = 0;
            return;
        }
    }
}

static bool valid_key(const char *k)
{
    if (!*k) return false;
    for (; *k; k++)
        if (!isalnum((unsigned char)*k) && *k != '_' && *k != '-' && *k != '.') return false;
    return true;
}

static struct conf_section *add_section(struct conf *c, const char *kind, const char *name, int line)
{
    if (c->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 8;
        c->s = xrealloc(c->s, c->cap * sizeof *c->s);
    }
    struct conf_section *s = &c->s[c->n++];
    memset(s, 0, sizeof *s);
    s->kind = xstrdup(kind);
    s->name = name ? xstrdup(name) : NULL;
    s->line = line;
    return s;
}

static void add_entry(struct conf_section *s, const char *k, const char *v, int line)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 8;
        s->e = xrealloc(s->e, s->cap * sizeof *s->e);
    }
    struct conf_entry *e = &s->e[s->n++];
    e->key = xstrdup(k);
    e->value = xstrdup(v);
    e->line = line;
    e->used = false;
}

static int parse_header(struct conf *c, char *p, int line, char *err, size_t errlen)
{
    char *close = strchr(p, ']');
    if (!close || *trim(close + 1)) {
        snprintf(err, errlen, "%s:%d: malformed section header (expected [bus] or [plugin NAME])", c->path, line);
        return -1;
    }
    *close = 0;
    char *inner = trim(p + 1);
    if (strcmp(inner, "bus") == 0) {
        if (conf_bus(c)) {
            snprintf(err, errlen, "%s:%d: section [bus] appears twice", c->path, line);
            return -1;
        }
        add_section(c, "bus", NULL, line);
        return 0;
    }
    if (strncmp(inner, "plugin", 6) == 0 && isspace((unsigned char)inner[6])) {
        char *name = trim(inner + 7);
        if (!valid_key(name) || strlen(name) > 64) {
            snprintf(err, errlen, "%s:%d: bad plugin name '%s'", c->path, line, name);
            return -1;
        }
        for (size_t i = 0; i < c->n; i++) {
            if (c->s[i].name && strcmp(c->s[i].name, name) == 0) {
                snprintf(err, errlen, "%s:%d: [plugin %s] appears twice (first at line %d)",
                         c->path, line, name, c->s[i].line);
                return -1;
            }
        }
        add_section(c, "plugin", name, line);
        return 0;
    }
    snprintf(err, errlen, "%s:%d: unknown section [%s] (expected [bus] or [plugin NAME])", c->path, line, inner);
    return -1;
}

static int parse_line(struct conf *c, char *raw, int line, char *err, size_t errlen)
{
    strip_comment(raw);
    char *p = trim(raw);
    if (!*p) return 0;
    if (*p == '[') return parse_header(c, p, line, err, errlen);
    char *eq = strchr(p, '=');
    if (!eq) {
        snprintf(err, errlen, "%s:%d: expected 'key = value', got '%.60s'", c->path, line, p);
        return -1;
    }
    *eq = 0;
    char *k = trim(p), *v = trim(eq + 1);
    if (!valid_key(k)) {
        snprintf(err, errlen, "%s:%d: bad key '%.60s'", c->path, line, k);
        return -1;
    }
    size_t vl = strlen(v);
    if (vl >= 2 && ((v[0] == '"' && v[vl - 1] == '"') || (v[0] == '\'' && v[vl - 1] == '\''))) {
        v[vl - 1] = 0;
        v++;
    }
    if (c->n == 0) {
        snprintf(err, errlen, "%s:%d: key '%s' outside any section", c->path, line, k);
        return -1;
    }
    add_entry(&c->s[c->n - 1], k, v, line);
    return 0;
}

int conf_load(const char *path, struct conf **out, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    struct conf *c = xcalloc(1, sizeof *c);
    c->path = xstrdup(path);
    char *tmp = xstrdup(path);
    c->dir = xstrdup(dirname(tmp));
    free(tmp);

    char buf[CONF_MAX_LINE + 2];
    int line = 0, rc = 0;
    size_t total = 0;
    while (fgets(buf, sizeof buf, f)) {
        line++;
        size_t n = strlen(buf);
        total += n;
        if (total > CONF_MAX_BYTES) {
            snprintf(err, errlen, "%s:%d: file too large (max %u bytes)", path, line, CONF_MAX_BYTES);
            rc = -1;
            break;
        }
        if (n && buf[n - 1] != '\n' && !feof(f)) {
            snprintf(err, errlen, "%s:%d: line too long (max %d characters)", path, line, CONF_MAX_LINE);
            rc = -1;
            break;
        }
        if (memchr(buf, 0, n) != NULL && strlen(buf) != n) {
            snprintf(err, errlen, "%s:%d: NUL byte in file", path, line);
            rc = -1;
            break;
        }
        if ((rc = parse_line(c, buf, line, err, errlen)) != 0)
            break;
    }
    if (!rc && ferror(f)) {
        snprintf(err, errlen, "%s: read error", path);
        rc = -1;
    }
    fclose(f);
    if (rc) { conf_free(c); return -1; }
    *out = c;
    return 0;
}

void conf_free(struct conf *c)
{
    if (!c) return;
    for (size_t i = 0; i < c->n; i++) {
        struct conf_section *s = &c->s[i];
        for (size_t j = 0; j < s->n; j++) { free(s->e[j].key); free(s->e[j].value); }
        free(s->e);
        free(s->kind);
        free(s->name);
    }
    free(c->s);
    free(c->path);
    free(c->dir);
    free(c);
}

struct conf_section *conf_bus(struct conf *c)
{
    for (size_t i = 0; i < c->n; i++)
        if (!c->s[i].name) return &c->s[i];
    return NULL;
}

struct conf_entry *conf_get(struct conf_section *s, const char *key, bool *dup)
{
    struct conf_entry *found = NULL;
    if (dup) *dup = false;
    for (size_t i = 0; s && i < s->n; i++) {
        if (strcmp(s->e[i].key, key) == 0) {
            s->e[i].used = true;
            if (found && dup) *dup = true;
            if (!found) found = &s->e[i];
        }
    }
    return found;
}

struct conf_entry *conf_unused(struct conf_section *s)
{
    for (size_t i = 0; s && i < s->n; i++)
        if (!s->e[i].used) return &s->e[i];
    return NULL;
}

char *conf_resolve(const struct conf *c, const char *path)
{
    if (!path || path[0] == '/' || !c->dir) return xstrdup(path ? path : "");
    size_t n = strlen(c->dir) + strlen(path) + 2;
    char *r = xmalloc(n);
    snprintf(r, n, "%s/%s", c->dir, path);
    return r;
}
