/* proc.c - NAME/proc/ and NAME/proc/JOB/: the per-sandbox job table
 * (mkdir creates a job, rmdir kills and frees it) and the job directory's
 * fixed list of files.  The files themselves are job.c's. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "fs/job_int.h"

/* One table per sandbox, created at the first mkdir.  Slot + generation go
 * into the inode number, so a handle to a removed job finds a bumped
 * generation and gets ESTALE, never the job that reused the slot. */
struct fs_jobs {
	pthread_mutex_t lock;
	int refs;	   /* (tables_lock) sb->jobs + users */
	unsigned hi;	   /* slots [0, hi) may be in use */
	unsigned njobs;
	struct fs_job *slots[FS_JOB_MAX];
	unsigned gens[FS_JOB_MAX];
	pthread_mutex_t rec_lock; /* held while recovering */
	bool recovered;	   /* (rec_lock) jobs of an earlier sbxfs taken */
};

/* sb->jobs is read and replaced under tables_lock, so a table cannot be
 * freed by fs_jobs_free while a handler is between finding it and taking
 * its reference.  Critical sections are a few instructions. */
static pthread_mutex_t tables_lock = PTHREAD_MUTEX_INITIALIZER;
/* sb->jobs after fs_jobs_free: the sandbox is going, no new table. */
static struct fs_jobs jobs_gone;

static struct fs_jobs *jobs_get(struct fs_sb *sb, bool create)
{
	struct fs_jobs *t;

	pthread_mutex_lock(&tables_lock);
	t = sb->jobs;
	if (t == &jobs_gone) {
		t = NULL;
	} else if (!t && create) {
		t = calloc(1, sizeof *t);
		if (t) {
			pthread_mutex_init(&t->lock, NULL);
			pthread_mutex_init(&t->rec_lock, NULL);
			t->refs = 1;
			sb->jobs = t;
		}
	}
	if (t)
		t->refs++;
	pthread_mutex_unlock(&tables_lock);
	return t;
}

static void jobs_put(struct fs_jobs *t)
{
	pthread_mutex_lock(&tables_lock);
	int left = --t->refs;

	pthread_mutex_unlock(&tables_lock);
	if (left)
		return;
	pthread_mutex_destroy(&t->lock);
	pthread_mutex_destroy(&t->rec_lock);
	free(t);
}

void fs_jobs_free(struct fs *fs, struct fs_sb *sb)
{
	struct fs_jobs *t;

	(void)fs;
	pthread_mutex_lock(&tables_lock);
	t = sb->jobs;
	sb->jobs = &jobs_gone;
	pthread_mutex_unlock(&tables_lock);
	if (!t || t == &jobs_gone)
		return;
	for (;;) {
		struct fs_job *j = NULL;

		pthread_mutex_lock(&t->lock);
		for (unsigned i = 0; i < t->hi && !j; i++) {
			j = t->slots[i];
			t->slots[i] = NULL;
		}
		if (j)
			t->njobs--;
		pthread_mutex_unlock(&t->lock);
		if (!j)
			break;
		fs_job_remove(j);
		fs_job_put(j);
	}
	jobs_put(t);
}

/* Job by slot+gen of an inode, with a reference. */
struct fs_job *fs_job_get_ino(struct fs *fs, fuse_ino_t ino, int *err)
{
	struct fs_sb *sb = fs_sb_get_ino(fs, ino, err);
	struct fs_jobs *t;
	struct fs_job *j = NULL;
	unsigned slot = fs_ino_job_slot(ino), gen = fs_ino_job_gen(ino);

	if (!sb)
		return NULL;
	t = jobs_get(sb, false);
	fs_sb_put(fs, sb);
	*err = -ESTALE;
	if (!t)
		return NULL;
	pthread_mutex_lock(&t->lock);
	j = t->slots[slot];
	if (j && (j->gen & FS_GEN_MASK) == gen)
		fs_job_get(j);
	else
		j = NULL;
	pthread_mutex_unlock(&t->lock);
	jobs_put(t);
	return j;
}

/* Table lock held. */
static struct fs_job *find_name(struct fs_jobs *t, const char *name)
{
	for (unsigned i = 0; i < t->hi; i++)
		if (t->slots[i] && !strcmp(t->slots[i]->name, name))
			return t->slots[i];
	return NULL;
}

