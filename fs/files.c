/* files.c - NAME/fs/ and everything under it: the sandbox's own files.
 *
 * Inodes come from a node table: id -> {sandbox slot+gen, path, nlookup},
 * with a path hash so a path keeps its inode number while the kernel holds
 * a lookup reference (FORGET drops it).  Directory listings come from ONE
 * api_file_readdir call that also carries every entry's attributes
 * (READDIRPLUS), and are kept for attr_timeout so the lookups that follow a
 * listing cost no platform round trip.  Any change we make to a sandbox's
 * files drops that sandbox's cached listings.
 *
 * Every handler copies what it needs into a `struct op`, calls api_* and
 * replies from the callback (which may run inline or on a backend
 * thread).  No handler waits on a platform.
 */
#include <errno.h>
#include <limits.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fs/fs_int.h"

#define NBUCKETS (1u << 16)
#define CACHE_N 16
#define NEG_N 256 /* negative entries remembered (older ones: kept by the kernel
		    at most attr_timeout) */
#define NAME_MAX_LEN 255
#define FS_PATH_LIMIT (16 * PATH_MAX)
#define OP_NO_CHOWN 0x80000000u /* op->flags: a link keeps its owner */
#define OP_LOOKUP 0x40000000u	/* op->flags: a LOOKUP (may answer "none") */

struct node {
	uint64_t id;
	unsigned slot, gen;
	char *path;	  /* NULL once unlinked or replaced */
	uint64_t nlookup;
	/* the object's own inode on the backend, and the inode number we
	 * show: hard links show the same number, as on a disk */
	dev_t hdev;
	ino_t hino;	  /* 0: not keyed */
	uint64_t rino;	  /* shown st_ino; 0: fs_ino_file(id) */
	struct node *next_id, *next_path, *next_host;
};

struct lent {
	char *name;
	struct stat st;
};

/* One directory as one platform call returned it, sorted by name.  Shared
 * (never changed once made) by the cache and the open directories that
 * list it: `refs` counts them, under files->mu. */
struct listing {
	unsigned slot, gen;
	char *path;
	struct timespec when;
	size_t n;
	struct lent *e; /* sorted by name */
	char *names;	/* every e[i].name, one block */
	int refs;
};

/* A negative entry the kernel was given (reply_negative), kept so that
 * the end of a command in that sandbox can take it back: what a command
 * made must show at once afterwards, not attr_timeout later. */
struct negent {
	unsigned slot, gen;
	fuse_ino_t parent;
	struct timespec when;
	bool used;
	char name[NAME_MAX_LEN + 1];
};

struct fs_files {
	pthread_mutex_t mu;
	uint64_t next_id;
	struct node **by_id, **by_path, **by_host;
	size_t freed;	/* nodes freed since the last malloc_trim */
	struct listing *cache[CACHE_N];
	struct negent neg[NEG_N]; /* a ring */
	unsigned neg_next;
};

/* ---- node table (files->mu held) ---------------------------------------- */

static unsigned h_id(uint64_t id)
{
	return (unsigned)((id * 0x9E3779B97F4A7C15ull) >> 48) % NBUCKETS;
}

static unsigned h_path(unsigned slot, unsigned gen, const char *p)
{
	uint64_t h = 1469598103934665603ull ^ slot ^ ((uint64_t)gen << 16);

	for (; *p; p++)
		h = (h ^ (unsigned char)*p) * 1099511628211ull;
	return (unsigned)(h % NBUCKETS);
}

static struct node *node_by_id(struct fs_files *f, uint64_t id)
{
	struct node *n = f->by_id[h_id(id)];

	while (n && n->id != id)
		n = n->next_id;
	return n;
}

static struct node *node_by_path(struct fs_files *f, unsigned slot,
				 unsigned gen, const char *path)
{
	struct node *n = f->by_path[h_path(slot, gen, path)];

	while (n && !(n->slot == slot && n->gen == gen &&
		      strcmp(n->path, path) == 0))
		n = n->next_path;
	return n;
}

static unsigned h_host(unsigned slot, unsigned gen, dev_t dev, ino_t ino)
{
	uint64_t h = ((uint64_t)ino * 0x9E3779B97F4A7C15ull) ^
		     ((uint64_t)dev << 7) ^ slot ^ ((uint64_t)gen << 16);

	return (unsigned)((h ^ (h >> 29)) % NBUCKETS);
}

static void unhash_host(struct fs_files *f, struct node *n)
{
	if (!n->hino)
		return;
	struct node **pp = &f->by_host[h_host(n->slot, n->gen, n->hdev,
					      n->hino)];

	while (*pp && *pp != n)
		pp = &(*pp)->next_host;
	if (*pp)
		*pp = n->next_host;
	n->next_host = NULL;
	n->hino = 0;
}

/* The st_ino to show for node n whose object the backend describes as
 * st.  Each node shows its own number, except that a second name of a
 * file with more than one link shows the number the first one shows
 * (found by the backend's device+inode among the live named nodes of the
 * same sandbox), so `ls -i`, tar, cp -a and du see hard links as one. */
static fuse_ino_t node_ino(struct fs_files *f, struct node *n,
			   const struct stat *st)
{
	if (!S_ISDIR(st->st_mode) && st->st_ino &&
	    (n->hino != st->st_ino || n->hdev != st->st_dev)) {
		unhash_host(f, n);
		n->rino = 0;
		unsigned b = h_host(n->slot, n->gen, st->st_dev, st->st_ino);
		if (st->st_nlink > 1) {
			struct node *m = f->by_host[b];

			while (m && !(m->slot == n->slot &&
				      m->gen == n->gen && m->path &&
				      m->hino == st->st_ino &&
				      m->hdev == st->st_dev))
				m = m->next_host;
			if (m)
				n->rino = m->rino ? m->rino
						  : fs_ino_file(m->id);
		}
		n->hdev = st->st_dev;
		n->hino = st->st_ino;
		n->next_host = f->by_host[b];
		f->by_host[b] = n;
	}
	return n->rino ? n->rino : fs_ino_file(n->id);
}

#define SIB_MAX 16

/* Up to SIB_MAX inodes of the other live nodes naming the same backend
 * object as n (its other hard links the kernel knows). */
static size_t node_siblings(struct fs_files *f, const struct node *n,
			    fuse_ino_t *out)
{
	size_t k = 0;

	if (!n || !n->hino)
		return 0;
	for (struct node *m = f->by_host[h_host(n->slot, n->gen, n->hdev,
						 n->hino)];
	     m && k < SIB_MAX; m = m->next_host)
		if (m != n && m->slot == n->slot && m->gen == n->gen &&
		    m->hino == n->hino && m->hdev == n->hdev)
			out[k++] = fs_ino_file(m->id);
	return k;
}

/* Each name of a hard-linked file is its own inode to the kernel: when
 * one changes the object (link, unlink, chmod, a write), the others'
 * cached attributes are dropped so they show the new link count, mode and
 * times at once, as one inode on a disk would.  Call without files->mu. */
static void inval_attrs(struct fs *fs, const fuse_ino_t *inos, size_t k)
{
	for (size_t i = 0; i < k && fs->se; i++)
		fuse_lowlevel_notify_inval_inode(fs->se, inos[i], -1, 0);
}

/* inval_attrs for the siblings of the node of FUSE inode ino. */
static void inval_siblings(struct fs *fs, fuse_ino_t ino)
{
	fuse_ino_t sib[SIB_MAX];

	pthread_mutex_lock(&fs->files->mu);
	size_t k = node_siblings(fs->files,
				 node_by_id(fs->files, fs_ino_file_id(ino)),
				 sib);
	pthread_mutex_unlock(&fs->files->mu);
	inval_attrs(fs, sib, k);
}

/* Local files without write-back caching: a write is in the sandbox's
 * file when it returns and listings are dropped at each write, so close
 * has nothing to do and the kernel is told not to send FLUSH (one round
 * trip less per close; `: > f` closes twice). */
static bool no_flush(const struct fs *fs)
{
	return fs->page_cache && !fs->writeback;
}

