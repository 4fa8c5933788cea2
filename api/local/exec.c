/* exec.c - commands in a local sandbox: setns + fork, one epoll thread. */

/*
 * Spawning.  exec_start runs on the caller's thread: it forks a helper A
 * that joins the sandbox's namespaces through a pidfd of the sandbox init
 * (setns(pidfd, flags): one atomic call, no reused-PID race), chroots into
 * /proc/PID/root (opened before the fork, on the host's /proc), and clones
 * the command B with CLONE_PARENT, so that B is inside the sandbox's PID
 * namespace (setns on a PID namespace only affects children) yet is our
 * own child: we hold a pidfd on it and reap it with waitid(P_PIDFD).  A
 * writes B's host PID into a status pipe and exits; exec_start waits for A
 * only (bounded: A never joins the freezer cgroup, so a paused sandbox
 * cannot stop it).  B joins the sandbox's freezer cgroup (pause freezes
 * it, destroy kills it), calls setsid (so signals reach everything it
 * starts through its process group), keeps only the capabilities of the
 * sandbox's PID 1 (caps.c), gets a clean environment (never
 * ours: credentials live there), closes every other descriptor and execs.
 * An exec failure (command not found, cwd missing...) is written by B into
 * the close-on-exec status pipe and reported as started(-errno, sentence);
 * started(0) means execve succeeded.  A command that is not found is thus
 * -ENOENT from started(), not an exit code 127 (a shell, `sh -c`, still
 * answers 127 itself).
 *
 * Streaming.  One thread per backend owns every descriptor of every exec
 * in one epoll set; other threads hand it commands through a mutex-
 * protected queue and an eventfd (the woken side drains the whole queue).
 * Output is read into one 1 MiB buffer (from a stdout pipe grown to 1 MiB)
 * and given to cbs->output; when it returns 1 the exec's output
 * descriptors leave the epoll set until exec_resume, so the pipe fills and
 * the command blocks: memory stays constant whatever the command writes.
 * stdin writes are copied, queued and written non-blocking as the pipe
 * takes them.
 *
 * Exit.  The pidfd of B fires at exit; we read the status with WNOWAIT and
 * keep the zombie until exec_free, so its PID (and process group) cannot
 * be reused while exec_signal may still use it.  exited() comes after both
 * output pipes reached EOF; background processes that keep them open get
 * EXIT_EOF_GRACE_MS after the exit, then the pipes are closed.
 */

#include <errno.h>
#include <link.h>
#include <grp.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <dirent.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <sched.h>
#include <termios.h>

#include "api/local/local_int.h"
#include "api/local/local_core.h"
#include "api/runtime.h"

#ifndef P_PIDFD
#define P_PIDFD 3
#endif
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif
#ifndef TIOCGPTPEER
#define TIOCGPTPEER _IO('T', 0x41)
#endif

/* Output is read in pieces of up to EXEC_BUF from a stdout pipe of
 * EXEC_PIPE_SZ (1 MiB, the unprivileged pipe-max-size; the default 64 KiB
 * costs a context switch per 64 KiB along the whole chain to the reader,
 * which made a 1 GiB stream through proc/JOB/stdout switch-bound). */
#define EXEC_BUF (1024 * 1024)
#define EXEC_PIPE_SZ (1024 * 1024)
#define EXIT_EOF_GRACE_MS 2000
#define EXEC_NAME_MAX 128
#define EXEC_MAXEV 64

#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:" \
		     "/sbin:/bin"
#define DEFAULT_HOME "/root"

/* Descriptors of one exec, each a slot in the epoll set. */
enum { W_STATUS, W_OUT, W_ERR, W_IN, W_PID, W__N };

/* Stages a spawn can fail at, as written into the status pipe. */
enum {
	ST_PID = 1, /* not a failure: A reports B's PID */
	ST_SETNS,
	ST_ROOT,
	ST_CLONE,
	ST_FDS,
	ST_CGROUP,
	ST_TTY,
	ST_CAPS,
	ST_CWD,
	ST_EXEC,
	ST_SETUID,
	ST_SECCOMP,
};

struct st_rec {
	int32_t stage;
	int32_t val; /* errno, or B's PID for ST_PID */
};

enum { C_START, C_WRITE, C_CLOSE, C_RESUME, C_FREE, C_REAPSB };

struct excmd {
	struct excmd *next;
	int op;
	struct api_exec *x;
};

struct exloop;

/* C_REAPSB: reap the exited proc/ jobs of one sandbox (it is stopping). */
struct reapcmd {
	struct excmd cmd; /* first */
	struct exloop *lp;
	char sb[64];
	bool done;
};

/* One queued stdin write; the data is ours (copied). */
struct wbuf {
	struct excmd cmd; /* first: the queue entry that carries it */
	struct wbuf *next;
	size_t len, off;
	api_done_fn cb;
	void *ud;
	unsigned char data[];
};

struct exwatch {
	struct api_exec *x;
	int kind;
};

struct pool;

struct api_exec {
	struct exloop *lp;
	struct api_exec *prev, *next; /* lp->live, loop thread only */
	struct api_exec *grave;	      /* freed at the end of an iteration */
	struct api_exec_cbs cbs;
	void *ud;
	pid_t pid; /* B, host PID namespace */
	int fd[W__N];
	bool watched[W__N];
	struct exwatch w[W__N];
	bool tty, want_stdin;
	bool shim;	/* fd[W_PID] is the monitor's socket, not a pidfd */
	bool attach;	/* recovered by exec_attach */
	int spool[2];	/* attach: output spooled while detached, read
			   before the pipes (loop thread) */
	const char *lost; /* attach: the exit status is lost (why) */

	/* loop thread only */
	bool started, failed, exit_seen, exited_sent, paused, closing_in;
	bool freed, reaped, in_grave;
	bool in_partial; /* tty: last byte written was not a newline */
	int code;
	int64_t deadline_ms; /* 0: none; before started: start bound */
	int64_t start_ms;    /* request timeout for started(), ms */
	struct wbuf *wq, *wq_tail;
	unsigned char st_buf[sizeof(struct st_rec)];
	size_t st_got;

	/* under lp->mu */
	bool resume_queued, close_queued, zombie_gone;
	bool *free_done;
	/* A direct spawn runs on the runtime (spawn_run): until it is done,
	 * the exec's commands wait in hold (in order) and signals and
	 * exec_pid answer as before a start; exec_free meanwhile only sets
	 * spawn_freed (spawn_done then kills what was made). */
	bool spawning, spawn_freed;
	struct excmd *hold, *hold_tail;
	/* the spawn's failure, reported by C_START (loop thread) */
	int spawn_err;
	char spawn_msg[256];

	struct excmd c_start, c_close, c_resume, c_free;
	char name[EXEC_NAME_MAX]; /* argv[0], for messages */
	char cwd[EXEC_NAME_MAX];
	char sb[64]; /* the sandbox's ID */
};

struct exloop {
	struct exloop *next; /* registry */
	struct local *l;
	int epfd, evfd;
	pthread_t thr;
	bool running;
	pthread_mutex_t mu;
	pthread_cond_t cond;
	struct excmd *qhead, *qtail;
	bool stop;
	struct api_exec *live;
	struct api_exec *grave;
	unsigned char *buf;
	int ndeadline;
	int nspawning; /* spawns on the runtime, under mu (fini waits) */
	/* tests: SBXFS_TEST_SPAWN_DELAY_MS, a slow direct spawn (as a
	 * cgroup v1 move waiting for an RCU grace period, but longer) */
	long test_delay_ms;

	/* spares (see "spares" below), under spmu */
	pthread_mutex_t spmu;
	pthread_cond_t spcond;
	pthread_t mk;
	bool mk_running, mk_stop;
	struct pool *pools;
	char mk_sb[64]; /* the sandbox a spare is being made for, "" */
	/* the zygote (see "the zygote" below): its socket, under spmu
	 * (only the maker thread and fini use it), and PID */
	int zfd;
	pid_t zpid;
};

static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static struct exloop *registry;
/* Every exec holds 3-4 descriptors here: local_exec_init raises our soft
 * RLIMIT_NOFILE to the hard one; commands get the original back. */
static struct rlimit nofile_orig;
static bool nofile_raised;

static struct exloop *loop_of(struct local *l)
{
	struct exloop *lp;

