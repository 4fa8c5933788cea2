/* files.c - local file operations, resolved inside the sandbox root only.
 *
 * Every path is looked up with openat2(RESOLVE_IN_ROOT) from a descriptor
 * of the sandbox's merged overlay root: "..", absolute symlinks and
 * symlinks full of ".." all stay inside, the way they do for processes
 * in the sandbox.  Operations on a final component that must not follow
 * it (unlink, rmdir, mkdir, rename, symlink) resolve the parent that way
 * and use the *at call on the last name only; operations on an object
 * (stat, readlink, chmod, chown, utimens, truncate) hold an O_PATH
 * descriptor of it and act through that, so nothing is resolved twice.
 * All of it is local disk work: callbacks run inline.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "api/local/local_core.h"

#define F_OVERLAY_MAGIC 0x794c7630
#define F_READ_MAX (16u << 20)	  /* one read call */
#define F_DIR_MAX (1u << 20)	  /* entries in one listing */

struct api_file {
	int fd;
	unsigned base; /* the sandbox's ID range, for fstat */
};

struct rootc;

struct fop {
	int rootfd;
	unsigned base; /* host ID of root inside (owner of "/"), 0: none */
	struct rootc *rc; /* the cached root, when rootfd is its */
	char msg[512];
};

/* Owners as the sandbox sees them: host IDs base..base+65535 are 0..65535
 * inside; anything else (never made by the sandbox) shows as nobody. */
static void f_unmap(const struct fop *op, struct stat *st)
{
	if (!op->base)
		return;
	st->st_uid = st->st_uid - op->base < LOCAL_ID_RANGE
			     ? st->st_uid - op->base
			     : 65534;
	st->st_gid = st->st_gid - op->base < LOCAL_ID_RANGE
			     ? st->st_gid - op->base
			     : 65534;
}

/* An object we just made from the host belongs to root inside. */
static void f_own(const struct fop *op, int dirfd, const char *name)
{
	if (op->base)
		fchownat(dirfd, name, op->base, op->base,
			 AT_SYMLINK_NOFOLLOW | (*name ? 0 : AT_EMPTY_PATH));
}

/* The kernel applied the caller's umask already; ours (sbxfs's own) must
 * not take more bits away, and a chown by f_own clears set-ID bits: give
 * what we made exactly the mode asked for (a directory keeps the set-GID
 * bit it inherits).  `name` is a single component, never followed. */
static void f_mode(int dirfd, const char *name, mode_t mode)
{
	char fp[64];
	struct stat st;
	int fd = *name ? openat(dirfd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC)
		       : dirfd;

	if (fd < 0)
		return;
	if (fstat(fd, &st) == 0 && !S_ISLNK(st.st_mode)) {
		mode &= 07777;
		if (S_ISDIR(st.st_mode))
			mode |= st.st_mode & S_ISGID;
		snprintf(fp, sizeof(fp), "/proc/self/fd/%d", fd);
		if ((st.st_mode & 07777) != mode)
			(void)chmod(fp, mode);
	}
	if (fd != dirfd)
		close(fd);
}

/* ---- root descriptors, cached per sandbox ------------------------------
 *
 * Every file operation starts from a descriptor of the sandbox's merged
 * root.  Opening it means a path walk through the data dir plus fstatfs
 * (is the overlay mounted?) and fstat (whose ID range?): most of the
 * system calls of a small request.  So one O_PATH descriptor per sandbox
 * is kept, with a reference count; sb_umount (destroy, a failed create)
 * drops it under the same lock, so a descriptor never outlives the
 * overlay it names for a new operation. */

struct rootc {
	char name[64];
	int fd;
	unsigned base;
	int refs;     /* operations using fd, plus 1 while cached */
	bool cached;
};

static pthread_mutex_t rootc_mu = PTHREAD_MUTEX_INITIALIZER;
static struct rootc *rootc_tab[LOCAL_ROOTC];
static const struct local *rootc_owner[LOCAL_ROOTC];

static void rootc_put_locked(struct rootc *r)
{
	if (--r->refs == 0) {
		close(r->fd);
		free(r);
	}
}

