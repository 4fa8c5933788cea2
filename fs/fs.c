/* fs.c - the dispatcher: the one fuse_lowlevel_ops table handed to libfuse,
 * forwarding each request to the node kind's own table; plus mount set-up,
 * teardown and the status poller thread. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fs/fs_int.h"

/* ---- kinds -------------------------------------------------------------- */

/* Per kind: its table and, for getattr when the table has none, the mode of
 * a synthetic node. */
struct kind {
	const struct fuse_lowlevel_ops *ops;
	mode_t mode;
};

static const struct kind *kind_of(fuse_ino_t ino)
{
	static const struct kind kinds[FS_K__COUNT] = {
		[FS_K_ROOT] = { &fs_root_ops, S_IFDIR | 0755 },
		[FS_K_ROOT_CTL] = { &fs_root_ctl_ops, S_IFREG | 0644 },
		[FS_K_ROOT_ERR] = { &fs_root_err_ops, S_IFREG | 0644 },
		[FS_K_SB_DIR] = { &fs_sb_dir_ops, S_IFDIR | 0755 },
		[FS_K_SB_ALIAS] = { &fs_sb_alias_ops, S_IFLNK | 0777 },
		[FS_K_SB_CTL] = { &fs_sb_ctl_ops, S_IFREG | 0644 },
		[FS_K_SB_STATUS] = { &fs_sb_status_ops, S_IFREG | 0444 },
		[FS_K_SB_INFO] = { &fs_sb_info_ops, S_IFREG | 0444 },
		[FS_K_SB_ERR] = { &fs_sb_err_ops, S_IFREG | 0644 },
		[FS_K_SB_EXEC] = { &fs_exec_ops, S_IFREG | 0666 },
		[FS_K_SB_RUN] = { &fs_run_ops, S_IFREG | 0666 },
		[FS_K_PROC_DIR] = { &fs_proc_dir_ops, S_IFDIR | 0755 },
		[FS_K_JOB_DIR] = { &fs_job_dir_ops, S_IFDIR | 0755 },
		[FS_K_JOB_CMD] = { &fs_job_file_ops, S_IFREG | 0644 },
		[FS_K_JOB_CTL] = { &fs_job_file_ops, S_IFREG | 0644 },
		[FS_K_JOB_STDIN] = { &fs_job_file_ops, S_IFREG | 0644 },
		[FS_K_JOB_STDOUT] = { &fs_job_file_ops, S_IFREG | 0444 },
		[FS_K_JOB_STDERR] = { &fs_job_file_ops, S_IFREG | 0444 },
		[FS_K_JOB_WAIT] = { &fs_job_file_ops, S_IFREG | 0444 },
		[FS_K_JOB_STATUS] = { &fs_job_file_ops, S_IFREG | 0444 },
		[FS_K_FILE] = { &fs_file_ops, 0 },
		[FS_K_SB_METRICS] = { &fs_sb_metrics_ops, S_IFREG | 0444 },
		[FS_K_TPL_DIR] = { &fs_tpl_dir_ops, S_IFDIR | 0755 },
		[FS_K_TPL] = { &fs_tpl_ops, S_IFDIR | 0755 },
		[FS_K_TPL_INFO] = { &fs_tpl_info_ops, S_IFREG | 0444 },
		[FS_K_PORTS_DIR] = { &fs_ports_dir_ops, S_IFDIR | 0755 },
		[FS_K_PORT] = { &fs_port_ops, S_IFREG | 0444 },
		[FS_K_TAGS_DIR] = { &fs_tags_dir_ops, S_IFDIR | 0755 },
		[FS_K_TAG_DIR] = { &fs_tag_dir_ops, S_IFDIR | 0755 },
		[FS_K_TAG_LINK] = { &fs_tag_link_ops, S_IFLNK | 0777 },
	};
	enum fs_kind k = fs_ino_kind(ino);

	if (k == FS_K_NONE || !kinds[k].ops)
		return NULL;
	return &kinds[k];
}

static bool kind_is_dir(const struct kind *k)
{
	return k && S_ISDIR(k->mode);
}

