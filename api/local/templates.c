/* templates.c - MOUNT/templates/ of the local runtime: the snapshots made
 * by `snapshot SNAP` (DATADIR/templates/SNAP/{root,meta.json}), listed
 * with their size (blocks of the stored tree, counted once) and date,
 * deleted by moving them into DATADIR/tmp (gone for every observer at
 * once) and removing the files after the reply.  A sandbox made from a template holds a copy
 * of its tree (sandbox.c flattens it into the writable layer), so a
 * template in use by sandboxes can be deleted; they keep running. */
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "api/local/local_core.h"

#define TPL_META_MAX 65536
#define TPL_DU_MAX 1000000 /* files counted per template, then a bound */

struct tpl_job {
	char name[64];
	api_tpl_fn lcb;
	api_done_fn dcb;
	void *ud;
};

/* ---- size --------------------------------------------------------------- */

static __thread long long du_bytes, du_files;

static int du_one(const char *path, const struct stat *st, int type,
		  struct FTW *ftw)
{
	(void)path;
	(void)type;
	(void)ftw;
	du_bytes += (long long)st->st_blocks * 512;
	return ++du_files >= TPL_DU_MAX;
}

static long long du_walk(const char *dir)
{
	du_bytes = du_files = 0;
	if (nftw(dir, du_one, 16, FTW_PHYS | FTW_MOUNT) < 0)
		return -1;
	return du_bytes;
}

/* A template's tree never changes once stored, so its size is counted
 * once per mount and kept by the identity of its root directory: device,
 * inode and change time (a reused inode has a new ctime). */
#define DU_KEEP 256
static pthread_mutex_t du_mu = PTHREAD_MUTEX_INITIALIZER;
static struct {
	dev_t dev;
	ino_t ino;
	struct timespec ctime;
	long long size;
} du_kept[DU_KEEP];
static unsigned du_next;

static long long du(const char *dir)
{
	struct stat st;
	long long size = -1;

	if (lstat(dir, &st))
		return -1;
	pthread_mutex_lock(&du_mu);
	for (unsigned i = 0; i < DU_KEEP && size < 0; i++)
		if (du_kept[i].ino == st.st_ino && du_kept[i].dev == st.st_dev &&
		    du_kept[i].ino &&
		    du_kept[i].ctime.tv_sec == st.st_ctim.tv_sec &&
		    du_kept[i].ctime.tv_nsec == st.st_ctim.tv_nsec)
			size = du_kept[i].size;
	pthread_mutex_unlock(&du_mu);
	if (size >= 0)
		return size;
	size = du_walk(dir);
	if (size >= 0 && du_files < TPL_DU_MAX) { /* a full count only */
		pthread_mutex_lock(&du_mu);
		du_kept[du_next].dev = st.st_dev;
		du_kept[du_next].ino = st.st_ino;
		du_kept[du_next].ctime = st.st_ctim;
		du_kept[du_next].size = size;
		du_next = (du_next + 1) % DU_KEEP;
		pthread_mutex_unlock(&du_mu);
	}
	return size;
}

/* ---- list --------------------------------------------------------------- */

