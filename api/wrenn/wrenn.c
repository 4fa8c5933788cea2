/* wrenn.c - Wrenn backend: ops table, options, the service thread.
 *
 * One thread owns the curl multi handle and the libwebsockets context.
 * It sleeps in curl_multi_poll() with the WebSocket sockets added as extra
 * descriptors, so HTTP and WebSocket traffic share one wait; other threads
 * queue work with wrenn_post() and wake it with curl_multi_wakeup().  The
 * woken side drains the whole queue (wakeups coalesce).  Timers (429
 * retries, exec deadlines, keep-alive pings) are a short list checked on
 * every turn.
 */
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <fuse_opt.h>

#include "api/rfile.h"
#include "api/wrenn/wrenn_int.h"

#define WRENN_DEFAULT_BASE "https://app.wrenn.dev/api"
/* envd caps a multipart body at 2 MiB (protocol doc §5, inferred): stay
 * well below it by default. */
#define WRENN_UPLOAD_MAX (1536u * 1024u)
#define WRENN_KEY_MAX 512

struct wrenn *wrenn_of(struct api_backend *be)
{
	return be->priv;
}

int64_t wrenn_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t wrenn_deadline(struct wrenn *w)
{
	return w->op_deadline ? w->op_deadline :
				wrenn_now_ms() + w->timeout_ms;
}

bool wrenn_in_loop(struct wrenn *w)
{
	return w->thr_started && pthread_equal(pthread_self(), w->thr);
}

void wrenn_post(struct wrenn *w, struct wrenn_work *wk,
		void (*fn)(struct wrenn *w, struct wrenn_work *wk))
{
	wk->fn = fn;
	wk->next = NULL;
	/* a new user operation, or a step of the one running here */
	wk->deadline = wrenn_in_loop(w) && w->op_deadline ?
			       w->op_deadline :
			       wrenn_now_ms() + w->timeout_ms;
	pthread_mutex_lock(&w->qlock);
	if (w->qtail)
		w->qtail->next = wk;
	else
		w->qhead = wk;
	w->qtail = wk;
	pthread_mutex_unlock(&w->qlock);
	curl_multi_wakeup(w->multi);
}

void wrenn_timer_cancel(struct wrenn *w, struct wrenn_timer *t)
{
	struct wrenn_timer **pp;

	if (!t->armed)
		return;
	for (pp = &w->timers; *pp; pp = &(*pp)->next)
		if (*pp == t) {
			*pp = t->next;
			break;
		}
	t->armed = false;
}

void wrenn_timer_arm(struct wrenn *w, struct wrenn_timer *t, int64_t ms,
		     void (*fn)(struct wrenn *w, struct wrenn_timer *t))
{
	wrenn_timer_cancel(w, t);
	t->fn = fn;
	t->due_ms = wrenn_now_ms() + (ms > 0 ? ms : 0);
	t->next = w->timers;
	w->timers = t;
	t->armed = true;
}

/* Fire due timers; return ms until the next one (or -1). */
static int64_t timers_run(struct wrenn *w)
{
	int64_t now = wrenn_now_ms(), next = -1;
	struct wrenn_timer *t;

again:
	for (t = w->timers; t; t = t->next) {
		if (t->due_ms <= now) {
			wrenn_timer_cancel(w, t);
			w->op_deadline = 0; /* timers start their own */
			t->fn(w, t);
			/* the list may have changed under us */
			goto again;
		}
	}
	for (t = w->timers; t; t = t->next)
		if (next < 0 || t->due_ms - now < next)
			next = t->due_ms - now;
	return next;
}

/* ---- keep-alive pings --------------------------------------------------- */

void wrenn_keep_get(struct wrenn *w, const char *id)
{
	struct wrenn_keep *k;

	for (k = w->keeps; k; k = k->next)
		if (!strcmp(k->id, id)) {
			k->refs++;
			return;
		}
	k = calloc(1, sizeof(*k));
	if (!k)
		return; /* best effort: only costs an auto-pause risk */
	snprintf(k->id, sizeof(k->id), "%s", id);
	k->refs = 1;
	k->last_ms = wrenn_now_ms();
	k->next = w->keeps;
	w->keeps = k;
}

void wrenn_keep_put(struct wrenn *w, const char *id)
{
	struct wrenn_keep *k;

	for (k = w->keeps; k; k = k->next)
		if (!strcmp(k->id, id) && k->refs > 0) {
			k->refs--;
			return;
		}
}

static void keep_pinged(void *ud, int err, const char *msg,
			const struct wrenn_resp *r)
{
	(void)ud;
	(void)r;
	if (err && err != -EBUSY)
		api_log_once("wrenn-keepalive", "wrenn: keep-alive ping "
			     "failed: %s", msg);
}

