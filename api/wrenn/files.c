/* files.c - files inside Wrenn capsules: list, stat, staged read/write.
 *
 * Wrenn has no stat, no offset reads or writes, no rename or chmod
 * (protocol doc §5).  So:
 *  - attributes come from files/list of the parent directory, cached for
 *    a second per (capsule, directory) with concurrent askers coalesced;
 *    our own changes drop the cached listing;
 *  - an open file is staged (api/stage.c): its content is downloaded once
 *    with files/stream/read (after files/list said it exists and how big
 *    it is, since a missing file is a 200 with an empty body), reads are
 *    served from the stage as soon as the bytes are there, writes go to
 *    the stage, and flush uploads the whole stage with files/write;
 *  - a stage bigger than the upload ceiling is uploaded as numbered part
 *    files next to the target and joined inside the capsule with one
 *    foreground exec (`cat parts > file`), so the old content stays until
 *    the new one is complete there.
 *
 * Per open file, reads and writes that can be served from the stage run
 * in the caller's thread under the file lock; everything else is an op in
 * a per-file FIFO run on the service thread, in order.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api/stage.h"
#include "api/wrenn/wrenn_int.h"

#define DCACHE_TTL_MS 1000
#define DCACHE_MAX 256
#define UPLOAD_PARALLEL 3

/* ---- FileEntry -> struct stat ------------------------------------------- */

const char *wrenn_entry_stat(const cJSON *e, struct stat *st)
{
	const cJSON *name = cJSON_GetObjectItemCaseSensitive(e, "name");
	const cJSON *type = cJSON_GetObjectItemCaseSensitive(e, "type");
	const cJSON *size = cJSON_GetObjectItemCaseSensitive(e, "size");
	const cJSON *mode = cJSON_GetObjectItemCaseSensitive(e, "mode");
	const cJSON *mt = cJSON_GetObjectItemCaseSensitive(e, "modified_at");
	const cJSON *lt = cJSON_GetObjectItemCaseSensitive(e,
							   "symlink_target");
	const char *t;
	mode_t perm;

	if (!cJSON_IsString(name) || !name->valuestring[0] ||
	    strchr(name->valuestring, '/') || !strcmp(name->valuestring, ".") ||
	    !strcmp(name->valuestring, ".."))
		return NULL;
	memset(st, 0, sizeof(*st));
	t = cJSON_IsString(type) ? type->valuestring : "unknown";
	/* mode is the permission bits as a decimal integer (quirk 32) */
	perm = cJSON_IsNumber(mode) ? (mode_t)mode->valuedouble & 07777 :
				      0644;
	if (cJSON_IsString(lt) && lt->valuestring[0]) {
		/* a symlink reports its target's type plus the target:
		 * show the link itself; readlink (exec) gives the text */
		st->st_mode = S_IFLNK | 0777;
	} else if (!strcmp(t, "directory")) {
		st->st_mode = S_IFDIR | perm;
	} else if (!strcmp(t, "symlink")) {
		st->st_mode = S_IFLNK | 0777;
	} else {
		/* "file", and "unknown" (sockets, devices, broken links):
		 * a regular file is the least surprising stand-in */
		st->st_mode = S_IFREG | perm;
	}
	st->st_nlink = S_ISDIR(st->st_mode) ? 2 : 1;
	if (cJSON_IsNumber(size) && size->valuedouble > 0)
		st->st_size = (off_t)size->valuedouble;
	st->st_blksize = 4096;
	st->st_blocks = (st->st_size + 511) / 512;
	if (cJSON_IsNumber(mt) && mt->valuedouble > 0)
		st->st_mtime = st->st_ctime = st->st_atime =
			(time_t)mt->valuedouble;
	return name->valuestring;
}

/* ---- directory listing cache -------------------------------------------- */

typedef void (*dc_fn)(struct wrenn *w, void *ud, int err, const char *msg,
		      const struct api_dirent *ents, size_t n);

struct dc_waiter {
	struct dc_waiter *next;
	dc_fn fn;
	void *ud;
};

struct wrenn_dcache {
	struct wrenn_dcache *next;
	struct wrenn *w;
	char id[API_ID_MAX];
	char *dir;
	int64_t at;	/* when loaded; 0 while loading */
	bool loading, stale;
	struct api_dirent *ents; /* sorted by name */
	size_t n;
	struct dc_waiter *waiters;
};

static void dc_clear(struct wrenn_dcache *d)
{
	size_t i;

	for (i = 0; i < d->n; i++)
		free((char *)d->ents[i].name);
	free(d->ents);
	d->ents = NULL;
	d->n = 0;
}

static void dc_unlink_free(struct wrenn *w, struct wrenn_dcache *d)
{
	struct wrenn_dcache **pp;

	for (pp = &w->dcache; *pp; pp = &(*pp)->next)
		if (*pp == d) {
			*pp = d->next;
			break;
		}
	dc_clear(d);
	free(d->dir);
	free(d);
}

void wrenn_dcache_drop(struct wrenn *w, const char *id, const char *dir)
{
	struct wrenn_dcache *d, *next;

	for (d = w->dcache; d; d = next) {
		next = d->next;
		if ((id && strcmp(d->id, id)) || (dir && strcmp(d->dir, dir)))
			continue;
		if (d->loading)
			d->stale = true; /* do not keep what is in flight */
		else
			dc_unlink_free(w, d);
	}
}

void wrenn_dcache_free(struct wrenn *w)
{
	while (w->dcache)
		dc_unlink_free(w, w->dcache);
}

static int ent_cmp(const void *a, const void *b)
{
	return strcmp(((const struct api_dirent *)a)->name,
		      ((const struct api_dirent *)b)->name);
}