/* node_ino for a node by its FUSE inode; ino itself when it is gone. */
static fuse_ino_t shown_ino(struct fs_files *f, fuse_ino_t ino,
			    const struct stat *st)
{
	pthread_mutex_lock(&f->mu);
	struct node *n = node_by_id(f, fs_ino_file_id(ino));
	fuse_ino_t r = n ? node_ino(f, n, st) : ino;
	pthread_mutex_unlock(&f->mu);
	return r;
}

static void unhash_path(struct fs_files *f, struct node *n)
{
	if (!n->path)
		return;
	struct node **pp = &f->by_path[h_path(n->slot, n->gen, n->path)];

	while (*pp && *pp != n)
		pp = &(*pp)->next_path;
	if (*pp)
		*pp = n->next_path;
	n->next_path = NULL;
	free(n->path);
	n->path = NULL;
}

static void hash_path(struct fs_files *f, struct node *n, char *path)
{
	unsigned b = h_path(n->slot, n->gen, path);

	n->path = path;
	n->next_path = f->by_path[b];
	f->by_path[b] = n;
}

/* Find or make the node of a path and take `refs` lookup references. */
static struct node *node_get(struct fs_files *f, unsigned slot, unsigned gen,
			     const char *path, uint64_t refs)
{
	struct node *n = node_by_path(f, slot, gen, path);

	if (!n) {
		char *p = strdup(path);

		n = calloc(1, sizeof *n);
		if (!n || !p) {
			free(n);
			free(p);
			return NULL;
		}
		n->id = f->next_id++;
		n->slot = slot;
		n->gen = gen;
		unsigned b = h_id(n->id);
		n->next_id = f->by_id[b];
		f->by_id[b] = n;
		hash_path(f, n, p);
	}
	n->nlookup += refs;
	return n;
}

static void node_unref(struct fs_files *f, struct node *n, uint64_t refs)
{
	n->nlookup = refs >= n->nlookup ? 0 : n->nlookup - refs;
	if (n->nlookup)
		return;
	struct node **pp = &f->by_id[h_id(n->id)];
	while (*pp && *pp != n)
		pp = &(*pp)->next_id;
	if (*pp)
		*pp = n->next_id;
	unhash_path(f, n);
	unhash_host(f, n);
	free(n);
	f->freed++;
}

/* ---- listing cache (files->mu held) ------------------------------------- */

static void listing_free(struct listing *l)
{
	if (!l)
		return;
	free(l->names);
	free(l->e);
	free(l->path);
	free(l);
}

/* Drop one reference (files->mu held, or the listing not shared yet). */
static void listing_put(struct listing *l)
{
	if (l && --l->refs <= 0)
		listing_free(l);
}

static double age(const struct timespec *t)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)(now.tv_sec - t->tv_sec) +
	       (double)(now.tv_nsec - t->tv_nsec) / 1e9;
}

static int lent_cmp(const void *a, const void *b)
{
	return strcmp(((const struct lent *)a)->name,
		      ((const struct lent *)b)->name);
}

/* Cache l (sorted), taking a reference of its own. */
static void cache_put(struct fs *fs, struct listing *l)
{
	struct fs_files *f = fs->files;
	int victim = 0;

	for (int i = 0; i < CACHE_N; i++) {
		struct listing *c = f->cache[i];

		if (c && c->slot == l->slot && c->gen == l->gen &&
		    strcmp(c->path, l->path) == 0) {
			victim = i;
			break;
		}
		if (!c) {
			victim = i;
		} else if (f->cache[victim] &&
			   age(&c->when) > age(&f->cache[victim]->when)) {
			victim = i;
		}
	}
	listing_put(f->cache[victim]);
	l->refs++;
	f->cache[victim] = l;
}

/* 1 and *st filled: found in a fresh listing; -1: a fresh listing
 * without the name (a negative answer); 0: not cached. */
static int cache_find(struct fs *fs, unsigned slot, unsigned gen,
		      const char *dir, const char *name, struct stat *st)
{
	struct fs_files *f = fs->files;

	for (int i = 0; i < CACHE_N; i++) {
		struct listing *c = f->cache[i];

		if (!c || c->slot != slot || c->gen != gen ||
		    strcmp(c->path, dir) != 0)
			continue;
		if (age(&c->when) >= fs->opts.attr_timeout)
			return 0;
		struct lent key = { .name = (char *)name };
		struct lent *e = bsearch(&key, c->e, c->n, sizeof *c->e,
					 lent_cmp);
		if (!e)
			return -1;
		*st = e->st;
		return 1;
	}
	return 0;
}

static void cache_drop_sb(struct fs_files *f, unsigned slot)
{
	for (int i = 0; i < CACHE_N; i++) {
		if (f->cache[i] && f->cache[i]->slot == slot) {
			listing_put(f->cache[i]);
			f->cache[i] = NULL;
		}
	}
}

/* Our own change to a sandbox's files: its listings are stale. */
static void invalidate(struct fs *fs, unsigned slot)
{
	pthread_mutex_lock(&fs->files->mu);
	cache_drop_sb(fs->files, slot);
	pthread_mutex_unlock(&fs->files->mu);
}

void fs_files_forget_sb(struct fs *fs, unsigned slot)
{
	if (fs->files)
		invalidate(fs, slot);
}

/* ---- set-up ------------------------------------------------------------- */

int fs_files_init(struct fs *fs)
{
	struct fs_files *f = calloc(1, sizeof *f);

	if (!f)
		return -ENOMEM;
	f->by_id = calloc(NBUCKETS, sizeof *f->by_id);
	f->by_path = calloc(NBUCKETS, sizeof *f->by_path);
	f->by_host = calloc(NBUCKETS, sizeof *f->by_host);
	if (!f->by_id || !f->by_path || !f->by_host) {
		free(f->by_id);
		free(f->by_path);
		free(f->by_host);
		free(f);
		return -ENOMEM;
	}
	pthread_mutex_init(&f->mu, NULL);
	f->next_id = 1;
	fs->files = f;
	return 0;
}

void fs_files_free(struct fs *fs)
{
	struct fs_files *f = fs->files;

	if (!f)
		return;
	for (unsigned b = 0; b < NBUCKETS; b++) {
		struct node *n = f->by_id[b];

		while (n) {
			struct node *nx = n->next_id;

			free(n->path);
			free(n);
			n = nx;
		}
	}
	for (int i = 0; i < CACHE_N; i++)
		listing_put(f->cache[i]);
	free(f->by_id);
	free(f->by_path);
	free(f->by_host);
	pthread_mutex_destroy(&f->mu);
	free(f);
	fs->files = NULL;
}

/* Nodes live as long as the kernel keeps their dentries: a tree of
 * 100,000 entries walked once costs ~25 MB until the kernel forgets them,
 * and glibc keeps what is freed in the middle of its heaps (one per
 * worker thread).  After every NODE_TRIM nodes freed, give it back. */
#define NODE_TRIM 4096

void fs_files_forget(struct fs *fs, fuse_ino_t ino, uint64_t nlookup)
{
	struct fs_files *f = fs->files;
	bool trim = false;

	pthread_mutex_lock(&f->mu);
	struct node *n = node_by_id(f, fs_ino_file_id(ino));
	if (n)
		node_unref(f, n, nlookup);
	if (f->freed >= NODE_TRIM) {
		f->freed = 0;
		trim = true;
	}
	pthread_mutex_unlock(&f->mu);
	if (trim)
		malloc_trim(0);
}

/* ---- one request -------------------------------------------------------- */

/* Per-open state of a regular file.  fi->fh is its id in a table, not a
 * pointer: each request in flight holds a reference, RELEASE drops the
 * open's, and the file is closed when the last one goes, so a RELEASE that
 * overtakes a READ (seen with interrupted readers) cannot free the
 * api_file under it. */
struct ofile {
	uint64_t id;
	int refs;		/* (of_mu) */
	struct fs *fs;
	struct api_file *f;
	unsigned slot, gen;
	fuse_ino_t ino;		/* for fstat of an unlinked open file */
	bool dirty;		/* written since the last flush */
	struct ofile *next;	/* (of_mu) hash chain by id */
	struct ofile *next_ino;	/* (of_mu) hash chain by ino */
};

