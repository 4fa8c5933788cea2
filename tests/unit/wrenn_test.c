/* wrenn_test.c - unit tests of the Wrenn backend's parsers: error map,
 * FileEntry -> stat, the exec wrapper script, and api/stage.c. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "api/stage.h"
#include "api/wrenn/capsule.h"
#include "api/wrenn/errmap.h"
#include "api/wrenn/exec.h"
#include "api/wrenn/files.h"

/* ---- errmap ------------------------------------------------------------- */

static const struct {
	long status;
	const char *body;
	int err;
	const char *in_msg;
} http_cases[] = {
	{ 200, "{}", 0, NULL },
	{ 204, "", 0, NULL },
	{ 400, "{\"error\":{\"code\":\"invalid_request\",\"message\":"
	       "\"invalid sandbox ID\"}}", -EINVAL, "invalid sandbox ID" },
	{ 401, "{\"error\":{\"code\":\"unauthorized\",\"message\":"
	       "\"invalid API key\"}}", -EACCES, "invalid API key" },
	{ 404, "{\"error\":{\"code\":\"not_found\",\"message\":"
	       "\"sandbox not found\"}}", -ENOENT, "sandbox not found" },
	/* chi's plain-text 404 (quirk 2) */
	{ 404, "404 page not found\n", -ENOENT, "404 page not found" },
	{ 405, "", -EOPNOTSUPP, "HTTP 405" },
	{ 409, "{\"error\":{\"code\":\"invalid_state\",\"message\":"
	       "\"sandbox is not running (status: paused)\"}}", -EBUSY,
	  "not running" },
	{ 409, "{\"error\":{\"code\":\"conflict\",\"message\":\"exists\"}}",
	  -EEXIST, "exists" },
	{ 409, "{\"error\":{\"code\":\"template_name_taken\",\"message\":"
	       "\"x\"}}", -EEXIST, NULL },
	{ 413, "{\"error\":{\"code\":\"too_large\",\"message\":"
	       "\"file exceeds 100 MB limit\"}}", -EFBIG, "100 MB" },
	{ 429, "", -EAGAIN, NULL },
	{ 500, "{\"error\":{\"code\":\"internal_error\",\"message\":\"x\"}}",
	  -EIO, NULL },
	{ 501, "{\"error\":{\"code\":\"agent_error\",\"message\":\"x\"}}",
	  -EOPNOTSUPP, NULL },
	/* agent_error: the message decides (quirks 15, 30, 34) */
	{ 502, "{\"error\":{\"code\":\"agent_error\",\"message\":\"internal: "
	       "read: status 404: {\\\"code\\\":404,\\\"message\\\":\\\"path "
	       "'/x' does not exist\\\"}\"}}", -ENOENT, "does not exist" },
	{ 502, "{\"error\":{\"code\":\"agent_error\",\"message\":\"internal: "
	       "exec: stream error: deadline_exceeded: x\"}}", -ETIMEDOUT,
	  NULL },
	{ 502, "{\"error\":{\"code\":\"agent_error\",\"message\":\"boom\"}}",
	  -EIO, "boom" },
	{ 502, "<html>bad gateway</html>", -EIO, "bad gateway" },
	{ 503, "{\"error\":{\"code\":\"host_unavailable\",\"message\":"
	       "\"x\"}}", -EHOSTUNREACH, NULL },
	{ 503, "{\"error\":{\"code\":\"no_hosts_available\",\"message\":"
	       "\"x\"}}", -EAGAIN, NULL },
	{ 507, "", -ENOSPC, NULL },
};

Test(wrenn, err_http_table)
{
	char msg[512];
	size_t i;

	for (i = 0; i < sizeof(http_cases) / sizeof(http_cases[0]); i++) {
		int err = wrenn_err_http(http_cases[i].status,
					 http_cases[i].body,
					 strlen(http_cases[i].body), msg,
					 sizeof(msg));

		cr_expect_eq(err, http_cases[i].err, "case %zu: %d != %d", i,
			     err, http_cases[i].err);
		if (http_cases[i].in_msg)
			cr_expect(strstr(msg, http_cases[i].in_msg),
				  "case %zu: msg '%s'", i, msg);
	}
}

