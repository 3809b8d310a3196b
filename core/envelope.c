#include "config.h"
#include <stdbool.h>
#include <string.h>
#include <stdlib.h>
#include <errno.h>
#include "envelope.h"
#include "utf8.h"
#include "jsontext.h"

static const char *const field_names[F__COUNT] = {
    [F_TYPE] = "type", [F_ID] = "id", [F_FROM] = "from", [F_TO] = "to",
    [F_METHOD] = "method", [F_EVENT] = "event", [F_SERVICE_NAME] = "serviceName",
    [F_METHODS] = "methods", [F_PARAMS] = "params", [F_PAYLOAD] = "payload",
    [F_DATA] = "data", [F_ERROR] = "error", [F_STATUS] = "status",
    [F_CONTEXT] = "context", [F_TOKEN] = "token", [F_ACK] = "ack",
    [F_EVENTS] = "events", [F_SUBSCRIBE] = "subscribe", [F_VERSION] = "version",
    [F_METADATA] = "metadata", [F_OP] = "op", [F_RESOURCE] = "resource",
    [F_KEY] = "key", [F_QUERY] = "query", [F_TIMESTAMP] = "timestamp", [F_IPC_REQUEST] = "ipcRequest",
    [F_AUTH] = "auth", [F_NODE] = "node", [F_RESOURCES] = "resources",
};

static const char *const type_names[LB_MSG__COUNT] = {
    [LB_MSG_UNKNOWN] = "UNKNOWN", [LB_MSG_REGISTER] = "REGISTER",
    [LB_MSG_REGISTER_ACK] = "REGISTER_ACK", [LB_MSG_CALL] = "CALL",
    [LB_MSG_RESPONSE] = "RESPONSE", [LB_MSG_EMIT] = "EMIT", [LB_MSG_EVENT] = "EVENT",
    [LB_MSG_ACK] = "ACK", [LB_MSG_SUBSCRIBE] = "SUBSCRIBE",
    [LB_MSG_UNSUBSCRIBE] = "UNSUBSCRIBE", [LB_MSG_CRUD] = "CRUD",
    [LB_MSG_HEARTBEAT] = "HEARTBEAT", [LB_MSG_ERROR] = "ERROR",
};

const char *lb_msg_type_name(enum lb_msg_type t)
{
    return (t > 0 && t < LB_MSG__COUNT) ? type_names[t] : "UNKNOWN";
}

const char *env_field_name(enum env_field f) { return field_names[f]; }

static int known_field(const char *k, size_t n);

/* Plugins look members up by name (lb_msg_field, lb_msg_raw, lb_msg_set)
 * on every message their hooks see: the same switch as the scanner's. */
int env_field_by_name(const char *name) { return known_field(name, strlen(name)); }
int env_field_of(const char *name, size_t n) { return known_field(name, n); }

/* ---- scanner ------------------------------------------------------- */

struct scan {
    const char *p, *end;
    const char *err;
};

static inline void skip_ws(struct scan *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\n' || *s->p == '\r' || *s->p == '\t'))
        s->p++;
}

static inline int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* The code unit of the 4 hex digits at p, or -1. */
static inline int hex4(const unsigned char *p, const unsigned char *end)
{
    if (end - p < 4) return -1;
    int a = hexval(p[0]), b = hexval(p[1]), c = hexval(p[2]), d = hexval(p[3]);
    return (a | b | c | d) < 0 ? -1 : a << 12 | b << 8 | c << 4 | d;
}

