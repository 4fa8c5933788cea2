/* cwsandbox_test.c - table-driven tests of the cwsandbox backend's pure
 * parts: gRPC status + ErrorInfo reason -> errno, grpc-status-details-bin
 * decoding, command stderr -> errno, protobuf -> proto3 JSON. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "api/cwsandbox/cw_int.h"
#include "rpc_status.pb-c.h"
#include "sandbox.pb-c.h"

static int map(int code, const char *reason)
{
	struct cw_status st = { .code = code };

	snprintf(st.reason, sizeof(st.reason), "%s", reason);
	cw_err_map(&st, CURLE_OK);
	cr_assert(code == 0 || st.msg[0], "no sentence for %d", code);
	return st.err;
}

Test(cw, status_to_errno)
{
	static const struct { int code; const char *reason; int err; } t[] = {
		{ 0, "", 0 },
		{ 5, "", -ENOENT },
		{ 5, "CWSANDBOX_SANDBOX_NOT_FOUND", -ENOENT },
		{ 9, "", -EBUSY },
		{ 9, "CWSANDBOX_FILE_TOO_LARGE", -EFBIG },
		{ 9, "CWSANDBOX_FILE_IS_DIRECTORY", -EISDIR },
		{ 9, "CWSANDBOX_SANDBOX_NOT_RUNNING", -EBUSY },
		{ 3, "", -EINVAL },
		{ 4, "", -ETIMEDOUT },
		{ 4, "CWSANDBOX_COMMAND_TIMEOUT", -ETIMEDOUT },
		{ 6, "", -EEXIST },
		{ 7, "", -EACCES },
		{ 16, "", -EACCES },
		{ 12, "", -EOPNOTSUPP },
		{ 14, "", -EHOSTUNREACH },
		{ 14, "CWSANDBOX_RUNNER_UNAVAILABLE", -EHOSTUNREACH },
		{ 13, "", -EIO },
		{ 99, "", -EIO },
	};
	size_t i;

	for (i = 0; i < sizeof(t) / sizeof(*t); i++)
		cr_assert_eq(map(t[i].code, t[i].reason), t[i].err,
			     "code %d reason %s", t[i].code, t[i].reason);
}

Test(cw, transport_errors)
{
	struct cw_status st = { .code = -1 };

	cw_err_map(&st, CURLE_COULDNT_CONNECT);
	cr_assert_eq(st.err, -EHOSTUNREACH);
	cw_err_map(&st, CURLE_OPERATION_TIMEDOUT);
	cr_assert_eq(st.err, -ETIMEDOUT);
	cw_err_map(&st, CURLE_RECV_ERROR);
	cr_assert_eq(st.err, -EIO);
}

/* google.rpc.Status{code, [ErrorInfo{reason, domain}]}, base64 without
 * padding, as a server sends grpc-status-details-bin */
static char *details(const char *reason, const char *domain)
{
	static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	Google__Rpc__ErrorInfo ei = GOOGLE__RPC__ERROR_INFO__INIT;
	Google__Rpc__Any any = GOOGLE__RPC__ANY__INIT, *ap = &any;
	Google__Rpc__Status s = GOOGLE__RPC__STATUS__INIT;
	uint8_t eb[256], sb[512];
	size_t n, i, o = 0;
	char *out = malloc(1024);

	ei.reason = (char *)reason;
	ei.domain = (char *)domain;
	any.type_url = "type.googleapis.com/google.rpc.ErrorInfo";
	any.value.data = eb;
	any.value.len = google__rpc__error_info__pack(&ei, eb);
	s.code = 5;
	s.n_details = 1;
	s.details = &ap;
	n = google__rpc__status__pack(&s, sb);
	for (i = 0; i < n; i += 3) {
		uint32_t v = sb[i] << 16 | (i + 1 < n ? sb[i + 1] << 8 : 0) |
			     (i + 2 < n ? sb[i + 2] : 0);

		out[o++] = b64[v >> 18];
		out[o++] = b64[(v >> 12) & 63];
		if (i + 1 < n)
			out[o++] = b64[(v >> 6) & 63];
		if (i + 2 < n)
			out[o++] = b64[v & 63];
	}
	out[o] = '\0';
	return out;
}

