/* walk_test.c - issue 2's walkthrough as mount tests: one test per
 * behaviour, each on its own fresh mount, checking the sandbox side (its
 * writable layer DATA/sandboxes/NAME/upper, its processes) where the
 * backend is local. */
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

TestSuite(walk, .init = setup, .fini = teardown, .timeout = 180);

/* Host-side checks need the local backend's data dir. */
static bool local(void)
{
	return m.datadir[0] != '\0';
}

/* Wrenn assigns capsule IDs: NAME is the directory and the ID a symlink
 * to it (so `ls` shows both; rmdir NAME works as on local); it has no
 * stop or start verb (refused with EOPNOTSUPP). */
static bool wrenn(void)
{
	const char *s = getenv("SBXFS_TEST_SOURCE");

	return s && !strncmp(s, "wrenn", 5);
}

/* CW Sandbox: IDs (sb-...) as symlinks to NAME as on Wrenn; no pause,
 * resume or start (stop ends a sandbox for good), so the tests of those
 * skip or use stop instead. */
static bool cwsandbox(void)
{
	const char *s = getenv("SBXFS_TEST_SOURCE");

	return s && !strncmp(s, "cwsandbox", 9);
}

/* the sandboxes and ctl, err (not the ID links, not MOUNT/templates/) */
#define LS (wrenn() ? "ls | grep -v -e '^cl-' -e '^templates$'" : \
	    cwsandbox() ? "ls | grep -v -e '^sb-' -e '^templates$'" : \
	    "ls | grep -vx templates")
#define RMDIR1 "rmdir box1"

/* Path of the sandbox's writable layer, DATA/sandboxes/NAME/upper. */
static const char *upper(const char *name)
{
	static char buf[2][MNT_PATH_MAX + 160];
	static int i;
	char dir[MNT_PATH_MAX + 140];

	i ^= 1;
	snprintf(buf[i], sizeof(buf[i]), "%s/upper",
		 mnt_sandbox_dir(&m, name, dir, sizeof(dir)));
	return buf[i];
}

