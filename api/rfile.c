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
	RW_BATCH, /* launch a batch (w->batch) */
};

/* Small-file batching: at most this many files, content bytes, script
 * bytes (the script is one argv string: Linux caps one at 128 KiB) per
 * batch; a queue idle this long is sent. */
#define BATCH_N 512
#define BATCH_BYTES (16u << 20)
#define BATCH_SCRIPT 60000
#define BATCH_IDLE_NS 30000000LL

struct rf_node;

/* A descriptor: what struct api_file points to for this layer. */
struct rf_handle {
	struct rf_node *n;
	int flags;
	uint64_t eseq; /* deferred errors of the sandbox seen up to here */
};

struct rf_batch;

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
	bool deferred; /* store: no close/fsync waits on its result */
	struct rf_batch *batch;
};

struct rf_node {
	struct rf_node *next;
	struct api_rfile *rf;
	char id[API_ID_MAX];
	char *path;	   /* NULL once unlinked or replaced */
	int opens;	   /* descriptors */
	int wopens;	   /* of them open for writing */
	bool fetching, storing;
	bool queued;   /* waits in the batch queue (closed, dirty) */
	bool in_batch; /* its store is part of a batch in flight */
	bool via_link; /* opened through a symlink: stored alone */
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
	/* batching (ops->store_batch) */
	bool batching, stop, kick, thr_on;
	uint64_t batch_max;
	size_t nqueued;
	int64_t q_last; /* CLOCK_MONOTONIC ns of the last enqueue */
	unsigned bseq;
	pthread_t thr;
	pthread_cond_t cv;	/* wakes the batch thread */
	pthread_cond_t idle_cv; /* a store ended (drain) */
	struct rf_eseq *eseq;
};

/* Deferred write-back errors of one sandbox (Linux's errseq_t): every
 * descriptor open before an error sees it once, at close or fsync. */
struct rf_eseq {
	struct rf_eseq *next;
	char id[API_ID_MAX];
	uint64_t seq;
	bool seen; /* reported to some descriptor */
	int err;
	char msg[256];
};

static struct rf_eseq *eseq_find(struct api_rfile *rf, const char *id,
				 bool make)
{
	struct rf_eseq *e;

	for (e = rf->eseq; e; e = e->next)
		if (!strcmp(e->id, id))
			return e;
	if (!make || !(e = calloc(1, sizeof(*e))))
		return NULL;
	snprintf(e->id, sizeof(e->id), "%s", id);
	e->next = rf->eseq;
	rf->eseq = e;
	return e;
}

static void eseq_record(struct api_rfile *rf, const char *id, int err,
			const char *msg)
{
	struct rf_eseq *e = eseq_find(rf, id, true);

	if (!e)
		return;
	e->seq++;
	e->seen = false;
	e->err = err;
	snprintf(e->msg, sizeof(e->msg), "%s", msg ? msg : api_strerror(err));
}

/* What a new descriptor starts from: an error nobody has seen yet is
 * still reported to it (errseq_sample). */
static uint64_t eseq_now(struct api_rfile *rf, const char *id)
{
	struct rf_eseq *e = eseq_find(rf, id, false);

	return e ? e->seq - !e->seen : 0;
}

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
static void batch_go(struct rf_batch *b);

/* A close/fsync that succeeded reports a deferred error of its sandbox
 * that this descriptor has not seen yet. */
static void eseq_check(struct rf_wait *w)
{
	struct rf_handle *h = w->h;
	struct api_rfile *rf = h->n->rf;
	struct rf_eseq *e;

	pthread_mutex_lock(&rf->mu);
	e = eseq_find(rf, h->n->id, false);
	if (e && e->seq != h->eseq) {
		h->eseq = e->seq;
		e->seen = true;
		w->err = e->err;
		snprintf(w->msg, sizeof(w->msg), "%s", e->msg);
	}
	pthread_mutex_unlock(&rf->mu);
}

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
		case RW_BATCH:
			batch_go(w->batch);
			free(w);
			continue;
		case RW_FLUSH:
			if (!w->err && w->h)
				eseq_check(w);
			m = w->err ? (w->msg[0] ? w->msg :
				      api_strerror(w->err)) : NULL;
			((api_done_fn)w->cb)(w->ud, w->err, m);
			break;
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

