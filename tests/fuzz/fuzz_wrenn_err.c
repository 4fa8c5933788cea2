/* fuzz_wrenn_err.c - libFuzzer target: error bodies from a Wrenn server
 * (JSON envelope, plain text, or garbage) through wrenn_err_http
 * (api/wrenn/errmap.c, cJSON).  The first byte picks the HTTP status.
 * Invariants: a negative errno for every error status and a sentence
 * that is a C string.  (A JSON "message" keeps its control characters:
 * escaped newlines reach the sentence; not checked here, see
 * tests/fuzz/README.md.) */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "api/wrenn/errmap.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const long statuses[] = { 400, 401, 403, 404, 409, 413,
					 429, 500, 502, 503, 504, 418 };
	char msg[512];
	long status;
	int err;

	if (size == 0 || size > 1 << 20)
		return 0;
	status = statuses[data[0] % (sizeof statuses / sizeof statuses[0])];
	memset(msg, 'x', sizeof msg);
	err = wrenn_err_http(status, (const char *)data + 1, size - 1, msg,
			     sizeof msg);
	if (err >= 0 || !memchr(msg, '\0', sizeof msg))
		abort();
	return 0;
}
