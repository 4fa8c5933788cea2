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
#include <time.h>
#include <unistd.h>

#include "api/rfile.h"
#include "api/wrenn/capsule.h"
#include "api/wrenn/errmap.h"
#include "api/wrenn/files.h"
#include "api/wrenn/http.h"

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
	const cJSON *ps = cJSON_GetObjectItemCaseSensitive(e, "permissions");
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
	} else if (!strcmp(t, "symlink") ||
		   (cJSON_IsString(ps) && (ps->valuestring[0] == 'l' ||
					   ps->valuestring[0] == 'L'))) {
		/* a broken link is "unknown" with no target; its
		 * permission string still says it is a link */
		st->st_mode = S_IFLNK | 0777;
	} else if (!strcmp(t, "unknown") && perm == 0777) {
		/* a broken link ("unknown", no target: quirk of the file
		 * listing) still has a link's lstat mode 0777; calling it a
		 * regular file would flip the type of a link we just made
		 * (tar x, cp -r of a dangling link: EIO from the kernel) */
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

/* Loop: a store replaced dir/name with a regular file of st: update a
 * fresh cached listing in place (a tar x then lists a directory once,
 * not once a file); anything unusual drops the listing instead. */
static void dc_upsert(struct wrenn *w, const char *id, const char *dir,
		      const char *name, const struct stat *st)
{
	struct wrenn_dcache *d;
	struct api_dirent *e, *ne;
	size_t i;

	for (d = w->dcache; d; d = d->next)
		if (!strcmp(d->id, id) && !strcmp(d->dir, dir))
			break;
	if (!d)
		return;
	if (d->loading || d->stale) {
		wrenn_dcache_drop(w, id, dir);
		return;
	}
	e = (struct api_dirent *)dc_find(d->ents, d->n, name);
	if (e) {
		if (!S_ISREG(e->st.st_mode)) { /* was a link: rename hit
						  its target */
			wrenn_dcache_drop(w, id, dir);
			return;
		}
		e->st = *st;
		return;
	}
	ne = realloc(d->ents, (d->n + 1) * sizeof(*ne));
	if (!ne) {
		wrenn_dcache_drop(w, id, dir);
		return;
	}
	d->ents = ne;
	for (i = d->n; i > 0 && strcmp(ne[i - 1].name, name) > 0; i--)
		ne[i] = ne[i - 1];
	ne[i].name = strdup(name);
	ne[i].st = *st;
	if (!ne[i].name) {
		memmove(&ne[i], &ne[i + 1], (d->n - i) * sizeof(*ne));
		wrenn_dcache_drop(w, id, dir);
		return;
	}
	d->n++;
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

static void remove_go(struct wrenn *w, struct wrenn_work *wk)
{
	struct path_op *op = (struct path_op *)wk;

	dc_get(w, op->id, op->parent, true, remove_listed, op);
}

/* Files queued for the capsule landed (api/rfile.c): a directory that
 * holds one of them is not empty. */
static void rmdir_synced(void *ud)
{
	struct path_op *op = ud;

	wrenn_post(op->w, &op->wk, remove_go);
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
	if (op->kind == POP_RMDIR &&
	    wrenn_files_sync(w, op->id, rmdir_synced, op))
		return;
	remove_go(w, wk);
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

/* ---- remote-file primitives (api/rfile.h) ------------------------------ */

/* Files at most this big are read with files/read, whose errors are real
 * statuses and whose truncation curl sees; bigger ones stream (a missing
 * file or a cut there is a short 200, quirk 31: checked against the
 * listed size). */
#define READ_WHOLE_MAX (16u << 20)

struct xfer {
	struct wrenn_work wk;
	struct wrenn *w;
	char id[API_ID_MAX];
	char *path, *parent, *base;
	api_done_fn done;
	void *ud;
	/* fetch */
	uint64_t expect, got;
	bool stream;
	api_rf_sink_fn sink;
	void *sink_ud;
	/* store */
	int fd;
	uint64_t len;
	struct api_setattr sa;
	char *tmp;	  /* temporary beside the target */
	char *part_prefix; /* big files: numbered parts, joined by the script */
	size_t parts, parts_next, parts_live;
	int up_err;
	char up_msg[256];
	/* store_batch: the layer's script and the files it lands */
	char *batch_script;
	const struct api_rf_member *m;
	size_t nm;
};

static void xfer_free(struct xfer *x)
{
	free(x->path);
	free(x->parent);
	free(x->tmp);
	free(x->part_prefix);
	free(x->batch_script);
	free(x);
}

static void xfer_end(struct xfer *x, int err, const char *msg)
{
	x->done(x->ud, err, err ? (msg ? msg : api_strerror(err)) : NULL);
	xfer_free(x);
}

static struct xfer *xfer_new(struct api_backend *be, const char *id,
			     const char *path, api_done_fn done, void *ud)
{
	struct path_op tmp = { 0 };
	struct xfer *x;

	if (strlen(id) >= API_ID_MAX || pop_path(&tmp, path) ||
	    !tmp.parent) {
		free(tmp.path);
		free(tmp.parent);
		done(ud, -EINVAL, "wrenn: bad path");
		return NULL;
	}
	x = calloc(1, sizeof(*x));
	if (!x) {
		free(tmp.path);
		free(tmp.parent);
		done(ud, -ENOMEM, "wrenn: out of memory");
		return NULL;
	}
	x->w = wrenn_of(be);
	snprintf(x->id, sizeof(x->id), "%s", id);
	x->path = tmp.path;
	x->parent = tmp.parent;
	x->base = (char *)tmp.base;
	x->done = done;
	x->ud = ud;
	x->fd = -1;
	return x;
}

static bool xfer_resolve(struct xfer *x)
{
	char id[API_ID_MAX];

	if (wrenn_resolve(x->w, x->id, id, sizeof(id))) {
		xfer_end(x, -ENOENT, "wrenn: no such capsule");
		return false;
	}
	snprintf(x->id, sizeof(x->id), "%s", id);
	return true;
}

/* fetch */

static int fetch_sink(void *ud, const void *buf, size_t len)
{
	struct xfer *x = ud;

	x->got += len;
	return x->sink(x->sink_ud, buf, len);
}

static void fetch_got(void *ud, int err, const char *msg,
		      const struct wrenn_resp *r)
{
	struct xfer *x = ud;
	char m[512];

	(void)r;
	wrenn_keep_put(x->w, x->id);
	if (!err && x->stream && x->got < x->expect) {
		snprintf(m, sizeof(m), "wrenn: download of %s truncated "
			 "(%llu of %llu bytes)", x->path,
			 (unsigned long long)x->got,
			 (unsigned long long)x->expect);
		err = -EIO;
		msg = m;
	}
	xfer_end(x, err, msg);
}

static void fetch_run(struct wrenn *w, struct wrenn_work *wk)
{
	struct xfer *x = (struct xfer *)wk;
	struct wrenn_http *h;
	char path[256], *body;
	cJSON *j;

	if (!xfer_resolve(x))
		return;
	j = cJSON_CreateObject();
	cJSON_AddStringToObject(j, "path", x->path);
	body = cJSON_PrintUnformatted(j);
	cJSON_Delete(j);
	x->stream = x->expect > READ_WHOLE_MAX;
	snprintf(path, sizeof(path), "/v1/capsules/%s/files/%s", x->id,
		 x->stream ? "stream/read" : "read");
	h = body ? wrenn_http_new(w, "POST", path, body) : NULL;
	free(body);
	if (!h) {
		xfer_end(x, -ENOMEM, "wrenn: out of memory");
		return;
	}
	wrenn_keep_get(w, x->id);
	wrenn_http_sink(h, fetch_sink, x);
	wrenn_http_go(h, fetch_got, x);
}

static void wrenn_rf_fetch(struct api_backend *be, const char *id,
			   const char *path, uint64_t expect,
			   api_rf_sink_fn sink, void *sink_ud,
			   api_done_fn done, void *ud)
{
	struct xfer *x = xfer_new(be, id, path, done, ud);

	if (!x)
		return;
	x->expect = expect;
	x->sink = sink;
	x->sink_ud = sink_ud;
	wrenn_post(x->w, &x->wk, fetch_run);
}

/* store: upload to a temporary beside the target (numbered parts when
 * too big for one upload), then ONE command joins the parts, applies
 * mode, owner and times, and renames over the target; on any failure it
 * removes what it made, so the target keeps its old content. */

static ssize_t up_src(void *ud, void *buf, size_t len, uint64_t off)
{
	struct xfer *x = ud;
	ssize_t n;

	do
		n = pread(x->fd, buf, len, (off_t)off);
	while (n < 0 && errno == EINTR);
	return n < 0 ? -errno : n;
}

struct part {
	struct xfer *x;
	uint64_t off;
};

static ssize_t part_src(void *ud, void *buf, size_t len, uint64_t off)
{
	struct part *p = ud;

	return up_src(p->x, buf, len, p->off + off);
}

static void script_done(void *ud, int err, const char *msg, int code,
			const char *out)
{
	struct xfer *x = ud;
	char m[512];

	(void)out;
	wrenn_keep_put(x->w, x->id);
	if (!x->up_err && !err && !code) {
		struct stat st;

		memset(&st, 0, sizeof(st));
		st.st_mode = S_IFREG | (x->sa.mode & 07777);
		st.st_nlink = 1;
		st.st_size = (off_t)x->len;
		st.st_blksize = 4096;
		st.st_blocks = (st.st_size + 511) / 512;
		st.st_mtime = st.st_ctime = st.st_atime = time(NULL);
		if (x->sa.mask & API_SET_MTIME)
			st.st_mtim = x->sa.mtime;
		dc_upsert(x->w, x->id, x->parent, x->base, &st);
	} else {
		wrenn_dcache_drop(x->w, x->id, NULL);
	}
	if (x->up_err) { /* cleanup after a failed upload */
		xfer_end(x, x->up_err, x->up_msg);
		return;
	}
	if (!err && code) {
		snprintf(m, sizeof(m), "wrenn: storing %s failed (exit %d)%s%s",
			 x->path, code, msg ? ": " : "", msg ? msg : "");
		err = wrenn_err_text(msg, EIO);
		err = err == EIO ? -EIO : -err;
		msg = m;
	}
	xfer_end(x, err, msg);
}

static void store_script(struct xfer *x)
{
	char *qt = api_shell_quote(x->tmp), *qf = api_shell_quote(x->path);
	char *qp = x->part_prefix ? api_shell_quote(x->part_prefix) : NULL;
	char *s = NULL, ts[80];
	size_t cap = 4096, n = 0;
	const struct api_setattr *sa = &x->sa;

	if (!qt || !qf || (x->part_prefix && !qp))
		goto out;
	cap += strlen(qt) + strlen(qf) + (qp ? strlen(qp) : 0);
	s = malloc(cap);
	if (!s)
		goto out;
#define ADD(...) (n += (size_t)snprintf(s + n, cap - n, __VA_ARGS__))
	ADD("t=%s; f=%s; ", qt, qf);
	if (qp)
		ADD("p=%s; set -- \"$p\"[0-9][0-9][0-9][0-9][0-9][0-9]; ", qp);
	else
		ADD("set --; ");
	if (x->up_err) {
		ADD("rm -f -- \"$t\" \"$@\"; exit 0");
		goto done;
	}
	ADD("fail() { rc=$?; rm -f -- \"$t\" \"$@\"; exit $rc; }; ");
	if (qp)
		ADD("cat -- \"$@\" > \"$t\" || fail; rm -f -- \"$@\"; set --; ");
	/* writing through a symlink replaces what it points to */
	ADD("if [ -h \"$f\" ]; then f=$(readlink -f -- \"$f\") || fail; "
	    "fi; ");
	if (sa->mask & API_SET_MODE)
		ADD("chmod %o -- \"$t\" || fail; ", (unsigned)(sa->mode & 07777));
	if ((sa->mask & (API_SET_UID | API_SET_GID)) ==
	    (API_SET_UID | API_SET_GID))
		ADD("chown %u:%u -- \"$t\" || fail; ", (unsigned)sa->uid,
		    (unsigned)sa->gid);
	else if (sa->mask & API_SET_UID)
		ADD("chown %u -- \"$t\" || fail; ", (unsigned)sa->uid);
	else if (sa->mask & API_SET_GID)
		ADD("chgrp %u -- \"$t\" || fail; ", (unsigned)sa->gid);
	else /* keep the replaced file's owner */
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
done:
#undef ADD
	if (n >= cap) {
		free(s);
		s = NULL;
	}
out:
	free(qt);
	free(qf);
	free(qp);
	if (!s) {
		if (!x->up_err) {
			x->up_err = -ENOMEM;
			snprintf(x->up_msg, sizeof(x->up_msg),
				 "wrenn: out of memory");
		}
		wrenn_keep_put(x->w, x->id);
		xfer_end(x, x->up_err, x->up_msg);
		return;
	}
	wrenn_sh_keep(x->w, x->id, s, script_done, x);
	free(s);
}

/* store_batch: the archive is in the capsule; the layer's script lands
 * it (joined first when it came in parts). */
static void batch_script_done(void *ud, int err, const char *msg, int code,
			      const char *out)
{
	struct xfer *x = ud;
	char m[512];
	size_t i;

	(void)out;
	wrenn_keep_put(x->w, x->id);
	if (!err && !code) {
		for (i = 0; i < x->nm; i++) {
			const char *p = x->m[i].path, *sl = strrchr(p, '/');
			char *dir = sl == p ? strdup("/") :
					      strndup(p, (size_t)(sl - p));

			if (!dir) {
				wrenn_dcache_drop(x->w, x->id, NULL);
				break;
			}
			dc_upsert(x->w, x->id, dir, sl + 1, &x->m[i].st);
			free(dir);
		}
	} else {
		wrenn_dcache_drop(x->w, x->id, NULL);
	}
	if (!err && code) {
		snprintf(m, sizeof(m), "wrenn: storing a batch of %zu files "
			 "failed (exit %d)%s%s", x->nm, code, msg ? ": " : "",
			 msg ? msg : "");
		err = wrenn_err_text(msg, EIO);
		err = err == EIO ? -EIO : -err;
		msg = m;
	}
	xfer_end(x, err, msg);
}

static void batch_script(struct xfer *x)
{
	char *qa = api_shell_quote(x->tmp), *s = NULL;
	char *qp = x->part_prefix ? api_shell_quote(x->part_prefix) : NULL;
	int r = -1;

	if (qa && (!x->part_prefix || qp)) {
		if (qp)
			r = asprintf(&s, "p=%s; set -- \"$p\"[0-9][0-9][0-9]"
				     "[0-9][0-9][0-9]; cat -- \"$@\" > %s || "
				     "{ rm -f -- \"$@\" %s; exit 1; }; "
				     "rm -f -- \"$@\"; %s", qp, qa, qa,
				     x->batch_script);
		else
			r = asprintf(&s, "%s", x->batch_script);
	}
	free(qa);
	free(qp);
	if (r < 0) {
		wrenn_keep_put(x->w, x->id);
		xfer_end(x, -ENOMEM, "wrenn: out of memory");
		return;
	}
	wrenn_sh_keep(x->w, x->id, s, batch_script_done, x);
	free(s);
}

static void parts_next(struct xfer *x);

static void part_done(void *ud, int err, const char *msg,
		      const struct wrenn_resp *r)
{
	struct part *p = ud;
	struct xfer *x = p->x;

	(void)r;
	free(p);
	x->parts_live--;
	if (err && !x->up_err) {
		x->up_err = err;
		snprintf(x->up_msg, sizeof(x->up_msg), "%s", msg);
	}
	parts_next(x);
}

static int upload_one(struct xfer *x, const char *dest, uint64_t off,
		      uint64_t len)
{
	struct wrenn_http *h;
	struct part *p;
	char path[256];

	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->x = x;
	p->off = off;
	snprintf(path, sizeof(path), "/v1/capsules/%s/files/write", x->id);
	h = wrenn_http_new(x->w, "POST", path, NULL);
	if (!h) {
		free(p);
		return -ENOMEM;
	}
	/* on failure the request reports it through part_done */
	wrenn_http_upload(h, dest, part_src, p, len);
	wrenn_http_go(h, part_done, p);
	return 0;
}

static void parts_next(struct xfer *x)
{
	uint64_t max = x->w->upload_max, off, len;
	char dest[4200];
	int err;

	while (!x->up_err && x->parts_next < x->parts &&
	       x->parts_live < UPLOAD_PARALLEL) {
		off = (uint64_t)x->parts_next * max;
		len = x->len - off;
		if (len > max)
			len = max;
		if (x->part_prefix)
			snprintf(dest, sizeof(dest), "%s%06zu",
				 x->part_prefix, x->parts_next);
		else
			snprintf(dest, sizeof(dest), "%s", x->tmp);
		err = upload_one(x, dest, off, len);
		if (err) {
			x->up_err = err;
			snprintf(x->up_msg, sizeof(x->up_msg),
				 "wrenn: out of memory");
			break;
		}
		x->parts_next++;
		x->parts_live++;
	}
	if (x->parts_live)
		return;
	if (x->batch_script && !x->up_err)
		batch_script(x); /* join + unpack + renames */
	else
		store_script(x); /* join + attributes + rename, or cleanup */
}

static void store_run(struct wrenn *w, struct wrenn_work *wk)
{
	struct xfer *x = (struct xfer *)wk;
	static unsigned seq;
	size_t n;

	if (!xfer_resolve(x))
		return;
	n = strlen(x->parent) + 96;
	x->tmp = malloc(n);
	if (!x->tmp) {
		xfer_end(x, -ENOMEM, "wrenn: out of memory");
		return;
	}
	/* hidden, beside the target (same filesystem: rename is atomic) */
	snprintf(x->tmp, n, "%s%s.sbxfs-%d-%u.tmp", x->parent,
		 strcmp(x->parent, "/") ? "/" : "", (int)getpid(), ++seq);
	x->parts = (size_t)((x->len + w->upload_max - 1) / w->upload_max);
	if (x->parts > 1) {
		x->part_prefix = malloc(n + 8);
		if (!x->part_prefix) {
			xfer_end(x, -ENOMEM, "wrenn: out of memory");
			return;
		}
		snprintf(x->part_prefix, n + 8, "%s.part", x->tmp);
	} else {
		x->parts = 1; /* an empty file is one empty upload */
	}
	wrenn_keep_get(w, x->id);
	parts_next(x);
}

static void wrenn_rf_store(struct api_backend *be, const char *id,
			   const char *path, int fd, uint64_t len,
			   const struct api_setattr *sa, api_done_fn done,
			   void *ud)
{
	struct xfer *x = xfer_new(be, id, path, done, ud);

	if (!x)
		return;
	x->fd = fd;
	x->len = len;
	x->sa = *sa;
	wrenn_post(x->w, &x->wk, store_run);
}

static void batch_run(struct wrenn *w, struct wrenn_work *wk)
{
	struct xfer *x = (struct xfer *)wk;

	if (!xfer_resolve(x))
		return;
	x->tmp = strdup(x->path); /* the layer named it (hidden) */
	x->parts = (size_t)((x->len + w->upload_max - 1) / w->upload_max);
	if (!x->tmp || (x->parts > 1 &&
			asprintf(&x->part_prefix, "%s.part", x->tmp) < 0)) {
		x->part_prefix = NULL;
		xfer_end(x, -ENOMEM, "wrenn: out of memory");
		return;
	}
	if (x->parts < 1)
		x->parts = 1;
	wrenn_keep_get(w, x->id);
	parts_next(x);
}

/* One upload of the layer's archive (in parts when big) + one command. */
static void wrenn_rf_store_batch(struct api_backend *be, const char *id,
				 int fd, uint64_t len, const char *apath,
				 const char *script,
				 const struct api_rf_member *m, size_t nm,
				 api_done_fn done, void *ud)
{
	struct xfer *x = xfer_new(be, id, apath, done, ud);

	if (!x)
		return;
	x->fd = fd;
	x->len = len;
	x->m = m;
	x->nm = nm;
	x->batch_script = strdup(script);
	if (!x->batch_script) {
		xfer_end(x, -ENOMEM, "wrenn: out of memory");
		return;
	}
	wrenn_post(x->w, &x->wk, batch_run);
}

const struct api_rfile_ops wrenn_rfile_ops = {
	.fetch = wrenn_rf_fetch,
	.store = wrenn_rf_store,
	.store_batch = wrenn_rf_store_batch,
};

/* ---- sync before exec --------------------------------------------------- */

int wrenn_files_sync(struct wrenn *w, const char *id,
		     void (*done)(void *ud), void *ud)
{
	return api_rfile_sync(w->be->rf, id, done, ud);
}
