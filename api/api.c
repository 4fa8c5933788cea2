/* api.c - the generic layer: backend selection, wrappers, exec emulation. */
#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define FUSE_USE_VERSION 34
#include <fuse_lowlevel.h>
#include <fuse_opt.h>

#include <stdarg.h>
#include <syslog.h>
#include <time.h>

#include "api/api.h"
#include "api/rfile.h"
#include "api/runtime.h"

/* ---- names -------------------------------------------------------------- */

static const char *const api_state_names[API_ST__COUNT] = {
	[API_ST_UNKNOWN] = "unknown",	[API_ST_CREATING] = "creating",
	[API_ST_RUNNING] = "running",	[API_ST_PAUSED] = "paused",
	[API_ST_STOPPING] = "stopping", [API_ST_STOPPED] = "stopped",
	[API_ST_FAILED] = "failed",	[API_ST_DESTROYED] = "destroyed",
};

const char *api_state_name(enum api_state st)
{
	if ((int)st < 0 || st >= API_ST__COUNT)
		return "unknown";
	return api_state_names[st];
}

enum api_state api_state_parse(const char *word)
{
	if (!word)
		return API_ST_UNKNOWN;
	for (int i = 0; i < API_ST__COUNT; i++)
		if (strcasecmp(word, api_state_names[i]) == 0)
			return (enum api_state)i;
	return API_ST_UNKNOWN;
}

static const char *const api_verb_names[API_VERB__COUNT] = {
	[API_VERB_START] = "start",	  [API_VERB_STOP] = "stop",
	[API_VERB_PAUSE] = "pause",	  [API_VERB_RESUME] = "resume",
	[API_VERB_PING] = "ping",	  [API_VERB_SNAPSHOT] = "snapshot",
	[API_VERB_DESTROY] = "destroy",
};

const char *api_verb_name(enum api_verb v)
{
	if ((int)v < 0 || v >= API_VERB__COUNT)
		return "?";
	return api_verb_names[v];
}

int api_verb_parse(const char *word)
{
	if (!word)
		return -1;
	for (int i = 0; i < API_VERB__COUNT; i++)
		if (strcmp(word, api_verb_names[i]) == 0)
			return i;
	return -1;
}

/* ---- errors ------------------------------------------------------------- */

static const struct {
	int err;
	const char *msg;
} api_err_table[] = {
	{ENOENT, "no such sandbox, file or directory"},
	{EEXIST, "it already exists"},
	{EBUSY, "the sandbox is not in a state that allows this"},
	{EINVAL, "invalid verb, name or argument"},
	{EACCES, "the platform refused the credentials"},
	{EPERM, "operation not permitted"},
	{ETIMEDOUT, "the platform did not answer within the request timeout"},
	{EHOSTUNREACH, "the platform is unreachable"},
	{EIO, "the platform reported an error"},
	{EFBIG, "too large"},
	{ENOSPC, "out of space"},
	{EOPNOTSUPP, "the platform does not support this operation"},
	{ENOMEM, "out of memory"},
	{ENOTDIR, "not a directory"},
	{EISDIR, "is a directory"},
	{ENOTEMPTY, "directory not empty"},
	{ELOOP, "too many levels of symbolic links"},
	{ENAMETOOLONG, "name too long"},
	{EXDEV, "path leads outside the sandbox"},
	{ESTALE, "the sandbox or handle is gone"},
	{ECONNRESET, "the connection to the platform was lost"},
	{EROFS, "read-only file system"},
	{E2BIG, "argument list too long"},
	{ESHUTDOWN, "the backend is shutting down"},
};

const char *api_strerror(int err)
{
	if (err < 0)
		err = -err;
	for (size_t i = 0; i < sizeof(api_err_table) / sizeof(*api_err_table);
	     i++)
		if (api_err_table[i].err == err)
			return api_err_table[i].msg;
	return "operation failed";
}

/* ---- log ---------------------------------------------------------------- */

static bool api_syslog;
static pthread_mutex_t api_log_mu = PTHREAD_MUTEX_INITIALIZER;

void api_log_syslog(bool on)
{
	if (on && !api_syslog)
		openlog("sbxfs", LOG_PID, LOG_DAEMON);
	api_syslog = on;
}

static void api_vlog(const char *fmt, va_list ap)
{
	char line[2048];

	vsnprintf(line, sizeof(line), fmt, ap);
	if (api_syslog)
		syslog(LOG_NOTICE, "%s", line);
	else /* one write per line: threads do not interleave */
		fprintf(stderr, "sbxfs: %s\n", line);
}

void api_log(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	api_vlog(fmt, ap);
	va_end(ap);
}

/* Repeating conditions: a few keys, each with a back-off window that
 * doubles (1 s .. 10 min) while the condition lasts. */
#define API_LOG_KEYS 8

static struct {
	char key[32];
	time_t until;	/* no message before this */
	int window;	/* seconds */
	unsigned quiet; /* repeats not written */
} api_log_keys[API_LOG_KEYS];

