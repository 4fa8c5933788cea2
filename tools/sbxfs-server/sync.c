/* sync.c - blocking wrappers over api.h for worker threads.
 *
 * api.h callbacks run inline or on a backend thread; a worker simply waits
 * on a condition variable until its callback ran.  Every api operation is
 * bounded by the backend's request timeout, so these waits end.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "srv.h"

struct wait {
	pthread_mutex_t m;
	pthread_cond_t c;
	bool done;
	int err;
	char *msg;
	size_t ml;
	/* results */
	struct api_sandbox *sb;
	struct api_sandbox **sbs;
	size_t *n;
	struct stat *st;
	struct srv_dirent **ents;
	struct api_file **f;
	void *buf;
	size_t len;
	ssize_t got;
};

static void w_init(struct wait *w, char *msg, size_t ml)
{
	memset(w, 0, sizeof(*w));
	pthread_mutex_init(&w->m, NULL);
	pthread_cond_init(&w->c, NULL);
	w->msg = msg;
	w->ml = ml;
	if (msg && ml)
		msg[0] = '\0';
}

/* Record the outcome; the caller fills results before calling this. */
static void w_done(struct wait *w, int err, const char *msg)
{
	pthread_mutex_lock(&w->m);
	w->err = err;
	if (err && w->msg && w->ml)
		snprintf(w->msg, w->ml, "%s", msg ? msg : api_strerror(err));
	w->done = true;
	pthread_cond_signal(&w->c);
	pthread_mutex_unlock(&w->m);
}

static int w_wait(struct wait *w)
{
	pthread_mutex_lock(&w->m);
	while (!w->done)
		pthread_cond_wait(&w->c, &w->m);
	pthread_mutex_unlock(&w->m);
	pthread_mutex_destroy(&w->m);
	pthread_cond_destroy(&w->c);
	return w->err;
}

static void cb_done(void *ud, int err, const char *msg)
{
	w_done(ud, err, msg);
}

static void cb_sb(void *ud, int err, const char *msg,
		  const struct api_sandbox *sb)
{
	struct wait *w = ud;

	if (!err && sb && w->sb) {
		*w->sb = *sb;
		w->sb->info_json = NULL;
	}
	w_done(w, err, msg);
}

static void cb_list(void *ud, int err, const char *msg,
		    const struct api_sandbox *sbs, size_t n)
{
	struct wait *w = ud;
	size_t i;

	if (!err) {
		*w->sbs = calloc(n ? n : 1, sizeof(**w->sbs));
		if (!*w->sbs) {
			err = -ENOMEM;
			msg = NULL;
		} else {
			for (i = 0; i < n; i++) {
				(*w->sbs)[i] = sbs[i];
				(*w->sbs)[i].info_json = NULL;
			}
			*w->n = n;
		}
	}
	w_done(w, err, msg);
}

int srv_sb_get(const char *id, struct api_sandbox *sb, char *msg, size_t ml)
{
	struct wait w;

	w_init(&w, msg, ml);
	w.sb = sb;
	api_sb_get(srv_g.be, id, cb_sb, &w);
	return w_wait(&w);
}

int srv_sb_list(struct api_sandbox **out, size_t *n, char *msg, size_t ml)
{
	struct wait w;

	w_init(&w, msg, ml);
	*out = NULL;
	*n = 0;
	w.sbs = out;
	w.n = n;
	api_sb_list(srv_g.be, cb_list, &w);
	return w_wait(&w);
}

int srv_sb_create(const char *id, const struct api_kv *kv, size_t nkv,
		  char *msg, size_t ml)
{
	struct wait w;

	w_init(&w, msg, ml);
	api_sb_create(srv_g.be, id, kv, nkv, cb_sb, &w);
	return w_wait(&w);
}

int srv_sb_verb(const char *id, enum api_verb v, const char *arg, char *msg,
		size_t ml)
{
	struct wait w;

	w_init(&w, msg, ml);
	api_sb_verb(srv_g.be, id, v, arg, cb_done, &w);
	return w_wait(&w);
}

static void cb_stat(void *ud, int err, const char *msg, const struct stat *st)
{
	struct wait *w = ud;

	if (!err && st)
		*w->st = *st;
	w_done(w, err, msg);
}

int srv_stat(const char *id, const char *path, struct stat *st, char *msg,
	     size_t ml)
{
	struct wait w;

	w_init(&w, msg, ml);
	w.st = st;
	api_file_stat(srv_g.be, id, path, cb_stat, &w);
	return w_wait(&w);
}

void srv_dirents_free(struct srv_dirent *d, size_t n)
{
	size_t i;

	for (i = 0; d && i < n; i++)
		free(d[i].name);
	free(d);
}

