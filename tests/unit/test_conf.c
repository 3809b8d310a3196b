/* bus.conf parsing: syntax, errors with file and line, used-key tracking. */
#include "config.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "tap.h"
#include "conf.h"
#include "util.h"

static char path[64];

/* Writes len bytes (NULs included) as the file and loads it. */
static int load_bytes(const char *data, size_t len, struct conf **c, char *err, size_t n)
{
    FILE *f = fopen(path, "wb");
    fwrite(data, 1, len, f);
    fclose(f);
    return conf_load(path, c, err, n);
}

static int load(const char *text, struct conf **c, char *err, size_t n)
{
    return load_bytes(text, strlen(text), c, err, n);
}

/* Files that are not text, or configure nothing, are refused with the
 * file and line of the first offending byte. */
static void not_text(void)
{
    static char nuls[1024];
#define B(lit) lit, sizeof(lit) - 1     /* a literal and its length, NULs included */
    const struct { const char *data; size_t len; const char *want; } bad[] = {
        { nuls, sizeof nuls, ":1: NUL byte" },
        { B("[bus]\nnode = a\0b\n"), ":2: NUL byte" },
        { B("[bus]\nnode = a\n\0"), ":3: NUL byte" },
        { B("[bus]\nnode = \xff\xfe\n"), ":2: invalid UTF-8 (byte 0xff at column 8)" },
        { B("[bus]\nnode = \xc3\n"), ":2: invalid UTF-8" },              /* a cut sequence */
        { B("[bus]\nnode = \xed\xa0\x80\n"), ":2: invalid UTF-8" },     /* a surrogate */
        { B("[bus]\n\nnode = a\x01" "b\n"), ":3: control character 0x01 at column 9" },
        { B("[bus]\nnode = a\x7f\n"), ":2: control character 0x7f" },
        { B("\x7f" "ELF\x02\x01\x01"), ":1: control character 0x7f" },
        { B(""), ": no [bus] or [plugin NAME] section (the file is empty or holds only comments)" },
        { B("# only\n\n; comments\n   \n"), ": no [bus] or [plugin NAME] section" },
    };
#undef B
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        struct conf *c = NULL;
        char err[512] = "";
        int rc = load_bytes(bad[i].data, bad[i].len, &c, err, sizeof err);
        CHECK(rc == -1 && strstr(err, path) && strstr(err, bad[i].want), "rejects %s (%s)", bad[i].want, err);
        if (rc == 0) conf_free(c);
    }
    /* Text is more than ASCII: UTF-8, tabs, CRLF line ends, a BOM. */
    struct conf *c = NULL;
    char err[512] = "";
    const char good[] = "\xef\xbb\xbf[bus]\r\nnode\t= n\xc3\xa9-\xf0\x9f\x9a\x8c\r\n";
    int rc = load_bytes(good, sizeof good - 1, &c, err, sizeof err);
    CHECK(rc == 0 && strcmp(conf_get(conf_bus(c), "node", NULL)->value, "n\xc3\xa9-\xf0\x9f\x9a\x8c") == 0,
          "UTF-8 values, tabs, CRLF and a BOM are accepted (%s)", rc ? err : "");
    if (rc == 0) conf_free(c);
}

int main(void)
{
    snprintf(path, sizeof path, "/tmp/lexbus-test-conf-%d.conf", (int)getpid());
    struct conf *c = NULL;
    char err[512];
    int rc = load("# comment\n[bus]\nnode = n1   # trailing comment\nname = \"quoted # not a comment\"\n"
                  "ciphers = HIGH:!aNULL;x\n\n[plugin unix]\npath = /tmp/x.sock\nlisten = a\nlisten = b\n", &c, err, sizeof err);
    CHECK(rc == 0, "parses a good file (%s)", rc ? err : "");
    struct conf_section *bus = conf_bus(c);
    bool dup;
    CHECK(bus && strcmp(conf_get(bus, "node", &dup)->value, "n1") == 0 && !dup, "value with trailing comment");
    CHECK(strcmp(conf_get(bus, "name", NULL)->value, "quoted # not a comment") == 0, "quotes keep '#'");
    CHECK(strcmp(conf_get(bus, "ciphers", NULL)->value, "HIGH:!aNULL;x") == 0, "';' inside a value is kept");
    CHECK(conf_unused(bus) == NULL, "every [bus] key was read");
    struct conf_section *u = &c->s[1];
    CHECK(strcmp(u->name, "unix") == 0 && u->line == 7, "plugin section and its line");
    conf_get(u, "listen", &dup);
    CHECK(dup, "repeated key detected");
    CHECK(conf_unused(u) && strcmp(conf_unused(u)->key, "path") == 0 && conf_unused(u)->line == 8,
          "unused key reported with its line");
    char *r = conf_resolve(c, "certs/a.pem");
    CHECK(strcmp(r, "/tmp/certs/a.pem") == 0, "relative path resolved against the file's directory (%s)", r);
    free(r);
    conf_free(c);

    const struct { const char *text, *want; } bad[] = {
        { "[bus]\n[wat]\n", ":2: unknown section [wat]" },
        { "[bus]\n[bus]\n", ":2: section [bus] appears twice" },
        { "[plugin a]\n[plugin a]\n", ":2: [plugin a] appears twice (first at line 1)" },
        { "x = 1\n", ":1: key 'x' outside any section" },
        { "[bus]\njust words\n", ":2: expected 'key = value'" },
        { "[bus\n", ":1: malformed section header" },
        { "[bus]\nb@d = 1\n", ":2: bad key" },
        { "[plugin ../evil]\n", ":1: bad plugin name" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        c = NULL;
        rc = load(bad[i].text, &c, err, sizeof err);
        CHECK(rc == -1 && strstr(err, path) && strstr(err, bad[i].want), "rejects %s (%s)", bad[i].want, err);
    }
    char *big = malloc(6000);
    memset(big, 'a', 5999);
    big[5999] = 0;
    memcpy(big, "[bus]\nk = ", 10);
    rc = load(big, &c, err, sizeof err);
    CHECK(rc == -1 && strstr(err, "line too long"), "over-long line rejected");
    free(big);
    not_text();
    rc = conf_load("/nonexistent/bus.conf", &c, err, sizeof err);
    CHECK(rc == -1 && strstr(err, "cannot open"), "missing file");

    uint64_t v;
    bool bv;
    CHECK(parse_size("1M", &v) == 0 && v == 1048576 && parse_size("64K", &v) == 0 && v == 65536 &&
          parse_size("10Q", &v) == -1 && parse_size("-1", &v) == -1 && parse_size("", &v) == -1, "sizes");
    CHECK(parse_duration_ms("30s", &v) == 0 && v == 30000 && parse_duration_ms("500ms", &v) == 0 && v == 500 &&
          parse_duration_ms("5m", &v) == 0 && v == 300000 && parse_duration_ms("2", &v) == 0 && v == 2000 &&
          parse_duration_ms("soon", &v) == -1, "durations");
    CHECK(parse_bool("yes", &bv) == 0 && bv && parse_bool("off", &bv) == 0 && !bv && parse_bool("maybe", &bv) == -1,
          "booleans");
    unlink(path);
    return tap_done();
}
