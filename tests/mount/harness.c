/* harness.c - mount-test harness: real sbxfs mounts in temp dirs, shell
 * command lines run against them, and cleanup that survives failures. */
#include "harness.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define LIVE_MAX 8
#define OUT_CAP (64u << 20)
#define MOUNT_WAIT_MS 10000

static struct mnt *live[LIVE_MAX];
static struct mnt *cur;
static bool hooks_set;

/* Strings handed out in sh_out: kept reachable here so that a test that
 * fails before sh_free leaks nothing (LeakSanitizer runs in the worker). */
static void **pool;
static size_t npool, cappool;

static void pool_add(void *p)
{
	void **n;

	if (!p)
		return;
	if (npool == cappool) {
		cappool = cappool ? 2 * cappool : 64;
		n = realloc(pool, cappool * sizeof(*pool));
		if (!n)
			abort();
		pool = n;
	}
	pool[npool++] = p;
}

static void pool_free(void *p)
{
	size_t i;

	if (!p)
		return;
	for (i = 0; i < npool; i++) {
		if (pool[i] == p) {
			pool[i] = pool[--npool];
			break;
		}
	}
	free(p);
}

static long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static int decode_status(int st)
{
	if (WIFEXITED(st))
		return WEXITSTATUS(st);
	if (WIFSIGNALED(st))
		return 128 + WTERMSIG(st);
	return 255;
}

/* Wait for pid at most ms; -ETIMEDOUT if it still runs. */
static int wait_bounded(pid_t pid, long ms, int *status)
{
	long end = now_ms() + ms;
	int st;
	pid_t r;

	for (;;) {
		r = waitpid(pid, &st, WNOHANG);
		if (r == pid) {
			*status = decode_status(st);
			return 0;
		}
		if (r < 0 && errno != EINTR)
			return -errno;
		if (now_ms() >= end)
			return -ETIMEDOUT;
		sleep_ms(10);
	}
}

/* End a child: wait `grace` ms, then SIGTERM, then SIGKILL.  Returns its
 * exit status as decode_status, or -errno. */
static int reap(pid_t pid, long grace, bool group)
{
	pid_t target = group ? -pid : pid;
	int st = 0, r;

	r = wait_bounded(pid, grace, &st);
	if (r != -ETIMEDOUT)
		return r ? r : st;
	kill(target, SIGTERM);
	r = wait_bounded(pid, 3000, &st);
	if (r != -ETIMEDOUT)
		return r ? r : st;
	kill(target, SIGKILL);
	r = wait_bounded(pid, 5000, &st);
	return r ? r : st;
}

/* Run argv quietly (output to the log if given), bounded by secs. */
static int run_argv(char *const argv[], int secs, const char *log)
{
	pid_t pid;
	int fd;

	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		setpgid(0, 0);
		fd = log ? open(log, O_WRONLY | O_CREAT | O_APPEND, 0644)
			 : open("/dev/null", O_WRONLY);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		fd = open("/dev/null", O_RDONLY);
		if (fd >= 0)
			dup2(fd, 0);
		execvp(argv[0], argv);
		_exit(127);
	}
	return reap(pid, secs * 1000L, true);
}

/* Is `path` a mount point of a FUSE file system in our namespace? */
static bool is_fuse_mounted(const char *path)
{
	char line[4096], mp[MNT_PATH_MAX * 2], *sep;
	bool found = false;
	FILE *f;

	f = fopen("/proc/self/mountinfo", "re");
	if (!f)
		return false;
	while (!found && fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%*s %*s %*s %*s %511s", mp) != 1)
			continue;
		if (strcmp(mp, path) != 0)
			continue;
		sep = strstr(line, " - ");
		if (sep && strncmp(sep + 3, "fuse", 4) == 0)
			found = true;
	}
	fclose(f);
	return found;
}

