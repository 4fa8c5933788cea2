/* posix_test.c - fs/ behaves as a disk filesystem where pjdfstest found it
 * did not (issue 10): each case runs one shell script twice, in NAME/fs/tmp
 * through the mount and in a directory of the host's own disk (the test's
 * temp dir), and the two outputs must be the same.  Local backend only:
 * the checks of the sandbox side go to its merged root on the host. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

static struct mnt m;

static void setup(void)
{
	int r = mnt_start(&m, NULL, NULL);

	cr_assert_eq(r, 0, "mount failed: %s", strerror(-r));
	struct sh_out o = sh_run("mkdir box && head -1 box/status");
	SH_OK(o);
	cr_assert_str_eq(o.out, "running\n", "status after mkdir: '%s'",
			 o.out);
}

static void teardown(void)
{
	mnt_teardown(&m);
}

TestSuite(posix, .init = setup, .fini = teardown, .timeout = 120);

/* Run script in MNT/box/fs/tmp/t and in TMPD/ext/t; both outputs must
 * match and the mount's is returned (owned by the harness). */
static const char *same_as_disk(const char *script)
{
	struct sh_out a = sh_run("mkdir -p box/fs/tmp/t && cd box/fs/tmp/t "
				 "&& { %s; } 2>&1", script);
	struct sh_out b = sh_run("mkdir -p \"$TMPD/ext/t\" && "
				 "cd \"$TMPD/ext/t\" && { %s; } 2>&1", script);

	cr_assert_eq(a.status, b.status, "exit %d on the mount, %d on disk\n"
		     "--- mount:\n%s\n--- disk:\n%s", a.status, b.status, a.out,
		     b.out);
	cr_assert_str_eq(a.out, b.out, "outputs differ\n--- mount:\n%s\n"
			 "--- disk:\n%s", a.out, b.out);
	return a.out;
}

/* Hard links are one file: one inode number, one link count, and a change
 * through one name shows through the others at once. */
Test(posix, hardlink_one_inode)
{
	const char *out = same_as_disk(
		"echo hi > a && ln a b && ln b c && "
		"[ \"$(stat -c %i a)\" = \"$(stat -c %i c)\" ] && echo same && "
		"stat -c '%n %h %a' a b c && chmod 600 c && "
		"stat -c '%n %h %a' a b && echo more >> b && cat a c && "
		"rm a && stat -c '%n %h %s' b c && "
		"[ \"$(ls -i b | cut -d' ' -f1)\" = \"$(stat -c %i c)\" ] && "
		"echo ls-same");
	cr_assert(strstr(out, "same\n"), "%s", out);
	cr_assert(strstr(out, "b 2 8\n"), "%s", out);
}

/* A tree deeper than PATH_MAX, reached the way processes reach it: by
 * relative paths; a relative path of PATH_MAX - 1 bytes works and one of
 * PATH_MAX is ENAMETOOLONG, as on disk. */
Test(posix, long_paths)
{
	/* 16 components of 254 bytes and 15 slashes: 4079; then "/" and a
	 * name of 15: 4095 */
	const char *out = same_as_disk(
		"n=$(printf %0254d 0); p=$n; "
		"for i in $(seq 15); do p=$p/$n; done; "
		"mkdir -p $p && f=$p/$(printf %015d 1) && "
		"printf %s $f | wc -c && echo deep > $f && cat $f && "
		"stat -c %s $f && ln $f $f.x 2>&1 | sed 's/.*: //'; "
		"mv $f $p/y 2>&1 | sed 's/.*: //'; "
		/* bash: dash's cd hands chdir the whole logical path */
		"bash -c \"for i in \\$(seq 16); do cd -P $n; done; cat y && "
		"mkdir z && cd z && mkdir -p $p && echo deeper > $p/w && "
		"cat $p/w\" && echo ok");
	cr_assert(strstr(out, "4095\ndeep\n5\n"), "%s", out);
	cr_assert(strstr(out, "deeper\nok\n"), "%s", out);
	/* the file is there on the sandbox side, below PATH_MAX there */
	struct sh_out o = sh_run("cd \"$DATA/sandboxes/box/root/tmp/t\" && "
				 "find . -name w | wc -l");
	SH_OK(o);
	cr_assert_str_eq(o.out, "1\n");
}

/* What a create makes has the mode asked for after the caller's umask,
 * set-ID bits included (sbxfs's own umask takes nothing away). */
Test(posix, create_modes)
{
	same_as_disk("umask 0 && touch f && mkdir d && mkdir -m 2775 g && "
		     "mkfifo -m 0666 p && stat -c '%n %a' f d g p && "
		     "umask 027 && touch f2 && mkdir d2 && "
		     "stat -c '%n %a' f2 d2 && chmod 4755 f && stat -c %a f");
}

