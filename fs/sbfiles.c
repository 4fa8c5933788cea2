/* sbfiles.c - NAME/status, NAME/info, NAME/err: small text files made at
 * open (so one `cat` sees one consistent text), direct I/O so the page
 * cache never serves stale state.  poll() on status wakes on a change. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "fs/gen.h"
#include "fs/fs_int.h"

/* Per open: the text as it was at open (or at the last read from offset 0
 * after the first), and the state it showed. */
struct snap {
	uint64_t id;	/* fi->fh */
	int refs;	/* the open's + each read in progress */
	enum api_state state;
	bool read_once;
	size_t len;
	char *text;
	struct snap *next;
};

/* Open handles by id.  fi->fh is an id, not a pointer: a read answered on
 * one thread while another runs the RELEASE of the same handle (seen under
 * ASan with interrupted readers) must find nothing rather than freed
 * memory.  Few handles are open at once, so a list will do. */
static pthread_mutex_t snaps_mu = PTHREAD_MUTEX_INITIALIZER;
static struct snap *snaps;
static uint64_t snaps_next = 1;

static void snap_unref_locked(struct snap *s)
{
	if (--s->refs)
		return;
	free(s->text);
	free(s);
}

/* A counted reference to the handle `fh`, or NULL when released. */
static struct snap *snap_get(uint64_t fh)
{
	struct snap *s;

	pthread_mutex_lock(&snaps_mu);
	for (s = snaps; s && s->id != fh; s = s->next)
		;
	if (s)
		s->refs++;
	pthread_mutex_unlock(&snaps_mu);
	return s;
}

static void snap_put(struct snap *s)
{
	pthread_mutex_lock(&snaps_mu);
	snap_unref_locked(s);
	pthread_mutex_unlock(&snaps_mu);
}

/* "limits" of a platform record (local: cpus, memory, pids) as status
 * lines: "cpus: 0.5" ("max" when unlimited), "memory: 512M", "pids: 64". */
static void render_limits(FILE *f, const char *info)
{
	cJSON *o = info && strstr(info, "\"limits\"") ? cJSON_Parse(info)
							: NULL;
	const cJSON *lim = cJSON_GetObjectItemCaseSensitive(o, "limits");
	const cJSON *v;

	v = cJSON_GetObjectItemCaseSensitive(lim, "cpus");
	if (cJSON_IsNumber(v)) {
		if (v->valuedouble > 0)
			fprintf(f, "cpus: %g\n", v->valuedouble);
		else
			fprintf(f, "cpus: max\n");
	}
	v = cJSON_GetObjectItemCaseSensitive(lim, "memory");
	if (cJSON_IsNumber(v) && v->valuedouble > 0) {
		double b = v->valuedouble;
		if (b >= 1073741824.0 && b == (double)((long long)b >> 30 << 30))
			fprintf(f, "memory: %lldG\n", (long long)b >> 30);
		else if (b >= 1048576.0)
			fprintf(f, "memory: %lldM\n", (long long)b >> 20);
		else
			fprintf(f, "memory: %.0f\n", b);
	}
	v = cJSON_GetObjectItemCaseSensitive(lim, "pids");
	if (cJSON_IsNumber(v) && v->valuedouble > 0)
		fprintf(f, "pids: %.0f\n", v->valuedouble);
	cJSON_Delete(o);
}

