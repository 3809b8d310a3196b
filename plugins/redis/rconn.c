/*
 * The two Redis connections and the session (rconn.h).
 *
 * hiredis's async API runs on the bus's event base through the glue
 * below (hiredis's own libevent adapter does the same, less one thing):
 * after every read the glue checks how much of a reply hiredis holds
 * unparsed, so a huge message (a 100 MiB PUBLISH on a channel we hear)
 * ends the connection once it passes max_message instead of growing the
 * read buffer to its size.  Nothing blocks: connects are non-blocking,
 * host names are resolved with evdns, and commands queue in hiredis's
 * output buffer, bounded by max_queue (past it, messages are dropped and
 * counted, calls answered SERVICE_UNAVAILABLE by the caller of
 * rc_publish).
 *
 * Every command on the command connection pushes an entry on a ring of
 * replies awaited (struct pent); hiredis answers in order, so each reply
 * pops the head.  The ring gives the latency of the heartbeat, the age of
 * the oldest unanswered command (command_timeout) and the function that
 * takes each reply, without an allocation per command of our own.
 *
 * This file calls no part of the plugin: the session's events go to the
 * rc_ops redis.c handed to rc_init, and replies to the functions their
 * commands named.
 */
#include "config.h"
#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <event2/dns.h>
#include <event2/util.h>
#include <hiredis/sds.h>
#include "rconn.h"

static uint64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static void call_ids_free(struct call_ids *c)
{
    if (!c) return;
    free(c->v);
    free(c);
}

/* ---- the ring of replies awaited -------------------------------------- */

static void q_push(struct rd *rd, const struct pent *e)
{
    if (rd->q_n == rd->q_cap) {
        size_t cap = rd->q_cap ? rd->q_cap * 2 : 256;
        struct pent *nq = malloc(cap * sizeof *nq);
        if (!nq) abort();
        for (size_t i = 0; i < rd->q_n; i++) nq[i] = rd->q[(rd->q_head + i) % rd->q_cap];
        free(rd->q);
        rd->q = nq;
        rd->q_cap = cap;
        rd->q_head = 0;
    }
    struct pent *slot = &rd->q[(rd->q_head + rd->q_n) % rd->q_cap];
    if (e) *slot = *e;
    else memset(slot, 0, sizeof *slot);
    slot->gen = rd->session;
    slot->t_us = mono_us();
    rd->q_n++;
}

static bool q_pop(struct rd *rd, struct pent *out)
{
    if (!rd->q_n) return false;
    *out = rd->q[rd->q_head];
    rd->q_head = (rd->q_head + 1) % rd->q_cap;
    rd->q_n--;
    return true;
}

/* A reply of an earlier session is as good as none: its command's
 * effect on this one is unknown. */
static void dispatch(struct rd *rd, const struct pent *e, redisReply *r)
{
    if (e->done) e->done(rd, e, e->gen == rd->session ? r : NULL);
}

/* AUTH, SELECT: an error ends the session. */
static void setup_reply(struct rd *rd, const struct pent *e, redisReply *r)
{
    (void)e;
    if (r && r->type == REDIS_REPLY_ERROR) rc_fail(rd, "Redis refused the connection set-up: %.200s", r->str);
}

/* The PING after set-up: the command connection works. */
static void ready_reply(struct rd *rd, const struct pent *e, redisReply *r)
{
    (void)e;
    if (!r || r->type == REDIS_REPLY_ERROR) return;
    rd->ready_pub = true;
    if (rd->ready_sub && rd->state == RS_CONNECTING) rd->rc_ops->up(rd);
}

static void latency_reply(struct rd *rd, const struct pent *e, redisReply *r)
{
    (void)r;
    uint64_t us = mono_us() - e->t_us;
    rd->c_latency_us = us;
    if (us > rd->c_latency_max_us) rd->c_latency_max_us = us;
}

void rc_ping(struct rd *rd)
{
    struct pent e = { .done = latency_reply };
    rc_commandf(rd, &e, "PING");
}

/* Every reply on the command connection (NULL: the connection is going
 * away and the command will never be answered). */
static void pub_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    (void)ac;
    struct rd *rd = priv;
    struct pent e;
    if (!q_pop(rd, &e)) return;
    dispatch(rd, &e, reply);
}

/* ---- the subscriber connection ---------------------------------------- */

