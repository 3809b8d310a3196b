/*
 * What every part of the redis plugin uses (rd.h): sets of strings,
 * counted drops, the main link's input, and questions about the live
 * nodes.  Nothing here does I/O of its own or calls another part.
 */
#include "config.h"
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <openssl/rand.h>
#include "rd.h"

/* ---- sets of strings ---------------------------------------------------- */

static void sset_grow(struct sset *s)
{
    size_t cap = s->cap ? s->cap * 2 : 16;
    struct sent *v = calloc(cap, sizeof *v);
    if (!v) abort();
    for (size_t i = 0; i < s->cap; i++) {
        if (!s->v[i].s) continue;
        size_t j = s->v[i].h & (cap - 1);
        while (v[j].s) j = (j + 1) & (cap - 1);
        v[j] = s->v[i];
    }
    free(s->v);
    s->v = v;
    s->cap = cap;
}

static size_t sset_slot(const struct sset *s, const char *p, size_t n, uint64_t h)
{
    size_t j = h & (s->cap - 1);
    while (s->v[j].s && !(s->v[j].h == h && strlen(s->v[j].s) == n && !memcmp(s->v[j].s, p, n)))
        j = (j + 1) & (s->cap - 1);
    return j;
}

struct sent *sset_find(const struct sset *s, const char *p, size_t n)
{
    if (!s->cap) return NULL;
    size_t j = sset_slot(s, p, n, rw_hash(p, n));
    return s->v[j].s ? &s->v[j] : NULL;
}

struct sent *sset_add(struct sset *s, const char *p, size_t n)
{
    if ((s->n + 1) * 2 > s->cap) sset_grow(s);
    uint64_t h = rw_hash(p, n);
    size_t j = sset_slot(s, p, n, h);
    if (!s->v[j].s) {
        if (!(s->v[j].s = strndup(p, n))) abort();
        s->v[j].h = h;
        s->v[j].n = 0;
        s->n++;
    }
    s->v[j].n++;
    return &s->v[j];
}

bool sset_del(struct sset *s, const char *p, size_t n)
{
    if (!s->cap) return false;
    size_t j = sset_slot(s, p, n, rw_hash(p, n));
    if (!s->v[j].s) return false;
    free(s->v[j].s);
    s->v[j].s = NULL;
    s->n--;
    /* Backward shift: later entries of the run move up, so no probe
     * sequence is cut short. */
    for (size_t k = (j + 1) & (s->cap - 1); s->v[k].s; k = (k + 1) & (s->cap - 1)) {
        size_t home = s->v[k].h & (s->cap - 1);
        bool between = j <= k ? (home > j && home <= k) : (home > j || home <= k);
        if (between) continue;
        s->v[j] = s->v[k];
        s->v[k].s = NULL;
        j = k;
    }
    return true;
}

void sset_clear(struct sset *s)
{
    for (size_t i = 0; i < s->cap; i++) { free(s->v[i].s); s->v[i].s = NULL; }
    s->n = 0;
}

void sset_free(struct sset *s)
{
    sset_clear(s);
    free(s->v);
    memset(s, 0, sizeof *s);
}

/* ---- small helpers ------------------------------------------------------ */

void rd_jw_methods(struct lb_jw *w, bool any, const char *const *methods, size_t n)
{
    if (any) return;
    JW_LIT(w, ",\"methods\":[");
    for (size_t i = 0; i < n; i++) {
        if (i) JW_LIT(w, ",");
        lb_jw_str(w, methods[i], strlen(methods[i]));
    }
    JW_LIT(w, "]");
}

void rd_jw_plain(struct lb_jw *w, const char *key, struct lb_str s)
{
    lb_jw_raw(w, key, strlen(key));
    JW_LIT(w, "\"");
    lb_jw_raw(w, s.p, s.n);
    JW_LIT(w, "\"");
}

void rd_jw_emit(struct lb_jw *w, const struct rd_emit *e)
{
    lb_jw_reset(w);
    JW_LIT(w, "{\"type\":\"EMIT\"");
    if (e->id.p) rd_jw_plain(w, ",\"id\":", e->id);
    rd_jw_plain(w, ",\"event\":", e->event);
    rd_jw_plain(w, ",\"from\":", e->from);
    rd_jw_plain(w, ",\"to\":", e->to);
    JW_LIT(w, ",\"payload\":");
    if (e->payload.p) lb_jw_raw(w, e->payload.p, e->payload.n);
    else JW_LIT(w, "null");
    if (e->token.p) {
        JW_LIT(w, ",\"token\":");
        lb_jw_raw(w, e->token.p, e->token.n);
    }
    if (e->ack) JW_LIT(w, ",\"ack\":true");
    JW_LIT(w, "}");
}

void rd_jw_register_begin(struct lb_jw *w, const char *name, const char *node, bool any, const char *const *methods,
                          size_t n)
{
    lb_jw_reset(w);
    JW_LIT(w, "{\"type\":\"REGISTER\",\"serviceName\":");
    lb_jw_str(w, name, strlen(name));
    JW_LIT(w, ",\"node\":");
    lb_jw_str(w, node, strlen(node));
    rd_jw_methods(w, any, methods, n);
    JW_LIT(w, ",\"metadata\":{");
}

void rd_drop(struct rd *rd, uint64_t *counter, const char *key, const char *fmt, ...)
{
    if (counter != &rd->c_dropped) rd->c_dropped++;
    (*counter)++;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    lb_log_throttled(rd->ctx, LB_LOG_WARN, key, 10, "%s", msg);
}

int rd_inject(struct rd *rd, const char *frame, size_t len)
{
    if (!rd->main) return -1;
    return lb_local_send(rd->main, frame, len);
}

void rd_random_hex(char *out, size_t n)
{
    unsigned char b[64];
    if (n > sizeof b) n = sizeof b;
    if (RAND_bytes(b, (int)n) != 1) for (size_t i = 0; i < n; i++) b[i] = (unsigned char)rand();
    for (size_t i = 0; i < n; i++) snprintf(out + 2 * i, 3, "%02x", b[i]);
}

uint64_t rd_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void no_op(void *ud, void *arg) { (void)ud; (void)arg; }

bool rd_matches(struct lb_patset *set, struct lb_str event)
{
    return lb_patset_match(set, event.p, event.n, no_op, NULL) > 0;
}

int rd_strcmp_p(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* ---- the live nodes ------------------------------------------------------- */

bool rd_hosted_elsewhere(const struct rd *rd, const char *service)
{
    for (const struct rnode *x = rd->nodes; x; x = x->next)
        if (rw_record_service(&x->rec, service)) return true;
    return false;
}

bool rd_mine(const struct rd *rd, const char *service, size_t n, uint64_t h)
{
    /* The nodes that hold it, this one included, in name order: the
     * hash picks one. */
    const char *names[256];
    size_t k = 0;
    names[k++] = rd->node;
    for (const struct rnode *x = rd->nodes; x && k < 256; x = x->next) {
        if (!service) { names[k++] = x->name; continue; }
        char nm[LB_MAX_NAME + 1];
        snprintf(nm, sizeof nm, "%.*s", (int)n, service);
        if (rw_record_service(&x->rec, nm)) names[k++] = x->name;
    }
    qsort(names, k, sizeof *names, rd_strcmp_p);
    return !strcmp(names[h % k], rd->node);
}
