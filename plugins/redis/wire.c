#include "config.h"
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>
#include "wire.h"

/* ---- URLs ------------------------------------------------------------ */

static int hexval(int c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* Copies s[0..n) into out (cap bytes) decoding %XX; -1 when it does not
 * fit, an escape is broken or decodes to NUL. */
static int unescape(const char *s, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int c = (unsigned char)s[i];
        if (c == '%') {
            if (i + 2 >= n) return -1;
            int a = hexval(s[i + 1]), b = hexval(s[i + 2]);
            if (a < 0 || b < 0 || (a == 0 && b == 0)) return -1;
            c = a << 4 | b;
            i += 2;
        }
        if (o + 1 >= cap) return -1;
        out[o++] = (char)c;
    }
    out[o] = 0;
    return 0;
}

static bool host_char(int c) { return isalnum(c) || c == '-' || c == '.' || c == '_'; }

/* host, [v6] or host:port */
static int parse_hostport(const char *s, size_t n, struct rw_url *u, char *why, size_t whylen)
{
    size_t hend;
    const char *port = NULL;
    if (n && s[0] == '[') {
        const char *rb = memchr(s, ']', n);
        if (!rb || rb == s + 1) { snprintf(why, whylen, "an IPv6 address needs [ ]: redis://[::1]:6379"); return -1; }
        size_t hl = (size_t)(rb - s - 1);
        if (hl >= sizeof u->host) { snprintf(why, whylen, "host too long"); return -1; }
        for (size_t i = 0; i < hl; i++)
            if (!isxdigit((unsigned char)s[1 + i]) && s[1 + i] != ':' && s[1 + i] != '.') {
                snprintf(why, whylen, "bad IPv6 address");
                return -1;
            }
        memcpy(u->host, s + 1, hl);
        u->host[hl] = 0;
        hend = (size_t)(rb - s) + 1;
        if (hend < n && s[hend] != ':') { snprintf(why, whylen, "junk after ]"); return -1; }
        if (hend < n) port = s + hend + 1;
    } else {
        const char *colon = memchr(s, ':', n);
        hend = colon ? (size_t)(colon - s) : n;
        if (!hend || hend >= sizeof u->host) { snprintf(why, whylen, "missing or over-long host"); return -1; }
        for (size_t i = 0; i < hend; i++)
            if (!host_char((unsigned char)s[i])) { snprintf(why, whylen, "bad character in host name"); return -1; }
        memcpy(u->host, s, hend);
        u->host[hend] = 0;
        if (colon) port = colon + 1;
    }
    u->port = 6379;
    if (port) {
        size_t pl = (size_t)(s + n - port);
        long v = 0;
        if (!pl || pl > 5) { snprintf(why, whylen, "bad port"); return -1; }
        for (size_t i = 0; i < pl; i++) {
            if (!isdigit((unsigned char)port[i])) { snprintf(why, whylen, "bad port"); return -1; }
            v = v * 10 + (port[i] - '0');
        }
        if (v < 1 || v > 65535) { snprintf(why, whylen, "port must be 1-65535"); return -1; }
        u->port = (int)v;
    }
    return 0;
}

static int parse_userinfo(const char *s, size_t n, struct rw_url *u, char *why, size_t whylen)
{
    const char *colon = memchr(s, ':', n);
    if (!colon) { snprintf(why, whylen, "credentials must be user:password or :password"); return -1; }
    size_t ul = (size_t)(colon - s);
    if (unescape(s, ul, u->user, sizeof u->user) || unescape(colon + 1, n - ul - 1, u->pass, sizeof u->pass)) {
        snprintf(why, whylen, "bad or over-long user or password (use %%XX for special characters)");
        return -1;
    }
    if (!u->pass[0]) { snprintf(why, whylen, "empty password"); return -1; }
    return 0;
}