void fs_stat_synthetic(struct fs *fs, fuse_ino_t ino, mode_t mode,
		       struct stat *st)
{
	static time_t t0;

	if (!t0)
		t0 = time(NULL);
	memset(st, 0, sizeof *st);
	st->st_ino = ino;
	st->st_mode = mode;
	st->st_nlink = S_ISDIR(mode) ? 2 : 1;
	st->st_uid = fs->uid;
	st->st_gid = fs->gid;
	st->st_blksize = 4096;
	st->st_atim.tv_sec = st->st_mtim.tv_sec = st->st_ctim.tv_sec = t0;
}

int fs_stat_node(struct fs *fs, fuse_ino_t ino, struct stat *st)
{
	const struct kind *k = kind_of(ino);

	if (!k || fs_ino_kind(ino) == FS_K_FILE)
		return -ENOENT;
	fs_stat_synthetic(fs, ino, k->mode, st);
	return 0;
}

/* ---- dispatch ----------------------------------------------------------- */

/* Resolve the table of `ino` or answer the request. */
#define KIND_OR_ERR(req, ino, k)                                            \
	const struct kind *k = kind_of(ino);                                 \
	if (!k) {                                                            \
		fuse_reply_err(req, ESTALE);                                 \
		return;                                                      \
	}

/* Errno for a slot a kind lacks, decided once here. */
static int missing(const struct kind *k, bool dir_op)
{
	if (dir_op)
		return kind_is_dir(k) ? EPERM : ENOTDIR;
	return kind_is_dir(k) ? EISDIR : EPERM;
}

static void d_init(void *ud, struct fuse_conn_info *conn)
{
	struct fs *fs = ud;

	/* Big requests: 1 MiB writes (libfuse derives max_pages from it). */
	conn->max_write = 1u << 20;
	conn->max_readahead = 1u << 20;
	if (conn->capable & FUSE_CAP_ASYNC_READ)
		conn->want |= FUSE_CAP_ASYNC_READ;
	if (conn->capable & FUSE_CAP_READDIRPLUS)
		conn->want |= FUSE_CAP_READDIRPLUS;
	/* Always plus: synthetic dirs list cheaply, fs/ fills attributes of
	 * a whole directory from its one listing call. */
	conn->want &= ~FUSE_CAP_READDIRPLUS_AUTO;
	if (conn->capable & FUSE_CAP_ATOMIC_O_TRUNC)
		conn->want |= FUSE_CAP_ATOMIC_O_TRUNC;
	/* Replies come from backend buffers; splice buys nothing. */
	conn->want &= ~(FUSE_CAP_SPLICE_READ | FUSE_CAP_SPLICE_WRITE |
			FUSE_CAP_SPLICE_MOVE);
	/* Files change behind our back (sandbox processes): let the kernel
	 * drop cached pages when mtime/size move. */
	if (conn->capable & FUSE_CAP_AUTO_INVAL_DATA)
		conn->want |= FUSE_CAP_AUTO_INVAL_DATA;
	/* Write-back caching (writes gather in the page cache and reach us
	 * in big requests) only on request, SBXFS_WRITEBACK=1: with it the
	 * kernel trusts its own size and mtime of a cached regular file
	 * over ours for as long as the inode lives, so a file a sandbox
	 * process grows or truncates would keep its old size through the
	 * mount, and so would the other names of a hard-linked file.
	 * Remote backends never: their shared cached copy (api/rfile.c)
	 * decides O_APPEND and sizes itself. */
	fs->page_cache = api_has(fs->be, API_CAP_RANDOM_WRITE);
	if (fs->page_cache && getenv("SBXFS_WRITEBACK") &&
	    !strcmp(getenv("SBXFS_WRITEBACK"), "1") &&
	    (conn->capable & FUSE_CAP_WRITEBACK_CACHE)) {
		conn->want |= FUSE_CAP_WRITEBACK_CACHE;
		fs->writeback = true;
	} else {
		conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
	}
}

static void d_destroy(void *ud)
{
	(void)ud;
}