/* A file a sandbox process changes shows its new size and data through
 * the mount within the attribute timeout (1 s), also after it was cached. */
Test(posix, change_in_sandbox_seen)
{
	struct sh_out o = sh_run(
		"f=box/fs/tmp/seen; echo one > $f && cat $f >/dev/null && "
		"echo twotwo >> \"$DATA/sandboxes/box/root/tmp/seen\" && "
		"for i in $(seq 50); do [ \"$(wc -c < $f)\" = 11 ] && break; "
		"sleep 0.1; done; "
		"cat $f; wc -c < $f");
	SH_OK(o);
	cr_assert_str_eq(o.out, "one\ntwotwo\n11\n");
}

/* Read system calls sbxfs has made so far (each FUSE request it takes is
 * one), from /proc/PID/io. */
static long daemon_reads(void)
{
	char path[64], line[128];
	long n = -1;
	FILE *f;

	snprintf(path, sizeof path, "/proc/%d/io", (int)m.pid);
	f = fopen(path, "r");
	cr_assert(f, "no %s", path);
	while (fgets(line, sizeof line, f))
		if (sscanf(line, "syscr: %ld", &n) == 1)
			break;
	fclose(f);
	cr_assert_geq(n, 0, "no syscr in %s", path);
	return n;
}

/* A name that is not there is asked once and then kept by the kernel as a
 * negative entry for the attribute timeout: probing it again and again (a
 * PATH search, make, an editor's backup check) costs no request. */
Test(posix, missing_name_asked_once)
{
	struct sh_out o = sh_run("mkdir -p box/fs/tmp/neg && "
				 "! test -e box/fs/tmp/neg/nope");
	SH_OK(o);
	long before = daemon_reads();
	o = sh_run("cd box/fs/tmp/neg && i=0; while [ $i -lt 300 ]; do "
		   "test -e nope && exit 1; i=$((i + 1)); done; exit 0");
	SH_OK(o);
	long n = daemon_reads() - before;
	/* 300 before negative entries; a few for the status poller */
	cr_assert_lt(n, 60, "300 lookups of a missing name took %ld "
		     "requests", n);
}

/* ... and the negative entry never hides what comes later: our own
 * create, mkdir and rename replace it at once, and a name a sandbox
 * process makes shows within the attribute timeout (1 s). */
Test(posix, missing_name_then_made)
{
	struct sh_out o = sh_run(
		"cd box/fs/tmp && mkdir n2 && cd n2 && "
		"test -e f || : > f; test -e d || mkdir d; "
		"test -e r || mv f r; ls; "
		"test -e s || true; "
		"echo hi > \"$DATA/sandboxes/box/root/tmp/n2/s\"; "
		"for i in $(seq 30); do test -e s && break; sleep 0.1; done; "
		"cat s");
	SH_OK(o);
	cr_assert_str_eq(o.out, "d\nr\nhi\n");
}

/* A command's end takes the negative entries back: a name looked up and
 * found missing, then made by a command run through `exec` or a proc/
 * job, is there as soon as the command's end is seen (its EOF, `wait`),
 * not attr_timeout later; also when the miss came from a fresh listing. */
Test(posix, missing_name_made_by_command)
{
	struct sh_out o = sh_run(
		"cd box && mkdir fs/tmp/n3 && "
		"test -e fs/tmp/n3/a || { exec 3<>exec; "
		"echo 'echo A > /tmp/n3/a' >&3; cat <&3; exec 3>&-; }; "
		"cat fs/tmp/n3/a && "
		"ls fs/tmp/n3 >/dev/null && ! test -e fs/tmp/n3/b && "
		"mkdir proc/j && echo 'echo B > /tmp/n3/b' > proc/j/cmd && "
		"cat proc/j/wait && cat fs/tmp/n3/b && "
		"test -e fs/tmp/n3/c || { exec 3<>exec; "
		"echo 'mkdir /tmp/n3/c' >&3; cat <&3; exec 3>&-; }; "
		"test -d fs/tmp/n3/c && echo dir && rmdir proc/j");
	SH_OK(o);
	cr_assert_str_eq(o.out, "A\n0\nB\ndir\n");
}

/* Attributes set on a file that is open (tar: write, then times, owner,
 * mode before the close) read back as set, through either name. */
Test(posix, setattr_of_open_file)
{
	same_as_disk("exec 3>f && echo data >&3 && "
		     "touch -d @1000000000 f && chmod 640 f && "
		     "chown 12:34 f && ln f g && chmod 604 g && "
		     "stat -c '%a %u %g %s %Y %h' f g && exec 3>&-");
}
