/* sandbox.c - local sandbox lifecycle: overlay root, namespaces, cgroups,
 * snapshot, and the on-disk state that outlives sbxfs.
 *
 * Layout: DATADIR/sandboxes/NAME/{upper,work,lower,root,meta.json,idbase},
 * DATADIR/templates/SNAP/{root,meta.json}, DATADIR/tmp/ for work in
 * progress.  The overlay (lower layer: the root image through an idmapped
 * read-only mount; a template's tree is copied into upper) is mounted on
 * `root` in the host mount namespace so files.c can reach it without
 * entering the sandbox.  The sandbox's PID 1 is a tiny reaper in a user
 * namespace of its own (root inside = host ID uid_base, idmap.c) and fresh
 * mount/PID/IPC/UTS/cgroup/net namespaces owned by it, pivoted into that
 * root, with /proc and /sys paths masked or read-only, few capabilities
 * (caps.c) and a seccomp filter (seccomp.c), detached from sbxfs (double
 * fork, own session) and kept in the sandbox's cgroups (cgroup.c: freezer
 * and limits) with everything started in the sandbox.  meta.json records
 * its host PID and start time; the true state is always recomputed from
 * /proc and the freezer, never trusted from the file.
 */
#include <dirent.h>
#include <grp.h>
#include <linux/mount.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <linux/openat2.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "api/local/local_core.h"

#define SB_LAYERS_MAX 32
#define SB_META_MAX 65536
#define SB_OVERLAY_MAGIC 0x794c7630
#define SB_DEFAULT_GRACE 5.0
#define LOCAL_DEFAULT_DATADIR "/var/lib/sbxfs"
#define LOCAL_IMAGE_NAME "debian-12"
#define LOCAL_DEFAULT_PIDS 4096

extern char **environ;

struct sb_meta {
	char name[64];
	char template[64];
	char layers[SB_LAYERS_MAX][64]; /* template lineage, newest first */
	int nlayers;
	time_t created;
	pid_t pid;		      /* host PID of the sandbox init */
	unsigned long long starttime; /* its /proc start time: PID reuse */
	bool net_host;		      /* share the host's network */
	char state[16];		      /* last requested: running/stopped/
					 creating/failed */
	unsigned uid_base; /* host ID of root inside; 0: made before user
			      namespaces (legacy, never started again) */
	char image[1024];  /* root image (lower layer) */
	struct local_limits lim;
	char tags[LOCAL_TAGS_MAX]; /* new NAME tag=T...: "a,b", "" none */
};

/* ---- small helpers ------------------------------------------------------ */

static double sb_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sb_sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

	nanosleep(&ts, NULL);
}

int local_name_check(const char *name)
{
	size_t n = strlen(name);

	if (n == 0 || n > 63 || !strcmp(name, ".") || !strcmp(name, "..") ||
	    !strcmp(name, "ctl"))
		return -EINVAL;
	for (const char *p = name; *p; p++) {
		char c = *p;
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '.' || c == '_' ||
		      c == '-'))
			return -EINVAL;
	}
	return 0;
}

static void sb_dir(struct local *l, const char *name, const char *sub,
		   char *buf, size_t len)
{
	snprintf(buf, len, "%s/sandboxes/%s%s%s", l->datadir, name,
		 sub ? "/" : "", sub ? sub : "");
}

static void tpl_dir(struct local *l, const char *name, const char *sub,
		    char *buf, size_t len)
{
	snprintf(buf, len, "%s/templates/%s%s%s", l->datadir, name,
		 sub ? "/" : "", sub ? sub : "");
}

static int read_small(const char *path, char *buf, size_t cap)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	size_t n = 0;

	if (fd < 0)
		return -errno;
	while (n < cap - 1) {
		ssize_t r = read(fd, buf + n, cap - 1 - n);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			int e = -errno;
			close(fd);
			return e;
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	close(fd);
	buf[n] = '\0';
	return (int)n;
}


/* ---- meta.json ---------------------------------------------------------- */

static void json_str(const cJSON *o, const char *k, char *buf, size_t len)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);

	buf[0] = '\0';
	if (cJSON_IsString(v) && v->valuestring)
		snprintf(buf, len, "%s", v->valuestring);
}

static double json_num(const cJSON *o, const char *k)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);

	return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

static int json_layers(const cJSON *o, char layers[][64], int *n)
{
	const cJSON *a = cJSON_GetObjectItemCaseSensitive(o, "lineage");
	const cJSON *it;

	*n = 0;
	cJSON_ArrayForEach(it, a)
	{
		if (!cJSON_IsString(it) || local_name_check(it->valuestring))
			return -EINVAL;
		if (*n >= SB_LAYERS_MAX)
			return -E2BIG;
		snprintf(layers[(*n)++], 64, "%s", it->valuestring);
	}
	return 0;
}

static int meta_read(struct local *l, const char *name, struct sb_meta *m)
{
	char path[PATH_MAX], *buf;
	cJSON *o;
	int err;

	memset(m, 0, sizeof(*m));
	if (local_name_check(name))
		return -ENOENT;
	sb_dir(l, name, "meta.json", path, sizeof(path));
	buf = malloc(SB_META_MAX);
	if (!buf)
		return -ENOMEM;
	err = read_small(path, buf, SB_META_MAX);
	if (err < 0) {
		free(buf);
		return err;
	}
	o = cJSON_Parse(buf);
	free(buf);
	if (!o)
		return -EIO;
	snprintf(m->name, sizeof(m->name), "%s", name);
	json_str(o, "template", m->template, sizeof(m->template));
	json_str(o, "state", m->state, sizeof(m->state));
	m->created = (time_t)json_num(o, "created");
	m->pid = (pid_t)json_num(o, "pid");
	m->starttime = (unsigned long long)json_num(o, "starttime");
	m->net_host = cJSON_IsTrue(cJSON_GetObjectItem(o, "net_host"));
	m->uid_base = (unsigned)json_num(o, "uid_base");
	json_str(o, "image", m->image, sizeof(m->image));
	{
		const cJSON *lim = cJSON_GetObjectItemCaseSensitive(o, "limits");
		m->lim.cpus = json_num(lim, "cpus");
		m->lim.memory = (long long)json_num(lim, "memory");
		m->lim.pids = (long)json_num(lim, "pids");
	}
	local_tags_read(o, m->tags, sizeof(m->tags));
	err = json_layers(o, m->layers, &m->nlayers);
	cJSON_Delete(o);
	return err;
}

static cJSON *meta_json(struct local *l, const struct sb_meta *m)
{
	cJSON *o = cJSON_CreateObject();
	cJSON *a = cJSON_AddArrayToObject(o, "lineage");
	char root[PATH_MAX];

	cJSON_AddStringToObject(o, "name", m->name);
	cJSON_AddStringToObject(o, "template", m->template);
	for (int i = 0; i < m->nlayers; i++)
		cJSON_AddItemToArray(a, cJSON_CreateString(m->layers[i]));
	cJSON_AddNumberToObject(o, "created", (double)m->created);
	cJSON_AddNumberToObject(o, "pid", m->pid);
	cJSON_AddNumberToObject(o, "starttime", (double)m->starttime);
	cJSON_AddBoolToObject(o, "net_host", m->net_host);
	cJSON_AddStringToObject(o, "state", m->state);
	cJSON_AddNumberToObject(o, "uid_base", m->uid_base);
	cJSON_AddStringToObject(o, "image", m->image);
	cJSON *lim = cJSON_AddObjectToObject(o, "limits");
	cJSON_AddNumberToObject(lim, "cpus", m->lim.cpus);
	cJSON_AddNumberToObject(lim, "memory", (double)m->lim.memory);
	cJSON_AddNumberToObject(lim, "pids", (double)m->lim.pids);
	local_tags_write(o, m->tags);
	sb_dir(l, m->name, "root", root, sizeof(root));
	cJSON_AddStringToObject(o, "root", root);
	return o;
}

/* Atomic: write a temporary file, then rename over the old one. */
static int write_json_file(const char *path, cJSON *o)
{
	char tmp[PATH_MAX + 16];
	char *s = cJSON_Print(o);
	int fd, err = 0;

	if (!s)
		return -ENOMEM;
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		err = -errno;
		goto out;
	}
	size_t len = strlen(s);
	if (write(fd, s, len) != (ssize_t)len)
		err = errno ? -errno : -EIO;
	if (close(fd) && !err)
		err = -errno;
	if (!err && rename(tmp, path))
		err = -errno;
	if (err)
		unlink(tmp);
out:
	free(s);
	return err;
}

static int meta_write(struct local *l, const struct sb_meta *m)
{
	char path[PATH_MAX];
	cJSON *o = meta_json(l, m);
	int err;

	if (!o)
		return -ENOMEM;
	sb_dir(l, m->name, "meta.json", path, sizeof(path));
	err = write_json_file(path, o);
	cJSON_Delete(o);
	return err;
}

/* ---- process and cgroup state ------------------------------------------- */

/* Start time (field 22 of /proc/PID/stat) of a live, non-zombie process;
 * 0 when it is gone. */
static unsigned long long proc_starttime(pid_t pid)
{
	char path[64], buf[1024];
	char *p;
	unsigned long long v = 0;

	if (pid <= 0)
		return 0;
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	if (read_small(path, buf, sizeof(buf)) <= 0)
		return 0;
	p = strrchr(buf, ')');
	if (!p || p[1] != ' ')
		return 0;
	p += 2;
	if (*p == 'Z' || *p == 'X')
		return 0;
	/* p is at field 3; skip to field 22 */
	for (int f = 3; f < 22 && p; f++) {
		p = strchr(p, ' ');
		if (p)
			p++;
	}
	if (!p)
		return 0;
	v = strtoull(p, NULL, 10);
	return v;
}

static bool init_alive(const struct sb_meta *m)
{
	unsigned long long st = proc_starttime(m->pid);

	return st && st == m->starttime;
}

static int cg_freezer_state(struct local *l, const char *name, char *st,
			    size_t len)
{
	return local_cg_state(l, name, st, len);
}

static int cg_set(struct local *l, const char *name, const char *state)
{
	return local_cg_freeze(l, name, !strcmp(state, "FROZEN"));
}

#define CG_PIDS_MAX 65536

/* Send sig to every process in the sandbox's cgroup; returns how many. */
static int cg_kill(struct local *l, const char *name, int sig)
{
	pid_t *pids = malloc(CG_PIDS_MAX * sizeof(pid_t));
	int n, k = 0;

	if (!pids)
		return 0;
	n = local_cg_pids(l, name, pids, CG_PIDS_MAX);
	for (int i = 0; i < n; i++)
		if (pids[i] > 1 && kill(pids[i], sig) == 0)
			k++;
	free(pids);
	return k;
}

/* No live process left in the sandbox's cgroup.  Zombies count as gone:
 * the sandbox's PID 1 is re-parented to the host's init, which may take
 * seconds to reap it, and a zombie holds nothing but its PID. */
static bool cg_empty(struct local *l, const char *name)
{
	pid_t *pids = malloc(CG_PIDS_MAX * sizeof(pid_t));
	bool empty = true;
	int n;

	if (!pids)
		return false;
	n = local_cg_pids(l, name, pids, CG_PIDS_MAX);
	for (int i = 0; empty && i < n; i++)
		if (proc_starttime(pids[i]) != 0)
			empty = false;
	free(pids);
	return empty;
}

