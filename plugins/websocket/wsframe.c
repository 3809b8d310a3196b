/* RFC 6455 framing for a server: see wsframe.h. */
#include "config.h"
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <event2/buffer.h>
#include <openssl/evp.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#include "wsframe.h"
#include "utf8.h"

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
/* A reassembly buffer larger than this is released after its message. */
#define KEEP_MSG_CAP (64 * 1024)

int ws_reader_init(struct ws_reader *r, uint64_t max_msg)
{
    memset(r, 0, sizeof *r);
    r->max_msg = max_msg;
    r->msg_op = WS_OP_CONT;
    r->ready = true;
    return 0;
}

void ws_reader_free(struct ws_reader *r)
{
    free(r->msg);
    memset(r, 0, sizeof *r);
}

int ws_frame_parse(const uint8_t *p, size_t n, struct ws_frame *f, const char **why)
{
    if (n < 2) return 0;
    f->fin = p[0] >> 7;
    f->rsv = (p[0] >> 4) & 7;
    f->op = p[0] & 15;
    f->masked = p[1] >> 7;
    uint64_t len = p[1] & 127;
    if (f->op >= 8 && (!f->fin || len > 125)) { *why = "control frame fragmented or longer than 125 bytes"; return -1; }
    size_t h = 2;
    if (len == 126) {
        if (n < 4) return 0;
        len = (uint64_t)p[2] << 8 | p[3];
        h = 4;
        if (len < 126) { *why = "frame length not in its shortest form"; return -1; }
    } else if (len == 127) {
        if (n < 10) return 0;
        len = 0;
        for (int i = 0; i < 8; i++) len = len << 8 | p[2 + i];
        h = 10;
        if (len >> 63) { *why = "frame length with the top bit set"; return -1; }
        if (len < 65536) { *why = "frame length not in its shortest form"; return -1; }
    }
    if (f->op >= 8 && (!f->fin || len > 125)) { *why = "control frame fragmented or longer than 125 bytes"; return -1; }
    if (f->masked) {
        if (n < h + 4) return 0;
        memcpy(f->key, p + h, 4);
        h += 4;
    }
    f->head = h;
    f->len = len;
    return 1;
}

bool ws_unmask(uint8_t *p, size_t n, const uint8_t key[4], uint64_t off)
{
    uint8_t k[16];
    for (int i = 0; i < 16; i++) k[i] = key[(off + (uint64_t)i) & 3];
    size_t i = 0;
    uint64_t high = 0;   /* any byte >= 0x80: not plain ASCII */
#if defined(__SSE2__)
    const __m128i k16 = _mm_loadu_si128((const __m128i *)k);
    __m128i acc = _mm_setzero_si128();
    for (; i + 16 <= n; i += 16) {
        __m128i x = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(p + i)), k16);
        _mm_storeu_si128((__m128i *)(p + i), x);
        acc = _mm_or_si128(acc, x);
    }
    high = (uint64_t)_mm_movemask_epi8(acc);
#endif
    uint64_t k8;
    memcpy(&k8, k + (i & 15), 8);   /* i is a multiple of 16 here, so k[0..7] */
    for (; i + 8 <= n; i += 8) {
        uint64_t x;
        memcpy(&x, p + i, 8);
        x ^= k8;
        memcpy(p + i, &x, 8);
        high |= x & 0x8080808080808080ull;
    }
    for (; i < n; i++) {
        p[i] ^= k[i & 15];
        high |= p[i] & 0x80;
    }
    return high == 0;
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

/* The rules above the framing: known before any payload is read. */
static const char *check_frame(const struct ws_reader *r, const struct ws_frame *f, unsigned *code)
{
    *code = 1002;
    if (!f->masked) return "client frames must be masked";
    if (f->rsv) return "reserved bits set (no extension was agreed)";
    switch (f->op) {
    case WS_OP_CONT:
        if (r->msg_op == WS_OP_CONT) return "continuation frame without a message in progress";
        break;
    case WS_OP_TEXT: case WS_OP_BINARY:
        if (r->msg_op != WS_OP_CONT) return "new message before the fragmented one ended";
        break;
    case WS_OP_CLOSE: case WS_OP_PING: case WS_OP_PONG:
        return NULL;
    default:
        return "reserved opcode";
    }
    if (f->len > r->max_msg - r->msg_len) { *code = 1009; return "message larger than max_message"; }
    return NULL;
}

