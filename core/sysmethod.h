/* Methods of the bus's own service: the table (the core's built-ins and
 * plugins' lb_system_method_register) and the call path.  Knows nothing
 * of routing: the router hands it calls addressed to the bus. */
#ifndef LB_SYSMETHOD_H
#define LB_SYSMETHOD_H
#include <jansson.h>
#include "conn.h"
#include "msg.h"

struct sys_method {
    char *name;
    unsigned flags;              /* LB_METHOD_* */
    lb_method_fn fn;             /* one of fn and raw */
    lb_method_raw_fn raw;
    void *ud;
    struct lb_plugin_ctx *ctx;   /* NULL: the core's */
};

/* Registers a built-in method.  Returns 0, or -1 when the name is taken. */
int sysmethod_add(struct lb_plugin_ctx *ctx, const char *name, unsigned flags, lb_method_fn fn, void *ud);
void sysmethods_remove_plugin(struct lb_plugin_ctx *ctx);
json_t *sysmethod_names(void);
/* Runs a CALL to the bus's service and answers it. */
void sysmethod_call(struct lb_conn *c, const char *from, size_t from_len, struct lb_msg *m);
void sysmethods_free(void);
#endif
