/* job_int.h - private to exec.c, proc.c and job.c: parked requests, output
 * spools and the job object.
 *
 * Concurrency in one paragraph (fs/README.md has the essay): every stream
 * object (an exec session, a job) has one mutex.  FUSE handlers and the
 * backend's exec thread take it briefly and never wait under it.  A request
 * that cannot be answered yet (a read with no data, `wait`, a stdin write
 * while the queue is full, the `cmd` write until started()) is *parked*: its
 * fuse_req_t goes on the owner's list and the handler returns; whoever
 * produces the answer (usually the exec callback thread) replies.  No thread
 * sleeps per blocked reader.  api_exec_* calls are made without the owner's
 * lock, guarded by `xbusy` so that freeing the exec waits for them.
 */
#ifndef SBXFS_JOB_INT_H
#define SBXFS_JOB_INT_H

#include <sys/uio.h>

#include "fs/fs_int.h"

/* ---- parked requests ----------------------------------------------------
 *
 * FUSE interrupts: libfuse may call the interrupt function with the `data`
 * it read just before a concurrent reply freed our record, so the data is
 * NULL and the record is found by fuse_req_t in one registry under its own
 * innermost lock.  Whoever *claims* a record (the producer with
 * fs_pend_claim, or the interrupt) replies to it and frees it; the other
 * side leaves it alone.
 */
struct fs_pend {
	struct fs_pend *next, *prev;   /* owner's list (owner's lock) */
	struct fs_pend *rnext, *rprev; /* registry (registry lock) */
	fuse_req_t req;
	bool claimed;		       /* (registry lock) */
	pthread_mutex_t *lock;	       /* the owner's lock */
	void *owner;		       /* a reference, dropped by put */
	void (*put)(void *owner);
	/* what the request wants, owner-defined */
	int what;
	size_t size;
	uint64_t pos;		       /* stdin: queue offset after its bytes */
	void *h;
};

void fs_pend_list_init(struct fs_pend *head);
static inline bool fs_pend_list_empty(const struct fs_pend *head)
{
	return head->next == head;
}
/* Register the interrupt hook.  Call without the owner's lock, before
 * fs_pend_park. */
void fs_pend_arm(fuse_req_t req);
/* New record (owner reference already taken by the caller), or NULL. */
struct fs_pend *fs_pend_new(fuse_req_t req, pthread_mutex_t *lock,
			    void *owner, void (*put)(void *));
/* Owner's lock held.  Parks p on list; returns -EINTR (p not parked, the
 * caller replies and frees) when the request was interrupted already. */
int fs_pend_park(struct fs_pend *list, struct fs_pend *p);
/* Same, for a request that ignores interrupts (never fails). */
void fs_pend_park_nointr(struct fs_pend *list, struct fs_pend *p);
/* Owner's lock held.  true: p is ours, unlinked; reply, then fs_pend_free
 * after dropping the lock.  false: an interrupt owns it; leave it. */
bool fs_pend_claim(struct fs_pend *p);
/* Drops the owner reference and frees p.  Not under the owner's lock. */
void fs_pend_free(struct fs_pend *p);

/* ---- output spool --------------------------------------------------------
 * Bytes [base, end) of a stream kept in 64 KiB chunks; bytes below base
 * were dropped.  The caller's lock protects it. */
struct fs_spool_chunk;
struct fs_spool {
	struct fs_spool_chunk *head, *tail;
	uint64_t base, end;
};

#define FS_SPOOL_IOV_MAX 40

void fs_spool_init(struct fs_spool *s);
void fs_spool_free(struct fs_spool *s);
int fs_spool_append(struct fs_spool *s, const void *buf, size_t len);
/* Up to size bytes from off (base <= off <= end) as at most maxiov iovecs
 * pointing into the spool; returns the byte count. */
size_t fs_spool_iov(const struct fs_spool *s, uint64_t off, size_t size,
		    struct iovec *iov, int maxiov, int *niov);
/* Drop whole chunks that end at or below upto. */
void fs_spool_drop(struct fs_spool *s, uint64_t upto);
static inline uint64_t fs_spool_held(const struct fs_spool *s)
{
	return s->end - s->base;
}

/* ---- jobs ---------------------------------------------------------------- */

#define FS_JOB_NAME_MAX 63
#define FS_JOB_ENV_MAX 64
#define FS_JOB_SPOOL_CAP (8u << 20)  /* per stream, see fs/README.md */
#define FS_JOB_STDIN_CAP (1u << 20)  /* stdin bytes queued before a write
					waits */

enum fs_job_state {
	FS_JOB_CREATED = 0,
	FS_JOB_STARTING, /* cmd written, started() not yet called */
	FS_JOB_RUNNING,
	FS_JOB_EXITED,
};

/* Pending request kinds (fs_pend.what). */
enum { FS_PEND_READ = 1, FS_PEND_WAIT, FS_PEND_STDIN, FS_PEND_CMD };

struct fs_jh; /* an open job file (job.c) */

struct fs_job {
	pthread_mutex_t lock;
	pthread_cond_t cond;	/* xbusy reached 0 */
	int refs;		/* atomic: table + handles + parked requests */
	struct fs *fs;
	char sb_id[API_ID_MAX];
	unsigned sb_slot, sb_gen, slot, gen;
	char name[FS_JOB_NAME_MAX + 1];

