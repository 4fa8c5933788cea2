/* templates.c - MOUNT/templates/: the templates and snapshots new
 * sandboxes can start from (`new NAME template=X`), one directory each
 * with an `info` file (the platform's record as JSON); `ls -l` shows the
 * size the platform reports and the date it was made; `rmdir
 * MOUNT/templates/X` deletes X.  Present where the backend has
 * API_CAP_TEMPLATES.
 *
 * The list is asked of the platform at each opendir and kept for a
 * second for the lookups and getattrs that follow (`ls -l` is one list,
 * not one call per entry); a name missing from a kept list is asked again
 * before ENOENT, so a snapshot made a moment ago is found.  Inode numbers
 * carry an index into a table of names seen (never reused). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "fs/gen.h"

#define TPL_IDX_MAX FS_SB_MAX
#define TPL_KEEP 1.0 /* seconds a list answers lookups */

struct tpl_ent {
	char name[API_ID_MAX];
	char kind[16];
	long long size;
	time_t created;
	char *json;
};

static pthread_mutex_t tpl_mu = PTHREAD_MUTEX_INITIALIZER;
static char *tpl_names[TPL_IDX_MAX];
static struct tpl_ent *cache;
static size_t ncache;
static double cache_at; /* CLOCK_MONOTONIC of the list; 0: none */

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* tpl_mu held.  Index of a name, added if new; -1 when full. */
static int index_locked(const char *name)
{
	for (unsigned i = 0; i < TPL_IDX_MAX; i++) {
		if (!tpl_names[i]) {
			tpl_names[i] = strdup(name);
			return tpl_names[i] ? (int)i : -1;
		}
		if (!strcmp(tpl_names[i], name))
			return (int)i;
	}
	return -1;
}

/* tpl_mu held.  The kept record of a name, or NULL. */
static struct tpl_ent *find_locked(const char *name)
{
	for (size_t i = 0; i < ncache; i++)
		if (!strcmp(cache[i].name, name))
			return &cache[i];
	return NULL;
}

static void cache_clear_locked(void)
{
	for (size_t i = 0; i < ncache; i++)
		free(cache[i].json);
	free(cache);
	cache = NULL;
	ncache = 0;
	cache_at = 0;
}

static void stat_tpl(struct fs *fs, unsigned idx, const struct tpl_ent *t,
		     struct stat *st)
{
	fs_stat_synthetic(fs, fs_ino_make(FS_K_TPL, idx, 0, 0, 0),
			  S_IFDIR | 0755, st);
	st->st_nlink = 2;
	if (t->size > 0)
		st->st_size = (off_t)t->size;
	if (t->created)
		st->st_mtim.tv_sec = st->st_ctim.tv_sec = st->st_atim.tv_sec =
			t->created;
}

/* ---- one request that needs the list ------------------------------------ */

enum top_kind { TOP_OPENDIR, TOP_LOOKUP, TOP_GETATTR, TOP_INFO_OPEN };

struct top {
	fuse_req_t req;
	struct fs *fs;
	enum top_kind kind;
	struct fuse_file_info fi;
	fuse_ino_t ino;
	char name[API_ID_MAX];
	bool fetched; /* the list was asked for this request */
};

static void top_run(struct top *o);

static void got_list(void *ud, int err, const char *msg,
		     const struct api_template *t, size_t n)
{
	struct top *o = ud;
	struct tpl_ent *c = NULL;

	if (err) {
		fs_root_set_err(o->fs, "templates: %s",
				msg ? msg : api_strerror(err));
		fuse_reply_err(o->req, -err);
		free(o);
		return;
	}
	c = calloc(n ? n : 1, sizeof *c);
	for (size_t i = 0; c && i < n; i++) {
		snprintf(c[i].name, sizeof c[i].name, "%s", t[i].name);
		snprintf(c[i].kind, sizeof c[i].kind, "%s", t[i].kind);
		c[i].size = t[i].size;
		c[i].created = t[i].created;
		c[i].json = t[i].info_json ? strdup(t[i].info_json) : NULL;
	}
	if (!c) {
		fuse_reply_err(o->req, ENOMEM);
		free(o);
		return;
	}
	pthread_mutex_lock(&tpl_mu);
	cache_clear_locked();
	cache = c;
	ncache = n;
	cache_at = now_s();
	for (size_t i = 0; i < n; i++)
		index_locked(c[i].name);
	pthread_mutex_unlock(&tpl_mu);
	o->fetched = true;
	top_run(o);
}

static void top_fetch(struct top *o)
{
	api_tpl_list(o->fs->be, got_list, o);
}

/* Start: from the kept list when fresh enough, else ask. */
static void top_start(struct top *o)
{
	pthread_mutex_lock(&tpl_mu);
	bool fresh = cache_at > 0 && now_s() - cache_at < TPL_KEEP;
	pthread_mutex_unlock(&tpl_mu);
	if (o->kind == TOP_OPENDIR || !fresh)
		top_fetch(o);
	else
		top_run(o);
}

