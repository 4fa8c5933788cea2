/* rfile.c - the shared remote-file layer (see rfile.h for the model). */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "api/rfile.h"
#include "api/stage.h"

enum rf_ld { RF_LOADING, RF_READY, RF_FAILED };

enum rw_kind {
	RW_READ,
	RW_WRITE,
	RW_TRUNC,
	RW_FLUSH,
	RW_AFTER,
	RW_OPEN,
	RW_STORE, /* launch a write-back (n, path, fd in flags, len, sa) */
	RW_SETATTR, /* launch an attribute-only write-back */
};

struct rf_node;

/* A descriptor: what struct api_file points to for this layer. */
struct rf_handle {
	struct rf_node *n;
	int flags;
};

/* Something waiting on a node, or a completion to run unlocked. */
struct rf_wait {
	struct rf_wait *next;
	enum rw_kind kind;
	struct rf_node *n;
	struct rf_handle *h;
	uint64_t off;
	size_t len;
	char *buf; /* write: our copy; read: the answer */
	uint64_t gen; /* flush: generation that must be stored */
	int err;
	char msg[256];
	size_t res;
	void *cb, *ud;
	/* RW_AFTER: an operation re-run once the node is quiet */
	void (*again)(struct rf_wait *w);
	struct api_backend *be;
	char id[API_ID_MAX];
	char *path, *path2;
	unsigned flags;
	mode_t mode;
	struct api_setattr sa;
};

struct rf_node {
	struct rf_node *next;
	struct api_rfile *rf;
	char id[API_ID_MAX];
	char *path;	   /* NULL once unlinked or replaced */
	int opens;	   /* descriptors */
	bool fetching, storing;
	struct api_stage *st;
	enum rf_ld ld;
	int ld_err;
	char ld_msg[256];
	unsigned ld_gen; /* bumped to discard a fetch in flight */
	bool remote;	 /* exists in the sandbox (as far as we know) */
	uint64_t gen;	 /* content generation; dirty while != clean_gen */
	uint64_t clean_gen, store_gen;
	uint64_t failed_gen; /* content whose write-back failed (reported) */
	struct api_setattr sa, store_sa; /* pending / in-flight attrs */
	struct stat base;		 /* as listed at open / made */
	struct timespec mtime;		 /* of our last write */
	bool mtime_ours;
	int store_fd;
	struct rf_wait *waits, *flushes, *afters;
};

struct api_rfile {
	struct api_backend *be;
	const struct api_rfile_ops *ops;
	uint64_t cap;
	pthread_mutex_t mu;
	struct rf_node *nodes;
};

/* Completions collected under the lock, run after it is dropped. */
struct rf_q {
	struct rf_wait *head, *tail;
};

static void q_add(struct rf_q *q, struct rf_wait *w)
{
	w->next = NULL;
	if (q->tail)
		q->tail->next = w;
	else
		q->head = w;
	q->tail = w;
}

static void wait_free(struct rf_wait *w)
{
	free(w->buf);
	free(w->path);
	free(w->path2);
	free(w);
}

static void store_done(void *ud, int err, const char *msg);

static void q_run(struct rf_q *q)
{
	struct rf_wait *w, *next;
	const char *m;

	for (w = q->head; w; w = next) {
		next = w->next;
		m = w->err ? (w->msg[0] ? w->msg : api_strerror(w->err)) :
			     NULL;
		switch (w->kind) {
		case RW_READ:
			((api_data_fn)w->cb)(w->ud, w->err, m,
					     w->err ? NULL : w->buf,
					     w->err ? 0 : w->res);
			break;
		case RW_WRITE:
			((api_size_fn)w->cb)(w->ud, w->err, m, w->res);
			break;
		case RW_OPEN:
			((api_open_fn)w->cb)(w->ud, w->err, m,
					     w->err ? NULL :
					     (struct api_file *)w->h);
			break;
		case RW_AFTER:
			w->again(w);
			continue; /* again() owns w */
		case RW_STORE:
			w->be->rf->ops->store(w->be, w->n->id, w->path,
					      (int)w->flags, w->len, &w->sa,
					      store_done, w);
			continue; /* store_done owns w */
		case RW_SETATTR:
			api_raw_file_setattr(w->be, w->n->id, w->path, &w->sa,
					     store_done, w);
			continue;
		default:
			((api_done_fn)w->cb)(w->ud, w->err, m);
		}
		wait_free(w);
	}
	q->head = q->tail = NULL;
}

static struct rf_wait *wait_new(enum rw_kind kind, void *cb, void *ud)
{
	struct rf_wait *w = calloc(1, sizeof(*w));

	if (w) {
		w->kind = kind;
		w->cb = cb;
		w->ud = ud;
	}
	return w;
}

static void wait_fail(struct rf_wait *w, int err, const char *msg)
{
	w->err = err;
	snprintf(w->msg, sizeof(w->msg), "%s", msg ? msg : "");
}

static void list_add(struct rf_wait **head, struct rf_wait *w)
{
	w->next = NULL;
	while (*head)
		head = &(*head)->next;
	*head = w;
}

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- paths -------------------------------------------------------------- */

/* Collapse "//", "." and trailing '/'; ".." lexically.  malloc'd. */
static char *norm(const char *path)
{
	size_t n, o = 0, cl;
	const char *c, *e;
	char *p;

	if (!path || path[0] != '/')
		return NULL;
	n = strlen(path);
	p = malloc(n + 2);
	if (!p)
		return NULL;
	for (c = path; *c; c = e) {
		while (*c == '/')
			c++;
		e = strchrnul(c, '/');
		cl = (size_t)(e - c);
		if (!cl || (cl == 1 && c[0] == '.'))
			continue;
		if (cl == 2 && c[0] == '.' && c[1] == '.') {
			while (o && p[o - 1] != '/')
				o--;
			if (o)
				o--;
			continue;
		}
		p[o++] = '/';
		memcpy(p + o, c, cl);
		o += cl;
	}
	if (!o)
		p[o++] = '/';
	p[o] = '\0';
	return p;
}

