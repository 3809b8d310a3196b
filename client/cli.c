/*
 * lexbus: the command-line tool, built on liblexbus.
 *
 * Exit codes (scripts may rely on them):
 *   0 success, 1 the bus or the service answered with an error,
 *   2 usage error, 3 cannot connect / connection lost, 4 timeout.
 * Errors go to stderr as one JSON line: {"error":{"code":..,"message":..}}.
 */
#include "config.h"
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <lexbus/client.h>
#include <lexbus/protocol.h>
#include <openssl/evp.h>

enum { EXIT_OK = 0, EXIT_REMOTE = 1, EXIT_USAGE = 2, EXIT_CONN = 3, EXIT_TIMEOUT = 4 };

static struct lexbus_options g_opt;
static unsigned g_timeout_ms = 10000;

static const char *const usage_main =
    "usage: lexbus [--server unix:/path|tls://host:port] [--ca F] [--cert F --key F] [--insecure]\n"
    "              [--as NAME] [--timeout MS] [--token T] [--encoding json|msgpack] COMMAND [ARGS]\n"
    "\n"
    "Commands:\n"
    "  call SERVICE METHOD [JSON]          call a method, print the result\n"
    "  emit EVENT [JSON] [--to S] [--ack]  emit an event (--ack prints {\"delivered\":N})\n"
    "  listen PATTERN...                   print one JSON line per matching event\n"
    "  serve SERVICE METHOD -- CMD [ARG]   answer calls by running CMD (params on stdin)\n"
    "  services                            list the services on the bus\n"
    "  stats                               the bus's counters\n"
    "  reload                              re-read bus.conf and reload plugins (like SIGHUP)\n"
    "  audit verify [--partial] FILE...    check audit files' hash chain (offline)\n"
    "  token issue|verify|revoke|state ... broker tokens (the tokens plugin)\n"
    "  jsonlex EXPR [CONTEXT]              evaluate a JSONLex expression (the lua plugin)\n"
    "  rules [test MESSAGE]                the lua plugin's rules, or what they do to MESSAGE\n"
    "  crud create|read|update|delete ...  CRUD requests (crud.lua maps them to calls)\n"
    "\n"
    "The bus: --server, else $LEXBUS_URL, else unix:" LB_DEFAULT_SOCKET ".\n"
    "tls://: --ca verifies the server (its name is checked), --cert/--key present a\n"
    "client certificate (mutual TLS); --insecure skips verification (debugging only).\n"
    "--as NAME registers under NAME (with mutual TLS: a name the certificate carries).\n"
    "--token T: a session token (issued with --operation register) authenticates the\n"
    "REGISTER; any other broker token goes with the CALL or EMIT it allows.\n"
    "--encoding msgpack speaks MessagePack on the wire (as Bro IPC clients do); JSON by default.\n"
    "Exit codes: 0 ok, 1 error answer, 2 usage, 3 connection failure, 4 timeout.\n"
    "Errors are printed on stderr as {\"error\":{\"code\":...,\"message\":...}}.\n"
    "`lexbus COMMAND --help` describes each command.\n";

static int fail(const char *code, const char *message)
{
    json_t *e = json_pack("{s:{s:s,s:s}}", "error", "code", code, "message", message);
    char *s = json_dumps(e, JSON_COMPACT);
    fprintf(stderr, "%s\n", s);
    free(s);
    json_decref(e);
    if (!strcmp(code, LB_E_TIMEOUT)) return EXIT_TIMEOUT;
    if (!strcmp(code, LB_E_CONNECTION_LOST) || !strcmp(code, LB_E_NOT_CONNECTED)) return EXIT_CONN;
    return EXIT_REMOTE;
}

static int usage_error(const char *cmd_usage, const char *why)
{
    fprintf(stderr, "lexbus: %s\n%s", why, cmd_usage);
    return EXIT_USAGE;
}

static bool wants_help(int argc, char **argv)
{
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--")) break;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return true;
    }
    return false;
}

/* Parses a JSON argument; a bare word that is not JSON becomes a string. */
static json_t *arg_json(const char *s)
{
    json_error_t je;
    json_t *v = json_loads(s, JSON_DECODE_ANY, &je);
    return v ? v : json_string(s);
}

static void print_json(json_t *v)
{
    char *s = json_dumps(v ? v : json_null(), JSON_COMPACT | JSON_ENCODE_ANY);
    printf("%s\n", s);
    free(s);
    fflush(stdout);
}

/* Connects and registers; `keep` (long-running commands) re-connects if
 * the connection is lost later, one-shot commands fail instead. */
static struct lexbus_client *connect_or_fail(const char *service, bool keep, int *rc)
{
    struct lexbus_error err;
    struct lexbus_options o = g_opt;
    if (service) o.service = service;
    o.no_reconnect = !keep;
    struct lexbus_client *c = lexbus_connect_blocking(&o, g_timeout_ms, &err);
    if (!c) *rc = fail(err.code, err.message);
    return c;
}

/* ---- call / services / stats ----------------------------------------- */

static const char *const usage_call =
    "usage: lexbus call SERVICE METHOD [JSON]\n"
    "  Calls SERVICE.METHOD with JSON params (default {}) and prints the result.\n";

