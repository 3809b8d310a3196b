/*
 * [bus] settings, table-driven: every key is one row saying its type,
 * bounds, where it lives in struct bus_settings and whether it can change
 * without a restart.  Start-up and reload both go through settings_parse,
 * so they accept and refuse the same files.
 */
#include "config.h"
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "settings.h"
#include "conf.h"
#include "log.h"
#include "util.h"

enum stype {
    T_NAME,      /* a service-style name */
    T_PATH,      /* resolved against bus.conf's directory */
    T_SIZE,      /* 64K, 1M, ... within [min, max] */
    T_MS,        /* 500ms, 30s, ... within [min, max] */
    T_INT,       /* integer within [min, max] */
    T_ENUM,      /* one of `names`, stored as its index */
};

struct key {
    const char *key;
    enum stype type;
    size_t off;
    unsigned long long min, max;
    const char *const *names;    /* T_ENUM */
    bool restart;                /* kept until restart on reload */
    const char *expect;
};

#define OFF(f) offsetof(struct bus_settings, f)
static const char *const mode_names[] = { "development", "production", NULL };
static const char *const level_names[] = { "debug", "info", "warn", "error", NULL };
static const char *const slow_names[] = { "close", "drop", NULL };

static const struct key keys[] = {
    { "mode", T_ENUM, OFF(production), 0, 0, mode_names, true, "development or production" },
    { "node", T_NAME, OFF(node), 0, 0, NULL, true, "a name of A-Z a-z 0-9 _ . - / @" },
    { "plugin_dir", T_PATH, OFF(plugin_dir), 0, 0, NULL, true, "a directory" },
    { "lua_dir", T_PATH, OFF(lua_dir), 0, 0, NULL, true, "a directory" },
    { "pid_file", T_PATH, OFF(pid_file), 0, 0, NULL, true, "a file name" },
    { "state_file", T_PATH, OFF(state_file), 0, 0, NULL, true, "a file name" },
    { "state_max", T_SIZE, OFF(state_max), 1024, 1024ull << 20, NULL, false, "a size from 1K to 1G" },
    { "log_file", T_PATH, OFF(log_file), 0, 0, NULL, true, "a file name" },
    { "log_level", T_ENUM, OFF(log_level), 0, 0, level_names, false, "debug, info, warn or error" },
    { "system_service", T_NAME, OFF(system_service), 0, 0, NULL, true, "a service name" },
    { "max_frame", T_SIZE, OFF(max_frame), 64, 256ull << 20, NULL, false, "a size from 64 to 256M" },
    { "call_timeout", T_MS, OFF(call_timeout_ms), 1, 24ull * 3600 * 1000, NULL, false, "a duration from 1ms to 24h" },
    { "heartbeat", T_MS, OFF(heartbeat_ms), 100, 24ull * 3600 * 1000, NULL, false, "a duration from 100ms to 24h" },
    { "register_timeout", T_MS, OFF(register_timeout_ms), 0, 3600 * 1000, NULL, false, "0 (none) or a duration up to 1h" },
    { "max_depth", T_INT, OFF(max_depth), 1, 100000, NULL, false, "an integer from 1 to 100000" },
    { "max_connections", T_INT, OFF(max_connections), 0, LLONG_MAX, NULL, false, "0 (no limit) or a positive integer" },
    { "outbuf_high", T_SIZE, OFF(outbuf_high), 4096, 1ull << 40, NULL, false, "a size of at least 4K" },
    { "outbuf_max", T_SIZE, OFF(outbuf_max), 4096, 1ull << 40, NULL, false, "a size of at least outbuf_high" },
    { "outbuf_total_max", T_SIZE, OFF(outbuf_total_max), 0, 1ull << 44, NULL, false, "0 (no limit) or a size of at least outbuf_max" },
    { "slow_consumer_timeout", T_MS, OFF(slow_consumer_timeout_ms), 1, 24ull * 3600 * 1000, NULL, false, "a duration such as 10s" },
    { "slow_consumer", T_ENUM, OFF(slow_consumer), 0, 0, slow_names, false, "close or drop" },
};
#define N_KEYS (sizeof keys / sizeof *keys)