int rw_url_parse(const char *s, struct rw_url *u, char *why, size_t whylen)
{
    memset(u, 0, sizeof *u);
    size_t n = strlen(s);
    if (!strncmp(s, "unix://", 7)) {
        const char *p = s + 7;
        size_t pl = n - 7;
        if (!pl || p[0] != '/') { snprintf(why, whylen, "unix:// needs an absolute path: unix:///run/redis/redis.sock"); return -1; }
        if (pl >= sizeof u->path) { snprintf(why, whylen, "socket path longer than %zu bytes", sizeof u->path - 1); return -1; }
        for (size_t i = 0; i < pl; i++)
            if ((unsigned char)p[i] < 0x20 || p[i] == '?' || p[i] == '#') { snprintf(why, whylen, "bad character in socket path"); return -1; }
        u->unix_socket = true;
        memcpy(u->path, p, pl + 1);
        return 0;
    }
    if (strncmp(s, "redis://", 8)) {
        snprintf(why, whylen, "must be redis://[:password@]host[:port][/db] or unix:///path/to/redis.sock");
        return -1;
    }
    const char *p = s + 8, *end = s + n;
    const char *slash = memchr(p, '/', (size_t)(end - p));
    const char *auth_end = p;
    const char *at = NULL;
    for (const char *q = p; q < (slash ? slash : end); q++) if (*q == '@') at = q;
    if (at) {
        if (parse_userinfo(p, (size_t)(at - p), u, why, whylen)) return -1;
        auth_end = at + 1;
    }
    const char *hp_end = slash ? slash : end;
    if (parse_hostport(auth_end, (size_t)(hp_end - auth_end), u, why, whylen)) return -1;
    if (slash && slash + 1 < end) {
        long db = 0;
        for (const char *q = slash + 1; q < end; q++) {
            if (!isdigit((unsigned char)*q) || q - slash > 5) { snprintf(why, whylen, "the database after / must be a number 0-65535"); return -1; }
            db = db * 10 + (*q - '0');
        }
        if (db > 65535) { snprintf(why, whylen, "the database after / must be a number 0-65535"); return -1; }
        u->db = (int)db;
    }
    return 0;
}

void rw_url_print(const struct rw_url *u, char *buf, size_t len)
{
    if (u->unix_socket) { snprintf(buf, len, "unix://%s", u->path); return; }
    bool v6 = strchr(u->host, ':') != NULL;
    snprintf(buf, len, "redis://%s%s%s%s%s:%d%s%.0d", u->pass[0] ? u->user : "", u->pass[0] ? ":***@" : "",
             v6 ? "[" : "", u->host, v6 ? "]" : "", u->port, u->db ? "/" : "", u->db);
}

/* ---- headers ----------------------------------------------------------- */

bool rw_epoch_valid(const char *s, size_t n)
{
    if (n != RW_EPOCH_LEN) return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return false;
    return true;
}

static const char *take_word(const char *p, const char *end, struct lb_str *w)
{
    const char *q = p;
    while (q < end && *q != ' ' && *q != '\n') q++;
    w->p = p;
    w->n = (size_t)(q - p);
    return q;
}

int rw_head_parse(const char *p, size_t n, struct rw_head *h)
{
    memset(h, 0, sizeof *h);
    size_t lim = n < RW_HEAD_MAX ? n : RW_HEAD_MAX;
    const char *nl = memchr(p, '\n', lim);
    if (!nl || n < 6 || memcmp(p, "LB1 ", 4) || p[5] != ' ') return -1;
    if (!strchr("CREBUHLSDM", p[4]) || !p[4]) return -1;
    h->kind = p[4];
    const char *q = take_word(p + 6, nl, &h->origin);
    if (!lb_service_name_valid(h->origin.p, h->origin.n)) return -1;
    if (q >= nl || *q != ' ') return -1;
    q = take_word(q + 1, nl, &h->epoch);
    if (!rw_epoch_valid(h->epoch.p, h->epoch.n)) return -1;
    while (q < nl) {
        if (*q != ' ' || h->nargs == RW_MAX_ARGS) return -1;
        struct lb_str w;
        q = take_word(q + 1, nl, &w);
        if (!w.n || w.n > 19) return -1;
        uint64_t v = 0;
        for (size_t i = 0; i < w.n; i++) {
            if (w.p[i] < '0' || w.p[i] > '9') return -1;
            v = v * 10 + (uint64_t)(w.p[i] - '0');
        }
        h->arg[h->nargs++] = v;
    }
    h->body = nl + 1;
    h->body_len = n - (size_t)(nl + 1 - p);
    return 0;
}

size_t rw_u64(char *p, uint64_t v)
{
    char tmp[20];
    size_t n = 0;
    do { tmp[n++] = (char)('0' + v % 10); v /= 10; } while (v);
    for (size_t i = 0; i < n; i++) p[i] = tmp[n - 1 - i];
    return n;
}

