/*
 * http: one HTTP/1.1 request at a time, parsed with http-parser, with
 * every part bounded.  The head (request line and headers) may be at most
 * `max_head` bytes and hold at most HTTP_MAX_HEADERS headers (else 431);
 * the URL is at most HTTP_MAX_URL bytes (414); a body at most `max_body`
 * bytes (413); anything http-parser refuses is a 400 (505 for a version
 * other than 1.0/1.1).  No socket code: a request is fed bytes and says
 * how many it took, so the fuzz target drives it exactly as the plugin does.
 *
 * Ownership: a struct http_req owns its copies of the URL, the headers and
 * the body; pointers returned by the accessors stay valid until
 * http_req_reset or http_req_free.
 */
#ifndef WS_HTTP_H
#define WS_HTTP_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <http_parser.h>

#define HTTP_MAX_HEADERS 64
#define HTTP_MAX_URL 4096

enum http_state {
    HTTP_PARTIAL = 0,   /* feed more bytes */
    HTTP_COMPLETE,      /* one request (head and body) is ready */
    HTTP_FAILED         /* refused: answer `status` and close */
};

struct http_hdr { uint32_t name, name_len, value, value_len; };

struct http_req {
    http_parser p;
    size_t max_head, max_body;
    enum http_state state;
    int status;                 /* HTTP_FAILED: the status to answer */
    const char *why;            /* HTTP_FAILED: a short reason (static) */
    size_t head_seen;           /* bytes fed while the head was incomplete */
    char *head;                 /* URL and header bytes, max_head capacity */
    size_t head_len;
    uint32_t url, url_len;
    struct http_hdr h[HTTP_MAX_HEADERS];
    unsigned n_h;
    bool url_ended;
    bool in_value;              /* the last header piece was a value */
    bool headers_done;
    bool upgrade;               /* Upgrade + Connection: upgrade */
    bool keep_alive;
    char *body;
    size_t body_len, body_cap;
    /* From the URL once the head is done. */
    const char *path, *query;   /* into head; NUL-terminated copies */
    size_t path_len, query_len;
};

/* A request ready for its first byte.  Returns NULL when out of memory. */
struct http_req *http_req_new(size_t max_head, size_t max_body);
void http_req_free(struct http_req *r);
/* Ready for the next request on a keep-alive connection. */
void http_req_reset(struct http_req *r);

/* Feeds bytes; returns how many were used (the rest belongs to the next
 * request, or, after an upgrade, to the new protocol).  Check r->state. */
size_t http_req_feed(struct http_req *r, const char *buf, size_t len);

/* The first value of header `name` (case-insensitive), or NULL; *n its
 * length.  The value is NUL-terminated. */
const char *http_req_header(const struct http_req *r, const char *name, size_t *n);
/* How many times header `name` appears. */
unsigned http_req_header_count(const struct http_req *r, const char *name);
/* True if the comma-separated header `name` holds `token` (case-insensitive). */
bool http_req_header_has_token(const struct http_req *r, const char *name, const char *token);
/* The raw (undecoded) value of query parameter `key`, or NULL. */
const char *http_query_get(const char *query, size_t qlen, const char *key, size_t *n);
const char *http_status_text(int status);
#endif
