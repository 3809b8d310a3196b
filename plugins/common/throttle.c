#include "config.h"
#include <event2/event.h>
#include <lexbus/plugin.h>
#include "throttle.h"

void throttle_flush(struct throttle *t)
{
    if (t->hidden)
        lb_log(t->ctx, LB_LOG_WARN, "... and %u more %s in the last second (at most %d a second are logged; "
               "stats count them all)", t->hidden, t->what, LOG_BURST);
    t->hidden = t->shown = 0;
    t->start_ms = lb_now_ms();
}

static void throttle_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what;
    throttle_flush(arg);
}

void throttle_init(struct throttle *t, struct lb_plugin_ctx *ctx, const char *what)
{
    t->ctx = ctx;
    t->what = what;
    evtimer_assign(&t->tick, lb_event_base(ctx), throttle_tick, t);
}

/* True if this event may have its own log line; otherwise it is counted
 * for the summary written when the current second ends. */
bool throttle_pass(struct throttle *t)
{
    uint64_t now = lb_now_ms();
    if (!t->hidden && now - t->start_ms >= 1000) {
        t->start_ms = now;
        t->shown = 0;
    }
    if (t->shown < LOG_BURST) {
        t->shown++;
        return true;
    }
    if (t->hidden++ == 0) {
        uint64_t left = t->start_ms + 1000 > now ? t->start_ms + 1000 - now : 0;
        struct timeval tv = { (time_t)(left / 1000), (suseconds_t)(left % 1000 * 1000) };
        evtimer_add(&t->tick, &tv);
    }
    return false;
}

