/* Fuzz target: what the redis plugin reads from Redis (plugins/redis/wire.c),
 * every byte of which anyone who can PUBLISH may choose: URLs from bus.conf,
 * message headers and bundles, node records, state messages and keys,
 * Exprsn IPC messages.  The first byte picks the parser.  They must never
 * crash, read out of bounds or leak, and what they accept must hold to
 * their promises (checked below). */
#include "config.h"
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "wire.h"
#include "names.h"

/* The host's name checks, which lexbusd exports to plugins (core/api.c). */
bool lb_service_name_valid(const char *p, size_t n) { return valid_service_name(p, n); }
bool lb_method_name_valid(const char *p, size_t n) { return valid_method_name(p, n); }
bool lb_event_name_valid(const char *p, size_t n) { return valid_event_name(p, n); }
bool lb_pattern_valid(const char *p, size_t n) { return valid_event_pattern(p, n); }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void head_and_more(const char *p, size_t n)
{
    struct rw_head h, m;
    if (rw_head_parse(p, n, &h)) return;
    if (h.body < p || h.body + h.body_len != p + n || !lb_service_name_valid(h.origin.p, h.origin.n)) abort();
    if (h.kind == 'M') {
        struct rw_bundle b;
        rw_bundle_start(&b, &h, "CREB");
        int guard = 0;
        while (rw_bundle_next(&b, &m) == 1 && guard++ < 100000)
            if (m.body < p || m.body + m.body_len > p + n || m.kind == 'M') abort();
    }
    if (h.kind == 'S' || h.kind == 'D') {
        char ns[RW_MAX_NS + 1], key[RW_MAX_STATE_KEY + 1];
        const char *val;
        size_t vlen;
        uint64_t exp;
        if (rw_state_parse(&h, ns, key, &val, &vlen, &exp) == 0 && val && (val < p || val + vlen > p + n)) abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    const char *p = (const char *)data + 1;
    size_t n = size - 1;
    switch (data[0] % 5) {
    case 0: {
        char *s = malloc(n + 1);
        memcpy(s, p, n);
        s[n] = 0;
        struct rw_url u;
        char why[200], out[400];
        if (rw_url_parse(s, &u, why, sizeof why) == 0) {
            rw_url_print(&u, out, sizeof out);
            if (!u.unix_socket && (u.port < 1 || u.port > 65535)) abort();
        }
        free(s);
        break;
    }
    case 1:
        head_and_more(p, n);
        break;
    case 2: {
        struct rw_record r;
        char why[200];
        if (rw_record_parse(p, n, &r, why, sizeof why) == 0) {
            for (size_t i = 0; i < r.n_services; i++)
                if (!lb_service_name_valid(r.services[i].name, strlen(r.services[i].name))) abort();
            rw_record_free(&r);
        }
        break;
    }
    case 3: {
        struct rw_ipc m;
        struct lb_str ev;
        const char *why;
        if (rw_ipc_parse(p, n, &m, &why) == 0 && !lb_event_name_valid(m.event.p, m.event.n)) abort();
        (void)rw_ipc_event(p, n, &ev);
        break;
    }
    case 4: {
        char ns[RW_MAX_NS + 1], key[RW_MAX_STATE_KEY + 1];
        if (rw_state_key_parse(p, n, "lexbus", ns, key) == 0 && (!ns[0] || !key[0])) abort();
        break;
    }
    }
    return 0;
}
