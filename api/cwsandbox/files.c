/* files.c - files inside CW sandboxes, under the shared remote-file layer
 * (api/rfile.c, one cached copy per open file).
 *
 * CW has ReadFile and WriteFile (unary, capped at 32 MiB per file) and no
 * listing, stat, mkdir or delete (reference §3.5).  So:
 *  - fetch: ReadFile; a file above the cap (known from the listing, or
 *    answered FILE_TOO_LARGE) streams through StreamExec `cat`;
 *  - store: the content goes to a temporary name beside the target
 *    (WriteFile, or StreamExec `cat >` above the cap), then ONE command
 *    applies the attributes and renames it over the target, so the old
 *    content stays until the new one is complete;
 *  - stat and readdir are one `find -printf` command each (a directory
 *    costs one command, never one per entry); mkdir, unlink and rmdir one
 *    command each; rename, chmod/utimes/truncate and symlinks are api.c's
 *    exec emulation.
 * Paths always travel as their own argv entries: no quoting.  A failed
 * command's stderr is matched against the C library's messages for the
 * errno (cw_text_errno).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api/rfile.h"
#include "api/cwsandbox/cw_int.h"
#include "sandbox.pb-c.h"

#define FILE_CAP (32u << 20)		/* the platform's unary file cap */
#define LIST_MAX (64u << 20)		/* largest listing we accept */
#define PIECE (1u << 20)		/* stdin piece of a streamed store */
#define INFLIGHT 4			/* pieces queued at once */
#define FMT "%m %y %s %A@ %T@ %C@ %U %G %n %i %f\\0"

/* ---- stderr -> errno ---------------------------------------------------- */

int cw_text_errno(const char *t, int code)
{
	static const struct {
		const char *s;
		int err;
	} m[] = {
		{ "No such file or directory", ENOENT },
		{ "Not a directory", ENOTDIR },
		{ "Is a directory", EISDIR },
		{ "Directory not empty", ENOTEMPTY },
		{ "File exists", EEXIST },
		{ "Permission denied", EACCES },
		{ "Operation not permitted", EPERM },
		{ "Read-only file system", EROFS },
		{ "No space left on device", ENOSPC },
		{ "Disk quota exceeded", EDQUOT },
		{ "File name too long", ENAMETOOLONG },
		{ "Too many levels of symbolic links", ELOOP },
		{ "Invalid argument", EINVAL },
		{ "Device or resource busy", EBUSY },
		{ "Text file busy", ETXTBSY },
		{ "Invalid cross-device link", EXDEV },
	};
	size_t i;

	for (i = 0; t && i < sizeof(m) / sizeof(*m); i++)
		if (strstr(t, m[i].s))
			return -m[i].err;
	return code == 127 ? -EOPNOTSUPP : -EIO;
}

/* ---- one command (unary Exec) --------------------------------------------- */

typedef void (*cw_sh_fn)(struct cw *w, void *ud, int err, const char *msg,
			 const uint8_t *out, size_t len);

struct shop {
	cw_sh_fn cb;
	void *ud;
};

static void sh_got(struct cw *w, void *ud, const struct cw_status *st,
		   const uint8_t *resp, size_t len)
{
	struct shop *o = ud;
	Coreweave__Sandbox__V1__ExecResponse *r = NULL;
	char msg[512];
	int err = st->err;

	if (!err) {
		r = coreweave__sandbox__v1__exec_response__unpack(NULL, len,
								  resp);
		if (!r) {
			err = -EIO;
			snprintf(msg, sizeof(msg), "Exec: malformed answer");
		} else if (r->stdout_truncated) {
			err = -EFBIG;
			snprintf(msg, sizeof(msg), "the listing is larger "
				 "than %u bytes", LIST_MAX);
		} else if (r->exit_code) {
			size_t n = r->stderr.len < sizeof(msg) - 1 ?
				   r->stderr.len : sizeof(msg) - 1;

			if (n)
				memcpy(msg, r->stderr.data, n);
			msg[n] = '\0';
			msg[strcspn(msg, "\n")] = '\0';
			err = cw_text_errno(msg, r->exit_code);
			if (w->trace)
				fprintf(stderr, "sbxfs: cwsandbox: exit %d: "
					"%s\n", r->exit_code, msg);
			if (!msg[0])
				snprintf(msg, sizeof(msg), "exit status %d",
					 r->exit_code);
		}
	} else {
		snprintf(msg, sizeof(msg), "%s", st->msg);
	}
	o->cb(w, o->ud, err, err ? msg : NULL, r ? r->stdout.data : NULL,
	      r ? r->stdout.len : 0);
	if (r)
		coreweave__sandbox__v1__exec_response__free_unpacked(r, NULL);
	free(o);
}

