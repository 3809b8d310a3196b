/* libFuzzer target: the WebSocket reader (wsframe.c over wslay's frame
 * layer).  Any bytes, fed in pieces, give messages within max_message,
 * text that is UTF-8 and control payloads of at most 125 bytes, or a
 * refusal with a close code; the same bytes fed whole give the same
 * messages.  The accept-key check runs on the first bytes. */
#include "config.h"
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "wsframe.h"
#include "envelope.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_MSG 2048

struct seen { unsigned n; uint32_t sig; int closed; };

static int on_msg(void *ud, enum ws_op op, const uint8_t *p, size_t n, unsigned code)
{
    struct seen *s = ud;
    if (op == WS_OP_TEXT && !env_utf8_valid((const char *)p, n)) abort();
    if ((op == WS_OP_TEXT || op == WS_OP_BINARY) && n > MAX_MSG) abort();
    if ((op == WS_OP_PING || op == WS_OP_PONG || op == WS_OP_CLOSE) && n > 125) abort();
    if (op == WS_OP_CLOSE && code < 1000) abort();
    s->n++;
    s->sig = (s->sig ^ (uint32_t)op ^ (uint32_t)n * 2654435761u) * 16777619u;
    for (size_t i = 0; i < n; i++) s->sig = (s->sig ^ p[i]) * 16777619u;
    if (op == WS_OP_CLOSE) { s->closed = 1; return 1; }   /* the plugin stops reading */
    return 0;
}

static int run(const uint8_t *data, size_t size, size_t chunk, struct seen *s, unsigned *code)
{
    struct ws_reader r;
    if (ws_reader_init(&r, MAX_MSG) != 0) abort();
    memset(s, 0, sizeof *s);
    const char *why;
    int rc = 0;
    size_t off = 0;
    while (off < size) {
        size_t give = chunk && chunk < size - off ? chunk : size - off;
        long used = ws_read(&r, data + off, give, on_msg, s, code, &why);
        if (used == -2) { rc = -2; break; }
        if (used < 0 || (size_t)used > give) abort();
        off += (size_t)used;
        if (s->closed) break;
    }
    ws_reader_free(&r);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char accept[29];
    if (size >= 24) (void)ws_accept_key((const char *)data, 24, accept);
    struct seen a, b;
    unsigned ca = 0, cb = 0;
    int ra = run(data, size, 0, &a, &ca);
    int rb = run(data, size, 1 + (size ? data[size - 1] % 13 : 0), &b, &cb);
    if (ra != rb || a.n != b.n || a.sig != b.sig || (ra == -2 && ca != cb)) abort();
    if (ra == -2 && !(ca == 1002 || ca == 1007 || ca == 1009 || ca == 1011)) abort();
    return 0;
}
