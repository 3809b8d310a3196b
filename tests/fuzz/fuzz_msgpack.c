/* libFuzzer target: the MessagePack edge (core/codec_msgpack.c).
 *
 * The input is taken as MessagePack: whatever the decoder accepts must be
 * JSON the envelope scanner accepts, and round-trip to the same value
 * (MessagePack -> JSON -> MessagePack -> JSON gives the same JSON text;
 * the text is canonical, so the same text is the same value).  Whatever
 * it refuses must come with a message, and must not have written past its
 * limit.
 *
 * The envelope mp_to_json_indexed builds while decoding must be exactly
 * what envelope_parse gives on the JSON written (status, message, type,
 * every field's place, length, kind and escapes), with the output and the
 * verdict of mp_to_json, also when appended after other bytes.
 *
 * The input is also taken as JSON: whatever the scanner accepts must
 * encode (the encoder is total on valid JSON), and what it encodes to
 * must decode to JSON that is stable under a second round. */
#include "config.h"
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "codec_msgpack.h"
#include "envelope.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define LIMIT (1u << 20)

static void check(int ok)
{
    if (!ok) abort();
}

static int same(const struct jw *a, const struct jw *b)
{
    return a->len == b->len && (a->len == 0 || memcmp(a->buf, b->buf, a->len) == 0);
}

/* JSON text -> MessagePack -> JSON text: must succeed and give `want`. */
static void json_round(const struct jw *json, const struct jw *want)
{
    struct jw mp = { 0 }, back = { 0 };
    char err[256];
    check(mp_from_json(json->buf, json->len, &mp, SIZE_MAX, err, sizeof err) == MP_OK);
    check(mp_to_json(mp.buf, mp.len, &back, SIZE_MAX, err, sizeof err) == MP_OK);
    check(same(&back, want));
    free(mp.buf);
    free(back.buf);
}

static void same_env(const struct envelope *a, const struct envelope *b)
{
    check(a->frame == b->frame && a->len == b->len && a->type == b->type && a->present == b->present);
    for (int f = 0; f < F__COUNT; f++) {
        const struct env_val *x = &a->f[f], *y = &b->f[f];
        check(x->kind == y->kind);
        if (x->kind != J_NONE) check(x->p == y->p && x->n == y->n && x->escaped == y->escaped);
    }
}

/* The index built while decoding, against the scanner on its output. */
static void indexed(const char *in, size_t size, enum mp_status want, const struct jw *json, const char *want_err)
{
    /* Appended after other bytes: offsets count from the frame's start. */
    struct jw out = { malloc(3), 3, 3 };
    check(out.buf != NULL);
    memcpy(out.buf, "[1]", 3);
    char err[256];
    struct envelope idx, scan;
    enum env_status ist = ENV_BAD_JSON;
    const char *iwhy = NULL, *swhy = NULL;
    enum mp_status st = mp_to_json_indexed(in, size, &out, LIMIT, err, sizeof err, &idx, &ist, &iwhy);
    check(st == want && strcmp(err, want_err) == 0);
    if (st == MP_OK) {
        check(out.len == json->len + 3 && memcmp(out.buf + 3, json->buf, json->len) == 0);
        enum env_status sst = envelope_parse(&scan, out.buf + 3, out.len - 3, &swhy);
        check(ist == sst && (sst == ENV_OK || strcmp(iwhy, swhy) == 0));
        same_env(&idx, &scan);
    }
    free(out.buf);
}

static void as_msgpack(const char *in, size_t size)
{
    struct jw json = { 0 };
    char err[256];
    const char *why;
    enum mp_status st = mp_to_json(in, size, &json, LIMIT, err, sizeof err);
    check(json.len <= LIMIT);
    indexed(in, size, st, &json, err);
    if (st != MP_OK) {
        check(err[0] != 0);
    } else {
        check(env_validate_value(json.buf, json.len, &why) == 0);
        json_round(&json, &json);
    }
    free(json.buf);
}

static void as_json(const char *in, size_t size)
{
    const char *why;
    if (env_validate_value(in, size, &why) != 0) return;
    struct jw mp = { 0 }, json = { 0 };
    char err[256];
    check(mp_from_json(in, size, &mp, SIZE_MAX, err, sizeof err) == MP_OK);
    check(mp.len <= size * 9 / 4 + 5);
    /* NO_JSON: a number beyond the double range came back as Infinity. */
    enum mp_status st = mp_to_json(mp.buf, mp.len, &json, SIZE_MAX, err, sizeof err);
    check(st == MP_OK || st == MP_NO_JSON);
    if (st == MP_OK) {
        check(env_validate_value(json.buf, json.len, &why) == 0);
        json_round(&json, &json);
    }
    free(mp.buf);
    free(json.buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    as_msgpack((const char *)data, size);
    as_json((const char *)data, size);
    return 0;
}