static int do_call(const char *service, const char *method, const char *params)
{
    int rc = EXIT_OK;
    struct lexbus_client *c = connect_or_fail(NULL, false, &rc);
    if (!c) return rc;
    json_t *p = params ? arg_json(params) : NULL, *result = NULL;
    struct lexbus_error err;
    if (lexbus_call_blocking(c, service, method, p, g_timeout_ms, &result, &err) == 0) print_json(result);
    else rc = fail(err.code, err.message);
    json_decref(p);
    json_decref(result);
    lexbus_free(c);
    return rc;
}

static int cmd_call(int argc, char **argv)
{
    if (wants_help(argc, argv)) { fputs(usage_call, stdout); return EXIT_OK; }
    if (argc < 3 || argc > 4) return usage_error(usage_call, "call needs SERVICE METHOD [JSON]");
    return do_call(argv[1], argv[2], argc == 4 ? argv[3] : NULL);
}

/* The bus answers `services` a page at a time (lexbus.services takes
 * {limit, after}): ask for pages until a short one, print them as one list. */
static int cmd_services(int argc, char **argv)
{
    if (wants_help(argc, argv)) { fputs("usage: lexbus services\n  Lists the services registered on the bus.\n", stdout); return EXIT_OK; }
    if (argc != 1) return usage_error("usage: lexbus services\n", "services takes no arguments");
    int rc = EXIT_OK;
    struct lexbus_client *c = connect_or_fail(NULL, false, &rc);
    if (!c) return rc;
    json_t *all = json_array();
    const json_int_t page = 1000;
    char *after = NULL;
    for (;;) {
        json_t *p = json_pack("{s:I}", "limit", page), *result = NULL;
        if (after) json_object_set_new(p, "after", json_string(after));
        struct lexbus_error err;
        int r = lexbus_call_blocking(c, "lexbus", "services", p, g_timeout_ms, &result, &err);
        json_decref(p);
        if (r != 0) { rc = fail(err.code, err.message); break; }
        size_t n = json_array_size(result);
        json_array_extend(all, result);
        const char *last = json_string_value(json_object_get(json_array_get(result, n ? n - 1 : 0), "name"));
        free(after);
        after = last ? strdup(last) : NULL;
        json_decref(result);
        if ((json_int_t)n < page || !after) break;
    }
    if (rc == EXIT_OK) print_json(all);
    free(after);
    json_decref(all);
    lexbus_free(c);
    return rc;
}

static int cmd_stats(int argc, char **argv)
{
    if (wants_help(argc, argv)) { fputs("usage: lexbus stats\n  Prints the bus's counters.\n", stdout); return EXIT_OK; }
    if (argc != 1) return usage_error("usage: lexbus stats\n", "stats takes no arguments");
    return do_call("lexbus", "stats", NULL);
}

static int cmd_reload(int argc, char **argv)
{
    static const char *const usage =
        "usage: lexbus reload\n"
        "  Re-reads bus.conf and reloads every plugin (the lua plugin recompiles its\n"
        "  scripts), all or nothing, like SIGHUP; prints {\"reloaded\":true}, or the\n"
        "  error that kept the old configuration (exit 1).\n";
    if (wants_help(argc, argv)) { fputs(usage, stdout); return EXIT_OK; }
    if (argc != 1) return usage_error(usage, "reload takes no arguments");
    return do_call("lexbus", "reload", NULL);
}

/* ---- emit ------------------------------------------------------------- */

static const char *const usage_emit =
    "usage: lexbus emit EVENT [JSON] [--to SERVICE|broadcast] [--ack]\n"
    "  Emits EVENT with the JSON payload (default null).  --to sends it to one\n"
    "  instance of SERVICE; --ack waits for the count of recipients and prints\n"
    "  {\"delivered\":N}.\n";

static int cmd_emit(int argc, char **argv)
{
    if (wants_help(argc, argv)) { fputs(usage_emit, stdout); return EXIT_OK; }
    const char *event = NULL, *payload = NULL, *to = NULL;
    bool ack = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--ack")) ack = true;
        else if (!strcmp(argv[i], "--to") && i + 1 < argc) to = argv[++i];
        else if (argv[i][0] == '-' && argv[i][1] == '-') return usage_error(usage_emit, "unknown option");
        else if (!event) event = argv[i];
        else if (!payload) payload = argv[i];
        else return usage_error(usage_emit, "too many arguments");
    }
    if (!event) return usage_error(usage_emit, "emit needs EVENT");
    int rc = EXIT_OK;
    struct lexbus_client *c = connect_or_fail(NULL, false, &rc);
    if (!c) return rc;
    json_t *p = payload ? arg_json(payload) : NULL;
    long delivered = 0;
    struct lexbus_error err;
    if (lexbus_emit_blocking(c, event, p, to, ack ? &delivered : NULL, g_timeout_ms, &err) != 0)
        rc = fail(err.code, err.message);
    else if (ack)
        printf("{\"delivered\":%ld}\n", delivered);
    json_decref(p);
    lexbus_free(c);
    return rc;
}

/* ---- listen ----------------------------------------------------------- */

static void print_event(struct lexbus_client *c, const char *event, const char *from, json_t *payload, void *ud)
{
    (void)c; (void)ud;
    json_t *line = json_pack("{s:s,s:s,s:O}", "event", event, "from", from, "payload", payload ? payload : json_null());
    print_json(line);
    json_decref(line);
}