static void keeps_run(struct wrenn *w)
{
	struct wrenn_keep **pp = &w->keeps, *k;
	int64_t now = wrenn_now_ms();
	char path[256];

	while ((k = *pp)) {
		if (k->refs <= 0) {
			*pp = k->next;
			free(k);
			continue;
		}
		if (now - k->last_ms >= w->ping_ms) {
			k->last_ms = now;
			snprintf(path, sizeof(path), "/v1/capsules/%s/ping",
				 k->id);
			wrenn_call(w, "POST", path, NULL, keep_pinged, NULL);
		}
		pp = &k->next;
	}
}

/* ---- the service thread ------------------------------------------------- */

static bool queue_run(struct wrenn *w)
{
	struct wrenn_work *wk, *next;
	bool stop;

	pthread_mutex_lock(&w->qlock);
	wk = w->qhead;
	w->qhead = w->qtail = NULL;
	stop = w->stopping;
	pthread_mutex_unlock(&w->qlock);
	for (; wk; wk = next) {
		next = wk->next;
		w->op_deadline = wk->deadline;
		wk->fn(w, wk);
		w->op_deadline = 0;
	}
	return stop;
}

static void *loop_main(void *arg)
{
	struct wrenn *w = arg;
	struct curl_waitfd fds[64];
	int running, n;
	int64_t t, tk;

	for (;;) {
		if (queue_run(w))
			break;
		curl_multi_perform(w->multi, &running);
		wrenn_http_reap(w);
		wrenn_exec_service(w);
		keeps_run(w);
		t = timers_run(w);
		/* timers may have queued work or started transfers */
		curl_multi_perform(w->multi, &running);
		wrenn_http_reap(w);
		{
			long ct = -1;

			curl_multi_timeout(w->multi, &ct);
			if (ct >= 0 && (t < 0 || ct < t))
				t = ct;
		}
		tk = w->keeps ? w->ping_ms : -1;
		if (tk >= 0 && (t < 0 || tk < t))
			t = tk;
		n = wrenn_exec_pollfds(w, fds, 64);
		/* lws keeps internal timers (close, ping-pong): look in
		 * often while WebSockets are live. */
		if (n > 0 && (t < 0 || t > 100))
			t = 100;
		if (t < 0 || t > 1000)
			t = 1000;
		curl_multi_poll(w->multi, fds, (unsigned)n, (int)t, NULL);
	}
	return NULL;
}

/* ---- options and credentials -------------------------------------------- */

struct wrenn_conf {
	char *keyfile;
	char *upload_max;
	char *ping;
	char *stage_max;
	char *batch_max;
	int sync_close;
};

#define WOPT(t, p) { t, offsetof(struct wrenn_conf, p), 0 }
static const struct fuse_opt wrenn_opts[] = {
	WOPT("keyfile=%s", keyfile),
	WOPT("wrenn_upload_max=%s", upload_max),
	WOPT("wrenn_ping=%s", ping),
	WOPT("wrenn_stage_max=%s", stage_max),
	WOPT("wrenn_batch_max=%s", batch_max),
	{ "sync_close", offsetof(struct wrenn_conf, sync_close), 1 },
	FUSE_OPT_END
};

static int parse_u64(const char *s, const char *what, uint64_t min,
		     uint64_t *out)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s || *end || v < min) {
		api_log("wrenn: bad %s: %s", what, s);
		return -EINVAL;
	}
	*out = v;
	return 0;
}

/* Read the key from a file nobody else can read. */
static int read_keyfile(const char *path, char *key, size_t len)
{
	struct stat st;
	ssize_t n;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		api_log("wrenn: key file %s: %s", path,
			strerror(errno));
		return -errno;
	}
	if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
		api_log("wrenn: key file %s: not a file",
			path);
		close(fd);
		return -EINVAL;
	}
	if (st.st_mode & 077) {
		api_log("wrenn: key file %s is readable by group or "
			"others; refusing it (chmod 600 %s)",
			path, path);
		close(fd);
		return -EACCES;
	}
	n = read(fd, key, len - 1);
	close(fd);
	if (n < 0)
		return -errno;
	key[n] = '\0';
	key[strcspn(key, "\r\n")] = '\0';
	return 0;
}

static uint64_t fnv1a(const char *s)
{
	uint64_t h = 1469598103934665603ull;

	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 1099511628211ull;
	}
	return h;
}

