/* RFC 6455 message layer over wslay's frame parser: see wsframe.h. */
#include "config.h"
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <event2/buffer.h>
#include <openssl/evp.h>
#include "wsframe.h"
#include "envelope.h"

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
/* A reassembly buffer larger than this is released after its message. */
#define KEEP_MSG_CAP (64 * 1024)

static ssize_t recv_cb(uint8_t *buf, size_t len, int flags, void *ud)
{
    (void)flags;
    struct ws_reader *r = ud;
    size_t n = len < r->in_len ? len : r->in_len;
    if (n == 0) return 0;   /* wslay: WSLAY_ERR_WANT_READ */
    memcpy(buf, r->in, n);
    r->in += n;
    r->in_len -= n;
    return (ssize_t)n;
}

static ssize_t send_cb(const uint8_t *d, size_t n, int flags, void *ud) { (void)d; (void)n; (void)flags; (void)ud; return -1; }
static int genmask_cb(uint8_t *b, size_t n, void *ud) { (void)b; (void)n; (void)ud; return -1; }

int ws_reader_init(struct ws_reader *r, uint64_t max_msg)
{
    memset(r, 0, sizeof *r);
    static const struct wslay_frame_callbacks cbs = { send_cb, recv_cb, genmask_cb };
    if (wslay_frame_context_init(&r->fr, &cbs, r) != 0) return -1;
    r->max_msg = max_msg;
    r->msg_op = WS_OP_CONT;
    return 0;
}

void ws_reader_free(struct ws_reader *r)
{
    if (r->fr) wslay_frame_context_free(r->fr);
    free(r->msg);
    memset(r, 0, sizeof *r);
}

static int msg_append(struct ws_reader *r, const uint8_t *p, size_t n)
{
    if (n == 0) return 0;
    if (r->msg_len + n > r->msg_cap) {
        size_t cap = r->msg_cap ? r->msg_cap : 4096;
        while (cap < r->msg_len + n) cap *= 2;
        uint8_t *m = realloc(r->msg, cap);
        if (!m) return -1;
        r->msg = m;
        r->msg_cap = cap;
    }
    memcpy(r->msg + r->msg_len, p, n);
    r->msg_len += n;
    return 0;
}

static void msg_done(struct ws_reader *r)
{
    r->msg_op = WS_OP_CONT;
    r->msg_len = 0;
    if (r->msg_cap > KEEP_MSG_CAP) { free(r->msg); r->msg = NULL; r->msg_cap = 0; }
}

static bool close_code_ok(unsigned c)
{
    return (c >= 1000 && c <= 1003) || (c >= 1007 && c <= 1014) || (c >= 3000 && c <= 4999);
}

/* First piece of a frame: the rules wslay's frame layer leaves to us. */
static const char *check_header(struct ws_reader *r, const struct wslay_frame_iocb *io, unsigned *code)
{
    *code = 1002;
    if (!io->mask) return "client frames must be masked";
    if (io->rsv) return "reserved bits set (no extension was negotiated)";
    switch (io->opcode) {
    case WS_OP_CONT:
        if (r->msg_op == WS_OP_CONT) return "continuation frame without a message in progress";
        break;
    case WS_OP_TEXT: case WS_OP_BINARY:
        if (r->msg_op != WS_OP_CONT) return "new message before the fragmented one ended";
        break;
    case WS_OP_CLOSE: case WS_OP_PING: case WS_OP_PONG:
        return NULL;   /* wslay checked fin and the 125-byte limit */
    default:
        return "reserved opcode";
    }
    if (r->msg_len + io->payload_length > r->max_msg) { *code = 1009; return "message larger than max_message"; }
    return NULL;
}

static int deliver(enum ws_op op, const uint8_t *p, size_t n, ws_msg_fn fn, void *ud,
                   unsigned *code, const char **why)
{
    if (op == WS_OP_TEXT && !env_utf8_valid((const char *)p, n)) {
        *code = 1007;
        *why = "text message is not valid UTF-8";
        return -2;
    }
    return fn(ud, op, p, n, 0);
}

static int control(struct ws_reader *r, uint8_t op, ws_msg_fn fn, void *ud, unsigned *code, const char **why)
{
    if (op != WS_OP_CLOSE) return fn(ud, (enum ws_op)op, r->ctl, r->ctl_len, 0);
    unsigned status = 1005;
    const uint8_t *reason = r->ctl;
    size_t rn = 0;
    if (r->ctl_len == 1) { *code = 1002; *why = "close frame with a 1-byte payload"; return -2; }
    if (r->ctl_len >= 2) {
        status = (unsigned)r->ctl[0] << 8 | r->ctl[1];
        reason = r->ctl + 2;
        rn = r->ctl_len - 2;
        if (!close_code_ok(status)) { *code = 1002; *why = "invalid close status code"; return -2; }
        if (!env_utf8_valid((const char *)reason, rn)) { *code = 1007; *why = "close reason is not valid UTF-8"; return -2; }
    }
    return fn(ud, WS_OP_CLOSE, reason, rn, status);
}

