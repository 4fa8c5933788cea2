/* contract.c - backend contract for sandboxes and files, against api.h. */

/*
 * Every test opens its own backend: SBXFS_TEST_SOURCE, or by default the
 * local runtime on a fresh temporary data directory (removed in fini).
 * Criterion runs tests in parallel processes, so sandbox names carry the
 * PID.  Every sandbox a test creates is destroyed in the fixture's fini,
 * even when an assertion failed.  Callbacks may run inline or from a
 * backend thread; the helpers below wait for them with a bound, so a
 * broken backend fails a test instead of hanging it.
 */

#define FUSE_USE_VERSION 34

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <fuse_opt.h>

#include "api/api.h"

#define CT_WAIT_S 90
#define CT_MAX_SB 8

/* ---- blocking helpers --------------------------------------------------- */

struct ct_wait {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool done;
	int err;
	char msg[512];
	/* results, copied inside the callback */
	struct api_sandbox sb;
	struct api_sandbox *sbs;
	size_t n;
	struct stat st;
	struct api_dirent *ents; /* names strdup'ed */
	struct api_file *f;
	char *data;
	size_t len;
};

static void ct_init(struct ct_wait *w)
{
	memset(w, 0, sizeof(*w));
	pthread_mutex_init(&w->mu, NULL);
	pthread_cond_init(&w->cv, NULL);
}

static void ct_finish(struct ct_wait *w, int err, const char *msg)
{
	pthread_mutex_lock(&w->mu);
	w->err = err;
	if (msg)
		snprintf(w->msg, sizeof(w->msg), "%s", msg);
	w->done = true;
	pthread_cond_broadcast(&w->cv);
	pthread_mutex_unlock(&w->mu);
}

/* Waits for the callback; returns its error.  Fails the test on a hang. */
static int ct_wait(struct ct_wait *w)
{
	struct timespec dl;
	int r = 0;

	clock_gettime(CLOCK_REALTIME, &dl);
	dl.tv_sec += CT_WAIT_S;
	pthread_mutex_lock(&w->mu);
	while (!w->done && r != ETIMEDOUT)
		r = pthread_cond_timedwait(&w->cv, &w->mu, &dl);
	bool done = w->done;
	pthread_mutex_unlock(&w->mu);
	cr_assert(done, "callback never came within %d s", CT_WAIT_S);
	if (w->err)
		cr_assert(w->msg[0], "error %d came without a sentence",
			  w->err);
	return w->err;
}

static void ct_done_cb(void *ud, int err, const char *msg)
{
	ct_finish(ud, err, msg);
}

static void ct_sb_cb(void *ud, int err, const char *msg,
		     const struct api_sandbox *sb)
{
	struct ct_wait *w = ud;

	if (!err && sb) {
		w->sb = *sb;
		w->sb.info_json = NULL; /* only valid during the callback */
	}
	ct_finish(w, err, msg);
}

static void ct_list_cb(void *ud, int err, const char *msg,
		       const struct api_sandbox *sbs, size_t n)
{
	struct ct_wait *w = ud;

	if (!err) {
		w->sbs = calloc(n ? n : 1, sizeof(*sbs));
		for (size_t i = 0; i < n; i++) {
			w->sbs[i] = sbs[i];
			w->sbs[i].info_json = NULL;
		}
		w->n = n;
	}
	ct_finish(w, err, msg);
}

static void ct_stat_cb(void *ud, int err, const char *msg,
		       const struct stat *st)
{
	struct ct_wait *w = ud;

	if (!err)
		w->st = *st;
	ct_finish(w, err, msg);
}

static void ct_readdir_cb(void *ud, int err, const char *msg,
			  const struct api_dirent *ents, size_t n)
{
	struct ct_wait *w = ud;

	if (!err) {
		w->ents = calloc(n ? n : 1, sizeof(*ents));
		for (size_t i = 0; i < n; i++) {
			w->ents[i].name = strdup(ents[i].name);
			w->ents[i].st = ents[i].st;
		}
		w->n = n;
	}
	ct_finish(w, err, msg);
}

static void ct_open_cb(void *ud, int err, const char *msg,
		       struct api_file *f)
{
	struct ct_wait *w = ud;

