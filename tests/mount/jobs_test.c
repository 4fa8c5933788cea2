/* jobs_test.c - issue 3 as mount tests: NAME/exec, NAME/proc/JOB/ and
 * sbx (tools/sbx.c) driven with shell tools on a real mount, plus the parts only C
 * can check (poll, FUSE interrupts, thread count under 100 blocked
 * readers). */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

static struct mnt m;

static void setup(void)
{
	int r = mnt_start(&m, NULL, NULL);

	cr_assert_eq(r, 0, "mount failed: %s", strerror(-r));
}

static void teardown(void)
{
	mnt_teardown(&m);
}

TestSuite(jobs, .init = setup, .fini = teardown, .timeout = 300);

static void ok(const char *cmd)
{
	struct sh_out o = sh_run("%s", cmd);

	SH_OK(o);
	sh_free(&o);
}

/* `cmd` prints exactly `want`. */
static void expect_out(const char *want, const char *cmd)
{
	struct sh_out o = sh_run("%s", cmd);

	SH_OK(o);
	cr_assert_str_eq(o.out, want, "`%s` printed '%s', expected '%s'",
			 cmd, o.out, want);
	sh_free(&o);
}

static void mkbox(void)
{
	expect_out("running\n", "mkdir box && head -1 box/status");
}

static double now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + t.tv_nsec / 1e9;
}

/* Host processes whose command line contains `pat` (sandbox processes are
 * visible from the host's PID namespace). */
static int host_procs(const char *pat)
{
	struct sh_out o = sh_run("pgrep -c -f '%s' || true", pat);
	int n = (int)strtol(o.out, NULL, 10);

	sh_free(&o);
	return n;
}

/* ---- exec ---------------------------------------------------------------- */

/* exec 3<>box/exec; echo '...; exit 3' >&3; cat <&3 -> out, err, EOF */
Test(jobs, exec_out_err_eof)
{
	mkbox();
	expect_out("out\nerr\n",
		   "exec 3<>box/exec; "
		   "echo 'echo out; sleep 0.2; echo err >&2; exit 3' >&3; "
		   "cat <&3; exec 3<&-");
}

Test(jobs, exec_uname_and_binary)
{
	mkbox();
	expect_out("ok\n", "exec 3<>box/exec; echo 'uname -a' >&3; "
			   "cat <&3 | grep -q Linux && echo ok");
	/* 3 MB of 0xff bytes, byte-exact */
	expect_out("3000000 " "0\n",
		   "exec 3<>box/exec; "
		   "printf '%s\\n' "
		   "\"head -c 3000000 /dev/zero | tr '\\\\000' '\\\\377'\" "
		   ">&3; cat <&3 > $TMPD/b; exec 3<&-; "
		   "printf '%s ' $(wc -c < $TMPD/b); "
		   "tr -d '\\377' < $TMPD/b | wc -c");
}

/* A read before any command line fails (EINVAL), a second line EBUSY. */
Test(jobs, exec_misuse)
{
	struct sh_out o;

	mkbox();
	o = sh_run("exec 3<>box/exec; cat <&3");
	SH_FAILS(o);
	cr_assert(strstr(o.err, "Invalid argument"), "stderr: %s", o.err);
	sh_free(&o);
	o = sh_run("exec 3<>box/exec; echo true >&3; echo true >&3");
	SH_FAILS(o);
	sh_free(&o);
	expect_out("1\n", "grep -c 'already started' box/err");
}

/* Closing before exit kills the command and what it started. */
Test(jobs, exec_close_kills)
{
	mkbox();
	/* close once the command says both sleeps were started */
	ok("exec 3<>box/exec; "
	   "echo 'sleep 4321 & echo up; exec sleep 4322' >&3; "
	   "[ \"$(head -1 <&3)\" = up ] && exec 3<&-");
	for (int i = 0; i < 50 && host_procs("sleep 432[12]"); i++)
		usleep(100 * 1000);
	cr_assert_eq(host_procs("sleep 432[12]"), 0,
		     "the command survived the close");
}

/* ---- NAME/run (fs/run.c) -------------------------------------------------- */

/* What a session's frames carried, parsed here independently of sbx. */
struct frames {
	char out[8192], err[8192], code[16];
	size_t nout, nerr;
	bool exited;
	int rerr; /* errno of the read that ended it, 0 at EOF */
	bool bad; /* an unknown tag or a frame after 'x' */
};

