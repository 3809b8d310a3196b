/*
 * Reloading bus.conf (SIGHUP, `lexbus reload`): all or nothing.
 *
 *   1. reopen log and plugin files (logrotate renamed them; this happens
 *      even when the new file turns out to be bad);
 *   2. read the file and the [bus] settings: any error stops here;
 *   3. every plugin validates its section and stages it: any error drops
 *      every staged section;
 *   4. only then: plugins apply, [bus] settings apply (those that need a
 *      restart are kept and named), the old configuration is freed.
 */
#include "config.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "reload.h"
#include "bus.h"
#include "conf.h"
#include "conn.h"
#include "log.h"
#include "plugin_host.h"
#include "settings.h"
#include "state.h"

static void reopen_log(void)
{
    if (!g_bus.set.log_file) return;
    if (!freopen(g_bus.set.log_file, "a", stderr))
        log_error("bus", "cannot open log_file %s: %s", g_bus.set.log_file, strerror(errno));
    setvbuf(stderr, NULL, _IOLBF, 0);
}

void reload_reopen_log(void) { reopen_log(); }

static void apply_settings(const struct bus_settings *ns, struct reload_result *r)
{
    settings_apply(&g_bus.set, ns, r->kept, sizeof r->kept);
    state_set_max(g_bus.set.state_max);
    log_set_level((enum lb_log_level)g_bus.set.log_level);
    conn_sweep_start();
    if (r->kept[0]) log_warn("bus", "changed but kept until restart: %s", r->kept);
}

int bus_reload(struct reload_result *r)
{
    struct conf *nc;
    struct bus_settings ns;
    r->err[0] = r->kept[0] = 0;
    reopen_log();
    plugins_reopen_all();
    if (conf_load(g_bus.conf_path, &nc, r->err, sizeof r->err)) goto failed;
    if (settings_parse(nc, &ns, r->err, sizeof r->err)) {
        settings_free(&ns);
        conf_free(nc);
        goto failed;
    }
    char plugin_kept[256] = "";
    if (plugins_reload_prepare(nc, r->err, sizeof r->err, plugin_kept, sizeof plugin_kept)) {
        settings_free(&ns);
        conf_free(nc);
        goto failed;
    }
    plugins_reload_finish(true);
    apply_settings(&ns, r);
    settings_free(&ns);
    if (plugin_kept[0]) {
        size_t n = strlen(r->kept);
        snprintf(r->kept + n, sizeof r->kept - n, "%s%s", n ? ", " : "", plugin_kept);
        log_warn("plugins", "changed but kept until restart: %s", plugin_kept);
    }
    /* Plugins hold interned copies of what they read: the old file can go. */
    conf_free(g_bus.conf);
    g_bus.conf = nc;
    log_info("bus", "configuration reloaded from %s", g_bus.conf_path);
    return 0;
failed:
    log_error("bus", "reload failed, old configuration kept: %s", r->err);
    return -1;
}
