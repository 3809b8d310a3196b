/*
 * crud.lua: how a CRUD request becomes a CALL.
 *
 * {type: "CRUD", id, op, resource, key?, data?, query?, to?} is mapped to a
 * call of `<resource>.<op>` on `to`, else on the service that declared the
 * resource at REGISTER, else on the `service` crud.lua names for it, with
 * params {resource, op, key, data, query} (absent members left out).
 * Checked on the way (INVALID_MESSAGE naming the field): op is one of
 * create/read/update/delete, create and update carry an object `data`,
 * update and delete a `key`; then what crud.lua declares for the resource
 * (required fields and their types, per op: of `data`, or of `query` for
 * read), then its transform function, if any (Lua).  No target: the
 * request is refused SERVICE_NOT_FOUND naming the resource.
 *
 * Offered to hooks.c (live CRUD requests), host.c (building the table
 * while crud.lua loads) and lua.c (crud.test, `lexbus rules`); runs in a
 * struct lstate (lstate.h), the layer below.
 */
#ifndef LBL_CRUD_H
#define LBL_CRUD_H
#include <lua.h>
#include <lexbus/plugin.h>
#include "lstate.h"

struct crud_req {
    struct lb_str id, from, op, resource, to;   /* strings (to: {NULL,0} when absent) */
    struct lb_str key, data, query;             /* raw JSON, {NULL,0} when absent */
    const char *declared_by;                    /* the service that declared the resource, or NULL */
};

struct crud_out {
    bool ok;                                    /* false: refused with code + message */
    char code[48];
    char message[400];
    struct sbuf to, method, params;             /* the call (reused across requests) */
};

void crud_out_free(struct crud_out *o);

struct crud_res;

/* One generation's resources, as crud.lua declares them.  The generation
 * holds it (host.h): crud_init, then crud_build while crud.lua loads,
 * crud_free. */
struct crud_set {
    struct lstate *s;          /* the state the transforms live in */
    struct crud_res *res;
    size_t n;
};

/* No resources yet, in state s. */
void crud_init(struct crud_set *cs, struct lstate *s);
/* Reads crud.lua's table (at stack index t) into cs; raises a Lua error
 * naming the resource on a mistake (cs then holds what was read, for
 * crud_free).  Runs at load, inside an entry into cs->s. */
void crud_build(struct crud_set *cs, lua_State *L, int t);
void crud_free(struct crud_set *cs);
/* Maps one request (a dry run of cs->s counts nothing). */
void crud_map(struct crud_set *cs, const struct crud_req *q, struct crud_out *o);
/* The resources crud.lua declares, for `lexbus rules`. */
json_t *crud_json(const struct crud_set *cs);
#endif
