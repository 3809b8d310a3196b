/* The MessagePack codec: every kind both ways, the refusals and their
 * messages, lying lengths, nesting, the output limit; the envelope built
 * while decoding, against envelope_parse on the JSON written. */
#include "config.h"
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "tap.h"
#include "codec_msgpack.h"
#include "envelope.h"

static struct jw out;
static char err[256];

/* MessagePack given as hex ("81 a1 61 01") -> JSON text in `out`. */
static char bin[1 << 16];
static size_t unhex(const char *hex);
static enum mp_status to_json_hex(const char *hex, size_t limit)
{
    size_t n = unhex(hex);
    out.len = 0;
    return mp_to_json(bin, n, &out, limit, err, sizeof err);
}

static size_t unhex(const char *hex)
{
    size_t n = 0;
    for (const char *p = hex; *p;) {
        if (*p == ' ') { p++; continue; }
        unsigned v;
        sscanf(p, "%2x", &v);
        bin[n++] = (char)v;
        p += 2;
    }
    return n;
}

/* MessagePack (hex) decoded with its index, appended after a prefix; the
 * index must be envelope_parse's on the JSON written, field by field.
 * Returns the status both give, or -1 (decoding failed, or they differ). */
static struct envelope idx;
static int indexed_hex(const char *hex)
{
    size_t n = unhex(hex);
    if (out.cap < 2 && !(out.buf = realloc(out.buf, out.cap = 64))) return -1;
    memcpy(out.buf, "xx", 2);
    out.len = 2;
    enum env_status ist;
    const char *iwhy = NULL, *swhy = NULL;
    if (mp_to_json_indexed(bin, n, &out, SIZE_MAX, err, sizeof err, &idx, &ist, &iwhy) != MP_OK) return -1;
    struct envelope scan;
    enum env_status sst = envelope_parse(&scan, out.buf + 2, out.len - 2, &swhy);
    int same = ist == sst && (sst == ENV_OK || strcmp(iwhy, swhy) == 0) && idx.frame == scan.frame &&
               idx.len == scan.len && idx.type == scan.type && idx.present == scan.present;
    for (int f = 0; f < F__COUNT; f++) {
        const struct env_val *a = &idx.f[f], *b = &scan.f[f];
        same &= a->kind == b->kind && (a->kind == J_NONE || (a->p == b->p && a->n == b->n && a->escaped == b->escaped));
    }
    if (!same) printf("#   %.*s: index %d (%s), scanner %d (%s)\n", (int)out.len - 2, out.buf + 2, ist,
                      iwhy ? iwhy : "-", sst, swhy ? swhy : "-");
    return same ? (int)sst : -1;
}

static int json_is(const char *want)
{
    if (out.len == strlen(want) && memcmp(out.buf, want, out.len) == 0) return 1;
    printf("#   got  %.*s\n#   want %s\n", (int)out.len, out.buf, want);
    return 0;
}

static int err_has(const char *s)
{
    if (strstr(err, s)) return 1;
    printf("#   error: %s\n", err);
    return 0;
}

/* JSON -> MessagePack, compared with the bytes as hex. */
static int from_json_is(const char *json, const char *hex)
{
    out.len = 0;
    if (mp_from_json(json, strlen(json), &out, SIZE_MAX, err, sizeof err) != MP_OK) {
        printf("#   %s: %s\n", json, err);
        return 0;
    }
    char got[4096] = "", want[4096] = "";
    size_t g = 0, w = 0;
    for (size_t i = 0; i < out.len && g + 3 < sizeof got; i++) g += (size_t)sprintf(got + g, "%02x", (unsigned char)out.buf[i]);
    for (const char *p = hex; *p && w + 1 < sizeof want; p++) if (*p != ' ') want[w++] = *p;
    if (strcmp(got, want) == 0) return 1;
    printf("#   %s\n#   got  %s\n#   want %s\n", json, got, hex);
    return 0;
}