static void d_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	KIND_OR_ERR(req, parent, k);
	if (!k->ops->lookup) {
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	k->ops->lookup(req, parent, name);
}

/* Only fs/ nodes keep a lookup count; every other kind is encoded in its
 * inode number and has nothing to forget. */
static void d_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	if (fs_ino_kind(ino) == FS_K_FILE)
		fs_files_forget(fs_of(req), ino, nlookup);
	fuse_reply_none(req);
}

static void d_forget_multi(fuse_req_t req, size_t count,
			   struct fuse_forget_data *forgets)
{
	for (size_t i = 0; i < count; i++)
		if (fs_ino_kind(forgets[i].ino) == FS_K_FILE)
			fs_files_forget(fs_of(req), forgets[i].ino,
					forgets[i].nlookup);
	fuse_reply_none(req);
}

static void d_getattr(fuse_req_t req, fuse_ino_t ino,
		      struct fuse_file_info *fi)
{
	KIND_OR_ERR(req, ino, k);
	if (k->ops->getattr) {
		k->ops->getattr(req, ino, fi);
		return;
	}
	struct stat st;
	fs_stat_synthetic(fs_of(req), ino, k->mode, &st);
	fuse_reply_attr(req, &st, 1.0);
}

static void d_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr,
		      int to_set, struct fuse_file_info *fi)
{
	KIND_OR_ERR(req, ino, k);
	if (k->ops->setattr) {
		k->ops->setattr(req, ino, attr, to_set, fi);
		return;
	}
	/* Synthetic files: accept truncation to 0 (shell `>` without atomic
	 * O_TRUNC, `truncate -s0`) and time changes (touch); refuse the
	 * rest. */
	if ((to_set & FUSE_SET_ATTR_SIZE) && attr->st_size != 0) {
		fuse_reply_err(req, EPERM);
		return;
	}
	if (to_set & (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID |
		      FUSE_SET_ATTR_GID)) {
		fuse_reply_err(req, EPERM);
		return;
	}
	if (kind_is_dir(k) && (to_set & FUSE_SET_ATTR_SIZE)) {
		fuse_reply_err(req, EISDIR);
		return;
	}
	d_getattr(req, ino, fi);
}

static void d_readlink(fuse_req_t req, fuse_ino_t ino)
{
	KIND_OR_ERR(req, ino, k);
	if (!k->ops->readlink) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	k->ops->readlink(req, ino);
}

static void d_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name,
		    mode_t mode)
{
	KIND_OR_ERR(req, parent, k);
	if (!k->ops->mkdir) {
		fuse_reply_err(req, missing(k, true));
		return;
	}
	k->ops->mkdir(req, parent, name, mode);
}

static void d_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	KIND_OR_ERR(req, parent, k);
	if (!k->ops->unlink) {
		fuse_reply_err(req, missing(k, true));
		return;
	}
	k->ops->unlink(req, parent, name);
}

static void d_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	KIND_OR_ERR(req, parent, k);
	if (!k->ops->rmdir) {
		fuse_reply_err(req, missing(k, true));
		return;
	}
	k->ops->rmdir(req, parent, name);
}

static void d_symlink(fuse_req_t req, const char *link, fuse_ino_t parent,
		      const char *name)
{
	KIND_OR_ERR(req, parent, k);
	if (!k->ops->symlink) {
		fuse_reply_err(req, missing(k, true));
		return;
	}
	k->ops->symlink(req, link, parent, name);
}

static void d_mknod(fuse_req_t req, fuse_ino_t parent, const char *name,
		    mode_t mode, dev_t rdev)
{
	KIND_OR_ERR(req, parent, k);
	if (!k->ops->mknod) {
		fuse_reply_err(req, missing(k, true));
		return;
	}
	k->ops->mknod(req, parent, name, mode, rdev);
}

static void d_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent,
		   const char *newname)
{
	KIND_OR_ERR(req, ino, k);
	const struct kind *k2 = kind_of(newparent);

	/* like rename: only within fs/ (the file kind checks the sandbox) */
	if (!k2 || k2->ops != k->ops) {
		fuse_reply_err(req, EXDEV);
		return;
	}
	if (!k->ops->link) {
		fuse_reply_err(req, missing(k, true));
		return;
	}
	k->ops->link(req, ino, newparent, newname);
}

