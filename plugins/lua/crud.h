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
 */
#ifndef LBL_CRUD_H
#define LBL_CRUD_H
#include <lua.h>
#include <lexbus/plugin.h>
#include "host.h"

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

/* Reads crud.lua's table (at stack index t) into s; raises a Lua error
 * naming the resource on a mistake.  Runs at load. */
void crud_build(struct lstate *s, lua_State *L, int t);
void crud_free(struct lstate *s);
/* Maps one request. */
void crud_map(struct lstate *s, const struct crud_req *q, struct crud_out *o);
/* The resources crud.lua declares, for `lexbus rules`. */
json_t *crud_json(const struct lstate *s);
#endif
