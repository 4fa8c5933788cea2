/* api.h - the one door to sandbox platforms.
 *
 * A backend (local runtime, Wrenn, CW Sandbox, ...) is a `const struct
 * api_ops` table with capability bits, modelled on curl's `struct Curl_ssl`.
 * Everything above api/ (fs/, src/, tools/) talks to platforms only through
 * the functions declared here.
 *
 * Asynchrony contract (read this before using any operation):
 *
 *  - Every operation takes a completion callback and a `void *ud`.  The
 *    callback is called exactly once, either before the operation returns
 *    (inline, e.g. a local stat) or later from a backend-owned thread.  The
 *    caller must cope with both.  No operation ever blocks its caller on the
 *    network or on a sandbox state change: that is what lets a FUSE handler
 *    call in and reply from the callback (libfuse low-level async replies).
 *  - Errors are 0 or -errno, nothing else.  When err != 0, `msg` is a human
 *    sentence (never NULL on error; may be NULL on success) for the
 *    sandbox's `err` file and the log.  It is only valid during the
 *    callback.
 *  - Pointers passed to a callback (records, buffers, strings) are only
 *    valid during the callback: copy what you keep.
 *  - Pointers passed *into* an operation (paths, buffers, argv) only need to
 *    stay valid until the operation returns: backends copy what they keep.
 *  - Every operation that waits on a platform is bounded by the backend's
 *    request timeout (`-o timeout=SECONDS`), ending in -ETIMEDOUT.
 *  - A backend refuses an operation it lacks with -EOPNOTSUPP; the generic
 *    layer (api.c) emulates some of them once for every backend (see the
 *    API_CAP_* bits).
 */
#ifndef SBXFS_API_H
#define SBXFS_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>

struct fuse_args;

/* ---- sandbox records ---------------------------------------------------- */

enum api_state {
	API_ST_UNKNOWN = 0,
	API_ST_CREATING,
	API_ST_RUNNING,
	API_ST_PAUSED,
	API_ST_STOPPING,
	API_ST_STOPPED,
	API_ST_FAILED,
	API_ST_DESTROYED, /* gone from the platform */
	API_ST__COUNT
};

/* "running", "paused", ... ; never NULL. */
const char *api_state_name(enum api_state st);
/* Parse a state word (case-insensitive), API_ST_UNKNOWN if not known. */
enum api_state api_state_parse(const char *word);

#define API_ID_MAX 128

struct api_sandbox {
	char id[API_ID_MAX];	   /* platform ID: the directory name, or
				      with API_CAP_ALIAS a symlink to NAME */
	char name[API_ID_MAX];	   /* NAME the user chose (the directory
				      with API_CAP_ALIAS), "" = id */
	char template[API_ID_MAX]; /* template/snapshot it started from */
	enum api_state state;
	time_t created;		   /* unix seconds, 0 if unknown */
	const char *info_json;	   /* platform's record as JSON, or NULL */
	const char *tags;	   /* API_CAP_TAGS: the tags given at create
				      as "a,b,c" (each [A-Za-z0-9._-]), or
				      NULL / "" for none */
};

/* A template or snapshot new sandboxes can start from (MOUNT/templates/,
 * API_CAP_TEMPLATES). */
struct api_template {
	char name[API_ID_MAX];	/* what `new NAME template=` takes */
	char kind[16];		/* "snapshot", "template", "base", ... */
	long long size;		/* bytes on the platform, -1 unknown */
	time_t created;		/* unix seconds, 0 unknown */
	const char *info_json;	/* the platform's record as JSON, or NULL */
};

/* key=value settings given to `new NAME k=v ...` or mount defaults. */
struct api_kv {
	const char *key;
	const char *value;
};

/* ---- lifecycle verbs ---------------------------------------------------- */

enum api_verb {
	API_VERB_START = 0,
	API_VERB_STOP,	   /* arg: grace seconds ("" = backend default) */
	API_VERB_PAUSE,
	API_VERB_RESUME,
	API_VERB_PING,
	API_VERB_SNAPSHOT, /* arg: snapshot name (required) */
	API_VERB_DESTROY,
	API_VERB__COUNT
};