/* s->p is just past the opening quote. */
static int scan_string(struct scan *s, struct env_val *out)
{
    const unsigned char *p = (const unsigned char *)s->p, *end = (const unsigned char *)s->end;
    const unsigned char *start = p;
    uint8_t escaped = 0;
    while (p < end) {
        p = skip_plain(p, end);
        if (p >= end) break;
        unsigned char c = *p;
        if (c == '"') {
            if (out) {
                out->p = (const char *)start;
                out->n = (uint32_t)(p - start);
                out->kind = J_STRING;
                out->escaped = escaped;
            }
            s->p = (const char *)p + 1;
            return 0;
        }
        if (c < 0x20) { s->err = "control character in string"; return -1; }
        if (c == '\\') {
            escaped = 1;
            if (++p >= end) break;
            switch (*p) {
            case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
                p++;
                break;
            case 'u': {
                int u = hex4(p + 1, end);
                if (u < 0) { s->err = "bad \\u escape"; return -1; }
                p += 5;
                /* A surrogate must be a high one followed by a low one: an
                 * unpaired one is no character (as in raw UTF-8, refused
                 * above), and recipients' parsers refuse it, replace it
                 * or keep it, each its own way. */
                if (u >= 0xDC00 && u <= 0xDFFF) { s->err = "unpaired surrogate in \\u escape"; return -1; }
                if (u >= 0xD800 && u <= 0xDBFF) {
                    int lo = end - p >= 2 && p[0] == '\\' && p[1] == 'u' ? hex4(p + 2, end) : -1;
                    if (lo < 0xDC00 || lo > 0xDFFF) { s->err = "unpaired surrogate in \\u escape"; return -1; }
                    p += 6;
                }
                break;
            }
            default:
                s->err = "bad escape in string";
                return -1;
            }
            continue;
        }
        if (c < 0x80) { p++; continue; }
        size_t n = utf8_seq(p, end);
        if (!n) { s->err = "invalid UTF-8 in string"; return -1; }
        p += n;
    }
    s->err = "unterminated string";
    return -1;
}

static int scan_number(struct scan *s)
{
    const char *p = s->p, *end = s->end;
    if (p < end && *p == '-') p++;
    if (p >= end) goto bad;
    if (*p == '0') p++;
    else if (*p >= '1' && *p <= '9') { while (p < end && *p >= '0' && *p <= '9') p++; }
    else goto bad;
    if (p < end && *p == '.') {
        p++;
        if (p >= end || *p < '0' || *p > '9') goto bad;
        while (p < end && *p >= '0' && *p <= '9') p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-')) p++;
        if (p >= end || *p < '0' || *p > '9') goto bad;
        while (p < end && *p >= '0' && *p <= '9') p++;
    }
    s->p = p;
    return 0;
bad:
    s->err = "bad number";
    return -1;
}

static int scan_literal(struct scan *s, const char *lit, size_t n)
{
    if ((size_t)(s->end - s->p) < n || memcmp(s->p, lit, n) != 0) {
        s->err = "unexpected character";
        return -1;
    }
    s->p += n;
    return 0;
}

static int scan_value(struct scan *s, int depth, struct env_val *out);

static int scan_container(struct scan *s, int depth, char close)
{
    if (depth >= ENV_MAX_DEPTH) { s->err = "nesting too deep"; return -1; }
    s->p++; /* past [ or { */
    skip_ws(s);
    if (s->p < s->end && *s->p == close) { s->p++; return 0; }
    for (;;) {
        if (close == '}') {
            skip_ws(s);
            if (s->p >= s->end || *s->p != '"') { s->err = "expected member name"; return -1; }
            s->p++;
            if (scan_string(s, NULL)) return -1;
            skip_ws(s);
            if (s->p >= s->end || *s->p != ':') { s->err = "expected ':'"; return -1; }
            s->p++;
        }
        if (scan_value(s, depth + 1, NULL)) return -1;
        skip_ws(s);
        if (s->p >= s->end) { s->err = "unterminated container"; return -1; }
        if (*s->p == ',') { s->p++; continue; }
        if (*s->p == close) { s->p++; return 0; }
        s->err = close == '}' ? "expected ',' or '}'" : "expected ',' or ']'";
        return -1;
    }
}

static int scan_value(struct scan *s, int depth, struct env_val *out)
{
    skip_ws(s);
    if (s->p >= s->end) { s->err = "unexpected end of input"; return -1; }
    const char *start = s->p;
    uint8_t kind;
    switch (*s->p) {
    case '"':
        s->p++;
        return scan_string(s, out);
    case '{': kind = J_OBJECT; if (scan_container(s, depth, '}')) return -1; break;
    case '[': kind = J_ARRAY;  if (scan_container(s, depth, ']')) return -1; break;
    case 't': kind = J_TRUE;   if (scan_literal(s, "true", 4)) return -1; break;
    case 'f': kind = J_FALSE;  if (scan_literal(s, "false", 5)) return -1; break;
    case 'n': kind = J_NULL;   if (scan_literal(s, "null", 4)) return -1; break;
    default:  kind = J_NUMBER; if (scan_number(s)) return -1; break;
    }
    if (out) {
        out->p = start;
        out->n = (uint32_t)(s->p - start);
        out->kind = kind;
        out->escaped = 0;
    }
    return 0;
}