static void stop_on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)sig; (void)what;
    event_base_loopbreak(arg);
}

static void listen_state(struct lexbus_client *c, bool ready, const struct lexbus_error *why, void *ud)
{
    (void)c; (void)ready; (void)ud;
    if (!ready && why) fprintf(stderr, "lexbus listen: %s (%s); reconnecting\n", why->message, why->code);
}

static const char *const usage_listen =
    "usage: lexbus listen PATTERN...\n"
    "  Prints {\"event\":..,\"from\":..,\"payload\":..} for each matching event until\n"
    "  interrupted.  '*' matches one segment, '>' the rest (post:*, content:>).\n"
    "  Re-connects and re-subscribes if the bus restarts.\n";

static int cmd_listen(int argc, char **argv)
{
    if (wants_help(argc, argv)) { fputs(usage_listen, stdout); return EXIT_OK; }
    if (argc < 2) return usage_error(usage_listen, "listen needs at least one PATTERN");
    int rc = EXIT_OK;
    struct lexbus_client *c = connect_or_fail(NULL, true, &rc);
    if (!c) return rc;
    for (int i = 1; i < argc; i++) lexbus_on(c, argv[i], print_event, NULL);
    lexbus_on_state(c, listen_state, NULL);
    struct event *si = evsignal_new(lexbus_base(c), SIGINT, stop_on_signal, lexbus_base(c));
    struct event *st = evsignal_new(lexbus_base(c), SIGTERM, stop_on_signal, lexbus_base(c));
    evsignal_add(si, NULL);
    evsignal_add(st, NULL);
    lexbus_run(c);
    event_free(si);
    event_free(st);
    lexbus_free(c);
    return EXIT_OK;
}

/* ---- serve ------------------------------------------------------------ */

/* One running command: params go to its stdin, its stdout is the result. */
struct job {
    struct lexbus_reply *reply;
    pid_t pid;
    struct bufferevent *out, *err;
    bool out_done, err_done, exited;
    int status;
    struct job *next;
};

static struct job *g_jobs;
static char **g_cmd;

static void job_finish(struct job *j)
{
    if (!(j->out_done && j->err_done && j->exited)) return;
    struct evbuffer *ob = bufferevent_get_input(j->out), *eb = bufferevent_get_input(j->err);
    size_t on = evbuffer_get_length(ob), en = evbuffer_get_length(eb);
    char *o = malloc(on + 1), *e = malloc(en + 1);
    evbuffer_remove(ob, o, on);
    evbuffer_remove(eb, e, en);
    o[on] = e[en] = 0;
    if (WIFEXITED(j->status) && WEXITSTATUS(j->status) == 0) {
        json_error_t je;
        json_t *v = json_loads(o, JSON_DECODE_ANY, &je);
        if (!v) {   /* not JSON: the text, without its final newline */
            if (on && o[on - 1] == '\n') o[on - 1] = 0;
            v = json_string(o);
        }
        lexbus_reply_ok(j->reply, v);
    } else {
        char msg[240];
        snprintf(msg, sizeof msg, "%s %s %d: %.180s", g_cmd[0], WIFEXITED(j->status) ? "exited with" : "killed by signal",
                 WIFEXITED(j->status) ? WEXITSTATUS(j->status) : WTERMSIG(j->status), e);
        lexbus_reply_error(j->reply, LB_E_EXECUTION_FAILED, msg);
    }
    free(o);
    free(e);
    bufferevent_free(j->out);
    bufferevent_free(j->err);
    for (struct job **pp = &g_jobs; *pp; pp = &(*pp)->next) if (*pp == j) { *pp = j->next; break; }
    free(j);
}

static void pipe_event(struct bufferevent *bev, short what, void *arg)
{
    (void)what;
    struct job *j = arg;
    if (bev == j->out) j->out_done = true;
    else j->err_done = true;
    job_finish(j);
}

static void pipe_read(struct bufferevent *bev, void *arg)
{
    (void)bev; (void)arg;   /* data accumulates in the input buffer */
}

static void stdin_written(struct bufferevent *bev, void *arg)
{
    (void)arg;
    if (evbuffer_get_length(bufferevent_get_output(bev)) == 0) bufferevent_free(bev);
}

static void stdin_error(struct bufferevent *bev, short what, void *arg)
{
    (void)what; (void)arg;
    bufferevent_free(bev);   /* the command closed its stdin early */
}

static void on_sigchld(evutil_socket_t sig, short what, void *arg)
{
    (void)sig; (void)what; (void)arg;
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        for (struct job *j = g_jobs; j; j = j->next) {
            if (j->pid == pid) { j->exited = true; j->status = status; job_finish(j); break; }
        }
    }
}

