/* The envelope scanner: strict validation, member spans, the SSE2 path. */
#include "config.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "tap.h"
#include "envelope.h"

static enum env_status parse(struct envelope *e, const char *s)
{
    const char *err;
    return envelope_parse(e, s, strlen(s), &err);
}

static int span_is(const struct env_val *v, const char *want)
{
    return v->n == strlen(want) && memcmp(v->p, want, v->n) == 0;
}

int main(void)
{
    struct envelope e;
    CHECK(parse(&e, "{\"type\":\"CALL\",\"id\":\"c1\",\"to\":\"svc\",\"method\":\"m\",\"params\":{\"a\":[1,2,{\"b\":null}]},"
                    "\"context\":{\"depth\":2,\"deadline\":1.7e12},\"x\":true}") == ENV_OK && e.type == LB_MSG_CALL, "CALL parses");
    CHECK(span_is(&e.f[F_ID], "c1") && e.f[F_ID].kind == J_STRING, "string span excludes quotes");
    CHECK(span_is(&e.f[F_PARAMS], "{\"a\":[1,2,{\"b\":null}]}") && e.f[F_PARAMS].kind == J_OBJECT, "object span is raw");
    struct env_val v;
    int64_t n;
    CHECK(env_object_get(&e.f[F_CONTEXT], "deadline", &v) == 0 && env_number_i64(&v, &n) == 0 && n == 1700000000000LL,
          "number inside context");
    CHECK(env_object_get(&e.f[F_CONTEXT], "nope", &v) == -1, "absent key");
    CHECK(e.f[F_FROM].kind == J_NONE, "absent member is J_NONE");
    CHECK(parse(&e, " \n{ \"type\" : \"EMIT\" , \"event\" : \"a:b\" } \t") == ENV_OK && e.type == LB_MSG_EMIT, "white space");
    CHECK(parse(&e, "{\"type\":\"EMIT\",\"event\":\"a\\u00e9\\n\"}") == ENV_OK && e.f[F_EVENT].escaped, "escapes flagged");

    const char *arr = "{\"type\":\"REGISTER\",\"serviceName\":\"s\",\"methods\":[\"a\", \"b\",\"c\"]}";
    CHECK(parse(&e, arr) == ENV_OK, "REGISTER parses");
    const char *cur = NULL;
    int k = 0;
    while (env_array_next(&e.f[F_METHODS], &cur, &v)) k++;
    CHECK(k == 3, "array iteration");

    const char *bad[] = {
        "", "   ", "{", "}", "{\"type\"}", "{\"type\":}", "{\"type\":\"EMIT\",}", "{\"type\":\"EMIT\" \"x\":1}",
        "{'type':'EMIT'}", "{\"type\":\"EMIT\",\"n\":01}", "{\"type\":\"EMIT\",\"n\":1.}", "{\"type\":\"EMIT\",\"n\":-}",
        "{\"type\":\"EMIT\",\"n\":1e}", "{\"type\":\"EMIT\",\"b\":tru}", "{\"type\":\"EMIT\",\"s\":\"\\x\"}",
        "{\"type\":\"EMIT\",\"s\":\"\\u12G4\"}", "{\"type\":\"EMIT\",\"s\":\"tab\there\"}", "{\"type\":\"EMIT\"}x",
        "{\"type\":\"EMIT\",\"s\":\"\xc0\xaf\"}",          /* overlong */
        "{\"type\":\"EMIT\",\"s\":\"\xed\xa0\x80\"}",      /* surrogate */
        "{\"type\":\"EMIT\",\"s\":\"\xf4\x90\x80\x80\"}",  /* > U+10FFFF */
        "{\"type\":\"EMIT\",\"s\":\"\xe2\x82\"}",          /* truncated */
        "{\"type\":\"EMIT\",\"s\":\"abc",
        /* \u escapes of surrogates that do not pair: not Unicode text,
         * just as the same code points in raw UTF-8 above. */
        "{\"type\":\"EMIT\",\"s\":\"\\ud800\"}", "{\"type\":\"EMIT\",\"s\":\"\\uDBFF\"}",
        "{\"type\":\"EMIT\",\"s\":\"\\udc00\"}", "{\"type\":\"EMIT\",\"s\":\"a\\ud800b\"}",
        "{\"type\":\"EMIT\",\"s\":\"\\ud800\\u0041\"}", "{\"type\":\"EMIT\",\"s\":\"\\ud800\\ud800\"}",
        "{\"type\":\"EMIT\",\"s\":\"\\ud800\\n\"}", "{\"type\":\"EMIT\",\"s\":\"\\ude00\\ud83d\"}",
        "{\"type\":\"EMIT\",\"\\ud800\":1}",                 /* in a member name too */
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        CHECK(parse(&e, bad[i]) == ENV_BAD_JSON, "rejects bad JSON #%zu", i);
    CHECK(parse(&e, "[1]") == ENV_NOT_OBJECT && parse(&e, "\"x\"") == ENV_NOT_OBJECT, "not an object");
    CHECK(parse(&e, "{\"id\":\"x\"}") == ENV_BAD_TYPE && parse(&e, "{\"type\":\"NOPE\"}") == ENV_BAD_TYPE &&
          parse(&e, "{\"type\":1}") == ENV_BAD_TYPE, "missing / unknown / non-string type");
    CHECK(parse(&e, "{\"type\":\"CALL\",\"from\":\"a\",\"from\":\"b\"}") == ENV_DUPLICATE && e.type == LB_MSG_CALL,
          "duplicate known member, type still known");
    CHECK(parse(&e, "{\"type\":\"EMIT\",\"event\":\"a\",\"z\":1,\"z\":2}") == ENV_OK, "duplicate unknown member passes");
    CHECK(parse(&e, "{\"type\":\"EMIT\",\"s\":\"h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80\"}") == ENV_OK, "valid UTF-8");
    CHECK(parse(&e, "{\"type\":\"EMIT\",\"s\":\"\\ud83d\\ude00 \\uD83D\\uDE00 \\uffff \\u0000 \\ue000\"}") == ENV_OK,
          "surrogate pairs, NUL and other \\u escapes pass");

    /* Nesting: exactly ENV_MAX_DEPTH levels below the top object is the limit. */
    char deep[512];
    int d = 0, i;
    d += sprintf(deep, "{\"type\":\"EMIT\",\"p\":");
    for (i = 0; i < ENV_MAX_DEPTH - 1; i++) deep[d++] = '[';
    for (i = 0; i < ENV_MAX_DEPTH - 1; i++) deep[d++] = ']';
    strcpy(deep + d, "}");
    CHECK(parse(&e, deep) == ENV_OK, "deep nesting within the limit");
    d = sprintf(deep, "{\"type\":\"EMIT\",\"p\":");
    for (i = 0; i < ENV_MAX_DEPTH + 1; i++) deep[d++] = '[';
    for (i = 0; i < ENV_MAX_DEPTH + 1; i++) deep[d++] = ']';
    strcpy(deep + d, "}");
    CHECK(parse(&e, deep) == ENV_BAD_JSON, "nesting over the limit rejected");

    /* The 16-byte fast path: a special byte at every offset of a long string. */
    int fast_ok = 1;
    for (int off = 0; off < 48; off++) {
        const char *specials[] = { "\\\"", "\\\\", "\xc3\xa9", "\x01", "\"" };
        for (int s = 0; s < 5; s++) {
            char buf[256], str[128];
            memset(str, 'a', 60);
            str[60] = 0;
            char mid[160];
            snprintf(mid, sizeof mid, "%.*s%s%s", off, str, specials[s], str + off);
            snprintf(buf, sizeof buf, "{\"type\":\"EMIT\",\"event\":\"e\",\"payload\":\"%s\"}", mid);
            enum env_status st = parse(&e, buf);
            enum env_status want = s == 3 ? ENV_BAD_JSON : s == 4 ? ENV_BAD_JSON : ENV_OK;
            if (st != want) { fast_ok = 0; printf("# offset %d special %d: got %d\n", off, s, st); }
            if (st == ENV_OK && (s < 2) != (e.f[F_PAYLOAD].escaped != 0)) fast_ok = 0;
        }
    }
    CHECK(fast_ok, "special bytes found at every offset by the fast path");
    return tap_done();
}
