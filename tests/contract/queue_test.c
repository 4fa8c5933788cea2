/* queue_test.c - lifecycle work of one busy sandbox never stalls another
 * (issue 8, "one runtime"), driven through api/api.h on the local backend.
 *
 * Sandbox A runs a process that ignores SIGTERM, so `stop 5` holds A for
 * the whole grace period.  Three more verbs are queued on A behind it;
 * then a verb on sandbox B must complete at once, long before A's stop
 * ends, and A's verbs must complete afterwards in the order they were
 * given.  (Through the mount this cannot be shown with one `ctl` file:
 * the kernel's inode lock lets one write per file reach the daemon at a
 * time; here the verbs reach the backend together.)  With workers that
 * block while a sandbox is busy, the three queued verbs take every
 * worker and B's verb waits for A's stop: ~5 s instead of milliseconds.
 *
 * Then: three sandboxes stopping with a grace period at once do not hold
 * up a fourth (stop waits without a worker), and a sandbox root that is
 * not mounted is mounted again at start-up or, for a file operation, in
 * the background (EBUSY meanwhile), never on the caller's thread.
 *
 * Every sandbox is destroyed and the data dir removed in fini, even when
 * an assertion failed.
 */
#define FUSE_USE_VERSION 34

#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <fuse_opt.h>

#include "api/api.h"

#define QT_WAIT_S 90
#define QT_GRACE "5"	 /* seconds A's stop is held */
#define QT_PROMPT_MS 1500 /* B's verb must be done within this */

struct qt_done {
	pthread_mutex_t *mu;
	pthread_cond_t *cv;
	bool done;
	int err;
	char msg[256];
	double at;  /* seconds since the test began */
	int order; /* completion rank */
};

static pthread_mutex_t qt_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t qt_cv = PTHREAD_COND_INITIALIZER;
static int qt_rank;
static double qt_t0;
static struct api_backend *be;
static char tmpdir[64];
#define QT_NSB 4
static char names[QT_NSB][64];
static bool made[QT_NSB];

static double qt_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void qt_done_cb(void *ud, int err, const char *msg)
{
	struct qt_done *d = ud;

	pthread_mutex_lock(&qt_mu);
	d->err = err;
	if (msg)
		snprintf(d->msg, sizeof(d->msg), "%s", msg);
	d->at = qt_now() - qt_t0;
	d->order = ++qt_rank;
	d->done = true;
	pthread_cond_broadcast(&qt_cv);
	pthread_mutex_unlock(&qt_mu);
}

static void qt_sb_cb(void *ud, int err, const char *msg,
		     const struct api_sandbox *sb)
{
	(void)sb;
	qt_done_cb(ud, err, msg);
}

/* Wait (bounded) for d; false on a hang. */
static bool qt_wait(struct qt_done *d)
{
	struct timespec dl;
	int r = 0;

	clock_gettime(CLOCK_REALTIME, &dl);
	dl.tv_sec += QT_WAIT_S;
	pthread_mutex_lock(&qt_mu);
	while (!d->done && r != ETIMEDOUT)
		r = pthread_cond_timedwait(&qt_cv, &qt_mu, &dl);
	bool done = d->done;
	pthread_mutex_unlock(&qt_mu);
	return done;
}

static int qt_rm(const char *p, const struct stat *st, int type,
		 struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	if (type == FTW_DP)
		rmdir(p);
	else
		unlink(p);
	return 0;
}

static void qt_open(void)
{
	struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
	char src[128];

	snprintf(src, sizeof(src), "local:%s", tmpdir);
	fuse_opt_add_arg(&args, "queue_test");
	fuse_opt_add_arg(&args, "-o");
	fuse_opt_add_arg(&args, "timeout=20");
	int err = api_open(src, &args, &be);
	fuse_opt_free_args(&args);
	cr_assert_eq(err, 0, "api_open(%s): %s", src, strerror(-err));
}