Test(wrenn, err_http_msg_is_printable)
{
	char msg[64];

	wrenn_err_http(502, "a\nb\x01\x7f" "cdefghijklmnopqrstuvwxyz0123456789"
			    "abcdefghijklmnopqrstuvwxyz", 62, msg,
		       sizeof(msg));
	for (size_t i = 0; msg[i]; i++)
		cr_assert(msg[i] >= 0x20 && msg[i] < 0x7f, "byte %zu", i);
}

Test(wrenn, err_curl)
{
	char msg[256];

	cr_expect_eq(wrenn_err_curl(CURLE_COULDNT_CONNECT, msg, sizeof(msg),
				    "refused"), -EHOSTUNREACH);
	cr_expect(strstr(msg, "refused"));
	cr_expect_eq(wrenn_err_curl(CURLE_OPERATION_TIMEDOUT, msg,
				    sizeof(msg), NULL), -ETIMEDOUT);
	cr_expect_eq(wrenn_err_curl(CURLE_RECV_ERROR, msg, sizeof(msg), ""),
		     -EIO);
	cr_expect_eq(wrenn_err_curl(CURLE_OK, msg, sizeof(msg), ""), 0);
}

Test(wrenn, err_text)
{
	cr_expect_eq(wrenn_err_text("sandbox not found", EIO), ENOENT);
	cr_expect_eq(wrenn_err_text("sandbox is not running (status: "
				    "paused)", EIO), EBUSY);
	cr_expect_eq(wrenn_err_text("sandbox host is not reachable", EIO),
		     EHOSTUNREACH);
	cr_expect_eq(wrenn_err_text("authentication failed", EIO), EACCES);
	cr_expect_eq(wrenn_err_text("something else", EIO), EIO);
	cr_expect_eq(wrenn_err_text(NULL, EPROTO), EPROTO);
}

/* ---- FileEntry ---------------------------------------------------------- */

static const char *entry(const char *json, struct stat *st, cJSON **keep)
{
	*keep = cJSON_Parse(json);
	cr_assert_not_null(*keep, "bad test JSON");
	return wrenn_entry_stat(*keep, st);
}

Test(wrenn, entry_file)
{
	struct stat st;
	cJSON *j;
	const char *n = entry("{\"name\":\"a.txt\",\"path\":\"/x/a.txt\","
			      "\"type\":\"file\",\"size\":8,\"mode\":420,"
			      "\"modified_at\":1700000000}", &st, &j);

	cr_assert_str_eq(n, "a.txt");
	cr_expect(S_ISREG(st.st_mode));
	/* mode is decimal permission bits (quirk 32): 420 = 0644 */
	cr_expect_eq(st.st_mode & 07777, 0644);
	cr_expect_eq(st.st_size, 8);
	cr_expect_eq(st.st_mtime, 1700000000);
	cJSON_Delete(j);
}

Test(wrenn, entry_dir_and_link)
{
	struct stat st;
	cJSON *j;

	entry("{\"name\":\"d\",\"type\":\"directory\",\"size\":4096,"
	      "\"mode\":448}", &st, &j);
	cr_expect(S_ISDIR(st.st_mode));
	cr_expect_eq(st.st_mode & 07777, 0700);
	cJSON_Delete(j);
	/* a symlink reports its target's type plus symlink_target */
	entry("{\"name\":\"l\",\"type\":\"directory\",\"size\":1,"
	      "\"mode\":511,\"symlink_target\":\"/\"}", &st, &j);
	cr_expect(S_ISLNK(st.st_mode));
	cJSON_Delete(j);
	entry("{\"name\":\"s\",\"type\":\"unknown\",\"size\":0,\"mode\":493}",
	      &st, &j);
	cr_expect(S_ISREG(st.st_mode));
	cJSON_Delete(j);
}