void api_log_once(const char *key, const char *fmt, ...)
{
	time_t now = time(NULL);
	unsigned quiet = 0;
	bool say = false;
	int i, free_i = -1;
	va_list ap;

	pthread_mutex_lock(&api_log_mu);
	for (i = 0; i < API_LOG_KEYS; i++) {
		if (!strcmp(api_log_keys[i].key, key))
			break;
		if (!api_log_keys[i].key[0] && free_i < 0)
			free_i = i;
	}
	if (i == API_LOG_KEYS) {
		i = free_i >= 0 ? free_i : 0;
		snprintf(api_log_keys[i].key, sizeof(api_log_keys[i].key),
			 "%s", key);
		api_log_keys[i].window = 0;
		api_log_keys[i].until = 0;
		api_log_keys[i].quiet = 0;
	}
	if (now >= api_log_keys[i].until) {
		say = true;
		quiet = api_log_keys[i].quiet;
		api_log_keys[i].quiet = 0;
		api_log_keys[i].window = api_log_keys[i].window ?
			api_log_keys[i].window * 2 : 60;
		if (api_log_keys[i].window > 600)
			api_log_keys[i].window = 600;
		api_log_keys[i].until = now + api_log_keys[i].window;
	} else {
		api_log_keys[i].quiet++;
	}
	pthread_mutex_unlock(&api_log_mu);
	if (!say)
		return;
	va_start(ap, fmt);
	api_vlog(fmt, ap);
	va_end(ap);
	if (quiet)
		api_log("(%u more like it since the last message)", quiet);
}

void api_log_clear(const char *key, const char *fmt, ...)
{
	bool was = false;
	va_list ap;

	pthread_mutex_lock(&api_log_mu);
	for (int i = 0; i < API_LOG_KEYS; i++)
		if (!strcmp(api_log_keys[i].key, key)) {
			was = true;
			api_log_keys[i].key[0] = '\0';
		}
	pthread_mutex_unlock(&api_log_mu);
	if (!was)
		return;
	va_start(ap, fmt);
	api_vlog(fmt, ap);
	va_end(ap);
}

/* ---- backend selection -------------------------------------------------- */

/* One row per compiled-in backend: SOURCE is "PREFIX" or "PREFIX:ARG".
 * Adding a backend is one line here plus its ops table. */
static const struct {
	const char *prefix;
	const struct api_ops *ops;
} api_backends[] = {
	{"local", &api_local_ops},
	{"wrenn", &api_wrenn_ops},
	{"cwsandbox", &api_cwsandbox_ops},
};

#define API_NBACKENDS (sizeof(api_backends) / sizeof(*api_backends))

struct api_common_opts {
	char *timeout;
};

static const struct fuse_opt api_common_spec[] = {
	{"timeout=%s", offsetof(struct api_common_opts, timeout), 0},
	FUSE_OPT_END,
};

static int api_parse_timeout(const char *s, double *out)
{
	char *end;

	errno = 0;
	double v = strtod(s, &end);
	if (errno || end == s || *end || !(v > 0) || v > 86400.0)
		return -EINVAL;
	*out = v;
	return 0;
}

int api_open(const char *source, struct fuse_args *args,
	     struct api_backend **out)
{
	const struct api_ops *ops = NULL;
	const char *arg = NULL;
	struct api_common_opts co = {0};
	struct api_backend *be;
	int err;

	*out = NULL;
	if (!source)
		source = "local";
	for (size_t i = 0; i < API_NBACKENDS; i++) {
		size_t n = strlen(api_backends[i].prefix);
		if (strncmp(source, api_backends[i].prefix, n))
			continue;
		if (source[n] == '\0') {
			ops = api_backends[i].ops;
			break;
		}
		if (source[n] == ':') {
			ops = api_backends[i].ops;
			arg = source + n + 1;
			if (!*arg)
				arg = NULL;
			break;
		}
	}
	if (!ops) {
		fprintf(stderr, "sbxfs: unknown source '%s'; known:", source);
		for (size_t i = 0; i < API_NBACKENDS; i++)
			fprintf(stderr, " %s[:ARG]", api_backends[i].prefix);
		fprintf(stderr, "\n");
		return -EINVAL;
	}

	be = calloc(1, sizeof(*be));
	if (!be)
		return -ENOMEM;
	be->ops = ops;
	be->timeout = 30.0;
	if (args && fuse_opt_parse(args, &co, api_common_spec, NULL) == -1) {
		fprintf(stderr, "sbxfs: cannot parse options\n");
		free(be);
		return -EINVAL;
	}
	if (co.timeout && api_parse_timeout(co.timeout, &be->timeout)) {
		fprintf(stderr,
			"sbxfs: bad timeout '%s': want seconds > 0\n",
			co.timeout);
		free(co.timeout);
		free(be);
		return -EINVAL;
	}
	free(co.timeout);
	if (ops->init) {
		err = ops->init(be, arg, args);
		if (err) {
			api_rfile_free(be);
			free(be);
			return err < 0 ? err : -EIO;
		}
	}
	*out = be;
	return 0;
}

static void emu_drain(void);

void api_close(struct api_backend *be)
{
	if (!be)
		return;
	emu_drain(); /* emulated commands freed before their backend */
	if (be->ops->free)
		be->ops->free(be);
	api_rfile_free(be);
	free(be);
}

void api_print_help(void)
{
	printf("Backend options (all backends):\n"
	       "    -o timeout=SECONDS     bound of every platform request "
	       "(default 30)\n");
	for (size_t i = 0; i < API_NBACKENDS; i++) {
		const struct api_ops *o = api_backends[i].ops;
		printf("Source %s[:ARG]:\n%s", api_backends[i].prefix,
		       o->help ? o->help : "    (no options)\n");
	}
}

bool api_has(const struct api_backend *be, unsigned cap)
{
	return be && (be->ops->caps & cap) == cap;
}

/* ---- exec emulation ----------------------------------------------------- */

/* Operations a backend lacks natively (rename, setattr, symlink, readlink)
 * run as one command in the sandbox.  Paths travel as separate argv
 * entries (positional parameters where a shell glues steps together), so
 * no quoting is involved.  The exit status becomes an errno by matching
 * the tool's stderr against the usual C library messages. */