#define OF_BUCKETS 1024u
static pthread_mutex_t of_mu = PTHREAD_MUTEX_INITIALIZER;
static struct ofile *of_tab[OF_BUCKETS];
static struct ofile *of_ino_tab[OF_BUCKETS]; /* the same, by inode */
static uint64_t of_next = 1;

static unsigned of_ino_hash(fuse_ino_t ino)
{
	return (unsigned)(((uint64_t)ino * 0x9E3779B97F4A7C15ull) >> 40) %
	       OF_BUCKETS;
}

static void nop_cb(void *ud, int err, const char *msg);

static uint64_t of_register(struct ofile *of)
{
	pthread_mutex_lock(&of_mu);
	of->id = of_next++;
	of->refs = 1;
	of->next = of_tab[of->id % OF_BUCKETS];
	of_tab[of->id % OF_BUCKETS] = of;
	of->next_ino = of_ino_tab[of_ino_hash(of->ino)];
	of_ino_tab[of_ino_hash(of->ino)] = of;
	pthread_mutex_unlock(&of_mu);
	return of->id;
}

static struct ofile *of_get(uint64_t id)
{
	struct ofile *of;

	pthread_mutex_lock(&of_mu);
	for (of = of_tab[id % OF_BUCKETS]; of && of->id != id; of = of->next)
		;
	if (of)
		of->refs++;
	pthread_mutex_unlock(&of_mu);
	return of;
}

static void of_closed(void *ud, int err, const char *msg)
{
	struct ofile *of = ud;

	if (err)
		fs_log("close: %s", msg ? msg : api_strerror(err));
	free(of);
}

static void of_put(struct ofile *of)
{
	pthread_mutex_lock(&of_mu);
	bool last = --of->refs == 0;
	pthread_mutex_unlock(&of_mu);
	if (last)
		api_file_close(of->fs->be, of->f, of_closed, of);
}

/* RELEASE: forget the id, drop the open's reference. */
static void of_unregister(uint64_t id)
{
	struct ofile *of = NULL;

	pthread_mutex_lock(&of_mu);
	for (struct ofile **pp = &of_tab[id % OF_BUCKETS]; *pp;
	     pp = &(*pp)->next) {
		if ((*pp)->id == id) {
			of = *pp;
			*pp = of->next;
			break;
		}
	}
	if (of) {
		struct ofile **pp = &of_ino_tab[of_ino_hash(of->ino)];

		while (*pp && *pp != of)
			pp = &(*pp)->next_ino;
		if (*pp)
			*pp = of->next_ino;
	}
	pthread_mutex_unlock(&of_mu);
	if (of)
		of_put(of);
}

/* Per-open state of a directory (fi->fh). */
struct odir {
	unsigned slot, gen;
	char id[API_ID_MAX];
	char *path;
	fuse_ino_t ino;
	struct listing *l; /* a reference; NULL before the first pass */
};

enum op_kind { OP_ENTRY, OP_ATTR, OP_CREATE, OP_NONE };

struct op {
	fuse_req_t req;
	struct fs *fs;
	fuse_ino_t ino;	/* the node asked about (attr replies) */
	unsigned slot, gen;
	char id[API_ID_MAX];
	char *path;	/* target path */
	char *path2;	/* rename: new path */
	unsigned flags; /* rename flags */
	enum op_kind kind;
	struct fuse_file_info fi; /* open / create */
	struct ofile *of;
	struct odir *od;
	size_t size;
	off_t off;
};

static void nop_cb(void *ud, int err, const char *msg)
{
	(void)ud;
	if (err)
		fs_log("close: %s", msg ? msg : api_strerror(err));
}

static void op_free(struct op *o)
{
	free(o->path);
	free(o->path2);
	free(o);
}

/* Errors that are answers, not incidents: no sentence in err. */
static bool ordinary(int err)
{
	return err == -ENOENT || err == -EEXIST || err == -ENOTEMPTY ||
	       err == -ENOTDIR || err == -EISDIR || err == -ENAMETOOLONG ||
	       err == -EXDEV || err == -EINVAL || err == -ENODATA ||
	       err == -EPERM || err == -EACCES;
}

/* Reply -err to the op's request, record a sentence where it helps. */
static void op_fail(struct op *o, int err, const char *msg, const char *what)
{
	if (!ordinary(err)) {
		int e2;
		struct fs_sb *sb = fs_sb_get_slot(o->fs, o->slot, o->gen, &e2);

		if (sb) {
			fs_sb_set_err(o->fs, sb, "%s %s: %s", what,
				      o->path ? o->path : "",
				      msg ? msg : api_strerror(err));
			fs_sb_put(o->fs, sb);
		}
	}
	fuse_reply_err(o->req, -err);
	op_free(o);
}

static char *path_join(const char *dir, const char *name, int *err)
{
	size_t dl = strlen(dir), nl = strlen(name);
	char *p;

	/* deeper than PATH_MAX is fine (processes get there by relative
	 * paths); the bound only caps the memory one node's path takes */
	if (nl > NAME_MAX_LEN || dl + nl + 2 > FS_PATH_LIMIT) {
		*err = -ENAMETOOLONG;
		return NULL;
	}
	p = malloc(dl + nl + 2);
	if (!p) {
		*err = -ENOMEM;
		return NULL;
	}
	if (strcmp(dir, "/") == 0)
		dl = 0;
	memcpy(p, dir, dl);
	p[dl] = '/';
	memcpy(p + dl + 1, name, nl + 1);
	return p;
}

/* Make an op for node `ino` (its path, its live sandbox) and optionally a
 * child `name` of it.  NULL after replying the error. */
static struct op *op_new(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	struct fs *fs = fs_of(req);
	struct fs_files *f = fs->files;
	struct op *o = calloc(1, sizeof *o);
	char *dir = NULL;
	int err = 0;

	if (!o) {
		fuse_reply_err(req, ENOMEM);
		return NULL;
	}
	o->req = req;
	o->fs = fs;
	o->ino = ino;
	pthread_mutex_lock(&f->mu);
	struct node *n = node_by_id(f, fs_ino_file_id(ino));
	if (!n)
		err = -ESTALE;
	else if (!n->path)
		err = -ENOENT;
	else if (!(dir = strdup(n->path)))
		err = -ENOMEM;
	if (n) {
		o->slot = n->slot;
		o->gen = n->gen;
	}
	pthread_mutex_unlock(&f->mu);
	if (!err) {
		struct fs_sb *sb = fs_sb_get_slot(fs, o->slot, o->gen, &err);

		if (sb) {
			snprintf(o->id, sizeof o->id, "%s", sb->id);
			fs_sb_put(fs, sb);
		}
	}
	if (!err && name) {
		o->path = path_join(dir, name, &err);
		free(dir);
	} else {
		o->path = dir;
	}
	if (err) {
		fuse_reply_err(req, -err);
		op_free(o);
		return NULL;
	}
	return o;
}

static void fill_entry(struct op *o, const struct stat *st,
		       struct fuse_entry_param *e, bool *ok)
{
	struct fs_files *f = o->fs->files;
	fuse_ino_t sib[SIB_MAX];
	size_t k = 0;

	memset(e, 0, sizeof *e);
	pthread_mutex_lock(&f->mu);
	struct node *n = node_get(f, o->slot, o->gen, o->path, 1);
	e->attr = *st;
	if (n) {
		e->ino = fs_ino_file(n->id);
		e->attr.st_ino = node_ino(f, n, st);
		if (o->flags & OP_NO_CHOWN) /* a new hard link */
			k = node_siblings(f, n, sib);
	}
	pthread_mutex_unlock(&f->mu);
	inval_attrs(o->fs, sib, k);
	*ok = n != NULL;
	e->attr_timeout = e->entry_timeout = o->fs->opts.attr_timeout;
}

/* The kernel did not take the reference an entry reply carried. */
static void unref_ino(struct fs *fs, fuse_ino_t ino)
{
	fs_files_forget(fs, ino, 1);
}