static void dc_got(void *ud, int err, const char *msg,
		   const struct wrenn_resp *r)
{
	struct wrenn_dcache *d = ud;
	struct wrenn *w = d->w;
	struct dc_waiter *wt = d->waiters, *next;
	const cJSON *ents = NULL, *e;
	size_t cap, i = 0;

	d->waiters = NULL;
	d->loading = false;
	if (!err) {
		ents = cJSON_GetObjectItemCaseSensitive(r->json, "entries");
		if (!cJSON_IsArray(ents) && !cJSON_IsNull(ents) && ents) {
			err = -EPROTO;
			msg = "wrenn: files/list answer has no entries";
		}
	}
	if (!err && r->json && !ents && !cJSON_IsObject(r->json)) {
		err = -EPROTO;
		msg = "wrenn: files/list answer is not an object";
	}
	if (!err) {
		cap = (size_t)cJSON_GetArraySize(ents);
		d->ents = calloc(cap ? cap : 1, sizeof(*d->ents));
		if (!d->ents) {
			err = -ENOMEM;
			msg = "wrenn: out of memory";
		}
	}
	if (err)
		ents = NULL;
	cJSON_ArrayForEach(e, ents)
	{
		const char *name = wrenn_entry_stat(e, &d->ents[i].st);

		if (!name)
			continue;
		d->ents[i].name = strdup(name);
		if (d->ents[i].name)
			i++;
	}
	d->n = i;
	if (!err)
		qsort(d->ents, d->n, sizeof(*d->ents), ent_cmp);
	d->at = wrenn_now_ms();
	for (; wt; wt = next) {
		next = wt->next;
		wt->fn(w, wt->ud, err, msg, d->ents, err ? 0 : d->n);
		free(wt);
	}
	if (err || d->stale)
		dc_unlink_free(w, d);
}

/* Loop: get the listing of dir (fresh within the TTL unless force). */
static void dc_get(struct wrenn *w, const char *id, const char *dir,
		   bool force, dc_fn fn, void *ud)
{
	struct wrenn_dcache *d, *oldest = NULL;
	struct dc_waiter *wt;
	size_t count = 0;
	cJSON *j;
	char path[256], *body;

	for (d = w->dcache; d; d = d->next) {
		count++;
		if (!d->loading && (!oldest || d->at < oldest->at))
			oldest = d;
		if (strcmp(d->id, id) || strcmp(d->dir, dir) || d->stale)
			continue;
		if (d->loading)
			break;
		if (!force && wrenn_now_ms() - d->at < DCACHE_TTL_MS) {
			fn(w, ud, 0, NULL, d->ents, d->n);
			return;
		}
		dc_unlink_free(w, d);
		d = NULL;
		break;
	}
	wt = calloc(1, sizeof(*wt));
	if (!wt) {
		fn(w, ud, -ENOMEM, "wrenn: out of memory", NULL, 0);
		return;
	}
	wt->fn = fn;
	wt->ud = ud;
	if (d && d->loading) {
		wt->next = d->waiters;
		d->waiters = wt;
		return;
	}
	if (count >= DCACHE_MAX && oldest)
		dc_unlink_free(w, oldest);
	d = calloc(1, sizeof(*d));
	j = cJSON_CreateObject();
	cJSON_AddStringToObject(j, "path", dir);
	cJSON_AddNumberToObject(j, "depth", 1);
	body = cJSON_PrintUnformatted(j);
	cJSON_Delete(j);
	if (!d || !body || !(d->dir = strdup(dir))) {
		free(d);
		free(body);
		free(wt);
		fn(w, ud, -ENOMEM, "wrenn: out of memory", NULL, 0);
		return;
	}
	d->w = w;
	snprintf(d->id, sizeof(d->id), "%s", id);
	d->loading = true;
	d->waiters = wt;
	d->next = w->dcache;
	w->dcache = d;
	snprintf(path, sizeof(path), "/v1/capsules/%s/files/list", id);
	wrenn_call(w, "POST", path, body, dc_got, d);
	free(body);
}

static const struct api_dirent *dc_find(const struct api_dirent *ents,
					size_t n, const char *name)
{
	struct api_dirent key = { .name = name };

	return n ? bsearch(&key, ents, n, sizeof(*ents), ent_cmp) : NULL;
}

/* ---- path operations ---------------------------------------------------- */

enum pop_kind { POP_STAT, POP_READDIR, POP_MKDIR, POP_UNLINK, POP_RMDIR };

struct path_op {
	struct wrenn_work wk;
	struct wrenn *w;
	enum pop_kind kind;
	char id[API_ID_MAX];
	char *path;   /* normalised, no trailing '/' ("/" for the root) */
	char *parent; /* NULL for the root */
	const char *base;
	mode_t mode;
	void *cb;
	void *ud;
};

static void pop_free(struct path_op *op)
{
	free(op->path);
	free(op->parent);
	free(op);
}

static void pop_fail(struct path_op *op, int err, const char *msg)
{
	switch (op->kind) {
	case POP_STAT:
		((api_stat_fn)op->cb)(op->ud, err, msg, NULL);
		break;
	case POP_READDIR:
		((api_readdir_fn)op->cb)(op->ud, err, msg, NULL, 0);
		break;
	default:
		((api_done_fn)op->cb)(op->ud, err, msg);
	}
	pop_free(op);
}

static void pop_done(struct path_op *op, int err, const char *msg)
{
	((api_done_fn)op->cb)(op->ud, err, err ? msg : NULL);
	pop_free(op);
}

/* Normalise path into op: collapse "//" and ".", resolve ".." lexically
 * (".." above the root is the root), drop a trailing '/'. */
static int pop_path(struct path_op *op, const char *path)
{
	size_t n, o = 0, cl;
	const char *c, *e;
	char *p, *slash;

	if (!path || path[0] != '/')
		return -EINVAL;
	n = strlen(path);
	if (n > 4000)
		return -ENAMETOOLONG;
	p = malloc(n + 2);
	if (!p)
		return -ENOMEM;
	for (c = path; *c; c = e) {
		while (*c == '/')
			c++;
		e = strchrnul(c, '/');
		cl = (size_t)(e - c);
		if (!cl || (cl == 1 && c[0] == '.'))
			continue;
		if (cl == 2 && c[0] == '.' && c[1] == '.') {
			while (o && p[o - 1] != '/')
				o--;
			if (o)
				o--;
			continue;
		}
		p[o++] = '/';
		memcpy(p + o, c, cl);
		o += cl;
	}
	if (!o)
		p[o++] = '/';
	p[o] = '\0';
	op->path = p;
	if (o == 1)
		return 0;
	slash = strrchr(p, '/');
	op->parent = strndup(p, slash == p ? 1 : (size_t)(slash - p));
	op->base = slash + 1;
	return op->parent ? 0 : -ENOMEM;
}

