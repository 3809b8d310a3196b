/* libFuzzer target: the Engine.IO / Socket.IO grammar (eio.c) over a
 * polling payload: every packet of any bytes is accepted or refused
 * without reading out of bounds, and what is accepted keeps its promises
 * (a namespace inside the input, an EVENT whose name is an unescaped
 * string that is not reserved, an ACK with an id, a payload that is JSON). */
#include "config.h"
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "eio.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void inside(const char *p, size_t n, const char *base, size_t len)
{
    if (p < base || p + n > base + len) abort();
}

static void one(const char *p, size_t n)
{
    int t = eio_type(p, n);
    if (t != EIO_MESSAGE) return;
    struct sio_packet pk;
    const char *why = NULL;
    if (sio_parse(p + 1, n - 1, &pk, &why) != 0) {
        if (!why) abort();
        return;
    }
    if (pk.nsp_len == 0) abort();
    if (!(pk.nsp_len == 1 && pk.nsp[0] == '/')) inside(pk.nsp, pk.nsp_len, p, n);
    if (pk.data.kind != J_NONE) {
        const char *err;
        const char *raw = pk.data.kind == J_STRING ? pk.data.p - 1 : pk.data.p;
        size_t rn = pk.data.kind == J_STRING ? pk.data.n + 2 : pk.data.n;
        inside(raw, rn, p, n);
        if (env_validate_value(raw, rn, &err) != 0) abort();
    }
    if ((pk.type == SIO_ACK || pk.type == SIO_BINARY_ACK) && pk.ack < 0) abort();
    if (pk.type == SIO_EVENT || pk.type == SIO_BINARY_EVENT) {
        if (pk.name.kind != J_STRING || pk.name.escaped || sio_reserved_event(pk.name.p, pk.name.n)) abort();
        const char *cur = pk.args;
        struct env_val v;
        int guard = 0;
        while (env_array_next(&pk.data, &cur, &v) && guard++ < 100000) {
            struct env_val m;
            (void)env_object_get(&v, "event", &m);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *body = (const char *)data;
    size_t off = 0, n;
    const char *pkt;
    int guard = 0;
    while (eio_payload_next(body, size, &off, &pkt, &n) && guard++ < 100000) {
        inside(pkt, n, body, size == 0 ? 0 : size);
        one(pkt, n);
    }
    return 0;
}