#define EMU_OUT_MAX 65536
#define EMU_ERR_MAX 4096

enum emu_kind { EMU_DONE, EMU_STR };

struct emu {
	pthread_mutex_t mu; /* held across exec_start, so the exited
			       callback sees `x` set */
	pthread_t starter;  /* thread inside exec_start ... */
	bool starting;	    /* ... while this is true */
	bool inline_fail;   /* started(err) ran inside exec_start */
	int fail_err;
	char fail_msg[256];
	struct api_backend *be;
	struct api_exec *x;
	enum emu_kind kind;
	api_done_fn done;
	api_str_fn str;
	void *ud;
	char out[EMU_OUT_MAX + 1];
	size_t outlen;
	char errb[EMU_ERR_MAX + 1];
	size_t errlen;
	char what[64];
};

struct emu_drain {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool done;
};

static const struct {
	const char *text;
	int err;
} emu_err_texts[] = {
	{"No such file or directory", ENOENT},
	{"File exists", EEXIST},
	{"Permission denied", EACCES},
	{"Operation not permitted", EPERM},
	{"Not a directory", ENOTDIR},
	{"Is a directory", EISDIR},
	{"Directory not empty", ENOTEMPTY},
	{"No space left on device", ENOSPC},
	{"Read-only file system", EROFS},
	{"Invalid argument", EINVAL},
	{"Too many levels of symbolic links", ELOOP},
	{"File name too long", ENAMETOOLONG},
	{"Invalid cross-device link", EXDEV},
	{"are the same file", EINVAL},
	{"cannot move", EIO},
	{"not a symbolic link", EINVAL},
	{"Disk quota exceeded", ENOSPC},
	{"File too large", EFBIG},
};

static int emu_errno(const char *errtext, int code)
{
	if (code == 0)
		return 0;
	for (size_t i = 0; i < sizeof(emu_err_texts) / sizeof(*emu_err_texts);
	     i++)
		if (strstr(errtext, emu_err_texts[i].text))
			return emu_err_texts[i].err;
	if (code == 127)
		return EOPNOTSUPP; /* tool missing in the sandbox */
	return EIO;
}

static void emu_free(struct emu *e)
{
	pthread_mutex_destroy(&e->mu);
	free(e);
}

/* exec_free may not be called from inside the exec's own callback (the
 * backend may hold its lock there), so the runtime does it: one worker
 * for every backend of the process, made at the first emulated command
 * and kept (an idle thread); a short-lived thread only if it cannot be
 * made. */
static pthread_mutex_t emu_rt_mu = PTHREAD_MUTEX_INITIALIZER;
static struct rt *emu_rt;

/* Threads do not survive fork() (fuse_daemonize): a child starts over. */
static void emu_rt_forked(void)
{
	emu_rt = NULL;
}

static void emu_atfork(void)
{
	pthread_atfork(NULL, NULL, emu_rt_forked);
}

static struct rt *emu_runtime(void)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;

	pthread_once(&once, emu_atfork);
	pthread_mutex_lock(&emu_rt_mu);
	if (!emu_rt)
		emu_rt = rt_new(1);
	struct rt *rt = emu_rt;
	pthread_mutex_unlock(&emu_rt_mu);
	return rt;
}

static void *emu_reaper(void *arg)
{
	struct emu *e = arg;

	api_exec_free(e->be, e->x);
	emu_free(e);
	return NULL;
}

static void emu_reap_work(void *arg, int err)
{
	(void)err;
	emu_reaper(arg);
}

static void emu_reap(struct emu *e)
{
	struct rt *rt = emu_runtime();
	pthread_t t;
	pthread_attr_t a;

	if (rt && rt_submit(rt, NULL, 0, emu_reap_work, e) == 0)
		return;
	pthread_attr_init(&a);
	pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
	if (pthread_create(&t, &a, emu_reaper, e))
		emu_reaper(e); /* last resort */
	pthread_attr_destroy(&a);
}

/* Emulated commands of a backend being closed are freed before it is:
 * the one worker runs in order, so a marker queued now runs after every
 * free queued before. */
static void emu_mark(void *arg, int err)
{
	struct emu_drain *d = arg;

	(void)err;
	pthread_mutex_lock(&d->mu);
	d->done = true;
	pthread_cond_signal(&d->cv);
	pthread_mutex_unlock(&d->mu);
}

static void emu_drain(void)
{
	struct emu_drain d = {.done = false};
	struct rt *rt;

	pthread_mutex_lock(&emu_rt_mu);
	rt = emu_rt;
	pthread_mutex_unlock(&emu_rt_mu);
	if (!rt)
		return;
	pthread_mutex_init(&d.mu, NULL);
	pthread_cond_init(&d.cv, NULL);
	if (rt_submit(rt, NULL, 0, emu_mark, &d) == 0) {
		pthread_mutex_lock(&d.mu);
		while (!d.done)
			pthread_cond_wait(&d.cv, &d.mu);
		pthread_mutex_unlock(&d.mu);
	}
	pthread_cond_destroy(&d.cv);
	pthread_mutex_destroy(&d.mu);
}

static void emu_finish(struct emu *e, int err, const char *msg)
{
	if (e->kind == EMU_STR)
		e->str(e->ud, err, msg, err ? NULL : e->out);
	else
		e->done(e->ud, err, msg);
}

