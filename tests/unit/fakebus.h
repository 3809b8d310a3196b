/*
 * A bus without a daemon, for unit tests of the router: the core modules
 * wired as lexbusd wires them (no plugins, [bus] defaults), and a fake
 * transport implementing struct lb_conn_ops that records every frame the
 * bus sends it.  Frames go in with fake_input (lb_conn_input, routed at
 * once); timers need fakebus_run.
 */
#ifndef LB_FAKEBUS_H
#define LB_FAKEBUS_H
#include <stdbool.h>
#include <stddef.h>
#include <jansson.h>
#include "bus.h"

struct fake {
    struct lb_conn *conn;        /* NULL once the bus closed it */
    json_t **frames;             /* every frame sent to it, parsed */
    size_t n, cap, next;         /* next: the first one fake_next has not returned */
    size_t pending;              /* what the `pending` op reports (bytes queued) */
    bool reading;                /* the last set_read */
    int pauses, resumes;         /* set_read(false) / set_read(true) calls */
    bool closed, close_flushed;
    bool bad_frame;              /* the bus sent something that is not JSON, or a member twice */
};

/* Sets up the core (settings: defaults, then `tweak` may change g_bus.set
 * before anything starts; NULL: none). */
void fakebus_init(void (*tweak)(struct bus_settings *s));
void fakebus_free(void);
/* One loop iteration as lexbusd runs it (poll, then flush what was queued). */
void fakebus_turn(void);
/* Turns until `ms` have passed or done(ud) is true; returns done's last value. */
bool fakebus_run(int ms, bool (*done)(void *ud), void *ud);

/* A new connection through lb_conn_new. */
struct fake *fake_connect(void);
/* Frees what the fake recorded (after the bus closed it, or at the end). */
void fake_free(struct fake *f);
/* One frame in, as the transport's read callback would hand it. */
int fake_input(struct fake *f, const char *json);
/* The next frame the bus sent, or NULL (borrowed: valid until fake_free). */
json_t *fake_next(struct fake *f);
/* Drops everything not yet read. */
void fake_skip(struct fake *f);
/* REGISTER under `name` (methods: a JSON array text or NULL) and take the
 * REGISTER_ACK; false if something else came. */
bool fake_register(struct fake *f, const char *name, const char *methods);
/* Helpers for checks. */
const char *jstr(json_t *o, const char *key);        /* "" when absent */
const char *jerr(json_t *o);                        /* error.code, or "" */
#endif