static void d_rename(fuse_req_t req, fuse_ino_t parent, const char *name,
		     fuse_ino_t newparent, const char *newname,
		     unsigned int flags)
{
	KIND_OR_ERR(req, parent, k);
	const struct kind *k2 = kind_of(newparent);

	/* Only within one kind (fs/ to fs/); the file kind checks that both
	 * parents belong to the same sandbox. */
	if (!k2 || k2->ops != k->ops) {
		fuse_reply_err(req, EXDEV);
		return;
	}
	if (!k->ops->rename) {
		fuse_reply_err(req, missing(k, true));
		return;
	}
	k->ops->rename(req, parent, name, newparent, newname, flags);
}

static void d_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	KIND_OR_ERR(req, ino, k);
	if (!k->ops->open) {
		if (kind_is_dir(k)) {
			fuse_reply_err(req, EISDIR);
			return;
		}
		/* A synthetic file without its own open: read-only text. */
		if ((fi->flags & O_ACCMODE) != O_RDONLY) {
			fuse_reply_err(req, EACCES);
			return;
		}
		fi->direct_io = 1;
		fuse_reply_open(req, fi);
		return;
	}
	k->ops->open(req, ino, fi);
}

static void d_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		   struct fuse_file_info *fi)
{
	KIND_OR_ERR(req, ino, k);
	if (!k->ops->read) {
		fuse_reply_err(req, missing(k, false));
		return;
	}
	k->ops->read(req, ino, size, off, fi);
}

static void d_write(fuse_req_t req, fuse_ino_t ino, const char *buf,
		    size_t size, off_t off, struct fuse_file_info *fi)
{
	KIND_OR_ERR(req, ino, k);
	if (!k->ops->write) {
		fuse_reply_err(req, kind_is_dir(k) ? EISDIR : EBADF);
		return;
	}
	k->ops->write(req, ino, buf, size, off, fi);
}

static void d_flush(fuse_req_t req, fuse_ino_t ino,
		    struct fuse_file_info *fi)
{
	const struct kind *k = kind_of(ino);

	if (k && k->ops->flush)
		k->ops->flush(req, ino, fi);
	else
		fuse_reply_err(req, 0);
}

static void d_release(fuse_req_t req, fuse_ino_t ino,
		      struct fuse_file_info *fi)
{
	const struct kind *k = kind_of(ino);

	if (k && k->ops->release)
		k->ops->release(req, ino, fi);
	else
		fuse_reply_err(req, 0);
}

static void d_fsync(fuse_req_t req, fuse_ino_t ino, int datasync,
		    struct fuse_file_info *fi)
{
	const struct kind *k = kind_of(ino);

	if (k && k->ops->fsync)
		k->ops->fsync(req, ino, datasync, fi);
	else
		fuse_reply_err(req, 0);
}

static void d_opendir(fuse_req_t req, fuse_ino_t ino,
		      struct fuse_file_info *fi)
{
	KIND_OR_ERR(req, ino, k);
	if (k->ops->opendir) {
		k->ops->opendir(req, ino, fi);
		return;
	}
	if (!kind_is_dir(k) && fs_ino_kind(ino) != FS_K_FILE) {
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	fuse_reply_open(req, fi);
}

static void d_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		      struct fuse_file_info *fi)
{
	KIND_OR_ERR(req, ino, k);
	if (!k->ops->readdir) {
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	k->ops->readdir(req, ino, size, off, fi);
}

static void d_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size,
			  off_t off, struct fuse_file_info *fi)
{
	KIND_OR_ERR(req, ino, k);
	if (!k->ops->readdirplus) {
		/* The kernel does not fall back to READDIR: a kind that
		 * lists must answer both. */
		fuse_reply_err(req, k->ops->readdir ? ENOSYS : ENOTDIR);
		return;
	}
	k->ops->readdirplus(req, ino, size, off, fi);
}