static void sub_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    (void)ac;
    struct rd *rd = priv;
    redisReply *r = reply;
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements < 3 || rd->failing) return;
    redisReply *kind = r->element[0];
    if (kind->type != REDIS_REPLY_STRING) return;
    if (!strcmp(kind->str, "message") && r->element[1]->type == REDIS_REPLY_STRING &&
        r->element[2]->type == REDIS_REPLY_STRING) {
        rd->c_received++;
        rd->rc_ops->message(rd, r->element[1]->str, r->element[1]->len, r->element[2]->str, r->element[2]->len);
    } else if (!strcmp(kind->str, "pmessage") && r->elements == 4 && r->element[2]->type == REDIS_REPLY_STRING &&
               r->element[3]->type == REDIS_REPLY_STRING) {
        rd->c_received++;
        rd->rc_ops->pmessage(rd, r->element[2]->str, r->element[2]->len, r->element[3]->str, r->element[3]->len);
    } else if (!strcmp(kind->str, "subscribe") && r->element[1]->type == REDIS_REPLY_STRING &&
               !strcmp(r->element[1]->str, rd->ch_self)) {
        /* Our own channel, subscribed last, is heard: so is every other,
         * and nothing sent to this node is lost from now on. */
        rd->ready_sub = true;
        if (rd->ready_pub && rd->state == RS_CONNECTING) rd->rc_ops->up(rd);
    }
}

/* ---- subscriptions ------------------------------------------------------ */

static int send_subscribe(struct rd *rd, bool pattern, bool add, const char *chan)
{
    if (!rd->sub.ac || rd->failing) return -1;
    const char *cmd = pattern ? (add ? "PSUBSCRIBE %s" : "PUNSUBSCRIBE %s") : (add ? "SUBSCRIBE %s" : "UNSUBSCRIBE %s");
    return redisAsyncCommand(rd->sub.ac, add ? sub_reply : NULL, rd, cmd, chan) == REDIS_OK ? 0 : -1;
}

/* What the parts asked to hear, on a new subscriber connection: our own
 * channel last, so that hearing it (sub_reply) means hearing them all. */
static void subscribe_wanted(struct rd *rd)
{
    for (size_t i = 0; i < rd->subs.cap; i++) {
        const char *c = rd->subs.v[i].s;
        if (c && strcmp(c, rd->ch_self)) send_subscribe(rd, false, true, c);
    }
    for (size_t i = 0; i < rd->psubs.cap; i++)
        if (rd->psubs.v[i].s) send_subscribe(rd, true, true, rd->psubs.v[i].s);
    send_subscribe(rd, false, true, rd->ch_self);
}

int rc_subscribe(struct rd *rd, bool pattern, bool add, const char *chan)
{
    struct sset *want = pattern ? &rd->psubs : &rd->subs;
    size_t n = strlen(chan);
    if (add ? sset_find(want, chan, n) != NULL : !sset_del(want, chan, n)) return 0;
    if (add) sset_add(want, chan, n);
    return send_subscribe(rd, pattern, add, chan);
}

/* ---- libevent glue ----------------------------------------------------- */

static void g_read(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what;
    struct rconn *rc = arg;
    struct rd *rd = rc->rd;
    if (!rc->ac || rd->failing) return;
    rd->read_ms = rd_mono_ms();          /* one clock read for everything this read brings */
    redisAsyncHandleRead(rc->ac);     /* may end the connection: then rc->ac is NULL */
    if (!rc->ac || rd->failing) return;
    /* A message up to twice max_message is read and dropped whole (its
     * parser counts it); one larger ends the connection unread. */
    const redisReader *r = rc->ac->c.reader;
    if (r->len - r->pos > 2 * rd->cfg.max_message + 65536) {
        rd->c_dropped_oversized++;
        rd->c_dropped++;
        rc_fail(rd, "Redis sent the %s connection a message of more than %llu bytes (twice max_message): "
                "dropped unread; reconnecting", rc->what, (unsigned long long)(2 * rd->cfg.max_message));
    }
}

/* Writing: hiredis asks for a write event whenever it queues a command.
 * Once connected, the first request of a loop turn is answered later in
 * the same turn (a zero-delay `kick`): everything queued meanwhile leaves
 * in one write(2), without arming EPOLLOUT and disarming it again; only
 * a write that could not finish waits for the socket to be writable. */
static void do_write(struct rconn *rc)
{
    if (!rc->ac) return;
    rc->in_write = true;
    redisAsyncHandleWrite(rc->ac);   /* may end the connection: then rc->ac is NULL */
    rc->in_write = false;
}

static void g_write(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what;
    do_write(arg);
}

static void g_kick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what;
    do_write(arg);
}

/* Reading: a persistent event, armed once (no EPOLL_CTL_DEL/ADD per read). */
static void g_add_read(void *p)
{
    struct rconn *rc = p;
    rc->want_read = true;
    if (!rc->paused && rc->rev && !event_pending(rc->rev, EV_READ, NULL)) event_add(rc->rev, NULL);
}