static void pop_post(struct api_backend *be, enum pop_kind kind,
		     const char *id, const char *path, mode_t mode, void *cb,
		     void *ud, void (*run)(struct wrenn *, struct wrenn_work *))
{
	struct path_op *op = calloc(1, sizeof(*op));
	int err;

	if (!op) {
		struct path_op tmp = { .kind = kind, .cb = cb, .ud = ud };

		/* pop_fail frees op: give it a heap copy-free path */
		switch (kind) {
		case POP_STAT:
			((api_stat_fn)cb)(ud, -ENOMEM, "out of memory", NULL);
			break;
		case POP_READDIR:
			((api_readdir_fn)cb)(ud, -ENOMEM, "out of memory",
					     NULL, 0);
			break;
		default:
			((api_done_fn)cb)(ud, -ENOMEM, "out of memory");
		}
		(void)tmp;
		return;
	}
	op->w = wrenn_of(be);
	op->kind = kind;
	op->cb = cb;
	op->ud = ud;
	op->mode = mode;
	err = strlen(id) < API_ID_MAX ? pop_path(op, path) : -ENOENT;
	if (!err) {
		snprintf(op->id, sizeof(op->id), "%s", id);
		wrenn_post(op->w, &op->wk, run);
		return;
	}
	pop_fail(op, err, err == -ENOENT ? "wrenn: no such capsule" :
			  "wrenn: bad path");
}

/* Loop: resolve the capsule name; false (and op failed) if unknown. */
static bool pop_resolve(struct wrenn *w, struct path_op *op)
{
	char id[API_ID_MAX];

	if (wrenn_resolve(w, op->id, id, sizeof(id))) {
		pop_fail(op, -ENOENT, "wrenn: no such capsule");
		return false;
	}
	snprintf(op->id, sizeof(op->id), "%s", id);
	return true;
}

static void root_stat(struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_mode = S_IFDIR | 0755;
	st->st_nlink = 2;
	st->st_blksize = 4096;
}

/* stat */

static void stat_listed(struct wrenn *w, void *ud, int err, const char *msg,
			const struct api_dirent *ents, size_t n)
{
	struct path_op *op = ud;
	const struct api_dirent *e;

	(void)w;
	if (err) {
		pop_fail(op, err, msg);
		return;
	}
	e = dc_find(ents, n, op->base);
	if (!e) {
		pop_fail(op, -ENOENT, "wrenn: no such file or directory");
		return;
	}
	((api_stat_fn)op->cb)(op->ud, 0, NULL, &e->st);
	pop_free(op);
}

static void stat_run(struct wrenn *w, struct wrenn_work *wk)
{
	struct path_op *op = (struct path_op *)wk;
	struct stat st;

	if (!pop_resolve(w, op))
		return;
	if (!op->parent) {
		root_stat(&st);
		((api_stat_fn)op->cb)(op->ud, 0, NULL, &st);
		pop_free(op);
		return;
	}
	dc_get(w, op->id, op->parent, false, stat_listed, op);
}

void wrenn_file_stat(struct api_backend *be, const char *id,
		     const char *path, api_stat_fn cb, void *ud)
{
	pop_post(be, POP_STAT, id, path, 0, (void *)cb, ud, stat_run);
}

/* readdir */

static void readdir_listed(struct wrenn *w, void *ud, int err,
			   const char *msg, const struct api_dirent *ents,
			   size_t n)
{
	struct path_op *op = ud;

	(void)w;
	if (err) {
		pop_fail(op, err, msg);
		return;
	}
	((api_readdir_fn)op->cb)(op->ud, 0, NULL, ents, n);
	pop_free(op);
}

static void readdir_run(struct wrenn *w, struct wrenn_work *wk)
{
	struct path_op *op = (struct path_op *)wk;

	if (pop_resolve(w, op))
		dc_get(w, op->id, op->path, false, readdir_listed, op);
}

void wrenn_file_readdir(struct api_backend *be, const char *id,
			const char *path, api_readdir_fn cb, void *ud)
{
	pop_post(be, POP_READDIR, id, path, 0, (void *)cb, ud, readdir_run);
}

/* mkdir */

static void mkdir_chmoded(void *ud, int err, const char *msg, int code,
			  const char *out)
{
	struct path_op *op = ud;

	(void)out;
	if (!err && code) {
		err = -EIO;
		if (!msg)
			msg = "wrenn: chmod of the new directory failed";
	}
	wrenn_dcache_drop(op->w, op->id, op->parent);
	pop_done(op, err, msg);
}

static void mkdir_got(void *ud, int err, const char *msg,
		      const struct wrenn_resp *r)
{
	struct path_op *op = ud;
	char script[4200], *q;

	/* 409 conflict: an existing directory; 400: an existing
	 * non-directory (quirk 33) */
	if (err == -EINVAL && r->status == 400 && msg &&
	    !strstr(msg, "invalid sandbox ID"))
		err = -EEXIST;
	wrenn_dcache_drop(op->w, op->id, op->parent);
	if (err || (op->mode & 07777) == 0755 || !(op->mode & 07777)) {
		pop_done(op, err, msg);
		return;
	}
	/* files/mkdir has no mode: the platform makes 0755 */
	q = api_shell_quote(op->path);
	if (!q) {
		pop_done(op, -ENOMEM, "wrenn: out of memory");
		return;
	}
	snprintf(script, sizeof(script), "chmod %o -- %s",
		 (unsigned)(op->mode & 07777), q);
	free(q);
	wrenn_sh(op->w, op->id, script, mkdir_chmoded, op);
}

static void pop_call(struct path_op *op, const char *what,
		     wrenn_http_cb cb)
{
	char path[256], *body;
	cJSON *j = cJSON_CreateObject();

	cJSON_AddStringToObject(j, "path", op->path);
	body = cJSON_PrintUnformatted(j);
	cJSON_Delete(j);
	if (!body) {
		pop_done(op, -ENOMEM, "wrenn: out of memory");
		return;
	}
	snprintf(path, sizeof(path), "/v1/capsules/%s/files/%s", op->id,
		 what);
	wrenn_call(op->w, "POST", path, body, cb, op);
	free(body);
}

