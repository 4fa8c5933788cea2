/* root.c - MOUNT/: one directory per sandbox, `ctl` to create them
 * ("new NAME key=value ..."), mkdir NAME to create with defaults, rmdir
 * NAME to destroy, `err` with the last error of those.  Replies come when
 * the platform is done (bounded by the backend's request timeout).  Bad
 * input is refused whole before anything runs (fs_ctl_check,
 * fs_new_parse). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fs/gen.h"

#define CTL_WRITE_MAX (64u << 10) /* one write to root ctl */
#define CTL_LINES_MAX 64
#define KV_MAX (FS_CMD_MAXF)

static const char root_verbs[] = "new\n";

/* MOUNT/'s own entries, before the sandboxes */
static const struct fs_gen_ent root_entries[] = {
	{ "ctl", FS_K_ROOT_CTL, 0, 0 },
	{ "err", FS_K_ROOT_ERR, 0, 0 },
	{ "templates", FS_K_TPL_DIR, API_CAP_TEMPLATES, 0 },
	{ ".tags", FS_K_TAGS_DIR, API_CAP_TAGS, 0 },
};

/* ---- MOUNT/ ------------------------------------------------------------- */

static void root_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fs *fs = fs_of(req);
	const struct fs_gen_ent *en;
	struct fs_sb *sb;
	fuse_ino_t ino;
	off_t size;

	(void)parent;
	en = fs_gen_find(fs, root_entries, FS_GEN_N(root_entries), name);
	if (en) {
		fs_gen_entry(req, fs, fs_ino_make(en->kind, 0, 0, 0, 0), 0);
		return;
	}
	sb = fs_sb_get_name(fs, name);
	if (!sb) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	bool alias = strcmp(fs_sb_dirname(sb), name) != 0;
	ino = fs_ino_make(alias ? FS_K_SB_ALIAS : FS_K_SB_DIR, sb->slot,
			  sb->gen, 0, 0);
	size = alias ? (off_t)strlen(sb->name) : 0;
	fs_sb_put(fs, sb);
	fs_gen_entry(req, fs, ino, size);
}

static void root_opendir(fuse_req_t req, fuse_ino_t ino,
			 struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct stat st;
	int err = 0;
	struct fs_dir *d = fs_gen_dir(fs, ino, ino, &err); /* ".." is "." */

	if (!d) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	if (!err)
		err = fs_gen_dir_table(fs, d, root_entries,
				       FS_GEN_N(root_entries), 0, 0);

	pthread_mutex_lock(&fs->lock);
	for (unsigned s = 0; s < FS_SB_MAX && !err; s++) {
		struct fs_sb *sb = fs->sbs[s];

		if (!sb || sb->gone)
			continue;
		fs_stat_synthetic(fs, fs_ino_make(FS_K_SB_DIR, sb->slot,
						  sb->gen, 0, 0),
				  S_IFDIR | 0755, &st);
		err = fs_dir_add(d, fs_sb_dirname(sb), &st);
		if (err || !fs_sb_has_alias(sb))
			continue;
		fs_stat_synthetic(fs, fs_ino_make(FS_K_SB_ALIAS, sb->slot,
						  sb->gen, 0, 0),
				  S_IFLNK | 0777, &st);
		err = fs_dir_add(d, sb->id, &st);
	}
	pthread_mutex_unlock(&fs->lock);
	fs_dir_open_reply(req, fi, d, err);
}


/* ---- creating: shared by mkdir and ctl "new" ---------------------------- */

/* One request that creates one or more sandboxes in order. */
struct rjob {
	fuse_req_t req;
	struct fs *fs;
	bool mkdir;	/* reply an entry, else a write count */
	size_t wsize;	/* write: bytes to acknowledge */
	char *buf;	/* write: the lines, parsed in place */
	struct fs_cmd cmds[CTL_LINES_MAX];
	int ncmd, next;
};

static void rjob_free(struct rjob *j)
{
	free(j->buf);
	free(j);
}

static void rjob_run(struct rjob *j);