const char *api_verb_name(enum api_verb v);
/* Returns the verb or -1 when `word` is not a verb. */
int api_verb_parse(const char *word);

/* ---- capability bits ---------------------------------------------------- */

#define API_CAP_VERB(v) (1u << (v))	/* backend supports verb v */
#define API_CAP_FILES (1u << 16)	/* fs/ file operations */
#define API_CAP_EXEC (1u << 17)		/* exec_* operations */
#define API_CAP_EXEC_STDIN (1u << 18)	/* exec with a stdin stream */
#define API_CAP_RENAME (1u << 19)	/* native rename (else exec mv) */
#define API_CAP_SETATTR (1u << 20)	/* native chmod/utimens/truncate */
#define API_CAP_SYMLINK (1u << 21)	/* native symlink/readlink */
#define API_CAP_ALIAS (1u << 22)	/* platform assigns IDs: the ID is a
					   symlink to the NAME directory */
#define API_CAP_RANDOM_WRITE (1u << 23) /* pwrite at any offset without
					   staging (local) */
#define API_CAP_MKNOD (1u << 24)	/* native FIFOs and sockets (else exec
					   mkfifo; sockets EOPNOTSUPP) */
#define API_CAP_LINK (1u << 25)		/* native hard links (else exec ln) */
#define API_CAP_METRICS (1u << 26)	/* sb_metrics: NAME/metrics */
#define API_CAP_TEMPLATES (1u << 27)	/* tpl_list, tpl_delete:
					   MOUNT/templates/ */
#define API_CAP_PORTS (1u << 28)	/* sb_port(s): NAME/ports/PORT */
#define API_CAP_TAGS (1u << 29)		/* new NAME tag=T, api_sandbox.tags:
					   MOUNT/.tags/T/ */

/* ---- files -------------------------------------------------------------- */

/* One entry of a directory listing, with attributes filled from the same
 * platform call (so `ls -l` costs one round trip). */
struct api_dirent {
	const char *name;
	struct stat st;
};

/* Attribute changes, one call for chmod / chown / truncate / utimens. */
#define API_SET_MODE (1u << 0)
#define API_SET_UID (1u << 1)
#define API_SET_GID (1u << 2)
#define API_SET_SIZE (1u << 3)
#define API_SET_ATIME (1u << 4)
#define API_SET_MTIME (1u << 5)

struct api_setattr {
	unsigned mask;
	mode_t mode;
	uid_t uid;
	gid_t gid;
	off_t size;
	struct timespec atime, mtime; /* tv_nsec may be UTIME_NOW */
};

/* An open file inside a sandbox.  Opaque; owned by the backend from
 * file_open's callback until file_close's callback has run. */
struct api_file;

/* ---- exec --------------------------------------------------------------- */

struct api_exec_req {
	const char *const *argv; /* NULL-terminated; argv[0] looked up in PATH */
	const char *cwd;	 /* NULL: the sandbox user's home */
	const char *const *env;	 /* NULL-terminated "NAME=VALUE", added to the
				    sandbox's default environment; may be NULL */
	bool tty;		 /* run on a pseudo-terminal */
	bool want_stdin;	 /* stdin is a stream fed by exec_write; when
				    false stdin is empty (/dev/null) */
	const char *job;	 /* non-NULL: keep the command recoverable
				    under this name (exec_jobs/exec_attach
				    after a restart); NULL: it dies with us */
};

/* A recovered command (exec_attach): what was recorded at its start and
 * how much output was lost while nobody was attached. */
struct api_exec_info {
	char *cmd;		 /* malloc'd command line (caller frees) */
	struct timespec t_start; /* CLOCK_REALTIME at start */
	uint64_t lost[2];	 /* stdout, stderr bytes dropped */
};

/* A running (or finished) command.  Opaque; owned by the caller from
 * exec_start until exec_free. */
struct api_exec;