static enum api_state sb_state(struct local *l, const struct sb_meta *m)
{
	char fs[32];

	if (local_busy_creating(l, m->name))
		return API_ST_CREATING;
	if (init_alive(m)) {
		if (cg_freezer_state(l, m->name, fs, sizeof(fs)) == 0 &&
		    strcmp(fs, "THAWED") != 0)
			return API_ST_PAUSED; /* FROZEN or FREEZING */
		return API_ST_RUNNING;
	}
	if (!strcmp(m->state, "failed") || !strcmp(m->state, "creating"))
		return API_ST_FAILED;
	return API_ST_STOPPED;
}

/* ---- records ------------------------------------------------------------ */

struct sb_rec {
	struct api_sandbox sb;
	char *json;
	char tags[LOCAL_TAGS_MAX];
};

static void sb_fill(struct local *l, const struct sb_meta *m,
		    struct sb_rec *r)
{
	cJSON *o;

	memset(r, 0, sizeof(*r));
	snprintf(r->sb.id, sizeof(r->sb.id), "%s", m->name);
	snprintf(r->sb.template, sizeof(r->sb.template), "%s", m->template);
	r->sb.state = sb_state(l, m);
	r->sb.created = m->created;
	snprintf(r->tags, sizeof(r->tags), "%s", m->tags);
	r->sb.tags = r->tags;
	o = meta_json(l, m);
	if (o) {
		cJSON_ReplaceItemInObject(
			o, "state",
			cJSON_CreateString(api_state_name(r->sb.state)));
		if (r->sb.state != API_ST_RUNNING &&
		    r->sb.state != API_ST_PAUSED)
			cJSON_ReplaceItemInObject(o, "pid",
						  cJSON_CreateNumber(0));
		cJSON_DeleteItemFromObject(o, "starttime");
		r->json = cJSON_PrintUnformatted(o);
		cJSON_Delete(o);
	}
	r->sb.info_json = r->json;
}

void local_sb_list(struct api_backend *be, api_list_fn cb, void *ud)
{
	struct local *l = local_of(be);
	char path[PATH_MAX];
	struct sb_rec *recs = NULL;
	struct api_sandbox *sbs = NULL;
	size_t n = 0, cap = 0;
	struct dirent *de;
	struct sb_meta m;
	DIR *d;

	snprintf(path, sizeof(path), "%s/sandboxes", l->datadir);
	d = opendir(path);
	if (!d) {
		int e = errno;
		cb(ud, -e, "cannot read the local data directory", NULL, 0);
		return;
	}
	while ((de = readdir(d))) {
		if (local_name_check(de->d_name))
			continue;
		if (meta_read(l, de->d_name, &m))
			continue; /* half-made or half-destroyed */
		if (n == cap) {
			size_t nc = cap ? cap * 2 : 16;
			struct sb_rec *nr = realloc(recs, nc * sizeof(*nr));
			if (!nr)
				break;
			recs = nr;
			cap = nc;
		}
		sb_fill(l, &m, &recs[n++]);
	}
	closedir(d);
	sbs = calloc(n ? n : 1, sizeof(*sbs));
	if (!sbs) {
		cb(ud, -ENOMEM, api_strerror(ENOMEM), NULL, 0);
	} else {
		for (size_t i = 0; i < n; i++) {
			sbs[i] = recs[i].sb;
			sbs[i].tags = recs[i].tags; /* recs moved */
		}
		cb(ud, 0, NULL, sbs, n);
	}
	for (size_t i = 0; i < n; i++)
		free(recs[i].json);
	free(recs);
	free(sbs);
}

void local_sb_get(struct api_backend *be, const char *id, api_sandbox_fn cb,
		  void *ud)
{
	struct local *l = local_of(be);
	struct sb_meta m;
	struct sb_rec r;
	char msg[128];
	int err = meta_read(l, id, &m);

	if (err) {
		snprintf(msg, sizeof(msg), "no sandbox named '%.63s'", id);
		cb(ud, err == -ENOENT ? -ENOENT : err, msg, NULL);
		return;
	}
	sb_fill(l, &m, &r);
	cb(ud, 0, NULL, &r.sb);
	free(r.json);
}

/* ---- helpers used by exec.c and files.c --------------------------------- */

int local_sb_root(struct local *l, const char *id, char *buf, size_t len)
{
	char path[PATH_MAX];
	struct stat st;

	if (local_name_check(id))
		return -ENOENT;
	sb_dir(l, id, "meta.json", path, sizeof(path));
	if (stat(path, &st))
		return -ENOENT;
	sb_dir(l, id, "root", buf, len);
	return 0;
}

int local_sb_init_pid(struct local *l, const char *id, pid_t *pid,
		      char *msg, size_t msglen)
{
	struct sb_meta m;
	int err = meta_read(l, id, &m);

	if (err) {
		snprintf(msg, msglen, "no sandbox named '%.63s'", id);
		return -ENOENT;
	}
	switch (sb_state(l, &m)) {
	case API_ST_RUNNING:
		*pid = m.pid;
		return 0;
	case API_ST_PAUSED:
		snprintf(msg, msglen, "sandbox '%s' is paused; resume it "
			 "first", id);
		return -EBUSY;
	case API_ST_CREATING:
		snprintf(msg, msglen, "sandbox '%s' is still being created",
			 id);
		return -EBUSY;
	default:
		snprintf(msg, msglen, "sandbox '%s' is not running; start it "
			 "first", id);
		return -EBUSY;
	}
}

int local_sb_net(struct local *l, const char *id, pid_t *pid, bool *host,
		 char *msg, size_t msglen)
{
	struct sb_meta m;
	int err = local_sb_init_pid(l, id, pid, msg, msglen);

	if (err)
		return err;
	err = meta_read(l, id, &m);
	if (err) {
		snprintf(msg, msglen, "no sandbox named '%.63s'", id);
		return -ENOENT;
	}
	*host = m.net_host;
	return 0;
}

int local_sb_cgroup_fds(struct local *l, const char *id, int *fds, int max)
{
	char path[PATH_MAX];
	struct stat st;

	if (local_name_check(id))
		return -ENOENT;
	sb_dir(l, id, "meta.json", path, sizeof(path));
	if (stat(path, &st))
		return -ENOENT;
	return local_cg_procs_open(l, id, fds, max);
}

/* ---- running tools ------------------------------------------------------ */

/* Run argv (a host tool such as cp) with stdout discarded and stderr's
 * first bytes kept for the message; bounded by `secs`. */
static int run_tool(const char *const *argv, double secs, char *msg,
		    size_t msglen)
{
	posix_spawn_file_actions_t fa;
	int p[2], status = 0, err = 0;
	char errb[512];
	size_t elen = 0;
	pid_t pid;
	double end = sb_now() + secs;

	if (pipe2(p, O_CLOEXEC))
		return -errno;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
	posix_spawn_file_actions_adddup2(&fa, p[1], 2);
	err = posix_spawnp(&pid, argv[0], &fa, NULL, (char *const *)argv,
			   environ);
	posix_spawn_file_actions_destroy(&fa);
	close(p[1]);
	if (err) {
		close(p[0]);
		snprintf(msg, msglen, "cannot run %s: %s", argv[0],
			 strerror(err));
		return -err;
	}
	for (;;) {
		struct pollfd pfd = {p[0], POLLIN, 0};
		int left = (int)((end - sb_now()) * 1000);
		if (left <= 0) {
			kill(pid, SIGKILL);
			waitpid(pid, NULL, 0);
			close(p[0]);
			snprintf(msg, msglen, "%s took longer than the request "
				 "timeout", argv[0]);
			return -ETIMEDOUT;
		}
		if (poll(&pfd, 1, left) <= 0)
			continue;
		char tmp[256];
		ssize_t r = read(p[0], tmp, sizeof(tmp));
		if (r <= 0)
			break;
		size_t k = sizeof(errb) - 1 - elen;
		if ((size_t)r < k)
			k = (size_t)r;
		memcpy(errb + elen, tmp, k);
		elen += k;
	}
	close(p[0]);
	errb[elen] = '\0';
	waitpid(pid, &status, 0);
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	errb[strcspn(errb, "\n")] = '\0';
	snprintf(msg, msglen, "%s failed: %.200s", argv[0],
		 elen ? errb : "no message");
	return strstr(errb, "No space") ? -ENOSPC : -EIO;
}

/* rm -rf that never crosses into another filesystem or follows a link. */
static int rm_cb(const char *path, const struct stat *st, int type,
		 struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	if (type == FTW_DP || type == FTW_D)
		rmdir(path);
	else
		unlink(path);
	return 0;
}

static int rm_rf(const char *path)
{
	struct stat st;

	if (lstat(path, &st))
		return errno == ENOENT ? 0 : -errno;
	nftw(path, rm_cb, 32, FTW_PHYS | FTW_MOUNT | FTW_DEPTH);
	if (lstat(path, &st) == 0)
		return -ENOTEMPTY;
	return 0;
}

/* ---- overlay ------------------------------------------------------------ */

static bool is_overlay(const char *path)
{
	struct statfs sf;

	return statfs(path, &sf) == 0 && sf.f_type == SB_OVERLAY_MAGIC;
}

static int sb_mount_locked(struct local *l, const struct sb_meta *m,
			   char *msg, size_t msglen)
{
	char root[PATH_MAX], upper[PATH_MAX], work[PATH_MAX];
	char lower[PATH_MAX], img[PATH_MAX + 8];
	char *opts;
	size_t cap = 8192, n = 0;
	int err = 0;

	sb_dir(l, m->name, "root", root, sizeof(root));
	if (is_overlay(root))
		return 0;
	/* a descriptor cached before (a destroyed namesake) is stale */
	local_files_forget(l, m->name);
	sb_dir(l, m->name, "upper", upper, sizeof(upper));
	sb_dir(l, m->name, "work", work, sizeof(work));
	sb_dir(l, m->name, "lower", lower, sizeof(lower));
	if (m->uid_base) {
		/* The image, read-only and idmapped so that its uid 0 is the
		 * sandbox's root (idmap.c).  The overlay keeps its own
		 * reference to the layer: the mount on `lower` is detached
		 * again right after, so the host's mount table shows one
		 * mount per sandbox. */
		snprintf(img, sizeof(img), "%s/root", m->image);
		if (mkdir(lower, 0700) && errno != EEXIST) {
			err = -errno;
			snprintf(msg, msglen, "cannot create %.256s: %s", lower,
				 strerror(errno));
			return err;
		}
		umount2(lower, MNT_DETACH); /* a leftover of a crash */
		err = local_idmap_mount(l, img, lower, m->uid_base, msg,
					msglen);
		if (err)
			return err;
	} else {
		/* made by an sbxfs before user namespaces: its lower layer
		 * was the host's /; mounted for file access only (such a
		 * sandbox is never started again) */
		snprintf(lower, sizeof(lower), "/");
	}
	opts = malloc(cap);
	if (!opts)
		return -ENOMEM;
	/* One lower layer: a template is copied into the upper layer at
	 * create time instead of being stacked (see create_work). */
	n += snprintf(opts + n, cap - n, "lowerdir=%s,upperdir=%s,workdir=%s",
		      lower, upper, work);
	if (n >= cap) {
		snprintf(msg, msglen, "sandbox paths too long");
		free(opts);
		return -E2BIG;
	}
	if (mount("overlay", root, "overlay", MS_NOATIME | MS_NODEV, opts)) {
		err = -errno;
		if (err == -EPERM)
			snprintf(msg, msglen, "cannot mount the sandbox root: "
				 "the local runtime needs root");
		else
			snprintf(msg, msglen, "cannot mount the overlay root "
				 "of '%s': %s", m->name, strerror(-err));
	}
	if (m->uid_base)
		umount2(lower, MNT_DETACH);
	free(opts);
	return err;
}

