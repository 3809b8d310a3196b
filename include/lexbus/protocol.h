/*
 * lexbus wire protocol constants, shared by lexbusd, plugins and clients.
 *
 * Stream transports (unix, tls-tcp) carry frames: a 4-byte big-endian body
 * length N (1 <= N <= max_frame) followed by N bytes of UTF-8 JSON, one
 * object per frame.  The message vocabulary is a superset of the Bro IPC
 * protocol; see README.md ("Wire protocol") for every field.
 */
#ifndef LEXBUS_PROTOCOL_H
#define LEXBUS_PROTOCOL_H

#define LB_FRAME_HEADER        4u
#define LB_DEFAULT_MAX_FRAME   (1024u * 1024u)   /* 1 MiB */
#define LB_DEFAULT_SOCKET      "/tmp/lexbus.sock"
#define LB_DEFAULT_SYSTEM_SERVICE "lexbus"

/* Bounds on names the bus routes on. */
#define LB_MAX_NAME            128   /* service and method names */
#define LB_MAX_EVENT           255   /* event names and patterns */
#define LB_MAX_ID              128   /* message ids */
#define LB_MAX_TOKEN           8192  /* broker tokens */

/* Error code strings (the compatibility surface with Bro IPC clients). */
#define LB_E_BAD_FRAME          "BAD_FRAME"
#define LB_E_INVALID_MESSAGE    "INVALID_MESSAGE"
#define LB_E_PAYLOAD_TOO_LARGE  "PAYLOAD_TOO_LARGE"
#define LB_E_UNAUTHENTICATED    "UNAUTHENTICATED"
#define LB_E_FORBIDDEN          "FORBIDDEN"
#define LB_E_NOT_REGISTERED     "NOT_REGISTERED"
#define LB_E_SERVICE_NOT_FOUND  "SERVICE_NOT_FOUND"
#define LB_E_METHOD_NOT_FOUND   "METHOD_NOT_FOUND"
#define LB_E_SERVICE_UNAVAILABLE "SERVICE_UNAVAILABLE"
#define LB_E_TIMEOUT            "TIMEOUT"
#define LB_E_DEADLINE_EXCEEDED  "DEADLINE_EXCEEDED"
#define LB_E_MAX_DEPTH_EXCEEDED "MAX_DEPTH_EXCEEDED"
#define LB_E_RATE_LIMITED       "RATE_LIMITED"
#define LB_E_SCRIPT_ERROR       "SCRIPT_ERROR"
#define LB_E_SLOW_CONSUMER      "SLOW_CONSUMER"
#define LB_E_SHUTTING_DOWN      "SHUTTING_DOWN"
#define LB_E_EXECUTION_FAILED   "EXECUTION_FAILED"
#define LB_E_INTERNAL_ERROR     "INTERNAL_ERROR"
/* The list of the codes above, in a fixed order (stats, /metrics): the
 * one table the bus, plugins and clients index by.  X(enum name, string). */
#define LB_ERROR_LIST(X) \
    X(LB_ERR_BAD_FRAME, LB_E_BAD_FRAME) X(LB_ERR_INVALID_MESSAGE, LB_E_INVALID_MESSAGE) \
    X(LB_ERR_PAYLOAD_TOO_LARGE, LB_E_PAYLOAD_TOO_LARGE) X(LB_ERR_UNAUTHENTICATED, LB_E_UNAUTHENTICATED) \
    X(LB_ERR_FORBIDDEN, LB_E_FORBIDDEN) X(LB_ERR_NOT_REGISTERED, LB_E_NOT_REGISTERED) \
    X(LB_ERR_SERVICE_NOT_FOUND, LB_E_SERVICE_NOT_FOUND) X(LB_ERR_METHOD_NOT_FOUND, LB_E_METHOD_NOT_FOUND) \
    X(LB_ERR_SERVICE_UNAVAILABLE, LB_E_SERVICE_UNAVAILABLE) X(LB_ERR_TIMEOUT, LB_E_TIMEOUT) \
    X(LB_ERR_DEADLINE_EXCEEDED, LB_E_DEADLINE_EXCEEDED) X(LB_ERR_MAX_DEPTH_EXCEEDED, LB_E_MAX_DEPTH_EXCEEDED) \
    X(LB_ERR_RATE_LIMITED, LB_E_RATE_LIMITED) X(LB_ERR_SCRIPT_ERROR, LB_E_SCRIPT_ERROR) \
    X(LB_ERR_SLOW_CONSUMER, LB_E_SLOW_CONSUMER) X(LB_ERR_SHUTTING_DOWN, LB_E_SHUTTING_DOWN) \
    X(LB_ERR_EXECUTION_FAILED, LB_E_EXECUTION_FAILED) X(LB_ERR_INTERNAL_ERROR, LB_E_INTERNAL_ERROR)

#define LB_ERR_ENUM_(e, s) e,
enum lb_error_index { LB_ERROR_LIST(LB_ERR_ENUM_) LB_E__COUNT };
#undef LB_ERR_ENUM_

/* Client-side only (liblexbus), as in Bro IPC. */
#define LB_E_CONNECTION_LOST    "CONNECTION_LOST"
#define LB_E_NOT_CONNECTED      "NOT_CONNECTED"

#endif
