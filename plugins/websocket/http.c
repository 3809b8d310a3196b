/* HTTP/1.1 request parsing with bounds: see http.h. */
#include "config.h"
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "http.h"

/* -1, not 1: on_headers_complete reads 1 as "no body" and 2 as "upgrade". */
#define FAIL(r, st, w) ((r)->state = HTTP_FAILED, (r)->status = (st), (r)->why = (w), -1)

static int head_add(struct http_req *r, const char *p, size_t n)
{
    /* Bounded by the bytes fed while the head is incomplete (max_head)
     * plus one NUL per piece: the capacity allows for both. */
    size_t cap = r->max_head + 2 * HTTP_MAX_HEADERS + 8;
    if (r->head_len + n + 1 > cap) return FAIL(r, 431, "request head too large");
    memcpy(r->head + r->head_len, p, n);
    r->head_len += n;
    return 0;
}

static void head_end_piece(struct http_req *r) { r->head[r->head_len++] = 0; }

/* The URL ends at the first header name or at the end of the head. */
static void url_done(struct http_req *r)
{
    if (!r->url_ended) { head_end_piece(r); r->url_ended = true; }
}

static int on_url(http_parser *p, const char *at, size_t n)
{
    struct http_req *r = p->data;
    if (r->url_len + n > HTTP_MAX_URL) return FAIL(r, 414, "URL too long");
    if (head_add(r, at, n)) return 1;
    r->url_len += (uint32_t)n;
    return 0;
}

/* http-parser may hand a name or value over in several pieces (and calls
 * the value callback with 0 bytes for an empty value). */
static int on_field(http_parser *p, const char *at, size_t n)
{
    struct http_req *r = p->data;
    url_done(r);
    if (r->n_h == 0 || r->in_value) {
        if (r->in_value) head_end_piece(r);      /* end of the previous value */
        if (r->n_h == HTTP_MAX_HEADERS) return FAIL(r, 431, "too many headers");
        r->h[r->n_h].name = (uint32_t)r->head_len;
        r->n_h++;
        r->in_value = false;
    }
    if (head_add(r, at, n)) return 1;
    r->h[r->n_h - 1].name_len += (uint32_t)n;
    return 0;
}

static int on_value(http_parser *p, const char *at, size_t n)
{
    struct http_req *r = p->data;
    /* RFC 7230 field values: no control characters but HTAB (a NUL would
     * cut the value short for every C string function). */
    for (size_t i = 0; i < n; i++)
        if (((unsigned char)at[i] < 0x20 && at[i] != '\t') || at[i] == 0x7f)
            return FAIL(r, 400, "control character in a header value");
    struct http_hdr *h = &r->h[r->n_h - 1];
    if (!r->in_value) {
        head_end_piece(r);                       /* end of the name */
        h->value = (uint32_t)r->head_len;
        r->in_value = true;
    }
    if (head_add(r, at, n)) return 1;
    h->value_len += (uint32_t)n;
    return 0;
}

/* Splits the origin-form URL in place: path NUL query NUL. */
static int split_url(struct http_req *r)
{
    char *url = r->head + r->url;
    struct http_parser_url u;
    http_parser_url_init(&u);
    if (r->url_len == 0 || url[0] != '/' || http_parser_parse_url(url, r->url_len, 0, &u) != 0 ||
        !(u.field_set & (1 << UF_PATH)))
        return FAIL(r, 400, "the request target must be a path (/...)");
    r->path = url + u.field_data[UF_PATH].off;
    r->path_len = u.field_data[UF_PATH].len;
    r->query = "";
    r->query_len = 0;
    if (u.field_set & (1 << UF_QUERY)) {
        r->query = url + u.field_data[UF_QUERY].off;
        r->query_len = u.field_data[UF_QUERY].len;
        ((char *)r->query)[r->query_len] = 0;
    }
    ((char *)r->path)[r->path_len] = 0;
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    struct http_req *r = p->data;
    url_done(r);
    if (r->in_value) head_end_piece(r);
    else if (r->n_h) return FAIL(r, 400, "header without a value");
    r->in_value = false;
    r->headers_done = true;
    if (p->http_major != 1 || p->http_minor > 1) return FAIL(r, 505, "only HTTP/1.0 and HTTP/1.1 are served");
    if (p->content_length != ULLONG_MAX && p->content_length > r->max_body)
        return FAIL(r, 413, "request body too large");
    r->upgrade = p->upgrade;
    r->keep_alive = http_should_keep_alive(p);
    return split_url(r);
}

static int on_body(http_parser *p, const char *at, size_t n)
{
    struct http_req *r = p->data;
    if (r->body_len + n > r->max_body) return FAIL(r, 413, "request body too large");
    if (r->body_len + n > r->body_cap) {
        size_t cap = r->body_cap ? r->body_cap : 1024;
        while (cap < r->body_len + n) cap *= 2;
        if (cap > r->max_body) cap = r->max_body;
        char *b = realloc(r->body, cap + 1);
        if (!b) return FAIL(r, 503, "out of memory");
        r->body = b;
        r->body_cap = cap;
    }
    memcpy(r->body + r->body_len, at, n);
    r->body_len += n;
    return 0;
}

