/* ports.c - NAME/ports/: reading NAME/ports/PORT gives the URL a client on
 * this machine uses to reach TCP port PORT in the sandbox (api_sb_port:
 * the platform's proxy URL, or locally 127.0.0.1 and a forwarder), asked
 * at each open and served from that copy with direct I/O.  Any PORT from
 * 1 to 65535 can be looked up; `ls NAME/ports/` lists the ports the
 * platform knows of (listening ones locally, exposed ones elsewhere).  A
 * name that is not a port is EINVAL with a sentence in NAME/err.  Present
 * only where the backend has API_CAP_PORTS. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fs/fs_int.h"

static fuse_ino_t port_ino(const struct fs_sb *sb, unsigned port)
{
	return fs_ino_make(FS_K_PORT, sb->slot, sb->gen, port >> 12,
			   port & 4095);
}

static unsigned ino_port(fuse_ino_t ino)
{
	return (fs_ino_job_slot(ino) << 12) | fs_ino_job_gen(ino);
}

/* "1".."65535", digits only, no leading zero; 0 if not a port. */
static unsigned parse_port(const char *s)
{
	unsigned v = 0;

	if (!s[0] || s[0] == '0' || strlen(s) > 5)
		return 0;
	for (const char *p = s; *p; p++) {
		if (*p < '0' || *p > '9')
			return 0;
		v = v * 10 + (unsigned)(*p - '0');
	}
	return v <= 65535 ? v : 0;
}

/* ---- NAME/ports/ -------------------------------------------------------- */

static void ports_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fs *fs = fs_of(req);
	struct fuse_entry_param e;
	int err;
	struct fs_sb *sb = fs_sb_get_ino(fs, parent, &err);
	unsigned port;

	if (!sb) {
		fuse_reply_err(req, -err);
		return;
	}
	port = parse_port(name);
	if (!port) {
		fs_sb_set_err(fs, sb, "ports/%.64s: a port is a number from 1 "
			      "to 65535", name);
		fs_sb_put(fs, sb);
		fuse_reply_err(req, EINVAL);
		return;
	}
	memset(&e, 0, sizeof e);
	e.ino = port_ino(sb, port);
	fs_sb_put(fs, sb);
	fs_stat_node(fs, e.ino, &e.attr);
	e.attr_timeout = e.entry_timeout = 1.0;
	fuse_reply_entry(req, &e);
}

struct plist {
	fuse_req_t req;
	struct fuse_file_info fi;
	struct fs *fs;
	fuse_ino_t ino;
	unsigned slot, gen;
};

static void got_ports(void *ud, int err, const char *msg, const char *s)
{
	struct plist *p = ud;
	struct fs *fs = p->fs;
	struct fs_dir *d = NULL;
	struct stat st;
	struct fs_sb *sb;
	int e2;

	sb = fs_sb_get_slot(fs, p->slot, p->gen, &e2);
	if (!sb) {
		fuse_reply_err(p->req, -e2);
		free(p);
		return;
	}
	if (err) {
		fs_sb_set_err(fs, sb, "ports: %s", msg ? msg :
			      api_strerror(err));
		goto out;
	}
	d = calloc(1, sizeof *d);
	if (!d) {
		err = -ENOMEM;
		goto out;
	}
	fs_stat_synthetic(fs, p->ino, S_IFDIR | 0755, &st);
	err = fs_dir_add(d, ".", &st);
	fs_stat_synthetic(fs, fs_ino_make(FS_K_SB_DIR, sb->slot, sb->gen, 0,
					  0), S_IFDIR | 0755, &st);
	if (!err)
		err = fs_dir_add(d, "..", &st);
	for (const char *l = s; l && *l && !err;) {
		const char *nl = strchr(l, '\n');
		size_t n = nl ? (size_t)(nl - l) : strlen(l);
		char word[8];
		unsigned port;

		if (n < sizeof word) {
			memcpy(word, l, n);
			word[n] = '\0';
			port = parse_port(word);
			if (port) {
				fs_stat_node(fs, port_ino(sb, port), &st);
				err = fs_dir_add(d, word, &st);
			}
		}
		l = nl ? nl + 1 : NULL;
	}
out:
	fs_sb_put(fs, sb);
	if (d)
		fs_dir_open_reply(p->req, &p->fi, d, err); /* frees d on error */
	else
		fuse_reply_err(p->req, -err);
	free(p);
}