void local_files_forget(struct local *l, const char *name)
{
	pthread_mutex_lock(&rootc_mu);
	for (int i = 0; i < LOCAL_ROOTC; i++) {
		struct rootc *r = rootc_tab[i];
		if (r && rootc_owner[i] == l && (!name ||
						!strcmp(r->name, name))) {
			rootc_tab[i] = NULL;
			r->cached = false;
			rootc_put_locked(r);
		}
	}
	pthread_mutex_unlock(&rootc_mu);
}

static struct rootc *rootc_get(struct local *l, const char *id)
{
	struct rootc *r = NULL;

	pthread_mutex_lock(&rootc_mu);
	for (int i = 0; i < LOCAL_ROOTC; i++) {
		if (rootc_tab[i] && rootc_owner[i] == l &&
		    !strcmp(rootc_tab[i]->name, id)) {
			r = rootc_tab[i];
			r->refs++;
			break;
		}
	}
	pthread_mutex_unlock(&rootc_mu);
	return r;
}

/* Cache a fresh descriptor (taking it over); returns the entry with one
 * reference for the caller. */
static struct rootc *rootc_add(struct local *l, const char *id, int fd,
			       unsigned base)
{
	static unsigned next;
	struct rootc *r = calloc(1, sizeof(*r));
	int slot = -1;

	if (!r) {
		close(fd);
		return NULL;
	}
	snprintf(r->name, sizeof(r->name), "%s", id);
	r->fd = fd;
	r->base = base;
	r->refs = 1;
	pthread_mutex_lock(&rootc_mu);
	for (int i = 0; i < LOCAL_ROOTC && slot < 0; i++)
		if (!rootc_tab[i])
			slot = i;
	if (slot < 0) { /* full: replace one, round robin */
		slot = (int)(next++ % LOCAL_ROOTC);
		rootc_tab[slot]->cached = false;
		rootc_put_locked(rootc_tab[slot]);
	}
	rootc_tab[slot] = r;
	rootc_owner[slot] = l;
	r->cached = true;
	r->refs++;
	pthread_mutex_unlock(&rootc_mu);
	return r;
}

/* Root descriptor of sandbox `id`; mounts the overlay if it is missing
 * (after a reboot) so a write never lands in the bare mount point. */
static int f_root(struct api_backend *be, const char *id, struct fop *op)
{
	struct local *l = local_of(be);
	char path[PATH_MAX];
	struct statfs sf;
	int err;

	op->rootfd = -1;
	op->rc = rootc_get(l, id);
	if (op->rc) {
		op->rootfd = op->rc->fd;
		op->base = op->rc->base;
		return 0;
	}
	if (local_sb_root(l, id, path, sizeof(path))) {
		snprintf(op->msg, sizeof(op->msg), "no sandbox named '%.63s'",
			 id);
		return -ENOENT;
	}
	for (int attempt = 0; attempt < 2; attempt++) {
		int fd = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);
		if (fd < 0) {
			err = -errno;
			snprintf(op->msg, sizeof(op->msg), "sandbox '%.63s' "
				 "root: %s", id, strerror(errno));
			return err;
		}
		if (fstatfs(fd, &sf) == 0 && sf.f_type == F_OVERLAY_MAGIC) {
			struct stat st;
			/* "/" belongs to the sandbox's root (sandbox.c) */
			op->base = fstat(fd, &st) == 0 && st.st_uid >=
						   LOCAL_ID_FIRST
					   ? st.st_uid
					   : 0;
			/* not while a lifecycle operation may unmount it */
			if (!local_busy(l, id))
				op->rc = rootc_add(l, id, fd, op->base);
			op->rootfd = op->rc ? op->rc->fd : fd;
			return 0;
		}
		close(fd);
		if (attempt)
			break;
		err = local_sb_mount(l, id, op->msg, sizeof(op->msg));
		if (err)
			return err;
	}
	snprintf(op->msg, sizeof(op->msg), "root of sandbox '%.63s' is not "
		 "mounted", id);
	return -EIO;
}