static int on_message_complete(http_parser *p)
{
    struct http_req *r = p->data;
    if (r->state == HTTP_FAILED) return -1;
    r->state = HTTP_COMPLETE;
    if (r->body) r->body[r->body_len] = 0;
    /* One request at a time: a pipelined next one waits in the input. */
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings settings = {
    .on_url = on_url, .on_header_field = on_field, .on_header_value = on_value,
    .on_headers_complete = on_headers_complete, .on_body = on_body,
    .on_message_complete = on_message_complete,
};

struct http_req *http_req_new(size_t max_head, size_t max_body)
{
    struct http_req *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->max_head = max_head;
    r->max_body = max_body;
    r->head = malloc(max_head + 2 * HTTP_MAX_HEADERS + 8);
    if (!r->head) { free(r); return NULL; }
    http_req_reset(r);
    return r;
}

void http_req_free(struct http_req *r)
{
    if (!r) return;
    free(r->head);
    free(r->body);
    free(r);
}

void http_req_reset(struct http_req *r)
{
    http_parser_init(&r->p, HTTP_REQUEST);
    r->p.data = r;
    r->state = HTTP_PARTIAL;
    r->status = 0;
    r->why = NULL;
    r->head_seen = r->head_len = 0;
    r->url = r->url_len = 0;
    memset(r->h, 0, sizeof r->h);
    r->n_h = 0;
    r->url_ended = r->in_value = r->headers_done = r->upgrade = r->keep_alive = false;
    r->body_len = 0;
    r->path = r->query = NULL;
    r->path_len = r->query_len = 0;
    /* A large body is not kept for the next request. */
    if (r->body_cap > 64 * 1024) { free(r->body); r->body = NULL; r->body_cap = 0; }
}

size_t http_req_feed(struct http_req *r, const char *buf, size_t len)
{
    if (r->state != HTTP_PARTIAL || len == 0) return 0;
    size_t n = len;
    if (!r->headers_done) {
        /* Never more than the head may still take: the bound is exact. */
        size_t budget = r->max_head - r->head_seen;
        if (n > budget) n = budget;
    }
    bool head_before = r->headers_done;
    size_t used = http_parser_execute(&r->p, &settings, buf, n);
    if (!head_before) r->head_seen += used;
    if (r->state == HTTP_FAILED) return used;
    enum http_errno e = HTTP_PARSER_ERRNO(&r->p);
    if (e == HPE_PAUSED) {
        http_parser_pause(&r->p, 0);
        return used;
    }
    if (e != HPE_OK) {
        r->state = HTTP_FAILED;
        r->status = e == HPE_INVALID_VERSION ? 505 : 400;
        r->why = http_errno_description(e);
        return used;
    }
    if (!r->headers_done && r->head_seen >= r->max_head) {
        r->state = HTTP_FAILED;
        r->status = 431;
        r->why = "request head too large";
    }
    return used;
}

static bool name_is(const struct http_req *r, const struct http_hdr *h, const char *name)
{
    return strlen(name) == h->name_len && strncasecmp(r->head + h->name, name, h->name_len) == 0;
}

const char *http_req_header(const struct http_req *r, const char *name, size_t *n)
{
    for (unsigned i = 0; i < r->n_h; i++) {
        const struct http_hdr *h = &r->h[i];
        if (h->value && name_is(r, h, name)) {
            if (n) *n = h->value_len;
            return r->head + h->value;
        }
    }
    return NULL;
}

unsigned http_req_header_count(const struct http_req *r, const char *name)
{
    unsigned k = 0;
    for (unsigned i = 0; i < r->n_h; i++) k += r->h[i].value && name_is(r, &r->h[i], name);
    return k;
}

bool http_req_header_has_token(const struct http_req *r, const char *name, const char *token)
{
    size_t tl = strlen(token);
    for (unsigned i = 0; i < r->n_h; i++) {
        const struct http_hdr *h = &r->h[i];
        if (!h->value || !name_is(r, h, name)) continue;
        const char *p = r->head + h->value, *end = p + h->value_len;
        while (p < end) {
            while (p < end && (*p == ' ' || *p == '\t' || *p == ',')) p++;
            const char *s = p;
            while (p < end && *p != ',') p++;
            const char *e = p;
            while (e > s && (e[-1] == ' ' || e[-1] == '\t')) e--;
            if ((size_t)(e - s) == tl && strncasecmp(s, token, tl) == 0) return true;
        }
    }
    return false;
}

const char *http_query_get(const char *q, size_t qlen, const char *key, size_t *n)
{
    size_t kl = strlen(key);
    const char *p = q, *end = q + qlen;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *stop = amp ? amp : end;
        if ((size_t)(stop - p) > kl && p[kl] == '=' && memcmp(p, key, kl) == 0) {
            *n = (size_t)(stop - p - (ptrdiff_t)kl - 1);
            return p + kl + 1;
        }
        if ((size_t)(stop - p) == kl && memcmp(p, key, kl) == 0) { *n = 0; return stop; }
        p = stop + (amp != NULL);
    }
    return NULL;
}

const char *http_status_text(int status)
{
    switch (status) {
#define XX(num, name, string) case num: return #string;
    HTTP_STATUS_MAP(XX)
#undef XX
    default: return "Unknown";
    }
}
