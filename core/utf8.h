/* UTF-8 validation shared by the envelope scanner and the bus.conf reader:
 * one definition of "valid UTF-8" for everything lexbusd reads. */
#ifndef LB_UTF8_H
#define LB_UTF8_H
#include <stddef.h>

/* Validates one UTF-8 sequence starting at p (a non-ASCII lead byte, p <
 * end); returns its length, or 0 if invalid (overlongs, surrogates, code
 * points above U+10FFFF and truncated sequences are refused). */
static inline size_t utf8_seq(const unsigned char *p, const unsigned char *end)
{
    unsigned c = p[0];
    size_t n;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) n = 2;
    else if (c == 0xE0) { n = 3; lo = 0xA0; }
    else if (c >= 0xE1 && c <= 0xEC) n = 3;
    else if (c == 0xED) { n = 3; hi = 0x9F; }
    else if (c >= 0xEE && c <= 0xEF) n = 3;
    else if (c == 0xF0) { n = 4; lo = 0x90; }
    else if (c >= 0xF1 && c <= 0xF3) n = 4;
    else if (c == 0xF4) { n = 4; hi = 0x8F; }
    else return 0;
    if ((size_t)(end - p) < n) return 0;
    if (p[1] < lo || p[1] > hi) return 0;
    for (size_t i = 2; i < n; i++)
        if (p[i] < 0x80 || p[i] > 0xBF) return 0;
    return n;
}
#endif