static void reply_entry(struct op *o, const struct stat *st)
{
	struct fuse_entry_param e;
	bool ok;

	fill_entry(o, st, &e, &ok);
	if (!ok) {
		fuse_reply_err(o->req, ENOMEM);
		op_free(o);
		return;
	}
	if (fuse_reply_entry(o->req, &e) != 0)
		unref_ino(o->fs, e.ino);
	op_free(o);
}

/* "No such name", kept by the kernel as a negative entry for
 * attr_timeout: a missing name probed again and again (a PATH search, a
 * compiler's include path, python's imports) is asked once.  A name a
 * sandbox process makes meanwhile shows through the mount at the latest
 * when the entry expires, like a changed file's attributes (README,
 * Caching); our own creates, renames and links replace the entry in the
 * kernel at once.  Local files only (a lookup that asked the platform);
 * remote backends keep their close-to-open model (api/README.md), where
 * only a name missing from a fresh listing is answered this way. */
static void reply_negative(struct op *o)
{
	struct fuse_entry_param e;
	struct fs_files *f = o->fs->files;
	const char *name = strrchr(o->path, '/');

	name = name ? name + 1 : o->path;
	if (strlen(name) <= NAME_MAX_LEN) {
		pthread_mutex_lock(&f->mu);
		struct negent *ne = &f->neg[f->neg_next++ % NEG_N];

		ne->slot = o->slot;
		ne->gen = o->gen;
		ne->used = true;
		ne->parent = o->ino;
		clock_gettime(CLOCK_MONOTONIC, &ne->when);
		snprintf(ne->name, sizeof ne->name, "%s", name);
		pthread_mutex_unlock(&f->mu);
	}
	memset(&e, 0, sizeof e);
	e.entry_timeout = o->fs->opts.attr_timeout;
	fuse_reply_entry(o->req, &e);
	op_free(o);
}

/* A command of sandbox `slot` ended (exec, proc/ job): what it made or
 * changed must show through the mount at once.  Its cached listings go,
 * and the negative entries the kernel holds for it are taken back.  For
 * a page-cache (local) backend this runs on the backend's exec thread,
 * which no file request waits on, so the kernel is told synchronously,
 * before the command's end is visible to anyone (a reader's EOF, wait);
 * remote backends may run it on the thread their file requests wait on,
 * so there it is queued (the poller sends it, normally within
 * microseconds; at worst the entry expires after attr_timeout). */
void fs_files_cmd_ended(struct fs *fs, unsigned slot, unsigned gen)
{
	struct fs_files *f = fs->files;
	struct negent *todo;
	size_t n = 0;

	if (!f)
		return;
	todo = malloc(NEG_N * sizeof *todo);
	pthread_mutex_lock(&f->mu);
	cache_drop_sb(f, slot);
	for (unsigned i = 0; i < NEG_N; i++) {
		struct negent *ne = &f->neg[i];

		if (!ne->used || ne->slot != slot || ne->gen != gen)
			continue;
		if (todo && age(&ne->when) < fs->opts.attr_timeout + 1)
			todo[n++] = *ne;
		ne->used = false;
	}
	pthread_mutex_unlock(&f->mu);
	for (size_t i = 0; i < n; i++) {
		if (fs->page_cache && fs->se)
			fuse_lowlevel_notify_inval_entry(
				fs->se, todo[i].parent, todo[i].name,
				strlen(todo[i].name));
		else
			fs_notify_inval_entry(fs, todo[i].parent,
					      todo[i].name);
	}
	free(todo);
}

/* Completion of every api_file_stat: reply by op kind. */
static void stat_cb(void *ud, int err, const char *msg, const struct stat *st)
{
	struct op *o = ud;

	if (err == -ENOENT && (o->flags & OP_LOOKUP) && o->fs->page_cache &&
	    o->fs->opts.attr_timeout > 0) {
		reply_negative(o);
		return;
	}
	if (err) {
		if (o->kind == OP_CREATE && o->of) {
			/* Created but cannot be described: do not leak. */
			api_file_close(o->fs->be, o->of->f, nop_cb, NULL);
			free(o->of);
		}
		op_fail(o, err, msg, "stat");
		return;
	}
	if (o->kind == OP_ATTR) {
		struct stat a = *st;

		a.st_ino = shown_ino(o->fs->files, o->ino, st);
		fuse_reply_attr(o->req, &a, o->fs->opts.attr_timeout);
		op_free(o);
	} else if (o->kind == OP_CREATE) {
		struct fuse_entry_param e;
		bool ok;

		fill_entry(o, st, &e, &ok);
		o->fi.direct_io = 0;
		o->fi.keep_cache = o->fs->page_cache;
		o->fi.noflush = no_flush(o->fs);
		if (!ok) {
			fuse_reply_err(o->req, ENOMEM);
			api_file_close(o->fs->be, o->of->f, nop_cb, NULL);
			free(o->of);
		} else {
			o->of->ino = e.ino;
			o->fi.fh = of_register(o->of);
			if (fuse_reply_create(o->req, &e, &o->fi) != 0) {
				unref_ino(o->fs, e.ino);
				of_unregister(o->fi.fh);
			}
		}
		op_free(o);
	} else {
		reply_entry(o, st);
	}
}

static void do_stat(struct op *o, enum op_kind kind)
{
	o->kind = kind;
	api_file_stat(o->fs->be, o->id, o->path, stat_cb, o);
}

/* ---- the sandbox's root ------------------------------------------------- */

void fs_file_root_lookup(fuse_req_t req, struct fs_sb *sb)
{
	struct fs *fs = fs_of(req);
	struct op *o = calloc(1, sizeof *o);

	if (!o || !(o->path = strdup("/"))) {
		free(o);
		fuse_reply_err(req, ENOMEM);
		return;
	}
	o->req = req;
	o->fs = fs;
	o->slot = sb->slot;
	o->gen = sb->gen;
	snprintf(o->id, sizeof o->id, "%s", sb->id);
	do_stat(o, OP_ENTRY);
}

/* ---- lookup, attributes ------------------------------------------------- */

static void f_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct op *o = op_new(req, parent, name);
	struct stat st;
	int hit;

	if (!o)
		return;
	/* The parent's path is the child's up to its last slash. */
	char *slash = strrchr(o->path, '/');
	char keep = slash[slash == o->path];
	slash[slash == o->path] = '\0';
	pthread_mutex_lock(&o->fs->files->mu);
	hit = cache_find(o->fs, o->slot, o->gen, o->path, name, &st);
	pthread_mutex_unlock(&o->fs->files->mu);
	slash[slash == o->path] = keep;
	if (hit > 0) {
		reply_entry(o, &st);
		return;
	}
	if (hit < 0) {
		/* not in the fresh listing: no platform call at all */
		reply_negative(o);
		return;
	}
	o->flags |= OP_LOOKUP;
	do_stat(o, OP_ENTRY);
}

/* fstat / ftruncate through the open file (a remote backend's cached
 * copy answers even after the file was renamed or unlinked); a backend
 * without that path (-EOPNOTSUPP) goes by path. */
struct fop_ctx {
	fuse_req_t req;
	fuse_ino_t ino;
	struct fs *fs;
	struct ofile *of;
	struct stat attr;
	int to_set;
	bool gone; /* the inode has no path any more */
};

static void path_getattr(fuse_req_t req, fuse_ino_t ino)
{
	struct op *o = op_new(req, ino, NULL);

	if (o)
		do_stat(o, OP_ATTR);
}

static void fstat_cb(void *ud, int err, const char *msg,
		     const struct stat *st)
{
	struct fop_ctx *c = ud;

	(void)msg;
	if (err == -EOPNOTSUPP) {
		path_getattr(c->req, c->ino);
	} else if (err) {
		fuse_reply_err(c->req, -err);
	} else {
		struct stat a = *st;

		a.st_ino = shown_ino(c->fs->files, c->ino, st);
		fuse_reply_attr(c->req, &a, c->fs->opts.attr_timeout);
	}
	of_put(c->of);
	free(c);
}

/* An open file of inode ino (a reference), or NULL. */
static struct ofile *of_by_ino(fuse_ino_t ino)
{
	struct ofile *of = NULL;

