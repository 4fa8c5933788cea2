/* fs_test.c - table-driven unit tests of fs/: inode encoding, ctl command
 * parsing, the host view of sandbox symlinks, name validation. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "fs/fs_int.h"

/* ---- inode numbers ------------------------------------------------------ */

Test(fs_ino, round_trip)
{
	static const struct {
		enum fs_kind k;
		unsigned slot, gen, jslot, jgen;
	} t[] = {
		{ FS_K_ROOT_CTL, 0, 0, 0, 0 },
		{ FS_K_SB_DIR, 1, 0, 0, 0 },
		{ FS_K_SB_CTL, FS_SB_MAX - 1, FS_GEN_MASK, 0, 0 },
		{ FS_K_SB_STATUS, 17, 4000, 0, 0 },
		{ FS_K_SB_ALIAS, 5, 1, 0, 0 },
		{ FS_K_JOB_STDOUT, 3, 2, FS_JOB_MAX - 1, FS_GEN_MASK },
		{ FS_K_JOB_STATUS, 4095, 4095, 4095, 4095 },
		{ FS_K_PROC_DIR, 0, 1, 0, 0 },
	};
	for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
		fuse_ino_t ino = fs_ino_make(t[i].k, t[i].slot, t[i].gen,
					     t[i].jslot, t[i].jgen);

		cr_assert_neq(ino, FUSE_ROOT_ID, "row %zu", i);
		cr_assert_eq(fs_ino_kind(ino), t[i].k, "row %zu", i);
		cr_assert_eq(fs_ino_sb_slot(ino), t[i].slot, "row %zu", i);
		cr_assert_eq(fs_ino_sb_gen(ino), t[i].gen, "row %zu", i);
		cr_assert_eq(fs_ino_job_slot(ino), t[i].jslot, "row %zu", i);
		cr_assert_eq(fs_ino_job_gen(ino), t[i].jgen, "row %zu", i);
	}
}

Test(fs_ino, root_and_files)
{
	cr_assert_eq(fs_ino_kind(FUSE_ROOT_ID), FS_K_ROOT);
	static const uint64_t ids[] = { 1, 2, 12345, (1ull << 56) - 1 };
	for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
		fuse_ino_t ino = fs_ino_file(ids[i]);

		cr_assert_eq(fs_ino_kind(ino), FS_K_FILE);
		cr_assert_eq(fs_ino_file_id(ino), ids[i]);
	}
	/* A generation bump makes a different inode for the same slot. */
	cr_assert_neq(fs_ino_make(FS_K_SB_DIR, 7, 1, 0, 0),
		      fs_ino_make(FS_K_SB_DIR, 7, 2, 0, 0));
	/* Garbage kinds decode as NONE, never as a real kind. */
	cr_assert_eq(fs_ino_kind((fuse_ino_t)0xff << 56), FS_K_NONE);
}

/* ---- ctl parsing -------------------------------------------------------- */

static const struct fs_cmdtab tab[] = {
	{ 1, "start", 0, 0 },
	{ 2, "stop", 0, 1 },
	{ 3, "snapshot", 1, 1 },
};

Test(fs_cmd, parse_and_lookup)
{
	static const struct {
		const char *line;
		int nf;	   /* fields, or -1: parse fails */
		int index; /* table entry, 0: lookup fails */
		const char *msg; /* substring of the sentence on failure */
	} t[] = {
		{ "start", 1, 1, NULL },
		{ "  start  \t", 1, 1, NULL },
		{ "stop", 1, 2, NULL },
		{ "stop 5", 2, 2, NULL },
		{ "stop 5 6", 3, 0, "'stop' takes 0 to 1 arguments, got 2" },
		{ "snapshot", 1, 0, "'snapshot' takes 1 argument, got 0" },
		{ "snapshot s1", 2, 3, NULL },
		{ "bogus", 1, 0,
		  "unknown verb 'bogus'; verbs: start stop snapshot" },
		{ "START", 1, 0, "unknown verb 'START'" },
		{ "", 0, 0, "empty command" },
		{ "a b c d e f g h i j k l m n o p q", -1, 0, NULL },
	};
	for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
		char line[128], msg[256] = "";
		struct fs_cmd c;

		snprintf(line, sizeof line, "%s", t[i].line);
		int r = fs_cmd_parse(line, &c);
		if (t[i].nf < 0) {
			cr_assert_eq(r, -EINVAL, "row %zu", i);
			continue;
		}
		cr_assert_eq(r, 0, "row %zu", i);
		cr_assert_eq(c.nf, t[i].nf, "row %zu: nf %d", i, c.nf);
		const struct fs_cmdtab *e = fs_cmd_lookup(&c, tab, 3, msg,
							  sizeof msg);
		if (t[i].index) {
			cr_assert_not_null(e, "row %zu: %s", i, msg);
			cr_assert_eq(e->index, t[i].index, "row %zu", i);
		} else {
			cr_assert_null(e, "row %zu", i);
			cr_assert(strstr(msg, t[i].msg), "row %zu: '%s'", i,
				  msg);
		}
	}
}