size_t rw_head_write(char *buf, char kind, const char *origin, const char *epoch, const uint64_t *args, int nargs)
{
    size_t ol = strnlen(origin, LB_MAX_NAME), n = 0;
    memcpy(buf, "LB1 ", 4);
    buf[4] = kind;
    buf[5] = ' ';
    n = 6;
    memcpy(buf + n, origin, ol);
    n += ol;
    buf[n++] = ' ';
    memcpy(buf + n, epoch, RW_EPOCH_LEN);
    n += RW_EPOCH_LEN;
    for (int i = 0; i < nargs && i < RW_MAX_ARGS; i++) {
        buf[n++] = ' ';
        n += rw_u64(buf + n, args[i]);
    }
    buf[n++] = '\n';
    return n;
}

void rw_bundle_start(struct rw_bundle *b, const struct rw_head *h, const char *kinds)
{
    b->h = h;
    b->p = h->body;
    b->end = h->body + h->body_len;
    b->left = h->nargs == 1 ? h->arg[0] : 0;
    b->kinds = kinds;
}

int rw_bundle_next(struct rw_bundle *b, struct rw_head *m)
{
    if (!b->left) return b->p == b->end ? 0 : -1;
    size_t room = (size_t)(b->end - b->p);
    const char *nl = memchr(b->p, '\n', room < 12 ? room : 12);
    if (!nl || nl == b->p) return -1;
    uint64_t len = 0;
    for (const char *q = b->p; q < nl; q++) {
        if (*q < '0' || *q > '9') return -1;
        len = len * 10 + (uint64_t)(*q - '0');
    }
    if (len > (uint64_t)(b->end - nl - 1) || rw_head_parse(nl + 1, (size_t)len, m)) return -1;
    const struct rw_head *h = b->h;
    if (m->origin.n != h->origin.n || memcmp(m->origin.p, h->origin.p, h->origin.n) ||
        memcmp(m->epoch.p, h->epoch.p, RW_EPOCH_LEN) || !strchr(b->kinds, m->kind))
        return -1;
    b->p = nl + 1 + len;
    b->left--;
    return 1;
}

static bool ns_ok(const char *p, size_t n)
{
    if (!n || n > RW_MAX_NS) return false;
    for (size_t i = 0; i < n; i++)
        if (!(isalnum((unsigned char)p[i]) || p[i] == '_' || p[i] == '-')) return false;
    return true;
}

/* ns and key, given where and how long, NUL-terminated; no NUL inside. */
static int take_ns_key(const char *np, size_t nl, const char *kp, size_t kl, char *ns, char *key)
{
    if (!ns_ok(np, nl) || !kl || kl > RW_MAX_STATE_KEY || memchr(kp, 0, kl)) return -1;
    memcpy(ns, np, nl);
    ns[nl] = 0;
    memcpy(key, kp, kl);
    key[kl] = 0;
    return 0;
}

int rw_state_parse(const struct rw_head *h, char ns[RW_MAX_NS + 1], char key[RW_MAX_STATE_KEY + 1],
                   const char **val, size_t *vlen, uint64_t *expires_ms)
{
    bool set = h->kind == 'S';
    if ((h->kind != 'S' && h->kind != 'D') || h->nargs != (set ? 3 : 2)) return -1;
    uint64_t nl = h->arg[set ? 1 : 0], kl = h->arg[set ? 2 : 1];
    if (nl > RW_MAX_NS || kl > RW_MAX_STATE_KEY || nl + kl > h->body_len) return -1;
    if (take_ns_key(h->body, (size_t)nl, h->body + nl, (size_t)kl, ns, key)) return -1;
    *val = set ? h->body + nl + kl : NULL;
    *vlen = set ? h->body_len - (size_t)(nl + kl) : 0;
    *expires_ms = set ? h->arg[0] : 0;
    return 0;
}

int rw_state_key_parse(const char *k, size_t n, const char *prefix, char ns[RW_MAX_NS + 1],
                       char key[RW_MAX_STATE_KEY + 1])
{
    size_t pl = strlen(prefix);
    if (n <= pl + 7 || memcmp(k, prefix, pl) || memcmp(k + pl, ":state:", 7)) return -1;
    const char *rest = k + pl + 7, *colon = memchr(rest, ':', n - pl - 7);
    if (!colon) return -1;
    size_t nl = (size_t)(colon - rest);
    return take_ns_key(rest, nl, colon + 1, n - pl - 7 - nl - 1, ns, key);
}

/* ---- records -------------------------------------------------------------- */

