/*
 * tokens: broker tokens — JWTs the bus signs (HS256, libjwt) and verifies.
 *
 * Claims: jti, type "broker", version, source (= sub), target, operation,
 * iat, exp, stateful, rateLimitExempt, authBypass, admin, data.
 *
 * Two kinds of token, told apart by `operation` (README "Security model"):
 * - A session token (operation "register", target the bus's own service,
 *   source = the service name) authenticates a REGISTER under `source` and
 *   nothing else.  The session lasts as long as the token is valid:
 *   revoking it or its `exp` passing closes the session (ERROR
 *   UNAUTHENTICATED first).  It confers the powers of an admin only when
 *   `source` is in `admins` and the token says "admin": true, which
 *   token.issue writes only when asked to in so many words.
 * - Any other token is narrow: a CALL/EMIT carrying it must match its
 *   target (the `to` service) and operation (the method or event; "*"
 *   matches any), and, when it names a source, come from that service.
 *   Recipients receive the verified claims as `token`.  A narrow token
 *   never authenticates a REGISTER, and a session token carried by a
 *   CALL/EMIT is refused (it is not a permission for that message).
 *   token.issue leaves `source` out unless given: a narrow token is a
 *   bearer permission, never its issuer's identity.
 * - Development with dev-bypass: a CALL/EMIT marked `"ipcRequest": true`
 *   skips these checks; a token it carries is not verified, and recipients
 *   receive {"type":"bypass","bypass":true,"development":true} as `token`
 *   instead of it.
 * - Refused (UNAUTHENTICATED with the reason): malformed, over-long, any
 *   algorithm but HS256 (including "none"), unknown key id, bad signature
 *   (HMAC checked here in constant time), exp or iat missing or not
 *   integers, expired, issued in the future or before nbf (30 s of clock
 *   skew allowed), a lifetime (exp - iat) above max_ttl, revoked, not a
 *   broker token.
 * - System methods (service `lexbus`): token.issue, token.verify,
 *   token.revoke, token.state.get|set|delete.  issue/revoke/state are for
 *   admins (and anyone in development mode when `admins` is empty);
 *   verify is for every registered service.
 * - Revocations and token state live in the host's key-value state
 *   (plugin.h lb_state_*): "revoked/<jti>" (kept until no token it could
 *   match is still valid) and "state/<jti>" (the state's JSON text).  With
 *   [bus] state_file they survive restarts: token.revoke answers only
 *   after lb_state_sync (on disk), state.set/delete are written within
 *   about 100 ms.  Without it they are in memory only: a warning in
 *   development, a start-up error in production (a revoked token must not
 *   come back with a restart).
 * - The state file of older versions ([plugin tokens] state_file, default
 *   tokens-state.json) is imported once at start-up, then renamed to
 *   FILE.migrated; the key is deprecated.
 * - SIGHUP applies key_file, admins, peercred_uids and max_ttl to new and
 *   open sessions alike: sessions whose key was removed or changed, whose
 *   token outlives a lowered max_ttl, or that came in by a uid no longer
 *   in peercred_uids are closed (UNAUTHENTICATED, with the reason); admins
 *   are looked up at each call.  A reload that cannot be applied whole (a
 *   bad key file, a changed state_file, which is read at start-up only)
 *   changes nothing and fails with the reason.
 *
 * [plugin tokens]
 * key_file = /etc/lexbus/broker.key   lines "KID:SECRET" (first signs) or one bare secret;
 *                                     at most 16 keys, lines under 1024 bytes, unique kids
 * admins = ops, deployer              who may issue / revoke / use state
 * max_ttl = 24h                       longest ttl issued or accepted (1s to 366 days)
 * state_file = tokens-state.json      deprecated: imported once into [bus] state_file
 * peercred_uids = self                unix clients of these uids (self = lexbusd's
 *                                     own uid) may REGISTER without a token
 */
#include "config.h"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <event2/event.h>
#include <jansson.h>
#include <jwt.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <lexbus/plugin.h>
#include <lexbus/protocol.h>
#include "jwtpart.h"

#define MAX_KEYS 16
#define MAX_ADMINS 64
#define MAX_UIDS 16
#define MIN_SECRET 16
#define KEY_LINE 1024              /* a key_file line holds at most KEY_LINE - 1 bytes */
#define CLOCK_SKEW_S 30            /* tolerated clock difference for iat and nbf */
#define MAX_TTL_S (366LL * 86400)  /* upper bound for max_ttl */
#define MAX_JTI 64                 /* longest jti token.revoke and token.state.* take */
#define LEGACY_STATE "tokens-state.json"

struct key { char kid[64]; unsigned char *secret; size_t len; int line; };

/* What [plugin tokens] says.  Parsed whole before any of it is used, so a
 * reload that fails half-way changes nothing. */
struct settings {
    struct key keys[MAX_KEYS];
    size_t n_keys;
    char *admins[MAX_ADMINS];
    size_t n_admins;
    uid_t uids[MAX_UIDS];
    size_t n_uids;
    uint64_t max_ttl_ms;
    char *legacy_state;            /* state_file as written (NULL: absent); read at start-up only */
};

enum session_kind { SESSION_TOKEN, SESSION_PEERCRED };

/* A session this plugin authenticated (the per-connection slot points
 * here): by a session token, ended when the token is revoked or expires,
 * or by peer credentials.  A reload ends those its new settings would
 * refuse. */
enum session_end { END_NONE, END_REVOKED, END_KEY, END_TTL, END_UID };

struct session {
    struct session *next, **pprev;
    struct tokens *t;
    struct lb_conn *conn;
    enum session_kind kind;
    char *jti;                     /* SESSION_TOKEN: the token's id, key and lifetime */
    char kid[64];
    long long lifetime_s;
    bool admin;                    /* the token says "admin": true */
    uid_t uid;                     /* SESSION_PEERCRED */
    enum session_end end;          /* not END_NONE: close_ended closes it, saying why */
    struct event *expiry;
};

struct tokens {
    struct lb_plugin_ctx *ctx;
    struct settings set;
    bool durable;                  /* the host's state survives a restart */
    struct event *close_ev;        /* closes sessions revoked or ended by a reload */
    struct session *sessions;
    struct settings staged;        /* a reload's settings, until reload_done */
    bool has_staged;
    unsigned long long issued, verified, refused, sessions_ended, reloads;
};

#define SESSION_OP "register"      /* the operation of a session token */

/* ---- keys and settings ---------------------------------------------- */

/* The key file holds every secret: say so when others can read it. */
static void warn_if_readable(struct lb_plugin_ctx *ctx, FILE *f, const char *path)
{
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && (st.st_mode & 077))
        lb_log(ctx, LB_LOG_WARN, "key_file %s is readable or writable by group or others (mode %04o): chmod 600 it",
               path, (unsigned)(st.st_mode & 07777));
}

/* Reads one line into buf (without the newline).  Returns 1, 0 at end of
 * file, or -1 when the line does not fit: fgets would silently split it
 * into two "keys". */
