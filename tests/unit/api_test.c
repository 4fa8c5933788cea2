/* api_test.c - unit tests of api/api.c: names, quoting, source parsing,
 * and the generic exec emulation (against a fake backend). */

#define FUSE_USE_VERSION 34

#include <errno.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <fuse_opt.h>

#include "api/api.h"

/* ---- states and verbs --------------------------------------------------- */

static const struct {
	const char *word;
	enum api_state st;
} state_cases[] = {
	{"running", API_ST_RUNNING},   {"RUNNING", API_ST_RUNNING},
	{"Paused", API_ST_PAUSED},     {"creating", API_ST_CREATING},
	{"stopping", API_ST_STOPPING}, {"stopped", API_ST_STOPPED},
	{"failed", API_ST_FAILED},     {"destroyed", API_ST_DESTROYED},
	{"unknown", API_ST_UNKNOWN},   {"", API_ST_UNKNOWN},
	{"run", API_ST_UNKNOWN},       {"running ", API_ST_UNKNOWN},
};

Test(api_names, state_parse_table)
{
	for (size_t i = 0; i < sizeof(state_cases) / sizeof(*state_cases);
	     i++)
		cr_expect_eq(api_state_parse(state_cases[i].word),
			     state_cases[i].st, "parse '%s'",
			     state_cases[i].word);
	cr_expect_eq(api_state_parse(NULL), API_ST_UNKNOWN);
}

Test(api_names, state_name_roundtrip)
{
	for (int i = 0; i < API_ST__COUNT; i++) {
		const char *n = api_state_name((enum api_state)i);
		cr_assert(n && *n);
		cr_expect_eq(api_state_parse(n), (enum api_state)i, "%s", n);
	}
	cr_expect_str_eq(api_state_name(API_ST_RUNNING), "running");
	cr_expect_str_eq(api_state_name((enum api_state)1000), "unknown");
	cr_expect_str_eq(api_state_name((enum api_state)-1), "unknown");
}

static const struct {
	const char *word;
	int verb;
} verb_cases[] = {
	{"start", API_VERB_START},   {"stop", API_VERB_STOP},
	{"pause", API_VERB_PAUSE},   {"resume", API_VERB_RESUME},
	{"ping", API_VERB_PING},     {"snapshot", API_VERB_SNAPSHOT},
	{"destroy", API_VERB_DESTROY}, {"bogus", -1},
	{"", -1},		     {"Start", -1},
	{"stop ", -1},		     {"new", -1},
};

Test(api_names, verb_parse_table)
{
	for (size_t i = 0; i < sizeof(verb_cases) / sizeof(*verb_cases); i++)
		cr_expect_eq(api_verb_parse(verb_cases[i].word),
			     verb_cases[i].verb, "parse '%s'",
			     verb_cases[i].word);
	cr_expect_eq(api_verb_parse(NULL), -1);
	for (int v = 0; v < API_VERB__COUNT; v++)
		cr_expect_eq(api_verb_parse(api_verb_name((enum api_verb)v)),
			     v);
}

Test(api_names, strerror_sentences)
{
	static const int errs[] = {ENOENT, EBUSY, EINVAL, EACCES, ETIMEDOUT,
				   EHOSTUNREACH, EIO, EFBIG, ENOSPC,
				   EOPNOTSUPP, 12345};
	for (size_t i = 0; i < sizeof(errs) / sizeof(*errs); i++) {
		const char *m = api_strerror(errs[i]);
		cr_assert(m && *m);
		cr_expect_str_eq(m, api_strerror(-errs[i]));
	}
	cr_expect_str_neq(api_strerror(ENOENT), api_strerror(EBUSY));
}

/* ---- shell quoting ------------------------------------------------------ */

