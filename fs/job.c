/* job.c - the files of NAME/proc/JOB/ (cmd ctl stdin stdout stderr wait
 * status), the job object they share with exec.c, parked requests and
 * output spools.  See job_int.h for the locking rules and fs/README.md
 * ("Jobs") for the spool and stdin policies. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fs/job_int.h"

/* ---- parked requests ----------------------------------------------------- */

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static struct fs_pend reg = { .rnext = &reg, .rprev = &reg };

void fs_pend_list_init(struct fs_pend *head)
{
	head->next = head->prev = head;
}

static void list_unlink(struct fs_pend *p)
{
	p->prev->next = p->next;
	p->next->prev = p->prev;
	p->next = p->prev = p;
}

/* The interrupt hook: `data` is not trusted (see job_int.h). */
static void pend_intr(fuse_req_t req, void *data)
{
	struct fs_pend *p;

	(void)data;
	pthread_mutex_lock(&reg_lock);
	for (p = reg.rnext; p != &reg; p = p->rnext)
		if (p->req == req)
			break;
	if (p == &reg || p->claimed) {
		pthread_mutex_unlock(&reg_lock);
		return;
	}
	p->claimed = true;
	p->rprev->rnext = p->rnext;
	p->rnext->rprev = p->rprev;
	pthread_mutex_unlock(&reg_lock);

	pthread_mutex_lock(p->lock);
	list_unlink(p);
	pthread_mutex_unlock(p->lock);
	fuse_reply_err(req, EINTR);
	fs_pend_free(p);
}

void fs_pend_arm(fuse_req_t req)
{
	fuse_req_interrupt_func(req, pend_intr, NULL);
}

struct fs_pend *fs_pend_new(fuse_req_t req, pthread_mutex_t *lock,
			    void *owner, void (*put)(void *))
{
	struct fs_pend *p = calloc(1, sizeof *p);

	if (!p)
		return NULL;
	p->next = p->prev = p;
	p->rnext = p->rprev = p;
	p->req = req;
	p->lock = lock;
	p->owner = owner;
	p->put = put;
	return p;
}

int fs_pend_park(struct fs_pend *list, struct fs_pend *p)
{
	pthread_mutex_lock(&reg_lock);
	/* Checked under reg_lock: an interrupt that came before is seen
	 * here, one that comes after finds p in the registry. */
	if (fuse_req_interrupted(p->req)) {
		pthread_mutex_unlock(&reg_lock);
		return -EINTR;
	}
	p->rnext = reg.rnext;
	p->rprev = &reg;
	reg.rnext->rprev = p;
	reg.rnext = p;
	pthread_mutex_unlock(&reg_lock);
	p->next = list;
	p->prev = list->prev;
	list->prev->next = p;
	list->prev = p;
	return 0;
}

void fs_pend_park_nointr(struct fs_pend *list, struct fs_pend *p)
{
	pthread_mutex_lock(&reg_lock);
	p->rnext = reg.rnext;
	p->rprev = &reg;
	reg.rnext->rprev = p;
	reg.rnext = p;
	pthread_mutex_unlock(&reg_lock);
	p->next = list;
	p->prev = list->prev;
	list->prev->next = p;
	list->prev = p;
}

bool fs_pend_claim(struct fs_pend *p)
{
	pthread_mutex_lock(&reg_lock);
	if (p->claimed) {
		pthread_mutex_unlock(&reg_lock);
		return false;
	}
	p->claimed = true;
	p->rprev->rnext = p->rnext;
	p->rnext->rprev = p->rprev;
	pthread_mutex_unlock(&reg_lock);
	list_unlink(p);
	return true;
}

void fs_pend_free(struct fs_pend *p)
{
	if (p->put)
		p->put(p->owner);
	free(p);
}

/* Claimed records waiting for fs_pend_free once the lock is dropped; they
 * are chained through `next` (unlinked from their list already). */
struct done {
	struct fs_pend *first;
};

static void done_add(struct done *d, struct fs_pend *p)
{
	p->next = d->first;
	d->first = p;
}

static void done_flush(struct done *d)
{
	while (d->first) {
		struct fs_pend *p = d->first;

		d->first = p->next;
		fs_pend_free(p);
	}
}

/* ---- spool --------------------------------------------------------------- */

#define CHUNK_MIN 4096
#define CHUNK_MAX (64 * 1024)

struct fs_spool_chunk {
	struct fs_spool_chunk *next;
	uint64_t off;
	size_t len, cap;
	char data[];
};

void fs_spool_init(struct fs_spool *s)
{
	memset(s, 0, sizeof *s);
}

void fs_spool_free(struct fs_spool *s)
{
	while (s->head) {
		struct fs_spool_chunk *c = s->head;

		s->head = c->next;
		free(c);
	}
	s->tail = NULL;
	s->base = s->end;
}

int fs_spool_append(struct fs_spool *s, const void *buf, size_t len)
{
	const char *p = buf;

	while (len) {
		struct fs_spool_chunk *c = s->tail;

		if (!c || c->len == c->cap) {
			/* Small outputs stay small; streams grow to
			 * CHUNK_MAX chunks. */
			size_t cap = c ? c->cap * 2 : CHUNK_MIN;

			if (cap > CHUNK_MAX)
				cap = CHUNK_MAX;
			c = malloc(sizeof *c + cap);
			if (!c)
				return -ENOMEM;
			c->next = NULL;
			c->off = s->end;
			c->len = 0;
			c->cap = cap;
			if (s->tail)
				s->tail->next = c;
			else
				s->head = c;
			s->tail = c;
		}
		size_t n = c->cap - c->len;

		if (n > len)
			n = len;
		memcpy(c->data + c->len, p, n);
		c->len += n;
		s->end += n;
		p += n;
		len -= n;
	}
	return 0;
}

size_t fs_spool_iov(const struct fs_spool *s, uint64_t off, size_t size,
		    struct iovec *iov, int maxiov, int *niov)
{
	size_t got = 0;
	int n = 0;

	for (struct fs_spool_chunk *c = s->head; c && got < size; c = c->next) {
		if (c->off + c->len <= off)
			continue;
		if (n == maxiov)
			break;
		size_t skip = off > c->off ? off - c->off : 0;
		size_t take = c->len - skip;

		if (take > size - got)
			take = size - got;
		iov[n].iov_base = c->data + skip;
		iov[n].iov_len = take;
		n++;
		got += take;
		off += take;
	}
	*niov = n;
	return got;
}

void fs_spool_drop(struct fs_spool *s, uint64_t upto)
{
	while (s->head && s->head->off + s->head->len <= upto &&
	       (s->head->len == s->head->cap || s->head->next ||
		s->head->off + s->head->len == s->end)) {
		struct fs_spool_chunk *c = s->head;

		s->head = c->next;
		if (!s->head)
			s->tail = NULL;
		free(c);
	}
	s->base = s->head ? s->head->off : s->end;
}

/* ---- open job files ------------------------------------------------------ */

/* One open job file (fi->fh).  Readers of a stream keep their own offset:
 * every reader gets the stream from its start. */
