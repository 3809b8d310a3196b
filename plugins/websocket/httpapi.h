/*
 * The operators' endpoints (httpapi.c), which websocket.c routes to.
 */
#ifndef WS_HTTPAPI_H
#define WS_HTTPAPI_H
#include "wsp.h"

void api_health(struct hc *hc, struct http_req *r);
void api_stats(struct hc *hc, struct http_req *r);
void api_metrics(struct hc *hc, struct http_req *r);
void api_demo(struct hc *hc, struct http_req *r);
#endif
