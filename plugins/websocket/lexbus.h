/*
 * GET /lexbus (lexbus.c): a WebSocket whose text messages are lexbus
 * messages.  websocket.c routes the path here.
 */
#ifndef WS_LEXBUS_H
#define WS_LEXBUS_H
#include "wsp.h"

/* Upgrades the request's socket (or answers why not). */
void lexbus_upgrade(struct hc *hc, struct http_req *r);
#endif