static int64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
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
	    n->flushes || n->afters || n->queued)
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
static bool enqueue(struct rf_node *n);

/* A store failed: what it did not apply is pending again, unless set
 * anew meanwhile. */
static void merge_back(struct rf_node *n)
{
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
}

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
	n->in_batch = false;
	pthread_cond_broadcast(&rf->idle_cv);
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
		merge_back(n);
		n->failed_gen = n->store_gen;
		/* nobody waits on it: the next close/fsync of the sandbox
		 * reports it */
		if (c->deferred)
			eseq_record(rf, n->id, err, msg);
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
	    !n->storing && (n->flushes || !n->opens) &&
	    (n->flushes || !enqueue(n)))
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
	c->deferred = !n->flushes;
	n->store_sa = c->sa;
	n->sa.mask = 0;
	n->storing = true;
	n->store_gen = n->gen;
	n->store_fd = fd;
	q_add(q, c);
}

/* ---- small-file batching ------------------------------------------------ */

/* A batch: the archive (local O_TMPFILE), the script that lands it and
 * one store record per file (finished with store_done, as a lone store
 * would be). */
struct rf_batch {
	struct api_rfile *rf;
	char id[API_ID_MAX];
	size_t n;
	struct rf_wait **cs;
	struct api_rf_member *m;
	int fd;
	uint64_t len;
	char *apath, *script;
};

static bool batchable(const struct rf_node *n)
{
	const struct api_rfile *rf = n->rf;

	return rf->batching && n->path && n->ld == RF_READY &&
	       !n->via_link && !n->storing &&
	       (n->gen != n->clean_gen || !n->remote) &&
	       api_stage_size(n->st) <= rf->batch_max;
}

/* Queue n for the next batch of its sandbox (rf->mu held): false when
 * it must be stored alone. */
static bool enqueue(struct rf_node *n)
{
	struct api_rfile *rf = n->rf;

	if (!n->queued) {
		/* after api_rfile_drain began, files are stored alone */
		if (rf->stop || !batchable(n))
			return false;
		n->queued = true;
		rf->nqueued++;
	}
	rf->q_last = mono_ns();
	pthread_cond_signal(&rf->cv);
	return true;
}

static void dequeue(struct rf_node *n)
{
	if (n->queued) {
		n->queued = false;
		n->rf->nqueued--;
	}
}

static int put_all(int fd, uint64_t *off, const void *buf, size_t len)
{
	const char *p = buf;
	ssize_t k;

	while (len) {
		k = pwrite(fd, p, len, (off_t)*off);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return k < 0 ? -errno : -EIO;
		p += k;
		len -= (size_t)k;
		*off += (uint64_t)k;
	}
	return 0;
}

static int put_pad(int fd, uint64_t *off)
{
	static const char zero[512];
	size_t r = (size_t)(*off % 512);

	return r ? put_all(fd, off, zero, 512 - r) : 0;
}

static void oct_field(unsigned char *f, size_t w, uint64_t v)
{
	char tmp[32];

	snprintf(tmp, sizeof(tmp), "%0*llo", (int)(w - 1),
		 (unsigned long long)v);
	memcpy(f, tmp, w - 1);
	f[w - 1] = '\0';
}