static void ports_opendir(fuse_req_t req, fuse_ino_t ino,
			  struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	char id[API_ID_MAX];
	struct plist *p;
	int err;
	struct fs_sb *sb = fs_sb_get_ino(fs, ino, &err);

	if (!sb) {
		fuse_reply_err(req, -err);
		return;
	}
	p = calloc(1, sizeof *p);
	if (!p) {
		fs_sb_put(fs, sb);
		fuse_reply_err(req, ENOMEM);
		return;
	}
	p->req = req;
	p->fi = *fi;
	p->fs = fs;
	p->ino = ino;
	p->slot = sb->slot;
	p->gen = sb->gen;
	snprintf(id, sizeof id, "%s", sb->id);
	fs_sb_put(fs, sb);
	api_sb_ports(fs->be, id, got_ports, p);
}

const struct fuse_lowlevel_ops fs_ports_dir_ops = {
	.lookup = ports_lookup,
	.opendir = ports_opendir,
	.readdir = fs_dir_readdir,
	.readdirplus = fs_dir_readdirplus,
	.releasedir = fs_dir_releasedir,
};

/* ---- NAME/ports/PORT ---------------------------------------------------- */

struct ptext {
	fuse_req_t req;
	struct fuse_file_info fi;
	struct fs *fs;
	unsigned slot, gen, port;
	size_t len;
	char text[];
};

static void got_url(void *ud, int err, const char *msg, const char *s)
{
	struct ptext *t = ud, *t2;
	struct fs *fs = t->fs;

	if (err) {
		int e2;
		struct fs_sb *sb = fs_sb_get_slot(fs, t->slot, t->gen, &e2);

		if (sb) {
			fs_sb_set_err(fs, sb, "ports/%u: %s", t->port,
				      msg ? msg : api_strerror(err));
			fs_sb_put(fs, sb);
		}
		fuse_reply_err(t->req, -err);
		free(t);
		return;
	}
	t->len = strlen(s);
	t2 = realloc(t, sizeof *t + t->len + 2);
	if (!t2) {
		fuse_reply_err(t->req, ENOMEM);
		free(t);
		return;
	}
	t = t2;
	memcpy(t->text, s, t->len);
	t->text[t->len++] = '\n';
	t->fi.fh = (uint64_t)(uintptr_t)t;
	t->fi.direct_io = 1;
	if (fuse_reply_open(t->req, &t->fi) != 0) /* no RELEASE comes */
		free(t);
}

static void port_open(fuse_req_t req, fuse_ino_t ino,
		      struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct ptext *t;
	char id[API_ID_MAX];
	int err;
	struct fs_sb *sb = fs_sb_get_ino(fs, ino, &err);

	if (!sb) {
		fuse_reply_err(req, -err);
		return;
	}
	if ((fi->flags & O_ACCMODE) != O_RDONLY) {
		fs_sb_put(fs, sb);
		fuse_reply_err(req, EACCES);
		return;
	}
	t = calloc(1, sizeof *t);
	if (!t) {
		fs_sb_put(fs, sb);
		fuse_reply_err(req, ENOMEM);
		return;
	}
	t->req = req;
	t->fi = *fi;
	t->fs = fs;
	t->slot = sb->slot;
	t->gen = sb->gen;
	t->port = ino_port(ino);
	snprintf(id, sizeof id, "%s", sb->id);
	fs_sb_put(fs, sb);
	api_sb_port(fs->be, id, t->port, got_url, t);
}

static void port_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		      struct fuse_file_info *fi)
{
	struct ptext *t = (struct ptext *)(uintptr_t)fi->fh;

	(void)ino;
	fs_reply_text(req, t->text, t->len, size, off);
}

static void port_release(fuse_req_t req, fuse_ino_t ino,
			 struct fuse_file_info *fi)
{
	(void)ino;
	free((void *)(uintptr_t)fi->fh);
	fuse_reply_err(req, 0);
}

static void port_getattr(fuse_req_t req, fuse_ino_t ino,
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
	fs_stat_node(fs, ino, &st); /* size 0: made at open, direct I/O */
	fuse_reply_attr(req, &st, 0);
}

const struct fuse_lowlevel_ops fs_port_ops = {
	.getattr = port_getattr,
	.open = port_open,
	.read = port_read,
	.release = port_release,
};