static struct top *top_new(fuse_req_t req, enum top_kind k, fuse_ino_t ino,
			   const char *name, struct fuse_file_info *fi)
{
	struct top *o = calloc(1, sizeof *o);

	if (!o) {
		fuse_reply_err(req, ENOMEM);
		return NULL;
	}
	o->req = req;
	o->fs = fs_of(req);
	o->kind = k;
	o->ino = ino;
	if (name)
		snprintf(o->name, sizeof o->name, "%s", name);
	if (fi)
		o->fi = *fi;
	return o;
}

static void run_opendir(struct top *o)
{
	struct fs *fs = o->fs;
	struct stat st;
	int err = 0;
	struct fs_dir *d = fs_gen_dir(fs, o->ino, FUSE_ROOT_ID, &err);

	if (!d) {
		fuse_reply_err(o->req, ENOMEM);
		return;
	}
	pthread_mutex_lock(&tpl_mu);
	for (size_t i = 0; i < ncache && !err; i++) {
		int idx = index_locked(cache[i].name);

		if (idx < 0)
			continue;
		stat_tpl(fs, (unsigned)idx, &cache[i], &st);
		err = fs_dir_add(d, cache[i].name, &st);
	}
	pthread_mutex_unlock(&tpl_mu);
	fs_dir_open_reply(o->req, &o->fi, d, err);
}

/* The JSON record of a kept entry + "\n" (malloc'd), or NULL. */
static char *info_text(const struct tpl_ent *t, size_t *len)
{
	char *s = NULL, *out;

	if (t->json) {
		s = strdup(t->json);
	} else {
		cJSON *o = cJSON_CreateObject();

		if (o) {
			cJSON_AddStringToObject(o, "name", t->name);
			cJSON_AddStringToObject(o, "type", t->kind);
			cJSON_AddNumberToObject(o, "size_bytes",
						(double)t->size);
			cJSON_AddNumberToObject(o, "created",
						(double)t->created);
			s = cJSON_PrintUnformatted(o);
			cJSON_Delete(o);
		}
	}
	if (!s)
		return NULL;
	*len = strlen(s);
	out = realloc(s, *len + 2);
	if (!out) {
		free(s);
		return NULL;
	}
	out[(*len)++] = '\n';
	out[*len] = '\0';
	return out;
}

static void top_run(struct top *o)
{
	struct fs *fs = o->fs;
	struct fuse_entry_param e;
	struct tpl_ent *t;
	char name[API_ID_MAX];
	int idx = -1;

	if (o->kind == TOP_OPENDIR) {
		run_opendir(o);
		free(o);
		return;
	}
	if (o->kind == TOP_LOOKUP) {
		snprintf(name, sizeof name, "%s", o->name);
	} else {
		unsigned i = fs_ino_sb_slot(o->ino);

		pthread_mutex_lock(&tpl_mu);
		name[0] = '\0';
		if (i < TPL_IDX_MAX && tpl_names[i])
			snprintf(name, sizeof name, "%s", tpl_names[i]);
		pthread_mutex_unlock(&tpl_mu);
	}
	pthread_mutex_lock(&tpl_mu);
	t = name[0] ? find_locked(name) : NULL;
	if (t)
		idx = index_locked(name);
	if (!t || idx < 0) {
		pthread_mutex_unlock(&tpl_mu);
		if (!o->fetched && name[0]) {
			top_fetch(o); /* maybe made since */
			return;
		}
		fuse_reply_err(o->req, idx < 0 && t ? ENOSPC : ENOENT);
		free(o);
		return;
	}
	switch (o->kind) {
	case TOP_LOOKUP:
		memset(&e, 0, sizeof e);
		e.ino = fs_ino_make(FS_K_TPL, (unsigned)idx, 0, 0, 0);
		stat_tpl(fs, (unsigned)idx, t, &e.attr);
		pthread_mutex_unlock(&tpl_mu);
		e.attr_timeout = e.entry_timeout = 1.0;
		fuse_reply_entry(o->req, &e);
		break;
	case TOP_GETATTR: {
		struct stat st;

		stat_tpl(fs, (unsigned)idx, t, &st);
		pthread_mutex_unlock(&tpl_mu);
		fuse_reply_attr(o->req, &st, 1.0);
		break;
	}
	case TOP_INFO_OPEN: {
		size_t len = 0;
		char *text = info_text(t, &len);

		pthread_mutex_unlock(&tpl_mu);
		if (!text) {
			fuse_reply_err(o->req, ENOMEM);
			break;
		}
		fs_gen_open(o->req, &o->fi, text, len, "");
		free(text);
		break;
	}
	default:
		pthread_mutex_unlock(&tpl_mu);
		fuse_reply_err(o->req, EIO);
	}
	free(o);
}

