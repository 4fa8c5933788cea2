/* cw.c - CW Sandbox backend: ops table, options and key, the service
 * thread (the shared loop of api/netloop.c: one curl multi handle, a work
 * queue, timers), typed here.
 *
 * SOURCE is `cwsandbox` or `cwsandbox:URL`; without a URL,
 * CWSANDBOX_BASE_URL, else https://api.cwsandbox.com.  The API key comes
 * from -o keyfile=PATH (mode 0600, owned by the user) or
 * CWSANDBOX_API_KEY and travels only as the `authorization: Bearer`
 * metadata: never on a command line, in a log or in /proc/mounts.
 */
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fuse_opt.h>

#include "api/rfile.h"
#include "api/cwsandbox/cw_int.h"

#define CW_DEFAULT_BASE "https://api.cwsandbox.com"
#define CW_DEFAULT_IMAGE "python:3.11"
#define CW_KEY_MAX 1024
#define CW_STAGE_MAX (4ull << 30)	/* largest file cached by rfile */

struct cw *cw_of(struct api_backend *be)
{
	return be->priv;
}

int64_t cw_now_ms(void)
{
	return nl_now_ms();
}

bool cw_in_loop(struct cw *w)
{
	return nl_in_loop(&w->loop);
}

int64_t cw_op_left(struct cw *w, int64_t ms)
{
	return nl_op_left(&w->loop, ms);
}

#define CW_OF(nl) ((struct cw *)(nl)->owner)
#define CONTAINER(p, type, member) \
	((type *)(void *)((char *)(p)-offsetof(type, member)))

static void work_run(struct netloop *nl, struct nl_work *nwk)
{
	struct cw_work *wk = CONTAINER(nwk, struct cw_work, nl);

	wk->fn(CW_OF(nl), wk);
}

void cw_post(struct cw *w, struct cw_work *wk,
	     void (*fn)(struct cw *w, struct cw_work *wk))
{
	wk->fn = fn;
	nl_post(&w->loop, &wk->nl, work_run);
}

static void timer_run(struct netloop *nl, struct nl_timer *nt)
{
	struct cw_timer *t = CONTAINER(nt, struct cw_timer, nl);

	t->fn(CW_OF(nl), t);
}

void cw_timer_cancel(struct cw *w, struct cw_timer *t)
{
	nl_timer_cancel(&w->loop, &t->nl);
}

void cw_timer_arm(struct cw *w, struct cw_timer *t, int64_t ms,
		  void (*fn)(struct cw *w, struct cw_timer *t))
{
	t->fn = fn;
	nl_timer_arm(&w->loop, &t->nl, ms, timer_run);
}

static void transfer_done(struct netloop *nl, CURL *easy, CURLcode rc)
{
	cw_rpc_done(CW_OF(nl), easy, rc);
}

/* At the stop, on the service thread: every call still in flight ends
 * (its callback runs there), then what that queued runs. */
static void loop_stopping(struct netloop *nl)
{
	cw_rpc_abort_all(CW_OF(nl));
}

static const struct nl_ops cw_loop_ops = {
	.done = transfer_done,
	.stopping = loop_stopping,
};

/* ---- options and key ----------------------------------------------------- */

struct cw_conf {
	char *keyfile;
	char *image;
	int show_terminated;
};

#define COPT(t, f) { t, offsetof(struct cw_conf, f), 1 }
static const struct fuse_opt cw_opts[] = {
	{ "keyfile=%s", offsetof(struct cw_conf, keyfile), 0 },
	{ "image=%s", offsetof(struct cw_conf, image), 0 },
	COPT("show_terminated", show_terminated),
	FUSE_OPT_END
};

static int read_keyfile(const char *path, char *key, size_t len)
{
	struct stat st;
	ssize_t n;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);

	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
		close(fd);
		return -EINVAL;
	}
	if ((st.st_mode & 077) || st.st_uid != geteuid()) {
		close(fd);
		fprintf(stderr, "sbxfs: cwsandbox: key file %s must be owned "
			"by you and mode 0600 (chmod 600 %s)\n", path, path);
		return -EACCES;
	}
	n = read(fd, key, len - 1);
	close(fd);
	if (n < 0)
		return -EIO;
	key[n] = '\0';
	key[strcspn(key, "\r\n")] = '\0';
	return key[0] ? 0 : -EINVAL;
}

static int set_base(struct cw *w, const char *url)
{
	size_t n;
	const char *rest;

	if (!strncmp(url, "http://", 7)) {
		w->prior_knowledge = true;
		rest = url + 7;
	} else if (!strncmp(url, "https://", 8)) {
		rest = url + 8;
	} else {
		fprintf(stderr, "sbxfs: cwsandbox: base URL must start with "
			"http:// or https://: %s\n", url);
		return -EINVAL;
	}
	n = strlen(url);
	while (n > (size_t)(rest - url) && url[n - 1] == '/')
		n--;
	if (memchr(rest, '/', n - (rest - url)) || n == (size_t)(rest - url)) {
		fprintf(stderr, "sbxfs: cwsandbox: base URL takes a host and "
			"port, no path: %s\n", url);
		return -EINVAL;
	}
	w->base = strndup(url, n);
	return w->base ? 0 : -ENOMEM;
}