/* Run argv (a shell script as argv[2] when it starts "/bin/sh -c") in
 * the sandbox; cb gets stdout, or the errno its stderr names. */
static void cw_sh(struct cw *w, const char *id, char **argv, cw_sh_fn cb,
		  void *ud)
{
	Coreweave__Sandbox__V1__ExecRequest q =
		COREWEAVE__SANDBOX__V1__EXEC_REQUEST__INIT;
	struct shop *o = malloc(sizeof(*o));
	size_t n = 0;
	int err;

	if (cw_is_gone(w, id)) {
		free(o);
		cb(w, ud, -ENOENT, "no such sandbox (destroyed)", NULL, 0);
		return;
	}
	if (!o) {
		cb(w, ud, -ENOMEM, "out of memory", NULL, 0);
		return;
	}
	o->cb = cb;
	o->ud = ud;
	while (argv[n])
		n++;
	if (w->trace)
		fprintf(stderr, "sbxfs: cwsandbox: run %s %s%s%s\n", argv[0],
			n > 1 ? argv[1] : "", n > 2 ? " " : "",
			n > 2 && strncmp(argv[0], "/bin/sh", 7) ? argv[2] :
			"...");
	q.sandbox_id = (char *)id;
	q.command = argv;
	q.n_command = n;
	q.max_output_bytes = LIST_MAX;
	err = cw_unary(w, "Exec", &q.base, w->timeout_ms, sh_got, o);
	if (err) {
		free(o);
		cb(w, ud, err, "cannot send the command", NULL, 0);
	}
}

/* ---- find -printf records -> struct stat ------------------------------------ */

static void ts_of(const char *s, struct timespec *ts)
{
	char *e;

	ts->tv_sec = strtoll(s, &e, 10);
	ts->tv_nsec = 0;
	if (*e == '.') {
		long ns = 0;
		int d;

		for (d = 0, e++; d < 9; d++)
			ns = ns * 10 + (*e >= '0' && *e <= '9' ? *e++ - '0'
							       : 0);
		ts->tv_nsec = ns;
	}
}

/* Parse one record; returns the name or NULL. */
static const char *rec_stat(char *r, struct stat *st)
{
	char *f[10];
	int i;

	for (i = 0; i < 10; i++) {
		f[i] = r;
		r = strchr(r, ' ');
		if (!r)
			return NULL;
		*r++ = '\0';
	}
	memset(st, 0, sizeof(*st));
	st->st_mode = (mode_t)strtoul(f[0], NULL, 8) & 07777;
	switch (f[1][0]) {
	case 'd': st->st_mode |= S_IFDIR; break;
	case 'l': st->st_mode |= S_IFLNK; break;
	case 'b': st->st_mode |= S_IFBLK; break;
	case 'c': st->st_mode |= S_IFCHR; break;
	case 'p': st->st_mode |= S_IFIFO; break;
	case 's': st->st_mode |= S_IFSOCK; break;
	default: st->st_mode |= S_IFREG;
	}
	st->st_size = strtoll(f[2], NULL, 10);
	ts_of(f[3], &st->st_atim);
	ts_of(f[4], &st->st_mtim);
	ts_of(f[5], &st->st_ctim);
	st->st_uid = strtoul(f[6], NULL, 10);
	st->st_gid = strtoul(f[7], NULL, 10);
	st->st_nlink = strtoul(f[8], NULL, 10);
	st->st_ino = strtoull(f[9], NULL, 10);
	st->st_blksize = 4096;
	st->st_blocks = (st->st_size + 511) / 512;
	return r;
}