static void g_del_read(void *p)
{
    struct rconn *rc = p;
    rc->want_read = false;
    if (rc->rev) event_del(rc->rev);
}

static void g_add_write(void *p)
{
    struct rconn *rc = p;
    if (!rc->wev) return;
    if (rc->in_write || !rc->connected) event_add(rc->wev, NULL);   /* unfinished, or still connecting */
    else event_active(rc->kick, EV_TIMEOUT, 0);
}

static void g_del_write(void *p)
{
    struct rconn *rc = p;
    if (rc->wev && event_pending(rc->wev, EV_WRITE, NULL)) event_del(rc->wev);
}

static void g_cleanup(void *p)
{
    struct rconn *rc = p;
    if (rc->rev) event_free(rc->rev);
    if (rc->wev) event_free(rc->wev);
    if (rc->kick) event_free(rc->kick);
    rc->rev = rc->wev = rc->kick = NULL;
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    struct rconn *rc = ac->data;
    if (status == REDIS_OK) { rc->connected = true; return; }
    rc->ac = NULL;                    /* hiredis frees it after this */
    rc_fail(rc->rd, "cannot connect to Redis at %s: %s", rc->rd->cfg.url_text, ac->errstr);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    struct rconn *rc = ac->data;
    struct rd *rd = rc->rd;
    bool was = rc->connected;
    rc->ac = NULL;
    rc->connected = false;
    if (rd->failing || rd->unloading) return;
    if (lb_bus_draining(rd->ctx)) { rc_fail(rd, "Redis went away while the bus was stopping"); return; }
    if (rc == &rd->sub && was && rd->pub.ac)
        rc_fail(rd, "Redis closed the subscriber connection (%s): if it was busy, its pub/sub output buffer limit "
                "(client-output-buffer-limit pubsub) may have been reached; what was published meanwhile is lost",
                status == REDIS_OK ? "closed" : ac->errstr);
    else
        rc_fail(rd, "lost the %s connection to Redis at %s: %s", rc->what, rd->cfg.url_text,
                status == REDIS_OK ? "closed" : ac->errstr);
}

static int attach(struct rd *rd, struct rconn *rc, redisAsyncContext *ac)
{
    rc->ac = ac;
    rc->connected = false;
    rc->paused = false;
    ac->data = rc;
    rc->rev = event_new(rd->base, ac->c.fd, EV_READ | EV_PERSIST, g_read, rc);
    rc->wev = event_new(rd->base, ac->c.fd, EV_WRITE, g_write, rc);
    rc->kick = event_new(rd->base, -1, 0, g_kick, rc);
    if (!rc->rev || !rc->wev || !rc->kick) { g_cleanup(rc); return -1; }
    ac->ev.data = rc;
    ac->ev.addRead = g_add_read;
    ac->ev.delRead = g_del_read;
    ac->ev.addWrite = g_add_write;
    ac->ev.delWrite = g_del_write;
    ac->ev.cleanup = g_cleanup;
    /* After the hooks: hiredis arms the first write here, which tells it
     * the connect finished. */
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    g_add_read(rc);
    return 0;
}

/* AUTH and SELECT first; CLIENT SETNAME names us in CLIENT LIST; the
 * PING's answer says the connection works. */
static void setup_commands(struct rd *rd, struct rconn *rc)
{
    const struct rw_url *u = &rd->cfg.url;
    redisAsyncContext *ac = rc->ac;
    struct pent setup = { .done = setup_reply };
    char name[LB_MAX_NAME + 32];
    snprintf(name, sizeof name, "lexbus:%s:cmd", rd->node);
    for (char *p = name; *p; p++) if (*p == ' ' || *p == '\n') *p = '_';
    if (u->pass[0]) {
        int rc2 = u->user[0] ? redisAsyncCommand(ac, pub_reply, rd, "AUTH %s %s", u->user, u->pass)
                            : redisAsyncCommand(ac, pub_reply, rd, "AUTH %s", u->pass);
        if (rc2 == REDIS_OK) q_push(rd, &setup);
    }
    if (u->db && redisAsyncCommand(ac, pub_reply, rd, "SELECT %d", u->db) == REDIS_OK) q_push(rd, &setup);
    if (redisAsyncCommand(ac, pub_reply, rd, "CLIENT SETNAME %s", name) == REDIS_OK) q_push(rd, NULL);
    struct pent ready = { .done = ready_reply };
    if (redisAsyncCommand(ac, pub_reply, rd, "PING") == REDIS_OK) q_push(rd, &ready);
}

/* A subscriber connection answers AUTH in its own way before it is
 * subscribed; a refusal shows as the connection failing to subscribe. */
static void sub_auth_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    (void)ac;
    redisReply *r = reply;
    if (r && r->type == REDIS_REPLY_ERROR) rc_fail(priv, "Redis refused AUTH on the subscriber connection: %.200s", r->str);
}