/* The table of sb with the jobs an earlier sbxfs left running taken over
 * (once per table, at the first look at proc/), or NULL. */
static struct fs_jobs *jobs_open(struct fs *fs, struct fs_sb *sb)
{
	struct fs_jobs *t = jobs_get(sb, true);
	char **names = NULL;
	int n;

	if (!t)
		return NULL;
	pthread_mutex_lock(&t->rec_lock);
	if (t->recovered) {
		pthread_mutex_unlock(&t->rec_lock);
		return t;
	}
	t->recovered = true;
	n = api_exec_jobs(fs->be, sb->id, &names);
	for (int i = 0; i < n; i++) {
		struct fs_job *j = NULL;
		unsigned slot;

		pthread_mutex_lock(&t->lock);
		for (slot = 0; slot < FS_JOB_MAX && t->slots[slot]; slot++)
			;
		if (fs_name_valid(names[i]) && !find_name(t, names[i]) &&
		    slot < FS_JOB_MAX) {
			t->gens[slot] = (t->gens[slot] + 1) & FS_GEN_MASK;
			j = fs_job_new(fs, sb, names[i], slot, t->gens[slot]);
		}
		if (j) {
			fs_job_get(j);
			t->slots[slot] = j;
			t->njobs++;
			if (slot >= t->hi)
				t->hi = slot + 1;
		}
		pthread_mutex_unlock(&t->lock);
		if (j) {
			fs_job_attach(j);
			fs_job_put(j);
		}
		free(names[i]);
	}
	free(names);
	pthread_mutex_unlock(&t->rec_lock);
	return t;
}

static fuse_ino_t job_ino(const struct fs_job *j, enum fs_kind k)
{
	return fs_ino_make(k, j->sb_slot, j->sb_gen, j->slot, j->gen);
}

static void reply_entry(fuse_req_t req, fuse_ino_t ino, double timeout)
{
	struct fuse_entry_param e = { 0 };
	int err = fs_stat_node(fs_of(req), ino, &e.attr);

	if (err) {
		fuse_reply_err(req, -err);
		return;
	}
	e.ino = ino;
	e.attr_timeout = 0;
	e.entry_timeout = timeout;
	fuse_reply_entry(req, &e);
}

/* ---- NAME/proc/ ---------------------------------------------------------- */

static void pd_getattr(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	int err;
	struct fs_sb *sb = fs_sb_req(req, ino);
	struct stat st;

	(void)fi;
	if (!sb)
		return;
	fs_sb_put(fs_of(req), sb);
	err = fs_stat_node(fs_of(req), ino, &st);
	if (err)
		fuse_reply_err(req, -err);
	else
		fuse_reply_attr(req, &st, 0);
}

static void pd_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fs *fs = fs_of(req);
	struct fs_sb *sb = fs_sb_req(req, parent);
	struct fs_jobs *t;
	fuse_ino_t ino = 0;

	if (!sb)
		return;
	t = jobs_open(fs, sb);
	fs_sb_put(fs, sb);
	if (t) {
		pthread_mutex_lock(&t->lock);
		struct fs_job *j = find_name(t, name);

		if (j)
			ino = job_ino(j, FS_K_JOB_DIR);
		pthread_mutex_unlock(&t->lock);
		jobs_put(t);
	}
	if (!ino) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	/* No entry caching: a job removed and re-made under the same name
	 * is a new inode. */
	reply_entry(req, ino, 0);
}

/* A new job NAME in sb's table (a reference for the caller, who also
 * holds the table's until the job leaves it), or NULL with *err (EEXIST,
 * ENOSPC with a sentence, ENOENT, ENOMEM). */
