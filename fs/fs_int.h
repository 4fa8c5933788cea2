/* fs_int.h - private header of the FUSE side (fs/).  Knows nothing of HTTP:
 * it talks to platforms only through api/api.h.
 *
 * Shape (see fs/README.md for the essay):
 *  - The low-level libfuse API.  fs.c owns the one `fuse_lowlevel_ops`
 *    table handed to libfuse; each of its handlers decodes the node kind
 *    from the inode number and forwards to that kind's own
 *    `struct fuse_lowlevel_ops` (one node kind per file: root.c, sandbox.c,
 *    files.c, exec.c, proc.c, ...).  A NULL slot answers a sensible errno
 *    (ENOSYS / EISDIR / ENOTDIR / EPERM, decided once in fs.c).
 *    For lookup/mkdir/rmdir/create/... the kind of the *parent* decides.
 *  - Handlers never wait on a platform: they call an api_* operation and
 *    reply from its callback (fuse_req_t kept, arguments copied).
 *  - Inode numbers encode (kind, sandbox slot+generation, job slot+
 *    generation); files under a sandbox's fs/ get numbers from a node table
 *    (files.c).  A destroyed sandbox bumps its slot's generation, so an old
 *    handle decodes to a stale slot and gets -ESTALE, never the new object.
 */
#ifndef SBXFS_FS_INT_H
#define SBXFS_FS_INT_H

#define FUSE_USE_VERSION 34
#include <fuse_lowlevel.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "api/api.h"

/* ---- node kinds ---------------------------------------------------------- */

enum fs_kind {
	FS_K_NONE = 0,
	FS_K_ROOT,	 /* MOUNT/ (ino 1) */
	FS_K_ROOT_CTL,	 /* MOUNT/ctl */
	FS_K_SB_DIR,	 /* MOUNT/NAME/ */
	FS_K_SB_ALIAS,	 /* MOUNT/ID -> NAME symlink (API_CAP_ALIAS) */
	FS_K_SB_CTL,	 /* NAME/ctl */
	FS_K_SB_STATUS,	 /* NAME/status */
	FS_K_SB_INFO,	 /* NAME/info */
	FS_K_SB_ERR,	 /* NAME/err */
	FS_K_SB_EXEC,	 /* NAME/exec (exec.c) */
	FS_K_PROC_DIR,	 /* NAME/proc/ (proc.c) */
	FS_K_JOB_DIR,	 /* NAME/proc/JOB/ */
	FS_K_JOB_CMD,	 /* NAME/proc/JOB/cmd */
	FS_K_JOB_CTL,	 /* NAME/proc/JOB/ctl */
	FS_K_JOB_STDIN,	 /* NAME/proc/JOB/stdin */
	FS_K_JOB_STDOUT, /* NAME/proc/JOB/stdout */
	FS_K_JOB_STDERR, /* NAME/proc/JOB/stderr */
	FS_K_JOB_WAIT,	 /* NAME/proc/JOB/wait */
	FS_K_JOB_STATUS, /* NAME/proc/JOB/status */
	FS_K_FILE,	 /* NAME/fs and everything under it (files.c) */
	FS_K_SB_METRICS, /* NAME/metrics (metrics.c) */
	FS_K_ROOT_ERR,	 /* MOUNT/err (root.c) */
	FS_K_TPL_DIR,	 /* MOUNT/templates/ (templates.c) */
	FS_K_TPL,	 /* MOUNT/templates/X/: sb slot = name index */
	FS_K_TPL_INFO,	 /* MOUNT/templates/X/info */
	FS_K_PORTS_DIR,	 /* NAME/ports/ (ports.c) */
	FS_K_PORT,	 /* NAME/ports/PORT: job slot/gen = port >> 12 / & 4095 */
	FS_K_TAGS_DIR,	 /* MOUNT/.tags/ (tags.c) */
	FS_K_TAG_DIR,	 /* MOUNT/.tags/T/: job slot = tag index */
	FS_K_TAG_LINK,	 /* MOUNT/.tags/T/NAME -> ../../NAME */
	FS_K_SB_RUN,	 /* NAME/run (run.c) */
	FS_K__COUNT
};

/* ---- inode numbers -------------------------------------------------------
 *
 *   63      56 55     44 43     32 31     20 19      8 7     0
 *  +---------+---------+---------+---------+---------+-------+
 *  |  kind   | sb slot | sb gen  | job slot| job gen | spare |
 *  +---------+---------+---------+---------+---------+-------+
 *
 * FS_K_FILE inodes instead carry a 56-bit node-table id in bits 0..55.
 * The root is FUSE_ROOT_ID (1): kind 0 with everything else 0 except bit 0
 * decodes specially (fs_ino_kind handles it).
 */
