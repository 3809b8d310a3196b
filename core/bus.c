/* The one struct bus (bus.h). */
#include "config.h"
#include "bus.h"

struct bus g_bus;