static void f_done(struct fop *op)
{
	if (op->rc) {
		pthread_mutex_lock(&rootc_mu);
		rootc_put_locked(op->rc);
		pthread_mutex_unlock(&rootc_mu);
		op->rc = NULL;
	} else if (op->rootfd >= 0) {
		close(op->rootfd);
	}
	op->rootfd = -1;
}

static int f_openat2(int dirfd, const char *path, int flags, mode_t mode,
		     unsigned long long resolve)
{
	struct open_how how = {
		.flags = (unsigned long long)(flags | O_CLOEXEC),
		.mode = (flags & O_CREAT) ? mode : 0,
		.resolve = resolve | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV,
	};
	int fd;

	/* EAGAIN: a concurrent rename raced a ".." walk; just retry */
	for (int i = 0; i < 16; i++) {
		fd = (int)syscall(SYS_openat2, dirfd, path, &how, sizeof(how));
		if (fd >= 0)
			return fd;
		if (errno != EAGAIN)
			break;
	}
	return -errno;
}

/* Longest prefix of `p` (at most `max` bytes, ending before a slash) that
 * can be walked in one call; 0 when one name alone is too long. */
static size_t f_chunk(const char *p, size_t max)
{
	size_t cut = max;

	while (cut > 0 && p[cut] != '/')
		cut--;
	return cut;
}

/* Open `path` inside the sandbox root.  A path the kernel takes in one
 * call is resolved with RESOLVE_IN_ROOT from the root.  A longer one (a
 * tree deeper than PATH_MAX, which sandbox processes reach through
 * relative paths) is walked in pieces: the first piece in the root, each
 * next one RESOLVE_BENEATH the directory reached so far, which can only
 * be a directory of the same overlay, so nothing escapes either way; a
 * symlink in a later piece that points above that directory or to an
 * absolute target answers ENAMETOOLONG (it would need the whole path). */
static int f_resolve(int rootfd, const char *path, int flags, mode_t mode)
{
	const unsigned long long in_root = RESOLVE_IN_ROOT;
	size_t len, cut;
	int dfd, fd;

	if (!path || !*path)
		path = "/";
	len = strlen(path);
	if (len < PATH_MAX)
		return f_openat2(rootfd, path, flags, mode, in_root);
	char *buf = strdup(path);
	if (!buf)
		return -ENOMEM;
	cut = f_chunk(buf, PATH_MAX - 1);
	if (!cut) {
		free(buf);
		return -ENAMETOOLONG;
	}
	buf[cut] = '\0';
	dfd = f_openat2(rootfd, buf, O_PATH | O_DIRECTORY, 0, in_root);
	const char *rest = buf + cut + 1;
	while (dfd >= 0) {
		while (*rest == '/')
			rest++;
		if (strlen(rest) < PATH_MAX) {
			fd = f_openat2(dfd, *rest ? rest : ".", flags, mode,
				       RESOLVE_BENEATH);
			close(dfd);
			free(buf);
			return fd == -EXDEV ? -ENAMETOOLONG : fd;
		}
		cut = f_chunk(rest, PATH_MAX - 1);
		if (!cut) {
			close(dfd);
			free(buf);
			return -ENAMETOOLONG;
		}
		((char *)rest)[cut] = '\0';
		fd = f_openat2(dfd, rest, O_PATH | O_DIRECTORY, 0,
			       RESOLVE_BENEATH);
		close(dfd);
		dfd = fd == -EXDEV ? -ENAMETOOLONG : fd;
		rest += cut + 1;
	}
	free(buf);
	return dfd;
}

