/*
 * struct lb_msg: accessors for plugins, attributes, the changes rewrite
 * hooks ask for, and msg_write (see msg.h).
 */
#include "config.h"
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "msg.h"
#include "util.h"

/* ---- accessors ----------------------------------------------------- */

enum lb_msg_type lb_msg_type(const struct lb_msg *m) { return m->env.type; }

struct lb_str lb_msg_field(const struct lb_msg *m, const char *name)
{
    int f = env_field_by_name(name);
    struct lb_str s = { NULL, 0 };
    if (f < 0 || m->env.f[f].kind != J_STRING) return s;
    s.p = m->env.f[f].p;
    s.n = m->env.f[f].n;
    return s;
}

static struct lb_str raw_of(const struct env_val *v)
{
    struct lb_str s = { NULL, 0 };
    if (v->kind == J_NONE) return s;
    if (v->kind == J_STRING) { s.p = v->p - 1; s.n = v->n + 2; }  /* with quotes */
    else { s.p = v->p; s.n = v->n; }
    return s;
}

struct lb_str lb_msg_raw(const struct lb_msg *m, const char *name)
{
    int f = env_field_by_name(name);
    struct lb_str s = { NULL, 0 };
    return f < 0 ? s : raw_of(&m->env.f[f]);
}

struct lb_str lb_msg_frame(const struct lb_msg *m)
{
    struct lb_str s = { m->env.frame, m->env.len };
    return s;
}

struct lb_str lb_msg_error_code(const struct lb_msg *m)
{
    struct lb_str s = { NULL, 0 };
    struct env_val code;
    if (m->env.f[F_ERROR].kind == J_OBJECT && env_object_get(&m->env.f[F_ERROR], "code", &code) == 0 &&
        code.kind == J_STRING) {
        s.p = code.p;
        s.n = code.n;
    }
    return s;
}

struct lb_str lb_msg_claims(const struct lb_msg *m)
{
    struct lb_str s = { m->claims, m->claims_len };
    return s;
}

void lb_msg_set_claims(struct lb_msg *m, const char *json, size_t len)
{
    /* The claims live in a buffer owned by the bus until the next message
     * sets some: routing finishes before then. */
    static char *buf;
    static size_t cap;
    if (len > cap) { buf = xrealloc(buf, len); cap = len; }
    memcpy(buf, json, len);
    m->claims = buf;
    m->claims_len = len;
}

/* ---- attributes ---------------------------------------------------- */

static const char *attr_find(const struct lb_msg *m, const char *name)
{
    const char *p = m->attrs, *end = m->attrs + m->attr_len;
    while (p < end) {
        const char *v = p + strlen(p) + 1;
        if (strcmp(p, name) == 0) return v;
        p = v + strlen(v) + 1;
    }
    return NULL;
}

int lb_msg_attr_set(struct lb_msg *m, const char *name, const char *value)
{
    size_t nl = strnlen(name, 65), vl = strnlen(value, 257);
    if (!nl || nl > 64 || vl > 256 || m->n_attrs >= 8) { errno = EINVAL; return -1; }
    if (attr_find(m, name)) {
        /* Rewrite the table without the old pair, then append. */
        char tmp[MSG_ATTR_BYTES];
        size_t n = 0;
        const char *p = m->attrs, *end = m->attrs + m->attr_len;
        while (p < end) {
            const char *v = p + strlen(p) + 1, *next = v + strlen(v) + 1;
            if (strcmp(p, name) != 0) { memcpy(tmp + n, p, (size_t)(next - p)); n += (size_t)(next - p); }
            else m->n_attrs--;
            p = next;
        }
        memcpy(m->attrs, tmp, n);
        m->attr_len = (uint16_t)n;
    }
    if (m->attr_len + nl + vl + 2 > MSG_ATTR_BYTES) { errno = ENOSPC; return -1; }
    memcpy(m->attrs + m->attr_len, name, nl + 1);
    memcpy(m->attrs + m->attr_len + nl + 1, value, vl + 1);
    m->attr_len = (uint16_t)(m->attr_len + nl + vl + 2);
    m->n_attrs++;
    return 0;
}

const char *lb_msg_attr_get(const struct lb_msg *m, const char *name) { return attr_find(m, name); }

void msg_carry(struct lb_msg *to, const struct lb_msg *from)
{
    to->claims = from->claims;
    to->claims_len = from->claims_len;
    memcpy(to->attrs, from->attrs, from->attr_len);
    to->attr_len = from->attr_len;
    to->n_attrs = from->n_attrs;
}

/* ---- changes by rewrite hooks -------------------------------------- */

static bool bus_owned(int field, const struct lb_msg *m, const char *json, size_t len)
{
    switch (field) {
    case F_FROM: case F_TOKEN: case F_ID: case F_AUTH: return true;
    case F_TO: return m->env.type == LB_MSG_RESPONSE;   /* always the caller (out_response) */
    case F_TYPE:
        /* The one change of type: a CRUD request becomes the CALL it maps to. */
        return !(m->env.type == LB_MSG_CRUD && json && len == 6 && memcmp(json, "\"CALL\"", 6) == 0);
    default: return false;
    }
}