static void cw_free(struct api_backend *be)
{
	struct cw *w = be->priv;

	if (!w)
		return;
	/* queued small files land before the service thread stops */
	if (nl_started(&w->loop) && be->rf)
		api_rfile_drain(be, be->timeout);
	nl_stop(&w->loop);
	nl_destroy(&w->loop);
	if (w->auth_hdr) {
		explicit_bzero(w->auth_hdr, strlen(w->auth_hdr));
		free(w->auth_hdr);
	}
	free(w->base);
	free(w->image);
	free(w->stopped);
	free(w);
	be->priv = NULL;
}

static int cw_init(struct api_backend *be, const char *arg,
		   struct fuse_args *args)
{
	struct cw_conf conf = { 0 };
	char key[CW_KEY_MAX];
	const char *env, *base;
	struct cw *w;
	int err = -ENOMEM;

	if (args && fuse_opt_parse(args, &conf, cw_opts, NULL) == -1)
		return -EINVAL;
	w = calloc(1, sizeof(*w));
	if (!w)
		goto out;
	be->priv = w;
	w->be = be;
	w->timeout_ms = (int64_t)(be->timeout * 1000);
	w->show_terminated = conf.show_terminated;
	w->trace = getenv("SBXFS_CW_TRACE") != NULL;
	w->image = strdup(conf.image ? conf.image : CW_DEFAULT_IMAGE);
	if (!w->image)
		goto out;
	base = arg ? arg : getenv("CWSANDBOX_BASE_URL");
	if (!base || !*base)
		base = CW_DEFAULT_BASE;
	err = set_base(w, base);
	if (err)
		goto out;
	if (conf.keyfile) {
		err = read_keyfile(conf.keyfile, key, sizeof(key));
		if (err) {
			if (err != -EACCES)
				fprintf(stderr, "sbxfs: cwsandbox: cannot read "
					"key file %s: %s\n", conf.keyfile,
					strerror(-err));
			goto out;
		}
	} else if ((env = getenv("CWSANDBOX_API_KEY")) && *env) {
		snprintf(key, sizeof(key), "%s", env);
	} else {
		fprintf(stderr, "sbxfs: cwsandbox: no API key: set "
			"CWSANDBOX_API_KEY or use -o keyfile=PATH\n");
		err = -EACCES;
		goto out;
	}
	if (strpbrk(key, "\r\n") || asprintf(&w->auth_hdr,
		"authorization: Bearer %s", key) < 0) {
		w->auth_hdr = NULL;
		err = -EINVAL;
		goto out;
	}
	explicit_bzero(key, sizeof(key));
	curl_global_init(CURL_GLOBAL_DEFAULT);
	err = nl_init(&w->loop, w, &cw_loop_ops, w->timeout_ms);
	if (err)
		goto out;
	curl_multi_setopt(w->loop.multi, CURLMOPT_PIPELINING,
			  CURLPIPE_MULTIPLEX);
	err = api_rfile_new(be, &cw_rfile_ops, CW_STAGE_MAX);
	if (err)
		goto out;
	err = nl_start(&w->loop);
out:
	explicit_bzero(key, sizeof(key));
	free(conf.keyfile);
	free(conf.image);
	if (err)
		cw_free(be);
	return err;
}

const struct api_ops api_cwsandbox_ops = {
	.name = "cwsandbox",
	.caps = API_CAP_VERB(API_VERB_STOP) | API_CAP_VERB(API_VERB_DESTROY) |
		API_CAP_VERB(API_VERB_PING) | API_CAP_EXEC |
		API_CAP_EXEC_STDIN | API_CAP_ALIAS | API_CAP_FILES |
		API_CAP_TAGS | API_CAP_PORTS | API_CAP_VERB(API_VERB_SNAPSHOT) |
		API_CAP_TEMPLATES,
	.help =
	"    cwsandbox[:URL]        CW Sandbox (gRPC); URL default\n"
	"                           $CWSANDBOX_BASE_URL, else " CW_DEFAULT_BASE
	"\n"
	"    -o keyfile=PATH        read the API key from PATH (mode 0600);\n"
	"                           default $CWSANDBOX_API_KEY\n"
	"    -o image=IMAGE         container image of `mkdir NAME` "
	"(default\n"
	"                           " CW_DEFAULT_IMAGE ")\n"
	"    -o show_terminated     list terminated sandboxes too\n",
	.init = cw_init,
	.free = cw_free,
	.sb_list = cw_sb_list,
	.sb_get = cw_sb_get,
	.sb_port = cw_sb_port,
	.sb_ports = cw_sb_ports,
	.sb_create = cw_sb_create,
	.sb_verb = cw_sb_verb,
	.tpl_list = cw_tpl_list,
	.tpl_delete = cw_tpl_delete,
	.file_stat = cw_file_stat,
	.file_readdir = cw_file_readdir,
	.file_mkdir = cw_file_mkdir,
	.file_unlink = cw_file_unlink,
	.file_rmdir = cw_file_rmdir,
	/* open/read/write/flush/close: api/rfile.c over fetch + store;
	 * rename, setattr, symlink, readlink: api.c's exec emulation */
	.exec_start = cw_exec_start,
	.exec_write = cw_exec_write,
	.exec_close_stdin = cw_exec_close_stdin,
	.exec_resume = cw_exec_resume,
	.exec_signal = cw_exec_signal,
	.exec_free = cw_exec_free,
	.exec_pid = cw_exec_pid,
};