struct fs_jh {
	struct fs_jh *next, *prev; /* j->handles (job lock) */
	struct fs_job *j;	   /* a reference */
	enum fs_kind kind;
	int stream;		   /* 0 stdout, 1 stderr (readers) */
	uint64_t off;		   /* next byte of the stream to read */
	bool writer;		   /* stdin opened for writing */
	char *text;		   /* snapshot of cmd/status/ctl for reads */
	size_t textlen;
	/* NAME/run: the stdin frame being written (writes are parsed as one
	 * stream: the kernel splits a write larger than max_write) */
	unsigned char rf_hdr[FS_RUN_HDR];
	unsigned rf_hlen;
	size_t rf_left;		   /* bytes of its data still to come */
	bool rf_bad;		   /* a bad frame: every later write fails */
};

/* ---- the job object ------------------------------------------------------ */

static const struct api_exec_cbs job_cbs;

struct fs_job *fs_job_new(struct fs *fs, struct fs_sb *sb, const char *name,
			  unsigned slot, unsigned gen)
{
	struct fs_job *j = calloc(1, sizeof *j);

	if (!j)
		return NULL;
	pthread_mutex_init(&j->lock, NULL);
	pthread_cond_init(&j->cond, NULL);
	j->refs = 1;
	j->fs = fs;
	snprintf(j->sb_id, sizeof j->sb_id, "%s", sb->id);
	j->sb_slot = sb->slot;
	j->sb_gen = sb->gen;
	j->slot = slot;
	j->gen = gen;
	snprintf(j->name, sizeof j->name, "%s", name);
	j->code = -1;
	fs_spool_init(&j->out[0]);
	fs_spool_init(&j->out[1]);
	fs_spool_init(&j->in);
	fs_pend_list_init(&j->reads);
	fs_pend_list_init(&j->waits);
	fs_pend_list_init(&j->writes);
	fs_pend_list_init(&j->cmds);
	return j;
}

void fs_job_get(struct fs_job *j)
{
	__atomic_add_fetch(&j->refs, 1, __ATOMIC_RELAXED);
}

void fs_job_put(struct fs_job *j)
{
	if (__atomic_sub_fetch(&j->refs, 1, __ATOMIC_ACQ_REL))
		return;
	fs_spool_free(&j->out[0]);
	fs_spool_free(&j->out[1]);
	fs_spool_free(&j->in);
	fs_pollers_free(&j->pollers);
	free(j->cmd);
	free(j->cwd);
	for (unsigned i = 0; i < j->nenv; i++)
		free(j->env[i]);
	pthread_cond_destroy(&j->cond);
	pthread_mutex_destroy(&j->lock);
	free(j);
}

void fs_job_put_v(void *j)
{
	fs_job_put(j);
}

void fs_job_err(struct fs_job *j, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	int err;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	struct fs_sb *sb = fs_sb_get_slot(j->fs, j->sb_slot, j->sb_gen, &err);

	if (sb) {
		fs_sb_set_err(j->fs, sb, "%s", msg);
		fs_sb_put(j->fs, sb);
	} else {
		fs_log("%s", msg);
	}
}

/* xbusy: api_exec_* calls made without the job lock.  Job lock held. */
static struct api_exec *x_enter(struct fs_job *j)
{
	if (j->removed || !j->x)
		return NULL;
	j->xbusy++;
	return j->x;
}

static void x_leave(struct fs_job *j)
{
	if (--j->xbusy == 0)
		pthread_cond_broadcast(&j->cond);
}

static void job_resume(struct fs_job *j)
{
	pthread_mutex_lock(&j->lock);
	struct api_exec *x = x_enter(j);

	pthread_mutex_unlock(&j->lock);
	if (!x)
		return;
	api_exec_resume(j->fs->be, x);
	pthread_mutex_lock(&j->lock);
	x_leave(j);
	pthread_mutex_unlock(&j->lock);
}

/* Lowest offset any open reader of stream s still needs, or UINT64_MAX
 * when there is no reader.  Job lock held. */
static uint64_t min_reader(struct fs_job *j, int s)
{
	uint64_t m = UINT64_MAX;

	for (struct fs_jh *h = j->handles; h; h = h->next)
		if (h->stream == s &&
		    (h->kind == FS_K_JOB_STDOUT || h->kind == FS_K_JOB_STDERR ||
		     h->kind == FS_K_SB_EXEC || h->kind == FS_K_SB_RUN) &&
		    h->off < m)
			m = h->off;
	return m;
}

/* Spool policy (fs/README.md): keep everything up to the cap so that a
 * reader arriving late sees the stream from its start; past the cap drop
 * what every open reader has consumed (exec sessions drop at once: their
 * one reader is the only one there will ever be); if that is not enough,
 * the process is paused until readers catch up.  Returns true when the
 * output may resume.  Job lock held. */
static bool spool_trim(struct fs_job *j)
{
	bool full = false;

	for (int s = 0; s < 2; s++) {
		struct fs_spool *sp = &j->out[s];
		uint64_t m = min_reader(j, s);

		if ((j->exec_session || j->framed) && m != UINT64_MAX) {
			fs_spool_drop(sp, m);
		} else if (fs_spool_held(sp) > FS_JOB_SPOOL_CAP &&
			   m != UINT64_MAX) {
			uint64_t keep = sp->end - FS_JOB_SPOOL_CAP / 2;

			fs_spool_drop(sp, m < keep ? m : keep);
		}
		if (fs_spool_held(sp) > FS_JOB_SPOOL_CAP)
			full = true;
	}
	if (j->paused && !full) {
		j->paused = false;
		return true;
	}
	if (full)
		j->paused = true;
	return false;
}

/* Answer parked reads that can be answered.  Job lock held. */
static void serve_reads(struct fs_job *j, struct done *d)
{
	struct fs_pend *p, *nx;

	for (p = j->reads.next; p != &j->reads; p = nx) {
		nx = p->next;
		struct fs_jh *h = p->h;
		struct fs_spool *sp = &j->out[h->stream];
		bool eof = j->state == FS_JOB_EXITED || j->removed;

		if (h->off >= sp->end && !eof)
			continue;
		if (!fs_pend_claim(p))
			continue;
		if (h->off < sp->end) {
			struct iovec iov[FS_SPOOL_IOV_MAX];
			int n;
			size_t got = fs_spool_iov(sp, h->off, p->size, iov,
						  FS_SPOOL_IOV_MAX, &n);

			h->off += got;
			fuse_reply_iov(p->req, iov, n);
		} else if (j->lost_err) {
			fuse_reply_err(p->req, j->lost_err);
		} else {
			fuse_reply_buf(p->req, NULL, 0);
		}
		done_add(d, p);
	}
}

static void wait_text(struct fs_job *j, char *buf, size_t len)
{
	snprintf(buf, len, "%d\n", j->code);
}

static void serve_waits(struct fs_job *j, struct done *d)
{
	char buf[32];
	struct fs_pend *p, *nx;

	if (j->state != FS_JOB_EXITED)
		return;
	wait_text(j, buf, sizeof buf);
	for (p = j->waits.next; p != &j->waits; p = nx) {
		nx = p->next;
		if (!fs_pend_claim(p))
			continue;
		if (j->code < 0)
			fuse_reply_err(p->req, EIO);
		else
			fs_reply_text(p->req, buf, strlen(buf), p->size, 0);
		done_add(d, p);
	}
}