/* Is p at or below dir? */
static bool under(const char *p, const char *dir)
{
	size_t dl = strlen(dir);

	if (!strcmp(dir, "/"))
		return true;
	return !strncmp(p, dir, dl) && (p[dl] == '\0' || p[dl] == '/');
}

/* ---- nodes (rf->mu held) ------------------------------------------------ */

static struct rf_node *find(struct api_rfile *rf, const char *id,
			    const char *path)
{
	struct rf_node *n;

	for (n = rf->nodes; n; n = n->next)
		if (n->path && !strcmp(n->path, path) && !strcmp(n->id, id))
			return n;
	return NULL;
}

static bool dirty(const struct rf_node *n)
{
	return n->gen != n->clean_gen || n->sa.mask;
}

static void maybe_free(struct rf_node *n)
{
	struct rf_node **pp;

	if (n->opens || n->fetching || n->storing || n->waits ||
	    n->flushes || n->afters)
		return;
	for (pp = &n->rf->nodes; *pp; pp = &(*pp)->next)
		if (*pp == n) {
			*pp = n->next;
			break;
		}
	api_stage_free(n->st);
	free(n->path);
	free(n);
}

static struct rf_node *node_new(struct api_rfile *rf, const char *id,
				const char *path, int *err)
{
	struct rf_node *n = calloc(1, sizeof(*n));

	*err = -ENOMEM;
	if (!n || !(n->path = strdup(path))) {
		free(n);
		return NULL;
	}
	*err = api_stage_new(rf->cap, &n->st);
	if (*err) {
		free(n->path);
		free(n);
		return NULL;
	}
	n->rf = rf;
	n->store_fd = -1;
	snprintf(n->id, sizeof(n->id), "%s", id);
	n->next = rf->nodes;
	rf->nodes = n;
	return n;
}

/* The attributes the node stands for right now. */
static void node_stat(const struct rf_node *n, struct stat *st)
{
	*st = n->base;
	if (n->ld == RF_READY)
		st->st_size = (off_t)api_stage_size(n->st);
	st->st_blocks = (st->st_size + 511) / 512;
	if (n->mtime_ours) {
		st->st_mtim = n->mtime;
		st->st_ctim = n->mtime;
	}
	if (n->sa.mask & API_SET_MODE)
		st->st_mode = (st->st_mode & S_IFMT) | (n->sa.mode & 07777);
	if (n->sa.mask & API_SET_UID)
		st->st_uid = n->sa.uid;
	if (n->sa.mask & API_SET_GID)
		st->st_gid = n->sa.gid;
	if ((n->sa.mask & API_SET_MTIME) &&
	    n->sa.mtime.tv_nsec != UTIME_NOW)
		st->st_mtim = n->sa.mtime;
	if ((n->sa.mask & API_SET_ATIME) &&
	    n->sa.atime.tv_nsec != UTIME_NOW)
		st->st_atim = n->sa.atime;
}

static void touch(struct rf_node *n)
{
	int64_t t = now_ns();

	n->gen++;
	n->mtime.tv_sec = t / 1000000000;
	n->mtime.tv_nsec = t % 1000000000;
	n->mtime_ours = true;
	/* a write after utimes moves mtime on, as on a disk */
	n->sa.mask &= ~API_SET_MTIME;
}

/* ---- queued I/O (rf->mu held) ------------------------------------------- */

static void do_read(struct rf_node *n, struct rf_wait *w)
{
	ssize_t r;

	w->buf = malloc(w->len ? w->len : 1);
	if (!w->buf) {
		wait_fail(w, -ENOMEM, "out of memory");
		return;
	}
	r = api_stage_read(n->st, w->buf, w->len, w->off);
	if (r < 0)
		wait_fail(w, (int)r, "reading the cached copy failed");
	else
		w->res = (size_t)r;
}

static void do_write(struct rf_node *n, struct rf_wait *w)
{
	ssize_t r;

	if (w->h->flags & O_APPEND)
		w->off = api_stage_size(n->st);
	r = api_stage_write(n->st, w->buf, w->len, w->off);
	if (r < 0) {
		wait_fail(w, (int)r, r == -EFBIG ? "file larger than the "
			  "cache allows" : "writing the cached copy failed");
		return;
	}
	w->res = (size_t)r;
	touch(n);
}

static void do_trunc(struct rf_node *n, struct rf_wait *w)
{
	int r = api_stage_truncate(n->st, w->off);

	if (r)
		wait_fail(w, r, "truncating the cached copy failed");
	else
		touch(n);
}

/* Serve what the content now allows, in order. */
static void serve(struct rf_node *n, struct rf_q *q)
{
	struct rf_wait *w;

	while ((w = n->waits)) {
		if (n->ld == RF_FAILED) {
			wait_fail(w, n->ld_err, n->ld_msg);
		} else if (w->kind == RW_READ) {
			if (n->ld != RF_READY &&
			    api_stage_size(n->st) < w->off + w->len)
				return;
			do_read(n, w);
		} else if (n->ld != RF_READY) {
			return;
		} else if (w->kind == RW_WRITE) {
			do_write(n, w);
		} else {
			do_trunc(n, w);
		}
		n->waits = w->next;
		q_add(q, w);
	}
}

/* ---- fetch -------------------------------------------------------------- */