static void emu_started(void *ud, int err, const char *msg)
{
	struct emu *e = ud;

	if (!err)
		return;
	if (pthread_equal(e->starter, pthread_self()) && e->starting) {
		/* inline failure: emu_run finishes once exec_start returns */
		e->inline_fail = true;
		e->fail_err = err;
		snprintf(e->fail_msg, sizeof(e->fail_msg), "%s",
			 msg ? msg : api_strerror(err));
		return;
	}
	/* Nothing else follows; exec_start reports *out == NULL or the
	 * exec still needs freeing: wait for exec_start to return. */
	pthread_mutex_lock(&e->mu);
	pthread_mutex_unlock(&e->mu);
	emu_finish(e, err, msg ? msg : api_strerror(err));
	if (e->x)
		emu_reap(e);
	else
		emu_free(e);
}

static int emu_output(void *ud, int stream, const void *buf, size_t len)
{
	struct emu *e = ud;

	if (stream == 1) {
		size_t n = EMU_OUT_MAX - e->outlen;
		if (len < n)
			n = len;
		memcpy(e->out + e->outlen, buf, n);
		e->outlen += n;
		e->out[e->outlen] = '\0';
	} else {
		size_t n = EMU_ERR_MAX - e->errlen;
		if (len < n)
			n = len;
		memcpy(e->errb + e->errlen, buf, n);
		e->errlen += n;
		e->errb[e->errlen] = '\0';
	}
	return 0;
}

static void emu_exited(void *ud, int code, int err, const char *msg)
{
	struct emu *e = ud;
	char sentence[EMU_ERR_MAX + 128];

	pthread_mutex_lock(&e->mu);
	pthread_mutex_unlock(&e->mu);
	if (!err)
		err = -emu_errno(e->errb, code);
	if (err && !msg) {
		/* stderr's first line is the tool's own explanation */
		char *nl = strchr(e->errb, '\n');
		if (nl)
			*nl = '\0';
		snprintf(sentence, sizeof(sentence), "%s (emulated via exec) "
			 "failed with exit code %d: %s", e->what, code,
			 e->errlen ? e->errb : api_strerror(err));
		msg = sentence;
	}
	if (!err && e->kind == EMU_STR) {
		/* readlink prints the target and one newline */
		if (e->outlen && e->out[e->outlen - 1] == '\n')
			e->out[--e->outlen] = '\0';
		if (e->outlen >= EMU_OUT_MAX) {
			err = -ENAMETOOLONG;
			msg = "link target too long";
		}
	}
	emu_finish(e, err, msg);
	emu_reap(e);
}

static const struct api_exec_cbs emu_cbs = {
	.started = emu_started,
	.output = emu_output,
	.exited = emu_exited,
};

static void emu_run(struct api_backend *be, const char *id,
		    const char *const *argv, const char *what,
		    enum emu_kind kind, api_done_fn done, api_str_fn str,
		    void *ud)
{
	struct api_exec_req req = {.argv = argv};
	struct emu *e = calloc(1, sizeof(*e));

	if (!e) {
		if (kind == EMU_STR)
			str(ud, -ENOMEM, api_strerror(ENOMEM), NULL);
		else
			done(ud, -ENOMEM, api_strerror(ENOMEM));
		return;
	}
	pthread_mutex_init(&e->mu, NULL);
	e->be = be;
	e->kind = kind;
	e->done = done;
	e->str = str;
	e->ud = ud;
	snprintf(e->what, sizeof(e->what), "%s", what);
	e->starter = pthread_self();
	e->starting = true;
	pthread_mutex_lock(&e->mu);
	be->ops->exec_start(be, id, &req, &emu_cbs, e, &e->x);
	e->starting = false;
	/* Read before unlocking: once e->mu is released the exec may
	 * finish on another thread and free e. */
	bool inline_fail = e->inline_fail;
	pthread_mutex_unlock(&e->mu);
	if (inline_fail) {
		emu_finish(e, e->fail_err, e->fail_msg);
		api_exec_free(be, e->x);
		emu_free(e);
	}
}

static bool emu_possible(struct api_backend *be)
{
	return api_has(be, API_CAP_EXEC) && be->ops->exec_start;
}

static void emu_rename(struct api_backend *be, const char *id,
		       const char *from, const char *to, unsigned flags,
		       api_done_fn cb, void *ud)
{
	static const char noreplace[] =
		"if [ -e \"$2\" ] || [ -h \"$2\" ]; then "
		"echo \"mv: '$2': File exists\" >&2; exit 1; fi; "
		"exec mv -T -- \"$1\" \"$2\"";

	if (flags & ~(unsigned)RENAME_NOREPLACE) {
		cb(ud, -EOPNOTSUPP, "this platform cannot exchange files");
		return;
	}
	if (flags) {
		const char *argv[] = {"sh", "-c", noreplace, "sh", from, to,
				      NULL};
		emu_run(be, id, argv, "rename", EMU_DONE, cb, NULL, ud);
	} else {
		const char *argv[] = {"mv", "-T", "--", from, to, NULL};
		emu_run(be, id, argv, "rename", EMU_DONE, cb, NULL, ud);
	}
}

static void emu_ts(char *buf, size_t len, const struct timespec *ts)
{
	snprintf(buf, len, "@%lld.%09ld", (long long)ts->tv_sec,
		 (long)ts->tv_nsec);
}

