/*
 * What every part of the websocket plugin uses (wsp.h): allocation that
 * ends lexbusd on failure, random ids, throttled refusals, timers, and
 * the figures read from the settings and [bus].
 */
#include "config.h"
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include "wsp.h"

void *wsp_alloc(size_t n)
{
    void *p = calloc(1, n ? n : 1);
    if (!p) { fprintf(stderr, "lexbusd: websocket: out of memory (%zu bytes)\n", n); abort(); }
    return p;
}

void *wsp_realloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q) { fprintf(stderr, "lexbusd: websocket: out of memory (%zu bytes)\n", n); abort(); }
    return q;
}

char *wsp_strndup(const char *s, size_t n)
{
    char *d = wsp_alloc(n + 1);
    memcpy(d, s, n);
    return d;
}

const char **wsp_names_dup(const char *const *names, size_t n)
{
    if (!n) return NULL;
    /* One block: the pointers, then the strings. */
    size_t bytes = n * sizeof(char *);
    for (size_t i = 0; i < n; i++) bytes += strlen(names[i]) + 1;
    const char **ids = wsp_alloc(bytes);
    char *p = (char *)(ids + n);
    for (size_t i = 0; i < n; i++) {
        size_t k = strlen(names[i]) + 1;
        memcpy(p, names[i], k);
        ids[i] = p;
        p += k;
    }
    return ids;
}

void wsp_random_chars(char *out, size_t n)
{
    static const char alpha[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    unsigned char b[64];
    size_t got = 0;
    if (n > sizeof b) n = sizeof b;
    while (got < n) {
        ssize_t r = getrandom(b + got, n - got, 0);
        if (r <= 0) { if (errno == EINTR) continue; break; }
        got += (size_t)r;
    }
    for (size_t i = got; i < n; i++) b[i] = (unsigned char)random();   /* no getrandom: never here on Linux 3.17+ */
    for (size_t i = 0; i < n; i++) out[i] = alpha[b[i] & 63];
    out[n] = 0;
}

void wsp_log_refusal(struct wsp *wp, const char *fmt, ...)
{
    if (!throttle_pass(&wp->refusals)) return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    lb_log(wp->ctx, LB_LOG_INFO, "%s", msg);
}

void wsp_peer(struct lb_peer *peer, const char *transport, const char *address, const char *cert_subject,
              const char *const *ids, size_t n_ids)
{
    memset(peer, 0, sizeof *peer);
    peer->size = sizeof *peer;
    peer->transport = transport;
    peer->address = address;
    peer->tls_subject = cert_subject[0] ? cert_subject : NULL;
    peer->identity_names = ids;
    peer->n_identity_names = n_ids;
}

void wsp_arm(struct event *ev, uint64_t ms)
{
    struct timeval tv = { (time_t)(ms / 1000), (suseconds_t)(ms % 1000 * 1000) };
    evtimer_add(ev, &tv);
}

uint64_t wsp_ping_period(const struct wsp *wp)
{
    uint64_t p = wp->c.ping_interval_ms, hb = lb_bus_heartbeat_ms(wp->ctx);
    /* Pongs count as heartbeats: ping within the bus's eviction window
     * (three heartbeat intervals). */
    if (hb && hb < p) p = hb;
    return p ? p : 1000;
}

uint64_t wsp_max_message(const struct wsp *wp)
{
    uint64_t m = lb_bus_max_frame(wp->ctx);
    return wp->c.max_message && wp->c.max_message < m ? wp->c.max_message : m;
}