	enum fs_job_state state;
	bool removed;		/* rmdir'd: no new api calls */
	bool exec_session;	/* NAME/exec: one merged stream, one reader */
	bool framed;		/* NAME/run: one stream of frames (run.c),
				   one reader */
	int start_err;		/* errno of the last failed start */
	char *cmd;
	char *cwd;
	char *env[FS_JOB_ENV_MAX + 1];
	unsigned nenv;
	struct api_exec *x;
	bool x_pending;		/* fs_job_start has not stored x yet */
	bool start_ok;		/* started(0) came while x_pending: the cmd
				   write is answered once x is stored */
	int pid; /* inside the sandbox, 0 until known */
	unsigned xbusy;		/* api_exec_* calls in flight without lock */
	bool paused;		/* output() returned 1 */
	int code;
	int lost_err;		/* errno for readers once the spool is drained
				   when the backend lost track of the command
				   (0: a real exit, readers get EOF) */
	char killed_by[16];	/* "rmdir" etc., for status */
	struct timespec t_start, t_end;

	struct fs_spool out[2];	/* stdout, stderr */
	struct fs_jh *handles;	/* open files of this job */

	/* stdin: queue of bytes not yet taken by the backend */
	struct fs_spool in;
	uint64_t in_off;	/* bytes of `in` taken by the backend */
	unsigned writers;	/* open stdin handles that may write */
	bool in_used;		/* somebody wrote or held stdin open */
	bool in_stream;		/* started with want_stdin */
	bool in_inflight;	/* an api_exec_write runs */
	size_t in_inflight_len;
	bool in_closed;		/* EOF sent (or never a stream) */

	struct fs_pend reads, waits, writes, cmds;
	struct fs_pollers *pollers;
};

/* job.c */
struct fs_job *fs_job_new(struct fs *fs, struct fs_sb *sb, const char *name,
			  unsigned slot, unsigned gen);
void fs_job_get(struct fs_job *j);
void fs_job_put(struct fs_job *j);
void fs_job_put_v(void *j);
/* Kill if running, finish every parked request, free the exec.  Called
 * once, when the job leaves the table; the table's reference is dropped
 * by the caller afterwards. */
void fs_job_remove(struct fs_job *j);
/* A job left running by an earlier sbxfs (api_exec_jobs): take it over
 * (state, cmd, start time, spooled output, exit).  Called once, right
 * after the job entered the table. */
void fs_job_attach(struct fs_job *j);

/* Write of a command line (job cmd, first write of exec): starts the job
 * and replies once started() said whether it runs. */
void fs_job_start(fuse_req_t req, struct fs_job *j, const char *buf,
		  size_t size);

/* Open files of a job (fi->fh).  The caller keeps its job reference for
 * the handle's lifetime and drops it after fs_jh_close.  *dropped is the
 * stream offset a new reader starts at when earlier bytes were dropped (0
 * normally). */
struct fs_jh *fs_jh_open(struct fs_job *j, enum fs_kind kind, int flags,
			 uint64_t *dropped);
void fs_jh_close(struct fs_jh *h);
struct fs_job *fs_jh_job(struct fs_jh *h);
void fs_jh_read_stream(fuse_req_t req, struct fs_jh *h, size_t size);
void fs_jh_poll(fuse_req_t req, struct fs_jh *h, struct fuse_pollhandle *ph);

/* A write to NAME/run: the command first, then frames (run.c). */
void fs_job_run_write(fuse_req_t req, struct fs_jh *h, const char *buf,
		      size_t size);
/* NAME/run's frames (run.c). */
#define FS_RUN_CMD 'c'	     /* then the command line; stdin empty */
#define FS_RUN_CMD_STDIN 'C' /* the same, stdin a stream */
#define FS_RUN_STDIN '0'
#define FS_RUN_STDIN_END '.'
#define FS_RUN_STDOUT '1'
#define FS_RUN_STDERR '2'
#define FS_RUN_EXIT 'x'
#define FS_RUN_HDR 5 /* tag, then the length: 4 bytes, little-endian */

/* A sentence in the job's sandbox's err file (and the log). */
void fs_job_err(struct fs_job *j, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* How sentences name the job: "exec" for an exec session. */
static inline const char *fs_job_label(const struct fs_job *j)
{
	return j->exec_session ? "exec" : j->name;
}

/* exec.c: what NAME/exec and NAME/run (a session: one job per open)
 * share.  fs_sess_sb: the sandbox of ino (a reference) if its platform
 * runs commands; else NULL, replied (the sentence names `what`).
 * fs_sess_open: j's one handle, kind, opened and replied (true), its
 * reference the handle's; false: replied with the error, j still the
 * caller's.  getattr is gen.c's fs_gen_sb_getattr. */
struct fs_sb *fs_sess_sb(fuse_req_t req, fuse_ino_t ino, const char *what);
bool fs_sess_open(fuse_req_t req, struct fuse_file_info *fi,
		  struct fs_job *j, enum fs_kind kind);
void fs_sess_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr,
		     int to_set, struct fuse_file_info *fi);
void fs_sess_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		  struct fuse_file_info *fi);
void fs_sess_poll(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi,
		  struct fuse_pollhandle *ph);

/* proc.c: the job an inode names (a reference), or NULL with *err. */
struct fs_job *fs_job_get_ino(struct fs *fs, fuse_ino_t ino, int *err);
/* proc.c: a new job NAME in sb's proc/ (a reference for the caller), or
 * NULL with *err; fs_proc_drop takes it out again (and removes it) unless
 * an rmdir or the sandbox's end did already. */
struct fs_job *fs_proc_add(struct fs *fs, struct fs_sb *sb, const char *name,
			   int *err);
void fs_proc_drop(struct fs *fs, struct fs_job *j);

#endif
