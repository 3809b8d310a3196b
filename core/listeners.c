/*
 * Every transport's listeners, so that draining stops them all and so that
 * running out of descriptors is handled once, for every transport.
 */
#include "config.h"
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <event2/listener.h>
#include <event2/util.h>
#include "conn.h"
#include "plugin_host.h"
#include "log.h"
#include "util.h"

struct listener {
    struct evconnlistener *l;
    struct lb_plugin_ctx *ctx;
};

#define ACCEPT_PAUSE_MS 100

static struct listener *g_listeners;
static size_t g_n_listeners;
static struct event *g_accept_pause;    /* re-enables accepting after EMFILE */
static bool g_listeners_off;            /* draining: never re-enabled */
static unsigned long long g_accept_pauses;

static void listeners_enable(bool on)
{
    for (size_t i = 0; i < g_n_listeners; i++) {
        if (on) evconnlistener_enable(g_listeners[i].l);
        else evconnlistener_disable(g_listeners[i].l);
    }
}

static void resume_accepting(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what; (void)arg;
    if (!g_listeners_off) listeners_enable(true);
}

static void accept_error(struct evconnlistener *l, void *arg)
{
    (void)arg;
    int err = EVUTIL_SOCKET_ERROR();
    const char *who = "transport";
    for (size_t i = 0; i < g_n_listeners; i++)
        if (g_listeners[i].l == l) who = g_listeners[i].ctx->name;
    if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
        /* Out of descriptors (for the whole process): the listening sockets
         * stay readable, so retrying at once would spin.  Pause them all. */
        listeners_enable(false);
        struct timeval tv = { 0, ACCEPT_PAUSE_MS * 1000 };
        event_add(g_accept_pause, &tv);
        if (g_accept_pauses++ % 100 == 0)
            log_warn(who, "accept failed: %s; pausing accepts for %d ms (raise the open-files limit)",
                     evutil_socket_error_to_string(err), ACCEPT_PAUSE_MS);
        return;
    }
    log_warn(who, "accept failed: %s", evutil_socket_error_to_string(err));
}

void lb_listener_add(struct lb_plugin_ctx *ctx, struct evconnlistener *l)
{
    if (!g_accept_pause) g_accept_pause = evtimer_new(g_bus.base, resume_accepting, NULL);
    g_listeners = xrealloc(g_listeners, (g_n_listeners + 1) * sizeof *g_listeners);
    g_listeners[g_n_listeners++] = (struct listener){ l, ctx };
    evconnlistener_set_error_cb(l, accept_error);
}

void lb_listener_remove(struct lb_plugin_ctx *ctx, struct evconnlistener *l)
{
    (void)ctx;
    for (size_t i = 0; i < g_n_listeners; i++) {
        if (g_listeners[i].l == l) { g_listeners[i] = g_listeners[--g_n_listeners]; break; }
    }
    if (!g_n_listeners) {
        free(g_listeners);
        g_listeners = NULL;
        if (g_accept_pause) { event_free(g_accept_pause); g_accept_pause = NULL; }
    }
}


void listeners_disable_all(void)
{
    g_listeners_off = true;
    listeners_enable(false);
}