/* `ascii`: every byte is below 0x80 (seen while unmasking): valid UTF-8. */
static int deliver(enum ws_op op, const uint8_t *p, size_t n, bool ascii, ws_msg_fn fn, void *ud, unsigned *code,
                   const char **why)
{
    if (op == WS_OP_TEXT && !ascii && !ws_utf8_valid(p, n)) {
        *code = 1007;
        *why = "text message is not valid UTF-8";
        return -2;
    }
    return fn(ud, op, p, n, 0);
}

static int control(uint8_t op, const uint8_t *p, size_t n, ws_msg_fn fn, void *ud, unsigned *code, const char **why)
{
    if (op != WS_OP_CLOSE) return fn(ud, (enum ws_op)op, p, n, 0);
    unsigned status = 1005;
    if (n == 1) { *code = 1002; *why = "close frame with a 1-byte payload"; return -2; }
    if (n >= 2) {
        status = (unsigned)p[0] << 8 | p[1];
        if (!close_code_ok(status)) { *code = 1002; *why = "invalid close status code"; return -2; }
        if (!ws_utf8_valid(p + 2, n - 2)) { *code = 1007; *why = "close reason is not valid UTF-8"; return -2; }
        p += 2;
        n -= 2;
    }
    return fn(ud, WS_OP_CLOSE, p, n, status);
}

/* One complete frame, unmasked.  Returns fn's verdict or -2. */
static int frame_in(struct ws_reader *r, const struct ws_frame *f, uint8_t *pay, bool ascii, ws_msg_fn fn, void *ud,
                    unsigned *code, const char **why)
{
    size_t n = (size_t)f->len;
    if (f->op >= 8) return control(f->op, pay, n, fn, ud, code, why);
    if (f->op != WS_OP_CONT) r->msg_op = (enum ws_op)f->op;
    if (f->fin && r->msg_len == 0) {
        /* The whole message in one frame: handed over where it lies. */
        enum ws_op op = r->msg_op;
        r->msg_op = WS_OP_CONT;
        return deliver(op, pay, n, ascii, fn, ud, code, why);
    }
    if (r->msg_len == 0) r->msg_ascii = true;
    r->msg_ascii &= ascii;
    if (msg_append(r, pay, n) < 0) { *code = 1011; *why = "out of memory"; return -2; }
    if (!f->fin) return 0;
    int rc = deliver(r->msg_op, r->msg, r->msg_len, r->msg_ascii, fn, ud, code, why);
    if (rc >= 0) msg_done(r);
    return rc;
}

long ws_read(struct ws_reader *r, uint8_t *p, size_t len, ws_msg_fn fn, void *ud, unsigned *code, const char **why)
{
    size_t off = 0;
    r->need = 0;
    while (off < len) {
        struct ws_frame f;
        int h = ws_frame_parse(p + off, len - off, &f, why);
        if (h < 0) { *code = 1002; return -2; }
        if (h == 0) { r->need = 14; break; }
        if ((*why = check_frame(r, &f, code))) return -2;
        /* Bounded by max_message (data) or 125 (control) just above. */
        size_t total = f.head + (size_t)f.len;
        if (len - off < total) { r->need = total; break; }
        uint8_t *pay = p + off + f.head;
        bool ascii = ws_unmask(pay, (size_t)f.len, f.key, 0);
        off += total;
        int rc = frame_in(r, &f, pay, ascii, fn, ud, code, why);
        if (rc < 0) return rc;
        if (rc) break;
    }
    return (long)off;
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

bool ws_utf8_valid(const uint8_t *p, size_t len)
{
    const uint8_t *end = p + len;
    while (p < end) {
        /* Plain ASCII 8 bytes at a time: almost every message is. */
        while (end - p >= 8) {
            uint64_t x;
            memcpy(&x, p, 8);
            if (x & 0x8080808080808080ull) break;
            p += 8;
        }
        if (p >= end) break;
        if (*p < 0x80) { p++; continue; }
        size_t n = utf8_seq(p, end);
        if (!n) return false;
        p += n;
    }
    return true;
}

size_t ws_close_payload(uint8_t b[125], unsigned code, const char *reason)
{
    size_t full = reason ? strlen(reason) : 0, rn = full > 123 ? 123 : full;
    /* Never cut a UTF-8 sequence in half. */
    while (rn > 0 && rn < full && ((unsigned char)reason[rn] & 0xC0) == 0x80) rn--;
    b[0] = (uint8_t)(code >> 8);
    b[1] = (uint8_t)code;
    if (rn) memcpy(b + 2, reason, rn);
    return 2 + rn;
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