static void mkdir_run(struct wrenn *w, struct wrenn_work *wk)
{
	struct path_op *op = (struct path_op *)wk;

	if (!pop_resolve(w, op))
		return;
	if (!op->parent) {
		pop_done(op, -EEXIST, "wrenn: / exists");
		return;
	}
	pop_call(op, "mkdir", mkdir_got);
}

void wrenn_file_mkdir(struct api_backend *be, const char *id,
		      const char *path, mode_t mode, api_done_fn cb, void *ud)
{
	pop_post(be, POP_MKDIR, id, path, mode, (void *)cb, ud, mkdir_run);
}

/* unlink / rmdir: files/remove is recursive (quirk 34), so check the
 * type (and emptiness) first: unlink never removes a tree. */

static void remove_got(void *ud, int err, const char *msg,
		       const struct wrenn_resp *r)
{
	struct path_op *op = ud;

	(void)r;
	wrenn_dcache_drop(op->w, op->id, op->parent);
	if (op->kind == POP_RMDIR)
		wrenn_dcache_drop(op->w, op->id, op->path);
	pop_done(op, err, msg);
}

static void rmdir_listed(struct wrenn *w, void *ud, int err, const char *msg,
			 const struct api_dirent *ents, size_t n)
{
	struct path_op *op = ud;

	(void)w;
	(void)ents;
	if (err) {
		pop_done(op, err, msg);
		return;
	}
	if (n) {
		pop_done(op, -ENOTEMPTY, "wrenn: directory not empty");
		return;
	}
	pop_call(op, "remove", remove_got);
}

static void remove_listed(struct wrenn *w, void *ud, int err,
			  const char *msg, const struct api_dirent *ents,
			  size_t n)
{
	struct path_op *op = ud;
	const struct api_dirent *e;

	if (err) {
		pop_done(op, err, msg);
		return;
	}
	e = dc_find(ents, n, op->base);
	if (!e) {
		pop_done(op, -ENOENT, "wrenn: no such file or directory");
		return;
	}
	if (op->kind == POP_UNLINK && S_ISDIR(e->st.st_mode)) {
		pop_done(op, -EISDIR, "wrenn: is a directory");
		return;
	}
	if (op->kind == POP_RMDIR) {
		if (!S_ISDIR(e->st.st_mode)) {
			pop_done(op, -ENOTDIR, "wrenn: not a directory");
			return;
		}
		dc_get(w, op->id, op->path, true, rmdir_listed, op);
		return;
	}
	pop_call(op, "remove", remove_got);
}

static void remove_run(struct wrenn *w, struct wrenn_work *wk)
{
	struct path_op *op = (struct path_op *)wk;

	if (!pop_resolve(w, op))
		return;
	if (!op->parent) {
		pop_done(op, -EBUSY, "wrenn: cannot remove /");
		return;
	}
	dc_get(w, op->id, op->parent, true, remove_listed, op);
}

void wrenn_file_unlink(struct api_backend *be, const char *id,
		       const char *path, api_done_fn cb, void *ud)
{
	pop_post(be, POP_UNLINK, id, path, 0, (void *)cb, ud, remove_run);
}

void wrenn_file_rmdir(struct api_backend *be, const char *id,
		      const char *path, api_done_fn cb, void *ud)
{
	pop_post(be, POP_RMDIR, id, path, 0, (void *)cb, ud, remove_run);
}

/* ---- open files --------------------------------------------------------- */

enum fop_kind { FOP_OPEN, FOP_READ, FOP_WRITE, FOP_FLUSH, FOP_CLOSE };

struct fop {
	struct wrenn_work wk;
	struct fop *next;
	struct api_file *f;
	enum fop_kind kind;
	off_t off;
	size_t len;
	void *buf; /* write: our copy */
	void *cb;
	void *ud;
};

enum load_state { LD_NO, LD_RUNNING, LD_DONE, LD_FAILED };

struct api_file {
	struct wrenn *w;
	pthread_mutex_t lock; /* st, ld, wgen: fast paths vs. the loop */
	struct api_stage *st;
	enum load_state ld;
	int ld_err;
	char ld_msg[256];
	uint64_t remote_size;
	uint64_t wgen, ugen;
	int flags;
	mode_t mode;
	bool chmod_after;
	bool flush_failed;
	/* loop only */
	struct api_file *fnext, *fprev; /* w->files */
	bool listed;
	struct wrenn_http *load_h; /* the download in flight */
	bool closing;
	char id[API_ID_MAX];
	char *path, *parent, *base;
	struct fop *qhead, *qtail;
	bool busy; /* an upload (or open) is in progress */
	/* upload state */
	uint64_t up_size;
	size_t parts, parts_next, parts_done, parts_live;
	int up_err;
	char up_msg[256];
	char *part_prefix;
	struct fop *up_fop;
};

static void fop_free(struct fop *op)
{
	free(op->buf);
	free(op);
}

static void file_unlist(struct api_file *f)
{
	if (!f->listed)
		return;
	if (f->fprev)
		f->fprev->fnext = f->fnext;
	else
		f->w->files = f->fnext;
	if (f->fnext)
		f->fnext->fprev = f->fprev;
	f->listed = false;
}

static void file_free(struct api_file *f)
{
	file_unlist(f);
	api_stage_free(f->st);
	pthread_mutex_destroy(&f->lock);
	free(f->path);
	free(f->parent);
	free(f->part_prefix);
	free(f);
}

static void pump(struct api_file *f);

/* Complete the head op (it must be op) and go on with the queue. */
static void fop_complete(struct api_file *f, struct fop *op, int err,
			 const char *msg, const void *data, size_t n)
{
	bool closing = op->kind == FOP_CLOSE;

	f->qhead = op->next;
	if (!f->qhead)
		f->qtail = NULL;
	if (err && !msg)
		msg = api_strerror(err);
	switch (op->kind) {
	case FOP_READ:
		((api_data_fn)op->cb)(op->ud, err, err ? msg : NULL, data, n);
		break;
	case FOP_WRITE:
		((api_size_fn)op->cb)(op->ud, err, err ? msg : NULL, n);
		break;
	case FOP_OPEN:
		((api_open_fn)op->cb)(op->ud, err, err ? msg : NULL,
				      err ? NULL : f);
		break;
	default:
		((api_done_fn)op->cb)(op->ud, err, err ? msg : NULL);
	}
	fop_free(op);
	if (closing) {
		/* close is last by contract; anything queued behind it is
		 * a caller bug: fail it rather than touch freed memory */
		while ((op = f->qhead)) {
			f->qhead = op->next;
			op->next = NULL;
			f->qtail = NULL;
			fop_complete(f, op, -EBADF, "wrenn: file closed",
				     NULL, 0);
		}
		file_free(f);
	}
}

