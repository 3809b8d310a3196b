/*
 * Names, patterns and JSON strings: pure functions shared by the daemon and
 * liblexbus (both link core/libenvelope.la), so both ends of the wire
 * agree on what a valid name is, what a pattern matches and how a string
 * is escaped.
 */
#include "config.h"
#include <string.h>
#include "names.h"

static bool name_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '.' || c == '-' || c == '/' || c == '@';
}

bool valid_service_name(const char *p, size_t n)
{
    if (n == 0 || n > 128) return false;
    for (size_t i = 0; i < n; i++) if (!name_char((unsigned char)p[i])) return false;
    return true;
}

bool valid_method_name(const char *p, size_t n)
{
    if (n == 0 || n > 128) return false;
    for (size_t i = 0; i < n; i++)
        if (!name_char((unsigned char)p[i]) && p[i] != ':') return false;
    return true;
}

/* Segments separated by ':'; every segment non-empty; `wild` allows the
 * pattern segments '*' anywhere and '>' last. */
static bool valid_segments(const char *p, size_t n, bool wild)
{
    if (n == 0 || n > 255) return false;
    size_t seg = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i == n || p[i] == ':') {
            size_t len = i - seg;
            if (len == 0) return false;
            if (wild && len == 1 && (p[seg] == '*' || p[seg] == '>')) {
                if (p[seg] == '>' && i != n) return false;
            } else {
                for (size_t k = seg; k < i; k++)
                    if (!name_char((unsigned char)p[k])) return false;
            }
            seg = i + 1;
        }
    }
    return true;
}

bool valid_event_name(const char *p, size_t n) { return valid_segments(p, n, false); }
bool valid_event_pattern(const char *p, size_t n) { return valid_segments(p, n, true); }

/* One pattern against one event name, segment by segment. */
bool pattern_match(const char *pat, size_t pn, const char *ev, size_t en)
{
    size_t i = 0, j = 0;
    while (i < pn) {
        size_t pe = i;
        while (pe < pn && pat[pe] != ':') pe++;
        if (j > en || (j == en && !(pe - i == 1 && pat[i] == '>'))) return false;
        size_t ee = j;
        while (ee < en && ev[ee] != ':') ee++;
        if (pe - i == 1 && pat[i] == '>') return pe == pn && j < en;   /* one or more segments left */
        if (!(pe - i == 1 && pat[i] == '*') && (pe - i != ee - j || memcmp(pat + i, ev + j, pe - i) != 0))
            return false;
        i = pe + 1;
        j = ee + 1;
    }
    return j > en || (j == en + 1);
}

size_t json_escape(char *out, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s, *end = p + n;
    char *o = out;
    *o++ = '"';
    while (p < end) {
        /* Runs of plain characters are copied at once. */
        const unsigned char *q = p;
        while (q < end && *q >= 0x20 && *q != '"' && *q != '\\') q++;
        memcpy(o, p, (size_t)(q - p));
        o += q - p;
        if (q == end) break;
        unsigned char c = *q;
        if (c == '"' || c == '\\') { *o++ = '\\'; *o++ = (char)c; }
        else if (c == '\n') { *o++ = '\\'; *o++ = 'n'; }
        else if (c == '\r') { *o++ = '\\'; *o++ = 'r'; }
        else if (c == '\t') { *o++ = '\\'; *o++ = 't'; }
        else { memcpy(o, "\\u00", 4); o[4] = hex[c >> 4]; o[5] = hex[c & 15]; o += 6; }
        p = q + 1;   /* UTF-8 passes through: the bus validates it */
    }
    *o++ = '"';
    return (size_t)(o - out);
}
