/* local_core.h - what local.c, sandbox.c and files.c share (exec.c only
 * needs local_int.h).  Private to api/local/. */
#ifndef SBXFS_LOCAL_CORE_H
#define SBXFS_LOCAL_CORE_H

#include <limits.h>
#include <pthread.h>
#include <stdbool.h>

#include "api/local/local_int.h"

#define LOCAL_NWORKERS 3
#define LOCAL_MAX_BUSY 64

struct local_work;

struct local {
	struct api_backend *be;
	char datadir[1024];	   /* absolute, no trailing slash */
	char cgroup_base[256]; /* freezer dir holding our sandboxes */
	char hash[17]; /* of datadir: cgroup names per datadir */

	pthread_mutex_t lock; /* (L): queue, busy set */
	pthread_cond_t cond;  /* queue not empty / busy set shrank */
	struct local_work *head, *tail;
	bool stopping;
	pthread_t workers[LOCAL_NWORKERS];
	int nworkers;
	/* Sandboxes with a lifecycle operation in flight: one at a time per
	 * sandbox, so create/verbs/destroy never interleave. */
	char busy[LOCAL_MAX_BUSY][64];
	bool busy_creating[LOCAL_MAX_BUSY];
	pthread_mutex_t mount_lock; /* serialises overlay (re)mounts */
};

/* local.c */
typedef void (*local_work_fn)(struct local *l, void *arg);
/* Queue fn(arg) on the worker pool.  0/-errno (then fn never runs). */
int local_submit(struct local *l, local_work_fn fn, void *arg);
/* Mark sandbox `name` busy, waiting (bounded by the timeout) while another
 * operation holds it.  0, -ETIMEDOUT or -ENOSPC. */
int local_busy_acquire(struct local *l, const char *name, bool creating);
void local_busy_release(struct local *l, const char *name);
/* True while a lifecycle operation holds `name`. */
bool local_busy(struct local *l, const char *name);
/* True while `name` is being created. */
bool local_busy_creating(struct local *l, const char *name);

/* sandbox.c */
/* [A-Za-z0-9._-]{1,63}, not "." / "..", not "ctl".  0 or -EINVAL. */
int local_name_check(const char *name);
/* Remove what destroys left in DATADIR/tmp (in the background). */
void local_sweep_trash(struct local *l);
/* Make sure the overlay of an existing sandbox is mounted on its root.
 * 0/-errno with a sentence in msg. */
int local_sb_mount(struct local *l, const char *name, char *msg,
		   size_t msglen);
void local_sb_list(struct api_backend *be, api_list_fn cb, void *ud);
void local_sb_get(struct api_backend *be, const char *id, api_sandbox_fn cb,
		  void *ud);
void local_sb_create(struct api_backend *be, const char *name,
		     const struct api_kv *kv, size_t nkv, api_sandbox_fn cb,
		     void *ud);
void local_sb_verb(struct api_backend *be, const char *id,
		   enum api_verb verb, const char *arg, api_done_fn cb,
		   void *ud);

/* files.c */
void local_file_stat(struct api_backend *be, const char *id,
		     const char *path, api_stat_fn cb, void *ud);
void local_file_readdir(struct api_backend *be, const char *id,
			const char *path, api_readdir_fn cb, void *ud);
void local_file_open(struct api_backend *be, const char *id,
		     const char *path, int flags, mode_t mode,
		     api_open_fn cb, void *ud);
void local_file_read(struct api_backend *be, struct api_file *f, off_t off,
		     size_t size, api_data_fn cb, void *ud);
void local_file_write(struct api_backend *be, struct api_file *f, off_t off,
		      const void *buf, size_t len, api_size_fn cb, void *ud);
void local_file_flush(struct api_backend *be, struct api_file *f,
		      api_done_fn cb, void *ud);
void local_file_close(struct api_backend *be, struct api_file *f,
		      api_done_fn cb, void *ud);
void local_file_mkdir(struct api_backend *be, const char *id,
		      const char *path, mode_t mode, api_done_fn cb,
		      void *ud);
void local_file_unlink(struct api_backend *be, const char *id,
		       const char *path, api_done_fn cb, void *ud);
void local_file_rmdir(struct api_backend *be, const char *id,
		      const char *path, api_done_fn cb, void *ud);
void local_file_rename(struct api_backend *be, const char *id,
		       const char *from, const char *to, unsigned flags,
		       api_done_fn cb, void *ud);
void local_file_setattr(struct api_backend *be, const char *id,
			const char *path, const struct api_setattr *sa,
			api_done_fn cb, void *ud);
void local_file_symlink(struct api_backend *be, const char *id,
			const char *target, const char *path,
			api_done_fn cb, void *ud);
void local_file_readlink(struct api_backend *be, const char *id,
			 const char *path, api_str_fn cb, void *ud);

#endif