static bool busy(const struct rf_node *n)
{
	return n->fetching || n->storing;
}

/* Operations that waited for the node to be quiet run again. */
static void release_afters(struct rf_node *n, struct rf_q *q)
{
	struct rf_wait *w;

	if (busy(n))
		return;
	while ((w = n->afters)) {
		n->afters = w->next;
		q_add(q, w);
	}
}

struct fetch_ctx {
	struct rf_node *n;
	unsigned gen;
};

static int fetch_sink(void *ud, const void *buf, size_t len)
{
	struct fetch_ctx *c = ud;
	struct rf_node *n = c->n;
	struct api_rfile *rf = n->rf;
	struct rf_q q = { 0 };
	int err = 0;

	pthread_mutex_lock(&rf->mu);
	if (c->gen != n->ld_gen) {
		err = -ECANCELED; /* O_TRUNC made the download pointless */
	} else {
		err = api_stage_fill(n->st, buf, len);
		if (!err)
			serve(n, &q);
	}
	pthread_mutex_unlock(&rf->mu);
	q_run(&q);
	return err;
}

static void fetch_end(struct rf_node *n, unsigned gen, int err,
		      const char *msg)
{
	struct api_rfile *rf = n->rf;
	struct rf_q q = { 0 };

	pthread_mutex_lock(&rf->mu);
	n->fetching = false;
	if (gen == n->ld_gen) {
		if (err) {
			n->ld = RF_FAILED;
			n->ld_err = err == -ECANCELED ? -EIO : err;
			snprintf(n->ld_msg, sizeof(n->ld_msg), "%s",
				 msg ? msg : api_strerror(err));
		} else {
			n->ld = RF_READY;
		}
		serve(n, &q);
	}
	release_afters(n, &q);
	maybe_free(n);
	pthread_mutex_unlock(&rf->mu);
	q_run(&q);
}

static void fetch_done(void *ud, int err, const char *msg)
{
	struct fetch_ctx *c = ud;

	fetch_end(c->n, c->gen, err, msg);
	free(c);
}

/* Unlocked, right after n was made LOADING (n->fetching holds it). */
static void fetch_start(struct rf_node *n, const char *path, uint64_t expect,
			unsigned gen)
{
	struct api_rfile *rf = n->rf;
	struct fetch_ctx *c = calloc(1, sizeof(*c));

	if (!c) {
		fetch_end(n, gen, -ENOMEM, "out of memory");
		return;
	}
	c->n = n;
	c->gen = gen;
	rf->ops->fetch(rf->be, n->id, path, expect, fetch_sink, c,
		       fetch_done, c);
}

/* ---- store -------------------------------------------------------------- */

static void store_start(struct rf_node *n, struct rf_q *q);

static void store_done(void *ud, int err, const char *msg)
{
	struct rf_wait *c = ud;
	struct rf_node *n = c->n;
	struct api_rfile *rf = n->rf;
	struct rf_q q = { 0 };
	struct rf_wait *w, **pp;
	bool replay;

	pthread_mutex_lock(&rf->mu);
	n->storing = false;
	if (n->store_fd >= 0)
		close(n->store_fd);
	n->store_fd = -1;
	if (!err) {
		n->clean_gen = n->store_gen;
		n->remote = true;
		if (n->store_sa.mask & API_SET_MODE)
			n->base.st_mode = (n->base.st_mode & S_IFMT) |
					  (n->store_sa.mode & 07777);
	} else {
		/* what was not applied is pending again, unless reset */
		struct api_setattr old = n->sa;

		n->sa = n->store_sa;
		if (old.mask & API_SET_MODE)
			n->sa.mode = old.mode;
		if (old.mask & API_SET_UID)
			n->sa.uid = old.uid;
		if (old.mask & API_SET_GID)
			n->sa.gid = old.gid;
		if (old.mask & API_SET_ATIME)
			n->sa.atime = old.atime;
		if (old.mask & API_SET_MTIME)
			n->sa.mtime = old.mtime;
		n->sa.mask |= old.mask;
		n->failed_gen = n->store_gen;
		api_log("write-back of %s failed: %s",
			n->path ? n->path : "an unlinked file",
			msg ? msg : api_strerror(err));
	}
	/* flushes that asked for what was stored get the result */
	for (pp = &n->flushes; (w = *pp);) {
		if (err || w->gen <= n->clean_gen) {
			*pp = w->next;
			if (err)
				wait_fail(w, err, msg);
			q_add(&q, w);
		} else {
			pp = &w->next;
		}
	}
	replay = n->afters != NULL;
	release_afters(n, &q);
	/* more to store: flushes still waiting, or the last close went
	 * by while this store ran */
	if (!err && !replay && n->path && dirty(n) && n->ld == RF_READY &&
	    !n->storing && (n->flushes || !n->opens))
		store_start(n, &q);
	maybe_free(n);
	pthread_mutex_unlock(&rf->mu);
	c->n = NULL;
	wait_free(c);
	q_run(&q);
}

/* Queue a write-back of n on q (rf->mu held; n READY, not storing).
 * The snapshot is taken now, so writes go on while it uploads. */