/* Mount points (in our namespace) at or below dir, deepest last. */
static int mounts_under(const char *dir, char (*out)[MNT_PATH_MAX * 2],
			int max)
{
	char line[4096], mp[MNT_PATH_MAX * 2];
	size_t dl = strlen(dir);
	int n = 0;
	FILE *f;

	f = fopen("/proc/self/mountinfo", "re");
	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%*s %*s %*s %*s %511s", mp) != 1)
			continue;
		if (strncmp(mp, dir, dl) != 0 ||
		    (mp[dl] != '/' && mp[dl] != '\0'))
			continue;
		if (n < max)
			snprintf(out[n], sizeof(out[n]), "%s", mp);
		n++;
	}
	fclose(f);
	return n;
}

/* The log's tail; or, when a sanitizer reported, its report's head
 * (the stack that matters is at the top, the tail is shadow bytes). */
static void print_log_tail(const struct mnt *m, const char *why)
{
	static const char *const marks[] = { "==ERROR: ", "runtime error: " };
	char *t = mnt_log_tail(m, 400), *p = NULL, *e;
	size_t i;
	int n;

	for (i = 0; i < sizeof(marks) / sizeof(marks[0]) && !p; i++)
		p = strstr(t, marks[i]);
	if (p) {
		while (p > t && p[-1] != '\n')
			p--;
		for (e = p, n = 0; *e && n < 60; e++)
			if (*e == '\n')
				n++;
		*e = '\0';
	} else {
		for (p = t + strlen(t), n = 0; p > t; p--)
			if (p[-1] == '\n' && ++n > 41)
				break;
	}
	fprintf(stderr, "harness: %s (%s); sbxfs log %s:\n%s\n", why,
		m->mnt, m->log, p);
	free(t);
}

/* ---- cleanup hooks ------------------------------------------------------ */

static void live_add(struct mnt *m)
{
	int i;

	for (i = 0; i < LIVE_MAX; i++)
		if (live[i] == m)
			return;
	for (i = 0; i < LIVE_MAX; i++) {
		if (!live[i]) {
			live[i] = m;
			return;
		}
	}
}

static void live_del(struct mnt *m)
{
	int i;

	for (i = 0; i < LIVE_MAX; i++)
		if (live[i] == m)
			live[i] = NULL;
}

/* Async-signal-safe: lazy-unmount every live mount, TERM its sbxfs. */
static void on_fatal_signal(int sig)
{
	char *argv[4];
	pid_t pid;
	int i, st;

	for (i = 0; i < LIVE_MAX; i++) {
		if (!live[i])
			continue;
		argv[0] = "fusermount3";
		argv[1] = "-uz";
		argv[2] = live[i]->mnt;
		argv[3] = NULL;
		pid = fork();
		if (pid == 0) {
			execvp(argv[0], argv);
			_exit(127);
		}
		if (pid > 0)
			waitpid(pid, &st, 0);
		if (live[i]->pid > 0)
			kill(live[i]->pid, SIGTERM);
	}
	signal(sig, SIG_DFL);
	raise(sig);
}

static void at_exit(void)
{
	int i;

	for (i = 0; i < LIVE_MAX; i++)
		if (live[i])
			mnt_stop(live[i]);
}

static void set_hooks(void)
{
	static const int sigs[] = { SIGTERM, SIGINT, SIGHUP, SIGQUIT };
	struct sigaction sa, old;
	size_t i;

	if (hooks_set)
		return;
	hooks_set = true;
	atexit(at_exit);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_fatal_signal;
	sigemptyset(&sa.sa_mask);
	for (i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
		/* leave a handler criterion installed alone */
		if (sigaction(sigs[i], NULL, &old) == 0 &&
		    old.sa_handler == SIG_DFL)
			sigaction(sigs[i], &sa, NULL);
	}
}

/* ---- shell commands ----------------------------------------------------- */

struct buf {
	char *p;
	size_t len, cap;
};