static void d_releasedir(fuse_req_t req, fuse_ino_t ino,
			 struct fuse_file_info *fi)
{
	const struct kind *k = kind_of(ino);

	if (k && k->ops->releasedir)
		k->ops->releasedir(req, ino, fi);
	else
		fuse_reply_err(req, 0);
}

static void d_create(fuse_req_t req, fuse_ino_t parent, const char *name,
		     mode_t mode, struct fuse_file_info *fi)
{
	KIND_OR_ERR(req, parent, k);
	if (!k->ops->create) {
		fuse_reply_err(req, missing(k, true));
		return;
	}
	k->ops->create(req, parent, name, mode, fi);
}

static void d_poll(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi,
		   struct fuse_pollhandle *ph)
{
	const struct kind *k = kind_of(ino);

	if (k && k->ops->poll) {
		k->ops->poll(req, ino, fi, ph);
		return;
	}
	/* Default: always ready, like a regular file. */
	if (ph)
		fuse_pollhandle_destroy(ph);
	fuse_reply_poll(req, POLLIN | POLLOUT | POLLRDNORM | POLLWRNORM);
}

static void d_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct statvfs sv;

	(void)ino;
	memset(&sv, 0, sizeof sv);
	sv.f_bsize = sv.f_frsize = 4096;
	sv.f_namemax = 255;
	fuse_reply_statfs(req, &sv);
}

const struct fuse_lowlevel_ops fs_ops = {
	.init = d_init,
	.destroy = d_destroy,
	.lookup = d_lookup,
	.forget = d_forget,
	.forget_multi = d_forget_multi,
	.getattr = d_getattr,
	.setattr = d_setattr,
	.readlink = d_readlink,
	.mkdir = d_mkdir,
	.unlink = d_unlink,
	.rmdir = d_rmdir,
	.symlink = d_symlink,
	.mknod = d_mknod,
	.link = d_link,
	.rename = d_rename,
	.open = d_open,
	.read = d_read,
	.write = d_write,
	.flush = d_flush,
	.release = d_release,
	.fsync = d_fsync,
	.opendir = d_opendir,
	.readdir = d_readdir,
	.readdirplus = d_readdirplus,
	.releasedir = d_releasedir,
	.statfs = d_statfs,
	.create = d_create,
	.poll = d_poll,
};

/* ---- the status poller ---------------------------------------------------
 *
 * One thread, no reply duties: every poll interval (or at once after a
 * verb, fs_poll_kick) it makes ONE api_sb_list call for all sandboxes and
 * applies it to the table; it also sends the kernel invalidations other
 * threads queued (fs_notify_*), because a notification sent from inside a
 * request handler can deadlock on a lock the kernel holds for that very
 * request.
 *
 * A list that started before a create or a verb completed may not know
 * about it: sb->seq says which lists are too old to change that sandbox.
 */

struct fs_notify {
	fuse_ino_t ino;	   /* inval_inode when name is NULL */
	char *name;	   /* inval_entry(ino, name) */
	struct fs_notify *next;
};

static void notify_queue(struct fs *fs, fuse_ino_t ino, const char *name)
{
	struct fs_notify *n = calloc(1, sizeof *n);

	if (!n)
		return; /* only a cache hint: the timeouts still expire */
	n->ino = ino;
	if (name && !(n->name = strdup(name))) {
		free(n);
		return;
	}
	pthread_mutex_lock(&fs->lock);
	n->next = fs->notify;
	fs->notify = n;
	pthread_cond_signal(&fs->poll_cond);
	pthread_mutex_unlock(&fs->lock);
}

void fs_notify_inval_entry(struct fs *fs, fuse_ino_t parent,
			   const char *name)
{
	notify_queue(fs, parent, name);
}

void fs_notify_inval_inode(struct fs *fs, fuse_ino_t ino)
{
	notify_queue(fs, ino, NULL);
}