	w->f = f;
	ct_finish(w, err, msg);
}

static void ct_data_cb(void *ud, int err, const char *msg, const void *buf,
		       size_t len)
{
	struct ct_wait *w = ud;

	if (!err) {
		w->data = malloc(len + 1);
		memcpy(w->data, buf, len);
		w->data[len] = '\0';
		w->len = len;
	}
	ct_finish(w, err, msg);
}

static void ct_size_cb(void *ud, int err, const char *msg, size_t n)
{
	struct ct_wait *w = ud;

	w->len = n;
	ct_finish(w, err, msg);
}

static void ct_str_cb(void *ud, int err, const char *msg, const char *s)
{
	struct ct_wait *w = ud;

	if (!err)
		w->data = strdup(s);
	ct_finish(w, err, msg);
}

/* ---- fixture ------------------------------------------------------------ */

static struct api_backend *be;
static char tmpdir[64];
static char ids[CT_MAX_SB][API_ID_MAX];
static int nids;

static void ct_open_backend(void)
{
	struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
	char src[128];
	const char *env = getenv("SBXFS_TEST_SOURCE");

	if (env && *env) {
		snprintf(src, sizeof(src), "%s", env);
	} else {
		if (!tmpdir[0]) {
			snprintf(tmpdir, sizeof(tmpdir),
				 "/tmp/sbxfs-ct-XXXXXX");
			cr_assert(mkdtemp(tmpdir), "mkdtemp: %s",
				  strerror(errno));
		}
		snprintf(src, sizeof(src), "local:%s", tmpdir);
	}
	fuse_opt_add_arg(&args, "contract");
	int err = api_open(src, &args, &be);
	fuse_opt_free_args(&args);
	cr_assert_eq(err, 0, "api_open(%s): %s", src, strerror(-err));
}

static void ct_setup(void)
{
	nids = 0;
	ct_open_backend();
}