static int open_both(struct rd *rd, const char *ip)
{
    const struct rw_url *u = &rd->cfg.url;
    struct rconn *rcs[2] = { &rd->pub, &rd->sub };
    for (int i = 0; i < 2; i++) {
        redisAsyncContext *ac = u->unix_socket ? redisAsyncConnectUnix(u->path) : redisAsyncConnect(ip, u->port);
        if (!ac || ac->err) {
            char why[160];
            snprintf(why, sizeof why, "%s", ac ? ac->errstr : "out of memory");
            if (ac) redisAsyncFree(ac);
            rc_fail(rd, "cannot connect to Redis at %s: %s", rd->cfg.url_text, why);
            return -1;
        }
        if (attach(rd, rcs[i], ac)) {
            redisAsyncFree(ac);
            rcs[i]->ac = NULL;
            rc_fail(rd, "out of memory");
            return -1;
        }
    }
    setup_commands(rd, &rd->pub);
    if (u->pass[0]) {
        if (u->user[0]) redisAsyncCommand(rd->sub.ac, sub_auth_reply, rd, "AUTH %s %s", u->user, u->pass);
        else redisAsyncCommand(rd->sub.ac, sub_auth_reply, rd, "AUTH %s", u->pass);
    }
    char name[LB_MAX_NAME + 32];
    snprintf(name, sizeof name, "lexbus:%s:sub", rd->node);
    redisAsyncCommand(rd->sub.ac, NULL, NULL, "CLIENT SETNAME %s", name);
    subscribe_wanted(rd);
    return 0;
}

/* ---- the session ------------------------------------------------------- */

static void dns_done(int result, struct evutil_addrinfo *res, void *arg)
{
    struct rd *rd = arg;
    rd->dns_req = NULL;
    if (result == EVUTIL_EAI_CANCEL) return;
    /* A name with several addresses: each attempt takes the next, so one
     * that does not answer (::1 when Redis binds 127.0.0.1) is not tried
     * for ever. */
    char ip[INET6_ADDRSTRLEN] = "";
    size_t n = 0;
    for (struct evutil_addrinfo *a = res; result == 0 && a; a = a->ai_next) n++;
    struct evutil_addrinfo *pick = res;
    for (size_t k = n ? rd->attempt % n : 0; pick && k; k--) pick = pick->ai_next;
    if (result == 0 && pick) {
        const void *a = pick->ai_family == AF_INET6 ? (const void *)&((struct sockaddr_in6 *)pick->ai_addr)->sin6_addr
                                                    : (const void *)&((struct sockaddr_in *)pick->ai_addr)->sin_addr;
        evutil_inet_ntop(pick->ai_family, a, ip, sizeof ip);
    }
    if (res) evutil_freeaddrinfo(res);
    if (!ip[0]) {
        rc_fail(rd, "cannot resolve Redis host %s: %s", rd->cfg.url.host, evutil_gai_strerror(result));
        return;
    }
    open_both(rd, ip);
}

static bool numeric_host(const char *h)
{
    unsigned char buf[16];
    return inet_pton(AF_INET, h, buf) == 1 || inet_pton(AF_INET6, h, buf) == 1;
}

void rc_start(struct rd *rd)
{
    if (rd->unloading || rd->state != RS_DOWN) return;
    rd->state = RS_CONNECTING;
    rd->session++;
    rd->ready_pub = rd->ready_sub = false;
    struct timeval tv = { (time_t)(rd->cfg.connect_timeout_ms / 1000), (suseconds_t)(rd->cfg.connect_timeout_ms % 1000) * 1000 };
    evtimer_add(rd->connect_ev, &tv);
    const struct rw_url *u = &rd->cfg.url;
    if (u->unix_socket || numeric_host(u->host)) { open_both(rd, u->host); return; }
    if (!rd->dns) { rc_fail(rd, "cannot resolve %s: no DNS resolver (evdns)", u->host); return; }
    struct evutil_addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
    rd->dns_req = evdns_getaddrinfo(rd->dns, u->host, NULL, &hints, dns_done, rd);
}

static void retry_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what;
    rc_start(arg);
}

static void connect_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what;
    struct rd *rd = arg;
    if (rd->state == RS_CONNECTING)
        rc_fail(rd, "Redis at %s did not answer within connect_timeout (%llu ms)", rd->cfg.url_text,
                (unsigned long long)rd->cfg.connect_timeout_ms);
}

/* Jittered exponential backoff: between half and all of
 * backoff_min * 2^attempt, at most backoff_max. */