/* What /bin/sh makes of `printf %s QUOTED`. */
static char *sh_roundtrip(const char *quoted)
{
	size_t clen = strlen(quoted) + 16;
	char *cmd = malloc(clen);
	int p[2];
	static char out[4096];
	size_t n = 0;
	int status;

	snprintf(cmd, clen, "printf %%s %s", quoted);
	cr_assert_eq(pipe(p), 0);
	pid_t pid = fork();
	if (pid == 0) {
		dup2(p[1], 1);
		close(p[0]);
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	close(p[1]);
	for (;;) {
		ssize_t r = read(p[0], out + n, sizeof(out) - 1 - n);
		if (r <= 0)
			break;
		n += (size_t)r;
	}
	close(p[0]);
	waitpid(pid, &status, 0);
	free(cmd);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	out[n] = '\0';
	return out;
}

static const char *const quote_cases[] = {
	"",
	"plain",
	"two words",
	"it's",
	"'",
	"''''",
	"$HOME",
	"$(echo pwned)",
	"`id`",
	"back\\slash",
	"line\nbreak",
	"tab\there",
	"\"double\"",
	"semi;colon && | > < * ? [a] ~ # !",
	"-n",
	"trailing newline\n",
	"\x01\x7f\xc3\xa9",
};

Test(api_quote, roundtrip_through_sh)
{
	for (size_t i = 0; i < sizeof(quote_cases) / sizeof(*quote_cases);
	     i++) {
		char *q = api_shell_quote(quote_cases[i]);
		cr_assert(q);
		cr_expect_str_eq(sh_roundtrip(q), quote_cases[i],
			         "case %zu: quoted as %s", i, q);
		free(q);
	}
}

Test(api_quote, shape)
{
	char *q = api_shell_quote("a'b");

	cr_assert_str_eq(q, "'a'\\''b'");
	free(q);
	q = api_shell_quote("");
	cr_assert_str_eq(q, "''");
	free(q);
}

/* ---- api_open ----------------------------------------------------------- */

static int open_with(const char *source, const char *opt,
		     struct api_backend **be, struct fuse_args *args)
{
	*args = (struct fuse_args)FUSE_ARGS_INIT(0, NULL);
	fuse_opt_add_arg(args, "prog");
	if (opt) {
		fuse_opt_add_arg(args, "-o");
		fuse_opt_add_arg(args, opt);
	}
	return api_open(source, args, be);
}

static const char *const bad_sources[] = {
	"bogus", "", "loca", "localx", "local-x", "LOCAL", "nosuch:http://x",
	"local:relative/dir",
};

Test(api_open, bad_sources_are_einval)
{
	for (size_t i = 0; i < sizeof(bad_sources) / sizeof(*bad_sources);
	     i++) {
		struct api_backend *be = (void *)1;
		struct fuse_args args;
		int err = open_with(bad_sources[i], NULL, &be, &args);
		cr_expect_eq(err, -EINVAL, "source '%s': %d", bad_sources[i],
			     err);
		cr_expect_null(be, "no backend on failure");
		fuse_opt_free_args(&args);
	}
}

static const char *const bad_timeouts[] = {
	"timeout=abc", "timeout=0", "timeout=-3", "timeout=", "timeout=5x",
};

Test(api_open, bad_timeouts_are_einval)
{
	for (size_t i = 0; i < sizeof(bad_timeouts) / sizeof(*bad_timeouts);
	     i++) {
		struct api_backend *be;
		struct fuse_args args;
		int err = open_with("local:/nonexistent-sbxfs-unit",
				    bad_timeouts[i], &be, &args);
		cr_expect_eq(err, -EINVAL, "%s: %d", bad_timeouts[i], err);
		fuse_opt_free_args(&args);
	}
}

static int rm_cb(const char *p, const struct stat *st, int type,
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

Test(api_open, local_with_timeout)
{
	char dir[] = "/tmp/sbxfs-unit-XXXXXX", src[64];
	struct api_backend *be;
	struct fuse_args args;

	cr_assert(mkdtemp(dir));
	snprintf(src, sizeof(src), "local:%s", dir);
	int err = open_with(src, "timeout=7.5,allow_other", &be, &args);
	if (err == -EPERM || err == -EACCES || err == -EROFS) {
		nftw(dir, rm_cb, 8, FTW_PHYS | FTW_DEPTH);
		cr_skip_test("the local runtime needs root here");
	}
	cr_assert_eq(err, 0);
	cr_expect_str_eq(be->ops->name, "local");
	cr_expect_float_eq(be->timeout, 7.5, 1e-9);
	cr_expect(api_has(be, API_CAP_FILES | API_CAP_EXEC));
	/* timeout= was consumed, other options stay for FUSE */
	bool saw_timeout = false, saw_allow = false;
	for (int i = 0; i < args.argc; i++) {
		if (strstr(args.argv[i], "timeout="))
			saw_timeout = true;
		if (strstr(args.argv[i], "allow_other"))
			saw_allow = true;
	}
	cr_expect(!saw_timeout, "timeout= left in the FUSE args");
	cr_expect(saw_allow, "other options must stay");
	api_close(be);
	fuse_opt_free_args(&args);
	nftw(dir, rm_cb, 8, FTW_PHYS | FTW_DEPTH);
}

/* ---- exec emulation (fake backend) -------------------------------------- */

/* A backend with only exec: records the argv and answers from a thread
 * with the exit code / output the test set up. */
struct fake_exec {
	const struct api_exec_cbs *cbs;
	void *ud;
	pthread_t t;
};

static char fake_argv[16][256];
static int fake_argc;
static int fake_code;
static const char *fake_out, *fake_err;

static void *fake_thread(void *arg)
{
	struct fake_exec *x = arg;

	x->cbs->started(x->ud, 0, NULL);
	if (fake_out)
		x->cbs->output(x->ud, 1, fake_out, strlen(fake_out));
	if (fake_err)
		x->cbs->output(x->ud, 2, fake_err, strlen(fake_err));
	x->cbs->exited(x->ud, fake_code, 0, NULL);
	return NULL;
}

static void fake_exec_start(struct api_backend *be, const char *id,
			    const struct api_exec_req *req,
			    const struct api_exec_cbs *cbs, void *ud,
			    struct api_exec **out)
{
	struct fake_exec *x = calloc(1, sizeof(*x));

	(void)be;
	(void)id;
	fake_argc = 0;
	for (int i = 0; req->argv[i] && i < 16; i++)
		snprintf(fake_argv[fake_argc++], 256, "%s", req->argv[i]);
	x->cbs = cbs;
	x->ud = ud;
	*out = (struct api_exec *)x;
	pthread_create(&x->t, NULL, fake_thread, x);
}

/* As api.h asks: no callback runs after exec_free returns (the emulation
 * frees its state right after), so wait for the callback thread. */
static void fake_exec_free(struct api_backend *be, struct api_exec *x)
{
	struct fake_exec *f = (struct fake_exec *)x;

	(void)be;
	pthread_join(f->t, NULL);
	free(f);
}

static const struct api_ops fake_ops = {
	.name = "fake",
	.caps = API_CAP_EXEC,
	.exec_start = fake_exec_start,
	.exec_free = fake_exec_free,
};

static struct api_backend fake_be = {.ops = &fake_ops, .timeout = 5};

struct emu_wait {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool done;
	int err;
	char msg[512];
	char s[512];
};

static void emu_done(void *ud, int err, const char *msg)
{
	struct emu_wait *w = ud;

	pthread_mutex_lock(&w->mu);
	w->err = err;
	snprintf(w->msg, sizeof(w->msg), "%s", msg ? msg : "");
	w->done = true;
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
}

static void emu_str(void *ud, int err, const char *msg, const char *s)
{
	struct emu_wait *w = ud;

	if (s)
		snprintf(w->s, sizeof(w->s), "%s", s);
	emu_done(ud, err, msg);
}

static int emu_wait(struct emu_wait *w)
{
	struct timespec dl;

	clock_gettime(CLOCK_REALTIME, &dl);
	dl.tv_sec += 10;
	pthread_mutex_lock(&w->mu);
	while (!w->done)
		if (pthread_cond_timedwait(&w->cv, &w->mu, &dl))
			break;
	pthread_mutex_unlock(&w->mu);
	cr_assert(w->done, "emulation never answered");
	return w->err;
}

static void emu_init(struct emu_wait *w, int code, const char *out,
		     const char *err)
{
	memset(w, 0, sizeof(*w));
	pthread_mutex_init(&w->mu, NULL);
	pthread_cond_init(&w->cv, NULL);
	fake_code = code;
	fake_out = out;
	fake_err = err;
}

Test(api_emu, rename_runs_mv_with_argv)
{
	struct emu_wait w;

	emu_init(&w, 0, NULL, NULL);
	api_file_rename(&fake_be, "sb", "/a b", "/c'd", 0, emu_done, &w);
	cr_assert_eq(emu_wait(&w), 0);
	cr_assert_eq(fake_argc, 5);
	cr_expect_str_eq(fake_argv[0], "mv");
	cr_expect_str_eq(fake_argv[3], "/a b");
	cr_expect_str_eq(fake_argv[4], "/c'd");
}

static const struct {
	const char *stderr_text;
	int code;
	int err;
} emu_err_cases[] = {
	{"mv: cannot stat '/x': No such file or directory\n", 1, -ENOENT},
	{"mv: cannot move '/a' to '/b': Permission denied\n", 1, -EACCES},
	{"mv: cannot overwrite '/d': Directory not empty\n", 1, -ENOTEMPTY},
	{"something odd\n", 1, -EIO},
	{"sh: 1: mv: not found\n", 127, -EOPNOTSUPP},
};

Test(api_emu, exit_status_to_errno)
{
	for (size_t i = 0; i < sizeof(emu_err_cases) / sizeof(*emu_err_cases);
	     i++) {
		struct emu_wait w;
		emu_init(&w, emu_err_cases[i].code, NULL,
			 emu_err_cases[i].stderr_text);
		api_file_rename(&fake_be, "sb", "/a", "/b", 0, emu_done, &w);
		cr_expect_eq(emu_wait(&w), emu_err_cases[i].err, "case %zu",
			     i);
		cr_expect(w.msg[0], "a sentence for the err file");
	}
}

Test(api_emu, readlink_strips_newline)
{
	struct emu_wait w;

	emu_init(&w, 0, "/target with space\n", NULL);
	api_file_readlink(&fake_be, "sb", "/l", emu_str, &w);
	cr_assert_eq(emu_wait(&w), 0);
	cr_expect_str_eq(w.s, "/target with space");
	cr_expect_str_eq(fake_argv[0], "readlink");
}

Test(api_emu, setattr_passes_path_as_parameter)
{
	struct emu_wait w;
	struct api_setattr sa = {.mask = API_SET_MODE | API_SET_SIZE,
				 .mode = 0755,
				 .size = 42};

	emu_init(&w, 0, NULL, NULL);
	api_file_setattr(&fake_be, "sb", "/$(evil) 'x'", &sa, emu_done, &w);
	cr_assert_eq(emu_wait(&w), 0);
	cr_assert_eq(fake_argc, 5);
	cr_expect_str_eq(fake_argv[0], "sh");
	cr_expect(strstr(fake_argv[2], "chmod 755"));
	cr_expect(strstr(fake_argv[2], "truncate -s 42"));
	cr_expect(!strstr(fake_argv[2], "evil"), "path must not be in the "
		  "script");
	cr_expect_str_eq(fake_argv[4], "/$(evil) 'x'");
}

Test(api_emu, missing_ops_are_eopnotsupp)
{
	struct emu_wait w;

	emu_init(&w, 0, NULL, NULL);
	api_file_mkdir(&fake_be, "sb", "/d", 0755, emu_done, &w);
	cr_assert_eq(emu_wait(&w), -EOPNOTSUPP);
	cr_expect(w.msg[0]);
	emu_init(&w, 0, NULL, NULL);
	api_sb_verb(&fake_be, "sb", API_VERB_PAUSE, NULL, emu_done, &w);
	cr_assert_eq(emu_wait(&w), -EOPNOTSUPP);
}