	pthread_mutex_lock(&of_mu);
	for (of = of_ino_tab[of_ino_hash(ino)]; of && of->ino != ino;
	     of = of->next_ino)
		;
	if (of)
		of->refs++;
	pthread_mutex_unlock(&of_mu);
	return of;
}

static void f_getattr(fuse_req_t req, fuse_ino_t ino,
		      struct fuse_file_info *fi)
{
	struct ofile *of = fi ? of_get(fi->fh) : NULL;
	struct fs_files *ff = fs_of(req)->files;
	struct fop_ctx *c;

	if (!of) {
		/* fstat of an unlinked (or replaced) open file comes
		 * without a handle: find one of its opens */
		pthread_mutex_lock(&ff->mu);
		struct node *n = node_by_id(ff, fs_ino_file_id(ino));
		bool gone = n && !n->path;
		pthread_mutex_unlock(&ff->mu);
		if (gone)
			of = of_by_ino(ino);
	}

	if (!of) {
		path_getattr(req, ino);
		return;
	}
	c = calloc(1, sizeof *c);
	if (!c) {
		of_put(of);
		fuse_reply_err(req, ENOMEM);
		return;
	}
	c->req = req;
	c->ino = ino;
	c->fs = fs_of(req);
	c->of = of;
	api_file_fstat(c->fs->be, of->f, fstat_cb, c);
}

static void setattr_fstat_cb(void *ud, int err, const char *msg,
			     const struct stat *st)
{
	struct op *o = ud;
	struct ofile *of = o->of;

	(void)msg;
	o->of = NULL;
	of_put(of);
	if (err) { /* no such path for this backend: by path */
		do_stat(o, OP_ATTR);
		return;
	}
	struct stat a = *st;

	a.st_ino = shown_ino(o->fs->files, o->ino, st);
	fuse_reply_attr(o->req, &a, o->fs->opts.attr_timeout);
	op_free(o);
}

static void setattr_cb(void *ud, int err, const char *msg)
{
	struct op *o = ud;

	invalidate(o->fs, o->slot);
	if (err) {
		op_fail(o, err, msg, "setattr");
		return;
	}
	inval_siblings(o->fs, o->ino);
	/* The new attributes: a local file that is open (tar sets times,
	 * owner and mode of the file it is writing) is described through
	 * its descriptor, not by a second walk of its path. */
	struct ofile *of = o->fs->page_cache ? of_by_ino(o->ino) : NULL;
	if (of) {
		o->of = of;
		api_file_fstat(o->fs->be, of->f, setattr_fstat_cb, o);
		return;
	}
	do_stat(o, OP_ATTR);
}

static struct timespec ts_of(int to_set, int now_bit, struct timespec t)
{
	if (to_set & now_bit) {
		t.tv_sec = 0;
		t.tv_nsec = UTIME_NOW;
	}
	return t;
}

static void path_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr,
			 int to_set);

static void ftrunc_cb(void *ud, int err, const char *msg)
{
	struct fop_ctx *c = ud;

	if (err == -EOPNOTSUPP) {
		path_setattr(c->req, c->ino, &c->attr, c->to_set);
	} else if (err) {
		fs_log("truncate: %s", msg ? msg : api_strerror(err));
		fuse_reply_err(c->req, -err);
	} else if (!c->gone &&
		   (c->to_set & ~(FUSE_SET_ATTR_SIZE | FUSE_SET_ATTR_MTIME |
				  FUSE_SET_ATTR_MTIME_NOW |
				  FUSE_SET_ATTR_CTIME))) {
		/* more than the times a truncate sets anyway: by path */
		invalidate(c->fs, c->of->slot);
		path_setattr(c->req, c->ino, &c->attr,
			     c->to_set & ~(FUSE_SET_ATTR_SIZE |
					   FUSE_SET_ATTR_CTIME));
	} else {
		invalidate(c->fs, c->of->slot);
		api_file_fstat(c->fs->be, c->of->f, fstat_cb, c);
		return; /* fstat_cb frees c */
	}
	of_put(c->of);
	free(c);
}

static void f_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr,
		      int to_set, struct fuse_file_info *fi)
{
	struct ofile *of;
	struct fop_ctx *c;

	struct fs_files *ff = fs_of(req)->files;
	bool gone;

	/* An unlinked or replaced open file has no path: reach it through
	 * one of its opens (write-back caching sends time updates without
	 * a handle). */
	pthread_mutex_lock(&ff->mu);
	struct node *n = node_by_id(ff, fs_ino_file_id(ino));
	gone = n && !n->path;
	pthread_mutex_unlock(&ff->mu);
	of = fi ? of_get(fi->fh) : NULL;
	if (!of && gone)
		of = of_by_ino(ino);
	if (of && !(to_set & FUSE_SET_ATTR_SIZE) && !gone) {
		of_put(of);
		of = NULL;
	}
	if (!of) {
		path_setattr(req, ino, attr, to_set);
		return;
	}
	c = calloc(1, sizeof *c);
	if (!c) {
		of_put(of);
		fuse_reply_err(req, ENOMEM);
		return;
	}
	c->req = req;
	c->ino = ino;
	c->fs = fs_of(req);
	c->of = of;
	c->attr = *attr;
	c->to_set = to_set;
	c->gone = gone;
	if (!(to_set & FUSE_SET_ATTR_SIZE)) {
		/* times or mode of a file no name reaches: nothing in the
		 * sandbox to change; answer what it is */
		api_file_fstat(c->fs->be, of->f, fstat_cb, c);
		return;
	}
	of->dirty = true;
	api_file_ftruncate(c->fs->be, of->f, attr->st_size, ftrunc_cb, c);
}

static void path_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr,
			 int to_set)
{
	struct op *o = op_new(req, ino, NULL);
	struct api_setattr sa = { 0 };

	if (!o)
		return;
	if (to_set & FUSE_SET_ATTR_MODE) {
		sa.mask |= API_SET_MODE;
		sa.mode = attr->st_mode & 07777;
	}
	if (to_set & FUSE_SET_ATTR_UID) {
		sa.mask |= API_SET_UID;
		sa.uid = attr->st_uid;
	}
	if (to_set & FUSE_SET_ATTR_GID) {
		sa.mask |= API_SET_GID;
		sa.gid = attr->st_gid;
	}
	if (to_set & FUSE_SET_ATTR_SIZE) {
		sa.mask |= API_SET_SIZE;
		sa.size = attr->st_size;
	}
	if (to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_ATIME_NOW)) {
		sa.mask |= API_SET_ATIME;
		sa.atime = ts_of(to_set, FUSE_SET_ATTR_ATIME_NOW,
				 attr->st_atim);
	}
	if (to_set & (FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_MTIME_NOW)) {
		sa.mask |= API_SET_MTIME;
		sa.mtime = ts_of(to_set, FUSE_SET_ATTR_MTIME_NOW,
				 attr->st_mtim);
	}
	if (!sa.mask) { /* e.g. ctime only: nothing to change */
		do_stat(o, OP_ATTR);
		return;
	}
	api_file_setattr(o->fs->be, o->id, o->path, &sa, setattr_cb, o);
}

static void readlink_cb(void *ud, int err, const char *msg, const char *s)
{
	struct op *o = ud;
	char out[PATH_MAX];

	if (err) {
		op_fail(o, err, msg, "readlink");
		return;
	}
	err = fs_symlink_host(o->path, s, out, sizeof out);
	if (err) {
		op_fail(o, err, "link target too long", "readlink");
		return;
	}
	fuse_reply_readlink(o->req, out);
	op_free(o);
}

static void f_readlink(fuse_req_t req, fuse_ino_t ino)
{
	struct op *o = op_new(req, ino, NULL);

	if (o)
		api_file_readlink(o->fs->be, o->id, o->path, readlink_cb, o);
}

/* ---- namespace changes -------------------------------------------------- */

/* mkdir, symlink: done, then describe the new entry. */

static void create_fstat_cb(void *ud, int err, const char *msg,
			    const struct stat *st)
{
	struct op *o = ud;

	if (err == -EOPNOTSUPP)
		do_stat(o, OP_CREATE);
	else
		stat_cb(o, err, msg, st);
}

/* The entry of a file just created: local files describe it through the
 * descriptor the create returned (no second path walk); others by path
 * (a remote backend's cached copy may not know it yet). */