static int read_line(FILE *f, char *buf, size_t cap)
{
    if (!fgets(buf, (int)cap, f)) return 0;
    size_t n = strcspn(buf, "\n");
    if (buf[n] == '\n') { buf[n] = 0; return 1; }
    int c = fgetc(f);                    /* a full buffer: is the line really longer? */
    if (c == EOF || c == '\n') return 1;
    while (c != EOF && c != '\n') c = fgetc(f);   /* never leave a secret's tail for the next line */
    return -1;
}

/* Parses "KID:SECRET" or a bare secret into the next key slot. */
static int parse_key(struct lb_plugin_ctx *ctx, struct settings *st, char *line, const char *path, int lineno)
{
    if (st->n_keys == MAX_KEYS) {
        lb_plugin_fail(ctx, "%s:%d: more than %d keys (remove retired keys)", path, lineno, MAX_KEYS);
        return -1;
    }
    struct key *k = &st->keys[st->n_keys];
    char *colon = strchr(line, ':');
    const char *secret = line;
    if (colon && colon - line < (long)sizeof k->kid) {
        *colon = 0;
        snprintf(k->kid, sizeof k->kid, "%.63s", line);
        secret = colon + 1;
    } else {
        snprintf(k->kid, sizeof k->kid, "k%zu", st->n_keys + 1);
    }
    for (size_t i = 0; i < st->n_keys; i++)
        if (!strcmp(st->keys[i].kid, k->kid)) {
            /* Verification would always pick the first: the second is dead, or a mistake. */
            lb_plugin_fail(ctx, "%s:%d: key id '%s' is already used on line %d", path, lineno, k->kid,
                           st->keys[i].line);
            return -1;
        }
    k->len = strlen(secret);
    if (k->len < MIN_SECRET) {
        lb_plugin_fail(ctx, "%s:%d: key '%s' is shorter than %d bytes", path, lineno, k->kid, MIN_SECRET);
        return -1;
    }
    k->secret = (unsigned char *)strdup(secret);
    if (!k->secret) { lb_plugin_fail(ctx, "out of memory"); return -1; }
    k->line = lineno;
    st->n_keys++;
    return 0;
}

static int load_keys(struct lb_plugin_ctx *ctx, struct settings *st, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) { lb_plugin_fail(ctx, "cannot read key_file %s: %s", path, strerror(errno)); return -1; }
    warn_if_readable(ctx, f, path);
    char line[KEY_LINE];
    int rc = 0, lineno = 0, got;
    while (!rc && (got = read_line(f, line, sizeof line)) != 0) {
        lineno++;
        if (got < 0) {
            lb_plugin_fail(ctx, "%s:%d: line is longer than %d bytes", path, lineno, KEY_LINE - 1);
            rc = -1;
            break;
        }
        line[strcspn(line, "\r")] = 0;
        if (!line[0] || line[0] == '#') continue;
        rc = parse_key(ctx, st, line, path, lineno);
    }
    fclose(f);
    OPENSSL_cleanse(line, sizeof line);
    if (rc) return -1;
    if (!st->n_keys) { lb_plugin_fail(ctx, "key_file %s holds no key", path); return -1; }
    return 0;
}

static const struct key *key_by_kid(const struct settings *st, const char *kid)
{
    for (size_t i = 0; i < st->n_keys; i++)
        if (kid ? !strcmp(st->keys[i].kid, kid) : st->n_keys == 1) return &st->keys[i];
    return NULL;
}

/* True when `kid` names the same secret in both sets: sessions verified
 * with it may stay across a reload. */
static bool key_kept(const struct settings *old, const struct settings *now, const char *kid)
{
    const struct key *a = key_by_kid(old, kid), *b = key_by_kid(now, kid);
    return a && b && a->len == b->len && CRYPTO_memcmp(a->secret, b->secret, a->len) == 0;
}