/* ---- stat / readdir ------------------------------------------------------------- */

struct fop {
	struct cw_work wk;
	struct api_backend *be;
	char id[API_ID_MAX];
	char *path;
	mode_t mode;
	int kind;		/* 0 stat, 1 readdir, 2 mkdir, 3 unlink, 4 rmdir */
	api_stat_fn scb;
	api_readdir_fn rcb;
	api_done_fn dcb;
	void *ud;
};

static void fop_free(struct fop *o)
{
	free(o->path);
	free(o);
}

static void stat_got(struct cw *w, void *ud, int err, const char *msg,
		     const uint8_t *out, size_t len)
{
	struct fop *o = ud;
	struct stat st;
	char *rec;

	(void)w;
	if (err) {
		o->scb(o->ud, err, msg, NULL);
	} else if (!len || !(rec = strndup((const char *)out, len)) ||
		   !rec_stat(rec, &st)) {
		if (len)
			free(rec);
		o->scb(o->ud, -EIO, "stat: unreadable answer", NULL);
	} else {
		free(rec);
		o->scb(o->ud, 0, NULL, &st);
	}
	fop_free(o);
}

static void readdir_got(struct cw *w, void *ud, int err, const char *msg,
			const uint8_t *out, size_t len)
{
	struct fop *o = ud;
	struct api_dirent *ents = NULL;
	size_t n = 0, cap = 0, off = 0;
	char *buf = NULL;

	(void)w;
	if (err) {
		o->rcb(o->ud, err, msg, NULL, 0);
		fop_free(o);
		return;
	}
	buf = malloc(len + 1);
	if (!buf)
		goto oom;
	if (len)
		memcpy(buf, out, len);
	buf[len] = '\0';
	while (off < len) {
		char *r = buf + off;
		size_t rl = strlen(r);
		const char *name;

		off += rl + 1;
		if (n == cap) {
			void *ne = realloc(ents, (cap = cap ? cap * 2 : 64) *
					   sizeof(*ents));

			if (!ne)
				goto oom;
			ents = ne;
		}
		name = rec_stat(r, &ents[n].st);
		if (!name || !*name || strchr(name, '/'))
			continue;
		ents[n].name = name;
		n++;
	}
	o->rcb(o->ud, 0, NULL, ents, n);
	free(ents);
	free(buf);
	fop_free(o);
	return;
oom:
	free(ents);
	free(buf);
	o->rcb(o->ud, -ENOMEM, NULL, NULL, 0);
	fop_free(o);
}

static void done_got(struct cw *w, void *ud, int err, const char *msg,
		     const uint8_t *out, size_t len)
{
	struct fop *o = ud;

	(void)w;
	(void)out;
	(void)len;
	o->dcb(o->ud, err, msg);
	fop_free(o);
}

static void fop_run(struct cw *w, struct cw_work *wk)
{
	struct fop *o = (struct fop *)wk;
	char mode[16];

	snprintf(mode, sizeof(mode), "%o", (unsigned)(o->mode & 07777));
	switch (o->kind) {
	case 0: {
		char *argv[] = { "find", o->path, "-maxdepth", "0",
				 "-printf", FMT, NULL };

		cw_sh(w, o->id, argv, stat_got, o);
		break;
	}
	case 1: {
		char *argv[] = { "/bin/sh", "-c",
			"[ -d \"$1\" ] || [ ! -e \"$1\" ] || "
			"{ echo \"$1: Not a directory\" >&2; exit 1; }; "
			"exec find -H \"$1\" -mindepth 1 -maxdepth 1 "
			"-printf \"$2\"", "sh", o->path, FMT, NULL };

		cw_sh(w, o->id, argv, readdir_got, o);
		break;
	}
	case 2: {
		char *argv[] = { "mkdir", "-m", mode, "--", o->path, NULL };

		cw_sh(w, o->id, argv, done_got, o);
		break;
	}
	case 3: {
		char *argv[] = { "/bin/sh", "-c",
			"if [ -d \"$1\" ] && [ ! -h \"$1\" ]; then "
			"echo \"$1: Is a directory\" >&2; exit 1; fi; "
			"exec rm -- \"$1\"", "sh", o->path, NULL };

		cw_sh(w, o->id, argv, done_got, o);
		break;
	}
	default: {
		char *argv[] = { "rmdir", "--", o->path, NULL };

		cw_sh(w, o->id, argv, done_got, o);
	}
	}
}

