/* gen.c - read-only generated nodes, table-driven (see gen.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fs/gen.h"

const struct fs_gen_ent *fs_gen_find(struct fs *fs,
				     const struct fs_gen_ent *t, size_t n,
				     const char *name)
{
	for (size_t i = 0; i < n; i++) {
		if (strcmp(name, t[i].name) != 0)
			continue;
		if (t[i].cap && !api_has(fs->be, t[i].cap))
			return NULL;
		return &t[i];
	}
	return NULL;
}

void fs_gen_entry(fuse_req_t req, struct fs *fs, fuse_ino_t ino, off_t size)
{
	struct fuse_entry_param e;

	memset(&e, 0, sizeof e);
	e.ino = ino;
	fs_stat_node(fs, ino, &e.attr);
	if (size > 0)
		e.attr.st_size = size;
	e.attr_timeout = e.entry_timeout = 1.0;
	fuse_reply_entry(req, &e);
}

struct fs_dir *fs_gen_dir(struct fs *fs, fuse_ino_t ino, fuse_ino_t parent,
			  int *err)
{
	struct fs_dir *d = calloc(1, sizeof *d);
	struct stat st;

	if (!d)
		return NULL;
	fs_stat_synthetic(fs, ino, S_IFDIR | 0755, &st);
	*err = fs_dir_add(d, ".", &st);
	fs_stat_synthetic(fs, parent, S_IFDIR | 0755, &st);
	if (!*err)
		*err = fs_dir_add(d, "..", &st);
	return d;
}

int fs_gen_dir_table(struct fs *fs, struct fs_dir *d,
		     const struct fs_gen_ent *t, size_t n, unsigned slot,
		     unsigned gen)
{
	struct stat st;
	int err = 0;

	for (size_t i = 0; i < n && !err; i++) {
		fuse_ino_t ino = fs_ino_make(t[i].kind, slot, gen, 0, 0);

		if (t[i].cap && !api_has(fs->be, t[i].cap))
			continue;
		if (t[i].mode)
			fs_stat_synthetic(fs, ino, t[i].mode, &st);
		else
			fs_stat_node(fs, ino, &st);
		err = fs_dir_add(d, t[i].name, &st);
	}
	return err;
}

/* ---- text made at open -------------------------------------------------- */

struct gen_text {
	size_t len;
	char text[];
};

bool fs_gen_rdonly(fuse_req_t req, struct fuse_file_info *fi)
{
	if ((fi->flags & O_ACCMODE) == O_RDONLY)
		return true;
	fuse_reply_err(req, EACCES);
	return false;
}

void fs_gen_open(fuse_req_t req, struct fuse_file_info *fi, const char *text,
		 size_t len, const char *tail)
{
	size_t tl = strlen(tail);
	struct gen_text *t = malloc(sizeof *t + len + tl + 1);

	if (!t) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	if (len)
		memcpy(t->text, text, len);
	memcpy(t->text + len, tail, tl + 1);
	t->len = len + tl;
	fi->fh = (uint64_t)(uintptr_t)t;
	fi->direct_io = 1;
	if (fuse_reply_open(req, fi) != 0) /* no RELEASE comes */
		free(t);
}

void fs_gen_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		 struct fuse_file_info *fi)
{
	const struct gen_text *t = (const struct gen_text *)(uintptr_t)fi->fh;

	(void)ino;
	fs_reply_text(req, t->text, t->len, size, off);
}

void fs_gen_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	free((void *)(uintptr_t)fi->fh);
	fuse_reply_err(req, 0);
}

void fs_gen_sb_getattr(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct stat st;
	struct fs_sb *sb = fs_sb_req(req, ino);

	(void)fi;
	if (!sb)
		return;
	fs_sb_put(fs, sb);
	fs_stat_node(fs, ino, &st); /* size 0: made at open, direct I/O */
	fuse_reply_attr(req, &st, 0);
}