/* The remount a file operation asked for, on the runtime in the sandbox's
 * own queue: after whatever lifecycle work came before it, never beside a
 * create or destroy. */
static int remount_work(struct local *l, void *arg, int err)
{
	char *name = arg, msg[512];
	struct sb_meta m;

	if (!err && meta_read(l, name, &m) == 0) {
		pthread_mutex_lock(&l->mount_lock);
		err = sb_mount_locked(l, &m, msg, sizeof(msg));
		pthread_mutex_unlock(&l->mount_lock);
		if (err)
			api_log("%s", msg);
	}
	free(name);
	return 0;
}

int local_sb_mount(struct local *l, const char *name, char *msg,
		   size_t msglen)
{
	char root[PATH_MAX], *arg;
	struct sb_meta m;
	int err = meta_read(l, name, &m);

	if (err) {
		snprintf(msg, msglen, "no sandbox named '%.63s'", name);
		return err == -ENOENT ? -ENOENT : err;
	}
	/* Only for file operations, which never wait for a mount (it forks
	 * for the idmapped layer): the overlay of every sandbox is mounted
	 * at start-up (local_recover), by create and by start, so it is only
	 * missing here when something unmounted it behind our back, or while
	 * a lifecycle operation holds the sandbox.  Mount it again on the
	 * runtime, in the sandbox's queue, and answer EBUSY meanwhile. */
	sb_dir(l, name, "root", root, sizeof(root));
	if (is_overlay(root))
		return 0;
	if (local_busy(l, name)) {
		snprintf(msg, msglen, "sandbox '%s' is busy; its root is not "
			 "mounted yet", name);
		return -EBUSY;
	}
	/* one remount queued at a time, however many operations ask (work
	 * already queued for the sandbox comes first anyway) */
	err = 0;
	if (!rt_key_busy(l->rt, name)) {
		arg = strdup(name);
		err = arg ? local_submit_key(l, name, false, remount_work, arg)
			  : -ENOMEM;
		if (err)
			free(arg);
	}
	if (err) {
		snprintf(msg, msglen, "cannot mount the root of sandbox '%s' "
			 "again: %s", name, strerror(-err));
		return err;
	}
	snprintf(msg, msglen, "the root of sandbox '%s' was not mounted; it "
		 "is being mounted again, try again in a moment", name);
	return -EBUSY;
}

static void sb_umount(struct local *l, const char *name)
{
	char root[PATH_MAX];

	sb_dir(l, name, "root", root, sizeof(root));
	pthread_mutex_lock(&l->mount_lock);
	local_files_forget(l, name);
	for (int i = 0; i < 8 && is_overlay(root); i++)
		if (umount2(root, 0) && errno == EBUSY)
			umount2(root, MNT_DETACH);
	pthread_mutex_unlock(&l->mount_lock);
}

/* ---- the sandbox init --------------------------------------------------- */

struct launch {
	char root[PATH_MAX];
	int cgfds[LOCAL_CG_FDS]; /* cgroup.procs of each controller */
	int ncg;
	int gofd;		 /* read end: the parent mapped our IDs */
	char hostname[64];
	int nsflags;
};

struct launch_msg {
	int32_t pid;
	int32_t err;
	int32_t step;
};

enum {
	STEP_CGROUP = 1,
	STEP_UNSHARE,
	STEP_FORK,
	STEP_PRIVATE,
	STEP_BIND,
	STEP_PROC,
	STEP_DEV,
	STEP_MASK,
	STEP_PIVOT,
	STEP_HOSTNAME,
	STEP_USERNS,	/* not an error: "map my IDs now" */
	STEP_SETUID,
	STEP_CAPS,
	STEP_SECCOMP,
	STEP_LAST = STEP_SECCOMP,
};

static const char *const step_names[] = {
	"?", "join cgroup", "unshare", "fork", "make mounts private",
	"bind root", "mount /proc", "set up /dev", "mask /proc and /sys",
	"pivot_root", "sethostname", "user namespace", "become root inside",
	"lower capabilities", "load the seccomp filter",
};

/* Everything below runs in a forked child of a threaded process: only
 * system calls and stack buffers, no malloc, no stdio. */