/* Release parked stdin writes whose bytes now fit in the queue, or fail
 * them all with err.  Job lock held. */
static void serve_writes(struct fs_job *j, int err, struct done *d)
{
	struct fs_pend *p, *nx;

	for (p = j->writes.next; p != &j->writes; p = nx) {
		nx = p->next;
		if (!err && p->pos - j->in_off > FS_JOB_STDIN_CAP)
			break;
		if (!fs_pend_claim(p))
			continue;
		if (err)
			fuse_reply_err(p->req, err);
		else
			fuse_reply_write(p->req, p->size);
		done_add(d, p);
	}
}

static void stdin_done(void *ud, int err, const char *msg);

/* Feed the backend the next stdin bytes, or EOF when the queue is empty
 * and no writer is left.  Called without the job lock. */
static void stdin_pump(struct fs_job *j)
{
	pthread_mutex_lock(&j->lock);
	if (j->state != FS_JOB_RUNNING || !j->in_stream || j->in_closed ||
	    j->in_inflight) {
		pthread_mutex_unlock(&j->lock);
		return;
	}
	struct api_exec *x = x_enter(j);

	if (!x) {
		pthread_mutex_unlock(&j->lock);
		return;
	}
	if (j->in.end > j->in_off) {
		struct iovec iov[1];
		int n;
		size_t len = fs_spool_iov(&j->in, j->in_off, CHUNK_MAX, iov, 1,
					  &n);

		j->in_inflight = true;
		j->in_inflight_len = len;
		pthread_mutex_unlock(&j->lock);
		/* The chunk stays: only stdin_done drops queue bytes, and
		 * in_inflight keeps everybody else off. */
		api_exec_write(j->fs->be, x, iov[0].iov_base, len, stdin_done,
			       j);
	} else if (j->writers == 0) {
		j->in_closed = true;
		pthread_mutex_unlock(&j->lock);
		api_exec_close_stdin(j->fs->be, x);
	} else {
		x_leave(j);
		pthread_mutex_unlock(&j->lock);
		return;
	}
	pthread_mutex_lock(&j->lock);
	x_leave(j);
	pthread_mutex_unlock(&j->lock);
}

static void stdin_done(void *ud, int err, const char *msg)
{
	struct fs_job *j = ud;
	struct done d = { 0 };

	pthread_mutex_lock(&j->lock);
	j->in_inflight = false;
	if (err) {
		/* The job closed its stdin or ended: like a pipe without
		 * reader, further writes fail with EPIPE. */
		if (err != -EPIPE)
			fs_log("job %s: stdin: %s", j->name,
			       msg ? msg : api_strerror(err));
		j->in_closed = true;
		j->in_off = j->in.end;
		fs_spool_drop(&j->in, j->in_off);
		serve_writes(j, EPIPE, &d);
	} else {
		j->in_off += j->in_inflight_len;
		fs_spool_drop(&j->in, j->in_off);
		serve_writes(j, 0, &d);
	}
	fs_pollers_wake(&j->pollers);
	pthread_mutex_unlock(&j->lock);
	done_flush(&d);
	if (!err)
		stdin_pump(j);
}

/* ---- exec callbacks (one backend thread; never block) -------------------- */

/* The start succeeded and x is stored: the job runs (unless it already
 * exited) and the cmd write is answered.  Job lock held. */
static void start_finish(struct fs_job *j, struct done *d)
{
	if (j->state == FS_JOB_STARTING)
		j->state = FS_JOB_RUNNING;
	for (struct fs_pend *p = j->cmds.next, *nx; p != &j->cmds; p = nx) {
		nx = p->next;
		if (!fs_pend_claim(p))
			continue;
		fuse_reply_write(p->req, p->size);
		done_add(d, p);
	}
	fs_pollers_wake(&j->pollers);
}

static void job_started(void *ud, int err, const char *msg)
{
	struct fs_job *j = ud;
	struct done d = { 0 };
	bool pump = false;

	/* The sentence before the writer's reply: it may read `err` as soon
	 * as its write failed. */
	if (err)
		fs_job_err(j, "%s: cannot start: %s",
			fs_job_label(j),
			msg ? msg : api_strerror(err));
	pthread_mutex_lock(&j->lock);
	if (err) {
		/* Back to created so the script can fix things (resume
		 * the sandbox...) and write cmd again.  cmd stays until
		 * then: exec_start may still be looking at it. */
		j->state = FS_JOB_CREATED;
		j->start_err = -err;
		for (struct fs_pend *p = j->cmds.next, *nx; p != &j->cmds;
		     p = nx) {
			nx = p->next;
			if (!fs_pend_claim(p))
				continue;
			fuse_reply_err(p->req, -err);
			done_add(&d, p);
		}
		fs_pollers_wake(&j->pollers);
	} else {
		if (!j->t_start.tv_sec) /* a recovered job keeps its own */
			clock_gettime(CLOCK_REALTIME, &j->t_start);
		if (j->x_pending) {
			/* exec_start has not returned to fs_job_start yet
			 * (the backend's thread was quicker): answering the
			 * cmd write now would let the script's next `kill`
			 * find no exec to signal.  fs_job_start finishes. */
			j->start_ok = true;
		} else {
			start_finish(j, &d);
			pump = j->x != NULL;
		}
	}
	pthread_mutex_unlock(&j->lock);
	done_flush(&d);
	if (pump)
		stdin_pump(j);
}

/* NAME/run: the header of a frame of len bytes (run.c).  Job lock held;
 * 0 or -1 (out of memory). */
static int run_frame(struct fs_job *j, char tag, size_t len)
{
	unsigned char h[FS_RUN_HDR] = { (unsigned char)tag, len & 0xff,
					(len >> 8) & 0xff, (len >> 16) & 0xff,
					(len >> 24) & 0xff };

	return fs_spool_append(&j->out[0], h, sizeof h);
}

static int job_output(void *ud, int stream, const void *buf, size_t len)
{
	struct fs_job *j = ud;
	struct done d = { 0 };
	int s = (stream == 2 && !j->exec_session && !j->framed) ? 1 : 0;
	int ret = 0;

	pthread_mutex_lock(&j->lock);
	if ((j->framed && run_frame(j, stream == 2 ? FS_RUN_STDERR :
						   FS_RUN_STDOUT, len)) ||
	    fs_spool_append(&j->out[s], buf, len)) {
		/* Out of memory: these bytes are lost (buf is only valid
		 * now); pause so that no more follow until readers free
		 * some spool. */
		j->paused = true;
		pthread_mutex_unlock(&j->lock);
		fs_job_err(j, "%s: out of memory: %zu bytes of output lost",
			j->name, len);
		return 1;
	}
	serve_reads(j, &d);
	spool_trim(j);
	if (j->paused)
		ret = 1;
	fs_pollers_wake(&j->pollers);
	pthread_mutex_unlock(&j->lock);
	done_flush(&d);
	/* A pause loses nothing (every byte is still there for the reader),
	 * so it is not an error: status shows it ("output: paused"). */
	return ret;
}

