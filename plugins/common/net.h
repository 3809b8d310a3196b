/*
 * Addresses for the TCP transports (tls-tcp, websocket): `listen` values,
 * printable peer addresses, and a count of sockets per peer address so
 * that one host cannot take every handshake slot.
 */
#ifndef LB_COMMON_NET_H
#define LB_COMMON_NET_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* "127.0.0.1:7443", "[::1]:7443", "localhost:7443": numeric addresses only
 * (no DNS lookups at start-up).  Returns 0, or -1 when malformed. */
int net_parse_listen(const char *s, struct sockaddr_storage *ss, socklen_t *len);
/* "1.2.3.4:5" or "[::1]:5" ("?" for other families). */
void net_format_addr(const struct sockaddr *sa, char *out, size_t len);
/* The address a listening socket is bound to, as net_format_addr writes it
 * (`listen = ...:0` picks a port: the log says which); `fallback` (the
 * configured value) when the kernel cannot say. */
void net_format_bound(int fd, const char *fallback, char *out, size_t len);

/* Sockets counted per address: an IPv4 address (also IPv4-mapped) or the
 * /64 of an IPv6 address (one host commonly has a whole /64). */
#define NET_ADDR_KEY 9
#define NET_ADDR_BUCKETS 256
struct net_addr_count {
    unsigned char key[NET_ADDR_KEY];
    unsigned n;
    struct net_addr_count *next;
};
struct net_addr_table {
    struct net_addr_count *b[NET_ADDR_BUCKETS];
    uint64_t seed;               /* random: bucket choice cannot be aimed at */
};
void net_addr_key(const struct sockaddr *sa, unsigned char key[NET_ADDR_KEY]);
/* Seeds the table from the kernel's randomness. */
void net_addr_table_init(struct net_addr_table *t);
unsigned net_addr_count(struct net_addr_table *t, const unsigned char key[NET_ADDR_KEY]);
/* One more socket from key; NULL when out of memory. */
struct net_addr_count *net_addr_acquire(struct net_addr_table *t, const unsigned char key[NET_ADDR_KEY]);
void net_addr_release(struct net_addr_table *t, struct net_addr_count *ac);
void net_addr_table_free(struct net_addr_table *t);
#endif
