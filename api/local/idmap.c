/* idmap.c - user namespaces of local sandboxes: every sandbox runs in its
 * own user namespace whose IDs 0..65535 are host IDs BASE..BASE+65535, an
 * unprivileged range of its own (recorded in meta.json, stable across
 * remounts).  Root inside is an ordinary user to the host's kernel: it
 * cannot write /proc/sys, load modules, or touch host files it does not
 * own.
 *
 * The root image is stored once, owned by uid 0, and never changed: each
 * sandbox's overlay uses it as lower layer through an idmapped mount
 * (mount_setattr(MOUNT_ATTR_IDMAP), Linux >= 5.12; overlayfs accepts
 * idmapped layers since 5.19) that shows its uid 0 as BASE, so inside the
 * sandbox the image belongs to root.  Files the sandbox writes land in the
 * writable layer owned by BASE+N on the host.  Templates are stored with
 * 0-based owners (shifted down at snapshot, up again when a sandbox is
 * seeded from one), so they can seed a sandbox of any range.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <linux/mount.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "api/local/local_core.h"

#ifndef MOUNT_ATTR_IDMAP
#define MOUNT_ATTR_IDMAP 0x00100000
#endif

static int write_map(pid_t pid, const char *file, unsigned base)
{
	char path[64], line[64];
	int fd, n, err = 0;

	snprintf(path, sizeof(path), "/proc/%d/%s", (int)pid, file);
	n = snprintf(line, sizeof(line), "0 %u %u\n", base, LOCAL_ID_RANGE);
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (write(fd, line, (size_t)n) != n)
		err = errno ? -errno : -EIO;
	close(fd);
	return err;
}

int local_userns_map(pid_t pid, unsigned base)
{
	int err = write_map(pid, "uid_map", base);

	return err ? err : write_map(pid, "gid_map", base);
}

/* A user namespace with the sandbox's mapping, held by a descriptor: a
 * child enters a new one and waits; we map it, open it, let it go.  The
 * child is reaped on the runtime (local_reap), never by the caller. */
int local_userns_fd(struct local *l, unsigned base)
{
	char path[64];
	int p[2], fd = -1, err;
	pid_t pid;

	if (pipe2(p, O_CLOEXEC))
		return -errno;
	pid = (pid_t)syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0UL, NULL,
			     NULL, 0UL);
	if (pid == 0) {
		char c;
		close(p[1]);
		/* returns at EOF: when the parent is done */
		while (read(p[0], &c, 1) < 0 && errno == EINTR)
			;
		_exit(0);
	}
	err = pid < 0 ? -errno : 0;
	close(p[0]);
	if (!err)
		err = local_userns_map(pid, base);
	if (!err) {
		snprintf(path, sizeof(path), "/proc/%d/ns/user", (int)pid);
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			err = -errno;
	}
	close(p[1]); /* EOF: the child exits */
	if (pid > 0)
		local_reap(l, pid);
	return err ? err : fd;
}

int local_idmap_mount(struct local *l, const char *src, const char *dst,
		      unsigned base, char *msg, size_t msglen)
{
	struct mount_attr attr = {
		.attr_set = MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY |
			    MOUNT_ATTR_NODEV | MOUNT_ATTR_NOSUID,
	};
	int ns, t, err = 0;

	ns = local_userns_fd(l, base);
	if (ns < 0) {
		snprintf(msg, msglen, "cannot make a user namespace: %s",
			 strerror(-ns));
		return ns;
	}
	attr.userns_fd = (unsigned long long)ns;
	t = (int)syscall(SYS_open_tree, AT_FDCWD, src,
			 OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
	if (t < 0) {
		err = -errno;
		snprintf(msg, msglen, "cannot open the image %.200s: %s", src,
			 strerror(errno));
		goto out;
	}
	if (syscall(SYS_mount_setattr, t, "", AT_EMPTY_PATH, &attr,
		    sizeof(attr))) {
		err = -errno;
		snprintf(msg, msglen, "cannot idmap the image %.200s (needs "
			 "Linux >= 5.12 and a filesystem that supports "
			 "idmapped mounts): %s", src, strerror(errno));
		goto out;
	}
	if (syscall(SYS_move_mount, t, "", AT_FDCWD, dst,
		    MOVE_MOUNT_F_EMPTY_PATH)) {
		err = -errno;
		snprintf(msg, msglen, "cannot attach the image at %.200s: %s",
			 dst, strerror(errno));
	}
out:
	if (t >= 0)
		close(t);
	close(ns);
	return err;
}

/* ---- shifting owners of a tree ------------------------------------------ */

static unsigned shift_from, shift_to;
static int shift_err;
static pthread_mutex_t shift_mu = PTHREAD_MUTEX_INITIALIZER;

static unsigned shift_one(unsigned id)
{
	if (id >= shift_from && id - shift_from < LOCAL_ID_RANGE)
		return id - shift_from + shift_to;
	return id;
}

static int shift_cb(const char *path, const struct stat *st, int type,
		    struct FTW *ftw)
{
	uid_t u = shift_one(st->st_uid);
	gid_t g = shift_one(st->st_gid);

	(void)type;
	(void)ftw;
	if (u == st->st_uid && g == st->st_gid)
		return 0;
	if (lchown(path, u, g)) {
		shift_err = -errno;
		return 0;
	}
	/* chown clears set-id bits of regular files: put them back */
	if (S_ISREG(st->st_mode) && (st->st_mode & (S_ISUID | S_ISGID)))
		chmod(path, st->st_mode & 07777);
	return 0;
}

int local_id_shift(const char *dir, unsigned from, unsigned to)
{
	int err;

	if (from == to)
		return 0;
	/* nftw has no user pointer: one shift at a time */
	pthread_mutex_lock(&shift_mu);
	shift_from = from;
	shift_to = to;
	shift_err = 0;
	if (nftw(dir, shift_cb, 64, FTW_PHYS | FTW_MOUNT))
		shift_err = errno ? -errno : -EIO;
	err = shift_err;
	pthread_mutex_unlock(&shift_mu);
	return err;
}