static void job_exited(void *ud, int code, int err, const char *msg)
{
	struct fs_job *j = ud;
	struct done d = { 0 };

	/* What the command made shows through fs/ before anyone can see
	 * that it ended. */
	fs_files_cmd_ended(j->fs, j->sb_slot, j->sb_gen);
	/* The sentence first: a reader that gets EIO below may look at
	 * `err` at once. */
	if (err)
		fs_job_err(j, "%s: lost track of the command: %s",
			fs_job_label(j),
			msg ? msg : api_strerror(err));
	pthread_mutex_lock(&j->lock);
	j->state = FS_JOB_EXITED;
	j->code = err ? -1 : code;
	/* The output may be cut short (a stream lost mid-way): once what
	 * did arrive is read, readers get EIO, never the EOF of a real
	 * exit.  EIO whatever err was, like `wait`: the detail is in
	 * `err`, and errnos such as ECHILD or ECANCELED would mislead a
	 * reader of a pipe. */
	j->lost_err = err ? EIO : 0;
	if (j->framed && !err) {
		/* the last frame: the exit code as `wait` shows it */
		char c[16];
		int n = snprintf(c, sizeof c, "%d", code);

		if (run_frame(j, FS_RUN_EXIT, (size_t)n) ||
		    fs_spool_append(&j->out[0], c, (size_t)n))
			j->lost_err = EIO;
	}
	clock_gettime(CLOCK_REALTIME, &j->t_end);
	j->in_closed = true;
	serve_reads(j, &d);
	serve_waits(j, &d);
	serve_writes(j, EPIPE, &d);
	fs_pollers_wake(&j->pollers);
	pthread_mutex_unlock(&j->lock);
	done_flush(&d);
}

static const struct api_exec_cbs job_cbs = {
	.started = job_started,
	.output = job_output,
	.exited = job_exited,
};

/* ---- start, remove ------------------------------------------------------- */

static void job_start(fuse_req_t req, struct fs_job *j, const char *buf,
		      size_t size, size_t reply);

void fs_job_start(fuse_req_t req, struct fs_job *j, const char *buf,
		  size_t size)
{
	job_start(req, j, buf, size, size);
}

/* The command line is buf[0, size); the write is answered with reply
 * bytes. */
static void job_start(fuse_req_t req, struct fs_job *j, const char *buf,
		      size_t size, size_t reply)
{
	struct api_backend *be = j->fs->be;
	char *line = NULL;
	struct fs_pend *p = NULL;
	struct api_exec *old = NULL, *x = NULL;
	const char *argv[4] = { "/bin/sh", "-c", NULL, NULL };
	struct api_exec_req xr = { 0 };
	char *env[FS_JOB_ENV_MAX + 1];
	char *cwd = NULL;
	size_t len = size;
	struct done d = { 0 };

	char msg[128];

	if (len && buf[len - 1] == '\n')
		len--;
	if (len == 0) {
		fs_job_err(j, "%s: cmd: expected one command line",
			fs_job_label(j));
		fuse_reply_err(req, EINVAL);
		return;
	}
	/* A NUL would cut the command short; other control characters
	 * (escape sequences, \r) are no shell syntax: refuse, run nothing. */
	if (fs_ctl_check(buf, len, msg, sizeof msg)) {
		fs_job_err(j, "%s: cmd: %s", fs_job_label(j),
			msg);
		fuse_reply_err(req, EINVAL);
		return;
	}
	line = strndup(buf, len);
	fs_job_get(j);
	p = fs_pend_new(req, &j->lock, j, fs_job_put_v);
	if (!line || !p) {
		free(line);
		if (p)
			fs_pend_free(p);
		else
			fs_job_put(j);
		fuse_reply_err(req, ENOMEM);
		return;
	}
	p->size = reply;

	pthread_mutex_lock(&j->lock);
	if (j->removed || j->state != FS_JOB_CREATED) {
		int e = j->removed ? ENOENT : EBUSY;

		pthread_mutex_unlock(&j->lock);
		if (e == EBUSY)
			fs_job_err(j, "%s: a command was already started",
				fs_job_label(j));
		fuse_reply_err(req, e);
		free(line);
		fs_pend_free(p);
		return;
	}
	/* stdin: a stream when someone wrote or holds it open; otherwise
	 * /dev/null, so the job never waits for input nobody sends. */
	j->in_stream = j->in_used || j->writers > 0 || j->in.end > 0;
	if (j->in_stream && !api_has(be, API_CAP_EXEC_STDIN)) {
		pthread_mutex_unlock(&j->lock);
		fs_job_err(j, "%s: this platform cannot feed stdin", j->name);
		fuse_reply_err(req, EOPNOTSUPP);
		free(line);
		fs_pend_free(p);
		return;
	}
	j->in_closed = !j->in_stream;
	j->state = FS_JOB_STARTING;
	j->start_err = 0;
	free(j->cmd);
	j->cmd = line;
	old = j->x; /* left by a start that failed late */
	j->x = NULL;
	j->xbusy++;
	j->x_pending = true;
	j->start_ok = false;
	/* Not interruptible: started() always comes (bounded by the
	 * backend's request timeout). */
	fs_pend_park_nointr(&j->cmds, p);
	argv[2] = line;
	for (unsigned i = 0; i < j->nenv; i++)
		env[i] = j->env[i];
	env[j->nenv] = NULL;
	if (j->cwd)
		cwd = strdup(j->cwd);
	pthread_mutex_unlock(&j->lock);

	if (old)
		api_exec_free(be, old);
	xr.argv = argv;
	xr.cwd = cwd;
	xr.env = (const char *const *)env;
	xr.want_stdin = j->in_stream;
	/* a job outlives a crash of sbxfs (fs/README.md "Jobs"); the exec
	 * session is one user's terminal and dies with the mount */
	xr.job = j->exec_session ? NULL : j->name;
	/* `line` and env stay valid: only this job's state change frees
	 * them, and that cannot happen while state is STARTING. */
	api_exec_start(be, j->sb_id, &xr, &job_cbs, j, &x);
	free(cwd);

	pthread_mutex_lock(&j->lock);
	j->x = x;
	j->x_pending = false;
	if (j->start_ok) {
		j->start_ok = false;
		start_finish(j, &d);
	}
	bool pump = x && j->state == FS_JOB_RUNNING;
	bool resume = x && j->paused && spool_trim(j);

	x_leave(j);
	pthread_mutex_unlock(&j->lock);
	done_flush(&d);
	if (resume)
		job_resume(j);
	if (pump)
		stdin_pump(j);
}

