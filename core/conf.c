#include "config.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ctype.h>
#include <errno.h>
#include <libgen.h>
#include "conf.h"
#include "util.h"
#include "utf8.h"

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

/* The whole file, at most CONF_MAX_BYTES: read at once so that NUL bytes
 * are seen (a line-by-line read with fgets and strlen cannot tell a NUL
 * from the end of the line).  Returns a malloc'd buffer or NULL with err. */
static char *read_file(FILE *f, const char *path, size_t *len, char *err, size_t errlen)
{
    size_t cap = 8192, n = 0;
    char *buf = xmalloc(cap);
    for (;;) {
        if (n == cap) {
            if (cap > CONF_MAX_BYTES) break;
            cap *= 2;
            buf = xrealloc(buf, cap);
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) break;
    }
    if (ferror(f)) {
        snprintf(err, errlen, "%s: read error: %s", path, strerror(errno));
    } else if (n > CONF_MAX_BYTES) {
        snprintf(err, errlen, "%s: file too large (max %u bytes)", path, CONF_MAX_BYTES);
    } else {
        *len = n;
        return buf;
    }
    free(buf);
    return NULL;
}

/* bus.conf is UTF-8 text: no NUL, no control character but tab (and the
 * CR of a CRLF line end), no invalid UTF-8.  A binary or corrupted file
 * must not be read as a configuration that happens to set nothing.
 * Returns 0, or -1 with "file:line: cause" in err. */
static int check_text(const char *path, int line, const char *p, size_t n, char *err, size_t errlen)
{
    const unsigned char *s = (const unsigned char *)p, *end = s + n;
    if (n && end[-1] == '\r') end--;
    for (const unsigned char *q = s; q < end;) {
        size_t col = (size_t)(q - s) + 1;
        if (*q == 0) {
            snprintf(err, errlen, "%s:%d: NUL byte at column %zu (not a text file?)", path, line, col);
            return -1;
        }
        if ((*q < 0x20 && *q != '\t') || *q == 0x7f) {
            snprintf(err, errlen, "%s:%d: control character 0x%02x at column %zu (not a text file?)", path, line,
                     *q, col);
            return -1;
        }
        size_t len = *q < 0x80 ? 1 : utf8_seq(q, end);
        if (!len) {
            snprintf(err, errlen, "%s:%d: invalid UTF-8 (byte 0x%02x at column %zu): bus.conf must be UTF-8 text",
                     path, line, *q, col);
            return -1;
        }
        q += len;
    }
    return 0;
}

/* Parses the lines of buf (len bytes, any content). */
static int parse_buf(struct conf *c, const char *buf, size_t len, char *err, size_t errlen)
{
    char line_buf[CONF_MAX_LINE + 1];
    const char *p = buf, *end = buf + len;
    int line = 0;
    /* A UTF-8 byte order mark, as some editors write: not part of line 1. */
    if (len >= 3 && memcmp(p, "\xef\xbb\xbf", 3) == 0) p += 3;
    while (p < end) {
        line++;
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = (size_t)((nl ? nl : end) - p);
        if (check_text(c->path, line, p, n, err, errlen)) return -1;
        if (n && p[n - 1] == '\r') n--;
        if (n > CONF_MAX_LINE) {
            snprintf(err, errlen, "%s:%d: line too long (max %d characters)", c->path, line, CONF_MAX_LINE);
            return -1;
        }
        memcpy(line_buf, p, n);
        line_buf[n] = 0;
        if (parse_line(c, line_buf, line, err, errlen)) return -1;
        p = nl ? nl + 1 : end;
    }
    if (c->n == 0) {
        /* A truncated or emptied file would otherwise start (or reload) a
         * bus with every setting at its default and no transport. */
        snprintf(err, errlen, "%s: no [bus] or [plugin NAME] section (the file is empty or holds only comments)",
                 c->path);
        return -1;
    }
    return 0;
}

int conf_load(const char *path, struct conf **out, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    size_t len = 0;
    char *buf = read_file(f, path, &len, err, errlen);
    fclose(f);
    if (!buf) return -1;
    struct conf *c = xcalloc(1, sizeof *c);
    c->path = xstrdup(path);
    char *tmp = xstrdup(path);
    c->dir = xstrdup(dirname(tmp));
    free(tmp);
    int rc = parse_buf(c, buf, len, err, errlen);
    free(buf);
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