static bool service_ok(const char *s) { return s && lb_service_name_valid(s, strlen(s)); }
static bool method_ok(const char *s) { return s && lb_method_name_valid(s, strlen(s)); }
static bool pattern_ok(const char *s) { return s && lb_pattern_valid(s, strlen(s)); }

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static char **string_array(json_t *a, size_t max, bool (*ok)(const char *), size_t *n)
{
    *n = 0;
    if (!json_is_array(a) || json_array_size(a) > max) return NULL;
    size_t k = json_array_size(a);
    char **v = calloc(k ? k : 1, sizeof *v);
    if (!v) return NULL;
    for (size_t i = 0; i < k; i++) {
        const char *s = json_string_value(json_array_get(a, i));
        if (!s || !ok(s) || !(v[i] = strdup(s))) {
            for (size_t j = 0; j < i; j++) free(v[j]);
            free(v);
            return NULL;
        }
    }
    *n = k;
    return v;
}

static void free_strings(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++) free(v[i]);
    free(v);
}

void rw_record_free(struct rw_record *r)
{
    for (size_t i = 0; i < r->n_services; i++) {
        free(r->services[i].name);
        free_strings(r->services[i].methods, r->services[i].n_methods);
    }
    free(r->services);
    free_strings(r->patterns, r->n_patterns);
    free(r->node);
    free(r->epoch);
    free(r->hostname);
    memset(r, 0, sizeof *r);
}

static int parse_service(json_t *o, struct rw_service *s, char *why, size_t whylen)
{
    const char *name = json_string_value(json_object_get(o, "name"));
    json_t *methods = json_object_get(o, "methods"), *inst = json_object_get(o, "instances");
    if (!json_is_object(o) || !service_ok(name)) { snprintf(why, whylen, "a service without a valid name"); return -1; }
    if (!(s->name = strdup(name))) return -1;
    s->any = !methods;
    if (methods) {
        s->methods = string_array(methods, RW_MAX_METHODS, method_ok, &s->n_methods);
        if (!s->methods) { snprintf(why, whylen, "service %.128s: bad methods", name); return -1; }
        qsort(s->methods, s->n_methods, sizeof *s->methods, cmp_str);
    }
    s->instances = json_is_integer(inst) && json_integer_value(inst) > 0 && json_integer_value(inst) < 1000000
                       ? (long)json_integer_value(inst) : 1;
    return 0;
}

static bool uint_member(json_t *o, const char *k, uint64_t max, uint64_t *out)
{
    json_t *v = json_object_get(o, k);
    if (!json_is_integer(v) || json_integer_value(v) < 0 || (uint64_t)json_integer_value(v) > max) return false;
    *out = (uint64_t)json_integer_value(v);
    return true;
}

static int parse_fields(json_t *o, struct rw_record *r, char *why, size_t whylen)
{
    const char *node = json_string_value(json_object_get(o, "node"));
    const char *epoch = json_string_value(json_object_get(o, "epoch"));
    const char *host = json_string_value(json_object_get(o, "hostname"));
    if (!service_ok(node)) { snprintf(why, whylen, "record without a valid node name"); return -1; }
    if (!epoch || !rw_epoch_valid(epoch, strlen(epoch))) { snprintf(why, whylen, "record without a valid epoch"); return -1; }
    if (!uint_member(o, "gen", UINT64_MAX >> 1, &r->gen)) { snprintf(why, whylen, "record without gen"); return -1; }
    if (!uint_member(o, "ttl", 3600000, &r->ttl_ms) || r->ttl_ms < 100) { snprintf(why, whylen, "record ttl must be 100 ms - 1 h"); return -1; }
    uint64_t pid = 0;
    uint_member(o, "pid", 1u << 30, &pid);
    uint_member(o, "started", UINT64_MAX >> 1, &r->started_ms);
    r->pid = (long)pid;
    if (!(r->node = strdup(node)) || !(r->epoch = strdup(epoch))) return -1;
    if (host && strlen(host) < 256 && !(r->hostname = strdup(host))) return -1;
    return 0;
}