static void put_uint(char *p, unsigned v)
{
	char t[12];
	int n = 0;

	do {
		t[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	while (n)
		*p++ = t[--n];
	*p = '\0';
}

/* "/proc/self/fd/N": a mount target that is exactly the object we opened
 * inside the root, whatever symlinks the sandbox planted along the way. */
static int at_root(int rootfd, const char *rel, char *buf)
{
	struct open_how how = {
		.flags = O_PATH | O_CLOEXEC,
		.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS |
			   RESOLVE_NO_MAGICLINKS,
	};
	int fd = (int)syscall(SYS_openat2, rootfd, rel, &how, sizeof(how));

	if (fd < 0)
		return -1;
	memcpy(buf, "/proc/self/fd/", 14);
	put_uint(buf + 14, (unsigned)fd);
	return fd;
}

static void child_fail(int wfd, int err, int step)
{
	struct launch_msg m = {0, err, step};

	if (write(wfd, &m, sizeof(m)) < 0)
		_exit(3);
	_exit(2);
}

static int dev_setup(int rootfd)
{
	static const char *const nodes[] = {"null", "zero", "full", "random",
					    "urandom", "tty"};
	static const char *const links[][2] = {
		{"fd", "/proc/self/fd"},     {"stdin", "/proc/self/fd/0"},
		{"stdout", "/proc/self/fd/1"}, {"stderr", "/proc/self/fd/2"},
		{"ptmx", "pts/ptmx"},
	};
	char t[32], host[32];
	int fd, devfd;

	fd = at_root(rootfd, "dev", t);
	if (fd < 0)
		return -1;
	if (mount("tmpfs", t, "tmpfs", MS_NOSUID | MS_NOEXEC,
		  "mode=755,size=1m"))
		return -1;
	close(fd);
	devfd = at_root(rootfd, "dev", t);
	if (devfd < 0)
		return -1;
	for (size_t i = 0; i < sizeof(nodes) / sizeof(*nodes); i++) {
		fd = openat(devfd, nodes[i], O_CREAT | O_WRONLY | O_CLOEXEC,
			    0666);
		if (fd < 0)
			return -1;
		close(fd);
		memcpy(host, "/dev/", 5);
		memcpy(host + 5, nodes[i], strlen(nodes[i]) + 1);
		fd = openat(devfd, nodes[i], O_PATH | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0)
			return -1;
		memcpy(t, "/proc/self/fd/", 14);
		put_uint(t + 14, (unsigned)fd);
		if (mount(host, t, NULL, MS_BIND, NULL))
			return -1;
		close(fd);
	}
	for (size_t i = 0; i < sizeof(links) / sizeof(*links); i++)
		symlinkat(links[i][1], devfd, links[i][0]);
	if (mkdirat(devfd, "pts", 0755) == 0) {
		fd = openat(devfd, "pts", O_PATH | O_DIRECTORY | O_CLOEXEC);
		memcpy(t, "/proc/self/fd/", 14);
		put_uint(t + 14, (unsigned)fd);
		mount("devpts", t, "devpts", MS_NOSUID | MS_NOEXEC,
		      "newinstance,ptmxmode=0666,mode=620");
		close(fd);
	}
	if (mkdirat(devfd, "shm", 01777) == 0) {
		fd = openat(devfd, "shm", O_PATH | O_DIRECTORY | O_CLOEXEC);
		memcpy(t, "/proc/self/fd/", 14);
		put_uint(t + 14, (unsigned)fd);
		mount("tmpfs", t, "tmpfs", MS_NOSUID | MS_NODEV,
		      "mode=1777");
		close(fd);
	}
	close(devfd);
	return 0;
}

static void lo_up(void)
{
	struct ifreq ifr;
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	if (s < 0)
		return;
	memset(&ifr, 0, sizeof(ifr));
	memcpy(ifr.ifr_name, "lo", 3);
	if (ioctl(s, SIOCGIFFLAGS, &ifr) == 0) {
		ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
		ioctl(s, SIOCSIFFLAGS, &ifr);
	}
	close(s);
}

static void init_nop(int sig)
{
	(void)sig;
}

/* Does the sandbox hold any process but PID 1?  Raw getdents64 on our
 * own /proc: no allocation in this forked child. */
/* /proc/NAME is a zombie: a proc/ job whose monitor (its parent, outside
 * the sandbox) has not reaped it yet; it runs nothing.  (No stdio: PID 1
 * is a forked child of a threaded process.) */
static bool init_zombie(int procfd, const char *name)
{
	char path[32], buf[512], *p = NULL;
	size_t n = strlen(name);
	ssize_t r;
	int fd;

	if (n > 16)
		return false;
	memcpy(path, name, n);
	memcpy(path + n, "/stat", 6);
	fd = openat(procfd, path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return true; /* gone meanwhile */
	r = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (r <= 0)
		return true;
	for (ssize_t i = r - 1; i >= 0; i--)
		if (buf[i] == ')') {
			p = buf + i;
			break;
		}
	return p && p + 2 < buf + r && p[1] == ' ' &&
	       (p[2] == 'Z' || p[2] == 'X');
}

static bool init_alone(void)
{
	char buf[4096];
	bool alone = true;
	int fd = open("/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd < 0)
		return true;
	for (;;) {
		long n = syscall(SYS_getdents64, fd, buf, sizeof(buf));
		if (n <= 0)
			break;
		for (long off = 0; off < n;) {
			struct dirent64 *d = (struct dirent64 *)(buf + off);
			off += d->d_reclen;
			if (d->d_name[0] >= '1' && d->d_name[0] <= '9' &&
			    strcmp(d->d_name, "1") != 0 &&
			    !init_zombie(fd, d->d_name))
				alone = false;
		}
	}
	close(fd);
	return alone;
}

/* Bounds of our own argv area (fields 48 and 49 of /proc/self/stat), so
 * that a forked child can write over a copy of sbxfs's command line (it
 * names host paths); PR_SET_MM would need CAP_SYS_RESOURCE, which
 * containers often lack.  No allocation, raw calls only: callers are
 * forked children of a threaded process.  0, or -1 when not found. */
int local_argv_area(char **start, size_t *len)
{
	char st[1024], *p;
	unsigned long b, e;
	int fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC), field = 2;
	ssize_t n = fd >= 0 ? read(fd, st, sizeof(st) - 1) : -1;

	if (fd >= 0)
		close(fd);
	if (n <= 0)
		return -1;
	st[n] = 0;
	p = strrchr(st, ')');
	if (!p)
		return -1;
	for (p++; *p && field < 48; p++)
		if (*p == ' ')
			field++;
	/* p now points at field 48 */
	b = strtoul(p, &p, 10);
	e = strtoul(p, &p, 10);
	if (!b || e <= b)
		return -1;
	*start = (char *)b;
	*len = e - b;
	return 0;
}

/* Show PID 1 as "sandbox-init NAME" in ps, not as a copy of sbxfs's
 * command line: overwrite our own argv area in place. */
static void init_rename(const char *name)
{
	char *start, *p;
	size_t len;

	if (local_argv_area(&start, &len))
		return;
	memset(start, 0, len);
	snprintf(start, len, "sandbox-init %s", name);
	p = memchr(start, ' ', len);
	if (p)
		*p = 0; /* argv[0] "sandbox-init", argv[1] NAME */
}

/* PID 1 of the sandbox: reap orphans forever.  SIGTERM (sbxfs's stop)
 * passes SIGTERM on to everything in the sandbox and exits once nothing
 * else is left, so the grace period is honoured; sbxfs sends SIGKILL
 * when it runs out, and the kernel then kills whatever remains. */
static void __attribute__((noreturn)) init_loop(void)
{
	struct sigaction sa;
	struct timespec tick = {0, 100000000L};
	sigset_t set;
	bool terminating = false;

	prctl(PR_SET_NAME, "sbxfs-init");
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = init_nop;
	/* PID 1 gets no signal with a default action: handlers make
	 * SIGTERM/SIGCHLD deliverable, sigtimedwait takes them. */
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGCHLD, &sa, NULL);
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGCHLD);
	sigprocmask(SIG_BLOCK, &set, NULL);
	for (;;) {
		siginfo_t si;
		int sig = terminating ? sigtimedwait(&set, &si, &tick)
				      : sigwaitinfo(&set, &si);
		if ((sig == SIGTERM || sig == SIGINT) && !terminating) {
			terminating = true;
			kill(-1, SIGTERM);
		}
		while (waitpid(-1, NULL, WNOHANG) > 0)
			;
		if (terminating && init_alone())
			_exit(0);
	}
}

/* Read-only bind of rel onto itself (a /proc directory or file). */
static int ro_bind(int rootfd, const char *rel)
{
	char t[32];
	int fd = at_root(rootfd, rel, t);

	if (fd < 0)
		return errno == ENOENT ? 0 : -1;
	if (mount(t, t, NULL, MS_BIND | MS_REC, NULL)) {
		close(fd);
		return -1;
	}
	close(fd);
	fd = at_root(rootfd, rel, t); /* now the new mount on top */
	if (fd < 0)
		return -1;
	if (mount(NULL, t, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY |
		  MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL)) {
		close(fd);
		return -1;
	}
	close(fd);
	return 0;
}

/* Hide rel: /dev/null over a file, an empty read-only tmpfs over a
 * directory (what runc calls maskedPaths). */
static int mask(int rootfd, const char *rel)
{
	char t[32], n[32];
	struct stat st;
	int fd = at_root(rootfd, rel, t), nfd, r;

	if (fd < 0)
		return errno == ENOENT ? 0 : -1;
	if (fstat(fd, &st)) {
		close(fd);
		return -1;
	}
	if (S_ISDIR(st.st_mode)) {
		r = mount("tmpfs", t, "tmpfs", MS_RDONLY | MS_NOSUID |
			  MS_NODEV | MS_NOEXEC, "size=4k,mode=555");
	} else {
		nfd = at_root(rootfd, "dev/null", n);
		r = nfd < 0 ? -1 : mount(n, t, NULL, MS_BIND, NULL);
		if (nfd >= 0)
			close(nfd);
	}
	close(fd);
	return r ? -1 : 0;
}

static const char *const ro_paths[] = {
	"proc/sys", "proc/sysrq-trigger", "proc/irq", "proc/bus", "proc/fs",
	"proc/asound",
};
static const char *const masked_paths[] = {
	"proc/kcore", "proc/keys", "proc/timer_list", "proc/sched_debug",
	"proc/latency_stats", "proc/timer_stats", "proc/acpi", "proc/scsi",
	"proc/kallsyms", "sys/firmware", "sys/devices/virtual/powercap",
	"sys/kernel/security", "sys/kernel/debug",
};

static void __attribute__((noreturn)) init_main(const struct launch *ln,
						int wfd)
{
	struct launch_msg ok = {0, 0, 0};
	char t[32];
	int rootfd, fd;

	/* PID 1 dies of any signal whose default action it keeps and an
	 * ancestor namespace sends (a stray SIGHUP, SIGPIPE...): ignore
	 * them; init_loop takes SIGTERM/SIGINT/SIGCHLD itself. */
	for (int sig = 1; sig < 32; sig++)
		if (sig != SIGKILL && sig != SIGSTOP && sig != SIGTERM &&
		    sig != SIGINT && sig != SIGCHLD && sig != SIGSEGV &&
		    sig != SIGBUS && sig != SIGILL && sig != SIGFPE &&
		    sig != SIGABRT)
			signal(sig, SIG_IGN);
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL))
		child_fail(wfd, -errno, STEP_PRIVATE);
	/* Our cwd is the overlay root (entered before the namespaces were
	 * made; its path is not reachable by the sandbox's root).  In a
	 * mount namespace of a new user namespace the copied mounts are
	 * locked, and pivot_root refuses a locked root: put an unlocked
	 * clone of it on top and step into that. */
	rootfd = (int)syscall(SYS_open_tree, AT_FDCWD, ".",
			      OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC |
				      AT_RECURSIVE);
	if (rootfd < 0)
		child_fail(wfd, -errno, STEP_BIND);
	if (syscall(SYS_move_mount, rootfd, "", AT_FDCWD, ".",
		    MOVE_MOUNT_F_EMPTY_PATH) ||
	    fchdir(rootfd))
		child_fail(wfd, -errno, STEP_BIND);
	fd = at_root(rootfd, "proc", t);
	if (fd < 0 || mount("proc", t, "proc", MS_NOSUID | MS_NODEV |
			    MS_NOEXEC, NULL))
		child_fail(wfd, -errno, STEP_PROC);
	close(fd);
	fd = at_root(rootfd, "sys", t);
	if (fd >= 0) {
		/* best effort: tools peek at /sys, nothing depends on it
		 * (a sandbox sharing the host's network may not mount it) */
		mount("sysfs", t, "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV |
		      MS_NOEXEC, NULL);
		close(fd);
	}
	if (dev_setup(rootfd))
		child_fail(wfd, -errno, STEP_DEV);
	for (size_t i = 0; i < sizeof(ro_paths) / sizeof(*ro_paths); i++)
		if (ro_bind(rootfd, ro_paths[i]))
			child_fail(wfd, -errno, STEP_MASK);
	for (size_t i = 0; i < sizeof(masked_paths) / sizeof(*masked_paths);
	     i++)
		if (mask(rootfd, masked_paths[i]))
			child_fail(wfd, -errno, STEP_MASK);
	if (syscall(SYS_pivot_root, ".", ".") || umount2(".", MNT_DETACH) ||
	    chdir("/"))
		child_fail(wfd, -errno, STEP_PIVOT);
	close(rootfd);
	if (sethostname(ln->hostname, strlen(ln->hostname)))
		child_fail(wfd, -errno, STEP_HOSTNAME);
	if (ln->nsflags & CLONE_NEWNET)
		lo_up();
	init_rename(ln->hostname);
	/* PID 1 is a fork of sbxfs: its memory is sbxfs's.  Not dumpable
	 * and without CAP_SYS_PTRACE, nothing in the sandbox can read it. */
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	if (local_caps_restrict())
		child_fail(wfd, -EPERM, STEP_CAPS);
	fd = local_seccomp_apply();
	if (fd < 0)
		child_fail(wfd, fd, STEP_SECCOMP);
	if (write(wfd, &ok, sizeof(ok)) < 0)
		_exit(3);
	close(wfd);
	init_loop();
}

/* First child: leave sbxfs's session, join the cgroups, enter a new user
 * namespace (the parent maps its IDs), become root there, make the other
 * namespaces (owned by that user namespace) and fork the sandbox's PID 1;
 * report its PID and exit, so PID 1 is re-parented away from sbxfs. */
static void __attribute__((noreturn)) launch_child(const struct launch *ln,
						   int wfd)
{
	struct launch_msg m = {0, 0, 0};
	sigset_t none;
	char c;
	int fd;

	/* join the cgroups first: a task may only move into a cgroup from
	 * outside the cgroup namespace it is about to make */
	for (int i = 0; i < ln->ncg; i++)
		if (write(ln->cgfds[i], "0", 1) != 1)
			child_fail(wfd, -errno, STEP_CGROUP);
	/* the root, while its path is still reachable: unshare(CLONE_NEWNS)
	 * carries the cwd over into the new mount namespace */
	if (chdir(ln->root))
		child_fail(wfd, -errno, STEP_BIND);
	fd = fcntl(wfd, F_DUPFD, 10);
	if (fd < 0)
		_exit(4);
	wfd = fd;
	int gofd = fcntl(ln->gofd, F_DUPFD, 10);
	if (gofd < 0)
		_exit(4);
	fd = open("/dev/null", O_RDWR);
	if (fd >= 0) {
		dup2(fd, 0);
		dup2(fd, 1);
		dup2(fd, 2);
	}
	if (dup2(wfd, 3) < 0 || dup2(gofd, 4) < 0)
		_exit(4);
	wfd = 3;
	gofd = 4;
	syscall(SYS_close_range, 5U, ~0U, 0U);
	setsid();
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	for (int s = 1; s < 32; s++)
		if (s != SIGKILL && s != SIGSTOP)
			signal(s, SIG_DFL);
	umask(022);
	if (unshare(CLONE_NEWUSER))
		child_fail(wfd, -errno, STEP_USERNS);
	m.step = STEP_USERNS;
	if (write(wfd, &m, sizeof(m)) < 0)
		_exit(3);
	m.step = 0;
	/* one byte: mapped; EOF: the parent gave up */
	if (read(gofd, &c, 1) != 1)
		_exit(5);
	close(gofd);
	if (setresgid(0, 0, 0) || setgroups(0, NULL) || setresuid(0, 0, 0))
		child_fail(wfd, -errno, STEP_SETUID);
	if (unshare(ln->nsflags))
		child_fail(wfd, -errno, STEP_UNSHARE);
	/* raw clone, not fork(): no pthread_atfork handler may run here,
	 * its locks could have been held by a thread of sbxfs */
	pid_t pid = (pid_t)syscall(SYS_clone, (unsigned long)SIGCHLD, 0UL,
				   NULL, NULL, 0UL);
	if (pid < 0)
		child_fail(wfd, -errno, STEP_FORK);
	if (pid == 0)
		init_main(ln, wfd);
	m.pid = pid;
	if (write(wfd, &m, sizeof(m)) < 0)
		_exit(3);
	_exit(0);
}