#define FS_INO_KIND_BITS 8
#define FS_INO_SLOT_BITS 12
#define FS_INO_GEN_BITS 12
#define FS_SB_MAX (1u << FS_INO_SLOT_BITS)   /* sandboxes per mount */
#define FS_JOB_MAX (1u << FS_INO_SLOT_BITS)  /* jobs per sandbox */
#define FS_GEN_MASK ((1u << FS_INO_GEN_BITS) - 1)
_Static_assert(FS_K__COUNT < (1 << FS_INO_KIND_BITS), "kind bits");
_Static_assert(FS_INO_KIND_BITS + 2 * (FS_INO_SLOT_BITS + FS_INO_GEN_BITS) +
			   8 ==
		       64,
	       "inode layout must fill 64 bits");

static inline fuse_ino_t fs_ino_make(enum fs_kind k, unsigned sb_slot,
				     unsigned sb_gen, unsigned job_slot,
				     unsigned job_gen)
{
	return ((uint64_t)k << 56) |
	       ((uint64_t)(sb_slot & (FS_SB_MAX - 1)) << 44) |
	       ((uint64_t)(sb_gen & FS_GEN_MASK) << 32) |
	       ((uint64_t)(job_slot & (FS_JOB_MAX - 1)) << 20) |
	       ((uint64_t)(job_gen & FS_GEN_MASK) << 8);
}
static inline enum fs_kind fs_ino_kind(fuse_ino_t ino)
{
	if (ino == FUSE_ROOT_ID)
		return FS_K_ROOT;
	unsigned k = (unsigned)((uint64_t)ino >> 56);
	return k < FS_K__COUNT ? (enum fs_kind)k : FS_K_NONE;
}
static inline unsigned fs_ino_sb_slot(fuse_ino_t ino)
{
	return (unsigned)(((uint64_t)ino >> 44) & (FS_SB_MAX - 1));
}
static inline unsigned fs_ino_sb_gen(fuse_ino_t ino)
{
	return (unsigned)(((uint64_t)ino >> 32) & FS_GEN_MASK);
}
static inline unsigned fs_ino_job_slot(fuse_ino_t ino)
{
	return (unsigned)(((uint64_t)ino >> 20) & (FS_JOB_MAX - 1));
}
static inline unsigned fs_ino_job_gen(fuse_ino_t ino)
{
	return (unsigned)(((uint64_t)ino >> 8) & FS_GEN_MASK);
}
/* FS_K_FILE: node-table id in the low 56 bits. */
static inline fuse_ino_t fs_ino_file(uint64_t id)
{
	return ((uint64_t)FS_K_FILE << 56) | (id & ((1ull << 56) - 1));
}
static inline uint64_t fs_ino_file_id(fuse_ino_t ino)
{
	return (uint64_t)ino & ((1ull << 56) - 1);
}

/* ---- the mount ----------------------------------------------------------- */

struct fs_jobs; /* proc.c's per-sandbox job table (opaque here) */
struct fs_pollers; /* a set of poll handles waiting for a change */

/* One sandbox, one slot.  Refcounted: fs_sb_get*() take a reference,
 * fs_sb_put() drops it.  Fields marked (L) are protected by fs->lock. */
struct fs_sb {
	unsigned slot, gen;	 /* gen bumped when the slot is reused */
	int refs;		 /* (L) */
	bool gone;		 /* (L) destroyed: lookups fail, handles ESTALE */
	char id[API_ID_MAX];	 /* platform ID: the directory unless there
				    is a NAME (then a symlink to NAME) */
	char name[API_ID_MAX];	 /* the NAME directory where the platform
				    assigns IDs ("" if none) */
	char template[API_ID_MAX]; /* (L) what it started from, "" unknown */
	enum api_state state;	 /* (L) from the poll or a verb */
	time_t created;
	char *info_json;	 /* (L) malloc'd */
	char err[1024];		 /* (L) last error sentence, "" if none */
	unsigned busy;		 /* (L) verbs in flight */
	struct fs_pollers *status_pollers; /* (L) poll() on status */
	struct fs_jobs *jobs;	 /* proc.c; created lazily, own lock */
	unsigned long seq;	 /* (L) a status list started before poll
				    sequence `seq` must not change state or
				    existence (it raced a create or verb) */
	char tags[512];		 /* (L) "a,b" given at create (API_CAP_TAGS) */
};

