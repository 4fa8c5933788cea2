/* harness.h - mount-test harness: mount sbxfs for real in a temporary
 * directory, drive it with shell command lines, clean up even on failure.
 *
 * Environment:
 *   SBXFS_BIN          the sbxfs binary (meson sets it; else "sbxfs")
 *   SBXFS_TEST_SOURCE  SOURCE to mount instead of "local:TMP/data", e.g.
 *                      "wrenn:http://127.0.0.1:PORT" (key from the
 *                      backend's own environment variables)
 *   SBXFS_TEST_OPTS    extra -o options appended to every mount
 *   SBXFS_TEST_TMP     base directory for the temp dirs (default /tmp);
 *                      tools/test.sh sets one per run and sweeps it
 *   SBXFS_TEST_KEEP    non-empty: keep the temp dir (logs) after the test
 *
 * With a fresh local data dir per test, tests run in parallel.  With a
 * shared SBXFS_TEST_SOURCE they would collide on sandbox names, so
 * mnt_start takes an exclusive lock (TMP/sbxfs-mt-shared.lock) that
 * mnt_stop, or the death of the test process, releases.
 *
 * Usage with criterion fixtures (one mount per test, so a failing test
 * cannot leave state for the next one):
 *
 *	static struct mnt m;
 *	static void setup(void)
 *	{
 *		cr_assert_eq(mnt_start(&m, NULL, NULL), 0, "mount failed");
 *	}
 *	static void teardown(void) { mnt_teardown(&m); }
 *	TestSuite(walk, .init = setup, .fini = teardown, .timeout = 180);
 *
 *	Test(walk, hello)
 *	{
 *		struct sh_out o = sh_run("mkdir box && head -1 box/status");
 *		SH_OK(o);
 *		cr_assert_str_eq(o.out, "running\n");
 *	}
 *
 * criterion runs .fini after a failed assertion; for a worker killed by a
 * signal (timeout, crash) the harness also installs SIGTERM/SIGINT/SIGHUP
 * handlers and an atexit hook, and sbxfs itself gets SIGTERM when the test
 * process dies (PR_SET_PDEATHSIG), which unmounts.  What still escapes
 * (SIGKILL of everything) is swept by tools/test.sh.
 */
#ifndef SBXFS_TEST_HARNESS_H
#define SBXFS_TEST_HARNESS_H

#include <stdbool.h>
#include <sys/types.h>

#define MNT_PATH_MAX 256
#define MNT_MAX_BASELINE 64

struct mnt {
	char dir[MNT_PATH_MAX];	    /* the test's temp dir (mkdtemp) */
	char datadir[MNT_PATH_MAX]; /* local backend data dir; "" when the
				       source is not local */
	char mnt[MNT_PATH_MAX];	    /* mount point, dir/mnt */
	char log[MNT_PATH_MAX];	    /* sbxfs stdout+stderr, dir/sbxfs.log */
	char source[512];	    /* SOURCE as passed to sbxfs */
	char opts[512];		    /* -o options, "" when none */
	pid_t pid;		    /* the sbxfs -f child, 0 when none */
	bool mounted;
	bool own_datadir;	    /* datadir is ours: remove it at stop */
	int lockfd;		    /* shared source: serialises tests */
	int nbase;		    /* sandboxes present at first mount: */
	char base[MNT_MAX_BASELINE][128]; /* never destroyed by mnt_stop */
};

/* Create the temp dir and mount.  source NULL: SBXFS_TEST_SOURCE or
 * "local:" + a fresh data dir.  extra_opts: -o options or NULL.  Waits (at
 * most 10 s) until the mount is live.  Makes m the current mount for
 * sh_run.  Returns 0 or -errno (the log tail is printed to stderr). */
int mnt_start(struct mnt *m, const char *source, const char *extra_opts);

/* Unmount (fusermount3 -u, -uz if busy) and end the sbxfs process, then
 * mount again with the same source and options: sandboxes persist.
 * Returns 0, -errno, or sbxfs's nonzero exit status (then not mounted). */