/* -- download -- */

static int load_sink(void *ud, const void *buf, size_t len)
{
	struct api_file *f = ud;
	int err;

	pthread_mutex_lock(&f->lock);
	err = api_stage_fill(f->st, buf, len);
	pthread_mutex_unlock(&f->lock);
	/* serve waiting reads as the prefix grows */
	if (!err && f->qhead && f->qhead->kind == FOP_READ)
		pump(f);
	return err;
}

static void load_done(void *ud, int err, const char *msg,
		      const struct wrenn_resp *r)
{
	struct api_file *f = ud;
	uint64_t got;

	(void)r;
	wrenn_keep_put(f->w, f->id);
	f->load_h = NULL;
	if (f->closing)
		return; /* cancelled by close, which frees f */
	pthread_mutex_lock(&f->lock);
	got = api_stage_size(f->st);
	if (!err && got < f->remote_size) {
		/* streaming read: errors after the 200 only show as a
		 * short body (quirk 31) */
		err = -EIO;
		snprintf(f->ld_msg, sizeof(f->ld_msg),
			 "wrenn: download of %s truncated (%llu of %llu "
			 "bytes)", f->path, (unsigned long long)got,
			 (unsigned long long)f->remote_size);
		msg = f->ld_msg;
	}
	if (err) {
		f->ld = LD_FAILED;
		f->ld_err = err;
		if (msg != f->ld_msg)
			snprintf(f->ld_msg, sizeof(f->ld_msg), "%s", msg);
		api_stage_reset(f->st);
	} else {
		f->ld = LD_DONE;
		api_stage_loaded(f->st);
	}
	pthread_mutex_unlock(&f->lock);
	pump(f);
}

static void load_start(struct api_file *f)
{
	struct wrenn_http *h;
	char path[256], *body;
	cJSON *j = cJSON_CreateObject();

	f->ld = LD_RUNNING;
	cJSON_AddStringToObject(j, "path", f->path);
	body = cJSON_PrintUnformatted(j);
	cJSON_Delete(j);
	snprintf(path, sizeof(path), "/v1/capsules/%s/files/stream/read",
		 f->id);
	h = body ? wrenn_http_new(f->w, "POST", path, body) : NULL;
	free(body);
	if (!h) {
		f->ld = LD_FAILED;
		f->ld_err = -ENOMEM;
		snprintf(f->ld_msg, sizeof(f->ld_msg), "out of memory");
		return;
	}
	wrenn_keep_get(f->w, f->id);
	wrenn_http_sink(h, load_sink, f);
	f->load_h = h;
	wrenn_http_go(h, load_done, f);
}

/* -- upload -- */

static ssize_t up_src(void *ud, void *buf, size_t len, uint64_t off)
{
	struct fop *op = ud; /* op->off: the part's offset in the stage */
	struct api_file *f = op->f;
	ssize_t n;

	pthread_mutex_lock(&f->lock);
	n = api_stage_read(f->st, buf, len, (uint64_t)op->off + off);
	pthread_mutex_unlock(&f->lock);
	return n;
}

static void upload_finish(struct api_file *f, int err, const char *msg);
static void open_fail(struct api_file *f, int err, const char *msg);

static void chmod_done(void *ud, int err, const char *msg, int code,
		       const char *out)
{
	struct api_file *f = ud;

	(void)out;
	if (!err && code) {
		err = -EIO;
		if (!msg)
			msg = "wrenn: chmod failed";
	}
	if (err)
		fprintf(stderr, "sbxfs: wrenn: %s: mode not set: %s\n",
			f->path, msg);
	upload_finish(f, 0, NULL);
}

static void upload_ok(struct api_file *f)
{
	char script[8300], *q;

	wrenn_dcache_drop(f->w, f->id, f->parent);
	pthread_mutex_lock(&f->lock);
	f->remote_size = f->up_size;
	if (f->wgen == f->ugen)
		api_stage_set_dirty(f->st, false);
	pthread_mutex_unlock(&f->lock);
	if (!f->chmod_after) {
		upload_finish(f, 0, NULL);
		return;
	}
	/* new files get envd's 0666 & ~umask; honour the create mode */
	f->chmod_after = false;
	q = api_shell_quote(f->path);
	if (!q) {
		upload_finish(f, 0, NULL);
		return;
	}
	snprintf(script, sizeof(script), "chmod %o -- %s",
		 (unsigned)(f->mode & 07777), q);
	free(q);
	wrenn_sh(f->w, f->id, script, chmod_done, f);
}

static void parts_next(struct api_file *f);

static void part_done(void *ud, int err, const char *msg,
		      const struct wrenn_resp *r)
{
	struct fop *pf = ud;
	struct api_file *f = pf->f;

	(void)r;
	free(pf);
	f->parts_live--;
	f->parts_done++;
	if (err && !f->up_err) {
		f->up_err = err;
		snprintf(f->up_msg, sizeof(f->up_msg), "%s", msg);
	}
	parts_next(f);
}

static void single_done(void *ud, int err, const char *msg,
			const struct wrenn_resp *r)
{
	struct fop *pf = ud;
	struct api_file *f = pf->f;

	(void)r;
	free(pf);
	if (err) {
		upload_finish(f, err, msg);
		return;
	}
	upload_ok(f);
}

static int upload_one(struct api_file *f, const char *dest, uint64_t off,
		      uint64_t len, wrenn_http_cb cb)
{
	struct wrenn_http *h;
	struct fop *pf;
	char path[256];

	pf = calloc(1, sizeof(*pf));
	if (!pf)
		return -ENOMEM;
	pf->f = f;
	pf->off = (off_t)off;
	snprintf(path, sizeof(path), "/v1/capsules/%s/files/write", f->id);
	h = wrenn_http_new(f->w, "POST", path, NULL);
	if (!h) {
		free(pf);
		return -ENOMEM;
	}
	/* on failure the request reports it through cb */
	wrenn_http_upload(h, dest, up_src, pf, len);
	wrenn_http_go(h, cb, pf);
	return 0;
}