static int parse_list(struct settings *st, const char *s, bool uids)
{
    char buf[2048];
    snprintf(buf, sizeof buf, "%s", s);
    for (char *save = NULL, *tok = strtok_r(buf, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
        if (uids) {
            if (st->n_uids == MAX_UIDS) return -1;
            if (!strcmp(tok, "self")) { st->uids[st->n_uids++] = geteuid(); continue; }
            char *end;
            long v = strtol(tok, &end, 10);
            if (*end || v < 0) return -1;
            st->uids[st->n_uids++] = (uid_t)v;
        } else {
            if (st->n_admins == MAX_ADMINS || !lb_service_name_valid(tok, strlen(tok))) return -1;
            if (!(st->admins[st->n_admins++] = strdup(tok))) return -1;
        }
    }
    return 0;
}

static void settings_free(struct settings *st)
{
    for (size_t i = 0; i < st->n_keys; i++) {
        OPENSSL_cleanse(st->keys[i].secret, st->keys[i].len);
        free(st->keys[i].secret);
    }
    for (size_t i = 0; i < st->n_admins; i++) free(st->admins[i]);
    free(st->legacy_state);
    memset(st, 0, sizeof *st);
}

/* Reads and checks the whole section into st (zeroed first).  On -1 the
 * reason is recorded and st must still be freed. */
static int read_settings(struct lb_plugin_ctx *ctx, struct settings *st)
{
    memset(st, 0, sizeof *st);
    const char *key_file, *admins, *state, *uids;
    if (lb_conf_str(ctx, "key_file", NULL, &key_file) < 0 || lb_conf_str(ctx, "admins", "", &admins) < 0 ||
        lb_conf_str(ctx, "state_file", NULL, &state) < 0 ||
        lb_conf_str(ctx, "peercred_uids", "", &uids) < 0 || lb_conf_ms(ctx, "max_ttl", 86400000, &st->max_ttl_ms) < 0)
        return -1;
    if (st->max_ttl_ms < 1000 || st->max_ttl_ms > (uint64_t)MAX_TTL_S * 1000) {
        lb_plugin_fail(ctx, "max_ttl must be from 1s to 366 days");
        return -1;
    }
    if (!key_file) { lb_plugin_fail(ctx, "key_file = <path> is required (a file with a secret of at least %d bytes)", MIN_SECRET); return -1; }
    if (parse_list(st, admins, false) || parse_list(st, uids, true)) {
        lb_plugin_fail(ctx, "bad admins or peercred_uids list (up to %d service names / %d uids or 'self', "
                       "comma-separated)", MAX_ADMINS, MAX_UIDS);
        return -1;
    }
    if (state && !(st->legacy_state = strdup(state))) { lb_plugin_fail(ctx, "out of memory"); return -1; }
    return load_keys(ctx, st, lb_conf_path(ctx, key_file));
}

static bool is_listed_admin(const struct settings *st, const char *name)
{
    for (size_t i = 0; name && i < st->n_admins; i++) if (!strcmp(st->admins[i], name)) return true;
    return false;
}

/* Whether a session of `name` has the bus's admin powers (lb_conn_set_admin:
 * `lexbus.reload`, and this plugin's token methods): a service in
 * `admins` whose session, if a token let it in, says "admin": true. */
static bool session_admin(const struct settings *st, const char *name, bool by_token, bool token_admin)
{
    return is_listed_admin(st, name) && (!by_token || token_admin);
}

/* ---- revocations and state (the host's key-value state) -------------- */

/* "revoked/<jti>" or "state/<jti>" into buf; false when jti is too long
 * to have been revoked or given state (need_jti refuses those). */
static bool jti_key(char *buf, size_t cap, const char *kind, const char *jti)
{
    return strlen(jti) <= MAX_JTI && (size_t)snprintf(buf, cap, "%s/%s", kind, jti) < cap;
}

static bool is_revoked(struct tokens *t, const char *jti)
{
    char k[16 + MAX_JTI];
    return jti_key(k, sizeof k, "revoked", jti) && lb_state_get(t->ctx, k, NULL) != NULL;
}

/* Kept until no token it could match is still valid: verify() refuses
 * exp - iat > max_ttl, but accepts an iat up to CLOCK_SKEW_S ahead. */
static uint64_t revocation_ttl_ms(struct tokens *t)
{
    return t->set.max_ttl_ms + (CLOCK_SKEW_S + 1) * 1000ull;
}

static int count_cb(void *ud, const char *key, const char *value, size_t len)
{
    (void)ud; (void)key; (void)value; (void)len;
    return 0;
}

static size_t count_revoked(struct tokens *t)
{
    return lb_state_each(t->ctx, "revoked/", count_cb, NULL);
}

/* An entry of the old state file, unless the state already has that key
 * (it is newer than a file left by an interrupted import).  ttl_ms 0 =
 * no expiry.  Returns 0 or -1 (errno). */
static int import_one(struct tokens *t, const char *kind, const char *jti, const char *val, uint64_t ttl_ms)
{
    char k[16 + MAX_JTI];
    if (!jti_key(k, sizeof k, kind, jti) || lb_state_get(t->ctx, k, NULL)) return 0;
    return lb_state_set(t->ctx, k, val, strlen(val), ttl_ms);
}

/* Copies the old file's revocations (jti -> exp in s) and state (jti ->
 * JSON) into the host's state.  Returns how many, or -1 (errno). */
static long import_legacy(struct tokens *t, json_t *revoked, json_t *state)
{
    const char *jti;
    json_t *v;
    long n = 0;
    uint64_t now = lb_now_ms();
    json_object_foreach(revoked, jti, v) {
        json_int_t exp = json_integer_value(v);
        if (exp <= 0 || (uint64_t)exp * 1000 <= now) continue;   /* no token it matches is valid any more */
        if (import_one(t, "revoked", jti, "", (uint64_t)exp * 1000 - now)) return -1;
        n++;
    }
    json_object_foreach(state, jti, v) {
        char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        int rc = text ? import_one(t, "state", jti, text, 0) : (errno = ENOMEM, -1);
        free(text);
        if (rc) return -1;
        n++;
    }
    return n;
}

/* Once the import is durable the old file is renamed, so it is never
 * imported again (token state deleted since would come back). */
static int retire_legacy(struct tokens *t, const char *path, long n)
{
    char done[4096];
    snprintf(done, sizeof done, "%s.migrated", path);
    if (lb_state_sync(t->ctx) != 0) {
        lb_plugin_fail(t->ctx, "cannot write [bus] state_file while importing %s: %s", path, strerror(errno));
        return -1;
    }
    if (rename(path, done) != 0) {
        lb_plugin_fail(t->ctx, "imported %s into [bus] state_file, but cannot rename it to %s: %s (move it away)",
                       path, done, strerror(errno));
        return -1;
    }
    lb_log(t->ctx, LB_LOG_WARN, "imported %ld revocation(s) and token state(s) from %s into [bus] state_file and "
           "renamed it to %s: [plugin tokens] state_file is deprecated, remove it", n, path, done);
    return 0;
}

/* The state file of older versions: [plugin tokens] state_file, or its
 * default next to bus.conf. */
static int migrate_legacy(struct tokens *t, const char *path, bool configured)
{
    if (access(path, F_OK) != 0) {
        if (configured)
            lb_log(t->ctx, LB_LOG_WARN, "state_file is deprecated ([bus] state_file keeps revocations now) and %s "
                   "does not exist: nothing to import; remove the key", path);
        return 0;
    }
    json_error_t je;
    json_t *doc = json_load_file(path, 0, &je);
    json_t *r = json_object_get(doc, "revoked"), *s = json_object_get(doc, "state");
    if (!json_is_object(r) || !json_is_object(s)) {
        lb_plugin_fail(t->ctx, "old state_file %s is corrupt (%s line %d): fix or remove it", path,
                       doc ? "missing revoked/state" : je.text, je.line);
        json_decref(doc);
        return -1;
    }
    long n = import_legacy(t, r, s);
    json_decref(doc);
    if (n < 0) {
        lb_plugin_fail(t->ctx, "cannot import %s: %s%s", path, strerror(errno),
                       errno == ENOSPC ? " (raise [bus] state_max)" : "");
        return -1;
    }
    if (lb_check_only(t->ctx)) return 0;          /* -t changes nothing */
    if (t->durable) return retire_legacy(t, path, n);
    lb_log(t->ctx, LB_LOG_WARN, "imported %ld revocation(s) and token state(s) from %s into memory only: set "
           "[bus] state_file to keep them (%s is left in place)", n, path, path);
    return 0;
}

/* Revocations that vanish with a restart would let revoked tokens back
 * in: production refuses to run that way. */
static int check_durability(struct tokens *t)
{
    t->durable = lb_state_durable(t->ctx);
    if (t->durable) return 0;
    if (lb_bus_production(t->ctx)) {
        lb_plugin_fail(t->ctx, "mode = production needs revocations that survive a restart: set state_file = PATH "
                       "in [bus] (e.g. /var/lib/lexbus/state.json)");
        return -1;
    }
    lb_log(t->ctx, LB_LOG_WARN, "[bus] state_file is not set: revocations and token state are kept in memory only "
           "and will NOT survive a restart");
    return 0;
}

/* ---- verification ----------------------------------------------------- */

/* HMAC-SHA256 of "header.payload" under k, compared with the token's
 * signature in constant time.  libjwt 1.x compares signatures with strcmp
 * (CVE-2024-25189) unless a distribution patched it, so libjwt only ever
 * sees tokens whose signature already matched here.  Our MAC is encoded
 * and the strings compared, so only the canonical encoding verifies. */
static bool hs256_ok(const struct key *k, const char *tok)
{
    const char *d1 = strchr(tok, '.'), *d2 = d1 ? strchr(d1 + 1, '.') : NULL;
    if (!d2 || strchr(d2 + 1, '.') || strlen(d2 + 1) != 43) return false;   /* 43 = 32 bytes, unpadded */
    unsigned char mac[EVP_MAX_MD_SIZE], b64[48];
    unsigned int maclen = 0;
    if (!HMAC(EVP_sha256(), k->secret, (int)k->len, (const unsigned char *)tok, (size_t)(d2 - tok), mac, &maclen) ||
        maclen != 32)
        return false;
    EVP_EncodeBlock(b64, mac, 32);          /* 43 characters and one '=' */
    for (int i = 0; i < 43; i++) b64[i] = b64[i] == '+' ? '-' : b64[i] == '/' ? '_' : b64[i];
    bool ok = CRYPTO_memcmp(b64, d2 + 1, 43) == 0;
    OPENSSL_cleanse(mac, sizeof mac);
    return ok;
}

/* An integer claim: 1 when present and an integer (*out set), 0 when
 * absent, -1 when present with another type. */
static int int_claim(json_t *claims, const char *name, json_int_t *out)
{
    json_t *v = json_object_get(claims, name);
    if (!v) return 0;
    if (!json_is_integer(v)) return -1;
    *out = json_integer_value(v);
    return 1;
}

/* The time claims.  Returns true if the token is valid now; else false
 * with *why set.  Checked in an order that keeps the arithmetic in range
 * (exp > now > 0 and 0 <= iat <= now + skew before exp - iat). */
static bool times_ok(struct tokens *t, json_t *claims, char *why, size_t whylen)
{
    json_int_t now = (json_int_t)(lb_now_ms() / 1000), exp = 0, iat = 0, nbf = 0;
    int has_exp = int_claim(claims, "exp", &exp), has_iat = int_claim(claims, "iat", &iat);
    int has_nbf = int_claim(claims, "nbf", &nbf);
    json_int_t max_ttl_s = (json_int_t)(t->set.max_ttl_ms / 1000);
    if (has_exp < 0) { snprintf(why, whylen, "exp must be an integer (seconds since the epoch)"); return false; }
    if (has_iat < 0) { snprintf(why, whylen, "iat must be an integer (seconds since the epoch)"); return false; }
    if (has_nbf < 0) { snprintf(why, whylen, "nbf must be an integer (seconds since the epoch)"); return false; }
    if (!has_exp) { snprintf(why, whylen, "token lacks exp"); return false; }
    if (!has_iat) { snprintf(why, whylen, "token lacks iat"); return false; }
    if (exp <= now) {
        snprintf(why, whylen, "token expired %llu s ago", (unsigned long long)now - (unsigned long long)exp);
        return false;
    }
    if (iat > now + CLOCK_SKEW_S) { snprintf(why, whylen, "token not yet valid (issued in the future)"); return false; }
    if (iat < 0) { snprintf(why, whylen, "iat is negative"); return false; }
    if (has_nbf && nbf > now + CLOCK_SKEW_S) {
        snprintf(why, whylen, "token not yet valid (nbf is %lld s from now)", (long long)(nbf - now));
        return false;
    }
    /* A token signed with a longer life than this bus grants (another
     * issuer with the same key, or max_ttl lowered) is not honoured. */
    if (exp - iat > max_ttl_s) {
        snprintf(why, whylen, "token lifetime (exp - iat = %lld s) exceeds max_ttl (%lld s)", (long long)(exp - iat),
                 (long long)max_ttl_s);
        return false;
    }
    return true;
}

/* Returns the verified claims (new reference), or NULL with *why set.
 * kid (64 bytes, or NULL) receives the id of the key that verified it. */
static json_t *verify(struct tokens *t, const char *tok, size_t n, char *kid, char *why, size_t whylen)
{
    if (n == 0 || n > LB_MAX_TOKEN) { snprintf(why, whylen, "token is empty or longer than %d bytes", LB_MAX_TOKEN); return NULL; }
    char *s = strndup(tok, n);
    jwt_t *j = NULL;
    json_t *claims = NULL;
    /* The header is read here, before any key is used: the algorithm is
     * pinned to HS256 so "none" and key confusion never reach signature
     * checking, and `kid` picks the key. */
    json_t *hdr = jwt_part_json(s, 0);
    const char *alg = json_string_value(json_object_get(hdr, "alg"));
    if (!hdr || !alg) { json_decref(hdr); snprintf(why, whylen, "malformed token"); goto out; }
    if (strcmp(alg, "HS256") != 0) {
        snprintf(why, whylen, "algorithm %.20s is not accepted (HS256 only)", alg);
        json_decref(hdr);
        goto out;
    }
    const struct key *k = key_by_kid(&t->set, json_string_value(json_object_get(hdr, "kid")));
    json_decref(hdr);
    if (!k) { snprintf(why, whylen, "unknown key id"); goto out; }
    if (kid) snprintf(kid, 64, "%s", k->kid);
    if (!hs256_ok(k, s) || jwt_decode(&j, s, k->secret, (int)k->len) != 0 || !j || jwt_get_alg(j) != JWT_ALG_HS256) {
        snprintf(why, whylen, "bad signature");
        goto out;
    }
    char *cj = jwt_get_grants_json(j, NULL);
    claims = cj ? json_loads(cj, 0, NULL) : NULL;
    free(cj);
    if (!json_is_object(claims)) { snprintf(why, whylen, "malformed claims"); goto fail; }
    const char *type = json_string_value(json_object_get(claims, "type"));
    const char *jti = json_string_value(json_object_get(claims, "jti"));
    if (!type || strcmp(type, "broker")) { snprintf(why, whylen, "not a broker token"); goto fail; }
    if (!jti) { snprintf(why, whylen, "token lacks jti"); goto fail; }
    if (!times_ok(t, claims, why, whylen)) goto fail;
    if (is_revoked(t, jti)) { snprintf(why, whylen, "token %s was revoked", jti); goto fail; }
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

/* ---- sessions ---------------------------------------------------------- */

static void session_link(struct session **head, struct session *s)
{
    s->next = *head;
    if (*head) (*head)->pprev = &s->next;
    *head = s;
    s->pprev = head;
}

static void session_unlink(struct session *s)
{
    *s->pprev = s->next;
    if (s->next) s->next->pprev = s->pprev;
    s->next = NULL;
    s->pprev = NULL;
}

static void session_free(struct session *s)
{
    session_unlink(s);
    if (s->expiry) event_free(s->expiry);
    lb_conn_set_data(s->conn, s->t->ctx, NULL);
    free(s->jti);
    free(s);
}

/* Forgets what an earlier REGISTER of c left (one another plugin refused):
 * a new REGISTER is judged afresh. */
static void session_drop(struct tokens *t, struct lb_conn *c)
{
    struct session *old = lb_conn_get_data(c, t->ctx);
    if (old) session_free(old);
}

static struct session *session_new(struct tokens *t, struct lb_conn *c, enum session_kind kind)
{
    session_drop(t, c);
    struct session *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->t = t;
    s->conn = c;
    s->kind = kind;
    session_link(&t->sessions, s);
    lb_conn_set_data(c, t->ctx, s);
    return s;
}

static void session_expired(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what;
    struct session *s = arg;
    s->t->sessions_ended++;
    lb_log(s->t->ctx, LB_LOG_INFO, "#%llu %s: token %s expired: closing the session",
           (unsigned long long)lb_conn_id(s->conn), lb_conn_service(s->conn) ? lb_conn_service(s->conn) : "?", s->jti);
    /* Closing runs our closed hook, which frees s and this timer. */
    lb_conn_close_error(s->conn, LB_E_UNAUTHENTICATED, "token expired: register again with a new token");
}

/* Remembers that c was authenticated by the token (jti, key, lifetime,
 * admin claim), so that revoking the token, its expiry or a reload that
 * no longer accepts it ends the session, not only new uses. */
static int session_track_token(struct tokens *t, struct lb_conn *c, json_t *claims, const char *kid)
{
    struct session *s = session_new(t, c, SESSION_TOKEN);
    if (!s) return -1;
    s->jti = strdup(json_string_value(json_object_get(claims, "jti")));
    s->expiry = evtimer_new(lb_event_base(t->ctx), session_expired, s);
    if (!s->jti || !s->expiry) { session_free(s); return -1; }
    json_int_t exp = json_integer_value(json_object_get(claims, "exp"));
    json_int_t iat = json_integer_value(json_object_get(claims, "iat"));
    snprintf(s->kid, sizeof s->kid, "%s", kid);
    s->lifetime_s = exp - iat;                       /* verify(): both in range */
    s->admin = json_is_true(json_object_get(claims, "admin"));
    uint64_t at = (uint64_t)exp * 1000, now = lb_now_ms();   /* verify(): exp > now > 0 */
    uint64_t in = at > now ? at - now : 0;
    struct timeval tv = { (time_t)(in / 1000), (suseconds_t)(in % 1000) * 1000 };
    evtimer_add(s->expiry, &tv);
    return 0;
}

/* Whether session s ends now (a reload marked it, or its token is
 * revoked), with the reason in msg. */
static bool session_ends(struct tokens *t, struct session *s, char *msg, size_t len)
{
    if (s->end == END_NONE && s->kind == SESSION_TOKEN && is_revoked(t, s->jti)) s->end = END_REVOKED;
    switch (s->end) {
    case END_NONE:
        return false;
    case END_REVOKED:
        snprintf(msg, len, "token revoked (jti %.64s): this session has ended", s->jti);
        return true;
    case END_KEY:
        snprintf(msg, len, "key '%.63s' that signed this session's token is no longer in key_file: this session "
                 "has ended; register again with a new token", s->kid);
        return true;
    case END_TTL:
        snprintf(msg, len, "this session's token lives %lld s, more than max_ttl (%llu s) allows now: this session "
                 "has ended; register again with a new token", s->lifetime_s,
                 (unsigned long long)(t->set.max_ttl_ms / 1000));
        return true;
    case END_UID:
        snprintf(msg, len, "uid %lu is no longer in peercred_uids: this session has ended",
                 (unsigned long)s->uid);
        return true;
    }
    return false;
}

/* Ends every session whose token is now revoked or that a reload no
 * longer accepts.  Run from an event, not from token.revoke or the reload
 * itself: the revoker gets its answer first (even when it revoked its own
 * session's token), and the router is not in the middle of handling a
 * message when other connections close.  The sessions are picked first
 * and closed after: closing one connection may close others, so no
 * pointer into the list is kept across a close. */
static void close_ended(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what;
    struct tokens *t = arg;
    struct session *ending = NULL;
    char msg[240];
    for (struct session *s = t->sessions, *next; s; s = next) {
        next = s->next;
        if (!session_ends(t, s, msg, sizeof msg)) continue;
        session_unlink(s);
        session_link(&ending, s);
    }
    while (ending) {
        struct session *s = ending;
        session_unlink(s);          /* back on the list its closed hook takes it off */
        session_link(&t->sessions, s);
        session_ends(t, s, msg, sizeof msg);
        t->sessions_ended++;
        lb_log(t->ctx, LB_LOG_INFO, "#%llu %s: %s: closing the session", (unsigned long long)lb_conn_id(s->conn),
               lb_conn_service(s->conn) ? lb_conn_service(s->conn) : "?", msg);
        lb_conn_close_error(s->conn, LB_E_UNAUTHENTICATED, msg);
    }
}

/* ---- hooks ------------------------------------------------------------- */

static bool uid_listed(const struct settings *st, uid_t uid)
{
    for (size_t i = 0; i < st->n_uids; i++) if (st->uids[i] == uid) return true;
    return false;
}

static bool peercred_ok(struct tokens *t, struct lb_conn *c)
{
    const struct lb_peer *p = lb_conn_peer(c);
    return p->has_cred && uid_listed(&t->set, p->uid);
}

static const char *claim_str(json_t *claims, const char *name)
{
    return json_string_value(json_object_get(claims, name));
}

/* The service a token names as its user: `source`, or JWT's `sub`. */
static const char *token_source(json_t *claims)
{
    const char *src = claim_str(claims, "source");
    return src ? src : claim_str(claims, "sub");
}

static bool is_session_token(json_t *claims)
{
    const char *op = claim_str(claims, "operation");
    return op && !strcmp(op, SESSION_OP);
}

/* A REGISTER's token must be a session token issued to the name it
 * registers: a narrow token is a permission, not an identity. */
static bool session_claims_ok(json_t *claims, struct lb_str name, struct lb_err *err)
{
    if (!is_session_token(claims)) {
        const char *op = claim_str(claims, "operation");
        lb_refuse(err, LB_E_UNAUTHENTICATED, "token refused: not a session token (operation '%.64s'): only a token issued "
                "with operation \"register\" authenticates a REGISTER", op ? op : "?");
        return false;
    }
    const char *src = token_source(claims);
    if (src && strlen(src) == name.n && !memcmp(src, name.p, name.n)) return true;
    lb_refuse(err, LB_E_UNAUTHENTICATED, "token refused: it was issued to '%.128s', not '%.*s'", src ? src : "?",
            (int)name.n, name.p);
    return false;
}

static void mark_admin(struct tokens *t, struct lb_conn *c, struct lb_str name, bool by_token, bool token_admin)
{
    char n[LB_MAX_NAME + 1];
    snprintf(n, sizeof n, "%.*s", (int)(name.n < LB_MAX_NAME ? name.n : LB_MAX_NAME), name.p ? name.p : "");
    lb_conn_set_admin(c, session_admin(&t->set, n, by_token, token_admin));
}

static enum lb_verdict_kind authenticate_peercred(struct tokens *t, struct lb_conn *c, struct lb_msg *m,
                                                  struct lb_err *err)
{
    if (!peercred_ok(t, c)) {
        session_drop(t, c);
        return LB_PASS;
    }
    struct session *s = session_new(t, c, SESSION_PEERCRED);
    if (!s) { lb_refuse(err, LB_E_INTERNAL_ERROR, "out of memory"); return LB_DENY; }
    s->uid = lb_conn_peer(c)->uid;
    lb_conn_set_auth(c, "peercred");
    mark_admin(t, c, lb_msg_field(m, "serviceName"), false, false);
    return LB_ALLOW;
}

static enum lb_verdict_kind on_authenticate(void *ud, struct lb_conn *c, struct lb_msg *m, struct lb_err *err)
{
    struct tokens *t = ud;
    struct lb_str tok = lb_msg_field(m, "token"), name = lb_msg_field(m, "serviceName");
    if (!tok.p) return authenticate_peercred(t, c, m, err);
    char why[200], kid[64];
    session_drop(t, c);
    json_t *claims = verify(t, tok.p, tok.n, kid, why, sizeof why);
    if (!claims) { lb_refuse(err, LB_E_UNAUTHENTICATED, "token refused: %s", why); return LB_DENY; }
    bool ok = session_claims_ok(claims, name, err);
    if (ok && session_track_token(t, c, claims, kid) != 0) {
        /* Without the record the session would outlive its token: refuse instead. */
        lb_refuse(err, LB_E_INTERNAL_ERROR, "out of memory");
        ok = false;
    }
    bool token_admin = ok && json_is_true(json_object_get(claims, "admin"));
    json_decref(claims);
    if (!ok) return LB_DENY;
    lb_conn_set_auth(c, "token");
    mark_admin(t, c, name, true, token_admin);
    return LB_ALLOW;
}

static void on_closed(void *ud, struct lb_conn *c)
{
    session_drop(ud, c);
}

/* A CALL/EMIT's token: a narrow token whose target, operation and (when
 * it names one) source fit the message.  Returns true, or false with v
 * filled. */
static bool message_claims_ok(json_t *claims, struct lb_conn *c, struct lb_msg *m, struct lb_err *err)
{
    enum lb_msg_type type = lb_msg_type(m);
    const char *kind = type == LB_MSG_CALL ? "CALL" : "EMIT";
    struct lb_str to = lb_msg_field(m, "to");
    if (type == LB_MSG_EMIT && !to.p) { to.p = "broadcast"; to.n = 9; }
    struct lb_str op = lb_msg_field(m, type == LB_MSG_CALL ? "method" : "event");
    if (is_session_token(claims)) {
        lb_refuse(err, LB_E_FORBIDDEN, "a session token authenticates a REGISTER only: send this %s without it, or with "
                "a token issued for %.*s/%.*s", kind, (int)to.n, to.p, (int)op.n, op.p);
        return false;
    }
    if (!claim_matches(claims, "target", to) || !claim_matches(claims, "operation", op)) {
        const char *ct = claim_str(claims, "target"), *co = claim_str(claims, "operation");
        lb_refuse(err, LB_E_FORBIDDEN, "token is for %.100s/%.100s, not %.*s/%.*s", ct ? ct : "?", co ? co : "?",
                (int)to.n, to.p, (int)op.n, op.p);
        return false;
    }
    const char *src = token_source(claims), *me = lb_conn_service(c);
    if (src && (!me || strcmp(src, me))) {
        lb_refuse(err, LB_E_FORBIDDEN, "token is for source '%.128s' only, not '%.100s'", src, me ? me : "?");
        return false;
    }
    return true;
}

static enum lb_verdict_kind on_message(void *ud, struct lb_conn *c, struct lb_msg *m, struct lb_err *err)
{
    struct tokens *t = ud;
    enum lb_msg_type type = lb_msg_type(m);
    if (type != LB_MSG_CALL && type != LB_MSG_EMIT) return LB_PASS;
    if (lb_msg_attr_get(m, "auth.bypass")) {
        /* Recipients must never take an unverified token for verified
         * claims: they are told plainly that nothing was checked. */
        static const char bypass[] = "{\"type\":\"bypass\",\"bypass\":true,\"development\":true}";
        if (lb_msg_raw(m, "token").p) lb_msg_set_claims(m, bypass, sizeof bypass - 1);
        return LB_PASS;
    }
    struct lb_str tok = lb_msg_field(m, "token");
    if (!tok.p) return LB_PASS;
    char why[200];
    json_t *claims = verify(t, tok.p, tok.n, NULL, why, sizeof why);
    if (!claims) { lb_refuse(err, LB_E_UNAUTHENTICATED, "token refused: %s", why); return LB_DENY; }
    if (!message_claims_ok(claims, c, m, err)) {
        json_decref(claims);
        return LB_DENY;
    }
    char *text = json_dumps(claims, JSON_COMPACT);
    if (text) { lb_msg_set_claims(m, text, strlen(text)); free(text); }
    json_decref(claims);
    return LB_PASS;
}

/* ---- system methods ----------------------------------------------------- */

/* Why the caller may not issue, revoke or use token state, or NULL when
 * it may: a service in `admins` (anyone in development when the list is
 * empty) whose session, if a token authenticated it, says "admin": true. */
static const char *not_admin(struct tokens *t, struct lb_conn *caller)
{
    if (!t->set.n_admins && !lb_bus_production(t->ctx)) return NULL;
    if (!is_listed_admin(&t->set, lb_conn_service(caller))) return "only the services in [plugin tokens] admins may do this";
    struct session *s = lb_conn_get_data(caller, t->ctx);
    if (s && s->kind == SESSION_TOKEN && !s->admin)
        return "this session's token does not say \"admin\": true, so it has no admin powers (register with a "
               "session token issued with \"admin\": true, lexbus token issue --admin)";
    return NULL;
}

#define NEED_ADMIN() do { const char *why_ = not_admin(t, caller); \
    if (why_) { lb_refuse(err, LB_E_FORBIDDEN, "%s", why_); return -1; } } while (0)

#define BAD_PARAMS(...) do { lb_refuse(err, LB_E_INVALID_MESSAGE, __VA_ARGS__); return -1; } while (0)

/* What token.issue was asked for, checked. */
struct issue_req { const char *target, *op, *source; bool admin; json_int_t ttl; };

/* A session token (operation "register") names the service it lets in,
 * targets the bus, and carries an admin's powers only when asked to in so
 * many words; a narrow one names a target and names a source only when
 * given one. */
static int issue_params(struct tokens *t, json_t *p, struct issue_req *r, struct lb_err *err)
{
    json_t *ttlv = json_object_get(p, "ttl"), *adminv = json_object_get(p, "admin");
    json_int_t max_ttl_s = (json_int_t)(t->set.max_ttl_ms / 1000);
    r->target = json_string_value(json_object_get(p, "target"));
    r->op = json_string_value(json_object_get(p, "operation"));
    r->source = json_string_value(json_object_get(p, "source"));
    r->admin = json_is_true(adminv);
    r->ttl = ttlv ? json_integer_value(ttlv) : 300;
    if (!r->op || !*r->op || strlen(r->op) > LB_MAX_EVENT)
        BAD_PARAMS("token.issue needs \"operation\": \"register\" for a session token, or the method or event "
                   "(\"*\" for any) with a \"target\"");
    if (adminv && !json_is_boolean(adminv)) BAD_PARAMS("\"admin\" must be true or false");
    if (json_object_get(p, "source") && (!r->source || !lb_service_name_valid(r->source, strlen(r->source))))
        BAD_PARAMS("\"source\" must be a service name (1-%d characters of A-Z a-z 0-9 _ . - / @)", LB_MAX_NAME);
    /* Compared in seconds, never multiplied: a huge ttl must not wrap into a small one. */
    if ((ttlv && !json_is_integer(ttlv)) || r->ttl < 1 || r->ttl > max_ttl_s)
        BAD_PARAMS("\"ttl\" must be an integer from 1 to %lld seconds (max_ttl)", (long long)max_ttl_s);
    if (strcmp(r->op, SESSION_OP) != 0) {
        if (!r->target || !*r->target || strlen(r->target) > LB_MAX_NAME)
            BAD_PARAMS("token.issue needs \"target\" and \"operation\" (strings; \"*\" for any)");
        if (r->admin) BAD_PARAMS("\"admin\" is for session tokens (operation \"register\") only");
        return 0;
    }
    const char *bus = lb_bus_system_service(t->ctx);
    if (!r->source) BAD_PARAMS("a session token (operation \"register\") needs \"source\": the service it lets register");
    if (r->target && strcmp(r->target, bus)) BAD_PARAMS("a session token's target is the bus ('%s'): leave it out", bus);
    r->target = bus;
    if (is_listed_admin(&t->set, r->source) && !r->admin)
        BAD_PARAMS("'%s' is in admins: a session token for it carries the admin's powers; say \"admin\": true "
                   "(lexbus token issue --admin) to issue one", r->source);
    return 0;
}

static json_t *issue_claims(const struct issue_req *r, json_t *p, const char *jti, json_int_t now)
{
    json_t *claims = json_pack("{s:s,s:s,s:i,s:s,s:s,s:I,s:I,s:b,s:b,s:b}", "jti", jti, "type", "broker",
                               "version", 1, "target", r->target, "operation", r->op, "iat", now, "exp", now + r->ttl,
                               "stateful", json_is_true(json_object_get(p, "stateful")),
                               "rateLimitExempt", json_is_true(json_object_get(p, "rateLimitExempt")),
                               "authBypass", json_is_true(json_object_get(p, "authBypass")));
    if (!claims) return NULL;
    if (r->source) {
        json_object_set_new(claims, "source", json_string(r->source));
        json_object_set_new(claims, "sub", json_string(r->source));
    }
    if (r->admin) json_object_set_new(claims, "admin", json_true());
    json_t *data = json_object_get(p, "data");
    if (data) json_object_set(claims, "data", data);
    return claims;
}

/* The compact JWS of claims, signed with the first key (caller frees). */
static char *sign(struct tokens *t, json_t *claims)
{
    char *cj = json_dumps(claims, JSON_COMPACT);
    jwt_t *j = NULL;
    char *tok = NULL;
    const struct key *k = &t->set.keys[0];
    if (cj && jwt_new(&j) == 0 && jwt_add_grants_json(j, cj) == 0 && jwt_add_header(j, "kid", k->kid) == 0 &&
        jwt_set_alg(j, JWT_ALG_HS256, k->secret, (int)k->len) == 0)
        tok = jwt_encode_str(j);
    free(cj);
    jwt_free(j);
    return tok;
}

static int m_issue(void *ud, struct lb_conn *caller, json_t *p, json_t **result, struct lb_err *err)
{
    struct tokens *t = ud;
    NEED_ADMIN();
    struct issue_req r;
    if (issue_params(t, p, &r, err) < 0) return -1;
    unsigned char rnd[16];
    char jti[33];
    RAND_bytes(rnd, sizeof rnd);
    for (int i = 0; i < 16; i++) snprintf(jti + 2 * i, 3, "%02x", rnd[i]);
    json_int_t now = (json_int_t)(lb_now_ms() / 1000);
    json_t *claims = issue_claims(&r, p, jti, now);
    char *tok = claims ? sign(t, claims) : NULL;
    json_decref(claims);
    if (!tok) { lb_refuse(err, LB_E_INTERNAL_ERROR, "could not sign the token"); return -1; }
    t->issued++;
    *result = json_pack("{s:s,s:s,s:I}", "token", tok, "jti", jti, "exp", now + r.ttl);
    free(tok);
    return 0;
}

static int m_verify(void *ud, struct lb_conn *caller, json_t *p, json_t **result, struct lb_err *err)
{
    (void)caller;
    struct tokens *t = ud;
    const char *tok = json_string_value(json_object_get(p, "token"));
    char why[200];
    json_t *claims = tok ? verify(t, tok, strlen(tok), NULL, why, sizeof why) : NULL;
    if (!claims) { lb_refuse(err, LB_E_UNAUTHENTICATED, "%s", tok ? why : "token.verify needs \"token\""); return -1; }
    *result = json_pack("{s:b,s:o}", "valid", 1, "claims", claims);
    return 0;
}

static const char *need_jti(json_t *p, struct lb_err *err)
{
    const char *jti = json_string_value(json_object_get(p, "jti"));
    if (!jti || !*jti || strlen(jti) > MAX_JTI) {
        lb_refuse(err, LB_E_INVALID_MESSAGE, "\"jti\" (the token id) is required");
        return NULL;
    }
    return jti;
}

static int m_revoke(void *ud, struct lb_conn *caller, json_t *p, json_t **result, struct lb_err *err)
{
    struct tokens *t = ud;
    NEED_ADMIN();
    const char *jti = need_jti(p, err);
    if (!jti) return -1;
    char k[16 + MAX_JTI];
    jti_key(k, sizeof k, "revoked", jti);
    if (lb_state_set(t->ctx, k, "", 0, revocation_ttl_ms(t)) != 0) {
        lb_refuse(err, LB_E_INTERNAL_ERROR, "token %.64s is NOT revoked: %s", jti,
                 errno == ENOSPC ? "the state is full ([bus] state_max)" : strerror(errno));
        return -1;
    }
    jti_key(k, sizeof k, "state", jti);
    lb_state_del(t->ctx, k);
    event_active(t->close_ev, EV_TIMEOUT, 0);
    /* Durable before acknowledged: a crash right after the answer must not
     * bring the token back.  This blocks the loop for one fsync, which a
     * rare administrative action can afford. */
    if (lb_state_sync(t->ctx) < 0) {
        lb_refuse(err, LB_E_INTERNAL_ERROR, "token %.64s is revoked in memory only: cannot write [bus] state_file (%.60s), so a "
                 "restart would undo it (see the log)", jti, strerror(errno));
        return -1;
    }
    *result = json_pack("{s:b,s:s}", "revoked", 1, "jti", jti);
    return 0;
}

static int m_state_get(void *ud, struct lb_conn *caller, json_t *p, json_t **result, struct lb_err *err)
{
    struct tokens *t = ud;
    NEED_ADMIN();
    const char *jti = need_jti(p, err);
    if (!jti) return -1;
    char k[16 + MAX_JTI];
    size_t len = 0;
    jti_key(k, sizeof k, "state", jti);
    const char *text = lb_state_get(t->ctx, k, &len);
    json_t *s = text ? json_loadb(text, len, JSON_DECODE_ANY, NULL) : NULL;
    *result = json_pack("{s:s,s:o}", "jti", jti, "state", s ? s : json_null());
    return 0;
}

static int m_state_set(void *ud, struct lb_conn *caller, json_t *p, json_t **result, struct lb_err *err)
{
    struct tokens *t = ud;
    NEED_ADMIN();
    const char *jti = need_jti(p, err);
    if (!jti) return -1;
    json_t *s = json_object_get(p, "state");
    if (!s) { lb_refuse(err, LB_E_INVALID_MESSAGE, "\"state\" is required"); return -1; }
    char k[16 + MAX_JTI], *text = json_dumps(s, JSON_COMPACT | JSON_ENCODE_ANY);
    jti_key(k, sizeof k, "state", jti);
    int rc = text ? lb_state_set(t->ctx, k, text, strlen(text), 0) : (errno = ENOMEM, -1);
    free(text);
    if (rc) {
        lb_refuse(err, errno == ENOSPC ? LB_E_INVALID_MESSAGE : LB_E_INTERNAL_ERROR, errno == ENOSPC ? "token state is full ([bus] state_max): delete token states or raise "
                 "state_max" : "cannot store the state: %s", strerror(errno));
        return -1;
    }
    *result = json_pack("{s:s,s:O}", "jti", jti, "state", s);
    return 0;
}

static int m_state_delete(void *ud, struct lb_conn *caller, json_t *p, json_t **result, struct lb_err *err)
{
    struct tokens *t = ud;
    NEED_ADMIN();
    const char *jti = need_jti(p, err);
    if (!jti) return -1;
    char k[16 + MAX_JTI];
    jti_key(k, sizeof k, "state", jti);
    int had = lb_state_del(t->ctx, k) == 0;
    *result = json_pack("{s:s,s:b}", "jti", jti, "deleted", had);
    return 0;
}

static json_t *stats(void *ud)
{
    struct tokens *t = ud;
    size_t n = 0;
    for (struct session *s = t->sessions; s; s = s->next) n++;
    return json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "issued", (json_int_t)t->issued,
                     "verified", (json_int_t)t->verified, "refused", (json_int_t)t->refused,
                     "revoked", (json_int_t)count_revoked(t), "sessions", (json_int_t)n,
                     "sessions_ended", (json_int_t)t->sessions_ended, "reloads", (json_int_t)t->reloads);
}