static uint64_t backoff_ms(struct rd *rd)
{
    uint64_t d = rd->cfg.backoff_min_ms;
    for (unsigned i = 0; i < rd->attempt && d < rd->cfg.backoff_max_ms; i++) d *= 2;
    if (d > rd->cfg.backoff_max_ms) d = rd->cfg.backoff_max_ms;
    uint32_t r;
    evutil_secure_rng_get_bytes(&r, sizeof r);
    return d / 2 + (d / 2 ? r % (d / 2 + 1) : 0);
}

static void free_conn(struct rconn *rc)
{
    redisAsyncContext *ac = rc->ac;
    rc->ac = NULL;
    rc->connected = false;
    if (ac) redisAsyncFree(ac);        /* answers what was pending with NULL replies */
}

static void teardown(struct rd *rd)
{
    bool was_up = rd->state == RS_UP || rd->state == RS_CLASH;
    if (rd->dns_req) { evdns_getaddrinfo_cancel(rd->dns_req); rd->dns_req = NULL; }
    evtimer_del(rd->connect_ev);
    free_conn(&rd->pub);
    free_conn(&rd->sub);
    struct pent e;
    while (q_pop(rd, &e)) dispatch(rd, &e, NULL);
    for (size_t i = 0; i < rd->n_outq; i++) {     /* never sent: the links' closing answers the calls */
        struct outq *q = &rd->outq[i];
        lb_jw_reset(q->buf);
        q->n = 0;
        call_ids_free(q->calls);
        q->calls = NULL;
    }
    rd->n_outq = 0;
    rd->outq_bytes = 0;
    rd->rc_ops->down(rd);
    rd->state = RS_DOWN;
    rd->failing = false;
    if (was_up) rd->c_reconnects++;
    if (rd->unloading || lb_bus_draining(rd->ctx)) return;
    uint64_t ms = backoff_ms(rd);
    rd->attempt++;
    struct timeval tv = { (time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000 };
    evtimer_add(rd->retry_ev, &tv);
    lb_log_throttled(rd->ctx, LB_LOG_INFO, "redis-retry", 6, "reconnecting to Redis at %s in %llu ms (attempt %u)",
                     rd->cfg.url_text, (unsigned long long)ms, rd->attempt);
}

static void teardown_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what;
    teardown(arg);
}

void rc_fail(struct rd *rd, const char *fmt, ...)
{
    if (rd->failing || rd->state == RS_DOWN) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rd->last_error, sizeof rd->last_error, fmt, ap);
    va_end(ap);
    rd->failing = true;
    if (lb_bus_draining(rd->ctx))
        lb_log(rd->ctx, LB_LOG_DEBUG, "%s", rd->last_error);
    else if (rd->state == RS_UP || rd->state == RS_JOINING)
        lb_log(rd->ctx, LB_LOG_WARN, "%s; cross-node traffic stops until Redis is back (local routing continues)",
               rd->last_error);
    else
        lb_log_throttled(rd->ctx, LB_LOG_WARN, "redis-down", 6, "%s; local routing continues, retrying with "
                         "jittered backoff (at most %llu ms apart)", rd->last_error,
                         (unsigned long long)rd->cfg.backoff_max_ms);
    /* Never inside hiredis: this may be one of its callbacks. */
    event_active(rd->teardown_ev, EV_TIMEOUT, 0);
}

bool rc_up(const struct rd *rd)
{
    return (rd->state == RS_UP || rd->state == RS_JOINING) && !rd->failing && rd->pub.ac && rd->sub.ac;
}

size_t rc_queued(const struct rd *rd)
{
    return (rd->pub.ac && rd->pub.ac->c.obuf ? sdslen(rd->pub.ac->c.obuf) : 0) + rd->outq_bytes;
}

static bool room_for(struct rd *rd, size_t n)
{
    if (!rd->pub.ac || rd->failing) return false;
    if (rc_queued(rd) + n > rd->cfg.max_queue) {
        rd->c_dropped_queue++;
        rd->c_dropped++;
        lb_log_throttled(rd->ctx, LB_LOG_WARN, "redis-queue", 6, "Redis is not keeping up: %zu bytes queued for it "
                         "(max_queue %llu): dropping what does not fit", rc_queued(rd),
                         (unsigned long long)rd->cfg.max_queue);
        return false;
    }
    return true;
}

int rc_command(struct rd *rd, const struct pent *e, int argc, const char **argv, const size_t *argvlen)
{
    size_t total = 0;
    for (int i = 0; i < argc; i++) total += argvlen[i];
    if (!room_for(rd, total)) return -1;
    if (redisAsyncCommandArgv(rd->pub.ac, pub_reply, rd, argc, argv, argvlen) != REDIS_OK) return -1;
    q_push(rd, e);
    return 0;
}