/* Split "/a/b/c/" into parent "/a/b" (malloc'd) and name "c". */
static int f_split(const char *path, char **parentp, char *name, size_t nlen)
{
	size_t n = path ? strlen(path) : 0;
	const char *slash;
	char *parent;

	*parentp = NULL;
	while (n > 0 && path[n - 1] == '/')
		n--;
	if (n == 0)
		return -EBUSY; /* the root itself */
	parent = malloc(n + 2);
	if (!parent)
		return -ENOMEM;
	memcpy(parent, path, n);
	parent[n] = '\0';
	slash = strrchr(parent, '/');
	const char *base = slash ? slash + 1 : parent;
	if (strlen(base) >= nlen || strlen(base) > NAME_MAX) {
		free(parent);
		return -ENAMETOOLONG;
	}
	memmove(name, base, strlen(base) + 1);
	if (!strcmp(name, ".") || !strcmp(name, "..")) {
		free(parent);
		return -EINVAL;
	}
	if (!slash)
		snprintf(parent, n + 2, "/");
	else if (slash == parent)
		parent[1] = '\0';
	else
		*(char *)slash = '\0';
	*parentp = parent;
	return 0;
}

/* Parent directory descriptor plus final name. */
static int f_parent(struct fop *op, const char *path, char *name,
		    size_t nlen)
{
	char *parent;
	int err = f_split(path, &parent, name, nlen);

	if (err)
		return err;
	err = f_resolve(op->rootfd, parent, O_PATH | O_DIRECTORY, 0);
	free(parent);
	return err;
}

static const char *f_msg(struct fop *op, const char *what, const char *path,
			 int err)
{
	if (!op->msg[0])
		snprintf(op->msg, sizeof(op->msg), "%s %.300s: %s", what,
			 path ? path : "", strerror(-err));
	return op->msg;
}

/* ---- stat / readdir ----------------------------------------------------- */

void local_file_stat(struct api_backend *be, const char *id,
		     const char *path, api_stat_fn cb, void *ud)
{
	struct fop op = {.msg = ""};
	struct stat st;
	int fd, err = f_root(be, id, &op);

	if (!err) {
		fd = f_resolve(op.rootfd, path, O_PATH | O_NOFOLLOW, 0);
		if (fd < 0) {
			err = fd;
		} else {
			if (fstat(fd, &st))
				err = -errno;
			else
				f_unmap(&op, &st);
			close(fd);
		}
	}
	f_done(&op);
	if (err)
		cb(ud, err, f_msg(&op, "stat", path, err), NULL);
	else
		cb(ud, 0, NULL, &st);
}

void local_file_readdir(struct api_backend *be, const char *id,
			const char *path, api_readdir_fn cb, void *ud)
{
	struct fop op = {.msg = ""};
	struct api_dirent *ents = NULL;
	size_t n = 0, cap = 0;
	struct dirent *de;
	DIR *d = NULL;
	int fd, err = f_root(be, id, &op);

	if (err)
		goto out;
	fd = f_resolve(op.rootfd, path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW,
		       0);
	if (fd < 0) {
		err = fd;
		goto out;
	}
	d = fdopendir(fd);
	if (!d) {
		err = -errno;
		close(fd);
		goto out;
	}
	errno = 0;
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (n == cap) {
			size_t nc = cap ? cap * 2 : 64;
			struct api_dirent *ne;
			if (nc > F_DIR_MAX) {
				err = -EFBIG;
				snprintf(op.msg, sizeof(op.msg), "directory "
					 "%.300s has more than %u entries",
					 path, F_DIR_MAX);
				goto out;
			}
			ne = realloc(ents, nc * sizeof(*ne));
			if (!ne) {
				err = -ENOMEM;
				goto out;
			}
			ents = ne;
			cap = nc;
		}
		struct api_dirent *e = &ents[n];
		/* a single name, not followed: cannot leave the root */
		if (fstatat(dirfd(d), de->d_name, &e->st,
			    AT_SYMLINK_NOFOLLOW))
			continue; /* vanished meanwhile */
		f_unmap(&op, &e->st);
		e->name = strdup(de->d_name);
		if (!e->name) {
			err = -ENOMEM;
			goto out;
		}
		n++;
	}
out:
	if (d)
		closedir(d);
	f_done(&op);
	if (err)
		cb(ud, err, f_msg(&op, "list", path, err), NULL, 0);
	else
		cb(ud, 0, NULL, ents, n);
	for (size_t i = 0; i < n; i++)
		free((char *)ents[i].name);
	free(ents);
}