int mnt_remount(struct mnt *m);

/* Unmount only, leaving sandboxes and the temp dir; returns sbxfs's exit
 * status (0 clean, >0 its exit code, 128+N killed by signal N), or -errno.
 * Safe to call twice. */
int mnt_umount(struct mnt *m);

/* Destroy the sandboxes the test created (through the mount; for a local
 * data dir also by force: thaw+kill its processes, detach its mounts),
 * unmount, kill sbxfs, remove the temp dir.  Idempotent.  Returns sbxfs's
 * exit status as mnt_umount (nonzero also when sanitizers reported at
 * exit), or -errno. */
int mnt_stop(struct mnt *m);

/* mnt_stop for a criterion .fini: when sbxfs did not end cleanly (crash,
 * sanitizer report, no exit after unmount) the worker exits 1, which
 * criterion reports as "exited during its setup or teardown" and the
 * runner's exit status turns into a failure. */
void mnt_teardown(struct mnt *m);

/* Result of one command line.  out/err are NUL-terminated (binary output
 * is cut at the first NUL only by string functions; out_len is exact). */
struct sh_out {
	int status; /* exit code; 128+N if killed by N; 124 on timeout */
	char *cmd;  /* the command line, for messages */
	char *out;
	char *err;
	size_t out_len, err_len;
};

/* Run `/bin/sh -c CMD` with cwd = the current mount, stdin /dev/null,
 * environment MNT=mount point, TMPD=test temp dir, DATA=data dir ("" if
 * not local).  Bounded: 60 s, then the whole process group is killed.
 * Output is capped at 64 MiB per stream.  The strings are owned by the
 * harness (kept until the test process ends; sh_free frees earlier).
 * sh_run returns when stdout and stderr reach EOF: a background process
 * started by CMD must redirect them, or sh_run waits for it (bounded). */
struct sh_out sh_run(const char *fmt, ...)
	__attribute__((format(printf, 1, 2)));
/* Same with a bound of `secs` seconds. */
struct sh_out sh_run_t(int secs, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void sh_free(struct sh_out *o);

/* The current mount (the last one started). */
struct mnt *mnt_cur(void);

/* Host-side view of a local sandbox: PIDs of processes living in it (its
 * overlay root in their mount table, or its freezer cgroup).  Returns the
 * count (may exceed max; only max stored), or -errno; -EOPNOTSUPP when the
 * mount is not of a local data dir. */
int mnt_sandbox_pids(const struct mnt *m, const char *name, pid_t *pids,
		     int max);

/* Host path of a sandbox's on-disk dir, DATA/sandboxes/NAME (local only;
 * "" otherwise).  Returns buf. */
char *mnt_sandbox_dir(const struct mnt *m, const char *name, char *buf,
		      size_t len);

/* Last `lines` lines of the sbxfs log, malloc'd (never NULL). */
char *mnt_log_tail(const struct mnt *m, int lines);

/* Wait (at most ms) until thread tid of process pid is blocked in one of
 * the n system calls nrs (SYS_read, SYS_poll...), read from
 * /proc/PID/task/TID/syscall: a condition to wait on instead of sleeping
 * "long enough" for a request to be parked.  true when it is. */
bool mnt_task_in_syscall(pid_t pid, pid_t tid, const long *nrs, int n,
			 long ms);

/* Assert that a command succeeded, printing what it said if not. */
#define SH_OK(o)                                                           \
	cr_assert_eq((o).status, 0,                                        \
		     "`%s` exited %d\n--- stdout:\n%s\n--- stderr:\n%s",   \
		     (o).cmd, (o).status, (o).out, (o).err)
/* Assert that a command failed. */
#define SH_FAILS(o)                                                        \
	cr_assert_neq((o).status, 0,                                       \
		      "`%s` should have failed\n--- stdout:\n%s\n"         \
		      "--- stderr:\n%s",                                   \
		      (o).cmd, (o).out, (o).err)

#endif
