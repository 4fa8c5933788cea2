/* errmap.c - gRPC status and CW Sandbox's ErrorInfo reasons -> errno: the
 * only place where the backend decides an errno (api/README.md's table).
 *
 * The reason decides first (only when ErrorInfo.domain is cwsandbox.com,
 * as the SDKs do), then the status code; a failed transport maps from
 * curl's code.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/cwsandbox/cw_int.h"
#include "rpc_status.pb-c.h"

static const struct {
	const char *reason;
	int err;
} reasons[] = {
	{ "CWSANDBOX_FILE_NOT_FOUND", ENOENT },
	{ "CWSANDBOX_FILE_IS_DIRECTORY", EISDIR },
	{ "CWSANDBOX_FILE_PERMISSION_DENIED", EACCES },
	{ "CWSANDBOX_FILE_IO_FAILED", EIO },
	{ "CWSANDBOX_FILE_TOO_LARGE", EFBIG },
	{ "CWSANDBOX_SANDBOX_NOT_FOUND", ENOENT },
	{ "CWSANDBOX_RUNNER_NOT_FOUND", ENOENT },
	{ "CWSANDBOX_RESOURCE_NOT_FOUND", ENOENT },
	{ "CWSANDBOX_SANDBOX_NOT_RUNNING", EBUSY },
	{ "CWSANDBOX_COMMAND_TIMEOUT", ETIMEDOUT },
	{ "CWSANDBOX_RUNNER_UNAVAILABLE", EHOSTUNREACH },
	{ "CWSANDBOX_BACKEND_UNAVAILABLE", EHOSTUNREACH },
	{ "CWSANDBOX_NOT_IMPLEMENTED", EOPNOTSUPP },
	{ "CWSANDBOX_INVALID_REQUEST", EINVAL },
	{ "CWSANDBOX_RESOURCE_CEILING_EXCEEDED", ENOSPC },
	{ "CWSANDBOX_RUNNER_CAPACITY_EXHAUSTED", ENOSPC },
};

/* gRPC code -> errno (index = code) */
static const int codes[17] = {
	[0] = 0,
	[1] = EIO,		/* CANCELLED */
	[2] = EIO,		/* UNKNOWN */
	[3] = EINVAL,		/* INVALID_ARGUMENT */
	[4] = ETIMEDOUT,	/* DEADLINE_EXCEEDED */
	[5] = ENOENT,		/* NOT_FOUND */
	[6] = EEXIST,		/* ALREADY_EXISTS */
	[7] = EACCES,		/* PERMISSION_DENIED */
	[8] = ENOSPC,		/* RESOURCE_EXHAUSTED */
	[9] = EBUSY,		/* FAILED_PRECONDITION: wrong state */
	[10] = EBUSY,		/* ABORTED */
	[11] = EINVAL,		/* OUT_OF_RANGE */
	[12] = EOPNOTSUPP,	/* UNIMPLEMENTED */
	[13] = EIO,		/* INTERNAL */
	[14] = EHOSTUNREACH,	/* UNAVAILABLE */
	[15] = EIO,		/* DATA_LOSS */
	[16] = EACCES,		/* UNAUTHENTICATED */
};

void cw_err_map(struct cw_status *st, CURLcode rc)
{
	size_t i;

	if (st->code == 0) {
		st->err = 0;
		return;
	}
	if (st->code < 0) {
		switch (rc) {
		case CURLE_COULDNT_CONNECT:
		case CURLE_COULDNT_RESOLVE_HOST:
		case CURLE_COULDNT_RESOLVE_PROXY:
			st->err = -EHOSTUNREACH;
			break;
		case CURLE_OPERATION_TIMEDOUT:
			st->err = -ETIMEDOUT;
			break;
		default:
			st->err = -EIO;
		}
		return;
	}
	for (i = 0; i < sizeof(reasons) / sizeof(*reasons); i++)
		if (!strcmp(st->reason, reasons[i].reason)) {
			st->err = -reasons[i].err;
			break;
		}
	if (i == sizeof(reasons) / sizeof(*reasons))
		st->err = st->code < 17 ? -codes[st->code] : -EIO;
	if (!st->msg[0])
		snprintf(st->msg, sizeof(st->msg), "%s",
			 api_strerror(st->err));
}

static int b64val(int ch)
{
	if (ch >= 'A' && ch <= 'Z')
		return ch - 'A';
	if (ch >= 'a' && ch <= 'z')
		return ch - 'a' + 26;
	if (ch >= '0' && ch <= '9')
		return ch - '0' + 52;
	if (ch == '+' || ch == '-')
		return 62;
	if (ch == '/' || ch == '_')
		return 63;
	return -1;
}

void cw_err_details(struct cw_status *st, const char *b64, size_t len)
{
	Google__Rpc__Status *s;
	uint8_t *raw = malloc(len * 3 / 4 + 3);
	size_t i, n = 0;
	unsigned acc = 0;
	int bits = 0, v;

	if (!raw)
		return;
	for (i = 0; i < len; i++) {
		if (b64[i] == '=')
			break;
		v = b64val((unsigned char)b64[i]);
		if (v < 0)
			continue;
		acc = acc << 6 | v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			raw[n++] = (uint8_t)(acc >> bits);
		}
	}
	s = google__rpc__status__unpack(NULL, n, raw);
	free(raw);
	if (!s)
		return;
	for (i = 0; i < s->n_details; i++) {
		Google__Rpc__ErrorInfo *ei;
		const char *t = s->details[i]->type_url;
		size_t tl = strlen(t);

		/* "type.googleapis.com/google.rpc.ErrorInfo" */
		if (tl < 20 || strcmp(t + tl - 20, "google.rpc.ErrorInfo") ||
		    (tl > 20 && t[tl - 21] != '/'))
			continue;
		ei = google__rpc__error_info__unpack(NULL,
			s->details[i]->value.len, s->details[i]->value.data);
		if (ei && !strcmp(ei->domain, "cwsandbox.com"))
			snprintf(st->reason, sizeof(st->reason), "%s",
				 ei->reason);
		if (ei)
			google__rpc__error_info__free_unpacked(ei, NULL);
	}
	google__rpc__status__free_unpacked(s, NULL);
}
