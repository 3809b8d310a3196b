/* libFuzzer target: the envelope scanner and its accessors must accept or
 * reject any byte string without crashing, reading out of bounds or
 * looping.  And a frame it accepts, changed as rewrite hooks change frames
 * (lb_msg_set), must be written by msg_write as a frame it accepts again,
 * with exactly the index msg_write built for it without scanning it. */
#include "config.h"
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "envelope.h"
#include "msg.h"

#define check(c) do { if (!(c)) abort(); } while (0)

/* Changes a hook may ask for: known members (replaced, added, removed),
 * values with white space, escapes and nesting, a member the envelope does
 * not know (the member-by-member writer), and ones the bus refuses. */
static const struct { const char *name, *json; } g_changes[] = {
    { "to", "\"svc-b\"" }, { "payload", " {\"a\" : [1, \"\\u00e9\"], \"b\":null}\n" }, { "event", NULL },
    { "method", "\"m.x\"" }, { "params", "[]" }, { "zz", "1" }, { "data", "\"x\\n\"" }, { "context", "{}" },
    { "status", "\"error\"" }, { "type", "\"CALL\"" }, { "id", "\"no\"" }, { "payload", NULL },
    { "error", "{\"code\":\"X\"}" }, { "zz", NULL }, { "from", "\"x\"" }, { "query", "  -1.5e3 " },
};
#define N_CHANGES (sizeof g_changes / sizeof *g_changes)

static struct lb_str raw_text(const struct env_val *v)
{
    struct lb_str s = { NULL, 0 };
    if (v->kind == J_STRING) { s.p = v->p - 1; s.n = v->n + 2; }
    else if (v->kind != J_NONE) { s.p = v->p; s.n = v->n; }
    return s;
}

static bool same_text(struct lb_str a, const char *p, size_t n) { return a.n == n && (!n || !memcmp(a.p, p, n)); }

/* What member f of the frame written must be: the last change of it, or
 * the frame's own value. */
static void expect_member(const struct lb_msg *m, const struct envelope *orig, const struct envelope *got, int f)
{
    for (size_t i = 0; i < m->n_over; i++) {
        const struct msg_override *o = &m->over[i];
        if (o->field != f) continue;
        if (o->json_off < 0) { check(got->f[f].kind == J_NONE); return; }
        check(same_text(raw_text(&got->f[f]), m->scratch->buf + o->json_off, o->len));
        return;
    }
    struct lb_str want = raw_text(&orig->f[f]);
    check(same_text(raw_text(&got->f[f]), want.p, want.n));
}

static void forward(struct jw *fwd, const struct lb_msg *m)
{
    static const char prefix[] = "\"type\":\"CALL\",\"id\":\"w\",\"from\":\"f\"";
    struct envelope again;
    const char *err;
    jw_reset(fwd);
    msg_write(fwd, m, prefix, sizeof prefix - 1, FBIT(F_TYPE) | FBIT(F_ID) | FBIT(F_FROM) | FBIT(F_TOKEN), NULL);
    check(envelope_parse(&again, fwd->buf, fwd->len, &err) == ENV_OK && again.type == LB_MSG_CALL);
    check(again.f[F_TOKEN].kind == J_NONE && same_text(raw_text(&again.f[F_ID]), "\"w\"", 3));
    for (int f = F_TO; f < F__COUNT; f++)
        if (f != F_TOKEN) {
            struct lb_str a = raw_text(&again.f[f]), b = raw_text(&m->env.f[f]);
            if (!m->n_over) check(same_text(a, b.p, b.n));
        }
}

static void check_rewrite(const struct envelope *e, const uint8_t *data, size_t size)
{
    static struct jw scratch, out, fwd;
    if (!scratch.buf) { jw_init(&scratch, 64); jw_init(&out, 64); jw_init(&fwd, 64); }
    uint32_t pick = 2166136261u;   /* which changes: a hash of the input */
    for (size_t i = 0; i < size; i++) pick = (pick ^ data[i]) * 16777619u;
    struct lb_msg m;
    jw_reset(&scratch);
    msg_init(&m, &scratch);
    m.env = *e;
    m.rewritable = true;
    for (size_t i = 0; i < N_CHANGES; i++) {
        if (!(pick & (1u << i))) continue;
        const char *j = g_changes[i].json;
        (void)lb_msg_set(&m, g_changes[i].name, j, j ? strlen(j) : 0);
    }
    struct envelope idx, again;
    const char *err;
    jw_reset(&out);
    msg_write(&out, &m, "", 0, 0, &idx);
    check(envelope_parse(&again, out.buf, out.len, &err) == ENV_OK);
    check(idx.frame == out.buf && idx.len == out.len && idx.type == again.type);
    for (int f = 0; f < F__COUNT; f++) {
        const struct env_val *a = &idx.f[f], *b = &again.f[f];
        check(a->kind == b->kind && a->escaped == b->escaped && a->n == b->n && a->p == b->p);
        expect_member(&m, e, &again, f);
    }
    /* As the router forwards a CALL: members of its own first, the
     * frame's copies of them left out (a change to them too); and then the
     * frame a rewrite made, by the index alone. */
    forward(&fwd, &m);
    struct lb_msg rewritten;
    msg_init(&rewritten, &scratch);
    rewritten.env = idx;
    forward(&fwd, &rewritten);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct envelope e;
    const char *err;
    /* A copy of exactly `size` bytes: any read past the end is caught. */
    if (envelope_parse(&e, (const char *)data, size, &err) != ENV_OK) return 0;
    struct env_val v;
    int64_t n;
    if (env_object_get(&e.f[F_CONTEXT], "deadline", &v) == 0) (void)env_number_i64(&v, &n);
    if (env_object_get(&e.f[F_CONTEXT], "depth", &v) == 0) (void)env_number_i64(&v, &n);
    static const char *const keys[] = { "depth", "deadline", "chain", "root" };
    (void)env_object_unambiguous(&e.f[F_CONTEXT], keys, 4);
    const char *cur = NULL;
    int guard = 0;
    while (env_array_next(&e.f[F_METHODS], &cur, &v) && guard++ < 100000) {}
    cur = NULL;
    while (env_array_next(&e.f[F_EVENTS], &cur, &v) && guard++ < 200000) {}
    check_rewrite(&e, data, size);
    return 0;
}
