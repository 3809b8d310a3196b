/*
 * Raw channel bridging, for Redis publishers with no envelope at all
 * (IntelliRouter modules publish serde JSON on
 * intellirouter:<source>:<destination>:<event>).  `bridge = PATTERN`
 * (lexbus pattern syntax) PSUBSCRIBEs the matching channels: each message
 * becomes a broadcast EVENT named after its channel, from `bridge_from`,
 * with the parsed body as payload.  A lexbus broadcast whose event
 * matches a bridged pattern is PUBLISHed on the channel of that name as
 * its plain JSON payload — and reaches other lexbus nodes that way, not
 * through the node channels, so nobody hears it twice.  Our own
 * publications come back to us from Redis: their hashes are kept for a
 * while and those are skipped (local subscribers had the event already).
 */
#include "config.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "bridge.h"
#include "rconn.h"

#define ECHO_SLOTS (sizeof ((struct rd *)0)->echo / sizeof ((struct rd *)0)->echo[0])

/* The Redis glob of a lexbus pattern: `*` and a final `>` become `*`,
 * which also matches across ':' (what Redis sends is matched again with
 * the lexbus pattern). */
static void glob_of(const char *pat, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; pat[i] && o + 2 < cap; i++) out[o++] = pat[i] == '>' ? '*' : pat[i];
    out[o] = 0;
}

int br_init(struct rd *rd)
{
    char glob[LB_MAX_EVENT + 2];
    rd->bridge_set = lb_patset_new();
    for (size_t i = 0; i < rd->cfg.n_bridges; i++) {
        lb_patset_add(rd->bridge_set, rd->cfg.bridges[i], strlen(rd->cfg.bridges[i]), rd);
        glob_of(rd->cfg.bridges[i], glob, sizeof glob);
        rc_subscribe(rd, true, true, glob);
    }
    return 0;
}

bool br_matches(struct rd *rd, struct lb_str event)
{
    return rd_matches(rd->bridge_set, event);
}

static uint64_t echo_hash(const char *chan, size_t chlen, const char *p, size_t n)
{
    return rw_hash(chan, chlen) ^ (rw_hash(p, n) * 31);
}

void br_publish(struct rd *rd, const struct lb_msg *m)
{
    struct lb_str ev = lb_msg_field(m, "event"), payload = lb_msg_raw(m, "payload");
    if (!payload.p) { payload.p = "null"; payload.n = 4; }
    if (rc_publish(rd, NULL, ev.p, ev.n, NULL, 0, payload.p, payload.n) != 0) return;
    rd->c_bridged_out++;
    rd->c_published++;
    rd->echo[(rd->echo_head + rd->echo_n) % ECHO_SLOTS] = echo_hash(ev.p, ev.n, payload.p, payload.n);
    if (rd->echo_n < ECHO_SLOTS) rd->echo_n++;
    else rd->echo_head = (rd->echo_head + 1) % ECHO_SLOTS;
}

/* Our own publication, back from Redis: consumed once. */
static bool own_echo(struct rd *rd, uint64_t h)
{
    for (unsigned i = 0; i < rd->echo_n; i++) {
        unsigned k = (rd->echo_head + i) % ECHO_SLOTS;
        if (rd->echo[k] != h) continue;
        rd->echo[k] = rd->echo[rd->echo_head];
        rd->echo_head = (rd->echo_head + 1) % ECHO_SLOTS;
        rd->echo_n--;
        return true;
    }
    return false;
}

void br_on_message(struct rd *rd, const char *chan, size_t chlen, const char *p, size_t n)
{
    if (rd->state != RS_UP) return;
    const char *err;
    if (!lb_event_name_valid(chan, chlen) || !br_matches(rd, (struct lb_str){ chan, chlen })) {
        rd_drop(rd, &rd->c_dropped_bad, "bridge-channel", "dropped a message on bridged channel %.*s: not an event "
                "name a bridge pattern matches", (int)(chlen < 200 ? chlen : 200), chan);
        return;
    }
    if (n > rd->cfg.max_message) {
        rd->c_dropped_oversized++;
        rd_drop(rd, &rd->c_dropped, "bridge-oversized", "dropped a %zu-byte message on %.*s (max_message)", n,
                (int)chlen, chan);
        return;
    }
    if (lb_json_validate(p, n, &err)) {
        rd_drop(rd, &rd->c_dropped_bad, "bridge-json", "dropped a message on %.*s: not JSON (%s)", (int)chlen, chan, err);
        return;
    }
    if (own_echo(rd, echo_hash(chan, chlen, p, n))) return;
    struct lb_jw *w = rd->w;
    struct rd_emit e = { .event = { chan, chlen }, .from = { rd->cfg.bridge_from, strlen(rd->cfg.bridge_from) },
                         .to = { "broadcast", 9 }, .payload = { p, n } };
    rd_jw_emit(w, &e);
    size_t len;
    const char *f = lb_jw_data(w, &len);
    if (rd_inject(rd, f, len) == 0) rd->c_bridged_in++;
    rc_check_backlog(rd);
}