static void buf_add(struct buf *b, const char *s, size_t n)
{
	size_t want;
	char *np;

	if (b->len + n > OUT_CAP)
		n = OUT_CAP - b->len; /* drop the excess, keep draining */
	if (!n)
		return;
	want = b->len + n + 1;
	if (want > b->cap) {
		b->cap = b->cap ? b->cap : 4096;
		while (b->cap < want)
			b->cap *= 2;
		np = realloc(b->p, b->cap);
		if (!np)
			abort();
		b->p = np;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static char *buf_take(struct buf *b)
{
	if (!b->p)
		b->p = strdup("");
	if (!b->p)
		abort();
	return b->p;
}

static struct sh_out sh_vrun(int secs, const char *fmt, va_list ap)
{
	struct buf bo = { 0 }, be = { 0 };
	struct sh_out o = { 0 };
	int po[2], pe[2], fd, stage = 0;
	struct pollfd pf[2];
	long deadline;
	char tmp[65536];
	ssize_t n;
	pid_t pid;

	if (vasprintf(&o.cmd, fmt, ap) < 0)
		abort();
	pool_add(o.cmd);
	if (pipe2(po, O_CLOEXEC) < 0 || pipe2(pe, O_CLOEXEC) < 0)
		abort();
	pid = fork();
	if (pid < 0)
		abort();
	if (pid == 0) {
		setpgid(0, 0);
		fd = open("/dev/null", O_RDONLY);
		dup2(fd, 0);
		dup2(po[1], 1);
		dup2(pe[1], 2);
		if (cur) {
			setenv("MNT", cur->mnt, 1);
			setenv("TMPD", cur->dir, 1);
			setenv("DATA", cur->datadir, 1);
			if (chdir(cur->mnt) < 0)
				_exit(126);
		}
		execl("/bin/sh", "sh", "-c", o.cmd, (char *)NULL);
		_exit(127);
	}
	setpgid(pid, pid);
	close(po[1]);
	close(pe[1]);
	pf[0] = (struct pollfd){ .fd = po[0], .events = POLLIN };
	pf[1] = (struct pollfd){ .fd = pe[0], .events = POLLIN };
	deadline = now_ms() + secs * 1000L;
	/* Read until both pipes hit EOF.  On the deadline: TERM the group,
	 * then KILL it, then stop waiting for stray holders of the pipes. */
	while (pf[0].fd >= 0 || pf[1].fd >= 0) {
		long left = deadline - now_ms();
		int i;

		if (left <= 0) {
			if (stage == 0)
				kill(-pid, SIGTERM), deadline += 3000;
			else if (stage == 1)
				kill(-pid, SIGKILL), deadline += 2000;
			else
				break;
			stage++;
			continue;
		}
		if (poll(pf, 2, (int)(left < 1000 ? left : 1000)) < 0 &&
		    errno != EINTR)
			break;
		for (i = 0; i < 2; i++) {
			if (pf[i].fd < 0 || !pf[i].revents)
				continue;
			n = read(pf[i].fd, tmp, sizeof(tmp));
			if (n > 0) {
				buf_add(i ? &be : &bo, tmp, (size_t)n);
			} else if (n == 0 || errno != EINTR) {
				close(pf[i].fd);
				pf[i].fd = -1;
			}
		}
	}
	if (pf[0].fd >= 0)
		close(pf[0].fd);
	if (pf[1].fd >= 0)
		close(pf[1].fd);
	if (stage == 0) {
		o.status = reap(pid, (deadline - now_ms()) > 0 ?
				      deadline - now_ms() : 0, true);
	} else {
		kill(-pid, SIGKILL);
		reap(pid, 2000, true);
		o.status = 124;
		snprintf(tmp, sizeof(tmp), "\nharness: timed out after %d s\n",
			 secs);
		buf_add(&be, tmp, strlen(tmp));
	}
	if (o.status < 0)
		o.status = 255;
	o.out_len = bo.len;
	o.err_len = be.len;
	o.out = buf_take(&bo);
	o.err = buf_take(&be);
	pool_add(o.out);
	pool_add(o.err);
	return o;
}

struct sh_out sh_run(const char *fmt, ...)
{
	struct sh_out o;
	va_list ap;

	va_start(ap, fmt);
	o = sh_vrun(60, fmt, ap);
	va_end(ap);
	return o;
}

struct sh_out sh_run_t(int secs, const char *fmt, ...)
{
	struct sh_out o;
	va_list ap;

	va_start(ap, fmt);
	o = sh_vrun(secs, fmt, ap);
	va_end(ap);
	return o;
}

void sh_free(struct sh_out *o)
{
	pool_free(o->cmd);
	pool_free(o->out);
	pool_free(o->err);
	memset(o, 0, sizeof(*o));
}

struct mnt *mnt_cur(void)
{
	return cur;
}

/* ---- host-side view of local sandboxes ---------------------------------- */

/* Does process `pid` live in a sandbox of m (name NULL: any)?  A sandbox
 * process has the sandbox's overlay as its root mount, whose options name
 * DATA/sandboxes/NAME/upper; a process not yet moved into the root is
 * recognised by its freezer cgroup path ending in /NAME under sbxfs. */
static bool pid_in_sandbox(const struct mnt *m, pid_t pid, const char *name)
{
	char path[64], line[8192], mp[1024], want[MNT_PATH_MAX + 160];
	bool hit = false;
	FILE *f;

	snprintf(want, sizeof(want), "%s/sandboxes/%s%s", m->datadir,
		 name ? name : "", name ? "/" : "");
	snprintf(path, sizeof(path), "/proc/%d/mountinfo", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return false;
	while (!hit && fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%*s %*s %*s %*s %1023s", mp) != 1)
			continue;
		if (strcmp(mp, "/") == 0 && strstr(line, want))
			hit = true;
	}
	fclose(f);
	return hit;
}

/* Path of pid's freezer cgroup under /sys/fs/cgroup/freezer, or "". */
static void pid_freezer(pid_t pid, char *buf, size_t len)
{
	char path[64], line[1024], *p;
	FILE *f;

	buf[0] = '\0';
	snprintf(path, sizeof(path), "/proc/%d/cgroup", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		p = strstr(line, ":freezer:");
		if (!p)
			continue;
		p += strlen(":freezer:");
		p[strcspn(p, "\n")] = '\0';
		if (strcmp(p, "/") != 0)
			snprintf(buf, len, "/sys/fs/cgroup/freezer%s", p);
		break;
	}
	fclose(f);
}

/* Collect sandbox processes of m (name NULL: every sandbox). */
static int scan_pids(const struct mnt *m, const char *name, pid_t *pids,
		     int max)
{
	struct dirent *de;
	pid_t pid, self = getpid();
	char *end;
	int n = 0;
	DIR *d;

	d = opendir("/proc");
	if (!d)
		return -errno;
	while ((de = readdir(d))) {
		pid = (pid_t)strtol(de->d_name, &end, 10);
		if (*end || pid <= 1 || pid == self)
			continue;
		if (!pid_in_sandbox(m, pid, name))
			continue;
		if (n < max)
			pids[n] = pid;
		n++;
	}
	closedir(d);
	return n;
}

int mnt_sandbox_pids(const struct mnt *m, const char *name, pid_t *pids,
		     int max)
{
	if (!m->datadir[0])
		return -EOPNOTSUPP;
	return scan_pids(m, name, pids, max);
}

char *mnt_sandbox_dir(const struct mnt *m, const char *name, char *buf,
		      size_t len)
{
	if (!m->datadir[0])
		snprintf(buf, len, "%s", "");
	else
		snprintf(buf, len, "%s/sandboxes/%s", m->datadir, name);
	return buf;
}

char *mnt_log_tail(const struct mnt *m, int lines)
{
	char *s = NULL, *p;
	size_t len = 0;
	FILE *f;
	int seen = 0;

	f = fopen(m->log, "re");
	if (f) {
		FILE *mem = open_memstream(&s, &len);
		char tmp[4096];
		size_t n;

		while (mem && (n = fread(tmp, 1, sizeof(tmp), f)) > 0)
			fwrite(tmp, 1, n, mem);
		if (mem)
			fclose(mem);
		fclose(f);
	}
	if (!s)
		return strdup("(no log)");
	for (p = s + len; p > s; p--) {
		if (p[-1] == '\n' && p != s + len && ++seen > lines)
			break;
	}
	memmove(s, p, strlen(p) + 1);
	return s;
}

/* Best effort, for a data dir whose sbxfs is gone: thaw and kill every
 * process of its sandboxes, detach mounts under the temp dir. */
static void force_clean(struct mnt *m)
{
	char fz[512], path[600], (*mps)[MNT_PATH_MAX * 2];
	pid_t pids[256];
	int i, n, pass, fd;

	for (pass = 0; pass < 20; pass++) {
		n = scan_pids(m, NULL, pids, 256);
		if (n <= 0)
			break;
		if (n > 256)
			n = 256;
		for (i = 0; i < n; i++) {
			/* a frozen task only dies once thawed */
			pid_freezer(pids[i], fz, sizeof(fz));
			if (fz[0]) {
				snprintf(path, sizeof(path),
					 "%s/freezer.state", fz);
				fd = open(path, O_WRONLY | O_CLOEXEC);
				if (fd >= 0) {
					if (write(fd, "THAWED", 6) < 0)
						(void)0;
					close(fd);
				}
			}
			kill(pids[i], SIGKILL);
		}
		sleep_ms(100);
	}
	mps = calloc(64, sizeof(*mps));
	if (!mps)
		return;
	n = mounts_under(m->dir, mps, 64);
	for (i = (n < 64 ? n : 64) - 1; i >= 0; i--)
		if (umount2(mps[i], MNT_DETACH) < 0)
			fprintf(stderr, "harness: umount %s: %s\n", mps[i],
				strerror(errno));
	free(mps);
}

static int count_sandboxes_on_disk(const struct mnt *m)
{
	char path[MNT_PATH_MAX + 16];
	struct dirent *de;
	int n = 0;
	DIR *d;

	snprintf(path, sizeof(path), "%s/sandboxes", m->datadir);
	d = opendir(path);
	if (!d)
		return 0;
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			n++;
	closedir(d);
	return n;
}

/* ---- mounting ----------------------------------------------------------- */

static int do_mount(struct mnt *m)
{
	const char *bin = getenv("SBXFS_BIN");
	char *argv[8];
	int argc = 0, fd, st;
	pid_t parent = getpid();
	long end;

	if (!bin || !*bin)
		bin = "sbxfs";
	argv[argc++] = (char *)bin;
	argv[argc++] = "-f";
	if (m->opts[0]) {
		argv[argc++] = "-o";
		argv[argc++] = m->opts;
	}
	argv[argc++] = m->source;
	argv[argc++] = m->mnt;
	argv[argc] = NULL;

	fd = open(m->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	fflush(NULL);
	m->pid = fork();
	if (m->pid < 0) {
		m->pid = 0;
		close(fd);
		return -errno;
	}
	if (m->pid == 0) {
		/* if the test process dies, sbxfs gets TERM and unmounts */
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		if (getppid() != parent)
			_exit(1);
		dup2(fd, 1);
		dup2(fd, 2);
		fd = open("/dev/null", O_RDONLY);
		if (fd >= 0)
			dup2(fd, 0);
		execvp(argv[0], argv);
		dprintf(2, "harness: exec %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	close(fd);

	end = now_ms() + MOUNT_WAIT_MS;
	while (!is_fuse_mounted(m->mnt)) {
		if (wait_bounded(m->pid, 0, &st) == 0) {
			m->pid = 0;
			print_log_tail(m, "sbxfs exited before mounting");
			return -EIO;
		}
		if (now_ms() >= end) {
			print_log_tail(m, "mount did not appear in 10 s");
			reap(m->pid, 0, false);
			m->pid = 0;
			return -ETIMEDOUT;
		}
		sleep_ms(20);
	}
	m->mounted = true;
	cur = m;
	live_add(m);
	return 0;
}

int mnt_umount(struct mnt *m)
{
	char *argv[4] = { "fusermount3", "-u", m->mnt, NULL };
	int st = 0;

	if (!m->mnt[0])
		return 0;
	if (is_fuse_mounted(m->mnt) && run_argv(argv, 15, m->log) != 0) {
		argv[1] = "-uz";
		run_argv(argv, 15, m->log);
	}
	m->mounted = false;
	if (m->pid > 0) {
		/* unmounted, sbxfs should end by itself */
		st = reap(m->pid, 10000, false);
		m->pid = 0;
		if (st != 0) {
			char why[64];

			snprintf(why, sizeof(why), "sbxfs exit status %d", st);
			print_log_tail(m, why);
		}
	}
	return st;
}

int mnt_remount(struct mnt *m)
{
	int r = mnt_umount(m);

	if (r != 0)
		return r; /* sbxfs did not end cleanly: a finding */
	return do_mount(m);
}

void mnt_teardown(struct mnt *m)
{
	int st = mnt_stop(m);

	if (st == 0)
		return;
	/* criterion ignores assertions in .fini, but counts a worker that
	 * exits there; tools/test.sh reports it as a failure */
	fprintf(stderr, "harness: sbxfs ended with status %d: failing\n", st);
	fflush(NULL);
	_exit(1);
}

static void remember_baseline(struct mnt *m)
{
	struct sh_out o;
	char *save, *tok;

	m->nbase = 0;
	if (m->own_datadir)
		return;
	o = sh_run("ls -A");
	for (tok = strtok_r(o.out, "\n", &save); tok;
	     tok = strtok_r(NULL, "\n", &save)) {
		if (m->nbase < MNT_MAX_BASELINE)
			snprintf(m->base[m->nbase++], sizeof(m->base[0]), "%s",
				 tok);
	}
	sh_free(&o);
}

int mnt_start(struct mnt *m, const char *source, const char *extra_opts)
{
	const char *base = getenv("SBXFS_TEST_TMP");
	const char *env_opts = getenv("SBXFS_TEST_OPTS");
	int r;

	memset(m, 0, sizeof(*m));
	set_hooks();
	if (!base || !*base)
		base = "/tmp";
	if (strlen(base) > 180)
		base = "/tmp";
	snprintf(m->dir, sizeof(m->dir), "%s/sbxfs-mt-XXXXXX", base);
	if (!mkdtemp(m->dir)) {
		r = -errno;
		m->dir[0] = '\0';
		return r;
	}
	snprintf(m->mnt, sizeof(m->mnt), "%.200s/mnt", m->dir);
	snprintf(m->log, sizeof(m->log), "%.200s/sbxfs.log", m->dir);
	if (mkdir(m->mnt, 0755) < 0)
		return -errno;

	if (!source)
		source = getenv("SBXFS_TEST_SOURCE");
	if (!source || !*source) {
		snprintf(m->datadir, sizeof(m->datadir), "%.200s/data", m->dir);
		snprintf(m->source, sizeof(m->source), "local:%s",
			 m->datadir);
		m->own_datadir = true;
	} else {
		snprintf(m->source, sizeof(m->source), "%s", source);
		if (strncmp(source, "local:", 6) == 0)
			snprintf(m->datadir, sizeof(m->datadir), "%s",
				 source + 6);
	}
	m->lockfd = -1;
	if (!m->own_datadir) {
		char lock[MNT_PATH_MAX];

		snprintf(lock, sizeof(lock), "%.200s/sbxfs-mt-shared.lock",
			 base);
		m->lockfd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
		/* blocks until the previous test on this source is done;
		 * bounded by the test's own timeout */
		while (m->lockfd >= 0 && flock(m->lockfd, LOCK_EX) < 0 &&
		       errno == EINTR)
			;
	}
	snprintf(m->opts, sizeof(m->opts), "%s%s%s",
		 extra_opts ? extra_opts : "",
		 extra_opts && *extra_opts && env_opts && *env_opts ? "," : "",
		 env_opts ? env_opts : "");

	r = do_mount(m);
	if (r < 0) {
		mnt_stop(m);
		return r;
	}
	remember_baseline(m);
	return 0;
}

/* rmdir every sandbox directory of the mount not in the baseline (not
 * MOUNT/templates/, the mount's own). */
static void destroy_via_mount(struct mnt *m)
{
	char keep[MNT_MAX_BASELINE * 130 + 8], *p = keep;
	struct sh_out o;
	int i;

	*p = '\0';
	for (i = 0; i < m->nbase; i++) {
		if (strchr(m->base[i], '\''))
			continue;
		p += snprintf(p, sizeof(keep) - (size_t)(p - keep), " %s",
			      m->base[i]);
	}
	o = sh_run_t(120,
		     "keep=' %s '; for d in *; do "
		     "[ -d \"$d\" ] && [ ! -L \"$d\" ] || continue; "
		     "[ \"$d\" = templates ] && continue; "
		     "case \"$keep\" in *\" $d \"*) continue;; esac; "
		     "rmdir \"$d\" || echo \"harness: rmdir $d failed\" >&2; "
		     "done",
		     keep);
	if (o.status || o.err[0])
		fprintf(stderr, "harness: cleanup of %s: %s", m->mnt, o.err);
	sh_free(&o);
}

int mnt_stop(struct mnt *m)
{
	char *rm[] = { "rm", "-rf", "--one-file-system", m->dir, NULL };
	char (*mps)[MNT_PATH_MAX * 2];
	int st = 0, r, left;

	if (!m->dir[0])
		return 0;
	live_del(m);
	if (m->pid > 0 && wait_bounded(m->pid, 0, &r) == 0) {
		print_log_tail(m, "sbxfs died during the test");
		m->pid = 0;
		st = r ? r : 255;
	}
	if (m->mounted && m->pid > 0) {
		cur = m;
		destroy_via_mount(m);
	}
	r = mnt_umount(m);
	if (!st)
		st = r;

	if (m->own_datadir && count_sandboxes_on_disk(m) > 0) {
		/* sbxfs died or refused: a fresh mount gets another go */
		if (do_mount(m) == 0) {
			live_del(m);
			destroy_via_mount(m);
			mnt_umount(m);
		}
	}
	if (m->own_datadir)
		force_clean(m);
	if (cur == m)
		cur = NULL;

	mps = calloc(64, sizeof(*mps));
	left = mps ? mounts_under(m->dir, mps, 64) : 1;
	free(mps);
	if (left) {
		fprintf(stderr, "harness: %d mounts left under %s, kept\n",
			left, m->dir);
	} else if (getenv("SBXFS_TEST_KEEP") && *getenv("SBXFS_TEST_KEEP")) {
		fprintf(stderr, "harness: kept %s\n", m->dir);
	} else {
		/* m->dir is our mkdtemp; a data dir we were given lies
		 * outside it.  --one-file-system: never cross into a mount
		 * that appeared meanwhile. */
		run_argv(rm, 120, NULL);
	}
	if (m->lockfd > 0)
		close(m->lockfd);
	memset(m, 0, sizeof(*m));
	return st;
}

/* ---- condition waits ---------------------------------------------------- */

bool mnt_task_in_syscall(pid_t pid, pid_t tid, const long *nrs, int n,
			 long ms)
{
	char path[64], line[128];
	long end = now_ms() + ms;

	snprintf(path, sizeof(path), "/proc/%d/task/%d/syscall", (int)pid,
		 (int)tid);
	for (;;) {
		FILE *f = fopen(path, "r");
		char *e;
		long nr = -1;

		if (f) {
			if (fgets(line, sizeof(line), f)) {
				nr = strtol(line, &e, 10);
				if (e == line)
					nr = -1; /* "running" */
			}
			fclose(f);
		}
		for (int i = 0; i < n; i++)
			if (nr == nrs[i])
				return true;
		if (now_ms() >= end)
			return false;
		sleep_ms(5);
	}
}