long ws_read(struct ws_reader *r, const uint8_t *p, size_t len, ws_msg_fn fn, void *ud,
             unsigned *code, const char **why)
{
    r->in = p;
    r->in_len = len;
    for (;;) {
        struct wslay_frame_iocb io;
        ssize_t got = wslay_frame_recv(r->fr, &io);
        if (got == WSLAY_ERR_WANT_READ) break;
        if (got < 0) { *code = 1002; *why = "malformed frame header"; return -2; }
        bool first = !r->frame_open;
        if (first) {
            if ((*why = check_header(r, &io, code))) return -2;
            r->frame_open = true;
            r->frame_len = io.payload_length;
            r->frame_got = 0;
            r->ctl_len = 0;
            if (io.opcode == WS_OP_TEXT || io.opcode == WS_OP_BINARY) r->msg_op = (enum ws_op)io.opcode;
        }
        r->frame_got += io.data_length;
        bool frame_end = r->frame_got == r->frame_len;
        int rc = 0;
        if (io.opcode >= 8) {
            memcpy(r->ctl + r->ctl_len, io.data, io.data_length);   /* <= 125 in all */
            r->ctl_len += io.data_length;
            if (frame_end) { r->frame_open = false; rc = control(r, io.opcode, fn, ud, code, why); }
        } else if (first && frame_end && io.fin && r->msg_len == 0) {
            /* The whole message in one piece: hand it over where it lies. */
            enum ws_op op = r->msg_op;
            r->frame_open = false;
            r->msg_op = WS_OP_CONT;
            rc = deliver(op, io.data, io.data_length, fn, ud, code, why);
        } else {
            if (msg_append(r, io.data, io.data_length) < 0) { *code = 1011; *why = "out of memory"; return -2; }
            if (frame_end) {
                r->frame_open = false;
                if (io.fin) {
                    enum ws_op op = r->msg_op;
                    rc = deliver(op, r->msg, r->msg_len, fn, ud, code, why);
                    if (rc != -1 && rc != -2) msg_done(r);
                }
            }
        }
        if (rc == -2 || rc == -1) return rc;
        if (rc) break;
    }
    return (long)(len - r->in_len);
}

int ws_frame_write(struct evbuffer *out, enum ws_op op, const struct iovec *iov, int iovcnt)
{
    uint64_t n = 0;
    for (int i = 0; i < iovcnt; i++) n += iov[i].iov_len;
    uint8_t h[10];
    size_t hl = 2;
    h[0] = (uint8_t)(0x80 | op);
    if (n < 126) {
        h[1] = (uint8_t)n;
    } else if (n < 65536) {
        h[1] = 126;
        h[2] = (uint8_t)(n >> 8);
        h[3] = (uint8_t)n;
        hl = 4;
    } else {
        h[1] = 127;
        for (int i = 0; i < 8; i++) h[2 + i] = (uint8_t)(n >> (56 - 8 * i));
        hl = 10;
    }
    if (evbuffer_add(out, h, hl) != 0) return -1;
    for (int i = 0; i < iovcnt; i++)
        if (iov[i].iov_len && evbuffer_add(out, iov[i].iov_base, iov[i].iov_len) != 0) return -1;
    return 0;
}

int ws_close_write(struct evbuffer *out, unsigned code, const char *reason)
{
    uint8_t b[125];
    size_t full = reason ? strlen(reason) : 0, rn = full > 123 ? 123 : full;
    /* Never cut a UTF-8 sequence in half. */
    while (rn > 0 && rn < full && ((unsigned char)reason[rn] & 0xC0) == 0x80) rn--;
    b[0] = (uint8_t)(code >> 8);
    b[1] = (uint8_t)code;
    if (rn) memcpy(b + 2, reason, rn);
    struct iovec iov = { b, 2 + rn };
    return ws_frame_write(out, WS_OP_CLOSE, &iov, 1);
}

int ws_accept_key(const char *key, size_t n, char out[29])
{
    /* 16 random bytes, base64: 22 characters and "==". */
    if (n != 24 || key[22] != '=' || key[23] != '=') return -1;
    for (size_t i = 0; i < 22; i++) {
        char c = key[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '/'))
            return -1;
    }
    unsigned char raw[20];
    if (EVP_DecodeBlock(raw, (const unsigned char *)key, 24) != 18) return -1;
    char cat[24 + sizeof WS_GUID];
    memcpy(cat, key, 24);
    memcpy(cat + 24, WS_GUID, sizeof WS_GUID - 1);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    if (EVP_Digest(cat, 24 + sizeof WS_GUID - 1, md, &mdlen, EVP_sha1(), NULL) != 1 || mdlen != 20) return -1;
    EVP_EncodeBlock((unsigned char *)out, md, 20);
    out[28] = 0;
    return 0;
}
