/*
 * tokens: broker tokens — JWTs the bus signs (HS256, libjwt) and verifies.
 *
 * Claims: jti, type "broker", version, source (= sub), target, operation,
 * iat, exp, stateful, rateLimitExempt, authBypass, data.
 *
 * - REGISTER with `token`: the token's source/sub must equal serviceName;
 *   the session is then authenticated (auth "token").
 * - CALL/EMIT with `token`: its target must be the `to` service and its
 *   operation the method or event ("*" matches any); recipients receive
 *   the verified claims as `token`.
 * - Development with dev-bypass: a CALL/EMIT marked `"ipcRequest": true`
 *   skips these checks; a token it carries is not verified, and recipients
 *   receive {"type":"bypass","bypass":true,"development":true} as `token`
 *   instead of it.
 * - Refused (UNAUTHENTICATED with the reason): malformed, over-long, any
 *   algorithm but HS256 (including "none"), unknown key id, bad signature,
 *   expired, issued in the future, revoked, not a broker token.
 * - System methods (service `lexbus`): token.issue, token.verify,
 *   token.revoke, token.state.get|set|delete.  issue/revoke/state are for
 *   the services in `admins` (and anyone in development mode when `admins`
 *   is empty); verify is for every registered service.
 * - Revocations and state survive restarts: `state_file` (JSON), written by
 *   temp file + rename, at most every 100 ms.
 *
 * [plugin tokens]
 * key_file = /etc/lexbus/broker.key   lines "KID:SECRET" (first signs) or one bare secret
 * admins = ops, deployer              who may issue / revoke / use state
 * max_ttl = 24h
 * state_file = tokens-state.json      relative to bus.conf
 * peercred_uids = self                unix clients of these uids (self = lexbusd's
 *                                     own uid) may REGISTER without a token
 */
#include "config.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <event2/event.h>
#include <jansson.h>
#include <jwt.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <lexbus/plugin.h>
#include <lexbus/protocol.h>

#define MAX_KEYS 16
#define MAX_ADMINS 64
#define MAX_UIDS 16
#define MIN_SECRET 16

struct key { char kid[64]; unsigned char *secret; size_t len; };

struct tokens {
    struct lb_plugin_ctx *ctx;
    struct key keys[MAX_KEYS];
    size_t n_keys;
    char *admins[MAX_ADMINS];
    size_t n_admins;
    uid_t uids[MAX_UIDS];
    size_t n_uids;
    uint64_t max_ttl_ms;
    const char *state_path;
    json_t *revoked;               /* jti -> exp (s) */
    json_t *state;                 /* jti -> any */
    struct event *save_timer;
    unsigned long long issued, verified, refused;
};

/* ---- keys and settings ---------------------------------------------- */

static int load_keys(struct tokens *t, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) { lb_plugin_fail(t->ctx, "cannot read key_file %s: %s", path, strerror(errno)); return -1; }
    char line[1024];
    while (fgets(line, sizeof line, f) && t->n_keys < MAX_KEYS) {
        size_t n = strcspn(line, "\r\n");
        line[n] = 0;
        if (!n || line[0] == '#') continue;
        struct key *k = &t->keys[t->n_keys];
        char *colon = strchr(line, ':');
        const char *secret = line;
        if (colon && colon - line < (long)sizeof k->kid) {
            *colon = 0;
            snprintf(k->kid, sizeof k->kid, "%.63s", line);
            secret = colon + 1;
        } else {
            snprintf(k->kid, sizeof k->kid, "k%zu", t->n_keys + 1);
        }
        k->len = strlen(secret);
        if (k->len < MIN_SECRET) {
            fclose(f);
            lb_plugin_fail(t->ctx, "key '%s' in %s is shorter than %d bytes", k->kid, path, MIN_SECRET);
            return -1;
        }
        k->secret = (unsigned char *)strdup(secret);
        t->n_keys++;
    }
    fclose(f);
    OPENSSL_cleanse(line, sizeof line);
    if (!t->n_keys) { lb_plugin_fail(t->ctx, "key_file %s holds no key", path); return -1; }
    return 0;
}

static const struct key *key_by_kid(struct tokens *t, const char *kid)
{
    for (size_t i = 0; i < t->n_keys; i++)
        if (kid ? !strcmp(t->keys[i].kid, kid) : t->n_keys == 1) return &t->keys[i];
    return NULL;
}

