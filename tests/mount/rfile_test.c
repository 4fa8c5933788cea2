/* rfile_test.c - files through a mount as programs use them (issue 8):
 * the seeded model checker (tests/checker/rfcheck.c) and one test per
 * numbered finding of issue 8, each on its own fresh mount, on every
 * backend (the remote ones go through api/rfile.c). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

static struct mnt m;

static bool wrenn(void);

static void setup(void)
{
	int r;

	if (wrenn()) /* request counts come from the trace */
		setenv("SBXFS_WRENN_TRACE", "1", 1);
	r = mnt_start(&m, NULL, NULL);

	cr_assert_eq(r, 0, "mount failed: %s", strerror(-r));
}

static void teardown(void)
{
	mnt_teardown(&m);
}

TestSuite(rfile, .init = setup, .fini = teardown, .timeout = 300);

static bool wrenn(void)
{
	const char *s = getenv("SBXFS_TEST_SOURCE");

	return s && !strncmp(s, "wrenn", 5);
}

static void ok(const char *cmd)
{
	struct sh_out o = sh_run("%s", cmd);

	SH_OK(o);
}

/* A python3 snippet run in box/fs/tmp; prints what the test compares. */
static struct sh_out py(const char *code)
{
	return sh_run_t(120, "cd box/fs/tmp && python3 - <<'PYEOF'\n"
			     "import os, sys\n%s\nPYEOF", code);
}

static void py_says(const char *code, const char *want)
{
	struct sh_out o = py(code);

	SH_OK(o);
	cr_assert_str_eq(o.out, want, "snippet said:\n%s\n(stderr %s)",
			 o.out, o.err);
}

/* A command in the sandbox through box/exec. */
#define IN_BOX(cmd) "(exec 3<>box/exec; printf '%%s\\n' " cmd " >&3; cat <&3)"

static void mkbox(void)
{
	ok("mkdir box");
}

/* The checker: thousands of random operations, 0 divergences. */
Test(rfile, model_checker, .timeout = 900)
{
	const char *bin = getenv("RFCHECK_BIN");
	struct sh_out o;

	cr_assert(bin && *bin, "RFCHECK_BIN not set");
	mkbox();
	for (int seed = 1; seed <= 3; seed++) {
		o = sh_run_t(280, "%s box/fs/tmp %d 1200", bin, seed);
		SH_OK(o);
	}
}

/* 1. Two descriptors on one file: both writes land; O_TRUNC + O_APPEND
 * from two descriptors give what a disk gives. */
Test(rfile, f1_two_descriptors)
{
	mkbox();
	ok("printf 0123456789 > box/fs/tmp/f");
	py_says("a = os.open('f', os.O_RDWR); b = os.open('f', os.O_RDWR)\n"
		"os.pwrite(a, b'AA', 0); os.pwrite(b, b'BB', 8)\n"
		"os.close(a); os.close(b)\n"
		"print(open('f').read())\n"
		"a = os.open('g', os.O_RDWR | os.O_CREAT | os.O_TRUNC)\n"
		"b = os.open('g', os.O_WRONLY | os.O_APPEND)\n"
		"os.write(b, b'x' * 100); os.close(b)\n"
		"os.write(a, b'y' * 10); os.close(a)\n"
		"d = open('g', 'rb').read()\n"
		"print(len(d), d == b'y' * 10 + b'x' * 90)\n",
		"AA234567BB\n100 True\n");
}

/* 2. Two shells appending 50 lines each with >>: 100 lines. */
Test(rfile, f2_concurrent_append)
{
	struct sh_out o;

	mkbox();
	o = sh_run_t(240, "cd box/fs/tmp || exit 1; "
			  "(for i in $(seq 50); do echo a$i >> ca; done) & "
			  "(for i in $(seq 50); do echo b$i >> ca; done) & "
			  "wait; wc -l < ca; grep -c '^a' ca; grep -c '^b' ca; "
			  "cat ../../err");
	SH_OK(o);
	cr_assert_str_eq(o.out, "100\n50\n50\n", "got:\n%s", o.out);
}