struct fs_opts {
	double poll_interval; /* seconds between status polls */
	double timeout;	      /* request bound, seconds */
	const char *template; /* default template for new sandboxes */
	double attr_timeout;  /* kernel attr/entry cache for fs/ files */
};

struct fs {
	struct api_backend *be;
	struct fuse_session *se;
	struct fs_opts opts;
	uid_t uid;		   /* mount owner: owner of every node */
	gid_t gid;
	pthread_mutex_t lock;	   /* the sandbox table */
	struct fs_sb *sbs[FS_SB_MAX];
	unsigned gens[FS_SB_MAX];  /* next generation per slot */
	/* status poller thread (sandbox.c / fs.c) */
	pthread_t poll_thread;
	pthread_cond_t poll_cond;
	bool poll_now, stopping;
	unsigned long poll_seq;	   /* (L) ++ when a list call starts */
	struct fs_notify *notify;  /* (L) kernel invalidations queued for
				      the poller thread (never sent from a
				      request handler) */
	struct fs_files *files;	   /* files.c: nodes, listing cache */
	/* A backend whose files are real descriptors on this machine
	 * (API_CAP_RANDOM_WRITE, the local runtime): the kernel may keep
	 * pages across opens (dropped when mtime/size move: AUTO_INVAL_DATA)
	 * and cache writes (writeback, set in init when the kernel offers
	 * it; it then owns O_APPEND and reads around partial writes). */
	char root_err[1024];	   /* (L) last error of MOUNT/ctl or a
				      mkdir/rmdir in MOUNT/, "" if none */
	bool page_cache;
	bool writeback;
};

/* fs.c: the dispatcher.  Returns the table handed to fuse_session_new. */
extern const struct fuse_lowlevel_ops fs_ops;

/* Set up / tear down the mount state (poller thread, sandbox table).  The
 * session is attached after fuse_session_new. */
int fs_init(struct fs *fs, struct api_backend *be, const struct fs_opts *o);
void fs_attach(struct fs *fs, struct fuse_session *se);
void fs_free(struct fs *fs);

/* Per-kind operation tables, one per file (unused slots NULL). */
extern const struct fuse_lowlevel_ops fs_sb_metrics_ops; /* metrics.c */
extern const struct fuse_lowlevel_ops fs_root_ops;	/* root.c */
extern const struct fuse_lowlevel_ops fs_root_ctl_ops;	/* root.c */
extern const struct fuse_lowlevel_ops fs_root_err_ops;	/* root.c */
extern const struct fuse_lowlevel_ops fs_sb_dir_ops;	/* sandbox.c */
extern const struct fuse_lowlevel_ops fs_sb_alias_ops;	/* sandbox.c */
extern const struct fuse_lowlevel_ops fs_sb_ctl_ops;	/* sbctl.c */
extern const struct fuse_lowlevel_ops fs_sb_status_ops; /* sbfiles.c */
extern const struct fuse_lowlevel_ops fs_sb_info_ops;	/* sbfiles.c */
extern const struct fuse_lowlevel_ops fs_sb_err_ops;	/* sbfiles.c */
extern const struct fuse_lowlevel_ops fs_exec_ops;	/* exec.c */
extern const struct fuse_lowlevel_ops fs_run_ops;	/* run.c */
extern const struct fuse_lowlevel_ops fs_proc_dir_ops;	/* proc.c */
extern const struct fuse_lowlevel_ops fs_job_dir_ops;	/* proc.c */
extern const struct fuse_lowlevel_ops fs_job_file_ops;	/* job.c: cmd, ctl,
							   stdin, stdout,
							   stderr, wait,
							   status */
extern const struct fuse_lowlevel_ops fs_file_ops;	/* files.c */
extern const struct fuse_lowlevel_ops fs_tpl_dir_ops;	/* templates.c */
extern const struct fuse_lowlevel_ops fs_tpl_ops;	/* templates.c */
extern const struct fuse_lowlevel_ops fs_tpl_info_ops;	/* templates.c */
extern const struct fuse_lowlevel_ops fs_ports_dir_ops;	/* ports.c */
extern const struct fuse_lowlevel_ops fs_port_ops;	/* ports.c */
extern const struct fuse_lowlevel_ops fs_tags_dir_ops;	/* tags.c */
extern const struct fuse_lowlevel_ops fs_tag_dir_ops;	/* tags.c */
extern const struct fuse_lowlevel_ops fs_tag_link_ops;	/* tags.c */
/* Does the "a,b,c" list hold tag t? (tags.c) */
bool fs_tags_has(const char *tags, const char *t);

/* Every node kind answers getattr through this (fs.c dispatches); kinds
 * provide it through their table's `getattr` slot or, for simple
 * synthetic files, through fs_stat_synthetic. */