static int parse_list(struct tokens *t, const char *s, bool uids)
{
    char buf[2048];
    snprintf(buf, sizeof buf, "%s", s);
    for (char *save = NULL, *tok = strtok_r(buf, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
        if (uids) {
            if (t->n_uids == MAX_UIDS) return -1;
            if (!strcmp(tok, "self")) { t->uids[t->n_uids++] = geteuid(); continue; }
            char *end;
            long v = strtol(tok, &end, 10);
            if (*end || v < 0) return -1;
            t->uids[t->n_uids++] = (uid_t)v;
        } else {
            if (t->n_admins == MAX_ADMINS) return -1;
            t->admins[t->n_admins++] = strdup(tok);
        }
    }
    return 0;
}

/* ---- persistence ------------------------------------------------------ */

static void save_now(struct tokens *t)
{
    /* Expired revocations no longer matter: the token is refused anyway. */
    const char *jti;
    json_t *v, *tmp;
    json_int_t now_s = (json_int_t)(lb_now_ms() / 1000);
    json_object_foreach_safe(t->revoked, tmp, jti, v)
        if (json_integer_value(v) < now_s) json_object_del(t->revoked, jti);
    json_t *doc = json_pack("{s:O,s:O}", "revoked", t->revoked, "state", t->state);
    char path[4096];
    snprintf(path, sizeof path, "%s.tmp", t->state_path);
    if (json_dump_file(doc, path, JSON_COMPACT) != 0 || rename(path, t->state_path) != 0)
        lb_log(t->ctx, LB_LOG_ERROR, "cannot write %s: %s (revocations are still enforced in memory)",
               t->state_path, strerror(errno));
    json_decref(doc);
}

static void save_cb(evutil_socket_t fd, short what, void *arg) { (void)fd; (void)what; save_now(arg); }

static void schedule_save(struct tokens *t)
{
    /* Coalesce bursts of changes into one small write. */
    if (evtimer_pending(t->save_timer, NULL)) return;
    struct timeval tv = { 0, 100000 };
    evtimer_add(t->save_timer, &tv);
}

static int load_state(struct tokens *t)
{
    t->revoked = json_object();
    t->state = json_object();
    if (access(t->state_path, F_OK) != 0) return 0;
    json_error_t je;
    json_t *doc = json_load_file(t->state_path, 0, &je);
    json_t *r = doc ? json_object_get(doc, "revoked") : NULL, *s = doc ? json_object_get(doc, "state") : NULL;
    if (!json_is_object(r) || !json_is_object(s)) {
        lb_plugin_fail(t->ctx, "state_file %s is corrupt (%s line %d): fix or remove it", t->state_path,
                       doc ? "missing revoked/state" : je.text, je.line);
        json_decref(doc);
        return -1;
    }
    json_object_update(t->revoked, r);
    json_object_update(t->state, s);
    json_decref(doc);
    return 0;
}

/* ---- verification ----------------------------------------------------- */

/* The JOSE header of a compact JWT (base64url JSON before the first '.'),
 * or NULL.  New reference. */
static json_t *jwt_header(const char *tok)
{
    const char *dot = strchr(tok, '.');
    size_t n = dot ? (size_t)(dot - tok) : 0;
    if (!n || n > 1024) return NULL;
    char b64[1032];
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        char c = tok[i];
        if (c == '-') c = '+';
        else if (c == '_') c = '/';
        else if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))) return NULL;
        b64[m++] = c;
    }
    while (m % 4) b64[m++] = '=';
    unsigned char out[800];
    int len = EVP_DecodeBlock(out, (const unsigned char *)b64, (int)m);
    if (len < 0) return NULL;
    while (len > 0 && out[len - 1] == 0) len--;   /* DecodeBlock counts padding as zero bytes */
    json_t *h = json_loadb((const char *)out, (size_t)len, 0, NULL);
    if (!json_is_object(h)) { json_decref(h); return NULL; }
    return h;
}