/* 3. Read after write on a new and an O_TRUNC file; fstat and stat see
 * our writes at once. */
Test(rfile, f3_read_after_write)
{
	mkbox();
	ok("echo old content > box/fs/tmp/t");
	py_says("for name, fl in (('n', os.O_CREAT), ('t', os.O_TRUNC)):\n"
		"    fd = os.open(name, os.O_RDWR | fl)\n"
		"    os.pwrite(fd, b'0123456789', 0)\n"
		"    print(os.pread(fd, 10, 0), os.fstat(fd).st_size,\n"
		"          os.stat(name).st_size)\n"
		"    os.close(fd)\n"
		"    print(os.stat(name).st_size)\n",
		"b'0123456789' 10 10\n10\nb'0123456789' 10 10\n10\n");
}

/* 4. ftruncate up then pwrite inside; mmap MAP_SHARED after ftruncate
 * of a new file. */
Test(rfile, f4_ftruncate_mmap)
{
	mkbox();
	py_says("import mmap\n"
		"fd = os.open('h', os.O_RDWR | os.O_CREAT | os.O_TRUNC)\n"
		"os.ftruncate(fd, 100000); os.pwrite(fd, b'abcdefghij', 100)\n"
		"print(os.fstat(fd).st_size); os.ftruncate(fd, 50)\n"
		"print(os.fstat(fd).st_size); os.close(fd)\n"
		"print(os.stat('h').st_size)\n"
		"fd = os.open('m', os.O_RDWR | os.O_CREAT | os.O_TRUNC)\n"
		"os.ftruncate(fd, 8192); mm = mmap.mmap(fd, 8192)\n"
		"mm[4096:4101] = b'hello'; mm.flush(); mm.close(); os.close(fd)\n"
		"d = open('m', 'rb').read(); print(len(d), d[4096:4101])\n",
		"100000\n50\n50\n8192 b'hello'\n");
	/* the sandbox side holds the same bytes */
	ok("test \"$(dd if=box/fs/tmp/m bs=1 skip=4096 count=5 "
	   "2>/dev/null)\" = hello");
}

/* 5. Rename and unlink of an open file carry its data. */
Test(rfile, f5_rename_unlink_open)
{
	mkbox();
	py_says("fd = os.open('a', os.O_RDWR | os.O_CREAT | os.O_TRUNC)\n"
		"os.write(fd, b'one\\n'); os.rename('a', 'b')\n"
		"os.write(fd, b'two\\n'); os.close(fd)\n"
		"print(repr(open('b').read()), os.path.exists('a'))\n"
		"fd = os.open('u', os.O_RDWR | os.O_CREAT | os.O_TRUNC)\n"
		"os.write(fd, b'data'); os.unlink('u'); os.write(fd, b'more')\n"
		"print(os.pread(fd, 100, 0), os.path.exists('u'))\n"
		"os.close(fd)\n",
		"'one\\ntwo\\n' False\nb'datamore' False\n");
	py_says("fd = os.open('u', os.O_RDWR | os.O_CREAT | os.O_TRUNC)\n"
		"os.write(fd, b'data'); os.unlink('u'); os.write(fd, b'more')\n"
		"print(os.pread(fd, 100, 0), os.fstat(fd).st_size)\n"
		"os.ftruncate(fd, 2); print(os.pread(fd, 100, 0))\n"
		"os.close(fd); print(os.path.exists('u'))\n",
		"b'datamore' 8\nb'da'\nFalse\n");
}

/* 6. A reader in another process sees a prefix of what the writer
 * wrote, each time it reads. */