struct fs_job *fs_proc_add(struct fs *fs, struct fs_sb *sb, const char *name,
			   int *err)
{
	struct fs_jobs *t = jobs_open(fs, sb);
	struct fs_job *j = NULL;
	unsigned slot;

	if (!t) {
		*err = ENOENT;
		return NULL;
	}
	pthread_mutex_lock(&t->lock);
	if (find_name(t, name)) {
		*err = EEXIST;
		goto out;
	}
	for (slot = 0; slot < FS_JOB_MAX && t->slots[slot]; slot++)
		;
	if (slot == FS_JOB_MAX) {
		fs_sb_set_err(fs, sb, "proc: at most %u jobs per sandbox",
			      FS_JOB_MAX);
		*err = ENOSPC;
		goto out;
	}
	j = fs_job_new(fs, sb, name, slot,
		       (t->gens[slot] = (t->gens[slot] + 1) & FS_GEN_MASK));
	if (!j) {
		*err = ENOMEM;
		goto out;
	}
	t->slots[slot] = j;
	t->njobs++;
	if (slot >= t->hi)
		t->hi = slot + 1;
	fs_job_get(j);
out:
	pthread_mutex_unlock(&t->lock);
	jobs_put(t);
	return j;
}

/* Take job j out of sb's table if it is still there (not rmdir'd, its
 * sandbox not gone): then remove it and drop the table's reference. */
void fs_proc_drop(struct fs *fs, struct fs_job *j)
{
	int err;
	struct fs_sb *sb = fs_sb_get_slot(fs, j->sb_slot, j->sb_gen, &err);
	struct fs_jobs *t = sb ? jobs_get(sb, false) : NULL;
	bool mine = false;

	if (sb)
		fs_sb_put(fs, sb);
	if (!t)
		return;
	pthread_mutex_lock(&t->lock);
	if (t->slots[j->slot] == j) {
		t->slots[j->slot] = NULL;
		t->njobs--;
		while (t->hi && !t->slots[t->hi - 1])
			t->hi--;
		mine = true;
	}
	pthread_mutex_unlock(&t->lock);
	jobs_put(t);
	if (mine) {
		fs_job_remove(j);
		fs_job_put(j);
	}
}

static void pd_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name,
		     mode_t mode)
{
	struct fs *fs = fs_of(req);
	int err;
	struct fs_sb *sb = fs_sb_req(req, parent);
	struct fs_job *j;

	(void)mode;
	if (!sb)
		return;
	if (!fs_name_valid(name)) {
		fs_sb_set_err(fs, sb, "proc: bad job name '%.64s': %s", name,
			      FS_NAME_RULE);
		fs_sb_put(fs, sb);
		fuse_reply_err(req, EINVAL);
		return;
	}
	j = fs_proc_add(fs, sb, name, &err);
	fs_sb_put(fs, sb);
	if (!j) {
		fuse_reply_err(req, err);
		return;
	}
	/* The new job's entry may be cached a moment (unlike a looked-up
	 * one, see pd_lookup): it is the job just made, and an rmdir through
	 * the mount drops it; so the opens of its files and the rmdir that
	 * follow (`sbx run`) need no LOOKUP of the directory. */
	reply_entry(req, job_ino(j, FS_K_JOB_DIR), 1.0);
	fs_job_put(j);
}

static void pd_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fs *fs = fs_of(req);
	struct fs_sb *sb = fs_sb_req(req, parent);
	struct fs_jobs *t;
	struct fs_job *j = NULL;

	if (!sb)
		return;
	t = jobs_get(sb, false);
	fs_sb_put(fs, sb);
	if (t) {
		pthread_mutex_lock(&t->lock);
		j = find_name(t, name);
		if (j) {
			t->slots[j->slot] = NULL;
			t->njobs--;
			while (t->hi && !t->slots[t->hi - 1])
				t->hi--;
		}
		pthread_mutex_unlock(&t->lock);
		jobs_put(t);
	}
	if (!j) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	/* Gone from the table first (no new opens), then killed; open
	 * handles keep the object until they close. */
	fs_job_remove(j);
	fs_job_put(j);
	fuse_reply_err(req, 0);
}

/* The listing is taken once, at open (fs_dir_open_reply keeps it in
 * fi->fh), so readdir calls page through one consistent snapshot. */
