/* sbx.c - drive sbxfs sandboxes with nothing but the files of the mount.
 *
 *   sbx [-m MOUNT] run [-n] SANDBOX -- CMD [ARG...]
 *   sbx [-m MOUNT] new NAME [key=value...]
 *   sbx [-m MOUNT] rm NAME
 *   sbx [-m MOUNT] ls
 *   sbx [-m MOUNT] status NAME
 *
 * MOUNT comes from -m, else $SBX_MOUNT, else /mnt/sbxfs.  `run` works like
 * `ssh host cmd`: the arguments are quoted into one shell line, our stdin
 * is forwarded (not with -n), stdout and stderr stream to ours, and sbx
 * exits with the command's exit code (128+N for signal N; 125 when the job
 * could not start, 2 for usage errors, 255 when the exit code was lost).
 * The job directory proc/sbx.* is removed at the end, also on Ctrl-C
 * (SIGINT 130, SIGTERM 143, SIGHUP 129) and when our stdout goes away
 * (141, as if killed by SIGPIPE; removing the job kills the command).
 *
 * Why C and not the POSIX sh script it replaces (same interface): the
 * script spent 9 execve and 47 FUSE requests on `sbx run BOX -- true`.
 * This makes one process and only the requests the files need: the
 * sandbox's proc/ directory is opened once (O_PATH) and every job file is
 * opened relative to the job directory, so no path is walked twice;
 * streams are read with 1 MiB reads (one FUSE READ each at the mount's 1
 * MiB request size); splice(2) from a stream file is no use (the kernel
 * answers it with an early 0 on FUSE direct-I/O files).  Threads instead
 * of poll(): a poll() on a FUSE file is a request of its own each time, a
 * blocked read is one parked request in sbxfs and costs nothing while it
 * waits.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define PROG	  "sbx"
#define IOBUF	  (1u << 20) /* the mount's request size */
#define ERR_MAX	  1024	     /* bytes of NAME/err shown in messages */
#define JOB_TRIES 20

static const char *mnt = "/mnt/sbxfs";

static void usage(void)
{
	fputs("usage: sbx [-m MOUNT] run [-n] SANDBOX -- CMD [ARG...]\n"
	      "       sbx [-m MOUNT] new NAME [key=value...]\n"
	      "       sbx [-m MOUNT] rm NAME\n"
	      "       sbx [-m MOUNT] ls\n"
	      "       sbx [-m MOUNT] status NAME\n",
	      stderr);
	exit(2);
}

static void __attribute__((noreturn, format(printf, 2, 3)))
die_code(int code, const char *fmt, ...)
{
	va_list ap;

	fputs(PROG ": ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(code);
}

#define die(...) die_code(2, __VA_ARGS__)

/* write(2) until done; false on an error (errno set). */
static bool write_all(int fd, const char *buf, size_t len)
{
	while (len) {
		ssize_t n = write(fd, buf, len);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return false;
		}
		buf += n;
		len -= (size_t)n;
	}
	return true;
}

/* Up to cap-1 bytes of a small file at dirfd/path, NUL-terminated, with
 * trailing newlines removed (what $(...) would give); -1 on errors. */