static int ustar_block(int fd, uint64_t *off, const char *name, char type,
		       mode_t mode, uid_t uid, gid_t gid, uint64_t size,
		       int64_t mtime)
{
	unsigned char h[512];
	unsigned sum = 0;
	size_t nl = strlen(name), i;
	char tmp[8];

	memset(h, 0, sizeof(h));
	memcpy(h, name, nl > 99 ? 99 : nl); /* a pax path says the rest */
	oct_field(h + 100, 8, mode & 07777);
	oct_field(h + 108, 8, uid > 07777777 ? 0 : uid);
	oct_field(h + 116, 8, gid > 07777777 ? 0 : gid);
	oct_field(h + 124, 12, size);
	oct_field(h + 136, 12, mtime < 0 ? 0 : (uint64_t)mtime);
	h[156] = (unsigned char)type;
	memcpy(h + 257, "ustar", 6);
	memcpy(h + 263, "00", 2);
	memset(h + 148, ' ', 8);
	for (i = 0; i < sizeof(h); i++)
		sum += h[i];
	snprintf(tmp, sizeof(tmp), "%06o", sum);
	memcpy(h + 148, tmp, 7);
	h[155] = ' ';
	return put_all(fd, off, h, sizeof(h));
}

/* Append one pax record "LEN key=value\n" to *buf. */
static int pax_rec(char **buf, size_t *len, const char *key, const char *val)
{
	size_t body = strlen(key) + strlen(val) + 3, n = body + 1, d;
	char *nb, num[24];

	for (;;) { /* LEN counts its own digits */
		d = (size_t)snprintf(num, sizeof(num), "%zu", n);
		if (body + d == n)
			break;
		n = body + d;
	}
	nb = realloc(*buf, *len + n + 1);
	if (!nb)
		return -ENOMEM;
	snprintf(nb + *len, n + 1, "%zu %s=%s\n", n, key, val);
	*buf = nb;
	*len += n;
	return 0;
}

/* One member: a pax header when the name, nanoseconds, atime or ids need
 * it, the ustar header, the content of n. */
static int tar_member(int fd, uint64_t *off, const char *name,
		      const struct stat *st, bool atime, struct rf_node *n)
{
	char *pax = NULL, v[64];
	size_t pl = 0;
	uint64_t size = (uint64_t)st->st_size;
	loff_t in = 0, out;
	int err = 0;

	if (strlen(name) > 99)
		err = pax_rec(&pax, &pl, "path", name);
	if (!err && st->st_mtim.tv_nsec) {
		snprintf(v, sizeof(v), "%lld.%09ld",
			 (long long)st->st_mtim.tv_sec,
			 (long)st->st_mtim.tv_nsec);
		err = pax_rec(&pax, &pl, "mtime", v);
	}
	if (!err && atime) {
		snprintf(v, sizeof(v), "%lld.%09ld",
			 (long long)st->st_atim.tv_sec,
			 (long)st->st_atim.tv_nsec);
		err = pax_rec(&pax, &pl, "atime", v);
	}
	if (!err && st->st_uid > 07777777) {
		snprintf(v, sizeof(v), "%u", (unsigned)st->st_uid);
		err = pax_rec(&pax, &pl, "uid", v);
	}
	if (!err && st->st_gid > 07777777) {
		snprintf(v, sizeof(v), "%u", (unsigned)st->st_gid);
		err = pax_rec(&pax, &pl, "gid", v);
	}
	if (!err && pax) {
		err = ustar_block(fd, off, "././@PaxHeader", 'x', 0644, 0, 0,
				  pl, st->st_mtim.tv_sec);
		if (!err)
			err = put_all(fd, off, pax, pl);
		if (!err)
			err = put_pad(fd, off);
	}
	free(pax);
	if (!err)
		err = ustar_block(fd, off, name, '0', st->st_mode, st->st_uid,
				  st->st_gid, size, st->st_mtim.tv_sec);
	out = (loff_t)*off;
	while (!err && size) {
		ssize_t k = copy_file_range(api_stage_fd(n->st), &in, fd,
					    &out, size, 0);

		if (k <= 0)
			err = k < 0 ? -errno : -EIO;
		else
			size -= (uint64_t)k;
	}
	if (!err) {
		*off = (uint64_t)out;
		err = put_pad(fd, off);
	}
	return err;
}

static void batch_free(struct rf_batch *b)
{
	if (b->fd >= 0)
		close(b->fd);
	free(b->cs);
	free(b->m);
	free(b->apath);
	free(b->script);
	free(b);
}