static void pd_opendir(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	int err;
	struct fs_sb *sb = fs_sb_req(req, ino);
	struct fs_dir *d;
	struct stat st;
	struct fs_jobs *t;

	if (!sb)
		return;
	d = calloc(1, sizeof(*d));
	if (!d) {
		fs_sb_put(fs, sb);
		fuse_reply_err(req, ENOMEM);
		return;
	}
	fs_stat_node(fs, ino, &st);
	err = fs_dir_add(d, ".", &st);
	fs_stat_node(fs, fs_ino_make(FS_K_SB_DIR, sb->slot, sb->gen, 0, 0),
		     &st);
	err = err ? err : fs_dir_add(d, "..", &st);
	t = jobs_open(fs, sb);
	fs_sb_put(fs, sb);
	if (t) {
		pthread_mutex_lock(&t->lock);
		for (unsigned i = 0; i < t->hi && !err; i++) {
			if (!t->slots[i])
				continue;
			fs_stat_node(fs, job_ino(t->slots[i], FS_K_JOB_DIR),
				     &st);
			err = fs_dir_add(d, t->slots[i]->name, &st);
		}
		pthread_mutex_unlock(&t->lock);
		jobs_put(t);
	}
	fs_dir_open_reply(req, fi, d, err);
}

const struct fuse_lowlevel_ops fs_proc_dir_ops = {
	.getattr = pd_getattr,
	.lookup = pd_lookup,
	.mkdir = pd_mkdir,
	.rmdir = pd_rmdir,
	.opendir = pd_opendir,
	.readdir = fs_dir_readdir,
	.readdirplus = fs_dir_readdirplus,
	.releasedir = fs_dir_releasedir,
};

/* ---- NAME/proc/JOB/ ------------------------------------------------------ */

static const struct {
	const char *name;
	enum fs_kind kind;
} job_files[] = {
	{ "cmd", FS_K_JOB_CMD },       { "ctl", FS_K_JOB_CTL },
	{ "stdin", FS_K_JOB_STDIN },   { "stdout", FS_K_JOB_STDOUT },
	{ "stderr", FS_K_JOB_STDERR }, { "wait", FS_K_JOB_WAIT },
	{ "status", FS_K_JOB_STATUS },
};
#define NJOB_FILES (sizeof job_files / sizeof job_files[0])

static void jd_getattr(fuse_req_t req, fuse_ino_t ino,
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
	if (err)
		fuse_reply_err(req, -err);
	else
		fuse_reply_attr(req, &st, 0);
}

static void jd_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	int err;
	struct fs_job *j = fs_job_get_ino(fs_of(req), parent, &err);
	fuse_ino_t ino = 0;

	if (!j) {
		fuse_reply_err(req, -err);
		return;
	}
	for (size_t i = 0; i < NJOB_FILES; i++)
		if (!strcmp(name, job_files[i].name))
			ino = job_ino(j, job_files[i].kind);
	fs_job_put(j);
	if (!ino) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	/* The set of files never changes; their inode dies with the job's
	 * generation. */
	reply_entry(req, ino, 60.0);
}

/* The listing is taken once, at open (fs_dir_open_reply keeps it in
 * fi->fh), so readdir calls page through one consistent snapshot. */
static void jd_opendir(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	int err;
	struct fs_job *j = fs_job_get_ino(fs, ino, &err);
	struct fs_dir *d;
	struct stat st;

	if (!j) {
		fuse_reply_err(req, -err);
		return;
	}
	d = calloc(1, sizeof(*d));
	if (!d) {
		fs_job_put(j);
		fuse_reply_err(req, ENOMEM);
		return;
	}
	fs_stat_node(fs, ino, &st);
	err = fs_dir_add(d, ".", &st);
	fs_stat_node(fs,
		     fs_ino_make(FS_K_PROC_DIR, j->sb_slot, j->sb_gen, 0, 0),
		     &st);
	err = err ? err : fs_dir_add(d, "..", &st);
	for (size_t i = 0; i < NJOB_FILES && !err; i++) {
		fs_stat_node(fs, job_ino(j, job_files[i].kind), &st);
		err = fs_dir_add(d, job_files[i].name, &st);
	}
	fs_job_put(j);
	fs_dir_open_reply(req, fi, d, err);
}

const struct fuse_lowlevel_ops fs_job_dir_ops = {
	.getattr = jd_getattr,
	.lookup = jd_lookup,
	.opendir = jd_opendir,
	.readdir = fs_dir_readdir,
	.readdirplus = fs_dir_readdirplus,
	.releasedir = fs_dir_releasedir,
};
