/*
 * lexbusd: start-up, [bus] settings, signals, reload and drain.
 *
 *   lexbusd -c bus.conf        run in the foreground, log to stderr
 *   lexbusd -c bus.conf -d     daemonize, write pid_file
 *   lexbusd -c bus.conf -t     check the configuration and exit
 */
#include "config.h"
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/resource.h>
#ifdef HAVE_MALLOPT
#include <malloc.h>
#endif
#include <event2/event.h>
#include "bus.h"
#include "conf.h"
#include "conn.h"
#include "log.h"
#include "plugin_host.h"
#include "policy.h"
#include "router.h"
#include "state.h"
#include "system_service.h"
#include "util.h"

struct bus g_bus;
void listeners_disable_all(void);

static struct conf **g_retired;      /* earlier configs: plugins may hold their strings */
static size_t g_n_retired;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: lexbusd [-c bus.conf] [-d] [-t] [-p pidfile] [-v] [-h]\n"
            "  -c FILE   configuration (default %s/bus.conf)\n"
            "  -d        daemonize (write the pid file: -p, or pid_file in [bus])\n"
            "  -t        check the configuration (and load plugins) and exit\n"
            "  -p FILE   pid file when daemonized\n"
            "  -v        print the version and exit\n"
            "Signals: SIGTERM/SIGINT drain and exit 0; SIGHUP re-reads bus.conf.\n",
            LB_SYSCONFDIR);
}

/* ---- [bus] settings ------------------------------------------------ */

static void settings_free(struct bus_settings *s)
{
    free(s->node);
    free(s->plugin_dir);
    free(s->lua_dir);
    free(s->pid_file);
    free(s->state_file);
    free(s->system_service);
    free(s->log_file);
    memset(s, 0, sizeof *s);
}

static const char *default_plugin_dir(void)
{
    /* Running the binary from the build tree finds the plugins built next
     * to it; an installed binary uses the install location. */
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = 0;
        if (strcmp(exe, LB_BUILD_EXE) == 0) return LB_BUILD_PLUGINDIR;
    }
    return LB_PLUGINDIR;
}

static int bad(struct conf *c, struct conf_entry *e, const char *expect, char *err, size_t errlen)
{
    snprintf(err, errlen, "%s:%d: [bus] bad value '%s' for '%s' (expected %s)", c->path, e->line,
             e->value, e->key, expect);
    return -1;
}

#define GET(key) (e = conf_get(sec, key, &dup), (dup ? (snprintf(err, errlen, "%s:%d: [bus] key '%s' given more than once", c->path, e->line, key), 1) : 0))

