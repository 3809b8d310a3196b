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

/* call.to and call.method are not in the table: they are the pending
 * call's own strings (one set by a plugin comes first, as it replaced
 * them when they were written into the table). */
const char *lb_msg_attr_get(const struct lb_msg *m, const char *name)
{
    const char *v = m->attr_len ? attr_find(m, name) : NULL;
    if (v || !m->call_to || strncmp(name, "call.", 5) != 0) return v;
    if (strcmp(name + 5, "to") == 0) return m->call_to;
    if (strcmp(name + 5, "method") == 0) return m->call_method;
    return NULL;
}

void msg_carry(struct lb_msg *to, const struct lb_msg *from)
{
    to->claims = from->claims;
    to->claims_len = from->claims_len;
    to->call_to = from->call_to;
    to->call_method = from->call_method;
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

/* What must hold of a change for the frame written with it to be one the
 * envelope scanner accepts, so that it need not be scanned again (the
 * rest of the frame was scanned when it came in):
 *   - the value is one complete JSON value under the scanner's own rules
 *     (strict syntax, UTF-8, escapes, surrogates), nesting counted from
 *     the frame's object: env_validate_member, here, once;
 *   - the name is plain printable ASCII without quote or backslash (it is
 *     written between quotes as it is, and an escaped name is one the
 *     scanner refuses), of a valid length;
 *   - no member ends up twice: a name has one change, which replaces the
 *     member in place or is added once (msg_write);
 *   - the type changes only as one CRUD becomes a CALL (bus_owned), so
 *     the written frame's type is a known one.
 * What the message then means (a valid target, method, context, ...) is
 * checked by the router on the frame written, as for any client's. */
int lb_msg_set(struct lb_msg *m, const char *member, const char *json, size_t len)
{
    const char *err;
    size_t nl = member ? strlen(member) : 0;
    struct env_val v = { NULL, 0, J_NONE, 0 };
    if (!m->rewritable) { errno = EPERM; return -1; }
    if (!nl || nl > LB_MAX_NAME || !plain_name(member, nl) ||
        (json && (len >= UINT32_MAX || env_validate_member(json, len, &v, &err) != 0))) {
        errno = EINVAL;
        return -1;
    }
    if (json) {
        /* Stored as the scanner saw it: without the white space around. */
        json = v.kind == J_STRING ? v.p - 1 : v.p;
        len = v.kind == J_STRING ? v.n + 2u : v.n;
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
    o->kind = v.kind;
    o->escaped = v.escaped;
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

/* The index msg_write builds: value offsets into w while it writes (the
 * buffer may move), pointers once it is done. */
struct windex {
    struct envelope *e;          /* NULL: none wanted */
    size_t base;                 /* where the frame starts in w */
    uint32_t off[F__COUNT];      /* of the value's text (a string's opening quote) */
};

static void wi_begin(struct windex *x, struct envelope *e, const struct jw *w)
{
    x->e = e;
    x->base = w->len;
    if (e) { memset(e->f, 0, sizeof e->f); e->present = 0; }
}

/* Known member `field` has value v (kind and escapes) at offset off of w. */
static void wi_note(struct windex *x, int field, size_t off, uint8_t kind, uint8_t escaped, size_t textlen)
{
    if (!x->e || field < 0) return;
    struct env_val *f = &x->e->f[field];
    x->off[field] = (uint32_t)(off - x->base);
    x->e->present |= 1u << field;
    f->kind = kind;
    f->escaped = escaped;
    f->n = (uint32_t)(kind == J_STRING ? textlen - 2 : textlen);
}

static void wi_end(struct windex *x, const struct jw *w, enum lb_msg_type type, bool type_changed)
{
    struct envelope *e = x->e;
    if (!e) return;
    e->frame = w->buf + x->base;
    e->len = w->len - x->base;
    for (uint32_t b = e->present; b; b &= b - 1) {
        int f = __builtin_ctz(b);
        e->f[f].p = e->frame + x->off[f] + (e->f[f].kind == J_STRING ? 1 : 0);
    }
    e->type = type_changed ? env_type_of(&e->f[F_TYPE]) : type;
}

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

static void put_override(struct jw *w, bool *first, const struct lb_msg *m, const struct msg_override *o,
                         struct windex *x)
{
    const char *sb = m->scratch->buf;
    put_member(w, first, sb + o->name_off, o->name_len, sb + o->json_off, o->len);
    wi_note(x, o->field, w->len - o->len, o->kind, o->escaped, o->len);
}

/* ---- the fast way: runs of untouched members copied whole ---- */

/* A member the writer leaves out or replaces (o NULL: leaves out). */
struct cut { const char *start, *end; const struct msg_override *o; };

/* A run of the frame copied as it is: its members' values move by
 * (to - from). */
struct run { const char *from, *until; size_t to; };

static inline bool sep_char(char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t' || c == ','; }

/* Copies the members between a and b (white space and commas around them
 * trimmed: a member starts with '"' and ends with its value, so what is
 * left is members and the separators between them). */
static void put_run(struct jw *w, bool *first, const char *a, const char *b, struct run *runs, size_t *nruns)
{
    while (a < b && sep_char(*a)) a++;
    while (b > a && sep_char(b[-1])) b--;
    if (a == b) return;
    if (!*first) jw_lit(w, ",");
    *first = false;
    runs[*nruns].from = a;
    runs[*nruns].until = b;
    runs[(*nruns)++].to = w->len;
    jw_raw(w, a, (size_t)(b - a));
}

/* The members to leave out or replace, in frame order; *fields: theirs. */
static size_t collect_cuts(const struct lb_msg *m, uint64_t drop, struct cut *cuts, uint32_t *seen, uint32_t *fields)
{
    const struct envelope *e = &m->env;
    size_t n = 0;
    for (uint64_t d = drop & e->present; d; d &= d - 1) {
        int f = __builtin_ctzll(d);
        env_member_span(e, f, &cuts[n].start, &cuts[n].end);
        cuts[n++].o = NULL;
        *fields |= 1u << f;
    }
    for (size_t i = 0; i < m->n_over; i++) {
        const struct msg_override *o = &m->over[i];
        if ((drop & FBIT(o->field)) || env_member_span(e, o->field, &cuts[n].start, &cuts[n].end) != 0) continue;
        cuts[n++].o = o;
        *seen |= 1u << i;
        *fields |= 1u << o->field;
    }
    for (size_t i = 1; i < n; i++)   /* into frame order; a handful at most */
        for (size_t j = i; j > 0 && cuts[j - 1].start > cuts[j].start; j--) {
            struct cut t = cuts[j];
            cuts[j] = cuts[j - 1];
            cuts[j - 1] = t;
        }
    return n;
}

/* Every change is of a member the envelope knows (so it knows where each
 * is): the frame is copied in runs around them. */
static void write_runs(struct jw *w, const struct lb_msg *m, uint64_t drop, bool *first, uint32_t *seen,
                       struct windex *x)
{
    const struct envelope *e = &m->env;
    struct cut cuts[F__COUNT + MSG_MAX_OVERRIDES];
    struct run runs[F__COUNT + MSG_MAX_OVERRIDES + 1];
    uint32_t cut_fields = 0;
    size_t ncuts = collect_cuts(m, drop, cuts, seen, &cut_fields), nruns = 0;
    /* The members lie between the frame's '{' and '}' (white space around
     * them allowed). */
    const char *at = e->frame, *end = e->frame + e->len;
    while (*at != '{') at++;
    at++;
    while (end[-1] != '}') end--;
    end--;
    for (size_t i = 0; i < ncuts; i++) {
        put_run(w, first, at, cuts[i].start, runs, &nruns);
        if (cuts[i].o && cuts[i].o->json_off >= 0) put_override(w, first, m, cuts[i].o, x);
        at = cuts[i].end;
    }
    put_run(w, first, at, end, runs, &nruns);
    if (!x->e) return;
    /* The members copied (neither cut nor written anew): where their
     * values went. */
    for (uint32_t b = e->present & ~cut_fields & ~x->e->present; b; b &= b - 1) {
        int f = __builtin_ctz(b);
        const struct env_val *v = &e->f[f];
        const char *text = v->kind == J_STRING ? v->p - 1 : v->p;
        for (size_t r = 0; r < nruns; r++)
            if (text >= runs[r].from && text < runs[r].until) {
                wi_note(x, f, runs[r].to + (size_t)(text - runs[r].from), v->kind, v->escaped,
                        v->n + (v->kind == J_STRING ? 2u : 0u));
                break;
            }
    }
}

/* ---- the general way: member by member ---- */

/* A change of a member the envelope does not know (its name may even be
 * given twice in the frame): every member is looked at. */
static void write_members(struct jw *w, const struct lb_msg *m, uint64_t drop, bool *first, uint32_t *seen,
                          struct windex *x)
{
    const char *cur = NULL;
    struct env_member mem;
    while (env_members_next(&m->env, &cur, &mem)) {
        if (mem.field >= 0 && (drop & FBIT(mem.field))) continue;
        const struct msg_override *o = override_of(m, &mem);
        if (o) {
            *seen |= 1u << (o - m->over);
            if (o->json_off >= 0) put_override(w, first, m, o, x);
            continue;
        }
        struct lb_str raw = raw_of(&mem.v);
        put_member(w, first, mem.key, mem.key_len, raw.p, raw.n);
        wi_note(x, mem.field, w->len - raw.n, mem.v.kind, mem.v.escaped, raw.n);
    }
}

void msg_write(struct jw *w, const struct lb_msg *m, const char *prefix, size_t plen, uint64_t drop,
               struct envelope *idx)
{
    bool first = plen == 0;
    uint32_t seen = 0;   /* overrides applied in place */
    struct windex x;
    bool all_known = true, type_changed = false;
    for (size_t i = 0; i < m->n_over; i++) {
        all_known &= m->over[i].field >= 0;
        type_changed |= m->over[i].field == F_TYPE;
    }
    wi_begin(&x, plen ? NULL : idx, w);
    jw_lit(w, "{");
    jw_raw(w, prefix, plen);
    if (all_known) write_runs(w, m, drop, &first, &seen, &x);
    else write_members(w, m, drop, &first, &seen, &x);
    for (size_t i = 0; i < m->n_over; i++) {
        const struct msg_override *o = &m->over[i];
        /* A member the writer drops is one it writes itself (in `prefix`):
         * a change to it must not add a second copy. */
        if ((seen & (1u << i)) || o->json_off < 0 || (o->field >= 0 && (drop & FBIT(o->field)))) continue;
        put_override(w, &first, m, o, &x);
    }
    jw_lit(w, "}");
    wi_end(&x, w, m->env.type, type_changed);
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

int lb_json_object_get(const char *obj, size_t len, const char *key, struct lb_str *out)
{
    while (len && (*obj == ' ' || *obj == '\t' || *obj == '\n' || *obj == '\r')) { obj++; len--; }
    if (!len || *obj != '{' || len > UINT32_MAX) return -1;
    struct env_val o = { obj, (uint32_t)len, J_OBJECT, 0 }, v;
    if (env_object_get(&o, key, &v) != 0) return -1;
    *out = raw_of(&v);
    return 0;
}