/* ---- open files --------------------------------------------------------- */

void local_file_open(struct api_backend *be, const char *id,
		     const char *path, int flags, mode_t mode,
		     api_open_fn cb, void *ud)
{
	struct fop op = {.msg = ""};
	struct api_file *f = NULL;
	struct stat st;
	int fd = -1, err = f_root(be, id, &op);
	int allowed = O_ACCMODE | O_CREAT | O_EXCL | O_TRUNC | O_APPEND;

	if (err)
		goto out;
	/* O_NONBLOCK: a FIFO must not hang the caller; cleared below.
	 * A create is tried exclusive first, so we know whether we made
	 * the file (its owner and mode are then ours to set). */
	int oflags = (flags & allowed) | O_NOCTTY | O_NONBLOCK;
	bool created = false;
	/* (an exclusive create can only make a regular file: no FIFO to
	 * block on, no O_NONBLOCK to clear afterwards) */
	fd = f_resolve(op.rootfd, path,
		       (flags & O_CREAT) ? (oflags | O_EXCL) & ~O_NONBLOCK
					 : oflags,
		       mode & 07777);
	if (fd >= 0)
		created = (flags & O_CREAT) != 0;
	else if (fd == -EEXIST && !(flags & O_EXCL))
		fd = f_resolve(op.rootfd, path, oflags & ~O_CREAT, 0);
	if (fd == -ENOENT && (flags & O_CREAT) && !(flags & O_EXCL))
		/* a dangling symlink: O_CREAT makes its target */
		fd = f_resolve(op.rootfd, path, oflags, mode & 07777);
	if (fd < 0) {
		err = fd;
		fd = -1;
		goto out;
	}
	if (fstat(fd, &st)) {
		err = -errno;
		goto out;
	}
	/* made just now by us (the sandbox never owns host uid 0) */
	if (created) {
		f_own(&op, fd, "");
		if (S_ISREG(st.st_mode) &&
		    ((st.st_mode & 07777) != (mode & 07777) ||
		     (op.base && (mode & 06000))))
			(void)fchmod(fd, mode & 07777);
	} else if ((flags & O_CREAT) && op.base && st.st_uid == 0) {
		f_own(&op, fd, "");
	}
	if (S_ISDIR(st.st_mode)) {
		err = -EISDIR;
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		err = -EOPNOTSUPP;
		snprintf(op.msg, sizeof(op.msg), "open %.300s: only regular "
			 "files can be opened from outside the sandbox", path);
		goto out;
	}
	if (!created)
		fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
	f = malloc(sizeof(*f));
	if (!f) {
		err = -ENOMEM;
		goto out;
	}
	f->fd = fd;
	f->base = op.base;
	fd = -1;
out:
	if (fd >= 0)
		close(fd);
	f_done(&op);
	if (err)
		cb(ud, err, f_msg(&op, "open", path, err), NULL);
	else
		cb(ud, 0, NULL, f);
}

void local_file_read(struct api_backend *be, struct api_file *f, off_t off,
		     size_t size, api_data_fn cb, void *ud)
{
	char *buf;
	size_t got = 0;
	char msg[128];

	(void)be;
	if (size > F_READ_MAX)
		size = F_READ_MAX;
	buf = malloc(size ? size : 1);
	if (!buf) {
		cb(ud, -ENOMEM, api_strerror(ENOMEM), NULL, 0);
		return;
	}
	while (got < size) {
		ssize_t r = pread(f->fd, buf + got, size - got,
				  off + (off_t)got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			int e = errno;
			snprintf(msg, sizeof(msg), "read: %s", strerror(e));
			free(buf);
			cb(ud, -e, msg, NULL, 0);
			return;
		}
		if (r == 0)
			break;
		got += (size_t)r;
	}
	cb(ud, 0, NULL, buf, got);
	free(buf);
}