	pthread_mutex_lock(&reg_mu);
	for (lp = registry; lp && lp->l != l; lp = lp->next)
		;
	pthread_mutex_unlock(&reg_mu);
	return lp;
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void closefd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

/* ---- spawning (runs partly in forked children: async-signal-safe) ----- */

struct spawn {
	int pidfd;	/* sandbox init */
	int nsflags;
	int rootfd;	/* /proc/PID/root of the init */
	int cgfd[LOCAL_CG_FDS]; /* cgroup.procs of the sandbox's cgroups */
	int ncg;
	bool userns;	/* the init has a user namespace of its own */
	int stdio[3];	/* child ends */
	int stw;	/* status pipe, write end */
	bool tty;
	const char *cwd;
	const char *const *argv;
	char *const *envp;
	const char **shargv; /* "sh", path, argv[1..], NULL: ENOEXEC */
	const char *path;    /* PATH from envp */
	bool entered;	     /* a spare: signals, IDs, capabilities and the
				filter are done already */
};

static void st_write(int fd, int stage, int val)
{
	struct st_rec r = { stage, val };
	ssize_t n;

	do
		n = write(fd, &r, sizeof(r));
	while (n < 0 && errno == EINTR);
}

static __attribute__((noreturn)) void child_fail(int fd, int stage,
						  int err)
{
	st_write(fd, stage, err);
	_exit(127);
}

/* Move fd to a number >= 100 so that placing 0..4 cannot clobber it. */
static int fd_high(int fd)
{
	if (fd < 0)
		return -1;
	return fcntl(fd, F_DUPFD, 100);
}

static void child_exec(const struct spawn *sp)
{
	const char *file = sp->argv[0];
	const char *p, *q;
	char buf[PATH_MAX];
	bool eacces = false;
	size_t flen = strlen(file), dlen;

	if (strchr(file, '/')) {
		execve(file, (char *const *)sp->argv, sp->envp);
		if (errno == ENOEXEC) {
			sp->shargv[1] = file;
			execve("/bin/sh", (char *const *)sp->shargv, sp->envp);
		}
		return;
	}
	for (p = sp->path;; p = q + 1) {
		q = strchr(p, ':');
		if (!q)
			q = p + strlen(p);
		dlen = (size_t)(q - p);
		if (dlen == 0) {
			buf[0] = '.';
			dlen = 1;
		} else if (dlen < sizeof(buf)) {
			memcpy(buf, p, dlen);
		}
		if (dlen + 1 + flen < sizeof(buf)) {
			buf[dlen] = '/';
			memcpy(buf + dlen + 1, file, flen + 1);
			execve(buf, (char *const *)sp->argv, sp->envp);
			switch (errno) {
			case EACCES:
				eacces = true;
				/* fall through */
			case ENOENT:
			case ENOTDIR:
			case ESTALE:
			case ENODEV:
			case ETIMEDOUT:
				break;
			case ENOEXEC:
				sp->shargv[1] = buf;
				execve("/bin/sh", (char *const *)sp->shargv,
				       sp->envp);
				return;
			default:
				return;
			}
		}
		if (!*q)
			break;
	}
	errno = eacces ? EACCES : ENOENT;
}

/* B: the command, inside the sandbox's namespaces and root. */
static __attribute__((noreturn)) void child_b(const struct spawn *sp)
{
	struct sigaction sa;
	sigset_t all;
	int i, hi[4], st = sp->stw;

	/* Until execve our memory is sbxfs's: nothing in the sandbox may
	 * read it through /proc or ptrace. */
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = SIG_DFL;
	for (i = 1; i < NSIG && !sp->entered; i++)
		sigaction(i, &sa, NULL);
	sigemptyset(&all);
	sigprocmask(SIG_SETMASK, &all, NULL);

	if (nofile_raised && !sp->entered)
		setrlimit(RLIMIT_NOFILE, &nofile_orig);
	if (setsid() < 0)
		child_fail(st, ST_FDS, errno);
	hi[0] = fd_high(sp->stdio[0]);
	hi[1] = fd_high(sp->stdio[1]);
	hi[2] = fd_high(sp->stdio[2]);
	hi[3] = fd_high(st);
	if (hi[0] < 0 || hi[1] < 0 || hi[2] < 0 || hi[3] < 0)
		child_fail(st, ST_FDS, errno);
	st = hi[3];
	/* join the sandbox's cgroups (pause, destroy and the limits reach
	 * us); the descriptors were opened on the host, so the kernel checks
	 * the move against the host's cgroup namespace */
	for (i = 0; i < sp->ncg; i++)
		if (write(sp->cgfd[i], "0", 1) != 1)
			child_fail(st, ST_CGROUP, errno);
	for (i = 0; i < 4; i++) {
		if (dup2(hi[i], i) < 0)
			child_fail(st, ST_FDS, errno);
	}
	st = 3;
	if (fcntl(st, F_SETFD, FD_CLOEXEC) < 0)
		child_fail(st, ST_FDS, errno);
	syscall(SYS_close_range, 4, ~0U, 0);
	/* root of the sandbox's user namespace (host ID: its base); setns
	 * gave us its capabilities but kept our host IDs */
	if (sp->userns && (setresgid(0, 0, 0) || setgroups(0, NULL) ||
			   setresuid(0, 0, 0)))
		child_fail(st, ST_SETUID, errno);
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	if (sp->tty && ioctl(0, TIOCSCTTY, 0) < 0)
		child_fail(st, ST_TTY, errno);
	/* the same capabilities and system-call filter as the sandbox's
	 * PID 1 (caps.c, seccomp.c) */
	i = sp->entered ? 0 : local_caps_restrict();
	if (i < 0)
		child_fail(st, ST_CAPS, -i);
	i = sp->entered ? 0 : local_seccomp_apply();
	if (i < 0)
		child_fail(st, ST_SECCOMP, -i);
	if (sp->cwd) {
		if (chdir(sp->cwd) < 0)
			child_fail(st, ST_CWD, errno);
	} else if (chdir(DEFAULT_HOME) < 0 && chdir("/") < 0) {
		child_fail(st, ST_CWD, errno);
	}
	child_exec(sp);
	child_fail(st, ST_EXEC, errno);
}

/* B forked inside the sandbox's PID namespace (by a monitor): joins the
 * other namespaces and the root, then as child_b. */
static __attribute__((noreturn)) void child_b_enter(const struct spawn *sp)
{
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	if (syscall(SYS_setns, sp->pidfd, sp->nsflags & ~CLONE_NEWPID) < 0)
		child_fail(sp->stw, ST_SETNS, errno);
	if (fchdir(sp->rootfd) < 0 || chroot(".") < 0)
		child_fail(sp->stw, ST_ROOT, errno);
	child_b(sp);
}

/* A: joins the namespaces, clones B as our sibling (CLONE_PARENT). */
static __attribute__((noreturn)) void child_a(const struct spawn *sp)
{
	long b;

	if (syscall(SYS_setns, sp->pidfd, sp->nsflags) < 0)
		child_fail(sp->stw, ST_SETNS, errno);
	if (fchdir(sp->rootfd) < 0 || chroot(".") < 0)
		child_fail(sp->stw, ST_ROOT, errno);
	b = syscall(SYS_clone, CLONE_PARENT, NULL, NULL, NULL, 0);
	if (b < 0)
		child_fail(sp->stw, ST_CLONE, errno);
	if (b == 0)
		child_b(sp);
	st_write(sp->stw, ST_PID, (int32_t)b);
	_exit(0);
}

/* ---- the job monitor (runs in a forked child: raw system calls only) ---
 *
 * A command started with req->job gets a monitor S on the host side: S is
 * forked (twice, so that init adopts it and a crash of sbxfs leaves it
 * running), makes itself a session leader and not dumpable, and forks A,
 * whose CLONE_PARENT makes the command B S's child.  S holds copies of
 * B's output pipes and a pidfd of B, and talks to sbxfs over a
 * SOCK_SEQPACKET pair:
 *   - attached (sbxfs holds the other end): S reads nothing, sbxfs reads
 *     the pipes (backpressure as before); at B's exit S writes `exit`
 *     (atomically, by rename) and sends M_EXIT; it keeps B's zombie until
 *     sbxfs sends M_RELEASE (exec_free), so B's PID stays B's;
 *   - detached (the pair hung up: sbxfs died): S drains the pipes into
 *     out.spool/err.spool in the job directory, up to SHIM_SPOOL_CAP each,
 *     counting what it had to drop beyond; it listens on `sock` there;
 *   - a new sbxfs connects to `sock` (exec_attach): S stops draining and
 *     sends M_HELLO with the pipes and the spools (SCM_RIGHTS), unlinks
 *     the spool files and is attached again.
 * The job directory, DATADIR/sandboxes/ID/jobs/JOB/ (0700), also holds
 * `cmd` (start time and command line, written by sbxfs).  S removes the
 * directory and exits once released and B reaped.  Nothing of S is inside
 * the sandbox: not its PID namespace, not its mount namespace, not its
 * cgroup. */

#define SHIM_SPOOL_CAP (8u << 20)
#define SHIM_BUF (64 * 1024)

/* M_REAP: the sandbox is stopping and all its processes are dead; reap B
 * now (keep the job directory): PID 1 of B's PID namespace cannot finish
 * exiting while a zombie of that namespace waits for a parent outside
 * it, so stop would hang until released. */
enum { M_REC = 1, M_EXIT, M_HELLO, M_RELEASE, M_REAP };
/* M_HELLO flags */
enum { H_EXITED = 1, H_OUT = 2, H_ERR = 4, H_SOUT = 8, H_SERR = 16 };

struct shim_msg {
	int32_t type, a, b, c; /* M_REC: stage, val; M_EXIT: code;
				  M_HELLO: flags, code, pid */
	uint64_t d, e;	       /* M_HELLO: bytes dropped (out, err) */
};

struct shim {
	int ctl;	   /* to sbxfs, -1 while detached */
	int lfd;	   /* listening socket in the job directory */
	int jobs;	   /* DATADIR/sandboxes/ID/jobs */
	int dir;	   /* the job directory */
	int pipe[2];	   /* B's stdout, stderr (read ends) */
	int sp[2];	   /* spool files being written, -1 */
	uint64_t held[2], dropped[2];
	int pidfd;	   /* B */
	pid_t b;
	bool exited, released, reap_asap;
	int code;
	const char *name;
};

static const char *const spool_name[2] = { "out.spool", "err.spool" };

/* Most descriptors one message carries (the zygote's: a sandbox's pidfd,
 * root, cgroups and two sockets). */
#define MSG_FDS_MAX (LOCAL_CG_FDS + 4)

/* One message of len bytes with nfd descriptors (SCM_RIGHTS) on a
 * SOCK_SEQPACKET socket; sendmsg's result.  Raw calls only. */
static ssize_t fds_send(int sock, const void *buf, size_t len,
			const int *fds, int nfd)
{
	union {
		char c[CMSG_SPACE(MSG_FDS_MAX * sizeof(int))];
		struct cmsghdr align;
	} u;
	struct iovec iov = { (void *)buf, len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	struct cmsghdr *c;
	ssize_t n;

	if (nfd > MSG_FDS_MAX) {
		errno = EINVAL;
		return -1;
	}
	if (nfd > 0) {
		memset(&u, 0, sizeof(u));
		mh.msg_control = u.c;
		mh.msg_controllen = CMSG_SPACE((size_t)nfd * sizeof(int));
		c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN((size_t)nfd * sizeof(int));
		memcpy(CMSG_DATA(c), fds, (size_t)nfd * sizeof(int));
	}
	do
		n = sendmsg(sock, &mh, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	return n;
}

static void shim_send(int fd, const struct shim_msg *m, const int *fds,
		      int nfd)
{
	(void)fds_send(fd, m, sizeof(*m), fds, nfd);
}

static __attribute__((noreturn)) void shim_exit(struct shim *s)
{
	static const char *const files[] = { "sock", "exit", "exit.tmp",
					     "out.spool", "err.spool", "cmd" };
	siginfo_t si;
	size_t i;

	memset(&si, 0, sizeof(si));
	if (s->pidfd >= 0)
		waitid((idtype_t)P_PIDFD, (id_t)s->pidfd, &si, WEXITED);
	struct stat a, b;

	for (i = 0; i < sizeof(files) / sizeof(files[0]); i++)
		unlinkat(s->dir, files[i], 0);
	/* only our directory: a new job of the same name may have its own */
	if (fstat(s->dir, &a) == 0 &&
	    fstatat(s->jobs, s->name, &b, AT_SYMLINK_NOFOLLOW) == 0 &&
	    a.st_dev == b.st_dev && a.st_ino == b.st_ino)
		unlinkat(s->jobs, s->name, AT_REMOVEDIR);
	_exit(0);
}

static void shim_on_exit(struct shim *s)
{
	siginfo_t si;
	char buf[16];
	int n = 0, fd, v;

	memset(&si, 0, sizeof(si));
	if (waitid((idtype_t)P_PIDFD, (id_t)s->pidfd, &si,
		   WEXITED | WNOHANG | WNOWAIT) < 0 || si.si_pid == 0)
		return;
	s->exited = true;
	s->code = si.si_code == CLD_EXITED ? (si.si_status & 0xff) :
		  128 + si.si_status;
	/* "%d\n" without stdio */
	v = s->code;
	if (v >= 100)
		buf[n++] = (char)('0' + v / 100);
	if (v >= 10)
		buf[n++] = (char)('0' + v / 10 % 10);
	buf[n++] = (char)('0' + v % 10);
	buf[n++] = '\n';
	/* sbxfs first (it is waiting), the file after: it is for a later
	 * sbxfs, and we write it whatever becomes of this one */
	if (s->ctl >= 0) {
		struct shim_msg m = { .type = M_EXIT, .a = s->code };

		shim_send(s->ctl, &m, NULL, 0);
	}
	fd = openat(s->dir, "exit.tmp",
		    O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd >= 0) {
		/* no fsync: the file is for a later sbxfs on this running
		 * host (a reboot ends the job anyway), and rename is atomic
		 * for it; an fsync cost milliseconds on every exit */
		if (write(fd, buf, (size_t)n) == n)
			renameat(s->dir, "exit.tmp", s->dir, "exit");
		close(fd);
	}
	if (s->released)
		shim_exit(s);
	if (s->reap_asap)
		waitid((idtype_t)P_PIDFD, (id_t)s->pidfd, &si,
		       WEXITED | WNOHANG);
}

/* Detached: move what B wrote into the spool (or count it as dropped). */
static void shim_drain(struct shim *s, int k)
{
	static char buf[SHIM_BUF];
	ssize_t n, w;
	size_t room;

	n = read(s->pipe[k], buf, sizeof(buf));
	if (n < 0 && (errno == EINTR || errno == EAGAIN))
		return;
	if (n <= 0) {
		close(s->pipe[k]);
		s->pipe[k] = -1;
		return;
	}
	room = s->held[k] < SHIM_SPOOL_CAP ? SHIM_SPOOL_CAP - s->held[k] : 0;
	if (room && s->sp[k] < 0)
		s->sp[k] = openat(s->dir, spool_name[k],
				  O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC,
				  0600);
	if (room > (size_t)n)
		room = (size_t)n;
	w = s->sp[k] >= 0 && room ? write(s->sp[k], buf, room) : 0;
	if (w < 0)
		w = 0;
	s->held[k] += (uint64_t)w;
	s->dropped[k] += (uint64_t)(n - w);
}

static void shim_accept(struct shim *s)
{
	struct shim_msg m = { .type = M_HELLO };
	int c, fds[4], nfd = 0, k, sfd[2];

	c = accept4(s->lfd, NULL, NULL, SOCK_CLOEXEC);
	if (c < 0)
		return;
	if (s->ctl >= 0) { /* one sbxfs at a time */
		close(c);
		return;
	}
	for (k = 0; k < 2; k++) {
		if (s->sp[k] >= 0) {
			close(s->sp[k]);
			s->sp[k] = -1;
		}
		sfd[k] = openat(s->dir, spool_name[k], O_RDONLY | O_CLOEXEC);
	}
	m.a = s->exited ? H_EXITED : 0;
	m.b = s->code;
	m.c = (int32_t)s->b;
	m.d = s->dropped[0];
	m.e = s->dropped[1];
	if (s->pipe[0] >= 0) {
		m.a |= H_OUT;
		fds[nfd++] = s->pipe[0];
	}
	if (s->pipe[1] >= 0) {
		m.a |= H_ERR;
		fds[nfd++] = s->pipe[1];
	}
	for (k = 0; k < 2; k++) {
		if (sfd[k] >= 0) {
			m.a |= k ? H_SERR : H_SOUT;
			fds[nfd++] = sfd[k];
		}
	}
	shim_send(c, &m, fds, nfd);
	for (k = 0; k < 2; k++) {
		if (sfd[k] >= 0) {
			close(sfd[k]);
			unlinkat(s->dir, spool_name[k], 0);
		}
		s->held[k] = s->dropped[k] = 0;
	}
	s->ctl = c;
}

static __attribute__((noreturn)) void shim_loop(struct shim *s)
{
	struct pollfd pf[5];
	struct shim_msg m;
	int n, k;
	ssize_t r;

	for (;;) {
		n = 0;
		pf[n++] = (struct pollfd){ .fd = s->lfd, .events = POLLIN };
		pf[n++] = (struct pollfd){ .fd = s->exited ? -1 : s->pidfd,
					   .events = POLLIN };
		pf[n++] = (struct pollfd){ .fd = s->ctl, .events = POLLIN };
		for (k = 0; k < 2; k++)
			pf[n++] = (struct pollfd){
				.fd = s->ctl < 0 && !s->released ?
				      s->pipe[k] : -1,
				.events = POLLIN };
		if (poll(pf, (nfds_t)n, -1) < 0)
			continue;
		if (pf[1].revents)
			shim_on_exit(s);
		if (pf[2].revents) {
			memset(&m, 0, sizeof(m));
			r = recv(s->ctl, &m, sizeof(m), MSG_DONTWAIT);
			if (r < 0 && (errno == EAGAIN || errno == EINTR))
				continue;
			if (r == (ssize_t)sizeof(m) && m.type == M_REAP) {
				s->reap_asap = true;
				if (s->exited) {
					siginfo_t si;

					memset(&si, 0, sizeof(si));
					waitid((idtype_t)P_PIDFD,
					       (id_t)s->pidfd, &si,
					       WEXITED | WNOHANG);
				}
				continue;
			}
			if (r == (ssize_t)sizeof(m) && m.type == M_RELEASE) {
				s->released = true;
				/* nobody may attach any more; the name is
				 * free for a new job at once */
				unlinkat(s->dir, "sock", 0);
				close(s->lfd);
				s->lfd = -1;
				if (s->exited)
					shim_exit(s);
				continue;
			}
			if (r <= 0) { /* sbxfs is gone */
				close(s->ctl);
				s->ctl = -1;
				if (s->released) {
					/* wait for B only */
					for (k = 0; k < 2; k++) {
						if (s->pipe[k] >= 0)
							close(s->pipe[k]);
						s->pipe[k] = -1;
					}
				}
			}
		}
		for (k = 0; k < 2; k++)
			if (pf[3 + k].revents && s->pipe[k] >= 0 && s->ctl < 0)
				shim_drain(s, k);
		if (pf[0].revents && !s->released)
			shim_accept(s);
	}
}

/* Close every descriptor but 0-2 and those in keep[] (sorted here). */
static void close_except(int *keep, int n)
{
	int i, j, t, lo = 3;

	for (i = 1; i < n; i++)
		for (j = i; j > 0 && keep[j - 1] > keep[j]; j--) {
			t = keep[j];
			keep[j] = keep[j - 1];
			keep[j - 1] = t;
		}
	for (i = 0; i < n; i++) {
		if (keep[i] < lo)
			continue;
		if (keep[i] > lo)
			syscall(SYS_close_range, lo, keep[i] - 1, 0);
		lo = keep[i] + 1;
	}
	syscall(SYS_close_range, lo, ~0U, 0);
}

struct shim_start {
	const struct spawn *sp;
	int ctl, lfd, jobs, dir, out, err, st;
	const char *name;
};

/* The start of a job monitor, direct or spare: fork once more and let
 * the parent exit (the monitor is reparented and outlives sbxfs), a
 * session of its own, not dumpable, its children born in the sandbox's
 * PID namespace.
 * 0 or the errno of the setns.  Raw calls only (a forked child). */
static int monitor_enter(int sb_pidfd);

/* fork(2) without glibc's atfork handlers, for the zygote (whose
 * libraries they may live in are unmapped) and its children.  The child
 * must not use glibc's idea of its thread ID (raise, pthread_kill):
 * nothing here does. */
static pid_t raw_fork(void)
{
	return (pid_t)syscall(SYS_clone, SIGCHLD, 0, NULL, NULL, 0);
}

static int monitor_detach(int sb_pidfd)
{
	pid_t p = fork();

	if (p != 0)
		_exit(p < 0 ? 1 : 0);
	return monitor_enter(sb_pidfd);
}

/* monitor_detach without the fork: for a monitor forked by the zygote,
 * which reaps nothing (SIGCHLD ignored) and whose children go to init
 * when it ends. */
static int monitor_enter(int sb_pidfd)
{
	setsid();
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	if (syscall(SYS_setns, sb_pidfd, CLONE_NEWPID) < 0)
		return errno ? errno : EIO;
	return 0;
}

/* In the child of spawn(): becomes S (grandchild), forks A. */
static __attribute__((noreturn)) void shim_main(const struct shim_start *a)
{
	struct shim s = { .ctl = a->ctl, .lfd = a->lfd, .jobs = a->jobs,
			  .dir = a->dir, .pipe = { a->out, a->err },
			  .sp = { -1, -1 }, .pidfd = -1, .name = a->name };
	struct shim_msg m = { .type = M_REC, .a = -1, .b = EIO };
	pid_t p;
	int keep[7], fd, wst;

	/* No helper A here: S joins only the sandbox's PID namespace for
	 * its children (setns(CLONE_NEWPID) leaves S itself in the host's),
	 * so B is born inside it as S's child and joins the rest itself. */
	if ((m.b = monitor_detach(a->sp->pidfd)) != 0) {
		m.a = ST_SETNS;
	} else {
		p = fork();
		if (p == 0)
			child_b_enter(a->sp);
		if (p < 0) {
			m.b = errno;
			m.a = ST_CLONE;
		} else {
			m.a = ST_PID;
			m.b = p;
		}
	}
	close(a->sp->stw);
	if (m.a == ST_PID) {
		s.b = m.b;
		s.pidfd = (int)syscall(SYS_pidfd_open, s.b, 0);
		if (s.pidfd < 0) {
			kill(s.b, SIGKILL);
			m.a = ST_CLONE;
			m.b = errno;
		}
	}
	shim_send(s.ctl, &m, NULL, 0);
	if (m.a != ST_PID) {
		if (s.b > 0)
			waitpid(s.b, &wst, 0);
		shim_exit(&s);
	}
	fd = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (fd >= 0) {
		dup2(fd, 0);
		dup2(fd, 1);
		dup2(fd, 2);
	}
	keep[0] = s.ctl;
	keep[1] = s.lfd;
	keep[2] = s.jobs;
	keep[3] = s.dir;
	keep[4] = s.pipe[0];
	keep[5] = s.pipe[1];
	keep[6] = s.pidfd;
	close_except(keep, 7);
	shim_loop(&s);
}

static const char *stage_what(int stage)
{
	switch (stage) {
	case ST_SETNS:
		return "cannot join the sandbox's namespaces";
	case ST_ROOT:
		return "cannot enter the sandbox's root";
	case ST_CLONE:
		return "cannot start a process in the sandbox";
	case ST_FDS:
		return "cannot set up the command's descriptors";
	case ST_CGROUP:
		return "cannot join the sandbox's cgroup";
	case ST_TTY:
		return "cannot set up the terminal";
	case ST_CAPS:
		return "cannot lower the command's capabilities";
	default:
		return "cannot start the command";
	}
}

/* Sentence for a failed stage; buf is returned. */
static const char *stage_msg(const struct api_exec *x, int stage, int err,
			     char *buf, size_t len)
{
	if (stage == ST_EXEC && err == ENOENT)
		snprintf(buf, len, "%s: command not found", x->name);
	else if (stage == ST_EXEC)
		snprintf(buf, len, "%s: %s", x->name, strerror(err));
	else if (stage == ST_CWD)
		snprintf(buf, len, "cannot change directory to %s: %s",
			 x->cwd[0] ? x->cwd : DEFAULT_HOME, strerror(err));
	else
		snprintf(buf, len, "%s: %s", stage_what(stage),
			 strerror(err));
	return buf;
}

static bool env_has(const char *const *env, const char *name, size_t nlen)
{
	for (; env && *env; env++) {
		if (!strncmp(*env, name, nlen) && (*env)[nlen] == '=')
			return true;
	}
	return false;
}

/* envp = req->env (valid NAME=VALUE entries) + defaults not overridden.
 * Only pointers are allocated: the strings live until exec_start returns,
 * and the children use them before that. */
static char **build_env(const struct api_exec_req *req, const char **path)
{
	static const char *const defs[] = {
		"PATH=" DEFAULT_PATH, "HOME=" DEFAULT_HOME, "USER=root",
		"LOGNAME=root", "LANG=C.UTF-8", "TERM=xterm",
	};
	size_t n = 0, i, k = 0, ndef = sizeof(defs) / sizeof(defs[0]);
	const char *const *e;
	char **env;

	for (e = req->env; e && *e; e++)
		n++;
	env = calloc(n + ndef + 1, sizeof(*env));
	if (!env)
		return NULL;
	for (e = req->env; e && *e; e++) {
		if (strchr(*e, '=') && **e != '=')
			env[k++] = (char *)*e;
	}
	for (i = 0; i < ndef; i++) {
		size_t nl = (size_t)(strchr(defs[i], '=') - defs[i]);

		if (!req->tty && !strncmp(defs[i], "TERM=", 5))
			continue;
		if (!env_has(req->env, defs[i], nl))
			env[k++] = (char *)defs[i];
	}
	*path = DEFAULT_PATH;
	for (i = 0; i < k; i++) {
		if (!strncmp(env[i], "PATH=", 5)) {
			*path = env[i] + 5;
			break;
		}
	}
	return env;
}

static bool same_ns(pid_t pid, const char *ns)
{
	char p[64];
	struct stat a, b;

	snprintf(p, sizeof(p), "/proc/%d/ns/%s", (int)pid, ns);
	if (stat(p, &a) < 0)
		return true;
	snprintf(p, sizeof(p), "/proc/self/ns/%s", ns);
	if (stat(p, &b) < 0)
		return true;
	return a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

/* Parent ends go to x->fd[], child ends to sp->stdio[]; 0/-errno. */
static int make_stdio(struct api_exec *x, const struct api_exec_req *req,
		      struct spawn *sp)
{
	int p[2], i;

	if (req->tty) {
		int m = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
		int s;
		struct winsize ws = { .ws_row = 24, .ws_col = 80 };

		if (m < 0)
			return -errno;
		if (unlockpt(m) < 0 ||
		    (s = ioctl(m, TIOCGPTPEER,
			       O_RDWR | O_NOCTTY | O_CLOEXEC)) < 0) {
			int e = -errno;

			close(m);
			return e;
		}
		ioctl(m, TIOCSWINSZ, &ws);
		x->fd[W_OUT] = m;
		sp->stdio[0] = s;
		sp->stdio[1] = s;
		sp->stdio[2] = s;
		if (req->want_stdin) {
			x->fd[W_IN] = fcntl(m, F_DUPFD_CLOEXEC, 3);
			if (x->fd[W_IN] < 0)
				return -errno;
		}
	} else {
		if (pipe2(p, O_CLOEXEC) < 0)
			return -errno;
		x->fd[W_OUT] = p[0];
		sp->stdio[1] = p[1];
		/* best effort: a smaller pipe only costs speed */
		(void)fcntl(p[0], F_SETPIPE_SZ, EXEC_PIPE_SZ);
		if (pipe2(p, O_CLOEXEC) < 0)
			return -errno;
		x->fd[W_ERR] = p[0];
		sp->stdio[2] = p[1];
		if (req->want_stdin) {
			if (pipe2(p, O_CLOEXEC) < 0)
				return -errno;
			x->fd[W_IN] = p[1];
			sp->stdio[0] = p[0];
		} else {
			sp->stdio[0] = open("/dev/null", O_RDONLY | O_CLOEXEC);
			if (sp->stdio[0] < 0)
				return -errno;
		}
	}
	for (i = W_OUT; i <= W_IN; i++) {
		if (x->fd[i] >= 0 &&
		    fcntl(x->fd[i], F_SETFL, O_NONBLOCK) < 0)
			return -errno;
	}
	return 0;
}

static void stdio_close(struct spawn *sp)
{
	int i, j;

	for (i = 0; i < 3; i++) {
		for (j = 0; j < i && sp->stdio[j] != sp->stdio[i]; j++)
			;
		if (sp->stdio[i] >= 0 && j == i)
			close(sp->stdio[i]); /* a pty slave appears 3 times */
	}
	for (i = 0; i < 3; i++)
		sp->stdio[i] = -1;
}

/* sockaddr of `sock` in the directory open as dirfd (the path through
 * /proc/self/fd keeps it short whatever DATADIR is). */
static socklen_t sock_addr(struct sockaddr_un *sa, int dirfd)
{
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	snprintf(sa->sun_path, sizeof(sa->sun_path), "/proc/self/fd/%d/sock",
		 dirfd);
	return (socklen_t)sizeof(*sa);
}

static int jobs_dir(struct local *l, const char *id, bool create)
{
	char path[PATH_MAX];

	snprintf(path, sizeof(path), "%s/sandboxes/%s/jobs",
		 local_datadir(l), id);
	if (create && mkdir(path, 0700) < 0 && errno != EEXIST)
		return -errno;
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);

	return fd < 0 ? -errno : fd;
}

static bool job_name_ok(const char *n)
{
	return n[0] && n[0] != '.' && !strchr(n, '/') &&
	       strlen(n) < EXEC_NAME_MAX;
}

/* Connect to the monitor of the job directory dirfd: socket or -errno. */
static int shim_connect(int dirfd)
{
	struct sockaddr_un sa;
	socklen_t sl = sock_addr(&sa, dirfd);
	int c = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

	if (c < 0)
		return -errno;
	if (connect(c, (struct sockaddr *)&sa, sl) < 0) {
		int e = -errno;

		close(c);
		return e;
	}
	return c;
}

/* Remove what a job directory holds, then the directory. */
static void job_dir_remove(int jobs, const char *name)
{
	static const char *const files[] = { "sock", "exit", "exit.tmp",
					     "out.spool", "err.spool", "cmd" };
	int d = openat(jobs, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC |
		       O_NOFOLLOW);

	if (d >= 0) {
		for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++)
			unlinkat(d, files[i], 0);
		close(d);
	}
	unlinkat(jobs, name, AT_REMOVEDIR);
}

static const struct timeval shim_tmo = { .tv_sec = 10 };

/* The descriptors a received message carries (SCM_RIGHTS): up to max
 * into fds, the others closed.  How many were kept. */
static int cmsg_fds(struct msghdr *mh, int *fds, int max)
{
	int nfd = 0;

	for (struct cmsghdr *c = CMSG_FIRSTHDR(mh); c;
	     c = CMSG_NXTHDR(mh, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		int k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));

		for (int i = 0; i < k; i++) {
			int v;

			memcpy(&v, CMSG_DATA(c) + i * sizeof(int), sizeof(v));
			if (nfd < max)
				fds[nfd++] = v;
			else
				close(v);
		}
	}
	return nfd;
}

/* One message and up to max descriptors; bytes received or -errno. */
/* One message into buf (at most len bytes) and its descriptors (up to
 * max into fds, *nfd of them; more are closed).  recvmsg's result, with
 * EINTR retried unless flags has MSG_DONTWAIT.  Raw calls only. */
static ssize_t fds_recv(int sock, void *buf, size_t len, int *fds, int max,
			int *nfd, int flags)
{
	union {
		char c[CMSG_SPACE(MSG_FDS_MAX * sizeof(int))];
		struct cmsghdr align;
	} u;
	struct iovec iov = { buf, len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1,
			     .msg_control = u.c,
			     .msg_controllen = sizeof(u.c) };
	ssize_t n;

	*nfd = 0;
	do
		n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC | flags);
	while (n < 0 && errno == EINTR && !(flags & MSG_DONTWAIT));
	if (n > 0)
		*nfd = cmsg_fds(&mh, fds, max);
	return n;
}

