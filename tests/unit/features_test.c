/* features_test.c - the pure parts of templates/ports/tags (issue 11 item
 * 3): tag names, tag lists, the port inode encoding, tag=T repeatable in
 * `new` while other keys are not. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "fs/fs_int.h"

Test(features, tag_names)
{
	static const struct {
		const char *t;
		bool ok;
	} rows[] = {
		{ "web", true },	{ "a", true },	       { "A.b_c-9", true },
		{ "9lives", true },	{ "", false },	       { "-x", false },
		{ ".x", false },	{ "_x", false },       { "a:b", false },
		{ "a b", false },	{ "a,b", false },      { "a/b", false },
		{ "é", false },		{ "a\n", false },
	};
	char long63[64], long64[65];

	for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
		cr_assert_eq(api_tag_valid(rows[i].t), rows[i].ok, "'%s'",
			     rows[i].t);
	memset(long63, 'a', 63);
	long63[63] = '\0';
	memset(long64, 'a', 64);
	long64[64] = '\0';
	cr_assert(api_tag_valid(long63));
	cr_assert(!api_tag_valid(long64));
}

Test(features, tag_lists)
{
	cr_assert(fs_tags_has("web,blue", "web"));
	cr_assert(fs_tags_has("web,blue", "blue"));
	cr_assert(!fs_tags_has("web,blue", "we"));
	cr_assert(!fs_tags_has("web,blue", "blu"));
	cr_assert(!fs_tags_has("webs", "web"));
	cr_assert(!fs_tags_has("", "web"));
	cr_assert(!fs_tags_has(NULL, "web"));
}

Test(features, port_inodes)
{
	for (unsigned p = 1; p <= 65535; p++) {
		fuse_ino_t ino = fs_ino_make(FS_K_PORT, 4095, 4095, p >> 12,
					     p & 4095);

		cr_assert_eq(fs_ino_kind(ino), FS_K_PORT);
		cr_assert_eq(fs_ino_sb_slot(ino), 4095u);
		cr_assert_eq((fs_ino_job_slot(ino) << 12) | fs_ino_job_gen(ino),
			     p);
	}
}

Test(features, tag_repeatable_in_new)
{
	char line[] = "new box tag=a tag=b cpus=1";
	char twice[] = "new box cpus=1 cpus=2";
	char msg[256];
	struct fs_cmd c;

	cr_assert_eq(fs_new_parse(line, &c, msg, sizeof msg), 0, "%s", msg);
	cr_assert_eq(c.nf, 5);
	cr_assert_eq(fs_new_parse(twice, &c, msg, sizeof msg), -EINVAL);
	cr_assert(strstr(msg, "twice"), "%s", msg);
}