static struct fop *fop_new(struct api_backend *be, const char *id,
			   const char *path, int kind)
{
	struct fop *o = calloc(1, sizeof(*o));

	if (!o)
		return NULL;
	o->path = strdup(path);
	if (!o->path) {
		free(o);
		return NULL;
	}
	o->be = be;
	o->kind = kind;
	snprintf(o->id, sizeof(o->id), "%s", id);
	return o;
}

void cw_file_stat(struct api_backend *be, const char *id, const char *path,
		  api_stat_fn cb, void *ud)
{
	struct fop *o = fop_new(be, id, path, 0);

	if (!o) {
		cb(ud, -ENOMEM, NULL, NULL);
		return;
	}
	o->scb = cb;
	o->ud = ud;
	cw_post(cw_of(be), &o->wk, fop_run);
}

void cw_file_readdir(struct api_backend *be, const char *id,
		     const char *path, api_readdir_fn cb, void *ud)
{
	struct fop *o = fop_new(be, id, path, 1);

	if (!o) {
		cb(ud, -ENOMEM, NULL, NULL, 0);
		return;
	}
	o->rcb = cb;
	o->ud = ud;
	cw_post(cw_of(be), &o->wk, fop_run);
}

static void done_op(struct api_backend *be, const char *id, const char *path,
		    int kind, mode_t mode, api_done_fn cb, void *ud)
{
	struct fop *o = fop_new(be, id, path, kind);

	if (!o) {
		cb(ud, -ENOMEM, NULL);
		return;
	}
	o->mode = mode;
	o->dcb = cb;
	o->ud = ud;
	cw_post(cw_of(be), &o->wk, fop_run);
}

void cw_file_mkdir(struct api_backend *be, const char *id, const char *path,
		   mode_t mode, api_done_fn cb, void *ud)
{
	done_op(be, id, path, 2, mode, cb, ud);
}

void cw_file_unlink(struct api_backend *be, const char *id, const char *path,
		    api_done_fn cb, void *ud)
{
	done_op(be, id, path, 3, 0, cb, ud);
}

struct rmdir_wait {
	struct api_backend *be;
	char id[API_ID_MAX];
	char *path;
	api_done_fn cb;
	void *ud;
};

static void rmdir_synced(void *ud)
{
	struct rmdir_wait *r = ud;

	done_op(r->be, r->id, r->path, 4, 0, r->cb, r->ud);
	free(r->path);
	free(r);
}

/* The sandbox's queued small files land first: a directory holding one
 * is not empty, as on a disk. */
void cw_file_rmdir(struct api_backend *be, const char *id, const char *path,
		   api_done_fn cb, void *ud)
{
	struct rmdir_wait *r = be->rf ? calloc(1, sizeof(*r)) : NULL;

	if (r) {
		r->be = be;
		snprintf(r->id, sizeof(r->id), "%s", id);
		r->path = strdup(path);
		r->cb = cb;
		r->ud = ud;
		if (r->path && api_rfile_sync(be->rf, id, rmdir_synced, r))
			return;
		free(r->path);
		free(r);
	}
	done_op(be, id, path, 4, 0, cb, ud);
}

/* ---- transfers ---------------------------------------------------------------- */

struct xfer {
	struct cw_work wk;
	struct api_backend *be;
	struct cw *w;
	char id[API_ID_MAX];
	char *path, *tmp;
	/* fetch */
	api_rf_sink_fn sink;
	void *sink_ud;
	uint64_t expect;
	/* store */
	int fd;
	uint64_t len, off;
	struct api_setattr sa;
	/* both */
	api_done_fn done;
	void *ud;
	struct api_exec *x;
	int err;
	int inflight;		/* pieces written, not yet taken */
	bool closed;
	char msg[512];
	char errtxt[512];
	size_t nerr;
};

