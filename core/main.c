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
#include "encoding.h"
#include "hooks.h"
#include "local.h"
#include "log.h"
#include "out.h"
#include "plugin_host.h"
#include "reload.h"
#include "router.h"
#include "router_int.h"
#include "settings.h"
#include "state.h"
#include "stats.h"
#include "sysmethod.h"
#include "system_service.h"
#include "util.h"

static struct event *g_sig_term, *g_sig_int, *g_sig_hup;

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
             why, conn_count());
    listeners_disable_all();
    router_fail_all_calls(LB_E_SHUTTING_DOWN, "lexbusd is shutting down");
    conn_close_all("shutting down");
    conn_sweep_stop();
    plugins_drain_all();   /* what plugins hold besides connections ends now, not in 2 s */
    /* Once the signal events are gone, the drain timer is the loop's last
     * event exactly when every transport has flushed and freed. A second
     * SIGTERM now takes the default action: a forced stop. */
    if (g_sig_hup) { event_free(g_sig_hup); g_sig_hup = NULL; }
    if (g_sig_term) { event_free(g_sig_term); g_sig_term = NULL; }
    if (g_sig_int) { event_free(g_sig_int); g_sig_int = NULL; }
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
        struct reload_result r;
        log_info("bus", "SIGHUP: reloading %s", g_bus.conf_path);
        bus_reload(&r);   /* it logs what failed or what needs a restart */
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
    g_sig_term = evsignal_new(g_bus.base, SIGTERM, on_signal, NULL);
    g_sig_int = evsignal_new(g_bus.base, SIGINT, on_signal, NULL);
    g_sig_hup = evsignal_new(g_bus.base, SIGHUP, on_signal, NULL);
    evsignal_add(g_sig_term, NULL);
    evsignal_add(g_sig_int, NULL);
    evsignal_add(g_sig_hup, NULL);
}

static void teardown(void)
{
    if (g_sig_term) event_free(g_sig_term);
    if (g_sig_int) event_free(g_sig_int);
    if (g_sig_hup) event_free(g_sig_hup);
    conn_sweep_stop();
    conn_close_all("exit");
    conn_flush_dirty();   /* drops the references the list holds */
    plugins_unload_all();
    local_free();
    state_close();   /* after the plugins: their last changes are written too */
    calls_free();
    router_free();
    sysmethods_free();
    out_free();
    encoding_free();
    stats_free();
    plugin_host_free();
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
        case 't': g_bus.check_only = true; break;
        case 'p': pid_opt = optarg; break;
        case 'v': printf("lexbusd %s (plugin ABI %d)\n", PACKAGE_VERSION, LB_PLUGIN_ABI); return 0;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) { usage(stderr); return 2; }

    char abs[PATH_MAX], err[1024];
    g_bus.conf_path = xstrdup(realpath(conf_path, abs) ? abs : conf_path);
    g_bus.started_ms = now_ms();

    if (conf_load(g_bus.conf_path, &g_bus.conf, err, sizeof err) ||
        settings_parse(g_bus.conf, &g_bus.set, err, sizeof err)) {
        log_error("config", "%s", err);
        teardown();
        return 1;
    }
    log_set_level((enum lb_log_level)g_bus.set.log_level);
    reload_reopen_log();

    if (daemon_mode && !g_bus.check_only && daemon_fork() != 0) { teardown(); return 1; }
    g_bus.base = event_base_new();
    if (!g_bus.base) { log_error("bus", "cannot create the event loop"); teardown(); return 1; }
    clock_use_base(g_bus.base);
    conn_set_handlers(router_input, router_forget);
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
    if (g_bus.set.production && !g_hooks_n.authenticate && !g_hooks_n.authenticators) {
        log_error("config", "%s: mode = production needs an authenticating plugin ([plugin tokens], or a "
                  "transport that verifies client certificates such as [plugin tls-tcp] with "
                  "require_client_cert = yes); refusing to start an open bus", g_bus.conf_path);
        teardown();
        return 1;
    }
    if (g_bus.check_only) {
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
