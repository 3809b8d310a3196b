/*
 * [plugin websocket]'s keys (wsconf.c): read into a struct wsp_conf,
 * the same at load and at reload.  websocket.c applies what it reads.
 */
#ifndef WS_WSCONF_H
#define WS_WSCONF_H
#include "wsp.h"

/* Reads the section into c: 0, or -1 after lb_plugin_fail (file:line).
 * `pinned`: on reload, the require_client_cert in force (it cannot
 * change); NULL at load. */
int wsp_conf_read(struct lb_plugin_ctx *ctx, struct wsp_conf *c, const bool *pinned);
void wsp_conf_free(struct wsp_conf *c);
/* The `listen` lines: 1 to WSP_MAX_LISTENERS host:port with a numeric host. */
int wsp_listen_check(struct lb_plugin_ctx *ctx, const char *const *listen, size_t n);
#endif