Test(rfile, f6_reader_sees_prefix)
{
	mkbox();
	py_says("data = b''.join(b'%05d\\n' % i for i in range(4000))\n"
		"fd = os.open('w', os.O_WRONLY | os.O_CREAT | os.O_TRUNC)\n"
		"pid = os.fork()\n"
		"if pid == 0:\n"
		"    for i in range(0, len(data), 600):\n"
		"        os.write(fd, data[i:i + 600])\n"
		"    os._exit(0)\n"
		"bad = 0; reads = 0\n"
		"while True:\n"
		"    done = os.waitpid(pid, os.WNOHANG)[0] == pid\n"
		"    r = os.open('w', os.O_RDONLY)\n"
		"    got = b''\n"
		"    while True:\n"
		"        c = os.read(r, 65536)\n"
		"        if not c: break\n"
		"        got += c\n"
		"    os.close(r); reads += 1\n"
		"    if data[:len(got)] != got: bad += 1\n"
		"    if done: break\n"
		"os.close(fd)\n"
		"print(bad, got == data)\n",
		"0 True\n");
}

/* 7 (files). A create that fails leaves no file: O_EXCL on an existing
 * name, and a created file is not in the sandbox before its first
 * write-back, so a failed one never appears (the server-error case is
 * in tests/faults). */
Test(rfile, f7_failed_create_leaves_nothing)
{
	mkbox();
	ok("echo x > box/fs/tmp/e");
	py_says("try:\n"
		"    os.open('e', os.O_WRONLY | os.O_CREAT | os.O_EXCL)\n"
		"except FileExistsError:\n"
		"    print('EEXIST')\n"
		"fd = os.open('c', os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)\n"
		"os.write(fd, b'abc'); os.close(fd)\n"
		"print(oct(os.stat('c').st_mode & 0o777), open('c').read())\n",
		"EEXIST\n0o600 abc\n");
}

/* 9. Metadata economy (wrenn): a warm stat costs no request; a new
 * file's chmod and utimes travel with its one write-back. */
Test(rfile, f9_metadata_calls)
{
	struct sh_out o;

	if (!wrenn())
		return; /* the local backend makes no requests */
	mkbox();
	/* queued at close; an exec lands it */
	o = sh_run("echo x > box/fs/tmp/s; " IN_BOX("true"));
	SH_OK(o);
	o = sh_run("ls -l box/fs/tmp >/dev/null; "
		   "n0=$(grep -c 'wrenn: ' \"$TMPD/sbxfs.log\"); "
		   "stat box/fs/tmp/s >/dev/null; stat box/fs/tmp/s >/dev/null;"
		   " n1=$(grep -c 'wrenn: ' \"$TMPD/sbxfs.log\"); "
		   "echo $((n1 - n0))");
	SH_OK(o);
	cr_assert_str_eq(o.out, "0\n", "warm stat made requests: %s", o.out);
	/* tar-like: create, write, fchmod, futimens, close */
	o = sh_run("n0=$(grep -c 'wrenn: ' \"$TMPD/sbxfs.log\"); "
		   "cd box/fs/tmp && python3 -c \"import os\n"
		   "fd = os.open('t1', os.O_WRONLY | os.O_CREAT | os.O_EXCL)\n"
		   "os.write(fd, b'abc'); os.fchmod(fd, 0o640)\n"
		   "os.utime(fd, (1000000000, 1000000000)); os.close(fd)\" && "
		   "cd \"$MNT\" && stat -c '%%a %%Y %%s' box/fs/tmp/t1 && "
		   /* close(2) queued it: an exec lands the queue first */
		   IN_BOX("true") " && "
		   "n1=$(grep -c 'wrenn: ' \"$TMPD/sbxfs.log\"); "
		   "grep 'wrenn: ' \"$TMPD/sbxfs.log\" | tail -n $((n1 - n0)) | "
		   "grep -c -e files/write -e /exec$");
	SH_OK(o);
	cr_assert_str_eq(o.out, "640 1000000000 3\n2\n",
			 "want one upload and one command:\n%s", o.out);
}

/* ---- small-file batching (wrenn: api/rfile.c store_batch) ---------------- */

/* tar x through the mount, then at once a command in the sandbox: it
 * sees every file with the bytes, modes and mtimes of the same tar x on
 * the local disk; the API log shows batches, not a request per file. */