/* Returns the verified claims (new reference), or NULL with *why set. */
static json_t *verify(struct tokens *t, const char *tok, size_t n, char *why, size_t whylen)
{
    if (n == 0 || n > LB_MAX_TOKEN) { snprintf(why, whylen, "token is empty or longer than %d bytes", LB_MAX_TOKEN); return NULL; }
    char *s = strndup(tok, n);
    jwt_t *j = NULL;
    json_t *claims = NULL;
    /* The header is read here, before any key is used: the algorithm is
     * pinned to HS256 so "none" and key confusion never reach signature
     * checking, and `kid` picks the key. */
    json_t *hdr = jwt_header(s);
    const char *alg = json_string_value(json_object_get(hdr, "alg"));
    if (!hdr || !alg) { json_decref(hdr); snprintf(why, whylen, "malformed token"); goto out; }
    if (strcmp(alg, "HS256") != 0) {
        snprintf(why, whylen, "algorithm %.20s is not accepted (HS256 only)", alg);
        json_decref(hdr);
        goto out;
    }
    const struct key *k = key_by_kid(t, json_string_value(json_object_get(hdr, "kid")));
    json_decref(hdr);
    if (!k) { snprintf(why, whylen, "unknown key id"); goto out; }
    if (jwt_decode(&j, s, k->secret, (int)k->len) != 0 || !j || jwt_get_alg(j) != JWT_ALG_HS256) {
        snprintf(why, whylen, "bad signature");
        goto out;
    }
    char *cj = jwt_get_grants_json(j, NULL);
    claims = cj ? json_loads(cj, 0, NULL) : NULL;
    free(cj);
    if (!json_is_object(claims)) { snprintf(why, whylen, "malformed claims"); goto fail; }
    const char *type = json_string_value(json_object_get(claims, "type"));
    json_int_t now = (json_int_t)(lb_now_ms() / 1000);
    json_int_t exp = json_integer_value(json_object_get(claims, "exp"));
    json_int_t iat = json_integer_value(json_object_get(claims, "iat"));
    const char *jti = json_string_value(json_object_get(claims, "jti"));
    if (!type || strcmp(type, "broker")) { snprintf(why, whylen, "not a broker token"); goto fail; }
    if (!jti || !json_is_integer(json_object_get(claims, "exp"))) { snprintf(why, whylen, "token lacks jti or exp"); goto fail; }
    if (exp <= now) { snprintf(why, whylen, "token expired %lld s ago", (long long)(now - exp)); goto fail; }
    if (iat > now + 60) { snprintf(why, whylen, "token not yet valid (issued in the future)"); goto fail; }
    if (json_object_get(t->revoked, jti)) { snprintf(why, whylen, "token %s was revoked", jti); goto fail; }
    goto out;
fail:
    json_decref(claims);
    claims = NULL;
out:
    if (j) jwt_free(j);
    OPENSSL_cleanse(s, n);
    free(s);
    if (claims) t->verified++;
    else t->refused++;
    return claims;
}

static bool claim_matches(json_t *claims, const char *key, struct lb_str want)
{
    const char *c = json_string_value(json_object_get(claims, key));
    if (!c) return false;
    if (!strcmp(c, "*")) return true;
    return want.p && strlen(c) == want.n && memcmp(c, want.p, want.n) == 0;
}

/* ---- hooks ------------------------------------------------------------- */

static bool peercred_ok(struct tokens *t, struct lb_conn *c)
{
    const struct lb_peer *p = lb_conn_peer(c);
    if (!p->has_cred) return false;
    for (size_t i = 0; i < t->n_uids; i++) if (t->uids[i] == p->uid) return true;
    return false;
}

static enum lb_verdict_kind on_authenticate(void *ud, struct lb_conn *c, struct lb_msg *m, struct lb_verdict *v)
{
    struct tokens *t = ud;
    struct lb_str tok = lb_msg_field(m, "token"), name = lb_msg_field(m, "serviceName");
    if (!tok.p) {
        if (peercred_ok(t, c)) { lb_conn_set_auth(c, "peercred"); return LB_ALLOW; }
        return LB_PASS;
    }
    char why[200];
    json_t *claims = verify(t, tok.p, tok.n, why, sizeof why);
    if (!claims) { lb_deny(v, LB_E_UNAUTHENTICATED, "token refused: %s", why); return LB_DENY; }
    const char *src = json_string_value(json_object_get(claims, "source"));
    if (!src) src = json_string_value(json_object_get(claims, "sub"));
    bool ok = src && strlen(src) == name.n && !memcmp(src, name.p, name.n);
    if (!ok) lb_deny(v, LB_E_UNAUTHENTICATED, "token refused: it was issued to '%s', not '%.*s'", src ? src : "?",
                     (int)name.n, name.p);
    json_decref(claims);
    if (!ok) return LB_DENY;
    lb_conn_set_auth(c, "token");
    return LB_ALLOW;
}