static void emu_setattr(struct api_backend *be, const char *id,
			const char *path, const struct api_setattr *sa,
			api_done_fn cb, void *ud)
{
	/* One shell runs every step; the path is "$1", numbers are ours. */
	char script[1024];
	size_t n = 0;
	char ts[64];

	script[0] = '\0';
#define EMU_ADD(...)                                                          \
	do {                                                                  \
		if (n < sizeof(script))                                       \
			n += snprintf(script + n, sizeof(script) - n,         \
				      __VA_ARGS__);                           \
	} while (0)
	EMU_ADD("set -e; ");
	if (sa->mask & API_SET_MODE)
		EMU_ADD("chmod %o -- \"$1\"; ", (unsigned)(sa->mode & 07777));
	if ((sa->mask & (API_SET_UID | API_SET_GID)) ==
	    (API_SET_UID | API_SET_GID))
		EMU_ADD("chown -h %u:%u -- \"$1\"; ", (unsigned)sa->uid,
			(unsigned)sa->gid);
	else if (sa->mask & API_SET_UID)
		EMU_ADD("chown -h %u -- \"$1\"; ", (unsigned)sa->uid);
	else if (sa->mask & API_SET_GID)
		EMU_ADD("chgrp -h %u -- \"$1\"; ", (unsigned)sa->gid);
	if (sa->mask & API_SET_SIZE)
		EMU_ADD("truncate -s %lld -- \"$1\"; ", (long long)sa->size);
	if ((sa->mask & API_SET_ATIME) && sa->atime.tv_nsec != UTIME_OMIT) {
		if (sa->atime.tv_nsec == UTIME_NOW) {
			EMU_ADD("touch -h -c -a -- \"$1\"; ");
		} else {
			emu_ts(ts, sizeof(ts), &sa->atime);
			EMU_ADD("touch -h -c -a -d %s -- \"$1\"; ", ts);
		}
	}
	if ((sa->mask & API_SET_MTIME) && sa->mtime.tv_nsec != UTIME_OMIT) {
		if (sa->mtime.tv_nsec == UTIME_NOW) {
			EMU_ADD("touch -h -c -m -- \"$1\"; ");
		} else {
			emu_ts(ts, sizeof(ts), &sa->mtime);
			EMU_ADD("touch -h -c -m -d %s -- \"$1\"; ", ts);
		}
	}
	EMU_ADD("[ -e \"$1\" ] || [ -h \"$1\" ] || "
		"{ echo \"$1: No such file or directory\" >&2; exit 1; }");
#undef EMU_ADD
	if (n >= sizeof(script)) {
		cb(ud, -EINVAL, "attribute change too complex to emulate");
		return;
	}
	const char *argv[] = {"sh", "-c", script, "sh", path, NULL};
	emu_run(be, id, argv, "setattr", EMU_DONE, cb, NULL, ud);
}

/* ---- wrappers ----------------------------------------------------------- */

static void nosup_done(const struct api_backend *be, api_done_fn cb,
		       void *ud, const char *what)
{
	char msg[160];

	snprintf(msg, sizeof(msg), "the %s platform does not support %s",
		 be->ops->name, what);
	cb(ud, -EOPNOTSUPP, msg);
}

#define NOSUP_MSG(be, what, msg)                                              \
	snprintf(msg, sizeof(msg), "the %s platform does not support %s",     \
		 (be)->ops->name, what)

void api_sb_list(struct api_backend *be, api_list_fn cb, void *ud)
{
	char msg[160];

	if (!be->ops->sb_list) {
		NOSUP_MSG(be, "listing sandboxes", msg);
		cb(ud, -EOPNOTSUPP, msg, NULL, 0);
		return;
	}
	be->ops->sb_list(be, cb, ud);
}

void api_sb_get(struct api_backend *be, const char *id, api_sandbox_fn cb,
		void *ud)
{
	char msg[160];

	if (!be->ops->sb_get) {
		NOSUP_MSG(be, "looking up a sandbox", msg);
		cb(ud, -EOPNOTSUPP, msg, NULL);
		return;
	}
	be->ops->sb_get(be, id, cb, ud);
}

void api_sb_create(struct api_backend *be, const char *name,
		   const struct api_kv *kv, size_t nkv, api_sandbox_fn cb,
		   void *ud)
{
	char msg[160];

	if (!be->ops->sb_create) {
		NOSUP_MSG(be, "creating sandboxes", msg);
		cb(ud, -EOPNOTSUPP, msg, NULL);
		return;
	}
	be->ops->sb_create(be, name, kv, nkv, cb, ud);
}

void api_sb_metrics(struct api_backend *be, const char *id, api_str_fn cb,
		    void *ud)
{
	char msg[160];

	if (!be->ops->sb_metrics || !api_has(be, API_CAP_METRICS)) {
		snprintf(msg, sizeof(msg), "the %s platform has no metrics",
			 be->ops->name);
		cb(ud, -EOPNOTSUPP, msg, NULL);
		return;
	}
	be->ops->sb_metrics(be, id, cb, ud);
}

void api_tpl_list(struct api_backend *be, api_tpl_fn cb, void *ud)
{
	char msg[160];

	if (!be->ops->tpl_list || !api_has(be, API_CAP_TEMPLATES)) {
		snprintf(msg, sizeof(msg), "the %s platform cannot list "
			 "templates", be->ops->name);
		cb(ud, -EOPNOTSUPP, msg, NULL, 0);
		return;
	}
	be->ops->tpl_list(be, cb, ud);
}

void api_tpl_delete(struct api_backend *be, const char *name, api_done_fn cb,
		    void *ud)
{
	char msg[160];

	if (!be->ops->tpl_delete || !api_has(be, API_CAP_TEMPLATES)) {
		snprintf(msg, sizeof(msg), "the %s platform cannot delete "
			 "templates", be->ops->name);
		cb(ud, -EOPNOTSUPP, msg);
		return;
	}
	be->ops->tpl_delete(be, name, cb, ud);
}