static void read_frames(int fd, struct frames *f)
{
	unsigned char buf[4096], hdr[5];
	size_t hlen = 0, left = 0, clen = 0;
	int tag = 0;

	memset(f, 0, sizeof *f);
	for (;;) {
		ssize_t n = pread(fd, buf, sizeof buf, 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			f->rerr = errno;
		if (n <= 0)
			return;
		for (ssize_t i = 0; i < n;) {
			if (left == 0) {
				hdr[hlen++] = buf[i++];
				if (hlen < 5)
					continue;
				hlen = 0;
				tag = hdr[0];
				left = (size_t)hdr[1] | (size_t)hdr[2] << 8 |
				       (size_t)hdr[3] << 16 |
				       (size_t)hdr[4] << 24;
				if (f->exited || (tag != '1' && tag != '2' &&
						  tag != 'x'))
					f->bad = true;
				if (tag == 'x')
					f->exited = true;
				continue;
			}
			size_t take = (size_t)(n - i) < left ? (size_t)(n - i) :
							       left;
			char *dst = tag == '1' ? f->out : tag == '2' ? f->err :
				    f->code;
			size_t *dl = tag == '1' ? &f->nout :
				     tag == '2' ? &f->nerr : &clen;
			size_t cap = tag == 'x' ? sizeof f->code :
					    sizeof f->out;

			for (size_t k = 0; k < take; k++)
				if (*dl < cap - 1)
					dst[(*dl)++] = (char)buf[i + k];
			i += (ssize_t)take;
			left -= take;
		}
	}
}

static int run_open(int flags)
{
	char p[MNT_PATH_MAX + 16];

	snprintf(p, sizeof p, "%s/box/run", m.mnt);
	return open(p, flags | O_CLOEXEC);
}

/* A frame of stdin ('0', length, bytes) or its end ("." alone). */
static void run_stdin(int fd, const char *data)
{
	size_t n = strlen(data);
	char f[256] = { data[0] == '.' && !data[1] ? '.' : '0' };

	if (f[0] == '.')
		n = 0;
	f[1] = (char)n;
	memcpy(f + 5, data, n);
	cr_assert_eq(pwrite(fd, f, n + 5, 0), (ssize_t)(n + 5), "stdin: %s",
		     strerror(errno));
}

static void run_write(int fd, const char *frame)
{
	ssize_t n = pwrite(fd, frame, strlen(frame), 0);

	cr_assert_eq(n, (ssize_t)strlen(frame), "write '%s': %s", frame,
		     strerror(errno));
}

/* One command per open: stdout and stderr apart, the exit code, stdin
 * frames; the session is a job in proc/ while open and gone after. */
Test(jobs, run_frames)
{
	struct frames f;
	int fd;

	mkbox();
	fd = run_open(O_RDWR);
	cr_assert_geq(fd, 0, "open run: %s", strerror(errno));
	run_write(fd, "cecho out; echo err >&2; exit 3\n");
	expect_out("1\n", "ls box/proc | grep -c '^run\\.'");
	read_frames(fd, &f);
	cr_assert(!f.bad && f.exited && f.rerr == 0, "frames: bad %d exit %d "
		  "err %d", f.bad, f.exited, f.rerr);
	cr_assert_str_eq(f.out, "out\n");
	cr_assert_str_eq(f.err, "err\n");
	cr_assert_str_eq(f.code, "3");
	close(fd);
	expect_out("", "ls box/proc");

	/* stdin as a stream, ended by '.' */
	fd = run_open(O_RDWR);
	cr_assert_geq(fd, 0);
	run_write(fd, "Ccat; echo done");
	run_stdin(fd, "hello\n");
	/* a frame may come in pieces: the kernel splits large writes */
	cr_assert_eq(pwrite(fd, "0\006\0", 3, 0), 3);
	cr_assert_eq(pwrite(fd, "\0\0wor", 5, 0), 5);
	cr_assert_eq(pwrite(fd, "ld\n", 3, 0), 3);
	run_stdin(fd, ".");
	read_frames(fd, &f);
	cr_assert(f.exited && !f.bad);
	cr_assert_str_eq(f.out, "hello\nworld\ndone\n");
	cr_assert_str_eq(f.code, "0");
	close(fd);

	/* a signal: 128+N, as `wait` shows it */
	fd = run_open(O_RDWR);
	run_write(fd, "ckill -9 $$");
	read_frames(fd, &f);
	cr_assert_str_eq(f.code, "137");
	close(fd);

	/* every byte value, and more than one read's worth */
	ok("head -c 300000 /dev/urandom > $TMPD/r.bin");
	expect_out("0\n", "s=$(SBX_MOUNT=$MNT \"${SBX:-sbx}\" run box -- "
			  "cat < $TMPD/r.bin | sha256sum); "
			  "[ \"$s\" = \"$(sha256sum < $TMPD/r.bin)\" ]; "
			  "echo $?");
}

/* Bad input gets an errno and a sentence, never a hang. */
Test(jobs, run_misuse)
{
	struct frames f;
	char buf[16];
	int fd;

	mkbox();
	cr_assert_lt(run_open(O_RDONLY), 0);
	cr_assert_eq(errno, EINVAL);
	fd = run_open(O_RDWR);
	cr_assert_geq(fd, 0);
	/* a read before the command */
	cr_assert_lt(pread(fd, buf, sizeof buf, 0), 0);
	cr_assert_eq(errno, EINVAL);
	/* no mode byte */
	cr_assert_lt(pwrite(fd, "echo x", 6, 0), 0);
	cr_assert_eq(errno, EINVAL);
	expect_out("1\n", "grep -c 'the first write is' box/err");
	/* a control character, as for cmd */
	cr_assert_lt(pwrite(fd, "cecho \033x", 8, 0), 0);
	cr_assert_eq(errno, EINVAL);
	run_write(fd, "ccat");
	/* no stdin stream was asked for */
	cr_assert_lt(pwrite(fd, "0\003\0\0\0abc", 8, 0), 0);
	cr_assert_eq(errno, EPIPE);
	/* not a frame, and nothing after it is one either */
	cr_assert_lt(pwrite(fd, "zzzzz", 5, 0), 0);
	cr_assert_eq(errno, EINVAL);
	cr_assert_lt(pwrite(fd, ".\0\0\0\0", 5, 0), 0);
	cr_assert_eq(errno, EINVAL);
	expect_out("1\n", "grep -c 'expected frames of stdin' box/err");
	read_frames(fd, &f);
	cr_assert(f.exited && !f.bad);
	cr_assert_str_eq(f.out, "");
	cr_assert_str_eq(f.code, "0");
	close(fd);
	/* rmdir of its job ends the session: EOF without an exit frame */
	fd = run_open(O_RDWR);
	run_write(fd, "csleep 600");
	ok("rmdir box/proc/run.*");
	read_frames(fd, &f);
	cr_assert(!f.exited && f.rerr == 0, "exit %d err %d", f.exited,
		  f.rerr);
	close(fd);
	expect_out("", "ls box/proc");
}

/* Closing before exit kills the command and what it started. */
Test(jobs, run_close_kills)
{
	char buf[64];
	int fd;

	mkbox();
	fd = run_open(O_RDWR);
	cr_assert_geq(fd, 0);
	run_write(fd, "csleep 4331 & echo up; exec sleep 4332");
	/* the frame of "up\n": '1', length 3, the bytes */
	cr_assert_eq(pread(fd, buf, 8, 0), 8);
	cr_assert(!memcmp(buf, "1\003\0\0\0up\n", 8));
	close(fd);
	for (int i = 0; i < 50 && host_procs("sleep 433[12]"); i++)
		usleep(100 * 1000);
	cr_assert_eq(host_procs("sleep 433[12]"), 0,
		     "the command survived the close");
	expect_out("", "ls box/proc");
}

/* ---- proc/ --------------------------------------------------------------- */

Test(jobs, proc_mkdir_ls_rmdir)
{
	mkbox();
	ok("mkdir box/proc/a box/proc/b.2");
	expect_out("a\nb.2\n", "ls box/proc");
	expect_out("cmd\nctl\nstatus\nstderr\nstdin\nstdout\nwait\n",
		   "ls box/proc/a");
	expect_out("created\n", "head -1 box/proc/a/status");
	ok("! mkdir box/proc/a 2>/dev/null");
	ok("! mkdir 'box/proc/bad name' 2>/dev/null");
	ok("rmdir box/proc/a box/proc/b.2");
	expect_out("", "ls box/proc");
}

/* Data written before the start is delivered first. */
Test(jobs, stdin_before_start)
{
	mkbox();
	expect_out("hello\ndone\n",
		   "mkdir box/proc/j && printf 'hello\\n' > box/proc/j/stdin &&"
		   " echo 'cat; echo done' > box/proc/j/cmd && "
		   "cat box/proc/j/stdout");
	expect_out("0\n", "cat box/proc/j/wait");
}

/* No writer and nothing written: stdin is at EOF at once. */
Test(jobs, stdin_eof_without_writer)
{
	mkbox();
	expect_out("0\n", "mkdir box/proc/j && echo 'cat' > box/proc/j/cmd && "
			  "timeout 10 cat box/proc/j/wait");
}

/* The check: 100 MiB of binary through a held-open stdin. */
Test(jobs, stdin_100m_sha256)
{
	struct sh_out a, b;

	mkbox();
	ok("head -c 104857600 /dev/urandom > $TMPD/data.bin");
	a = sh_run_t(120,
		     "mkdir box/proc/j; exec 4>box/proc/j/stdin; "
		     "echo 'sha256sum' > box/proc/j/cmd; "
		     "cat $TMPD/data.bin >&4; exec 4>&-; "
		     "cut -d' ' -f1 box/proc/j/stdout");
	SH_OK(a);
	b = sh_run("sha256sum < $TMPD/data.bin | cut -d' ' -f1");
	SH_OK(b);
	cr_assert_str_eq(a.out, b.out, "digest through the job differs");
	expect_out("0\n", "cat box/proc/j/wait");
}

/* The signals come right after the cmd write returned: the job must be
 * signallable by then (the flake was a `kill` that found the exec not yet
 * stored: ESRCH, and `wait` blocked).  SIGINT waits for the command to
 * say it runs: dash (`sh -c`) catches SIGINT and swallows one that lands
 * while it vforks the command, so an early INT is lost by the shell, not
 * by us (reproducible on the host without sbxfs); `exec` avoids the fork. */
Test(jobs, kill_137_and_signals)
{
	mkbox();
	expect_out("137\n", "mkdir box/proc/k; echo 'sleep 1000' > "
			    "box/proc/k/cmd; echo kill > box/proc/k/ctl; "
			    "cat box/proc/k/wait");
	expect_out("143\n", "mkdir box/proc/t; echo 'sleep 1000' > "
			    "box/proc/t/cmd; echo 'kill TERM' > "
			    "box/proc/t/ctl; cat box/proc/t/wait");
	expect_out("130\n", "mkdir box/proc/i; echo 'echo up; exec sleep 1000' "
			    "> box/proc/i/cmd; "
			    "[ \"$(head -1 box/proc/i/stdout)\" = up ] && "
			    "echo 'kill 2' > box/proc/i/ctl; "
			    "cat box/proc/i/wait");
	/* bad signal: EINVAL and a sentence in err */
	ok("mkdir box/proc/b; echo 'sleep 1000' > box/proc/b/cmd; "
	   "! echo 'kill NOPE' > box/proc/b/ctl 2>/dev/null && "
	   "grep -q 'unknown signal' box/err && rmdir box/proc/b");
}

Test(jobs, exit_codes_and_status)
{
	struct sh_out o;

	mkbox();
	expect_out("7\n", "mkdir box/proc/e; echo 'exit 7' > box/proc/e/cmd; "
			  "cat box/proc/e/wait");
	o = sh_run("cat box/proc/e/status");
	SH_OK(o);
	cr_assert(!strncmp(o.out, "exited\n", 7), "status: %s", o.out);
	cr_assert(strstr(o.out, "\ncode: 7\n"), "status: %s", o.out);
	cr_assert(strstr(o.out, "\npid: "), "status: %s", o.out);
	cr_assert(strstr(o.out, "\nstarted: 20"), "status: %s", o.out);
	cr_assert(strstr(o.out, "\nended: 20"), "status: %s", o.out);
	sh_free(&o);
	expect_out("running\n", "mkdir box/proc/r; echo 'sleep 1000' > "
				"box/proc/r/cmd; head -1 box/proc/r/status");
	expect_out("exit 7\n", "cat box/proc/e/cmd");
	/* cmd twice: EBUSY */
	o = sh_run("echo true > box/proc/e/cmd");
	SH_FAILS(o);
	sh_free(&o);
	/* cwd and env before start */
	expect_out("/tmp v1\n",
		   "mkdir box/proc/c; printf 'cwd /tmp\\nenv V=v1\\n' > "
		   "box/proc/c/ctl; echo 'echo $(pwd) $V' > box/proc/c/cmd; "
		   "cat box/proc/c/stdout");
	/* rmdir of a running job kills it */
	ok("rmdir box/proc/r box/proc/e box/proc/c");
	expect_out("", "ls box/proc");
}

/* Output is kept for readers that come late, each from the start. */
Test(jobs, jobs_survive_readers)
{
	mkbox();
	ok("mkdir box/proc/j; echo 'echo hi; echo oops >&2; seq 1 20000' > "
	   "box/proc/j/cmd; cat box/proc/j/wait");
	expect_out("hi\n", "head -1 box/proc/j/stdout");
	expect_out("20001\n", "cat box/proc/j/stdout | wc -l");
	expect_out("oops\n", "cat box/proc/j/stderr");
	expect_out("same\n", "(echo hi; seq 1 20000) > $TMPD/w; "
			     "cat box/proc/j/stdout | cmp -s $TMPD/w - && "
			     "echo same");
}

/* rmdir of a running job: its processes are gone, its readers see EOF. */
Test(jobs, rmdir_kills)
{
	mkbox();
	/* rmdir once the reader got the first line (it is reading) */
	ok("mkdir box/proc/j; echo 'echo up; exec sleep 4331' > "
	   "box/proc/j/cmd; "
	   "(cat box/proc/j/stdout > $TMPD/r; echo eof >> $TMPD/r) & "
	   "i=0; until grep -q up $TMPD/r 2>/dev/null; do "
	   "i=$((i + 1)); [ $i -lt 500 ] || exit 1; sleep 0.02; done; "
	   "rmdir box/proc/j; wait");
	expect_out("up\neof\n", "cat $TMPD/r");
	for (int i = 0; i < 50 && host_procs("sleep 433[1]"); i++)
		usleep(100 * 1000);
	cr_assert_eq(host_procs("sleep 433[1]"), 0, "job survived rmdir");
}

/* Large output with nobody reading is paused, not dropped: a late reader
 * gets all of it, byte for byte. */
Test(jobs, spool_pushback)
{
	mkbox();
	ok("mkdir box/proc/j; echo 'head -c 30000000 /dev/zero; echo end' > "
	   "box/proc/j/cmd");
	/* the pause is visible once 8 MiB are spooled (bounded wait) */
	ok("i=0; until grep -q 'output: paused' box/proc/j/status; do "
	   "i=$((i + 1)); [ $i -lt 300 ] || exit 1; sleep 0.1; done");
	expect_out("running\n", "head -1 box/proc/j/status");
	expect_out("30000004\n", "cat box/proc/j/stdout | wc -c");
	expect_out("0\n", "cat box/proc/j/wait");
}

/* Past the bound, bytes every open reader consumed are dropped (constant
 * memory for a streamed 1 GiB); a reader arriving later learns it in err. */
Test(jobs, spool_drop_told)
{
	struct sh_out o;

	mkbox();
	expect_out("20000004\n",
		   "mkdir box/proc/j; exec 5<box/proc/j/stdout; "
		   "echo 'head -c 20000000 /dev/zero; echo end' > "
		   "box/proc/j/cmd; cat <&5 | wc -c");
	o = sh_run("cat box/proc/j/stdout | wc -c");
	SH_OK(o);
	long late = strtol(o.out, NULL, 10);

	cr_assert(late > 0 && late < 20000004, "late reader got %ld", late);
	sh_free(&o);
	ok("grep -q 'stdout: the first [0-9]* bytes were dropped' box/err");
}

/* ---- poll and interrupts (C) --------------------------------------------- */

static char *jpath(const char *f)
{
	static char buf[4][MNT_PATH_MAX + 64];
	static int i;

	i = (i + 1) % 4;
	snprintf(buf[i], sizeof buf[i], "%s/box/proc/p/%s", m.mnt, f);
	return buf[i];
}

Test(jobs, poll_stdout_wait)
{
	struct pollfd pf[2];
	char buf[64];

	mkbox();
	ok("mkdir box/proc/p; echo 'sleep 1; echo x; sleep 1' > "
	   "box/proc/p/cmd");
	pf[0].fd = open(jpath("stdout"), O_RDONLY);
	pf[1].fd = open(jpath("wait"), O_RDONLY);
	cr_assert(pf[0].fd >= 0 && pf[1].fd >= 0);
	pf[0].events = pf[1].events = POLLIN;
	cr_assert_eq(poll(pf, 2, 300), 0, "readable before any output");
	cr_assert_eq(poll(pf, 1, 5000), 1, "no POLLIN after output");
	cr_assert_eq(read(pf[0].fd, buf, sizeof buf), 2);
	pf[1].revents = 0;
	cr_assert_eq(poll(&pf[1], 1, 5000), 1, "wait not readable at exit");
	cr_assert_eq(read(pf[1].fd, buf, sizeof buf), 2);
	cr_assert_eq(read(pf[0].fd, buf, sizeof buf), 0, "no EOF at exit");
	close(pf[0].fd);
	close(pf[1].fd);
}

static void on_usr1(int sig)
{
	(void)sig;
}

struct rd {
	int fd;
	ssize_t n;
	int err;
	pid_t tid;
};

static void *reader(void *arg)
{
	struct rd *r = arg;
	char buf[16];

	__atomic_store_n(&r->tid, (pid_t)syscall(SYS_gettid),
			 __ATOMIC_RELEASE);
	r->n = read(r->fd, buf, sizeof buf);
	r->err = errno;
	return NULL;
}

/* A blocked read returns EINTR when a handled signal arrives (the FUSE
 * interrupt reaches the parked request). */
Test(jobs, interrupt_blocked_read)
{
	struct sigaction sa = { .sa_handler = on_usr1 };
	struct rd r = { 0 };
	pthread_t t;
	double t0;

	mkbox();
	sigaction(SIGUSR1, &sa, NULL); /* no SA_RESTART */
	ok("mkdir box/proc/p; echo 'sleep 100' > box/proc/p/cmd");
	r.fd = open(jpath("stdout"), O_RDONLY);
	cr_assert(r.fd >= 0);
	pthread_create(&t, NULL, reader, &r);
	/* signal once the reader is blocked in read(2) on the mount */
	static const long rd_nr[] = { SYS_read };
	pid_t tid = 0;

	for (int i = 0; i < 1000 && !tid; i++) {
		tid = __atomic_load_n(&r.tid, __ATOMIC_ACQUIRE);
		if (!tid)
			usleep(1000);
	}
	cr_assert(tid && mnt_task_in_syscall(getpid(), tid, rd_nr, 1, 5000),
		  "the reader never blocked in read");
	t0 = now();
	pthread_kill(t, SIGUSR1);
	pthread_join(t, NULL);
	cr_assert_eq(r.n, -1, "read returned %zd", r.n);
	cr_assert_eq(r.err, EINTR, "errno %d", r.err);
	cr_assert_lt(now() - t0, 2.0, "interrupt took too long");
	close(r.fd);
	ok("rmdir box/proc/p");
}

/* ---- sbx ----------------------------------------------------------------- */

/* CW Sandbox has no pause: its stop (for good) stands in for it */
static bool cwsandbox(void)
{
	const char *s = getenv("SBXFS_TEST_SOURCE");

	return s && !strncmp(s, "cwsandbox", 9);
}

Test(jobs, sbx_run)
{
	struct sh_out o;

	mkbox();
	expect_out("7\n", "SBX_MOUNT=$MNT \"${SBX:-sbx}\" run box -- "
			  "sh -c 'exit 7'; echo $?");
	o = sh_run("SBX_MOUNT=$MNT \"${SBX:-sbx}\" run box -- sh -c "
		   "'echo out; echo err >&2'");
	SH_OK(o);
	cr_assert_str_eq(o.out, "out\n");
	cr_assert_str_eq(o.err, "err\n");
	sh_free(&o);
	/* arguments with quotes and blanks survive */
	expect_out("a b|it's|\n", "SBX_MOUNT=$MNT \"${SBX:-sbx}\" run box -- "
				  "printf '%s|' 'a b' \"it's\"; echo");
	ok("head -c 20000000 /dev/urandom > $TMPD/d.bin");
	o = sh_run("SBX_MOUNT=$MNT \"${SBX:-sbx}\" run box -- sha256sum "
		   "< $TMPD/d.bin; sha256sum < $TMPD/d.bin");
	SH_OK(o);
	cr_assert_eq(strlen(o.out), 2 * 68, "out: %s", o.out);
	cr_assert(!strncmp(o.out, o.out + 68, 64), "digests: %s", o.out);
	sh_free(&o);
	/* -n: stdin not forwarded, the command sees EOF */
	expect_out("0\n", "SBX_MOUNT=$MNT \"${SBX:-sbx}\" run -n box -- "
			  "wc -c < $TMPD/d.bin");
	/* cannot start (paused sandbox): 125 and the reason */
	if (cwsandbox()) {	/* no pause there: a stopped sandbox */
		o = sh_run("mkdir box2 && echo 'stop 0' > box2/ctl && "
			   "SBX_MOUNT=$MNT \"${SBX:-sbx}\" run box2 -- true; "
			   "echo $?; rmdir box2");
		SH_OK(o);
		cr_assert_str_eq(o.out, "125\n");
		cr_assert(strstr(o.err, "stopped"), "stderr: %s", o.err);
	} else {
		o = sh_run("echo pause > box/ctl; SBX_MOUNT=$MNT "
			   "\"${SBX:-sbx}\" run box -- true; echo $?; "
			   "echo resume > box/ctl");
		SH_OK(o);
		cr_assert_str_eq(o.out, "125\n");
		cr_assert(strstr(o.err, "paused"), "stderr: %s", o.err);
	}
	sh_free(&o);
	/* job directories are removed */
	expect_out("", "ls box/proc");
	ok("SBX_MOUNT=$MNT \"${SBX:-sbx}\" ls | grep -q '^box  *running'");
}

/* A local sandbox that ran a job keeps a spare (api/local/exec.c,
 * "spares"): a process inside it, ready to become the next job.  Root in
 * the sandbox sees it but learns nothing of the host from it (no command
 * line of sbxfs's, no descriptors or memory to read) and may kill it:
 * jobs still start, and stop is not held up. */
Test(jobs, spare_hostile)
{
	struct sh_out o;

	if (!m.datadir[0])
		cr_skip_test("local backend: its spares");
	mkbox();
	expect_out("0\n", "SBX_MOUNT=$MNT \"${SBX:-sbx}\" run box -- true; "
			  "echo $?");
	/* wait (bounded) until a spare runs in the sandbox */
	ok("i=0; until SBX_MOUNT=$MNT \"${SBX:-sbx}\" run box -- "
	   "pgrep -x sbxfs-exec >/dev/null; do i=$((i + 1)); "
	   "[ $i -lt 200 ] || exit 1; sleep 0.05; done");
	o = sh_run("SBX_MOUNT=$MNT \"${SBX:-sbx}\" run box -- sh -c "
		   "'for p in $(pgrep -x sbxfs-exec); do "
		   "tr \"\\\\0\" \" \" < /proc/$p/cmdline; echo; "
		   "ls /proc/$p/fd/ >/dev/null 2>&1 && echo FDS-READABLE; "
		   "head -c 1 /proc/$p/environ >/dev/null 2>&1 && "
		   "echo ENV-READABLE; done; true'");
	SH_OK(o);
	cr_assert(strstr(o.out, "sbxfs-exec"), "spares: '%s'", o.out);
	cr_assert(!strstr(o.out, m.datadir) && !strstr(o.out, m.dir) &&
		  !strstr(o.out, "READABLE") && !strstr(o.out, "local:"),
		  "a spare shows the host to the sandbox: '%s'", o.out);
	sh_free(&o);
	/* on the host: the spares' monitors are children of sbxfs's
	 * zygote, which is alive (a crashed zygote would only make every
	 * spare a slower fork of sbxfs, nothing a user sees fail) */
	o = sh_run("z=$(pgrep -P %d -x sbxfs-zygote) && "
		   "ps -o stat= -p \"$z\" && pgrep -c -P \"$z\"",
		   (int)m.pid);
	SH_OK(o);
	cr_assert(o.out[0] == 'S' || o.out[0] == 'R',
		  "zygote state/children: '%s'", o.out);
	cr_assert(strtol(strchr(o.out, '\n') + 1, NULL, 10) >= 1,
		  "no spare came from the zygote: '%s'", o.out);
	sh_free(&o);
	/* root in the sandbox kills every spare it sees; jobs go on */
	expect_out("ok\n0\n", "SBX_MOUNT=$MNT \"${SBX:-sbx}\" run box -- sh -c "
			     "'pkill -9 -x sbxfs-exec; echo ok'; echo $?");
	for (int i = 0; i < 5; i++)
		expect_out("x\n", "SBX_MOUNT=$MNT \"${SBX:-sbx}\" run box -- "
				  "echo x");
	/* a stop with spares in the sandbox takes no grace period */
	ok("i=0; until SBX_MOUNT=$MNT \"${SBX:-sbx}\" run box -- "
	   "pgrep -x sbxfs-exec >/dev/null; do i=$((i + 1)); "
	   "[ $i -lt 200 ] || exit 1; sleep 0.05; done");
	double t0 = now();

	ok("echo 'stop 30' > box/ctl");
	cr_assert_lt(now() - t0, 10.0, "stop took %.1f s", now() - t0);
	expect_out("stopped\n", "head -1 box/status");
}

/* ---- scale --------------------------------------------------------------- */

static int threads_of(pid_t pid)
{
	char path[64], line[256];
	int n = -1;
	FILE *f;

	snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
	f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof line, f))
		if (!strncmp(line, "Threads:", 8))
			n = (int)strtol(line + 8, NULL, 10);
	fclose(f);
	return n;
}