/* Build the text of a file of kind k; fs->lock held. */
static char *render(struct fs_sb *sb, enum fs_kind k, size_t *len)
{
	char *text = NULL;
	size_t cap = 0;
	FILE *f = open_memstream(&text, &cap);

	if (!f)
		return NULL;
	switch (k) {
	case FS_K_SB_STATUS: {
		char when[64] = "";

		if (sb->created) {
			struct tm tm;

			gmtime_r(&sb->created, &tm);
			strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
		}
		fprintf(f, "%s\nid: %s\nname: %s\n", api_state_name(sb->state),
			sb->id, sb->name[0] ? sb->name : sb->id);
		if (sb->template[0])
			fprintf(f, "template: %s\n", sb->template);
		if (sb->created)
			fprintf(f, "created: %s\n", when);
		render_limits(f, sb->info_json);
		if (sb->err[0])
			fprintf(f, "error: %s\n", sb->err);
		break;
	}
	case FS_K_SB_INFO:
		if (sb->info_json) {
			size_t n = strlen(sb->info_json);

			fputs(sb->info_json, f);
			if (n && sb->info_json[n - 1] != '\n')
				fputc('\n', f);
		} else {
			fprintf(f, "{\"id\":\"%s\",\"state\":\"%s\"}\n", sb->id,
				api_state_name(sb->state));
		}
		break;
	case FS_K_SB_ERR:
		if (sb->err[0])
			fprintf(f, "%s\n", sb->err);
		break;
	default:
		break;
	}
	if (fclose(f) != 0) {
		free(text);
		return NULL;
	}
	*len = cap;
	return text;
}

static int snap_fill(struct fs *fs, fuse_ino_t ino, struct snap *s)
{
	int err;
	struct fs_sb *sb = fs_sb_get_ino(fs, ino, &err);

	if (!sb)
		return err;
	pthread_mutex_lock(&fs->lock);
	size_t len = 0;
	char *t = render(sb, fs_ino_kind(ino), &len);
	enum api_state st = sb->state;
	pthread_mutex_unlock(&fs->lock);
	fs_sb_put(fs, sb);
	if (!t)
		return -ENOMEM;
	pthread_mutex_lock(&snaps_mu);
	free(s->text);
	s->text = t;
	s->len = len;
	s->state = st;
	pthread_mutex_unlock(&snaps_mu);
	return 0;
}

/* Drop the open's reference and forget the id. */
static void snap_release(uint64_t fh)
{
	pthread_mutex_lock(&snaps_mu);
	for (struct snap **pp = &snaps; *pp; pp = &(*pp)->next) {
		if ((*pp)->id == fh) {
			struct snap *s = *pp;

			*pp = s->next;
			snap_unref_locked(s);
			break;
		}
	}
	pthread_mutex_unlock(&snaps_mu);
}

static void sf_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct snap *s = calloc(1, sizeof *s);
	int err;

	if (!s) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	if (fs_ino_kind(ino) != FS_K_SB_ERR &&
	    (fi->flags & O_ACCMODE) != O_RDONLY) {
		free(s);
		fuse_reply_err(req, EACCES);
		return;
	}
	err = snap_fill(fs, ino, s);
	if (err) {
		free(s);
		fuse_reply_err(req, -err);
		return;
	}
	pthread_mutex_lock(&snaps_mu);
	s->id = snaps_next++;
	s->refs = 1;
	s->next = snaps;
	snaps = s;
	pthread_mutex_unlock(&snaps_mu);
	fi->fh = s->id;
	fi->direct_io = 1;
	if (fuse_reply_open(req, fi) != 0) /* no RELEASE will come */
		snap_release(s->id);
}

static void sf_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	struct snap *s = snap_get(fi->fh);
	char *copy = NULL;
	size_t n = 0;

	if (!s) {
		fuse_reply_err(req, EBADF);
		return;
	}
	/* A reader that comes back to offset 0 (poll, lseek, read) wants
	 * the current text, not the one of open time. */
	if (off == 0 && s->read_once) {
		int err = snap_fill(fs_of(req), ino, s);

		if (err) {
			snap_put(s);
			fuse_reply_err(req, -err);
			return;
		}
	}
	/* Reply from a copy: a concurrent re-render may replace s->text. */
	pthread_mutex_lock(&snaps_mu);
	s->read_once = true;
	if (off >= 0 && (size_t)off < s->len) {
		n = s->len - (size_t)off;
		n = n < size ? n : size;
		copy = malloc(n);
		if (copy)
			memcpy(copy, s->text + off, n);
	}
	pthread_mutex_unlock(&snaps_mu);
	snap_put(s);
	if (n && !copy) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	fuse_reply_buf(req, copy, n);
	free(copy);
}

static void sf_release(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	(void)ino;
	snap_release(fi->fh);
	fuse_reply_err(req, 0);
}

