/* cgroup.c - one cgroup per local sandbox: freezer (pause/resume, stop,
 * destroy) and resource limits (cpus, memory, pids), on cgroup v1 (one
 * directory per controller hierarchy) or cgroup v2 (one unified tree).
 *
 * v1: /sys/fs/cgroup/{freezer,memory,pids,cpu}/sbxfs/HASH-NAME; the freezer
 *     is required, the other controllers are used where mounted.
 * v2: /sys/fs/cgroup/sbxfs/HASH-NAME with memory, pids and cpu enabled in
 *     the parents' cgroup.subtree_control; cgroup.freeze pauses.
 * HASH identifies the data dir, so two data dirs never share a cgroup.
 * Every process of a sandbox (its PID 1 and each command) joins all of
 * them before it runs sandbox code: a fork bomb meets pids.max, a memory
 * hog meets the memory limit and the OOM killer acts inside the cgroup.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#include "api/local/local_core.h"

#define CG_ROOT "/sys/fs/cgroup"
#define CG2_MAGIC 0x63677270

static const char *const cg1_ctrl[] = {"freezer", "memory", "pids", "cpu",
				       "cpuacct"};

static int cg_write(const char *path, const char *s)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	int err = 0;

	if (fd < 0)
		return -errno;
	if (write(fd, s, strlen(s)) < 0)
		err = -errno;
	close(fd);
	return err;
}

static int cg_read(const char *path, char *buf, size_t cap)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = read(fd, buf, cap - 1);
	close(fd);
	if (n < 0)
		return -errno;
	buf[n] = '\0';
	return (int)n;
}

/* Directory of controller `i` (v1) or the unified one (v2) for `name`. */
static int cg_path(struct local *l, int i, const char *name,
		   const char *file, char *buf, size_t len)
{
	int n;

	if (l->cg_v2)
		n = snprintf(buf, len, "%s/sbxfs/%.16s-%s%s%s", CG_ROOT,
			     l->hash, name, file ? "/" : "", file ? file : "");
	else
		n = snprintf(buf, len, "%s/%s/sbxfs/%.16s-%s%s%s", CG_ROOT,
			     cg1_ctrl[i], l->hash, name, file ? "/" : "",
			     file ? file : "");
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

static int cg_count(struct local *l)
{
	return l->cg_v2 ? 1 : LOCAL_CG_MAX;
}

static bool cg_have(struct local *l, int i)
{
	return l->cg_v2 ? i == 0 : l->cg_ctrl[i];
}

int local_cg_init(struct local *l, char *msg, size_t msglen)
{
	struct statfs sf;
	char path[PATH_MAX];

	l->cg_v2 = statfs(CG_ROOT, &sf) == 0 && sf.f_type == CG2_MAGIC;
	if (l->cg_v2) {
		/* controllers must be enabled on every level above a leaf */
		cg_write(CG_ROOT "/cgroup.subtree_control",
			 "+memory +pids +cpu");
		snprintf(path, sizeof(path), "%s/sbxfs", CG_ROOT);
		if (mkdir(path, 0755) && errno != EEXIST) {
			snprintf(msg, msglen, "the local runtime needs a "
				 "writable cgroup v2 tree (%s): %s", path,
				 strerror(errno));
			return -errno;
		}
		snprintf(path, sizeof(path),
			 "%s/sbxfs/cgroup.subtree_control", CG_ROOT);
		cg_write(path, "+memory +pids +cpu");
		return 0;
	}
	for (int i = 0; i < LOCAL_CG_MAX; i++) {
		snprintf(path, sizeof(path), "%s/%s/sbxfs", CG_ROOT,
			 cg1_ctrl[i]);
		l->cg_ctrl[i] = mkdir(path, 0755) == 0 || errno == EEXIST;
		if (!l->cg_ctrl[i] && i == 0) {
			snprintf(msg, msglen, "the local runtime needs the "
				 "cgroup freezer (%s): %s", path,
				 strerror(errno));
			return -errno;
		}
	}
	return 0;
}

long long local_cg_host_memory(void)
{
	long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);

	return pages > 0 && psz > 0 ? (long long)pages * psz : 0;
}

