/* Engine.IO v4 / Socket.IO v5 packet grammar: see eio.h. */
#include "config.h"
#include <string.h>
#include "eio.h"

int eio_type(const char *p, size_t n)
{
    return n && p[0] >= '0' && p[0] <= '6' ? p[0] : 0;
}

bool sio_reserved_event(const char *p, size_t n)
{
    static const char *const names[] = {
        "connect", "connect_error", "disconnect", "disconnecting", "newListener", "removeListener",
    };
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (strlen(names[i]) == n && memcmp(names[i], p, n) == 0) return true;
    return false;
}

/* Digits at *i; returns -1 when there are none or too many (> max). */
static int64_t digits(const char *p, size_t n, size_t *i, int64_t max)
{
    size_t s = *i;
    int64_t v = 0;
    while (*i < n && p[*i] >= '0' && p[*i] <= '9') {
        if (v > (max - (p[*i] - '0')) / 10) return -1;
        v = v * 10 + (p[*i] - '0');
        (*i)++;
    }
    return *i == s ? -1 : v;
}

/* The payload rules of the reference parser, per packet type. */
static const char *check_payload(struct sio_packet *o)
{
    enum env_kind k = (enum env_kind)o->data.kind;
    switch (o->type) {
    case SIO_CONNECT:
        return k == J_NONE || k == J_OBJECT ? NULL : "CONNECT payload must be an object";
    case SIO_DISCONNECT:
        return k == J_NONE ? NULL : "DISCONNECT takes no payload";
    case SIO_CONNECT_ERROR:
        return k == J_OBJECT || k == J_STRING ? NULL : "CONNECT_ERROR payload must be an object or a string";
    case SIO_ACK: case SIO_BINARY_ACK:
        return k == J_ARRAY ? NULL : "ACK payload must be an array";
    case SIO_EVENT: case SIO_BINARY_EVENT: {
        if (k != J_ARRAY) return "EVENT payload must be an array";
        const char *cur = NULL;
        if (!env_array_next(&o->data, &cur, &o->name)) return "EVENT payload must not be empty";
        if (o->name.kind != J_STRING) return "EVENT name must be a string";
        if (o->name.escaped) return "EVENT name must be written without escapes";
        if (sio_reserved_event(o->name.p, o->name.n)) return "EVENT name is reserved by socket.io";
        o->args = cur;
        return NULL;
    }
    }
    return "unknown packet type";
}

int sio_parse(const char *p, size_t n, struct sio_packet *o, const char **why)
{
    memset(o, 0, sizeof *o);
    o->ack = -1;
    o->nsp = "/";
    o->nsp_len = 1;
    size_t i = 0;
    if (n == 0 || p[0] < '0' || p[0] > '6') { *why = "unknown Socket.IO packet type"; return -1; }
    o->type = (enum sio_type)(p[i++] - '0');
    if (o->type == SIO_BINARY_EVENT || o->type == SIO_BINARY_ACK) {
        int64_t a = digits(p, n, &i, SIO_MAX_ATTACHMENTS);
        if (a < 0 || i >= n || p[i] != '-') { *why = "binary packet without a valid attachment count"; return -1; }
        o->attachments = (unsigned)a;
        i++;
    }
    if (i < n && p[i] == '/') {
        size_t s = i;
        while (i < n && p[i] != ',') i++;
        if (i - s > SIO_MAX_NSP) { *why = "namespace too long"; return -1; }
        o->nsp = p + s;
        o->nsp_len = i - s;
        if (i < n) i++;   /* the comma */
    }
    if (i < n && p[i] >= '0' && p[i] <= '9') {
        if ((o->ack = digits(p, n, &i, SIO_MAX_ACK)) < 0) { *why = "ack id too large"; return -1; }
    }
    if (i < n) {
        const char *err;
        if (env_validate_value(p + i, n - i, &err) != 0) { *why = "payload is not valid JSON"; return -1; }
        o->data = eio_value(p + i, n - i);
    }
    if (o->type == SIO_ACK || o->type == SIO_BINARY_ACK) {
        if (o->ack < 0) { *why = "ACK without an ack id"; return -1; }
    }
    if ((*why = check_payload(o))) return -1;
    return 0;
}

struct env_val eio_value(const char *p, size_t n)
{
    struct env_val v = { 0 };
    if (!p) return v;
    const char *q = p, *end = p + n;
    while (q < end && (*q == ' ' || *q == '\t' || *q == '\n' || *q == '\r')) q++;
    const char *e = end;
    while (e > q && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\n' || e[-1] == '\r')) e--;
    if (q == e) return v;
    v.p = q;
    v.n = (uint32_t)(e - q);
    switch (*q) {
    case '{': v.kind = J_OBJECT; break;
    case '[': v.kind = J_ARRAY; break;
    case '"': v.kind = J_STRING; v.p = q + 1; v.n = (uint32_t)(e - q - 2);
              v.escaped = memchr(q + 1, '\\', (size_t)(e - q - 2)) != NULL; break;
    case 't': v.kind = J_TRUE; break;
    case 'f': v.kind = J_FALSE; break;
    case 'n': v.kind = J_NULL; break;
    default: v.kind = J_NUMBER; break;
    }
    return v;
}

int eio_payload_next(const char *body, size_t len, size_t *off, const char **pkt, size_t *n)
{
    if (*off > len) return 0;
    const char *s = body + *off;
    const char *sep = memchr(s, 0x1e, len - *off);
    size_t k = sep ? (size_t)(sep - s) : len - *off;
    if (!sep && *off == len && len != 0) return 0;
    *pkt = s;
    *n = k;
    *off += k + 1;   /* past the separator, or past the end */
    return 1;
}