static void describe_created(struct op *o)
{
	o->kind = OP_CREATE;
	if (o->fs->page_cache)
		api_file_fstat(o->fs->be, o->of->f, create_fstat_cb, o);
	else
		do_stat(o, OP_CREATE);
}

static void owned_cb(void *ud, int err, const char *msg)
{
	struct op *o = ud;

	if (err == -ENOENT && (o->flags & OP_LOOKUP) && o->fs->page_cache &&
	    o->fs->opts.attr_timeout > 0) {
		reply_negative(o);
		return;
	}
	if (err) {
		if (o->kind == OP_CREATE && o->of) {
			api_file_close(o->fs->be, o->of->f, nop_cb, NULL);
			free(o->of);
		}
		op_fail(o, err, msg, "chown");
		return;
	}
	if (o->kind == OP_CREATE)
		describe_created(o);
	else
		do_stat(o, OP_ENTRY);
}

/* What a caller other than root makes (with -o allow_other) belongs to
 * that caller, as on any filesystem: one attribute change after the
 * create.  Root's creations need none.  True when the reply is left to
 * owned_cb. */
static bool give_to_caller(struct op *o)
{
	const struct fuse_ctx *c = fuse_req_ctx(o->req);
	struct api_setattr sa = {.mask = API_SET_UID | API_SET_GID};

	if (!c || (c->uid == 0 && c->gid == 0) || (o->flags & OP_NO_CHOWN))
		return false;
	sa.uid = c->uid;
	sa.gid = c->gid;
	api_file_setattr(o->fs->be, o->id, o->path, &sa, owned_cb, o);
	return true;
}

static void made_cb(void *ud, int err, const char *msg)
{
	struct op *o = ud;

	invalidate(o->fs, o->slot);
	if (err) {
		op_fail(o, err, msg, "create");
		return;
	}
	if (give_to_caller(o))
		return;
	do_stat(o, OP_ENTRY);
}

static void f_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name,
		    mode_t mode)
{
	struct op *o = op_new(req, parent, name);

	if (o)
		api_file_mkdir(o->fs->be, o->id, o->path, mode & 07777,
			       made_cb, o);
}

static void f_symlink(fuse_req_t req, const char *link, fuse_ino_t parent,
		      const char *name)
{
	struct op *o = op_new(req, parent, name);

	/* Stored as given: inside the sandbox the link is unchanged. */
	if (o)
		api_file_symlink(o->fs->be, o->id, link, o->path, made_cb, o);
}

/* FIFOs and unix sockets (bind() makes one); device nodes: EPERM. */
static void f_mknod(fuse_req_t req, fuse_ino_t parent, const char *name,
		    mode_t mode, dev_t rdev)
{
	struct op *o;

	(void)rdev;
	if (!S_ISFIFO(mode) && !S_ISSOCK(mode) && !S_ISREG(mode)) {
		fuse_reply_err(req, EPERM);
		return;
	}
	o = op_new(req, parent, name);
	if (o)
		api_file_mknod(o->fs->be, o->id, o->path, mode, made_cb, o);
}

/* A hard link, within one sandbox (EXDEV across sandboxes). */
static void f_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent,
		   const char *newname)
{
	struct op *o = op_new(req, ino, NULL);
	struct op *o2;

	if (!o)
		return;
	o2 = op_new(req, newparent, newname);
	if (!o2) { /* replied */
		op_free(o);
		return;
	}
	if (o2->slot != o->slot || o2->gen != o->gen) {
		op_free(o2);
		fuse_reply_err(req, EXDEV);
		op_free(o);
		return;
	}
	/* the reply is the entry of the new name */
	o->path2 = o->path;
	o->path = o2->path;
	o2->path = NULL;
	op_free(o2);
	o->flags = OP_NO_CHOWN;
	api_file_link(o->fs->be, o->id, o->path2, o->path, made_cb, o);
}

/* The path no longer names the node it named: unhash it (and what lies
 * below it), so the next lookup of the path makes a fresh node. */
static void detach_tree(struct fs_files *f, unsigned slot, unsigned gen,
			const char *path)
{
	size_t pl = strlen(path);

	for (unsigned b = 0; b < NBUCKETS; b++) {
		struct node *n = f->by_path[b], *nx;

		for (; n; n = nx) {
			nx = n->next_path;
			if (n->slot == slot && n->gen == gen &&
			    strncmp(n->path, path, pl) == 0 &&
			    (n->path[pl] == '\0' || n->path[pl] == '/'))
				unhash_path(f, n);
		}
	}
}

static void removed_cb(void *ud, int err, const char *msg)
{
	struct op *o = ud;
	struct fs_files *f = o->fs->files;

	invalidate(o->fs, o->slot);
	if (err) {
		op_fail(o, err, msg, "remove");
		return;
	}
	fuse_ino_t sib[SIB_MAX];
	size_t k;
	pthread_mutex_lock(&f->mu);
	struct node *n = node_by_path(f, o->slot, o->gen, o->path);
	k = node_siblings(f, n, sib); /* their link count dropped */
	if (n)
		unhash_path(f, n);
	pthread_mutex_unlock(&f->mu);
	inval_attrs(o->fs, sib, k);
	fuse_reply_err(o->req, 0);
	op_free(o);
}

static void f_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct op *o = op_new(req, parent, name);

	if (o)
		api_file_unlink(o->fs->be, o->id, o->path, removed_cb, o);
}

static void f_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct op *o = op_new(req, parent, name);

	if (o)
		api_file_rmdir(o->fs->be, o->id, o->path, removed_cb, o);
}

/* Give every node at or under `from` the same place under `to`. */
static void move_tree(struct fs_files *f, unsigned slot, unsigned gen,
		      const char *from, const char *to, struct node **moved,
		      size_t *nmoved)
{
	size_t fl = strlen(from);

	/* Collect first: rehashing while walking buckets would revisit. */
	for (unsigned b = 0; b < NBUCKETS; b++) {
		for (struct node *n = f->by_path[b]; n; n = n->next_path) {
			if (n->slot == slot && n->gen == gen &&
			    strncmp(n->path, from, fl) == 0 &&
			    (n->path[fl] == '\0' || n->path[fl] == '/'))
				moved[(*nmoved)++] = n;
		}
	}
	for (size_t i = 0; i < *nmoved; i++) {
		struct node *n = moved[i];
		size_t len = strlen(to) + strlen(n->path + fl) + 1;
		char *np = malloc(len);

		if (np)
			snprintf(np, len, "%s%s", to, n->path + fl);
		unhash_path(f, n);
		if (np)
			hash_path(f, n, np);
	}
}

static size_t count_tree(struct fs_files *f, unsigned slot, unsigned gen,
			 const char *p)
{
	size_t pl = strlen(p), c = 0;

	for (unsigned b = 0; b < NBUCKETS; b++)
		for (struct node *n = f->by_path[b]; n; n = n->next_path)
			c += n->slot == slot && n->gen == gen &&
			     strncmp(n->path, p, pl) == 0 &&
			     (n->path[pl] == '\0' || n->path[pl] == '/');
	return c;
}

static void renamed_cb(void *ud, int err, const char *msg)
{
	struct op *o = ud;
	struct fs_files *f = o->fs->files;

	invalidate(o->fs, o->slot);
	if (err) {
		op_fail(o, err, msg, "rename");
		return;
	}
	pthread_mutex_lock(&f->mu);
	size_t n1 = count_tree(f, o->slot, o->gen, o->path);
	size_t n2 = count_tree(f, o->slot, o->gen, o->path2);
	struct node **a = calloc(n1 + 1, sizeof *a);
	struct node **b = calloc(n2 + 1, sizeof *b);
	size_t na = 0, nb = 0;

	if (a && b) {
		if (o->flags & RENAME_EXCHANGE) {
			/* Move the second tree aside under a name no path can
			 * have, then swap. */
			move_tree(f, o->slot, o->gen, o->path2, "\n", b, &nb);
			move_tree(f, o->slot, o->gen, o->path, o->path2, a,
				  &na);
			nb = 0;
			move_tree(f, o->slot, o->gen, "\n", o->path, b, &nb);
		} else {
			detach_tree(f, o->slot, o->gen, o->path2);
			move_tree(f, o->slot, o->gen, o->path, o->path2, a,
				  &na);
		}
	} else {
		/* No memory to move: forget the paths rather than keep
		 * wrong ones. */
		detach_tree(f, o->slot, o->gen, o->path);
		detach_tree(f, o->slot, o->gen, o->path2);
	}
	pthread_mutex_unlock(&f->mu);
	free(a);
	free(b);
	fuse_reply_err(o->req, 0);
	op_free(o);
}