/* Callbacks of one exec, called from a backend thread (never inline from
 * exec_start, so the caller may finish setting up after exec_start returns
 * but before its own lock is dropped).  For one exec they never run
 * concurrently with each other.
 *
 *  started: once, first. err != 0 means it never ran; nothing else follows.
 *  output:  stream 1 = stdout, 2 = stderr.  Bytes exactly as produced.
 *           Return 0 to keep reading, or 1 to pause this exec's output
 *           (flow control: a full spool pushes back on the process); call
 *           exec_resume to continue.  Data in `buf` is only valid during
 *           the call.
 *  exited:  once, last, after all output.  code is as a shell reports it:
 *           0-255, 128+N when killed by signal N.  err != 0 when the
 *           platform lost track of the command (code is then -1). */
struct api_exec_cbs {
	void (*started)(void *ud, int err, const char *msg);
	int (*output)(void *ud, int stream, const void *buf, size_t len);
	void (*exited)(void *ud, int code, int err, const char *msg);
};

/* ---- callbacks ---------------------------------------------------------- */

typedef void (*api_done_fn)(void *ud, int err, const char *msg);
typedef void (*api_sandbox_fn)(void *ud, int err, const char *msg,
			       const struct api_sandbox *sb);
typedef void (*api_list_fn)(void *ud, int err, const char *msg,
			    const struct api_sandbox *sbs, size_t n);
typedef void (*api_stat_fn)(void *ud, int err, const char *msg,
			    const struct stat *st);
typedef void (*api_readdir_fn)(void *ud, int err, const char *msg,
			       const struct api_dirent *ents, size_t n);
typedef void (*api_open_fn)(void *ud, int err, const char *msg,
			    struct api_file *f);
typedef void (*api_data_fn)(void *ud, int err, const char *msg,
			    const void *buf, size_t len);
typedef void (*api_size_fn)(void *ud, int err, const char *msg, size_t n);
typedef void (*api_str_fn)(void *ud, int err, const char *msg,
			   const char *s);
typedef void (*api_tpl_fn)(void *ud, int err, const char *msg,
			   const struct api_template *t, size_t n);

struct api_backend;

/* ---- the operations table ----------------------------------------------- */

/* Slots may be NULL when the capability bit is absent; the wrappers below
 * then answer -EOPNOTSUPP (or emulate, where noted). */
struct api_ops {
	const char *name; /* "local", "wrenn", ... */
	unsigned caps;	  /* API_CAP_* */
	const char *help; /* backend's own -o options, for --help */

	/* Set up from SOURCE's part after the colon (NULL if none) and the
	 * backend's own -o options (removed from args).  Returns 0/-errno and
	 * prints a sentence to stderr on failure. */
	int (*init)(struct api_backend *be, const char *arg,
		    struct fuse_args *args);
	/* Stop threads, free everything. Running sandboxes stay. */
	void (*free)(struct api_backend *be);

	/* sandboxes */
	void (*sb_list)(struct api_backend *be, api_list_fn cb, void *ud);
	void (*sb_get)(struct api_backend *be, const char *id,
		       api_sandbox_fn cb, void *ud);
	/* Create NAME with settings; completes when it is running. */
	void (*sb_create)(struct api_backend *be, const char *name,
			  const struct api_kv *kv, size_t nkv,
			  api_sandbox_fn cb, void *ud);
	/* Apply a verb; completes when the target state is reached. */
	/* Resource figures of a sandbox as "key: value" lines (cpu_seconds,
	 * memory_bytes, pids, disk_bytes...; the keys each backend has). */
	void (*sb_metrics)(struct api_backend *be, const char *id,
			   api_str_fn cb, void *ud);
	void (*sb_verb)(struct api_backend *be, const char *id,
			enum api_verb verb, const char *arg, api_done_fn cb,
			void *ud);
	/* Templates and snapshots (API_CAP_TEMPLATES): the list, and delete
	 * one by name (-ENOENT unknown, -EPERM a platform's own, -EBUSY in
	 * use where the platform says so). */
	void (*tpl_list)(struct api_backend *be, api_tpl_fn cb, void *ud);
	void (*tpl_delete)(struct api_backend *be, const char *name,
			   api_done_fn cb, void *ud);
	/* API_CAP_PORTS: the URL (one line, no newline) a client on this
	 * machine uses to reach TCP `port` (1-65535) in the sandbox; and the
	 * ports the platform knows of as "PORT\n" lines ("" if none). */
	void (*sb_port)(struct api_backend *be, const char *id,
			unsigned port, api_str_fn cb, void *ud);
	void (*sb_ports)(struct api_backend *be, const char *id,
			 api_str_fn cb, void *ud);