static ssize_t shim_recv(int fd, struct shim_msg *m, int *fds, int max,
			 int *nfd)
{
	ssize_t n;

	memset(m, 0, sizeof(*m));
	n = fds_recv(fd, m, sizeof(*m), fds, max, nfd, 0);
	return n < 0 ? -errno : n;
}

struct jobprep {
	int jobs, dir, lfd, ctl[2];
};

static void jobprep_close(struct jobprep *jp)
{
	closefd(&jp->jobs);
	closefd(&jp->dir);
	closefd(&jp->lfd);
	closefd(&jp->ctl[0]);
	closefd(&jp->ctl[1]);
}

/* The job directory (cmd written), the monitor's listening socket and
 * its socket pair.  0/-errno with a sentence. */
static int job_prepare(struct local *l, const char *id,
		       const struct api_exec_req *req, struct jobprep *jp,
		       char *msg, size_t mlen)
{
	struct sockaddr_un sa;
	struct timespec ts;
	socklen_t sl;
	int r, fd;
	FILE *f;

	if (!job_name_ok(req->job)) {
		snprintf(msg, mlen, "bad job name");
		return -EINVAL;
	}
	jp->jobs = jobs_dir(l, id, true);
	if (jp->jobs < 0) {
		r = jp->jobs;
		goto fail;
	}
	if (mkdirat(jp->jobs, req->job, 0700) < 0) {
		if (errno != EEXIST) {
			r = -errno;
			goto fail;
		}
		fd = openat(jp->jobs, req->job, O_RDONLY | O_DIRECTORY |
			    O_CLOEXEC | O_NOFOLLOW);
		r = fd >= 0 ? shim_connect(fd) : -ENOENT;
		if (fd >= 0)
			close(fd);
		if (r >= 0) {
			close(r);
			snprintf(msg, mlen, "a job named %s from an earlier "
				 "mount still has a monitor", req->job);
			return -EEXIST;
		}
		job_dir_remove(jp->jobs, req->job);
		if (mkdirat(jp->jobs, req->job, 0700) < 0) {
			r = -errno;
			goto fail;
		}
	}
	jp->dir = openat(jp->jobs, req->job, O_RDONLY | O_DIRECTORY |
			 O_CLOEXEC | O_NOFOLLOW);
	if (jp->dir < 0) {
		r = -errno;
		goto fail;
	}
	fd = openat(jp->dir, "cmd", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
		    0600);
	f = fd >= 0 ? fdopen(fd, "w") : NULL;
	if (!f) {
		r = -errno;
		if (fd >= 0)
			close(fd);
		goto fail;
	}
	clock_gettime(CLOCK_REALTIME, &ts);
	fprintf(f, "%lld %ld\n", (long long)ts.tv_sec, (long)ts.tv_nsec);
	for (size_t i = 0; req->argv[i]; i++)
		fprintf(f, "%s%s", i ? " " : "", req->argv[i]);
	/* `sh -c LINE` is how fs/ runs a job: keep LINE alone */
	if (req->argv[1] && req->argv[2] && !req->argv[3] &&
	    !strcmp(req->argv[1], "-c")) {
		rewind(f);
		if (ftruncate(fd, 0) == 0)
			fprintf(f, "%lld %ld\n%s", (long long)ts.tv_sec,
				(long)ts.tv_nsec, req->argv[2]);
	}
	if (fclose(f) != 0) {
		r = -EIO;
		goto fail;
	}
	jp->lfd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	sl = sock_addr(&sa, jp->dir);
	if (jp->lfd < 0 || bind(jp->lfd, (struct sockaddr *)&sa, sl) < 0 ||
	    listen(jp->lfd, 4) < 0 ||
	    socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0,
		       jp->ctl) < 0) {
		r = -errno;
		goto fail;
	}
	setsockopt(jp->ctl[0], SOL_SOCKET, SO_RCVTIMEO, &shim_tmo,
		   sizeof(shim_tmo));
	return 0;
fail:
	snprintf(msg, mlen, "cannot set up the job's directory: %s",
		 strerror(-r));
	if (jp->jobs >= 0 && jp->dir >= 0)
		job_dir_remove(jp->jobs, req->job);
	return r;
}

/* What a process needs to enter sandbox `id` whose init is ipid: a pidfd
 * and the root of the init, the namespaces to join, the cgroups.
 * 0/-errno with a sentence; the caller closes what sp holds. */
static int ns_prepare(struct local *l, const char *id, pid_t ipid,
		      struct spawn *sp, char *msg, size_t mlen)
{
	char path[64];
	int r;

	sp->pidfd = (int)syscall(SYS_pidfd_open, ipid, 0);
	snprintf(path, sizeof(path), "/proc/%d/root", (int)ipid);
	sp->rootfd = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (sp->pidfd < 0 || sp->rootfd < 0) {
		r = errno == ESRCH ? -EBUSY : -errno;
		snprintf(msg, mlen, "the sandbox's init process is gone: %s",
			 strerror(errno));
		return r;
	}
	/* Never run on the host: a stale or reused init PID would share
	 * our namespaces. */
	if (same_ns(ipid, "pid") || same_ns(ipid, "mnt")) {
		snprintf(msg, mlen, "the sandbox's init process is gone");
		return -EBUSY;
	}
	sp->nsflags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC |
		      CLONE_NEWUTS | CLONE_NEWNET;
	if (!same_ns(ipid, "user")) {
		sp->nsflags |= CLONE_NEWUSER;
		sp->userns = true;
	}
	if (!same_ns(ipid, "cgroup"))
		sp->nsflags |= CLONE_NEWCGROUP;

	r = local_sb_cgroup_fds(l, id, sp->cgfd, LOCAL_CG_FDS);
	if (r < 0) {
		snprintf(msg, mlen, "cannot open the sandbox's cgroups: %s",
			 strerror(-r));
		return r;
	}
	sp->ncg = r;
	return 0;
}

static void ns_release(struct spawn *sp)
{
	closefd(&sp->pidfd);
	closefd(&sp->rootfd);
	for (int i = 0; i < sp->ncg; i++)
		closefd(&sp->cgfd[i]);
	sp->ncg = 0;
}

/* ---- spares --------------------------------------------------------------
 *
 * Starting a job costs two things besides the command's own execve: the
 * forks of sbxfs (a large, threaded process) and, above all, the moves of
 * the new process into the sandbox's cgroups: on cgroup v1 the first
 * write to a cgroup.procs waits for an RCU grace period (10-20 ms on the
 * development VM, whatever the load), which was most of an `sbx run`.
 * So a sandbox that runs jobs keeps spares: a monitor S' made as in
 * shim_main, and its child B' that has already joined the sandbox's
 * namespaces, root and cgroups and taken the sandbox's root IDs, and that
 * waits on a socket.  A job takes a spare (spare_take): sbxfs hands S'
 * the job's directory and sockets and B' its stdio, status pipe and
 * command (spare_go), and B' goes on like child_b (setsid, descriptors,
 * capabilities, filter, execve), S' like a monitor.  The spares are
 * made by one thread per backend (spare_maker) off the request path.
 *
 * B' holds nothing of the host but its socket (every other descriptor is
 * closed before it joins the cgroups, sbxfs's command line is wiped from
 * its memory, and it is not dumpable: its memory was sbxfs's, so nothing
 * in the sandbox may read it, as for B before execve).  The sandbox may
 * kill it: S' then reaps it and exits, and the next job starts the
 * direct way (a spare that is not ready within SPARE_WAIT_MS is dropped
 * as well).  What B' sends is one byte, "ready"; nothing it could send
 * is believed beyond that.  S' kills B' and exits when sbxfs drops the
 * spare or dies.  Spares go with the sandbox (stop, destroy: local_exec_
 * reap), when their init changed (a restart), after SPARE_IDLE_MS
 * without a job, and at unmount.  A pool starts at one spare and doubles
 * (up to SPARE_MAX) whenever a job found no spare ready. */

#define SPARE_MAX 4
#define SPARE_IDLE_MS 30000
#define SPARE_WAIT_MS 2000
#define SPARE_QUIET_MS 10
#define SPARE_BLOB_MAX (32 * 1024)
#define SPARE_POOLS_MAX 256

enum { M_GO = 16 };

/* sbxfs -> S': the job (fds: ctl, lfd, jobs, dir, out, err) */
struct sgo_msg {
	int32_t type;
	char name[EXEC_NAME_MAX];
};

/* sbxfs -> B': the command (fds: stdin, stdout, stderr, status), then
 * len bytes: cwd (empty: none), PATH, argv[argc], env[envc], each
 * NUL-terminated. */
struct bgo_hdr {
	int32_t type;
	uint32_t argc, envc, len;
};

struct spare {
	struct spare *next;
	pid_t b;	/* B', host PID */
	int pidfd;	/* of B' */
	int sctl, bctl; /* sockets to S' and to B' */
	bool ready;	/* B' said so */
};

struct pool {
	struct pool *next;
	char sb[64];
	pid_t ipid;	/* init of the sandbox when the spares were made */
	struct spare *head;
	int n, target;
	int64_t used_ms;
};

/* Bytes of the strings spare_go sends to B'. */
static size_t blob_len(const struct api_exec_req *req, char *const *env,
		       const char *path)
{
	size_t n = strlen(req->cwd ? req->cwd : "") + 1 + strlen(path) + 1;

	for (size_t i = 0; req->argv[i]; i++)
		n += strlen(req->argv[i]) + 1;
	for (size_t i = 0; env[i]; i++)
		n += strlen(env[i]) + 1;
	return n;
}

struct spare_start {
	const struct spawn *sp;
	int sctl, bctl;
	bool zygote; /* forked by the zygote, not by sbxfs */
};

