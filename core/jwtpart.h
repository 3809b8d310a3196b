/*
 * jwt_part_json: the JSON object in one part of a compact JWT (0 = the
 * JOSE header, 1 = the claims), base64url-decoded WITHOUT verification:
 * for deciding how to handle a token (which key checks it, which kind it
 * is), never for trusting what it says.
 *
 * Header-only because its two users share no library: the tokens plugin
 * (the header, before any key is used) and liblexbus (whether a token is
 * a session token).  Needs OpenSSL and jansson.  Returns a new reference,
 * or NULL when the part is missing, not canonical base64url or not a JSON
 * object.
 */
#ifndef LEXBUS_JWTPART_H
#define LEXBUS_JWTPART_H

#include <stdlib.h>
#include <string.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <lexbus/protocol.h>

static inline json_t *jwt_part_json(const char *tok, int part)
{
    for (int i = 0; i < part && tok; i++) {
        tok = strchr(tok, '.');
        if (tok) tok++;
    }
    const char *end = tok ? strchr(tok, '.') : NULL;   /* the header and the claims are followed by a '.' */
    size_t n = end ? (size_t)(end - tok) : 0;
    if (!n || n > LB_MAX_TOKEN) return NULL;
    char *b64 = malloc(n + 4);
    unsigned char *out = malloc(n + 4);
    json_t *j = NULL;
    size_t m = 0;
    int pad = 0;
    for (size_t i = 0; b64 && out && i < n; i++) {
        char c = tok[i];
        if (c == '-') c = '+';
        else if (c == '_') c = '/';
        else if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))) goto out;
        b64[m++] = c;
    }
    if (!b64 || !out) goto out;
    while (m % 4) { b64[m++] = '='; pad++; }
    int len = EVP_DecodeBlock(out, (const unsigned char *)b64, (int)m);   /* counts the padding as bytes */
    if (len >= pad) j = json_loadb((const char *)out, (size_t)(len - pad), 0, NULL);
out:
    free(b64);
    free(out);
    if (!json_is_object(j)) { json_decref(j); return NULL; }
    return j;
}

#endif