static const char *default_plugin_dir(void)
{
    /* Running the binary from the build tree finds the plugins built next
     * to it; an installed binary uses the install location. */
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = 0;
        if (strcmp(exe, LB_BUILD_EXE) == 0) return LB_BUILD_PLUGINDIR;
    }
    return getenv("LEXBUS_PLUGIN_DIR") ? getenv("LEXBUS_PLUGIN_DIR") : LB_PLUGINDIR;
}

static const char *default_lua_dir(void)
{
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = 0;
        if (strcmp(exe, LB_BUILD_EXE) == 0) return LB_BUILD_LUADIR;
    }
    return LB_LUADIR;
}

static void defaults(struct bus_settings *s)
{
    char host[256] = "lexbus";
    gethostname(host, sizeof host - 1);
    host[sizeof host - 1] = 0;
    memset(s, 0, sizeof *s);
    s->node = xstrdup(valid_service_name(host, strlen(host)) ? host : "lexbus");
    s->plugin_dir = xstrdup(default_plugin_dir());
    s->lua_dir = xstrdup(default_lua_dir());
    s->system_service = xstrdup(LB_DEFAULT_SYSTEM_SERVICE);
    s->state_max = 16ull << 20;
    s->log_level = LB_LOG_INFO;
    s->max_frame = LB_DEFAULT_MAX_FRAME;
    s->call_timeout_ms = 30000;
    s->heartbeat_ms = 30000;
    s->register_timeout_ms = 10000;
    s->max_depth = 100;
    s->outbuf_high = 1ull << 20;
    s->outbuf_max = 64ull << 20;
    s->outbuf_total_max = 1ull << 30;
    s->slow_consumer_timeout_ms = 10000;
    s->slow_consumer = SLOW_CLOSE;
}

static int bad(const struct conf *c, const struct conf_entry *e, const char *expect, char *err, size_t errlen)
{
    snprintf(err, errlen, "%s:%d: [bus] bad value '%s' for '%s' (expected %s)", c->path, e->line,
             e->value, e->key, expect);
    return -1;
}

static int read_key(const struct conf *c, const struct key *k, const struct conf_entry *e,
                    struct bus_settings *s, char *err, size_t errlen)
{
    void *field = (char *)s + k->off;
    uint64_t u;
    switch (k->type) {
    case T_NAME:
        if (!valid_service_name(e->value, strlen(e->value))) return bad(c, e, k->expect, err, errlen);
        free(*(char **)field);
        *(char **)field = xstrdup(e->value);
        return 0;
    case T_PATH:
        if (!e->value[0]) return bad(c, e, k->expect, err, errlen);
        free(*(char **)field);
        *(char **)field = conf_resolve(c, e->value);
        return 0;
    case T_SIZE:
        if (parse_size(e->value, &u) || u < k->min || u > k->max) return bad(c, e, k->expect, err, errlen);
        *(uint64_t *)field = u;
        return 0;
    case T_MS:
        if (parse_duration_ms(e->value, &u) || u < k->min || u > k->max) return bad(c, e, k->expect, err, errlen);
        *(uint64_t *)field = u;
        return 0;
    case T_INT: {
        char *end;
        long long v = strtoll(e->value, &end, 10);
        if (end == e->value || *end || v < (long long)k->min || (unsigned long long)v > k->max)
            return bad(c, e, k->expect, err, errlen);
        *(long long *)field = v;
        return 0;
    }
    case T_ENUM:
        for (int i = 0; k->names[i]; i++) {
            if (strcmp(e->value, k->names[i]) == 0 || (k->names == level_names && !strcmp(e->value, "warning") && i == 2)) {
                if (k->off == OFF(production)) *(bool *)field = i == 1;
                else *(long long *)field = i;
                return 0;
            }
        }
        return bad(c, e, k->expect, err, errlen);
    }
    return -1;
}