void local_file_write(struct api_backend *be, struct api_file *f, off_t off,
		      const void *buf, size_t len, api_size_fn cb, void *ud)
{
	size_t done = 0;
	char msg[128];

	(void)be;
	while (done < len) {
		/* with O_APPEND the kernel appends whatever the offset */
		ssize_t r = pwrite(f->fd, (const char *)buf + done, len - done,
				   off + (off_t)done);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			int e = errno;
			if (done)
				break; /* report the short write */
			snprintf(msg, sizeof(msg), "write: %s", strerror(e));
			cb(ud, -e, msg, 0);
			return;
		}
		done += (size_t)r;
	}
	cb(ud, 0, NULL, done);
}

/* Writes went straight to the file: nothing is staged.  No fsync either:
 * the sandbox's own files are not synced on every close, so neither are
 * ours (cp -r of a tree would crawl). */
void local_file_fstat(struct api_backend *be, struct api_file *f,
		      api_stat_fn cb, void *ud)
{
	struct fop op = {.base = f->base};
	struct stat st;

	(void)be;
	if (fstat(f->fd, &st)) {
		int err = -errno;
		cb(ud, err, f_msg(&op, "fstat", "", err), NULL);
		return;
	}
	f_unmap(&op, &st);
	cb(ud, 0, NULL, &st);
}

void local_file_ftruncate(struct api_backend *be, struct api_file *f,
			  off_t size, api_done_fn cb, void *ud)
{
	struct fop op = {.msg = ""};

	(void)be;
	if (ftruncate(f->fd, size)) {
		int err = -errno;
		cb(ud, err, f_msg(&op, "ftruncate", "", err));
		return;
	}
	cb(ud, 0, NULL);
}

void local_file_flush(struct api_backend *be, struct api_file *f,
		      api_done_fn cb, void *ud)
{
	(void)be;
	(void)f;
	cb(ud, 0, NULL);
}

void local_file_close(struct api_backend *be, struct api_file *f,
		      api_done_fn cb, void *ud)
{
	int err = 0;
	char msg[128];

	(void)be;
	if (close(f->fd))
		err = -errno;
	free(f);
	if (err) {
		snprintf(msg, sizeof(msg), "close: %s", strerror(-err));
		cb(ud, err, msg);
	} else {
		cb(ud, 0, NULL);
	}
}

/* ---- namespace changes -------------------------------------------------- */

enum f_nsop { F_MKDIR, F_UNLINK, F_RMDIR, F_SYMLINK, F_MKNOD };

static void f_nsop(struct api_backend *be, const char *id, const char *path,
		   enum f_nsop kind, mode_t mode, const char *target,
		   api_done_fn cb, void *ud)
{
	static const char *const what[] = {"mkdir", "unlink", "rmdir",
					   "symlink", "mknod"};
	struct fop op = {.msg = ""};
	char name[NAME_MAX + 1];
	int pfd, r = 0, err = f_root(be, id, &op);

	if (err)
		goto out;
	pfd = f_parent(&op, path, name, sizeof(name));
	if (pfd < 0) {
		err = pfd;
		goto out;
	}
	switch (kind) {
	case F_MKDIR:
		r = mkdirat(pfd, name, mode & 07777);
		break;
	case F_UNLINK:
		r = unlinkat(pfd, name, 0);
		break;
	case F_RMDIR:
		r = unlinkat(pfd, name, AT_REMOVEDIR);
		break;
	case F_SYMLINK:
		r = symlinkat(target, pfd, name);
		break;
	case F_MKNOD:
		/* FIFOs, sockets, regular files: never a device (api.c
		 * refuses those, and the overlay is nodev besides) */
		r = mknodat(pfd, name, mode & (S_IFMT | 07777), 0);
		break;
	}
	if (r)
		err = -errno;
	else if (kind == F_MKDIR || kind == F_SYMLINK || kind == F_MKNOD) {
		f_own(&op, pfd, name);
		if (kind != F_SYMLINK)
			f_mode(pfd, name, mode);
	}
	close(pfd);
out:
	f_done(&op);
	if (err)
		cb(ud, err, f_msg(&op, what[kind], path, err));
	else
		cb(ud, 0, NULL);
}