Test(rfile, batch_tar_then_exec)
{
	struct sh_out o;

	if (!wrenn())
		return;
	mkbox();
	o = sh_run_t(120,
		"set -e; s=$TMPD/src; mkdir -p $s/d/e $TMPD/ref; "
		"for i in $(seq 60); do head -c $((i * 37)) /dev/urandom "
		"> $s/d/f$i; chmod $(( i %% 3 == 0 ? 755 : i %% 3 == 1 ? 640 "
		": 600 )) $s/d/f$i; touch -d @$((1500000000 + i * 7)) "
		"$s/d/f$i; done; : > $s/d/e/empty; chmod 444 $s/d/e/empty; "
		"tar -C $s -cf $TMPD/a.tar d; tar -C $TMPD/ref -xf $TMPD/a.tar; "
		"mkdir box/fs/tmp/tx; n0=$(grep -c 'wrenn: ' $TMPD/sbxfs.log); "
		"tar -C box/fs/tmp/tx -xf $TMPD/a.tar; "
		IN_BOX("'cd /tmp/tx && find . -type f -printf \"%%P %%m %%T@ "
		       "%%s\\n\" | sort && find . -type f | sort | xargs cat "
		       "| md5sum'") " > $TMPD/box.txt; "
		"n1=$(grep -c 'wrenn: ' $TMPD/sbxfs.log); "
		"(cd $TMPD/ref && find . -type f -printf '%%P %%m %%T@ %%s\\n' "
		"| sort && find . -type f | sort | xargs cat | md5sum) "
		"> $TMPD/ref.txt; "
		"cmp $TMPD/box.txt $TMPD/ref.txt || diff $TMPD/box.txt "
		"$TMPD/ref.txt | head; "
		"w=$(tail -n $((n1 - n0)) $TMPD/sbxfs.log | grep -c "
		"files/write); [ $w -le 3 ] && echo few writes; "
		"wc -l < $TMPD/box.txt");
	SH_OK(o);
	/* one batch, or a few when tar paused longer than the idle delay
	 * (its mkdir of d/e is a request) */
	cr_assert_str_eq(o.out, "few writes\n62\n",
			 "want 61 files + md5 line in <= 3 uploads:\n%s\n%s",
			 o.out, o.err);
}

/* -o sync_close: close(2) returns once the file is in the sandbox (its
 * upload is in the log when close returns), as without batching. */
Test(rfile, sync_close_option)
{
	struct sh_out o;
	const char *cnt = "n0=$(grep -c files/write $TMPD/sbxfs.log); "
			  "echo hi > box/fs/tmp/sc$1; "
			  "n1=$(grep -c files/write $TMPD/sbxfs.log); "
			  "[ $n1 -gt $n0 ] && echo landed";

	if (!wrenn())
		return;
	mkbox();
	snprintf(m.opts + strlen(m.opts), sizeof(m.opts) - strlen(m.opts),
		 "%ssync_close", m.opts[0] ? "," : "");
	cr_assert_eq(mnt_remount(&m), 0);
	o = sh_run("sh -c '%s' - 1; sh -c '%s' - 2; "
		   "cat box/fs/tmp/sc1 box/fs/tmp/sc2", cnt, cnt);
	SH_OK(o);
	cr_assert_str_eq(o.out, "landed\nlanded\nhi\nhi\n", "sync_close: %s",
			 o.out);
}

/* While batches land, a reader looping in the sandbox never sees a
 * half-written file: every file it sees has its full size. */