/* Maps a member name to a known field; the switch on length keeps the
 * common case to one or two memcmp calls. */
static int known_field(const char *k, size_t n)
{
#define F(name, id) if (n == sizeof(name) - 1 && memcmp(k, name, n) == 0) return id
    switch (n) {
    case 2: F("id", F_ID); F("to", F_TO); F("op", F_OP); break;
    case 3: F("ack", F_ACK); F("key", F_KEY); break;
    case 4: F("type", F_TYPE); F("from", F_FROM); F("data", F_DATA); F("auth", F_AUTH); F("node", F_NODE); break;
    case 5: F("event", F_EVENT); F("error", F_ERROR); F("token", F_TOKEN); F("query", F_QUERY); break;
    case 6: F("method", F_METHOD); F("params", F_PARAMS); F("status", F_STATUS); F("events", F_EVENTS); break;
    case 7: F("methods", F_METHODS); F("payload", F_PAYLOAD); F("context", F_CONTEXT); F("version", F_VERSION); break;
    case 8: F("metadata", F_METADATA); F("resource", F_RESOURCE); break;
    case 9: F("subscribe", F_SUBSCRIBE); F("timestamp", F_TIMESTAMP); F("resources", F_RESOURCES); break;
    case 10: F("ipcRequest", F_IPC_REQUEST); break;
    case 11: F("serviceName", F_SERVICE_NAME); break;
    }
#undef F
    return -1;
}

/* By length, then one memcmp: this runs for every frame. */
enum lb_msg_type env_type_of(const struct env_val *v)
{
    if (v->kind != J_STRING || v->escaped) return LB_MSG_UNKNOWN;
    const char *p = v->p;
#define T(name, t) if (memcmp(p, name, sizeof(name) - 1) == 0) return t
    switch (v->n) {
    case 3: T("ACK", LB_MSG_ACK); break;
    case 4: T("CALL", LB_MSG_CALL); T("EMIT", LB_MSG_EMIT); T("CRUD", LB_MSG_CRUD); break;
    case 5: T("EVENT", LB_MSG_EVENT); T("ERROR", LB_MSG_ERROR); break;
    case 8: T("RESPONSE", LB_MSG_RESPONSE); T("REGISTER", LB_MSG_REGISTER); break;
    case 9: T("SUBSCRIBE", LB_MSG_SUBSCRIBE); T("HEARTBEAT", LB_MSG_HEARTBEAT); break;
    case 11: T("UNSUBSCRIBE", LB_MSG_UNSUBSCRIBE); break;
    case 12: T("REGISTER_ACK", LB_MSG_REGISTER_ACK); break;
    }
#undef T
    return LB_MSG_UNKNOWN;
}

static inline __attribute__((always_inline)) enum env_status duplicate(struct envelope *e, const char **err)
{
    /* A second `from` or `to` could make the bus and the recipient
     * disagree about who sent what: refuse. */
    *err = "a member is given twice";
    e->type = e->f[F_TYPE].kind ? env_type_of(&e->f[F_TYPE]) : LB_MSG_UNKNOWN;
    return ENV_DUPLICATE;
}

static inline __attribute__((always_inline)) enum env_status complete(struct envelope *e, bool escaped_name, const char **err)
{
    if (e->f[F_TYPE].kind == J_NONE) { *err = "missing \"type\""; return ENV_BAD_TYPE; }
    e->type = env_type_of(&e->f[F_TYPE]);
    if (e->type == LB_MSG_UNKNOWN) { *err = "unknown or non-string \"type\""; return ENV_BAD_TYPE; }
    if (escaped_name) {
        *err = "a top-level member name is written with escapes (not accepted: it could hide a member the bus checks)";
        return ENV_ESCAPED_NAME;
    }
    return ENV_OK;
}

static inline __attribute__((always_inline)) enum env_status not_object(const char **err)
{
    *err = "message is not a JSON object";
    return ENV_NOT_OBJECT;
}

enum env_status env_duplicate(struct envelope *e, const char **err) { return duplicate(e, err); }
enum env_status env_complete(struct envelope *e, bool escaped_name, const char **err) { return complete(e, escaped_name, err); }
enum env_status env_not_object(const char **err) { return not_object(err); }

