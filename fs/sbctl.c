/* sbctl.c - NAME/ctl: lifecycle verbs, one per line, parsed against a
 * command table (Plan 9's parsecmd/lookupcmd).  A write is answered when
 * the platform reached the target state, so scripts need no polling. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fs/fs_int.h"

#define SBCTL_WRITE_MAX 4096u
#define SBCTL_LINES_MAX 16

static const struct fs_cmdtab sbctl_tab[] = {
	{ API_VERB_START, "start", 0, 0 },
	{ API_VERB_STOP, "stop", 0, 1 },
	{ API_VERB_PAUSE, "pause", 0, 0 },
	{ API_VERB_RESUME, "resume", 0, 0 },
	{ API_VERB_PING, "ping", 0, 0 },
	{ API_VERB_SNAPSHOT, "snapshot", 1, 1 },
	{ API_VERB_DESTROY, "destroy", 0, 0 },
};
#define SBCTL_N (sizeof sbctl_tab / sizeof sbctl_tab[0])

struct sjob {
	fuse_req_t req;
	struct fs *fs;
	struct fs_sb *sb; /* reference */
	size_t wsize;
	char *buf;
	struct {
		const struct fs_cmdtab *t;
		const char *arg;
	} cmds[SBCTL_LINES_MAX];
	int ncmd, next;
	int err; /* of the verb that failed, for the refresh */
};

static void sjob_done(struct sjob *j, int err)
{
	struct fs *fs = j->fs;

	pthread_mutex_lock(&fs->lock);
	j->sb->busy--;
	pthread_mutex_unlock(&fs->lock);
	if (err)
		fuse_reply_err(j->req, -err);
	else
		fuse_reply_write(j->req, j->wsize);
	fs_sb_put(fs, j->sb);
	free(j->buf);
	free(j);
}

/* After the verbs: read the sandbox's state now, so a `head -1 status`
 * right after the write shows it, then answer the write. */
static void refresh_cb(void *ud, int err, const char *msg,
		       const struct api_sandbox *r)
{
	struct sjob *j = ud;

	(void)msg;
	if (!err && r)
		fs_sb_update(j->fs, j->sb, r);
	fs_poll_kick(j->fs);
	sjob_done(j, j->err);
}

static void sjob_run(struct sjob *j);

static void verb_cb(void *ud, int err, const char *msg)
{
	struct sjob *j = ud;
	struct fs *fs = j->fs;
	const struct fs_cmdtab *t = j->cmds[j->next].t;

	if (err) {
		fs_sb_set_err(fs, j->sb, "ctl: %s: %s", t->verb,
			      msg ? msg : api_strerror(err));
		j->err = err;
		j->next = j->ncmd; /* stop here; refresh, then fail */
	} else if (t->index == API_VERB_DESTROY) {
		fs_notify_inval_entry(fs, FUSE_ROOT_ID, j->sb->id);
		if (j->sb->name[0])
			fs_notify_inval_entry(fs, FUSE_ROOT_ID, j->sb->name);
		fs_sb_gone(fs, j->sb);
		fs_poll_kick(fs);
		sjob_done(j, 0);
		return;
	} else {
		j->next++;
	}
	sjob_run(j);
}

static void sjob_run(struct sjob *j)
{
	struct fs *fs = j->fs;

	if (j->next >= j->ncmd) {
		api_sb_get(fs->be, j->sb->id, refresh_cb, j);
		return;
	}
	const struct fs_cmdtab *t = j->cmds[j->next].t;
	api_sb_verb(fs->be, j->sb->id, (enum api_verb)t->index,
		    j->cmds[j->next].arg, verb_cb, j);
}

static void sbctl_open(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct fs_sb *sb = fs_sb_req(req, ino);

	if (!sb)
		return;
	fs_sb_put(fs, sb);
	/* O_TRUNC (shell `>`) is accepted: there is nothing to truncate. */
	fi->direct_io = 1;
	fi->nonseekable = 1;
	fuse_reply_open(req, fi);
}