static uint32_t scratch_put(struct jw *w, const char *p, size_t n)
{
    size_t off = w->len;
    jw_raw(w, p, n);
    return (uint32_t)off;
}

/* Member names a plugin may add: written into frames as they are. */
static bool plain_name(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)p[i] < 0x21 || (unsigned char)p[i] > 0x7e || p[i] == '"' || p[i] == '\\') return false;
    return true;
}

int lb_msg_set(struct lb_msg *m, const char *member, const char *json, size_t len)
{
    const char *err;
    size_t nl = member ? strlen(member) : 0;
    if (!m->rewritable) { errno = EPERM; return -1; }
    if (!nl || nl > LB_MAX_NAME || !plain_name(member, nl) || (json && env_validate_value(json, len, &err) != 0)) {
        errno = EINVAL;
        return -1;
    }
    int field = env_field_by_name(member);
    if (field >= 0 && bus_owned(field, m, json, len)) { errno = EPERM; return -1; }
    struct msg_override *o = NULL;
    for (size_t i = 0; i < m->n_over; i++) {
        const struct msg_override *x = &m->over[i];
        if (x->name_len == nl && memcmp(m->scratch->buf + x->name_off, member, nl) == 0) o = &m->over[i];
    }
    if (!o) {
        if (m->n_over == MSG_MAX_OVERRIDES) { errno = ENOSPC; return -1; }
        o = &m->over[m->n_over++];
        o->name_off = scratch_put(m->scratch, member, nl);
        o->name_len = (uint32_t)nl;
        o->field = field;
    }
    o->json_off = json ? (int64_t)scratch_put(m->scratch, json, len) : -1;
    o->len = json ? (uint32_t)len : 0;
    return 0;
}

int lb_msg_add_recipient(struct lb_msg *m, const char *service)
{
    size_t n = service ? strlen(service) : 0;
    if (!m->rewritable || m->env.type != LB_MSG_EMIT) { errno = EPERM; return -1; }
    if (!valid_service_name(service, n)) { errno = EINVAL; return -1; }
    if (m->n_recips == MSG_MAX_RECIPIENTS) { errno = ENOSPC; return -1; }
    m->recip_off[m->n_recips] = scratch_put(m->scratch, service, n);
    m->recip_len[m->n_recips++] = (uint32_t)n;
    return 0;
}

struct lb_str msg_recipient(const struct lb_msg *m, size_t i)
{
    struct lb_str s = { m->scratch->buf + m->recip_off[i], m->recip_len[i] };
    return s;
}

/* ---- writing a frame with changes ----------------------------------- */

static const struct msg_override *override_of(const struct lb_msg *m, const struct env_member *mem)
{
    for (size_t i = 0; i < m->n_over; i++) {
        const struct msg_override *o = &m->over[i];
        if (o->name_len == mem->key_len && memcmp(m->scratch->buf + o->name_off, mem->key, mem->key_len) == 0)
            return o;
    }
    return NULL;
}

static void put_member(struct jw *w, bool *first, const char *key, size_t kn, const char *val, size_t vn)
{
    if (!*first) jw_lit(w, ",");
    *first = false;
    jw_lit(w, "\"");
    jw_raw(w, key, kn);
    jw_lit(w, "\":");
    jw_raw(w, val, vn);
}

void msg_write(struct jw *w, const struct lb_msg *m, const char *prefix, size_t plen, uint64_t drop)
{
    bool first = plen == 0;
    uint32_t seen = 0;   /* overrides applied in place */
    jw_lit(w, "{");
    jw_raw(w, prefix, plen);
    const char *cur = NULL;
    struct env_member mem;
    while (env_members_next(&m->env, &cur, &mem)) {
        if (mem.field >= 0 && (drop & FBIT(mem.field))) continue;
        const struct msg_override *o = m->n_over ? override_of(m, &mem) : NULL;
        if (o) {
            seen |= 1u << (o - m->over);
            if (o->json_off >= 0)
                put_member(w, &first, mem.key, mem.key_len, m->scratch->buf + o->json_off, o->len);
            continue;
        }
        struct lb_str raw = raw_of(&mem.v);
        put_member(w, &first, mem.key, mem.key_len, raw.p, raw.n);
    }
    for (size_t i = 0; i < m->n_over; i++) {
        const struct msg_override *o = &m->over[i];
        /* A member the writer drops is one it writes itself (in `prefix`):
         * a change to it must not add a second copy. */
        if ((seen & (1u << i)) || o->json_off < 0 || (o->field >= 0 && (drop & FBIT(o->field)))) continue;
        put_member(w, &first, m->scratch->buf + o->name_off, o->name_len, m->scratch->buf + o->json_off, o->len);
    }
    jw_lit(w, "}");
}

/* ---- parsing for plugins ------------------------------------------- */

struct lb_msg *lb_msg_new(void)
{
    struct lb_msg *m = xcalloc(1, sizeof *m);
    return m;
}

void lb_msg_free(struct lb_msg *m) { free(m); }

int lb_msg_parse(struct lb_msg *m, const char *frame, size_t len, const char **err)
{
    msg_init(m, NULL);
    return envelope_parse(&m->env, frame, len, err) == ENV_OK ? 0 : -1;
}

int lb_json_validate(const char *text, size_t len, const char **err)
{
    return env_validate_value(text, len, err);
}