Test(wrenn, entry_rejects_bad_names)
{
	static const char *const bad[] = {
		"{\"type\":\"file\"}",
		"{\"name\":\"\",\"type\":\"file\"}",
		"{\"name\":\"a/b\",\"type\":\"file\"}",
		"{\"name\":\"..\",\"type\":\"directory\"}",
		"{\"name\":5,\"type\":\"file\"}",
	};
	struct stat st;
	cJSON *j;
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		cr_expect_null(entry(bad[i], &st, &j), "case %zu", i);
		cJSON_Delete(j);
	}
}

Test(wrenn, ids_and_states)
{
	cr_expect(wrenn_id_valid("cl-0123456789abcdefghijklmno"));
	cr_expect(!wrenn_id_valid("cl-0123456789abcdefghijklmn"));
	cr_expect(!wrenn_id_valid("cl-0123456789ABCDEFGHIJKLMNO"));
	cr_expect(!wrenn_id_valid("sb-0123456789abcdefghijklmno"));
	cr_expect(!wrenn_id_valid("box1"));
	cr_expect_eq(wrenn_state_parse("running"), API_ST_RUNNING);
	cr_expect_eq(wrenn_state_parse("pending"), API_ST_CREATING);
	cr_expect_eq(wrenn_state_parse("paused"), API_ST_PAUSED);
	cr_expect_eq(wrenn_state_parse("stopped"), API_ST_DESTROYED);
	cr_expect_eq(wrenn_state_parse("error"), API_ST_FAILED);
	cr_expect_eq(wrenn_state_parse("bogus"), API_ST_UNKNOWN);
	cr_expect_eq(wrenn_state_parse(NULL), API_ST_UNKNOWN);
}

/* ---- the exec wrapper, run by the host's /bin/sh ------------------------ */

/* Run the wrapper like envd would: sh -c SCRIPT sbxfs ARGV...; collect
 * stdout and stderr; return the exit status. */
static const char *in_dir = "/nonexistent";

