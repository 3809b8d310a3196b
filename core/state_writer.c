#include "config.h"
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include "state_writer.h"

/* Everything below is shared by the loop thread and the writer thread
 * and only touched under g_mu. */
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_work = PTHREAD_COND_INITIALIZER;   /* a snapshot was queued, or stop */
static pthread_cond_t g_done = PTHREAD_COND_INITIALIZER;   /* a write finished */
static pthread_t g_thread;
static bool g_running, g_stop, g_writing;
static char *g_path;                 /* set once, before the thread starts */
static char *g_buf;                  /* the queued snapshot, or NULL */
static size_t g_len;
static uint64_t g_gen;               /* its generation */
static uint64_t g_done_gen;          /* the last finished write */
static int g_done_err;

static int write_all(int fd, const char *buf, size_t len)
{
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(fd, buf + off, len - off);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) return -1;
        off += (size_t)w;
    }
    return 0;
}

/* fsync of the directory makes the rename itself survive a crash. */
static int sync_dir(const char *path)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash) *(slash == dir ? slash + 1 : slash) = 0;
    else snprintf(dir, sizeof dir, ".");
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) return -1;
    int rc = fsync(dfd), saved = errno;
    close(dfd);
    errno = saved;
    return rc;
}

/* Temp file (0600: plugins keep revocations and such here), fsync,
 * rename over the old file, fsync the directory.  A crash at any point
 * leaves either the old file or the new one, never a torn one. */
static int write_durably(const char *path, const char *buf, size_t len)
{
    char tmp[4096];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", path) >= sizeof tmp) { errno = ENAMETOOLONG; return -1; }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) return -1;
    int rc = fchmod(fd, 0600);           /* a temp file left by an older run may be wider */
    if (!rc) rc = write_all(fd, buf, len);
    if (!rc) rc = fsync(fd);
    int saved = errno;
    close(fd);
    if (!rc) rc = rename(tmp, path);
    else { unlink(tmp); errno = saved; }
    return rc ? -1 : sync_dir(path);
}

static void *writer(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&g_mu);
    for (;;) {
        while (!g_buf && !g_stop) pthread_cond_wait(&g_work, &g_mu);
        if (!g_buf) break;                       /* stop, and nothing left to write */
        char *buf = g_buf;
        size_t len = g_len;
        uint64_t gen = g_gen;
        g_buf = NULL;
        g_writing = true;
        pthread_mutex_unlock(&g_mu);
        /* The disk may be slow: only this thread waits for it, never
         * while holding the lock the loop thread queues under. */
        int err = write_durably(g_path, buf, len) == 0 ? 0 : errno;
        free(buf);
        pthread_mutex_lock(&g_mu);
        g_writing = false;
        g_done_gen = gen;
        g_done_err = err;
        pthread_cond_broadcast(&g_done);
    }
    pthread_mutex_unlock(&g_mu);
    return NULL;
}

static int start_locked(const char *path)
{
    if (g_running) return 0;
    free(g_path);
    g_path = strdup(path);
    if (!g_path) { errno = ENOMEM; return -1; }
    g_stop = false;
    int rc = pthread_create(&g_thread, NULL, writer, NULL);
    if (rc) { errno = rc; return -1; }
    g_running = true;
    return 0;
}

int state_writer_submit(const char *path, char *buf, size_t len, uint64_t gen)
{
    pthread_mutex_lock(&g_mu);
    int rc = start_locked(path), saved = errno;
    if (rc) {
        free(buf);
    } else {
        free(g_buf);                 /* not written yet: this newer snapshot covers it */
        g_buf = buf;
        g_len = len;
        g_gen = gen;
        pthread_cond_signal(&g_work);
    }
    pthread_mutex_unlock(&g_mu);
    errno = saved;
    return rc;
}

int state_writer_wait(uint64_t gen)
{
    pthread_mutex_lock(&g_mu);
    while (g_running && g_done_gen < gen) pthread_cond_wait(&g_done, &g_mu);
    int err = g_done_gen >= gen ? g_done_err : EIO;
    pthread_mutex_unlock(&g_mu);
    errno = err;
    return err ? -1 : 0;
}

void state_writer_status(uint64_t *gen, int *err, int *busy)
{
    pthread_mutex_lock(&g_mu);
    *gen = g_done_gen;
    *err = g_done_err;
    *busy = g_buf || g_writing;
    pthread_mutex_unlock(&g_mu);
}

void state_writer_stop(void)
{
    pthread_mutex_lock(&g_mu);
    bool running = g_running;
    g_stop = true;
    pthread_cond_signal(&g_work);
    pthread_mutex_unlock(&g_mu);
    if (running) pthread_join(g_thread, NULL);
    pthread_mutex_lock(&g_mu);
    g_running = false;
    free(g_buf);
    g_buf = NULL;
    free(g_path);
    g_path = NULL;
    pthread_mutex_unlock(&g_mu);
}
