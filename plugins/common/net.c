#include "config.h"
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/rand.h>
#include "net.h"

int net_parse_listen(const char *s, struct sockaddr_storage *ss, socklen_t *len)
{
    char host[128];
    const char *colon;
    if (s[0] == '[') {
        const char *end = strchr(s, ']');
        if (!end || end[1] != ':' || (size_t)(end - s - 1) >= sizeof host) return -1;
        memcpy(host, s + 1, (size_t)(end - s - 1));
        host[end - s - 1] = 0;
        colon = end + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon || (size_t)(colon - s) >= sizeof host || memchr(s, ':', (size_t)(colon - s))) return -1;
        memcpy(host, s, (size_t)(colon - s));
        host[colon - s] = 0;
    }
    char *end;
    errno = 0;
    long port = strtol(colon + 1, &end, 10);
    if (!colon[1] || *end || errno || port < 0 || port > 65535) return -1;
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t)port);
        *len = sizeof *in4;
    } else if (s[0] == '[' && inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        *len = sizeof *in6;
    } else if (!strcmp(host, "localhost")) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t)port);
        in4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        *len = sizeof *in4;
    } else {
        return -1;   /* numeric addresses only: no DNS lookups at start-up */
    }
    return 0;
}

void net_format_addr(const struct sockaddr *sa, char *out, size_t len)
{
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (sa->sa_family == AF_INET) {
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, host, sizeof host);
        port = ntohs(((const struct sockaddr_in *)sa)->sin_port);
        snprintf(out, len, "%s:%d", host, port);
    } else if (sa->sa_family == AF_INET6) {
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, host, sizeof host);
        port = ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
        snprintf(out, len, "[%s]:%d", host, port);
    } else {
        snprintf(out, len, "?");
    }
}

void net_format_bound(int fd, const char *fallback, char *out, size_t len)
{
    struct sockaddr_storage bound;
    socklen_t bl = sizeof bound;
    if (getsockname(fd, (struct sockaddr *)&bound, &bl) == 0)
        net_format_addr((struct sockaddr *)&bound, out, len);
    else
        snprintf(out, len, "%s", fallback);
}

/* The key an address is counted under: IPv4 (also as an IPv4-mapped IPv6
 * address) or the /64 of an IPv6 address. */
void net_addr_key(const struct sockaddr *sa, unsigned char key[NET_ADDR_KEY])
{
    memset(key, 0, NET_ADDR_KEY);
    if (sa->sa_family == AF_INET) {
        key[0] = 4;
        memcpy(key + 1, &((const struct sockaddr_in *)sa)->sin_addr, 4);
        return;
    }
    const struct in6_addr *a6 = &((const struct sockaddr_in6 *)sa)->sin6_addr;
    if (sa->sa_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(a6)) {
        key[0] = 4;
        memcpy(key + 1, a6->s6_addr + 12, 4);
    } else if (sa->sa_family == AF_INET6) {
        key[0] = 6;
        memcpy(key + 1, a6->s6_addr, 8);
    }
}

static struct net_addr_count **slot(struct net_addr_table *t, const unsigned char key[NET_ADDR_KEY])
{
    uint64_t h = 1469598103934665603ull ^ t->seed;   /* FNV-1a, seeded */
    for (int i = 0; i < NET_ADDR_KEY; i++) { h ^= key[i]; h *= 1099511628211ull; }
    struct net_addr_count **pp = &t->b[h % NET_ADDR_BUCKETS];
    while (*pp && memcmp((*pp)->key, key, NET_ADDR_KEY)) pp = &(*pp)->next;
    return pp;   /* the entry, or the end of its chain */
}

unsigned net_addr_count(struct net_addr_table *t, const unsigned char key[NET_ADDR_KEY])
{
    struct net_addr_count *ac = *slot(t, key);
    return ac ? ac->n : 0;
}

struct net_addr_count *net_addr_acquire(struct net_addr_table *t, const unsigned char key[NET_ADDR_KEY])
{
    struct net_addr_count **pp = slot(t, key);
    if (!*pp) {
        if (!(*pp = calloc(1, sizeof **pp))) return NULL;
        memcpy((*pp)->key, key, NET_ADDR_KEY);
    }
    (*pp)->n++;
    return *pp;
}

void net_addr_release(struct net_addr_table *t, struct net_addr_count *ac)
{
    if (--ac->n) return;
    struct net_addr_count **pp = slot(t, ac->key);
    *pp = ac->next;
    free(ac);
}

void net_addr_table_init(struct net_addr_table *t)
{
    memset(t, 0, sizeof *t);
    if (RAND_bytes((unsigned char *)&t->seed, sizeof t->seed) != 1) t->seed = (uint64_t)(uintptr_t)t;
}

void net_addr_table_free(struct net_addr_table *t)
{
    for (int i = 0; i < NET_ADDR_BUCKETS; i++) {
        while (t->b[i]) {
            struct net_addr_count *n = t->b[i]->next;
            free(t->b[i]);
            t->b[i] = n;
        }
    }
}