void fs_job_attach(struct fs_job *j)
{
	struct api_backend *be = j->fs->be;
	struct api_exec_info info = { 0 };
	struct api_exec *x = NULL;
	struct done d = { 0 };

	pthread_mutex_lock(&j->lock);
	j->state = FS_JOB_STARTING;
	j->in_stream = false;
	j->in_closed = true;
	j->xbusy++;
	j->x_pending = true;
	j->start_ok = false;
	pthread_mutex_unlock(&j->lock);

	api_exec_attach(be, j->sb_id, j->name, &job_cbs, j, &x, &info);

	pthread_mutex_lock(&j->lock);
	j->x = x;
	j->x_pending = false;
	if (x) {
		free(j->cmd);
		j->cmd = info.cmd;
		info.cmd = NULL;
		if (info.t_start.tv_sec)
			j->t_start = info.t_start;
	}
	if (j->start_ok) {
		j->start_ok = false;
		start_finish(j, &d);
	}
	x_leave(j);
	pthread_mutex_unlock(&j->lock);
	done_flush(&d);
	free(info.cmd);
	if (info.lost[0] || info.lost[1])
		fs_job_err(j, "%s: recovered after a restart; output lost while "
			"no sbxfs ran: %llu bytes of stdout, %llu of stderr",
			j->name, (unsigned long long)info.lost[0],
			(unsigned long long)info.lost[1]);
}

void fs_job_remove(struct fs_job *j)
{
	struct done d = { 0 };

	pthread_mutex_lock(&j->lock);
	j->removed = true;
	while (j->xbusy)
		pthread_cond_wait(&j->cond, &j->lock);
	struct api_exec *x = j->x;

	j->x = NULL;
	pthread_mutex_unlock(&j->lock);
	/* Kills the process group if it still runs; no callback after. */
	if (x)
		api_exec_free(j->fs->be, x);

	pthread_mutex_lock(&j->lock);
	if (j->state != FS_JOB_EXITED && j->state != FS_JOB_CREATED) {
		j->state = FS_JOB_EXITED;
		j->code = 128 + SIGKILL;
		snprintf(j->killed_by, sizeof j->killed_by, "removed");
		clock_gettime(CLOCK_REALTIME, &j->t_end);
	}
	j->in_closed = true;
	for (struct fs_pend *p = j->cmds.next, *nx; p != &j->cmds; p = nx) {
		nx = p->next;
		if (!fs_pend_claim(p))
			continue;
		fuse_reply_err(p->req, ENOENT);
		done_add(&d, p);
	}
	serve_reads(j, &d);
	if (j->state != FS_JOB_EXITED) {
		/* Never started: nothing to wait for any more. */
		for (struct fs_pend *p = j->waits.next, *nx; p != &j->waits;
		     p = nx) {
			nx = p->next;
			if (!fs_pend_claim(p))
				continue;
			fuse_reply_err(p->req, ENOENT);
			done_add(&d, p);
		}
	}
	serve_waits(j, &d);
	serve_writes(j, EPIPE, &d);
	fs_pollers_wake(&j->pollers);
	pthread_mutex_unlock(&j->lock);
	done_flush(&d);
}

/* ---- handles ------------------------------------------------------------- */

struct fs_jh *fs_jh_open(struct fs_job *j, enum fs_kind kind, int flags,
			 uint64_t *dropped)
{
	struct fs_jh *h = calloc(1, sizeof *h);

	*dropped = 0;
	if (!h)
		return NULL;
	h->j = j;
	h->kind = kind;
	h->stream = kind == FS_K_JOB_STDERR ? 1 : 0;
	pthread_mutex_lock(&j->lock);
	if (kind == FS_K_JOB_STDOUT || kind == FS_K_JOB_STDERR ||
	    kind == FS_K_SB_EXEC || kind == FS_K_SB_RUN) {
		h->off = j->out[h->stream].base;
		*dropped = h->off;
	}
	if (kind == FS_K_JOB_STDIN && (flags & O_ACCMODE) != O_RDONLY) {
		h->writer = true;
		j->writers++;
		j->in_used = true;
	}
	h->next = j->handles;
	h->prev = NULL;
	if (j->handles)
		j->handles->prev = h;
	j->handles = h;
	pthread_mutex_unlock(&j->lock);
	return h;
}

struct fs_job *fs_jh_job(struct fs_jh *h)
{
	return h->j;
}

/* Unlinks and frees h; the caller still owns its job reference. */
void fs_jh_close(struct fs_jh *h)
{
	struct fs_job *j = h->j;
	bool pump = false, resume;

	pthread_mutex_lock(&j->lock);
	if (h->prev)
		h->prev->next = h->next;
	else
		j->handles = h->next;
	if (h->next)
		h->next->prev = h->prev;
	if (h->writer && --j->writers == 0)
		pump = true;
	/* A lagging reader leaving may let the spool shrink. */
	resume = spool_trim(j);
	pthread_mutex_unlock(&j->lock);
	free(h->text);
	free(h);
	if (resume)
		job_resume(j);
	if (pump)
		stdin_pump(j);
}

/* A read of a stream (job stdout/stderr, exec output). */
void fs_jh_read_stream(fuse_req_t req, struct fs_jh *h, size_t size)
{
	struct fs_job *j = h->j;
	struct fs_spool *sp = &j->out[h->stream];
	struct fs_pend *p;
	bool resume = false;

	fs_pend_arm(req);
	pthread_mutex_lock(&j->lock);
	if (h->off < sp->end) {
		struct iovec iov[FS_SPOOL_IOV_MAX];
		int n;
		size_t got = fs_spool_iov(sp, h->off, size, iov,
					  FS_SPOOL_IOV_MAX, &n);

		h->off += got;
		fuse_reply_iov(req, iov, n);
		resume = spool_trim(j);
		pthread_mutex_unlock(&j->lock);
		if (resume)
			job_resume(j);
		return;
	}
	if (j->state == FS_JOB_EXITED || j->removed) {
		int lost = j->lost_err;

		pthread_mutex_unlock(&j->lock);
		if (lost)
			fuse_reply_err(req, lost);
		else
			fuse_reply_buf(req, NULL, 0);
		return;
	}
	fs_job_get(j);
	p = fs_pend_new(req, &j->lock, j, fs_job_put_v);
	if (!p) {
		pthread_mutex_unlock(&j->lock);
		fs_job_put(j);
		fuse_reply_err(req, ENOMEM);
		return;
	}
	p->what = FS_PEND_READ;
	p->size = size;
	p->h = h;
	int err = fs_pend_park(&j->reads, p);

	pthread_mutex_unlock(&j->lock);
	if (err) {
		fuse_reply_err(req, -err);
		fs_pend_free(p);
	}
}

/* poll() of a stream handle: readable when bytes or EOF are there. */
void fs_jh_poll(fuse_req_t req, struct fs_jh *h, struct fuse_pollhandle *ph)
{
	struct fs_job *j = h->j;
	unsigned ev = 0;

	pthread_mutex_lock(&j->lock);
	bool ended = j->state == FS_JOB_EXITED || j->removed;

	switch (h->kind) {
	case FS_K_JOB_STDOUT:
	case FS_K_JOB_STDERR:
	case FS_K_SB_EXEC:
		if (h->off < j->out[h->stream].end || ended)
			ev |= POLLIN | POLLRDNORM;
		if (h->kind == FS_K_SB_EXEC && j->state == FS_JOB_CREATED)
			ev |= POLLOUT | POLLWRNORM;
		break;
	case FS_K_JOB_WAIT:
		if (ended)
			ev |= POLLIN | POLLRDNORM;
		break;
	case FS_K_JOB_STDIN:
		if (j->in_closed && j->state != FS_JOB_CREATED)
			ev |= POLLERR;
		else if (j->in.end - j->in_off <= FS_JOB_STDIN_CAP)
			ev |= POLLOUT | POLLWRNORM;
		break;
	default:
		ev |= POLLIN | POLLRDNORM | POLLOUT | POLLWRNORM;
		break;
	}
	if (ph) {
		if (ev)
			fuse_pollhandle_destroy(ph);
		else
			fs_pollers_add(&j->pollers, ph);
	}
	pthread_mutex_unlock(&j->lock);
	fuse_reply_poll(req, ev);
}