static int read_msg(int fd, struct launch_msg *m, double end)
{
	size_t got = 0;

	while (got < sizeof(*m)) {
		struct pollfd p = {fd, POLLIN, 0};
		int left = (int)((end - sb_now()) * 1000);
		if (left <= 0)
			return -ETIMEDOUT;
		int r = poll(&p, 1, left);
		if (r < 0 && errno != EINTR)
			return -errno;
		if (r <= 0)
			continue;
		ssize_t n = read(fd, (char *)m + got, sizeof(*m) - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -EIO;
		got += (size_t)n;
	}
	return 0;
}

static int sb_launch(struct local *l, struct sb_meta *m, char *msg,
		     size_t msglen)
{
	struct launch *ln = calloc(1, sizeof(*ln));
	struct launch_msg r0 = {0, 0, 0}, r1 = {0, 0, 0}, r2 = {0, 0, 0};
	int step = 0;
	double end = sb_now() + l->be->timeout;
	int p[2], go[2], err;
	pid_t a;

	if (!ln)
		return -ENOMEM;
	if (!m->uid_base) {
		snprintf(msg, msglen, "sandbox '%s' was made by an older sbxfs "
			 "without a user namespace (root inside would be root "
			 "on the host); copy out what you need and destroy it",
			 m->name);
		free(ln);
		return -EPERM;
	}
	sb_dir(l, m->name, "root", ln->root, sizeof(ln->root));
	err = local_cg_create(l, m->name, &m->lim, msg, msglen);
	if (err) {
		free(ln);
		return err;
	}
	cg_set(l, m->name, "THAWED");
	ln->ncg = local_cg_procs_open(l, m->name, ln->cgfds, LOCAL_CG_FDS);
	if (ln->ncg < 0) {
		err = ln->ncg;
		snprintf(msg, msglen, "cannot open the cgroups of '%s': %s",
			 m->name, strerror(-err));
		free(ln);
		return err;
	}
	snprintf(ln->hostname, sizeof(ln->hostname), "%s", m->name);
	ln->nsflags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC |
		      CLONE_NEWUTS | CLONE_NEWCGROUP |
		      (m->net_host ? 0 : CLONE_NEWNET);
	if (pipe2(p, O_CLOEXEC)) {
		err = -errno;
		goto fail_early;
	}
	if (pipe2(go, O_CLOEXEC)) {
		err = -errno;
		close(p[0]);
		close(p[1]);
		goto fail_early;
	}
	ln->gofd = go[0];
	a = fork();
	if (a == 0) {
		close(p[0]);
		close(go[1]);
		launch_child(ln, p[1]);
	}
	close(p[1]);
	close(go[0]);
	for (int i = 0; i < ln->ncg; i++)
		close(ln->cgfds[i]);
	free(ln);
	if (a < 0) {
		err = -errno;
		close(p[0]);
		close(go[1]);
		snprintf(msg, msglen, "cannot fork: %s", strerror(-err));
		return err;
	}
	/* the launcher's new user namespace gets the sandbox's range */
	err = read_msg(p[0], &r0, end);
	if (!err && r0.err) {
		err = r0.err;
		step = r0.step;
	} else if (!err && r0.step != STEP_USERNS) {
		err = -EIO;
	}
	if (!err) {
		err = local_userns_map(a, m->uid_base);
		if (err)
			step = STEP_USERNS;
	}
	if (!err && write(go[1], "g", 1) != 1)
		err = -EIO;
	close(go[1]);
	if (err) {
		kill(a, SIGKILL);
		waitpid(a, NULL, 0);
		goto done;
	}
	err = read_msg(p[0], &r1, end);
	if (err) {
		kill(a, SIGKILL);
		waitpid(a, NULL, 0);
	} else {
		waitpid(a, NULL, 0);
		if (r1.err) {
			err = r1.err;
			step = r1.step;
		} else {
			err = read_msg(p[0], &r2, end);
		}
		if (!err && r2.err) {
			err = r2.err;
			step = r2.step;
		}
	}
done:
	close(p[0]);
	if (err) {
		if (step < 0 || step > STEP_LAST)
			step = 0;
		snprintf(msg, msglen, "cannot start sandbox '%s' (%s): %s",
			 m->name, step ? step_names[step] : "launch",
			 strerror(-err));
		cg_kill(l, m->name, SIGKILL);
		return err;
	}
	/* The launcher (PID) and PID 1 ("ready") write to one pipe, in
	 * either order: the PID is whichever message carries one. */
	if (!r1.pid)
		r1.pid = r2.pid;
	m->pid = r1.pid;
	/* Never report a sandbox as made when its PID 1 is not there: a
	 * start time of 0 means it is gone (or a zombie) already. */
	for (int i = 0; i < 50; i++) {
		m->starttime = proc_starttime(r1.pid);
		if (m->starttime)
			return 0;
		sb_sleep_ms(10);
	}
	snprintf(msg, msglen, "cannot start sandbox '%s': its init process "
		 "(pid %d) exited during start-up", m->name, (int)r1.pid);
	return -ECHILD;

fail_early:
	for (int i = 0; i < ln->ncg; i++)
		close(ln->cgfds[i]);
	free(ln);
	return err;
}

/* ---- stop / kill -------------------------------------------------------- */

/* Kill everything in the cgroup: SIGTERM, SIGKILL after `grace`; bounded
 * by `end`.  Frozen tasks cannot die, so thaw first. */
static int sb_kill_all(struct local *l, const char *name, double grace,
		       double end, char *msg, size_t msglen)
{
	double kill_at = sb_now() + grace;
	bool hard = grace <= 0;

	cg_set(l, name, "THAWED");
	cg_kill(l, name, hard ? SIGKILL : SIGTERM);
	while (!cg_empty(l, name)) {
		double now = sb_now();
		if (now >= end) {
			snprintf(msg, msglen, "processes of sandbox '%s' did "
				 "not end within the request timeout", name);
			return -ETIMEDOUT;
		}
		if (!hard && now >= kill_at)
			hard = true;
		if (hard)
			cg_kill(l, name, SIGKILL);
		sb_sleep_ms(20);
	}
	return 0;
}

/* ---- verbs -------------------------------------------------------------- */

struct verb_job {
	struct api_backend *be;
	char name[64];
	enum api_verb verb;
	char arg[64];
	api_done_fn cb;
	void *ud;
	/* stop, between its steps (verb_work is called again while it
	 * waits for the processes to end, holding no worker) */
	int step; /* 0: not begun */
	bool hard;
	double kill_at, end;
	struct sb_meta m;
};

static int verb_start(struct local *l, struct sb_meta *m, char *msg,
		      size_t msglen)
{
	int err;

	switch (sb_state(l, m)) {
	case API_ST_RUNNING:
		return 0;
	case API_ST_PAUSED:
		snprintf(msg, msglen, "sandbox '%s' is paused; resume it "
			 "instead", m->name);
		return -EBUSY;
	default:
		break;
	}
	/* after a reboot the overlay is gone: mount it again */
	pthread_mutex_lock(&l->mount_lock);
	err = sb_mount_locked(l, m, msg, msglen);
	pthread_mutex_unlock(&l->mount_lock);
	if (err)
		return err;
	err = sb_launch(l, m, msg, msglen);
	if (err)
		return err;
	snprintf(m->state, sizeof(m->state), "running");
	return meta_write(l, m);
}

/* Stop: thaw, SIGTERM to every process of the cgroup, SIGKILL after the
 * grace period, then wait (bounded) for the cgroup to be empty and PID 1
 * gone.  It waits by returning: > 0 is "call again in that many ms"
 * (the sandbox stays busy, no worker is held); 0 or -errno when done. */
static int stop_begin(struct local *l, struct verb_job *j, char *msg,
		      size_t msglen)
{
	double grace = SB_DEFAULT_GRACE;

	if (j->arg[0]) {
		char *e;
		errno = 0;
		grace = strtod(j->arg, &e);
		if (errno || *e || !(grace >= 0) || grace > 86400) {
			snprintf(msg, msglen, "stop: bad grace period '%s' "
				 "(want seconds)", j->arg);
			return -EINVAL;
		}
	}
	j->end = sb_now() + l->be->timeout;
	/* keep a moment for SIGKILL inside the request bound */
	if (grace > l->be->timeout * 0.8)
		grace = l->be->timeout * 0.8;
	j->kill_at = sb_now() + grace;
	j->hard = grace <= 0;
	/* frozen tasks cannot die: thaw first */
	cg_set(l, j->name, "THAWED");
	cg_kill(l, j->name, j->hard ? SIGKILL : SIGTERM);
	j->step = 1;
	return 0;
}

static int stop_step(struct local *l, struct verb_job *j, char *msg,
		     size_t msglen)
{
	double now = sb_now();

	if (j->step == 1) {
		if (!cg_empty(l, j->name)) {
			if (now >= j->end) {
				snprintf(msg, msglen, "processes of sandbox "
					 "'%s' did not end within the request "
					 "timeout", j->name);
				return -ETIMEDOUT;
			}
			if (!j->hard && now >= j->kill_at)
				j->hard = true;
			if (j->hard)
				cg_kill(l, j->name, SIGKILL);
			return 20;
		}
		/* zombies of jobs whose monitor (outside) is their parent
		 * keep PID 1 from ending: have them reaped */
		local_exec_reap(l, j->name);
		j->step = 2;
	}
	/* it leaves the cgroup a moment before it turns into a zombie */
	if (init_alive(&j->m) && now < j->end)
		return 5;
	snprintf(j->m.state, sizeof(j->m.state), "stopped");
	return meta_write(l, &j->m);
}

/* One look at the freezer: 0 when it reads `want`, N > 0 to look again
 * in N ms, -errno (-ETIMEDOUT past j->end). */
static int freeze_step(struct local *l, struct verb_job *j, const char *want,
		       char *msg, size_t msglen)
{
	char st[32];
	int err = cg_set(l, j->name, want);

	if (err) {
		snprintf(msg, msglen, "cannot write freezer state of '%s': %s",
			 j->name, strerror(-err));
		return err;
	}
	if (cg_freezer_state(l, j->name, st, sizeof(st)) == 0 &&
	    !strcmp(st, want))
		return 0;
	if (sb_now() >= j->end) {
		snprintf(msg, msglen, "sandbox '%s' did not reach %s within "
			 "the request timeout", j->name, want);
		return -ETIMEDOUT;
	}
	return 10;
}

/* Pause / resume: freeze or thaw, then look until the freezer reads
 * back, bounded; waits by returning N > 0 (like stop). */
static int pause_step(struct local *l, struct verb_job *j, char *msg,
		      size_t msglen)
{
	bool pause = j->verb == API_VERB_PAUSE;
	int err = freeze_step(l, j, pause ? "FROZEN" : "THAWED", msg, msglen);

	if (err == -ETIMEDOUT && pause)
		cg_set(l, j->name, "THAWED");
	return err;
}

static int pause_begin(struct local *l, struct verb_job *j, char *msg,
		       size_t msglen)
{
	enum api_state st = sb_state(l, &j->m);
	bool pause = j->verb == API_VERB_PAUSE;

	if (st != API_ST_RUNNING && st != API_ST_PAUSED) {
		snprintf(msg, msglen, "sandbox '%s' is %s; only a running "
			 "sandbox can be %s", j->name, api_state_name(st),
			 pause ? "paused" : "resumed");
		return -EBUSY;
	}
	j->end = sb_now() + l->be->timeout;
	j->step = 1;
	return pause_step(l, j, msg, msglen);
}

/* Freeze or thaw and wait (bounded) until the freezer reads back: for
 * snapshot, whose copy follows on the same worker anyway. */
static int freeze_wait(struct local *l, const char *name, const char *want,
		       char *msg, size_t msglen)
{
	double end = sb_now() + l->be->timeout;
	char st[32];
	int err;

	for (;;) {
		err = cg_set(l, name, want);
		if (err) {
			snprintf(msg, msglen, "cannot write freezer state of "
				 "'%s': %s", name, strerror(-err));
			return err;
		}
		if (cg_freezer_state(l, name, st, sizeof(st)) == 0 &&
		    !strcmp(st, want))
			return 0;
		if (sb_now() >= end)
			break;
		sb_sleep_ms(10);
	}
	snprintf(msg, msglen, "sandbox '%s' did not reach %s within the "
		 "request timeout", name, want);
	return -ETIMEDOUT;
}

static int verb_snapshot(struct local *l, struct sb_meta *m,
			 const char *snap, char *msg, size_t msglen)
{
	static unsigned seq;
	char tmp[2048], troot[PATH_MAX], upper[PATH_MAX];
	char dst[PATH_MAX], mpath[PATH_MAX];
	struct stat st;
	bool froze = false;
	int err;

	if (local_name_check(snap)) {
		snprintf(msg, msglen, "bad snapshot name '%.63s': use "
			 "[A-Za-z0-9._-], at most 63 characters", snap);
		return -EINVAL;
	}
	tpl_dir(l, snap, NULL, dst, sizeof(dst));
	if (lstat(dst, &st) == 0) {
		snprintf(msg, msglen, "template '%s' already exists", snap);
		return -EEXIST;
	}
	snprintf(tmp, sizeof(tmp), "%s/tmp", l->datadir);
	mkdir(tmp, 0700);
	snprintf(tmp, sizeof(tmp), "%s/tmp/snap-%s-%d-%u", l->datadir, snap,
		 (int)getpid(), __atomic_add_fetch(&seq, 1, __ATOMIC_RELAXED));
	if (mkdir(tmp, 0755)) {
		err = -errno;
		snprintf(msg, msglen, "cannot create %.256s: %s", tmp,
			 strerror(errno));
		return err;
	}
	/* a consistent copy: nothing writes while cp reads */
	if (sb_state(l, m) == API_ST_RUNNING) {
		/* tmp/thaw names the sandbox we freeze: should this sbxfs
		 * die before the thaw, the start-up sweep thaws it */
		char mark[2200];
		FILE *f;

		snprintf(mark, sizeof(mark), "%s/thaw", tmp);
		f = fopen(mark, "we");
		if (f) {
			fputs(m->name, f);
			fclose(f);
		}
		err = freeze_wait(l, m->name, "FROZEN", msg, msglen);
		if (err) {
			cg_set(l, m->name, "THAWED");
			goto fail;
		}
		froze = true;
	}
	snprintf(troot, sizeof(troot), "%s/root", tmp);
	sb_dir(l, m->name, "upper", upper, sizeof(upper));
	const char *argv[] = {"cp", "-a", "--reflink=auto", "-T", upper,
			      troot, NULL};
	err = run_tool(argv, l->be->timeout, msg, msglen);
	if (froze)
		cg_set(l, m->name, "THAWED");
	if (err)
		goto fail;
	/* templates are stored with 0-based owners (idmap.c) */
	err = local_id_shift(troot, m->uid_base, 0);
	if (err) {
		snprintf(msg, msglen, "cannot store the owners of the "
			 "snapshot: %s", strerror(-err));
		goto fail;
	}

	cJSON *o = cJSON_CreateObject();
	cJSON *a = cJSON_AddArrayToObject(o, "lineage");
	cJSON_AddStringToObject(o, "name", snap);
	cJSON_AddStringToObject(o, "from", m->name);
	cJSON_AddNumberToObject(o, "created", (double)time(NULL));
	cJSON_AddItemToArray(a, cJSON_CreateString(snap));
	/* lineage is informational: keep the newest entries */
	for (int i = 0; i < m->nlayers && i + 1 < SB_LAYERS_MAX; i++)
		cJSON_AddItemToArray(a, cJSON_CreateString(m->layers[i]));
	snprintf(mpath, sizeof(mpath), "%s/meta.json", tmp);
	err = write_json_file(mpath, o);
	cJSON_Delete(o);
	if (err) {
		snprintf(msg, msglen, "cannot write template metadata: %s",
			 strerror(-err));
		goto fail;
	}
	if (rename(tmp, dst)) {
		err = errno == ENOTEMPTY ? -EEXIST : -errno;
		snprintf(msg, msglen, "cannot store template '%s': %s", snap,
			 strerror(-err));
		goto fail;
	}
	return 0;
fail:
	rm_rf(tmp);
	return err;
}

static void trash_work(struct local *l, void *arg)
{
	(void)l;
	if (rm_rf(arg))
		api_log("could not fully remove %s",
			(char *)arg);
	free(arg);
}

/* A create interrupted by the death of the sbxfs that ran it (no live
 * process holds the sandbox directory's lock): finish it when its init is
 * alive in a mounted root, otherwise remove what was made, so `status`
 * never contradicts the processes and no half-made sandbox lingers. */
static void recover_one(struct local *l, const char *name)
{
	char dir[PATH_MAX], root[PATH_MAX], ignore[256];
	struct sb_meta m;
	int fd, err;
	bool done = false;

	sb_dir(l, name, NULL, dir, sizeof(dir));
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return;
	if (flock(fd, LOCK_EX | LOCK_NB)) { /* being created right now */
		close(fd);
		return;
	}
	err = meta_read(l, name, &m);
	if (err == 0 && strcmp(m.state, "creating") != 0) {
		/* A start a kill interrupted launched an init the metadata
		 * does not name (it still names the old, dead one): the
		 * sandbox would read "stopped" while processes run in it.
		 * Finish the stop instead: start works again from there. */
		if (!init_alive(&m) && !cg_empty(l, name)) {
			sb_kill_all(l, name, 0, sb_now() + l->be->timeout,
				    ignore, sizeof(ignore));
			api_log("sandbox '%s': processes without "
				"a recorded init (an interrupted start); "
				"stopped them", name);
		}
		/* after a reboot: the overlay again, so that file operations
		 * find it (they never mount it themselves) */
		sb_dir(l, name, "root", root, sizeof(root));
		if (err == 0 && !is_overlay(root)) {
			pthread_mutex_lock(&l->mount_lock);
			if (sb_mount_locked(l, &m, ignore, sizeof(ignore)))
				api_log("sandbox '%s': %s",
					name, ignore);
			pthread_mutex_unlock(&l->mount_lock);
		}
		close(fd);
		return; /* made and recorded: nothing more to recover */
	}
	sb_dir(l, name, "root", root, sizeof(root));
	if (err == 0 && init_alive(&m) && is_overlay(root)) {
		snprintf(m.state, sizeof(m.state), "running");
		done = meta_write(l, &m) == 0;
		if (done)
			api_log("sandbox '%s': its create was "
				"interrupted after start; finished it", name);
	}
	if (!done) {
		char trash[PATH_MAX];
		static unsigned seq;

		sb_kill_all(l, name, 0, sb_now() + l->be->timeout, ignore,
			    sizeof(ignore));
		sb_umount(l, name);
		snprintf(trash, sizeof(trash), "%s/tmp/destroy-%s-%d-%u",
			 l->datadir, name, (int)getpid(),
			 __atomic_add_fetch(&seq, 1, __ATOMIC_RELAXED));
		if (rename(dir, trash) == 0)
			rm_rf(trash);
		local_cg_remove(l, name);
		api_log("sandbox '%s': its create was "
			"interrupted; removed what was made", name);
	}
	close(fd);
}

void local_recover(struct local *l)
{
	char path[PATH_MAX];
	struct dirent *de;
	DIR *d;

	snprintf(path, sizeof(path), "%s/tmp", l->datadir);
	mkdir(path, 0700);
	snprintf(path, sizeof(path), "%s/sandboxes", l->datadir);
	d = opendir(path);
	if (!d)
		return;
	while ((de = readdir(d)))
		if (!local_name_check(de->d_name))
			recover_one(l, de->d_name);
	closedir(d);
}

/* the sandbox a killed sbxfs froze for a snapshot (DIR/thaw) runs again:
 * it was running before, and pause is not recorded anywhere else */
static void thaw_marked(struct local *l, const char *snapdir)
{
	char path[PATH_MAX], name[256] = "";
	FILE *f;

	snprintf(path, sizeof(path), "%s/thaw", snapdir);
	f = fopen(path, "re");
	if (!f)
		return;
	if (!fgets(name, sizeof(name), f))
		name[0] = 0;
	fclose(f);
	if (name[0] && !local_name_check(name))
		cg_set(l, name, "THAWED");
}

void local_sweep_trash(struct local *l)
{
	char dir[PATH_MAX], *t;
	struct dirent *d;
	DIR *dp;

	snprintf(dir, sizeof(dir), "%s/tmp", l->datadir);
	dp = opendir(dir);
	if (!dp)
		return;
	while ((d = readdir(dp))) {
		/* destroyed sandboxes and templates, and the half copies of
		 * snapshots a killed sbxfs left (this runs at start-up only,
		 * before any snapshot of ours can be under way) */
		if (strncmp(d->d_name, "destroy-", 8) != 0 &&
		    strncmp(d->d_name, "snap-", 5) != 0)
			continue;
		if (asprintf(&t, "%s/%s", dir, d->d_name) < 0)
			break;
		if (d->d_name[0] == 's')
			thaw_marked(l, t);
		if (local_submit(l, trash_work, t))
			free(t);
	}
	closedir(dp);
}

/* Destroy, once every process of the sandbox is gone. */
static int destroy_rest(struct local *l, struct sb_meta *m, char *msg,
			size_t msglen)
{
	char dir[PATH_MAX], trash[PATH_MAX];
	static unsigned seq;
	int err;

	local_exec_reap(l, m->name);
	local_exec_forget(l, m->name);
	sb_umount(l, m->name);
	sb_dir(l, m->name, NULL, dir, sizeof(dir));
	/* vanish from listings at once, then remove at leisure */
	snprintf(trash, sizeof(trash), "%s/tmp", l->datadir);
	mkdir(trash, 0700);
	snprintf(trash, sizeof(trash), "%s/tmp/destroy-%s-%d-%u", l->datadir,
		 m->name, (int)getpid(),
		 __atomic_add_fetch(&seq, 1, __ATOMIC_RELAXED));
	if (rename(dir, trash)) {
		err = -errno;
		snprintf(msg, msglen, "cannot remove sandbox '%s': %s",
			 m->name, strerror(errno));
		return err;
	}
	/* The sandbox is gone for every observer now; removing its files
	 * can take seconds for a big layer, so it happens after the reply
	 * (trash left by a crash is swept at the next start-up). */
	char *t = strdup(trash);
	if (!t || local_submit(l, trash_work, t)) {
		free(t);
		rm_rf(trash);
	}
	local_cg_remove(l, m->name);
	return 0;
}

/* Destroy: thaw, SIGKILL every process of the cgroup, wait (by
 * returning N > 0, like stop) until it is empty, then the rest. */
static int destroy_step(struct local *l, struct verb_job *j, char *msg,
			size_t msglen)
{
	if (!cg_empty(l, j->name)) {
		if (sb_now() >= j->end) {
			snprintf(msg, msglen, "processes of sandbox '%s' did "
				 "not end within the request timeout", j->name);
			return -ETIMEDOUT;
		}
		cg_kill(l, j->name, SIGKILL);
		return 20;
	}
	return destroy_rest(l, &j->m, msg, msglen);
}

static int destroy_begin(struct local *l, struct verb_job *j, char *msg,
			 size_t msglen)
{
	j->end = sb_now() + l->be->timeout;
	j->step = 1;
	cg_set(l, j->name, "THAWED"); /* frozen tasks cannot die */
	cg_kill(l, j->name, SIGKILL);
	return destroy_step(l, j, msg, msglen);
}

static int verb_work(struct local *l, void *arg, int err)
{
	struct verb_job *j = arg;
	char msg[512] = "";
	struct sb_meta *m = &j->m;

	if (err) {
		/* waited its whole request timeout behind other work */
		snprintf(msg, sizeof(msg), "sandbox '%s' is busy with another "
			 "operation", j->name);
		goto out;
	}
	if (j->step) { /* a verb that waits, called again */
		if (j->verb == API_VERB_STOP)
			err = stop_step(l, j, msg, sizeof(msg));
		else if (j->verb == API_VERB_DESTROY)
			err = destroy_step(l, j, msg, sizeof(msg));
		else
			err = pause_step(l, j, msg, sizeof(msg));
		if (err > 0)
			return err;
		goto release;
	}
	err = meta_read(l, j->name, m);
	if (err) {
		snprintf(msg, sizeof(msg), "no sandbox named '%s'", j->name);
		err = -ENOENT;
		goto release;
	}
	switch (j->verb) {
	case API_VERB_START:
		err = verb_start(l, m, msg, sizeof(msg));
		break;
	case API_VERB_STOP:
		err = stop_begin(l, j, msg, sizeof(msg));
		if (!err)
			err = stop_step(l, j, msg, sizeof(msg));
		if (err > 0)
			return err;
		break;
	case API_VERB_PAUSE:
	case API_VERB_RESUME:
		err = pause_begin(l, j, msg, sizeof(msg));
		if (err > 0)
			return err;
		break;
	case API_VERB_PING:
		if (sb_state(l, m) != API_ST_RUNNING) {
			snprintf(msg, sizeof(msg), "sandbox '%s' is %s",
				 j->name, api_state_name(sb_state(l, m)));
			err = -EBUSY;
		}
		break;
	case API_VERB_SNAPSHOT:
		err = verb_snapshot(l, m, j->arg, msg, sizeof(msg));
		break;
	case API_VERB_DESTROY:
		err = destroy_begin(l, j, msg, sizeof(msg));
		if (err > 0)
			return err;
		break;
	default:
		snprintf(msg, sizeof(msg), "unknown verb");
		err = -EINVAL;
	}
release:
	local_busy_release(l, j->name);
out:
	if (err && !msg[0])
		snprintf(msg, sizeof(msg), "%s %s: %s", api_verb_name(j->verb),
			 j->name, api_strerror(err));
	j->cb(j->ud, err, err ? msg : NULL);
	free(j);
	return 0;
}

void local_sb_verb(struct api_backend *be, const char *id,
		   enum api_verb verb, const char *arg, api_done_fn cb,
		   void *ud)
{
	struct local *l = local_of(be);
	struct verb_job *j;
	char msg[128];
	int err;

	if (local_name_check(id)) {
		snprintf(msg, sizeof(msg), "no sandbox named '%.63s'", id);
		cb(ud, -ENOENT, msg);
		return;
	}
	if (arg && strlen(arg) >= sizeof(j->arg)) {
		cb(ud, -EINVAL, "verb argument too long");
		return;
	}
	j = calloc(1, sizeof(*j));
	if (!j) {
		cb(ud, -ENOMEM, api_strerror(ENOMEM));
		return;
	}
	j->be = be;
	snprintf(j->name, sizeof(j->name), "%s", id);
	j->verb = verb;
	snprintf(j->arg, sizeof(j->arg), "%s", arg ? arg : "");
	j->cb = cb;
	j->ud = ud;
	err = local_submit_key(l, j->name, false, verb_work, j);
	if (err) {
		free(j);
		cb(ud, err, api_strerror(err));
	}
}

/* ---- metrics ------------------------------------------------------------ */

#define DU_MAX_ENTRIES 1000000

static pthread_mutex_t du_mu = PTHREAD_MUTEX_INITIALIZER;
static long long du_bytes, du_files;

static int du_cb(const char *path, const struct stat *st, int type,
		 struct FTW *ftw)
{
	(void)path;
	(void)type;
	(void)ftw;
	du_bytes += (long long)st->st_blocks * 512;
	du_files++;
	return du_files >= DU_MAX_ENTRIES; /* stop: a lower bound */
}

struct metrics_job {
	char name[64];
	api_str_fn cb;
	void *ud;
};

static void metrics_work(struct local *l, void *arg)
{
	struct metrics_job *j = arg;
	char upper[PATH_MAX], msg[160], *text = NULL;
	size_t len = 0;
	struct sb_meta m;
	FILE *f;
	int r;

	if (meta_read(l, j->name, &m)) {
		snprintf(msg, sizeof(msg), "no sandbox named '%s'", j->name);
		j->cb(j->ud, -ENOENT, msg, NULL);
		free(j);
		return;
	}
	f = open_memstream(&text, &len);
	if (!f) {
		j->cb(j->ud, -ENOMEM, api_strerror(ENOMEM), NULL);
		free(j);
		return;
	}
	fprintf(f, "state: %s\n", api_state_name(sb_state(l, &m)));
	local_cg_metrics(l, j->name, f);
	if (m.lim.cpus > 0)
		fprintf(f, "cpus_limit: %g\n", m.lim.cpus);
	/* the writable layer: what the sandbox added or changed on disk */
	sb_dir(l, j->name, "upper", upper, sizeof(upper));
	pthread_mutex_lock(&du_mu);
	du_bytes = du_files = 0;
	r = nftw(upper, du_cb, 32, FTW_PHYS | FTW_MOUNT);
	fprintf(f, "disk_bytes: %lld\ndisk_files: %lld%s\n", du_bytes,
		du_files, r > 0 ? " (stopped counting)" : "");
	pthread_mutex_unlock(&du_mu);
	fclose(f);
	j->cb(j->ud, 0, NULL, text ? text : "");
	free(text);
	free(j);
}

void local_sb_metrics(struct api_backend *be, const char *id, api_str_fn cb,
		      void *ud)
{
	struct local *l = local_of(be);
	struct metrics_job *j;
	int err;

	if (local_name_check(id)) {
		cb(ud, -ENOENT, "no such sandbox", NULL);
		return;
	}
	j = calloc(1, sizeof(*j));
	if (!j) {
		cb(ud, -ENOMEM, api_strerror(ENOMEM), NULL);
		return;
	}
	snprintf(j->name, sizeof(j->name), "%s", id);
	j->cb = cb;
	j->ud = ud;
	err = local_submit(l, metrics_work, j);
	if (err) {
		free(j);
		cb(ud, err, api_strerror(err), NULL);
	}
}

/* ---- create ------------------------------------------------------------- */

struct create_job {
	struct sb_meta m;
	api_sandbox_fn cb;
	void *ud;
};

static int tpl_layers(struct local *l, const char *tpl, struct sb_meta *m,
		      char *msg, size_t msglen)
{
	char path[PATH_MAX], buf[8192];
	cJSON *o;
	int err;

	tpl_dir(l, tpl, "meta.json", path, sizeof(path));
	err = read_small(path, buf, sizeof(buf));
	if (err < 0) {
		snprintf(msg, msglen, "no template named '%s'", tpl);
		return -ENOENT;
	}
	o = cJSON_Parse(buf);
	if (!o) {
		snprintf(msg, msglen, "template '%s' is damaged", tpl);
		return -EIO;
	}
	err = json_layers(o, m->layers, &m->nlayers);
	cJSON_Delete(o);
	if (err || m->nlayers == 0) {
		snprintf(msg, msglen, "template '%s' is damaged", tpl);
		return -EIO;
	}
	return 0;
}

/* The root image of a new sandbox: -o image=DIR, else
 * DATADIR/images/debian-12, else the system one.  An image is complete
 * when its meta.json exists (tools/mkimage.sh writes it last). */
static int sb_image(struct local *l, char *buf, size_t len, char *msg,
		    size_t msglen)
{
	char cand[3][1000], path[PATH_MAX + 16];
	struct stat st;
	int n = 0;

	if (l->image[0]) {
		snprintf(cand[n++], sizeof(cand[0]), "%.990s", l->image);
	} else {
		snprintf(cand[n++], sizeof(cand[0]), "%.960s/images/%s",
			 l->datadir, LOCAL_IMAGE_NAME);
		snprintf(cand[n++], sizeof(cand[0]), "%s/images/%s",
			 LOCAL_DEFAULT_DATADIR, LOCAL_IMAGE_NAME);
	}
	for (int i = 0; i < n; i++) {
		snprintf(path, sizeof(path), "%s/root", cand[i]);
		if (stat(path, &st) || !S_ISDIR(st.st_mode))
			continue;
		snprintf(path, sizeof(path), "%s/meta.json", cand[i]);
		if (!l->image[0] && stat(path, &st))
			continue; /* unfinished build */
		snprintf(buf, len, "%.1000s", cand[i]);
		return 0;
	}
	snprintf(msg, msglen, "no root image for new sandboxes at %.200s: "
		 "build it with 'sbxfs-mkimage %.200s' (tools/mkimage.sh)",
		 cand[0], cand[0]);
	return -ENOENT;
}

static uint64_t sb_hash(const char *s)
{
	uint64_t h = 1469598103934665603ull;

	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 1099511628211ull;
	}
	return h;
}