int rc_commandf(struct rd *rd, const struct pent *e, const char *fmt, ...)
{
    if (!room_for(rd, 0)) return -1;
    va_list ap;
    va_start(ap, fmt);
    int rc = redisvAsyncCommand(rd->pub.ac, pub_reply, rd, fmt, ap);
    va_end(ap);
    if (rc != REDIS_OK) return -1;
    q_push(rd, e);
    return 0;
}

bool rc_scan_parse(redisReply *r, const char **cursor, redisReply **keys)
{
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2 || r->element[0]->type != REDIS_REPLY_STRING ||
        r->element[1]->type != REDIS_REPLY_ARRAY)
        return false;
    *cursor = r->element[0]->str;
    *keys = r->element[1];
    return true;
}

/* A key that is not a string goes as "": it names no key, and the
 * arguments stay in step with the reply's elements. */
int rc_command_keys(struct rd *rd, const struct pent *e, const char *const *pre, int npre, const redisReply *keys)
{
    size_t n = (size_t)npre + keys->elements;
    const char **argv = calloc(n, sizeof *argv);
    size_t *lens = calloc(n, sizeof *lens);
    if (!argv || !lens) abort();
    for (int i = 0; i < npre; i++) {
        argv[i] = pre[i];
        lens[i] = strlen(pre[i]);
    }
    for (size_t i = 0; i < keys->elements; i++) {
        const redisReply *k = keys->element[i];
        bool str = k->type == REDIS_REPLY_STRING;
        argv[(size_t)npre + i] = str ? k->str : "";
        lens[(size_t)npre + i] = str ? k->len : 0;
    }
    int rc = rc_command(rd, e, (int)n, argv, lens);
    free(argv);
    free(lens);
    return rc;
}

static size_t put_bulk_len(char *p, const char *tag, size_t n)
{
    size_t tl = strlen(tag);
    memcpy(p, tag, tl);
    size_t k = tl + rw_u64(p + tl, n);
    p[k++] = '\r';
    p[k++] = '\n';
    return k;
}

/* Formats PUBLISH into hiredis's output buffer (no room check: the
 * callers did it). */
static int publish_now(struct rd *rd, const struct pent *e, const char *chan, size_t chlen, const char *head, size_t hl,
                       const char *body, size_t bl)
{
    size_t need = 64 + chlen + hl + bl;
    if (!rd->pub.ac || rd->failing) return -1;
    if (need > rd->cmd_cap) {
        size_t cap = need * 2;
        char *nc = realloc(rd->cmd, cap);
        if (!nc) return -1;
        rd->cmd = nc;
        rd->cmd_cap = cap;
    }
    /* *3 $7 PUBLISH $<chlen> <chan> $<len> <head><body>, written once. */
    char *p = rd->cmd;
    memcpy(p, "*3\r\n$7\r\nPUBLISH\r\n", 17);
    p += 17;
    p += put_bulk_len(p, "$", chlen);
    memcpy(p, chan, chlen);
    p += chlen;
    memcpy(p, "\r\n", 2);
    p += 2;
    p += put_bulk_len(p, "$", hl + bl);
    if (hl) memcpy(p, head, hl);
    p += hl;
    if (bl) memcpy(p, body, bl);
    p += bl;
    memcpy(p, "\r\n", 2);
    p += 2;
    if (redisAsyncFormattedCommand(rd->pub.ac, pub_reply, rd, rd->cmd, (size_t)(p - rd->cmd)) != REDIS_OK) return -1;
    q_push(rd, e);
    return 0;
}

int rc_publish(struct rd *rd, const struct pent *e, const char *chan, size_t chlen, const char *head, size_t hl,
               const char *body, size_t bl)
{
    if (!room_for(rd, 64 + chlen + hl + bl)) return -1;
    return publish_now(rd, e, chan, chlen, head, hl, body, bl);
}

/* ---- calls and bundles ------------------------------------------------ */

/* PUBLISH answers how many subscribers heard it. */
static bool nobody_heard(const redisReply *r)
{
    return r && r->type == REDIS_REPLY_INTEGER && r->integer == 0;
}

/* A CALL on its own: nobody listening on the node's channel means it is
 * gone or reconnecting, and the call is lost; say so now rather than at
 * its deadline. */
static void call_published(struct rd *rd, const struct pent *e, redisReply *r)
{
    if (!nobody_heard(r)) return;
    struct call_id one = { .len = e->idlen };
    memcpy(one.id, e->id, e->idlen);
    struct call_ids c = { .node = e->a, .n = 1, .cap = 1, .v = &one };
    rd->rc_ops->calls_lost(rd, &c, NULL);
}