static void store_start(struct rf_node *n, struct rf_q *q)
{
	struct rf_wait *c = wait_new(RW_STORE, NULL, NULL);
	uint64_t size = api_stage_size(n->st);
	const char *dir = getenv("TMPDIR");
	int fd = -1, err = -ENOMEM;
	struct rf_wait *w;

	if (c)
		c->path = strdup(n->path);
	if (c && c->path && n->gen == n->clean_gen && n->remote) {
		/* content as in the sandbox: only attributes changed */
		c->kind = RW_SETATTR;
		err = 0;
	} else if (c && c->path) {
		if (!dir || dir[0] != '/')
			dir = "/tmp";
		fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
		err = fd < 0 ? -errno : 0;
		if (!err) {
			loff_t in = 0, out = 0;
			uint64_t left = size;

			while (left) {
				ssize_t k = copy_file_range(
					api_stage_fd(n->st), &in, fd, &out,
					left, 0);
				if (k <= 0) {
					err = k < 0 ? -errno : -EIO;
					break;
				}
				left -= (uint64_t)k;
			}
		}
	}
	if (err) {
		if (fd >= 0)
			close(fd);
		if (c)
			wait_free(c);
		while ((w = n->flushes)) {
			n->flushes = w->next;
			wait_fail(w, err, "cannot snapshot the cached copy");
			q_add(q, w);
		}
		return;
	}
	c->n = n;
	c->be = n->rf->be;
	c->len = size;
	c->flags = (unsigned)fd;
	c->sa = n->sa;
	if (c->kind == RW_STORE && !(c->sa.mask & API_SET_MODE)) {
		c->sa.mask |= API_SET_MODE;
		c->sa.mode = n->base.st_mode & 07777;
	}
	n->store_sa = c->sa;
	n->sa.mask = 0;
	n->storing = true;
	n->store_gen = n->gen;
	n->store_fd = fd;
	q_add(q, c);
}

/* ---- the layer ---------------------------------------------------------- */

int api_rfile_new(struct api_backend *be, const struct api_rfile_ops *ops,
		  uint64_t cap)
{
	struct api_rfile *rf = calloc(1, sizeof(*rf));

	if (!rf)
		return -ENOMEM;
	rf->be = be;
	rf->ops = ops;
	rf->cap = cap;
	pthread_mutex_init(&rf->mu, NULL);
	be->rf = rf;
	return 0;
}

void api_rfile_free(struct api_backend *be)
{
	struct api_rfile *rf = be->rf;

	if (!rf)
		return;
	while (rf->nodes) {
		struct rf_node *n = rf->nodes;

		rf->nodes = n->next;
		/* nothing should wait at unmount; free what does */
		while (n->waits || n->flushes || n->afters) {
			struct rf_wait **l = n->waits ? &n->waits :
					     n->flushes ? &n->flushes :
							  &n->afters;
			struct rf_wait *w = *l;

			*l = w->next;
			wait_free(w);
		}
		if (n->store_fd >= 0)
			close(n->store_fd);
		api_stage_free(n->st);
		free(n->path);
		free(n);
	}
	pthread_mutex_destroy(&rf->mu);
	free(rf);
	be->rf = NULL;
}

/* ---- sync before exec --------------------------------------------------- */

struct sync_bar {
	struct api_rfile *rf;
	int left;
	void (*done)(void *ud);
	void *ud;
};

static void sync_one(void *ud, int err, const char *msg)
{
	struct sync_bar *b = ud;
	bool last;

	(void)err; /* stays dirty: the error comes back at close(2) */
	(void)msg;
	pthread_mutex_lock(&b->rf->mu);
	last = --b->left == 0;
	pthread_mutex_unlock(&b->rf->mu);
	if (last) {
		b->done(b->ud);
		free(b);
	}
}

int api_rfile_sync(struct api_rfile *rf, const char *id,
		   void (*done)(void *ud), void *ud)
{
	struct sync_bar *b;
	struct rf_node *n;
	struct rf_wait *w;
	struct rf_q q = { 0 };
	bool last;

	if (!rf)
		return 0;
	b = calloc(1, sizeof(*b));
	if (!b)
		return 0;
	b->rf = rf;
	b->done = done;
	b->ud = ud;
	b->left = 1;
	pthread_mutex_lock(&rf->mu);
	for (n = rf->nodes; n; n = n->next) {
		/* content only, and never a store in flight: an
		 * attribute-only write-back runs a command itself, which
		 * syncs first (waiting on it would wait on ourselves) */
		if (strcmp(n->id, id) || !n->path || n->ld != RF_READY ||
		    n->storing || n->gen == n->clean_gen)
			continue;
		w = wait_new(RW_FLUSH, (void *)sync_one, b);
		if (!w)
			continue;
		w->gen = n->gen;
		b->left++;
		list_add(&n->flushes, w);
		store_start(n, &q);
	}
	last = --b->left == 0;
	pthread_mutex_unlock(&rf->mu);
	q_run(&q);
	if (last) {
		free(b);
		return 0;
	}
	return 1;
}

/* ---- stat / readdir overlays -------------------------------------------- */

void api_rfile_stat(struct api_backend *be, const char *id,
		    const char *path, api_stat_fn cb, void *ud)
{
	struct api_rfile *rf = be->rf;
	struct rf_node *n;
	struct stat st;
	char *p = norm(path);

	if (p) {
		pthread_mutex_lock(&rf->mu);
		n = find(rf, id, p);
		if (n)
			node_stat(n, &st);
		pthread_mutex_unlock(&rf->mu);
		free(p);
		if (n) {
			cb(ud, 0, NULL, &st);
			return;
		}
	}
	api_raw_file_stat(be, id, path, cb, ud);
}

struct rd_ctx {
	struct api_rfile *rf;
	char id[API_ID_MAX];
	char *dir;
	api_readdir_fn cb;
	void *ud;
};

static const char *base_in(const char *p, const char *dir)
{
	size_t dl = strlen(dir);
	const char *b;

	if (!strcmp(dir, "/"))
		dl = 0;
	else if (strncmp(p, dir, dl) || p[dl] != '/')
		return NULL;
	b = p + dl + 1;
	return strchr(b, '/') ? NULL : b;
}

