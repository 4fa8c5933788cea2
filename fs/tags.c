/* tags.c - MOUNT/.tags/: one directory per tag some sandbox carries
 * (`new NAME tag=T`, API_CAP_TAGS), holding a symlink ../../NAME for each
 * sandbox with that tag, so `ls MOUNT/.tags/T/` filters and
 * `cat MOUNT/.tags/T/NAME/status` works.  Everything comes from the sandbox
 * table (tags arrive with the platform's records): no platform call. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fs/gen.h"

/* Tag names seen, by index (inode numbers carry the index). */
#define TAG_IDX_MAX FS_JOB_MAX
static pthread_mutex_t tag_mu = PTHREAD_MUTEX_INITIALIZER;
static char *tag_names[TAG_IDX_MAX];

/* Index of tag t, added if new; -1 when the table is full. */
static int tag_index(const char *t)
{
	int idx = -1;

	pthread_mutex_lock(&tag_mu);
	for (unsigned i = 0; i < TAG_IDX_MAX && idx < 0; i++) {
		if (!tag_names[i]) {
			tag_names[i] = strdup(t);
			idx = tag_names[i] ? (int)i : -1;
			break;
		}
		if (!strcmp(tag_names[i], t))
			idx = (int)i;
	}
	pthread_mutex_unlock(&tag_mu);
	return idx;
}

/* The tag of an index into buf, false if unknown. */
static bool tag_name(unsigned idx, char *buf, size_t len)
{
	bool ok = false;

	pthread_mutex_lock(&tag_mu);
	if (idx < TAG_IDX_MAX && tag_names[idx]) {
		snprintf(buf, len, "%s", tag_names[idx]);
		ok = true;
	}
	pthread_mutex_unlock(&tag_mu);
	return ok;
}

bool fs_tags_has(const char *tags, const char *t)
{
	size_t n = strlen(t);

	for (const char *p = tags; p && *p;) {
		const char *e = strchr(p, ',');
		size_t k = e ? (size_t)(e - p) : strlen(p);

		if (k == n && !strncmp(p, t, n))
			return true;
		if (!e)
			break;
		p = e + 1;
	}
	return false;
}

/* ---- MOUNT/.tags/ ------------------------------------------------------- */

static bool any_has(struct fs *fs, const char *t)
{
	bool found = false;

	pthread_mutex_lock(&fs->lock);
	for (unsigned s = 0; s < FS_SB_MAX && !found; s++)
		found = fs->sbs[s] && !fs->sbs[s]->gone &&
			fs_tags_has(fs->sbs[s]->tags, t);
	pthread_mutex_unlock(&fs->lock);
	return found;
}

static void tags_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fs *fs = fs_of(req);
	int idx;

	(void)parent;
	if (!api_tag_valid(name)) {
		fs_root_set_err(fs, ".tags/%.64s: a tag is 1 to 63 letters, "
				"digits, '.', '_' or '-', starting with a "
				"letter or digit", name);
		fuse_reply_err(req, EINVAL);
		return;
	}
	if (!any_has(fs, name)) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	idx = tag_index(name);
	if (idx < 0) {
		fuse_reply_err(req, ENOSPC);
		return;
	}
	fs_gen_entry(req, fs,
		     fs_ino_make(FS_K_TAG_DIR, 0, 0, (unsigned)idx, 0), 0);
}

static void tags_opendir(fuse_req_t req, fuse_ino_t ino,
			 struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	char (*seen)[64] = calloc(FS_SB_MAX, 64);
	size_t nseen = 0;
	struct stat st;
	int err = 0;
	struct fs_dir *d = seen ? fs_gen_dir(fs, ino, FUSE_ROOT_ID, &err) :
				  NULL;

	if (!d) {
		free(seen);
		fuse_reply_err(req, ENOMEM);
		return;
	}
	/* distinct tags of the live sandboxes */
	pthread_mutex_lock(&fs->lock);
	for (unsigned s = 0; s < FS_SB_MAX; s++) {
		struct fs_sb *sb = fs->sbs[s];
		char buf[sizeof sb->tags], *save = NULL;

		if (!sb || sb->gone || !sb->tags[0])
			continue;
		memcpy(buf, sb->tags, sizeof buf);
		for (char *t = strtok_r(buf, ",", &save); t && nseen < FS_SB_MAX;
		     t = strtok_r(NULL, ",", &save)) {
			bool dup = false;

			for (size_t k = 0; k < nseen && !dup; k++)
				dup = !strcmp(seen[k], t);
			if (!dup)
				snprintf(seen[nseen++], 64, "%s", t);
		}
	}
	pthread_mutex_unlock(&fs->lock);
	for (size_t k = 0; k < nseen && !err; k++) {
		int idx = tag_index(seen[k]);

		if (idx < 0)
			continue;
		fs_stat_synthetic(fs, fs_ino_make(FS_K_TAG_DIR, 0, 0,
						  (unsigned)idx, 0),
				  S_IFDIR | 0755, &st);
		err = fs_dir_add(d, seen[k], &st);
	}
	free(seen);
	fs_dir_open_reply(req, fi, d, err);
}