	/* files; paths are absolute inside the sandbox ("/etc/passwd") */
	void (*file_stat)(struct api_backend *be, const char *id,
			  const char *path, api_stat_fn cb, void *ud);
	void (*file_readdir)(struct api_backend *be, const char *id,
			     const char *path, api_readdir_fn cb, void *ud);
	/* flags: O_RDONLY/O_WRONLY/O_RDWR | O_CREAT | O_EXCL | O_TRUNC |
	 * O_APPEND.  Remote backends stage: O_TRUNC never truncates the
	 * remote copy before the new content is uploaded. */
	void (*file_open)(struct api_backend *be, const char *id,
			  const char *path, int flags, mode_t mode,
			  api_open_fn cb, void *ud);
	void (*file_read)(struct api_backend *be, struct api_file *f,
			  off_t off, size_t size, api_data_fn cb, void *ud);
	void (*file_write)(struct api_backend *be, struct api_file *f,
			   off_t off, const void *buf, size_t len,
			   api_size_fn cb, void *ud);
	/* Upload staged data (remote), fsync (local).  Its error is what
	 * close(2) returns. */
	void (*file_flush)(struct api_backend *be, struct api_file *f,
			   api_done_fn cb, void *ud);
	/* Frees f (after flushing if the caller did not). */
	void (*file_close)(struct api_backend *be, struct api_file *f,
			   api_done_fn cb, void *ud);
	void (*file_mkdir)(struct api_backend *be, const char *id,
			   const char *path, mode_t mode, api_done_fn cb,
			   void *ud);
	void (*file_unlink)(struct api_backend *be, const char *id,
			    const char *path, api_done_fn cb, void *ud);
	void (*file_rmdir)(struct api_backend *be, const char *id,
			   const char *path, api_done_fn cb, void *ud);
	/* flags: RENAME_NOREPLACE / RENAME_EXCHANGE or 0 */
	void (*file_rename)(struct api_backend *be, const char *id,
			    const char *from, const char *to, unsigned flags,
			    api_done_fn cb, void *ud);
	void (*file_setattr)(struct api_backend *be, const char *id,
			     const char *path, const struct api_setattr *sa,
			     api_done_fn cb, void *ud);
	void (*file_symlink)(struct api_backend *be, const char *id,
			     const char *target, const char *path,
			     api_done_fn cb, void *ud);
	/* Target exactly as stored in the sandbox (fs/ rewrites absolute
	 * targets for the host view). */
	void (*file_readlink)(struct api_backend *be, const char *id,
			      const char *path, api_str_fn cb, void *ud);
	/* A FIFO (S_IFIFO) or unix socket (S_IFSOCK) node; `mode` carries
	 * type and permissions.  Device nodes are refused with EPERM by
	 * every backend (api.c checks before calling). */
	void (*file_mknod)(struct api_backend *be, const char *id,
			   const char *path, mode_t mode, api_done_fn cb,
			   void *ud);
	/* Attributes and size change of an open file (also after it was
	 * unlinked or renamed); optional: without them fs/ falls back to the
	 * path. */
	void (*file_fstat)(struct api_backend *be, struct api_file *f,
			   api_stat_fn cb, void *ud);
	void (*file_ftruncate)(struct api_backend *be, struct api_file *f,
			       off_t size, api_done_fn cb, void *ud);
	/* A hard link `to` of the existing file `from`. */
	void (*file_link)(struct api_backend *be, const char *id,
			  const char *from, const char *to, api_done_fn cb,
			  void *ud);

