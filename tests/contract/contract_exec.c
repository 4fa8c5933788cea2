/* contract_exec.c - backend contract for exec_*, written against api.h. */

/*
 * Every test gets its own backend (SBXFS_TEST_SOURCE, default local on a
 * fresh temporary data directory) and its own sandbox, destroyed in the
 * fixture's fini even when an assertion failed.  Callbacks arrive on
 * backend threads; the helpers below turn them into blocking calls with a
 * bound (CX_WAIT_S), so a broken backend fails a test instead of hanging.
 *
 * "command not found" may be reported either way a backend chooses: as
 * started(-ENOENT) (the local backend) or as exit code 127 (a shell).
 */

#define FUSE_USE_VERSION 34

#include <errno.h>
#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <fuse_opt.h>

#include "api/api.h"

#define CX_WAIT_S 60
#define CX_OUT_CAP (64u << 20)
#define CX_TMP_PREFIX "/tmp/sbxfs-cx-"

/* ---- blocking helpers ---------------------------------------------------- */

struct cx_done {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool done;
	int err;
	char msg[256];
	char id[API_ID_MAX];
};

static void cx_done_init(struct cx_done *d)
{
	memset(d, 0, sizeof(*d));
	pthread_mutex_init(&d->mu, NULL);
	pthread_cond_init(&d->cv, NULL);
}

static void cx_deadline(struct timespec *ts, int secs)
{
	clock_gettime(CLOCK_REALTIME, ts);
	ts->tv_sec += secs;
}

static void cx_finish(struct cx_done *d, int err, const char *msg)
{
	pthread_mutex_lock(&d->mu);
	d->err = err;
	if (msg)
		snprintf(d->msg, sizeof(d->msg), "%s", msg);
	d->done = true;
	pthread_cond_broadcast(&d->cv);
	pthread_mutex_unlock(&d->mu);
}

static void cx_done_cb(void *ud, int err, const char *msg)
{
	cx_finish(ud, err, msg);
}

static void cx_sb_cb(void *ud, int err, const char *msg,
		     const struct api_sandbox *sb)
{
	struct cx_done *d = ud;

	if (!err && sb)
		snprintf(d->id, sizeof(d->id), "%s", sb->id);
	cx_finish(d, err, msg);
}

/* 0 when done in time (d->err holds the result), -ETIMEDOUT otherwise. */
static int cx_wait(struct cx_done *d)
{
	struct timespec ts;
	int r = 0;

	cx_deadline(&ts, CX_WAIT_S);
	pthread_mutex_lock(&d->mu);
	while (!d->done && r == 0)
		r = pthread_cond_timedwait(&d->cv, &d->mu, &ts);
	pthread_mutex_unlock(&d->mu);
	return d->done ? 0 : -ETIMEDOUT;
}

/* ---- fixture: one backend and one sandbox per test ---------------------- */

static struct api_backend *cx_be;
static char cx_cg[512]; /* our own cgroups at setup */
static char cx_id[API_ID_MAX];
static char cx_tmp[64];

static int cx_rm(const char *path, const struct stat *st, int flag,
		 struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	remove(path);
	return 0;
}

static void cx_teardown(void);

/* /proc/self/cgroup as one string: exec must never move us. */
static void cx_cgroups(char *buf, size_t len)
{
	FILE *f = fopen("/proc/self/cgroup", "r");
	size_t n = 0;

	if (f) {
		n = fread(buf, 1, len - 1, f);
		fclose(f);
	}
	buf[n] = 0;
}

/* criterion skips .fini when .init fails: undo by hand first. */
#define cx_setup_check(cond, ...)                                         \
	do {                                                              \
		if (!(cond)) {                                            \
			cx_teardown();                                    \
			cr_assert_fail(__VA_ARGS__);                      \
		}                                                         \
	} while (0)