static int settings_parse(struct conf *c, struct bus_settings *s, char *err, size_t errlen)
{
    struct conf_section *sec = conf_bus(c);
    struct conf_entry *e;
    bool dup;
    char host[256] = "lexbus";
    gethostname(host, sizeof host - 1);
    memset(s, 0, sizeof *s);
    s->log_level = LB_LOG_INFO;
    s->max_frame = LB_DEFAULT_MAX_FRAME;
    s->call_timeout_ms = 30000;
    s->max_depth = 100;
    s->heartbeat_ms = 30000;
    s->outbuf_high = 1024 * 1024;
    s->outbuf_max = 64ull * 1024 * 1024;
    s->slow_consumer_timeout_ms = 10000;
    s->max_connections = 0;
    s->state_max = 16ull * 1024 * 1024;

    if (GET("mode")) return -1;
    if (e) {
        if (!strcmp(e->value, "production")) s->production = true;
        else if (strcmp(e->value, "development")) return bad(c, e, "development or production", err, errlen);
    }
    if (GET("node")) return -1;
    if (e && !valid_service_name(e->value, strlen(e->value))) return bad(c, e, "a name of A-Z a-z 0-9 _ . - / @", err, errlen);
    s->node = xstrdup(e ? e->value : host);
    if (GET("plugin_dir")) return -1;
    s->plugin_dir = e ? conf_resolve(c, e->value) : xstrdup(getenv("LEXBUS_PLUGIN_DIR") ? getenv("LEXBUS_PLUGIN_DIR") : default_plugin_dir());
    if (GET("lua_dir")) return -1;
    s->lua_dir = e ? conf_resolve(c, e->value) : xstrdup(LB_LUADIR);
    if (GET("pid_file")) return -1;
    s->pid_file = e ? conf_resolve(c, e->value) : NULL;
    if (GET("state_file")) return -1;
    s->state_file = e ? conf_resolve(c, e->value) : NULL;
    if (GET("state_max")) return -1;
    if (e && (parse_size(e->value, &s->state_max) || s->state_max < 1024 || s->state_max > 1024ull * 1024 * 1024))
        return bad(c, e, "a size from 1K to 1G", err, errlen);
    if (GET("log_file")) return -1;
    s->log_file = e ? conf_resolve(c, e->value) : NULL;
    if (GET("log_level")) return -1;
    if (e && log_parse_level(e->value, &s->log_level)) return bad(c, e, "debug, info, warn or error", err, errlen);
    if (GET("system_service")) return -1;
    if (e && !valid_service_name(e->value, strlen(e->value))) return bad(c, e, "a service name", err, errlen);
    s->system_service = xstrdup(e ? e->value : LB_DEFAULT_SYSTEM_SERVICE);
    if (GET("max_frame")) return -1;
    if (e && (parse_size(e->value, &s->max_frame) || s->max_frame < 64 || s->max_frame > 256ull * 1024 * 1024))
        return bad(c, e, "a size from 64 to 256M", err, errlen);
    if (GET("call_timeout")) return -1;
    if (e && (parse_duration_ms(e->value, &s->call_timeout_ms) || !s->call_timeout_ms))
        return bad(c, e, "a duration such as 30s", err, errlen);
    if (GET("heartbeat")) return -1;
    if (e && (parse_duration_ms(e->value, &s->heartbeat_ms) || s->heartbeat_ms < 100))
        return bad(c, e, "a duration of at least 100ms", err, errlen);
    if (GET("max_depth")) return -1;
    if (e) {
        char *end;
        s->max_depth = strtoll(e->value, &end, 10);
        if (end == e->value || *end || s->max_depth < 1 || s->max_depth > 100000)
            return bad(c, e, "an integer from 1 to 100000", err, errlen);
    }
    if (GET("max_connections")) return -1;
    if (e) {
        char *end;
        s->max_connections = strtoll(e->value, &end, 10);
        if (end == e->value || *end || s->max_connections < 0) return bad(c, e, "0 (no limit) or a positive integer", err, errlen);
    }
    if (GET("outbuf_high")) return -1;
    if (e && (parse_size(e->value, &s->outbuf_high) || s->outbuf_high < 4096)) return bad(c, e, "a size of at least 4K", err, errlen);
    if (GET("outbuf_max")) return -1;
    if (e && (parse_size(e->value, &s->outbuf_max) || s->outbuf_max < s->outbuf_high))
        return bad(c, e, "a size of at least outbuf_high", err, errlen);
    if (GET("slow_consumer_timeout")) return -1;
    if (e && (parse_duration_ms(e->value, &s->slow_consumer_timeout_ms) || !s->slow_consumer_timeout_ms))
        return bad(c, e, "a duration such as 10s", err, errlen);
    struct conf_entry *u = conf_unused(sec);
    if (u) {
        snprintf(err, errlen, "%s:%d: [bus] unknown key '%s'", c->path, u->line, u->key);
        return -1;
    }
    return 0;
}

/* ---- reload -------------------------------------------------------- */

static void reopen_log(void)
{
    if (!g_bus.set.log_file) return;
    if (!freopen(g_bus.set.log_file, "a", stderr))
        log_error("bus", "cannot open log_file %s: %s", g_bus.set.log_file, strerror(errno));
    setvbuf(stderr, NULL, _IOLBF, 0);
}

/* logrotate renames the files, then sends SIGHUP: reopen them first, so
 * that a bus.conf which cannot be re-read does not leave the bus writing
 * into the rotated files. */
static void reopen_files(void)
{
    reopen_log();
    plugins_reopen_all();
}