static void create_cb(void *ud, int err, const char *msg,
		      const struct api_sandbox *r)
{
	struct rjob *j = ud;
	struct fs *fs = j->fs;
	const char *name = j->cmds[j->next].f[1];
	struct fs_sb *sb;

	if (err) {
		fs_root_set_err(fs, "new %s: %s", name,
				msg ? msg : api_strerror(err));
		fuse_reply_err(j->req, -err);
		rjob_free(j);
		return;
	}
	sb = fs_sb_add(fs, r, &err);
	if (!sb) {
		fs_root_set_err(fs, "new %s: %s", name, api_strerror(err));
		fuse_reply_err(j->req, -err);
		rjob_free(j);
		return;
	}
	fs_poll_kick(fs);
	if (j->mkdir) {
		fuse_ino_t ino = fs_ino_make(FS_K_SB_DIR, sb->slot, sb->gen,
					     0, 0);

		/* The directory is NAME even where the platform assigns
		 * IDs (the ID is a symlink to it). */
		fs_sb_put(fs, sb);
		fs_gen_entry(j->req, fs, ino, 0);
		rjob_free(j);
		return;
	}
	fs_sb_put(fs, sb);
	j->next++;
	rjob_run(j);
}

static void rjob_run(struct rjob *j)
{
	struct fs *fs = j->fs;
	struct api_kv kv[KV_MAX + 1];
	size_t nkv = 0;
	bool has_template = false;

	if (j->next >= j->ncmd) {
		fuse_reply_write(j->req, j->wsize);
		rjob_free(j);
		return;
	}
	struct fs_cmd *c = &j->cmds[j->next];
	for (int i = 2; i < c->nf && nkv < KV_MAX; i++) {
		char *eq = strchr(c->f[i], '=');

		*eq = '\0'; /* validated: present */
		kv[nkv].key = c->f[i];
		kv[nkv].value = eq + 1;
		if (strcmp(c->f[i], "template") == 0)
			has_template = true;
		nkv++;
	}
	if (!has_template && fs->opts.template && fs->opts.template[0]) {
		kv[nkv].key = "template";
		kv[nkv].value = fs->opts.template;
		nkv++;
	}
	api_sb_create(fs->be, c->f[1], kv, nkv, create_cb, j);
}

/* Is the name of a new sandbox free?  -EEXIST with a sentence in err. */
static int check_new_free(struct fs *fs, const char *name)
{
	struct fs_sb *sb = fs_sb_get_name(fs, name);

	if (sb) {
		fs_sb_put(fs, sb);
		fs_root_set_err(fs, "new %s: a sandbox of that name exists",
				name);
		return -EEXIST;
	}
	return 0;
}

static void root_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name,
		       mode_t mode)
{
	struct fs *fs = fs_of(req);
	struct rjob *j;
	int err;

	(void)parent;
	(void)mode;
	if (!fs_name_valid(name) || fs_name_reserved(name)) {
		/* fs_root_set_err blanks control characters */
		fs_root_set_err(fs, "mkdir %.64s: %s", name,
				fs_name_reserved(name) ?
					"that name is reserved" :
					FS_NAME_RULE);
		fuse_reply_err(req, EINVAL);
		return;
	}
	err = check_new_free(fs, name);
	if (err) {
		fuse_reply_err(req, -err);
		return;
	}
	j = calloc(1, sizeof *j);
	if (j)
		j->buf = strdup(name);
	if (!j || !j->buf) {
		free(j);
		fuse_reply_err(req, ENOMEM);
		return;
	}
	j->req = req;
	j->fs = fs;
	j->mkdir = true;
	j->ncmd = 1;
	j->cmds[0].nf = 2;
	j->cmds[0].f[0] = "new";
	j->cmds[0].f[1] = j->buf;
	rjob_run(j);
}

/* ---- destroying --------------------------------------------------------- */

struct djob {
	fuse_req_t req;
	struct fs *fs;
	struct fs_sb *sb; /* reference */
};

static void destroy_cb(void *ud, int err, const char *msg)
{
	struct djob *j = ud;
	struct fs *fs = j->fs;
	struct fs_sb *sb = j->sb;

	pthread_mutex_lock(&fs->lock);
	sb->busy--;
	pthread_mutex_unlock(&fs->lock);
	if (err && err != -ENOENT) {
		fs_sb_set_err(fs, sb, "destroy: %s",
			      msg ? msg : api_strerror(err));
		fuse_reply_err(j->req, -err);
	} else {
		if (sb->name[0])
			fs_notify_inval_entry(fs, FUSE_ROOT_ID, sb->name);
		fs_sb_gone(fs, sb);
		fs_poll_kick(fs);
		fuse_reply_err(j->req, 0);
	}
	fs_sb_put(fs, sb);
	free(j);
}