/* kill: B' was not used (S' would kill it too, but later). */
static void spare_free(struct spare *s, bool kill)
{
	if (kill && s->pidfd >= 0)
		syscall(SYS_pidfd_send_signal, s->pidfd, SIGKILL, NULL, 0);
	closefd(&s->pidfd);
	/* S' sees the hang-up, kills B' and exits */
	closefd(&s->sctl);
	closefd(&s->bctl);
	free(s);
}

/* Write over our command line (sbxfs's: it names host paths) in place.
 * Raw calls only. */
static void wipe_cmdline(void)
{
	static const char name[] = "sbxfs-exec";
	char *start;
	size_t len;

	if (local_argv_area(&start, &len))
		return;
	memset(start, 0, len);
	if (len > sizeof(name))
		memcpy(start, name, sizeof(name));
}

/* B' after its command came: parse it, then as child_b. */
static __attribute__((noreturn)) void spare_b_run(const char *buf,
						   size_t len,
						   const int *fds)
{
	const struct bgo_hdr *h = (const void *)buf;
	const char *p = buf + sizeof(*h), *end = buf + len, **v;
	struct spawn sp = { .pidfd = -1, .rootfd = -1 };
	size_t nv, i;

	nv = (size_t)h->argc + h->envc + h->argc + 5;
	v = mmap(NULL, nv * sizeof(*v), PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (v == MAP_FAILED || h->argc < 1)
		child_fail(fds[3], ST_EXEC, v == MAP_FAILED ? ENOMEM : EINVAL);
	/* strings: cwd, PATH, argv, env */
	const char **argv = v, **envp = v + h->argc + 1,
		   **shargv = envp + h->envc + 1;
	const char *cwd = p;

	for (i = 0; i < 2 + (size_t)h->argc + h->envc; i++) {
		const char *z = memchr(p, 0, (size_t)(end - p));

		if (!z)
			child_fail(fds[3], ST_EXEC, EINVAL);
		if (i == 1)
			sp.path = p;
		else if (i >= 2 && i < 2 + (size_t)h->argc)
			argv[i - 2] = p;
		else if (i >= 2)
			envp[i - 2 - h->argc] = p;
		p = z + 1;
	}
	argv[h->argc] = NULL;
	envp[h->envc] = NULL;
	shargv[0] = "sh";
	for (i = 1; i < h->argc; i++)
		shargv[i + 1] = argv[i];
	shargv[h->argc + 1] = NULL;
	sp.argv = argv;
	sp.envp = (char *const *)envp;
	sp.shargv = shargv;
	sp.cwd = *cwd ? cwd : NULL;
	sp.stdio[0] = fds[0];
	sp.stdio[1] = fds[1];
	sp.stdio[2] = fds[2];
	sp.stw = fds[3];
	sp.entered = true;
	child_b(&sp);
}

/* B': into the sandbox, then wait for a command. */
static __attribute__((noreturn)) void spare_b(const struct spare_start *a)
{
	const struct spawn *sp = a->sp;
	struct sigaction sa;
	sigset_t none;
	int keep[LOCAL_CG_FDS + 1], nk = 0, i, fds[8], nfd;
	char *buf;
	ssize_t n;

	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	prctl(PR_SET_NAME, "sbxfs-exec", 0, 0, 0);
	if (syscall(SYS_setns, sp->pidfd, sp->nsflags & ~CLONE_NEWPID) < 0 ||
	    fchdir(sp->rootfd) < 0 || chroot(".") < 0)
		_exit(127);
	/* nothing of the host but our socket (and the cgroups, for now) */
	keep[nk++] = a->bctl;
	for (i = 0; i < sp->ncg; i++)
		keep[nk++] = sp->cgfd[i];
	close_except(keep, nk);
	close(0);
	close(1);
	close(2);
	wipe_cmdline();
	/* a stop's SIGTERM (or any signal) ends a spare */
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = SIG_DFL;
	for (i = 1; i < NSIG; i++)
		sigaction(i, &sa, NULL);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	if (nofile_raised)
		setrlimit(RLIMIT_NOFILE, &nofile_orig);
	for (i = 0; i < sp->ncg; i++) {
		if (write(sp->cgfd[i], "0", 1) != 1)
			_exit(127);
		close(sp->cgfd[i]);
	}
	if (sp->userns && (setresgid(0, 0, 0) || setgroups(0, NULL) ||
			   setresuid(0, 0, 0)))
		_exit(127);
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	/* from here on a sandbox process like any other (caps.c,
	 * seccomp.c) */
	if (local_caps_restrict() < 0 || local_seccomp_apply() < 0)
		_exit(127);
	if (send(a->bctl, "r", 1, MSG_NOSIGNAL) != 1)
		_exit(0);
	buf = mmap(NULL, sizeof(struct bgo_hdr) + SPARE_BLOB_MAX,
		   PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (buf == MAP_FAILED)
		_exit(127);
	n = fds_recv(a->bctl, buf, sizeof(struct bgo_hdr) + SPARE_BLOB_MAX,
		     fds, 8, &nfd, 0);
	if (n < (ssize_t)sizeof(struct bgo_hdr) || nfd != 4 ||
	    ((struct bgo_hdr *)buf)->type != M_GO ||
	    ((struct bgo_hdr *)buf)->len + sizeof(struct bgo_hdr) !=
		    (size_t)n)
		_exit(0); /* dropped (or nonsense): nothing to run */
	close(a->bctl);
	spare_b_run(buf, (size_t)n, fds);
}

/* S' (a grandchild of sbxfs, adopted by init): forks B', reports its
 * PID, then waits for a job or the end. */
static __attribute__((noreturn)) void spare_main(const struct spare_start *a)
{
	static char name[EXEC_NAME_MAX];
	struct shim_msg m = { .type = M_REC, .a = ST_PID };
	struct sgo_msg g;
	struct pollfd pf[2];
	siginfo_t si;
	int keep[2], fd, fds[8], nfd, i;
	pid_t p;
	ssize_t n;

	if (a->zygote) {
		/* the zygote ignores SIGCHLD; we wait for B' */
		struct sigaction dfl = { .sa_handler = SIG_DFL };

		sigaction(SIGCHLD, &dfl, NULL);
	}
	m.b = a->zygote ? monitor_enter(a->sp->pidfd) :
			  monitor_detach(a->sp->pidfd);
	if (m.b != 0) {
		m.a = ST_SETNS;
		shim_send(a->sctl, &m, NULL, 0);
		_exit(0);
	}
	/* in the zygote's image the atfork handlers of the libraries it
	 * unmapped must not run: the plain system call */
	p = a->zygote ? raw_fork() : fork();
	if (p == 0)
		spare_b(a);
	fd = p > 0 ? (int)syscall(SYS_pidfd_open, p, 0) : -1;
	if (fd < 0) {
		m.a = ST_CLONE;
		m.b = errno;
		if (p > 0) {
			kill(p, SIGKILL);
			waitpid(p, NULL, 0);
		}
		shim_send(a->sctl, &m, NULL, 0);
		_exit(0);
	}
	m.b = p;
	shim_send(a->sctl, &m, NULL, 0);
	i = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (i >= 0) {
		dup2(i, 0);
		dup2(i, 1);
		dup2(i, 2);
	}
	keep[0] = a->sctl;
	keep[1] = fd;
	close_except(keep, 2);
	for (;;) {
		pf[0] = (struct pollfd){ .fd = a->sctl, .events = POLLIN };
		pf[1] = (struct pollfd){ .fd = fd, .events = POLLIN };
		if (poll(pf, 2, -1) < 0)
			continue;
		/* a job first: B' may have run it and exited already */
		if (!pf[0].revents && pf[1].revents)
			break; /* B' died (killed in the sandbox) */
		if (!pf[0].revents)
			continue;
		memset(&g, 0, sizeof(g));
		n = fds_recv(a->sctl, &g, sizeof(g), fds, 8, &nfd,
			     MSG_DONTWAIT);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n != (ssize_t)sizeof(g) || g.type != M_GO || nfd != 6)
			break; /* dropped, or sbxfs is gone */
		memcpy(name, g.name, sizeof(name));
		name[sizeof(name) - 1] = 0;
		close(a->sctl);
		struct shim s = { .ctl = fds[0], .lfd = fds[1],
				  .jobs = fds[2], .dir = fds[3],
				  .pipe = { fds[4], fds[5] },
				  .sp = { -1, -1 }, .pidfd = fd, .b = p,
				  .name = name };
		shim_loop(&s);
	}
	kill(p, SIGKILL);
	memset(&si, 0, sizeof(si));
	waitid((idtype_t)P_PIDFD, (id_t)fd, &si, WEXITED);
	_exit(0);
}

/* ---- the zygote ----------------------------------------------------------
 *
 * Every spare used to cost three forks of sbxfs (S', the parent S' leaves
 * behind to be reparented, and B'): a large, threaded process, so each
 * fork copied hundreds of mappings and made every page sbxfs wrote next
 * copy-on-write, with TLB shoot-downs to its other threads; B''s execve
 * then tore such a copy down again.  Measured with perf over a loop of
 * `sbx run -- true`, that was a quarter of all CPU time.  So
 * local_exec_init forks one small helper, the zygote, before the exec
 * engine's threads exist; it stays single-threaded and idle, and the
 * maker thread asks it (one message on a socket, with the sandbox's
 * descriptors) to fork S' from its own small image.  Nothing in it is
 * newer than the backend's start: no credentials of other backends, no
 * sandbox's data (B' is a copy of it, visible to the sandbox's root
 * only as far as its memory, which it cannot read: not dumpable).  It
 * ends when sbxfs hangs up or dies (PR_SET_PDEATHSIG); without it
 * spares are forked from sbxfs as before. */

enum { Z_SPARE = 1 };

struct zmsg {
	int32_t type;
	int32_t nsflags, ncg, userns;
};

#define Z_FDS MSG_FDS_MAX /* pidfd, rootfd, cgroups, sctl, bctl */

/* Unmap the shared libraries only sbxfs needs (curl and the ~40 it
 * pulls in, libwebsockets, libfuse...): the zygote and what it forks run
 * nothing but this file, caps.c and libc, and every mapping left is one
 * more to copy at each fork and to tear down at each exit and execve (234
 * mappings before, about 40 after).  Not under the sanitizers: their
 * runtimes walk the loaded objects.  Raw calls and no allocation (a
 * fork of a threaded process). */
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
extern ElfW(Dyn) _DYNAMIC[] __attribute__((weak));

/* Every symbol of our program was bound at start-up (linked with -z now,
 * as sbxfs and sbxfs-server are, or LD_BIND_NOW): else the first call
 * of a function through its PLT after the shed would have ld.so search
 * the unmapped libraries (a crash).  Test programs are linked lazily. */
static bool bound_now(const char *bind_env)
{
	if (bind_env && *bind_env)
		return true;
	for (ElfW(Dyn) *d = _DYNAMIC; d && d->d_tag != DT_NULL; d++) {
		if (d->d_tag == DT_FLAGS && (d->d_un.d_val & DF_BIND_NOW))
			return true;
		if (d->d_tag == DT_FLAGS_1 && (d->d_un.d_val & DF_1_NOW))
			return true;
	}
	return false;
}
#endif

static void zygote_shed(const char *bind_env)
{
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
	static const char *const keep[] = { "libc.so", "ld-linux",
					    "libm.so", "libgcc_s" };
	size_t cap = 256 * 1024, len = 0;
	char *buf, *line, *end;
	int fd;
	ssize_t n;

	if (!bound_now(bind_env))
		return;
	buf = mmap(NULL, cap, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (buf == MAP_FAILED)
		return;
	fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
	while (fd >= 0 && len < cap - 1 &&
	       (n = read(fd, buf + len, cap - 1 - len)) > 0)
		len += (size_t)n;
	if (fd >= 0)
		close(fd);
	/* all of it, or nothing: a cut list would be read wrong */
	if (fd < 0 || len == 0 || len >= cap - 1) {
		munmap(buf, cap);
		return;
	}
	buf[len] = 0;
	for (line = buf; *line; line = end + 1) {
		unsigned long lo, hi;
		const char *path, *base;
		bool k = false;

		end = strchr(line, '\n');
		if (!end)
			break;
		*end = 0;
		path = strchr(line, '/');
		if (!path || !strstr(path, ".so"))
			continue;
		base = strrchr(path, '/') + 1;
		for (size_t i = 0; i < sizeof(keep) / sizeof(*keep); i++)
			k = k || !strncmp(base, keep[i], strlen(keep[i]));
		lo = strtoul(line, &line, 16);
		hi = strtoul(line + 1, NULL, 16);
		if (!k && hi > lo)
			munmap((void *)lo, hi - lo);
	}
	munmap(buf, cap);
#else
	(void)bind_env;
#endif
}

static __attribute__((noreturn)) void zygote_main(int zfd,
						  const char *bind_env,
						  pid_t parent)
{
	static const char name[] = "sbxfs-zygote";
	char *start;
	size_t len;
	int fds[Z_FDS], nfd, i, dn;
	struct zmsg z;
	ssize_t n;

	prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	prctl(PR_SET_NAME, name, 0, 0, 0);
	if (getppid() != parent) /* sbxfs died before the prctl */
		_exit(0);
	/* sbxfs's command line names host paths, and `pgrep -f` must
	 * not take us for sbxfs */
	if (local_argv_area(&start, &len) == 0 && len > sizeof(name)) {
		memset(start, 0, len);
		memcpy(start, name, sizeof(name));
	}
	dn = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (dn >= 0) {
		dup2(dn, 0);
		dup2(dn, 1);
		dup2(dn, 2);
	}
	close_except(&zfd, 1);
	zygote_shed(bind_env);
	{
		struct sigaction ign = { .sa_handler = SIG_IGN };

		sigaction(SIGCHLD, &ign, NULL);
	}
	for (;;) {
		n = fds_recv(zfd, &z, sizeof(z), fds, Z_FDS, &nfd, 0);
		if (n <= 0)
			_exit(0); /* sbxfs hung up */
		if (n == (ssize_t)sizeof(z) && z.type == Z_SPARE &&
		    z.ncg >= 0 && z.ncg <= LOCAL_CG_FDS && nfd == z.ncg + 4) {
			struct spawn sp = { .pidfd = fds[0], .rootfd = fds[1],
					    .nsflags = z.nsflags,
					    .ncg = z.ncg,
					    .userns = z.userns != 0,
					    .stdio = { -1, -1, -1 },
					    .stw = -1 };
			struct spare_start a = { .sp = &sp,
						 .sctl = fds[z.ncg + 2],
						 .bctl = fds[z.ncg + 3],
						 .zygote = true };

			for (i = 0; i < z.ncg; i++)
				sp.cgfd[i] = fds[2 + i];
			/* every signal is blocked, as in sbxfs; S' is our
			 * child, reaped by the kernel (SIGCHLD ignored),
			 * and init's once we are gone */
			if (raw_fork() == 0)
				spare_main(&a);
		}
		/* our copies: S' has its own, or sbxfs sees sctl hang up */
		for (i = 0; i < nfd; i++)
			close(fds[i]);
	}
}

/* Start the zygote (at init, before the engine's threads).  Failure
 * only costs speed. */
static void zygote_start(struct exloop *lp)
{
	int sv[2];
	sigset_t all, old;
	pid_t p;

	lp->zfd = -1;
	lp->zpid = 0;
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
		return;
	/* (read before the fork: getenv is not for a forked child) */
	const char *bind_env = getenv("LD_BIND_NOW");
	pid_t self = getpid();

	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	p = fork();
	if (p == 0)
		zygote_main(sv[1], bind_env, self);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	close(sv[1]);
	if (p < 0) {
		close(sv[0]);
		return;
	}
	lp->zfd = sv[0];
	lp->zpid = p;
}

static void zygote_stop(struct exloop *lp)
{
	if (lp->zfd >= 0)
		close(lp->zfd);
	lp->zfd = -1;
	if (lp->zpid > 0)
		while (waitpid(lp->zpid, NULL, 0) < 0 && errno == EINTR)
			;
	lp->zpid = 0;
}

/* Have the zygote fork S' for a (the caller closes its copies of a's
 * sockets).  0, or -1: fork it ourselves. */
static int zygote_fork(struct exloop *lp, const struct spare_start *a)
{
	const struct spawn *sp = a->sp;
	struct zmsg z = { .type = Z_SPARE, .nsflags = sp->nsflags,
			  .ncg = sp->ncg, .userns = sp->userns };
	int fds[Z_FDS], nfd = 0, i;

	if (lp->zfd < 0 || sp->ncg > LOCAL_CG_FDS)
		return -1;
	fds[nfd++] = sp->pidfd;
	fds[nfd++] = sp->rootfd;
	for (i = 0; i < sp->ncg; i++)
		fds[nfd++] = sp->cgfd[i];
	fds[nfd++] = a->sctl;
	fds[nfd++] = a->bctl;
	if (fds_send(lp->zfd, &z, sizeof(z), fds, nfd) == (ssize_t)sizeof(z))
		return 0;
	/* the zygote is gone: never again */
	zygote_stop(lp);
	return -1;
}

/* Make one spare for sandbox id (init ipid); NULL on failure.  Runs on
 * the maker thread. */
static struct spare *spare_make(struct exloop *lp, const char *id,
				pid_t ipid)
{
	struct local *l = lp->l;
	struct spawn sp = { .pidfd = -1, .rootfd = -1,
			    .stdio = { -1, -1, -1 }, .stw = -1 };
	int sc[2] = { -1, -1 }, bc[2] = { -1, -1 }, nfd;
	struct spare *s = NULL;
	struct shim_msg m;
	sigset_t all, old;
	char msg[256];
	pid_t x;

	if (ns_prepare(l, id, ipid, &sp, msg, sizeof(msg)) ||
	    socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sc) < 0 ||
	    socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, bc) < 0)
		goto out;
	struct spare_start a = { .sp = &sp, .sctl = sc[1], .bctl = bc[1] };

	if (zygote_fork(lp, &a) < 0) {
		/* no zygote (it died, or could not start): fork sbxfs */
		sigfillset(&all);
		pthread_sigmask(SIG_SETMASK, &all, &old);
		x = fork();
		if (x == 0)
			spare_main(&a);
		pthread_sigmask(SIG_SETMASK, &old, NULL);
		if (x < 0)
			goto out;
		while (waitpid(x, NULL, 0) < 0 && errno == EINTR)
			;
	}
	closefd(&sc[1]);
	closefd(&bc[1]);
	setsockopt(sc[0], SOL_SOCKET, SO_RCVTIMEO, &shim_tmo,
		   sizeof(shim_tmo));
	if (shim_recv(sc[0], &m, NULL, 0, &nfd) != (ssize_t)sizeof(m) ||
	    m.type != M_REC || m.a != ST_PID || m.b <= 0)
		goto out;
	s = calloc(1, sizeof(*s));
	if (!s)
		goto out;
	s->b = m.b;
	/* S' keeps B' (or its zombie) until we hang up: the PID is B's */
	s->pidfd = (int)syscall(SYS_pidfd_open, s->b, 0);
	s->sctl = sc[0];
	s->bctl = bc[0];
	sc[0] = bc[0] = -1;
out:
	closefd(&sc[0]);
	closefd(&sc[1]);
	closefd(&bc[0]);
	closefd(&bc[1]);
	ns_release(&sp);
	return s;
}

