/* local.c - the local runtime backend: ops table, init/free, its work on
 * the runtime (api/runtime.c), the per-sandbox busy set. */
#include <errno.h>
#include <stddef.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <fuse_opt.h>

#include "api/local/local_core.h"

#define LOCAL_DEFAULT_DATADIR "/var/lib/sbxfs"

struct local_conf {
	char *image;
};

static const struct fuse_opt local_opts[] = {
	{"image=%s", offsetof(struct local_conf, image), 0},
	FUSE_OPT_END,
};

struct local *local_of(struct api_backend *be)
{
	return be->priv;
}

const char *local_datadir(struct local *l)
{
	return l->datadir;
}

/* ---- the runtime -------------------------------------------------------- */

/* Lifecycle work (mounts, forks, freezing, copying) takes milliseconds to
 * seconds: it runs on the runtime (api/runtime.c), a few workers shared by
 * every sandbox.  Work of one sandbox is keyed by its name, so it runs one
 * at a time in submission order without ever holding a worker while it
 * waits for its turn. */

struct local_work {
	struct local *l;
	local_work_fn fn;
	local_job_fn job;
	void *arg;
	bool creating;
	bool started; /* called once with err 0: in l->busy until done */
	struct local_work *bnext;
	char key[64];
};

static void local_run(void *arg, int err)
{
	struct local_work *w = arg;

	(void)err; /* no deadline, never a timer */
	w->fn(w->l, w->arg);
	free(w);
}

int local_submit(struct local *l, local_work_fn fn, void *arg)
{
	struct local_work *w = calloc(1, sizeof(*w));
	int err;

	if (!w)
		return -ENOMEM;
	w->l = l;
	w->fn = fn;
	w->arg = arg;
	err = rt_submit(l->rt, NULL, 0, local_run, w);
	if (err)
		free(w);
	return err;
}

static struct local_work **local_busy_find(struct local *l, const char *name)
{
	struct local_work **pp = &l->busy;

	while (*pp && strcmp((*pp)->key, name))
		pp = &(*pp)->bnext;
	return pp;
}

static void local_busy_mark(struct local_work *w)
{
	struct local *l = w->l;

	pthread_mutex_lock(&l->lock);
	w->bnext = l->busy;
	l->busy = w;
	pthread_mutex_unlock(&l->lock);
}

void local_busy_release(struct local *l, const char *name)
{
	pthread_mutex_lock(&l->lock);
	struct local_work **pp = local_busy_find(l, name), *w = *pp;
	if (w)
		*pp = w->bnext;
	pthread_mutex_unlock(&l->lock);
}

static void local_run_key(void *arg, int err)
{
	struct local_work *w = arg;
	int again;

	if (!err && !w->started) {
		w->started = true;
		local_busy_mark(w);
	}
	again = w->job(w->l, w->arg, err);
	if (again > 0 && !err && rt_again(again))
		return; /* called again later: still busy */
	if (!err)
		local_busy_release(w->l, w->key);
	free(w);
}

int local_submit_key(struct local *l, const char *name, bool creating,
		     local_job_fn fn, void *arg)
{
	struct local_work *w = calloc(1, sizeof(*w));
	int err;

	if (!w)
		return -ENOMEM;
	w->l = l;
	w->job = fn;
	w->arg = arg;
	w->creating = creating;
	snprintf(w->key, sizeof(w->key), "%s", name);
	err = rt_submit(l->rt, w->key,
			rt_now_ms() + (int64_t)(l->be->timeout * 1000), local_run_key,
			w);
	if (err)
		free(w);
	return err;
}

static void local_reap_work(struct local *l, void *arg)
{
	pid_t pid = (pid_t)(intptr_t)arg;

	(void)l;
	while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
		;
}

void local_reap(struct local *l, pid_t pid)
{
	if (local_submit(l, local_reap_work, (void *)(intptr_t)pid))
		local_reap_work(l, (void *)(intptr_t)pid);
}

