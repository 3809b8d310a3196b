#include "config.h"
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "encoding.h"
#include "envelope.h"
#include "jsonw.h"
#include "log.h"

/* MessagePack -> JSON of the frame being routed (routing never nests:
 * in-process connections are routed from later loop turns). */
static struct jw g_in;

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

static enum enc_verdict refuse_frame(struct enc_in *in, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static enum enc_verdict refuse_frame(struct enc_in *in, const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(in->why, sizeof in->why, fmt, ap);
    va_end(ap);
    in->code = code;
    return ENC_REFUSE;
}

/* A MessagePack frame that cannot be routed.  Values JSON cannot carry
 * still leave a well-formed message: a CALL with an id is to be answered
 * with an error RESPONSE (the caller's call settles, as for any refused
 * CALL); anything else gets an ERROR, with the id when one was read. */
static enum enc_verdict refuse_msgpack(struct enc_in *in, const struct jw *json, enum mp_status st, const char *why)
{
    const char *code = st == MP_TOO_LARGE ? LB_E_PAYLOAD_TOO_LARGE :
                       st == MP_NOMEM ? LB_E_INTERNAL_ERROR : LB_E_INVALID_MESSAGE;
    struct envelope e;
    const char *unused;
    memset(&e, 0, sizeof e);
    if (json->len) envelope_parse(&e, json->buf, json->len, &unused);   /* for type and id only */
    const struct env_val *id = &e.f[F_ID];
    if (id->kind == J_STRING && !id->escaped && id->n >= 1 && id->n <= LB_MAX_ID) {
        memcpy(in->id, id->p, id->n);
        in->id_len = id->n;
    }
    in->call = st == MP_NO_JSON && in->id_len && env_str_eq(&e.f[F_TYPE], "CALL", 4);
    return refuse_frame(in, code, "%s", why);
}

static enum enc_verdict msgpack_input(const char *frame, size_t len, struct enc_in *in)
{
    char why[256];
    g_in.len = 0;
    enum mp_status st = mp_to_json_indexed(frame, len, &g_in, g_bus.set.max_frame, why, sizeof why,
                                           in->env, &in->env_status, &in->env_err);
    if (st != MP_OK) return refuse_msgpack(in, &g_in, st, why);
    in->indexed = true;
    g_routing = (struct routing){ g_in.buf, g_in.len, frame, len };
    in->json = g_in.buf;
    in->len = g_in.len;
    return ENC_ROUTE;
}

void encoding_routed(void) { g_routing.json = NULL; }

enum enc_verdict encoding_input_slow(struct lb_conn *c, const char *frame, size_t len, struct enc_in *in)
{
    bool mp = mp_is_map_byte((unsigned char)frame[0]);
    bool json = !mp && first_non_ws(frame, len) == '{';
    in->id_len = 0;
    in->call = false;
    in->json = frame;
    in->len = len;
    in->indexed = false;
    if (c->encoding == LB_ENCODING_AUTO) {
        /* Neither: routed as JSON, the default, to be refused there; nothing fixed. */
        if (!mp && !json) return ENC_ROUTE;
        c->encoding = mp ? LB_ENCODING_MSGPACK : LB_ENCODING_JSON;
        log_debug("conn", "#%llu speaks %s", (unsigned long long)c->id, mp ? "MessagePack" : "JSON");
    }
    if (c->encoding == LB_ENCODING_JSON) {
        if (!mp) return ENC_ROUTE;
        return refuse_frame(in, LB_E_INVALID_MESSAGE,
                      "a MessagePack frame on a connection that speaks JSON (%s): one connection, one encoding",
                      pinned_or_sniffed(c));
    }
    if (mp) return msgpack_input(frame, len, in);
    if (json)
        return refuse_frame(in, LB_E_INVALID_MESSAGE,
                      "a JSON frame on a connection that speaks MessagePack (%s): one connection, one encoding",
                      pinned_or_sniffed(c));
    return refuse_frame(in, LB_E_INVALID_MESSAGE, "msgpack: a message is a map (this frame starts with 0x%02x)",
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