static struct pool *pool_find(struct exloop *lp, const char *id)
{
	struct pool *p;

	for (p = lp->pools; p && strcmp(p->sb, id) != 0; p = p->next)
		;
	return p;
}

/* Unlink pool p (spmu held); its spares go to *dead. */
static void pool_drop(struct exloop *lp, struct pool *p, struct spare **dead)
{
	struct pool **pp;

	for (pp = &lp->pools; *pp && *pp != p; pp = &(*pp)->next)
		;
	if (*pp)
		*pp = p->next;
	while (p->head) {
		struct spare *s = p->head;

		p->head = s->next;
		s->next = *dead;
		*dead = s;
	}
	free(p);
}

static void spares_free(struct spare *dead)
{
	while (dead) {
		struct spare *s = dead;

		dead = s->next;
		spare_free(s, true);
	}
}

/* Wait (bounded) for B' to say it is ready; false when it is gone. */
/* A ready B' is still whole: not exited (its pidfd), its socket not
 * closed, and no SIGKILL pending (root in the sandbox may have just
 * killed it: `pkill sbxfs-exec` returns before the process is gone, and
 * a job handed to it would end 137 without having run). */
static bool spare_alive(struct spare *s)
{
	struct pollfd pb[2] = { { .fd = s->pidfd, .events = POLLIN },
				{ .fd = s->bctl, .events = POLLIN } };
	char path[64], buf[2048], *p;
	unsigned long long pnd;
	ssize_t n;
	int fd;

	if (poll(pb, 2, 0) != 0)
		return false;
	snprintf(path, sizeof(path), "/proc/%d/status", (int)s->b);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return false;
	buf[n] = 0;
	for (p = buf; (p = strstr(p, "Pnd:\t")); p += 5) {
		pnd = strtoull(p + 5, NULL, 16);
		if (pnd & (1ull << (SIGKILL - 1)))
			return false;
	}
	return true;
}

static bool spare_ready(struct spare *s)
{
	struct pollfd pf = { .fd = s->bctl, .events = POLLIN };
	struct pollfd ps = { .fd = s->sctl, .events = POLLIN };
	char c;

	if (poll(&ps, 1, 0) != 0) /* S' said something: it is ending */
		return false;
	if (s->ready)
		return spare_alive(s);
	while (poll(&pf, 1, SPARE_WAIT_MS) < 0 && errno == EINTR)
		;
	s->ready = recv(s->bctl, &c, 1, MSG_DONTWAIT) == 1 && c == 'r';
	return s->ready;
}

/* Sandbox sb runs with init ipid and no lifecycle verb holds it. */
static bool sb_quiet(struct local *l, const char *sb, pid_t ipid)
{
	char msg[256];
	pid_t pid = 0;

	return !local_busy(l, sb) &&
	       local_sb_init_pid(l, sb, &pid, msg, sizeof(msg)) == 0 &&
	       pid == ipid;
}

static void *spare_maker(void *arg)
{
	struct exloop *lp = arg;
	struct spare *dead = NULL, *s, *batch[SPARE_MAX];
	struct pool *p, *nx;
	char sb[64];
	pid_t ipid;
	int want, nb, i, got;
	bool quiet;

	pthread_mutex_lock(&lp->spmu);
	while (!lp->mk_stop) {
		int64_t now = now_ms();

		for (p = lp->pools; p; p = nx) {
			nx = p->next;
			if (now - p->used_ms > SPARE_IDLE_MS)
				pool_drop(lp, p, &dead);
		}
		if (dead) {
			pthread_mutex_unlock(&lp->spmu);
			spares_free(dead);
			dead = NULL;
			pthread_mutex_lock(&lp->spmu);
			continue;
		}
		/* A pool more than half full is refilled once its sandbox
		 * has been quiet for SPARE_QUIET_MS: a fork of sbxfs next to
		 * a starting job slows the job down (CPU, and the fork holds
		 * our memory map locked). */
		int64_t wait = 1000;

		for (p = lp->pools; p; p = p->next) {
			/* half full or less: at once (jobs come in a run) */
			int64_t due = p->n * 2 > p->target ?
				      p->used_ms + SPARE_QUIET_MS : 0;

			if (p->n >= p->target)
				continue;
			if (due <= now)
				break;
			if (due - now < wait)
				wait = due - now;
		}
		if (!p) {
			struct timespec ts;

			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_nsec += (long)(wait % 1000) * 1000000L;
			ts.tv_sec += (time_t)(wait / 1000) +
				     ts.tv_nsec / 1000000000L;
			ts.tv_nsec %= 1000000000L;
			pthread_cond_timedwait(&lp->spcond, &lp->spmu, &ts);
			continue;
		}
		snprintf(sb, sizeof(sb), "%s", p->sb);
		ipid = p->ipid;
		want = p->target - p->n;
		snprintf(lp->mk_sb, sizeof(lp->mk_sb), "%s", sb);
		pthread_mutex_unlock(&lp->spmu);
		/* A batch: their moves into the cgroups share one grace
		 * period, so a pool refills in one, not one per spare. */
		nb = 0;
		if (sb_quiet(lp->l, sb, ipid))
			while (nb < want && (s = spare_make(lp, sb, ipid)))
				batch[nb++] = s;
		/* Ready, and the sandbox was running and not held by a
		 * lifecycle verb all along: a stop that began before this
		 * check finds the spares killed here, one that begins after
		 * it finds them in the cgroups and kills them with the rest
		 * (a spare that joined after the stop's kill would hold it
		 * up for its whole grace period). */
		for (i = 0; i < nb; i++)
			if (!spare_ready(batch[i])) {
				spare_free(batch[i], true);
				batch[i] = NULL;
			}
		quiet = nb && sb_quiet(lp->l, sb, ipid);
		pthread_mutex_lock(&lp->spmu);
		lp->mk_sb[0] = 0;
		p = pool_find(lp, sb);
		for (i = 0, got = 0; i < nb; i++) {
			s = batch[i];
			if (!s)
				continue;
			if (!p || p->ipid != ipid || !quiet) {
				s->next = dead;
				dead = s;
				continue;
			}
			struct spare **pp = &p->head;

			while (*pp)
				pp = &(*pp)->next;
			s->next = NULL;
			*pp = s;
			p->n++;
			got++;
		}
		if (p && p->ipid == ipid && !got)
			p->target = 0; /* until the next job asks again */
		pthread_cond_broadcast(&lp->spcond);
	}
	while ((p = lp->pools))
		pool_drop(lp, p, &dead);
	pthread_mutex_unlock(&lp->spmu);
	spares_free(dead);
	return NULL;
}

/* A ready spare for sandbox id (init ipid), or NULL: then the job
 * starts the direct way, and spares are asked for. */
static struct spare *spare_take(struct exloop *lp, const char *id, pid_t ipid)
{
	struct spare *dead = NULL, *s = NULL;
	struct pool *p;
	int npools = 0;

	if (!lp->mk_running)
		return NULL;
	pthread_mutex_lock(&lp->spmu);
	p = pool_find(lp, id);
	if (p && p->ipid != ipid) { /* the sandbox was restarted */
		pool_drop(lp, p, &dead);
		p = NULL;
	}
	if (!p) {
		for (struct pool *q = lp->pools; q; q = q->next)
			npools++;
		p = npools < SPARE_POOLS_MAX ? calloc(1, sizeof(*p)) : NULL;
		if (p) {
			snprintf(p->sb, sizeof(p->sb), "%s", id);
			p->ipid = ipid;
			p->next = lp->pools;
			lp->pools = p;
		}
	}
	if (p) {
		p->used_ms = now_ms();
		if (p->target < 1)
			p->target = 1;
		s = p->head;
		if (s) {
			p->head = s->next;
			p->n--;
		}
		if (!s || p->n == 0) /* the next job may find none */
			p->target = p->target * 2 > SPARE_MAX ?
				    SPARE_MAX : p->target * 2;
		pthread_cond_broadcast(&lp->spcond);
	}
	pthread_mutex_unlock(&lp->spmu);
	spares_free(dead);
	/* pooled spares were ready; this sees one killed since */
	if (s && !spare_ready(s)) {
		spare_free(s, true);
		s = NULL;
	}
	return s;
}

/* Start the job in spare s: S' takes the job's directory and sockets,
 * B' its descriptors and command.  0/-errno with a sentence. */
static int spare_go(struct spare *s, const struct api_exec_req *req,
		    char *const *env, const char *path, struct spawn *sp,
		    struct jobprep *jp, const struct api_exec *x, int stw,
		    char *msg, size_t mlen)
{
	struct sgo_msg g = { .type = M_GO };
	struct bgo_hdr h = { .type = M_GO };
	char *buf;
	size_t len = 0, cap;
	int fds[6];
	size_t i;

	cap = blob_len(req, env, path);
	buf = malloc(sizeof(h) + cap);
	if (!buf) {
		snprintf(msg, mlen, "out of memory");
		return -ENOMEM;
	}
#define PUT(str)                                                       \
	do {                                                           \
		size_t l_ = strlen(str) + 1;                           \
		memcpy(buf + sizeof(h) + len, (str), l_);              \
		len += l_;                                             \
	} while (0)
	PUT(req->cwd ? req->cwd : "");
	PUT(path);
	for (i = 0; req->argv[i]; i++, h.argc++)
		PUT(req->argv[i]);
	for (i = 0; env[i]; i++, h.envc++)
		PUT(env[i]);
#undef PUT
	h.len = (uint32_t)len;
	memcpy(buf, &h, sizeof(h));
	snprintf(g.name, sizeof(g.name), "%s", req->job);
	fds[0] = jp->ctl[1];
	fds[1] = jp->lfd;
	fds[2] = jp->jobs;
	fds[3] = jp->dir;
	fds[4] = x->fd[W_OUT];
	fds[5] = x->fd[W_ERR];
	/* the monitor first: the job is watched before it runs */
	if (fds_send(s->sctl, &g, sizeof(g), fds, 6) != (ssize_t)sizeof(g)) {
		free(buf);
		snprintf(msg, mlen, "the job's monitor is gone");
		return -EIO;
	}
	/* B' gets its part; if it is gone (killed in the sandbox this
	 * instant), its status pipe closes and S' reports how it ended */
	fds[0] = sp->stdio[0];
	fds[1] = sp->stdio[1];
	fds[2] = sp->stdio[2];
	fds[3] = stw;
	(void)fds_send(s->bctl, buf, sizeof(h) + len, fds, 4);
	free(buf);
	return 0;
}

/* Sandbox id is stopping or going: its spares go now (B' killed, then
 * waited for, bounded, so that nothing of ours is left in its cgroups
 * and PID namespace). */
static void spares_drop(struct exloop *lp, const char *id)
{
	struct spare *dead = NULL, *s;
	struct pool *p;
	int64_t end;

	pthread_mutex_lock(&lp->spmu);
	while (lp->mk_running && !strcmp(lp->mk_sb, id))
		pthread_cond_wait(&lp->spcond, &lp->spmu);
	p = pool_find(lp, id);
	if (p)
		pool_drop(lp, p, &dead);
	pthread_mutex_unlock(&lp->spmu);
	end = now_ms() + 1000;
	for (s = dead; s; s = s->next)
		if (s->pidfd >= 0)
			syscall(SYS_pidfd_send_signal, s->pidfd, SIGKILL,
				NULL, 0);
	for (s = dead; s; s = s->next) {
		struct pollfd pf = { .fd = s->pidfd, .events = POLLIN };
		int64_t left = end - now_ms();

		if (s->pidfd >= 0 && left > 0)
			poll(&pf, 1, (int)left);
	}
	spares_free(dead);
}
/* Runs A and collects B's PID.  0/-errno with a sentence in msg. */
/* spawn() with may_fork false: no spare took the job, the direct way
 * (fork, join the namespaces and cgroups) is for the runtime. */
#define SPAWN_DEFER 1

/* Start the command: through a ready spare of a job, else (may_fork) the
 * direct way.  0/-errno with a sentence, or SPAWN_DEFER (nothing made,
 * x's descriptors to close). */