int bus_reload(char *err, size_t errlen)
{
    struct conf *nc;
    struct bus_settings ns;
    reopen_files();
    if (conf_load(g_bus.conf_path, &nc, err, errlen)) return -1;
    if (settings_parse(nc, &ns, err, errlen)) { settings_free(&ns); conf_free(nc); return -1; }
    struct bus_settings *os = &g_bus.set;
    if (ns.production != os->production || strcmp(ns.node, os->node) || strcmp(ns.plugin_dir, os->plugin_dir) ||
        strcmp(ns.system_service, os->system_service))
        log_warn("bus", "mode, node, plugin_dir and system_service change only on restart; kept");
    if ((ns.state_file == NULL) != (os->state_file == NULL) ||
        (ns.state_file && strcmp(ns.state_file, os->state_file)))
        log_warn("bus", "state_file changes only on restart; kept");
    os->state_max = ns.state_max;
    state_set_max(os->state_max);
    os->log_level = ns.log_level;
    log_set_level(os->log_level);
    os->max_frame = ns.max_frame;
    os->call_timeout_ms = ns.call_timeout_ms;
    os->max_depth = ns.max_depth;
    os->heartbeat_ms = ns.heartbeat_ms;
    os->outbuf_high = ns.outbuf_high;
    os->outbuf_max = ns.outbuf_max;
    os->slow_consumer_timeout_ms = ns.slow_consumer_timeout_ms;
    os->max_connections = ns.max_connections;
    settings_free(&ns);
    conn_sweep_start();
    g_retired = xrealloc(g_retired, (g_n_retired + 1) * sizeof *g_retired);
    g_retired[g_n_retired++] = g_bus.conf;
    g_bus.conf = nc;
    plugins_reload_all(nc);
    log_info("bus", "configuration reloaded from %s", g_bus.conf_path);
    return 0;
}

/* ---- signals and drain --------------------------------------------- */

static void drain_check(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what;
    struct event *self = arg;
    static int ticks;
    /* Only this timer left: every transport has flushed and freed. */
    if (event_base_get_num_events(g_bus.base, EVENT_BASE_COUNT_ADDED) <= 1 || ++ticks > 200) {
        event_free(self);
        event_base_loopbreak(g_bus.base);
    }
}

static void start_drain(const char *why)
{
    if (g_bus.draining) return;
    g_bus.draining = true;
    log_info("bus", "%s: draining (%zu connections, answering in-flight calls with SHUTTING_DOWN)",
             why, g_bus.n_conns);
    listeners_disable_all();
    router_fail_all_calls(LB_E_SHUTTING_DOWN, "lexbusd is shutting down");
    conn_close_all("shutting down");
    conn_sweep_stop();
    /* Once the signal events are gone, the drain timer is the loop's last
     * event exactly when every transport has flushed and freed. A second
     * SIGTERM now takes the default action: a forced stop. */
    if (g_bus.sig_hup) { event_free(g_bus.sig_hup); g_bus.sig_hup = NULL; }
    if (g_bus.sig_term) { event_free(g_bus.sig_term); g_bus.sig_term = NULL; }
    if (g_bus.sig_int) { event_free(g_bus.sig_int); g_bus.sig_int = NULL; }
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    struct event *t = event_new(g_bus.base, -1, EV_PERSIST, drain_check, NULL);
    event_assign(t, g_bus.base, -1, EV_PERSIST, drain_check, t);
    struct timeval tv = { 0, 10000 };   /* poll every 10 ms, give up after 2 s */
    evtimer_add(t, &tv);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what; (void)arg;
    if (sig == SIGHUP) {
        char err[1024];
        log_info("bus", "SIGHUP: reloading %s", g_bus.conf_path);
        if (bus_reload(err, sizeof err)) log_error("bus", "reload failed, old configuration kept: %s", err);
        return;
    }
    start_drain(sig == SIGTERM ? "SIGTERM" : "SIGINT");
}

/* ---- start-up ------------------------------------------------------ */