/* ---- symlinks ----------------------------------------------------------- */

Test(fs_symlink, host_view)
{
	static const struct {
		const char *link, *target, *want;
	} t[] = {
		/* absolute: relative to the fs/ root, at the link's depth */
		{ "/tmp/up", "/", ".." },
		{ "/up", "/", "." },
		{ "/up", "/etc", "etc" },
		{ "/tmp/x", "/etc/passwd", "../etc/passwd" },
		{ "/a/b/c/x", "/usr/lib", "../../../usr/lib" },
		{ "/a/b/x", "/a/b/y", "../../a/b/y" },
		/* absolute with dot-dots cannot climb above the root */
		{ "/tmp/x", "/../../etc", "../etc" },
		{ "/tmp/x", "/usr/./lib/../bin//", "../usr/bin" },
		/* relative and staying inside: unchanged */
		{ "/tmp/x", "y", "y" },
		{ "/tmp/x", "../etc", "../etc" },
		{ "/a/b/x", "../../c", "../../c" },
		{ "/a/b/x", "./.././y", "./.././y" },
		/* relative but climbing out: clamped at / like the sandbox */
		{ "/tmp/x", "../../etc", "../etc" },
		{ "/x", "../etc/passwd", "etc/passwd" },
		{ "/a/b/x", "../../../../../etc", "../../etc" },
	};
	for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
		char out[4096];

		cr_assert_eq(fs_symlink_host(t[i].link, t[i].target, out,
					     sizeof out), 0, "row %zu", i);
		cr_assert_str_eq(out, t[i].want, "row %zu (%s -> %s)", i,
				 t[i].link, t[i].target);
	}
}

Test(fs_symlink, too_long)
{
	char out[8];

	cr_assert_eq(fs_symlink_host("/a/b/c/d/x", "/etc", out, sizeof out),
		     -ENAMETOOLONG);
}

/* ---- names -------------------------------------------------------------- */

Test(fs_name, valid)
{
	static const struct {
		const char *name;
		bool ok;
	} t[] = {
		{ "box1", true }, { "a.b_c-d", true }, { "", false },
		{ ".", false }, { "..", false }, { "a/b", false },
		{ "a b", false }, { "a\nb", false }, { "...", false },
		{ "x$(id)", false }, { "-rf", false }, { ".hidden", false },
		{ "_x", false }, { "9.", true },
		{ "0123456789012345678901234567890123456789012345678901234567"
		  "89012345", false },
		{ "0123456789012345678901234567890123456789012345678901234567"
		  "89012", true },
	};
	for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
		cr_assert_eq(fs_name_valid(t[i].name), t[i].ok, "row %zu", i);
}

/* ---- bad input ------------------------------------------------------------ */

Test(fs_ctl, check)
{
	static const struct {
		const char *buf;
		size_t len;
		int ret;
	} t[] = {
		{ "pause\n", 6, 0 },	    { "pause\nresume\n", 13, 0 },
		{ "stop\t5\n", 7, 0 },    { "pause\0resume\n", 13, -EINVAL },
		{ "new a\rb", 7, -EINVAL }, { "\x1b[1m", 4, -EINVAL },
		{ "x\x7f", 2, -EINVAL },    { "caf\xc3\xa9", 5, 0 },
		{ "", 0, 0 },
	};
	char msg[128];

	for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
		cr_assert_eq(fs_ctl_check(t[i].buf, t[i].len, msg, sizeof msg),
			     t[i].ret, "row %zu", i);
	fs_ctl_check("ab\0", 3, msg, sizeof msg);
	cr_assert_str_eq(msg, "byte 3 is a NUL byte; nothing was done");
}

Test(fs_ctl, new_parse)
{
	static const struct {
		const char *line;
		int ret, nf;
	} t[] = {
		{ "new box", 0, 2 },
		{ "  new   box  template=base network=none ", 0, 4 },
		{ "", 0, 0 },
		{ "new", -EINVAL, 0 },
		{ "make box", -EINVAL, 0 },
		{ "new -rf", -EINVAL, 0 },
		{ "new ctl", -EINVAL, 0 },
		{ "new err", -EINVAL, 0 },
		{ "new box template", -EINVAL, 0 },
		{ "new box =x", -EINVAL, 0 },
		{ "new box a=1 a=2", -EINVAL, 0 },
		{ "new box a=1 ab=2", 0, 4 },
		{ "new box k=", 0, 3 },
		{ "new box k$=1", -EINVAL, 0 },
		{ "new a b c d e f g h i j k l m n o p q", -EINVAL, 0 },
	};
	char msg[256];

	for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
		char line[128];
		struct fs_cmd c;

		snprintf(line, sizeof line, "%s", t[i].line);
		cr_assert_eq(fs_new_parse(line, &c, msg, sizeof msg), t[i].ret,
			     "row %zu (%s)", i, msg);
		if (!t[i].ret)
			cr_assert_eq(c.nf, t[i].nf, "row %zu", i);
	}
}