void api_sb_port(struct api_backend *be, const char *id, unsigned port,
		 api_str_fn cb, void *ud)
{
	char msg[160];

	if (!be->ops->sb_port || !api_has(be, API_CAP_PORTS)) {
		snprintf(msg, sizeof(msg), "the %s platform has no port "
			 "URLs", be->ops->name);
		cb(ud, -EOPNOTSUPP, msg, NULL);
		return;
	}
	if (port < 1 || port > 65535) {
		snprintf(msg, sizeof(msg), "port %u: want 1 to 65535", port);
		cb(ud, -EINVAL, msg, NULL);
		return;
	}
	be->ops->sb_port(be, id, port, cb, ud);
}

void api_sb_ports(struct api_backend *be, const char *id, api_str_fn cb,
		  void *ud)
{
	if (!be->ops->sb_ports || !api_has(be, API_CAP_PORTS)) {
		cb(ud, 0, NULL, ""); /* nothing known: PORT still works */
		return;
	}
	be->ops->sb_ports(be, id, cb, ud);
}

bool api_tag_valid(const char *tag)
{
	size_t n = strlen(tag);

	if (n == 0 || n > 63)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = tag[i];
		bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			     (c >= '0' && c <= '9');

		if (!alnum && (i == 0 || (c != '.' && c != '_' && c != '-')))
			return false;
	}
	return true;
}

void api_sb_verb(struct api_backend *be, const char *id, enum api_verb verb,
		 const char *arg, api_done_fn cb, void *ud)
{
	char msg[160];

	if ((int)verb < 0 || verb >= API_VERB__COUNT) {
		cb(ud, -EINVAL, "unknown verb");
		return;
	}
	if (!be->ops->sb_verb || !api_has(be, API_CAP_VERB(verb))) {
		snprintf(msg, sizeof(msg), "the %s platform has no '%s' verb",
			 be->ops->name, api_verb_name(verb));
		cb(ud, -EOPNOTSUPP, msg);
		return;
	}
	if (verb == API_VERB_SNAPSHOT && (!arg || !*arg)) {
		cb(ud, -EINVAL, "snapshot needs a name: snapshot NAME");
		return;
	}
	be->ops->sb_verb(be, id, verb, arg, cb, ud);
}

void api_raw_file_stat(struct api_backend *be, const char *id,
		       const char *path, api_stat_fn cb, void *ud)
{
	char msg[160];

	if (!be->ops->file_stat) {
		NOSUP_MSG(be, "file attributes", msg);
		cb(ud, -EOPNOTSUPP, msg, NULL);
		return;
	}
	be->ops->file_stat(be, id, path, cb, ud);
}

void api_file_stat(struct api_backend *be, const char *id, const char *path,
		   api_stat_fn cb, void *ud)
{
	if (be->rf)
		api_rfile_stat(be, id, path, cb, ud);
	else
		api_raw_file_stat(be, id, path, cb, ud);
}

void api_raw_file_readdir(struct api_backend *be, const char *id,
			  const char *path, api_readdir_fn cb, void *ud)
{
	char msg[160];

	if (!be->ops->file_readdir) {
		NOSUP_MSG(be, "listing directories", msg);
		cb(ud, -EOPNOTSUPP, msg, NULL, 0);
		return;
	}
	be->ops->file_readdir(be, id, path, cb, ud);
}

void api_file_readdir(struct api_backend *be, const char *id,
		      const char *path, api_readdir_fn cb, void *ud)
{
	if (be->rf)
		api_rfile_readdir(be, id, path, cb, ud);
	else
		api_raw_file_readdir(be, id, path, cb, ud);
}

void api_file_open(struct api_backend *be, const char *id, const char *path,
		   int flags, mode_t mode, api_open_fn cb, void *ud)
{
	char msg[160];

	if (be->rf) {
		api_rfile_open(be, id, path, flags, mode, cb, ud);
		return;
	}

	if (!be->ops->file_open) {
		NOSUP_MSG(be, "opening files", msg);
		cb(ud, -EOPNOTSUPP, msg, NULL);
		return;
	}
	be->ops->file_open(be, id, path, flags, mode, cb, ud);
}

void api_file_read(struct api_backend *be, struct api_file *f, off_t off,
		   size_t size, api_data_fn cb, void *ud)
{
	char msg[160];

	if (be->rf) {
		api_rfile_read(be, f, off, size, cb, ud);
		return;
	}

	if (!be->ops->file_read) {
		NOSUP_MSG(be, "reading files", msg);
		cb(ud, -EOPNOTSUPP, msg, NULL, 0);
		return;
	}
	be->ops->file_read(be, f, off, size, cb, ud);
}

void api_file_write(struct api_backend *be, struct api_file *f, off_t off,
		    const void *buf, size_t len, api_size_fn cb, void *ud)
{
	char msg[160];

	if (be->rf) {
		api_rfile_write(be, f, off, buf, len, cb, ud);
		return;
	}

	if (!be->ops->file_write) {
		NOSUP_MSG(be, "writing files", msg);
		cb(ud, -EOPNOTSUPP, msg, 0);
		return;
	}
	be->ops->file_write(be, f, off, buf, len, cb, ud);
}

void api_file_flush(struct api_backend *be, struct api_file *f,
		    api_done_fn cb, void *ud)
{

	if (be->rf) {
		api_rfile_flush(be, f, cb, ud);
		return;
	}
	if (!be->ops->file_flush) {
		cb(ud, 0, NULL); /* nothing staged: nothing to flush */
		return;
	}
	be->ops->file_flush(be, f, cb, ud);
}