static void join_done(void *ud, int err, const char *msg, int code,
		      const char *out)
{
	struct api_file *f = ud;
	char m[300];

	(void)out;
	if (!err && code) {
		snprintf(m, sizeof(m), "wrenn: joining upload parts of %s "
			 "failed (exit %d)%s%s", f->path, code,
			 msg ? ": " : "", msg ? msg : "");
		err = wrenn_err_text(msg, EIO);
		err = err == EIO ? -EIO : -err;
		msg = m;
	}
	if (err) {
		upload_finish(f, err, msg);
		return;
	}
	upload_ok(f);
}

static void cleanup_done(void *ud, int err, const char *msg, int code,
			 const char *out)
{
	struct api_file *f = ud;

	(void)err;
	(void)msg;
	(void)code;
	(void)out;
	upload_finish(f, f->up_err, f->up_msg);
}

/* The parts' glob: PREFIX followed by six digits. */
static char *parts_script(struct api_file *f, bool join)
{
	char *qp = api_shell_quote(f->part_prefix);
	char *qt = api_shell_quote(f->path);
	char *s = NULL;
	size_t n;

	if (qp && qt) {
		n = strlen(qp) + strlen(qt) + 256;
		s = malloc(n);
		if (s && join)
			snprintf(s, n, "p=%s; t=%s; set -- \"$p\"[0-9][0-9]"
				 "[0-9][0-9][0-9][0-9]; cat -- \"$@\" > \"$t\""
				 "; rc=$?; rm -f -- \"$@\"; exit $rc", qp, qt);
		else if (s)
			snprintf(s, n, "rm -f -- %s[0-9][0-9][0-9][0-9][0-9]"
				 "[0-9]", qp);
	}
	free(qp);
	free(qt);
	return s;
}

static void parts_next(struct api_file *f)
{
	char dest[4200], *script;
	uint64_t off, len;
	int err;

	while (!f->up_err && f->parts_next < f->parts &&
	       f->parts_live < UPLOAD_PARALLEL) {
		off = (uint64_t)f->parts_next * f->w->upload_max;
		len = f->up_size - off;
		if (len > f->w->upload_max)
			len = f->w->upload_max;
		snprintf(dest, sizeof(dest), "%s%06zu", f->part_prefix,
			 f->parts_next);
		err = upload_one(f, dest, off, len, part_done);
		if (err) {
			f->up_err = err;
			snprintf(f->up_msg, sizeof(f->up_msg),
				 "wrenn: out of memory");
			break;
		}
		f->parts_next++;
		f->parts_live++;
	}
	if (f->parts_live)
		return;
	script = parts_script(f, !f->up_err);
	if (!script) {
		upload_finish(f, f->up_err ? f->up_err : -ENOMEM,
			      f->up_err ? f->up_msg : "wrenn: out of memory");
		return;
	}
	if (f->up_err)
		wrenn_sh(f->w, f->id, script, cleanup_done, f);
	else
		wrenn_sh(f->w, f->id, script, join_done, f);
	free(script);
}

static void upload_start(struct api_file *f)
{
	static unsigned seq;
	size_t n;
	int err;

	f->busy = true;
	f->up_err = 0;
	pthread_mutex_lock(&f->lock);
	f->up_size = api_stage_size(f->st);
	f->ugen = f->wgen;
	pthread_mutex_unlock(&f->lock);
	wrenn_keep_get(f->w, f->id);
	if (f->up_size <= f->w->upload_max) {
		err = upload_one(f, f->path, 0, f->up_size, single_done);
		if (err)
			upload_finish(f, err, "wrenn: out of memory");
		return;
	}
	/* Too big for one upload: numbered parts beside the target (same
	 * filesystem, so the join needs no extra space elsewhere), joined
	 * with one exec. */
	n = strlen(f->parent) + strlen(f->base) + 64;
	free(f->part_prefix);
	f->part_prefix = malloc(n);
	if (!f->part_prefix) {
		upload_finish(f, -ENOMEM, "wrenn: out of memory");
		return;
	}
	snprintf(f->part_prefix, n, "%s%s.sbxfs-%s.%d-%u.part",
		 f->parent, strcmp(f->parent, "/") ? "/" : "", f->base,
		 (int)getpid(), ++seq);
	f->parts = (size_t)((f->up_size + f->w->upload_max - 1) /
			    f->w->upload_max);
	f->parts_next = f->parts_done = f->parts_live = 0;
	parts_next(f);
}

static void upload_finish(struct api_file *f, int err, const char *msg)
{
	struct fop *op = f->qhead;

	wrenn_keep_put(f->w, f->id);
	f->busy = false;
	f->flush_failed = err != 0;
	if (op && (op->kind == FOP_FLUSH || op->kind == FOP_CLOSE)) {
		bool closing = op->kind == FOP_CLOSE;

		fop_complete(f, op, err, msg, NULL, 0); /* frees op */
		if (!closing)
			pump(f);
		return;
	}
	/* open's initial empty upload */
	if (op && op->kind == FOP_OPEN) {
		if (err) {
			open_fail(f, err, msg);
		} else {
			fop_complete(f, op, 0, NULL, NULL, 0);
			pump(f); /* a sync flush may wait behind the open */
		}
		return;
	}
	pump(f);
}

/* -- the per-file queue -- */

static bool needs_load(struct api_file *f)
{
	return f->ld == LD_NO || f->ld == LD_RUNNING;
}