static enum lb_verdict_kind on_message(void *ud, struct lb_conn *c, struct lb_msg *m, struct lb_verdict *v)
{
    (void)c;
    struct tokens *t = ud;
    enum lb_msg_type type = lb_msg_type(m);
    if (type != LB_MSG_CALL && type != LB_MSG_EMIT) return LB_PASS;
    if (lb_msg_ipc_bypass(m)) {
        /* Recipients must never take an unverified token for verified
         * claims: they are told plainly that nothing was checked. */
        static const char bypass[] = "{\"type\":\"bypass\",\"bypass\":true,\"development\":true}";
        if (lb_msg_raw(m, "token").p) lb_msg_set_claims(m, bypass, sizeof bypass - 1);
        return LB_PASS;
    }
    struct lb_str tok = lb_msg_field(m, "token");
    if (!tok.p) return LB_PASS;
    char why[200];
    json_t *claims = verify(t, tok.p, tok.n, why, sizeof why);
    if (!claims) { lb_deny(v, LB_E_UNAUTHENTICATED, "token refused: %s", why); return LB_DENY; }
    struct lb_str to = lb_msg_field(m, "to");
    if (type == LB_MSG_EMIT && !to.p) { to.p = "broadcast"; to.n = 9; }
    struct lb_str op = lb_msg_field(m, type == LB_MSG_CALL ? "method" : "event");
    if (!claim_matches(claims, "target", to) || !claim_matches(claims, "operation", op)) {
        const char *ct = json_string_value(json_object_get(claims, "target"));
        const char *co = json_string_value(json_object_get(claims, "operation"));
        lb_deny(v, LB_E_FORBIDDEN, "token is for %s/%s, not %.*s/%.*s", ct ? ct : "?", co ? co : "?",
                (int)to.n, to.p, (int)op.n, op.p);
        json_decref(claims);
        return LB_DENY;
    }
    char *text = json_dumps(claims, JSON_COMPACT);
    if (text) { lb_msg_set_claims(m, text, strlen(text)); free(text); }
    json_decref(claims);
    return LB_PASS;
}

/* ---- system methods ----------------------------------------------------- */

static bool is_admin(struct tokens *t, struct lb_conn *caller)
{
    const char *name = lb_conn_service(caller);
    if (!t->n_admins) return !lb_bus_production(t->ctx);
    for (size_t i = 0; name && i < t->n_admins; i++) if (!strcmp(t->admins[i], name)) return true;
    return false;
}

#define NEED_ADMIN() do { if (!is_admin(t, caller)) { *code = LB_E_FORBIDDEN; \
    snprintf(msg, 256, "only the services in [plugin tokens] admins may do this"); return -1; } } while (0)