static void xfer_end(struct xfer *t, int err, const char *msg)
{
	t->done(t->ud, err, err ? (msg && *msg ? msg : api_strerror(err))
				: NULL);
	free(t->path);
	free(t->tmp);
	free(t);
}

/* stream through a command (above the unary cap) */
static int x_out(void *ud, int stream, const void *buf, size_t len)
{
	struct xfer *t = ud;

	if (stream == 2) {
		size_t k = sizeof(t->errtxt) - 1 - t->nerr;

		if (k > len)
			k = len;
		memcpy(t->errtxt + t->nerr, buf, k);
		t->nerr += k;
		t->errtxt[t->nerr] = '\0';
		return 0;
	}
	if (!t->err && t->sink) {
		t->err = t->sink(t->sink_ud, buf, len);
		if (t->err)
			snprintf(t->msg, sizeof(t->msg), "cannot keep the "
				 "file's content");
	}
	return 0;
}

static void x_started(void *ud, int err, const char *msg);
static void x_exited(void *ud, int code, int err, const char *msg);
static const struct api_exec_cbs xcbs = { x_started, x_out, x_exited };

static void x_feed(struct xfer *t);

static void x_wrote(void *ud, int err, const char *msg)
{
	struct xfer *t = ud;

	t->inflight--;
	if (err && !t->err) {
		t->err = err;
		snprintf(t->msg, sizeof(t->msg), "%s",
			 msg ? msg : "cannot send the content");
	}
	x_feed(t);
}

static void x_close(struct xfer *t)
{
	if (t->closed)
		return;
	t->closed = true;
	cw_exec_close_stdin(t->be, t->x);
}

/* Keep up to INFLIGHT pieces of the file queued on the command's stdin;
 * EOF after the last one was taken. */
static void x_feed(struct xfer *t)
{
	uint8_t *buf;
	size_t n;
	ssize_t got;

	while (!t->err && t->off < t->len && t->inflight < INFLIGHT) {
		n = t->len - t->off > PIECE ? PIECE : t->len - t->off;
		buf = malloc(n);
		got = buf ? pread(t->fd, buf, n, (off_t)t->off) : -1;
		if (got != (ssize_t)n) {
			free(buf);
			t->err = -EIO;
			snprintf(t->msg, sizeof(t->msg), "cannot read the "
				 "staged copy");
			break;
		}
		t->off += n;
		t->inflight++;
		cw_exec_write(t->be, t->x, buf, n, x_wrote, t);
		free(buf);
	}
	if (!t->inflight && (t->err || t->off >= t->len))
		x_close(t);
}

static void x_started(void *ud, int err, const char *msg)
{
	struct xfer *t = ud;

	if (err) {
		/* nothing else follows a failed start */
		cw_exec_free(t->be, t->x);
		xfer_end(t, err, msg);
		return;
	}
	if (!t->sink)
		x_feed(t);
}

static void x_exited(void *ud, int code, int err, const char *msg)
{
	struct xfer *t = ud;
	char m[600];

	cw_exec_free(t->be, t->x);	/* in the loop: freed after us */
	if (!err && code) {
		t->errtxt[strcspn(t->errtxt, "\n")] = '\0';
		err = cw_text_errno(t->errtxt, code);
		snprintf(m, sizeof(m), "%s", t->errtxt[0] ? t->errtxt :
			 "the transfer command failed");
		msg = m;
	}
	if (!err && t->err) {
		err = t->err;
		msg = t->msg;
	}
	xfer_end(t, err, msg);
}

static void x_run(struct xfer *t, const char *const *argv, bool in)
{
	struct api_exec_req req = { .argv = argv, .want_stdin = in };

	cw_exec_start(t->be, t->id, &req, &xcbs, t, &t->x);
	/* a failed start reported itself through x_started */
}

