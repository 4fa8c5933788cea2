/* wrenn.c - Wrenn backend: ops table, options and credentials, init and
 * free.  The top layer (README.md, "Layers"): the only file that knows
 * every layer; it wires the files layer into the capsule layer's hooks
 * and starts the service thread (loop.c).
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
#include "api/wrenn/capsule.h"
#include "api/wrenn/exec.h"
#include "api/wrenn/features.h"
#include "api/wrenn/files.h"
#include "api/wrenn/http.h"

#define WRENN_DEFAULT_BASE "https://app.wrenn.dev/api"
/* envd caps a multipart body at 2 MiB (protocol doc §5, inferred): stay
 * well below it by default. */
#define WRENN_UPLOAD_MAX (1536u * 1024u)
#define WRENN_KEY_MAX 512

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

/* What the capsule layer needs of the files layer above it. */
static const struct wrenn_capsule_hooks wrenn_hooks = {
	.sync = wrenn_files_sync,
	.changed = wrenn_dcache_drop,
};

static void wrenn_destroy(struct wrenn *w)
{
	if (!w)
		return;
	wrenn_loop_stop(w);
	/* Work queued before the stop ran; requests and streams still in
	 * flight are cancelled with ECANCELED. */
	wrenn_exec_free_all(w);
	wrenn_http_abort_all(w);
	wrenn_reconcile_drop_all(w);
	wrenn_dcache_free(w);
	wrenn_alias_free(w);
	wrenn_keep_free_all(w);
	wrenn_loop_destroy(w);
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
	err = wrenn_capsule_init(w, &wrenn_hooks);
	if (err)
		goto out;
	err = wrenn_loop_init(w);
	if (err)
		goto out;
	curl_multi_setopt(w->loop.multi, CURLMOPT_MAX_HOST_CONNECTIONS, 8L);
	curl_multi_setopt(w->loop.multi, CURLMOPT_MAXCONNECTS, 16L);
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
	err = wrenn_loop_start(w);
	if (err) {
		be->priv = NULL;
		goto out;
	}
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