static void tags_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	(void)parent;
	(void)name;
	fuse_reply_err(req, EPERM); /* a tag goes with its sandboxes */
}

const struct fuse_lowlevel_ops fs_tags_dir_ops = {
	.lookup = tags_lookup,
	.opendir = tags_opendir,
	.readdir = fs_dir_readdir,
	.readdirplus = fs_dir_readdirplus,
	.releasedir = fs_dir_releasedir,
	.rmdir = tags_rmdir,
};

/* ---- MOUNT/.tags/T/ ----------------------------------------------------- */

static off_t link_size(const struct fs_sb *sb)
{
	return (off_t)(6 + strlen(fs_sb_dirname(sb))); /* "../../NAME" */
}

static void tag_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fs *fs = fs_of(req);
	unsigned idx = fs_ino_job_slot(parent);
	char tag[64];
	struct fs_sb *sb;
	bool ok = false;
	off_t size = 0;
	fuse_ino_t ino = 0;

	if (!tag_name(idx, tag, sizeof tag)) {
		fuse_reply_err(req, ESTALE);
		return;
	}
	sb = fs_sb_get_name(fs, name);
	if (sb) {
		pthread_mutex_lock(&fs->lock);
		ok = !strcmp(fs_sb_dirname(sb), name) &&
		     fs_tags_has(sb->tags, tag);
		pthread_mutex_unlock(&fs->lock);
		ino = fs_ino_make(FS_K_TAG_LINK, sb->slot, sb->gen, idx, 0);
		size = link_size(sb);
		fs_sb_put(fs, sb);
	}
	if (!ok) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	fs_gen_entry(req, fs, ino, size);
}

static void tag_opendir(fuse_req_t req, fuse_ino_t ino,
			struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	unsigned idx = fs_ino_job_slot(ino);
	struct fs_dir *d;
	struct stat st;
	char tag[64];
	int err;

	if (!tag_name(idx, tag, sizeof tag)) {
		fuse_reply_err(req, ESTALE);
		return;
	}
	d = fs_gen_dir(fs, ino, fs_ino_make(FS_K_TAGS_DIR, 0, 0, 0, 0), &err);
	if (!d) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	pthread_mutex_lock(&fs->lock);
	for (unsigned s = 0; s < FS_SB_MAX && !err; s++) {
		struct fs_sb *sb = fs->sbs[s];

		if (!sb || sb->gone || !fs_tags_has(sb->tags, tag))
			continue;
		fs_stat_synthetic(fs, fs_ino_make(FS_K_TAG_LINK, sb->slot,
						  sb->gen, idx, 0),
				  S_IFLNK | 0777, &st);
		st.st_size = link_size(sb);
		err = fs_dir_add(d, fs_sb_dirname(sb), &st);
	}
	pthread_mutex_unlock(&fs->lock);
	fs_dir_open_reply(req, fi, d, err);
}

const struct fuse_lowlevel_ops fs_tag_dir_ops = {
	.lookup = tag_lookup,
	.opendir = tag_opendir,
	.readdir = fs_dir_readdir,
	.readdirplus = fs_dir_readdirplus,
	.releasedir = fs_dir_releasedir,
};

/* ---- MOUNT/.tags/T/NAME ------------------------------------------------- */

static void link_getattr(fuse_req_t req, fuse_ino_t ino,
			 struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct stat st;
	struct fs_sb *sb = fs_sb_req(req, ino);

	(void)fi;
	if (!sb)
		return;
	fs_stat_synthetic(fs, ino, S_IFLNK | 0777, &st);
	st.st_size = link_size(sb);
	fs_sb_put(fs, sb);
	fuse_reply_attr(req, &st, 1.0);
}

static void link_readlink(fuse_req_t req, fuse_ino_t ino)
{
	struct fs *fs = fs_of(req);
	char target[API_ID_MAX + 8];
	struct fs_sb *sb = fs_sb_req(req, ino);

	if (!sb)
		return;
	snprintf(target, sizeof target, "../../%s", fs_sb_dirname(sb));
	fs_sb_put(fs, sb);
	fuse_reply_readlink(req, target);
}

const struct fuse_lowlevel_ops fs_tag_link_ops = {
	.getattr = link_getattr,
	.readlink = link_readlink,
};
