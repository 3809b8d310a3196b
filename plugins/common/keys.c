#include "config.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <lexbus/plugin.h>
#include "keys.h"

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
static int parse_key(struct lb_plugin_ctx *ctx, struct keys *ks, char *line, const char *path, int lineno)
{
    if (ks->n == KEYS_MAX) {
        lb_plugin_fail(ctx, "%s:%d: more than %d keys (remove retired keys)", path, lineno, KEYS_MAX);
        return -1;
    }
    struct key *k = &ks->k[ks->n];
    char *colon = strchr(line, ':');
    const char *secret = line;
    if (colon && colon - line < (long)sizeof k->kid) {
        *colon = 0;
        snprintf(k->kid, sizeof k->kid, "%.63s", line);
        secret = colon + 1;
    } else {
        snprintf(k->kid, sizeof k->kid, "k%zu", ks->n + 1);
    }
    for (size_t i = 0; i < ks->n; i++)
        if (!strcmp(ks->k[i].kid, k->kid)) {
            /* Verification would always pick the first: the second is dead, or a mistake. */
            lb_plugin_fail(ctx, "%s:%d: key id '%s' is already used on line %d", path, lineno, k->kid,
                           ks->k[i].line);
            return -1;
        }
    k->len = strlen(secret);
    if (k->len < KEYS_MIN_SECRET) {
        lb_plugin_fail(ctx, "%s:%d: key '%s' is shorter than %d bytes", path, lineno, k->kid, KEYS_MIN_SECRET);
        return -1;
    }
    k->secret = (unsigned char *)strdup(secret);
    if (!k->secret) { lb_plugin_fail(ctx, "out of memory"); return -1; }
    k->line = lineno;
    ks->n++;
    return 0;
}

int keys_load(struct lb_plugin_ctx *ctx, const char *path, struct keys *ks)
{
    memset(ks, 0, sizeof *ks);
    FILE *f = fopen(path, "r");
    if (!f) { lb_plugin_fail(ctx, "cannot read key_file %s: %s", path, strerror(errno)); return -1; }
    warn_if_readable(ctx, f, path);
    char line[KEYS_LINE];
    int rc = 0, lineno = 0, got;
    while (!rc && (got = read_line(f, line, sizeof line)) != 0) {
        lineno++;
        if (got < 0) {
            lb_plugin_fail(ctx, "%s:%d: line is longer than %d bytes", path, lineno, KEYS_LINE - 1);
            rc = -1;
            break;
        }
        line[strcspn(line, "\r")] = 0;
        if (!line[0] || line[0] == '#') continue;
        rc = parse_key(ctx, ks, line, path, lineno);
    }
    fclose(f);
    OPENSSL_cleanse(line, sizeof line);
    if (rc) return -1;
    if (!ks->n) { lb_plugin_fail(ctx, "key_file %s holds no key", path); return -1; }
    return 0;
}

void keys_free(struct keys *ks)
{
    for (size_t i = 0; i < ks->n; i++) {
        OPENSSL_cleanse(ks->k[i].secret, ks->k[i].len);
        free(ks->k[i].secret);
    }
    memset(ks, 0, sizeof *ks);
}

const struct key *keys_by_kid(const struct keys *ks, const char *kid)
{
    for (size_t i = 0; i < ks->n; i++)
        if (kid ? !strcmp(ks->k[i].kid, kid) : ks->n == 1) return &ks->k[i];
    return NULL;
}

size_t b64url_encode(const unsigned char *in, size_t n, char *out)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0, i = 0;
    for (; i + 3 <= n; i += 3) {
        unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8 | in[i + 2];
        out[o++] = tab[v >> 18];
        out[o++] = tab[(v >> 12) & 63];
        out[o++] = tab[(v >> 6) & 63];
        out[o++] = tab[v & 63];
    }
    if (n - i == 1) {
        unsigned v = (unsigned)in[i] << 16;
        out[o++] = tab[v >> 18];
        out[o++] = tab[(v >> 12) & 63];
    } else if (n - i == 2) {
        unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8;
        out[o++] = tab[v >> 18];
        out[o++] = tab[(v >> 12) & 63];
        out[o++] = tab[(v >> 6) & 63];
    }
    out[o] = 0;
    return o;
}

int hs256_b64(const struct key *k, const char *data, size_t n, char out[44])
{
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    if (!HMAC(EVP_sha256(), k->secret, (int)k->len, (const unsigned char *)data, n, mac, &maclen) || maclen != 32)
        return -1;
    b64url_encode(mac, 32, out);         /* 43 characters */
    OPENSSL_cleanse(mac, sizeof mac);
    return 0;
}

bool hs256_verify(const struct key *k, const char *tok)
{
    const char *d1 = strchr(tok, '.'), *d2 = d1 ? strchr(d1 + 1, '.') : NULL;
    if (!d2 || strchr(d2 + 1, '.') || strlen(d2 + 1) != 43) return false;   /* 43 = 32 bytes, unpadded */
    char want[44];
    if (hs256_b64(k, tok, (size_t)(d2 - tok), want) != 0) return false;
    bool ok = CRYPTO_memcmp(want, d2 + 1, 43) == 0;
    OPENSSL_cleanse(want, sizeof want);
    return ok;
}