/* JSON -> MessagePack -> JSON gives `want`. */
static int round_trip(const char *json, const char *want)
{
    struct jw mp = { 0 };
    if (mp_from_json(json, strlen(json), &mp, SIZE_MAX, err, sizeof err) != MP_OK) return 0;
    out.len = 0;
    enum mp_status st = mp_to_json(mp.buf, mp.len, &out, SIZE_MAX, err, sizeof err);
    free(mp.buf);
    return st == MP_OK && json_is(want);
}

int main(void)
{
    /* Decoding: every kind. */
    CHECK(to_json_hex("80", 100) == MP_OK && json_is("{}"), "empty fixmap");
    CHECK(to_json_hex("82 a4 74797065 a4 43414c4c a2 6964 a2 6331", 100) == MP_OK &&
          json_is("{\"type\":\"CALL\",\"id\":\"c1\"}"), "fixmap of fixstr");
    CHECK(to_json_hex("84 a1 61 c0 a1 62 c3 a1 63 c2 a1 64 93 01 7f e0", 100) == MP_OK &&
          json_is("{\"a\":null,\"b\":true,\"c\":false,\"d\":[1,127,-32]}"), "nil, booleans, fixints");
    CHECK(to_json_hex("81 a1 61 96 cc ff cd ffff ce ffffffff cf ffffffffffffffff d0 80 d3 8000000000000000", 200) == MP_OK &&
          json_is("{\"a\":[255,65535,4294967295,18446744073709551615,-128,-9223372036854775808]}"),
          "every integer width, uint64 max and int64 min exactly");
    CHECK(to_json_hex("81 a1 66 93 cb 3ff8000000000000 cb 4000000000000000 ca 3dcccccd", 200) == MP_OK &&
          json_is("{\"f\":[1.5,2.0,0.10000000149011612]}"), "float64 shortest, integral floats stay floats, float32 exact");
    CHECK(to_json_hex("81 a1 66 92 cb 8000000000000000 cb 7fefffffffffffff", 200) == MP_OK &&
          json_is("{\"f\":[-0.0,1.7976931348623157e+308]}"), "-0.0 and the largest double");
    CHECK(to_json_hex("81 a1 73 a6 22 5c 0a 01 c3 a9", 100) == MP_OK && json_is("{\"s\":\"\\\"\\\\\\n\\u0001\xc3\xa9\"}"),
          "str escaped for JSON, UTF-8 kept");
    CHECK(to_json_hex("81 d9 03 6b6579 da 0002 6869", 100) == MP_OK && json_is("{\"key\":\"hi\"}"), "str8 and str16");
    CHECK(to_json_hex("de 0001 a1 61 dc 0002 90 80", 100) == MP_OK && json_is("{\"a\":[[],{}]}"), "map16, array16, empty containers");
    CHECK(to_json_hex("df 00000001 a1 61 dd 00000001 01", 100) == MP_OK && json_is("{\"a\":[1]}"), "map32, array32");

    /* No JSON equivalent: refused by name, the rest still decoded. */
    CHECK(to_json_hex("82 a4 74797065 a4 43414c4c a1 62 c4 02 0102", 100) == MP_NO_JSON && err_has("bin (2 bytes)") &&
          json_is("{\"type\":\"CALL\",\"b\":null}"), "bin refused, null in its place");
    CHECK(to_json_hex("81 a1 65 d4 05 00", 100) == MP_NO_JSON && err_has("ext type 5"), "fixext refused");
    CHECK(to_json_hex("81 a1 65 c7 00 07", 100) == MP_NO_JSON && err_has("ext type 7 (0 bytes)"), "empty ext8 refused");
    CHECK(to_json_hex("81 a1 74 d6 ff 5f5e1000", 100) == MP_NO_JSON && err_has("timestamp"), "timestamp 32 refused");
    CHECK(to_json_hex("81 a1 74 d7 ff 0000000000000001", 100) == MP_NO_JSON && err_has("timestamp"), "timestamp 64 refused");
    CHECK(to_json_hex("81 a1 74 c7 0c ff 000000000000000000000001", 100) == MP_NO_JSON && err_has("timestamp"), "timestamp 96 refused");
    CHECK(to_json_hex("82 01 02 a1 62 03", 100) == MP_NO_JSON && err_has("map key is an integer") &&
          json_is("{\"\":2,\"b\":3}"), "integer key refused");
    CHECK(to_json_hex("81 c0 01", 100) == MP_NO_JSON && err_has("map key is nil"), "nil key refused");
    CHECK(to_json_hex("81 91 01 01", 100) == MP_NO_JSON && err_has("map key is an array"), "array key refused");
    CHECK(to_json_hex("81 a1 6e cb 7ff8000000000000", 100) == MP_NO_JSON && err_has("NaN"), "NaN refused");
    CHECK(to_json_hex("81 a1 6e cb 7ff0000000000000", 100) == MP_NO_JSON && err_has("Infinity"), "Infinity refused");
    CHECK(to_json_hex("81 a1 6e ca ff800000", 100) == MP_NO_JSON && err_has("-Infinity"), "float32 -Infinity refused");
    CHECK(to_json_hex("81 a1 73 a2 c3 28", 100) == MP_NO_JSON && err_has("UTF-8"), "invalid UTF-8 refused");
    CHECK(to_json_hex("81 a1 73 a3 ed a0 80", 100) == MP_NO_JSON && err_has("UTF-8"), "UTF-8 surrogate refused");

    /* Malformed. */
    CHECK(to_json_hex("82 a1 61 01", 100) == MP_MALFORMED && err_has("truncated"), "truncated map");
    CHECK(to_json_hex("81 a1 61 db ffffffff 61 62 63", 100) == MP_MALFORMED && err_has("truncated"),
          "str32 claiming 4 GiB in a short frame: truncated, nothing allocated");
    CHECK(to_json_hex("81 a1 61 dd ffffffff 01", 100) == MP_MALFORMED && err_has("claims 4294967295 elements"),
          "array32 claiming 4G elements refused at once");
    CHECK(to_json_hex("df ffffffff a1 61", 100) == MP_MALFORMED && err_has("claims"), "map32 claiming 4G pairs refused");
    CHECK(to_json_hex("81 a1 61 c6 ffffffff", 100) == MP_MALFORMED && err_has("truncated"), "bin32 lying length");
    CHECK(to_json_hex("81 a1 61 c9 fffffffe 01", 100) == MP_MALFORMED && err_has("truncated"), "ext32 lying length");
    CHECK(to_json_hex("81 a1 61 c9 ffffffff 01", 100) == MP_MALFORMED && err_has("ext32 claims"),
          "ext32 of 4 GiB (its length + type byte wraps in msgpack-c) refused");
    CHECK(to_json_hex("80 00", 100) == MP_MALFORMED && err_has("1 bytes after"), "trailing byte");
    CHECK(to_json_hex("81 a1 61 c1", 100) == MP_MALFORMED && err_has("0xc1"), "0xc1 is not a type");
    CHECK(to_json_hex("", 100) == MP_MALFORMED && err_has("truncated"), "empty input");
    {
        char hex[1024] = "";
        for (int i = 0; i < ENV_MAX_DEPTH; i++) strcat(hex, "91 ");
        strcat(hex, "01");
        CHECK(to_json_hex(hex, 1000) == MP_OK, "%d nested arrays accepted", ENV_MAX_DEPTH);
        strcpy(hex, "91 ");
        for (int i = 0; i < ENV_MAX_DEPTH; i++) strcat(hex, "91 ");
        strcat(hex, "01");
        CHECK(to_json_hex(hex, 1000) == MP_MALFORMED && err_has("nesting deeper than 64"), "%d refused", ENV_MAX_DEPTH + 1);
    }
    CHECK(to_json_hex("81 a1 61 a5 6162636465", 10) == MP_TOO_LARGE && err_has("more than 10 bytes"), "output limit");
    CHECK(to_json_hex("81 a1 61 a5 6162636465", 13) == MP_OK, "output limit is exact");

    /* Encoding from JSON. */
    CHECK(from_json_is("{}", "80"), "empty object");
    CHECK(from_json_is(" { \"a\" : [ 1 , -1 , 128, -129, 65536 ] } ", "81 a1 61 95 01 ff cc 80 d1 ff7f ce 00010000"),
          "white space, minimal integers");
    CHECK(from_json_is("[18446744073709551615,-9223372036854775808]", "92 cf ffffffffffffffff d3 8000000000000000"),
          "uint64 max and int64 min as integers");
    CHECK(from_json_is("[18446744073709551616]", "91 cb 43f0000000000000"), "beyond uint64: the nearest double");
    CHECK(from_json_is("[1.5,1e2,-0]", "93 cb 3ff8000000000000 cb 4059000000000000 cb 8000000000000000"),
          "fractions, exponents and -0 as float64");
    CHECK(from_json_is("[1e400,-1e400,1e-400]", "93 cb 7ff0000000000000 cb fff0000000000000 cb 0000000000000000"),
          "beyond the double range: Infinity (as JSON.parse), underflow: 0");
    CHECK(from_json_is("[true,false,null]", "93 c3 c2 c0"), "literals");
    CHECK(from_json_is("\"a\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\ud83d\\ude00\"",
                       "af 61 22 5c 2f 08 0c 0a 0d 09 c3 a9 f0 9f 98 80"), "escapes decoded, surrogate pair to UTF-8");
    CHECK(from_json_is("\"\\ud800x\"", "a4 ef bf bd 78"), "lone surrogate becomes U+FFFD");
    {
        char json[600] = "[";
        for (int i = 0; i < 16; i++) strcat(json, i ? ",0" : "0");
        strcat(json, "]");
        CHECK(from_json_is(json, "dc 0010 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00"), "16 elements: array16");
        char big[300];
        memset(big, 'x', 256);
        big[256] = 0;
        char s[400];
        snprintf(s, sizeof s, "\"%s\\n\"", big);
        out.len = 0;
        CHECK(mp_from_json(s, strlen(s), &out, SIZE_MAX, err, sizeof err) == MP_OK && out.len == 3 + 257 &&
              (unsigned char)out.buf[0] == 0xda && out.buf[1] == 1 && out.buf[2] == 1 && out.buf[259] == '\n',
              "escaped string across the str8/str16 boundary gets a str16 header");
    }
    CHECK(round_trip("{\"type\":\"EVENT\",\"payload\":{\"x\":[1,2.5,\"\\u0007\",null,{}],\"e\":\"\\u00e9\"}}",
                     "{\"type\":\"EVENT\",\"payload\":{\"x\":[1,2.5,\"\\u0007\",null,{}],\"e\":\"\xc3\xa9\"}}"), "round trip");
    CHECK(round_trip("[0.1,1e21,5e-324,123456789012345678901234567890]",
                     "[0.1,1e+21,4.94065645841247e-324,1.2345678901234568e+29]"), "doubles read back as the same doubles");
    out.len = 0;
    CHECK(mp_from_json("{\"a\":1,}", 8, &out, SIZE_MAX, err, sizeof err) == MP_MALFORMED && out.len == 0,
          "invalid JSON refused, output restored");
    CHECK(mp_from_json("[\"abcdef\"]", 10, &out, 4, err, sizeof err) == MP_TOO_LARGE, "encoder output limit");

    /* The envelope built while decoding. */
    CHECK(indexed_hex("83 a4 74797065 a4 454d4954 a5 6576656e74 a3 612e62 a7 7061796c6f6164 82 a1 78 92 01 cb 4004000000000000 a1 79 c0")
          == ENV_OK && idx.type == LB_MSG_EMIT && idx.present == (1u << F_TYPE | 1u << F_EVENT | 1u << F_PAYLOAD) &&
          idx.f[F_PAYLOAD].kind == J_OBJECT && idx.f[F_PAYLOAD].n == 22 && memcmp(idx.f[F_PAYLOAD].p, "{\"x\":[1,2.5],\"y\":null}", 22) == 0 &&
          env_str_eq(&idx.f[F_EVENT], "a.b", 3), "index of an EMIT: kinds, places, lengths");
    CHECK(indexed_hex("85 a4 74797065 a4 43414c4c a2 6964 01 a2 746f c3 a6 706172616d73 c0 a7 636f6e74657874 90") == ENV_OK &&
          idx.f[F_ID].kind == J_NUMBER && idx.f[F_TO].kind == J_TRUE && idx.f[F_PARAMS].kind == J_NULL &&
          idx.f[F_CONTEXT].kind == J_ARRAY && idx.f[F_CONTEXT].n == 2, "index: number, true, null, array");
    CHECK(indexed_hex("83 a4 74797065 a4 454d4954 a5 6576656e74 a3 61225c a7 7061796c6f6164 a2 0a61") == ENV_OK &&
          idx.f[F_EVENT].escaped && idx.f[F_EVENT].n == 5 && idx.f[F_PAYLOAD].escaped && idx.f[F_PAYLOAD].n == 3,
          "index: escaped strings keep their escaped text and say so");
    CHECK(indexed_hex("83 a4 74797065 a4 43414c4c a2 6964 a1 31 a2 6964 a1 32") == ENV_DUPLICATE &&
          idx.type == LB_MSG_CALL && env_str_eq(&idx.f[F_ID], "1", 1), "index: a known member twice, the first kept");
    CHECK(indexed_hex("83 a2 6964 a1 31 a2 6964 a1 32 a4 74797065 a4 454d4954") == ENV_DUPLICATE &&
          idx.type == LB_MSG_UNKNOWN && !(idx.present & 1u << F_TYPE), "index: nothing noted past the duplicate");
    CHECK(indexed_hex("83 a4 74797065 a4 454d4954 a1 61 01 a1 61 02") == ENV_OK, "index: an unknown member twice is no duplicate");
    CHECK(indexed_hex("82 a5 6672226f6d 01 a4 74797065 a4 454d4954") == ENV_ESCAPED_NAME, "index: escaped member name");
    CHECK(indexed_hex("82 a5 74797065 5c a4 454d4954 a4 74797065 a4 454d4954") == ENV_ESCAPED_NAME &&
          idx.type == LB_MSG_EMIT, "index: an escaped \"type\\\" is another member");
    CHECK(indexed_hex("82 a1 61 a4 74797065 a5 6576656e74 01") == ENV_BAD_TYPE, "index: missing type");
    CHECK(indexed_hex("81 a4 74797065 a3 464f4f") == ENV_BAD_TYPE, "index: unknown type");
    CHECK(indexed_hex("81 a4 74797065 01") == ENV_BAD_TYPE, "index: non-string type");
    CHECK(indexed_hex("80") == ENV_BAD_TYPE, "index: empty map");
    CHECK(indexed_hex("92 01 02") == ENV_NOT_OBJECT && indexed_hex("a1 61") == ENV_NOT_OBJECT, "index: not a map");
    CHECK(indexed_hex("82 a4 74797065 a4 454d4954 a7 7061796c6f6164 91 91 91 91 91 91 91 91 81 a1 61 80") == ENV_OK &&
          idx.f[F_PAYLOAD].kind == J_ARRAY, "index: nested values");
    {
        /* A root map16 of 20 members, a long str value: offsets past a growth of the output. */
        char hex[8192] = "de 0014 a4 74797065 a4 454d4954 a7 7061796c6f6164 da 0190";
        for (int i = 0; i < 400; i++) strcat(hex, " 78");
        for (int i = 0; i < 18; i++) { char m[32]; snprintf(m, sizeof m, " a2 6b%02x %02x", 0x30 + i, i); strcat(hex, m); }
        CHECK(indexed_hex(hex) == ENV_OK && idx.f[F_PAYLOAD].n == 400, "index: map16, long str");
    }
    out.len = 0;
    CHECK(mp_to_json_indexed("\x81\xa1\x61\xc4\x01\x00", 6, &out, SIZE_MAX, err, sizeof err, &idx,
                             &(enum env_status){ ENV_OK }, &(const char *){ NULL }) == MP_NO_JSON,
          "index: the decoder's own refusals unchanged");
    free(out.buf);
    return tap_done();
}