static void batch_done(void *ud, int err, const char *msg)
{
	struct rf_batch *b = ud;
	struct rf_wait **cs = b->cs;
	size_t i, n = b->n;

	b->cs = NULL;
	batch_free(b);
	for (i = 0; i < n; i++)
		store_done(cs[i], err, msg);
	free(cs);
}

static void batch_go(struct rf_batch *b)
{
	b->rf->ops->store_batch(b->rf->be, b->id, b->fd, b->len, b->apath,
				b->script, b->m, b->n, batch_done, b);
}

struct sbuf {
	char *s;
	size_t n, cap;
	bool oom;
};

static void sb_add(struct sbuf *b, const char *t)
{
	size_t l = strlen(t);

	if (b->oom)
		return;
	if (b->n + l + 1 > b->cap) {
		size_t nc = (b->n + l + 1) * 2;
		char *ns = realloc(b->s, nc);

		if (!ns) {
			b->oom = true;
			return;
		}
		b->s = ns;
		b->cap = nc;
	}
	memcpy(b->s + b->n, t, l + 1);
	b->n += l;
}

static char *dir_of(const char *p)
{
	const char *sl = strrchr(p, '/');

	return sl == p ? strdup("/") : strndup(p, (size_t)(sl - p));
}

/* The temporary directory of batch seq in dir d (hidden: is_temp). */
static char *tmp_in(const char *d, unsigned seq, size_t k)
{
	char *t = NULL;

	if (asprintf(&t, "%s/.sbxfs-%d-b%u-%zu.tmp.d", strcmp(d, "/") ? d : "",
		     (int)getpid(), seq, k) < 0)
		return NULL;
	return t;
}

/* Fail the store records of a batch that could not be made. */
static void batch_abort(struct rf_batch *b, size_t k, int err,
			struct rf_q *q)
{
	size_t i;

	for (i = 0; i < k; i++) {
		struct rf_node *n = b->cs[i]->n;
		struct rf_wait *w;

		n->storing = n->in_batch = false;
		n->failed_gen = n->store_gen;
		merge_back(n);
		eseq_record(b->rf, n->id, err, "cannot build the batch archive");
		while ((w = n->flushes)) {
			n->flushes = w->next;
			wait_fail(w, err, "cannot build the batch archive");
			q_add(q, w);
		}
		release_afters(n, q);
		b->cs[i]->n = NULL;
		wait_free(b->cs[i]);
		maybe_free(n);
	}
	batch_free(b);
}

/* Send one batch of the queued files of sandbox id (rf->mu held): up to
 * the limits; what cannot go in a batch is stored alone.  Always takes
 * at least one file off the queue. */
