/* Unit test of plugins/websocket/slots.c: handles find what they were
 * given and nothing else once freed; stale, forged and out-of-range
 * handles find nothing; handles stay below 2^52 (JavaScript numbers). */
#include "config.h"
#include <stdint.h>
#include <stdlib.h>
#include "tap.h"
#include "slots.h"

#define N 5000

int main(void)
{
    struct slots t;
    slots_init(&t);
    static int vals[N];
    static uint64_t h[N];
    int ok = 1;
    for (int i = 0; i < N; i++) {
        h[i] = slots_add(&t, &vals[i]);
        ok &= h[i] != SLOT_NONE && h[i] < (1ull << 52);
    }
    CHECK(ok && t.count == N, "%d handles, all below 2^52", N);
    ok = 1;
    for (int i = 0; i < N; i++) ok &= slots_get(&t, h[i]) == &vals[i];
    CHECK(ok, "each handle finds its pointer");
    for (int i = 0; i < N; i += 2) slots_del(&t, h[i]);
    ok = 1;
    for (int i = 0; i < N; i++) ok &= slots_get(&t, h[i]) == (i % 2 ? &vals[i] : NULL);
    CHECK(ok && t.count == N / 2, "freed handles find nothing, the others still work");
    slots_del(&t, h[0]);
    CHECK(t.count == N / 2, "freeing a stale handle changes nothing");
    uint64_t again = slots_add(&t, &vals[0]);
    CHECK((uint32_t)again == (uint32_t)h[N - 2] && again != h[N - 2] && slots_get(&t, h[N - 2]) == NULL &&
          slots_get(&t, again) == &vals[0], "a reused slot gets a new handle; the old one stays dead");
    CHECK(slots_get(&t, (uint64_t)1 << 52 | (uint32_t)h[1]) == NULL, "bits above 52 find nothing");
    CHECK(slots_get(&t, (uint64_t)t.cap + 7) == NULL, "an index past the table finds nothing");
    CHECK(slots_get(&t, h[1] + (1ull << 32)) == NULL, "another generation finds nothing");
    size_t seen = 0;
    for (uint32_t i = 0; i < t.cap; i++) seen += slots_at(&t, i) != NULL;
    CHECK(seen == t.count, "walking the table sees every live slot once");
    /* One slot reused many times: its handles never repeat within 2^20 uses. */
    struct slots u;
    slots_init(&u);
    uint64_t first = slots_add(&u, &vals[0]), last = first;
    ok = 1;
    for (int i = 0; i < 100000; i++) {
        slots_del(&u, last);
        last = slots_add(&u, &vals[0]);
        ok &= last != first && last < (1ull << 52);
    }
    CHECK(ok, "100000 reuses of one slot: fresh handles, below 2^52");
    slots_free(&u);
    slots_free(&t);
    return tap_done();
}