static void root_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fs *fs = fs_of(req);
	struct fs_sb *sb = fs_sb_get_name(fs, name);
	struct djob *j;

	(void)parent;
	if (!sb && (!strcmp(name, "templates") || !strcmp(name, ".tags"))) {
		fs_root_set_err(fs, "rmdir %s: a directory of the mount itself",
				name);
		fuse_reply_err(req, EPERM);
		return;
	}
	if (!sb) {
		fuse_reply_err(req, strcmp(name, "ctl") ? ENOENT : ENOTDIR);
		return;
	}
	if (strcmp(fs_sb_dirname(sb), name) != 0) {
		fs_sb_put(fs, sb);
		fuse_reply_err(req, ENOTDIR); /* the ID symlink */
		return;
	}
	j = calloc(1, sizeof *j);
	if (!j) {
		fs_sb_put(fs, sb);
		fuse_reply_err(req, ENOMEM);
		return;
	}
	j->req = req;
	j->fs = fs;
	j->sb = sb;
	pthread_mutex_lock(&fs->lock);
	sb->busy++;
	pthread_mutex_unlock(&fs->lock);
	api_sb_verb(fs->be, sb->id, API_VERB_DESTROY, "", destroy_cb, j);
}

static void root_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	(void)parent;
	(void)name;
	fuse_reply_err(req, EPERM);
}

const struct fuse_lowlevel_ops fs_root_ops = {
	.lookup = root_lookup,
	.opendir = root_opendir,
	.readdir = fs_dir_readdir,
	.readdirplus = fs_dir_readdirplus,
	.releasedir = fs_dir_releasedir,
	.mkdir = root_mkdir,
	.rmdir = root_rmdir,
	.unlink = root_unlink,
};

/* ---- MOUNT/ctl ---------------------------------------------------------- */

static void rctl_open(fuse_req_t req, fuse_ino_t ino,
		      struct fuse_file_info *fi)
{
	(void)ino;
	/* O_TRUNC from shell `>` is fine: nothing to truncate. */
	fi->direct_io = 1;
	fi->nonseekable = 1;
	fuse_reply_open(req, fi);
}

static void rctl_read(fuse_req_t req, fuse_ino_t ino, size_t size,
		      off_t off, struct fuse_file_info *fi)
{
	(void)ino;
	(void)fi;
	fs_reply_text(req, root_verbs, sizeof root_verbs - 1, size, off);
}

/* tag=T settings: valid names, on a platform that keeps them.  0, or
 * -errno with a sentence in MOUNT/err. */
static int check_tags(struct fs *fs, const struct fs_cmd *c)
{
	for (int i = 2; i < c->nf; i++) {
		const char *t = c->f[i] + 4;

		if (strncmp(c->f[i], "tag=", 4) != 0)
			continue;
		if (!api_has(fs->be, API_CAP_TAGS)) {
			fs_root_set_err(fs, "ctl: new %s: the %s platform has "
					"no tags", c->f[1], fs->be->ops->name);
			return -EOPNOTSUPP;
		}
		if (!api_tag_valid(t)) {
			fs_root_set_err(fs, "ctl: new %s: tag '%.64s': a tag "
					"is 1 to 63 letters, digits, '.', '_' "
					"or '-', starting with a letter or "
					"digit", c->f[1], t);
			return -EINVAL;
		}
	}
	return 0;
}