enum env_status envelope_parse(struct envelope *e, const char *buf, size_t len, const char **err)
{
    memset(e->f, 0, sizeof e->f);
    e->present = 0;
    e->frame = buf;
    e->len = len;
    e->type = LB_MSG_UNKNOWN;
    struct scan s = { buf, buf + len, NULL };
    skip_ws(&s);
    if (s.p >= s.end || *s.p != '{') {
        /* Still validate, so "not JSON" and "not an object" differ. */
        struct scan t = s;
        if (scan_value(&t, 0, NULL) == 0) { skip_ws(&t); if (t.p == t.end) return not_object(err); }
        *err = t.err ? t.err : "not JSON";
        return ENV_BAD_JSON;
    }
    s.p++;
    skip_ws(&s);
    bool escaped_name = false;
    if (s.p < s.end && *s.p == '}') {
        s.p++;
    } else {
        for (;;) {
            skip_ws(&s);
            if (s.p >= s.end || *s.p != '"') { *err = "expected member name"; return ENV_BAD_JSON; }
            s.p++;
            struct env_val key;
            if (scan_string(&s, &key)) { *err = s.err; return ENV_BAD_JSON; }
            skip_ws(&s);
            if (s.p >= s.end || *s.p != ':') { *err = "expected ':'"; return ENV_BAD_JSON; }
            s.p++;
            escaped_name |= key.escaped;
            int fid = key.escaped ? -1 : known_field(key.p, key.n);
            struct env_val v;
            if (scan_value(&s, 1, &v)) { *err = s.err; return ENV_BAD_JSON; }
            if (fid >= 0) {
                if (e->f[fid].kind != J_NONE) return duplicate(e, err);
                e->f[fid] = v;
                e->present |= 1u << fid;
            }
            skip_ws(&s);
            if (s.p >= s.end) { *err = "unterminated object"; return ENV_BAD_JSON; }
            if (*s.p == ',') { s.p++; continue; }
            if (*s.p == '}') { s.p++; break; }
            *err = "expected ',' or '}'";
            return ENV_BAD_JSON;
        }
    }
    skip_ws(&s);
    if (s.p != s.end) { *err = "trailing data after the JSON object"; return ENV_BAD_JSON; }
    return complete(e, escaped_name, err);
}



int env_validate_value(const char *buf, size_t len, const char **err)
{
    struct scan s = { buf, buf + len, NULL };
    if (scan_value(&s, 0, NULL) != 0) { *err = s.err ? s.err : "not JSON"; return -1; }
    skip_ws(&s);
    if (s.p != s.end) { *err = "trailing data after the JSON value"; return -1; }
    return 0;
}

int env_validate_member(const char *buf, size_t len, struct env_val *out, const char **err)
{
    struct scan s = { buf, buf + len, NULL };
    if (scan_value(&s, 1, out) != 0) { *err = s.err ? s.err : "not JSON"; return -1; }
    skip_ws(&s);
    if (s.p != s.end) { *err = "trailing data after the JSON value"; return -1; }
    return 0;
}

static inline bool is_ws(char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; }

int env_member_span(const struct envelope *e, int f, const char **start, const char **end)
{
    const struct env_val *v = &e->f[f];
    if (v->kind == J_NONE) return -1;
    bool str = v->kind == J_STRING;
    /* Back from the value over `"name" :` as the scanner read it: the
     * name is the field's own, unescaped (envelope_parse refuses escaped
     * member names), so its opening quote is exactly that far back. */
    const char *q = str ? v->p - 1 : v->p;
    while (is_ws(q[-1])) q--;
    q--;                                   /* ':' */
    while (is_ws(q[-1])) q--;
    *start = q - 2 - strlen(field_names[f]);
    *end = v->p + v->n + (str ? 1 : 0);
    return 0;
}