static int state_path(struct wrenn *w)
{
	const char *xdg = getenv("XDG_STATE_HOME"), *home = getenv("HOME");
	int n;

	if (xdg && xdg[0] == '/')
		n = snprintf(w->state_path, sizeof(w->state_path),
			     "%s/sbxfs/wrenn-%016llx.json", xdg,
			     (unsigned long long)fnv1a(w->base));
	else if (home && home[0] == '/')
		n = snprintf(w->state_path, sizeof(w->state_path),
			     "%s/.local/state/sbxfs/wrenn-%016llx.json", home,
			     (unsigned long long)fnv1a(w->base));
	else
		n = snprintf(w->state_path, sizeof(w->state_path),
			     "/tmp/sbxfs-%u/wrenn-%016llx.json",
			     (unsigned)getuid(),
			     (unsigned long long)fnv1a(w->base));
	return n > 0 && (size_t)n < sizeof(w->state_path) ? 0 : -ENAMETOOLONG;
}

static void wrenn_destroy(struct wrenn *w)
{
	if (!w)
		return;
	if (w->thr_started) {
		pthread_mutex_lock(&w->qlock);
		w->stopping = true;
		pthread_mutex_unlock(&w->qlock);
		curl_multi_wakeup(w->multi);
		pthread_join(w->thr, NULL);
		w->thr_started = false;
	}
	/* Work queued after the stop flag is abandoned; requests and
	 * streams still in flight are cancelled with ECANCELED. */
	wrenn_exec_free_all(w);
	wrenn_http_abort_all(w);
	wrenn_reconcile_drop_all(w);
	wrenn_dcache_free(w);
	wrenn_alias_free(w);
	while (w->keeps) {
		struct wrenn_keep *k = w->keeps;

		w->keeps = k->next;
		free(k);
	}
	if (w->multi)
		curl_multi_cleanup(w->multi);
	pthread_mutex_destroy(&w->qlock);
	if (w->key) {
		explicit_bzero(w->key, strlen(w->key));
		free(w->key);
	}
	if (w->key_hdr) {
		explicit_bzero(w->key_hdr, strlen(w->key_hdr));
		free(w->key_hdr);
	}
	free(w->base);
	free(w);
}

static int wrenn_init(struct api_backend *be, const char *arg,
		      struct fuse_args *args)
{
	struct wrenn_conf conf = { 0 };
	char key[WRENN_KEY_MAX] = "";
	const char *base, *env;
	struct wrenn *w;
	uint64_t v;
	size_t n;
	int err = 0;

	if (args && fuse_opt_parse(args, &conf, wrenn_opts, NULL) == -1)
		return -EINVAL;
	w = calloc(1, sizeof(*w));
	if (!w) {
		err = -ENOMEM;
		goto out;
	}
	pthread_mutex_init(&w->qlock, NULL);
	w->be = be;
	w->timeout_ms = be->timeout > 0 ? (int64_t)(be->timeout * 1000) :
					  30000;
	w->ping_ms = 20000;
	w->upload_max = WRENN_UPLOAD_MAX;
	w->stage_max = 64ull << 30;
	w->resp_max = 64u << 20;
	/* method and path only: the key is in a header, never printed */
	w->trace = getenv("SBXFS_WRENN_TRACE") != NULL;
	if (conf.ping) {
		err = parse_u64(conf.ping, "wrenn_ping", 1, &v);
		if (err)
			goto out;
		w->ping_ms = (int64_t)v * 1000;
	}
	if (conf.upload_max) {
		err = parse_u64(conf.upload_max, "wrenn_upload_max", 4096,
				&v);
		if (err)
			goto out;
		w->upload_max = v > (90u << 20) ? (90u << 20) : (size_t)v;
	}
	if (conf.stage_max) {
		err = parse_u64(conf.stage_max, "wrenn_stage_max", 1, &v);
		if (err)
			goto out;
		w->stage_max = v;
	}

	base = arg && arg[0] ? arg : getenv("WRENN_BASE_URL");
	if (!base || !base[0])
		base = WRENN_DEFAULT_BASE;
	if (strncmp(base, "http://", 7) && strncmp(base, "https://", 8)) {
		api_log("wrenn: base URL must start with "
				"http:// or https://: %s", base);
		err = -EINVAL;
		goto out;
	}
	w->base = strdup(base);
	if (!w->base) {
		err = -ENOMEM;
		goto out;
	}
	n = strlen(w->base);
	while (n > 8 && w->base[n - 1] == '/')
		w->base[--n] = '\0';

	if (conf.keyfile) {
		err = read_keyfile(conf.keyfile, key, sizeof(key));
		if (err)
			goto out;
	} else if ((env = getenv("WRENN_API_KEY")) && env[0]) {
		snprintf(key, sizeof(key), "%s", env);
	}
	if (!key[0]) {
		api_log("wrenn: no API key: set WRENN_API_KEY "
				"or use -o keyfile=PATH");
		err = -EACCES;
		goto out;
	}
	if (strpbrk(key, " \t\"\\")) {
		api_log("wrenn: API key has invalid "
				"characters");
		err = -EINVAL;
		goto out;
	}
	w->key = strdup(key);
	n = strlen(key) + sizeof("X-API-Key: ");
	w->key_hdr = malloc(n);
	if (!w->key || !w->key_hdr) {
		err = -ENOMEM;
		goto out;
	}
	snprintf(w->key_hdr, n, "X-API-Key: %s", key);

