/* A bus without a daemon (see fakebus.h). */
#include "config.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <event2/event.h>
#include "fakebus.h"
#include "conf.h"
#include "conn.h"
#include "hooks.h"
#include "local.h"
#include "log.h"
#include "out.h"
#include "plugin_host.h"
#include "router.h"
#include "router_int.h"
#include "settings.h"
#include "state.h"
#include "stats.h"
#include "sysmethod.h"
#include "system_service.h"
#include "util.h"

/* ---- the fake transport -------------------------------------------- */

static int op_send(void *tdata, const struct iovec *iov, int iovcnt)
{
    struct fake *f = tdata;
    size_t n = 0;
    for (int i = 0; i < iovcnt; i++) n += iov[i].iov_len;
    char *buf = xmalloc(n);
    for (size_t i = 0, off = 0; i < (size_t)iovcnt; off += iov[i].iov_len, i++) memcpy(buf + off, iov[i].iov_base, iov[i].iov_len);
    /* The bus must never send a member twice: recipients' parsers would
     * disagree about its value. */
    json_t *j = json_loadb(buf, n, JSON_REJECT_DUPLICATES, NULL);
    free(buf);
    if (!j) { f->bad_frame = true; j = json_null(); }
    if (f->n == f->cap) {
        f->cap = f->cap ? f->cap * 2 : 16;
        f->frames = xrealloc(f->frames, f->cap * sizeof *f->frames);
    }
    f->frames[f->n++] = j;
    return 0;
}

static size_t op_pending(void *tdata) { return ((struct fake *)tdata)->pending; }

static void op_set_read(void *tdata, bool enabled)
{
    struct fake *f = tdata;
    f->reading = enabled;
    if (enabled) f->resumes++;
    else f->pauses++;
}

static void op_close(void *tdata, bool flush)
{
    struct fake *f = tdata;
    f->conn = NULL;
    f->closed = true;
    f->close_flushed = flush;
}

static int op_flush(void *tdata) { (void)tdata; return 0; }

static void op_discard(void *tdata) { ((struct fake *)tdata)->pending = 0; }

static const struct lb_conn_ops fake_ops = {
    .size = sizeof fake_ops, .send = op_send, .pending = op_pending, .set_read = op_set_read,
    .close = op_close, .flush = op_flush, .discard = op_discard,
};

struct fake *fake_connect(void)
{
    struct fake *f = xcalloc(1, sizeof *f);
    struct lb_peer peer = { .size = sizeof peer, .transport = "fake", .address = "test" };
    f->reading = true;
    f->conn = lb_conn_new(NULL, &fake_ops, f, &peer);
    return f;
}

void fake_free(struct fake *f)
{
    if (!f) return;
    if (f->conn) lb_conn_gone(f->conn, "test over");
    for (size_t i = 0; i < f->n; i++) json_decref(f->frames[i]);
    free(f->frames);
    free(f);
}

int fake_input(struct fake *f, const char *json)
{
    return f->conn ? lb_conn_input(f->conn, json, strlen(json)) : -1;
}

json_t *fake_next(struct fake *f) { return f->next < f->n ? f->frames[f->next++] : NULL; }
void fake_skip(struct fake *f) { f->next = f->n; }

bool fake_register(struct fake *f, const char *name, const char *methods)
{
    char buf[1024];
    snprintf(buf, sizeof buf, "{\"type\":\"REGISTER\",\"serviceName\":\"%s\"%s%s}", name,
             methods ? ",\"methods\":" : "", methods ? methods : "");
    fake_input(f, buf);
    json_t *ack = fake_next(f);
    return ack && !strcmp(jstr(ack, "type"), "REGISTER_ACK") && !strcmp(jstr(ack, "serviceName"), name);
}

const char *jstr(json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "";
}

const char *jerr(json_t *o)
{
    const char *s = json_string_value(json_object_get(json_object_get(o, "error"), "code"));
    return s ? s : "";
}

/* ---- the bus ------------------------------------------------------- */

void fakebus_init(void (*tweak)(struct bus_settings *s))
{
    static struct conf empty = { .path = "(fakebus)", .dir = "." };
    char err[256];
    if (settings_parse(&empty, &g_bus.set, err, sizeof err) != 0) {
        fprintf(stderr, "fakebus: %s\n", err);
        abort();
    }
    if (tweak) tweak(&g_bus.set);
    log_set_level(LB_LOG_WARN);
    g_bus.conf = &empty;
    g_bus.started_ms = now_ms();
    g_bus.base = event_base_new();
    clock_use_base(g_bus.base);
    /* As lexbusd's main() wires the core (no plugins). */
    conn_set_handlers(router_input, router_forget);
    router_init();
    system_service_init();
    if (state_open(NULL, g_bus.set.state_max, false, err, sizeof err) != 0) abort();   /* in memory */
}

void fakebus_free(void)
{
    conn_close_all("test over");
    conn_flush_dirty();
    local_free();
    state_close();
    calls_free();
    router_free();
    sysmethods_free();
    out_free();
    stats_free();
    hooks_free();
    plugin_host_free();
    settings_free(&g_bus.set);
    g_bus.conf = NULL;
    clock_use_base(NULL);
    event_base_free(g_bus.base);
    g_bus.base = NULL;
    libevent_global_shutdown();
}

void fakebus_turn(void)
{
    event_base_loop(g_bus.base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    conn_flush_dirty();
}

bool fakebus_run(int ms, bool (*done)(void *ud), void *ud)
{
    uint64_t end = mono_us() + (uint64_t)ms * 1000;
    bool ok = false;
    while (!(ok = done && done(ud)) && mono_us() < end) {
        /* A short wait so timers fire without spinning. */
        struct timeval tv = { 0, 2000 };
        event_base_loopexit(g_bus.base, &tv);
        event_base_loop(g_bus.base, EVLOOP_ONCE);
        conn_flush_dirty();
    }
    return ok;
}
