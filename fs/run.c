/* run.c - NAME/run: one command per open, for programs (tools/sbx.c): what
 * proc/JOB/ gives in a mkdir, five opens, a write and an rmdir, here in one
 * open, its writes and reads, and the close.
 *
 * Each open makes a job proc/run.N (visible there like any job while the
 * file is open; an rmdir of it ends the session) and is its only reader.
 * Both directions carry frames: a tag byte, a length (4 bytes, little-
 * endian) and that many bytes; a write or read may hold several frames or
 * end inside one (the kernel splits a write larger than the mount's
 * max_write).  The exception is the first write, the command, which is
 * one write(2) like a write to `cmd`:
 *
 *   'c' LINE          run LINE by /bin/sh -c, stdin empty
 *   'C' LINE          the same, stdin a stream fed by this file
 *
 * then, written:
 *
 *   '0' LEN BYTES     stdin bytes (EPIPE once the command's stdin is gone)
 *   '.' 0             the end of stdin (as is the close)
 *
 * The first write is answered once the command runs (or with the errno
 * `cmd` would give).  Reads return the output in the order it came:
 *
 *   '1' LEN BYTES     stdout
 *   '2' LEN BYTES     stderr
 *   'x' LEN CODE      the exit code in decimal, as `wait` shows it; then EOF
 *
 * After a bad frame every later write fails with EINVAL.  When the
 * platform lost track of the command, the reads fail with EIO after the
 * frames that came (no 'x'), with the sentence in NAME/err.  Closing
 * before the exit kills the command and what it started; the job leaves
 * proc/.
 *
 * Reads and writes from two threads: use pread(2)/pwrite(2) (the offset
 * is ignored).  read(2) and write(2) share the file position lock, so a
 * write would wait for a read parked until output comes.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "fs/gen.h"
#include "fs/job_int.h"

static void ru_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	static atomic_uint seq;
	struct fs *fs = fs_of(req);
	int err;
	struct fs_sb *sb = fs_sess_sb(req, ino, "run");
	struct fs_job *j = NULL;
	char name[32];

	if (!sb)
		return;
	if ((fi->flags & O_ACCMODE) != O_RDWR) {
		fs_sb_set_err(fs, sb, "run: open it for reading and writing");
		fs_sb_put(fs, sb);
		fuse_reply_err(req, EINVAL);
		return;
	}
	/* a name nobody has in proc/ (a script's mkdir of the same name
	 * later gets EEXIST, as for any job) */
	err = EEXIST;
	for (int i = 0; i < 64 && !j && err == EEXIST; i++) {
		snprintf(name, sizeof name, "run.%u",
			 atomic_fetch_add(&seq, 1) + 1);
		j = fs_proc_add(fs, sb, name, &err);
	}
	fs_sb_put(fs, sb);
	if (!j) {
		fuse_reply_err(req, err);
		return;
	}
	j->framed = true;
	/* seekable on purpose: pread/pwrite need it (see above) */
	if (!fs_sess_open(req, fi, j, FS_K_SB_RUN)) {
		fs_proc_drop(fs, j);
		fs_job_put(j);
	}
}

static void ru_write(fuse_req_t req, fuse_ino_t ino, const char *buf,
		     size_t size, off_t off, struct fuse_file_info *fi)
{
	(void)ino;
	(void)off;
	fs_job_run_write(req, (struct fs_jh *)(uintptr_t)fi->fh, buf, size);
}

static void ru_release(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	struct fs_jh *h = (struct fs_jh *)(uintptr_t)fi->fh;
	struct fs_job *j = fs_jh_job(h);

	(void)ino;
	fs_jh_close(h);
	/* closing before exit kills the command and all it started */
	fs_proc_drop(fs_of(req), j);
	fs_job_put(j);
	fuse_reply_err(req, 0);
}

const struct fuse_lowlevel_ops fs_run_ops = {
	.getattr = fs_gen_sb_getattr,
	.setattr = fs_sess_setattr,
	.open = ru_open,
	.read = fs_sess_read,
	.write = ru_write,
	.release = ru_release,
	.poll = fs_sess_poll,
};