static void serve_call(struct lexbus_client *c, const char *method, json_t *params, struct lexbus_reply *reply, void *ud)
{
    (void)method; (void)ud;
    int in[2], out[2], err[2];
    if (pipe(in) || pipe(out) || pipe(err)) { lexbus_reply_error(reply, LB_E_INTERNAL_ERROR, strerror(errno)); return; }
    pid_t pid = fork();
    if (pid < 0) { lexbus_reply_error(reply, LB_E_INTERNAL_ERROR, strerror(errno)); return; }
    if (pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        dup2(err[1], 2);
        for (int fd = 3; fd < 256; fd++) close(fd);
        execvp(g_cmd[0], g_cmd);
        fprintf(stderr, "cannot run %s: %s", g_cmd[0], strerror(errno));
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    close(err[1]);
    /* The params go to stdin in the background; stdin closes once they are
     * written, so the command sees EOF. */
    char *p = json_dumps(params ? params : json_null(), JSON_COMPACT | JSON_ENCODE_ANY);
    struct job *j = calloc(1, sizeof *j);
    j->reply = reply;
    j->pid = pid;
    struct event_base *base = lexbus_base(c);
    evutil_make_socket_nonblocking(in[1]);
    struct bufferevent *inb = bufferevent_socket_new(base, in[1], BEV_OPT_CLOSE_ON_FREE);
    bufferevent_setcb(inb, NULL, stdin_written, stdin_error, NULL);
    bufferevent_write(inb, p, strlen(p));
    bufferevent_write(inb, "\n", 1);
    bufferevent_enable(inb, EV_WRITE);
    free(p);
    evutil_make_socket_nonblocking(out[0]);
    evutil_make_socket_nonblocking(err[0]);
    j->out = bufferevent_socket_new(base, out[0], BEV_OPT_CLOSE_ON_FREE);
    j->err = bufferevent_socket_new(base, err[0], BEV_OPT_CLOSE_ON_FREE);
    bufferevent_setcb(j->out, pipe_read, NULL, pipe_event, j);
    bufferevent_setcb(j->err, pipe_read, NULL, pipe_event, j);
    bufferevent_enable(j->out, EV_READ);
    bufferevent_enable(j->err, EV_READ);
    j->next = g_jobs;
    g_jobs = j;
    on_sigchld(0, 0, NULL);   /* it may already have exited */
}

static const char *const usage_serve =
    "usage: lexbus serve SERVICE METHOD -- COMMAND [ARGS...]\n"
    "  Registers SERVICE with METHOD.  Each call runs COMMAND with the params\n"
    "  as one JSON line on stdin; its stdout (JSON, or else a string) is the\n"
    "  result.  A non-zero exit answers EXECUTION_FAILED with its stderr.\n"
    "  Calls run concurrently; re-connects if the bus restarts.\n";

static int cmd_serve(int argc, char **argv)
{
    if (wants_help(argc, argv)) { fputs(usage_serve, stdout); return EXIT_OK; }
    if (argc < 5 || strcmp(argv[3], "--") != 0) return usage_error(usage_serve, "serve needs SERVICE METHOD -- COMMAND");
    g_cmd = argv + 4;
    struct event_base *base = event_base_new();
    struct lexbus_options o = g_opt;
    o.service = argv[1];
    struct lexbus_client *c = lexbus_new(base, &o);
    if (!c) { event_base_free(base); return fail(LB_E_NOT_CONNECTED, "bad URL"); }
    lexbus_add_method(c, argv[2], serve_call, NULL);
    lexbus_on_state(c, listen_state, NULL);
    struct event *sc = evsignal_new(base, SIGCHLD, on_sigchld, NULL);
    struct event *si = evsignal_new(base, SIGINT, stop_on_signal, base);
    struct event *st = evsignal_new(base, SIGTERM, stop_on_signal, base);
    evsignal_add(sc, NULL);
    evsignal_add(si, NULL);
    evsignal_add(st, NULL);
    lexbus_connect(c);
    event_base_dispatch(base);
    event_free(sc);
    event_free(si);
    event_free(st);
    lexbus_free(c);
    while (g_jobs) {   /* interrupted with commands still running */
        struct job *j = g_jobs;
        g_jobs = j->next;
        kill(j->pid, SIGTERM);
        bufferevent_free(j->out);
        bufferevent_free(j->err);
        free(j);
    }
    event_base_free(base);
    return EXIT_OK;
}

/* ---- token -------------------------------------------------------------- */

static const char *const usage_token =
    "usage: lexbus token issue --operation register --source NAME [--admin] [--ttl SECONDS]\n"
    "       lexbus token issue --target SERVICE --operation OP [--source NAME] [--ttl SECONDS]\n"
    "                          [--stateful] [--rate-limit-exempt] [--auth-bypass] [--data JSON]\n"
    "       lexbus token verify TOKEN\n"
    "       lexbus token revoke JTI\n"
    "       lexbus token state get|delete JTI\n"
    "       lexbus token state set JTI JSON\n"
    "  Broker tokens (the tokens plugin): issue, revoke and state need a service\n"
    "  listed in its `admins` (use --as NAME).\n"
    "  A session token (--operation register) lets NAME register, and nothing else;\n"
    "  --admin is required when NAME is in `admins` (the token then carries its powers).\n"
    "  Any other token is a permission for CALLs (OP = method) or EMITs (OP = event)\n"
    "  to SERVICE (\"*\" = any), for any holder, or only for NAME with --source.\n";

static int cmd_token(int argc, char **argv)
{
    if (wants_help(argc, argv)) { fputs(usage_token, stdout); return EXIT_OK; }
    if (argc < 2) return usage_error(usage_token, "token needs a subcommand");
    const char *sub = argv[1];
    json_t *p = json_object();
    const char *method = NULL;
    int rc;
    if (!strcmp(sub, "issue")) {
        method = "token.issue";
        for (int i = 2; i < argc; i++) {
            const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
            if (!strcmp(a, "--target") && v) { json_object_set_new(p, "target", json_string(v)); i++; }
            else if (!strcmp(a, "--operation") && v) { json_object_set_new(p, "operation", json_string(v)); i++; }
            else if (!strcmp(a, "--source") && v) { json_object_set_new(p, "source", json_string(v)); i++; }
            else if (!strcmp(a, "--ttl") && v) { json_object_set_new(p, "ttl", json_integer(atoll(v))); i++; }
            else if (!strcmp(a, "--data") && v) { json_object_set_new(p, "data", arg_json(v)); i++; }
            else if (!strcmp(a, "--stateful")) json_object_set_new(p, "stateful", json_true());
            else if (!strcmp(a, "--rate-limit-exempt")) json_object_set_new(p, "rateLimitExempt", json_true());
            else if (!strcmp(a, "--auth-bypass")) json_object_set_new(p, "authBypass", json_true());
            else if (!strcmp(a, "--admin")) json_object_set_new(p, "admin", json_true());
            else { json_decref(p); return usage_error(usage_token, "unknown or incomplete option for token issue"); }
        }
        const char *op = json_string_value(json_object_get(p, "operation"));
        bool session = op && !strcmp(op, "register");
        if (!op || (session ? !json_object_get(p, "source") : !json_object_get(p, "target"))) {
            json_decref(p);
            return usage_error(usage_token, "token issue needs --operation register --source NAME, "
                                            "or --target and --operation");
        }
    } else if (!strcmp(sub, "verify") && argc == 3) {
        method = "token.verify";
        json_object_set_new(p, "token", json_string(argv[2]));
    } else if (!strcmp(sub, "revoke") && argc == 3) {
        method = "token.revoke";
        json_object_set_new(p, "jti", json_string(argv[2]));
    } else if (!strcmp(sub, "state") && argc >= 4) {
        json_object_set_new(p, "jti", json_string(argv[3]));
        if (!strcmp(argv[2], "get") && argc == 4) method = "token.state.get";
        else if (!strcmp(argv[2], "delete") && argc == 4) method = "token.state.delete";
        else if (!strcmp(argv[2], "set") && argc == 5) { method = "token.state.set"; json_object_set_new(p, "state", arg_json(argv[4])); }
    }
    if (!method) { json_decref(p); return usage_error(usage_token, "bad token subcommand"); }
    char *ps = json_dumps(p, JSON_COMPACT);
    json_decref(p);
    rc = do_call("lexbus", method, ps);
    free(ps);
    return rc;
}

/* ---- jsonlex (the lua plugin) ------------------------------------------- */

static const char *const usage_jsonlex =
    "usage: lexbus jsonlex EXPR [CONTEXT]\n"
    "       lexbus jsonlex --name NAME [CONTEXT]\n"
    "  Evaluates a JSONLex expression on the bus (lexbus.jsonlex, [plugin lua])\n"
    "  and prints the result.  EXPR is JSON: an envelope {\"__jsonlex\":true,\n"
    "  \"expr\":...} or a bare expression such as '{\"$var\":\"user.name\"}';\n"
    "  @FILE reads it from FILE, - from stdin.  CONTEXT is a JSON object (default\n"
    "  {}).  --name evaluates an expression named in jsonlex.lua.  An expression\n"
    "  that fails answers SCRIPT_ERROR with the reason (exit 1).\n";

/* Strict JSON (no bare words); integers beyond 64 bits read as numbers. */
static json_t *jsonlex_arg(const char *text, const char *what, const char *usage, int *rc)
{
    json_error_t je;
    json_t *v = json_loads(text, JSON_DECODE_ANY, &je);
    if (!v) v = json_loads(text, JSON_DECODE_ANY | JSON_DECODE_INT_AS_REAL, NULL);
    if (!v) {
        char why[300];
        snprintf(why, sizeof why, "%s is not JSON: %s (line %d, column %d)", what, je.text, je.line, je.column);
        *rc = usage_error(usage, why);
    }
    return v;
}

/* EXPR as given, or the contents of @FILE / - (stdin). */
static char *jsonlex_text(const char *arg)
{
    if (strcmp(arg, "-") != 0 && arg[0] != '@') return strdup(arg);
    FILE *f = strcmp(arg, "-") == 0 ? stdin : fopen(arg + 1, "rb");
    if (!f) return NULL;
    size_t cap = 4096, n = 0, r;
    char *buf = malloc(cap);
    while (buf && (r = fread(buf + n, 1, cap - n - 1, f)) > 0) {
        n += r;
        if (n + 1 == cap) { char *nb = realloc(buf, cap *= 2); if (!nb) { free(buf); buf = NULL; } else buf = nb; }
    }
    if (f != stdin) fclose(f);
    if (buf) buf[n] = 0;
    return buf;
}

static int cmd_jsonlex(int argc, char **argv)
{
    if (wants_help(argc, argv)) { fputs(usage_jsonlex, stdout); return EXIT_OK; }
    const char *name = NULL, *expr_arg = NULL, *ctx_arg = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--name") && i + 1 < argc) name = argv[++i];
        else if (!expr_arg && !name) expr_arg = argv[i];
        else if (!ctx_arg) ctx_arg = argv[i];
        else return usage_error(usage_jsonlex, "too many arguments");
    }
    if (!name && !expr_arg) return usage_error(usage_jsonlex, "jsonlex needs EXPR (or --name NAME)");
    int rc = EXIT_OK;
    json_t *p = json_object();
    if (name) {
        json_object_set_new(p, "name", json_string(name));
    } else {
        char *text = jsonlex_text(expr_arg);
        if (!text) { json_decref(p); return usage_error(usage_jsonlex, "cannot read EXPR"); }
        json_t *e = jsonlex_arg(text, "EXPR", usage_jsonlex, &rc);
        free(text);
        if (!e) { json_decref(p); return rc; }
        json_object_set_new(p, "expr", e);
    }
    if (ctx_arg) {
        json_t *cx = jsonlex_arg(ctx_arg, "CONTEXT", usage_jsonlex, &rc);
        if (!cx) { json_decref(p); return rc; }
        json_object_set_new(p, "context", cx);
    }
    struct lexbus_client *c = connect_or_fail(NULL, false, &rc);
    if (c) {
        json_t *result = NULL;
        struct lexbus_error err;
        if (lexbus_call_blocking(c, "lexbus", "jsonlex", p, g_timeout_ms, &result, &err) == 0) print_json(result);
        else rc = fail(err.code, err.message);
        json_decref(result);
        lexbus_free(c);
    }
    json_decref(p);
    return rc;
}

