/* The subscription trie: '*' = one segment, '>' = one or more trailing. */
#include "config.h"
#include <string.h>
#include "tap.h"
#include "pattern.h"
#include "util.h"

static int hits[8];
static void count(void *sub, void *ud) { (void)ud; hits[(long)sub]++; }
static void count_hit(void *sub, void *ud) { (void)sub; (void)ud; }

static size_t match(struct ptrie *t, const char *ev)
{
    memset(hits, 0, sizeof hits);
    return ptrie_match(t, ev, strlen(ev), count, NULL);
}

#define ADD(t, p, s) ptrie_add(t, p, strlen(p), (void *)(long)(s))
#define DEL(t, p, s) ptrie_remove(t, p, strlen(p), (void *)(long)(s))

int main(void)
{
    struct ptrie *t = ptrie_new();
    CHECK(ADD(t, "post:created", 1) == 0, "add exact");
    CHECK(ADD(t, "post:created", 1) == 1, "same pattern twice is a no-op");
    CHECK(ADD(t, "post:*", 2) == 0, "add star");
    CHECK(ADD(t, "post:>", 3) == 0, "add tail");
    CHECK(ADD(t, "*:*:c", 4) == 0, "add two stars");
    CHECK(ADD(t, ">", 5) == 0, "add catch-all");
    CHECK(ptrie_count(t) == 5, "count");

    CHECK(match(t, "post:created") == 4 && hits[1] && hits[2] && hits[3] && hits[5] && !hits[4], "post:created");
    CHECK(match(t, "post") == 1 && hits[5], "'post' matches only '>' (tail needs one more segment)");
    CHECK(match(t, "post:a:b") == 2 && hits[3] && hits[5] && !hits[2], "tail spans segments, star does not");
    CHECK(match(t, "x:y:c") == 2 && hits[4] && hits[5], "two stars");
    CHECK(match(t, "x:y:c:d") == 1 && hits[5], "stars are exact-length");
    CHECK(match(t, "postx:created") == 1 && hits[5], "segments compare whole");

    CHECK(DEL(t, "post:*", 2) == 0, "remove star");
    CHECK(DEL(t, "post:*", 2) == -1, "remove twice fails");
    CHECK(DEL(t, "nope:x", 1) == -1, "remove unknown fails");
    CHECK(DEL(t, "post:created", 9) == -1, "remove for another subscriber fails");
    CHECK(match(t, "post:created") == 3 && !hits[2], "star gone");
    CHECK(DEL(t, "post:created", 1) == 0 && DEL(t, "post:>", 3) == 0 && DEL(t, "*:*:c", 4) == 0 &&
          DEL(t, ">", 5) == 0, "remove all");
    CHECK(ptrie_count(t) == 0 && match(t, "post:created") == 0, "empty after removal");

    /* Many subscribers on one pattern, and churn: nothing leaks (ASan). */
    for (long i = 0; i < 1000; i++) ADD(t, "a:b:c", i % 8);
    CHECK(ptrie_count(t) == 8, "one entry per subscriber");
    for (int round = 0; round < 100; round++) {
        char p[32];
        snprintf(p, sizeof p, "churn:%d:*", round);
        ADD(t, p, 1);
        DEL(t, p, 1);
    }
    CHECK(ptrie_count(t) == 8, "churn leaves the count unchanged");
    CHECK(valid_event_pattern("a:*:>", 5) && !valid_event_pattern("a:>:b", 5) && !valid_event_pattern("a::b", 4) &&
          !valid_event_pattern("", 0) && valid_event_name("a.b-c/d@e", 9) && !valid_event_name("a:*", 3),
          "pattern and name validation");
    ptrie_free(t);

    /* pattern_match (one pattern, no trie: liblexbus and lb_pattern_match)
     * agrees with the trie on every pair below. */
    static const char *const pats[] = { "post:*", "post:>", ">", "*", "*:*", "a:*:c", "a:b", "a", "a:>", "*:b:>" };
    static const char *const evs[] = { "post", "post:created", "post:a:b", "a", "a:b", "a:b:c", "a:x:c", "b:b:c", "x:b" };
    int agree = 0, total = 0;
    for (size_t i = 0; i < sizeof pats / sizeof *pats; i++) {
        struct ptrie *one = ptrie_new();
        ptrie_add(one, pats[i], strlen(pats[i]), (void *)1);
        for (size_t k = 0; k < sizeof evs / sizeof *evs; k++) {
            size_t calls = ptrie_match(one, evs[k], strlen(evs[k]), count_hit, NULL);
            bool m = pattern_match(pats[i], strlen(pats[i]), evs[k], strlen(evs[k]));
            agree += (calls > 0) == m;
            total++;
        }
        ptrie_free(one);
    }
    CHECK(agree == total, "pattern_match agrees with the trie");
    CHECK(pattern_match("post:*", 6, "post:created", 12) && !pattern_match("post:*", 6, "post:a:b", 8) &&
          pattern_match("post:>", 6, "post:a:b", 8) && !pattern_match("post:>", 6, "post", 4) &&
          pattern_match(">", 1, "x", 1) && !pattern_match("a:b", 3, "a", 1) && !pattern_match("a", 1, "a:b", 3),
          "pattern_match by hand");
    return tap_done();
}