/* A write-back's temporary in the sandbox (".sbxfs-PID-SEQ.tmp", parts
 * ".sbxfs-PID-SEQ.tmp.partNNNNNN"): not shown. */
static bool is_temp(const char *name)
{
	return !strncmp(name, ".sbxfs-", 7) && strstr(name, ".tmp");
}

static void rd_got(void *ud, int err, const char *msg,
		   const struct api_dirent *ents, size_t n)
{
	struct rd_ctx *c = ud;
	struct api_rfile *rf = c->rf;
	struct api_dirent *out = NULL;
	struct rf_node *nd;
	size_t cnt = 0, extra = 0, hidden, i, k;
	char **names = NULL;

	if (err) {
		c->cb(c->ud, err, msg, NULL, 0);
		goto out;
	}
	hidden = 0;
	for (i = 0; i < n; i++)
		hidden += is_temp(ents[i].name);
	pthread_mutex_lock(&rf->mu);
	for (nd = rf->nodes; nd; nd = nd->next)
		if (nd->path && !strcmp(nd->id, c->id) &&
		    base_in(nd->path, c->dir))
			extra++;
	if (!extra && !hidden) {
		pthread_mutex_unlock(&rf->mu);
		c->cb(c->ud, 0, NULL, ents, n);
		goto out;
	}
	out = calloc(n + extra + 1, sizeof(*out));
	names = calloc(extra + 1, sizeof(*names));
	if (!out || !names) {
		pthread_mutex_unlock(&rf->mu);
		c->cb(c->ud, 0, NULL, ents, n);
		goto out;
	}
	for (i = 0; i < n; i++)
		if (!is_temp(ents[i].name))
			out[cnt++] = ents[i];
	n = cnt;
	k = 0;
	for (nd = rf->nodes; nd; nd = nd->next) {
		const char *b;

		if (!nd->path || strcmp(nd->id, c->id) ||
		    !(b = base_in(nd->path, c->dir)))
			continue;
		for (i = 0; i < n; i++)
			if (!strcmp(out[i].name, b))
				break;
		if (i == n) {
			names[k] = strdup(b);
			if (!names[k])
				continue;
			out[cnt].name = names[k++];
			i = cnt++;
		}
		node_stat(nd, &out[i].st);
	}
	pthread_mutex_unlock(&rf->mu);
	c->cb(c->ud, 0, NULL, out, cnt);
	for (i = 0; i < extra; i++)
		free(names[i]);
out:
	free(names);
	free(out);
	free(c->dir);
	free(c);
}

void api_rfile_readdir(struct api_backend *be, const char *id,
		       const char *path, api_readdir_fn cb, void *ud)
{
	struct rd_ctx *c = calloc(1, sizeof(*c));

	if (!c || !(c->dir = norm(path))) {
		free(c);
		api_raw_file_readdir(be, id, path, cb, ud);
		return;
	}
	c->rf = be->rf;
	snprintf(c->id, sizeof(c->id), "%s", id);
	c->cb = cb;
	c->ud = ud;
	api_raw_file_readdir(be, id, path, rd_got, c);
}

/* ---- open --------------------------------------------------------------- */

/* Join node n with a new descriptor (rf->mu held).  0 or -errno. */
static int attach(struct rf_node *n, struct rf_wait *w, bool fresh)
{
	int acc = w->flags & O_ACCMODE;

	if (!fresh && (w->flags & O_CREAT) && (w->flags & O_EXCL)) {
		snprintf(w->msg, sizeof(w->msg), "file exists");
		return -EEXIST;
	}
	if (n->ld == RF_FAILED && !((w->flags & O_TRUNC) &&
				    acc != O_RDONLY)) {
		snprintf(w->msg, sizeof(w->msg), "%s", n->ld_msg);
		return n->ld_err;
	}
	w->h = calloc(1, sizeof(*w->h));
	if (!w->h)
		return -ENOMEM;
	w->h->n = n;
	w->h->flags = w->flags;
	n->opens++;
	if ((w->flags & O_TRUNC) && acc != O_RDONLY &&
	    (n->ld != RF_READY || api_stage_size(n->st))) {
		/* content no longer matters: stop waiting for it */
		n->ld_gen++;
		api_stage_reset(n->st);
		n->ld = RF_READY;
		touch(n);
	}
	return 0;
}