static int run_wrapper(const struct api_exec_req *req, char *out,
		       size_t olen, char *errb, size_t elen)
{
	int po[2], pe[2], st, err = 0;
	char *script = wrenn_exec_script(req, in_dir, &err);
	const char *args[32];
	size_t n = 0, i;
	ssize_t r;
	pid_t pid;

	cr_assert_not_null(script, "script: %d", err);
	cr_assert(!pipe(po) && !pipe(pe));
	args[n++] = "/bin/sh";
	args[n++] = "-c";
	args[n++] = script;
	args[n++] = "sbxfs";
	for (i = 0; req->argv[i] && n < 31; i++)
		args[n++] = req->argv[i];
	args[n] = NULL;
	pid = fork();
	cr_assert(pid >= 0);
	if (!pid) {
		int nul = open("/dev/null", O_RDONLY);

		dup2(nul, 0);
		dup2(po[1], 1);
		dup2(pe[1], 2);
		close(po[0]);
		close(pe[0]);
		execv("/bin/sh", (char *const *)args);
		_exit(127);
	}
	close(po[1]);
	close(pe[1]);
	n = 0;
	while (n + 1 < olen && (r = read(po[0], out + n, olen - 1 - n)) > 0)
		n += (size_t)r;
	out[n] = '\0';
	n = 0;
	while (n + 1 < elen && (r = read(pe[0], errb + n, elen - 1 - n)) > 0)
		n += (size_t)r;
	errb[n] = '\0';
	close(po[0]);
	close(pe[0]);
	waitpid(pid, &st, 0);
	free(script);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* Decode the hex (or base64) lines of a wrapper stream. */
static size_t decode(const char *s, unsigned char *out)
{
	size_t o = 0;

	while (*s) {
		const char *nl = strchr(s, '\n');
		size_t n = nl ? (size_t)(nl - s) : strlen(s);

		if (!memchr(s, ':', n))
			for (size_t i = 0; i + 1 < n; i += 2) {
				unsigned v;

				cr_assert_eq(sscanf(s + i, "%2x", &v), 1);
				out[o++] = (unsigned char)v;
			}
		s += n + (nl ? 1 : 0);
	}
	return o;
}

Test(wrenn, wrapper_streams_exit_cwd_env)
{
	const char *argv[] = { "sh", "-c",
			       "printf 'o:%s:%s' \"$PWD\" \"$V\"; "
			       "printf 'e\\n' >&2; exit 7", NULL };
	const char *env[] = { "V=a 'b' $c \"d\"", NULL };
	struct api_exec_req req = { .argv = argv, .cwd = "/tmp",
				    .env = env };
	char out[8192], errb[8192];
	unsigned char dec[4096];
	size_t n;

	if (access("/usr/bin/perl", X_OK) &&
	    access("/usr/bin/base64", X_OK))
		cr_skip_test("no encoder on this host");
	cr_assert_eq(run_wrapper(&req, out, sizeof(out), errb, sizeof(errb)),
		     7);
	cr_assert(!strncmp(out, "sbxfs:hex\n", 10) ||
		  !strncmp(out, "sbxfs:b64\n", 10), "%s", out);
	cr_assert(strstr(out, "sbxfs:pid:"));
	if (strncmp(out, "sbxfs:hex\n", 10))
		cr_skip_test("base64 mode: decoded by exec.c only");
	n = decode(out, dec);
	dec[n] = '\0';
	cr_expect_str_eq((char *)dec, "o:/tmp:a 'b' $c \"d\"");
	n = decode(errb, dec);
	dec[n] = '\0';
	cr_expect_str_eq((char *)dec, "e\n");
}

Test(wrenn, wrapper_binary_and_signal)
{
	const char *argv[] = { "sh", "-c",
			       "i=0; while [ $i -lt 256 ]; do printf "
			       "\"$(printf '\\\\%03o' $i)\"; i=$((i+1)); "
			       "done; kill -TERM $$", NULL };
	struct api_exec_req req = { .argv = argv };
	char out[16384], errb[1024];
	unsigned char dec[4096];
	size_t n, i;

	if (access("/usr/bin/perl", X_OK))
		cr_skip_test("no perl on this host");
	/* a signal death is 128+N, as a shell reports it */
	cr_assert_eq(run_wrapper(&req, out, sizeof(out), errb, sizeof(errb)),
		     143, "stderr: %s", errb);
	n = decode(out, dec);
	cr_assert_eq(n, 256);
	for (i = 0; i < 256; i++)
		cr_expect_eq(dec[i], i, "byte %zu", i);
}

/* a cwd that does not exist: 126, and the shell's reason on stderr */
Test(wrenn, wrapper_missing_cwd)
{
	const char *argv[] = { "true", NULL };
	struct api_exec_req req = { .argv = argv,
				    .cwd = "/nonexistent/sbxfs-ut" };
	char out[4096], errb[4096];
	unsigned char dec[2048];
	size_t n;

	if (access("/usr/bin/perl", X_OK))
		cr_skip_test("no perl on this host");
	cr_assert_eq(run_wrapper(&req, out, sizeof(out), errb, sizeof(errb)),
		     126);
	n = decode(errb, dec);
	dec[n] = '\0';
	cr_expect(strstr((char *)dec, "sbxfs-ut"), "stderr: %s", dec);
}

Test(wrenn, wrapper_refuses_bad_env)
{
	const char *argv[] = { "true", NULL };
	const char *env[] = { "1BAD=x", NULL };
	struct api_exec_req req = { .argv = argv, .env = env };
	int err = 0;

	cr_expect_null(wrenn_exec_script(&req, NULL, &err));
	cr_expect_eq(err, -EINVAL);
}

static void put(const char *dir, const char *name, const char *data,
		size_t len)
{
	char path[256];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "w");
	cr_assert_not_null(f);
	cr_assert_eq(fwrite(data, 1, len, f), len);
	fclose(f);
}