static const char *const usage_rules =
    "usage: lexbus rules\n"
    "       lexbus rules test MESSAGE\n"
    "  Lists the lua plugin's scripts and routes.lua rules with their counters\n"
    "  (matches, changes, refusals, errors, time), or shows what the rules would\n"
    "  do with MESSAGE, a JSON message such as\n"
    "  '{\"type\":\"EMIT\",\"event\":\"post:created\",\"payload\":{...}}' (nothing is sent).\n";

static int cmd_rules(int argc, char **argv)
{
    if (wants_help(argc, argv)) { fputs(usage_rules, stdout); return EXIT_OK; }
    if (argc == 1) return do_call("lexbus", "rules", NULL);
    if (argc == 3 && !strcmp(argv[1], "test")) {
        int rc = EXIT_OK;
        json_t *m = jsonlex_arg(argv[2], "MESSAGE", usage_rules, &rc);
        if (!m) return rc;
        json_decref(m);
        return do_call("lexbus", "rules.test", argv[2]);
    }
    return usage_error(usage_rules, "rules takes no arguments, or: test MESSAGE");
}

/* ---- crud (the lua plugin) ---------------------------------------------- */

static const char *const usage_crud =
    "usage: lexbus crud create RESOURCE JSON [--to SERVICE]\n"
    "       lexbus crud read RESOURCE [KEY] [--query JSON] [--to SERVICE]\n"
    "       lexbus crud update RESOURCE KEY JSON [--to SERVICE]\n"
    "       lexbus crud delete RESOURCE KEY [--to SERVICE]\n"
    "  Sends a CRUD request; the bus ([plugin lua], crud.lua) calls\n"
    "  RESOURCE.OP on --to, or on the service that declared RESOURCE when it\n"
    "  registered, and prints the result.  An unknown resource answers\n"
    "  SERVICE_NOT_FOUND; a request crud.lua refuses, INVALID_MESSAGE.\n";

