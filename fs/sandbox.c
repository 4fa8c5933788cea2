/* sandbox.c - the sandbox table (slots, generations, references) and the
 * sandbox directory NAME/ with its fixed entries; the NAME -> ID alias
 * symlink of platforms that assign their own IDs. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fs/gen.h"

/* Sandboxes we destroyed lately, so a list that started before the
 * destroy finished does not bring them back. */
#define GRAVE_N 32
static struct {
	char id[API_ID_MAX];
	unsigned long seq;
} grave[GRAVE_N];
static unsigned grave_next;

/* ---- the table ---------------------------------------------------------- */

/* Reuse slots round-robin so a just-freed slot (and the generation its old
 * handles remember) is not handed out again at once. */
static unsigned next_slot;

struct fs_sb *fs_sb_get_slot(struct fs *fs, unsigned slot, unsigned gen,
			     int *err)
{
	struct fs_sb *sb = NULL;

	if (slot >= FS_SB_MAX) {
		*err = -ENOENT;
		return NULL;
	}
	pthread_mutex_lock(&fs->lock);
	sb = fs->sbs[slot];
	if (sb && !sb->gone && sb->gen == (gen & FS_GEN_MASK))
		sb->refs++;
	else
		sb = NULL;
	pthread_mutex_unlock(&fs->lock);
	if (!sb)
		*err = -ESTALE;
	return sb;
}

struct fs_sb *fs_sb_get_ino(struct fs *fs, fuse_ino_t ino, int *err)
{
	return fs_sb_get_slot(fs, fs_ino_sb_slot(ino), fs_ino_sb_gen(ino),
			      err);
}

struct fs_sb *fs_sb_req(fuse_req_t req, fuse_ino_t ino)
{
	int err;
	struct fs_sb *sb = fs_sb_get_ino(fs_of(req), ino, &err);

	if (!sb)
		fuse_reply_err(req, -err);
	return sb;
}

/* fs->lock held. */
static struct fs_sb *find_locked(struct fs *fs, const char *name)
{
	for (unsigned s = 0; s < FS_SB_MAX; s++) {
		struct fs_sb *sb = fs->sbs[s];

		if (sb && !sb->gone &&
		    (strcmp(sb->id, name) == 0 ||
		     (sb->name[0] && strcmp(sb->name, name) == 0)))
			return sb;
	}
	return NULL;
}

struct fs_sb *fs_sb_get_name(struct fs *fs, const char *name)
{
	pthread_mutex_lock(&fs->lock);
	struct fs_sb *sb = find_locked(fs, name);
	if (sb)
		sb->refs++;
	pthread_mutex_unlock(&fs->lock);
	return sb;
}

static void sb_free(struct fs_sb *sb)
{
	fs_pollers_free(&sb->status_pollers);
	free(sb->info_json);
	free(sb);
}

void fs_sb_put(struct fs *fs, struct fs_sb *sb)
{
	if (!sb)
		return;
	pthread_mutex_lock(&fs->lock);
	bool last = --sb->refs == 0;
	pthread_mutex_unlock(&fs->lock);
	/* The table holds a reference until fs_sb_gone: the last put is
	 * always of a sandbox already out of the table. */
	if (last)
		sb_free(sb);
}

/* Apply a record; fs->lock held.  Returns true when the state changed. */
static bool sb_apply(struct fs_sb *sb, const struct api_sandbox *r)
{
	bool changed = sb->state != r->state;

	sb->state = r->state;
	if (r->name[0] && strcmp(r->name, r->id) != 0)
		snprintf(sb->name, sizeof sb->name, "%s", r->name);
	if (r->created)
		sb->created = r->created;
	if (r->template[0])
		snprintf(sb->template, sizeof sb->template, "%s", r->template);
	if (r->tags)
		snprintf(sb->tags, sizeof sb->tags, "%s", r->tags);
	if (r->info_json) {
		char *j = strdup(r->info_json);

		if (j) {
			free(sb->info_json);
			sb->info_json = j;
		}
	}
	if (changed)
		fs_pollers_wake(&sb->status_pollers);
	return changed;
}

static void notify_state(struct fs *fs, struct fs_sb *sb)
{
	fs_notify_inval_inode(fs, fs_ino_make(FS_K_SB_STATUS, sb->slot,
					      sb->gen, 0, 0));
	fs_notify_inval_inode(fs, fs_ino_make(FS_K_SB_INFO, sb->slot,
					      sb->gen, 0, 0));
}