int local_cg_create(struct local *l, const char *name,
		    const struct local_limits *lim, char *msg, size_t msglen)
{
	char path[PATH_MAX], val[64];
	int err;

	for (int i = 0; i < cg_count(l); i++) {
		if (!cg_have(l, i))
			continue;
		cg_path(l, i, name, NULL, path, sizeof(path));
		if (mkdir(path, 0755) && errno != EEXIST) {
			err = -errno;
			snprintf(msg, msglen, "cannot create cgroup %.256s: %s",
				 path, strerror(errno));
			return err;
		}
	}
	/* limits: each written where its controller exists */
	if (l->cg_v2) {
		cg_path(l, 0, name, "memory.max", path, sizeof(path));
		snprintf(val, sizeof(val), "%lld", lim->memory);
		err = cg_write(path, val);
		cg_path(l, 0, name, "memory.swap.max", path, sizeof(path));
		cg_write(path, "0");
		if (!err) {
			cg_path(l, 0, name, "pids.max", path, sizeof(path));
			snprintf(val, sizeof(val), "%ld", lim->pids);
			err = cg_write(path, val);
		}
		if (!err) {
			cg_path(l, 0, name, "cpu.max", path, sizeof(path));
			if (lim->cpus > 0)
				snprintf(val, sizeof(val), "%ld 100000",
					 (long)(lim->cpus * 100000));
			else
				snprintf(val, sizeof(val), "max 100000");
			err = cg_write(path, val);
		}
	} else {
		err = 0;
		if (l->cg_ctrl[LOCAL_CG_MEMORY]) {
			cg_path(l, LOCAL_CG_MEMORY, name,
				"memory.limit_in_bytes", path, sizeof(path));
			snprintf(val, sizeof(val), "%lld", lim->memory);
			err = cg_write(path, val);
			/* no swap beyond the limit, where swap accounting
			 * exists (absent without swapaccount=1) */
			cg_path(l, LOCAL_CG_MEMORY, name,
				"memory.memsw.limit_in_bytes", path,
				sizeof(path));
			cg_write(path, val);
		}
		if (!err && l->cg_ctrl[LOCAL_CG_PIDS]) {
			cg_path(l, LOCAL_CG_PIDS, name, "pids.max", path,
				sizeof(path));
			snprintf(val, sizeof(val), "%ld", lim->pids);
			err = cg_write(path, val);
		}
		if (!err && l->cg_ctrl[LOCAL_CG_CPU]) {
			cg_path(l, LOCAL_CG_CPU, name, "cpu.cfs_period_us",
				path, sizeof(path));
			cg_write(path, "100000");
			cg_path(l, LOCAL_CG_CPU, name, "cpu.cfs_quota_us",
				path, sizeof(path));
			snprintf(val, sizeof(val), "%ld",
				 lim->cpus > 0 ? (long)(lim->cpus * 100000)
					       : -1L);
			err = cg_write(path, val);
		}
	}
	if (err) {
		snprintf(msg, msglen, "cannot set the resource limits of "
			 "'%s' (%s): %s", name, path, strerror(-err));
		return err;
	}
	return 0;
}

int local_cg_procs_open(struct local *l, const char *name, int *fds,
			int max)
{
	char path[PATH_MAX];
	int n = 0;

	for (int i = 0; i < cg_count(l) && n < max; i++) {
		if (!cg_have(l, i))
			continue;
		if (cg_path(l, i, name, "cgroup.procs", path, sizeof(path)))
			goto fail;
		fds[n] = open(path, O_WRONLY | O_CLOEXEC);
		if (fds[n] < 0)
			goto fail;
		n++;
	}
	return n;
fail: {
	int e = errno ? -errno : -ENAMETOOLONG;
	while (n > 0)
		close(fds[--n]);
	return e;
}
}

int local_cg_freeze(struct local *l, const char *name, bool frozen)
{
	char path[PATH_MAX];

	if (l->cg_v2) {
		cg_path(l, 0, name, "cgroup.freeze", path, sizeof(path));
		return cg_write(path, frozen ? "1" : "0");
	}
	cg_path(l, 0, name, "freezer.state", path, sizeof(path));
	return cg_write(path, frozen ? "FROZEN" : "THAWED");
}

int local_cg_state(struct local *l, const char *name, char *st, size_t len)
{
	char path[PATH_MAX], buf[512];
	int n;

	if (l->cg_v2) {
		cg_path(l, 0, name, "cgroup.freeze", path, sizeof(path));
		n = cg_read(path, buf, sizeof(buf));
		if (n < 0)
			return n;
		if (buf[0] != '1') {
			snprintf(st, len, "THAWED");
			return 0;
		}
		cg_path(l, 0, name, "cgroup.events", path, sizeof(path));
		n = cg_read(path, buf, sizeof(buf));
		if (n < 0)
			return n;
		snprintf(st, len, "%s", strstr(buf, "frozen 1") ? "FROZEN"
								 : "FREEZING");
		return 0;
	}
	cg_path(l, 0, name, "freezer.state", path, sizeof(path));
	n = cg_read(path, st, len);
	if (n < 0)
		return n;
	st[strcspn(st, "\n")] = '\0';
	return 0;
}