static int cmd_crud(int argc, char **argv)
{
    if (wants_help(argc, argv)) { fputs(usage_crud, stdout); return EXIT_OK; }
    struct lexbus_crud req = { 0 };
    const char *pos[4] = { NULL, NULL, NULL, NULL }, *query = NULL, *data = NULL;
    int npos = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--to") && i + 1 < argc) req.to = argv[++i];
        else if (!strcmp(argv[i], "--query") && i + 1 < argc) query = argv[++i];
        else if (argv[i][0] == '-' && argv[i][1] == '-') return usage_error(usage_crud, "unknown option");
        else if (npos < 4) pos[npos++] = argv[i];
        else return usage_error(usage_crud, "too many arguments");
    }
    if (npos < 2) return usage_error(usage_crud, "crud needs OP RESOURCE");
    req.op = pos[0];
    req.resource = pos[1];
    if (!strcmp(req.op, "create") && npos == 3) data = pos[2];
    else if (!strcmp(req.op, "read") && npos <= 3) req.key = pos[2];
    else if (!strcmp(req.op, "update") && npos == 4) { req.key = pos[2]; data = pos[3]; }
    else if (!strcmp(req.op, "delete") && npos == 3) req.key = pos[2];
    else return usage_error(usage_crud, "see the forms above");
    if (query && strcmp(req.op, "read")) return usage_error(usage_crud, "--query goes with read");
    int rc = EXIT_OK;
    if (data && !(req.data = jsonlex_arg(data, "JSON", usage_crud, &rc))) return rc;
    if (query && !(req.query = jsonlex_arg(query, "--query", usage_crud, &rc))) { json_decref(req.data); return rc; }
    struct lexbus_client *c = connect_or_fail(NULL, false, &rc);
    if (c) {
        json_t *result = NULL;
        struct lexbus_error err;
        if (lexbus_crud_blocking(c, &req, g_timeout_ms, &result, &err) == 0) print_json(result);
        else rc = fail(err.code, err.message);
        json_decref(result);
        lexbus_free(c);
    }
    json_decref(req.data);
    json_decref(req.query);
    return rc;
}