/* A bundle with CALLs in it (e->p, freed here). */
static void bundle_published(struct rd *rd, const struct pent *e, redisReply *r)
{
    struct call_ids *c = e->p;
    if (nobody_heard(r)) rd->rc_ops->calls_lost(rd, c, NULL);
    call_ids_free(c);
}

/* A bundle never holds more than a quarter of max_queue (and 256 KiB). */
static size_t bundle_max(const struct rd *rd)
{
    size_t m = rd->cfg.max_queue / 4;
    return m < 256 * 1024 ? m : 256 * 1024;
}

/* The messages of a queue were admitted (room_for) when queued: they go
 * out now.  If they cannot (the connection is gone), the calls among
 * them are answered here, never left to their deadline. */
static void flush_one(struct rd *rd, struct outq *q)
{
    size_t len;
    const char *p = lb_jw_data(q->buf, &len);
    int rc = 0;
    if (q->n == 1) {
        const char *nl = memchr(p, '\n', len);
        rc = publish_now(rd, &q->first, q->chan, q->chlen, NULL, 0, nl + 1, len - (size_t)(nl + 1 - p));
    } else if (q->n > 1) {
        char head[RW_HEAD_MAX];
        uint64_t n = q->n;
        size_t hl = rw_head_write(head, 'M', rd->node, rd->epoch, &n, 1);
        struct pent e = { .done = q->calls ? bundle_published : NULL, .p = q->calls };
        rc = publish_now(rd, &e, q->chan, q->chlen, head, hl, p, len);
        if (rc == 0) q->calls = NULL;   /* the reply frees it */
    }
    if (rc && q->calls) rd->rc_ops->calls_lost(rd, q->calls, "Redis is unreachable: the call could not be sent");
    call_ids_free(q->calls);
    q->calls = NULL;
    rd->outq_bytes -= len;
    lb_jw_reset(q->buf);
    q->n = 0;
}

static void flush_all(struct rd *rd)
{
    for (size_t i = 0; i < rd->n_outq; i++) flush_one(rd, &rd->outq[i]);
    rd->n_outq = 0;
}

static void flush_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what;
    struct rd *rd = arg;
    flush_all(rd);                     /* the commands' kick writes them, later in this turn */
}

static struct outq *outq_for(struct rd *rd, const char *chan, size_t chlen)
{
    for (size_t i = 0; i < rd->n_outq; i++)
        if (rd->outq[i].chlen == chlen && !memcmp(rd->outq[i].chan, chan, chlen)) return &rd->outq[i];
    if (rd->n_outq == OUTQ_MAX || chlen >= sizeof rd->outq[0].chan) flush_all(rd);
    if (chlen >= sizeof rd->outq[0].chan) return NULL;
    struct outq *q = &rd->outq[rd->n_outq++];
    memcpy(q->chan, chan, chlen);
    q->chan[chlen] = 0;
    q->chlen = chlen;
    if (!q->buf) q->buf = lb_jw_new();
    return q;
}

static void note_call(struct outq *q, const struct pent *e)
{
    struct call_ids *c = q->calls;
    if (!c) {
        if (!(c = q->calls = calloc(1, sizeof *c))) abort();
        c->node = e->a;
    }
    if (c->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 16;
        c->v = realloc(c->v, c->cap * sizeof *c->v);
        if (!c->v) abort();
    }
    c->v[c->n].len = e->idlen;
    memcpy(c->v[c->n].id, e->id, e->idlen);
    c->n++;
}

/* Queues one message of a bundle; `call`: e is a CALL's (rc_publish_call). */
static int queue_lb(struct rd *rd, const struct pent *e, bool call, const char *chan, size_t chlen, const char *head,
                    size_t hl, const char *body, size_t bl)
{
    if (!room_for(rd, hl + bl + 64)) return -1;
    struct outq *q = outq_for(rd, chan, chlen);
    if (!q) return rc_publish(rd, e, chan, chlen, head, hl, body, bl);
    size_t have;
    lb_jw_data(q->buf, &have);
    if (have && have + hl + bl > bundle_max(rd)) flush_one(rd, q);
    char len[24];
    size_t ln = rw_u64(len, hl + bl);
    len[ln++] = '\n';
    lb_jw_raw(q->buf, len, ln);
    rd->outq_bytes += ln + hl + bl;
    if (hl) lb_jw_raw(q->buf, head, hl);
    lb_jw_raw(q->buf, body, bl);
    if (q->n++ == 0) q->first = e ? *e : (struct pent){ 0 };
    if (call) note_call(q, e);
    event_active(rd->flush_ev, EV_TIMEOUT, 0);
    return 0;
}

int rc_publish_lb(struct rd *rd, const struct pent *e, const char *chan, size_t chlen, const char *head, size_t hl,
                  const char *body, size_t bl)
{
    return queue_lb(rd, e, false, chan, chlen, head, hl, body, bl);
}

