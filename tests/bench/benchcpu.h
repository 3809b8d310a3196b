/*
 * CPU accounting for the benchmark programs (lbbench, lbclient): how much
 * CPU each client process and the broker used during a run, so a figure
 * bound by the load generator rather than the broker is visible.
 * Header-only (static functions): each program is one translation unit.
 */
#ifndef LB_BENCHCPU_H
#define LB_BENCHCPU_H
#include <dirent.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

static inline double bc_tv_s(struct timeval t) { return (double)t.tv_sec + (double)t.tv_usec / 1e6; }

/* This process's user + system seconds so far. */
static inline double bc_self_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return bc_tv_s(ru.ru_utime) + bc_tv_s(ru.ru_stime);
}

/* Waits for child `pid` to end; its user + system seconds (-1 if wait4
 * fails).  *status gets its wait status when not NULL. */
static inline double bc_reap_s(pid_t pid, int *status)
{
    struct rusage ru;
    int st;
    if (wait4(pid, &st, 0, &ru) < 0) return -1;
    if (status) *status = st;
    return bc_tv_s(ru.ru_utime) + bc_tv_s(ru.ru_stime);
}

/* Another process's CPU seconds over all its threads, -1 if unreadable:
 * the scheduler's run time per thread (/proc/PID/task/T/schedstat, ns)
 * rather than /proc/PID/stat, whose 10 ms ticks are too coarse for a
 * round-trip run.  Threads that end between two readings drop out. */
static inline double bc_process_s(pid_t pid)
{
    if (pid <= 0) return -1;
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
    DIR *d = opendir(path);
    if (!d) return -1;
    unsigned long long total = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        char f[384];
        snprintf(f, sizeof f, "%s/%s/schedstat", path, de->d_name);
        FILE *fp = fopen(f, "r");
        unsigned long long ns;
        if (fp && fscanf(fp, "%llu", &ns) == 1) total += ns;
        if (fp) fclose(fp);
    }
    closedir(d);
    return (double)total / 1e9;
}

/* CPU seconds the whole machine spent busy so far (all CPUs; user, nice,
 * system, irq, softirq from /proc/stat; not steal): set against what the
 * broker and the clients used, the rest is other load on the machine. */
static inline double bc_machine_busy_s(void)
{
    FILE *f = fopen("/proc/stat", "r");
    unsigned long long us, ni, sy, id, io, irq, sirq;
    int n = f ? fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu", &us, &ni, &sy, &id, &io, &irq, &sirq) : 0;
    if (f) fclose(f);
    if (n != 7) return -1;
    return (double)(us + ni + sy + irq + sirq) / (double)sysconf(_SC_CLK_TCK);
}

/* ,"key":P with P the CPU share in percent of one core, or null. */
static inline void bc_put_pct(const char *key, double cpu_s, double wall_s)
{
    if (cpu_s < 0 || wall_s <= 0) printf(",\"%s\":null", key);
    else printf(",\"%s\":%.1f", key, 100.0 * cpu_s / wall_s);
}
#endif