Test(cw, details_bin)
{
	struct cw_status st = { 0 };
	char *d = details("CWSANDBOX_FILE_NOT_FOUND", "cwsandbox.com");

	cw_err_details(&st, d, strlen(d));
	cr_assert_str_eq(st.reason, "CWSANDBOX_FILE_NOT_FOUND");
	free(d);
	/* another domain's reason is not trusted */
	memset(&st, 0, sizeof(st));
	d = details("CWSANDBOX_FILE_NOT_FOUND", "example.com");
	cw_err_details(&st, d, strlen(d));
	cr_assert_str_eq(st.reason, "");
	free(d);
	/* garbage is ignored */
	cw_err_details(&st, "!!!", 3);
	cr_assert_str_eq(st.reason, "");
}

Test(cw, stderr_to_errno)
{
	cr_assert_eq(cw_text_errno("find: '/x': No such file or directory", 1),
		     -ENOENT);
	cr_assert_eq(cw_text_errno("rmdir: failed to remove 'd': Directory "
				   "not empty", 1), -ENOTEMPTY);
	cr_assert_eq(cw_text_errno("/x: Is a directory", 1), -EISDIR);
	cr_assert_eq(cw_text_errno("sh: 1: nope: not found", 127),
		     -EOPNOTSUPP);
	cr_assert_eq(cw_text_errno("something else", 2), -EIO);
}

Test(cw, record_as_json)
{
	Coreweave__Sandbox__V1__Sandbox sb = COREWEAVE__SANDBOX__V1__SANDBOX__INIT;
	Coreweave__Sandbox__V1__SandboxStatus st =
		COREWEAVE__SANDBOX__V1__SANDBOX_STATUS__INIT;
	Coreweave__Sandbox__V1__SandboxSpec sp =
		COREWEAVE__SANDBOX__V1__SANDBOX_SPEC__INIT;
	Coreweave__Sandbox__V1__Timestamp ct =
		COREWEAVE__SANDBOX__V1__TIMESTAMP__INIT,
		st_t = COREWEAVE__SANDBOX__V1__TIMESTAMP__INIT;
	char *tags[] = { "sbxfs-name=box", "t" };
	char *j;

	ct.seconds = 1796384260;	/* 2026-12-04T11:37:40Z */
	st_t.seconds = 0;
	st_t.nanos = 5;
	st.create_time = &ct;
	st.start_time = &st_t;
	sb.sandbox_id = "sb-1";
	sb.spec = &sp;
	sb.status = &st;
	sb.source_template_revision = 7;
	sp.n_tags = 2;
	sp.tags = tags;
	st.state = COREWEAVE__SANDBOX__V1__STATE__STATE_RUNNING;
	st._exit_code_case =
		COREWEAVE__SANDBOX__V1__SANDBOX_STATUS___EXIT_CODE_EXIT_CODE;
	st.exit_code = 0;
	j = cw_msg_json(&sb.base);
	cr_assert(j);
	cr_assert(strstr(j, "\"sandboxId\":\t\"sb-1\""), "%s", j);
	cr_assert(strstr(j, "\"STATE_RUNNING\""), "enum by name: %s", j);
	cr_assert(strstr(j, "\"sourceTemplateRevision\":\t\"7\""),
		  "int64 as a string: %s", j);
	cr_assert(strstr(j, "\"exitCode\":\t0"), "presence kept: %s", j);
	cr_assert(strstr(j, "\"sbxfs-name=box\""), "%s", j);
	cr_assert(!strstr(j, "stateReason"), "zero omitted: %s", j);
	cr_assert(strstr(j, "\"createTime\":\t\"2026-12-04T11:37:40Z\""),
		  "Timestamp as RFC 3339: %s", j);
	cr_assert(strstr(j, "\"1970-01-01T00:00:00.000000005Z\""),
		  "Timestamp with nanos: %s", j);
	free(j);
}