static void cx_setup(void)
{
	const char *src = getenv("SBXFS_TEST_SOURCE");
	struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
	char source[128], name[64];
	struct cx_done d;
	int r;

	cx_cgroups(cx_cg, sizeof(cx_cg));
	/* A host secret the sandbox must never see (see no_host_env). */
	setenv("SBXFS_SECRET", "contract-exec-secret", 1);
	if (!src || !*src || !strcmp(src, "local")) {
		snprintf(cx_tmp, sizeof(cx_tmp), CX_TMP_PREFIX "XXXXXX");
		cr_assert_not_null(mkdtemp(cx_tmp), "mkdtemp: %m");
		snprintf(source, sizeof(source), "local:%s", cx_tmp);
		src = source;
	}
	fuse_opt_add_arg(&args, "contract_exec");
	r = api_open(src, &args, &cx_be);
	fuse_opt_free_args(&args);
	if (r)
		cx_be = NULL;
	cx_setup_check(r == 0, "api_open(%s): %s", src, strerror(-r));
	cx_setup_check(api_has(cx_be, API_CAP_EXEC), "backend %s lacks exec",
		       src);

	snprintf(name, sizeof(name), "cx%d", (int)getpid());
	cx_done_init(&d);
	api_sb_create(cx_be, name, NULL, 0, cx_sb_cb, &d);
	r = cx_wait(&d);
	/* destroy whatever a failed or late create left behind */
	snprintf(cx_id, sizeof(cx_id), "%s", d.id[0] ? d.id : name);
	cx_setup_check(r == 0, "sandbox create timed out");
	cx_setup_check(d.err == 0, "sandbox create: %s", d.msg);
}