/* ---- MOUNT/templates/ --------------------------------------------------- */

static void tdir_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct top *o;

	(void)parent;
	if (strlen(name) >= API_ID_MAX) {
		fuse_reply_err(req, ENAMETOOLONG);
		return;
	}
	o = top_new(req, TOP_LOOKUP, 0, name, NULL);
	if (o)
		top_start(o);
}

static void tdir_opendir(fuse_req_t req, fuse_ino_t ino,
			 struct fuse_file_info *fi)
{
	struct top *o = top_new(req, TOP_OPENDIR, ino, NULL, fi);

	if (o)
		top_start(o);
}

struct rmjob {
	fuse_req_t req;
	struct fs *fs;
	char name[API_ID_MAX];
};

static void deleted(void *ud, int err, const char *msg)
{
	struct rmjob *j = ud;

	if (err) {
		fs_root_set_err(j->fs, "rmdir templates/%s: %s", j->name,
				msg ? msg : api_strerror(err));
	} else {
		pthread_mutex_lock(&tpl_mu);
		cache_at = 0; /* the next look asks again */
		pthread_mutex_unlock(&tpl_mu);
	}
	fuse_reply_err(j->req, -err);
	free(j);
}

static void tdir_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct rmjob *j;

	(void)parent;
	if (strlen(name) >= API_ID_MAX) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	j = calloc(1, sizeof *j);
	if (!j) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	j->req = req;
	j->fs = fs_of(req);
	snprintf(j->name, sizeof j->name, "%s", name);
	api_tpl_delete(j->fs->be, name, deleted, j);
}

static void tdir_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name,
		       mode_t mode)
{
	(void)parent;
	(void)mode;
	fs_root_set_err(fs_of(req), "mkdir templates/%.64s: templates are "
			"made by 'snapshot NAME' written to a sandbox's ctl",
			name);
	fuse_reply_err(req, EPERM);
}

const struct fuse_lowlevel_ops fs_tpl_dir_ops = {
	.lookup = tdir_lookup,
	.opendir = tdir_opendir,
	.readdir = fs_dir_readdir,
	.readdirplus = fs_dir_readdirplus,
	.releasedir = fs_dir_releasedir,
	.rmdir = tdir_rmdir,
	.mkdir = tdir_mkdir,
};

/* ---- MOUNT/templates/X/ ------------------------------------------------- */

static void tpl_getattr(fuse_req_t req, fuse_ino_t ino,
			struct fuse_file_info *fi)
{
	struct top *o;

	(void)fi;
	o = top_new(req, TOP_GETATTR, ino, NULL, NULL);
	if (o)
		top_start(o);
}

/* what MOUNT/templates/X/ holds (inodes carry X's index as sb slot) */
static const struct fs_gen_ent tpl_entries[] = {
	{ "info", FS_K_TPL_INFO, 0, 0 },
};

static void tpl_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fs *fs = fs_of(req);
	const struct fs_gen_ent *en = fs_gen_find(fs, tpl_entries,
						  FS_GEN_N(tpl_entries), name);

	if (!en) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	fs_gen_entry(req, fs,
		     fs_ino_make(en->kind, fs_ino_sb_slot(parent), 0, 0, 0), 0);
}

static void tpl_opendir(fuse_req_t req, fuse_ino_t ino,
			struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	int err = 0;
	struct fs_dir *d = fs_gen_dir(fs, ino,
				      fs_ino_make(FS_K_TPL_DIR, 0, 0, 0, 0),
				      &err);

	if (!d) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	if (!err)
		err = fs_gen_dir_table(fs, d, tpl_entries,
				       FS_GEN_N(tpl_entries),
				       fs_ino_sb_slot(ino), 0);
	fs_dir_open_reply(req, fi, d, err);
}

const struct fuse_lowlevel_ops fs_tpl_ops = {
	.getattr = tpl_getattr,
	.lookup = tpl_lookup,
	.opendir = tpl_opendir,
	.readdir = fs_dir_readdir,
	.readdirplus = fs_dir_readdirplus,
	.releasedir = fs_dir_releasedir,
};

/* ---- MOUNT/templates/X/info --------------------------------------------- */

static void info_open(fuse_req_t req, fuse_ino_t ino,
		      struct fuse_file_info *fi)
{
	struct top *o;

	if (!fs_gen_rdonly(req, fi))
		return;
	/* the X/ directory's inode: the same index */
	o = top_new(req, TOP_INFO_OPEN,
		    fs_ino_make(FS_K_TPL, fs_ino_sb_slot(ino), 0, 0, 0), NULL,
		    fi);
	if (o)
		top_start(o);
}

const struct fuse_lowlevel_ops fs_tpl_info_ops = {
	.open = info_open,
	.read = fs_gen_read,
	.release = fs_gen_release,
};