	/* exec */
	void (*exec_start)(struct api_backend *be, const char *id,
			   const struct api_exec_req *req,
			   const struct api_exec_cbs *cbs, void *ud,
			   struct api_exec **out);
	/* Feed stdin (want_stdin only).  cb runs when the bytes were taken
	 * (flow control: do not write again before it ran). */
	void (*exec_write)(struct api_backend *be, struct api_exec *x,
			   const void *buf, size_t len, api_done_fn cb,
			   void *ud);
	/* EOF on stdin. */
	void (*exec_close_stdin)(struct api_backend *be, struct api_exec *x);
	/* Resume output after an `output` callback returned 1. */
	void (*exec_resume)(struct api_backend *be, struct api_exec *x);
	/* Signal the command and everything it started. 0/-errno. */
	int (*exec_signal)(struct api_backend *be, struct api_exec *x,
			   int sig);
	/* Kill if still running and free.  No callback runs after this
	 * returns. */
	void (*exec_free)(struct api_backend *be, struct api_exec *x);
	/* PID of the command as seen inside the sandbox, or -errno (the
	 * slot may be NULL: -ENOSYS).  Never blocks. */
	int (*exec_pid)(struct api_backend *be, struct api_exec *x);
	/* Recoverable commands (started with req->job) of sandbox `id` left
	 * by an earlier instance: a NULL-terminated malloc'd array of
	 * malloc'd names; count or -errno.  Optional. */
	int (*exec_jobs)(struct api_backend *be, const char *id,
			 char ***jobs);
	/* Take over the command recorded under `job`: like exec_start
	 * (started(0), output spooled while detached then live, exited),
	 * info filled before it returns when *out is set. */
	void (*exec_attach)(struct api_backend *be, const char *id,
			    const char *job, const struct api_exec_cbs *cbs,
			    void *ud, struct api_exec **out,
			    struct api_exec_info *info);
};

struct api_rfile;

/* A backend instance.  `priv` is the backend's own state. */
struct api_backend {
	const struct api_ops *ops;
	void *priv;
	double timeout; /* bound of one user operation, seconds
			   (-o timeout=) */
	struct api_rfile *rf; /* remote backends: the shared cached-file
				 layer (api/rfile.h) that api.c routes file
				 operations through; NULL for local */
};

/* ---- entry points ------------------------------------------------------- */

/* Backends compiled in. */
extern const struct api_ops api_local_ops;
extern const struct api_ops api_wrenn_ops;
extern const struct api_ops api_cwsandbox_ops;

/* Pick the backend from SOURCE ("local", "local:DIR", "wrenn:URL", ...;
 * NULL means "local"), parse its options from args, init it.  Returns
 * 0/-errno; prints a sentence to stderr on failure. */
int api_open(const char *source, struct fuse_args *args,
	     struct api_backend **out);
void api_close(struct api_backend *be);
/* Backend options help text for all compiled-in backends. */
void api_print_help(void);

/* The log of api/ and its backends: stderr, or syslog once
 * api_log_syslog(true) (daemon mode, where stderr goes nowhere). */
void api_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void api_log_syslog(bool on);
/* Rate-limited log for a repeating condition named by `key` (e.g.
 * "unreachable"): the first message is written, repeats within the
 * back-off window are counted and summarised once the window ends;
 * api_log_clear(key) ends it ("reachable again" written once). */