	err = state_path(w);
	if (err)
		goto out;
	err = wrenn_alias_load(w);
	if (err)
		goto out;
	w->multi = curl_multi_init();
	if (!w->multi) {
		err = -ENOMEM;
		goto out;
	}
	curl_multi_setopt(w->multi, CURLMOPT_MAX_HOST_CONNECTIONS, 8L);
	curl_multi_setopt(w->multi, CURLMOPT_MAXCONNECTS, 16L);
	err = wrenn_exec_init(w);
	if (err) {
		api_log("wrenn: cannot set up WebSockets");
		goto out;
	}
	err = api_rfile_new(be, &wrenn_rfile_ops, w->stage_max);
	if (err)
		goto out;
	{
		uint64_t bm = 1u << 20;

		if (conf.batch_max) {
			err = parse_u64(conf.batch_max, "wrenn_batch_max", 0,
					&bm);
			if (err)
				goto out;
		}
		api_rfile_config(be, bm, conf.sync_close != 0);
	}
	be->priv = w;
	if (pthread_create(&w->thr, NULL, loop_main, w)) {
		err = -EAGAIN;
		be->priv = NULL;
		goto out;
	}
	w->thr_started = true;
out:
	explicit_bzero(key, sizeof(key));
	free(conf.keyfile);
	free(conf.upload_max);
	free(conf.ping);
	free(conf.stage_max);
	free(conf.batch_max);
	if (err)
		wrenn_destroy(w);
	return err;
}

static void wrenn_free(struct api_backend *be)
{
	/* queued small files land before the service thread stops */
	if (be->priv)
		api_rfile_drain(be, be->timeout);
	wrenn_destroy(be->priv);
	be->priv = NULL;
}

static const char wrenn_help[] =
	"    wrenn[:BASE_URL]       Wrenn capsules (key: WRENN_API_KEY;\n"
	"                           URL: WRENN_BASE_URL, default\n"
	"                           " WRENN_DEFAULT_BASE ")\n"
	"    -o keyfile=PATH        read the Wrenn API key from PATH (mode "
	"0600)\n"
	"    -o wrenn_ping=SECS     keep-alive ping interval during long "
	"work (20)\n"
	"    -o wrenn_upload_max=N  largest single upload in bytes; larger "
	"files\n"
	"                           are split and joined in the capsule "
	"(1572864)\n"
	"    -o wrenn_stage_max=N   largest file staged locally in bytes\n"
	"    -o wrenn_batch_max=N   files up to N bytes (1048576) are written\n"
	"                           back in batches after close(2); 0: none\n"
	"    -o sync_close          every close(2) writes back and waits\n";

const struct api_ops api_wrenn_ops = {
	.name = "wrenn",
	.caps = API_CAP_VERB(API_VERB_PAUSE) | API_CAP_VERB(API_VERB_RESUME) |
		API_CAP_VERB(API_VERB_PING) |
		API_CAP_VERB(API_VERB_SNAPSHOT) |
		API_CAP_VERB(API_VERB_DESTROY) | API_CAP_FILES |
		API_CAP_EXEC | API_CAP_EXEC_STDIN | API_CAP_ALIAS |
		API_CAP_TEMPLATES | API_CAP_PORTS,
	.help = wrenn_help,
	.init = wrenn_init,
	.free = wrenn_free,
	.sb_list = wrenn_sb_list,
	.sb_get = wrenn_sb_get,
	.sb_create = wrenn_sb_create,
	.sb_verb = wrenn_sb_verb,
	.tpl_list = wrenn_tpl_list,
	.tpl_delete = wrenn_tpl_delete,
	.sb_port = wrenn_sb_port,
	.file_stat = wrenn_file_stat,
	.file_readdir = wrenn_file_readdir,
	.file_mkdir = wrenn_file_mkdir,
	.file_unlink = wrenn_file_unlink,
	.file_rmdir = wrenn_file_rmdir,
	/* rename, setattr, symlink, readlink: no Wrenn endpoint; api.c
	 * emulates them through exec. */
	.exec_start = wrenn_exec_start,
	.exec_write = wrenn_exec_write,
	.exec_close_stdin = wrenn_exec_close_stdin,
	.exec_resume = wrenn_exec_resume,
	.exec_signal = wrenn_exec_signal,
	.exec_free = wrenn_exec_free,
};
