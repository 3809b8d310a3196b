#include "config.h"
#include <stdlib.h>
#include <string.h>
#include "plugin_host.h"
#include "state.h"
#include "util.h"

struct kv {
    struct ht_node node;
    char *key;                   /* "<plugin>\0<key>" flattened as "<plugin>/<key>" */
    char *val;
    size_t len;
    uint64_t expires_ms;         /* 0 = never */
};

static struct htable g_kv;
static bool g_init;

static bool kv_eq(const struct ht_node *n, const void *key)
{
    return strcmp(container_of(n, struct kv, node)->key, key) == 0;
}

static char *full_key(struct lb_plugin_ctx *ctx, const char *key)
{
    size_t n = strlen(ctx->name) + strlen(key) + 2;
    char *k = xmalloc(n);
    strcpy(k, ctx->name);
    strcat(k, "/");
    strcat(k, key);
    return k;
}

static void kv_free(struct kv *e)
{
    free(e->key);
    free(e->val);
    free(e);
}

static struct kv *lookup(const char *k)
{
    if (!g_init) { ht_init(&g_kv, 64); g_init = true; }
    struct ht_node *n = ht_find(&g_kv, hash_bytes(k, strlen(k)), kv_eq, k);
    if (!n) return NULL;
    struct kv *e = container_of(n, struct kv, node);
    if (e->expires_ms && e->expires_ms <= now_ms()) {
        ht_remove(&g_kv, &e->node);
        kv_free(e);
        return NULL;
    }
    return e;
}

int lb_state_set(struct lb_plugin_ctx *ctx, const char *key, const char *value, size_t len, uint64_t ttl_ms)
{
    char *k = full_key(ctx, key);
    struct kv *e = lookup(k);
    if (!e) {
        e = xcalloc(1, sizeof *e);
        e->key = k;
        ht_insert(&g_kv, &e->node, hash_bytes(k, strlen(k)));
    } else {
        free(k);
        free(e->val);
    }
    e->val = xmalloc(len + 1);
    memcpy(e->val, value, len);
    e->val[len] = 0;
    e->len = len;
    e->expires_ms = ttl_ms ? now_ms() + ttl_ms : 0;
    return 0;
}

const char *lb_state_get(struct lb_plugin_ctx *ctx, const char *key, size_t *len)
{
    char *k = full_key(ctx, key);
    struct kv *e = lookup(k);
    free(k);
    if (!e) return NULL;
    if (len) *len = e->len;
    return e->val;
}

int lb_state_del(struct lb_plugin_ctx *ctx, const char *key)
{
    char *k = full_key(ctx, key);
    struct kv *e = lookup(k);
    free(k);
    if (!e) return -1;
    ht_remove(&g_kv, &e->node);
    kv_free(e);
    return 0;
}

static void free_cb(struct ht_node *n, void *ud) { (void)ud; kv_free(container_of(n, struct kv, node)); }

void state_free_all(void)
{
    if (!g_init) return;
    ht_each(&g_kv, free_cb, NULL);
    ht_free(&g_kv);
    g_init = false;
}