void api_file_fsync(struct api_backend *be, struct api_file *f,
		    api_done_fn cb, void *ud)
{
	if (be->rf) {
		api_rfile_fsync(be, f, cb, ud);
		return;
	}
	api_file_flush(be, f, cb, ud);
}

void api_file_close(struct api_backend *be, struct api_file *f,
		    api_done_fn cb, void *ud)
{

	if (be->rf) {
		api_rfile_close(be, f, cb, ud);
		return;
	}
	if (!be->ops->file_close) {
		nosup_done(be, cb, ud, "closing files");
		return;
	}
	be->ops->file_close(be, f, cb, ud);
}

void api_file_fstat(struct api_backend *be, struct api_file *f,
		    api_stat_fn cb, void *ud)
{
	if (be->rf) {
		api_rfile_fstat(be, f, cb, ud);
		return;
	}
	if (be->ops->file_fstat) {
		be->ops->file_fstat(be, f, cb, ud);
		return;
	}
	cb(ud, -EOPNOTSUPP, "no fstat on this backend", NULL);
}

void api_file_ftruncate(struct api_backend *be, struct api_file *f,
			off_t size, api_done_fn cb, void *ud)
{
	if (be->rf) {
		api_rfile_ftruncate(be, f, size, cb, ud);
		return;
	}
	if (be->ops->file_ftruncate) {
		be->ops->file_ftruncate(be, f, size, cb, ud);
		return;
	}
	cb(ud, -EOPNOTSUPP, "no ftruncate on this backend");
}

void api_file_mkdir(struct api_backend *be, const char *id, const char *path,
		    mode_t mode, api_done_fn cb, void *ud)
{
	if (!be->ops->file_mkdir) {
		nosup_done(be, cb, ud, "creating directories");
		return;
	}
	be->ops->file_mkdir(be, id, path, mode, cb, ud);
}

void api_raw_file_unlink(struct api_backend *be, const char *id,
			 const char *path, api_done_fn cb, void *ud)
{
	if (!be->ops->file_unlink) {
		nosup_done(be, cb, ud, "removing files");
		return;
	}
	be->ops->file_unlink(be, id, path, cb, ud);
}

void api_file_unlink(struct api_backend *be, const char *id,
		     const char *path, api_done_fn cb, void *ud)
{
	if (be->rf)
		api_rfile_unlink(be, id, path, cb, ud);
	else
		api_raw_file_unlink(be, id, path, cb, ud);
}

void api_file_rmdir(struct api_backend *be, const char *id, const char *path,
		    api_done_fn cb, void *ud)
{
	if (!be->ops->file_rmdir) {
		nosup_done(be, cb, ud, "removing directories");
		return;
	}
	be->ops->file_rmdir(be, id, path, cb, ud);
}

void api_raw_file_rename(struct api_backend *be, const char *id,
			 const char *from, const char *to, unsigned flags,
			 api_done_fn cb, void *ud)
{
	if (api_has(be, API_CAP_RENAME) && be->ops->file_rename) {
		be->ops->file_rename(be, id, from, to, flags, cb, ud);
		return;
	}
	if (emu_possible(be)) {
		emu_rename(be, id, from, to, flags, cb, ud);
		return;
	}
	nosup_done(be, cb, ud, "renaming files");
}

void api_file_rename(struct api_backend *be, const char *id,
		     const char *from, const char *to, unsigned flags,
		     api_done_fn cb, void *ud)
{
	if (be->rf)
		api_rfile_rename(be, id, from, to, flags, cb, ud);
	else
		api_raw_file_rename(be, id, from, to, flags, cb, ud);
}

void api_raw_file_setattr(struct api_backend *be, const char *id,
			  const char *path, const struct api_setattr *sa,
			  api_done_fn cb, void *ud)
{
	if (api_has(be, API_CAP_SETATTR) && be->ops->file_setattr) {
		be->ops->file_setattr(be, id, path, sa, cb, ud);
		return;
	}
	if (emu_possible(be)) {
		emu_setattr(be, id, path, sa, cb, ud);
		return;
	}
	nosup_done(be, cb, ud, "changing file attributes");
}

void api_file_setattr(struct api_backend *be, const char *id,
		      const char *path, const struct api_setattr *sa,
		      api_done_fn cb, void *ud)
{
	if (be->rf)
		api_rfile_setattr(be, id, path, sa, cb, ud);
	else
		api_raw_file_setattr(be, id, path, sa, cb, ud);
}

void api_file_symlink(struct api_backend *be, const char *id,
		      const char *target, const char *path, api_done_fn cb,
		      void *ud)
{
	if (api_has(be, API_CAP_SYMLINK) && be->ops->file_symlink) {
		be->ops->file_symlink(be, id, target, path, cb, ud);
		return;
	}
	if (emu_possible(be)) {
		/* -T: never create the link inside an existing directory */
		const char *argv[] = {"ln", "-s", "-T", "--", target, path,
				      NULL};
		emu_run(be, id, argv, "symlink", EMU_DONE, cb, NULL, ud);
		return;
	}
	nosup_done(be, cb, ud, "symbolic links");
}

