/* fuzz_ctl.c - libFuzzer target: one write to a ctl file, as root ctl,
 * NAME/ctl and the name checks see it (fs/util.c).  Checks invariants, not
 * only crashes: a write fs_ctl_check accepts has no NUL or control byte
 * but \n and \t; every word fs_cmd_parse gives is non-empty and blank-free;
 * a name fs_name_valid accepts matches [A-Za-z0-9][A-Za-z0-9._-]{0,62}. */
#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fs/fs_int.h"

static const struct fs_cmdtab verbs[] = {
	{ 0, "start", 0, 0 }, { 1, "stop", 0, 1 },    { 2, "pause", 0, 0 },
	{ 3, "resume", 0, 0 }, { 4, "ping", 0, 0 },   { 5, "snapshot", 1, 1 },
	{ 6, "destroy", 0, 0 }, { 7, "kill", 0, 1 },  { 8, "env", 1, 1 },
};

static void check_name(const char *s)
{
	size_t n = strlen(s);

	if (!fs_name_valid(s))
		return;
	if (n == 0 || n > FS_NAME_MAX || !isalnum((unsigned char)s[0]))
		abort();
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && !strchr("._-", s[i]))
			abort();
}

static void check_words(const struct fs_cmd *c)
{
	if (c->nf < 0 || c->nf > FS_CMD_MAXF)
		abort();
	for (int i = 0; i < c->nf; i++) {
		if (!c->f[i][0])
			abort();
		for (const char *p = c->f[i]; *p; p++)
			if (isspace((unsigned char)*p))
				abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char msg[256], *buf, *line, *save = NULL;

	if (size > 65536)
		return 0;
	if (fs_ctl_check((const char *)data, size, msg, sizeof msg)) {
		if (!memchr(msg, '\0', sizeof msg))
			abort(); /* the sentence is a C string */
		return 0;
	}
	for (size_t i = 0; i < size; i++)
		if (data[i] < 0x20 && data[i] != '\n' && data[i] != '\t')
			abort();
	buf = malloc(size + 1);
	if (!buf)
		return 0;
	memcpy(buf, data, size);
	buf[size] = '\0';
	for (line = strtok_r(buf, "\n", &save); line;
	     line = strtok_r(NULL, "\n", &save)) {
		char *a = strdup(line), *b = strdup(line);
		struct fs_cmd c;

		if (!a || !b) {
			free(a);
			free(b);
			break;
		}
		check_name(line);
		if (fs_new_parse(a, &c, msg, sizeof msg) == 0) {
			check_words(&c);
			if (c.nf && (c.nf < 2 || !fs_name_valid(c.f[1])))
				abort();
		}
		if (fs_cmd_parse(b, &c) == 0) {
			check_words(&c);
			for (int i = 0; i < c.nf; i++)
				check_name(c.f[i]);
			fs_cmd_lookup(&c, verbs,
				      sizeof verbs / sizeof verbs[0], msg,
				      sizeof msg);
		}
		free(a);
		free(b);
	}
	free(buf);
	return 0;
}