static void qt_setup(void)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/sbxfs-qt-XXXXXX");
	cr_assert(mkdtemp(tmpdir), "mkdtemp: %s", strerror(errno));
	qt_open();
	for (int i = 0; i < QT_NSB; i++)
		snprintf(names[i], sizeof(names[i]), "qt%d-%c", (int)getpid(),
			 'a' + i);
}

static void qt_teardown(void)
{
	for (int i = 0; be && i < QT_NSB; i++) {
		struct qt_done d = {0};
		if (!made[i])
			continue;
		api_sb_verb(be, names[i], API_VERB_DESTROY, NULL, qt_done_cb,
			    &d);
		qt_wait(&d);
	}
	if (be)
		api_close(be);
	be = NULL;
	if (tmpdir[0])
		nftw(tmpdir, qt_rm, 16, FTW_PHYS | FTW_MOUNT | FTW_DEPTH);
}

/* ---- a command that ignores SIGTERM ------------------------------------- */

struct qt_run {
	bool started, exited, ready;
	int serr;
};

static void qt_started(void *ud, int err, const char *msg)
{
	struct qt_run *r = ud;

	(void)msg;
	pthread_mutex_lock(&qt_mu);
	r->started = true;
	r->serr = err;
	pthread_cond_broadcast(&qt_cv);
	pthread_mutex_unlock(&qt_mu);
}

static int qt_output(void *ud, int stream, const void *buf, size_t len)
{
	struct qt_run *r = ud;

	pthread_mutex_lock(&qt_mu);
	if (stream == 1 && memmem(buf, len, "ready", 5))
		r->ready = true;
	pthread_cond_broadcast(&qt_cv);
	pthread_mutex_unlock(&qt_mu);
	return 0;
}

static void qt_exited(void *ud, int code, int err, const char *msg)
{
	struct qt_run *r = ud;

	(void)code;
	(void)err;
	(void)msg;
	pthread_mutex_lock(&qt_mu);
	r->exited = true;
	pthread_cond_broadcast(&qt_cv);
	pthread_mutex_unlock(&qt_mu);
}

static const struct api_exec_cbs qt_cbs = {
	.started = qt_started,
	.output = qt_output,
	.exited = qt_exited,
};

TestSuite(queue, .init = qt_setup, .fini = qt_teardown, .timeout = 240);

static void qt_create(int i)
{
	struct qt_done c = {0};

	api_sb_create(be, names[i], NULL, 0, qt_sb_cb, &c);
	cr_assert(qt_wait(&c), "create %s hung", names[i]);
	cr_assert_eq(c.err, 0, "create %s: %s", names[i], c.msg);
	made[i] = true;
}

/* A process in sandbox i that ignores SIGTERM: `stop GRACE` waits for
 * it the whole grace period.  The shell ends at once; its child stays,
 * orphaned to the sandbox's PID 1.  The command's output ends when that
 * child let go of it, after "ready", i.e. after its trap was set. */
static void qt_stubborn(int i)
{
	static const char *const argv[] = {
		"sh", "-c",
		"(trap '' TERM; echo ready;"
		" exec sleep 1000 </dev/null >/dev/null 2>&1) &",
		NULL};
	struct api_exec_req req = {.argv = argv};
	struct qt_run run = {0};
	struct api_exec *x = NULL;
	struct timespec dl;
	int r = 0;

	api_exec_start(be, names[i], &req, &qt_cbs, &run, &x);
	cr_assert_not_null(x);
	clock_gettime(CLOCK_REALTIME, &dl);
	dl.tv_sec += QT_WAIT_S;
	pthread_mutex_lock(&qt_mu);
	while (!run.exited && r != ETIMEDOUT)
		r = pthread_cond_timedwait(&qt_cv, &qt_mu, &dl);
	bool ready = run.ready;
	pthread_mutex_unlock(&qt_mu);
	api_exec_free(be, x);
	cr_assert(ready, "the TERM-ignoring command did not start in %s",
		  names[i]);
}