static void cx_teardown(void)
{
	struct cx_done d;
	char cg[sizeof(cx_cg)];

	if (cx_be && cx_id[0]) {
		/* a test may have left it paused */
		cx_done_init(&d);
		api_sb_verb(cx_be, cx_id, API_VERB_RESUME, "", cx_done_cb, &d);
		cx_wait(&d);
		cx_done_init(&d);
		api_sb_verb(cx_be, cx_id, API_VERB_DESTROY, "", cx_done_cb,
			    &d);
		if (cx_wait(&d) || d.err)
			cr_log_error("destroy %s: %s", cx_id, d.msg);
	}
	if (cx_be)
		api_close(cx_be);
	cx_be = NULL;
	cx_id[0] = 0;
	if (!strncmp(cx_tmp, CX_TMP_PREFIX, strlen(CX_TMP_PREFIX)))
		nftw(cx_tmp, cx_rm, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
	cx_tmp[0] = 0;
	cx_cgroups(cg, sizeof(cg));
	cr_expect_str_eq(cg, cx_cg, "the test process changed cgroups");
}

TestSuite(contract_exec, .init = cx_setup, .fini = cx_teardown,
	  .timeout = 180);

/* ---- one command, collected -------------------------------------------- */

struct cx_run {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct api_exec *x;
	bool started, exited;
	int serr, code, xerr;
	char smsg[256];
	unsigned char *out, *err;
	size_t nout, nerr, cap_out, cap_err;
	/* flow control test: output returns 1, the test resumes */
	bool flow, paused;
	int pauses, violations;
	/* stdin writes */
	bool wdone;
	int werr;
};

static void cx_app(unsigned char **buf, size_t *n, size_t *cap,
		   const void *p, size_t len)
{
	if (*n + len > CX_OUT_CAP)
		return;
	if (*n + len > *cap) {
		size_t c = *cap ? *cap : 4096;

		while (c < *n + len)
			c *= 2;
		*buf = realloc(*buf, c);
		*cap = c;
	}
	memcpy(*buf + *n, p, len);
	*n += len;
}

static void cx_started(void *ud, int err, const char *msg)
{
	struct cx_run *r = ud;

	pthread_mutex_lock(&r->mu);
	if (r->started)
		r->violations++;
	r->started = true;
	r->serr = err;
	if (msg)
		snprintf(r->smsg, sizeof(r->smsg), "%s", msg);
	if (err && !msg)
		r->violations++;
	pthread_cond_broadcast(&r->cv);
	pthread_mutex_unlock(&r->mu);
}

static int cx_output(void *ud, int stream, const void *buf, size_t len)
{
	struct cx_run *r = ud;
	int ret = 0;

	pthread_mutex_lock(&r->mu);
	if (!r->started || r->exited || r->paused ||
	    (stream != 1 && stream != 2))
		r->violations++;
	if (stream == 1)
		cx_app(&r->out, &r->nout, &r->cap_out, buf, len);
	else
		cx_app(&r->err, &r->nerr, &r->cap_err, buf, len);
	if (r->flow) {
		r->paused = true;
		r->pauses++;
		ret = 1;
	}
	pthread_cond_broadcast(&r->cv);
	pthread_mutex_unlock(&r->mu);
	return ret;
}

static void cx_exited(void *ud, int code, int err, const char *msg)
{
	struct cx_run *r = ud;

	(void)msg;
	pthread_mutex_lock(&r->mu);
	if (!r->started || r->serr || r->exited)
		r->violations++;
	r->exited = true;
	r->code = code;
	r->xerr = err;
	pthread_cond_broadcast(&r->cv);
	pthread_mutex_unlock(&r->mu);
}

static const struct api_exec_cbs cx_cbs = {
	.started = cx_started,
	.output = cx_output,
	.exited = cx_exited,
};

static struct cx_run *cx_new(void)
{
	struct cx_run *r = calloc(1, sizeof(*r));

	cr_assert_not_null(r);
	pthread_mutex_init(&r->mu, NULL);
	pthread_cond_init(&r->cv, NULL);
	return r;
}

static struct cx_run *cx_start(const char *const *argv, const char *cwd,
			       const char *const *env, bool tty,
			       bool want_stdin)
{
	struct api_exec_req req = {
		.argv = argv, .cwd = cwd, .env = env, .tty = tty,
		.want_stdin = want_stdin,
	};
	struct cx_run *r = cx_new();

	api_exec_start(cx_be, cx_id, &req, &cx_cbs, r, &r->x);
	return r;
}

/* Wait for the condition `what` (started/exited) under r->mu. */
static bool cx_wait_flag(struct cx_run *r, const bool *flag)
{
	struct timespec ts;
	int e = 0;
	bool ok;

	cx_deadline(&ts, CX_WAIT_S);
	pthread_mutex_lock(&r->mu);
	while (!*flag && e == 0)
		e = pthread_cond_timedwait(&r->cv, &r->mu, &ts);
	ok = *flag;
	pthread_mutex_unlock(&r->mu);
	return ok;
}

static void cx_wait_started(struct cx_run *r)
{
	cr_assert(cx_wait_flag(r, &r->started), "no started() in %ds",
		  CX_WAIT_S);
}

/* Waits for started then exited (or for started(err)). */
static void cx_wait_end(struct cx_run *r)
{
	cx_wait_started(r);
	if (r->serr)
		return;
	cr_assert(cx_wait_flag(r, &r->exited), "no exited() in %ds",
		  CX_WAIT_S);
}

static void cx_free(struct cx_run *r)
{
	if (r->x)
		api_exec_free(cx_be, r->x);
	r->x = NULL;
	cr_assert_eq(r->violations, 0, "callback order violated");
	free(r->out);
	free(r->err);
	free(r);
}

/* Run to the end; must start. */
static struct cx_run *cx_run_argv(const char *const *argv, const char *cwd,
				  const char *const *env)
{
	struct cx_run *r = cx_start(argv, cwd, env, false, false);

	cx_wait_end(r);
	cr_assert_eq(r->serr, 0, "%s did not start: %s", argv[0], r->smsg);
	cr_assert_not_null(r->x);
	return r;
}

static struct cx_run *cx_sh(const char *script)
{
	const char *argv[] = { "sh", "-c", script, NULL };

	return cx_run_argv(argv, NULL, NULL);
}

/* Output of stream 1 as a string (for text results). */
static const char *cx_outs(struct cx_run *r)
{
	static const char nul = 0;

	cx_app(&r->out, &r->nout, &r->cap_out, &nul, 1);
	r->nout--;
	return (const char *)r->out;
}

static void cx_wcb(void *ud, int err, const char *msg)
{
	struct cx_run *r = ud;

	(void)msg;
	pthread_mutex_lock(&r->mu);
	r->wdone = true;
	r->werr = err;
	pthread_cond_broadcast(&r->cv);
	pthread_mutex_unlock(&r->mu);
}

/* Feed stdin with flow control: one write in flight at a time. */
static void cx_feed(struct cx_run *r, const void *buf, size_t len,
		    size_t chunk)
{
	const unsigned char *p = buf;
	size_t off = 0, n;

	while (off < len) {
		n = len - off < chunk ? len - off : chunk;
		pthread_mutex_lock(&r->mu);
		r->wdone = false;
		pthread_mutex_unlock(&r->mu);
		api_exec_write(cx_be, r->x, p + off, n, cx_wcb, r);
		cr_assert(cx_wait_flag(r, &r->wdone), "stdin write stuck");
		cr_assert_eq(r->werr, 0, "stdin write: %s",
			     strerror(-r->werr));
		off += n;
	}
}

/* ---- tests --------------------------------------------------------------- */

Test(contract_exec, argv_exact)
{
	const char *argv[] = { "printf", "[%s]\\n", "a b", "c'd\"e", "",
			       "$HOME", "*", "x\\ny", " lead", NULL };
	struct cx_run *r = cx_run_argv(argv, NULL, NULL);

	cr_assert_eq(r->code, 0);
	cr_assert_str_eq(cx_outs(r), "[a b]\n[c'd\"e]\n[]\n[$HOME]\n[*]\n"
				     "[x\\ny]\n[ lead]\n");
	cr_assert_eq(r->nerr, 0);
	cx_free(r);
}

Test(contract_exec, cwd)
{
	const char *pwd[] = { "pwd", NULL };
	struct cx_run *r = cx_run_argv(pwd, "/tmp", NULL);

	cr_assert_str_eq(cx_outs(r), "/tmp\n");
	cx_free(r);

	/* NULL cwd: the sandbox user's home */
	r = cx_sh("test \"$(pwd -P)\" = \"$(cd \"$HOME\" && pwd -P)\" && "
		  "echo home");
	cr_assert_str_eq(cx_outs(r), "home\n");
	cx_free(r);

	/* a missing directory is an error, either way */
	r = cx_start(pwd, "/nonexistent-dir-cx", NULL, false, false);
	cx_wait_end(r);
	cr_assert(r->serr != 0 || r->code != 0,
		  "pwd in a missing directory succeeded");
	cx_free(r);
}

Test(contract_exec, env)
{
	const char *argv[] = { "sh", "-c",
			       "printf '%s|%s|%s|' \"$CX_A\" "
			       "\"${CX_EMPTY-unset}\" \"$CX_Q\"; "
			       "test -n \"$PATH\" && echo path",
			       NULL };
	const char *env[] = { "CX_A=one two", "CX_EMPTY=", "CX_Q='\"$x",
			      NULL };
	struct cx_run *r = cx_run_argv(argv, NULL, env);

	cr_assert_str_eq(cx_outs(r), "one two||'\"$x|path\n");
	cx_free(r);
}

Test(contract_exec, no_host_env)
{
	const char *argv[] = { "env", NULL };
	struct cx_run *r;

	cr_assert_str_eq(getenv("SBXFS_SECRET"), "contract-exec-secret");
	r = cx_run_argv(argv, NULL, NULL);
	cr_assert_eq(r->code, 0);
	cr_assert(r->nout > 0, "env printed nothing");
	cr_assert_null(strstr(cx_outs(r), "SBXFS_SECRET"),
		       "host environment leaked: %s", cx_outs(r));
	cr_assert_null(strstr(cx_outs(r), "contract-exec-secret"));
	cr_assert_not_null(strstr(cx_outs(r), "PATH="));
	cx_free(r);
}

Test(contract_exec, stdin_sha256)
{
	const char *argv[] = { "sha256sum", NULL };
	size_t len = 1u << 20, i;
	unsigned char *data = malloc(len);
	char path[] = "/tmp/sbxfs-cx-in-XXXXXX", cmd[128], want[65] = "";
	struct cx_run *r;
	FILE *f;
	int fd;

	cr_assert_not_null(data);
	srand(42);
	for (i = 0; i < len; i++)
		data[i] = (unsigned char)(rand() >> 7);
	/* expected digest from the host's sha256sum */
	fd = mkstemp(path);
	cr_assert(fd >= 0);
	cr_assert_eq(write(fd, data, len), (ssize_t)len);
	close(fd);
	snprintf(cmd, sizeof(cmd), "sha256sum < %s", path);
	f = popen(cmd, "r");
	cr_assert_not_null(f);
	cr_assert_not_null(fgets(want, sizeof(want), f));
	pclose(f);
	unlink(path);

	r = cx_start(argv, NULL, NULL, false, true);
	cx_wait_started(r);
	cr_assert_eq(r->serr, 0, "%s", r->smsg);
	cx_feed(r, data, len, 100000);
	api_exec_close_stdin(cx_be, r->x);
	cx_wait_end(r);
	cr_assert_eq(r->code, 0);
	cr_assert_eq(r->nout, 64 + 4, "output: %s", cx_outs(r));
	cr_assert_eq(memcmp(r->out, want, 64), 0, "digest %.64s != %s",
		     r->out, want);
	cx_free(r);
	free(data);
}

Test(contract_exec, stdin_roundtrip_binary)
{
	const char *argv[] = { "cat", NULL };
	size_t len = 300000, i;
	unsigned char *data = malloc(len);
	struct cx_run *r;

	cr_assert_not_null(data);
	for (i = 0; i < len; i++)
		data[i] = (unsigned char)(i * 131 + i / 256);
	r = cx_start(argv, NULL, NULL, false, true);
	/* writes before started() are allowed: they are queued */
	cx_feed(r, data, len, 65536);
	api_exec_close_stdin(cx_be, r->x);
	cx_wait_end(r);
	cr_assert_eq(r->serr, 0, "%s", r->smsg);
	cr_assert_eq(r->code, 0);
	cr_assert_eq(r->nout, len);
	cr_assert_eq(memcmp(r->out, data, len), 0, "cat changed the bytes");
	cx_free(r);
	free(data);
}

Test(contract_exec, stdin_empty_without_want_stdin)
{
	const char *argv[] = { "cat", NULL };
	struct cx_run *r = cx_run_argv(argv, NULL, NULL);

	cr_assert_eq(r->code, 0);
	cr_assert_eq(r->nout, 0);
	cx_free(r);
}

Test(contract_exec, binary_stdout_all_bytes)
{
	char fmt[256 * 4 + 1];
	const char *argv[] = { "printf", fmt, NULL };
	struct cx_run *r;
	int i;

	for (i = 0; i < 256; i++)
		snprintf(fmt + i * 4, 5, "\\%03o", i);
	r = cx_run_argv(argv, NULL, NULL);
	cr_assert_eq(r->code, 0);
	cr_assert_eq(r->nout, 256, "got %zu bytes", r->nout);
	for (i = 0; i < 256; i++)
		cr_assert_eq(r->out[i], i, "byte %d is %d", i, r->out[i]);
	cx_free(r);
}

Test(contract_exec, stderr_separate)
{
	struct cx_run *r = cx_sh("echo out; echo err >&2; echo out2");

	cr_assert_str_eq(cx_outs(r), "out\nout2\n");
	cr_assert_eq(r->nerr, 4);
	cr_assert_eq(memcmp(r->err, "err\n", 4), 0);
	cx_free(r);
}

Test(contract_exec, exit_codes)
{
	static const int codes[] = { 0, 1, 3, 127, 255 };
	char script[32];
	size_t i;

	for (i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
		struct cx_run *r;

		snprintf(script, sizeof(script), "exit %d", codes[i]);
		r = cx_sh(script);
		cr_assert_eq(r->code, codes[i], "%s -> %d", script, r->code);
		cr_assert_eq(r->xerr, 0);
		cx_free(r);
	}
}

static void cx_killed_by(int sig, int want)
{
	const char *argv[] = { "sleep", "1000", NULL };
	struct cx_run *r = cx_start(argv, NULL, NULL, false, false);

	cx_wait_started(r);
	cr_assert_eq(r->serr, 0, "%s", r->smsg);
	cr_assert_eq(api_exec_signal(cx_be, r->x, sig), 0);
	cx_wait_end(r);
	cr_assert_eq(r->code, want, "signal %d: code %d", sig, r->code);
	cx_free(r);
}

Test(contract_exec, signal_kill)
{
	cx_killed_by(SIGKILL, 137);
}

Test(contract_exec, signal_term)
{
	cx_killed_by(SIGTERM, 143);
}

/* Count processes in the sandbox whose command line holds `tag`. */
static int cx_count_procs(const char *tag)
{
	char script[256];
	struct cx_run *r;
	int n;

	/* the pattern [t]ag never matches this grep itself */
	snprintf(script, sizeof(script),
		 "for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline "
		 "2>/dev/null; echo; done | grep -c '[%c]%s'",
		 tag[0], tag + 1);
	r = cx_sh(script);
	n = (int)strtol(cx_outs(r), NULL, 10);
	cx_free(r);
	return n;
}

static void cx_settle(const char *tag)
{
	int i;

	for (i = 0; i < 50 && cx_count_procs(tag); i++)
		usleep(100000);
	cr_assert_eq(cx_count_procs(tag), 0, "%s survived", tag);
}

Test(contract_exec, signal_reaches_children)
{
	const char *argv[] = { "sh", "-c", "sleep 4242 & sleep 4243; echo x",
			       NULL };
	struct cx_run *r = cx_start(argv, NULL, NULL, false, false);

	cx_wait_started(r);
	cr_assert_eq(r->serr, 0, "%s", r->smsg);
	while (cx_count_procs("sleep 4243") == 0)
		usleep(20000);
	cr_assert_eq(api_exec_signal(cx_be, r->x, SIGTERM), 0);
	cx_wait_end(r);
	cr_assert_eq(r->code, 143);
	cr_assert_eq(r->nout, 0);
	cx_free(r);
	cx_settle("sleep 424");
}

Test(contract_exec, free_kills_running)
{
	const char *argv[] = { "sh", "-c", "sleep 4244 & sleep 4245", NULL };
	struct cx_run *r = cx_start(argv, NULL, NULL, false, false);

	cx_wait_started(r);
	cr_assert_eq(r->serr, 0, "%s", r->smsg);
	while (cx_count_procs("sleep 4245") == 0)
		usleep(20000);
	api_exec_free(cx_be, r->x);
	r->x = NULL;
	cr_assert(!r->exited, "exited() after exec_free returned");
	cx_settle("sleep 424");
	usleep(100000);
	cr_assert(!r->exited, "exited() after exec_free returned");
	cx_free(r);
}

Test(contract_exec, flow_control)
{
	const char *argv[] = { "sh", "-c",
			       "i=0; while [ $i -lt 20000 ]; do "
			       "echo line$i; i=$((i+1)); done; echo end >&2",
			       NULL };
	struct cx_run *r = cx_start(argv, NULL, NULL, false, false);
	struct timespec ts;
	char *want;
	size_t wlen = 0, cap = 20000 * 12;
	int i;

	r->flow = true;
	cx_wait_started(r);
	cr_assert_eq(r->serr, 0, "%s", r->smsg);
	cx_deadline(&ts, CX_WAIT_S);
	pthread_mutex_lock(&r->mu);
	while (!r->exited) {
		if (r->paused) {
			/* hold the pause a little: nothing may arrive */
			pthread_mutex_unlock(&r->mu);
			usleep(r->pauses % 50 ? 100 : 20000);
			pthread_mutex_lock(&r->mu);
			r->paused = false;
			pthread_mutex_unlock(&r->mu);
			api_exec_resume(cx_be, r->x);
			pthread_mutex_lock(&r->mu);
			continue;
		}
		if (pthread_cond_timedwait(&r->cv, &r->mu, &ts) == ETIMEDOUT)
			break;
	}
	pthread_mutex_unlock(&r->mu);
	cr_assert(r->exited, "flow-controlled command did not finish");
	cr_assert_eq(r->code, 0);
	cr_assert(r->pauses > 1, "output was never paused");
	want = malloc(cap);
	for (i = 0; i < 20000; i++)
		wlen += (size_t)snprintf(want + wlen, cap - wlen, "line%d\n",
					 i);
	cr_assert_eq(r->nout, wlen);
	cr_assert_eq(memcmp(r->out, want, wlen), 0);
	cr_assert_eq(r->nerr, 4);
	free(want);
	cx_free(r);
}

Test(contract_exec, paused_sandbox_is_ebusy)
{
	const char *argv[] = { "true", NULL };
	struct cx_done d;
	struct cx_run *r;

	if (!api_has(cx_be, API_CAP_VERB(API_VERB_PAUSE)))
		cr_skip_test("backend cannot pause");
	cx_done_init(&d);
	api_sb_verb(cx_be, cx_id, API_VERB_PAUSE, "", cx_done_cb, &d);
	cr_assert_eq(cx_wait(&d), 0);
	cr_assert_eq(d.err, 0, "pause: %s", d.msg);
	r = cx_start(argv, NULL, NULL, false, false);
	cx_wait_started(r);
	cr_assert_eq(r->serr, -EBUSY, "exec in a paused sandbox: %d %s",
		     r->serr, r->smsg);
	cr_assert_neq(r->smsg[0], 0, "no sentence");
	/* a remote backend learns of the state from the server's reply,
	 * after exec_start returned its handle (freed by cx_free) */
	if (strncmp(getenv("SBXFS_TEST_SOURCE") ?: "", "wrenn", 5))
		cr_assert_null(r->x);
	cx_free(r);

	cx_done_init(&d);
	api_sb_verb(cx_be, cx_id, API_VERB_RESUME, "", cx_done_cb, &d);
	cr_assert_eq(cx_wait(&d), 0);
	cr_assert_eq(d.err, 0, "resume: %s", d.msg);
	r = cx_run_argv(argv, NULL, NULL);
	cr_assert_eq(r->code, 0);
	cx_free(r);
}

Test(contract_exec, command_not_found)
{
	const char *argv[] = { "no-such-command-cx", "arg", NULL };
	struct cx_run *r = cx_start(argv, NULL, NULL, false, false);

	cx_wait_end(r);
	if (r->serr) {
		cr_assert_eq(r->serr, -ENOENT, "%d %s", r->serr, r->smsg);
		cr_assert_not_null(strstr(r->smsg, "no-such-command-cx"),
				   "sentence: %s", r->smsg);
		cr_assert(!r->exited);
	} else {
		cr_assert_eq(r->code, 127);
	}
	cx_free(r);
}

Test(contract_exec, pid_namespace)
{
	char host[256] = "";
	struct cx_run *r;
	FILE *f;
	size_t n = 0;
	long pid;

	r = cx_sh("echo $$");
	pid = strtol(cx_outs(r), NULL, 10);
	cr_assert(pid > 0 && pid < 1000, "pid %ld: not in a fresh namespace",
		  pid);
	cx_free(r);

	f = fopen("/proc/1/cmdline", "r");
	if (f) {
		n = fread(host, 1, sizeof(host) - 1, f);
		fclose(f);
	}
	r = cx_sh("tr '\\0' '\\n' < /proc/1/cmdline | head -n 1");
	cr_assert(r->nout > 1, "no /proc/1 inside");
	if (n)
		cr_assert(strncmp(cx_outs(r), host, r->nout - 1) != 0,
			  "/proc/1 inside is the host's init: %s", host);
	cx_free(r);
}

Test(contract_exec, tty)
{
	const char *argv[] = { "sh", "-c", "test -t 1 && echo isatty", NULL };
	struct cx_run *r = cx_start(argv, NULL, NULL, true, false);

	cx_wait_end(r);
	if (r->serr == -EOPNOTSUPP) {
		cx_free(r);
		cr_skip_test("backend has no tty exec");
	}
	cr_assert_eq(r->serr, 0, "%s", r->smsg);
	cr_assert_eq(r->code, 0);
	cr_assert_not_null(strstr(cx_outs(r), "isatty"), "%s", cx_outs(r));
	cx_free(r);

	/* stdin on a terminal: close_stdin is EOF, not a hangup */
	const char *cat[] = { "cat", NULL };

	r = cx_start(cat, NULL, NULL, true, true);
	cx_wait_started(r);
	cr_assert_eq(r->serr, 0, "%s", r->smsg);
	cx_feed(r, "tty-in\npartial", 14, 14);
	api_exec_close_stdin(cx_be, r->x);
	cx_wait_end(r);
	cr_assert_eq(r->code, 0, "cat on a tty: code %d", r->code);
	cr_assert_not_null(strstr(cx_outs(r), "tty-in"), "%s", cx_outs(r));
	cr_assert_not_null(strstr(cx_outs(r), "partial"), "%s", cx_outs(r));
	cx_free(r);
}

Test(contract_exec, many_concurrent)
{
	enum { N = 64 };
	struct cx_run *rs[N];
	char script[N][64], want[32];
	int i;

	for (i = 0; i < N; i++) {
		const char *argv[] = { "sh", "-c", script[i], NULL };

		snprintf(script[i], sizeof(script[i]),
			 "sleep 0.5; echo job%d", i);
		rs[i] = cx_start(argv, NULL, NULL, false, false);
	}
	for (i = 0; i < N; i++) {
		cx_wait_end(rs[i]);
		cr_assert_eq(rs[i]->serr, 0, "%d: %s", i, rs[i]->smsg);
		snprintf(want, sizeof(want), "job%d\n", i);
		cr_assert_str_eq(cx_outs(rs[i]), want);
		cr_assert_eq(rs[i]->code, 0);
		cx_free(rs[i]);
	}
}

Test(contract_exec, write_without_stdin_fails)
{
	const char *argv[] = { "sleep", "1000", NULL };
	struct cx_run *r = cx_start(argv, NULL, NULL, false, false);

	cx_wait_started(r);
	cr_assert_eq(r->serr, 0, "%s", r->smsg);
	pthread_mutex_lock(&r->mu);
	r->wdone = false;
	pthread_mutex_unlock(&r->mu);
	api_exec_write(cx_be, r->x, "x", 1, cx_wcb, r);
	cr_assert(cx_wait_flag(r, &r->wdone));
	cr_assert_neq(r->werr, 0, "write to a command without stdin");
	cx_free(r);
}

/* exec_free right after exec_start, while the backend may still be
 * starting the command (the local backend forks on its runtime): it
 * returns, no callback follows (under ASan a late one would touch the
 * freed cx_run), and what was started does not survive. */
Test(contract_exec, free_right_after_start)
{
	const char *argv[] = { "sleep", "4351", NULL };
	const char *in[] = { "cat", NULL };
	struct cx_run *r;
	int i, n = -1;

	for (i = 0; i < 4; i++) {
		r = cx_start(i % 2 ? in : argv, NULL, NULL, false, i % 2);
		if (r->x && i % 2) /* queued before the start */
			api_exec_close_stdin(cx_be, r->x);
		cx_free(r);
	}
	for (i = 0; i < 100 && n != 0; i++) {
		r = cx_sh("n=0; for c in /proc/[0-9]*/cmdline; do "
			  "tr '\\0' ' ' < $c 2>/dev/null | "
			  "grep -q '^sleep 4351' && n=$((n + 1)); done; "
			  "echo $n");
		n = (int)strtol(cx_outs(r), NULL, 10);
		cx_free(r);
		if (n)
			usleep(100 * 1000);
	}
	cr_assert_eq(n, 0, "the freed command still runs");
}
