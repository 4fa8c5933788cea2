/* exec.c - NAME/exec, the one-shot pipe: every open is a private session,
 * the first write is a command line run by /bin/sh -c, reads return stdout
 * and stderr as they arrive and EOF at exit (EIO instead, once the bytes
 * that arrived are read, when the platform lost track of the command),
 * close kills.
 *
 * A session is an anonymous job (job.c) with one merged output stream and
 * exactly one reader, so its spool drops bytes as soon as they are read.
 * Decisions where DESIGN.md is silent:
 *  - a read before any command line was written fails with EINVAL (nothing
 *    would ever arrive); after a failed start it fails with the start's
 *    errno (the write reported it already; EOF would hide it);
 *  - a second write fails with EBUSY: stdin is empty (/dev/null) and a
 *    session runs one command;
 *  - the exit code is not part of the stream; use proc/JOB/wait for it. */
#include <errno.h>
#include <stdlib.h>

#include "fs/gen.h"
#include "fs/job_int.h"

void fs_sess_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr,
		     int to_set, struct fuse_file_info *fi)
{
	/* `echo cmd > exec` truncates first: accept it. */
	if (((to_set & FUSE_SET_ATTR_SIZE) && attr->st_size != 0) ||
	    (to_set & (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID |
		       FUSE_SET_ATTR_GID))) {
		fuse_reply_err(req, EPERM);
		return;
	}
	fs_gen_sb_getattr(req, ino, fi);
}

struct fs_sb *fs_sess_sb(fuse_req_t req, fuse_ino_t ino, const char *what)
{
	struct fs *fs = fs_of(req);
	struct fs_sb *sb = fs_sb_req(req, ino);

	if (!sb)
		return NULL;
	if (!api_has(fs->be, API_CAP_EXEC)) {
		fs_sb_set_err(fs, sb, "%s: this platform cannot run commands",
			      what);
		fs_sb_put(fs, sb);
		fuse_reply_err(req, EOPNOTSUPP);
		return NULL;
	}
	return sb;
}

static void ex_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct fs_sb *sb = fs_sess_sb(req, ino, "exec");
	struct fs_job *j;

	if (!sb)
		return;
	j = fs_job_new(fs, sb, "exec", 0, 0);
	fs_sb_put(fs, sb);
	if (!j) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	j->exec_session = true;
	fi->nonseekable = 1;
	if (!fs_sess_open(req, fi, j, FS_K_SB_EXEC))
		fs_job_put(j);
}

bool fs_sess_open(fuse_req_t req, struct fuse_file_info *fi,
		  struct fs_job *j, enum fs_kind kind)
{
	uint64_t dropped;
	struct fs_jh *h = fs_jh_open(j, kind, O_RDONLY, &dropped);

	if (!h) {
		fuse_reply_err(req, ENOMEM);
		return false;
	}
	/* the caller's job reference belongs to the handle */
	fi->fh = (uintptr_t)h;
	fi->direct_io = 1;
	fi->keep_cache = 0;
	fi->noflush = 1; /* nothing to flush; a round trip saved */
	fuse_reply_open(req, fi);
	return true;
}

void fs_sess_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		  struct fuse_file_info *fi)
{
	struct fs_jh *h = (struct fs_jh *)(uintptr_t)fi->fh;
	struct fs_job *j = fs_jh_job(h);

	(void)ino;
	(void)off;
	pthread_mutex_lock(&j->lock);
	int err = j->state != FS_JOB_CREATED ? 0 :
		  j->start_err		     ? j->start_err :
						       EINVAL;

	pthread_mutex_unlock(&j->lock);
	if (err == EINVAL)
		fs_job_err(j, "%s: write a command line before reading",
			   fs_job_label(j));
	if (err) {
		fuse_reply_err(req, err);
		return;
	}
	fs_jh_read_stream(req, h, size);
}

static void ex_write(fuse_req_t req, fuse_ino_t ino, const char *buf,
		     size_t size, off_t off, struct fuse_file_info *fi)
{
	struct fs_jh *h = (struct fs_jh *)(uintptr_t)fi->fh;

	(void)ino;
	(void)off;
	fs_job_start(req, fs_jh_job(h), buf, size);
}

static void ex_release(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	struct fs_jh *h = (struct fs_jh *)(uintptr_t)fi->fh;
	struct fs_job *j = fs_jh_job(h);

	(void)ino;
	fs_jh_close(h);
	/* Closing before exit kills the command and all it started. */
	fs_job_remove(j);
	fs_job_put(j);
	fuse_reply_err(req, 0);
}

void fs_sess_poll(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi,
		  struct fuse_pollhandle *ph)
{
	(void)ino;
	fs_jh_poll(req, (struct fs_jh *)(uintptr_t)fi->fh, ph);
}

const struct fuse_lowlevel_ops fs_exec_ops = {
	.getattr = fs_gen_sb_getattr,
	.setattr = fs_sess_setattr,
	.open = ex_open,
	.read = fs_sess_read,
	.write = ex_write,
	.release = ex_release,
	.poll = fs_sess_poll,
};