int rc_publish_call(struct rd *rd, uint64_t node, struct lb_str id, const char *chan, size_t chlen, const char *body,
                    size_t bl)
{
    struct pent e = { .done = call_published, .a = node };
    if (id.n > sizeof e.id) return -1;
    e.idlen = (uint8_t)id.n;
    memcpy(e.id, id.p, id.n);
    return queue_lb(rd, &e, true, chan, chlen, NULL, 0, body, bl);
}

void rc_check_timeout(struct rd *rd)
{
    if (!rd->q_n || rd->failing) return;
    uint64_t age = (mono_us() - rd->q[rd->q_head].t_us) / 1000;
    if (age <= rd->cfg.command_timeout_ms) return;
    rd->c_timeouts++;
    rc_fail(rd, "Redis has not answered for %llu ms (command_timeout %llu ms, %zu commands waiting)",
            (unsigned long long)age, (unsigned long long)rd->cfg.command_timeout_ms, rd->q_n);
}

void rc_flush(struct rd *rd)
{
    if (rd->n_outq) flush_all(rd);
    if (rd->pub.ac && rd->pub.connected && !rd->failing) do_write(&rd->pub);
}

/* Back-pressure towards Redis: while the bus has not routed what the
 * main link already handed it, the subscriber connection is not read
 * (Redis buffers, up to its client-output-buffer-limit). */
static void resume_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what;
    struct rd *rd = arg;
    struct rconn *rc = &rd->sub;
    if (!rc->paused) return;
    if (lb_local_backlog(rd->main) > rd->cfg.max_queue / 4) {
        struct timeval tv = { 0, 2000 };
        evtimer_add(rd->resume_ev, &tv);
        return;
    }
    rc->paused = false;
    if (rc->ac && rc->want_read) g_add_read(rc);
}

void rc_check_backlog(struct rd *rd)
{
    struct rconn *rc = &rd->sub;
    if (rc->paused || lb_local_backlog(rd->main) <= rd->cfg.max_queue / 2) return;
    rc->paused = true;
    rd->c_sub_paused++;
    if (rc->rev) event_del(rc->rev);
    struct timeval tv = { 0, 2000 };
    evtimer_add(rd->resume_ev, &tv);
}

void rc_init(struct rd *rd, const struct rc_ops *ops)
{
    rd->rc_ops = ops;
    rd->pub = (struct rconn){ .rd = rd, .what = "commands" };
    rd->sub = (struct rconn){ .rd = rd, .what = "subscriber" };
    rd->retry_ev = evtimer_new(rd->base, retry_cb, rd);
    rd->connect_ev = evtimer_new(rd->base, connect_timeout_cb, rd);
    rd->teardown_ev = event_new(rd->base, -1, 0, teardown_cb, rd);
    rd->resume_ev = evtimer_new(rd->base, resume_cb, rd);
    rd->flush_ev = event_new(rd->base, -1, 0, flush_cb, rd);
    if (!rd->cfg.url.unix_socket && !numeric_host(rd->cfg.url.host))
        rd->dns = evdns_base_new(rd->base, EVDNS_BASE_INITIALIZE_NAMESERVERS);
}

void rc_stop(struct rd *rd)
{
    rd->unloading = true;
    if (rd->dns_req) { evdns_getaddrinfo_cancel(rd->dns_req); rd->dns_req = NULL; }
    free_conn(&rd->pub);
    free_conn(&rd->sub);
    struct pent e;
    while (q_pop(rd, &e)) dispatch(rd, &e, NULL);
    if (rd->retry_ev) event_free(rd->retry_ev);
    if (rd->connect_ev) event_free(rd->connect_ev);
    if (rd->teardown_ev) event_free(rd->teardown_ev);
    if (rd->resume_ev) event_free(rd->resume_ev);
    if (rd->flush_ev) event_free(rd->flush_ev);
    rd->retry_ev = rd->connect_ev = rd->teardown_ev = rd->resume_ev = rd->flush_ev = NULL;
    for (size_t i = 0; i < OUTQ_MAX; i++) {
        struct outq *q = &rd->outq[i];
        lb_jw_free(q->buf);
        call_ids_free(q->calls);
        memset(q, 0, sizeof *q);
    }
    rd->n_outq = 0;
    rd->outq_bytes = 0;
    if (rd->dns) evdns_base_free(rd->dns, 1);
    rd->dns = NULL;
    free(rd->q);
    rd->q = NULL;
    rd->q_n = rd->q_cap = rd->q_head = 0;
    free(rd->cmd);
    rd->cmd = NULL;
    sset_free(&rd->subs);
    sset_free(&rd->psubs);
}