/* ---- audit verify (offline) ------------------------------------------- */

static const char *const usage_audit =
    "usage: lexbus audit verify [--partial] FILE...\n"
    "  Checks the hash chain of audit files written with `chain = yes`: each\n"
    "  line's \"prev\" must be the SHA-256 (hex) of the line before it (64 zeros\n"
    "  for the first line the bus ever wrote).  Give rotated files oldest first\n"
    "  (audit.jsonl.2 audit.jsonl.1 audit.jsonl): the chain runs across them.\n"
    "  --partial trusts the first line's \"prev\" (older files were rotated away)\n"
    "  and checks everything after it.  It also resynchronises after a gap: a\n"
    "  cut line (a write interrupted by a full disk or a crash) or a LOST line\n"
    "  (lines the bus could not write): the next record either continues the\n"
    "  chain of the line before the gap (nothing else was lost) or is trusted as\n"
    "  a new start (\"resumed\"); each place is named on stderr.  Prints\n"
    "  {\"ok\":true,\"lines\":N,\"files\":F,\"last\":\"<hash of the last line>\"}\n"
    "  (with --partial also \"cut\", \"lost\" and \"resumed\" counts), or names\n"
    "  the first bad line on stderr and exits 1.  Needs no bus.\n"
    "  No later line vouches for the last one: compare \"last\" with the hash\n"
    "  lexbusd logs at shutdown (\"audit chain of FILE ends at HASH\").  On a\n"
    "  running bus, plugins.audit.lastHash of `lexbus stats` is the hash of the\n"
    "  line before the stats call's own line (whose \"prev\" it is).\n";

#define AUDIT_HASH_HEX 64

/* The running state of a verification across files. */
struct chain {
    char prev[AUDIT_HASH_HEX + 1];   /* hash of the last complete line */
    bool first;                      /* no complete line seen yet */
    bool partial;
    bool after_gap;                  /* a cut line or a LOST line came before (--partial) */
    long lines, cut, resumed;
    long long lost;
};

/* A line that marks a gap: cut off (not JSON), or the bus's LOST line.
 * Returns 0 if it is neither, else 1 with *what describing it. */
static int gap_line(json_t *j, char *what, size_t n)
{
    if (!j) {
        snprintf(what, n, "is cut off (an interrupted write: a full disk or a crash)");
        return 1;
    }
    json_t *lines = json_object_get(j, "lines");
    if (json_object_get(j, "prev") || !json_is_string(json_object_get(j, "type")) ||
        strcmp(json_string_value(json_object_get(j, "type")), "LOST") != 0 || !json_is_integer(lines))
        return 0;
    snprintf(what, n, "marks %lld lines the bus lost (a failed write: a full disk or an I/O error)",
             (long long)json_integer_value(lines));
    return 1;
}

/* One complete line (n bytes, no newline): updates ch.  Returns NULL, or
 * why it breaks the chain (in buf). */
static const char *verify_line(struct chain *ch, const char *path, long lineno, const char *line, size_t n,
                               char *buf, size_t buflen)
{
    json_t *j = json_loadb(line, n, 0, NULL);
    const char *p = j ? json_string_value(json_object_get(j, "prev")) : NULL, *why = NULL;
    char what[160];
    if (gap_line(j, what, sizeof what)) {
        if (ch->partial) {
            /* Nothing to check in it: the next record continues the chain
             * (nothing else was lost) or starts it again. */
            fprintf(stderr, "lexbus audit verify: line %ld of %s %s\n", lineno, path, what);
            ch->cut += !j;
            ch->lost += j ? json_integer_value(json_object_get(j, "lines")) : 0;
            ch->after_gap = true;
        } else {
            snprintf(buf, buflen, "the line %s; --partial checks the lines after it", what);
            why = buf;
        }
        json_decref(j);
        return why;
    }
    if (!p || strlen(p) != AUDIT_HASH_HEX) {
        why = "not a chained audit line";
    } else if (ch->first && ch->partial) {
        snprintf(ch->prev, sizeof ch->prev, "%s", p);   /* the anchor */
    } else if (strcmp(p, ch->prev) != 0 && ch->after_gap) {
        fprintf(stderr, "lexbus audit verify: line %ld of %s starts the chain again (the lines lost before it "
                "cannot be checked)\n", lineno, path);
        snprintf(ch->prev, sizeof ch->prev, "%s", p);
        ch->resumed++;
    } else if (strcmp(p, ch->prev) != 0) {
        why = "\"prev\" does not match the line before it (edited, removed or reordered)";
    }
    json_decref(j);
    if (why) return why;
    ch->first = ch->after_gap = false;
    ch->lines++;
    unsigned char md[32];
    unsigned int mdlen = 0;
    EVP_Digest(line, n, md, &mdlen, EVP_sha256(), NULL);
    for (int i = 0; i < 32; i++) snprintf(ch->prev + 2 * i, 3, "%02x", md[i]);
    return NULL;
}

/* Checks one file's lines against the running chain.  Returns 0, or 1
 * after printing the first broken line. */