int rw_record_parse(const char *text, size_t len, struct rw_record *r, char *why, size_t whylen)
{
    memset(r, 0, sizeof *r);
    json_error_t je;
    json_t *o = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    int rc = -1;
    snprintf(why, whylen, "out of memory");
    if (!json_is_object(o)) { snprintf(why, whylen, "record is not a JSON object"); goto out; }
    if (parse_fields(o, r, why, whylen)) goto out;
    json_t *svcs = json_object_get(o, "services"), *pats = json_object_get(o, "patterns");
    if (!json_is_array(svcs) || json_array_size(svcs) > RW_MAX_SERVICES) { snprintf(why, whylen, "record services must be an array of at most %d", RW_MAX_SERVICES); goto out; }
    if (json_array_size(svcs) && !(r->services = calloc(json_array_size(svcs), sizeof *r->services))) goto out;
    for (size_t i = 0; i < json_array_size(svcs); i++) {
        r->n_services = i + 1;
        if (parse_service(json_array_get(svcs, i), &r->services[i], why, whylen)) goto out;
    }
    if (pats) {
        r->patterns = string_array(pats, RW_MAX_PATTERNS, pattern_ok, &r->n_patterns);
        if (!r->patterns) { snprintf(why, whylen, "record patterns must be valid event patterns (at most %d)", RW_MAX_PATTERNS); goto out; }
    }
    rc = 0;
out:
    json_decref(o);
    if (rc) rw_record_free(r);
    return rc;
}

const struct rw_service *rw_record_service(const struct rw_record *r, const char *name)
{
    for (size_t i = 0; i < r->n_services; i++)
        if (!strcmp(r->services[i].name, name)) return &r->services[i];
    return NULL;
}

/* ---- Exprsn messages --------------------------------------------------- */

bool rw_plain_string(struct lb_str raw, struct lb_str *out)
{
    if (raw.n < 2 || raw.p[0] != '"' || raw.p[raw.n - 1] != '"') return false;
    if (memchr(raw.p + 1, '\\', raw.n - 2)) return false;
    out->p = raw.p + 1;
    out->n = raw.n - 2;
    return true;
}

static bool event_ok(struct lb_str s) { return lb_event_name_valid(s.p, s.n); }
static bool source_ok(struct lb_str s) { return lb_service_name_valid(s.p, s.n); }

/* A compact JWS: three base64url parts. */
static bool jws_ok(struct lb_str s)
{
    if (!s.n || s.n > LB_MAX_TOKEN) return false;
    int dots = 0;
    for (size_t i = 0; i < s.n; i++) {
        char c = s.p[i];
        if (c == '.') { dots++; continue; }
        if (!(isalnum((unsigned char)c) || c == '-' || c == '_')) return false;
    }
    return dots == 2;
}

int rw_ipc_event(const char *p, size_t n, struct lb_str *ev)
{
    const char *err;
    struct lb_str raw;
    if (lb_json_validate(p, n, &err) || lb_json_object_get(p, n, "event", &raw) || !rw_plain_string(raw, ev) ||
        !event_ok(*ev))
        return -1;
    return 0;
}

static int opt_string(const char *p, size_t n, const char *key, struct lb_str *out)
{
    struct lb_str raw;
    out->p = NULL;
    out->n = 0;
    if (lb_json_object_get(p, n, key, &raw)) return 0;
    if (raw.n == 4 && !memcmp(raw.p, "null", 4)) return 0;
    return rw_plain_string(raw, out) ? 0 : -1;
}

int rw_ipc_parse(const char *p, size_t n, struct rw_ipc *m, const char **why)
{
    memset(m, 0, sizeof *m);
    struct lb_str raw;
    if (lb_json_validate(p, n, why)) return -1;
    if (lb_json_object_get(p, n, "event", &raw) || !rw_plain_string(raw, &m->event) || !event_ok(m->event)) {
        *why = "\"event\" must be a valid event name";
        return -1;
    }
    if (lb_json_object_get(p, n, "source", &raw) || !rw_plain_string(raw, &m->source) || !source_ok(m->source)) {
        *why = "\"source\" must be a valid service name";
        return -1;
    }
    if (opt_string(p, n, "target", &m->target) || opt_string(p, n, "operation", &m->operation)) {
        *why = "\"target\" and \"operation\" must be plain strings";
        return -1;
    }
    if (opt_string(p, n, "token", &m->token) || (m->token.p && !jws_ok(m->token))) {
        *why = "\"token\" must be a compact JWT";
        return -1;
    }
    if (!lb_json_object_get(p, n, "data", &raw)) m->data = raw;
    if (!lb_json_object_get(p, n, "requireAck", &raw)) m->require_ack = raw.n == 4 && !memcmp(raw.p, "true", 4);
    if (!lb_json_object_get(p, n, "metadata", &raw) && raw.n && raw.p[0] == '{') {
        struct lb_str node;
        m->metadata = raw;
        m->from_lexbus = lb_json_object_get(raw.p, raw.n, "lexbusNode", &node) == 0;
    }
    return 0;
}

uint64_t rw_hash(const void *p, size_t n)
{
    const unsigned char *b = p;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) { h ^= b[i]; h *= 1099511628211ull; }
    return h;
}