/* Loop: run queued ops in order while they can complete. */
static void pump(struct api_file *f)
{
	struct fop *op;
	ssize_t n;
	char *buf;

	while ((op = f->qhead) && !f->busy) {
		if (f->ld == LD_FAILED && op->kind != FOP_CLOSE) {
			fop_complete(f, op, f->ld_err, f->ld_msg, NULL, 0);
			continue;
		}
		if (op->kind == FOP_READ) {
			uint64_t have;
			bool ready;

			pthread_mutex_lock(&f->lock);
			have = api_stage_size(f->st);
			ready = !needs_load(f) ||
				have >= (uint64_t)op->off + op->len;
			pthread_mutex_unlock(&f->lock);
			if (!ready) {
				if (f->ld == LD_NO)
					load_start(f);
				return;
			}
			buf = malloc(op->len ? op->len : 1);
			if (!buf) {
				fop_complete(f, op, -ENOMEM, NULL, NULL, 0);
				continue;
			}
			pthread_mutex_lock(&f->lock);
			n = api_stage_read(f->st, buf, op->len,
					   (uint64_t)op->off);
			pthread_mutex_unlock(&f->lock);
			if (n < 0)
				fop_complete(f, op, (int)n, NULL, NULL, 0);
			else
				fop_complete(f, op, 0, NULL, buf, (size_t)n);
			free(buf);
			continue;
		}
		if (op->kind == FOP_FLUSH || op->kind == FOP_CLOSE) {
			if (api_stage_dirty(f->st) &&
			    !(op->kind == FOP_CLOSE && f->flush_failed)) {
				upload_start(f);
				return;
			}
			if (op->kind == FOP_CLOSE && f->load_h) {
				/* closed before the download ended */
				struct wrenn_http *h = f->load_h;

				f->load_h = NULL;
				f->closing = true;
				wrenn_http_cancel(h);
			}
			if (op->kind == FOP_CLOSE) {
				fop_complete(f, op, 0, NULL, NULL, 0);
				return; /* f is gone */
			}
			fop_complete(f, op, 0, NULL, NULL, 0);
			continue;
		}
		if (needs_load(f)) {
			if (f->ld == LD_NO)
				load_start(f);
			if (f->ld != LD_FAILED)
				return;
			continue;
		}
		if (op->kind == FOP_WRITE) {
			pthread_mutex_lock(&f->lock);
			if (f->flags & O_APPEND)
				op->off = (off_t)api_stage_size(f->st);
			n = api_stage_write(f->st, op->buf, op->len,
					    (uint64_t)op->off);
			f->wgen++;
			pthread_mutex_unlock(&f->lock);
			fop_complete(f, op, n < 0 ? (int)n : 0, NULL, NULL,
				     n < 0 ? 0 : (size_t)n);
			continue;
		}
	}
}

static void fop_run(struct wrenn *w, struct wrenn_work *wk)
{
	struct fop *op = (struct fop *)wk;
	struct api_file *f = op->f;

	(void)w;
	op->next = NULL;
	if (f->qtail)
		f->qtail->next = op;
	else
		f->qhead = op;
	f->qtail = op;
	pump(f);
}

static struct fop *fop_new(struct api_file *f, enum fop_kind kind, void *cb,
			   void *ud)
{
	struct fop *op = calloc(1, sizeof(*op));

	if (op) {
		op->f = f;
		op->kind = kind;
		op->cb = cb;
		op->ud = ud;
	}
	return op;
}

/* -- open -- */

static void open_fail(struct api_file *f, int err, const char *msg)
{
	struct fop *op = f->qhead;

	f->qhead = f->qtail = NULL;
	((api_open_fn)op->cb)(op->ud, err, msg, NULL);
	fop_free(op);
	file_free(f);
}

static void open_listed(struct wrenn *w, void *ud, int err, const char *msg,
			const struct api_dirent *ents, size_t n)
{
	struct api_file *f = ud;
	const struct api_dirent *e;
	int acc = f->flags & O_ACCMODE;

	(void)w;
	if (err) {
		open_fail(f, err, msg);
		return;
	}
	e = dc_find(ents, n, f->base);
	if (!e) {
		if (!(f->flags & O_CREAT)) {
			open_fail(f, -ENOENT, "wrenn: no such file");
			return;
		}
		/* Create it now (empty) so that the entry exists for the
		 * stat that follows a create; content comes on flush. */
		f->ld = LD_DONE;
		f->chmod_after = (f->mode & 07777) &&
				 (f->mode & 07777) != 0644;
		api_stage_set_dirty(f->st, true);
		upload_start(f);
		return;
	}
	if ((f->flags & O_CREAT) && (f->flags & O_EXCL)) {
		open_fail(f, -EEXIST, "wrenn: file exists");
		return;
	}
	if (S_ISDIR(e->st.st_mode)) {
		open_fail(f, -EISDIR, "wrenn: is a directory");
		return;
	}
	f->remote_size = (uint64_t)e->st.st_size;
	if ((f->flags & O_TRUNC) && acc != O_RDONLY) {
		/* only the stage is emptied: the remote copy stays until
		 * the new content is uploaded */
		f->ld = LD_DONE;
		api_stage_set_dirty(f->st, true);
	} else if (f->remote_size == 0 && !S_ISLNK(e->st.st_mode)) {
		f->ld = LD_DONE;
	} else {
		/* a link's listed size is the target text's; read it all */
		if (S_ISLNK(e->st.st_mode))
			f->remote_size = 0;
		f->ld = LD_NO;
	}
	fop_complete(f, f->qhead, 0, NULL, NULL, 0);
}

static void open_run(struct wrenn *w, struct wrenn_work *wk)
{
	struct fop *op = (struct fop *)wk;
	struct api_file *f = op->f;
	char id[API_ID_MAX];

	op->next = NULL;
	f->qhead = f->qtail = op;
	f->fprev = NULL;
	f->fnext = w->files;
	if (f->fnext)
		f->fnext->fprev = f;
	w->files = f;
	f->listed = true;
	if (wrenn_resolve(w, f->id, id, sizeof(id))) {
		open_fail(f, -ENOENT, "wrenn: no such capsule");
		return;
	}
	snprintf(f->id, sizeof(f->id), "%s", id);
	dc_get(w, f->id, f->parent, false, open_listed, f);
}