void api_file_mknod(struct api_backend *be, const char *id,
		    const char *path, mode_t mode, api_done_fn cb, void *ud)
{
	char m[16];

	if (!S_ISFIFO(mode) && !S_ISSOCK(mode) && !S_ISREG(mode)) {
		cb(ud, -EPERM, "only FIFOs, sockets and files can be made in "
		   "a sandbox's fs/ (no device nodes)");
		return;
	}
	if (api_has(be, API_CAP_MKNOD) && be->ops->file_mknod) {
		be->ops->file_mknod(be, id, path, mode, cb, ud);
		return;
	}
	if (S_ISFIFO(mode) && emu_possible(be)) {
		snprintf(m, sizeof(m), "%o", (unsigned)(mode & 07777));
		const char *argv[] = {"mkfifo", "-m", m, "--", path, NULL};
		emu_run(be, id, argv, "mkfifo", EMU_DONE, cb, NULL, ud);
		return;
	}
	nosup_done(be, cb, ud, S_ISFIFO(mode) ? "FIFOs" : S_ISSOCK(mode) ?
			       "unix sockets" : "mknod of regular files");
}

void api_file_link(struct api_backend *be, const char *id, const char *from,
		   const char *to, api_done_fn cb, void *ud)
{
	if (api_has(be, API_CAP_LINK) && be->ops->file_link) {
		be->ops->file_link(be, id, from, to, cb, ud);
		return;
	}
	if (emu_possible(be)) {
		/* -T: never create the link inside an existing directory */
		const char *argv[] = {"ln", "-T", "--", from, to, NULL};
		emu_run(be, id, argv, "link", EMU_DONE, cb, NULL, ud);
		return;
	}
	nosup_done(be, cb, ud, "hard links");
}

void api_file_readlink(struct api_backend *be, const char *id,
		       const char *path, api_str_fn cb, void *ud)
{
	char msg[160];

	if (api_has(be, API_CAP_SYMLINK) && be->ops->file_readlink) {
		be->ops->file_readlink(be, id, path, cb, ud);
		return;
	}
	if (emu_possible(be)) {
		/* -v: a non-link says "Invalid argument" (EINVAL) */
		const char *argv[] = {"readlink", "-v", "--", path, NULL};
		emu_run(be, id, argv, "readlink", EMU_STR, NULL, cb, ud);
		return;
	}
	NOSUP_MSG(be, "symbolic links", msg);
	cb(ud, -EOPNOTSUPP, msg, NULL);
}

void api_exec_start(struct api_backend *be, const char *id,
		    const struct api_exec_req *req,
		    const struct api_exec_cbs *cbs, void *ud,
		    struct api_exec **out)
{
	char msg[160];

	*out = NULL;
	if (!be->ops->exec_start || !api_has(be, API_CAP_EXEC)) {
		NOSUP_MSG(be, "running commands", msg);
		cbs->started(ud, -EOPNOTSUPP, msg);
		return;
	}
	if (req->want_stdin && !api_has(be, API_CAP_EXEC_STDIN)) {
		NOSUP_MSG(be, "feeding stdin to commands", msg);
		cbs->started(ud, -EOPNOTSUPP, msg);
		return;
	}
	be->ops->exec_start(be, id, req, cbs, ud, out);
}

void api_exec_write(struct api_backend *be, struct api_exec *x,
		    const void *buf, size_t len, api_done_fn cb, void *ud)
{
	if (!be->ops->exec_write) {
		nosup_done(be, cb, ud, "feeding stdin to commands");
		return;
	}
	be->ops->exec_write(be, x, buf, len, cb, ud);
}

void api_exec_close_stdin(struct api_backend *be, struct api_exec *x)
{
	if (be->ops->exec_close_stdin)
		be->ops->exec_close_stdin(be, x);
}

void api_exec_resume(struct api_backend *be, struct api_exec *x)
{
	if (be->ops->exec_resume)
		be->ops->exec_resume(be, x);
}

int api_exec_signal(struct api_backend *be, struct api_exec *x, int sig)
{
	if (!be->ops->exec_signal)
		return -EOPNOTSUPP;
	return be->ops->exec_signal(be, x, sig);
}

int api_exec_pid(struct api_backend *be, struct api_exec *x)
{
	if (!x || !be->ops->exec_pid)
		return -ENOSYS;
	return be->ops->exec_pid(be, x);
}

int api_exec_jobs(struct api_backend *be, const char *id, char ***jobs)
{
	*jobs = NULL;
	if (!be->ops->exec_jobs)
		return 0;
	return be->ops->exec_jobs(be, id, jobs);
}

void api_exec_attach(struct api_backend *be, const char *id, const char *job,
		     const struct api_exec_cbs *cbs, void *ud,
		     struct api_exec **out, struct api_exec_info *info)
{
	*out = NULL;
	if (!be->ops->exec_attach) {
		cbs->started(ud, -EOPNOTSUPP, "this platform cannot recover "
			     "commands");
		return;
	}
	be->ops->exec_attach(be, id, job, cbs, ud, out, info);
}

void api_exec_free(struct api_backend *be, struct api_exec *x)
{
	if (x && be->ops->exec_free)
		be->ops->exec_free(be, x);
}

/* ---- quoting ------------------------------------------------------------ */

char *api_shell_quote(const char *s)
{
	size_t n = 2;
	char *out, *p;

	for (const char *q = s; *q; q++)
		n += *q == '\'' ? 4 : 1;
	out = malloc(n + 1);
	if (!out)
		return NULL;
	p = out;
	*p++ = '\'';
	for (const char *q = s; *q; q++) {
		if (*q == '\'') {
			/* close, escaped quote, reopen */
			memcpy(p, "'\\''", 4);
			p += 4;
		} else {
			*p++ = *q;
		}
	}
	*p++ = '\'';
	*p = '\0';
	return out;
}
