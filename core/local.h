/* In-process connections (lb_local_* of plugin.h). */
#ifndef LB_LOCAL_H
#define LB_LOCAL_H
#include <lexbus/plugin.h>

/* Closes every in-process connection a plugin opened (it is unloading). */
void local_close_plugin(struct lb_plugin_ctx *ctx);
void local_free(void);
#endif