/* Called with fs->lock held; drops it while talking to the kernel. */
static void notify_drain(struct fs *fs)
{
	while (fs->notify) {
		struct fs_notify *n = fs->notify;
		struct fuse_session *se = fs->se;

		fs->notify = NULL;
		pthread_mutex_unlock(&fs->lock);
		while (n) {
			struct fs_notify *nx = n->next;

			if (se && n->name)
				fuse_lowlevel_notify_inval_entry(
					se, n->ino, n->name, strlen(n->name));
			else if (se)
				fuse_lowlevel_notify_inval_inode(se, n->ino, 0,
								 0);
			free(n->name);
			free(n);
			n = nx;
		}
		pthread_mutex_lock(&fs->lock);
	}
}

/* One list call; shared by the poller and the backend callback, freed by
 * whoever lets go last (the poller may give up waiting). */
struct list_call {
	pthread_mutex_t mu;
	pthread_cond_t cond;
	int refs;
	bool done;
	int err;
	char msg[256];
	struct api_sandbox *recs;
	char **infos;
	char **tags; /* copies of recs[i].tags */
	size_t n;
};

static void list_call_put(struct list_call *c)
{
	pthread_mutex_lock(&c->mu);
	int refs = --c->refs;
	pthread_mutex_unlock(&c->mu);
	if (refs)
		return;
	for (size_t i = 0; i < c->n; i++) {
		free(c->infos[i]);
		free(c->tags[i]);
	}
	free(c->infos);
	free(c->tags);
	free(c->recs);
	pthread_mutex_destroy(&c->mu);
	pthread_cond_destroy(&c->cond);
	free(c);
}

static void list_cb(void *ud, int err, const char *msg,
		    const struct api_sandbox *sbs, size_t n)
{
	struct list_call *c = ud;

	pthread_mutex_lock(&c->mu);
	c->err = err;
	if (err) {
		snprintf(c->msg, sizeof c->msg, "%s",
			 msg ? msg : api_strerror(err));
	} else if (n) {
		c->recs = calloc(n, sizeof *c->recs);
		c->infos = calloc(n, sizeof *c->infos);
		c->tags = calloc(n, sizeof *c->tags);
		if (!c->recs || !c->infos || !c->tags) {
			c->err = -ENOMEM;
			snprintf(c->msg, sizeof c->msg, "out of memory");
		} else {
			c->n = n;
			for (size_t i = 0; i < n; i++) {
				c->recs[i] = sbs[i];
				c->infos[i] = sbs[i].info_json ?
					strdup(sbs[i].info_json) : NULL;
				c->recs[i].info_json = c->infos[i];
				c->tags[i] = sbs[i].tags ?
					strdup(sbs[i].tags) : NULL;
				c->recs[i].tags = c->tags[i];
			}
		}
	}
	c->done = true;
	pthread_cond_signal(&c->cond);
	pthread_mutex_unlock(&c->mu);
	list_call_put(c);
}

static void timespec_after(struct timespec *ts, double sec)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += (time_t)sec;
	ts->tv_nsec += (long)((sec - (double)(time_t)sec) * 1e9);
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

/* Called without fs->lock. */
static int poll_once(struct fs *fs)
{
	struct list_call *c = calloc(1, sizeof *c);
	struct timespec dl;
	unsigned long seq;
	int err;

	if (!c)
		return -ENOMEM;
	pthread_mutex_init(&c->mu, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&c->cond, &ca);
	pthread_condattr_destroy(&ca);
	c->refs = 2;

	pthread_mutex_lock(&fs->lock);
	seq = ++fs->poll_seq;
	pthread_mutex_unlock(&fs->lock);

	api_sb_list(fs->be, list_cb, c);

	/* The backend bounds the call; the extra margin only guards this
	 * thread against a backend that breaks that promise. */
	timespec_after(&dl, fs->opts.timeout + 5.0);
	pthread_mutex_lock(&c->mu);
	while (!c->done)
		if (pthread_cond_timedwait(&c->cond, &c->mu, &dl) ==
		    ETIMEDOUT)
			break;
	bool done = c->done;
	err = done ? c->err : -ETIMEDOUT;
	pthread_mutex_unlock(&c->mu);

	/* a platform that stays away is said once, with back-off, not
	 * every poll */
	if (!done)
		api_log_once("poll", "status poll: no answer from the "
			     "platform");
	else if (err)
		api_log_once("poll", "status poll: %s", c->msg);
	else
		api_log_clear("poll", "status poll: the platform answers "
			      "again");
	if (done && !err)
		fs_sb_apply_list(fs, c->recs, c->n, seq);
	list_call_put(c);
	return err;
}

