/* metrics.c - NAME/metrics: the sandbox's resource figures ("key: value"
 * lines: CPU seconds, memory, processes, disk), asked of the platform at
 * each open (api_sb_metrics) and served from that copy with direct I/O,
 * so a reader never sees stale page-cache figures.  Present only where
 * the backend has API_CAP_METRICS. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fs/fs_int.h"

struct mtext {
	fuse_req_t req;
	struct fuse_file_info fi;
	char *text;
	size_t len;
};

static void got_metrics(void *ud, int err, const char *msg, const char *s)
{
	struct mtext *t = ud;

	(void)msg;
	if (err) {
		fuse_reply_err(t->req, -err);
		free(t);
		return;
	}
	t->len = strlen(s);
	t->text = malloc(t->len + 1);
	if (!t->text) {
		fuse_reply_err(t->req, ENOMEM);
		free(t);
		return;
	}
	memcpy(t->text, s, t->len + 1);
	t->fi.fh = (uint64_t)(uintptr_t)t;
	t->fi.direct_io = 1;
	if (fuse_reply_open(t->req, &t->fi) != 0) { /* no RELEASE comes */
		free(t->text);
		free(t);
	}
}

static void m_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct mtext *t;
	char id[API_ID_MAX];
	int err;
	struct fs_sb *sb = fs_sb_get_ino(fs, ino, &err);

	if (!sb) {
		fuse_reply_err(req, -err);
		return;
	}
	snprintf(id, sizeof id, "%s", sb->id);
	fs_sb_put(fs, sb);
	if ((fi->flags & O_ACCMODE) != O_RDONLY) {
		fuse_reply_err(req, EACCES);
		return;
	}
	t = calloc(1, sizeof *t);
	if (!t) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	t->req = req;
	t->fi = *fi;
	api_sb_metrics(fs->be, id, got_metrics, t);
}

static void m_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		   struct fuse_file_info *fi)
{
	struct mtext *t = (struct mtext *)(uintptr_t)fi->fh;

	(void)ino;
	if (off < 0 || (size_t)off >= t->len) {
		fuse_reply_buf(req, NULL, 0);
		return;
	}
	if (size > t->len - (size_t)off)
		size = t->len - (size_t)off;
	fuse_reply_buf(req, t->text + off, size);
}

static void m_release(fuse_req_t req, fuse_ino_t ino,
		      struct fuse_file_info *fi)
{
	struct mtext *t = (struct mtext *)(uintptr_t)fi->fh;

	(void)ino;
	free(t->text);
	free(t);
	fuse_reply_err(req, 0);
}

static void m_getattr(fuse_req_t req, fuse_ino_t ino,
		      struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct stat st;
	int err;
	struct fs_sb *sb = fs_sb_get_ino(fs, ino, &err);

	(void)fi;
	if (!sb) {
		fuse_reply_err(req, -err);
		return;
	}
	fs_sb_put(fs, sb);
	fs_stat_node(fs, ino, &st);
	/* size 0: made at open, read with direct I/O */
	fuse_reply_attr(req, &st, 0);
}

const struct fuse_lowlevel_ops fs_sb_metrics_ops = {
	.getattr = m_getattr,
	.open = m_open,
	.read = m_read,
	.release = m_release,
};