static void cb_readdir(void *ud, int err, const char *msg,
		       const struct api_dirent *ents, size_t n)
{
	struct wait *w = ud;
	struct srv_dirent *d = NULL;
	size_t i, k = 0;

	if (!err) {
		d = calloc(n ? n : 1, sizeof(*d));
		if (!d)
			err = -ENOMEM;
		for (i = 0; d && i < n; i++) {
			if (!strcmp(ents[i].name, ".") ||
			    !strcmp(ents[i].name, ".."))
				continue;
			d[k].name = strdup(ents[i].name);
			if (!d[k].name) {
				err = -ENOMEM;
				break;
			}
			d[k].st = ents[i].st;
			k++;
		}
		if (err) {
			srv_dirents_free(d, k);
			d = NULL;
			msg = NULL;
		}
	}
	*w->ents = d;
	*w->n = k;
	w_done(w, err, msg);
}

int srv_readdir(const char *id, const char *path, struct srv_dirent **out,
		size_t *n, char *msg, size_t ml)
{
	struct wait w;

	w_init(&w, msg, ml);
	w.ents = out;
	w.n = n;
	*out = NULL;
	*n = 0;
	api_file_readdir(srv_g.be, id, path, cb_readdir, &w);
	return w_wait(&w);
}

static void cb_open(void *ud, int err, const char *msg, struct api_file *f)
{
	struct wait *w = ud;

	*w->f = err ? NULL : f;
	w_done(w, err, msg);
}

int srv_open(const char *id, const char *path, int flags, mode_t mode,
	     struct api_file **f, char *msg, size_t ml)
{
	struct wait w;

	w_init(&w, msg, ml);
	w.f = f;
	api_file_open(srv_g.be, id, path, flags, mode, cb_open, &w);
	return w_wait(&w);
}

static void cb_data(void *ud, int err, const char *msg, const void *buf,
		    size_t len)
{
	struct wait *w = ud;

	if (!err) {
		if (len > w->len)
			len = w->len;
		memcpy(w->buf, buf, len);
		w->got = len;
	}
	w_done(w, err, msg);
}

ssize_t srv_pread(struct api_file *f, void *buf, size_t n, off_t off,
		  char *msg, size_t ml)
{
	struct wait w;
	int err;

	w_init(&w, msg, ml);
	w.buf = buf;
	w.len = n;
	api_file_read(srv_g.be, f, off, n, cb_data, &w);
	err = w_wait(&w);
	return err ? err : w.got;
}

static void cb_size(void *ud, int err, const char *msg, size_t n)
{
	struct wait *w = ud;

	w->got = n;
	w_done(w, err, msg);
}

int srv_pwrite(struct api_file *f, const void *buf, size_t n, off_t off,
	       char *msg, size_t ml)
{
	struct wait w;
	size_t done = 0;
	int err;

	while (done < n) {
		w_init(&w, msg, ml);
		api_file_write(srv_g.be, f, off + done, (const char *)buf + done,
			       n - done, cb_size, &w);
		err = w_wait(&w);
		if (err)
			return err;
		if (w.got <= 0)
			return -EIO;
		done += w.got;
	}
	return 0;
}

int srv_close(struct api_file *f, char *msg, size_t ml)
{
	struct wait w;
	int err;

	w_init(&w, msg, ml);
	api_file_flush(srv_g.be, f, cb_done, &w);
	err = w_wait(&w);
	w_init(&w, err ? NULL : msg, err ? 0 : ml);
	api_file_close(srv_g.be, f, cb_done, &w);
	if (w_wait(&w) && !err)
		err = w.err;
	return err;
}

int srv_mkdir(const char *id, const char *path, mode_t mode, char *msg,
	      size_t ml)
{
	struct wait w;

	w_init(&w, msg, ml);
	api_file_mkdir(srv_g.be, id, path, mode, cb_done, &w);
	return w_wait(&w);
}

int srv_unlink(const char *id, const char *path, char *msg, size_t ml)
{
	struct wait w;

	w_init(&w, msg, ml);
	api_file_unlink(srv_g.be, id, path, cb_done, &w);
	return w_wait(&w);
}

int srv_rmdir(const char *id, const char *path, char *msg, size_t ml)
{
	struct wait w;

	w_init(&w, msg, ml);
	api_file_rmdir(srv_g.be, id, path, cb_done, &w);
	return w_wait(&w);
}

static void cb_str(void *ud, int err, const char *msg, const char *s)
{
	struct wait *w = ud;

	if (!err)
		snprintf(w->buf, w->len, "%s", s ? s : "");
	w_done(w, err, msg);
}

int srv_readlink(const char *id, const char *path, char *buf, size_t len,
		 char *msg, size_t ml)
{
	struct wait w;

	w_init(&w, msg, ml);
	w.buf = buf;
	w.len = len;
	api_file_readlink(srv_g.be, id, path, cb_str, &w);
	return w_wait(&w);
}