/* ---- fetch ------------------------------------------------------------------ */

static void fetch_stream(struct xfer *t)
{
	const char *argv[] = { "cat", "--", t->path, NULL };

	x_run(t, argv, false);
}

static void read_got(struct cw *w, void *ud, const struct cw_status *st,
		     const uint8_t *resp, size_t len)
{
	struct xfer *t = ud;
	Coreweave__Sandbox__V1__ReadFileResponse *r;
	int err;

	(void)w;
	if (st->err == -EFBIG) {
		fetch_stream(t);	/* grew past the cap: stream it */
		return;
	}
	if (st->err) {
		xfer_end(t, st->err, st->msg);
		return;
	}
	r = coreweave__sandbox__v1__read_file_response__unpack(NULL, len,
							       resp);
	if (!r) {
		xfer_end(t, -EIO, "ReadFile: malformed answer");
		return;
	}
	err = r->content.len ? t->sink(t->sink_ud, r->content.data,
				       r->content.len) : 0;
	coreweave__sandbox__v1__read_file_response__free_unpacked(r, NULL);
	xfer_end(t, err, "cannot keep the file's content");
}

static void fetch_run(struct cw *w, struct cw_work *wk)
{
	struct xfer *t = (struct xfer *)wk;
	Coreweave__Sandbox__V1__ReadFileRequest q =
		COREWEAVE__SANDBOX__V1__READ_FILE_REQUEST__INIT;
	int err;

	if (cw_is_gone(w, t->id)) {
		xfer_end(t, -ENOENT, "no such sandbox (destroyed)");
		return;
	}
	if (t->expect > FILE_CAP) {
		fetch_stream(t);
		return;
	}
	q.sandbox_id = t->id;
	q.path = t->path;
	err = cw_unary(w, "ReadFile", &q.base, w->timeout_ms +
		       (int64_t)(t->expect >> 20) * 100, read_got, t);
	if (err)
		xfer_end(t, err, "ReadFile: cannot send");
}

static struct xfer *xfer_new(struct api_backend *be, const char *id,
			     const char *path, api_done_fn done, void *ud)
{
	struct xfer *t = calloc(1, sizeof(*t));

	if (!t || !(t->path = strdup(path))) {
		free(t);
		done(ud, -ENOMEM, NULL);
		return NULL;
	}
	t->be = be;
	t->w = cw_of(be);
	t->done = done;
	t->ud = ud;
	t->fd = -1;
	snprintf(t->id, sizeof(t->id), "%s", id);
	return t;
}

static void cw_rf_fetch(struct api_backend *be, const char *id,
			const char *path, uint64_t expect,
			api_rf_sink_fn sink, void *sink_ud, api_done_fn done,
			void *ud)
{
	struct xfer *t = xfer_new(be, id, path, done, ud);

	if (!t)
		return;
	t->sink = sink;
	t->sink_ud = sink_ud;
	t->expect = expect;
	cw_post(t->w, &t->wk, fetch_run);
}

/* ---- store ------------------------------------------------------------------ */

/* The script that ends a store: "$1" temp, "$2" target; attributes as
 * numbers only.  With `cat` first when the content comes on stdin. */
