/*
 * Socket.IO namespaces as lexbus connections (bridge.c): what an
 * Engine.IO session carries.  websocket.c hands bridge_eio_ops to the
 * sessions (wp->sio); the endpoints read the namespaces' connections.
 */
#ifndef WS_BRIDGE_H
#define WS_BRIDGE_H
#include "wsp.h"

extern const struct eio_ops bridge_eio_ops;
const char *sns_name(const struct sns *ns, size_t *n);
/* The namespace's lb_conn (NULL while it is being torn down). */
struct lb_conn *sns_conn(const struct sns *ns);
#endif
