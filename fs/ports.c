/* ports.c - NAME/ports/: reading NAME/ports/PORT gives the URL a client on
 * this machine uses to reach TCP port PORT in the sandbox (api_sb_port:
 * the platform's proxy URL, or locally 127.0.0.1 and a forwarder), asked
 * at each open and served from that copy with direct I/O.  Any PORT from
 * 1 to 65535 can be looked up; `ls NAME/ports/` lists the ports the
 * platform knows of (listening ones locally, exposed ones elsewhere).  A
 * name that is not a port is EINVAL with a sentence in NAME/err.  Present
 * only where the backend has API_CAP_PORTS. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fs/gen.h"

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
	fuse_ino_t ino;
	struct fs_sb *sb = fs_sb_req(req, parent);
	unsigned port;

	if (!sb)
		return;
	port = parse_port(name);
	if (!port) {
		fs_sb_set_err(fs, sb, "ports/%.64s: a port is a number from 1 "
			      "to 65535", name);
		fs_sb_put(fs, sb);
		fuse_reply_err(req, EINVAL);
		return;
	}
	ino = port_ino(sb, port);
	fs_sb_put(fs, sb);
	fs_gen_entry(req, fs, ino, 0);
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
	d = fs_gen_dir(fs, p->ino, fs_ino_make(FS_K_SB_DIR, sb->slot, sb->gen,
					     0, 0), &err);
	if (!d) {
		err = -ENOMEM;
		goto out;
	}
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
	struct fs_sb *sb = fs_sb_req(req, ino);

	if (!sb)
		return;
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

struct popen {
	fuse_req_t req;
	struct fuse_file_info fi;
	struct fs *fs;
	unsigned slot, gen, port;
};

static void got_url(void *ud, int err, const char *msg, const char *s)
{
	struct popen *t = ud;
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
	} else {
		fs_gen_open(t->req, &t->fi, s, strlen(s), "\n");
	}
	free(t);
}

static void port_open(fuse_req_t req, fuse_ino_t ino,
		      struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct popen *t;
	char id[API_ID_MAX];
	struct fs_sb *sb = fs_sb_req(req, ino);

	if (!sb)
		return;
	if (!fs_gen_rdonly(req, fi)) {
		fs_sb_put(fs, sb);
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

const struct fuse_lowlevel_ops fs_port_ops = {
	.getattr = fs_gen_sb_getattr,
	.open = port_open,
	.read = fs_gen_read,
	.release = fs_gen_release,
};