int local_cg_pids(struct local *l, const char *name, pid_t *pids, int max)
{
	char path[PATH_MAX];
	FILE *f;
	long pid;
	int n = 0;

	cg_path(l, 0, name, "cgroup.procs", path, sizeof(path));
	f = fopen(path, "re");
	if (!f)
		return 0;
	while (n < max && fscanf(f, "%ld", &pid) == 1)
		pids[n++] = (pid_t)pid;
	fclose(f);
	return n;
}

void local_cg_remove(struct local *l, const char *name)
{
	char path[PATH_MAX];

	for (int i = 0; i < cg_count(l); i++) {
		if (!cg_have(l, i))
			continue;
		cg_path(l, i, name, NULL, path, sizeof(path));
		/* a dying task leaves its cgroup a moment after it exits */
		for (int k = 0; k < 50 && rmdir(path) && errno == EBUSY; k++) {
			struct timespec ts = {0, 20000000L};
			nanosleep(&ts, NULL);
		}
	}
}

static long long cg_num(struct local *l, int ctrl, const char *name,
		       const char *file)
{
	char path[PATH_MAX], buf[64];

	if (!cg_have(l, l->cg_v2 ? 0 : ctrl))
		return -1;
	if (cg_path(l, ctrl, name, file, path, sizeof(path)) ||
	    cg_read(path, buf, sizeof(buf)) <= 0)
		return -1;
	if (!strncmp(buf, "max", 3))
		return -2;
	return atoll(buf);
}

/* "usage_usec N" style field of a flat keyed file (v2 cpu.stat). */
static long long cg_key(struct local *l, const char *name, const char *file,
			const char *key)
{
	char path[PATH_MAX], buf[2048], *p;
	size_t kl = strlen(key);

	if (cg_path(l, 0, name, file, path, sizeof(path)) ||
	    cg_read(path, buf, sizeof(buf)) <= 0)
		return -1;
	for (p = buf; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
		if (!strncmp(p, key, kl) && p[kl] == ' ')
			return atoll(p + kl + 1);
	return -1;
}

static void put(FILE *out, const char *key, long long v)
{
	if (v == -2)
		fprintf(out, "%s: max\n", key);
	else if (v >= 0)
		fprintf(out, "%s: %lld\n", key, v);
}

void local_cg_metrics(struct local *l, const char *name, FILE *out)
{
	long long cpu_ns;

	if (l->cg_v2) {
		long long us = cg_key(l, name, "cpu.stat", "usage_usec");
		cpu_ns = us >= 0 ? us * 1000 : -1;
		put(out, "memory_bytes", cg_num(l, 0, name, "memory.current"));
		put(out, "memory_peak_bytes",
		    cg_num(l, 0, name, "memory.peak"));
		put(out, "memory_limit_bytes", cg_num(l, 0, name, "memory.max"));
		put(out, "pids", cg_num(l, 0, name, "pids.current"));
		put(out, "pids_limit", cg_num(l, 0, name, "pids.max"));
		put(out, "oom_kills", cg_key(l, name, "memory.events",
					     "oom_kill"));
	} else {
		cpu_ns = cg_num(l, LOCAL_CG_CPUACCT, name, "cpuacct.usage");
		put(out, "memory_bytes", cg_num(l, LOCAL_CG_MEMORY, name,
						"memory.usage_in_bytes"));
		put(out, "memory_peak_bytes",
		    cg_num(l, LOCAL_CG_MEMORY, name,
			   "memory.max_usage_in_bytes"));
		put(out, "memory_limit_bytes",
		    cg_num(l, LOCAL_CG_MEMORY, name, "memory.limit_in_bytes"));
		put(out, "pids", cg_num(l, LOCAL_CG_PIDS, name,
					"pids.current"));
		put(out, "pids_limit", cg_num(l, LOCAL_CG_PIDS, name,
					      "pids.max"));
		put(out, "memory_failcnt", cg_num(l, LOCAL_CG_MEMORY, name,
						  "memory.failcnt"));
	}
	if (cpu_ns >= 0)
		fprintf(out, "cpu_seconds: %lld.%06lld\n", cpu_ns / 1000000000,
			(cpu_ns % 1000000000) / 1000);
}