static void rctl_write(fuse_req_t req, fuse_ino_t ino, const char *buf,
		       size_t size, off_t off, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct rjob *j;
	char *line, *save = NULL, msg[256];
	int err = 0;

	(void)ino;
	(void)off;
	(void)fi;
	if (size > CTL_WRITE_MAX) {
		fs_root_set_err(fs, "ctl: a write of %zu bytes is too long "
				"(at most %u)", size, CTL_WRITE_MAX);
		fuse_reply_err(req, EFBIG);
		return;
	}
	/* A NUL would cut the text short silently: refuse the write. */
	err = fs_ctl_check(buf, size, msg, sizeof msg);
	if (err) {
		fs_root_set_err(fs, "ctl: %s", msg);
		fuse_reply_err(req, -err);
		return;
	}
	j = calloc(1, sizeof *j);
	if (j)
		j->buf = strndup(buf, size);
	if (!j || !j->buf) {
		free(j);
		fuse_reply_err(req, ENOMEM);
		return;
	}
	j->req = req;
	j->fs = fs;
	j->wsize = size;

	/* Check every line before running any. */
	for (line = strtok_r(j->buf, "\n", &save); line && !err;
	     line = strtok_r(NULL, "\n", &save)) {
		struct fs_cmd *c = &j->cmds[j->ncmd];

		if (j->ncmd == CTL_LINES_MAX) {
			fs_root_set_err(fs, "ctl: more than %d lines in one "
					"write", CTL_LINES_MAX);
			err = -EINVAL;
			break;
		}
		err = fs_new_parse(line, c, msg, sizeof msg);
		if (err) {
			fs_root_set_err(fs, "ctl: %s", msg);
			break;
		}
		if (c->nf == 0)
			continue;
		err = check_tags(fs, c);
		for (int k = 0; k < j->ncmd && !err; k++) {
			if (!strcmp(j->cmds[k].f[1], c->f[1])) {
				fs_root_set_err(fs, "ctl: new %s: twice in "
						"one write", c->f[1]);
				err = -EINVAL;
			}
		}
		if (!err)
			err = check_new_free(fs, c->f[1]);
		if (!err)
			j->ncmd++;
	}
	if (err) {
		rjob_free(j);
		fuse_reply_err(req, -err);
		return;
	}
	rjob_run(j);
}

const struct fuse_lowlevel_ops fs_root_ctl_ops = {
	.open = rctl_open,
	.read = rctl_read,
	.write = rctl_write,
};

/* ---- MOUNT/err ---------------------------------------------------------- */

void fs_root_set_err(struct fs *fs, const char *fmt, ...)
{
	char msg[sizeof fs->root_err];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	for (char *p = msg; *p; p++) /* one line, nothing to forge lines */
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = ' ';
	pthread_mutex_lock(&fs->lock);
	memcpy(fs->root_err, msg, sizeof msg);
	pthread_mutex_unlock(&fs->lock);
	fs_log("%s", msg);
}

static void root_err_clear(struct fs *fs)
{
	pthread_mutex_lock(&fs->lock);
	fs->root_err[0] = '\0';
	pthread_mutex_unlock(&fs->lock);
}

/* The text is taken at open, so one cat sees one sentence; writing
 * anything or O_TRUNC clears it, as NAME/err. */
static void rerr_open(fuse_req_t req, fuse_ino_t ino,
		      struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	char text[sizeof fs->root_err];
	size_t len;

	(void)ino;
	if (fi->flags & O_TRUNC)
		root_err_clear(fs);
	pthread_mutex_lock(&fs->lock);
	len = strlen(fs->root_err);
	memcpy(text, fs->root_err, len);
	pthread_mutex_unlock(&fs->lock);
	fs_gen_open(req, fi, text, len, len ? "\n" : "");
}

static void rerr_write(fuse_req_t req, fuse_ino_t ino, const char *buf,
		       size_t size, off_t off, struct fuse_file_info *fi)
{
	(void)ino;
	(void)buf;
	(void)off;
	(void)fi;
	root_err_clear(fs_of(req));
	fuse_reply_write(req, size);
}

static void rerr_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr,
			 int to_set, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct stat st;

	(void)fi;
	if (to_set & (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID |
		      FUSE_SET_ATTR_GID)) {
		fuse_reply_err(req, EPERM);
		return;
	}
	if ((to_set & FUSE_SET_ATTR_SIZE) && attr->st_size == 0)
		root_err_clear(fs);
	fs_stat_node(fs, ino, &st);
	fuse_reply_attr(req, &st, 0);
}

const struct fuse_lowlevel_ops fs_root_err_ops = {
	.open = rerr_open,
	.read = fs_gen_read,
	.write = rerr_write,
	.setattr = rerr_setattr,
	.release = fs_gen_release,
};