bool local_busy(struct local *l, const char *name)
{
	pthread_mutex_lock(&l->lock);
	bool r = *local_busy_find(l, name) != NULL;
	pthread_mutex_unlock(&l->lock);
	return r;
}

bool local_busy_creating(struct local *l, const char *name)
{
	pthread_mutex_lock(&l->lock);
	struct local_work *w = *local_busy_find(l, name);
	bool r = w && w->creating;
	pthread_mutex_unlock(&l->lock);
	return r;
}

/* ---- init / free -------------------------------------------------------- */

static int local_mkdir_p(const char *path, mode_t mode)
{
	char buf[PATH_MAX];
	size_t n = strlen(path);

	if (n >= sizeof(buf))
		return -ENAMETOOLONG;
	memcpy(buf, path, n + 1);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, mode) && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(buf, mode) && errno != EEXIST)
		return -errno;
	return 0;
}

/* FNV-1a: a short stable tag so two data dirs never share cgroups. */
static uint64_t local_hash(const char *s)
{
	uint64_t h = 1469598103934665603ull;

	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 1099511628211ull;
	}
	return h;
}

static int local_init(struct api_backend *be, const char *arg,
		      struct fuse_args *args)
{
	struct local *l;
	struct local_conf conf = {NULL};
	char sub[PATH_MAX + 32], msg[512];
	const char *dir = arg ? arg : LOCAL_DEFAULT_DATADIR;
	int err;

	if (args && fuse_opt_parse(args, &conf, local_opts, NULL) == -1)
		return -EINVAL;
	if (conf.image && (conf.image[0] != '/' ||
			   strlen(conf.image) >= sizeof(l->image) - 8 ||
			   strpbrk(conf.image, ",:\\\n"))) {
		api_log("image=%s: want an absolute path "
			"without ',', ':', '\\' or newlines", conf.image);
		free(conf.image);
		return -EINVAL;
	}
	if (dir[0] != '/') {
		api_log("local data dir '%s' must be an "
			"absolute path", dir);
		return -EINVAL;
	}
	if (strpbrk(dir, ",:\\\n")) {
		/* overlayfs mount options cannot carry these */
		api_log("local data dir '%s' may not contain "
			"',', ':', '\\' or newlines", dir);
		return -EINVAL;
	}
	l = calloc(1, sizeof(*l));
	if (!l) {
		free(conf.image);
		return -ENOMEM;
	}
	l->be = be;
	if (conf.image)
		snprintf(l->image, sizeof(l->image), "%s", conf.image);
	free(conf.image);
	err = local_mkdir_p(dir, 0700);
	if (err) {
		api_log("cannot create data dir %s: %s", dir,
			strerror(-err));
		free(l);
		return err;
	}
	if (!realpath(dir, l->datadir)) {
		err = -errno;
		api_log("data dir %s: %s", dir,
			strerror(errno));
		free(l);
		return err;
	}
	for (int i = 0; i < 2; i++) {
		snprintf(sub, sizeof(sub), "%s/%s", l->datadir,
			 i ? "templates" : "sandboxes");
		if (mkdir(sub, 0700) && errno != EEXIST) {
			err = -errno;
			api_log("cannot create %s: %s", sub,
				strerror(errno));
			free(l);
			return err;
		}
	}
	snprintf(l->hash, sizeof(l->hash), "%016llx",
		 (unsigned long long)local_hash(l->datadir));
	err = local_cg_init(l, msg, sizeof(msg));
	if (!err)
		err = local_seccomp_init(msg, sizeof(msg));
	if (err) {
		api_log("%s", msg);
		free(l);
		return err;
	}
	pthread_mutex_init(&l->lock, NULL);
	pthread_mutex_init(&l->id_lock, NULL);
	pthread_mutex_init(&l->mount_lock, NULL);
	be->priv = l;
	l->rt = rt_new(LOCAL_NWORKERS);
	if (!l->rt) {
		api_log("cannot start worker threads");
		err = -EAGAIN;
		goto fail;
	}
	local_recover(l);
	local_sweep_trash(l);
	err = local_exec_init(l);
	if (err) {
		api_log("cannot start the exec engine: %s",
			strerror(-err));
		goto fail;
	}
	return 0;
fail:
	rt_free(l->rt);
	pthread_mutex_destroy(&l->lock);
	pthread_mutex_destroy(&l->mount_lock);
	pthread_mutex_destroy(&l->id_lock);
	free(l);
	be->priv = NULL;
	return err;
}

