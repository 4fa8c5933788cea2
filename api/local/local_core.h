/* local_core.h - what local.c, sandbox.c and files.c share (exec.c only
 * needs local_int.h).  Private to api/local/. */
#ifndef SBXFS_LOCAL_CORE_H
#define SBXFS_LOCAL_CORE_H

#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>

#include "api/local/local_int.h"
#include "api/runtime.h"

#define LOCAL_NWORKERS 3

/* Host IDs of a sandbox's user namespace: 0..LOCAL_ID_RANGE-1 inside are
 * base..base+LOCAL_ID_RANGE-1 outside; bases are LOCAL_ID_FIRST plus a
 * multiple of the range (idmap.c). */
#define LOCAL_ID_RANGE 65536u
#define LOCAL_ID_FIRST 0x10000000u
#define LOCAL_ID_SLOTS 60000u

/* cgroup v1 controllers, in this order (cgroup.c); v2 has one tree. */
enum { LOCAL_CG_FREEZER, LOCAL_CG_MEMORY, LOCAL_CG_PIDS, LOCAL_CG_CPU,
       LOCAL_CG_CPUACCT, LOCAL_CG_MAX };

/* Resource limits of one sandbox (new NAME cpus= memory= pids=). */
struct local_limits {
	double cpus;	  /* CPU time in CPUs; 0: no limit */
	long long memory; /* bytes */
	long pids;	  /* processes and threads */
};

struct local_work;

struct local {
	struct api_backend *be;
	char datadir[1024];	   /* absolute, no trailing slash */
	bool cg_v2;			/* unified cgroup tree */
	bool cg_ctrl[LOCAL_CG_MAX];	/* v1: controller hierarchy usable */
	char image[1024]; /* -o image=DIR, or "" for the default search */
	pthread_mutex_t id_lock; /* allocation of user-namespace ranges */
	char hash[17]; /* of datadir: cgroup names per datadir */

	struct rt *rt;	      /* workers, timers, per-sandbox queues */
	pthread_mutex_t lock; /* (L): busy set */
	/* The lifecycle work in progress, one item per sandbox at most (the
	 * runtime runs a sandbox's work one item at a time, so create, verbs
	 * and destroy never interleave); an item waiting between its steps
	 * stays here.  (L) */
	struct local_work *busy;
	pthread_mutex_t mount_lock; /* serialises overlay (re)mounts */
};

/* local.c */
typedef void (*local_work_fn)(struct local *l, void *arg);
/* Queue fn(arg) on the runtime.  0/-errno (then fn never runs). */
int local_submit(struct local *l, local_work_fn fn, void *arg);
/* Lifecycle work of sandbox `name`: runs after the work submitted for it
 * before, one at a time, with `name` busy (creating: reads "creating")
 * until it is done.  err is 0, or -ETIMEDOUT when it waited its whole
 * request timeout behind the sandbox's other work: then fn must only
 * complete its caller.  fn returns 0 when it is done, or N > 0 to be
 * called again (err 0) after N ms, still holding the sandbox, without
 * holding a worker meanwhile.  0/-errno (then fn never runs). */
typedef int (*local_job_fn)(struct local *l, void *arg, int err);
int local_submit_key(struct local *l, const char *name, bool creating,
		     local_job_fn fn, void *arg);
/* `name` is no longer busy: for fn to call before its callback, so that
 * what the caller reads next is not "busy" or "creating" (done anyway
 * when fn returns). */
void local_busy_release(struct local *l, const char *name);
/* waitpid(pid) on the runtime (inline only when it is shutting down):
 * for children that are about to exit, so no caller waits for them. */
void local_reap(struct local *l, pid_t pid);
/* True while a lifecycle operation holds `name`. */
bool local_busy(struct local *l, const char *name);
/* True while `name` is being created. */
bool local_busy_creating(struct local *l, const char *name);

/* cgroup.c */
int local_cg_init(struct local *l, char *msg, size_t msglen);
long long local_cg_host_memory(void);
int local_cg_create(struct local *l, const char *name,
		    const struct local_limits *lim, char *msg, size_t msglen);
