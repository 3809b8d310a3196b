/* libFuzzer target: the websocket plugin's HTTP request parser (http.c
 * over http-parser).  Any bytes, fed whole and again in pieces, must give
 * the same requests (pipelined ones too), with the bounds held: a
 * complete request has a path starting with '/', a refusal one of the
 * statuses the plugin answers. */
#include "config.h"
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_REQS 16

struct outcome { int n; int state[MAX_REQS]; int status[MAX_REQS]; uint32_t sig[MAX_REQS]; };

static uint32_t mix(uint32_t h, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)p[i]) * 16777619u;
    return h;
}

static void check_request(const struct http_req *r, uint32_t *sig)
{
    if (!r->path || r->path[0] != '/' || strlen(r->path) != r->path_len) abort();
    if (!r->query || strlen(r->query) != r->query_len) abort();
    if (r->body_len > r->max_body) abort();
    uint32_t h = mix(2166136261u, r->path, r->path_len);
    h = mix(h, r->query, r->query_len);
    h = mix(h, r->body ? r->body : "", r->body_len);
    size_t n;
    const char *v = http_req_header(r, "host", &n);
    if (v) { if (strlen(v) != n) abort(); h = mix(h, v, n); }
    h ^= http_req_header_count(r, "upgrade") * 31u + (unsigned)r->upgrade * 7u + (unsigned)r->keep_alive;
    h ^= http_req_header_has_token(r, "connection", "upgrade") ? 0x55u : 0;
    const char *q = http_query_get(r->query, r->query_len, "sid", &n);
    if (q && (q < r->query || q + n > r->query + r->query_len)) abort();
    *sig = h;
}

/* Feeds `chunk` bytes at a time (0: everything at once). */
static void run(const uint8_t *data, size_t size, size_t chunk, struct outcome *o)
{
    struct http_req *r = http_req_new(1024, 4096);
    if (!r) abort();
    memset(o, 0, sizeof *o);
    size_t off = 0;
    while (o->n < MAX_REQS) {
        size_t avail = size - off;
        size_t give = chunk && chunk < avail ? chunk : avail;
        size_t used = give ? http_req_feed(r, (const char *)data + off, give) : 0;
        if (used > give) abort();
        off += used;
        if (r->state == HTTP_PARTIAL) {
            if (off >= size) break;
            if (used == 0 && give) abort();   /* a partial request takes what it is given */
            continue;
        }
        o->state[o->n] = r->state;
        o->status[o->n] = r->status;
        if (r->state == HTTP_COMPLETE) check_request(r, &o->sig[o->n]);
        else if (!(r->status == 400 || r->status == 413 || r->status == 414 || r->status == 431 || r->status == 505))
            abort();
        o->n++;
        if (r->state == HTTP_FAILED || r->upgrade) break;   /* the plugin closes, or hands the rest over */
        http_req_reset(r);
    }
    http_req_free(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct outcome whole, pieces;
    run(data, size, 0, &whole);
    run(data, size, 1 + (size ? data[0] % 7 : 0), &pieces);
    if (whole.n != pieces.n) abort();
    for (int i = 0; i < whole.n; i++)
        if (whole.state[i] != pieces.state[i] || whole.status[i] != pieces.status[i] || whole.sig[i] != pieces.sig[i])
            abort();
    return 0;
}