void fs_stat_synthetic(struct fs *fs, fuse_ino_t ino, mode_t mode,
		       struct stat *st);

/* ---- the sandbox table (sandbox.c) -------------------------------------- */

/* The fs of a request. */
static inline struct fs *fs_of(fuse_req_t req)
{
	return (struct fs *)fuse_req_userdata(req);
}

/* Reference to the live sandbox an inode names, or NULL: *err is then
 * -ESTALE (slot reused / destroyed) or -ENOENT. */
struct fs_sb *fs_sb_get_ino(struct fs *fs, fuse_ino_t ino, int *err);
/* The sandbox of ino for a handler (a reference), or NULL after replying
 * with the error. */
struct fs_sb *fs_sb_req(fuse_req_t req, fuse_ino_t ino);
/* By directory name (ID or alias), or NULL. */
struct fs_sb *fs_sb_get_name(struct fs *fs, const char *name);
void fs_sb_put(struct fs *fs, struct fs_sb *sb);
/* Where a platform assigns IDs (API_CAP_ALIAS), the sandbox directory is
 * the NAME the user chose and the ID is a symlink to it, so `mkdir NAME`,
 * `rmdir NAME` and scripts all use one name (DESIGN.md had it the other
 * way round; rmdir of a symlink is ENOTDIR in the kernel). */
static inline bool fs_sb_has_alias(const struct fs_sb *sb)
{
	return sb->name[0] && strcmp(sb->name, sb->id) != 0;
}
static inline const char *fs_sb_dirname(const struct fs_sb *sb)
{
	return fs_sb_has_alias(sb) ? sb->name : sb->id;
}
/* Record the last error of a sandbox (also logged). */
void fs_sb_set_err(struct fs *fs, struct fs_sb *sb, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Ask the poller for a refresh now (after a verb). */
void fs_poll_kick(struct fs *fs);
/* By slot and generation (FS_K_FILE nodes carry these), same errors. */
struct fs_sb *fs_sb_get_slot(struct fs *fs, unsigned slot, unsigned gen,
			     int *err);
/* Insert (or update) the sandbox of a platform record, e.g. after a
 * create; returns a reference or NULL (*err: -ENOSPC table full). */
struct fs_sb *fs_sb_add(struct fs *fs, const struct api_sandbox *r,
			int *err);
/* Apply a fresh record (api_sb_get after a verb) to sb. */
void fs_sb_update(struct fs *fs, struct fs_sb *sb,
		  const struct api_sandbox *r);
/* The sandbox was destroyed: drop it from the table, bump the slot's
 * generation, free its jobs and files state.  Idempotent. */
void fs_sb_gone(struct fs *fs, struct fs_sb *sb);
/* Apply a complete api_sb_list result from a call that started at poll
 * sequence `seq` (the poller). */
void fs_sb_apply_list(struct fs *fs, const struct api_sandbox *recs,
		      size_t n, unsigned long seq);
/* Queue a kernel cache invalidation; the poller thread sends it. */
void fs_notify_inval_entry(struct fs *fs, fuse_ino_t parent,
			   const char *name);
void fs_notify_inval_inode(struct fs *fs, fuse_ino_t ino);
/* Attributes of any non-file node (kind table in fs.c). 0/-errno. */
int fs_stat_node(struct fs *fs, fuse_ino_t ino, struct stat *st);
/* Sandbox and job names: [A-Za-z0-9][A-Za-z0-9._-]*, 1 to FS_NAME_MAX
 * bytes (README "Names"), checked here for every backend. */
#define FS_NAME_MAX 63
#define FS_NAME_RULE                                                        \
	"a name is 1 to 63 letters, digits, '.', '_' or '-', starting with " \
	"a letter or digit"
bool fs_name_valid(const char *name);
/* Names of MOUNT/'s own entries ("ctl", "err", "templates"). */
bool fs_name_reserved(const char *name);
/* MOUNT/err: record the last error of the root (also logged). */
void fs_root_set_err(struct fs *fs, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* ---- files (files.c) ---------------------------------------------------- */

int fs_files_init(struct fs *fs);
void fs_files_free(struct fs *fs);
/* Reply to a lookup of NAME/fs: the sandbox's "/" as an FS_K_FILE node. */
void fs_file_root_lookup(fuse_req_t req, struct fs_sb *sb);
/* Drop cached listings of a sandbox (destroyed, or changed by a verb). */
void fs_files_forget_sb(struct fs *fs, unsigned slot);
/* A command of that sandbox ended: drop its listings and take back the
 * negative entries the kernel holds for it (files.c). */
void fs_files_cmd_ended(struct fs *fs, unsigned slot, unsigned gen);
/* FORGET of an fs/ node (fs.c dispatches; no reply). */
void fs_files_forget(struct fs *fs, fuse_ino_t ino, uint64_t nlookup);

/* ---- jobs hooks (proc.c) ------------------------------------------------ */

/* Kill and free every job of a sandbox (called when it is destroyed or at
 * unmount).  Safe on a sandbox that never had jobs. */
void fs_jobs_free(struct fs *fs, struct fs_sb *sb);

/* ---- poll handles (poll.c) ---------------------------------------------- */

/* Remember a poll handle; fs_pollers_wake notifies and drops all of them
 * (kernel notifications sent from the caller's thread: never call it from
 * inside a request handler while holding a request you have yet to reply
 * to... it is safe from api callbacks and the poller thread). */
void fs_pollers_add(struct fs_pollers **set, struct fuse_pollhandle *ph);
void fs_pollers_wake(struct fs_pollers **set);
void fs_pollers_free(struct fs_pollers **set);

/* ---- small helpers (util.c) --------------------------------------------- */

/* Log to stderr / syslog when daemonized. */
/* A directory listed once at open: fi->fh owns a malloc'd fs_dir.  open
 * replies with fs_dir_open_reply (frees d on error); the table slots are
 * fs_dir_readdir / fs_dir_readdirplus / fs_dir_releasedir. */
struct fs_dir;
void fs_dir_open_reply(fuse_req_t req, struct fuse_file_info *fi,
		       struct fs_dir *d, int err);
void fs_dir_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi);
void fs_dir_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size,
			off_t off, struct fuse_file_info *fi);