struct fs_sb *fs_sb_add(struct fs *fs, const struct api_sandbox *r,
			int *err)
{
	struct fs_sb *sb;

	pthread_mutex_lock(&fs->lock);
	sb = find_locked(fs, r->id);
	if (sb) {
		bool changed = sb_apply(sb, r);

		sb->seq = fs->poll_seq + 1;
		sb->refs++;
		pthread_mutex_unlock(&fs->lock);
		if (changed)
			notify_state(fs, sb);
		return sb;
	}
	unsigned s, i;
	for (i = 0; i < FS_SB_MAX; i++) {
		s = (next_slot + i) % FS_SB_MAX;
		if (!fs->sbs[s])
			break;
	}
	if (i == FS_SB_MAX) {
		pthread_mutex_unlock(&fs->lock);
		*err = -ENOSPC;
		return NULL;
	}
	sb = calloc(1, sizeof *sb);
	if (!sb) {
		pthread_mutex_unlock(&fs->lock);
		*err = -ENOMEM;
		return NULL;
	}
	next_slot = (s + 1) % FS_SB_MAX;
	sb->slot = s;
	sb->gen = fs->gens[s] & FS_GEN_MASK;
	sb->refs = 2; /* the table's and the caller's */
	snprintf(sb->id, sizeof sb->id, "%s", r->id);
	sb->state = API_ST_UNKNOWN;
	sb_apply(sb, r);
	sb->seq = fs->poll_seq + 1;
	fs->sbs[s] = sb;
	pthread_mutex_unlock(&fs->lock);
	return sb;
}

void fs_sb_update(struct fs *fs, struct fs_sb *sb,
		  const struct api_sandbox *r)
{
	pthread_mutex_lock(&fs->lock);
	bool changed = !sb->gone && sb_apply(sb, r);
	sb->seq = fs->poll_seq + 1;
	pthread_mutex_unlock(&fs->lock);
	if (changed)
		notify_state(fs, sb);
}

void fs_sb_gone(struct fs *fs, struct fs_sb *sb)
{
	pthread_mutex_lock(&fs->lock);
	if (sb->gone) {
		pthread_mutex_unlock(&fs->lock);
		return;
	}
	sb->gone = true;
	sb->state = API_ST_DESTROYED;
	snprintf(grave[grave_next].id, sizeof grave[0].id, "%s", sb->id);
	grave[grave_next].seq = fs->poll_seq + 1;
	grave_next = (grave_next + 1) % GRAVE_N;
	if (fs->sbs[sb->slot] == sb) {
		fs->sbs[sb->slot] = NULL;
		fs->gens[sb->slot] = (fs->gens[sb->slot] + 1) & FS_GEN_MASK;
	}
	/* Pollers of status learn it went away. */
	fs_pollers_wake(&sb->status_pollers);
	sb->refs--; /* the table's; the caller still holds one */
	pthread_mutex_unlock(&fs->lock);

	fs_jobs_free(fs, sb);
	fs_files_forget_sb(fs, sb->slot);
}

void fs_sb_set_err(struct fs *fs, struct fs_sb *sb, const char *fmt, ...)
{
	char msg[sizeof sb->err];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	/* One line: the err file's contract is "a sentence + newline"; no
	 * control characters from a server's message either. */
	for (char *p = msg; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = ' ';
	pthread_mutex_lock(&fs->lock);
	snprintf(sb->err, sizeof sb->err, "%s", msg);
	pthread_mutex_unlock(&fs->lock);
	fs_log("%s: %s", sb->id, msg);
}

static bool recently_gone(struct fs *fs, const char *id, unsigned long seq)
{
	bool r = false;

	pthread_mutex_lock(&fs->lock);
	for (unsigned i = 0; i < GRAVE_N && !r; i++)
		r = grave[i].id[0] && grave[i].seq > seq &&
		    strcmp(grave[i].id, id) == 0;
	pthread_mutex_unlock(&fs->lock);
	return r;
}

/* Apply a complete list made by a call that started at sequence `seq`. */
void fs_sb_apply_list(struct fs *fs, const struct api_sandbox *recs,
		       size_t n, unsigned long seq)
{
	struct fs_sb *vanished[64];
	size_t nv = 0;

	for (size_t i = 0; i < n; i++) {
		int err;
		struct fs_sb *sb = fs_sb_get_name(fs, recs[i].id);

		if (!sb) {
			if (recs[i].state == API_ST_DESTROYED ||
			    recently_gone(fs, recs[i].id, seq))
				continue;
			sb = fs_sb_add(fs, &recs[i], &err);
			if (!sb) {
				fs_log("sandbox %s: %s", recs[i].id,
				       api_strerror(err));
				continue;
			}
		} else {
			pthread_mutex_lock(&fs->lock);
			bool fresh = sb->seq <= seq;
			pthread_mutex_unlock(&fs->lock);
			if (fresh)
				fs_sb_update(fs, sb, &recs[i]);
		}
		fs_sb_put(fs, sb);
	}

	/* Sandboxes the platform no longer knows. */
	pthread_mutex_lock(&fs->lock);
	for (unsigned s = 0; s < FS_SB_MAX && nv < 64; s++) {
		struct fs_sb *sb = fs->sbs[s];
		bool found = false;

		if (!sb || sb->gone || sb->busy || sb->seq > seq)
			continue;
		for (size_t i = 0; i < n && !found; i++)
			found = strcmp(recs[i].id, sb->id) == 0 &&
				recs[i].state != API_ST_DESTROYED;
		if (!found) {
			sb->refs++;
			vanished[nv++] = sb;
		}
	}
	pthread_mutex_unlock(&fs->lock);
	for (size_t i = 0; i < nv; i++) {
		fs_log("sandbox %s: gone from the platform", vanished[i]->id);
		fs_notify_inval_entry(fs, FUSE_ROOT_ID, vanished[i]->id);
		if (vanished[i]->name[0])
			fs_notify_inval_entry(fs, FUSE_ROOT_ID,
					      vanished[i]->name);
		fs_sb_gone(fs, vanished[i]);
		fs_sb_put(fs, vanished[i]);
	}
}

/* ---- NAME/ -------------------------------------------------------------- */

static const struct fs_gen_ent sb_entries[] = {
	{ "ctl", FS_K_SB_CTL, 0, 0 },
	{ "status", FS_K_SB_STATUS, 0, 0 },
	{ "info", FS_K_SB_INFO, 0, 0 },
	{ "err", FS_K_SB_ERR, 0, 0 },
	{ "metrics", FS_K_SB_METRICS, API_CAP_METRICS, 0 },
	{ "ports", FS_K_PORTS_DIR, API_CAP_PORTS, 0 },
	{ "fs", FS_K_FILE, API_CAP_FILES, S_IFDIR | 0755 },
	{ "exec", FS_K_SB_EXEC, API_CAP_EXEC, 0 },
	{ "run", FS_K_SB_RUN, API_CAP_EXEC, 0 },
	{ "proc", FS_K_PROC_DIR, API_CAP_EXEC, 0 },
};

static void sb_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fs *fs = fs_of(req);
	const struct fs_gen_ent *en;
	struct fs_sb *sb = fs_sb_req(req, parent);

	if (!sb)
		return;
	en = fs_gen_find(fs, sb_entries, FS_GEN_N(sb_entries), name);
	if (!en)
		fuse_reply_err(req, ENOENT);
	else if (en->kind == FS_K_FILE)
		fs_file_root_lookup(req, sb); /* replies */
	else
		fs_gen_entry(req, fs, fs_ino_make(en->kind, sb->slot, sb->gen,
						  0, 0), 0);
	fs_sb_put(fs, sb);
}