void api_log_once(const char *key, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void api_log_clear(const char *key, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Map an errno to the one-line sentence used when a backend gave none. */
const char *api_strerror(int err);

/* Convenience wrappers: call the slot or answer -EOPNOTSUPP (or emulate
 * through exec, see api/README.md).  Same contracts as the slots. */
bool api_has(const struct api_backend *be, unsigned cap);
void api_sb_list(struct api_backend *be, api_list_fn cb, void *ud);
void api_sb_get(struct api_backend *be, const char *id, api_sandbox_fn cb,
		void *ud);
void api_sb_create(struct api_backend *be, const char *name,
		   const struct api_kv *kv, size_t nkv, api_sandbox_fn cb,
		   void *ud);
void api_sb_metrics(struct api_backend *be, const char *id, api_str_fn cb,
		    void *ud);
void api_sb_verb(struct api_backend *be, const char *id, enum api_verb verb,
		 const char *arg, api_done_fn cb, void *ud);
void api_tpl_list(struct api_backend *be, api_tpl_fn cb, void *ud);
void api_tpl_delete(struct api_backend *be, const char *name, api_done_fn cb,
		    void *ud);
void api_sb_port(struct api_backend *be, const char *id, unsigned port,
		 api_str_fn cb, void *ud);
void api_sb_ports(struct api_backend *be, const char *id, api_str_fn cb,
		  void *ud);
/* Tag names: [A-Za-z0-9][A-Za-z0-9._-]*, 1 to 63 bytes. */
bool api_tag_valid(const char *tag);
void api_file_stat(struct api_backend *be, const char *id, const char *path,
		   api_stat_fn cb, void *ud);
void api_file_readdir(struct api_backend *be, const char *id,
		      const char *path, api_readdir_fn cb, void *ud);
void api_file_open(struct api_backend *be, const char *id, const char *path,
		   int flags, mode_t mode, api_open_fn cb, void *ud);
void api_file_read(struct api_backend *be, struct api_file *f, off_t off,
		   size_t size, api_data_fn cb, void *ud);
void api_file_write(struct api_backend *be, struct api_file *f, off_t off,
		    const void *buf, size_t len, api_size_fn cb, void *ud);
/* fsync(2): like api_file_flush, but a remote backend that defers small
 * files' write-back (api/rfile.h) writes this one back now and waits. */
void api_file_fsync(struct api_backend *be, struct api_file *f,
		    api_done_fn cb, void *ud);
void api_file_flush(struct api_backend *be, struct api_file *f,
		    api_done_fn cb, void *ud);
void api_file_close(struct api_backend *be, struct api_file *f,
		    api_done_fn cb, void *ud);
/* Attributes / size change through an open file (fstat, ftruncate): an
 * open file that was renamed or unlinked is still reached.  -EOPNOTSUPP
 * when the backend has no such path (then use the path forms). */
void api_file_fstat(struct api_backend *be, struct api_file *f,
		    api_stat_fn cb, void *ud);
void api_file_ftruncate(struct api_backend *be, struct api_file *f,
			off_t size, api_done_fn cb, void *ud);
void api_file_mkdir(struct api_backend *be, const char *id, const char *path,
		    mode_t mode, api_done_fn cb, void *ud);
void api_file_unlink(struct api_backend *be, const char *id,
		     const char *path, api_done_fn cb, void *ud);
void api_file_rmdir(struct api_backend *be, const char *id, const char *path,
		    api_done_fn cb, void *ud);
void api_file_rename(struct api_backend *be, const char *id,
		     const char *from, const char *to, unsigned flags,
		     api_done_fn cb, void *ud);
void api_file_setattr(struct api_backend *be, const char *id,
		      const char *path, const struct api_setattr *sa,
		      api_done_fn cb, void *ud);
void api_file_symlink(struct api_backend *be, const char *id,
		      const char *target, const char *path, api_done_fn cb,
		      void *ud);
void api_file_readlink(struct api_backend *be, const char *id,
		       const char *path, api_str_fn cb, void *ud);
void api_file_mknod(struct api_backend *be, const char *id,
		    const char *path, mode_t mode, api_done_fn cb, void *ud);
void api_file_link(struct api_backend *be, const char *id, const char *from,
		   const char *to, api_done_fn cb, void *ud);
/* On failure to even begin, *out is NULL and cbs->started is called with
 * the error (possibly inline, the only inline case). */
void api_exec_start(struct api_backend *be, const char *id,
		    const struct api_exec_req *req,
		    const struct api_exec_cbs *cbs, void *ud,
		    struct api_exec **out);
void api_exec_write(struct api_backend *be, struct api_exec *x,
		    const void *buf, size_t len, api_done_fn cb, void *ud);
void api_exec_close_stdin(struct api_backend *be, struct api_exec *x);
void api_exec_resume(struct api_backend *be, struct api_exec *x);
int api_exec_signal(struct api_backend *be, struct api_exec *x, int sig);
void api_exec_free(struct api_backend *be, struct api_exec *x);
int api_exec_pid(struct api_backend *be, struct api_exec *x);
int api_exec_jobs(struct api_backend *be, const char *id, char ***jobs);
void api_exec_attach(struct api_backend *be, const char *id, const char *job,
		     const struct api_exec_cbs *cbs, void *ud,
		     struct api_exec **out, struct api_exec_info *info);

/* Quote one argument for /bin/sh (single quotes; safe for any byte
 * string).  Returns a malloc'd string or NULL on ENOMEM. */
char *api_shell_quote(const char *s);

#endif