static ssize_t read_small(int dirfd, const char *path, char *buf, size_t cap)
{
	int fd = openat(dirfd, path, O_RDONLY | O_CLOEXEC);
	size_t len = 0;

	if (fd < 0)
		return -1;
	while (len < cap - 1) {
		ssize_t n = read(fd, buf + len, cap - 1 - len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	close(fd);
	while (len && buf[len - 1] == '\n')
		len--;
	buf[len] = '\0';
	return (ssize_t)len;
}

/* The sandbox's last error sentence ("" when there is none). */
static const char *sb_err(const char *sb, char *buf, size_t cap)
{
	char path[PATH_MAX];

	buf[0] = '\0';
	if (snprintf(path, sizeof path, "%s/%s/err", mnt, sb) <
	    (int)sizeof path)
		read_small(AT_FDCWD, path, buf, cap);
	return buf;
}

/* A sandbox name names a directory of the mount, never a path that
 * leads elsewhere on the host (`sbx rm ../x` would rmdir a host dir). */
static bool name_ok(const char *name)
{
	return *name && !strchr(name, '/') && strcmp(name, ".") &&
	       strcmp(name, "..");
}

/* ---- run ---------------------------------------------------------------- */

/* What the signal handler needs: it removes the job (which kills the
 * command) and exits; unlinkat and _exit are async-signal-safe. */
static int g_procfd = -1;
static char g_job[64];
static volatile sig_atomic_t g_job_made;

static int sig_code(int sig)
{
	return 128 + sig;
}

static void on_signal(int sig)
{
	if (g_job_made)
		unlinkat(g_procfd, g_job, AT_REMOVEDIR);
	_exit(sig_code(sig));
}

static void remove_job(void)
{
	sigset_t all, old;

	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	if (g_job_made) {
		g_job_made = 0;
		unlinkat(g_procfd, g_job, AT_REMOVEDIR);
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
}

/* Our output went away (EPIPE, or any write error): end like a process
 * killed by SIGPIPE, but remove the job first. */
static void __attribute__((noreturn)) lost_output(void)
{
	remove_job();
	_exit(sig_code(SIGPIPE));
}

/* One argument as a single-quoted shell word: 'it'\''s'. */
static size_t quote(char *out, const char *a)
{
	size_t n = 0;

	out[n++] = '\'';
	for (; *a; a++) {
		if (*a == '\'') {
			memcpy(out + n, "'\\''", 4);
			n += 4;
		} else {
			out[n++] = *a;
		}
	}
	out[n++] = '\'';
	return n;
}

/* The command line: every argument quoted, blanks between, a newline. */
static char *make_line(char **argv, int argc, size_t *len)
{
	size_t cap = 2, n = 0;
	char *line;

	for (int i = 0; i < argc; i++)
		cap += 4 * strlen(argv[i]) + 3;
	line = malloc(cap);
	if (!line)
		die("out of memory");
	for (int i = 0; i < argc; i++) {
		if (i)
			line[n++] = ' ';
		n += quote(line + n, argv[i]);
	}
	line[n++] = '\n';
	*len = n;
	return line;
}

struct pump {
	int from, to;
	bool fwd_stdin; /* from is our stdin: write errors are expected */
	char *buf;
	pthread_t tid;
};

/* Copy one stream to EOF.  Job streams: a read error ends the stream (the
 * command is gone; its exit code tells the rest); a write error on our
 * side ends sbx.  stdin: the job may close its stdin or exit while we
 * forward, so a write error only ends the forwarding. */
static void *pump_main(void *arg)
{
	struct pump *p = arg;

	for (;;) {
		ssize_t n;

		if (!p->buf) {
			p->buf = malloc(IOBUF);
			if (!p->buf)
				break;
		}
		n = read(p->from, p->buf, IOBUF);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		if (!write_all(p->to, p->buf, (size_t)n)) {
			if (p->fwd_stdin)
				break;
			lost_output();
		}
	}
	free(p->buf);
	p->buf = NULL;
	if (p->fwd_stdin)
		close(p->to); /* the job's EOF (when nobody else holds it) */
	return NULL;
}

static int start_pump(struct pump *p, int from, int to, bool fwd_stdin)
{
	pthread_attr_t a;
	int err;

	p->from = from;
	p->to = to;
	p->fwd_stdin = fwd_stdin;
	p->buf = NULL;
	pthread_attr_init(&a);
	pthread_attr_setstacksize(&a, 64 * 1024);
	err = pthread_create(&p->tid, &a, pump_main, p);
	pthread_attr_destroy(&a);
	return err;
}

static void catch_signals(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal;
	sigfillset(&sa.sa_mask);
	/* no SA_RESTART: nothing to resume, the handler exits */
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	sa.sa_handler = SIG_IGN;
	sigaction(SIGPIPE, &sa, NULL);
}

/* A job name nobody else picks: pid, time, and a counter on clashes. */
static void make_job(const char *sb, const char *sbpath)
{
	char ebuf[ERR_MAX + 1];
	sigset_t sigs, old;
	long t = (long)time(NULL);

	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGHUP);
	for (int n = 0;; n++) {
		int r, e;

		if (n)
			snprintf(g_job, sizeof g_job, "sbx.%d.%ld.%d",
				 (int)getpid(), t, n);
		else
			snprintf(g_job, sizeof g_job, "sbx.%d.%ld",
				 (int)getpid(), t);
		/* no signal between the mkdir and knowing it was made */
		sigprocmask(SIG_BLOCK, &sigs, &old);
		r = mkdirat(g_procfd, g_job, 0755);
		e = errno;
		if (r == 0)
			g_job_made = 1;
		sigprocmask(SIG_SETMASK, &old, NULL);
		if (r == 0)
			return;
		if (e != EEXIST || n + 1 >= JOB_TRIES) {
			sb_err(sb, ebuf, sizeof ebuf);
			die("cannot create a job in %s/proc: %s", sbpath,
			    *ebuf ? ebuf : strerror(e));
		}
	}
}

/* Exit code from proc/JOB/wait (fd, opened with the other files so that
 * no LOOKUP and OPEN wait for it after the streams ended): "CODE\n" (one
 * read: the answer comes whole); -1 when it is not a number. */
static int read_wait(int fd)
{
	char buf[32];
	size_t len = 0;
	char *end;
	long code;

	while (len < sizeof buf - 1 && !memchr(buf, '\n', len)) {
		ssize_t n = read(fd, buf + len, sizeof buf - 1 - len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	close(fd);
	buf[len] = '\0';
	errno = 0;
	code = strtol(buf, &end, 10);
	if (errno || end == buf || buf[0] < '0' || buf[0] > '9' ||
	    (*end && strcmp(end, "\n")) || code > 255)
		return -1;
	return (int)code;
}

/* Our stdin is /dev/null (or closed): forwarding it would only cost the
 * open of the job's stdin and a thread; /dev/null there reads the same. */
static bool stdin_is_empty(void)
{
	struct stat st;

	if (fstat(STDIN_FILENO, &st) < 0)
		return errno == EBADF;
	return S_ISCHR(st.st_mode) && major(st.st_rdev) == 1 &&
	       minor(st.st_rdev) == 3;
}

/* A pipe as our stdout: as large as one of our reads, so that a read is
 * one write and a reader on the other side that takes 16 KiB at a time
 * does not wake us for each (sbx + wc: 1k context switches for 256 MiB
 * instead of 25k).  Best effort. */
static void pipe_out_size(void)
{
	struct stat st;

	if (fstat(STDOUT_FILENO, &st) == 0 && S_ISFIFO(st.st_mode))
		(void)fcntl(STDOUT_FILENO, F_SETPIPE_SZ, IOBUF);
}

/* ---- run through NAME/run (fs/run.c): one open per command ------------ */

static int g_runfd = -1;

/* stdin to the command: frames of '0', the length (4 bytes, little-
 * endian) and the bytes, then '.' with length 0.  pwrite, not write: a
 * write would wait for the file position lock our parked read holds. */
static void *run_stdin_main(void *arg)
{
	char *buf = malloc(IOBUF + 5);
	static const char end[5] = { '.', 0, 0, 0, 0 };

	(void)arg;
	for (;;) {
		ssize_t n;

		if (!buf)
			break;
		n = read(STDIN_FILENO, buf + 5, IOBUF);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		buf[0] = '0';
		buf[1] = (char)(n & 0xff);
		buf[2] = (char)((n >> 8) & 0xff);
		buf[3] = (char)((n >> 16) & 0xff);
		buf[4] = (char)((n >> 24) & 0xff);
		if (pwrite(g_runfd, buf, (size_t)n + 5, 0) != n + 5) {
			/* the command closed its stdin or exited */
			free(buf);
			return NULL;
		}
	}
	free(buf);
	(void)!pwrite(g_runfd, end, sizeof end, 0);
	return NULL;
}

#define OUT_IOV 64

/* The output of one read goes out in one writev per run of frames of one
 * stream (a frame is one chunk of the command's output, often 64 KiB: a
 * write each would wake a pipe reader that much more often).  A write
 * error ends sbx as SIGPIPE would (the close kills the command). */
static void out_flush(int fd, struct iovec *iov, int *niov)
{
	int i = 0;

	while (i < *niov) {
		ssize_t n = writev(fd, iov + i, *niov - i);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			_exit(sig_code(SIGPIPE));
		while (i < *niov && (size_t)n >= iov[i].iov_len)
			n -= (ssize_t)iov[i++].iov_len;
		if (i < *niov) {
			iov[i].iov_base = (char *)iov[i].iov_base + n;
			iov[i].iov_len -= (size_t)n;
		}
	}
	*niov = 0;
}

static uint32_t le32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

/* `run` in one open of NAME/run.  Returns the exit code, or -1 when the
 * mount has no NAME/run (an older sbxfs): then the caller uses proc/. */
static int run_framed(const char *sb, const char *sbpath, const char *line,
		      size_t len, bool nostdin)
{
	char path[PATH_MAX], ebuf[ERR_MAX + 1], code_txt[16];
	unsigned char hdr[5];
	size_t hlen = 0, left = 0, clen = 0;
	int tag = 0, code = -1, ofd = -1, niov = 0;
	struct iovec iov[OUT_IOV];
	char *buf, *first;
	pthread_t tid;
	ssize_t n;

	if (snprintf(path, sizeof path, "%s/run", sbpath) >= (int)sizeof path)
		die("no sandbox '%s' under %s", sb, mnt);
	g_runfd = open(path, O_RDWR | O_CLOEXEC);
	if (g_runfd < 0 && (errno == ENOENT || errno == EOPNOTSUPP))
		return -1;
	if (g_runfd < 0)
		die("no sandbox '%s' under %s: %s", sb, mnt, strerror(errno));
	/* a signal now ends sbx; the close kills the command */
	catch_signals();
	first = malloc(len + 1);
	if (!first)
		die("out of memory");
	first[0] = nostdin ? 'c' : 'C';
	memcpy(first + 1, line, len);
	n = pwrite(g_runfd, first, len + 1, 0);
	free(first);
	if (n != (ssize_t)len + 1) {
		int e = errno;

		sb_err(sb, ebuf, sizeof ebuf);
		fprintf(stderr, PROG ": cannot start: %s\n",
			*ebuf ? ebuf : strerror(e));
		exit(125);
	}
	if (!nostdin) {
		pthread_attr_t a;

		pthread_attr_init(&a);
		pthread_attr_setstacksize(&a, 64 * 1024);
		if (pthread_create(&tid, &a, run_stdin_main, NULL) == 0)
			pthread_detach(tid);
		else
			(void)!pwrite(g_runfd, ".\0\0\0", 5, 0);
		pthread_attr_destroy(&a);
	}
	pipe_out_size();
	buf = malloc(IOBUF);
	if (!buf)
		die("out of memory");
	/* frames: tag, length (4 bytes, little-endian), bytes; a read may
	 * end anywhere in one */
	for (;;) {
		size_t i = 0;

		n = pread(g_runfd, buf, IOBUF, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		while (i < (size_t)n) {
			if (left == 0 && hlen < sizeof hdr) {
				hdr[hlen++] = (unsigned char)buf[i++];
				if (hlen < sizeof hdr)
					continue;
				tag = hdr[0];
				left = le32(hdr + 1);
				clen = 0;
				if (left)
					continue;
			}
			size_t take = (size_t)n - i < left ? (size_t)n - i :
							      left;

			if (tag == '1' || tag == '2') {
				int fd = tag == '1' ? STDOUT_FILENO :
						      STDERR_FILENO;

				if (fd != ofd || niov == OUT_IOV)
					out_flush(ofd, iov, &niov);
				ofd = fd;
				iov[niov++] = (struct iovec){ buf + i, take };
			} else if (tag == 'x') {
				for (size_t k = 0; k < take; k++)
					if (clen < sizeof code_txt - 1)
						code_txt[clen++] = buf[i + k];
			}
			i += take;
			left -= take;
			if (left == 0) {
				if (tag == 'x') {
					code_txt[clen] = '\0';
					code = (int)strtol(code_txt, NULL, 10);
				}
				hlen = 0;
			}
		}
		out_flush(ofd, iov, &niov); /* before buf is read into again */
	}
	free(buf);
	if (code < 0 || code > 255) {
		sb_err(sb, ebuf, sizeof ebuf);
		fprintf(stderr, PROG ": lost the exit code of the command%s%s\n",
			*ebuf ? ": " : "", ebuf);
		return 255;
	}
	/* the stdin forwarder may still wait on our stdin: exit ends it */
	return code;
}

static int cmd_run(int argc, char **argv)
{
	/* static: the stdin forwarder may still run (and own a buffer)
	 * when we exit */
	static struct pump pin, perr, pout;
	char sbpath[PATH_MAX], ebuf[ERR_MAX + 1];
	bool nostdin = false;
	int o, jfd, infd = -1, outfd, errfd, cfd, wfd, code;
	const char *sb;
	size_t len;
	char *line;
	ssize_t w;

	optind = 0; /* glibc: start over (0 also resets its inner state) */
	while ((o = getopt(argc, argv, "+n")) != -1) {
		if (o == 'n')
			nostdin = true;
		else
			usage();
	}
	argc -= optind;
	argv += optind;
	if (argc < 1)
		usage();
	sb = argv[0];
	argc--;
	argv++;
	if (argc && !strcmp(argv[0], "--")) {
		argc--;
		argv++;
	}
	if (argc < 1)
		usage();
	if (!nostdin && stdin_is_empty())
		nostdin = true;
	if (!name_ok(sb) || snprintf(sbpath, sizeof sbpath, "%s/%s", mnt, sb) >=
				(int)sizeof sbpath - 8)
		die("no sandbox '%s' under %s", sb, mnt);
	line = make_line(argv, argc, &len);
	code = run_framed(sb, sbpath, line, len, nostdin);
	if (code >= 0) {
		free(line);
		return code;
	}

	g_procfd = open(sbpath, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (g_procfd >= 0) {
		int pfd =
		    openat(g_procfd, "proc", O_PATH | O_DIRECTORY | O_CLOEXEC);

		close(g_procfd);
		g_procfd = pfd;
	}
	if (g_procfd < 0)
		die("no sandbox '%s' under %s", sb, mnt);
	catch_signals();
	make_job(sb, sbpath);

	jfd = openat(g_procfd, g_job, O_PATH | O_DIRECTORY | O_CLOEXEC);
	/* Hold stdin open across the start so the job gets a stream, not
	 * /dev/null; with -n nobody does and the job reads EOF at once.
	 * The readers are open before the start: nothing is spooled for
	 * nobody. */
	if (jfd >= 0 && !nostdin)
		infd = openat(jfd, "stdin", O_WRONLY | O_CLOEXEC);
	outfd = jfd < 0 ? -1 : openat(jfd, "stdout", O_RDONLY | O_CLOEXEC);
	errfd = jfd < 0 ? -1 : openat(jfd, "stderr", O_RDONLY | O_CLOEXEC);
	wfd = jfd < 0 ? -1 : openat(jfd, "wait", O_RDONLY | O_CLOEXEC);
	cfd = jfd < 0 ? -1 : openat(jfd, "cmd", O_WRONLY | O_CLOEXEC);
	if (jfd < 0 || (!nostdin && infd < 0) || outfd < 0 || errfd < 0 ||
	    wfd < 0 || cfd < 0) {
		int e = errno;

		remove_job();
		die("cannot open the files of %s/proc/%s: %s", sbpath, g_job,
		    strerror(e));
	}
	w = write(cfd, line, len);
	if (close(cfd) < 0 || w != (ssize_t)len) {
		remove_job();
		sb_err(sb, ebuf, sizeof ebuf);
		fprintf(stderr, PROG ": cannot start: ");
		if (*ebuf)
			fprintf(stderr, "%s\n", ebuf);
		else
			fprintf(stderr, "see %s/err\n", sbpath);
		exit(125);
	}
	free(line);

	if (infd >= 0 && start_pump(&pin, STDIN_FILENO, infd, true) != 0)
		close(infd); /* cannot forward: the job sees EOF */
	if (start_pump(&perr, errfd, STDERR_FILENO, false) != 0) {
		remove_job();
		die("cannot start a thread");
	}
	pipe_out_size();
	pout.tid = pthread_self();
	pout.from = outfd;
	pout.to = STDOUT_FILENO;
	pout.fwd_stdin = false;
	pout.buf = NULL;
	pump_main(&pout);
	pthread_join(perr.tid, NULL);

	code = read_wait(wfd);
	remove_job();
	if (code < 0) {
		fprintf(stderr, PROG ": lost the exit code of the job\n");
		return 255;
	}
	/* The stdin forwarder may still wait on our stdin: exit ends it. */
	return code;
}

/* ---- the rest ----------------------------------------------------------- */

static int cmd_new(int argc, char **argv)
{
	char ebuf[ERR_MAX + 1], path[PATH_MAX];
	size_t cap = 6, n;
	char *line;
	int fd, e = 0;

	if (argc < 1)
		usage();
	for (int i = 0; i < argc; i++)
		cap += strlen(argv[i]) + 1;
	line = malloc(cap);
	if (!line)
		die("out of memory");
	n = (size_t)snprintf(line, cap, "new");
	for (int i = 0; i < argc; i++)
		n += (size_t)snprintf(line + n, cap - n, " %s", argv[i]);
	line[n++] = '\n';
	if (snprintf(path, sizeof path, "%s/ctl", mnt) >= (int)sizeof path)
		die("new %s: mount path too long", argv[0]);
	fd = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC);
	if (fd < 0 || !write_all(fd, line, n))
		e = errno;
	if (fd >= 0 && close(fd) < 0 && !e)
		e = errno;
	free(line);
	if (e)
		die("new %s: %s", argv[0],
		    *sb_err(argv[0], ebuf, sizeof ebuf) ? ebuf : strerror(e));
	return 0;
}

static int cmd_rm(int argc, char **argv)
{
	char ebuf[ERR_MAX + 1], path[PATH_MAX];

	if (argc != 1)
		usage();
	if (!name_ok(argv[0]))
		die("rm %s: not a sandbox name", argv[0]);
	if (snprintf(path, sizeof path, "%s/%s", mnt, argv[0]) >=
	    (int)sizeof path)
		die("rm %s: name too long", argv[0]);
	if (rmdir(path) < 0) {
		int e = errno;

		die("rm %s: %s", argv[0],
		    *sb_err(argv[0], ebuf, sizeof ebuf) ? ebuf : strerror(e));
	}
	return 0;
}

/* Like the glob MOUNT/ * /: names not starting with '.', that are (or
 * lead by symlink to) directories, in collation order. */
static int ls_filter(const struct dirent *d)
{
	return d->d_name[0] != '.';
}

static int cmd_ls(int argc, char **argv)
{
	struct dirent **ents;
	int n, dfd;

	(void)argv;
	(void)argc;
	dfd = open(mnt, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	n = dfd < 0 ? -1 : scandir(mnt, &ents, ls_filter, alphasort);
	if (n < 0)
		return 0; /* like an unmatched glob: nothing listed */
	for (int i = 0; i < n; i++) {
		char st[256], path[NAME_MAX + 16];
		struct stat sbuf;
		char *nl;

		if (fstatat(dfd, ents[i]->d_name, &sbuf, 0) == 0 &&
		    S_ISDIR(sbuf.st_mode)) {
			/* first line of status; "?" when unreadable */
			snprintf(path, sizeof path, "%s/status",
				 ents[i]->d_name);
			if (read_small(dfd, path, st, sizeof st) < 0)
				st[0] = '\0';
			nl = strchr(st, '\n');
			if (nl)
				*nl = '\0';
			printf("%-24s %s\n", ents[i]->d_name, *st ? st : "?");
		}
		free(ents[i]);
	}
	free(ents);
	close(dfd);
	return fflush(stdout) == 0 ? 0 : 1;
}

static int cmd_status(int argc, char **argv)
{
	char path[PATH_MAX], buf[4096];
	int fd;
	ssize_t n;

	if (argc != 1)
		usage();
	if (!name_ok(argv[0]))
		die_code(1, "%s: not a sandbox name", argv[0]);
	if (snprintf(path, sizeof path, "%s/%s/status", mnt, argv[0]) >=
	    (int)sizeof path)
		die_code(1, "%s/%s/status: name too long", mnt, argv[0]);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		die_code(1, "%s: %s", path, strerror(errno));
	while ((n = read(fd, buf, sizeof buf)) != 0) {
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			die_code(1, "%s: %s", path, strerror(errno));
		if (!write_all(STDOUT_FILENO, buf, (size_t)n))
			die_code(1, "write error: %s", strerror(errno));
	}
	close(fd);
	return 0;
}

int main(int argc, char **argv)
{
	const char *env = getenv("SBX_MOUNT");
	const char *sub;
	int o;

	if (env && *env)
		mnt = env;
	while ((o = getopt(argc, argv, "+m:h")) != -1) {
		if (o == 'm')
			mnt = optarg;
		else
			usage();
	}
	argc -= optind;
	argv += optind;
	if (argc < 1)
		usage();
	sub = argv[0];
	if (!strcmp(sub, "run"))
		return cmd_run(argc, argv);
	if (!strcmp(sub, "new"))
		return cmd_new(argc - 1, argv + 1);
	if (!strcmp(sub, "rm"))
		return cmd_rm(argc - 1, argv + 1);
	if (!strcmp(sub, "ls"))
		return cmd_ls(argc - 1, argv + 1);
	if (!strcmp(sub, "status"))
		return cmd_status(argc - 1, argv + 1);
	usage();
}