void local_file_mkdir(struct api_backend *be, const char *id,
		      const char *path, mode_t mode, api_done_fn cb,
		      void *ud)
{
	f_nsop(be, id, path, F_MKDIR, mode, NULL, cb, ud);
}

void local_file_unlink(struct api_backend *be, const char *id,
		       const char *path, api_done_fn cb, void *ud)
{
	f_nsop(be, id, path, F_UNLINK, 0, NULL, cb, ud);
}

void local_file_rmdir(struct api_backend *be, const char *id,
		      const char *path, api_done_fn cb, void *ud)
{
	f_nsop(be, id, path, F_RMDIR, 0, NULL, cb, ud);
}

void local_file_symlink(struct api_backend *be, const char *id,
			const char *target, const char *path,
			api_done_fn cb, void *ud)
{
	if (!target || !*target || strlen(target) >= PATH_MAX) {
		cb(ud, -EINVAL, "symlink: bad target");
		return;
	}
	/* stored verbatim: the target is only ever resolved inside */
	f_nsop(be, id, path, F_SYMLINK, 0, target, cb, ud);
}

void local_file_mknod(struct api_backend *be, const char *id,
		      const char *path, mode_t mode, api_done_fn cb, void *ud)
{
	if (!S_ISFIFO(mode) && !S_ISSOCK(mode) && !S_ISREG(mode)) {
		cb(ud, -EPERM, "mknod: no device nodes in a sandbox");
		return;
	}
	f_nsop(be, id, path, F_MKNOD, mode, NULL, cb, ud);
}

void local_file_link(struct api_backend *be, const char *id,
		     const char *from, const char *to, api_done_fn cb,
		     void *ud)
{
	struct fop op = {.msg = ""};
	char name[NAME_MAX + 1];
	int fd = -1, pfd = -1, err = f_root(be, id, &op);

	if (err)
		goto out;
	/* the object itself (a symlink is linked, not followed), then the
	 * new name's parent, both resolved inside the root */
	fd = f_resolve(op.rootfd, from, O_PATH | O_NOFOLLOW, 0);
	if (fd < 0) {
		err = fd;
		fd = -1;
		goto out;
	}
	pfd = f_parent(&op, to, name, sizeof(name));
	if (pfd < 0) {
		err = pfd;
		pfd = -1;
		goto out;
	}
	if (linkat(fd, "", pfd, name, AT_EMPTY_PATH))
		err = -errno;
out:
	if (fd >= 0)
		close(fd);
	if (pfd >= 0)
		close(pfd);
	f_done(&op);
	if (err)
		cb(ud, err, f_msg(&op, "link", to, err));
	else
		cb(ud, 0, NULL);
}

void local_file_rename(struct api_backend *be, const char *id,
		       const char *from, const char *to, unsigned flags,
		       api_done_fn cb, void *ud)
{
	struct fop op = {.msg = ""};
	char n1[NAME_MAX + 1], n2[NAME_MAX + 1];
	int p1 = -1, p2 = -1, err = f_root(be, id, &op);

	if (err)
		goto out;
	p1 = f_parent(&op, from, n1, sizeof(n1));
	if (p1 < 0) {
		err = p1;
		goto out;
	}
	p2 = f_parent(&op, to, n2, sizeof(n2));
	if (p2 < 0) {
		err = p2;
		goto out;
	}
	if (renameat2(p1, n1, p2, n2, flags))
		err = -errno;
out:
	if (p1 >= 0)
		close(p1);
	if (p2 >= 0)
		close(p2);
	f_done(&op);
	if (err)
		cb(ud, err, f_msg(&op, "rename", from, err));
	else
		cb(ud, 0, NULL);
}