void wrenn_file_open(struct api_backend *be, const char *id,
		     const char *path, int flags, mode_t mode,
		     api_open_fn cb, void *ud)
{
	struct wrenn *w = wrenn_of(be);
	struct path_op tmp = { 0 };
	struct api_file *f;
	struct fop *op;
	int err;

	err = pop_path(&tmp, path);
	if (!err && !tmp.parent)
		err = -EISDIR;
	if (!err && strlen(id) >= API_ID_MAX)
		err = -ENOENT;
	f = err ? NULL : calloc(1, sizeof(*f));
	if (!err && !f)
		err = -ENOMEM;
	if (!err) {
		pthread_mutex_init(&f->lock, NULL);
		f->w = w;
		f->flags = flags;
		f->mode = mode;
		f->path = tmp.path;
		f->parent = tmp.parent;
		f->base = (char *)tmp.base;
		tmp.path = tmp.parent = NULL;
		snprintf(f->id, sizeof(f->id), "%s", id);
		err = api_stage_new(w->stage_max, &f->st);
	}
	op = err ? NULL : fop_new(f, FOP_OPEN, (void *)cb, ud);
	if (!err && !op)
		err = -ENOMEM;
	if (err) {
		free(tmp.path);
		free(tmp.parent);
		if (f)
			file_free(f);
		cb(ud, err, err == -EISDIR ? "wrenn: is a directory" :
		   api_strerror(err), NULL);
		return;
	}
	wrenn_post(w, &op->wk, open_run);
}

/* -- read / write / flush / close -- */

void wrenn_file_read(struct api_backend *be, struct api_file *f, off_t off,
		     size_t size, api_data_fn cb, void *ud)
{
	struct fop *op;
	bool fast;
	char *buf;
	ssize_t n;

	(void)be;
	if (off < 0) {
		cb(ud, -EINVAL, "wrenn: negative offset", NULL, 0);
		return;
	}
	/* fast path: the bytes are in the stage already */
	pthread_mutex_lock(&f->lock);
	fast = f->ld == LD_DONE ||
	       (f->ld == LD_RUNNING &&
		api_stage_size(f->st) >= (uint64_t)off + size);
	if (fast) {
		buf = malloc(size ? size : 1);
		n = buf ? api_stage_read(f->st, buf, size, (uint64_t)off) :
			  -ENOMEM;
		pthread_mutex_unlock(&f->lock);
		if (n < 0)
			cb(ud, (int)n, api_strerror((int)n), NULL, 0);
		else
			cb(ud, 0, NULL, buf, (size_t)n);
		free(buf);
		return;
	}
	pthread_mutex_unlock(&f->lock);
	op = fop_new(f, FOP_READ, (void *)cb, ud);
	if (!op) {
		cb(ud, -ENOMEM, "wrenn: out of memory", NULL, 0);
		return;
	}
	op->off = off;
	op->len = size;
	wrenn_post(f->w, &op->wk, fop_run);
}

void wrenn_file_write(struct api_backend *be, struct api_file *f,
		      off_t off, const void *buf, size_t len,
		      api_size_fn cb, void *ud)
{
	struct fop *op;
	ssize_t n;

	(void)be;
	if (off < 0) {
		cb(ud, -EINVAL, "wrenn: negative offset", 0);
		return;
	}
	if ((f->flags & O_ACCMODE) == O_RDONLY) {
		cb(ud, -EBADF, "wrenn: file not open for writing", 0);
		return;
	}
	pthread_mutex_lock(&f->lock);
	if (f->ld == LD_DONE) {
		if (f->flags & O_APPEND)
			off = (off_t)api_stage_size(f->st);
		n = api_stage_write(f->st, buf, len, (uint64_t)off);
		f->wgen++;
		pthread_mutex_unlock(&f->lock);
		if (n < 0)
			cb(ud, (int)n, api_strerror((int)n), 0);
		else
			cb(ud, 0, NULL, (size_t)n);
		return;
	}
	pthread_mutex_unlock(&f->lock);
	/* the old content must be in the stage before a partial write */
	op = fop_new(f, FOP_WRITE, (void *)cb, ud);
	if (op)
		op->buf = malloc(len ? len : 1);
	if (!op || !op->buf) {
		free(op);
		cb(ud, -ENOMEM, "wrenn: out of memory", 0);
		return;
	}
	memcpy(op->buf, buf, len);
	op->off = off;
	op->len = len;
	wrenn_post(f->w, &op->wk, fop_run);
}

static void post_simple(struct api_file *f, enum fop_kind kind,
			api_done_fn cb, void *ud)
{
	struct fop *op = fop_new(f, kind, (void *)cb, ud);

	if (!op) {
		cb(ud, -ENOMEM, "wrenn: out of memory");
		return;
	}
	wrenn_post(f->w, &op->wk, fop_run);
}

void wrenn_file_flush(struct api_backend *be, struct api_file *f,
		      api_done_fn cb, void *ud)
{
	(void)be;
	post_simple(f, FOP_FLUSH, cb, ud);
}

void wrenn_file_close(struct api_backend *be, struct api_file *f,
		      api_done_fn cb, void *ud)
{
	(void)be;
	post_simple(f, FOP_CLOSE, cb, ud);
}

/* ---- sync before exec --------------------------------------------------- */

struct sync_bar {
	int left;
	void (*done)(void *ud);
	void *ud;
};

static void sync_one(void *ud, int err, const char *msg)
{
	struct sync_bar *b = ud;

	/* a failed upload stays dirty and reports at close(2) */
	(void)err;
	(void)msg;
	if (--b->left == 0) {
		b->done(b->ud);
		free(b);
	}
}

int wrenn_files_sync(struct wrenn *w, const char *id,
		     void (*done)(void *ud), void *ud)
{
	struct sync_bar *b = NULL;
	struct api_file *f, *next;
	struct fop *op;

	for (f = w->files; f; f = next) {
		next = f->fnext;
		if (strcmp(f->id, id) || f->ld != LD_DONE ||
		    !api_stage_dirty(f->st) || f->flush_failed)
			continue;
		if (!b) {
			b = calloc(1, sizeof(*b));
			if (!b)
				return 0; /* best effort */
			b->done = done;
			b->ud = ud;
			b->left = 1; /* held until the loop ends */
		}
		op = fop_new(f, FOP_FLUSH, (void *)sync_one, b);
		if (!op)
			continue;
		b->left++;
		fop_run(w, &op->wk);
	}
	if (!b)
		return 0;
	if (--b->left == 0) {
		/* every flush completed inline */
		free(b);
		return 0;
	}
	return 1;
}
