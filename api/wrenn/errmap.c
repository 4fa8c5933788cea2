/* errmap.c - Wrenn HTTP statuses, error envelopes and curl codes -> errno.
 *
 * The one place where platform errors become errno (STYLE.md lesson 6).
 * Call sites may override a result for their own operation (e.g. mkdir's
 * 409 conflict is EEXIST, which is also the default here).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>

#include "api/wrenn/errmap.h"

/* Error texts of agent_error (502) answers and WebSocket error messages.
 * Order matters: the first match wins. */
static const struct {
	const char *needle;
	int err;
} text_map[] = {
	{ "deadline_exceeded", ETIMEDOUT },
	{ "deadline exceeded", ETIMEDOUT },
	{ "authentication failed", EACCES },
	{ "not reachable", EHOSTUNREACH },
	{ "is not running", EBUSY },
	{ "is not paused", EBUSY },
	{ "does not exist", ENOENT },
	{ "not found", ENOENT },
	{ "no such file", ENOENT },
	{ "not a directory", ENOTDIR },
	{ "is a directory", EISDIR },
	{ "already exists", EEXIST },
	{ "no space", ENOSPC },
	{ "status 507", ENOSPC },
	{ "permission denied", EACCES },
	{ "too large", EFBIG },
	{ "exceeds", EFBIG },
};

int wrenn_err_text(const char *text, int dflt)
{
	size_t i;

	if (!text)
		return dflt;
	for (i = 0; i < sizeof(text_map) / sizeof(text_map[0]); i++)
		if (strcasestr(text, text_map[i].needle))
			return text_map[i].err;
	return dflt;
}

/* Envelope codes that decide on their own, whatever the status. */
static const struct {
	const char *code;
	int err;
} code_map[] = {
	{ "invalid_request", EINVAL },
	{ "unauthorized", EACCES },
	{ "forbidden", EACCES },
	{ "no_team", EACCES },
	{ "account_deactivated", EACCES },
	{ "not_found", ENOENT },
	{ "invalid_state", EBUSY },
	{ "conflict", EEXIST },
	{ "template_name_taken", EEXIST },
	{ "name_reserved", EEXIST },
	{ "signup_cooldown", EAGAIN },
	{ "too_large", EFBIG },
	{ "host_unavailable", EHOSTUNREACH },
	{ "no_hosts_available", EAGAIN },
	{ "rate_limited", EAGAIN },
};

static int status_errno(long status)
{
	switch (status) {
	case 400:
		return EINVAL;
	case 401:
	case 403:
		return EACCES;
	case 404:
		return ENOENT;
	case 405:
	case 501:
		return EOPNOTSUPP;
	case 408:
	case 504:
		return ETIMEDOUT;
	case 409:
		return EBUSY;
	case 413:
		return EFBIG;
	case 429:
		return EAGAIN;
	case 503:
		return EHOSTUNREACH;
	case 507:
		return ENOSPC;
	default:
		return status >= 500 ? EIO : EINVAL;
	}
}

/* Copy at most 200 printable bytes of a non-JSON body into out. */
static void plain_text(const char *body, size_t len, char *out, size_t n)
{
	size_t i, o = 0;

	if (len > 200)
		len = 200;
	for (i = 0; body && i < len && o + 1 < n; i++) {
		unsigned char c = (unsigned char)body[i];

		if (c == '\n' || c == '\r') {
			if (o && i + 1 < len)
				out[o++] = ' ';
			continue;
		}
		out[o++] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
	}
	out[o] = '\0';
}

int wrenn_err_http(long status, const char *body, size_t len, char *msg,
		   size_t msglen)
{
	const char *code = NULL, *text = NULL;
	char plain[256];
	cJSON *j = NULL;
	int err;
	size_t i;

	if (status >= 200 && status < 300) {
		if (msglen)
			msg[0] = '\0';
		return 0;
	}
	err = status_errno(status);
	if (body && len)
		j = cJSON_ParseWithLength(body, len);
	if (j) {
		const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
		const cJSON *c = cJSON_GetObjectItemCaseSensitive(e, "code");
		const cJSON *m = cJSON_GetObjectItemCaseSensitive(e,
								  "message");

		code = cJSON_IsString(c) ? c->valuestring : NULL;
		text = cJSON_IsString(m) ? m->valuestring : NULL;
	}
	for (i = 0; code && i < sizeof(code_map) / sizeof(code_map[0]); i++)
		if (!strcmp(code, code_map[i].code)) {
			err = code_map[i].err;
			break;
		}
	/* agent_error (502/500/501) wraps whatever happened inside the VM:
	 * the message is the only clue ("path ... does not exist"). */
	if (code && !strcmp(code, "agent_error") && status != 501)
		err = wrenn_err_text(text, EIO);
	if (!text) {
		plain_text(body, len, plain, sizeof(plain));
		text = plain[0] ? plain : NULL;
	}
	snprintf(msg, msglen, "wrenn: %s (HTTP %ld%s%s)",
		 text ? text : "request failed", status, code ? " " : "",
		 code ? code : "");
	cJSON_Delete(j);
	return -err;
}

int wrenn_err_curl(CURLcode rc, char *msg, size_t msglen, const char *detail)
{
	int err;

	switch (rc) {
	case CURLE_OK:
		return 0;
	case CURLE_OPERATION_TIMEDOUT:
		err = ETIMEDOUT;
		break;
	case CURLE_COULDNT_CONNECT:
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY:
		err = EHOSTUNREACH;
		break;
	case CURLE_OUT_OF_MEMORY:
		err = ENOMEM;
		break;
	case CURLE_FILESIZE_EXCEEDED:
		err = EFBIG;
		break;
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_SSL_CERTPROBLEM:
	case CURLE_SSL_CACERT_BADFILE:
		err = EACCES;
		break;
	case CURLE_UNSUPPORTED_PROTOCOL:
	case CURLE_URL_MALFORMAT:
		err = EINVAL;
		break;
	default:
		err = EIO;
		break;
	}
	snprintf(msg, msglen, "wrenn: %s%s%s", curl_easy_strerror(rc),
		 detail && detail[0] ? ": " : "", detail ? detail : "");
	return -err;
}