/* Queued work still runs (its callbacks must be called exactly once);
 * then the runtime's threads exit.  Sandboxes keep running. */
static void local_free(struct api_backend *be)
{
	struct local *l = be->priv;

	if (!l)
		return;
	local_ports_fini(l);
	local_exec_fini(l);
	local_files_forget(l, NULL);
	rt_free(l->rt);
	pthread_mutex_destroy(&l->lock);
	pthread_mutex_destroy(&l->mount_lock);
	pthread_mutex_destroy(&l->id_lock);
	free(l);
	be->priv = NULL;
}

const struct api_ops api_local_ops = {
	.name = "local",
	.caps = API_CAP_VERB(API_VERB_START) | API_CAP_VERB(API_VERB_STOP) |
		API_CAP_VERB(API_VERB_PAUSE) | API_CAP_VERB(API_VERB_RESUME) |
		API_CAP_VERB(API_VERB_PING) | API_CAP_VERB(API_VERB_SNAPSHOT) |
		API_CAP_VERB(API_VERB_DESTROY) | API_CAP_FILES |
		API_CAP_EXEC | API_CAP_EXEC_STDIN | API_CAP_RENAME |
		API_CAP_SETATTR | API_CAP_SYMLINK | API_CAP_RANDOM_WRITE |
		API_CAP_MKNOD | API_CAP_LINK | API_CAP_METRICS |
		API_CAP_TEMPLATES | API_CAP_PORTS | API_CAP_TAGS,
	.help = "    SOURCE local:DIR       data directory "
		"(default " LOCAL_DEFAULT_DATADIR ")\n"
		"    -o image=DIR           root image of new sandboxes (default "
		"DATADIR/images/debian-12, else\n"
		"                           " LOCAL_DEFAULT_DATADIR
		"/images/debian-12; build it with sbxfs-mkimage)\n"
		"    create settings        template=SNAP  network=none|host  "
		"cpus=N  memory=SIZE  pids=N  tag=T...\n",
	.init = local_init,
	.free = local_free,
	.sb_list = local_sb_list,
	.sb_get = local_sb_get,
	.sb_create = local_sb_create,
	.sb_verb = local_sb_verb,
	.sb_metrics = local_sb_metrics,
	.tpl_list = local_tpl_list,
	.tpl_delete = local_tpl_delete,
	.sb_port = local_sb_port,
	.sb_ports = local_sb_ports,
	.file_stat = local_file_stat,
	.file_readdir = local_file_readdir,
	.file_open = local_file_open,
	.file_read = local_file_read,
	.file_write = local_file_write,
	.file_flush = local_file_flush,
	.file_close = local_file_close,
	.file_mkdir = local_file_mkdir,
	.file_unlink = local_file_unlink,
	.file_rmdir = local_file_rmdir,
	.file_rename = local_file_rename,
	.file_setattr = local_file_setattr,
	.file_symlink = local_file_symlink,
	.file_readlink = local_file_readlink,
	.file_mknod = local_file_mknod,
	.file_fstat = local_file_fstat,
	.file_ftruncate = local_file_ftruncate,
	.file_link = local_file_link,
	.exec_start = local_exec_start,
	.exec_write = local_exec_write,
	.exec_close_stdin = local_exec_close_stdin,
	.exec_resume = local_exec_resume,
	.exec_signal = local_exec_signal,
	.exec_free = local_exec_free,
	.exec_pid = local_exec_pid,
	.exec_jobs = local_exec_jobs,
	.exec_attach = local_exec_attach,
};
