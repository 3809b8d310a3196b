/* The state file's writer thread: takes serialised snapshots from the
 * loop thread and writes each durably (temp file 0600, fsync, rename,
 * fsync of the directory), so no fsync ever runs on the event loop.
 * Snapshots are numbered by the loop thread's change counter; a snapshot
 * queued while another waits replaces it (the newer one covers both). */
#ifndef LB_STATE_WRITER_H
#define LB_STATE_WRITER_H
#include <stddef.h>
#include <stdint.h>

/* Queues buf (malloc'd, taken) as the snapshot of generation gen.  The
 * thread starts on the first call: after lexbusd -d has forked.  Returns
 * 0, or -1 with errno if the thread cannot start (buf is freed). */
int state_writer_submit(const char *path, char *buf, size_t len, uint64_t gen);
/* Blocks until a snapshot of generation >= gen has been written or has
 * failed.  Returns 0, or -1 with errno of the failed write. */
int state_writer_wait(uint64_t gen);
/* Without blocking: the generation of the last finished write (0 if
 * none), its errno (0 = written), and whether a snapshot is still queued
 * or being written. */
void state_writer_status(uint64_t *gen, int *err, int *busy);
/* Writes what is queued, then stops and joins the thread. */
void state_writer_stop(void);
#endif