/* Open cgroup.procs of every controller of the sandbox (write "0" to
 * join); returns how many (<= max) or -errno. */
int local_cg_procs_open(struct local *l, const char *name, int *fds,
			int max);
int local_cg_freeze(struct local *l, const char *name, bool frozen);
/* "THAWED", "FREEZING" or "FROZEN" */
int local_cg_state(struct local *l, const char *name, char *st, size_t len);
/* PIDs (host) of the sandbox's processes; how many. */
int local_cg_pids(struct local *l, const char *name, pid_t *pids, int max);
void local_cg_remove(struct local *l, const char *name);
/* Figures of the sandbox's cgroups as "key: value" lines (metrics). */
void local_cg_metrics(struct local *l, const char *name, FILE *out);

/* idmap.c */
int local_userns_map(pid_t pid, unsigned base);
int local_userns_fd(struct local *l, unsigned base);
int local_idmap_mount(struct local *l, const char *src, const char *dst,
		      unsigned base, char *msg, size_t msglen);
int local_id_shift(const char *dir, unsigned from, unsigned to);

/* sandbox.c */
/* [A-Za-z0-9._-]{1,63}, not "." / "..", not "ctl".  0 or -EINVAL. */
int local_name_check(const char *name);
/* Finish or remove sandboxes whose create was interrupted by the death
 * of the sbxfs that ran it (start-up). */
void local_recover(struct local *l);
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
void local_sb_metrics(struct api_backend *be, const char *id, api_str_fn cb,
		      void *ud);
void local_sb_verb(struct api_backend *be, const char *id,
		   enum api_verb verb, const char *arg, api_done_fn cb,
		   void *ud);

/* Where the sandbox's network is: its init's host PID (running only:
 * -EBUSY / -ENOENT with a sentence otherwise) and whether it shares the
 * host's network (network=host). */
int local_sb_net(struct local *l, const char *id, pid_t *pid, bool *host,
		 char *msg, size_t msglen);

/* tags.c: the tags of a sandbox, "a,b,c" in meta.json's "tags" array. */
#define LOCAL_TAGS_MAX 512
struct cJSON;
void local_tags_read(const struct cJSON *o, char *tags, size_t len);
void local_tags_write(struct cJSON *o, const char *tags);
/* Add tag `t` (api_tag_valid; a repeat is ignored).  0, or -EINVAL with a
 * sentence. */
int local_tags_add(char *tags, size_t len, const char *t, char *msg,
		   size_t msglen);

/* templates.c: MOUNT/templates/ (DATADIR/templates/SNAP/). */
void local_tpl_list(struct api_backend *be, api_tpl_fn cb, void *ud);
void local_tpl_delete(struct api_backend *be, const char *name,
		      api_done_fn cb, void *ud);

/* ports.c: NAME/ports/PORT.  A sandbox on the host's network is reached
 * at 127.0.0.1:PORT; one with its own network through a forwarder (a
 * listener on 127.0.0.1, ephemeral port, whose connections are made from
 * inside the sandbox's network namespace), stopped when the sandbox goes
 * or the backend is freed. */
void local_sb_port(struct api_backend *be, const char *id, unsigned port,
		   api_str_fn cb, void *ud);
void local_sb_ports(struct api_backend *be, const char *id, api_str_fn cb,
		    void *ud);
void local_ports_fini(struct local *l);

/* files.c */
#define LOCAL_ROOTC 256
/* Drop the cached root descriptor of sandbox `name` (NULL: all of l's);
 * called whenever its overlay is unmounted. */
void local_files_forget(struct local *l, const char *name);
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
void local_file_fstat(struct api_backend *be, struct api_file *f,
		      api_stat_fn cb, void *ud);
void local_file_ftruncate(struct api_backend *be, struct api_file *f,
			  off_t size, api_done_fn cb, void *ud);
void local_file_mknod(struct api_backend *be, const char *id,
		      const char *path, mode_t mode, api_done_fn cb, void *ud);
void local_file_link(struct api_backend *be, const char *id,
		     const char *from, const char *to, api_done_fn cb,
		     void *ud);

#endif