static int audit_verify_file(const char *path, struct chain *ch)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        char msg[300];
        snprintf(msg, sizeof msg, "cannot open %s: %s", path, strerror(errno));
        return fail("NOT_FOUND", msg);
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    long lineno = 0;
    const char *why = NULL;
    char buf[256];
    while (!why && (n = getline(&line, &cap, f)) > 0) {
        lineno++;
        if (line[n - 1] == '\n') line[--n] = 0;
        else if (!ch->partial) why = "the last line is cut off (no newline: a write was interrupted)";
        if (!why) why = verify_line(ch, path, lineno, line, (size_t)n, buf, sizeof buf);
    }
    bool read_error = ferror(f);
    free(line);
    fclose(f);
    if (!why && read_error) why = "read error";
    if (why) {
        char msg[400];
        snprintf(msg, sizeof msg, "line %ld of %s: %s", lineno, path, why);
        return fail("CHAIN_BROKEN", msg);
    }
    return 0;
}

static int cmd_audit(int argc, char **argv)
{
    if (wants_help(argc, argv)) { fputs(usage_audit, stdout); return EXIT_OK; }
    if (argc < 3 || strcmp(argv[1], "verify") != 0) return usage_error(usage_audit, "audit needs: verify FILE...");
    int i = 2;
    struct chain ch = { .first = true };
    if (!strcmp(argv[i], "--partial")) { ch.partial = true; i++; }
    if (i >= argc) return usage_error(usage_audit, "audit verify needs at least one FILE");
    memset(ch.prev, '0', AUDIT_HASH_HEX);
    for (int k = i; k < argc; k++)
        if (audit_verify_file(argv[k], &ch)) return EXIT_REMOTE;
    printf("{\"ok\":true,\"lines\":%ld,\"files\":%d,\"last\":\"%s\"", ch.lines, argc - i, ch.prev);
    if (ch.partial) printf(",\"cut\":%ld,\"lost\":%lld,\"resumed\":%ld", ch.cut, ch.lost, ch.resumed);
    printf("}\n");
    return EXIT_OK;
}

/* ---- main ------------------------------------------------------------- */

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        { "server", required_argument, NULL, 's' },
        { "timeout", required_argument, NULL, 't' },
        { "token", required_argument, NULL, 'k' },
        { "ca", required_argument, NULL, 'C' },
        { "cert", required_argument, NULL, 'E' },
        { "key", required_argument, NULL, 'K' },
        { "insecure", no_argument, NULL, 'I' },
        { "as", required_argument, NULL, 'A' },
        { "encoding", required_argument, NULL, 'N' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    signal(SIGPIPE, SIG_IGN);
    int o;
    /* '+': stop at the command, whose own options follow it. */
    while ((o = getopt_long(argc, argv, "+s:t:k:h", opts, NULL)) != -1) {
        switch (o) {
        case 's': g_opt.url = optarg; break;
        case 't': {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (*end || v <= 0) return usage_error(usage_main, "--timeout takes milliseconds");
            g_timeout_ms = (unsigned)v;
            break;
        }
        case 'k': g_opt.token = optarg; break;
        case 'C': g_opt.tls_ca = optarg; break;
        case 'E': g_opt.tls_cert = optarg; break;
        case 'K': g_opt.tls_key = optarg; break;
        case 'I': g_opt.tls_insecure = true; break;
        case 'A': g_opt.service = optarg; break;
        case 'N':
            if (!strcmp(optarg, "msgpack")) g_opt.encoding = LEXBUS_ENCODING_MSGPACK;
            else if (!strcmp(optarg, "json")) g_opt.encoding = LEXBUS_ENCODING_JSON;
            else return usage_error(usage_main, "--encoding takes json or msgpack");
            break;
        case 'h': fputs(usage_main, stdout); return EXIT_OK;
        default: fputs(usage_main, stderr); return EXIT_USAGE;
        }
    }
    if (optind >= argc) return usage_error(usage_main, "no command given");
    const char *cmd = argv[optind];
    int cargc = argc - optind;
    char **cargv = argv + optind;
    if (!strcmp(cmd, "call")) return cmd_call(cargc, cargv);
    if (!strcmp(cmd, "emit")) return cmd_emit(cargc, cargv);
    if (!strcmp(cmd, "listen")) return cmd_listen(cargc, cargv);
    if (!strcmp(cmd, "serve")) return cmd_serve(cargc, cargv);
    if (!strcmp(cmd, "services")) return cmd_services(cargc, cargv);
    if (!strcmp(cmd, "stats")) return cmd_stats(cargc, cargv);
    if (!strcmp(cmd, "reload")) return cmd_reload(cargc, cargv);
    if (!strcmp(cmd, "audit")) return cmd_audit(cargc, cargv);
    if (!strcmp(cmd, "token")) return cmd_token(cargc, cargv);
    if (!strcmp(cmd, "jsonlex")) return cmd_jsonlex(cargc, cargv);
    if (!strcmp(cmd, "rules")) return cmd_rules(cargc, cargv);
    if (!strcmp(cmd, "crud")) return cmd_crud(cargc, cargv);
    if (!strcmp(cmd, "help")) { fputs(usage_main, stdout); return EXIT_OK; }
    return usage_error(usage_main, "unknown command");
}