static void sb_getattr(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct stat st;
	struct fs_sb *sb = fs_sb_req(req, ino);

	(void)fi;
	if (!sb)
		return;
	fs_stat_synthetic(fs, ino, S_IFDIR | 0755, &st);
	st.st_nlink = 4;
	if (sb->created)
		st.st_mtim.tv_sec = st.st_ctim.tv_sec = sb->created;
	fs_sb_put(fs, sb);
	fuse_reply_attr(req, &st, 1.0);
}

static void sb_opendir(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	int err = 0;
	struct fs_sb *sb = fs_sb_get_ino(fs, ino, &err);
	struct fs_dir *d = sb ? fs_gen_dir(fs, ino, FUSE_ROOT_ID, &err) : NULL;

	if (!d) {
		fs_sb_put(fs, sb);
		fuse_reply_err(req, sb ? ENOMEM : -err);
		return;
	}
	if (!err)
		err = fs_gen_dir_table(fs, d, sb_entries, FS_GEN_N(sb_entries),
				       sb->slot, sb->gen);
	fs_sb_put(fs, sb);
	fs_dir_open_reply(req, fi, d, err);
}


const struct fuse_lowlevel_ops fs_sb_dir_ops = {
	.lookup = sb_lookup,
	.getattr = sb_getattr,
	.opendir = sb_opendir,
	.readdir = fs_dir_readdir,
	.readdirplus = fs_dir_readdirplus,
	.releasedir = fs_dir_releasedir,
};

/* ---- NAME -> ID --------------------------------------------------------- */

static void alias_getattr(fuse_req_t req, fuse_ino_t ino,
			  struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct stat st;
	struct fs_sb *sb = fs_sb_req(req, ino);

	(void)fi;
	if (!sb)
		return;
	fs_stat_synthetic(fs, ino, S_IFLNK | 0777, &st);
	st.st_size = (off_t)strlen(sb->name);
	fs_sb_put(fs, sb);
	fuse_reply_attr(req, &st, 1.0);
}

static void alias_readlink(fuse_req_t req, fuse_ino_t ino)
{
	struct fs *fs = fs_of(req);
	char id[API_ID_MAX];
	struct fs_sb *sb = fs_sb_req(req, ino);

	if (!sb)
		return;
	snprintf(id, sizeof id, "%s", sb->name); /* ID -> NAME */
	fs_sb_put(fs, sb);
	fuse_reply_readlink(req, id);
}

const struct fuse_lowlevel_ops fs_sb_alias_ops = {
	.getattr = alias_getattr,
	.readlink = alias_readlink,
};