void local_file_readlink(struct api_backend *be, const char *id,
			 const char *path, api_str_fn cb, void *ud)
{
	struct fop op = {.msg = ""};
	char buf[PATH_MAX + 1];
	ssize_t n = -1;
	int fd, err = f_root(be, id, &op);

	if (!err) {
		fd = f_resolve(op.rootfd, path, O_PATH | O_NOFOLLOW, 0);
		if (fd < 0) {
			err = fd;
		} else {
			n = readlinkat(fd, "", buf, sizeof(buf) - 1);
			if (n < 0)
				err = errno == ENOENT ? -EINVAL : -errno;
			else if ((size_t)n >= sizeof(buf) - 1)
				err = -ENAMETOOLONG;
			close(fd);
		}
	}
	f_done(&op);
	if (err) {
		cb(ud, err, f_msg(&op, "readlink", path, err), NULL);
		return;
	}
	buf[n] = '\0';
	cb(ud, 0, NULL, buf);
}

/* ---- attributes --------------------------------------------------------- */

/* "/proc/self/fd/N" names exactly the object behind fd: the kernel jumps
 * to it without resolving any path inside the sandbox again. */
static void f_fdpath(int fd, char *buf, size_t len)
{
	snprintf(buf, len, "/proc/self/fd/%d", fd);
}

void local_file_setattr(struct api_backend *be, const char *id,
			const char *path, const struct api_setattr *sa,
			api_done_fn cb, void *ud)
{
	struct fop op = {.msg = ""};
	char fp[64];
	struct stat st;
	int fd = -1, err = f_root(be, id, &op);

	if (err)
		goto out;
	fd = f_resolve(op.rootfd, path, O_PATH | O_NOFOLLOW, 0);
	if (fd < 0) {
		err = fd;
		fd = -1;
		goto out;
	}
	if (fstat(fd, &st)) {
		err = -errno;
		goto out;
	}
	f_fdpath(fd, fp, sizeof(fp));
	if (sa->mask & API_SET_SIZE) {
		if (S_ISDIR(st.st_mode)) {
			err = -EISDIR;
			goto out;
		}
		if (!S_ISREG(st.st_mode)) {
			err = -EINVAL;
			goto out;
		}
		int wfd = open(fp, O_WRONLY | O_CLOEXEC | O_NOCTTY);
		if (wfd < 0) {
			err = -errno;
			goto out;
		}
		if (ftruncate(wfd, sa->size))
			err = -errno;
		close(wfd);
		if (err)
			goto out;
	}
	if (sa->mask & (API_SET_UID | API_SET_GID)) {
		uid_t u = (sa->mask & API_SET_UID) ? sa->uid : (uid_t)-1;
		gid_t g = (sa->mask & API_SET_GID) ? sa->gid : (gid_t)-1;
		/* owners as the sandbox knows them: into its ID range */
		if (op.base && ((u != (uid_t)-1 && u >= LOCAL_ID_RANGE) ||
				(g != (gid_t)-1 && g >= LOCAL_ID_RANGE))) {
			err = -EINVAL;
			snprintf(op.msg, sizeof(op.msg), "chown %.300s: IDs "
				 "inside a sandbox are below %u", path,
				 LOCAL_ID_RANGE);
			goto out;
		}
		if (op.base && u != (uid_t)-1)
			u += op.base;
		if (op.base && g != (gid_t)-1)
			g += op.base;
		if (fchownat(fd, "", u, g, AT_EMPTY_PATH)) {
			err = -errno;
			goto out;
		}
	}
	if (sa->mask & API_SET_MODE) {
		if (S_ISLNK(st.st_mode)) {
			err = -EOPNOTSUPP; /* Linux links have no mode */
			goto out;
		}
		if (chmod(fp, sa->mode & 07777)) {
			err = -errno;
			goto out;
		}
	}
	if (sa->mask & (API_SET_ATIME | API_SET_MTIME)) {
		struct timespec ts[2] = {{0, UTIME_OMIT}, {0, UTIME_OMIT}};
		if (sa->mask & API_SET_ATIME)
			ts[0] = sa->atime;
		if (sa->mask & API_SET_MTIME)
			ts[1] = sa->mtime;
		if (utimensat(fd, "", ts, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW))
			err = -errno;
	}
out:
	if (fd >= 0)
		close(fd);
	f_done(&op);
	if (err)
		cb(ud, err, f_msg(&op, "setattr", path, err));
	else
		cb(ud, 0, NULL);
}