static int m_issue(void *ud, struct lb_conn *caller, json_t *p, json_t **result, const char **code, char *msg)
{
    struct tokens *t = ud;
    NEED_ADMIN();
    const char *target = json_string_value(json_object_get(p, "target"));
    const char *op = json_string_value(json_object_get(p, "operation"));
    const char *source = json_string_value(json_object_get(p, "source"));
    json_t *ttlv = json_object_get(p, "ttl"), *data = json_object_get(p, "data");
    json_int_t ttl = ttlv ? json_integer_value(ttlv) : 300;
    if (!target || !op || !*target || !*op || strlen(target) > LB_MAX_NAME || strlen(op) > LB_MAX_EVENT) {
        *code = LB_E_INVALID_MESSAGE;
        snprintf(msg, 256, "token.issue needs \"target\" and \"operation\" (strings; \"*\" for any)");
        return -1;
    }
    if ((ttlv && !json_is_integer(ttlv)) || ttl < 1 || (uint64_t)ttl * 1000 > t->max_ttl_ms) {
        *code = LB_E_INVALID_MESSAGE;
        snprintf(msg, 256, "\"ttl\" must be 1 to %llu seconds", (unsigned long long)(t->max_ttl_ms / 1000));
        return -1;
    }
    unsigned char rnd[16];
    char jti[33];
    RAND_bytes(rnd, sizeof rnd);
    for (int i = 0; i < 16; i++) snprintf(jti + 2 * i, 3, "%02x", rnd[i]);
    json_int_t now = (json_int_t)(lb_now_ms() / 1000);
    if (!source) source = lb_conn_service(caller);
    json_t *claims = json_pack("{s:s,s:s,s:i,s:s,s:s,s:s,s:s,s:I,s:I,s:b,s:b,s:b}", "jti", jti, "type", "broker",
                               "version", 1, "source", source, "sub", source, "target", target, "operation", op,
                               "iat", now, "exp", now + ttl,
                               "stateful", json_is_true(json_object_get(p, "stateful")),
                               "rateLimitExempt", json_is_true(json_object_get(p, "rateLimitExempt")),
                               "authBypass", json_is_true(json_object_get(p, "authBypass")));
    if (data) json_object_set(claims, "data", data);
    char *cj = json_dumps(claims, JSON_COMPACT);
    jwt_t *j = NULL;
    char *tok = NULL;
    const struct key *k = &t->keys[0];
    if (cj && jwt_new(&j) == 0 && jwt_add_grants_json(j, cj) == 0 && jwt_add_header(j, "kid", k->kid) == 0 &&
        jwt_set_alg(j, JWT_ALG_HS256, k->secret, (int)k->len) == 0)
        tok = jwt_encode_str(j);
    free(cj);
    jwt_free(j);
    json_decref(claims);
    if (!tok) { *code = LB_E_INTERNAL_ERROR; snprintf(msg, 256, "could not sign the token"); return -1; }
    t->issued++;
    *result = json_pack("{s:s,s:s,s:I}", "token", tok, "jti", jti, "exp", now + ttl);
    free(tok);
    return 0;
}

static int m_verify(void *ud, struct lb_conn *caller, json_t *p, json_t **result, const char **code, char *msg)
{
    (void)caller;
    struct tokens *t = ud;
    const char *tok = json_string_value(json_object_get(p, "token"));
    char why[200];
    json_t *claims = tok ? verify(t, tok, strlen(tok), why, sizeof why) : NULL;
    if (!claims) { *code = LB_E_UNAUTHENTICATED; snprintf(msg, 256, "%s", tok ? why : "token.verify needs \"token\""); return -1; }
    *result = json_pack("{s:b,s:o}", "valid", 1, "claims", claims);
    return 0;
}

static const char *need_jti(json_t *p, const char **code, char *msg)
{
    const char *jti = json_string_value(json_object_get(p, "jti"));
    if (!jti || !*jti || strlen(jti) > 64) {
        *code = LB_E_INVALID_MESSAGE;
        snprintf(msg, 256, "\"jti\" (the token id) is required");
        return NULL;
    }
    return jti;
}

static int m_revoke(void *ud, struct lb_conn *caller, json_t *p, json_t **result, const char **code, char *msg)
{
    struct tokens *t = ud;
    NEED_ADMIN();
    const char *jti = need_jti(p, code, msg);
    if (!jti) return -1;
    /* Kept until max_ttl has passed: no token it could match lives longer. */
    json_object_set_new(t->revoked, jti, json_integer((json_int_t)((lb_now_ms() + t->max_ttl_ms) / 1000)));
    json_object_del(t->state, jti);
    schedule_save(t);
    *result = json_pack("{s:b,s:s}", "revoked", 1, "jti", jti);
    return 0;
}

static int m_state_get(void *ud, struct lb_conn *caller, json_t *p, json_t **result, const char **code, char *msg)
{
    struct tokens *t = ud;
    NEED_ADMIN();
    const char *jti = need_jti(p, code, msg);
    if (!jti) return -1;
    json_t *s = json_object_get(t->state, jti);
    *result = json_pack("{s:s,s:O}", "jti", jti, "state", s ? s : json_null());
    return 0;
}

static int m_state_set(void *ud, struct lb_conn *caller, json_t *p, json_t **result, const char **code, char *msg)
{
    struct tokens *t = ud;
    NEED_ADMIN();
    const char *jti = need_jti(p, code, msg);
    if (!jti) return -1;
    json_t *s = json_object_get(p, "state");
    if (!s) { *code = LB_E_INVALID_MESSAGE; snprintf(msg, 256, "\"state\" is required"); return -1; }
    if (json_object_size(t->state) >= 100000) { *code = LB_E_INVALID_MESSAGE; snprintf(msg, 256, "too many stateful tokens"); return -1; }
    json_object_set(t->state, jti, s);
    schedule_save(t);
    *result = json_pack("{s:s,s:O}", "jti", jti, "state", s);
    return 0;
}