int env_members_next(const struct envelope *e, const char **cursor, struct env_member *out)
{
    struct scan s = { *cursor ? *cursor : e->frame, e->frame + e->len, NULL };
    skip_ws(&s);
    if (!*cursor) {
        s.p++;   /* '{': the frame was validated already */
        skip_ws(&s);
    } else if (s.p < s.end && *s.p == ',') {
        s.p++;
        skip_ws(&s);
    }
    if (s.p >= s.end || *s.p != '"') return 0;
    s.p++;
    struct env_val k;
    if (scan_string(&s, &k)) return 0;
    skip_ws(&s);
    s.p++;   /* ':' */
    if (scan_value(&s, 1, &out->v)) return 0;
    out->key = k.p;
    out->key_len = k.n;
    out->field = k.escaped ? -1 : known_field(k.p, k.n);
    *cursor = s.p;
    return 1;
}

int env_object_get(const struct env_val *obj, const char *key, struct env_val *out)
{
    if (obj->kind != J_OBJECT) return -1;
    size_t klen = strlen(key);
    struct scan s = { obj->p + 1, obj->p + obj->n, NULL };
    skip_ws(&s);
    if (s.p < s.end && *s.p == '}') return -1;
    while (s.p < s.end) {
        skip_ws(&s);
        s.p++; /* opening quote; the frame was validated already */
        struct env_val k;
        if (scan_string(&s, &k)) return -1;
        skip_ws(&s);
        s.p++; /* ':' */
        struct env_val v;
        if (scan_value(&s, 1, &v)) return -1;
        if (!k.escaped && k.n == klen && memcmp(k.p, key, klen) == 0) { *out = v; return 0; }
        skip_ws(&s);
        if (s.p < s.end && *s.p == ',') s.p++;
        else break;
    }
    return -1;
}

int env_object_unambiguous(const struct env_val *obj, const char *const *keys, size_t nkeys)
{
    if (obj->kind != J_OBJECT) return 0;
    unsigned seen = 0;   /* bit i: keys[i] met once */
    struct scan s = { obj->p + 1, obj->p + obj->n, NULL };
    skip_ws(&s);
    if (s.p < s.end && *s.p == '}') return 0;
    while (s.p < s.end) {
        skip_ws(&s);
        s.p++; /* opening quote; the frame was validated already */
        struct env_val k;
        if (scan_string(&s, &k)) return -1;
        if (k.escaped) return -1;
        for (size_t i = 0; i < nkeys && i < 32; i++) {
            if (k.n == strlen(keys[i]) && memcmp(k.p, keys[i], k.n) == 0) {
                if (seen & (1u << i)) return -1;
                seen |= 1u << i;
            }
        }
        skip_ws(&s);
        s.p++; /* ':' */
        if (scan_value(&s, 1, NULL)) return -1;
        skip_ws(&s);
        if (s.p < s.end && *s.p == ',') s.p++;
        else break;
    }
    return 0;
}

int env_array_next(const struct env_val *arr, const char **cursor, struct env_val *out)
{
    if (arr->kind != J_ARRAY) return 0;
    struct scan s = { *cursor ? *cursor : arr->p + 1, arr->p + arr->n, NULL };
    skip_ws(&s);
    if (s.p >= s.end || *s.p == ']') return 0;
    if (*s.p == ',') { s.p++; }
    if (scan_value(&s, 1, out)) return 0;
    *cursor = s.p;
    return 1;
}

int env_integer(const struct env_val *v, int64_t min, int64_t max, int64_t *out)
{
    if (v->kind != J_NUMBER || v->n == 0 || v->n > 20) return -1;
    const char *p = v->p, *end = v->p + v->n;
    bool neg = *p == '-';
    if (neg) p++;
    if (p == end) return -1;
    uint64_t u = 0;
    for (; p < end; p++) {
        if (*p < '0' || *p > '9') return -1;   /* fraction or exponent */
        if (u > (UINT64_MAX - 9) / 10) return -1;
        u = u * 10 + (uint64_t)(*p - '0');
    }
    if (u > (uint64_t)INT64_MAX) return -1;
    int64_t x = neg ? -(int64_t)u : (int64_t)u;
    if (x < min || x > max) return -1;
    *out = x;
    return 0;
}

int env_number_i64(const struct env_val *v, int64_t *out)
{
    if (v->kind != J_NUMBER || v->n >= 32) return -1;
    char tmp[32];
    memcpy(tmp, v->p, v->n);
    tmp[v->n] = 0;
    errno = 0;
    char *end;
    double d = strtod(tmp, &end);
    if (errno || *end) return -1;
    if (d < -9.2e18 || d > 9.2e18) return -1;
    *out = (int64_t)d;
    return 0;
}