/* Number of `cat box/proc/jN/stdout` processes blocked in read(2), once it
 * reaches want or after ms. */
static int blocked_cats(int want, long ms)
{
	/* cat reads with copy_file_range when its output is a file */
	static const long rd_nr[] = { SYS_read, SYS_copy_file_range,
				      SYS_splice, SYS_sendfile };
	int n = 0;

	for (long waited = 0; waited <= ms; waited += 50) {
		struct sh_out o = sh_run("pgrep -f '^cat box/proc/j[0-9][0-9]*/stdout$'"
					 " || true");
		char *p = o.out, *e;

		n = 0;
		for (;;) {
			long pid = strtol(p, &e, 10);

			if (e == p)
				break;
			p = e;
			if (mnt_task_in_syscall((pid_t)pid, (pid_t)pid, rd_nr,
						4, 0))
				n++;
		}
		sh_free(&o);
		if (n >= want)
			return n;
		usleep(50 * 1000);
	}
	return n;
}

/* 100 jobs with a blocked reader each; ls and status still answer fast and
 * sbxfs does not grow a thread per reader. */
Test(jobs, hundred_blocked_readers, .timeout = 600)
{
	struct sh_out o;
	double t0, dt;
	int th;

	mkbox();
	ok("mkdir box/fs/tmp/x; echo hi > box/fs/tmp/x/f");
	o = sh_run_t(120, "for i in $(seq 1 100); do mkdir box/proc/j$i && "
			  "echo 'sleep 60; echo done' > box/proc/j$i/cmd && "
			  "(cat box/proc/j$i/stdout > $TMPD/o$i 2>&1 "
			  "</dev/null &) "
			  "|| exit 1; "
			  "done");
	SH_OK(o);
	sh_free(&o);
	/* count threads once all 100 readers are blocked in read(2) */
	th = blocked_cats(100, 20000);
	cr_assert_geq(th, 100, "%d of 100 readers blocked", th);
	th = threads_of(m.pid);
	cr_assert_lt(th, 40, "sbxfs has %d threads with 100 readers", th);
	for (int i = 0; i < 3; i++) {
		t0 = now();
		o = sh_run("ls box/fs/ > /dev/null && ls box/proc | wc -l && "
			   "head -1 box/proc/j50/status && "
			   "cat box/fs/tmp/x/f");
		dt = now() - t0;
		SH_OK(o);
		cr_assert_str_eq(o.out, "100\nrunning\nhi\n");
		cr_assert_lt(dt, 1.0, "ls/status took %.3f s", dt);
		sh_free(&o);
	}
	o = sh_run_t(120, "for i in $(seq 1 100); do "
			  "[ \"$(cat box/proc/j$i/wait)\" = 0 ] || exit 1; "
			  "done; i=0; until [ \"$(cat $TMPD/o* | grep -c done)\" "
			  "= 100 ]; do i=$((i + 1)); [ $i -lt 250 ] || break; "
			  "sleep 0.02; done; cat $TMPD/o* | grep -c done");
	SH_OK(o);
	cr_assert_str_eq(o.out, "100\n");
	sh_free(&o);
	ok("for i in $(seq 1 100); do rmdir box/proc/j$i || exit 1; done");
}