static char *read_file(const char *path)
{
	FILE *f = fopen(path, "re");
	char *buf;
	size_t n;

	if (!f)
		return NULL;
	buf = malloc(TPL_META_MAX + 1);
	if (!buf) {
		fclose(f);
		return NULL;
	}
	n = fread(buf, 1, TPL_META_MAX, f);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

struct tpl_rec {
	struct api_template t;
	char *json;
};

static int fill_one(struct local *l, const char *name, struct tpl_rec *r)
{
	char path[PATH_MAX], *text;
	cJSON *o;

	memset(r, 0, sizeof(*r));
	snprintf(path, sizeof(path), "%s/templates/%s/meta.json", l->datadir,
		 name);
	text = read_file(path);
	if (!text)
		return -ENOENT; /* being made or removed */
	o = cJSON_Parse(text);
	free(text);
	if (!o || !cJSON_IsObject(o)) {
		cJSON_Delete(o);
		o = cJSON_CreateObject(); /* damaged: listed, no details */
		if (!o)
			return -ENOMEM;
	}
	snprintf(r->t.name, sizeof(r->t.name), "%.63s", name);
	snprintf(r->t.kind, sizeof(r->t.kind), "snapshot");
	const cJSON *c = cJSON_GetObjectItemCaseSensitive(o, "created");
	r->t.created = cJSON_IsNumber(c) ? (time_t)c->valuedouble : 0;
	snprintf(path, sizeof(path), "%s/templates/%s/root", l->datadir,
		 name);
	r->t.size = du(path);
	cJSON_DeleteItemFromObjectCaseSensitive(o, "name");
	cJSON_AddStringToObject(o, "name", name);
	cJSON_DeleteItemFromObjectCaseSensitive(o, "type");
	cJSON_AddStringToObject(o, "type", r->t.kind);
	cJSON_DeleteItemFromObjectCaseSensitive(o, "size_bytes");
	cJSON_AddNumberToObject(o, "size_bytes", (double)r->t.size);
	r->json = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	r->t.info_json = r->json;
	return 0;
}

static void list_work(struct local *l, void *arg)
{
	struct tpl_job *j = arg;
	char path[PATH_MAX];
	struct tpl_rec *recs = NULL;
	struct api_template *ts = NULL;
	size_t n = 0, cap = 0;
	struct dirent *de;
	DIR *d;

	snprintf(path, sizeof(path), "%s/templates", l->datadir);
	d = opendir(path);
	if (!d && errno != ENOENT) {
		int e = errno;
		j->lcb(j->ud, -e, "cannot read the templates of the local "
		       "data directory", NULL, 0);
		free(j);
		return;
	}
	while (d && (de = readdir(d))) {
		if (local_name_check(de->d_name))
			continue;
		if (n == cap) {
			size_t nc = cap ? cap * 2 : 16;
			struct tpl_rec *nr = realloc(recs, nc * sizeof(*nr));

			if (!nr)
				break;
			recs = nr;
			cap = nc;
		}
		if (fill_one(l, de->d_name, &recs[n]) == 0)
			n++;
	}
	if (d)
		closedir(d);
	ts = calloc(n ? n : 1, sizeof(*ts));
	if (!ts) {
		j->lcb(j->ud, -ENOMEM, api_strerror(ENOMEM), NULL, 0);
	} else {
		for (size_t i = 0; i < n; i++)
			ts[i] = recs[i].t;
		j->lcb(j->ud, 0, NULL, ts, n);
	}
	for (size_t i = 0; i < n; i++)
		free(recs[i].json);
	free(recs);
	free(ts);
	free(j);
}

void local_tpl_list(struct api_backend *be, api_tpl_fn cb, void *ud)
{
	struct local *l = local_of(be);
	struct tpl_job *j = calloc(1, sizeof(*j));
	int err;

	if (!j) {
		cb(ud, -ENOMEM, api_strerror(ENOMEM), NULL, 0);
		return;
	}
	j->lcb = cb;
	j->ud = ud;
	err = local_submit(l, list_work, j);
	if (err) {
		free(j);
		cb(ud, err, api_strerror(err), NULL, 0);
	}
}

/* ---- delete ------------------------------------------------------------- */

static int rm_one(const char *path, const struct stat *st, int type,
		  struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	if (type == FTW_DP)
		rmdir(path);
	else
		unlink(path);
	return 0;
}

static void delete_work(struct local *l, void *arg)
{
	struct tpl_job *j = arg;
	static unsigned seq;
	char dir[PATH_MAX], trash[PATH_MAX], msg[320];
	int err = 0;

	snprintf(dir, sizeof(dir), "%s/templates/%s", l->datadir, j->name);
	snprintf(trash, sizeof(trash), "%s/tmp", l->datadir);
	mkdir(trash, 0700);
	/* "destroy-": a crash before the files are gone leaves trash the
	 * next start-up sweeps (local_sweep_trash) */
	snprintf(trash, sizeof(trash), "%s/tmp/destroy-tpl-%s-%d-%u",
		 l->datadir, j->name, (int)getpid(),
		 __atomic_add_fetch(&seq, 1, __ATOMIC_RELAXED));
	if (rename(dir, trash)) {
		err = -errno;
		if (err == -ENOENT)
			snprintf(msg, sizeof(msg), "no template named '%s'",
				 j->name);
		else
			snprintf(msg, sizeof(msg), "cannot remove template "
				 "'%s': %s", j->name, strerror(-err));
		j->dcb(j->ud, err, msg);
		free(j);
		return;
	}
	j->dcb(j->ud, 0, NULL);
	free(j);
	if (nftw(trash, rm_one, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT))
		api_log("local: could not fully remove %s", trash);
}

void local_tpl_delete(struct api_backend *be, const char *name,
		      api_done_fn cb, void *ud)
{
	struct local *l = local_of(be);
	struct tpl_job *j;
	char msg[160];
	int err;

	if (!name || local_name_check(name)) {
		snprintf(msg, sizeof(msg), "no template named '%.63s'",
			 name ? name : "");
		cb(ud, -ENOENT, msg);
		return;
	}
	j = calloc(1, sizeof(*j));
	if (!j) {
		cb(ud, -ENOMEM, api_strerror(ENOMEM));
		return;
	}
	snprintf(j->name, sizeof(j->name), "%s", name);
	j->dcb = cb;
	j->ud = ud;
	err = local_submit(l, delete_work, j);
	if (err) {
		free(j);
		cb(ud, err, api_strerror(err));
	}
}
