/* local_int.h - private header of the local runtime backend (api/local/).
 *
 * Split: local.c (the ops table, init/free, worker queue), sandbox.c
 * (lifecycle: overlay root, namespaces, freezer, snapshot, on-disk state),
 * files.c (file operations resolved inside the sandbox root with openat2
 * RESOLVE_IN_ROOT), exec.c (commands: setns into the sandbox, pipes, one
 * epoll thread for all streams).
 */
#ifndef SBXFS_LOCAL_INT_H
#define SBXFS_LOCAL_INT_H

#include <sys/types.h>

#include "api/api.h"

struct local;

/* The backend's state, be->priv. */
struct local *local_of(struct api_backend *be);

/* Data directory (default /var/lib/sbxfs). */
const char *local_datadir(struct local *l);

/* Host path of the merged root of sandbox `id` (valid while it exists);
 * fills buf, returns 0/-errno. */
int local_sb_root(struct local *l, const char *id, char *buf, size_t len);

/* PID (in the host's PID namespace) of the sandbox's init process, for
 * setns; -ENOENT when no such sandbox, -EBUSY (with a sentence in msg) when
 * it is not running (paused: exec refused rather than hanging; stopped). */
int local_sb_init_pid(struct local *l, const char *id, pid_t *pid,
		      char *msg, size_t msglen);

/* True while a lifecycle verb (stop, destroy, pause...) holds sandbox
 * `name` (local.c; exec.c makes no spare then). */
bool local_busy(struct local *l, const char *name);

/* Open cgroup.procs of every cgroup of the sandbox (exec'd processes
 * join them: pause freezes them too, destroy kills them, limits hold);
 * returns how many descriptors (<= max) or -errno. */
int local_sb_cgroup_fds(struct local *l, const char *id, int *fds, int max);
#define LOCAL_CG_FDS 5

/* seccomp.c: the filter of every sandbox process, built once at init;
 * apply (raw syscalls only) in a forked child right before sandbox code
 * runs.  0/-errno. */
int local_seccomp_init(char *msg, size_t msglen);
void local_seccomp_fini(void);
int local_seccomp_apply(void);

/* caps.c: lower the capabilities of the calling process to the set a
 * sandboxed process keeps (call in a forked child, right before it runs
 * sandbox code).  0/-errno. */
int local_caps_restrict(void);

/* exec.c: the exec slots of api_local_ops, and the stream thread.
 * local_exec_init starts the thread (backend init); local_exec_fini stops
 * it and kills what still runs (backend free).  (Was local_exec_free,
 * which clashed with the exec_free slot below.) */
int local_exec_init(struct local *l);
void local_exec_fini(struct local *l);
void local_exec_start(struct api_backend *be, const char *id,
		      const struct api_exec_req *req,
		      const struct api_exec_cbs *cbs, void *ud,
		      struct api_exec **out);
void local_exec_write(struct api_backend *be, struct api_exec *x,
		      const void *buf, size_t len, api_done_fn cb, void *ud);
void local_exec_close_stdin(struct api_backend *be, struct api_exec *x);
void local_exec_resume(struct api_backend *be, struct api_exec *x);
int local_exec_signal(struct api_backend *be, struct api_exec *x, int sig);
void local_exec_free(struct api_backend *be, struct api_exec *x);
int local_exec_pid(struct api_backend *be, struct api_exec *x);
int local_exec_jobs(struct api_backend *be, const char *id, char ***jobs);
void local_exec_attach(struct api_backend *be, const char *id,
		       const char *job, const struct api_exec_cbs *cbs,
		       void *ud, struct api_exec **out,
		       struct api_exec_info *info);
/* Sandbox `id` is being destroyed: release the monitors of its jobs that
 * no exec is attached to (exec.c). */
void local_exec_forget(struct local *l, const char *id);
/* Stop: the sandbox's processes are dead; reap its proc/ jobs' commands
 * so that its PID namespace can end (M_REAP). */
void local_exec_reap(struct local *l, const char *id);

/* Bounds of the process's own argv area, for a forked child to write
 * over its copy of sbxfs's command line (sandbox.c).  0 or -1. */
int local_argv_area(char **start, size_t *len);

#endif