static void f_rename(fuse_req_t req, fuse_ino_t parent, const char *name,
		     fuse_ino_t newparent, const char *newname,
		     unsigned int flags)
{
	struct op *o = op_new(req, parent, name);
	struct op *o2;

	if (!o)
		return;
	o2 = op_new(req, newparent, newname);
	if (!o2) { /* replied */
		op_free(o);
		return;
	}
	if (o2->slot != o->slot || o2->gen != o->gen) {
		op_free(o2);
		fuse_reply_err(req, EXDEV);
		op_free(o);
		return;
	}
	o->path2 = o2->path;
	o2->path = NULL;
	op_free(o2);
	o->flags = flags;
	api_file_rename(o->fs->be, o->id, o->path, o->path2, flags,
			renamed_cb, o);
}

/* ---- open files --------------------------------------------------------- */

static int open_flags(const struct fs *fs, int flags)
{
	flags &= O_ACCMODE | O_CREAT | O_EXCL | O_TRUNC | O_APPEND;
	if (fs->writeback) {
		/* the kernel reads around partial page writes and places
		 * appends itself (its offsets already point at the end) */
		if ((flags & O_ACCMODE) == O_WRONLY)
			flags = (flags & ~O_ACCMODE) | O_RDWR;
		flags &= ~O_APPEND;
	}
	return flags;
}

static void opened_cb(void *ud, int err, const char *msg, struct api_file *af)
{
	struct op *o = ud;
	struct ofile *of;

	if (err) {
		op_fail(o, err, msg, "open");
		return;
	}
	of = calloc(1, sizeof *of);
	if (!of) {
		api_file_close(o->fs->be, af, nop_cb, NULL);
		fuse_reply_err(o->req, ENOMEM);
		op_free(o);
		return;
	}
	of->f = af;
	of->fs = o->fs;
	of->slot = o->slot;
	of->gen = o->gen;
	of->dirty = (o->fi.flags & O_TRUNC) != 0;
	if (o->kind == OP_CREATE) {
		of->dirty = true;
		o->of = of;
		invalidate(o->fs, o->slot);
		if (!give_to_caller(o))
			describe_created(o);
		return;
	}
	if (of->dirty)
		invalidate(o->fs, o->slot);
	of->ino = o->ino;
	o->fi.fh = of_register(of);
	/* Real files: page cache allowed.  Local files keep it across
	 * opens (AUTO_INVAL_DATA drops it when a sandbox process changed
	 * mtime or size, at the latest after attr_timeout); remote ones
	 * drop it at each open (close-to-open, api/rfile.c). */
	o->fi.direct_io = 0;
	o->fi.keep_cache = o->fs->page_cache;
	o->fi.noflush = no_flush(o->fs);
	if (fuse_reply_open(o->req, &o->fi) != 0)
		of_unregister(o->fi.fh); /* no RELEASE will come */
	op_free(o);
}

static void f_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct op *o = op_new(req, ino, NULL);

	if (!o)
		return;
	o->fi = *fi;
	o->kind = OP_NONE;
	api_file_open(o->fs->be, o->id, o->path, open_flags(o->fs, fi->flags), 0,
		      opened_cb, o);
}

static void f_create(fuse_req_t req, fuse_ino_t parent, const char *name,
		     mode_t mode, struct fuse_file_info *fi)
{
	struct op *o = op_new(req, parent, name);

	if (!o)
		return;
	o->fi = *fi;
	o->kind = OP_CREATE;
	api_file_open(o->fs->be, o->id, o->path,
		      open_flags(o->fs, fi->flags) | O_CREAT, mode & 07777,
		      opened_cb, o);
}

/* read/write/flush/release need no path: a small context will do. */
struct io {
	fuse_req_t req;
	struct fs *fs;
	struct ofile *of;
};

/* NULL after replying; else holds a reference on the open file. */
static struct io *io_new(fuse_req_t req, struct fuse_file_info *fi)
{
	struct io *io = malloc(sizeof *io);

	if (!io) {
		fuse_reply_err(req, ENOMEM);
		return NULL;
	}
	io->req = req;
	io->fs = fs_of(req);
	io->of = of_get(fi->fh);
	if (!io->of) {
		free(io);
		fuse_reply_err(req, EBADF);
		return NULL;
	}
	return io;
}

static void io_free(struct io *io)
{
	of_put(io->of);
	free(io);
}

static void io_fail(struct io *io, int err, const char *msg, const char *what)
{
	if (!ordinary(err)) {
		int e2;
		struct fs_sb *sb = fs_sb_get_slot(io->fs, io->of->slot,
						  io->of->gen, &e2);

		if (sb) {
			fs_sb_set_err(io->fs, sb, "%s: %s", what,
				      msg ? msg : api_strerror(err));
			fs_sb_put(io->fs, sb);
		}
	}
	fuse_reply_err(io->req, -err);
	io_free(io);
}

static void read_cb(void *ud, int err, const char *msg, const void *buf,
		    size_t len)
{
	struct io *io = ud;

	if (err) {
		io_fail(io, err, msg, "read");
		return;
	}
	fuse_reply_buf(io->req, buf, len);
	io_free(io);
}

static void f_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		   struct fuse_file_info *fi)
{
	struct io *io = io_new(req, fi);

	(void)ino;
	if (io)
		api_file_read(io->fs->be, io->of->f, off, size, read_cb, io);
}

static void write_cb(void *ud, int err, const char *msg, size_t n)
{
	struct io *io = ud;

	invalidate(io->fs, io->of->slot);
	if (err) {
		io_fail(io, err, msg, "write");
		return;
	}
	if (no_flush(io->fs)) /* what f_flush would have done */
		inval_siblings(io->fs, io->of->ino);
	fuse_reply_write(io->req, n);
	io_free(io);
}

static void f_write(fuse_req_t req, fuse_ino_t ino, const char *buf,
		    size_t size, off_t off, struct fuse_file_info *fi)
{
	struct io *io = io_new(req, fi);

	(void)ino;
	if (!io)
		return;
	io->of->dirty = true;
	api_file_write(io->fs->be, io->of->f, off, buf, size, write_cb, io);
}

static void done_cb(void *ud, int err, const char *msg)
{
	struct io *io = ud;

	if (err) {
		io_fail(io, err, msg, "flush");
		return;
	}
	fuse_reply_err(io->req, 0);
	io_free(io);
}

/* close(2) returns this: staged data is uploaded (remote) or synced. */
static void f_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct io *io = io_new(req, fi);

	(void)ino;
	if (!io)
		return;
	/* Always asked: a remote backend writes back what any descriptor
	 * of the file left dirty (free when nothing is). */
	if (io->of->dirty) {
		invalidate(io->fs, io->of->slot);
		inval_siblings(io->fs, io->of->ino);
	}
	io->of->dirty = false;
	api_file_flush(io->fs->be, io->of->f, done_cb, io);
}

static void f_fsync(fuse_req_t req, fuse_ino_t ino, int datasync,
		    struct fuse_file_info *fi)
{
	struct io *io = io_new(req, fi);

	(void)ino;
	(void)datasync;
	if (!io)
		return;
	io->of->dirty = false;
	/* not flush: a remote backend may defer a small file's write-back
	 * at close, never at fsync (api/rfile.h) */
	api_file_fsync(io->fs->be, io->of->f, done_cb, io);
}

static void f_release(fuse_req_t req, fuse_ino_t ino,
		      struct fuse_file_info *fi)
{
	struct ofile *of = of_get(fi->fh);