static void open_statted(void *ud, int err, const char *msg,
			 const struct stat *st)
{
	struct rf_wait *w = ud;
	struct api_rfile *rf = w->be->rf;
	struct rf_node *n;
	struct rf_q q = { 0 };
	bool fetch = false;
	uint64_t expect = 0;
	unsigned gen = 0;
	int acc = w->flags & O_ACCMODE;

	pthread_mutex_lock(&rf->mu);
	n = find(rf, w->id, w->path);
	if (n) { /* another open made it meanwhile */
		err = attach(n, w, false);
		goto out;
	}
	if (err == -ENOENT && (w->flags & O_CREAT)) {
		/* Nothing in the sandbox until the first write-back: a
		 * create that fails leaves no file behind. */
		n = node_new(rf, w->id, w->path, &err);
		if (!n)
			goto out;
		n->ld = RF_READY;
		n->gen = 1;
		n->base.st_mode = S_IFREG | (w->mode & 07777 ? w->mode & 07777 :
					     0644);
		n->base.st_nlink = 1;
		n->base.st_blksize = 4096;
		touch(n);
		n->base.st_atim = n->mtime;
		n->base.st_mtim = n->base.st_ctim = n->mtime;
		err = attach(n, w, true);
		goto out;
	}
	if (err) {
		snprintf(w->msg, sizeof(w->msg), "%s", msg ? msg : "");
		goto out;
	}
	if (S_ISDIR(st->st_mode)) {
		err = -EISDIR;
		snprintf(w->msg, sizeof(w->msg), "is a directory");
		goto out;
	}
	if ((w->flags & O_CREAT) && (w->flags & O_EXCL)) {
		err = -EEXIST;
		snprintf(w->msg, sizeof(w->msg), "file exists");
		goto out;
	}
	n = node_new(rf, w->id, w->path, &err);
	if (!n)
		goto out;
	n->remote = true;
	n->base = *st;
	if (S_ISLNK(st->st_mode)) /* opened through: a regular file */
		n->base.st_mode = S_IFREG | 0644;
	if ((w->flags & O_TRUNC) && acc != O_RDONLY) {
		n->ld = RF_READY;
		if (st->st_size || S_ISLNK(st->st_mode))
			touch(n); /* emptied: the sandbox must hear of it */
	} else if (st->st_size == 0 && !S_ISLNK(st->st_mode)) {
		n->ld = RF_READY;
	} else {
		n->ld = RF_LOADING;
		n->fetching = fetch = true;
		expect = S_ISLNK(st->st_mode) ? 0 : (uint64_t)st->st_size;
		gen = n->ld_gen;
	}
	err = attach(n, w, true);
out:
	if (err) {
		w->err = err;
		if (!w->msg[0])
			snprintf(w->msg, sizeof(w->msg), "%s",
				 api_strerror(err));
		if (n)
			maybe_free(n);
		fetch = false;
	}
	q_add(&q, w);
	pthread_mutex_unlock(&rf->mu);
	if (fetch)
		fetch_start(n, w->path, expect, gen);
	q_run(&q);
}

void api_rfile_open(struct api_backend *be, const char *id,
		    const char *path, int flags, mode_t mode, api_open_fn cb,
		    void *ud)
{
	struct api_rfile *rf = be->rf;
	struct rf_wait *w = wait_new(RW_OPEN, (void *)cb, ud);
	struct rf_node *n;
	struct rf_q q = { 0 };
	int err;

	if (!w) {
		cb(ud, -ENOMEM, "out of memory", NULL);
		return;
	}
	w->be = be;
	w->flags = (int)flags;
	w->mode = mode;
	snprintf(w->id, sizeof(w->id), "%s", id);
	w->path = norm(path);
	if (!w->path || !strcmp(w->path, "/") ||
	    strlen(id) >= API_ID_MAX) {
		cb(ud, w->path ? -EISDIR : -EINVAL, w->path ?
		   "is a directory" : "bad path", NULL);
		wait_free(w);
		return;
	}
	pthread_mutex_lock(&rf->mu);
	n = find(rf, w->id, w->path);
	if (n) {
		err = attach(n, w, false);
		if (err)
			w->err = err;
		q_add(&q, w);
		pthread_mutex_unlock(&rf->mu);
		q_run(&q);
		return;
	}
	pthread_mutex_unlock(&rf->mu);
	/* close-to-open: what the sandbox has now */
	api_raw_file_stat(be, id, w->path, open_statted, w);
}

/* ---- read / write / flush / close --------------------------------------- */

void api_rfile_read(struct api_backend *be, struct api_file *f, off_t off,
		    size_t size, api_data_fn cb, void *ud)
{
	struct rf_handle *h = (struct rf_handle *)f;
	struct api_rfile *rf = be->rf;
	struct rf_wait *w;
	struct rf_q q = { 0 };

	if (off < 0) {
		cb(ud, -EINVAL, "negative offset", NULL, 0);
		return;
	}
	w = wait_new(RW_READ, (void *)cb, ud);
	if (!w) {
		cb(ud, -ENOMEM, "out of memory", NULL, 0);
		return;
	}
	w->h = h;
	w->off = (uint64_t)off;
	w->len = size;
	pthread_mutex_lock(&rf->mu);
	list_add(&h->n->waits, w);
	serve(h->n, &q);
	pthread_mutex_unlock(&rf->mu);
	q_run(&q);
}

void api_rfile_write(struct api_backend *be, struct api_file *f, off_t off,
		     const void *buf, size_t len, api_size_fn cb, void *ud)
{
	struct rf_handle *h = (struct rf_handle *)f;
	struct api_rfile *rf = be->rf;
	struct rf_wait *w;
	struct rf_q q = { 0 };

	if (off < 0) {
		cb(ud, -EINVAL, "negative offset", 0);
		return;
	}
	if ((h->flags & O_ACCMODE) == O_RDONLY) {
		cb(ud, -EBADF, "file not open for writing", 0);
		return;
	}
	w = wait_new(RW_WRITE, (void *)cb, ud);
	if (w)
		w->buf = malloc(len ? len : 1);
	if (!w || !w->buf) {
		free(w);
		cb(ud, -ENOMEM, "out of memory", 0);
		return;
	}
	memcpy(w->buf, buf, len);
	w->h = h;
	w->off = (uint64_t)off;
	w->len = len;
	pthread_mutex_lock(&rf->mu);
	list_add(&h->n->waits, w);
	serve(h->n, &q);
	pthread_mutex_unlock(&rf->mu);
	q_run(&q);
}

void api_rfile_flush(struct api_backend *be, struct api_file *f,
		     api_done_fn cb, void *ud)
{
	struct rf_handle *h = (struct rf_handle *)f;
	struct api_rfile *rf = be->rf;
	struct rf_node *n = h->n;
	struct rf_wait *w;
	struct rf_q q = { 0 };

	w = wait_new(RW_FLUSH, (void *)cb, ud);
	if (!w) {
		cb(ud, -ENOMEM, "out of memory");
		return;
	}
	pthread_mutex_lock(&rf->mu);
	if (!n->path || (!dirty(n) && !n->storing) ||
	    (n->ld != RF_READY && !n->storing)) {
		/* nothing to write back (or unlinked: never stored) */
		q_add(&q, w);
	} else {
		w->gen = n->gen;
		list_add(&n->flushes, w);
		if (!n->storing && dirty(n))
			store_start(n, &q);
	}
	pthread_mutex_unlock(&rf->mu);
	q_run(&q);
}