static void sbctl_read(fuse_req_t req, fuse_ino_t ino, size_t size,
		       off_t off, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	char text[256];
	size_t len = 0;

	(void)ino;
	(void)fi;
	for (size_t i = 0; i < SBCTL_N; i++) {
		if (!api_has(fs->be, API_CAP_VERB(sbctl_tab[i].index)))
			continue;
		len += (size_t)snprintf(text + len, sizeof text - len, "%s\n",
					sbctl_tab[i].verb);
	}
	fs_reply_text(req, text, len, size, off);
}

static void sbctl_write(fuse_req_t req, fuse_ino_t ino, const char *buf,
			size_t size, off_t off, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	char *line, *save = NULL;
	struct sjob *j;
	int err = 0;
	struct fs_sb *sb = fs_sb_req(req, ino);

	(void)off;
	(void)fi;
	if (!sb)
		return;
	if (size > SBCTL_WRITE_MAX) {
		fs_sb_set_err(fs, sb, "ctl: write of %zu bytes is too long",
			      size);
		fs_sb_put(fs, sb);
		fuse_reply_err(req, EFBIG);
		return;
	}
	/* A NUL would cut the text short ("pause\0resume" paused and
	 * dropped resume): refuse the whole write, run nothing. */
	{
		char msg[128];

		err = fs_ctl_check(buf, size, msg, sizeof msg);
		if (err) {
			fs_sb_set_err(fs, sb, "ctl: %s", msg);
			fs_sb_put(fs, sb);
			fuse_reply_err(req, -err);
			return;
		}
	}
	j = calloc(1, sizeof *j);
	if (j)
		j->buf = strndup(buf, size);
	if (!j || !j->buf) {
		free(j);
		fs_sb_put(fs, sb);
		fuse_reply_err(req, ENOMEM);
		return;
	}
	j->req = req;
	j->fs = fs;
	j->sb = sb;
	j->wsize = size;

	/* Check every line before running any. */
	for (line = strtok_r(j->buf, "\n", &save); line && !err;
	     line = strtok_r(NULL, "\n", &save)) {
		struct fs_cmd c;
		char msg[256];
		const struct fs_cmdtab *t;

		if (fs_cmd_parse(line, &c)) {
			fs_sb_set_err(fs, sb, "ctl: too many words in a line");
			err = -EINVAL;
			break;
		}
		if (c.nf == 0)
			continue;
		t = fs_cmd_lookup(&c, sbctl_tab, SBCTL_N, msg, sizeof msg);
		if (!t) {
			fs_sb_set_err(fs, sb, "ctl: %s", msg);
			err = -EINVAL;
			break;
		}
		if (!api_has(fs->be, API_CAP_VERB(t->index))) {
			fs_sb_set_err(fs, sb, "ctl: %s: the %s platform has "
				      "no such operation", t->verb,
				      fs->be->ops->name);
			err = -EOPNOTSUPP;
			break;
		}
		if (j->ncmd == SBCTL_LINES_MAX) {
			fs_sb_set_err(fs, sb, "ctl: more than %d verbs in one "
				      "write", SBCTL_LINES_MAX);
			err = -EINVAL;
			break;
		}
		j->cmds[j->ncmd].t = t;
		j->cmds[j->ncmd].arg = c.nf > 1 ? c.f[1] : "";
		j->ncmd++;
	}
	if (err) {
		free(j->buf);
		free(j);
		fs_sb_put(fs, sb);
		fuse_reply_err(req, -err);
		return;
	}
	if (j->ncmd == 0) { /* blank write: nothing to do */
		free(j->buf);
		free(j);
		fs_sb_put(fs, sb);
		fuse_reply_write(req, size);
		return;
	}
	pthread_mutex_lock(&fs->lock);
	sb->busy++;
	pthread_mutex_unlock(&fs->lock);
	sjob_run(j);
}

const struct fuse_lowlevel_ops fs_sb_ctl_ops = {
	.open = sbctl_open,
	.read = sbctl_read,
	.write = sbctl_write,
};