static void batch_send(struct api_rfile *rf, const char *id, struct rf_q *q)
{
	const char *tmpd = getenv("TMPDIR");
	struct rf_batch *b = calloc(1, sizeof(*b));
	struct rf_node *n, **ns = calloc(BATCH_N, sizeof(*ns));
	char **dirs = calloc(BATCH_N, sizeof(*dirs));
	char **tmps = calloc(BATCH_N, sizeof(*tmps));
	size_t *dix = calloc(BATCH_N, sizeof(*dix));
	size_t k = 0, nd = 0, i, j, est = 200;
	uint64_t bytes = 0, off = 0;
	struct sbuf sc = { 0 };
	char *q1 = NULL;
	int err = 0;

	if (!b || !ns || !dirs || !tmps || !dix)
		goto oom;
	b->rf = rf;
	b->fd = -1;
	snprintf(b->id, sizeof(b->id), "%s", id);
	for (n = rf->nodes; n && k < BATCH_N; n = n->next) {
		char *d;
		uint64_t sz;

		if (!n->queued || strcmp(n->id, id))
			continue;
		if (!batchable(n) && !n->storing) {
			dequeue(n);
			if (n->path && dirty(n) && n->ld == RF_READY)
				store_start(n, q);
			maybe_free(n); /* n->next stays valid: not freed */
			continue;
		}
		sz = api_stage_size(n->st);
		if (k && (bytes + sz > BATCH_BYTES ||
			  est + 4 * strlen(n->path) + 8 > BATCH_SCRIPT))
			break;
		d = dir_of(n->path);
		if (!d)
			goto oom;
		for (j = 0; j < nd; j++)
			if (!strcmp(dirs[j], d))
				break;
		if (j == nd) {
			dirs[nd++] = d;
			est += 8 * strlen(d) + 120;
		} else {
			free(d);
		}
		dix[k] = j;
		est += 4 * (strlen(n->path) - strlen(dirs[j])) + 8;
		if (n->remote) /* the owner-keeping line below */
			est += 8 * (strlen(n->path) - strlen(dirs[j])) + 80;
		bytes += sz;
		ns[k++] = n;
	}
	if (!k)
		goto out;
	b->cs = calloc(k, sizeof(*b->cs));
	b->m = calloc(k, sizeof(*b->m));
	if (!b->cs || !b->m)
		goto oom;
	rf->bseq++;
	for (j = 0; j < nd; j++)
		if (!(tmps[j] = tmp_in(dirs[j], rf->bseq, j)))
			goto oom;
	if (asprintf(&b->apath, "%s/.sbxfs-%d-b%u.tmp.tar",
		     strcmp(dirs[0], "/") ? dirs[0] : "", (int)getpid(),
		     rf->bseq) < 0) {
		b->apath = NULL;
		goto oom;
	}
	if (!tmpd || tmpd[0] != '/')
		tmpd = "/tmp";
	b->fd = open(tmpd, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (b->fd < 0) {
		err = -errno;
		goto fail;
	}
	/* the records and the archive: each file as its stat shows it */
	for (i = 0; i < k; i++) {
		struct rf_wait *c = wait_new(RW_STORE, NULL, NULL);
		struct stat st;
		char *mem = NULL;
		bool at;

		n = ns[i];
		if (!c || !(c->path = strdup(n->path))) {
			free(c);
			err = -ENOMEM;
			goto fail_k;
		}
		node_stat(n, &st);
		st.st_mode = S_IFREG | (st.st_mode & 07777);
		at = (n->sa.mask & API_SET_ATIME) != 0;
		if (asprintf(&mem, "%s/%s", tmps[dix[i]] + 1,
			     n->path + strlen(dirs[dix[i]]) +
				     (strcmp(dirs[dix[i]], "/") ? 1 : 0)) < 0) {
			wait_free(c);
			err = -ENOMEM;
			goto fail_k;
		}
		err = tar_member(b->fd, &off, mem, &st, at, n);
		free(mem);
		if (err) {
			wait_free(c);
			goto fail_k;
		}
		c->n = n;
		c->be = rf->be;
		c->len = (uint64_t)st.st_size;
		c->sa = n->sa;
		c->sa.mask |= API_SET_MODE | API_SET_MTIME;
		c->sa.mode = st.st_mode & 07777;
		c->sa.mtime = st.st_mtim;
		c->deferred = !n->flushes;
		b->cs[i] = c;
		b->m[i].path = c->path;
		b->m[i].st = st;
		dequeue(n);
		n->store_sa = c->sa;
		n->sa.mask = 0;
		n->storing = n->in_batch = true;
		n->store_gen = n->gen;
		b->n = i + 1;
		continue;
fail_k:
		goto fail;
	}
	{
		static const char zero[1024];

		err = put_all(b->fd, &off, zero, sizeof(zero));
		if (err)
			goto fail;
	}
	b->len = off;
	/* the script: make the temporaries, unpack, rename each file into
	 * place (one mv per directory), always clean up */
	q1 = api_shell_quote(b->apath);
	sb_add(&sc, "a=");
	sb_add(&sc, q1 ? q1 : "''");
	sb_add(&sc, "; c() { rm -rf -- \"$a\"");
	for (j = 0; j < nd; j++) {
		char *qt = api_shell_quote(tmps[j]);

		sb_add(&sc, " ");
		sb_add(&sc, qt ? qt : "''");
		free(qt);
	}
	sb_add(&sc, "; }; mkdir --");
	for (j = 0; j < nd; j++) {
		char *qt = api_shell_quote(tmps[j]);

		sb_add(&sc, " ");
		sb_add(&sc, qt ? qt : "''");
		free(qt);
	}
	sb_add(&sc, " || { r=$?; c; exit $r; }; "
		    "tar -x -p -f \"$a\" -C / || { r=$?; c; exit $r; }; r=0");
	for (j = 0; j < nd; j++) {
		char *qt = api_shell_quote(tmps[j]);

		sb_add(&sc, "; cd ");
		sb_add(&sc, qt ? qt : "''");
		free(qt);
		/* a file we replace keeps its owner unless one was set (the
		 * listing gives no owner, tar would make it ours) */
		for (i = 0; i < k; i++) {
			char *qb;

			if (dix[i] != j || !ns[i]->remote ||
			    (b->cs[i]->sa.mask & (API_SET_UID | API_SET_GID)))
				continue;
			qb = api_shell_quote(ns[i]->path + strlen(dirs[j]) +
					     (strcmp(dirs[j], "/") ? 1 : 0));
			sb_add(&sc, " && { o=$(stat -c %u:%g -- ../");
			sb_add(&sc, qb ? qb : "''");
			sb_add(&sc, " 2>/dev/null) && chown \"$o\" -- ");
			sb_add(&sc, qb ? qb : "''");
			sb_add(&sc, " 2>/dev/null; true; }");
			free(qb);
		}
		sb_add(&sc, " && mv -f --");
		for (i = 0; i < k; i++) {
			char *qb;

			if (dix[i] != j)
				continue;
			qb = api_shell_quote(ns[i]->path + strlen(dirs[j]) +
					     (strcmp(dirs[j], "/") ? 1 : 0));
			sb_add(&sc, " ");
			sb_add(&sc, qb ? qb : "''");
			free(qb);
		}
		sb_add(&sc, " .. || r=1");
	}
	sb_add(&sc, "; cd /; c; exit $r");
	if (!q1)
		sc.oom = true;
	free(q1);
	if (sc.oom) {
		err = -ENOMEM;
		goto fail;
	}
	b->script = sc.s;
	sc.s = NULL;
	{
		struct rf_wait *w = wait_new(RW_BATCH, NULL, NULL);

		if (!w) {
			err = -ENOMEM;
			goto fail;
		}
		w->batch = b;
		q_add(q, w);
	}
	b = NULL;
	goto out;
oom:
	err = -ENOMEM;
fail:
	j = b && b->cs ? b->n : 0;
	if (b && b->cs)
		batch_abort(b, b->n, err, q);
	else if (b)
		batch_free(b);
	b = NULL;
	if (!k) /* nothing selected: take one off the queue anyway */
		for (n = rf->nodes; n; n = n->next)
			if (n->queued && !strcmp(n->id, id) && k < BATCH_N &&
			    ns) {
				ns[k++] = n;
				break;
			}
	/* nodes selected but not yet in the batch: stored alone */
	for (i = j; ns && i < k; i++) {
		n = ns[i];
		if (n->queued) {
			dequeue(n);
			if (!n->storing && n->path && dirty(n))
				store_start(n, q);
			maybe_free(n);
		}
	}
out:
	free(sc.s);
	for (j = 0; j < nd; j++) {
		free(dirs[j]);
		free(tmps[j]);
	}
	free(dirs);
	free(tmps);
	free(dix);
	free(ns);
	if (b)
		batch_free(b);
}

/* Send every queued file (rf->mu held). */
static void batch_send_all(struct api_rfile *rf, struct rf_q *q)
{
	struct rf_node *n;

	while (rf->nqueued) {
		for (n = rf->nodes; n && !n->queued; n = n->next)
			;
		if (!n) {
			rf->nqueued = 0;
			break;
		}
		batch_send(rf, n->id, q);
	}
}

static bool queued_in(struct api_rfile *rf, const char *id)
{
	struct rf_node *n;

	for (n = rf->nodes; n; n = n->next)
		if (n->queued && !strcmp(n->id, id))
			return true;
	return false;
}

/* The batch thread: sends the queue once it has been idle a moment, or
 * is large, or someone asked (kick). */
static void *batch_main(void *arg)
{
	struct api_rfile *rf = arg;
	struct rf_q q = { 0 };

	pthread_mutex_lock(&rf->mu);
	while (!rf->stop) {
		int64_t due = rf->q_last + BATCH_IDLE_NS;

		if (!rf->nqueued) {
			pthread_cond_wait(&rf->cv, &rf->mu);
			continue;
		}
		if (!rf->kick && rf->nqueued < BATCH_N && mono_ns() < due) {
			struct timespec ts = { .tv_sec = due / 1000000000,
					       .tv_nsec = due % 1000000000 };

			pthread_cond_timedwait(&rf->cv, &rf->mu, &ts);
			continue;
		}
		rf->kick = false;
		batch_send_all(rf, &q);
		pthread_mutex_unlock(&rf->mu);
		q_run(&q);
		pthread_mutex_lock(&rf->mu);
	}
	pthread_mutex_unlock(&rf->mu);
	return NULL;
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
	{
		pthread_condattr_t ca;

		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		pthread_cond_init(&rf->cv, &ca);
		pthread_cond_init(&rf->idle_cv, &ca);
		pthread_condattr_destroy(&ca);
	}
	be->rf = rf;
	if (ops->store_batch) {
		rf->batch_max = 1u << 20;
		rf->batching = !pthread_create(&rf->thr, NULL, batch_main, rf);
		rf->thr_on = rf->batching;
	}
	return 0;
}

void api_rfile_config(struct api_backend *be, uint64_t file_max,
		      bool sync_close)
{
	struct api_rfile *rf = be->rf;

	if (!rf)
		return;
	pthread_mutex_lock(&rf->mu);
	rf->batch_max = file_max;
	if (sync_close || !file_max)
		rf->batching = false;
	pthread_mutex_unlock(&rf->mu);
}

static void batch_stop(struct api_rfile *rf)
{
	pthread_mutex_lock(&rf->mu);
	rf->stop = true;
	pthread_cond_broadcast(&rf->cv);
	pthread_mutex_unlock(&rf->mu);
	if (rf->thr_on)
		pthread_join(rf->thr, NULL);
	rf->thr_on = false;
}

void api_rfile_drain(struct api_backend *be, double timeout)
{
	struct api_rfile *rf = be->rf;
	int64_t end;
	struct rf_node *n;

	if (!rf)
		return;
	batch_stop(rf);
	end = mono_ns() + (int64_t)((timeout > 1 ? timeout : 1) * 1e9);
	pthread_mutex_lock(&rf->mu);
	for (;;) {
		struct rf_q q = { 0 };
		struct timespec ts = { .tv_sec = end / 1000000000,
				       .tv_nsec = end % 1000000000 };

		batch_send_all(rf, &q);
		if (q.head) {
			pthread_mutex_unlock(&rf->mu);
			q_run(&q);
			pthread_mutex_lock(&rf->mu);
			continue;
		}
		for (n = rf->nodes; n && !n->storing; n = n->next)
			;
		if (!n || pthread_cond_timedwait(&rf->idle_cv, &rf->mu,
						 &ts) == ETIMEDOUT)
			break;
	}
	pthread_mutex_unlock(&rf->mu);
}

void api_rfile_free(struct api_backend *be)
{
	struct api_rfile *rf = be->rf;

	if (!rf)
		return;
	batch_stop(rf);
	while (rf->eseq) {
		struct rf_eseq *e = rf->eseq;

		rf->eseq = e->next;
		free(e);
	}
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
	pthread_cond_destroy(&rf->cv);
	pthread_cond_destroy(&rf->idle_cv);
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
	/* what waits in the batch queue goes now */
	while (queued_in(rf, id))
		batch_send(rf, id, &q);
	for (n = rf->nodes; n; n = n->next) {
		if (n->in_batch && !strcmp(n->id, id)) {
			/* a batch in flight: its command never syncs */
			w = wait_new(RW_FLUSH, (void *)sync_one, b);
			if (!w)
				continue;
			w->gen = n->store_gen;
			b->left++;
			list_add(&n->flushes, w);
			continue;
		}
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
	w->h->eseq = eseq_now(n->rf, n->id);
	n->opens++;
	n->wopens += acc != O_RDONLY;
	/* a writer takes it off the queue (queued again at its last
	 * close); a reader leaves it there: `tail -f` must not hold back
	 * a file's landing */
	if (acc != O_RDONLY)
		dequeue(n);
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
	if (S_ISLNK(st->st_mode)) { /* opened through: a regular file */
		n->base.st_mode = S_IFREG | 0644;
		n->via_link = true;
	}
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

static bool pending_in(struct api_rfile *rf, const char *id)
{
	struct rf_node *n;

	for (n = rf->nodes; n; n = n->next)
		if ((n->queued || n->in_batch) && !strcmp(n->id, id))
			return true;
	return false;
}

static void open_synced(void *ud)
{
	struct rf_wait *w = ud;

	api_raw_file_stat(w->be, w->id, w->path, open_statted, w);
}

void api_rfile_open(struct api_backend *be, const char *id,
		    const char *path, int flags, mode_t mode, api_open_fn cb,
		    void *ud)
{
	struct api_rfile *rf = be->rf;
	struct rf_wait *w = wait_new(RW_OPEN, (void *)cb, ud);
	struct rf_node *n;
	struct rf_q q = { 0 };
	bool pending;
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
	pending = !(flags & O_CREAT) && pending_in(rf, w->id);
	pthread_mutex_unlock(&rf->mu);
	/* an existing file we do not hold may be one we queued under
	 * another name (a symlink on the way): what is queued lands first */
	if (pending && api_rfile_sync(rf, w->id, open_synced, w))
		return;
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

static void flush_to(struct api_backend *be, struct api_file *f,
		     api_done_fn cb, void *ud, bool sync)
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
	w->h = h;
	pthread_mutex_lock(&rf->mu);
	if (!sync && rf->batching && !rf->stop && !n->via_link &&
	    api_stage_size(n->st) <= rf->batch_max) {
		/* close(2) of a small file: written back with the next
		 * batch (last close); a deferred error of the sandbox this
		 * descriptor has not seen is returned (q_run) */
		q_add(&q, w);
	} else if (!n->path || (!dirty(n) && !n->storing) ||
	    (n->ld != RF_READY && !n->storing)) {
		/* nothing to write back (or unlinked: never stored) */
		q_add(&q, w);
	} else {
		w->gen = n->gen;
		list_add(&n->flushes, w);
		if (!n->storing && dirty(n)) {
			dequeue(n);
			store_start(n, &q);
		}
	}
	pthread_mutex_unlock(&rf->mu);
	q_run(&q);
}

void api_rfile_flush(struct api_backend *be, struct api_file *f,
		     api_done_fn cb, void *ud)
{
	flush_to(be, f, cb, ud, false);
}

void api_rfile_fsync(struct api_backend *be, struct api_file *f,
		     api_done_fn cb, void *ud)
{
	flush_to(be, f, cb, ud, true);
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
	n->wopens -= (h->flags & O_ACCMODE) != O_RDONLY;
	/* the last close writes back what no flush did (mmap pages
	 * written after the flush, a descriptor closed without one); not
	 * what a flush already failed to store and said so: a create whose
	 * write-back failed leaves no file */
	if (n->path && dirty(n) && !n->storing && n->ld == RF_READY &&
	    n->gen != n->failed_gen) {
		/* the last writer queues it, even while readers hold it
		 * (a release can come after the next open) */
		if (!(!n->wopens && enqueue(n)) && !n->opens)
			store_start(n, &q);
	}
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
		/* open files keep their data until the last close; a
		 * queued new file just goes (0 calls) */
		dequeue(n);
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
		if (n->queued)
			batch_send(rf, n->id, &q);
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
	if (n->queued)
		enqueue(n); /* travels in the batch; the delay restarts */
	else if (!n->opens && !n->storing && n->ld == RF_READY &&
		 !enqueue(n))
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