void fs_dir_releasedir(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi);
void fs_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void fs_log_syslog(bool on);
/* Synthetic directory listing: names with attributes, replied in slices
 * (offset = index + 1).  readdirplus entries of synthetic nodes carry no
 * lookup reference (nodeid 0 in the entry: the kernel just lists them). */
struct fs_dent {
	char *name;
	struct stat st;
};
struct fs_dir {
	size_t n, cap;
	struct fs_dent *e;
};
int fs_dir_add(struct fs_dir *d, const char *name, const struct stat *st);
void fs_dir_free(struct fs_dir *d);
void fs_dir_reply(fuse_req_t req, const struct fs_dir *d, size_t size,
		  off_t off, bool plus);

/* ctl command parsing, after Plan 9's parsecmd/lookupcmd. */
#define FS_CMD_MAXF 16
struct fs_cmd {
	int nf;
	char *f[FS_CMD_MAXF]; /* f[0] is the verb */
};
struct fs_cmdtab {
	int index;	 /* caller's code for the verb */
	const char *verb;
	int minargs;	 /* arguments after the verb */
	int maxargs;
};
/* Split `line` in place at blanks.  0, or -EINVAL (too many fields). */
int fs_cmd_parse(char *line, struct fs_cmd *c);
/* Bad input changes nothing: a ctl write (or a job's cmd) is refused
 * whole, before any line runs, when it holds a NUL byte or a control
 * character other than newline and tab.  0, or -EINVAL with a sentence. */
int fs_ctl_check(const char *buf, size_t size, char *msg, size_t msglen);
/* One line of MOUNT/ctl: "new NAME [key=value ...]" split into c (blank:
 * c->nf == 0).  Checks the verb, NAME (fs_name_valid, not reserved) and
 * every setting (key of [A-Za-z0-9_.-], each key once).  0, or -EINVAL
 * with a sentence.  Whether a NAME exists is the caller's business. */
int fs_new_parse(char *line, struct fs_cmd *c, char *msg, size_t msglen);
/* The entry for c->f[0] with arity checked, or NULL with a sentence in
 * msg ("unknown verb 'x'; verbs: a b c" / "'stop' takes 0-1 arguments"). */
const struct fs_cmdtab *fs_cmd_lookup(const struct fs_cmd *c,
				      const struct fs_cmdtab *tab, size_t n,
				      char *msg, size_t msglen);

/* The host view of a symlink in fs/: `linkpath` is the link's absolute
 * path in the sandbox, `target` what it stores.  Absolute targets (and
 * relative ones that climb above /) become relative paths that stay under
 * the sandbox's fs/ root.  0, or -ENAMETOOLONG. */
int fs_symlink_host(const char *linkpath, const char *target, char *out,
		    size_t outlen);
/* Reply to a read of a synthetic text file: the slice [off, off+size). */
void fs_reply_text(fuse_req_t req, const char *text, size_t len, size_t size,
		   off_t off);

#endif