static int spawn(struct api_exec *x, struct local *l, const char *id,
		 pid_t ipid, const struct api_exec_req *req, bool may_fork,
		 char *msg, size_t mlen)
{
	struct spawn sp = { .pidfd = -1, .rootfd = -1,
			    .stdio = { -1, -1, -1 }, .stw = -1 };
		char **env = NULL;
	const char **shargv = NULL;
	struct st_rec rec;
	struct jobprep jp = { -1, -1, -1, { -1, -1 } };
	struct spare *spare = NULL;
	bool job = req->job && !req->tty, forked = false;
	int r, st[2] = { -1, -1 }, wst;
	size_t argc = 0, i;
	pid_t a;
	ssize_t n;

	while (req->argv[argc])
		argc++;
	env = build_env(req, &sp.path);
	shargv = calloc(argc + 2, sizeof(*shargv));
	if (!env || !shargv) {
		r = -ENOMEM;
		snprintf(msg, mlen, "out of memory");
		goto out;
	}
	shargv[0] = "sh";
	for (i = 1; i < argc; i++)
		shargv[i + 1] = req->argv[i];
	sp.envp = env;
	sp.shargv = shargv;
	sp.argv = req->argv;
	sp.cwd = req->cwd;
	sp.tty = req->tty;

	if (job && blob_len(req, env, sp.path) <= SPARE_BLOB_MAX)
		spare = spare_take(x->lp, id, ipid);
	if (!spare) {
		if (!may_fork) {
			r = SPAWN_DEFER;
			goto out;
		}
		if (x->lp->test_delay_ms > 0)
			usleep((useconds_t)x->lp->test_delay_ms * 1000);
		r = ns_prepare(l, id, ipid, &sp, msg, mlen);
		if (r)
			goto out;
	}

	r = make_stdio(x, req, &sp);
	if (r == 0 && pipe2(st, O_CLOEXEC) < 0)
		r = -errno;
	if (r) {
		snprintf(msg, mlen, "cannot create pipes: %s", strerror(-r));
		goto out;
	}
	sp.stw = st[1];
	if (job) {
		r = job_prepare(l, id, req, &jp, msg, mlen);
		if (r)
			goto out;
	}
	if (spare) {
		pid_t b = spare->b;

		r = spare_go(spare, req, env, sp.path, &sp, &jp, x, st[1], msg,
			     mlen);
		spare_free(spare, false);
		spare = NULL;
		if (r == 0) {
			forked = true;
			closefd(&st[1]);
			stdio_close(&sp);
			x->pid = b;
			x->shim = true;
			x->fd[W_PID] = jp.ctl[0];
			jp.ctl[0] = -1;
			setsockopt(x->fd[W_PID], SOL_SOCKET, SO_RCVTIMEO,
				   &(struct timeval){ 0 },
				   sizeof(struct timeval));
			goto started;
		}
		/* the monitor is gone (nothing was started): the direct
		 * way, on the runtime */
		if (!may_fork) {
			r = SPAWN_DEFER;
			goto out;
		}
		r = ns_prepare(l, id, ipid, &sp, msg, mlen);
		if (r)
			goto out;
	}

	/* The children start with every signal blocked: a signal sent to B
	 * before it reset its handlers (kill right after cmd) would run
	 * sbxfs's inherited handler (libfuse's SIGTERM/SIGINT/SIGHUP one)
	 * and be lost; blocked, it stays pending until B has default
	 * handlers and unblocks (child_b), so it always acts. */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	a = fork();
	if (a == 0 && job) {
		struct shim_start ss = {
			.sp = &sp, .ctl = jp.ctl[1], .lfd = jp.lfd,
			.jobs = jp.jobs, .dir = jp.dir, .out = x->fd[W_OUT],
			.err = x->fd[W_ERR], .st = st[0], .name = req->job,
		};

		shim_main(&ss);
	}
	if (a == 0)
		child_a(&sp);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (a < 0) {
		r = -errno;
		snprintf(msg, mlen, "fork: %s", strerror(errno));
		goto out;
	}
	forked = true;
	closefd(&st[1]);
	stdio_close(&sp);
	while (waitpid(a, &wst, 0) < 0 && errno == EINTR)
		;
	if (job) {
		struct shim_msg m;
		int nfd;

		/* the monitor's copies are its own now */
		closefd(&jp.ctl[1]);
		closefd(&jp.lfd);
		n = shim_recv(jp.ctl[0], &m, NULL, 0, &nfd);
		if (n == (ssize_t)sizeof(m) && m.type == M_REC) {
			rec.stage = m.a;
			rec.val = m.b;
			n = sizeof(rec);
		} else {
			n = -1;
		}
	} else {
		n = read(st[0], &rec, sizeof(rec));
	}
	if (n != (ssize_t)sizeof(rec)) {
		r = -EIO;
		snprintf(msg, mlen, "the exec helper died");
		goto out;
	}
	if (rec.stage != ST_PID) {
		r = rec.val > 0 ? -rec.val : -EIO;
		if (rec.stage == ST_CLONE && rec.val == ENOMEM) {
			/* a PID namespace whose init died refuses forks */
			r = -EBUSY;
		}
		stage_msg(x, rec.stage, rec.val, msg, mlen);
		goto out;
	}
	x->pid = rec.val;
	if (job) {
		/* the monitor is B's parent; it reports the exit */
		x->shim = true;
		x->fd[W_PID] = jp.ctl[0];
		jp.ctl[0] = -1;
		setsockopt(x->fd[W_PID], SOL_SOCKET, SO_RCVTIMEO,
			   &(struct timeval){ 0 }, sizeof(struct timeval));
		goto started;
	}
	x->fd[W_PID] = (int)syscall(SYS_pidfd_open, x->pid, 0);
	if (x->fd[W_PID] < 0) {
		r = -errno;
		snprintf(msg, mlen, "pidfd_open: %s", strerror(errno));
		kill(x->pid, SIGKILL);
		waitpid(x->pid, &wst, 0);
		x->pid = 0;
		goto out;
	}
started:
	x->fd[W_STATUS] = st[0];
	st[0] = -1;
	fcntl(x->fd[W_STATUS], F_SETFL, O_NONBLOCK);
	r = 0;
out:
	if (spare)
		spare_free(spare, true);
	if (r && job && !forked && jp.dir >= 0)
		job_dir_remove(jp.jobs, req->job);
	jobprep_close(&jp);
	closefd(&st[0]);
	closefd(&st[1]);
	stdio_close(&sp);
	ns_release(&sp);
	free(env);
	free(shargv);
	return r;
}

/* ---- the loop thread ---------------------------------------------------- */

/* Append the chain head..tail to the loop's queue; under lp->mu.  True
 * when the loop must be woken (wake() after unlocking). */
static bool enqueue_locked(struct exloop *lp, struct excmd *head,
			   struct excmd *tail)
{
	bool wake = !lp->qhead;

	tail->next = NULL;
	if (lp->qtail)
		lp->qtail->next = head;
	else
		lp->qhead = head;
	lp->qtail = tail;
	return wake;
}

static void wake(struct exloop *lp)
{
	uint64_t one = 1;

	if (write(lp->evfd, &one, sizeof(one)) < 0) {
		/* counter full cannot happen with one writer per wake */
	}
}

static void enqueue(struct exloop *lp, struct excmd *c)
{
	bool w;

	pthread_mutex_lock(&lp->mu);
	w = enqueue_locked(lp, c, c);
	pthread_mutex_unlock(&lp->mu);
	if (w)
		wake(lp);
}

/* One of the exec's commands: held while its spawn runs, so that it
 * reaches the loop after C_START, in order. */
static void x_enqueue(struct api_exec *x, struct excmd *c)
{
	struct exloop *lp = x->lp;
	bool w = false;

	c->next = NULL;
	pthread_mutex_lock(&lp->mu);
	if (x->spawning) {
		if (x->hold_tail)
			x->hold_tail->next = c;
		else
			x->hold = c;
		x->hold_tail = c;
	} else {
		w = enqueue_locked(lp, c, c);
	}
	pthread_mutex_unlock(&lp->mu);
	if (w)
		wake(lp);
}

static void watch(struct api_exec *x, int k, uint32_t ev)
{
	struct epoll_event e = { .events = ev, .data.ptr = &x->w[k] };

	if (x->fd[k] < 0 || x->watched[k])
		return;
	if (epoll_ctl(x->lp->epfd, EPOLL_CTL_ADD, x->fd[k], &e) == 0)
		x->watched[k] = true;
}

static void unwatch(struct api_exec *x, int k)
{
	if (!x->watched[k])
		return;
	epoll_ctl(x->lp->epfd, EPOLL_CTL_DEL, x->fd[k], NULL);
	x->watched[k] = false;
}

static void drop(struct api_exec *x, int k)
{
	unwatch(x, k);
	closefd(&x->fd[k]);
}

static void set_deadline(struct api_exec *x, int64_t when)
{
	if (!x->deadline_ms && when)
		x->lp->ndeadline++;
	else if (x->deadline_ms && !when)
		x->lp->ndeadline--;
	x->deadline_ms = when;
}

/* EOF on stdin: close the pipe.  On a terminal, type the EOF character
 * instead and keep the master open until exit: closing it early was seen
 * to hang up the terminal (SIGHUP) before the command read the EOF. */
static void close_in(struct api_exec *x)
{
	unwatch(x, W_IN);
	if (!x->tty) {
		closefd(&x->fd[W_IN]);
		return;
	}
	/* a partial line needs one ^D to end the line, one for EOF */
	if (x->fd[W_IN] >= 0 &&
	    write(x->fd[W_IN], "\x04\x04", x->in_partial ? 2 : 1) < 0) {
		/* nothing reads the terminal any more */
	}
}

/* Fail every queued stdin write (the command will not read them). */
/* A write that will not happen: answered with err, freed. */
static void wbuf_fail(struct wbuf *w, int err, const char *msg)
{
	if (w->cb)
		w->cb(w->ud, err, msg);
	free(w);
}

static void fail_writes(struct api_exec *x, int err, const char *msg)
{
	struct wbuf *w;

	while ((w = x->wq)) {
		x->wq = w->next;
		if (!x->wq)
			x->wq_tail = NULL;
		wbuf_fail(w, err, msg);
	}
}

static void to_grave(struct api_exec *x)
{
	struct exloop *lp = x->lp;

	if (x->in_grave)
		return;
	x->in_grave = true;
	if (x->prev)
		x->prev->next = x->next;
	else if (lp->live == x)
		lp->live = x->next;
	if (x->next)
		x->next->prev = x->prev;
	x->prev = x->next = NULL;
	set_deadline(x, 0);
	x->grave = lp->grave;
	lp->grave = x;
}

/* Reap the zombie (if it exited) and release x once the caller freed it. */
static void try_release(struct api_exec *x)
{
	siginfo_t si;

	if (!x->freed)
		return;
	if (x->shim) {
		/* the monitor reaps B (after our kill, if it still ran) and
		 * removes the job's directory */
		if (x->fd[W_PID] >= 0) {
			struct shim_msg m = { .type = M_RELEASE };

			send(x->fd[W_PID], &m, sizeof(m),
			     MSG_NOSIGNAL | MSG_DONTWAIT);
		}
		pthread_mutex_lock(&x->lp->mu);
		x->reaped = true;
		pthread_mutex_unlock(&x->lp->mu);
	} else if (!x->reaped && x->fd[W_PID] >= 0) {
		memset(&si, 0, sizeof(si));
		if (waitid((idtype_t)P_PIDFD, (id_t)x->fd[W_PID], &si,
			   WEXITED | WNOHANG) == 0 && si.si_pid == 0)
			return; /* still running: its pidfd will fire */
		pthread_mutex_lock(&x->lp->mu);
		x->reaped = true;
		pthread_mutex_unlock(&x->lp->mu);
	}
	drop(x, W_PID);
	to_grave(x);
}

static void maybe_exited(struct api_exec *x)
{
	bool eof = x->fd[W_OUT] < 0 && x->fd[W_ERR] < 0 &&
		   x->spool[0] < 0 && x->spool[1] < 0;

	if (x->freed || !x->started || x->failed || x->exited_sent ||
	    !x->exit_seen)
		return;
	if (!eof) {
		if (!x->deadline_ms && !x->paused)
			set_deadline(x, now_ms() + EXIT_EOF_GRACE_MS);
		return;
	}
	set_deadline(x, 0);
	fail_writes(x, -EPIPE, "the command has exited");
	if (x->freed)
		return;
	drop(x, W_IN);
	x->exited_sent = true;
	x->cbs.exited(x->ud, x->code, 0, NULL);
}

static void pause_out(struct api_exec *x)
{
	x->paused = true;
	unwatch(x, W_OUT);
	unwatch(x, W_ERR);
	set_deadline(x, 0);
}

/* attach: what the monitor spooled while nobody was attached comes
 * first, as fast as the reader takes it. */
static void pump_spools(struct api_exec *x)
{
	struct exloop *lp = x->lp;
	ssize_t n;

	for (int s = 0; s < 2; s++) {
		while (x->spool[s] >= 0 && !x->paused && !x->freed) {
			n = read(x->spool[s], lp->buf, EXEC_BUF);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0) {
				closefd(&x->spool[s]);
				break;
			}
			if (x->cbs.output(x->ud, s + 1, lp->buf, (size_t)n) ==
			    1 && !x->freed)
				pause_out(x);
		}
	}
}

/* Watch the output pipes whose spool is done. */
static void watch_out(struct api_exec *x)
{
	if (x->spool[0] < 0)
		watch(x, W_OUT, EPOLLIN);
	if (x->spool[1] < 0)
		watch(x, W_ERR, EPOLLIN);
}

/* Read from an output descriptor (once, or up to `reads` times when
 * draining); deliver or mark EOF. */
static void on_output(struct api_exec *x, int k, int reads)
{
	struct exloop *lp = x->lp;
	ssize_t n;

	while (x->fd[k] >= 0 && !x->paused && !x->freed && reads-- > 0) {
		n = read(x->fd[k], lp->buf, EXEC_BUF);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		if (n <= 0) { /* EOF, or EIO from a pty master */
			drop(x, k);
			maybe_exited(x);
			return;
		}
		if (x->cbs.output(x->ud, k == W_OUT ? 1 : 2, lp->buf,
				  (size_t)n) == 1 &&
		    !x->freed)
			pause_out(x);
	}
}

static void flush_stdin(struct api_exec *x)
{
	struct wbuf *w;
	ssize_t n;

	while ((w = x->wq)) {
		n = write(x->fd[W_IN], w->data + w->off, w->len - w->off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN) {
			watch(x, W_IN, EPOLLOUT);
			return;
		}
		if (n < 0) {
			int e = errno;

			drop(x, W_IN);
			fail_writes(x, -e, e == EPIPE ?
				    "the command closed its stdin" :
				    "write to the command's stdin failed");
			return;
		}
		w->off += (size_t)n;
		if (n > 0)
			x->in_partial = w->data[w->off - 1] != '\n';
		if (w->off < w->len)
			continue;
		x->wq = w->next;
		if (!x->wq)
			x->wq_tail = NULL;
		if (w->cb)
			w->cb(w->ud, 0, NULL);
		free(w);
		if (x->freed)
			return;
	}
	unwatch(x, W_IN);
	if (x->closing_in)
		close_in(x);
}

static void on_status(struct api_exec *x)
{
	struct st_rec rec;
	char msg[256];
	ssize_t n;

	n = read(x->fd[W_STATUS], x->st_buf + x->st_got,
		 sizeof(x->st_buf) - x->st_got);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n > 0) {
		x->st_got += (size_t)n;
		if (x->st_got < sizeof(x->st_buf))
			return;
	}
	drop(x, W_STATUS);
	set_deadline(x, 0);
	if (x->st_got == sizeof(x->st_buf)) {
		memcpy(&rec, x->st_buf, sizeof(rec));
		x->failed = true;
		drop(x, W_OUT);
		drop(x, W_ERR);
		drop(x, W_IN);
		x->started = true;
		x->cbs.started(x->ud, rec.val > 0 ? -rec.val : -EIO,
			       stage_msg(x, rec.stage, rec.val, msg,
					 sizeof(msg)));
		if (!x->freed)
			fail_writes(x, -EPIPE, "the command never started");
		return;
	}
	x->started = true;
	x->cbs.started(x->ud, 0, NULL);
	if (x->freed)
		return;
	watch_out(x);
	if (x->wq)
		flush_stdin(x);
	maybe_exited(x);
}

/* A message from the monitor: the exit, or its hang-up. */
static void on_shim(struct api_exec *x)
{
	struct shim_msg m;
	int nfd;
	ssize_t n;

	if (x->freed) {
		try_release(x);
		return;
	}
	n = recv(x->fd[W_PID], &m, sizeof(m), MSG_DONTWAIT);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	(void)nfd;
	if (n == (ssize_t)sizeof(m) && m.type == M_EXIT) {
		x->code = m.a;
		x->exit_seen = true;
		maybe_exited(x);
		return;
	}
	unwatch(x, W_PID);
	if (x->exit_seen)
		return;
	x->code = -1;
	x->exit_seen = true;
	if (x->started && !x->failed && !x->exited_sent) {
		x->exited_sent = true;
		drop(x, W_OUT);
		drop(x, W_ERR);
		closefd(&x->spool[0]);
		closefd(&x->spool[1]);
		fail_writes(x, -EPIPE, "the command has exited");
		if (!x->freed)
			x->cbs.exited(x->ud, -1, -ECHILD,
				      "the job's monitor is gone");
	}
}

static void on_pid(struct api_exec *x)
{
	siginfo_t si;

	if (x->shim) {
		on_shim(x);
		return;
	}
	unwatch(x, W_PID);
	if (x->freed) {
		try_release(x);
		return;
	}
	memset(&si, 0, sizeof(si));
	if (waitid((idtype_t)P_PIDFD, (id_t)x->fd[W_PID], &si,
		   WEXITED | WNOHANG | WNOWAIT) < 0 || si.si_pid == 0) {
		/* someone else reaped it: we lost track */
		x->code = -1;
	} else if (si.si_code == CLD_EXITED) {
		x->code = si.si_status & 0xff;
	} else {
		x->code = 128 + si.si_status;
	}
	x->exit_seen = true;
	if (x->code == -1 && x->started && !x->failed && !x->exited_sent) {
		x->exited_sent = true;
		drop(x, W_OUT);
		drop(x, W_ERR);
		fail_writes(x, -EPIPE, "the command has exited");
		if (!x->freed)
			x->cbs.exited(x->ud, -1, -ECHILD,
				      "lost track of the command");
		return;
	}
	maybe_exited(x);
}

/* exec_free's work, on the loop thread. */
static void do_free(struct api_exec *x)
{
	struct exloop *lp = x->lp;
	bool *done;
	int k;

	if (!x->exited_sent && x->pid > 0) {
		pthread_mutex_lock(&lp->mu);
		if (!x->reaped) {
			kill(-x->pid, SIGKILL);
			kill(x->pid, SIGKILL);
		}
		pthread_mutex_unlock(&lp->mu);
	}
	x->freed = true;
	fail_writes(x, -EPIPE, "the command was killed");
	for (k = 0; k < W__N; k++) {
		if (k != W_PID)
			drop(x, k);
	}
	closefd(&x->spool[0]);
	closefd(&x->spool[1]);
	set_deadline(x, 0);
	if (x->fd[W_PID] >= 0)
		watch(x, W_PID, EPOLLIN);
	try_release(x);
	pthread_mutex_lock(&lp->mu);
	done = x->free_done;
	x->free_done = NULL;
	if (done)
		*done = true;
	pthread_cond_broadcast(&lp->cond);
	pthread_mutex_unlock(&lp->mu);
}