/* ---- a slow direct spawn holds no FUSE thread ------------------------------ */

/* The local backend forks commands (joins the sandbox's namespaces and
 * cgroups, waits for the handshake) on its runtime's workers, never on the
 * FUSE thread that asked.  SBXFS_TEST_SPAWN_DELAY_MS makes every direct
 * spawn that slow, inside the spawn: if a FUSE thread did it, the 11
 * sessions below would hold all of libfuse's 10 threads and the mount
 * would not answer until the first spawn ended.  One session per sandbox:
 * the kernel runs the writes to one file one at a time. */
#define SLOW_SPAWN_MS 6000

static void slow_setup(void)
{
	char v[16];
	int r;

	snprintf(v, sizeof(v), "%d", SLOW_SPAWN_MS);
	setenv("SBXFS_TEST_SPAWN_DELAY_MS", v, 1);
	r = mnt_start(&m, NULL, NULL);
	unsetenv("SBXFS_TEST_SPAWN_DELAY_MS");
	cr_assert_eq(r, 0, "mount failed: %s", strerror(-r));
}

/* Threads of sbxfs sleeping (the spawn delay is a usleep): the spawns in
 * their delay right now. */
static int sbxfs_sleepers(void)
{
	struct sh_out o = sh_run(
		"n=0; for t in /proc/%d/task/*; do "
		"read s rest < $t/syscall 2>/dev/null || continue; "
		"case $s in 35|230) n=$((n + 1));; esac; done; echo $n",
		(int)m.pid);
	int n = (int)strtol(o.out, NULL, 10);

	sh_free(&o);
	return n;
}

