/* Reconnect backoff: exponential, capped, jittered into [d/2, d]. */
#include <lexbus/client.h>
#include "tap.h"

int main(void)
{
    CHECK(lexbus_backoff_ms(100, 30000, 0, 1000) == 100 && lexbus_backoff_ms(100, 30000, 0, 0) == 50, "first delay in [50,100]");
    CHECK(lexbus_backoff_ms(100, 30000, 3, 1000) == 800, "doubles per attempt");
    CHECK(lexbus_backoff_ms(100, 30000, 20, 1000) == 30000 && lexbus_backoff_ms(100, 30000, 60, 0) == 15000, "capped");
    int in_range = 1;
    for (unsigned r = 0; r < 5000; r += 7) {
        unsigned d = lexbus_backoff_ms(200, 1000, 2, r);
        if (d < 400 || d > 800) in_range = 0;
    }
    CHECK(in_range, "jitter stays within [d/2, d]");
    CHECK(lexbus_backoff_ms(100, 30000, 2, 0) != lexbus_backoff_ms(100, 30000, 2, 999), "jitter varies");
    return tap_done();
}