static void mkbox(const char *name)
{
	struct sh_out o = sh_run("mkdir %s && head -1 %s/status", name, name);

	SH_OK(o);
	cr_assert_str_eq(o.out, "running\n",
			 "%s: status after mkdir: '%s'\n%s", name, o.out,
			 o.err);
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

static void ok(const char *cmd)
{
	struct sh_out o = sh_run("%s", cmd);

	SH_OK(o);
	sh_free(&o);
}

/* Alive = exists and is not a zombie: a sandbox's init is reparented to
 * the host's PID 1, which may be slow (or, in some containers, never
 * there) to reap it; a zombie runs nothing and holds nothing. */
static bool pid_alive(pid_t pid)
{
	char path[64], buf[512], *p;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	fd = open(path, O_RDONLY);
	if (fd < 0)
		return false;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return false;
	buf[n] = '\0';
	p = strrchr(buf, ')');
	return p && p[1] == ' ' && p[2] != 'Z' && p[2] != 'X';
}

/* mkdir box1 && head -1 box1/status  -> running; a real sandbox exists */
Test(walk, mkdir_status_running)
{
	char dir[MNT_PATH_MAX + 140];
	pid_t pids[16];
	struct stat st;
	int n;

	mkbox("box1");
	expect_out("box1\nctl\nerr\n", LS);
	if (wrenn())	/* the capsule ID is a symlink to the NAME dir */
		ok("id=$(ls | grep '^cl-') && [ -L \"$id\" ] && "
		   "[ \"$(readlink \"$id\")\" = box1 ] && [ -d \"$id/fs\" ]");
	if (cwsandbox())
		ok("id=$(ls | grep '^sb-') && [ -L \"$id\" ] && "
		   "[ \"$(readlink \"$id\")\" = box1 ] && [ -d \"$id/fs\" ]");
	if (!local())
		return;
	mnt_sandbox_dir(&m, "box1", dir, sizeof(dir));
	cr_assert_eq(stat(dir, &st), 0, "no sandbox dir %s", dir);
	n = mnt_sandbox_pids(&m, "box1", pids, 16);
	cr_assert_gt(n, 0, "no process of box1 found on the host");
}

/* echo hello > box1/fs/tmp/hi && cat box1/fs/tmp/hi */
Test(walk, echo_cat)
{
	bool host_had = access("/tmp/hi", F_OK) == 0;
	struct sh_out o;

	mkbox("box1");
	expect_out("hello\n",
		   "echo hello > box1/fs/tmp/hi && cat box1/fs/tmp/hi");
	if (!host_had)
		cr_assert_neq(access("/tmp/hi", F_OK), 0,
			      "the write landed in the host's /tmp/hi");
	if (!local())
		return;
	o = sh_run("cat '%s/tmp/hi'", upper("box1"));
	SH_OK(o);
	cr_assert_str_eq(o.out, "hello\n", "sandbox side: '%s'", o.out);
}

/* cp -r /usr/share/doc/bash box1/fs/root/ && diff -r ... */
Test(walk, cp_r_diff)
{
	mkbox("box1");
	ok("cp -r /usr/share/doc/bash box1/fs/root/ && "
	   "diff -r --no-dereference /usr/share/doc/bash box1/fs/root/bash");
	if (!local())
		return;
	ok("diff -r --no-dereference /usr/share/doc/bash \"$DATA/sandboxes/box1/upper/root/"
	   "bash\"");
}

/* echo extra >> hi; mv hi ho; rm -r root/bash */
Test(walk, append_mv_rm)
{
	mkbox("box1");
	ok("echo hello > box1/fs/tmp/hi && "
	   "cp -r /usr/share/doc/bash box1/fs/root/");
	expect_out("hello\nextra\n",
		   "echo extra >> box1/fs/tmp/hi && cat box1/fs/tmp/hi");
	expect_out("hello\nextra\n",
		   "mv box1/fs/tmp/hi box1/fs/tmp/ho && "
		   "! [ -e box1/fs/tmp/hi ] && cat box1/fs/tmp/ho");
	ok("rm -r box1/fs/root/bash && ! [ -e box1/fs/root/bash ] && "
	   "! ls box1/fs/root/ | grep -qx bash");
	if (!local())
		return;
	expect_out("hello\nextra\n",
		   "u=\"$DATA/sandboxes/box1/upper\"; ! [ -e $u/tmp/hi ] && "
		   "cat $u/tmp/ho");
	ok("! [ -e \"$DATA/sandboxes/box1/upper/root/bash/COPYING\" ]");
}

/* State of the freezer cgroup of a sandbox's processes, "" if none. */
static void freezer_states(const char *name, char *out, size_t len)
{
	pid_t pids[64];
	struct sh_out o;
	int n, i;

	out[0] = '\0';
	n = mnt_sandbox_pids(&m, name, pids, 64);
	cr_assert_gt(n, 0, "no process of %s found on the host", name);
	for (i = 0; i < n && i < 64; i++) {
		o = sh_run("c=$(sed -n 's/^[0-9]*:freezer://p' /proc/%d/cgroup)"
			   " && cat /sys/fs/cgroup/freezer$c/freezer.state",
			   (int)pids[i]);
		if (o.status == 0 && strlen(out) + o.out_len < len)
			strcat(out, o.out);
		sh_free(&o);
	}
}

/* echo pause > box1/ctl && head -1 box1/status  -> paused; resume */
Test(walk, pause_resume)
{
	char st[512];

	if (cwsandbox())
		cr_skip_test("CW Sandbox has no pause or resume");
	mkbox("box1");
	expect_out("paused\n", "echo pause > box1/ctl && head -1 box1/status");
	if (local()) {
		freezer_states("box1", st, sizeof(st));
		cr_assert(strstr(st, "FROZEN") && !strstr(st, "THAWED"),
			  "freezer states while paused: %s", st);
	}
	expect_out("running\n",
		   "echo resume > box1/ctl && head -1 box1/status");
	if (local()) {
		freezer_states("box1", st, sizeof(st));
		cr_assert(!strstr(st, "FROZEN") && !strstr(st, "FREEZING"),
			  "freezer states after resume: %s", st);
	}
}

/* echo bogus > box1/ctl  -> Invalid argument; box1/err says why */
Test(walk, bogus_verb_einval)
{
	struct sh_out o;

	mkbox("box1");
	/* bash, not sh: dash's echo says "I/O error" whatever the errno */
	o = sh_run("bash -c 'echo bogus > box1/ctl'");
	SH_FAILS(o);
	cr_assert(strstr(o.err, "Invalid argument"),
		  "stderr of a bogus verb: '%s'", o.err);
	o = sh_run("cat box1/err");
	SH_OK(o);
	cr_assert(o.out_len > 0 && (strstr(o.out, "bogus") ||
				    strstr(o.out, "verb")),
		  "err after a bogus verb: '%s'", o.out);
	/* a bad verb changes nothing */
	expect_out("running\n", "head -1 box1/status");
	/* arity is checked too: snapshot needs a name */
	o = sh_run("bash -c 'echo snapshot > box1/ctl'");
	SH_FAILS(o);
	cr_assert(strstr(o.err, "Invalid argument"),
		  "stderr of 'snapshot' without a name: '%s'", o.err);
}

/* ln -s / box1/fs/tmp/up; ls box1/fs/tmp/up/  -> the sandbox's / */
Test(walk, symlink_stays_in_sandbox)
{
	struct sh_out o, l;

	mkbox("box1");
	/* a file only the sandbox has, and a host file the sandbox lacks
	 * (if its / shows the host's /tmp, delete it in the sandbox only) */
	ok("echo inbox > box1/fs/only-in-sandbox && "
	   "echo host > \"$TMPD/host-only\" && "
	   "if [ -e \"box1/fs$TMPD/host-only\" ]; then "
	   "rm \"box1/fs$TMPD/host-only\"; fi && "
	   "[ -e \"$TMPD/host-only\" ]");
	ok("ln -s / box1/fs/tmp/up");
	o = sh_run("ls box1/fs/tmp/up/");
	SH_OK(o);
	cr_assert(strstr(o.out, "only-in-sandbox\n"),
		  "ls box1/fs/tmp/up/ misses the sandbox's file:\n%s", o.out);
	l = sh_run("ls box1/fs/");
	SH_OK(l);
	cr_assert_str_eq(o.out, l.out, "ls up/ differs from ls fs/");
	expect_out("inbox\n", "cat box1/fs/tmp/up/only-in-sandbox");
	ok("! [ -e \"box1/fs/tmp/up$TMPD/host-only\" ]");
	ok("! [ -e /only-in-sandbox ]");
	if (!local())
		return;
	/* inside the sandbox the link is unchanged */
	expect_out("/\n", "readlink \"$DATA/sandboxes/box1/upper/tmp/up\"");
}

/* snapshot snap1; new box2 template=snap1; cat box2/fs/tmp/ho */
Test(walk, snapshot_template)
{
	char snap[32] = "snap1";
	struct sh_out o;

	/* a shared source keeps templates: do not collide with a past run */
	if (!m.own_datadir)
		snprintf(snap, sizeof(snap), "snap%d", (int)getpid());
	mkbox("box1");
	ok("echo hello > box1/fs/tmp/ho && echo extra >> box1/fs/tmp/ho");
	o = sh_run("echo 'snapshot %s' > box1/ctl && "
		   "echo 'new box2 template=%s' > ctl", snap, snap);
	SH_OK(o);
	expect_out("running\n", "head -1 box2/status");
	expect_out("hello\nextra\n", "cat box2/fs/tmp/ho");
	/* box2 is its own sandbox: its writes do not reach box1 */
	ok("echo two > box2/fs/tmp/ho");
	expect_out("hello\nextra\n", "cat box1/fs/tmp/ho");
	if (!local())
		return;
	/* DATA/templates/SNAP/root is the template's tree */
	o = sh_run("cat \"$DATA/templates/%s/root/tmp/ho\"", snap);
	SH_OK(o);
	cr_assert_str_eq(o.out, "hello\nextra\n", "template: '%s'", o.out);
}

/* echo x > box1/fs/usr/local/bin/probe  -> absent on the host */
Test(walk, write_stays_in_sandbox)
{
	char name[64] = "probe", host[128];
	struct sh_out o;

	if (access("/usr/local/bin/probe", F_OK) == 0)
		snprintf(name, sizeof(name), "probe-%d", (int)getpid());
	snprintf(host, sizeof(host), "/usr/local/bin/%s", name);
	mkbox("box1");
	cr_assert_neq(access(host, F_OK), 0, "precondition: host has %s",
		      host);
	o = sh_run("echo x > box1/fs/usr/local/bin/%s && "
		   "cat box1/fs/usr/local/bin/%s", name, name);
	SH_OK(o);
	cr_assert_str_eq(o.out, "x\n");
	cr_assert_neq(access(host, F_OK), 0,
		      "the write reached the host's %s", host);
	if (!local())
		return;
	o = sh_run("cat \"$DATA/sandboxes/box1/upper/usr/local/bin/%s\"",
		   name);
	SH_OK(o);
	cr_assert_str_eq(o.out, "x\n");
}

/* rmdir box1  -> gone; no process of it left on the host */
Test(walk, rmdir_destroys)
{
	char dir[MNT_PATH_MAX + 140];
	pid_t pids[64];
	int n = 0, i;

	struct sh_out cg = { 0 }, o;

	mkbox("box1");
	mkbox("box2");
	if (local()) {
		n = mnt_sandbox_pids(&m, "box1", pids, 64);
		cr_assert_gt(n, 0, "no process of box1 found on the host");
		/* its freezer cgroup, to see it go too */
		cg = sh_run("sed -n 's/^[0-9]*:freezer://p' /proc/%d/cgroup",
			    (int)pids[0]);
		SH_OK(cg);
		cg.out[strcspn(cg.out, "\n")] = '\0';
		cr_assert(strlen(cg.out) > 1, "box1 has no freezer cgroup");
		o = sh_run("[ -d '/sys/fs/cgroup/freezer%s' ]", cg.out);
		SH_OK(o);
	}
	ok(RMDIR1);
	ok("! [ -e box1 ]");
	expect_out("box2\nctl\nerr\n", LS);
	expect_out("running\n", "head -1 box2/status");
	if (!local())
		return;
	mnt_sandbox_dir(&m, "box1", dir, sizeof(dir));
	cr_assert_neq(access(dir, F_OK), 0, "%s still exists", dir);
	cr_assert_eq(mnt_sandbox_pids(&m, "box1", pids + n, 1), 0,
		     "processes of box1 are left on the host");
	for (i = 0; i < n && i < 64; i++)
		cr_assert(!pid_alive(pids[i]), "pid %d of box1 still alive",
			  (int)pids[i]);
	ok("! grep -q \"$DATA/sandboxes/box1\" /proc/mounts");
	o = sh_run("! [ -e '/sys/fs/cgroup/freezer%s' ]", cg.out);
	SH_OK(o);
}

/* rmdir of a sandbox that is paused works too (frozen tasks die) */
Test(walk, rmdir_paused)
{
	pid_t pids[64];
	int n = 0, i;

	if (cwsandbox())
		cr_skip_test("CW Sandbox has no pause");
	mkbox("box1");
	if (local())
		n = mnt_sandbox_pids(&m, "box1", pids, 64);
	ok("echo pause > box1/ctl && rmdir box1 && ! [ -e box1 ]");
	for (i = 0; i < n && i < 64; i++)
		cr_assert(!pid_alive(pids[i]),
			  "pid %d of paused box1 still alive", (int)pids[i]);
}

/* fusermount3 -u MOUNT; sbxfs ... MOUNT  -> sandboxes back, true status */
Test(walk, remount_keeps_sandboxes)
{
	int r;

	mkbox("box1");
	mkbox("box2");
	/* CW: no pause; box2 stays running */
	ok(cwsandbox() ? "echo kept > box1/fs/tmp/kept" :
	   "echo kept > box1/fs/tmp/kept && echo pause > box2/ctl");
	r = mnt_remount(&m);
	cr_assert_eq(r, 0, "remount: %d\n%s", r, mnt_log_tail(&m, 30));
	expect_out("box1\nbox2\nctl\nerr\n", LS);
	expect_out("running\n", "head -1 box1/status");
	expect_out("kept\n", "cat box1/fs/tmp/kept");
	if (cwsandbox()) {
		expect_out("running\n", "head -1 box2/status");
		return;
	}
	expect_out("paused\n", "head -1 box2/status");
	expect_out("running\n",
		   "echo resume > box2/ctl && head -1 box2/status");
}

/* A sandbox whose processes died while unmounted shows its true state. */
Test(walk, remount_true_status_after_kill)
{
	pid_t pids[64];
	struct sh_out o;
	int n, i, r;

	if (!local())
		return;
	mkbox("box1");
	r = mnt_umount(&m);
	cr_assert_eq(r, 0, "unmount: sbxfs exit status %d", r);
	n = mnt_sandbox_pids(&m, "box1", pids, 64);
	cr_assert_gt(n, 0, "box1 did not outlive sbxfs");
	for (i = 0; i < n && i < 64; i++)
		kill(pids[i], SIGKILL);
	r = mnt_remount(&m);
	cr_assert_eq(r, 0, "mount again: %d", r);
	o = sh_run("head -1 box1/status");
	SH_OK(o);
	cr_assert(strcmp(o.out, "running\n") != 0,
		  "box1 says running though its processes were killed");
}

/* tar x into fs/ */
Test(walk, tar_x)
{
	mkbox("box1");
	ok("tar -C /usr/share/doc/bash -cf \"$TMPD/t.tar\" . && "
	   "mkdir box1/fs/root/t && tar -C box1/fs/root/t -xf \"$TMPD/t.tar\""
	   " && diff -r --no-dereference /usr/share/doc/bash box1/fs/root/t");
	/* tar restores mtimes and modes */
	ok("cd /usr/share/doc/bash && for f in *; do "
	   "[ \"$(stat -c '%a %Y' \"$f\")\" = "
	   "\"$(stat -c '%a %Y' \"$MNT/box1/fs/root/t/$f\")\" ] || "
	   "{ echo \"$f differs\" >&2; exit 1; }; done");
	if (!local())
		return;
	ok("diff -r --no-dereference /usr/share/doc/bash \"$DATA/sandboxes/box1/upper/root/t\"");
}

/* ls -l of a directory: names, modes, sizes, times as the sandbox has */
Test(walk, ls_l)
{
	struct sh_out o;

	mkbox("box1");
	ok("d=box1/fs/root/d && mkdir $d && printf abc > $d/three && "
	   "head -c 5000 /dev/zero > $d/big && mkdir $d/sub && "
	   "ln -s three $d/link && chmod 600 $d/three");
	o = sh_run("ls -l box1/fs/root/d");
	SH_OK(o);
	cr_assert(strstr(o.out, "-rw------- ") && strstr(o.out, " three\n") &&
			  strstr(o.out, " 5000 ") &&
			  strstr(o.out, " link -> three\n") &&
			  strstr(o.out, "\ndr"),
		  "ls -l:\n%s", o.out);
	if (!local())
		return;
	ok("a=$(cd box1/fs/root/d && stat -c '%A %s %Y %N' * | sort) && "
	   "b=$(cd \"$DATA/sandboxes/box1/upper/root/d\" && "
	   "stat -c '%A %s %Y %N' * | sort) && "
	   "{ [ \"$a\" = \"$b\" ] || { printf '%s\\n--\\n%s\\n' \"$a\" \"$b\""
	   " >&2; exit 1; }; }");
}

Test(walk, chmod)
{
	mkbox("box1");
	expect_out("640\n", "f=box1/fs/tmp/f && touch $f && chmod 640 $f && "
			    "stat -c %a $f");
	expect_out("751\n", "chmod 751 box1/fs/tmp/f && "
			    "stat -c %a box1/fs/tmp/f");
	if (local())
		expect_out("751\n",
			   "stat -c %a \"$DATA/sandboxes/box1/upper/tmp/f\"");
}

Test(walk, touch)
{
	mkbox("box1");
	expect_out("0\n",
		   "touch box1/fs/tmp/new && stat -c %s box1/fs/tmp/new");
	expect_out("1000000000\n", "touch -d @1000000000 box1/fs/tmp/new && "
				   "stat -c %Y box1/fs/tmp/new");
	if (local())
		expect_out("1000000000\n",
			   "stat -c %Y \"$DATA/sandboxes/box1/upper/tmp/new\"");
	/* touch of an existing file moves its mtime to now */
	ok("touch box1/fs/tmp/new && "
	   "[ $(stat -c %Y box1/fs/tmp/new) -gt 1000000000 ]");
}

Test(walk, truncate)
{
	mkbox("box1");
	expect_out("3 abc\n", "f=box1/fs/tmp/t && printf abcdefghij > $f && "
			      "truncate -s 3 $f && "
			      "echo $(stat -c %s $f) $(cat $f)");
	expect_out("100000\n", "truncate -s 100000 box1/fs/tmp/t && "
			       "stat -c %s box1/fs/tmp/t");
	expect_out("0\n", "truncate -s 0 box1/fs/tmp/t && "
			  "stat -c %s box1/fs/tmp/t");
	if (local())
		expect_out("0\n",
			   "stat -c %s \"$DATA/sandboxes/box1/upper/tmp/t\"");
}

Test(walk, mkdir_p)
{
	mkbox("box1");
	ok("mkdir -p box1/fs/root/a/b/c && [ -d box1/fs/root/a/b/c ] && "
	   "mkdir -p box1/fs/root/a/b/c");
	if (local())
		ok("[ -d \"$DATA/sandboxes/box1/upper/root/a/b/c\" ]");
}

/* [ "$(head -1 status)" = running ] works: the first line is the word */
Test(walk, status_first_line)
{
	mkbox("box1");
	ok("[ \"$(head -1 box1/status)\" = running ]");
	if (!cwsandbox()) {	/* CW: no pause */
		ok("echo pause > box1/ctl && "
		   "[ \"$(head -1 box1/status)\" = paused ]");
		ok("echo resume > box1/ctl && "
		   "[ \"$(head -1 box1/status)\" = running ]");
	}
	/* direct I/O: a second cat after a change is fresh, and ends */
	expect_out("running\nrunning\n", "head -1 box1/status; "
				"cat box1/status >/dev/null && "
				"head -1 box1/status");
}

/* reading ctl lists the verbs this sandbox supports */
Test(walk, ctl_lists_verbs)
{
	static const char *const verbs[] = { "start",	 "stop",  "pause",
					     "resume",	 "ping",  "snapshot",
					     "destroy" };
	struct sh_out o;
	char w[32];
	size_t i;

	mkbox("box1");
	o = sh_run("cat box1/ctl");
	SH_OK(o);
	for (i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++) {
		snprintf(w, sizeof(w), "%s", verbs[i]);
		if ((wrenn() && (!strcmp(w, "start") || !strcmp(w, "stop"))) ||
		    (cwsandbox() && (!strcmp(w, "start") ||
				     !strcmp(w, "pause") ||
				     !strcmp(w, "resume")))) {
			cr_assert(!strstr(o.out, w), "ctl lists '%s':\n%s",
				  w, o.out);
			continue;
		}
		cr_assert(strstr(o.out, w), "ctl lists no '%s':\n%s", w,
			  o.out);
	}
	ok("echo ping > box1/ctl");
	/* several verbs in one write */
	expect_out("running\n", cwsandbox() ?
		   "printf 'ping\\nping\\n' > box1/ctl && head -1 box1/status" :
		   "printf 'pause\\nresume\\n' > box1/ctl && "
		   "head -1 box1/status");
}

/* info is the platform's record as JSON */
Test(walk, info_json)
{
	struct sh_out o;

	mkbox("box1");
	o = sh_run("cat box1/info");
	SH_OK(o);
	cr_assert(o.out[0] == '{' && strstr(o.out, "box1"), "info: %s",
		  o.out);
}

/* stop ends the processes; start brings the sandbox back */
Test(walk, stop_start)
{
	pid_t pids[64];
	int n = 0, i;

	mkbox("box1");
	if (wrenn()) {
		struct sh_out o;

		/* bash: dash's echo says "I/O error" whatever the errno */
		o = sh_run("bash -c \"echo 'stop 1' > box1/ctl\"");
		SH_FAILS(o);
		cr_assert(strstr(o.err, "Operation not supported"),
			  "stop on wrenn: '%s'", o.err);
		sh_free(&o);
		o = sh_run("bash -c 'echo start > box1/ctl'");
		SH_FAILS(o);
		cr_assert(strstr(o.err, "Operation not supported"),
			  "start on wrenn: '%s'", o.err);
		sh_free(&o);
		expect_out("running\n", "head -1 box1/status");
		return;
	}
	if (cwsandbox()) {
		struct sh_out o;

		/* stop ends a CW sandbox for good: start is refused */
		expect_out("stopped\n", "echo 'stop 1' > box1/ctl && "
					"head -1 box1/status");
		o = sh_run("bash -c 'echo start > box1/ctl'");
		SH_FAILS(o);
		cr_assert(strstr(o.err, "Operation not supported"),
			  "start on cwsandbox: '%s'", o.err);
		sh_free(&o);
		return;
	}
	if (local())
		n = mnt_sandbox_pids(&m, "box1", pids, 64);
	ok("echo hello > box1/fs/tmp/hi");
	expect_out("stopped\n", "echo 'stop 1' > box1/ctl && "
				"head -1 box1/status");
	for (i = 0; i < n && i < 64; i++)
		cr_assert(!pid_alive(pids[i]), "pid %d alive after stop",
			  (int)pids[i]);
	expect_out("running\n", "echo start > box1/ctl && "
				"head -1 box1/status");
	expect_out("hello\n", "cat box1/fs/tmp/hi");
}

/* A finished proc/ job (its directory still there, its exit code kept)
 * does not hold up stop: its zombie waits for a parent outside the
 * sandbox, which kept the sandbox's PID 1 from ending (stop took the
 * whole request timeout and left the sandbox "running"). */
Test(walk, stop_after_finished_job)
{
	if (!local())
		cr_skip_test("local backend: its job monitors");
	mkbox("box1");
	expect_out("3\n", "mkdir box1/proc/j && "
			  "echo 'echo hi; exit 3' > box1/proc/j/cmd && "
			  "timeout 20 cat box1/proc/j/wait");
	expect_out("stopped\n", "timeout 10 sh -c \"echo 'stop 20' > "
				"box1/ctl\" && head -1 box1/status");
	expect_out("3\nhi\n", "cat box1/proc/j/wait box1/proc/j/stdout");
	expect_out("running\n", "echo start > box1/ctl && "
				"head -1 box1/status");
}

struct pauser {
	char ctl[MNT_PATH_MAX + 32];
	int err;
	pid_t poller;	 /* thread that polls status */
	bool blocked;	 /* it was seen blocked in poll(2) */
	long t_write_ms; /* when the pause write began */
	const char *verb; /* "pause\n" (CW: "stop 0\n", it has no pause) */
};

static long ms_now(void);

/* Pause once the poller is blocked in poll(2): a condition, not a guess
 * at how long the poll takes to register. */
static void *pause_later(void *arg)
{
	struct pauser *p = arg;
	static const long nrs[] = { SYS_poll, SYS_ppoll };
	int fd;

	p->blocked = mnt_task_in_syscall(getpid(), p->poller, nrs, 2, 10000);
	p->t_write_ms = ms_now();
	fd = open(p->ctl, O_WRONLY | O_TRUNC);
	if (fd < 0) {
		p->err = errno;
		return NULL;
	}
	if (write(fd, p->verb, strlen(p->verb)) != (ssize_t)strlen(p->verb))
		p->err = errno;
	if (close(fd) < 0)
		p->err = errno;
	return NULL;
}

static long ms_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/* poll() on an open status wakes when the state changes */
Test(walk, poll_status_wakes)
{
	char path[MNT_PATH_MAX + 32], buf[256];
	struct pauser p = { .err = 0,
			    .verb = cwsandbox() ? "stop 0\n" : "pause\n" };
	struct pollfd pf;
	pthread_t th;
	long t0, dt;
	ssize_t n;
	int fd, r;

	mkbox("box1");
	snprintf(path, sizeof(path), "%s/box1/status", m.mnt);
	snprintf(p.ctl, sizeof(p.ctl), "%s/box1/ctl", m.mnt);
	fd = open(path, O_RDONLY);
	cr_assert_geq(fd, 0, "open status: %s", strerror(errno));
	n = read(fd, buf, sizeof(buf) - 1);
	cr_assert_gt(n, 0);
	buf[n] = '\0';
	cr_assert(strncmp(buf, "running\n", 8) == 0, "status: %s", buf);
	while (read(fd, buf, sizeof(buf)) > 0)
		; /* to EOF: what is there has been seen */

	pf = (struct pollfd){ .fd = fd, .events = POLLIN | POLLPRI };
	p.poller = (pid_t)syscall(SYS_gettid);
	cr_assert_eq(pthread_create(&th, NULL, pause_later, &p), 0);
	t0 = ms_now();
	r = poll(&pf, 1, 15000);
	dt = ms_now() - t0;
	pthread_join(th, NULL);
	cr_assert_eq(p.err, 0, "writing pause: %s", strerror(p.err));
	cr_assert(p.blocked, "poll(2) never blocked");
	cr_assert_eq(r, 1, "poll returned %d (revents %#x) after %ld ms", r,
		     pf.revents, dt);
	cr_assert_geq(t0 + dt, p.t_write_ms,
		      "poll did not wait for the change (%ld ms, revents %#x)",
		      dt, pf.revents);
	close(fd);
	expect_out(cwsandbox() ? "stopped\n" : "paused\n",
		   "head -1 box1/status");
}
