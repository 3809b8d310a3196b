/* The bus's own service (`lexbus`, or the system_service alias): built-in
 * methods services / stats / ping / reload, plus methods plugins add. */
#ifndef LB_SYSTEM_SERVICE_H
#define LB_SYSTEM_SERVICE_H
#include "bus.h"
#include "policy.h"

void system_service_init(void);
void system_service_call(struct lb_conn *c, struct lb_msg *m);
/* Implemented in main.c: re-reads bus.conf (SIGHUP and `reload`). */
int bus_reload(char *err, size_t errlen);
#endif
