#include "config.h"
#include <arpa/inet.h>
#include <string.h>
#include <lexbus/plugin.h>
#include <lexbus/protocol.h>
#include "frame.h"

enum frame_status frame_peek(struct evbuffer *in, uint64_t max_frame, uint32_t *len)
{
    size_t avail = evbuffer_get_length(in);
    if (avail < LB_FRAME_HEADER) return FRAME_NEED_MORE;
    uint32_t be;
    evbuffer_copyout(in, &be, sizeof be);
    *len = ntohl(be);
    if (*len == 0) return FRAME_ZERO;
    if (*len > max_frame) return FRAME_TOO_LARGE;
    return avail - LB_FRAME_HEADER >= *len ? FRAME_READY : FRAME_NEED_MORE;
}

int lb_frame_write(struct evbuffer *out, const struct iovec *iov, int iovcnt)
{
    size_t total = 0;
    for (int i = 0; i < iovcnt; i++) total += iov[i].iov_len;
    if (total == 0 || total > UINT32_MAX) return -1;
    /* One reservation and one commit for prefix and body: each evbuffer_add
     * is a round of bookkeeping and callbacks, and a fan-out does this once
     * per recipient. */
    struct evbuffer_iovec v;
    if (evbuffer_reserve_space(out, (ssize_t)(LB_FRAME_HEADER + total), &v, 1) != 1) return -1;
    uint32_t be = htonl((uint32_t)total);
    char *o = v.iov_base;
    memcpy(o, &be, sizeof be);
    o += sizeof be;
    for (int i = 0; i < iovcnt; i++) {
        memcpy(o, iov[i].iov_base, iov[i].iov_len);
        o += iov[i].iov_len;
    }
    v.iov_len = LB_FRAME_HEADER + total;
    return evbuffer_commit_space(out, &v, 1) == 0 ? 0 : -1;
}