/* ---- life cycle --------------------------------------------------------- */

static int tokens_load(struct lb_plugin_ctx *ctx)
{
    struct tokens *t = calloc(1, sizeof *t);
    if (!t) { lb_plugin_fail(ctx, "out of memory"); return -1; }
    t->ctx = ctx;
    lb_plugin_set_data(ctx, t);
    if (read_settings(ctx, &t->set) < 0) return -1;   /* the host calls unload */
    const char *legacy = t->set.legacy_state;
    if (check_durability(t) < 0 || migrate_legacy(t, lb_conf_path(ctx, legacy ? legacy : LEGACY_STATE), legacy) < 0)
        return -1;
    if (lb_check_only(ctx)) {
        /* No hooks under -t, but production mode is checked too, and it
         * needs to know that this plugin authenticates. */
        lb_declare_authenticator(ctx);
        return 0;
    }
    t->close_ev = event_new(lb_event_base(ctx), -1, 0, close_ended, t);
    if (!t->close_ev) { lb_plugin_fail(ctx, "out of memory"); return -1; }
    struct lb_hooks h = { .size = sizeof h, .authenticate = on_authenticate, .message = on_message, .closed = on_closed };
    lb_hooks_register(ctx, &h, t);
    lb_stats_register(ctx, stats, t);
    if (lb_system_method_register(ctx, "token.issue", 0, m_issue, t) || lb_system_method_register(ctx, "token.verify", 0, m_verify, t) ||
        lb_system_method_register(ctx, "token.revoke", 0, m_revoke, t) ||
        lb_system_method_register(ctx, "token.state.get", 0, m_state_get, t) ||
        lb_system_method_register(ctx, "token.state.set", 0, m_state_set, t) ||
        lb_system_method_register(ctx, "token.state.delete", 0, m_state_delete, t))
        return -1;
    lb_log(ctx, LB_LOG_INFO, "%zu signing key(s), %zu admin(s), %zu revocation(s) in the state%s", t->set.n_keys,
           t->set.n_admins, count_revoked(t), t->durable ? "" : " (in memory only)");
    return 0;
}