/* Daemon mode, in two steps.  daemon_fork runs before anything starts a
 * thread or opens the event loop (a fork keeps only the calling thread:
 * the audit writer started by a plugin would be lost); the process that
 * ran `lexbusd -d` then waits.  daemon_ready runs once start-up is
 * complete: it writes the pid file, detaches from the terminal and tells
 * the waiting process, whose exit status says whether the daemon is up.
 * Start-up errors in between still reach the terminal, and exit 1. */
static int g_ready_fd = -1;

static int daemon_fork(void)
{
    int ready[2];
    if (pipe(ready) != 0) { perror("lexbusd: pipe"); return -1; }
    pid_t pid = fork();
    if (pid < 0) { perror("lexbusd: fork"); return -1; }
    if (pid > 0) {
        close(ready[1]);
        char ok = 0;
        ssize_t n;
        while ((n = read(ready[0], &ok, 1)) < 0 && errno == EINTR) {}
        _exit(n == 1 && ok == 1 ? 0 : 1);   /* EOF: the daemon failed before it was ready */
    }
    close(ready[0]);
    setsid();
    pid = fork();
    if (pid < 0) { perror("lexbusd: fork"); return -1; }
    if (pid > 0) _exit(0);
    g_ready_fd = ready[1];
    return 0;
}

static int daemon_ready(const char *pid_file)
{
    FILE *f = fopen(pid_file, "w");
    if (!f) {
        log_error("bus", "cannot write pid file %s: %s", pid_file, strerror(errno));
        return -1;
    }
    fprintf(f, "%ld\n", (long)getpid());
    fclose(f);
    umask(022);
    if (chdir("/")) { /* relative paths were resolved already */ }
    int fd = open("/dev/null", O_RDWR);
    if (fd >= 0) {
        dup2(fd, 0);
        dup2(fd, 1);
        if (!g_bus.set.log_file) dup2(fd, 2);
        if (fd > 2) close(fd);
    }
    char one = 1;
    if (write(g_ready_fd, &one, 1) != 1) { /* the waiting process is gone: nothing to tell */ }
    close(g_ready_fd);
    g_ready_fd = -1;
    return 0;
}

/* Every connection is a descriptor: take the hard limit (as Redis does),
 * so the default soft limit of 1024 does not cap a busy bus. */
static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= rl.rlim_max) return;
    rlim_t old = rl.rlim_cur;
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) == 0)
        log_debug("bus", "open-files limit raised from %llu to %llu", (unsigned long long)old,
                  (unsigned long long)rl.rlim_max);
}

/* Output buffers grow and drain in bursts of small chunks.  With glibc's
 * defaults every drained burst returns the top of the heap to the kernel
 * and the next one faults it back in page by page: a third of the daemon's
 * time in a 50-way fan-out went to page faults and zeroing.  Keeping up to
 * 64 MiB of freed heap (and serving allocations below 16 MiB from it)
 * roughly doubles fan-out throughput; idle memory is unchanged.  An
 * operator's GLIBC_TUNABLES wins. */
static void tune_malloc(void)
{
#ifdef HAVE_MALLOPT
    if (getenv("GLIBC_TUNABLES")) return;
    mallopt(M_TRIM_THRESHOLD, 64 * 1024 * 1024);
    mallopt(M_MMAP_THRESHOLD, 16 * 1024 * 1024);
#endif
}

static void setup_signals(void)
{
    signal(SIGPIPE, SIG_IGN);
    g_bus.sig_term = evsignal_new(g_bus.base, SIGTERM, on_signal, NULL);
    g_bus.sig_int = evsignal_new(g_bus.base, SIGINT, on_signal, NULL);
    g_bus.sig_hup = evsignal_new(g_bus.base, SIGHUP, on_signal, NULL);
    evsignal_add(g_bus.sig_term, NULL);
    evsignal_add(g_bus.sig_int, NULL);
    evsignal_add(g_bus.sig_hup, NULL);
}