	(void)ino;
	if (of) {
		/* Our changes are done: listings taken from now on see them
		 * once the close (after the last request) went through. */
		invalidate(of->fs, of->slot);
		of_put(of);
	}
	of_unregister(fi->fh);
	fuse_reply_err(req, 0);
}

/* ---- directories -------------------------------------------------------- */

static void f_opendir(fuse_req_t req, fuse_ino_t ino,
		      struct fuse_file_info *fi)
{
	struct op *o = op_new(req, ino, NULL);
	struct odir *d;

	if (!o)
		return;
	d = calloc(1, sizeof *d);
	if (!d) {
		fuse_reply_err(req, ENOMEM);
		op_free(o);
		return;
	}
	d->slot = o->slot;
	d->gen = o->gen;
	d->ino = ino;
	snprintf(d->id, sizeof d->id, "%s", o->id);
	d->path = o->path;
	o->path = NULL;
	op_free(o);
	fi->fh = (uintptr_t)d;
	fuse_reply_open(req, fi);
}

static void dir_reply(struct op *o)
{
	struct fs *fs = o->fs;
	struct fs_files *f = fs->files;
	struct odir *d = o->od;
	struct listing *l = d->l;
	bool plus = o->kind == OP_ENTRY;
	size_t size = o->size, used = 0;
	size_t dl = strlen(d->path);
	char *buf = malloc(size ? size : 1);
	/* each child's path, built in place: DIR/NAME */
	char *p = plus ? malloc(dl + NAME_MAX_LEN + 2) : NULL;

	if (!buf || (plus && !p)) {
		free(buf);
		free(p);
		fuse_reply_err(o->req, ENOMEM);
		op_free(o);
		return;
	}
	if (plus) {
		if (strcmp(d->path, "/") == 0)
			dl = 0;
		memcpy(p, d->path, dl);
		p[dl] = '/';
		/* one lock for the whole reply, not one per entry */
		pthread_mutex_lock(&f->mu);
	}
	/* Offsets: 1 = ".", 2 = "..", 2 + i + 1 = entry i. */
	for (off_t off = o->off; off < (off_t)l->n + 2; off++) {
		struct stat st;
		const char *name;
		size_t n;

		if (off < 2) {
			name = off == 0 ? "." : "..";
			memset(&st, 0, sizeof st);
			st.st_mode = S_IFDIR;
			st.st_ino = d->ino;
		} else {
			name = l->e[off - 2].name;
			st = l->e[off - 2].st;
		}
		if (!plus) {
			n = fuse_add_direntry(o->req, buf + used, size - used,
					      name, &st, off + 1);
			if (n > size - used)
				break;
			used += n;
			continue;
		}
		struct fuse_entry_param e = { .attr = st };
		struct node *nd = NULL;
		size_t nl = strlen(name);

		if (off >= 2 && nl <= NAME_MAX_LEN &&
		    dl + nl + 2 <= FS_PATH_LIMIT) {
			memcpy(p + dl + 1, name, nl + 1);
			nd = node_get(f, d->slot, d->gen, p, 1);
			if (nd) {
				e.attr.st_ino = node_ino(f, nd, &st);
				e.ino = fs_ino_file(nd->id);
				e.attr_timeout = e.entry_timeout =
					fs->opts.attr_timeout;
			}
		}
		n = fuse_add_direntry_plus(o->req, buf + used, size - used,
					   name, &e, off + 1);
		if (n > size - used) {
			if (nd)
				node_unref(f, nd, 1);
			break;
		}
		used += n;
	}
	if (plus)
		pthread_mutex_unlock(&f->mu);
	fuse_reply_buf(o->req, buf, used);
	free(buf);
	free(p);
	op_free(o);
}

static void readdir_cb(void *ud, int err, const char *msg,
		       const struct api_dirent *ents, size_t n)
{
	struct op *o = ud;
	struct odir *d = o->od;
	struct fs_files *f = o->fs->files;
	struct listing *l;
	size_t total = 0;

	if (err) {
		op_fail(o, err, msg, "readdir");
		return;
	}
	for (size_t i = 0; i < n; i++)
		total += strlen(ents[i].name) + 1;
	l = calloc(1, sizeof *l);
	if (l) {
		l->e = calloc(n ? n : 1, sizeof *l->e);
		l->names = malloc(total ? total : 1);
		l->path = strdup(d->path);
	}
	if (!l || !l->e || !l->names || !l->path) {
		listing_free(l);
		fuse_reply_err(o->req, ENOMEM);
		op_free(o);
		return;
	}
	l->slot = d->slot;
	l->gen = d->gen;
	l->refs = 1;
	clock_gettime(CLOCK_MONOTONIC, &l->when);
	char *np = l->names;
	for (size_t i = 0; i < n; i++) {
		size_t len = strlen(ents[i].name) + 1;

		if (strcmp(ents[i].name, ".") == 0 ||
		    strcmp(ents[i].name, "..") == 0)
			continue;
		memcpy(np, ents[i].name, len);
		l->e[l->n].name = np;
		l->e[l->n].st = ents[i].st;
		l->n++;
		np += len;
	}
	/* sorted once: the cache looks names up in it, and the kernel's
	 * offsets index it (one order for every pass of this open) */
	qsort(l->e, l->n, sizeof *l->e, lent_cmp);
	pthread_mutex_lock(&f->mu);
	listing_put(d->l);
	d->l = l;
	if (o->fs->opts.attr_timeout > 0)
		cache_put(o->fs, l);
	pthread_mutex_unlock(&f->mu);
	dir_reply(o);
}

static void do_readdir(fuse_req_t req, size_t size, off_t off,
		       struct fuse_file_info *fi, bool plus)
{
	struct odir *d = (struct odir *)(uintptr_t)fi->fh;
	struct op *o = calloc(1, sizeof *o);
	int err;

	if (!o) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	o->req = req;
	o->fs = fs_of(req);
	o->slot = d->slot;
	o->gen = d->gen;
	o->od = d;
	o->size = size;
	o->off = off;
	o->kind = plus ? OP_ENTRY : OP_NONE;
	snprintf(o->id, sizeof o->id, "%s", d->id);
	struct fs_sb *sb = fs_sb_get_slot(o->fs, d->slot, d->gen, &err);
	if (!sb) {
		fuse_reply_err(req, -err);
		op_free(o);
		return;
	}
	fs_sb_put(o->fs, sb);
	/* One platform call per pass over the directory; the kernel asks
	 * again from offset 0 after a rewinddir. */
	if (off == 0 || !d->l) {
		api_file_readdir(o->fs->be, d->id, d->path, readdir_cb, o);
		return;
	}
	dir_reply(o);
}

static void f_readdir(fuse_req_t req, fuse_ino_t ino, size_t size,
		      off_t off, struct fuse_file_info *fi)
{
	(void)ino;
	do_readdir(req, size, off, fi, false);
}

static void f_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size,
			  off_t off, struct fuse_file_info *fi)
{
	(void)ino;
	do_readdir(req, size, off, fi, true);
}

static void f_releasedir(fuse_req_t req, fuse_ino_t ino,
			 struct fuse_file_info *fi)
{
	struct odir *d = (struct odir *)(uintptr_t)fi->fh;

	(void)ino;
	pthread_mutex_lock(&fs_of(req)->files->mu);
	listing_put(d->l);
	pthread_mutex_unlock(&fs_of(req)->files->mu);
	free(d->path);
	free(d);
	fuse_reply_err(req, 0);
}

const struct fuse_lowlevel_ops fs_file_ops = {
	.lookup = f_lookup,
	.getattr = f_getattr,
	.setattr = f_setattr,
	.readlink = f_readlink,
	.mkdir = f_mkdir,
	.unlink = f_unlink,
	.rmdir = f_rmdir,
	.symlink = f_symlink,
	.mknod = f_mknod,
	.link = f_link,
	.rename = f_rename,
	.open = f_open,
	.read = f_read,
	.write = f_write,
	.flush = f_flush,
	.release = f_release,
	.fsync = f_fsync,
	.opendir = f_opendir,
	.readdir = f_readdir,
	.readdirplus = f_readdirplus,
	.releasedir = f_releasedir,
	.create = f_create,
};