Test(rfile, batch_no_half_written, .timeout = 300)
{
	struct sh_out o;

	if (!wrenn())
		return;
	mkbox();
	ok("mkdir box/fs/tmp/hw");
	o = sh_run_t(180,
		"set -e; for r in 1 2 3; do head -c 300000 /dev/urandom "
		"> $TMPD/v$r; done; "
		IN_BOX("': > /tmp/hw/started; n=0; bad=0; while [ ! -e /tmp/hw/stop ]; do "
		       "for f in /tmp/hw/f*; do [ -e \"$f\" ] || continue; "
		       "s=$(wc -c < \"$f\"); n=$((n + 1)); "
		       "[ \"$s\" = 300000 ] || bad=$((bad + 1)); done; "
		       "done; echo seen $n bad $bad'")
		" > $TMPD/reader.txt 2>&1 & rp=$!; "
		/* the reader runs once its command started: wait for it */
		"for i in $(seq 200); do [ -e box/fs/tmp/hw/started ] && "
		"break; sleep 0.1; done; "
		"for r in 1 2 3; do for i in $(seq 12); do "
		"cp $TMPD/v$r box/fs/tmp/hw/f$i; done; "
		IN_BOX("true") " >/dev/null; done; "
		": > box/fs/tmp/hw/stop; " IN_BOX("true") " > /dev/null; "
		"wait $rp; cat $TMPD/reader.txt; "
		"cmp box/fs/tmp/hw/f7 $TMPD/v3 && echo last");
	SH_OK(o);
	cr_assert(strstr(o.out, " bad 0\n") && strstr(o.out, "last\n") &&
		  !strstr(o.out, "seen 0 "),
		  "reader or content:\n%s\n%s", o.out, o.err);
}

/* A file rewritten through a batch keeps its owner in the sandbox (the
 * listing has no owner: the archive's would be ours). */
Test(rfile, batch_keeps_owner)
{
	struct sh_out o;

	if (!wrenn())
		return;
	mkbox();
	o = sh_run(IN_BOX("'echo old > /tmp/own && chown 1234:1234 "
			  "/tmp/own'") " && echo new > box/fs/tmp/own && "
		   IN_BOX("'stat -c \"%%u:%%g %%s %%a\" /tmp/own; "
			  "cat /tmp/own'"));
	SH_OK(o);
	cr_assert_str_eq(o.out, "1234:1234 4 644\nnew\n", "got:\n%s\n%s",
			 o.out, o.err);
}

/* rmdir of a directory whose only file was just written (still queued
 * on wrenn) is ENOTEMPTY, as on a disk, and the file stays. */
Test(rfile, rmdir_with_queued_file)
{
	struct sh_out o;

	mkbox();
	o = sh_run("mkdir box/fs/tmp/rq && echo q > box/fs/tmp/rq/f && "
		   "{ rmdir box/fs/tmp/rq 2>&1 | grep -c 'not empty'; "
		   "cat box/fs/tmp/rq/f; }");
	SH_OK(o);
	cr_assert_str_eq(o.out, "1\nq\n", "got:\n%s\n%s", o.out, o.err);
}

/* A reader keeping a just-written file open does not hold back its
 * write-back (wrenn: the upload shows in the log while it is open). */
Test(rfile, reader_does_not_hold_batch)
{
	struct sh_out o;

	if (!wrenn())
		return;
	mkbox();
	o = sh_run("n0=$(grep -c files/write $TMPD/sbxfs.log); "
		   "echo x > box/fs/tmp/tf; exec 4< box/fs/tmp/tf; i=0; "
		   "while [ $(grep -c files/write $TMPD/sbxfs.log) = $n0 ] && "
		   "[ $i -lt 200 ]; do sleep 0.05; i=$((i + 1)); done; "
		   "exec 4<&-; [ $i -lt 200 ] && echo landed");
	SH_OK(o);
	cr_assert_str_eq(o.out, "landed\n", "got:\n%s\n%s", o.out, o.err);
}

/* Unmounting right after writing lands what was queued. */
Test(rfile, unmount_lands_queue)
{
	struct sh_out o;

	if (!wrenn())
		return;
	mkbox();
	o = sh_run("mkdir box/fs/tmp/um && for i in $(seq 50); do "
		   "echo $i > box/fs/tmp/um/u$i; done");
	SH_OK(o);
	cr_assert_eq(mnt_remount(&m), 0);
	o = sh_run(IN_BOX("'cat /tmp/um/u1 /tmp/um/u50; ls /tmp/um | wc -l'"));
	SH_OK(o);
	cr_assert_str_eq(o.out, "1\n50\n50\n", "got:\n%s\n%s", o.out, o.err);
}
