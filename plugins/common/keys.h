/*
 * Shared by the plugins that sign or verify broker tokens (tokens, redis):
 * the key file (`KID:SECRET` lines, or one bare secret) and HS256 in
 * base64url, one copy of each.
 *
 * Ownership: keys_load fills a struct keys the caller owns and frees with
 * keys_free (secrets are wiped).  Nothing here keeps global state.
 */
#ifndef LB_COMMON_KEYS_H
#define LB_COMMON_KEYS_H
#include <stddef.h>
#include <stdbool.h>

struct lb_plugin_ctx;

#define KEYS_MAX 16
#define KEYS_MIN_SECRET 16
#define KEYS_LINE 1024             /* a line holds at most KEYS_LINE - 1 bytes */

struct key { char kid[64]; unsigned char *secret; size_t len; int line; };
struct keys { struct key k[KEYS_MAX]; size_t n; };

/* Reads `path` (already resolved) into ks (zeroed first).  Returns 0, or
 * -1 after lb_plugin_fail with file:line and the cause (ks must still be
 * freed).  Warns when group or others may read the file. */
int keys_load(struct lb_plugin_ctx *ctx, const char *path, struct keys *ks);
void keys_free(struct keys *ks);
/* The key called `kid`; kid NULL: the only key, or NULL when there are
 * several. */
const struct key *keys_by_kid(const struct keys *ks, const char *kid);

/* base64url without padding: writes 4*ceil(n/3) characters at most and
 * a NUL to out; returns the length written. */
size_t b64url_encode(const unsigned char *in, size_t n, char *out);
/* The HS256 signature of data[0..n) under k, base64url (43 characters
 * and a NUL).  Returns 0, or -1 if OpenSSL failed. */
int hs256_b64(const struct key *k, const char *data, size_t n, char out[44]);
/* Whether the compact JWS `tok` ("header.payload.signature") carries the
 * HS256 signature of its first two parts under k; compared in constant
 * time, and only the canonical encoding verifies. */
bool hs256_verify(const struct key *k, const char *tok);
#endif