/* C_START of a recovered command: it runs already. */
static void attach_run(struct api_exec *x)
{
	watch(x, W_PID, EPOLLIN);
	x->started = true;
	x->cbs.started(x->ud, 0, NULL);
	if (x->freed)
		return;
	if (x->lost) {
		x->exited_sent = true;
		x->cbs.exited(x->ud, -1, -ECHILD, x->lost);
		return;
	}
	pump_spools(x);
	if (x->freed)
		return;
	if (!x->paused)
		watch_out(x);
	maybe_exited(x);
}

/* Loop thread: mark the sandbox's monitored jobs reaped (signals answer
 * ESRCH from now on: B's PID may be reused once the monitor reaps it)
 * and have their monitors reap B.  Their job directories, exit codes and
 * output stay. */
static void reap_sandbox(struct reapcmd *rc)
{
	struct exloop *lp = rc->lp;
	struct shim_msg m = { .type = M_REAP };

	for (struct api_exec *x = lp->live; x; x = x->next) {
		if (!x->shim || x->reaped || strcmp(x->sb, rc->sb) != 0 ||
		    x->fd[W_PID] < 0)
			continue;
		pthread_mutex_lock(&lp->mu);
		x->reaped = true;
		pthread_mutex_unlock(&lp->mu);
		send(x->fd[W_PID], &m, sizeof(m),
		     MSG_NOSIGNAL | MSG_DONTWAIT);
	}
	pthread_mutex_lock(&lp->mu);
	rc->done = true;
	pthread_cond_broadcast(&lp->cond);
	pthread_mutex_unlock(&lp->mu);
}

static void run_cmd(struct excmd *c)
{
	struct api_exec *x = c->x;
	struct wbuf *w;

	switch (c->op) {
	case C_START:
		x->prev = NULL;
		x->next = x->lp->live;
		if (x->next)
			x->next->prev = x;
		x->lp->live = x;
		if (x->spawn_freed) {
			/* freed while its spawn ran: kill and reap what was
			 * made, no callback */
			do_free(x);
			break;
		}
		if (x->spawn_err) {
			x->started = true;
			x->failed = true;
			x->cbs.started(x->ud, x->spawn_err, x->spawn_msg);
			break;
		}
		if (x->attach) {
			attach_run(x);
			break;
		}
		watch(x, W_STATUS, EPOLLIN);
		watch(x, W_PID, EPOLLIN);
		/* B freezes if the sandbox is paused before it joined the
		 * cgroup: started() is bounded like any request. */
		set_deadline(x, now_ms() + x->start_ms);
		break;
	case C_WRITE:
		w = (struct wbuf *)c;
		if (x->freed || x->fd[W_IN] < 0 || x->closing_in ||
		    x->failed || x->exited_sent) {
			if (x->spawn_err && !x->freed)
				wbuf_fail(w, x->spawn_err, x->spawn_msg);
			else
				wbuf_fail(w, -EPIPE, "stdin is closed");
			break;
		}
		w->next = NULL;
		if (x->wq_tail)
			x->wq_tail->next = w;
		else
			x->wq = w;
		x->wq_tail = w;
		if (x->started)
			flush_stdin(x);
		break;
	case C_CLOSE:
		x->closing_in = true;
		if (!x->wq)
			close_in(x);
		break;
	case C_RESUME:
		pthread_mutex_lock(&x->lp->mu);
		x->resume_queued = false;
		pthread_mutex_unlock(&x->lp->mu);
		if (!x->paused || x->freed)
			break;
		x->paused = false;
		if (x->started && !x->failed) {
			pump_spools(x);
			if (!x->paused && !x->freed)
				watch_out(x);
		}
		if (!x->freed)
			maybe_exited(x);
		break;
	case C_FREE:
		do_free(x);
		break;
	case C_REAPSB:
		reap_sandbox((struct reapcmd *)c);
		break;
	}
}

static void run_queue(struct exloop *lp)
{
	struct excmd *c, *next;
	uint64_t v;

	if (read(lp->evfd, &v, sizeof(v)) < 0) {
		/* EAGAIN: nothing new */
	}
	pthread_mutex_lock(&lp->mu);
	c = lp->qhead;
	lp->qhead = lp->qtail = NULL;
	pthread_mutex_unlock(&lp->mu);
	for (; c; c = next) {
		next = c->next;
		run_cmd(c);
	}
}

/* started() did not come in time: kill what may exist, report. */
static void start_timeout(struct api_exec *x)
{
	pthread_mutex_lock(&x->lp->mu);
	if (!x->reaped) {
		kill(-x->pid, SIGKILL);
		kill(x->pid, SIGKILL);
	}
	pthread_mutex_unlock(&x->lp->mu);
	x->failed = true;
	x->started = true;
	drop(x, W_STATUS);
	drop(x, W_OUT);
	drop(x, W_ERR);
	drop(x, W_IN);
	x->cbs.started(x->ud, -ETIMEDOUT, "the command did not start in "
		       "time (was the sandbox paused?)");
	if (!x->freed)
		fail_writes(x, -EPIPE, "the command never started");
}

/* The start bound, or the 2 s bound after exit: take what is readable
 * now, then close. */
static void on_deadline(struct api_exec *x)
{
	set_deadline(x, 0);
	if (!x->started && !x->freed) {
		start_timeout(x);
		return;
	}
	if (x->freed || x->paused)
		return;
	on_output(x, W_OUT, 16);
	if (x->freed || x->paused)
		return;
	on_output(x, W_ERR, 16);
	if (x->freed || x->paused)
		return;
	drop(x, W_OUT);
	drop(x, W_ERR);
	maybe_exited(x);
}

static int next_timeout(struct exloop *lp)
{
	struct api_exec *x;
	int64_t first = 0, t;

	if (!lp->ndeadline)
		return -1;
	for (x = lp->live; x; x = x->next) {
		if (x->deadline_ms && (!first || x->deadline_ms < first))
			first = x->deadline_ms;
	}
	if (!first)
		return -1;
	t = first - now_ms();
	if (t < 0)
		return 0;
	return t > INT_MAX ? INT_MAX : (int)t;
}

static void run_deadlines(struct exloop *lp)
{
	struct api_exec *x, *next;
	int64_t now;

	if (!lp->ndeadline)
		return;
	now = now_ms();
	for (x = lp->live; x; x = next) {
		next = x->next;
		if (x->deadline_ms && x->deadline_ms <= now)
			on_deadline(x);
	}
}

static void bury(struct exloop *lp)
{
	struct api_exec *x;

	while ((x = lp->grave)) {
		lp->grave = x->grave;
		free(x);
	}
}

static void on_event(struct exwatch *w, uint32_t ev)
{
	struct api_exec *x = w->x;

	(void)ev;
	if (x->fd[w->kind] < 0 || !x->watched[w->kind])
		return; /* dropped earlier in this batch */
	switch (w->kind) {
	case W_STATUS:
		on_status(x);
		break;
	case W_OUT:
	case W_ERR:
		on_output(x, w->kind, 1);
		break;
	case W_IN:
		flush_stdin(x);
		break;
	case W_PID:
		on_pid(x);
		break;
	}
}

static void *loop_main(void *arg)
{
	struct exloop *lp = arg;
	struct epoll_event evs[EXEC_MAXEV];
	sigset_t all;
	int n, i;

	/* SIGPIPE from a stdin write must become EPIPE, not kill us. */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL);
	while (!lp->stop) {
		n = epoll_wait(lp->epfd, evs, EXEC_MAXEV, next_timeout(lp));
		for (i = 0; i < n; i++) {
			if (!evs[i].data.ptr)
				run_queue(lp);
			else
				on_event(evs[i].data.ptr, evs[i].events);
		}
		run_deadlines(lp);
		bury(lp);
		if (n < 0 && errno != EINTR)
			break;
	}
	return NULL;
}

/* ---- the direct spawn, on the runtime ----------------------------------- */

/* A copy of the request (exec_start's pointers live only until it
 * returns). */
struct spawn_job {
	struct api_exec *x;
	struct local *l;
	pid_t ipid;
	struct api_exec_req req;
	char **argv, **env;
	char *cwd, *job;
};

static void strv_free(char **v)
{
	if (!v)
		return;
	for (size_t i = 0; v[i]; i++)
		free(v[i]);
	free(v);
}

static char **strv_dup(const char *const *v)
{
	size_t n = 0, i;
	char **c;

	while (v[n])
		n++;
	c = calloc(n + 1, sizeof(*c));
	if (!c)
		return NULL;
	for (i = 0; i < n; i++) {
		c[i] = strdup(v[i]);
		if (!c[i]) {
			strv_free(c);
			return NULL;
		}
	}
	return c;
}

static void spawn_job_free(struct spawn_job *sj)
{
	if (!sj)
		return;
	strv_free(sj->argv);
	strv_free(sj->env);
	free(sj->cwd);
	free(sj->job);
	free(sj);
}

static struct spawn_job *spawn_job_new(struct api_exec *x, struct local *l,
				       pid_t ipid,
				       const struct api_exec_req *req)
{
	struct spawn_job *sj = calloc(1, sizeof(*sj));

	if (!sj)
		return NULL;
	sj->x = x;
	sj->l = l;
	sj->ipid = ipid;
	sj->req = *req;
	sj->argv = strv_dup(req->argv);
	if (!sj->argv || (req->env && !(sj->env = strv_dup(req->env))) ||
	    (req->cwd && !(sj->cwd = strdup(req->cwd))) ||
	    (req->job && !(sj->job = strdup(req->job)))) {
		spawn_job_free(sj);
		return NULL;
	}
	sj->req.argv = (const char *const *)sj->argv;
	sj->req.env = (const char *const *)sj->env;
	sj->req.cwd = sj->cwd;
	sj->req.job = sj->job;
	return sj;
}

/* The spawn is over (made, failed or cancelled): C_START and what the
 * exec's caller queued meanwhile go to the loop, in that order.  x is the
 * loop's from here on (it may be gone once the lock drops). */
static void spawn_done(struct api_exec *x, int r, const char *msg)
{
	struct exloop *lp = x->lp;
	struct excmd *head = &x->c_start, *tail = &x->c_start;
	bool w;

	if (r) {
		for (int k = 0; k < W__N; k++)
			closefd(&x->fd[k]);
		x->pid = 0;
		x->shim = false;
		x->spawn_err = r;
		snprintf(x->spawn_msg, sizeof(x->spawn_msg), "%s",
			 msg && *msg ? msg : api_strerror(r));
	}
	x->c_start.op = C_START;
	x->c_start.x = x;
	pthread_mutex_lock(&lp->mu);
	x->spawning = false;
	if (x->hold) {
		/* none when freed: exec_free answered them */
		x->c_start.next = x->hold;
		tail = x->hold_tail;
		x->hold = x->hold_tail = NULL;
	}
	w = enqueue_locked(lp, head, tail);
	pthread_mutex_unlock(&lp->mu);
	if (w)
		wake(lp);
	pthread_mutex_lock(&lp->mu);
	lp->nspawning--;
	pthread_cond_broadcast(&lp->cond);
	pthread_mutex_unlock(&lp->mu);
}

/* Runtime worker: fork, join, wait for the handshake. */
static void spawn_run(void *arg, int err)
{
	struct spawn_job *sj = arg;
	struct api_exec *x = sj->x;
	char msg[256] = "";
	bool cancel;
	int r = err;

	pthread_mutex_lock(&x->lp->mu);
	cancel = x->spawn_freed;
	pthread_mutex_unlock(&x->lp->mu);
	if (cancel)
		r = -ECANCELED;
	else if (err == -ETIMEDOUT)
		snprintf(msg, sizeof(msg), "the command did not start in "
			 "time (the backend's workers were busy)");
	else if (err)
		snprintf(msg, sizeof(msg), "cannot start the command: %s",
			 strerror(-err));
	else
		r = spawn(x, sj->l, x->sb, sj->ipid, &sj->req, true, msg,
			  sizeof(msg));
	spawn_job_free(sj);
	spawn_done(x, r, msg);
}

/* ---- entry points ------------------------------------------------------- */

int local_exec_init(struct local *l)
{
	struct exloop *lp = calloc(1, sizeof(*lp));
	struct epoll_event e = { .events = EPOLLIN, .data.ptr = NULL };
	int r;

	if (!lp)
		return -ENOMEM;
	lp->zfd = -1;
	pthread_mutex_lock(&reg_mu);
	if (!nofile_raised && getrlimit(RLIMIT_NOFILE, &nofile_orig) == 0 &&
	    nofile_orig.rlim_cur < nofile_orig.rlim_max) {
		struct rlimit rl = nofile_orig;

		rl.rlim_cur = rl.rlim_max;
		nofile_raised = setrlimit(RLIMIT_NOFILE, &rl) == 0;
	}
	pthread_mutex_unlock(&reg_mu);
	lp->l = l;
	{
		const char *d = getenv("SBXFS_TEST_SPAWN_DELAY_MS");

		lp->test_delay_ms = d ? strtol(d, NULL, 10) : 0;
	}
	lp->epfd = epoll_create1(EPOLL_CLOEXEC);
	lp->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	lp->buf = malloc(EXEC_BUF);
	pthread_mutex_init(&lp->mu, NULL);
	pthread_cond_init(&lp->cond, NULL);
	if (lp->epfd < 0 || lp->evfd < 0 || !lp->buf ||
	    epoll_ctl(lp->epfd, EPOLL_CTL_ADD, lp->evfd, &e) < 0) {
		r = lp->buf ? -errno : -ENOMEM;
		goto fail;
	}
	pthread_mutex_init(&lp->spmu, NULL);
	pthread_cond_init(&lp->spcond, NULL);
	zygote_start(lp);
	r = -pthread_create(&lp->thr, NULL, loop_main, lp);
	if (r)
		goto fail;
	lp->running = true;
	/* without the maker, every job starts the direct way */
	lp->mk_running = pthread_create(&lp->mk, NULL, spare_maker, lp) == 0;
	pthread_mutex_lock(&reg_mu);
	lp->next = registry;
	registry = lp;
	pthread_mutex_unlock(&reg_mu);
	return 0;
fail:
	zygote_stop(lp);
	if (lp->epfd >= 0)
		close(lp->epfd);
	if (lp->evfd >= 0)
		close(lp->evfd);
	free(lp->buf);
	free(lp);
	return r ? r : -EIO;
}

/* Callers freed their execs before (backend free): whatever is left is
 * killed and freed here. */
void local_exec_fini(struct local *l)
{
	struct exloop *lp, **pp;
	struct api_exec *x;
	struct excmd *c, *next;
	uint64_t one = 1;
	int k;

	pthread_mutex_lock(&reg_mu);
	for (pp = &registry; *pp && (*pp)->l != l; pp = &(*pp)->next)
		;
	lp = *pp;
	if (lp)
		*pp = lp->next;
	pthread_mutex_unlock(&reg_mu);
	if (!lp)
		return;
	if (lp->mk_running) {
		pthread_mutex_lock(&lp->spmu);
		lp->mk_stop = true;
		pthread_cond_broadcast(&lp->spcond);
		pthread_mutex_unlock(&lp->spmu);
		pthread_join(lp->mk, NULL);
		lp->mk_running = false;
	}
	zygote_stop(lp); /* only the maker used it */
	pthread_mutex_lock(&lp->mu);
	/* spawns on the runtime hand their exec to the loop: let them */
	while (lp->nspawning)
		pthread_cond_wait(&lp->cond, &lp->mu);
	lp->stop = true;
	pthread_mutex_unlock(&lp->mu);
	if (write(lp->evfd, &one, sizeof(one)) < 0) {
		/* the loop also checks stop after any event */
	}
	pthread_join(lp->thr, NULL);

	/* Commands nobody will run: free the exec ones, answer writes. */
	pthread_mutex_lock(&lp->mu);
	c = lp->qhead;
	lp->qhead = lp->qtail = NULL;
	pthread_mutex_unlock(&lp->mu);
	for (; c; c = next) {
		next = c->next;
		if (c->op == C_WRITE) {
			wbuf_fail((struct wbuf *)c, -EPIPE,
				  "backend shut down");
		} else if (c->op == C_START) {
			run_cmd(c); /* into the live list, freed below */
		} else if (c->op == C_REAPSB) {
			pthread_mutex_lock(&lp->mu);
			((struct reapcmd *)c)->done = true;
			pthread_cond_broadcast(&lp->cond);
			pthread_mutex_unlock(&lp->mu);
		} else if (c->op == C_FREE) {
			pthread_mutex_lock(&lp->mu);
			if (c->x->free_done)
				*c->x->free_done = true;
			pthread_cond_broadcast(&lp->cond);
			pthread_mutex_unlock(&lp->mu);
		}
	}
	while ((x = lp->live)) {
		lp->live = x->next;
		if (x->pid > 0 && !x->reaped) {
			kill(-x->pid, SIGKILL);
			kill(x->pid, SIGKILL);
		}
		fail_writes(x, -EPIPE, "backend shut down");
		if (x->shim && x->fd[W_PID] >= 0) {
			struct shim_msg m = { .type = M_RELEASE };

			send(x->fd[W_PID], &m, sizeof(m),
			     MSG_NOSIGNAL | MSG_DONTWAIT);
		}
		closefd(&x->spool[0]);
		closefd(&x->spool[1]);
		for (k = 0; k < W__N; k++)
			closefd(&x->fd[k]);
		if (x->pid > 0 && !x->reaped && !x->shim)
			waitpid(x->pid, NULL, WNOHANG);
		free(x);
	}
	bury(lp);
	close(lp->epfd);
	close(lp->evfd);
	free(lp->buf);
	pthread_mutex_destroy(&lp->mu);
	pthread_cond_destroy(&lp->cond);
	pthread_mutex_destroy(&lp->spmu);
	pthread_cond_destroy(&lp->spcond);
	free(lp);
}