static char *store_script(const struct api_setattr *sa, bool cat)
{
	char *s = malloc(2048), ts[48];
	size_t n = 0, cap = 2048;

	if (!s)
		return NULL;
#define ADD(...) (n += (size_t)snprintf(s + n, cap - n, __VA_ARGS__))
	ADD("t=$1; f=$2; fail() { rc=$?; rm -f -- \"$t\"; exit $rc; }; ");
	if (cat)
		ADD("cat > \"$t\" || fail; ");
	/* writing through a symlink replaces what it points to */
	ADD("if [ -h \"$f\" ]; then f=$(readlink -f -- \"$f\") || fail; fi; ");
	ADD("chmod %o -- \"$t\" || fail; ",
	    (unsigned)((sa->mask & API_SET_MODE ? sa->mode : 0644) & 07777));
	if ((sa->mask & (API_SET_UID | API_SET_GID)) ==
	    (API_SET_UID | API_SET_GID))
		ADD("chown %u:%u -- \"$t\" || fail; ", (unsigned)sa->uid,
		    (unsigned)sa->gid);
	else if (sa->mask & API_SET_UID)
		ADD("chown %u -- \"$t\" || fail; ", (unsigned)sa->uid);
	else if (sa->mask & API_SET_GID)
		ADD("chgrp %u -- \"$t\" || fail; ", (unsigned)sa->gid);
	else
		ADD("o=$(stat -c %%u:%%g -- \"$f\" 2>/dev/null) && "
		    "chown \"$o\" -- \"$t\" 2>/dev/null; ");
	if (sa->mask & API_SET_ATIME) {
		snprintf(ts, sizeof(ts), "@%lld.%09ld",
			 (long long)sa->atime.tv_sec, (long)sa->atime.tv_nsec);
		ADD("touch -a -d %s -- \"$t\" || fail; ", ts);
	}
	if (sa->mask & API_SET_MTIME) {
		snprintf(ts, sizeof(ts), "@%lld.%09ld",
			 (long long)sa->mtime.tv_sec, (long)sa->mtime.tv_nsec);
		ADD("touch -m -d %s -- \"$t\" || fail; ", ts);
	}
	ADD("mv -f -- \"$t\" \"$f\" || fail");
#undef ADD
	if (n >= cap) {
		free(s);
		return NULL;
	}
	return s;
}

static void finish_got(struct cw *w, void *ud, int err, const char *msg,
		       const uint8_t *out, size_t len)
{
	struct xfer *t = ud;

	(void)w;
	(void)out;
	(void)len;
	xfer_end(t, err, msg);
}

static void write_got(struct cw *w, void *ud, const struct cw_status *st,
		      const uint8_t *resp, size_t len)
{
	struct xfer *t = ud;
	char *script;

	(void)resp;
	(void)len;
	if (st->err) {
		xfer_end(t, st->err, st->msg);
		return;
	}
	script = store_script(&t->sa, false);
	if (!script) {
		xfer_end(t, -ENOMEM, NULL);
		return;
	}
	{
		char *argv[] = { "/bin/sh", "-c", script, "sh", t->tmp,
				 t->path, NULL };

		cw_sh(w, t->id, argv, finish_got, t);
	}
	free(script);
}

/* One WriteFile of the len bytes of t->fd to path (at most FILE_CAP);
 * got follows, or t ends here. */
static void write_unary(struct cw *w, struct xfer *t, const char *path,
			cw_unary_fn got)
{
	Coreweave__Sandbox__V1__WriteFileRequest q =
		COREWEAVE__SANDBOX__V1__WRITE_FILE_REQUEST__INIT;
	uint8_t *buf = malloc(t->len ? t->len : 1);
	int err;

	if (!buf || pread(t->fd, buf, t->len, 0) != (ssize_t)t->len) {
		free(buf);
		xfer_end(t, -EIO, "cannot read the staged copy");
		return;
	}
	q.sandbox_id = t->id;
	q.path = (char *)path;
	q.content.data = buf;
	q.content.len = t->len;
	err = cw_unary(w, "WriteFile", &q.base, w->timeout_ms +
		       (int64_t)(t->len >> 20) * 100, got, t);
	free(buf);
	if (err)
		xfer_end(t, err, "WriteFile: cannot send");
}

static void store_run(struct cw *w, struct cw_work *wk)
{
	struct xfer *t = (struct xfer *)wk;
	static unsigned seq;
	const char *slash = strrchr(t->path, '/');
	char *script;

	if (cw_is_gone(w, t->id)) {
		xfer_end(t, -ENOENT, "no such sandbox (destroyed)");
		return;
	}
	if (!slash || !slash[1]) {
		xfer_end(t, -EINVAL, "bad path");
		return;
	}
	if (asprintf(&t->tmp, "%.*s/.sbxfs-%x-%u-%s",
		     (int)(slash - t->path), t->path, (unsigned)getpid(),
		     ++seq, slash + 1) < 0) {
		t->tmp = NULL;
		xfer_end(t, -ENOMEM, NULL);
		return;
	}
	if (t->len <= FILE_CAP) {
		write_unary(w, t, t->tmp, write_got);
		return;
	}
	/* above the unary cap: one command takes the content on stdin */
	script = store_script(&t->sa, true);
	if (!script) {
		xfer_end(t, -ENOMEM, NULL);
		return;
	}
	{
		const char *argv[] = { "/bin/sh", "-c", script, "sh", t->tmp,
				       t->path, NULL };

		x_run(t, argv, true);
	}
	free(script);
}