/* ---- job files ----------------------------------------------------------- */

static void jf_getattr(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	int err;
	struct fs_job *j = fs_job_get_ino(fs_of(req), ino, &err);
	struct stat st;

	(void)fi;
	if (!j) {
		fuse_reply_err(req, -err);
		return;
	}
	fs_job_put(j);
	err = fs_stat_node(fs_of(req), ino, &st);
	if (err) {
		fuse_reply_err(req, -err);
		return;
	}
	fuse_reply_attr(req, &st, 0);
}

static void jf_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr,
		       int to_set, struct fuse_file_info *fi)
{
	/* Shell `>` truncates: accept size 0 and times, refuse the rest. */
	if (((to_set & FUSE_SET_ATTR_SIZE) && attr->st_size != 0) ||
	    (to_set & (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID |
		       FUSE_SET_ATTR_GID))) {
		fuse_reply_err(req, EPERM);
		return;
	}
	jf_getattr(req, ino, fi);
}

static void jf_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	enum fs_kind kind = fs_ino_kind(ino);
	int err, acc = fi->flags & O_ACCMODE;
	struct fs_job *j = fs_job_get_ino(fs, ino, &err);
	uint64_t dropped;

	if (!j) {
		fuse_reply_err(req, -err);
		return;
	}
	if (acc != O_RDONLY &&
	    (kind == FS_K_JOB_STDOUT || kind == FS_K_JOB_STDERR ||
	     kind == FS_K_JOB_WAIT || kind == FS_K_JOB_STATUS)) {
		fs_job_put(j);
		fuse_reply_err(req, EACCES);
		return;
	}
	struct fs_jh *h = fs_jh_open(j, kind, fi->flags, &dropped);

	if (!h) {
		fs_job_put(j);
		fuse_reply_err(req, ENOMEM);
		return;
	}
	if (dropped)
		fs_job_err(j,
			"%s/%s: the first %llu bytes were dropped (spool bound "
			"of %u MiB reached while earlier readers consumed "
			"them); this reader starts at byte %llu",
			j->name, kind == FS_K_JOB_STDERR ? "stderr" : "stdout",
			(unsigned long long)dropped, FS_JOB_SPOOL_CAP >> 20,
			(unsigned long long)dropped);
	fi->fh = (uintptr_t)h;
	fi->direct_io = 1;
	fi->keep_cache = 0;
	/* No FLUSH at close(2): it would do nothing here (stdin's EOF
	 * comes with the last RELEASE) and cost a round trip per close. */
	fi->noflush = 1;
	/* Streams are pipes; text files (cmd, status, wait) keep offsets
	 * so `cat` sees one consistent snapshot. */
	if (kind == FS_K_JOB_STDIN || kind == FS_K_JOB_STDOUT ||
	    kind == FS_K_JOB_STDERR)
		fi->nonseekable = 1;
	fuse_reply_open(req, fi);
}

static void jf_release(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	struct fs_jh *h = (struct fs_jh *)(uintptr_t)fi->fh;
	struct fs_job *j = h->j;

	(void)ino;
	fs_jh_close(h);
	fs_job_put(j);
	fuse_reply_err(req, 0);
}

static void fmt_time(const struct timespec *t, char *buf, size_t len)
{
	struct tm tm;

	if (!t->tv_sec) {
		snprintf(buf, len, "-");
		return;
	}
	gmtime_r(&t->tv_sec, &tm);
	size_t n = strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm);

	snprintf(buf + n, len - n, ".%03ldZ", t->tv_nsec / 1000000);
}

static const char *state_word(enum fs_job_state st)
{
	switch (st) {
	case FS_JOB_RUNNING:
		return "running";
	case FS_JOB_EXITED:
		return "exited";
	default:
		return "created";
	}
}

/* Job lock held.  malloc'd text of a synthetic file, or NULL. */
static char *job_text(struct fs_job *j, enum fs_kind kind, size_t *len)
{
	char *s = NULL;
	int n = -1;

	switch (kind) {
	case FS_K_JOB_CMD:
		n = j->cmd && j->state != FS_JOB_CREATED ?
			    asprintf(&s, "%s\n", j->cmd) :
			    asprintf(&s, "%s", "");
		break;
	case FS_K_JOB_CTL:
		n = asprintf(&s, "kill [SIGNAL]\n%s",
			     j->state == FS_JOB_CREATED ?
				     "cwd DIR\nenv NAME=VALUE\n" : "");
		break;
	case FS_K_JOB_STATUS: {
		char t0[48], t1[48], code[16];

		fmt_time(&j->t_start, t0, sizeof t0);
		fmt_time(&j->t_end, t1, sizeof t1);
		if (j->state == FS_JOB_EXITED && j->code >= 0)
			snprintf(code, sizeof code, "%d", j->code);
		else
			snprintf(code, sizeof code, "-");
		if (j->pid <= 0 && j->x && j->state != FS_JOB_CREATED)
			j->pid = api_exec_pid(j->fs->be, j->x);
		char pid[16] = "-";
		if (j->pid > 0)
			snprintf(pid, sizeof pid, "%d", j->pid);
		n = asprintf(&s,
			     "%s\npid: %s\ncode: %s\nstarted: %s\nended: %s\n"
			     "cmd: %s\nstdout: %llu\nstderr: %llu\n%s%s%s%s",
			     state_word(j->state), pid, code, t0, t1,
			     j->cmd && j->state != FS_JOB_CREATED ? j->cmd : "",
			     (unsigned long long)j->out[0].end,
			     (unsigned long long)j->out[1].end,
			     j->killed_by[0] ? "killed: " : "", j->killed_by,
			     j->killed_by[0] ? "\n" : "",
			     j->paused && j->state == FS_JOB_RUNNING ?
				     "output: paused (spool full, waiting for "
				     "a reader)\n" :
				     "");
		break;
	}
	default:
		break;
	}
	if (n < 0)
		return NULL;
	*len = (size_t)n;
	return s;
}

static void jf_read_wait(fuse_req_t req, struct fs_jh *h, size_t size,
			 off_t off)
{
	struct fs_job *j = h->j;
	char buf[32];

	fs_pend_arm(req);
	pthread_mutex_lock(&j->lock);
	if (j->state == FS_JOB_EXITED) {
		pthread_mutex_unlock(&j->lock);
		if (j->code < 0) {
			fuse_reply_err(req, EIO);
			return;
		}
		wait_text(j, buf, sizeof buf);
		fs_reply_text(req, buf, strlen(buf), size, off);
		return;
	}
	if (j->removed) {
		pthread_mutex_unlock(&j->lock);
		fuse_reply_err(req, ENOENT);
		return;
	}
	fs_job_get(j);
	struct fs_pend *p = fs_pend_new(req, &j->lock, j, fs_job_put_v);

	if (!p) {
		pthread_mutex_unlock(&j->lock);
		fs_job_put(j);
		fuse_reply_err(req, ENOMEM);
		return;
	}
	p->what = FS_PEND_WAIT;
	p->size = size;
	int err = fs_pend_park(&j->waits, p);

	pthread_mutex_unlock(&j->lock);
	if (err) {
		fuse_reply_err(req, -err);
		fs_pend_free(p);
	}
}