/* Marks the sessions the new settings would not let in (their key was
 * removed or changed, their token outlives max_ttl, their uid left
 * peercred_uids) for close_ended.  Returns how many. */
static size_t end_refused_sessions(struct tokens *t, const struct settings *old)
{
    long long max_ttl_s = (long long)(t->set.max_ttl_ms / 1000);
    size_t n = 0;
    for (struct session *s = t->sessions; s; s = s->next) {
        if (s->end != END_NONE) continue;
        if (s->kind == SESSION_TOKEN)
            s->end = !key_kept(old, &t->set, s->kid) ? END_KEY : s->lifetime_s > max_ttl_s ? END_TTL : END_NONE;
        else if (!uid_listed(&t->set, s->uid))
            s->end = END_UID;
        n += s->end != END_NONE;
    }
    if (n) event_active(t->close_ev, EV_TIMEOUT, 0);
    return n;
}

static bool same_str(const char *a, const char *b)
{
    return a ? b && !strcmp(a, b) : !b;
}

/* SIGHUP, step 1: read and check the whole section, apply nothing. */
static int tokens_reload(struct lb_plugin_ctx *ctx)
{
    struct tokens *t = lb_plugin_data(ctx);
    struct settings now;
    if (read_settings(ctx, &now) < 0 || !t) {
        settings_free(&now);
        return t ? -1 : 0;
    }
    if (!same_str(now.legacy_state, t->set.legacy_state)) {
        lb_plugin_fail(ctx, "state_file (deprecated: the old state imported at start-up) changes only on restart; "
                       "nothing of this reload was applied (restore it, or restart lexbusd)");
        settings_free(&now);
        return -1;
    }
    if (t->has_staged) settings_free(&t->staged);
    t->staged = now;
    t->has_staged = true;
    return 0;
}

