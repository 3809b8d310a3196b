#include "config.h"
#include <stdlib.h>
#include <string.h>
#include "encoding.h"
#include "conn.h"
#include "envelope.h"
#include "log.h"

/* MessagePack -> JSON of the frame being routed.  Routing a frame does not
 * route another today, but v2's in-process connections may: a nested call
 * uses a buffer of its own. */
static struct jw g_in;
static int g_in_busy;

/* The frame being routed, in both forms: when the router forwards it byte
 * for byte (a CALL or RESPONSE it need not rewrite), a MessagePack
 * recipient gets the bytes the MessagePack sender wrote. */
static struct routing { const char *json; size_t json_len; const char *mp; size_t mp_len; } g_routing;

/* The last JSON -> MessagePack conversion, keyed by the JSON's content
 * (the router reuses its buffers, so neither a pointer nor a length names
 * a frame): an EVENT fanned out to N MessagePack subscribers is converted
 * once and compared N - 1 times. */
static struct jw g_src, g_out;

static const char *pinned_or_sniffed(const struct lb_conn *c)
{
    return c->encoding_pinned ? "set by the listener's encoding key" : "fixed by its first frame";
}

static char first_non_ws(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != ' ' && p[i] != '\t' && p[i] != '\n' && p[i] != '\r') return p[i];
    return 0;
}

/* A frame refused here never reaches router_input: count it as it would. */
static void count_refused(struct lb_conn *c, size_t len)
{
    c->msgs_in++;
    c->bytes_in += len + LB_FRAME_HEADER;
    g_bus.stats.bytes_in += len + LB_FRAME_HEADER;
    g_bus.stats.msgs_in[LB_MSG_UNKNOWN]++;
}

/* A MessagePack frame that cannot be routed.  Values JSON cannot carry
 * still leave a well-formed message: a CALL with an id is answered with an
 * error RESPONSE (the caller's call settles, as for any refused CALL);
 * anything else gets an ERROR, with the id when one was read. */
static void refuse_msgpack(struct lb_conn *c, const struct jw *json, enum mp_status st, const char *why)
{
    const char *code = st == MP_TOO_LARGE ? LB_E_PAYLOAD_TOO_LARGE :
                       st == MP_NOMEM ? LB_E_INTERNAL_ERROR : LB_E_INVALID_MESSAGE;
    struct envelope e;
    const char *unused;
    memset(&e, 0, sizeof e);
    if (json->len) envelope_parse(&e, json->buf, json->len, &unused);   /* for type and id only */
    const struct env_val *id = &e.f[F_ID];
    bool id_ok = id->kind == J_STRING && id->n >= 1 && id->n <= LB_MAX_ID;
    if (st == MP_NO_JSON && id_ok && env_str_eq(&e.f[F_TYPE], "CALL", 4))
        router_call_error(c, id->p, id->n, code, -1, "%s", why);
    else
        conn_send_error(c, id_ok ? id : NULL, code, "%s", why);
}

static void msgpack_input(struct lb_conn *c, const char *frame, size_t len)
{
    struct jw local = { 0 }, *w = g_in_busy ? &local : &g_in;
    char why[256];
    g_in_busy++;
    w->len = 0;
    enum mp_status st = mp_to_json(frame, len, w, g_bus.set.max_frame, why, sizeof why);
    if (st == MP_OK) {
        struct routing saved = g_routing;
        g_routing = (struct routing){ w->buf, w->len, frame, len };
        router_input(c, w->buf, w->len);
        g_routing = saved;
        /* The router counted the JSON form; the wire carried this. */
        c->bytes_in = c->bytes_in - w->len + len;
        g_bus.stats.bytes_in = g_bus.stats.bytes_in - w->len + len;
    } else {
        count_refused(c, len);
        refuse_msgpack(c, w, st, why);
    }
    g_in_busy--;
    free(local.buf);
}

void encoding_input_slow(struct lb_conn *c, const char *frame, size_t len)
{
    bool mp = mp_is_map_byte((unsigned char)frame[0]);
    bool json = !mp && first_non_ws(frame, len) == '{';
    if (c->encoding == LB_ENCODING_AUTO) {
        if (!mp && !json) {
            /* Neither: refused in JSON, the default, and nothing fixed. */
            router_input(c, frame, len);
            return;
        }
        c->encoding = mp ? LB_ENCODING_MSGPACK : LB_ENCODING_JSON;
        log_debug("conn", "#%llu speaks %s", (unsigned long long)c->id, mp ? "MessagePack" : "JSON");
    }
    if (c->encoding == LB_ENCODING_JSON) {
        if (!mp) { router_input(c, frame, len); return; }
        count_refused(c, len);
        conn_send_error(c, NULL, LB_E_INVALID_MESSAGE,
                        "a MessagePack frame on a connection that speaks JSON (%s): one connection, one encoding",
                        pinned_or_sniffed(c));
        return;
    }
    if (mp) { msgpack_input(c, frame, len); return; }
    count_refused(c, len);
    if (json)
        conn_send_error(c, NULL, LB_E_INVALID_MESSAGE,
                        "a JSON frame on a connection that speaks MessagePack (%s): one connection, one encoding",
                        pinned_or_sniffed(c));
    else
        conn_send_error(c, NULL, LB_E_INVALID_MESSAGE, "msgpack: a message is a map (this frame starts with 0x%02x)",
                        (unsigned char)frame[0]);
}

int encoding_output(struct lb_conn *c, const char **p, size_t *n)
{
    if (g_routing.json && *p == g_routing.json && *n == g_routing.json_len) {
        *p = g_routing.mp;
        *n = g_routing.mp_len;
        return 0;
    }
    if (!g_src.len || *n != g_src.len || memcmp(*p, g_src.buf, *n) != 0) {
        char why[256];
        g_out.len = 0;
        g_src.len = 0;
        enum mp_status st = mp_from_json(*p, *n, &g_out, UINT32_MAX, why, sizeof why);
        if (st != MP_OK) {
            log_error("conn", "#%llu: cannot send a frame as MessagePack: %s", (unsigned long long)c->id, why);
            return -1;
        }
        jw_raw(&g_src, *p, *n);
    }
    *p = g_out.buf;
    *n = g_out.len;
    return 0;
}

void encoding_free(void)
{
    jw_free(&g_in);
    jw_free(&g_src);
    jw_free(&g_out);
}

void lb_conn_set_encoding(struct lb_conn *c, enum lb_encoding enc)
{
    c->encoding = (uint8_t)enc;
    c->encoding_pinned = enc != LB_ENCODING_AUTO;
}

int lb_conf_encoding(struct lb_plugin_ctx *ctx, enum lb_encoding *out)
{
    const char *v;
    int rc = lb_conf_str(ctx, "encoding", "auto", &v);
    if (rc < 0) return -1;
    if (!strcmp(v, "auto")) *out = LB_ENCODING_AUTO;
    else if (!strcmp(v, "json")) *out = LB_ENCODING_JSON;
    else if (!strcmp(v, "msgpack")) *out = LB_ENCODING_MSGPACK;
    else {
        char where[300];
        lb_plugin_fail(ctx, "%s: bad value '%s' for 'encoding' (expected auto, json or msgpack)",
                       lb_conf_where(ctx, "encoding", where, sizeof where), v);
        return -1;
    }
    return rc;
}