static int ct_rm(const char *p, const struct stat *st, int type,
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

static void ct_teardown(void)
{
	for (int i = 0; i < nids; i++) {
		struct ct_wait w;
		if (!ids[i][0])
			continue;
		ct_init(&w);
		api_sb_verb(be, ids[i], API_VERB_DESTROY, NULL, ct_done_cb,
			    &w);
		ct_wait(&w);
	}
	api_close(be);
	be = NULL;
	if (tmpdir[0])
		nftw(tmpdir, ct_rm, 16, FTW_PHYS | FTW_MOUNT | FTW_DEPTH);
}

TestSuite(contract, .init = ct_setup, .fini = ct_teardown, .timeout = 300);

/* ---- synchronous operations --------------------------------------------- */

static void ct_name(char *buf, size_t len, const char *tag)
{
	snprintf(buf, len, "ct%d-%s", (int)getpid(), tag);
}

/* Create; on success the ID is remembered for cleanup and copied out. */
static int ct_create(const char *name, const char *tpl, char *id,
		     struct ct_wait *w)
{
	struct api_kv kv = {"template", tpl};

	ct_init(w);
	api_sb_create(be, name, &kv, tpl ? 1 : 0, ct_sb_cb, w);
	int err = ct_wait(w);
	if (!err) {
		cr_assert_lt(nids, CT_MAX_SB);
		snprintf(ids[nids++], API_ID_MAX, "%s", w->sb.id);
		if (id)
			snprintf(id, API_ID_MAX, "%s", w->sb.id);
	}
	return err;
}

static void ct_forget(const char *id)
{
	for (int i = 0; i < nids; i++)
		if (!strcmp(ids[i], id))
			ids[i][0] = '\0';
}

static int ct_verb(const char *id, enum api_verb v, const char *arg)
{
	struct ct_wait w;

	ct_init(&w);
	api_sb_verb(be, id, v, arg, ct_done_cb, &w);
	int err = ct_wait(&w);
	if (err)
		cr_log_info("%s: %d %s", api_verb_name(v), err, w.msg);
	return err;
}

/* State from a full listing: what the status poll sees. */
static enum api_state ct_listed_state(const char *id)
{
	struct ct_wait w;
	enum api_state st = API_ST_DESTROYED;

	ct_init(&w);
	api_sb_list(be, ct_list_cb, &w);
	cr_assert_eq(ct_wait(&w), 0, "list: %s", w.msg);
	for (size_t i = 0; i < w.n; i++)
		if (!strcmp(w.sbs[i].id, id))
			st = w.sbs[i].state;
	free(w.sbs);
	return st;
}

static enum api_state ct_get_state(const char *id)
{
	struct ct_wait w;

	ct_init(&w);
	api_sb_get(be, id, ct_sb_cb, &w);
	if (ct_wait(&w) == -ENOENT)
		return API_ST_DESTROYED;
	cr_assert_eq(w.err, 0, "get: %s", w.msg);
	return w.sb.state;
}

#define CT_STATE(id, want)                                                    \
	do {                                                                  \
		cr_assert_eq(ct_listed_state(id), want, "list: %s is %s",     \
			     id, api_state_name(ct_listed_state(id)));        \
		cr_assert_eq(ct_get_state(id), want, "get: %s is %s", id,     \
			     api_state_name(ct_get_state(id)));               \
	} while (0)

static int ct_put(const char *id, const char *path, const char *data,
		  int flags)
{
	struct ct_wait w;
	struct api_file *f;
	size_t len = strlen(data);

	ct_init(&w);
	api_file_open(be, id, path, O_WRONLY | O_CREAT | flags, 0644,
		      ct_open_cb, &w);
	int err = ct_wait(&w);
	if (err)
		return err;
	f = w.f;
	ct_init(&w);
	api_file_write(be, f, 0, data, len, ct_size_cb, &w);
	err = ct_wait(&w);
	cr_assert(err || w.len == len, "short write %zu of %zu", w.len, len);
	ct_init(&w);
	api_file_flush(be, f, ct_done_cb, &w);
	int ferr = ct_wait(&w);
	ct_init(&w);
	api_file_close(be, f, ct_done_cb, &w);
	int cerr = ct_wait(&w);
	return err ? err : ferr ? ferr : cerr;
}

/* Reads the whole file into a malloc'd string (*out), 0/-errno. */
static int ct_get(const char *id, const char *path, char **out)
{
	struct ct_wait w;
	struct api_file *f;
	size_t cap = 1 << 20;

	*out = NULL;
	ct_init(&w);
	api_file_open(be, id, path, O_RDONLY, 0, ct_open_cb, &w);
	int err = ct_wait(&w);
	if (err)
		return err;
	f = w.f;
	ct_init(&w);
	api_file_read(be, f, 0, cap, ct_data_cb, &w);
	err = ct_wait(&w);
	if (!err)
		*out = w.data;
	ct_init(&w);
	api_file_close(be, f, ct_done_cb, &w);
	ct_wait(&w);
	return err;
}

static int ct_stat(const char *id, const char *path, struct stat *st)
{
	struct ct_wait w;

	ct_init(&w);
	api_file_stat(be, id, path, ct_stat_cb, &w);
	int err = ct_wait(&w);
	if (!err)
		*st = w.st;
	return err;
}

static int ct_done_op(struct ct_wait *w)
{
	return ct_wait(w);
}

#define CT_OP(call)                                                           \
	({                                                                    \
		struct ct_wait w_;                                            \
		ct_init(&w_);                                                 \
		call;                                                         \
		ct_done_op(&w_);                                              \
	})

static void ct_expect_content(const char *id, const char *path,
			      const char *want)
{
	char *got;
	int err = ct_get(id, path, &got);

	cr_assert_eq(err, 0, "read %s: %s", path, strerror(-err));
	cr_assert_str_eq(got, want, "content of %s", path);
	free(got);
}

/* ---- lifecycle ---------------------------------------------------------- */

Test(contract, lifecycle)
{
	char name[64], id[API_ID_MAX];
	struct ct_wait w;

	ct_name(name, sizeof(name), "life");
	cr_assert_eq(ct_create(name, NULL, id, &w), 0, "create: %s", w.msg);
	cr_assert_eq(w.sb.state, API_ST_RUNNING);
	CT_STATE(id, API_ST_RUNNING);
	cr_assert_eq(ct_verb(id, API_VERB_PING, NULL), 0);

	if (api_has(be, API_CAP_VERB(API_VERB_PAUSE))) {
		cr_assert_eq(ct_verb(id, API_VERB_PAUSE, NULL), 0);
		CT_STATE(id, API_ST_PAUSED);
		/* pausing a paused sandbox: already there */
		cr_assert_eq(ct_verb(id, API_VERB_PAUSE, NULL), 0);
		cr_assert_eq(ct_verb(id, API_VERB_RESUME, NULL), 0);
		CT_STATE(id, API_ST_RUNNING);
	}
	if (api_has(be, API_CAP_VERB(API_VERB_STOP))) {
		cr_assert_eq(ct_verb(id, API_VERB_STOP, "2"), 0);
		CT_STATE(id, API_ST_STOPPED);
		if (api_has(be, API_CAP_VERB(API_VERB_PAUSE))) {
			cr_assert_eq(ct_verb(id, API_VERB_PAUSE, NULL),
				     -EBUSY);
			cr_assert_eq(ct_verb(id, API_VERB_RESUME, NULL),
				     -EBUSY);
		}
		cr_assert_eq(ct_verb(id, API_VERB_PING, NULL), -EBUSY);
		/* a platform whose stop is final (cwsandbox) has no start */
		if (api_has(be, API_CAP_VERB(API_VERB_START))) {
			cr_assert_eq(ct_verb(id, API_VERB_START, NULL), 0);
			CT_STATE(id, API_ST_RUNNING);
		}
	}
	cr_assert_eq(ct_verb(id, API_VERB_DESTROY, NULL), 0);
	ct_forget(id);
	CT_STATE(id, API_ST_DESTROYED);
	cr_assert_eq(ct_verb(id, API_VERB_PING, NULL), -ENOENT);
}

Test(contract, create_errors)
{
	char name[64], id[API_ID_MAX], tpl[64];
	struct ct_wait w;

	ct_init(&w);
	api_sb_create(be, "bad/name", NULL, 0, ct_sb_cb, &w);
	cr_assert_eq(ct_wait(&w), -EINVAL);
	ct_init(&w);
	api_sb_create(be, "..", NULL, 0, ct_sb_cb, &w);
	cr_assert_eq(ct_wait(&w), -EINVAL);

	ct_name(name, sizeof(name), "dup");
	cr_assert_eq(ct_create(name, NULL, id, &w), 0, "create: %s", w.msg);
	if (!api_has(be, API_CAP_ALIAS)) {
		cr_assert_eq(ct_create(name, NULL, NULL, &w), -EEXIST);
	}
	ct_name(tpl, sizeof(tpl), "no-such-template");
	ct_name(name, sizeof(name), "notpl");
	cr_assert_eq(ct_create(name, tpl, NULL, &w), -ENOENT);

	cr_assert_eq(ct_verb("ct-no-such-sandbox",
			     api_has(be, API_CAP_VERB(API_VERB_PAUSE)) ?
			     API_VERB_PAUSE : API_VERB_PING, NULL), -ENOENT);
	if (api_has(be, API_CAP_VERB(API_VERB_SNAPSHOT)))
		cr_assert_eq(ct_verb(id, API_VERB_SNAPSHOT, ""), -EINVAL);
	cr_assert_eq(ct_verb(id, (enum api_verb)99, NULL), -EINVAL);
}

Test(contract, reopen_shows_true_state)
{
	char name[64], id[API_ID_MAX], id2[API_ID_MAX];
	struct ct_wait w;

	if (!api_has(be, API_CAP_VERB(API_VERB_PAUSE)))
		cr_skip_test("the backend cannot pause");
	ct_name(name, sizeof(name), "keep");
	cr_assert_eq(ct_create(name, NULL, id, &w), 0, "create: %s", w.msg);
	ct_name(name, sizeof(name), "keep2");
	cr_assert_eq(ct_create(name, NULL, id2, &w), 0, "create: %s", w.msg);
	cr_assert_eq(ct_verb(id, API_VERB_PAUSE, NULL), 0);
	cr_assert_eq(ct_put(id2, "/tmp/kept", "still here\n", O_TRUNC), 0);

	/* like a remount: a new backend instance on the same data */
	api_close(be);
	ct_open_backend();
	CT_STATE(id, API_ST_PAUSED);
	CT_STATE(id2, API_ST_RUNNING);
	ct_expect_content(id2, "/tmp/kept", "still here\n");
	cr_assert_eq(ct_verb(id, API_VERB_RESUME, NULL), 0);
	CT_STATE(id, API_ST_RUNNING);
}

/* ---- files -------------------------------------------------------------- */

static const struct api_dirent *ct_find(struct ct_wait *w, const char *n)
{
	for (size_t i = 0; i < w->n; i++)
		if (!strcmp(w->ents[i].name, n))
			return &w->ents[i];
	return NULL;
}

static void ct_free_ents(struct ct_wait *w)
{
	for (size_t i = 0; i < w->n; i++)
		free((char *)w->ents[i].name);
	free(w->ents);
}

Test(contract, files)
{
	char name[64], id[API_ID_MAX];
	struct ct_wait w;
	struct stat st;
	const struct api_dirent *e;
	int err;

	ct_name(name, sizeof(name), "files");
	cr_assert_eq(ct_create(name, NULL, id, &w), 0, "create: %s", w.msg);

	err = CT_OP(api_file_mkdir(be, id, "/ct", 0755, ct_done_cb, &w_));
	cr_assert_eq(err, 0, "mkdir: %s", strerror(-err));
	err = CT_OP(api_file_mkdir(be, id, "/ct", 0755, ct_done_cb, &w_));
	cr_assert_eq(err, -EEXIST);
	cr_assert_eq(ct_put(id, "/ct/a.txt", "hello\n", O_TRUNC), 0);
	ct_expect_content(id, "/ct/a.txt", "hello\n");
	/* O_TRUNC rewrites, O_APPEND appends */
	cr_assert_eq(ct_put(id, "/ct/a.txt", "hi\n", O_TRUNC), 0);
	cr_assert_eq(ct_put(id, "/ct/a.txt", "more\n", O_APPEND), 0);
	ct_expect_content(id, "/ct/a.txt", "hi\nmore\n");
	cr_assert_eq(ct_put(id, "/ct/a.txt", "x", O_EXCL), -EEXIST);

	/* readdir carries attributes */
	cr_assert_eq(ct_put(id, "/ct/b.bin", "12345", O_TRUNC), 0);
	err = CT_OP(api_file_mkdir(be, id, "/ct/sub", 0700, ct_done_cb, &w_));
	cr_assert_eq(err, 0);
	ct_init(&w);
	api_file_readdir(be, id, "/ct", ct_readdir_cb, &w);
	cr_assert_eq(ct_wait(&w), 0, "readdir: %s", w.msg);
	cr_assert_eq(w.n, 3, "entries: %zu", w.n);
	e = ct_find(&w, "a.txt");
	cr_assert(e && S_ISREG(e->st.st_mode) && e->st.st_size == 8);
	e = ct_find(&w, "b.bin");
	cr_assert(e && e->st.st_size == 5);
	e = ct_find(&w, "sub");
	cr_assert(e && S_ISDIR(e->st.st_mode));
	cr_assert_eq(e->st.st_mode & 0777, 0700);
	ct_free_ents(&w);

	/* rename */
	err = CT_OP(api_file_rename(be, id, "/ct/b.bin", "/ct/sub/c.bin", 0,
				    ct_done_cb, &w_));
	cr_assert_eq(err, 0, "rename: %s", strerror(-err));
	cr_assert_eq(ct_stat(id, "/ct/b.bin", &st), -ENOENT);
	ct_expect_content(id, "/ct/sub/c.bin", "12345");
	err = CT_OP(api_file_rename(be, id, "/ct/a.txt", "/ct/sub/c.bin",
				    RENAME_NOREPLACE, ct_done_cb, &w_));
	cr_assert_eq(err, -EEXIST);

	/* chmod, truncate, times in setattr */
	struct api_setattr sa = {.mask = API_SET_MODE, .mode = 0600};
	err = CT_OP(api_file_setattr(be, id, "/ct/a.txt", &sa, ct_done_cb,
				     &w_));
	cr_assert_eq(err, 0);
	cr_assert_eq(ct_stat(id, "/ct/a.txt", &st), 0);
	cr_assert_eq(st.st_mode & 07777, 0600);
	sa = (struct api_setattr){.mask = API_SET_SIZE, .size = 2};
	err = CT_OP(api_file_setattr(be, id, "/ct/a.txt", &sa, ct_done_cb,
				     &w_));
	cr_assert_eq(err, 0);
	ct_expect_content(id, "/ct/a.txt", "hi");
	sa = (struct api_setattr){.mask = API_SET_MTIME,
				  .mtime = {1000000000, 0}};
	err = CT_OP(api_file_setattr(be, id, "/ct/a.txt", &sa, ct_done_cb,
				     &w_));
	cr_assert_eq(err, 0);
	cr_assert_eq(ct_stat(id, "/ct/a.txt", &st), 0);
	cr_assert_eq(st.st_mtime, 1000000000);
	cr_assert_eq(st.st_size, 2);

	/* symlink + readlink, stat does not follow */
	err = CT_OP(api_file_symlink(be, id, "sub/c.bin", "/ct/ln",
				     ct_done_cb, &w_));
	cr_assert_eq(err, 0, "symlink: %s", strerror(-err));
	ct_init(&w);
	api_file_readlink(be, id, "/ct/ln", ct_str_cb, &w);
	cr_assert_eq(ct_wait(&w), 0);
	cr_assert_str_eq(w.data, "sub/c.bin");
	free(w.data);
	cr_assert_eq(ct_stat(id, "/ct/ln", &st), 0);
	cr_assert(S_ISLNK(st.st_mode));
	ct_init(&w);
	api_file_readlink(be, id, "/ct/a.txt", ct_str_cb, &w);
	cr_assert_eq(ct_wait(&w), -EINVAL);

	/* removal */
	err = CT_OP(api_file_rmdir(be, id, "/ct/sub", ct_done_cb, &w_));
	cr_assert_eq(err, -ENOTEMPTY);
	err = CT_OP(api_file_unlink(be, id, "/ct/sub/c.bin", ct_done_cb,
				    &w_));
	cr_assert_eq(err, 0);
	err = CT_OP(api_file_rmdir(be, id, "/ct/sub", ct_done_cb, &w_));
	cr_assert_eq(err, 0);
	err = CT_OP(api_file_unlink(be, id, "/ct/nope", ct_done_cb, &w_));
	cr_assert_eq(err, -ENOENT);
	cr_assert_eq(ct_stat(id, "/ct/sub", &st), -ENOENT);
	/* the dangling link is still a link */
	cr_assert_eq(ct_stat(id, "/ct/ln", &st), 0);

	/* a file in a sandbox that does not exist */
	cr_assert_eq(ct_stat("ct-no-such-sandbox", "/", &st), -ENOENT);
}

Test(contract, files_stay_inside)
{
	char name[64], id[API_ID_MAX], leaf[64], path[128], host[128];
	struct ct_wait w;
	struct stat st;
	int err;

	ct_name(name, sizeof(name), "jail");
	cr_assert_eq(ct_create(name, NULL, id, &w), 0, "create: %s", w.msg);
	snprintf(leaf, sizeof(leaf), "sbxfs-ct-escape-%d", (int)getpid());

	/* ".." above the root is the root */
	snprintf(path, sizeof(path), "/../../../%s", leaf);
	cr_assert_eq(ct_put(id, path, "dotdot\n", O_TRUNC), 0);
	snprintf(host, sizeof(host), "/%s", leaf);
	cr_assert_eq(stat(host, &st), -1, "write escaped to the host's /");
	snprintf(path, sizeof(path), "/%s", leaf);
	ct_expect_content(id, path, "dotdot\n");

	/* an absolute symlink to / is the sandbox's / */
	err = CT_OP(api_file_symlink(be, id, "/", "/tmp/ct-up", ct_done_cb,
				     &w_));
	cr_assert_eq(err, 0);
	err = CT_OP(api_file_symlink(be, id, "../../../../../../..",
				     "/tmp/ct-rel", ct_done_cb, &w_));
	cr_assert_eq(err, 0);
	snprintf(path, sizeof(path), "/tmp/ct-up/%s.2", leaf);
	cr_assert_eq(ct_put(id, path, "abs\n", O_TRUNC), 0);
	snprintf(host, sizeof(host), "/%s.2", leaf);
	cr_assert_eq(stat(host, &st), -1, "write escaped via absolute link");
	snprintf(path, sizeof(path), "/%s.2", leaf);
	ct_expect_content(id, path, "abs\n");
	snprintf(path, sizeof(path), "/tmp/ct-rel/%s.3", leaf);
	err = CT_OP(api_file_mkdir(be, id, path, 0755, ct_done_cb, &w_));
	cr_assert_eq(err, 0);
	snprintf(host, sizeof(host), "/%s.3", leaf);
	cr_assert_eq(stat(host, &st), -1, "mkdir escaped via relative link");

	/* writes inside the sandbox never reach the host's files */
	snprintf(path, sizeof(path), "/usr/local/bin/%s", leaf);
	cr_assert_eq(ct_put(id, path, "probe\n", O_TRUNC), 0);
	snprintf(host, sizeof(host), "/usr/local/bin/%s", leaf);
	cr_assert_eq(stat(host, &st), -1, "write reached the host");
	/* a link to a host file is followed inside: the sandbox's copy */
	err = CT_OP(api_file_symlink(be, id, path, "/tmp/ct-probe",
				     ct_done_cb, &w_));
	cr_assert_eq(err, 0);
	ct_expect_content(id, "/tmp/ct-probe", "probe\n");
}

/* ---- snapshot ----------------------------------------------------------- */

Test(contract, snapshot_template)
{
	char name[64], id[API_ID_MAX], id2[API_ID_MAX], snap[64];
	struct ct_wait w;

	if (!api_has(be, API_CAP_VERB(API_VERB_SNAPSHOT)))
		cr_skip_test("the backend cannot snapshot");
	ct_name(name, sizeof(name), "src");
	cr_assert_eq(ct_create(name, NULL, id, &w), 0, "create: %s", w.msg);
	cr_assert_eq(ct_put(id, "/root/snapfile", "from the snapshot\n",
			    O_TRUNC),
		     0);
	ct_name(snap, sizeof(snap), "snap");
	cr_assert_eq(ct_verb(id, API_VERB_SNAPSHOT, snap), 0);
	/* the source keeps running */
	CT_STATE(id, API_ST_RUNNING);
	if (!api_has(be, API_CAP_ALIAS))
		cr_assert_eq(ct_verb(id, API_VERB_SNAPSHOT, snap), -EEXIST);
	cr_assert_eq(ct_put(id, "/root/later", "not in it\n", O_TRUNC), 0);

	ct_name(name, sizeof(name), "fromsnap");
	cr_assert_eq(ct_create(name, snap, id2, &w), 0, "create: %s", w.msg);
	cr_assert_str_eq(w.sb.template, snap);
	ct_expect_content(id2, "/root/snapfile", "from the snapshot\n");
	struct stat st;
	cr_assert_eq(ct_stat(id2, "/root/later", &st), -ENOENT);
	/* and the copy is its own */
	cr_assert_eq(ct_put(id2, "/root/snapfile", "changed\n", O_TRUNC), 0);
	ct_expect_content(id, "/root/snapfile", "from the snapshot\n");
}

Test(contract, destroy_removes)
{
	char name[64], id[API_ID_MAX];
	struct ct_wait w;
	struct stat st;

	ct_name(name, sizeof(name), "gone");
	cr_assert_eq(ct_create(name, NULL, id, &w), 0, "create: %s", w.msg);
	cr_assert_eq(ct_put(id, "/tmp/x", "x", O_TRUNC), 0);
	if (api_has(be, API_CAP_VERB(API_VERB_PAUSE)))
		cr_assert_eq(ct_verb(id, API_VERB_PAUSE, NULL), 0);
	/* destroy works from any state, paused included */
	cr_assert_eq(ct_verb(id, API_VERB_DESTROY, NULL), 0);
	ct_forget(id);
	CT_STATE(id, API_ST_DESTROYED);
	cr_assert_eq(ct_stat(id, "/tmp/x", &st), -ENOENT);
	cr_assert_eq(ct_verb(id, API_VERB_DESTROY, NULL), -ENOENT);
	/* the name is free again */
	cr_assert_eq(ct_create(name, NULL, id, &w), 0, "recreate: %s",
		     w.msg);
	cr_assert_eq(ct_stat(id, "/tmp/x", &st), -ENOENT);
}
