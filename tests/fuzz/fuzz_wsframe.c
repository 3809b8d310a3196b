/* libFuzzer target: the WebSocket reader (plugins/websocket/wsframe.c).
 * 1. Its frame parser against wslay's (libwslay-dev, an independent
 *    implementation): the same frames (flags, opcode, length, unmasked
 *    payload) from any bytes, or both refuse at the same frame.
 * 2. ws_read, fed whole and in pieces the way the plugin feeds it (a frame
 *    split across chunks is made contiguous when `need` says so): the same
 *    messages, each within max_message, text always UTF-8, control
 *    payloads <= 125 bytes, or the same refusal and close code.
 * The accept-key check runs on the first 24 bytes. */
#include "config.h"
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <wslay/wslay.h>
#include "wsframe.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_MSG 2048

/* ---- 1. frames, against wslay -------------------------------------- */

struct src { const uint8_t *p; size_t n; };

static ssize_t wslay_recv(uint8_t *buf, size_t len, int flags, void *ud)
{
    (void)flags;
    struct src *s = ud;
    size_t k = len < s->n ? len : s->n;
    if (!k) return 0;
    memcpy(buf, s->p, k);
    s->p += k;
    s->n -= k;
    return (ssize_t)k;
}
static ssize_t wslay_send(const uint8_t *d, size_t n, int f, void *ud) { (void)d; (void)n; (void)f; (void)ud; return -1; }
static int wslay_mask(uint8_t *b, size_t n, void *ud) { (void)b; (void)n; (void)ud; return -1; }

static uint32_t h32(uint32_t h, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 16777619u;
    return h;
}

static void against_wslay(const uint8_t *data, size_t size)
{
    uint8_t *mine = malloc(size ? size : 1);
    memcpy(mine, data, size);
    struct src s = { data, size };
    wslay_frame_context_ptr ctx;
    static const struct wslay_frame_callbacks cbs = { wslay_send, wslay_recv, wslay_mask };
    if (wslay_frame_context_init(&ctx, &cbs, &s) != 0) abort();
    size_t off = 0;
    for (int guard = 0; guard < 10000; guard++) {
        /* wslay: one whole frame (its payload may come in pieces). */
        struct wslay_frame_iocb io;
        uint64_t got = 0, want = 0;
        uint32_t wsig = 2166136261u;
        int wslay_rc = 0, started = 0;
        for (;;) {
            ssize_t r = wslay_frame_recv(ctx, &io);
            if (r == WSLAY_ERR_WANT_READ) { wslay_rc = started ? 2 : 0; break; }
            if (r < 0) { wslay_rc = -1; break; }
            if (!started) { started = 1; want = io.payload_length; }
            wsig = h32(wsig, io.data, io.data_length);
            got += io.data_length;
            if (got == want) { wslay_rc = 1; break; }
        }
        /* wsframe: the same frame, or the same refusal, or both waiting. */
        struct ws_frame f;
        const char *why;
        int rc = ws_frame_parse(mine + off, size - off, &f, &why);
        if (rc == 1 && size - off < f.head + f.len) rc = 0;   /* payload incomplete */
        if (wslay_rc == 2) wslay_rc = 0;
        if (rc != wslay_rc) abort();
        if (rc != 1) break;
        if (f.fin != io.fin || f.rsv != io.rsv || f.op != io.opcode || f.masked != io.mask || f.len != io.payload_length)
            abort();
        if (f.masked) ws_unmask(mine + off + f.head, (size_t)f.len, f.key, 0);
        if (h32(2166136261u, mine + off + f.head, (size_t)f.len) != wsig) abort();
        off += f.head + (size_t)f.len;
    }
    wslay_frame_context_free(ctx);
    free(mine);
}

/* ---- 2. messages, whole and in pieces ------------------------------ */

struct seen { unsigned n; uint32_t sig; int closed; };

static int on_msg(void *ud, enum ws_op op, const uint8_t *p, size_t n, unsigned code)
{
    struct seen *s = ud;
    if (op == WS_OP_TEXT && !ws_utf8_valid(p, n)) abort();
    if ((op == WS_OP_TEXT || op == WS_OP_BINARY) && n > MAX_MSG) abort();
    if ((op == WS_OP_PING || op == WS_OP_PONG || op == WS_OP_CLOSE) && n > 125) abort();
    if (op == WS_OP_CLOSE && code < 1000) abort();
    s->n++;
    s->sig = h32((s->sig ^ (uint32_t)op ^ (uint32_t)n * 2654435761u) * 16777619u, p, n);
    if (op == WS_OP_CLOSE) { s->closed = 1; return 1; }   /* the plugin stops reading */
    return 0;
}

/* The plugin's loop over a buffer that arrives `chunk` bytes at a time. */
static int run(const uint8_t *data, size_t size, size_t chunk, struct seen *s, unsigned *code)
{
    struct ws_reader r;
    if (ws_reader_init(&r, MAX_MSG) != 0) abort();
    memset(s, 0, sizeof *s);
    uint8_t *buf = malloc(size ? size : 1);
    size_t have = 0, start = 0;
    int rc = 0;
    const char *why;
    while (!s->closed) {
        size_t add = chunk && chunk < size - have ? chunk : size - have;
        memcpy(buf + have, data + have, add);
        have += add;
        long used = ws_read(&r, buf + start, have - start, on_msg, s, code, &why);
        if (used == -2) { rc = -2; break; }
        if (used < 0 || (size_t)used > have - start) abort();
        /* Short of the end only for want of bytes (or after a close). */
        if ((size_t)used < have - start && !s->closed && r.need <= have - start - (size_t)used) abort();
        start += (size_t)used;
        if (have == size && used == 0) break;
    }
    free(buf);
    ws_reader_free(&r);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char accept[29];
    if (size >= 24) (void)ws_accept_key((const char *)data, 24, accept);
    against_wslay(data, size);
    struct seen a, b;
    unsigned ca = 0, cb = 0;
    int ra = run(data, size, 0, &a, &ca);
    int rb = run(data, size, 1 + (size ? data[size - 1] % 13 : 0), &b, &cb);
    if (ra != rb || a.n != b.n || a.sig != b.sig || (ra == -2 && ca != cb)) abort();
    if (ra == -2 && !(ca == 1002 || ca == 1007 || ca == 1009 || ca == 1011)) abort();
    return 0;
}