/* Wait (at most ms) until at least `want` spawns are in their delay. */
static bool wait_sleepers(int want, long ms)
{
	double end = now() + ms / 1000.0;

	while (sbxfs_sleepers() < want) {
		if (now() > end)
			return false;
		usleep(20 * 1000);
	}
	return true;
}

TestSuite(jobs_slow, .init = slow_setup, .fini = teardown, .timeout = 300);

Test(jobs_slow, spawn_holds_no_fuse_thread)
{
	struct sh_out o;
	double t0, dt;
	int i, done = 0;

	if (!m.datadir[0])
		cr_skip_test("local backend: its spawn delay hook");
	mkbox();
	ok("for i in 1 2 3 4 5 6 7 8 9 10 11; do mkdir b$i || exit 1; done");
	/* 11 sessions, each a direct spawn (an exec session never uses a
	 * spare); their command-line writes wait for started() */
	ok("for i in 1 2 3 4 5 6 7 8 9 10 11; do "
	   "(exec 3<>b$i/exec; echo \"echo s$i\" >&3; cat <&3 > $TMPD/s$i; "
	   "echo end >> $TMPD/s$i) > /dev/null 2>&1 & done");
	/* the first spawns are in their delay (before: 10 FUSE threads) */
	cr_assert(wait_sleepers(3, 30000), "no spawn started its delay");
	t0 = now();
	o = sh_run("head -1 box/status; ls box/proc; cat $TMPD/s* 2>/dev/null");
	dt = now() - t0;
	SH_OK(o);
	cr_assert_str_eq(o.out, "running\n",
			 "the mount answered only after commands ran "
			 "(%.1f s): '%s'", dt, o.out);
	sh_free(&o);
	cr_assert_lt(dt, SLOW_SPAWN_MS / 2000.0,
		     "the mount took %.1f s to answer during slow spawns",
		     dt);
	/* every session ran its command once the spawns were done (3
	 * workers: four rounds of the delay) */
	for (i = 0; i < 1200 && done < 11; i++) {
		o = sh_run("cat $TMPD/s* 2>/dev/null | grep -c end || true");
		done = (int)strtol(o.out, NULL, 10);
		sh_free(&o);
		if (done < 11)
			usleep(100 * 1000);
	}
	cr_assert_eq(done, 11, "%d of 11 sessions ended", done);
	expect_out("s1\ns10\ns11\ns2\ns3\ns4\ns5\ns6\ns7\ns8\ns9\n",
		   "for i in 1 2 3 4 5 6 7 8 9 10 11; do head -1 $TMPD/s$i; "
		   "done | sort");

	/* rmdir while the job's spawn is in its delay: answered at once
	 * (the exec is freed with its spawn pending); the child the spawn
	 * then makes is killed, the cmd writer gets ENOENT.  The first job
	 * of a sandbox has no spare: the direct way. */
	ok("mkdir box/proc/j; (echo 'exec sleep 4341' > box/proc/j/cmd; "
	   "echo rc=$? > $TMPD/jw) > /dev/null 2>&1 &");
	cr_assert(wait_sleepers(1, 30000), "the job's spawn did not start");
	t0 = now();
	ok("rmdir box/proc/j");
	dt = now() - t0;
	cr_assert_lt(dt, SLOW_SPAWN_MS / 2000.0,
		     "rmdir waited %.1f s for the spawn", dt);
	for (i = 0; i < 600; i++) {
		o = sh_run("cat $TMPD/jw 2>/dev/null");
		bool got = o.out[0] != 0;

		sh_free(&o);
		if (got)
			break;
		usleep(100 * 1000);
	}
	expect_out("rc=1\n", "cat $TMPD/jw");
	/* the spawn ends after its delay (no sbxfs thread sleeps then);
	 * what it made is killed */
	for (i = 0; i < 600 && sbxfs_sleepers() > 0; i++)
		usleep(50 * 1000);
	cr_assert_eq(sbxfs_sleepers(), 0, "the spawn never ended");
	for (i = 0; i < 100 && host_procs("sleep 434[1]"); i++)
		usleep(100 * 1000);
	cr_assert_eq(host_procs("sleep 434[1]"), 0,
		     "the job freed during its spawn survived");
	expect_out("", "ls box/proc");
}
