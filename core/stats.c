#include "config.h"
#include <string.h>
#include "stats.h"

static const char *const names[E__COUNT] = {
    "BAD_FRAME", "INVALID_MESSAGE", "PAYLOAD_TOO_LARGE", "UNAUTHENTICATED",
    "FORBIDDEN", "NOT_REGISTERED", "SERVICE_NOT_FOUND", "METHOD_NOT_FOUND",
    "SERVICE_UNAVAILABLE", "TIMEOUT", "DEADLINE_EXCEEDED", "MAX_DEPTH_EXCEEDED",
    "RATE_LIMITED", "SCRIPT_ERROR", "SLOW_CONSUMER", "SHUTTING_DOWN",
    "EXECUTION_FAILED", "INTERNAL_ERROR",
};

const char *err_code_name(enum err_code c) { return (unsigned)c < E__COUNT ? names[c] : "INTERNAL_ERROR"; }

int err_code_index(const char *code)
{
    for (int i = 0; i < E__COUNT; i++)
        if (strcmp(names[i], code) == 0) return i;
    return -1;
}

void stats_count_error(struct stats *s, const char *code)
{
    int i = err_code_index(code);
    s->errors[i >= 0 ? i : E_INTERNAL_ERROR]++;
}