void api_rfile_close(struct api_backend *be, struct api_file *f,
		     api_done_fn cb, void *ud)
{
	struct rf_handle *h = (struct rf_handle *)f;
	struct api_rfile *rf = be->rf;
	struct rf_node *n = h->n;
	struct rf_q q = { 0 };

	pthread_mutex_lock(&rf->mu);
	n->opens--;
	/* the last close writes back what no flush did (mmap pages
	 * written after the flush, a descriptor closed without one); not
	 * what a flush already failed to store and said so: a create whose
	 * write-back failed leaves no file */
	if (!n->opens && n->path && dirty(n) && !n->storing &&
	    n->ld == RF_READY && n->gen != n->failed_gen)
		store_start(n, &q);
	maybe_free(n);
	pthread_mutex_unlock(&rf->mu);
	free(h);
	q_run(&q);
	cb(ud, 0, NULL);
}

void api_rfile_fstat(struct api_backend *be, struct api_file *f,
		     api_stat_fn cb, void *ud)
{
	struct rf_handle *h = (struct rf_handle *)f;
	struct stat st;

	pthread_mutex_lock(&be->rf->mu);
	node_stat(h->n, &st);
	pthread_mutex_unlock(&be->rf->mu);
	cb(ud, 0, NULL, &st);
}

void api_rfile_ftruncate(struct api_backend *be, struct api_file *f,
			 off_t size, api_done_fn cb, void *ud)
{
	struct rf_handle *h = (struct rf_handle *)f;
	struct rf_wait *t;
	struct rf_q q = { 0 };

	if (size < 0) {
		cb(ud, -EINVAL, "negative size");
		return;
	}
	t = wait_new(RW_TRUNC, (void *)cb, ud);
	if (!t) {
		cb(ud, -ENOMEM, "out of memory");
		return;
	}
	t->off = (uint64_t)size;
	pthread_mutex_lock(&be->rf->mu);
	list_add(&h->n->waits, t);
	serve(h->n, &q);
	pthread_mutex_unlock(&be->rf->mu);
	q_run(&q);
}

/* ---- namespace operations on held files --------------------------------- */

/* Run w->again once no store of n is in flight (rf->mu held). */
static void after_store(struct rf_node *n, struct rf_wait *w)
{
	w->kind = RW_AFTER;
	list_add(&n->afters, w);
}

static struct rf_wait *path_wait(struct api_backend *be, const char *id,
				 const char *path, const char *path2,
				 void *cb, void *ud)
{
	struct rf_wait *w = wait_new(RW_AFTER, cb, ud);

	if (!w)
		return NULL;
	w->be = be;
	snprintf(w->id, sizeof(w->id), "%s", id);
	w->path = norm(path);
	w->path2 = path2 ? norm(path2) : NULL;
	if (!w->path || (path2 && !w->path2)) {
		wait_free(w);
		return NULL;
	}
	return w;
}

/* unlink */

static void unlink_again(struct rf_wait *w);

static void unlink_done(void *ud, int err, const char *msg)
{
	struct rf_wait *w = ud;

	((api_done_fn)w->cb)(w->ud, err, msg);
	wait_free(w);
}

static void unlink_again(struct rf_wait *w)
{
	struct api_rfile *rf = w->be->rf;
	struct rf_node *n;
	bool remote = true;

	pthread_mutex_lock(&rf->mu);
	n = find(rf, w->id, w->path);
	if (n && busy(n)) {
		after_store(n, w);
		pthread_mutex_unlock(&rf->mu);
		return;
	}
	if (n) {
		/* open files keep their data until the last close */
		remote = n->remote;
		free(n->path);
		n->path = NULL;
		maybe_free(n);
	}
	pthread_mutex_unlock(&rf->mu);
	if (remote) {
		api_raw_file_unlink(w->be, w->id, w->path, unlink_done, w);
		return;
	}
	((api_done_fn)w->cb)(w->ud, 0, NULL);
	wait_free(w);
}

void api_rfile_unlink(struct api_backend *be, const char *id,
		      const char *path, api_done_fn cb, void *ud)
{
	struct rf_wait *w = path_wait(be, id, path, NULL, (void *)cb, ud);

	if (!w) {
		api_raw_file_unlink(be, id, path, cb, ud);
		return;
	}
	w->again = unlink_again;
	unlink_again(w);
}

/* rename */

static void rename_done(void *ud, int err, const char *msg)
{
	struct rf_wait *w = ud;
	struct api_rfile *rf = w->be->rf;
	struct rf_node *n, *a = NULL, *b = NULL;
	size_t fl = strlen(w->path);

	if (!err) {
		pthread_mutex_lock(&rf->mu);
		if (w->flags & RENAME_EXCHANGE) {
			a = find(rf, w->id, w->path);
			b = find(rf, w->id, w->path2);
			if (a) {
				free(a->path);
				a->path = strdup(w->path2);
			}
			if (b) {
				free(b->path);
				b->path = strdup(w->path);
			}
		} else {
			b = find(rf, w->id, w->path2);
			if (b) { /* replaced: gone as if unlinked */
				free(b->path);
				b->path = NULL;
				maybe_free(b);
			}
			for (n = rf->nodes; n; n = n->next) {
				size_t nl;
				char *np;

				if (!n->path || strcmp(n->id, w->id) ||
				    !under(n->path, w->path))
					continue;
				nl = strlen(w->path2) + strlen(n->path + fl) +
				     1;
				np = malloc(nl);
				if (np)
					snprintf(np, nl, "%s%s", w->path2,
						 n->path + fl);
				free(n->path);
				n->path = np;
			}
		}
		pthread_mutex_unlock(&rf->mu);
	}
	((api_done_fn)w->cb)(w->ud, err, msg);
	wait_free(w);
}

