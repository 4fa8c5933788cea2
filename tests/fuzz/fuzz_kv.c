/* fuzz_kv.c - libFuzzer target: the key=value settings of
 * "new NAME key=value ..." (fs_new_parse, fs/util.c).  Invariants of an
 * accepted line: every setting has a '=', a key of [A-Za-z0-9_.-] (1 to
 * 64 bytes), and no key twice. */
#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fs/fs_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char line[4200], msg[256];
	struct fs_cmd c;
	size_t n;

	if (size > 4096)
		return 0;
	n = (size_t)snprintf(line, sizeof line, "new box ");
	memcpy(line + n, data, size);
	line[n + size] = '\0';
	if (fs_new_parse(line, &c, msg, sizeof msg))
		return 0;
	for (int i = 2; i < c.nf; i++) {
		const char *eq = strchr(c.f[i], '=');
		size_t kl;

		if (!eq || eq == c.f[i] || eq - c.f[i] > 64)
			abort();
		kl = (size_t)(eq - c.f[i]);
		for (size_t k = 0; k < kl; k++)
			if (!isalnum((unsigned char)c.f[i][k]) &&
			    !strchr("_.-", c.f[i][k]))
				abort();
		/* each key once, but tag= (repeatable: new NAME tag=a tag=b) */
		if (kl == 3 && !strncmp(c.f[i], "tag", 3))
			continue;
		for (int j = 2; j < i; j++)
			if (!strncmp(c.f[j], c.f[i], kl + 1))
				abort();
	}
	return 0;
}
