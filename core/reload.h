/* SIGHUP and `lexbus.reload`: re-read bus.conf and apply it, all or
 * nothing — [bus] and every plugin's section are validated first, and
 * only when all of them are good is any of it applied. */
#ifndef LB_RELOAD_H
#define LB_RELOAD_H
#include <stdbool.h>

struct reload_result {
    char err[1536];      /* why it failed (file:line, the plugin that refused) */
    char kept[512];      /* [bus] keys that changed but need a restart */
};
/* Returns 0, or -1 with r->err set (the old configuration keeps running). */
int bus_reload(struct reload_result *r);
/* (Re)opens [bus] log_file as stderr (start-up, and step 1 of a reload). */
void reload_reopen_log(void);
#endif