static void status_poll(fuse_req_t req, fuse_ino_t ino,
			struct fuse_file_info *fi, struct fuse_pollhandle *ph)
{
	struct fs *fs = fs_of(req);
	struct snap *s = snap_get(fi->fh);
	int err;
	struct fs_sb *sb = fs_sb_get_slot(fs, fs_ino_sb_slot(ino),
					  fs_ino_sb_gen(ino), &err);
	unsigned rev = 0;

	if (!sb || !s) {
		/* Destroyed: readable (the reader gets ESTALE) and hung up. */
		if (ph)
			fuse_pollhandle_destroy(ph);
		if (s)
			snap_put(s);
		fs_sb_put(fs, sb);
		fuse_reply_poll(req, POLLIN | POLLPRI | POLLHUP);
		return;
	}
	pthread_mutex_lock(&snaps_mu);
	enum api_state seen = s->state;
	pthread_mutex_unlock(&snaps_mu);
	snap_put(s);
	pthread_mutex_lock(&fs->lock);
	if (sb->state != seen) {
		rev = POLLIN | POLLRDNORM | POLLPRI;
		if (ph)
			fuse_pollhandle_destroy(ph);
	} else if (ph) {
		fs_pollers_add(&sb->status_pollers, ph);
	}
	pthread_mutex_unlock(&fs->lock);
	fs_sb_put(fs, sb);
	fuse_reply_poll(req, rev);
}

static void err_write(fuse_req_t req, fuse_ino_t ino, const char *buf,
		      size_t size, off_t off, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct fs_sb *sb = fs_sb_req(req, ino);

	(void)buf;
	(void)off;
	(void)fi;
	if (!sb)
		return;
	/* Writing anything clears the last error. */
	pthread_mutex_lock(&fs->lock);
	sb->err[0] = '\0';
	pthread_mutex_unlock(&fs->lock);
	fs_sb_put(fs, sb);
	fuse_reply_write(req, size);
}

static void err_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr,
			int to_set, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct fs_sb *sb = fs_sb_req(req, ino);

	(void)fi;
	if (!sb)
		return;
	if (to_set & (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID |
		      FUSE_SET_ATTR_GID)) {
		fs_sb_put(fs, sb);
		fuse_reply_err(req, EPERM);
		return;
	}
	/* `: > err` / truncate -s0 err: clear too. */
	if ((to_set & FUSE_SET_ATTR_SIZE) && attr->st_size == 0) {
		pthread_mutex_lock(&fs->lock);
		sb->err[0] = '\0';
		pthread_mutex_unlock(&fs->lock);
	}
	fs_sb_put(fs, sb);
	struct stat st;
	fs_stat_node(fs, ino, &st);
	fuse_reply_attr(req, &st, 0);
}

static void err_open(fuse_req_t req, fuse_ino_t ino,
		     struct fuse_file_info *fi)
{
	/* Shell `> err` opens with O_TRUNC: that alone clears it. */
	if (fi->flags & O_TRUNC) {
		struct fs *fs = fs_of(req);
		int err;
		struct fs_sb *sb = fs_sb_get_ino(fs, ino, &err);

		if (sb) {
			pthread_mutex_lock(&fs->lock);
			sb->err[0] = '\0';
			pthread_mutex_unlock(&fs->lock);
			fs_sb_put(fs, sb);
		}
	}
	sf_open(req, ino, fi);
}

const struct fuse_lowlevel_ops fs_sb_status_ops = {
	.getattr = fs_gen_sb_getattr,
	.open = sf_open,
	.read = sf_read,
	.release = sf_release,
	.poll = status_poll,
};

const struct fuse_lowlevel_ops fs_sb_info_ops = {
	.getattr = fs_gen_sb_getattr,
	.open = sf_open,
	.read = sf_read,
	.release = sf_release,
};

const struct fuse_lowlevel_ops fs_sb_err_ops = {
	.getattr = fs_gen_sb_getattr,
	.setattr = err_setattr,
	.open = err_open,
	.read = sf_read,
	.write = err_write,
	.release = sf_release,
};