static void *poller_main(void *arg)
{
	struct fs *fs = arg;
	struct timespec next;

	timespec_after(&next, fs->opts.poll_interval);
	pthread_mutex_lock(&fs->lock);
	while (!fs->stopping) {
		notify_drain(fs);
		if (fs->stopping)
			break;
		struct timespec now;
		clock_gettime(CLOCK_MONOTONIC, &now);
		bool due = now.tv_sec > next.tv_sec ||
			   (now.tv_sec == next.tv_sec &&
			    now.tv_nsec >= next.tv_nsec);
		if (fs->poll_now || due) {
			fs->poll_now = false;
			pthread_mutex_unlock(&fs->lock);
			poll_once(fs);
			timespec_after(&next, fs->opts.poll_interval);
			pthread_mutex_lock(&fs->lock);
			continue;
		}
		if (!fs->notify)
			pthread_cond_timedwait(&fs->poll_cond, &fs->lock,
					       &next);
	}
	pthread_mutex_unlock(&fs->lock);
	return NULL;
}

void fs_poll_kick(struct fs *fs)
{
	pthread_mutex_lock(&fs->lock);
	fs->poll_now = true;
	pthread_cond_signal(&fs->poll_cond);
	pthread_mutex_unlock(&fs->lock);
}

/* ---- set-up and teardown ------------------------------------------------ */

int fs_init(struct fs *fs, struct api_backend *be, const struct fs_opts *o)
{
	pthread_condattr_t ca;
	int err;

	memset(fs, 0, sizeof *fs);
	fs->be = be;
	fs->opts = *o;
	if (fs->opts.poll_interval <= 0)
		fs->opts.poll_interval = 2.0;
	if (fs->opts.timeout <= 0)
		fs->opts.timeout = be && be->timeout > 0 ? be->timeout : 60.0;
	if (fs->opts.attr_timeout < 0)
		fs->opts.attr_timeout = 0;
	fs->uid = getuid();
	fs->gid = getgid();
	pthread_mutex_init(&fs->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&fs->poll_cond, &ca);
	pthread_condattr_destroy(&ca);
	err = fs_files_init(fs);
	if (err)
		return err;

	/* One synchronous list first, so the mount shows the sandboxes
	 * that survived a previous mount as soon as it is used. */
	poll_once(fs);

	err = -pthread_create(&fs->poll_thread, NULL, poller_main, fs);
	if (err) {
		fs_files_free(fs);
		return err;
	}
	return 0;
}

void fs_attach(struct fs *fs, struct fuse_session *se)
{
	pthread_mutex_lock(&fs->lock);
	fs->se = se;
	pthread_mutex_unlock(&fs->lock);
}

void fs_free(struct fs *fs)
{
	pthread_mutex_lock(&fs->lock);
	fs->stopping = true;
	fs->se = NULL;
	pthread_cond_signal(&fs->poll_cond);
	pthread_mutex_unlock(&fs->lock);
	pthread_join(fs->poll_thread, NULL);

	/* Unmounted: nobody else holds references now.  Jobs die with the
	 * mount (their readers are gone); sandboxes stay on the platform. */
	for (unsigned s = 0; s < FS_SB_MAX; s++) {
		struct fs_sb *sb = fs->sbs[s];

		if (!sb)
			continue;
		fs_jobs_free(fs, sb);
		fs_pollers_free(&sb->status_pollers);
		free(sb->info_json);
		free(sb);
		fs->sbs[s] = NULL;
	}
	while (fs->notify) {
		struct fs_notify *n = fs->notify;

		fs->notify = n->next;
		free(n->name);
		free(n);
	}
	fs_files_free(fs);
	pthread_cond_destroy(&fs->poll_cond);
	pthread_mutex_destroy(&fs->lock);
}