void local_exec_start(struct api_backend *be, const char *id,
		      const struct api_exec_req *req,
		      const struct api_exec_cbs *cbs, void *ud,
		      struct api_exec **out)
{
	struct local *l = local_of(be);
	struct exloop *lp = loop_of(l);
	struct api_exec *x;
	struct spawn_job *sj = NULL;
	char msg[256] = "";
	pid_t ipid = 0;
	int r, k;

	*out = NULL;
	if (!lp || lp->stop) {
		cbs->started(ud, -EIO, "the exec thread is not running");
		return;
	}
	if (!req || !req->argv || !req->argv[0] || !req->argv[0][0]) {
		cbs->started(ud, -EINVAL, "empty command");
		return;
	}
	r = local_sb_init_pid(l, id, &ipid, msg, sizeof(msg));
	if (r) {
		cbs->started(ud, r, msg[0] ? msg : api_strerror(r));
		return;
	}
	x = calloc(1, sizeof(*x));
	if (!x) {
		cbs->started(ud, -ENOMEM, "out of memory");
		return;
	}
	x->lp = lp;
	x->cbs = *cbs;
	x->ud = ud;
	x->tty = req->tty;
	x->want_stdin = req->want_stdin;
	x->start_ms = be->timeout > 0 ? (int64_t)(be->timeout * 1000) : 30000;
	snprintf(x->name, sizeof(x->name), "%s", req->argv[0]);
	snprintf(x->cwd, sizeof(x->cwd), "%s", req->cwd ? req->cwd : "");
	for (k = 0; k < W__N; k++) {
		x->fd[k] = -1;
		x->w[k].x = x;
		x->w[k].kind = k;
	}
	x->spool[0] = x->spool[1] = -1;
	snprintf(x->sb, sizeof(x->sb), "%s", id);
	/* a ready spare takes a job here; anything that forks is the
	 * runtime's (a FUSE thread never waits on a fork) */
	r = spawn(x, l, id, ipid, req, false, msg, sizeof(msg));
	if (r == SPAWN_DEFER) {
		for (k = 0; k < W__N; k++)
			closefd(&x->fd[k]);
		sj = spawn_job_new(x, l, ipid, req);
		if (!sj) {
			r = -ENOMEM;
			snprintf(msg, sizeof(msg), "out of memory");
		}
	}
	if (r && r != SPAWN_DEFER) {
		for (k = 0; k < W__N; k++)
			closefd(&x->fd[k]);
		free(x);
		cbs->started(ud, r, msg[0] ? msg : api_strerror(r));
		return;
	}
	*out = x;
	if (!sj) {
		x->c_start.op = C_START;
		x->c_start.x = x;
		enqueue(lp, &x->c_start);
		return;
	}
	pthread_mutex_lock(&lp->mu);
	x->spawning = true;
	lp->nspawning++;
	pthread_mutex_unlock(&lp->mu);
	r = rt_submit(l->rt, NULL, rt_now_ms() + x->start_ms, spawn_run, sj);
	if (r)
		spawn_run(sj, r); /* reported from the loop all the same */
}

void local_exec_write(struct api_backend *be, struct api_exec *x,
		      const void *buf, size_t len, api_done_fn cb, void *ud)
{
	struct wbuf *w;

	(void)be;
	if (!x->want_stdin) {
		cb(ud, -EBADF, "the command was started without stdin");
		return;
	}
	w = malloc(sizeof(*w) + len);
	if (!w) {
		cb(ud, -ENOMEM, "out of memory");
		return;
	}
	memcpy(w->data, buf, len);
	w->len = len;
	w->off = 0;
	w->cb = cb;
	w->ud = ud;
	w->next = NULL;
	w->cmd.op = C_WRITE;
	w->cmd.x = x;
	x_enqueue(x, &w->cmd);
}

/* Queue one of the exec's own commands unless it is queued already (close
 * and resume coalesce: the loop acts on the latest state anyway). */
static void enqueue_once(struct api_exec *x, bool *queued, struct excmd *c,
			 int op)
{
	bool q;

	pthread_mutex_lock(&x->lp->mu);
	q = !*queued;
	*queued = true;
	pthread_mutex_unlock(&x->lp->mu);
	if (!q)
		return;
	c->op = op;
	c->x = x;
	x_enqueue(x, c);
}

void local_exec_close_stdin(struct api_backend *be, struct api_exec *x)
{
	(void)be;
	enqueue_once(x, &x->close_queued, &x->c_close, C_CLOSE);
}

void local_exec_resume(struct api_backend *be, struct api_exec *x)
{
	(void)be;
	enqueue_once(x, &x->resume_queued, &x->c_resume, C_RESUME);
}

int local_exec_signal(struct api_backend *be, struct api_exec *x, int sig)
{
	int r = 0;

	(void)be;
	if (sig < 0 || sig >= NSIG)
		return -EINVAL;
	pthread_mutex_lock(&x->lp->mu);
	/* The zombie is kept until exec_free, so x->pid cannot name
	 * another process while we hold the lock.  While the spawn runs
	 * there is no process yet (as before a start). */
	if (x->spawning || x->pid <= 0 || x->reaped) {
		r = -ESRCH;
	} else if (kill(-x->pid, sig) < 0) {
		/* before setsid there is no group yet */
		if (errno != ESRCH || kill(x->pid, sig) < 0)
			r = -errno;
	}
	pthread_mutex_unlock(&x->lp->mu);
	return r;
}

void local_exec_free(struct api_backend *be, struct api_exec *x)
{
	struct exloop *lp;
	bool done = false;

	(void)be;
	if (!x)
		return;
	lp = x->lp;
	pthread_mutex_lock(&lp->mu);
	if (x->spawning) {
		/* the runtime's spawn_done hands x to the loop, which kills
		 * what the spawn made; the commands held for it are
		 * answered here, before we return */
		struct excmd *c = x->hold, *next;

		x->spawn_freed = true;
		x->hold = x->hold_tail = NULL;
		pthread_mutex_unlock(&lp->mu);
		for (; c; c = next) {
			next = c->next;
			if (c->op == C_WRITE)
				wbuf_fail((struct wbuf *)c, -EPIPE,
					  "the command was killed");
		}
		return;
	}
	if (lp->running && pthread_equal(pthread_self(), lp->thr)) {
		pthread_mutex_unlock(&lp->mu);
		/* from one of our callbacks: x is released after it returns
		 * (the grave), so the dispatching code may still look. */
		do_free(x);
		return;
	}
	x->free_done = &done;
	x->c_free.op = C_FREE;
	x->c_free.x = x;
	pthread_mutex_unlock(&lp->mu);
	enqueue(lp, &x->c_free);
	pthread_mutex_lock(&lp->mu);
	while (!done)
		pthread_cond_wait(&lp->cond, &lp->mu);
	pthread_mutex_unlock(&lp->mu);
}

/* The command's PID inside the sandbox: the last NSpid of its host PID
 * (the zombie is kept until exec_free, so this holds after exit too). */
int local_exec_pid(struct api_backend *be, struct api_exec *x)
{
	char path[64], buf[4096], *p, *e;
	long v = -1;
	int fd;
	ssize_t n;
	pid_t pid;

	(void)be;
	if (!x)
		return -ESRCH;
	pthread_mutex_lock(&x->lp->mu);
	pid = x->spawning ? 0 : x->pid;
	pthread_mutex_unlock(&x->lp->mu);
	if (pid <= 0)
		return -ESRCH;
	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -EIO;
	buf[n] = 0;
	p = strstr(buf, "\nNSpid:");
	if (!p)
		return -ENOSYS;
	p += 8;
	for (;;) {
		long t = strtol(p, &e, 10);
		if (e == p)
			break;
		v = t;
		p = e;
	}
	return v > 0 ? (int)v : -EIO;
}

/* ---- recovery ------------------------------------------------------------ */

int local_exec_jobs(struct api_backend *be, const char *id, char ***out)
{
	struct local *l = local_of(be);
	struct dirent *e;
	char **v = NULL, **nv;
	size_t n = 0;
	int fd = jobs_dir(l, id, false);
	DIR *d;

	*out = NULL;
	if (fd < 0)
		return fd == -ENOENT ? 0 : fd;
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return -errno;
	}
	while ((e = readdir(d))) {
		if (e->d_type != DT_DIR || !job_name_ok(e->d_name))
			continue;
		nv = realloc(v, (n + 2) * sizeof(*v));
		if (!nv)
			break;
		v = nv;
		v[n] = strdup(e->d_name);
		if (!v[n])
			break;
		v[++n] = NULL;
	}
	closedir(d);
	*out = v;
	return (int)n;
}

/* `cmd` of a job directory: start time, then the command line. */
static void read_cmd(int dir, struct api_exec_info *info)
{
	char buf[8192], *nl;
	long long sec = 0;
	long nsec = 0;
	ssize_t n = 0;
	int fd = openat(dir, "cmd", O_RDONLY | O_CLOEXEC);

	if (fd >= 0) {
		n = read(fd, buf, sizeof(buf) - 1);
		close(fd);
	}
	buf[n > 0 ? n : 0] = 0;
	if (sscanf(buf, "%lld %ld", &sec, &nsec) == 2) {
		info->t_start.tv_sec = (time_t)sec;
		info->t_start.tv_nsec = nsec;
	}
	nl = strchr(buf, '\n');
	info->cmd = strdup(nl ? nl + 1 : "");
}

/* The exit status a monitor left in `exit`, or -1. */
static int read_exit(int dir)
{
	char buf[16] = "";
	int fd = openat(dir, "exit", O_RDONLY | O_CLOEXEC), v = -1;

	if (fd >= 0) {
		if (read(fd, buf, sizeof(buf) - 1) > 0)
			v = atoi(buf);
		close(fd);
	}
	return v >= 0 && v <= 255 ? v : -1;
}

void local_exec_attach(struct api_backend *be, const char *id,
		       const char *job, const struct api_exec_cbs *cbs,
		       void *ud, struct api_exec **out,
		       struct api_exec_info *info)
{
	struct local *l = local_of(be);
	struct exloop *lp = loop_of(l);
	struct api_exec *x;
	struct shim_msg m;
	int jobs = -1, dir = -1, c = -1, fds[4], nfd = 0, k, i;
	ssize_t n;

	*out = NULL;
	memset(info, 0, sizeof(*info));
	if (!lp || lp->stop || !job_name_ok(job)) {
		cbs->started(ud, -EINVAL, "no such job");
		return;
	}
	jobs = jobs_dir(l, id, false);
	if (jobs >= 0)
		dir = openat(jobs, job, O_RDONLY | O_DIRECTORY | O_CLOEXEC |
			     O_NOFOLLOW);
	x = calloc(1, sizeof(*x));
	if (dir < 0 || !x) {
		cbs->started(ud, dir < 0 ? -ENOENT : -ENOMEM,
			     dir < 0 ? "no such job" : "out of memory");
		goto out;
	}
	snprintf(x->sb, sizeof(x->sb), "%s", id);
	x->lp = lp;
	x->cbs = *cbs;
	x->ud = ud;
	x->attach = true;
	x->spool[0] = x->spool[1] = -1;
	snprintf(x->name, sizeof(x->name), "%s", job);
	for (k = 0; k < W__N; k++) {
		x->fd[k] = -1;
		x->w[k].x = x;
		x->w[k].kind = k;
	}
	read_cmd(dir, info);
	c = shim_connect(dir);
	if (c < 0) {
		/* no monitor: what it recorded is all there is */
		x->code = read_exit(dir);
		x->exit_seen = true;
		x->reaped = true;
		if (x->code < 0)
			x->lost = "the job's monitor is gone: its exit status "
				  "is lost";
		close(dir);
		dir = -1;
		job_dir_remove(jobs, job);
		goto start;
	}
	setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &shim_tmo, sizeof(shim_tmo));
	n = shim_recv(c, &m, fds, 4, &nfd);
	if (n != (ssize_t)sizeof(m) || m.type != M_HELLO) {
		for (i = 0; i < nfd; i++)
			close(fds[i]);
		close(c);
		free(x);
		free(info->cmd);
		info->cmd = NULL;
		cbs->started(ud, -EBUSY, "the job's monitor serves another "
			     "mount");
		goto out;
	}
	setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &(struct timeval){ 0 },
		   sizeof(struct timeval));
	i = 0;
	if ((m.a & H_OUT) && i < nfd)
		x->fd[W_OUT] = fds[i++];
	if ((m.a & H_ERR) && i < nfd)
		x->fd[W_ERR] = fds[i++];
	if ((m.a & H_SOUT) && i < nfd)
		x->spool[0] = fds[i++];
	if ((m.a & H_SERR) && i < nfd)
		x->spool[1] = fds[i++];
	for (k = W_OUT; k <= W_ERR; k++)
		if (x->fd[k] >= 0)
			fcntl(x->fd[k], F_SETFL, O_NONBLOCK);
	x->shim = true;
	x->fd[W_PID] = c;
	x->pid = m.c;
	if (m.a & H_EXITED) {
		x->exit_seen = true;
		x->code = m.b;
	}
	info->lost[0] = m.d;
	info->lost[1] = m.e;
start:
	x->c_start.op = C_START;
	x->c_start.x = x;
	*out = x;
	enqueue(lp, &x->c_start);
out:
	if (dir >= 0)
		close(dir);
	if (jobs >= 0)
		close(jobs);
}

/* The sandbox is stopping and its processes are dead: have the monitors
 * of its attached jobs reap their commands (see M_REAP).  Waits for the
 * exec thread to have sent the messages, not for the monitors. */
void local_exec_reap(struct local *l, const char *id)
{
	struct exloop *lp = loop_of(l);
	struct reapcmd rc;

	if (lp && !lp->stop)
		spares_drop(lp, id);
	if (!lp || lp->stop || !lp->running ||
	    pthread_equal(pthread_self(), lp->thr))
		return;
	memset(&rc, 0, sizeof(rc));
	rc.cmd.op = C_REAPSB;
	rc.lp = lp;
	snprintf(rc.sb, sizeof(rc.sb), "%s", id);
	enqueue(lp, &rc.cmd);
	pthread_mutex_lock(&lp->mu);
	while (!rc.done)
		pthread_cond_wait(&lp->cond, &lp->mu);
	pthread_mutex_unlock(&lp->mu);
}

/* The sandbox goes: release every monitor nobody attached to (their
 * commands die with the sandbox's cgroup; each monitor then exits). */
void local_exec_forget(struct local *l, const char *id)
{
	char **names = NULL;
	struct api_backend be = { .priv = l };
	int n, jobs = jobs_dir(l, id, false);

	if (jobs < 0)
		return;
	n = local_exec_jobs(&be, id, &names);
	for (int i = 0; i < n; i++) {
		struct shim_msg m;
		int fds[4], nfd, c, d;

		d = openat(jobs, names[i], O_RDONLY | O_DIRECTORY | O_CLOEXEC |
			   O_NOFOLLOW);
		c = d >= 0 ? shim_connect(d) : -1;
		if (c >= 0) {
			setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &shim_tmo,
				   sizeof(shim_tmo));
			if (shim_recv(c, &m, fds, 4, &nfd) ==
			    (ssize_t)sizeof(m) && m.type == M_HELLO) {
				if (!(m.a & H_EXITED) && m.c > 0)
					kill(-m.c, SIGKILL);
				m = (struct shim_msg){ .type = M_RELEASE };
				send(c, &m, sizeof(m), MSG_NOSIGNAL);
			}
			for (int k = 0; k < nfd; k++)
				close(fds[k]);
			close(c);
		}
		if (d >= 0)
			close(d);
		free(names[i]);
	}
	free(names);
	close(jobs);
}