/* stdin comes as chunk files D/N + D/N.ok, ended by D/N.eof */
Test(wrenn, wrapper_stdin_chunks)
{
	const char *argv[] = { "cat", NULL };
	struct api_exec_req req = { .argv = argv, .want_stdin = true };
	char dir[] = "/tmp/wrenn-ut-XXXXXX", out[8192], errb[1024];
	unsigned char dec[64];
	size_t n;

	if (access("/usr/bin/perl", X_OK))
		cr_skip_test("no perl on this host");
	cr_assert_not_null(mkdtemp(dir));
	put(dir, "0", "ab\0c", 4);
	put(dir, "0.ok", "", 0);
	put(dir, "1", "\n\xff", 2);
	put(dir, "1.ok", "", 0);
	put(dir, "2.eof", "", 0);
	in_dir = dir;
	cr_assert_eq(run_wrapper(&req, out, sizeof(out), errb, sizeof(errb)),
		     0, "stderr: %s", errb);
	in_dir = "/nonexistent";
	n = decode(out, dec);
	cr_assert_eq(n, 6, "%s", out);
	cr_expect_eq(memcmp(dec, "ab\0c\n\xff", 6), 0);
	/* the wrapper removed its directory */
	cr_expect_neq(access(dir, F_OK), 0);
}

/* ---- api/stage.c -------------------------------------------------------- */

Test(stage, fill_read_write_caps)
{
	struct api_stage *st;
	char buf[16];

	cr_assert_eq(api_stage_new(10, &st), 0);
	cr_expect(!api_stage_is_loaded(st));
	cr_assert_eq(api_stage_fill(st, "hello", 5), 0);
	cr_expect_eq(api_stage_size(st), 5);
	cr_expect(!api_stage_dirty(st));
	api_stage_loaded(st);
	cr_expect(api_stage_is_loaded(st));
	cr_assert_eq(api_stage_write(st, "J", 1, 0), 1);
	cr_expect(api_stage_dirty(st));
	cr_assert_eq(api_stage_read(st, buf, sizeof(buf), 0), 5);
	cr_expect_eq(memcmp(buf, "Jello", 5), 0);
	cr_expect_eq(api_stage_read(st, buf, sizeof(buf), 5), 0);
	/* a hole reads as zeros */
	cr_assert_eq(api_stage_write(st, "!", 1, 7), 1);
	cr_assert_eq(api_stage_read(st, buf, sizeof(buf), 0), 8);
	cr_expect_eq(buf[5], 0);
	cr_expect_eq(buf[7], '!');
	/* per-stage cap */
	cr_expect_eq(api_stage_write(st, "xyz", 3, 9), -EFBIG);
	cr_expect_eq(api_stage_fill(st, "xyz", 3), -EFBIG);
	cr_assert_eq(api_stage_truncate(st, 2), 0);
	cr_assert_eq(api_stage_read(st, buf, sizeof(buf), 0), 2);
	cr_assert_eq(api_stage_reset(st), 0);
	cr_expect_eq(api_stage_size(st), 0);
	api_stage_free(st);
}

Test(stage, total_cap)
{
	struct api_stage *a, *b;

	api_stage_set_total_cap(8);
	cr_assert_eq(api_stage_new(0, &a), 0);
	cr_assert_eq(api_stage_new(0, &b), 0);
	cr_assert_eq(api_stage_write(a, "12345", 5, 0), 5);
	cr_expect_eq(api_stage_write(b, "12345", 5, 0), -EFBIG);
	api_stage_free(a);
	cr_expect_eq(api_stage_write(b, "12345", 5, 0), 5);
	api_stage_free(b);
	api_stage_set_total_cap(0);
}