static void cw_rf_store(struct api_backend *be, const char *id,
			const char *path, int fd, uint64_t len,
			const struct api_setattr *sa, api_done_fn done,
			void *ud)
{
	struct xfer *t = xfer_new(be, id, path, done, ud);

	if (!t)
		return;
	t->fd = fd;
	t->len = len;
	t->sa = *sa;
	cw_post(t->w, &t->wk, store_run);
}

/* ---- store_batch: small files in one archive ------------------------------- */

/* The archive is at t->path in the sandbox: the layer's script (kept in
 * t->tmp) lands its files and removes it. */
static void batch_ran(struct cw *w, void *ud, int err, const char *msg,
		      const uint8_t *out, size_t len)
{
	struct xfer *t = ud;
	char m[512];

	(void)w;
	(void)out;
	(void)len;
	if (err) {
		snprintf(m, sizeof(m), "cwsandbox: storing a batch of small "
			 "files failed: %s", msg && *msg ? msg :
			 api_strerror(err));
		xfer_end(t, err, m);
		return;
	}
	xfer_end(t, 0, NULL);
}

/* after a failed upload: whatever part of the archive arrived is gone */
static void batch_removed(struct cw *w, void *ud, int err, const char *msg,
			  const uint8_t *out, size_t len)
{
	struct xfer *t = ud;

	(void)w;
	(void)err;
	(void)msg;
	(void)out;
	(void)len;
	xfer_end(t, t->err, t->msg);
}

static void batch_wrote(struct cw *w, void *ud, const struct cw_status *st,
			const uint8_t *resp, size_t len)
{
	struct xfer *t = ud;
	char *argv[] = { "/bin/sh", "-c", t->tmp, NULL };

	(void)resp;
	(void)len;
	if (st->err) {
		char *rm[] = { "rm", "-f", "--", t->path, NULL };

		t->err = st->err;
		snprintf(t->msg, sizeof(t->msg), "%s",
			 st->msg[0] ? st->msg : api_strerror(st->err));
		cw_sh(w, t->id, rm, batch_removed, t);
		return;
	}
	cw_sh(w, t->id, argv, batch_ran, t);
}

static void batch_run(struct cw *w, struct cw_work *wk)
{
	struct xfer *t = (struct xfer *)wk;
	if (cw_is_gone(w, t->id)) {
		xfer_end(t, -ENOENT, "no such sandbox (destroyed)");
		return;
	}
	if (t->len > FILE_CAP) {
		xfer_end(t, -EFBIG, "cwsandbox: batch above the unary cap");
		return;
	}
	write_unary(w, t, t->path, batch_wrote);
}

/* One WriteFile of the layer's archive + one command that lands it. */
static void cw_rf_store_batch(struct api_backend *be, const char *id, int fd,
			      uint64_t len, const char *apath,
			      const char *script,
			      const struct api_rf_member *m, size_t nm,
			      api_done_fn done, void *ud)
{
	struct xfer *t = xfer_new(be, id, apath, done, ud);

	(void)m;
	(void)nm;
	if (!t)
		return;
	t->fd = fd;
	t->len = len;
	t->tmp = strdup(script);
	if (!t->tmp) {
		xfer_end(t, -ENOMEM, NULL);
		return;
	}
	cw_post(t->w, &t->wk, batch_run);
}

const struct api_rfile_ops cw_rfile_ops = {
	.fetch = cw_rf_fetch,
	.store = cw_rf_store,
	.store_batch = cw_rf_store_batch,
};