Test(queue, busy_sandbox_does_not_stall_others)
{
	struct qt_done stop = {0}, q[3] = {{0}}, b = {0};

	qt_create(0);
	qt_create(1);
	qt_stubborn(0);

	/* A: a stop held for its grace period, then three verbs behind it */
	qt_t0 = qt_now();
	qt_rank = 0;
	api_sb_verb(be, names[0], API_VERB_STOP, QT_GRACE, qt_done_cb, &stop);
	api_sb_verb(be, names[0], API_VERB_PING, NULL, qt_done_cb, &q[0]);
	api_sb_verb(be, names[0], API_VERB_START, NULL, qt_done_cb, &q[1]);
	api_sb_verb(be, names[0], API_VERB_PING, NULL, qt_done_cb, &q[2]);
	/* B: must not wait for any of that */
	api_sb_verb(be, names[1], API_VERB_PING, NULL, qt_done_cb, &b);
	cr_assert(qt_wait(&b), "ping of B hung");
	cr_assert_eq(b.err, 0, "ping of B: %s", b.msg);
	cr_log_info("ping of B done after %.3f s", b.at);
	cr_expect_lt(b.at * 1000, QT_PROMPT_MS,
		     "ping of B took %.3f s while A was busy: it waited for "
		     "A's work", b.at);
	cr_expect_eq(b.order, 1, "ping of B finished after A's stop");

	cr_assert(qt_wait(&stop), "stop of A hung");
	cr_expect_eq(stop.err, 0, "stop of A: %s", stop.msg);
	cr_expect_gt(stop.at, 4.0, "stop of A took only %.3f s: the command "
		     "did not hold it for the grace period", stop.at);
	for (int i = 0; i < 3; i++)
		cr_assert(qt_wait(&q[i]), "verb %d queued on A hung", i);
	cr_log_info("stop %.3f s; then %.3f %.3f %.3f s", stop.at, q[0].at,
		    q[1].at, q[2].at);
	/* in the order given, each after the stop */
	cr_expect_lt(stop.order, q[0].order);
	cr_expect_lt(q[0].order, q[1].order);
	cr_expect_lt(q[1].order, q[2].order);
	/* ping of a stopped sandbox: EBUSY; start: ok; ping: running */
	cr_expect_eq(q[0].err, -EBUSY, "ping after stop: %d %s", q[0].err,
		     q[0].msg);
	cr_expect_eq(q[1].err, 0, "start after stop: %s", q[1].msg);
	cr_expect_eq(q[2].err, 0, "ping after start: %s", q[2].msg);
}

/* Three sandboxes stopping with a grace period at once (as many as there
 * were blocking workers) must not hold up a fourth: stop waits for the
 * processes to end without holding a worker. */
Test(queue, stops_hold_no_worker)
{
	struct qt_done stop[3] = {{0}}, d = {0};

	for (int i = 0; i < QT_NSB; i++)
		qt_create(i);
	for (int i = 0; i < 3; i++)
		qt_stubborn(i);
	qt_t0 = qt_now();
	qt_rank = 0;
	for (int i = 0; i < 3; i++)
		api_sb_verb(be, names[i], API_VERB_STOP, QT_GRACE, qt_done_cb,
			    &stop[i]);
	api_sb_verb(be, names[3], API_VERB_PING, NULL, qt_done_cb, &d);
	cr_assert(qt_wait(&d), "ping of D hung");
	cr_assert_eq(d.err, 0, "ping of D: %s", d.msg);
	cr_log_info("ping of D done after %.3f s", d.at);
	cr_expect_lt(d.at * 1000, QT_PROMPT_MS,
		     "ping of D took %.3f s while A, B, C were stopping",
		     d.at);
	for (int i = 0; i < 3; i++) {
		cr_assert(qt_wait(&stop[i]), "stop %d hung", i);
		cr_expect_eq(stop[i].err, 0, "stop %d: %s", i, stop[i].msg);
		cr_expect_gt(stop[i].at, 4.0, "stop %d took only %.3f s", i,
			     stop[i].at);
	}
}