static void teardown(void)
{
    if (g_bus.sig_term) event_free(g_bus.sig_term);
    if (g_bus.sig_int) event_free(g_bus.sig_int);
    if (g_bus.sig_hup) event_free(g_bus.sig_hup);
    conn_sweep_stop();
    conn_close_all("exit");
    conn_flush_dirty();   /* drops the references the list holds */
    plugins_unload_all();
    state_close();   /* after the plugins: their last changes are written too */
    router_free();
    sysmethods_free();
    jw_free(&g_bus.out);
    free(g_bus.dirty);
    for (size_t i = 0; i < g_n_retired; i++) conf_free(g_retired[i]);
    free(g_retired);
    conf_free(g_bus.conf);
    settings_free(&g_bus.set);
    free(g_bus.conf_path);
    clock_use_base(NULL);
    if (g_bus.base) event_base_free(g_bus.base);
    libevent_global_shutdown();
}

int main(int argc, char **argv)
{
    const char *conf_path = LB_SYSCONFDIR "/bus.conf", *pid_opt = NULL;
    bool daemon_mode = false;
    int opt;
    while ((opt = getopt(argc, argv, "c:dtp:vh")) != -1) {
        switch (opt) {
        case 'c': conf_path = optarg; break;
        case 'd': daemon_mode = true; break;
        case 't': g_check_only = true; break;
        case 'p': pid_opt = optarg; break;
        case 'v': printf("lexbusd %s (plugin ABI %d)\n", PACKAGE_VERSION, LB_PLUGIN_ABI); return 0;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) { usage(stderr); return 2; }

    char abs[PATH_MAX], err[1024];
    g_bus.conf_path = xstrdup(realpath(conf_path, abs) ? abs : conf_path);
    list_init(&g_bus.conns);
    g_bus.started_ms = now_ms();
    jw_init(&g_bus.out, 4096);

    if (conf_load(g_bus.conf_path, &g_bus.conf, err, sizeof err) ||
        settings_parse(g_bus.conf, &g_bus.set, err, sizeof err)) {
        log_error("config", "%s", err);
        teardown();
        return 1;
    }
    log_set_level(g_bus.set.log_level);
    reopen_log();

    if (daemon_mode && !g_check_only && daemon_fork() != 0) { teardown(); return 1; }
    g_bus.base = event_base_new();
    if (!g_bus.base) { log_error("bus", "cannot create the event loop"); teardown(); return 1; }
    clock_use_base(g_bus.base);
    router_init();
    system_service_init();
    /* Before the plugins, which read their state at load.  After the
     * fork: the writer thread starts at the first write. */
    if (state_open(g_bus.set.state_file, g_bus.set.state_max, g_bus.set.production, err, sizeof err)) {
        log_error("config", "%s", err);
        teardown();
        return 1;
    }
    if (plugins_load_all() != 0) { teardown(); return 1; }
    if (g_bus.set.production && !g_policy.authenticate && !g_policy.authenticators) {
        log_error("config", "%s: mode = production needs an authenticating plugin ([plugin tokens], or a "
                  "transport that verifies client certificates such as [plugin tls-tcp] with "
                  "require_client_cert = yes); refusing to start an open bus", g_bus.conf_path);
        teardown();
        return 1;
    }
    if (g_check_only) {
        printf("%s: configuration OK (%zu plugins)\n", g_bus.conf_path, g_bus.n_plugins);
        teardown();
        return 0;
    }
    const char *pid_file = pid_opt ? pid_opt : g_bus.set.pid_file ? g_bus.set.pid_file : "/tmp/lexbusd.pid";
    if (daemon_mode && daemon_ready(pid_file)) { teardown(); return 1; }
    raise_fd_limit();
    tune_malloc();
    setup_signals();
    conn_sweep_start();
    log_info("bus", "lexbusd %s node '%s' (%s mode) ready, %zu plugins, pid %ld", PACKAGE_VERSION,
             g_bus.set.node, g_bus.set.production ? "production" : "development", g_bus.n_plugins,
             (long)getpid());

    /* One loop iteration at a time, so that output queued while handling
     * this wake-up's events is flushed before polling again. */
    for (;;) {
        int rc = event_base_loop(g_bus.base, EVLOOP_ONCE);
        conn_flush_dirty();
        if (rc != 0 || event_base_got_break(g_bus.base)) break;
    }
    log_info("bus", "stopped");
    if (daemon_mode) unlink(pid_file);
    teardown();
    return 0;
}