/* Step 2: all of the section applies, to new and open sessions, or none
 * of it does. */
static void tokens_reload_done(struct lb_plugin_ctx *ctx, bool commit)
{
    struct tokens *t = lb_plugin_data(ctx);
    if (!t || !t->has_staged) return;
    t->has_staged = false;
    if (!commit) {
        settings_free(&t->staged);
        return;
    }
    struct settings old = t->set;
    t->set = t->staged;
    size_t ended = end_refused_sessions(t, &old);
    for (struct session *s = t->sessions; s; s = s->next)
        if (lb_conn_service(s->conn))
            lb_conn_set_admin(s->conn, session_admin(&t->set, lb_conn_service(s->conn), s->kind == SESSION_TOKEN, s->admin));
    settings_free(&old);
    t->reloads++;
    lb_log(ctx, LB_LOG_INFO, "reloaded: %zu signing key(s), %zu admin(s), %zu peercred uid(s), max_ttl %llu s; "
           "%zu open session(s) no longer accepted are being closed", t->set.n_keys, t->set.n_admins,
           t->set.n_uids, (unsigned long long)(t->set.max_ttl_ms / 1000), ended);
}

static void tokens_unload(struct lb_plugin_ctx *ctx)
{
    struct tokens *t = lb_plugin_data(ctx);
    if (!t) return;
    while (t->sessions) session_free(t->sessions);   /* none: connections close before plugins unload */
    if (t->close_ev) event_free(t->close_ev);
    settings_free(&t->set);
    if (t->has_staged) settings_free(&t->staged);
    free(t);
    lb_plugin_set_data(ctx, NULL);
}

__attribute__((visibility("default")))
const struct lb_plugin lexbus_plugin = {
    .abi = LB_PLUGIN_ABI,
    .size = sizeof(struct lb_plugin),
    .name = "tokens",
    .version = PACKAGE_VERSION,
    .load = tokens_load,
    .unload = tokens_unload,
    .reload = tokens_reload,
    .reload_done = tokens_reload_done,
};