/* Rules between keys: checked after all of them are read. */
static int cross_check(const struct conf *c, struct conf_section *sec, struct bus_settings *s, char *err, size_t errlen)
{
    bool dup;
    struct conf_entry *e;
    if (s->outbuf_max < s->outbuf_high && (e = conf_get(sec, "outbuf_max", &dup)))
        return bad(c, e, "a size of at least outbuf_high", err, errlen);
    if (s->outbuf_max < s->outbuf_high) {
        snprintf(err, errlen, "%s: [bus] outbuf_high (%llu) is above outbuf_max (%llu)", c->path,
                 (unsigned long long)s->outbuf_high, (unsigned long long)s->outbuf_max);
        return -1;
    }
    if (s->outbuf_total_max && s->outbuf_total_max < s->outbuf_max) {
        e = conf_get(sec, "outbuf_total_max", &dup);
        if (e) return bad(c, e, "0 (no limit) or a size of at least outbuf_max", err, errlen);
        s->outbuf_total_max = s->outbuf_max;   /* the default follows a larger outbuf_max */
    }
    return 0;
}

int settings_parse(struct conf *c, struct bus_settings *s, char *err, size_t errlen)
{
    defaults(s);
    struct conf_section *sec = conf_bus(c);
    if (!sec) return 0;
    for (size_t i = 0; i < N_KEYS; i++) {
        bool dup;
        struct conf_entry *e = conf_get(sec, keys[i].key, &dup);
        if (!e) continue;
        if (dup) {
            snprintf(err, errlen, "%s:%d: [bus] key '%s' given more than once", c->path, e->line, keys[i].key);
            return -1;
        }
        if (read_key(c, &keys[i], e, s, err, errlen)) return -1;
    }
    struct conf_entry *u = conf_unused(sec);
    if (u) {
        snprintf(err, errlen, "%s:%d: [bus] unknown key '%s'", c->path, u->line, u->key);
        return -1;
    }
    return cross_check(c, sec, s, err, errlen);
}

void settings_free(struct bus_settings *s)
{
    for (size_t i = 0; i < N_KEYS; i++)
        if (keys[i].type == T_NAME || keys[i].type == T_PATH) free(*(char **)((char *)s + keys[i].off));
    memset(s, 0, sizeof *s);
}

static bool str_differs(const char *a, const char *b)
{
    return (a == NULL) != (b == NULL) || (a && strcmp(a, b) != 0);
}

static size_t field_size(enum stype t)
{
    switch (t) {
    case T_SIZE: case T_MS: return sizeof(uint64_t);
    case T_INT: return sizeof(long long);
    default: return 0;
    }
}

void settings_apply(struct bus_settings *cur, const struct bus_settings *next, char *kept, size_t keptlen)
{
    if (kept && keptlen) kept[0] = 0;
    for (size_t i = 0; i < N_KEYS; i++) {
        const struct key *k = &keys[i];
        void *dst = (char *)cur + k->off;
        const void *src = (const char *)next + k->off;
        bool differs;
        if (k->type == T_NAME || k->type == T_PATH) differs = str_differs(*(char *const *)dst, *(char *const *)src);
        else if (k->off == OFF(production)) differs = cur->production != next->production;
        else differs = memcmp(dst, src, k->type == T_ENUM ? sizeof(long long) : field_size(k->type)) != 0;
        if (!differs) continue;
        if (k->restart) {
            if (kept && keptlen) {
                size_t n = strlen(kept);
                snprintf(kept + n, keptlen - n, "%s%s", n ? ", " : "", k->key);
            }
            continue;
        }
        memcpy(dst, src, k->type == T_ENUM ? sizeof(long long) : field_size(k->type));
    }
}
