/* metrics.c - NAME/metrics: the sandbox's resource figures ("key: value"
 * lines: CPU seconds, memory, processes, disk), asked of the platform at
 * each open (api_sb_metrics) and served from that copy with direct I/O,
 * so a reader never sees stale page-cache figures.  Present only where
 * the backend has API_CAP_METRICS. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fs/gen.h"

struct mopen {
	fuse_req_t req;
	struct fuse_file_info fi;
};

static void got_metrics(void *ud, int err, const char *msg, const char *s)
{
	struct mopen *o = ud;

	(void)msg;
	if (err)
		fuse_reply_err(o->req, -err);
	else
		fs_gen_open(o->req, &o->fi, s, strlen(s), "");
	free(o);
}

static void m_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct mopen *o;
	char id[API_ID_MAX];
	struct fs_sb *sb = fs_sb_req(req, ino);

	if (!sb)
		return;
	snprintf(id, sizeof id, "%s", sb->id);
	fs_sb_put(fs, sb);
	if (!fs_gen_rdonly(req, fi))
		return;
	o = calloc(1, sizeof *o);
	if (!o) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	o->req = req;
	o->fi = *fi;
	api_sb_metrics(fs->be, id, got_metrics, o);
}

const struct fuse_lowlevel_ops fs_sb_metrics_ops = {
	.getattr = fs_gen_sb_getattr,
	.open = m_open,
	.read = fs_gen_read,
	.release = fs_gen_release,
};