static int m_state_delete(void *ud, struct lb_conn *caller, json_t *p, json_t **result, const char **code, char *msg)
{
    struct tokens *t = ud;
    NEED_ADMIN();
    const char *jti = need_jti(p, code, msg);
    if (!jti) return -1;
    int had = json_object_del(t->state, jti) == 0;
    schedule_save(t);
    *result = json_pack("{s:s,s:b}", "jti", jti, "deleted", had);
    return 0;
}

static json_t *stats(void *ud)
{
    struct tokens *t = ud;
    return json_pack("{s:I,s:I,s:I,s:I}", "issued", (json_int_t)t->issued, "verified", (json_int_t)t->verified,
                     "refused", (json_int_t)t->refused, "revoked", (json_int_t)json_object_size(t->revoked));
}

/* ---- life cycle --------------------------------------------------------- */

static void tokens_unload(struct lb_plugin_ctx *ctx);

static int tokens_load(struct lb_plugin_ctx *ctx)
{
    struct tokens *t = calloc(1, sizeof *t);
    if (!t) { lb_plugin_fail(ctx, "out of memory"); return -1; }
    t->ctx = ctx;
    lb_plugin_set_data(ctx, t);
    const char *key_file, *admins, *state, *uids;
    if (lb_conf_str(ctx, "key_file", NULL, &key_file) < 0 || lb_conf_str(ctx, "admins", "", &admins) < 0 ||
        lb_conf_str(ctx, "state_file", "tokens-state.json", &state) < 0 ||
        lb_conf_str(ctx, "peercred_uids", "", &uids) < 0 || lb_conf_ms(ctx, "max_ttl", 86400000, &t->max_ttl_ms) < 0)
        return -1;
    if (!key_file) { lb_plugin_fail(ctx, "key_file = <path> is required (a file with a secret of at least %d bytes)", MIN_SECRET); return -1; }
    if (parse_list(t, admins, false) || parse_list(t, uids, true)) {
        lb_plugin_fail(ctx, "bad admins or peercred_uids list");
        return -1;
    }
    if (load_keys(t, lb_conf_path(ctx, key_file)) < 0) return -1;
    t->state_path = lb_conf_path(ctx, state);
    if (load_state(t) < 0) return -1;
    if (lb_check_only(ctx)) return 0;
    t->save_timer = evtimer_new(lb_event_base(ctx), save_cb, t);
    struct lb_hooks h = { .authenticate = on_authenticate, .message = on_message };
    lb_hooks_register(ctx, &h, t);
    lb_stats_register(ctx, stats, t);
    if (lb_system_method_register(ctx, "token.issue", m_issue, t) || lb_system_method_register(ctx, "token.verify", m_verify, t) ||
        lb_system_method_register(ctx, "token.revoke", m_revoke, t) ||
        lb_system_method_register(ctx, "token.state.get", m_state_get, t) ||
        lb_system_method_register(ctx, "token.state.set", m_state_set, t) ||
        lb_system_method_register(ctx, "token.state.delete", m_state_delete, t))
        return -1;
    lb_log(ctx, LB_LOG_INFO, "%zu signing key(s), %zu admin(s), %zu revocation(s) loaded from %s", t->n_keys,
           t->n_admins, json_object_size(t->revoked), t->state_path);
    return 0;
}

static void tokens_unload(struct lb_plugin_ctx *ctx)
{
    struct tokens *t = lb_plugin_data(ctx);
    if (!t) return;
    if (t->save_timer) {
        if (evtimer_pending(t->save_timer, NULL)) save_now(t);   /* nothing pending is lost */
        event_free(t->save_timer);
    }
    for (size_t i = 0; i < t->n_keys; i++) { OPENSSL_cleanse(t->keys[i].secret, t->keys[i].len); free(t->keys[i].secret); }
    for (size_t i = 0; i < t->n_admins; i++) free(t->admins[i]);
    json_decref(t->revoked);
    json_decref(t->state);
    free(t);
    lb_plugin_set_data(ctx, NULL);
}

__attribute__((visibility("default")))
const struct lb_plugin lexbus_plugin = {
    .abi = LB_PLUGIN_ABI,
    .name = "tokens",
    .version = PACKAGE_VERSION,
    .load = tokens_load,
    .unload = tokens_unload,
};