/* A host ID range of its own for a new sandbox: the first slot, from a
 * point that depends on the data dir (so two data dirs rarely meet), that
 * no sandbox of this data dir holds.  Recorded in NAME/idbase at once (and
 * in meta.json), under id_lock, so concurrent creates never share one. */
static int sb_alloc_ids(struct local *l, const char *name, unsigned *base,
			char *msg, size_t msglen)
{
	char path[PATH_MAX], buf[32];
	unsigned char *used = calloc(LOCAL_ID_SLOTS / 8 + 1, 1);
	unsigned start, slot = LOCAL_ID_SLOTS;
	struct dirent *de;
	DIR *d;
	int err = 0;

	if (!used)
		return -ENOMEM;
	pthread_mutex_lock(&l->id_lock);
	snprintf(path, sizeof(path), "%s/sandboxes", l->datadir);
	d = opendir(path);
	while (d && (de = readdir(d))) {
		if (local_name_check(de->d_name) || !strcmp(de->d_name, name))
			continue;
		sb_dir(l, de->d_name, "idbase", path, sizeof(path));
		if (read_small(path, buf, sizeof(buf)) <= 0)
			continue;
		unsigned long v = strtoul(buf, NULL, 10);
		if (v >= LOCAL_ID_FIRST &&
		    (v - LOCAL_ID_FIRST) / LOCAL_ID_RANGE < LOCAL_ID_SLOTS) {
			unsigned k = (unsigned)((v - LOCAL_ID_FIRST) /
						LOCAL_ID_RANGE);
			used[k / 8] |= (unsigned char)(1u << (k % 8));
		}
	}
	if (d)
		closedir(d);
	start = (unsigned)(sb_hash(l->datadir) % LOCAL_ID_SLOTS);
	for (unsigned i = 0; i < LOCAL_ID_SLOTS; i++) {
		unsigned k = (start + i) % LOCAL_ID_SLOTS;
		if (!(used[k / 8] & (1u << (k % 8)))) {
			slot = k;
			break;
		}
	}
	free(used);
	if (slot == LOCAL_ID_SLOTS) {
		snprintf(msg, msglen, "no free user-namespace ID range left");
		err = -ENOSPC;
		goto out;
	}
	*base = LOCAL_ID_FIRST + slot * LOCAL_ID_RANGE;
	snprintf(buf, sizeof(buf), "%u\n", *base);
	sb_dir(l, name, "idbase", path, sizeof(path));
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0 || write(fd, buf, strlen(buf)) != (ssize_t)strlen(buf)) {
		err = errno ? -errno : -EIO;
		snprintf(msg, msglen, "cannot record the ID range: %s",
			 strerror(-err));
	}
	if (fd >= 0)
		close(fd);