static void jf_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	struct fs_jh *h = (struct fs_jh *)(uintptr_t)fi->fh;
	struct fs_job *j = h->j;

	(void)ino;
	switch (h->kind) {
	case FS_K_JOB_STDOUT:
	case FS_K_JOB_STDERR:
		fs_jh_read_stream(req, h, size);
		return;
	case FS_K_JOB_WAIT:
		jf_read_wait(req, h, size, off);
		return;
	case FS_K_JOB_STDIN:
		fuse_reply_err(req, EBADF);
		return;
	default:
		break;
	}
	/* Text files: a fresh snapshot at offset 0, slices after. */
	if (off == 0 || !h->text) {
		size_t len = 0;

		pthread_mutex_lock(&j->lock);
		char *t = job_text(j, h->kind, &len);

		pthread_mutex_unlock(&j->lock);
		if (!t) {
			fuse_reply_err(req, ENOMEM);
			return;
		}
		free(h->text);
		h->text = t;
		h->textlen = len;
	}
	/* Reply from a copy: once the reply is written the reader may close
	 * and RELEASE (another thread) frees h->text while writev is still
	 * returning; ASan checks writev's buffers after the call and would
	 * report that. */
	size_t n = off < 0 || (size_t)off >= h->textlen ? 0 :
		   h->textlen - (size_t)off;

	if (n > size)
		n = size;
	char *copy = n ? malloc(n) : NULL;

	if (n && !copy) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	if (n)
		memcpy(copy, h->text + off, n);
	fuse_reply_buf(req, copy, n);
	free(copy);
}

/* ---- ctl ----------------------------------------------------------------- */

static const struct {
	const char *name;
	int sig;
} signames[] = {
	{ "HUP", SIGHUP },   { "INT", SIGINT },	  { "QUIT", SIGQUIT },
	{ "KILL", SIGKILL }, { "TERM", SIGTERM }, { "USR1", SIGUSR1 },
	{ "USR2", SIGUSR2 }, { "ALRM", SIGALRM }, { "PIPE", SIGPIPE },
	{ "STOP", SIGSTOP }, { "CONT", SIGCONT }, { "TSTP", SIGTSTP },
	{ "WINCH", SIGWINCH },
};

/* "KILL", "SIGKILL", "-9", "9", "kill" -> signal number, or -1. */
static int parse_signal(const char *s)
{
	char *end;

	if (*s == '-')
		s++;
	if (*s >= '0' && *s <= '9') {
		long v = strtol(s, &end, 10);

		return (*end || v < 1 || v > 64) ? -1 : (int)v;
	}
	if (!strncasecmp(s, "SIG", 3))
		s += 3;
	for (size_t i = 0; i < sizeof signames / sizeof signames[0]; i++)
		if (!strcasecmp(s, signames[i].name))
			return signames[i].sig;
	return -1;
}

enum { CTL_KILL, CTL_CWD, CTL_ENV };
static const struct fs_cmdtab ctltab[] = {
	{ CTL_KILL, "kill", 0, 1 },
	{ CTL_CWD, "cwd", 1, 1 },
	{ CTL_ENV, "env", 1, 1 },
};

/* One ctl line.  0/-errno with a sentence in msg. */
static int ctl_line(struct fs_job *j, char *line, char *msg, size_t msglen)
{
	struct fs_cmd c;
	const struct fs_cmdtab *ct;
	int sig = SIGKILL, err = 0;

	if (fs_cmd_parse(line, &c)) {
		snprintf(msg, msglen, "too many words");
		return -EINVAL;
	}
	if (c.nf == 0)
		return 0;
	ct = fs_cmd_lookup(&c, ctltab, sizeof ctltab / sizeof ctltab[0], msg,
			   msglen);
	if (!ct)
		return -EINVAL;
	switch (ct->index) {
	case CTL_KILL: {
		if (c.nf > 1 && (sig = parse_signal(c.f[1])) < 0) {
			snprintf(msg, msglen, "unknown signal '%s'", c.f[1]);
			return -EINVAL;
		}
		pthread_mutex_lock(&j->lock);
		struct api_exec *x =
			j->state == FS_JOB_RUNNING ? x_enter(j) : NULL;

		pthread_mutex_unlock(&j->lock);
		if (!x) {
			snprintf(msg, msglen, "kill: the job is not running");
			return -ESRCH;
		}
		err = api_exec_signal(j->fs->be, x, sig);
		pthread_mutex_lock(&j->lock);
		x_leave(j);
		pthread_mutex_unlock(&j->lock);
		if (err)
			snprintf(msg, msglen, "kill: %s", api_strerror(err));
		return err;
	}
	case CTL_CWD:
	case CTL_ENV:
		if (ct->index == CTL_ENV) {
			const char *eq = strchr(c.f[1], '=');

			if (!eq || eq == c.f[1]) {
				snprintf(msg, msglen,
					 "env: expected NAME=VALUE");
				return -EINVAL;
			}
		}
		pthread_mutex_lock(&j->lock);
		if (j->state != FS_JOB_CREATED || j->xbusy) {
			pthread_mutex_unlock(&j->lock);
			snprintf(msg, msglen, "%s: the job already started",
				 ct->verb);
			return -EBUSY;
		}
		char *v = strdup(c.f[1]);

		if (!v) {
			err = -ENOMEM;
		} else if (ct->index == CTL_CWD) {
			free(j->cwd);
			j->cwd = v;
		} else {
			size_t nl = strchr(v, '=') - v;
			unsigned i;

			for (i = 0; i < j->nenv; i++)
				if (!strncmp(j->env[i], v, nl + 1))
					break;
			if (i < j->nenv) {
				free(j->env[i]);
				j->env[i] = v;
			} else if (j->nenv < FS_JOB_ENV_MAX) {
				j->env[j->nenv++] = v;
			} else {
				free(v);
				snprintf(msg, msglen,
					 "env: at most %d variables",
					 FS_JOB_ENV_MAX);
				err = -ENOSPC;
			}
		}
		pthread_mutex_unlock(&j->lock);
		return err;
	}
	return -EINVAL;
}

static void jf_write_ctl(fuse_req_t req, struct fs_job *j, const char *buf,
			 size_t size)
{
	char *text, *line, *save = NULL;
	char msg[256] = "";
	int err = fs_ctl_check(buf, size, msg, sizeof msg);

	if (err) {
		fs_job_err(j, "%s/ctl: %s", j->name, msg);
		fuse_reply_err(req, -err);
		return;
	}
	text = strndup(buf, size);
	if (!text) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	for (line = strtok_r(text, "\n", &save); line && !err;
	     line = strtok_r(NULL, "\n", &save))
		err = ctl_line(j, line, msg, sizeof msg);
	free(text);
	if (err) {
		fs_job_err(j, "%s/ctl: %s", j->name, msg);
		fuse_reply_err(req, -err);
		return;
	}
	fuse_reply_write(req, size);
}