static void rename_again(struct rf_wait *w)
{
	struct api_rfile *rf = w->be->rf;
	struct rf_node *n;
	struct rf_q q = { 0 };

	pthread_mutex_lock(&rf->mu);
	for (n = rf->nodes; n; n = n->next) {
		if (!n->path || strcmp(n->id, w->id) ||
		    !(under(n->path, w->path) ||
		      !strcmp(n->path, w->path2)))
			continue;
		/* a store in flight would land on the old name; a file
		 * not yet in the sandbox is stored first so mv has it */
		if (busy(n))
			break;
		if (!n->remote && n->ld == RF_READY &&
		    under(n->path, w->path)) {
			store_start(n, &q);
			if (n->storing)
				break;
		}
	}
	if (n) {
		after_store(n, w);
		pthread_mutex_unlock(&rf->mu);
		q_run(&q);
		return;
	}
	pthread_mutex_unlock(&rf->mu);
	q_run(&q);
	api_raw_file_rename(w->be, w->id, w->path, w->path2, w->flags,
			    rename_done, w);
}

void api_rfile_rename(struct api_backend *be, const char *id,
		      const char *from, const char *to, unsigned flags,
		      api_done_fn cb, void *ud)
{
	struct rf_wait *w = path_wait(be, id, from, to, (void *)cb, ud);

	if (!w) {
		api_raw_file_rename(be, id, from, to, flags, cb, ud);
		return;
	}
	w->flags = flags;
	w->again = rename_again;
	rename_again(w);
}

/* setattr */

static void setattr_again(struct rf_wait *w);

static void setattr_done(void *ud, int err, const char *msg)
{
	struct rf_wait *w = ud;

	((api_done_fn)w->cb)(w->ud, err, msg);
	wait_free(w);
}

static void merge_sa(struct api_setattr *d, const struct api_setattr *s)
{
	if (s->mask & API_SET_MODE)
		d->mode = s->mode;
	if (s->mask & API_SET_UID)
		d->uid = s->uid;
	if (s->mask & API_SET_GID)
		d->gid = s->gid;
	if (s->mask & API_SET_ATIME)
		d->atime = s->atime;
	if (s->mask & API_SET_MTIME)
		d->mtime = s->mtime;
	d->mask |= s->mask & ~API_SET_SIZE;
}

static void setattr_again(struct rf_wait *w)
{
	struct api_rfile *rf = w->be->rf;
	struct rf_node *n;
	struct rf_q q = { 0 };
	struct api_setattr sa = w->sa;

	pthread_mutex_lock(&rf->mu);
	n = find(rf, w->id, w->path);
	if (!n) {
		pthread_mutex_unlock(&rf->mu);
		api_raw_file_setattr(w->be, w->id, w->path, &w->sa,
				     setattr_done, w);
		return;
	}
	/* times given as "now" are taken now */
	if ((sa.mask & API_SET_MTIME) && sa.mtime.tv_nsec == UTIME_NOW) {
		int64_t t = now_ns();

		sa.mtime.tv_sec = t / 1000000000;
		sa.mtime.tv_nsec = t % 1000000000;
	}
	if ((sa.mask & API_SET_ATIME) && sa.atime.tv_nsec == UTIME_NOW) {
		int64_t t = now_ns();

		sa.atime.tv_sec = t / 1000000000;
		sa.atime.tv_nsec = t % 1000000000;
	}
	if ((sa.mask & API_SET_MTIME) && sa.mtime.tv_nsec == UTIME_OMIT)
		sa.mask &= ~API_SET_MTIME;
	if ((sa.mask & API_SET_ATIME) && sa.atime.tv_nsec == UTIME_OMIT)
		sa.mask &= ~API_SET_ATIME;
	if (sa.mask & API_SET_SIZE) {
		/* the truncate queues behind reads/writes in flight */
		struct rf_wait *t = wait_new(RW_TRUNC, w->cb, w->ud);

		if (!t) {
			pthread_mutex_unlock(&rf->mu);
			setattr_done(w, -ENOMEM, "out of memory");
			return;
		}
		t->off = (uint64_t)sa.size;
		list_add(&n->waits, t);
		serve(n, &q);
		merge_sa(&n->sa, &sa); /* truncate, then the rest */
		pthread_mutex_unlock(&rf->mu);
		q_run(&q);
		wait_free(w);
		return;
	}
	/* travels with the next write-back (which close(2) does) */
	merge_sa(&n->sa, &sa);
	if (!n->opens && !n->storing && n->ld == RF_READY)
		store_start(n, &q);
	pthread_mutex_unlock(&rf->mu);
	q_run(&q);
	((api_done_fn)w->cb)(w->ud, 0, NULL);
	wait_free(w);
}

void api_rfile_setattr(struct api_backend *be, const char *id,
		       const char *path, const struct api_setattr *sa,
		       api_done_fn cb, void *ud)
{
	struct rf_wait *w = path_wait(be, id, path, NULL, (void *)cb, ud);

	if (!w) {
		api_raw_file_setattr(be, id, path, sa, cb, ud);
		return;
	}
	w->sa = *sa;
	w->again = setattr_again;
	setattr_again(w);
}