out:
	pthread_mutex_unlock(&l->id_lock);
	return err;
}

static int create_work(struct local *l, void *arg, int err)
{
	struct create_job *j = arg;
	struct sb_meta *m = &j->m;
	char dir[PATH_MAX], sub[PATH_MAX], msg[512] = "";
	static const char *const subs[] = {"upper", "work", "root"};
	bool made = false;
	int lockfd = -1;

	if (err) {
		/* waited its whole request timeout behind other work */
		snprintf(msg, sizeof(msg), "sandbox '%s' is busy", m->name);
		goto out;
	}
	sb_dir(l, m->name, NULL, dir, sizeof(dir));
	if (mkdir(dir, 0700) == 0) {
		/* held until the create is over: a recovery pass (another
		 * sbxfs starting on this data dir) leaves the sandbox alone
		 * while we live, and takes over if we die (kill -9) */
		lockfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (lockfd >= 0)
			flock(lockfd, LOCK_EX);
	} else {
		err = -errno;
		if (err == -EEXIST)
			snprintf(msg, sizeof(msg), "sandbox '%s' already "
				 "exists", m->name);
		else
			snprintf(msg, sizeof(msg), "cannot create %.256s: %s",
				 dir, strerror(errno));
		goto release;
	}
	made = true;
	if (m->template[0]) {
		err = tpl_layers(l, m->template, m, msg, sizeof(msg));
		if (err)
			goto release;
	}
	err = sb_image(l, m->image, sizeof(m->image), msg, sizeof(msg));
	if (!err)
		err = sb_alloc_ids(l, m->name, &m->uid_base, msg, sizeof(msg));
	if (err)
		goto release;
	for (size_t i = 0; i < 3; i++) {
		sb_dir(l, m->name, subs[i], sub, sizeof(sub));
		if (mkdir(sub, 0755)) {
			err = -errno;
			snprintf(msg, sizeof(msg), "cannot create %.256s: %s",
				 sub, strerror(errno));
			goto release;
		}
	}
	if (m->template[0]) {
		/* flattened template: its tree seeds the writable layer
		 * (reflinked where the filesystem can) */
		char src[PATH_MAX];
		tpl_dir(l, m->template, "root", src, sizeof(src));
		sb_dir(l, m->name, "upper", sub, sizeof(sub));
		const char *argv[] = {"cp", "-a", "--reflink=auto", "-T",
				      src, sub, NULL};
		err = run_tool(argv, l->be->timeout, msg, sizeof(msg));
		if (err)
			goto release;
		/* templates hold 0-based owners: into this sandbox's range */
		err = local_id_shift(sub, 0, m->uid_base);
		if (err) {
			snprintf(msg, sizeof(msg), "cannot give the template's "
				 "files to the sandbox's user namespace: %s",
				 strerror(-err));
			goto release;
		}
	}
	/* "/" inside belongs to the sandbox's root */
	sb_dir(l, m->name, "upper", sub, sizeof(sub));
	if (chown(sub, m->uid_base, m->uid_base)) {
		err = -errno;
		snprintf(msg, sizeof(msg), "cannot chown %.256s: %s", sub,
			 strerror(errno));
		goto release;
	}
	m->created = time(NULL);
	snprintf(m->state, sizeof(m->state), "creating");
	err = meta_write(l, m);
	if (err) {
		snprintf(msg, sizeof(msg), "cannot write sandbox metadata: %s",
			 strerror(-err));
		goto release;
	}
	pthread_mutex_lock(&l->mount_lock);
	err = sb_mount_locked(l, m, msg, sizeof(msg));
	pthread_mutex_unlock(&l->mount_lock);
	if (err)
		goto release;
	err = sb_launch(l, m, msg, sizeof(msg));
	if (err)
		goto release;
	snprintf(m->state, sizeof(m->state), "running");
	err = meta_write(l, m);
	if (err)
		snprintf(msg, sizeof(msg), "cannot write sandbox metadata: %s",
			 strerror(-err));
release:
	if (err && made) {
		char ignore[128];
		sb_kill_all(l, m->name, 0, sb_now() + l->be->timeout, ignore,
			    sizeof(ignore));
		sb_umount(l, m->name);
		rm_rf(dir);
		local_cg_remove(l, m->name);
	}
	if (lockfd >= 0)
		close(lockfd);
	local_busy_release(l, m->name);
out:
	if (err) {
		j->cb(j->ud, err, msg[0] ? msg : api_strerror(err), NULL);
	} else {
		struct sb_rec r;
		sb_fill(l, m, &r);
		j->cb(j->ud, 0, NULL, &r.sb);
		free(r.json);
	}
	free(j);
	return 0;
}