/* ---- stdin --------------------------------------------------------------- */

/* Answer a write that queued stdin bytes (job lock held, dropped here):
 * at once, or once the job took enough of the queue (backpressure on the
 * writer).  Not interruptible: the bytes are already on their way. */
static void stdin_reply(fuse_req_t req, struct fs_job *j, size_t reply)
{
	struct fs_pend *p;

	j->in_used = true;
	if (j->in.end - j->in_off <= FS_JOB_STDIN_CAP) {
		pthread_mutex_unlock(&j->lock);
		fuse_reply_write(req, reply);
		stdin_pump(j);
		return;
	}
	fs_job_get(j);
	p = fs_pend_new(req, &j->lock, j, fs_job_put_v);
	if (!p) {
		/* Keep the bytes; the writer just misses the backpressure. */
		pthread_mutex_unlock(&j->lock);
		fs_job_put(j);
		fuse_reply_write(req, reply);
		stdin_pump(j);
		return;
	}
	p->what = FS_PEND_STDIN;
	p->size = reply;
	p->pos = j->in.end;
	fs_pend_park_nointr(&j->writes, p);
	pthread_mutex_unlock(&j->lock);
	stdin_pump(j);
}

/* Job lock held: stdin takes no more bytes (EPIPE). */
static bool stdin_shut(struct fs_job *j)
{
	return j->removed || j->state == FS_JOB_EXITED ||
	       (j->in_closed && j->state != FS_JOB_CREATED);
}

static void jf_write_stdin(fuse_req_t req, struct fs_job *j, const char *buf,
			   size_t size)
{
	pthread_mutex_lock(&j->lock);
	if (stdin_shut(j)) {
		pthread_mutex_unlock(&j->lock);
		fuse_reply_err(req, EPIPE);
		return;
	}
	if (fs_spool_append(&j->in, buf, size)) {
		pthread_mutex_unlock(&j->lock);
		fuse_reply_err(req, ENOMEM);
		return;
	}
	stdin_reply(req, j, size);
}

/* Writes to NAME/run after the command: frames of stdin ('0', length,
 * bytes) and its end ('.', length 0), parsed across writes. */
static void run_frames(fuse_req_t req, struct fs_jh *h, const char *buf,
		       size_t size)
{
	struct fs_job *j = h->j;
	bool pump = false, bad = false, shut = false;
	size_t i = 0;

	pthread_mutex_lock(&j->lock);
	while (i < size && !bad && !shut) {
		if (h->rf_left) {
			size_t take = size - i < h->rf_left ? size - i :
							      h->rf_left;

			if (!h->writer || stdin_shut(j)) {
				shut = true;
				break;
			}
			if (fs_spool_append(&j->in, buf + i, take)) {
				pthread_mutex_unlock(&j->lock);
				fuse_reply_err(req, ENOMEM);
				return;
			}
			h->rf_left -= take;
			i += take;
			continue;
		}
		h->rf_hdr[h->rf_hlen++] = (unsigned char)buf[i++];
		if (h->rf_hlen < FS_RUN_HDR)
			continue;
		h->rf_hlen = 0;
		size_t len = (size_t)h->rf_hdr[1] |
			     (size_t)h->rf_hdr[2] << 8 |
			     (size_t)h->rf_hdr[3] << 16 |
			     (size_t)h->rf_hdr[4] << 24;

		if (h->rf_bad) {
			bad = true;
		} else if (h->rf_hdr[0] == FS_RUN_STDIN) {
			if (!h->writer)
				shut = true;
			h->rf_left = len;
		} else if (h->rf_hdr[0] == FS_RUN_STDIN_END && len == 0) {
			if (h->writer) {
				h->writer = false;
				pump = --j->writers == 0;
			}
		} else {
			bad = true;
		}
	}
	if (bad || h->rf_bad) {
		h->rf_bad = true;
		pthread_mutex_unlock(&j->lock);
		fs_job_err(j, "%s: run: expected frames of stdin ('%c', a length "
			"of 4 bytes, little-endian, the bytes) and its end "
			"('%c', length 0)", j->name, FS_RUN_STDIN,
			FS_RUN_STDIN_END);
		fuse_reply_err(req, EINVAL);
		return;
	}
	if (shut) {
		/* the command has no stdin stream, or it ended: the rest of
		 * this frame goes nowhere */
		h->rf_left = 0;
		pthread_mutex_unlock(&j->lock);
		fuse_reply_err(req, EPIPE);
		return;
	}
	if (pump) {
		pthread_mutex_unlock(&j->lock);
		fuse_reply_write(req, size);
		stdin_pump(j);
		return;
	}
	stdin_reply(req, j, size);
}

void fs_job_run_write(fuse_req_t req, struct fs_jh *h, const char *buf,
		      size_t size)
{
	struct fs_job *j = h->j;
	bool first, in = size >= 1 && buf[0] == FS_RUN_CMD_STDIN;

	pthread_mutex_lock(&j->lock);
	first = j->state == FS_JOB_CREATED && !j->removed;
	/* the command, with or without a stdin stream (run.c): h is
	 * stdin's writer for a stream */
	if (first && in && size >= 2 && !h->writer) {
		h->writer = true;
		j->writers++;
		j->in_used = true;
	}
	pthread_mutex_unlock(&j->lock);
	if (!first) {
		run_frames(req, h, buf, size);
	} else if (size < 2 || (buf[0] != FS_RUN_CMD && !in)) {
		fs_job_err(j, "%s: run: the first write is '%c' or '%c' and a "
			   "command line", j->name, FS_RUN_CMD,
			   FS_RUN_CMD_STDIN);
		fuse_reply_err(req, EINVAL);
	} else {
		/* answered with the whole size: the mode byte too */
		job_start(req, j, buf + 1, size - 1, size);
	}
}

static void jf_write(fuse_req_t req, fuse_ino_t ino, const char *buf,
		     size_t size, off_t off, struct fuse_file_info *fi)
{
	struct fs_jh *h = (struct fs_jh *)(uintptr_t)fi->fh;

	(void)ino;
	(void)off;
	switch (h->kind) {
	case FS_K_JOB_CMD:
		fs_job_start(req, h->j, buf, size);
		return;
	case FS_K_JOB_CTL:
		jf_write_ctl(req, h->j, buf, size);
		return;
	case FS_K_JOB_STDIN:
		jf_write_stdin(req, h->j, buf, size);
		return;
	default:
		fuse_reply_err(req, EBADF);
		return;
	}
}

static void jf_poll(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi,
		    struct fuse_pollhandle *ph)
{
	(void)ino;
	fs_jh_poll(req, (struct fs_jh *)(uintptr_t)fi->fh, ph);
}

const struct fuse_lowlevel_ops fs_job_file_ops = {
	.getattr = jf_getattr,
	.setattr = jf_setattr,
	.open = jf_open,
	.read = jf_read,
	.write = jf_write,
	.release = jf_release,
	.poll = jf_poll,
};