/* ---- roots that are not mounted ----------------------------------------- */

struct qt_stat {
	bool done;
	int err;
	char msg[256];
};

static void qt_stat_cb(void *ud, int err, const char *msg,
		       const struct stat *st)
{
	struct qt_stat *q = ud;

	(void)st;
	pthread_mutex_lock(&qt_mu);
	q->err = err;
	snprintf(q->msg, sizeof(q->msg), "%s", msg ? msg : "");
	q->done = true;
	pthread_cond_broadcast(&qt_cv);
	pthread_mutex_unlock(&qt_mu);
}

/* stat of /etc/os-release in sandbox i; its error */
static int qt_stat(int i, char *msg, size_t len)
{
	struct qt_stat q = {0};
	struct timespec dl;
	int r = 0;

	api_file_stat(be, names[i], "/etc/os-release", qt_stat_cb, &q);
	clock_gettime(CLOCK_REALTIME, &dl);
	dl.tv_sec += QT_WAIT_S;
	pthread_mutex_lock(&qt_mu);
	while (!q.done && r != ETIMEDOUT)
		r = pthread_cond_timedwait(&qt_cv, &qt_mu, &dl);
	pthread_mutex_unlock(&qt_mu);
	cr_assert(q.done, "stat hung");
	if (msg)
		snprintf(msg, len, "%s", q.msg);
	return q.err;
}

static bool qt_root_mounted(int i)
{
	char root[PATH_MAX];
	struct statfs sf;

	snprintf(root, sizeof(root), "%s/sandboxes/%s/root", tmpdir,
		 names[i]);
	return statfs(root, &sf) == 0 && sf.f_type == 0x794c7630;
}

static void qt_unmount_root(int i)
{
	char root[PATH_MAX];

	snprintf(root, sizeof(root), "%s/sandboxes/%s/root", tmpdir,
		 names[i]);
	cr_assert(qt_root_mounted(i));
	cr_assert_eq(umount2(root, MNT_DETACH), 0, "umount %s: %s", root,
		     strerror(errno));
	cr_assert(!qt_root_mounted(i));
}

/* A root unmounted behind our back: the file operation answers EBUSY at
 * once (no mount on its thread) and the root is mounted again in the
 * background; then files are there again. */
Test(queue, file_op_remounts_in_background)
{
	char msg[256];
	int err, n = 0;

	qt_create(0);
	cr_assert_eq(qt_stat(0, NULL, 0), 0);
	/* the cached root descriptor still reaches the detached overlay:
	 * start over with a fresh backend, which mounts every root at
	 * start-up, then unmount it */
	api_close(be);
	be = NULL;
	qt_open();
	qt_unmount_root(0);
	err = qt_stat(0, msg, sizeof(msg));
	cr_expect_eq(err, -EBUSY, "stat of an unmounted root: %d %s", err,
		     msg);
	cr_log_info("first stat: %d %s", err, msg);
	/* mounted again by the runtime: poll for it, bounded */
	for (int64_t end = (int64_t)qt_now() + 20;
	     !qt_root_mounted(0) && qt_now() < end; n++) {
		struct timespec ts = {0, 10 * 1000000};
		nanosleep(&ts, NULL);
	}
	cr_assert(qt_root_mounted(0), "the root was not mounted again");
	cr_expect_eq(qt_stat(0, msg, sizeof(msg)), 0, "stat: %s", msg);
}

/* A root unmounted while sbxfs was away (a reboot): mounted again when
 * the backend starts, before any file operation. */
Test(queue, startup_remounts_roots)
{
	char msg[256];

	qt_create(0);
	api_close(be);
	be = NULL;
	qt_unmount_root(0);
	qt_open();
	cr_expect(qt_root_mounted(0), "root not mounted at start-up");
	cr_expect_eq(qt_stat(0, msg, sizeof(msg)), 0, "stat: %s", msg);
}