/* "512M", "2G", "1048576": bytes, or -1. */
static long long sb_size(const char *v)
{
	char *e;
	long long n;

	errno = 0;
	n = strtoll(v, &e, 10);
	if (errno || e == v || n < 0)
		return -1;
	switch (*e) {
	case 'k': case 'K': n <<= 10; e++; break;
	case 'm': case 'M': n <<= 20; e++; break;
	case 'g': case 'G': n <<= 30; e++; break;
	case 't': case 'T': n <<= 40; e++; break;
	default: break;
	}
	if (*e == 'i' && e[-1] != '\0' && (e[1] == 'B' || e[1] == 'b'))
		e += 2;
	else if (*e == 'B' || *e == 'b')
		e++;
	return *e ? -1 : n;
}

void local_sb_create(struct api_backend *be, const char *name,
		     const struct api_kv *kv, size_t nkv, api_sandbox_fn cb,
		     void *ud)
{
	struct local *l = local_of(be);
	struct create_job *j;
	char msg[256];
	int err;

	if (!name || local_name_check(name)) {
		snprintf(msg, sizeof(msg), "bad sandbox name '%.63s': use "
			 "1-63 of [A-Za-z0-9._-], not '.', '..' or 'ctl'",
			 name ? name : "");
		cb(ud, -EINVAL, msg, NULL);
		return;
	}
	j = calloc(1, sizeof(*j));
	if (!j) {
		cb(ud, -ENOMEM, api_strerror(ENOMEM), NULL);
		return;
	}
	snprintf(j->m.name, sizeof(j->m.name), "%s", name);
	for (size_t i = 0; i < nkv; i++) {
		const char *k = kv[i].key, *v = kv[i].value ? kv[i].value : "";
		if (!strcmp(k, "template")) {
			if (*v && local_name_check(v)) {
				snprintf(msg, sizeof(msg), "no template named "
					 "'%.63s'", v);
				err = -ENOENT;
				goto bad;
			}
			snprintf(j->m.template, sizeof(j->m.template), "%s", v);
		} else if (!strcmp(k, "tag")) {
			err = local_tags_add(j->m.tags, sizeof(j->m.tags), v,
					     msg, sizeof(msg));
			if (err)
				goto bad;
		} else if (!strcmp(k, "network")) {
			if (strcmp(v, "host") && strcmp(v, "none")) {
				snprintf(msg, sizeof(msg), "network=%.63s: "
					 "want 'none' or 'host'", v);
				err = -EINVAL;
				goto bad;
			}
			j->m.net_host = !strcmp(v, "host");
		} else if (!strcmp(k, "cpus")) {
			char *e;
			errno = 0;
			double c = strtod(v, &e);
			if (errno || e == v || *e || !(c > 0) || c > 4096) {
				snprintf(msg, sizeof(msg), "cpus=%.63s: want a "
					 "number of CPUs above 0, like 1 or "
					 "0.5", v);
				err = -EINVAL;
				goto bad;
			}
			j->m.lim.cpus = c;
		} else if (!strcmp(k, "memory")) {
			long long b = sb_size(v);
			if (b < (16ll << 20)) {
				snprintf(msg, sizeof(msg), "memory=%.63s: want a "
					 "size of at least 16M, like 512M or "
					 "2G", v);
				err = -EINVAL;
				goto bad;
			}
			j->m.lim.memory = b;
		} else if (!strcmp(k, "pids")) {
			char *e;
			errno = 0;
			long n = strtol(v, &e, 10);
			if (errno || e == v || *e || n < 8 || n > 4194304) {
				snprintf(msg, sizeof(msg), "pids=%.63s: want a "
					 "number of processes, at least 8", v);
				err = -EINVAL;
				goto bad;
			}
			j->m.lim.pids = n;
		} else {
			snprintf(msg, sizeof(msg), "local sandboxes have no "
				 "setting '%.63s' (known: template, network, "
				 "cpus, memory, pids, tag)", k);
			err = -EINVAL;
			goto bad;
		}
	}
	if (!j->m.lim.pids)
		j->m.lim.pids = LOCAL_DEFAULT_PIDS;
	if (!j->m.lim.memory) {
		/* half the host's memory: one sandbox can never starve it */
		j->m.lim.memory = local_cg_host_memory() / 2;
		if (j->m.lim.memory < (256ll << 20))
			j->m.lim.memory = 256ll << 20;
	}
	j->cb = cb;
	j->ud = ud;
	err = local_submit_key(l, j->m.name, true, create_work, j);
	if (err) {
		snprintf(msg, sizeof(msg), "%s", api_strerror(err));
		goto bad;
	}
	return;
bad:
	free(j);
	cb(ud, err, msg, NULL);
}
