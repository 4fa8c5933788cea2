/* grpc_svc.c - CW Sandbox's v1 SandboxService over the local sandboxes.
 *
 * A CW sandbox is the local sandbox named after its ID (`sb-` + 20 hex).
 * What CW stores beside it (spec with tags, request_id, state, reason,
 * times) lives in DATADIR/server-cwsandbox/ID.pb, a packed
 * CreateSandboxRequest whose sandbox carries the status.  Terminated
 * sandboxes keep their record (shown with show_terminated) for a day.
 *
 * States: CREATING while the local create runs (CreateSandbox answers at
 * once, as the platform does; clients poll GetSandbox), then the local
 * state decides: running -> RUNNING, paused -> PAUSED, stopped ->
 * COMPLETED, failed or gone -> FAILED; DeleteSandbox -> TERMINATED.
 *
 * Choices where the reference is silent (written down in
 * tools/sbxfs-server/README.md): the container's image, command,
 * resources and mounted files are recorded but not applied (a local
 * sandbox is the host's Debian userland); WriteFile creates missing parent
 * directories; ReadFile of a directory is FAILED_PRECONDITION with
 * CWSANDBOX_FILE_IS_DIRECTORY; exec and files in a sandbox that is not
 * RUNNING are FAILED_PRECONDITION with CWSANDBOX_SANDBOX_NOT_RUNNING.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "grpc.h"
#include "sandbox.pb-c.h"

#define FILE_MAX (32u << 20)		/* unary file cap (the platform's) */
#define EXEC_OUT_DEF (16u << 20)	/* unary Exec output default cap */
#define OUT_HIGH (4u << 20)		/* pause a command's output above */
#define RECS_MAX 4096
#define KEEP_TERMINATED (24 * 3600)

typedef Coreweave__Sandbox__V1__Sandbox Sandbox;
typedef Coreweave__Sandbox__V1__SandboxSpec Spec;
typedef Coreweave__Sandbox__V1__SandboxStatus Status;
typedef Coreweave__Sandbox__V1__Timestamp Ts;
typedef Coreweave__Sandbox__V1__CreateSandboxRequest CreateReq;

enum { ST_CREATING = 1, ST_RUNNING = 2, ST_COMPLETED = 3, ST_FAILED = 4,
       ST_TERMINATING = 5, ST_TERMINATED = 6, ST_PAUSED = 8 };

struct rec {
	char id[32];
	char request_id[136];
	uint8_t *spec;		/* packed SandboxSpec */
	size_t spec_len;
	int state;		/* ST_CREATING, _RUNNING (= ask the backend),
				   _FAILED, _TERMINATING, _TERMINATED */
	char reason[256];
	time_t create, start, end;
	int exit_code;		/* -1 unknown */
	bool busy;		/* a delete runs */
};

static pthread_mutex_t rlock = PTHREAD_MUTEX_INITIALIZER;
static struct rec *recs[RECS_MAX];	/* under rlock */
static size_t nrecs;

/* ---- errors ------------------------------------------------------------- */

static void fail(struct gs_stream *st, int code, const char *reason,
		 const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void fail(struct gs_stream *st, int code, const char *reason,
		 const char *fmt, ...)
{
	char m[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(m, sizeof(m), fmt, ap);
	va_end(ap);
	gs_finish(st, code, m, reason, NULL);
}

/* errno from the local runtime -> gRPC code (one place) */
static int code_of(int err)
{
	switch (-err) {
	case ENOENT: return GS_NOT_FOUND;
	case EEXIST: return GS_ALREADY_EXISTS;
	case EBUSY: case EFBIG: case EISDIR: case ENOTDIR: case ENOTEMPTY:
		return GS_FAILED_PRECONDITION;
	case EINVAL: case ENAMETOOLONG: return GS_INVALID_ARGUMENT;
	case EACCES: case EPERM: return GS_PERMISSION_DENIED;
	case ETIMEDOUT: return GS_DEADLINE_EXCEEDED;
	case ENOSPC: case ENOMEM: return GS_RESOURCE_EXHAUSTED;
	case EOPNOTSUPP: return GS_UNIMPLEMENTED;
	case EHOSTUNREACH: return GS_UNAVAILABLE;
	}
	return GS_INTERNAL;
}

static void fail_file(struct gs_stream *st, int err, const char *path,
		      const char *op, const char *msg)
{
	const char *reason = "CWSANDBOX_FILE_IO_FAILED";
	const char *meta[] = { "filepath", path, "operation", op, NULL };
	char m[600];

	if (err == -ENOENT || err == -ENOTDIR)
		reason = "CWSANDBOX_FILE_NOT_FOUND";
	else if (err == -EISDIR)
		reason = "CWSANDBOX_FILE_IS_DIRECTORY";
	else if (err == -EACCES || err == -EPERM)
		reason = "CWSANDBOX_FILE_PERMISSION_DENIED";
	snprintf(m, sizeof(m), "%s %s: %s", op, path,
		 msg && *msg ? msg : strerror(-err));
	gs_finish(st, err == -ENOTDIR ? GS_NOT_FOUND : code_of(err), m,
		  reason, meta);
}

static void too_large(struct gs_stream *st, const char *path, const char *op,
		      size_t size)
{
	char sz[24], mx[24], m[600];
	const char *meta[] = { "filepath", path, "operation", op,
			       "size_bytes", sz, "max_size_bytes", mx, NULL };

	snprintf(sz, sizeof(sz), "%zu", size);
	snprintf(mx, sizeof(mx), "%u", FILE_MAX);
	snprintf(m, sizeof(m), "%s %s: file is %zu bytes, the limit is %u "
		 "bytes", op, path, size, FILE_MAX);
	gs_finish(st, GS_FAILED_PRECONDITION, m, "CWSANDBOX_FILE_TOO_LARGE",
		  meta);
}

/* ---- records ----------------------------------------------------------- */

static void rec_path(const char *id, char *out, size_t len)
{
	snprintf(out, len, "%s/server-cwsandbox/%s.pb", srv_g.datadir, id);
}

static void ts_set(Ts *t, time_t v)
{
	coreweave__sandbox__v1__timestamp__init(t);
	t->seconds = v;
}

/* Fill a Sandbox for r with the given state (spec unpacked into *specp,
 * free with coreweave__sandbox__v1__sandbox_spec__free_unpacked). */
struct sbview {
	Sandbox sb;
	Status status;
	Ts ct, st, et;
	Spec *spec;
};

static void view(struct sbview *v, const struct rec *r, int state,
		 const char *reason)
{
	coreweave__sandbox__v1__sandbox__init(&v->sb);
	coreweave__sandbox__v1__sandbox_status__init(&v->status);
	v->sb.sandbox_id = (char *)r->id;
	v->spec = coreweave__sandbox__v1__sandbox_spec__unpack(NULL,
		r->spec_len, r->spec);
	v->sb.spec = v->spec;
	v->sb.status = &v->status;
	v->status.state = state;
	v->status.state_reason = (char *)(reason ? reason : "");
	ts_set(&v->ct, r->create);
	v->status.create_time = &v->ct;
	if (r->start) {
		ts_set(&v->st, r->start);
		v->status.start_time = &v->st;
	}
	if (r->end && (state == ST_TERMINATED || state == ST_FAILED ||
		       state == ST_COMPLETED)) {
		ts_set(&v->et, r->end);
		v->status.end_time = &v->et;
	}
	if (r->exit_code >= 0 && state != ST_RUNNING && state != ST_PAUSED) {
		v->status._exit_code_case =
		COREWEAVE__SANDBOX__V1__SANDBOX_STATUS___EXIT_CODE_EXIT_CODE;
		v->status.exit_code = r->exit_code;
	}
	v->status.runner_id = "sbxfs-server";
}

static void view_free(struct sbview *v)
{
	if (v->spec)
		coreweave__sandbox__v1__sandbox_spec__free_unpacked(v->spec,
								    NULL);
}

/* Persist r (rlock held or r private). */
static int rec_save(const struct rec *r)
{
	struct sbview v;
	CreateReq q = COREWEAVE__SANDBOX__V1__CREATE_SANDBOX_REQUEST__INIT;
	char path[700], tmp[720];
	uint8_t *buf;
	size_t n;
	int fd, rc = 0;

	view(&v, r, r->state, r->reason);
	q.sandbox = &v.sb;
	q.request_id = (char *)r->request_id;
	n = coreweave__sandbox__v1__create_sandbox_request__get_packed_size(
		&q);
	buf = malloc(n ? n : 1);
	if (!buf) {
		view_free(&v);
		return -ENOMEM;
	}
	coreweave__sandbox__v1__create_sandbox_request__pack(&q, buf);
	view_free(&v);
	rec_path(r->id, path, sizeof(path));
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0 || write(fd, buf, n) != (ssize_t)n || fsync(fd))
		rc = -EIO;
	if (fd >= 0)
		close(fd);
	if (!rc && rename(tmp, path))
		rc = -errno;
	free(buf);
	return rc;
}

static struct rec *rec_find_locked(const char *id)
{
	size_t i;

	for (i = 0; i < nrecs; i++)
		if (!strcmp(recs[i]->id, id))
			return recs[i];
	return NULL;
}

static void rec_free(struct rec *r)
{
	free(r->spec);
	free(r);
}

static int recs_load(void)
{
	char dir[600], path[900];
	struct dirent *de;
	DIR *d;
	time_t now = time(NULL);

	snprintf(dir, sizeof(dir), "%s/server-cwsandbox", srv_g.datadir);
	if (mkdir(dir, 0700) && errno != EEXIST)
		return -errno;
	d = opendir(dir);
	if (!d)
		return -errno;
	while ((de = readdir(d)) && nrecs < RECS_MAX) {
		size_t l = strlen(de->d_name);
		CreateReq *q;
		struct rec *r;
		uint8_t buf[65536];
		ssize_t n;
		int fd;

		if (l < 4 || strcmp(de->d_name + l - 3, ".pb"))
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			continue;
		n = read(fd, buf, sizeof(buf));
		close(fd);
		if (n <= 0)
			continue;
		q = coreweave__sandbox__v1__create_sandbox_request__unpack(
			NULL, n, buf);
		if (!q || !q->sandbox || !q->sandbox->status ||
		    strlen(q->sandbox->sandbox_id) >= sizeof(r->id)) {
			if (q)
				coreweave__sandbox__v1__create_sandbox_request__free_unpacked(q, NULL);
			continue;
		}
		r = calloc(1, sizeof(*r));
		if (r) {
			Status *s = q->sandbox->status;
			Spec *sp = q->sandbox->spec;
			Spec empty = COREWEAVE__SANDBOX__V1__SANDBOX_SPEC__INIT;

			snprintf(r->id, sizeof(r->id), "%s",
				 q->sandbox->sandbox_id);
			snprintf(r->request_id, sizeof(r->request_id), "%s",
				 q->request_id);
			if (!sp)
				sp = &empty;
			r->spec_len = coreweave__sandbox__v1__sandbox_spec__get_packed_size(sp);
			r->spec = malloc(r->spec_len ? r->spec_len : 1);
			if (r->spec)
				coreweave__sandbox__v1__sandbox_spec__pack(sp,
								    r->spec);
			r->state = s->state;
			if (r->state == ST_CREATING ||
			    r->state == ST_TERMINATING)
				r->state = ST_RUNNING;	/* ask the backend */
			snprintf(r->reason, sizeof(r->reason), "%s",
				 s->state_reason);
			r->create = s->create_time ? s->create_time->seconds
						   : 0;
			r->start = s->start_time ? s->start_time->seconds : 0;
			r->end = s->end_time ? s->end_time->seconds : 0;
			r->exit_code = s->_exit_code_case ? s->exit_code : -1;
			if (!r->spec || (r->state == ST_TERMINATED &&
					 now - r->end > KEEP_TERMINATED)) {
				unlink(path);
				rec_free(r);
			} else {
				recs[nrecs++] = r;
			}
		}
		coreweave__sandbox__v1__create_sandbox_request__free_unpacked(
			q, NULL);
	}
	closedir(d);
	return 0;
}

/* The state a client sees, from the record and the local state. */
static int state_of(const struct rec *r, const struct api_sandbox *sb,
		    bool found, const char **reason)
{
	*reason = r->reason;
	if (r->state != ST_RUNNING)
		return r->state;
	if (!found) {
		*reason = "the sandbox no longer exists on this machine";
		return ST_FAILED;
	}
	switch (sb->state) {
	case API_ST_CREATING: return ST_CREATING;
	case API_ST_RUNNING: return ST_RUNNING;
	case API_ST_PAUSED: return ST_PAUSED;
	case API_ST_STOPPING: return ST_RUNNING;
	case API_ST_STOPPED:
		*reason = "the sandbox's init exited";
		return ST_COMPLETED;
	default:
		*reason = "the local sandbox failed";
		return ST_FAILED;
	}
}

static bool terminal(int s)
{
	return s == ST_COMPLETED || s == ST_FAILED || s == ST_TERMINATED;
}

/* Copy of a record (spec included) and its current state.  0 / -ENOENT. */
static int rec_get(const char *id, struct rec *out, int *state,
		   char *reason, size_t rl)
{
	struct api_sandbox sb;
	const char *why;
	struct rec *r;
	char msg[256];
	int rc;

	pthread_mutex_lock(&rlock);
	r = rec_find_locked(id);
	if (r) {
		*out = *r;
		out->spec = malloc(r->spec_len ? r->spec_len : 1);
		if (out->spec)
			memcpy(out->spec, r->spec, r->spec_len);
	}
	pthread_mutex_unlock(&rlock);
	if (!r)
		return -ENOENT;
	if (!out->spec)
		return -ENOMEM;
	rc = out->state == ST_RUNNING ? srv_sb_get(id, &sb, msg, sizeof(msg))
				      : 0;
	*state = state_of(out, &sb, rc == 0, &why);
	snprintf(reason, rl, "%s", why);
	return 0;
}

static void reply_sandbox(struct gs_stream *st, const struct rec *r,
			  int state, const char *reason)
{
	struct sbview v;
	uint8_t *buf;
	size_t n;

	view(&v, r, state, reason);
	n = coreweave__sandbox__v1__sandbox__get_packed_size(&v.sb);
	buf = malloc(n ? n : 1);
	if (buf) {
		coreweave__sandbox__v1__sandbox__pack(&v.sb, buf);
		gs_reply(st, buf, n);
	} else {
		fail(st, GS_RESOURCE_EXHAUSTED, NULL, "out of memory");
	}
	free(buf);
	view_free(&v);
}

static bool not_found(struct gs_stream *st, const char *id)
{
	const char *meta[] = { "sandbox_id", id, NULL };
	char m[200];

	snprintf(m, sizeof(m), "sandbox %s not found", id);
	gs_finish(st, GS_NOT_FOUND, m, "CWSANDBOX_SANDBOX_NOT_FOUND", meta);
	return false;
}

/* For exec and files: the sandbox exists and runs, else answered. */
static bool need_running(struct gs_stream *st, const char *id)
{
	struct rec r;
	char reason[256];
	int state;

	if (!id || !*id) {
		fail(st, GS_INVALID_ARGUMENT, "CWSANDBOX_INVALID_REQUEST",
		     "sandbox_id is required");
		return false;
	}
	if (rec_get(id, &r, &state, reason, sizeof(reason)))
		return not_found(st, id);
	free(r.spec);
	if (state != ST_RUNNING) {
		fail(st, GS_FAILED_PRECONDITION,
		     "CWSANDBOX_SANDBOX_NOT_RUNNING",
		     "sandbox %s is not running (%s)", id,
		     state == ST_CREATING ? "creating" :
		     state == ST_PAUSED ? "paused" :
		     state == ST_TERMINATING ? "stopping" :
		     state == ST_FAILED ? "failed" : "stopped");
		return false;
	}
	return true;
}

/* ---- CreateSandbox ---------------------------------------------------------- */

struct creator {
	char id[32];
	char fss[40];	/* restore_from_snapshot_id of a scratch volume */
};

static void *create_thread(void *p)
{
	struct creator *c = p;
	char msg[512];
	struct rec *r;
	int rc;

	{
		/* a restored snapshot is the local template named after
		 * its ID (the whole file system: see fss_create) */
		struct api_kv kv = { "template", c->fss };

		rc = srv_sb_create(c->id, c->fss[0] ? &kv : NULL,
				   c->fss[0] ? 1 : 0, msg, sizeof(msg));
	}
	pthread_mutex_lock(&rlock);
	r = rec_find_locked(c->id);
	if (r) {
		if (rc) {
			r->state = ST_FAILED;
			snprintf(r->reason, sizeof(r->reason), "%.200s", msg);
			r->end = time(NULL);
		} else if (r->state == ST_CREATING) {
			r->state = ST_RUNNING;
			r->start = time(NULL);
		}
		rec_save(r);
	}
	pthread_mutex_unlock(&rlock);
	free(c);
	return NULL;
}

static int new_id(char *out, size_t len)
{
	unsigned char v[10];
	int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC), i;

	if (fd < 0 || read(fd, v, sizeof(v)) != sizeof(v)) {
		if (fd >= 0)
			close(fd);
		return -EIO;
	}
	close(fd);
	snprintf(out, len, "sb-");
	for (i = 0; i < 10; i++)
		snprintf(out + 3 + 2 * i, len - 3 - 2 * i, "%02x", v[i]);
	return 0;
}

static bool fss_restore_of(struct gs_stream *st, const Spec *spec,
			   char *out, size_t len);

static void h_create(struct gs_stream *st, const uint8_t *m, size_t len)
{
	CreateReq *q = coreweave__sandbox__v1__create_sandbox_request__unpack(
		NULL, len, m);
	struct creator *c = NULL;
	struct rec *r = NULL, *old;
	pthread_attr_t a;
	pthread_t th;
	int state;
	char reason[256];

	if (!q) {
		fail(st, GS_INVALID_ARGUMENT, "CWSANDBOX_INVALID_REQUEST",
		     "cannot parse CreateSandboxRequest");
		return;
	}
	if (!q->sandbox || !q->sandbox->spec ||
	    !q->sandbox->spec->n_containers) {
		fail(st, GS_INVALID_ARGUMENT, "CWSANDBOX_INVALID_REQUEST",
		     "sandbox.spec.containers needs at least one container");
		goto out;
	}
	if (strlen(q->request_id) >= sizeof(r->request_id)) {
		fail(st, GS_INVALID_ARGUMENT, "CWSANDBOX_INVALID_REQUEST",
		     "request_id is longer than 128 bytes");
		goto out;
	}
	r = calloc(1, sizeof(*r));
	c = calloc(1, sizeof(*c));
	if (!r || !c || new_id(r->id, sizeof(r->id)))
		goto oom;
	if (!fss_restore_of(st, q->sandbox->spec, c->fss, sizeof(c->fss))) {
		rec_free(r);
		r = NULL;
		goto out_free;
	}
	snprintf(r->request_id, sizeof(r->request_id), "%s", q->request_id);
	r->spec_len = coreweave__sandbox__v1__sandbox_spec__get_packed_size(
		q->sandbox->spec);
	r->spec = malloc(r->spec_len ? r->spec_len : 1);
	if (!r->spec)
		goto oom;
	coreweave__sandbox__v1__sandbox_spec__pack(q->sandbox->spec, r->spec);
	r->state = ST_CREATING;
	r->create = time(NULL);
	r->exit_code = -1;

	pthread_mutex_lock(&rlock);
	/* idempotency: the same request_id answers the first result */
	if (*r->request_id) {
		size_t i;

		for (i = 0; i < nrecs; i++)
			if (!strcmp(recs[i]->request_id, r->request_id))
				break;
		if (i < nrecs) {
			old = recs[i];
			snprintf(c->id, sizeof(c->id), "%s", old->id);
			pthread_mutex_unlock(&rlock);
			rec_free(r);
			r = NULL;
			if (!rec_get(c->id, (old = calloc(1, sizeof(*old))) ?
				     old : NULL, &state, reason,
				     sizeof(reason))) {
				reply_sandbox(st, old, state, reason);
				free(old->spec);
			}
			free(old);
			free(c);
			goto out;
		}
	}
	if (nrecs >= RECS_MAX) {
		pthread_mutex_unlock(&rlock);
		fail(st, GS_RESOURCE_EXHAUSTED,
		     "CWSANDBOX_RESOURCE_CEILING_EXCEEDED",
		     "too many sandboxes");
		goto out_free;
	}
	if (rec_save(r)) {
		pthread_mutex_unlock(&rlock);
		fail(st, GS_INTERNAL, NULL, "cannot store the sandbox record");
		goto out_free;
	}
	recs[nrecs++] = r;
	pthread_mutex_unlock(&rlock);
	snprintf(c->id, sizeof(c->id), "%s", r->id);
	reply_sandbox(st, r, ST_CREATING, "");
	pthread_attr_init(&a);
	pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
	if (pthread_create(&th, &a, create_thread, c)) {
		pthread_mutex_lock(&rlock);
		r->state = ST_FAILED;
		snprintf(r->reason, sizeof(r->reason), "no thread");
		pthread_mutex_unlock(&rlock);
		free(c);
	}
	pthread_attr_destroy(&a);
	goto out;
oom:
	fail(st, GS_RESOURCE_EXHAUSTED, NULL, "out of memory");
out_free:
	if (r)
		rec_free(r);
	free(c);
out:
	coreweave__sandbox__v1__create_sandbox_request__free_unpacked(q, NULL);
}

/* ---- GetSandbox ------------------------------------------------------------------ */

static void h_get(struct gs_stream *st, const uint8_t *m, size_t len)
{
	Coreweave__Sandbox__V1__GetSandboxRequest *q =
		coreweave__sandbox__v1__get_sandbox_request__unpack(NULL, len,
								    m);
	struct rec r;
	char reason[256];
	int state;

	if (!q) {
		fail(st, GS_INVALID_ARGUMENT, "CWSANDBOX_INVALID_REQUEST",
		     "cannot parse GetSandboxRequest");
		return;
	}
	if (!*q->sandbox_id)
		fail(st, GS_INVALID_ARGUMENT, "CWSANDBOX_INVALID_REQUEST",
		     "sandbox_id is required");
	else if (rec_get(q->sandbox_id, &r, &state, reason, sizeof(reason)))
		not_found(st, q->sandbox_id);
	else {
		reply_sandbox(st, &r, state, reason);
		free(r.spec);
	}
	coreweave__sandbox__v1__get_sandbox_request__free_unpacked(q, NULL);
}

/* ---- ListSandboxes --------------------------------------------------------------- */

static bool has_tags(const struct rec *r, char **tags, size_t n)
{
	Spec *sp;
	size_t i, j;
	bool ok = true;

	if (!n)
		return true;
	sp = coreweave__sandbox__v1__sandbox_spec__unpack(NULL, r->spec_len,
							  r->spec);
	if (!sp)
		return false;
	for (i = 0; i < n && ok; i++) {
		for (j = 0; j < sp->n_tags; j++)
			if (!strcmp(sp->tags[j], tags[i]))
				break;
		ok = j < sp->n_tags;
	}
	coreweave__sandbox__v1__sandbox_spec__free_unpacked(sp, NULL);
	return ok;
}

static int rec_cmp(const void *a, const void *b)
{
	const struct rec *x = *(struct rec *const *)a;
	const struct rec *y = *(struct rec *const *)b;

	if (x->create != y->create)
		return x->create < y->create ? -1 : 1;
	return strcmp(x->id, y->id);
}

static void h_list(struct gs_stream *st, const uint8_t *m, size_t len)
{
	Coreweave__Sandbox__V1__ListSandboxesRequest *q =
		coreweave__sandbox__v1__list_sandboxes_request__unpack(NULL,
								       len, m);
	Coreweave__Sandbox__V1__ListSandboxesResponse resp =
		COREWEAVE__SANDBOX__V1__LIST_SANDBOXES_RESPONSE__INIT;
	struct api_sandbox *loc = NULL;
	size_t nloc = 0, i, j, n = 0, skip = 0, page, k;
	struct rec **snap = NULL;
	struct sbview *views = NULL;
	Sandbox **out = NULL;
	char msg[256], next[24] = "";
	uint8_t *buf = NULL;
	char *e;

	if (!q) {
		fail(st, GS_INVALID_ARGUMENT, "CWSANDBOX_INVALID_REQUEST",
		     "cannot parse ListSandboxesRequest");
		return;
	}
	page = q->page_size > 0 && q->page_size <= 1000 ? q->page_size : 100;
	if (*q->page_token) {
		skip = strtoul(q->page_token, &e, 10);
		if (*e) {
			fail(st, GS_INVALID_ARGUMENT,
			     "CWSANDBOX_INVALID_REQUEST", "bad page_token");
			goto out;
		}
	}
	if (srv_sb_list(&loc, &nloc, msg, sizeof(msg))) {
		fail(st, GS_UNAVAILABLE, "CWSANDBOX_BACKEND_UNAVAILABLE",
		     "local runtime: %s", msg);
		goto out;
	}
	/* a private copy of the records, sorted by creation */
	pthread_mutex_lock(&rlock);
	snap = calloc(nrecs + 1, sizeof(*snap));
	for (i = 0; snap && i < nrecs; i++) {
		snap[n] = malloc(sizeof(**snap));
		if (!snap[n])
			break;
		*snap[n] = *recs[i];
		snap[n]->spec = malloc(recs[i]->spec_len + 1);
		if (!snap[n]->spec) {
			free(snap[n]);
			break;
		}
		memcpy(snap[n]->spec, recs[i]->spec, recs[i]->spec_len);
		n++;
	}
	pthread_mutex_unlock(&rlock);
	if (!snap)
		goto oom;
	qsort(snap, n, sizeof(*snap), rec_cmp);
	views = calloc(page + 1, sizeof(*views));
	out = calloc(page + 1, sizeof(*out));
	if (!views || !out)
		goto oom;
	for (i = 0, j = 0, k = 0; i < n; i++) {
		const char *reason;
		bool found = false;
		size_t l;
		int state;

		for (l = 0; l < nloc; l++)
			if (!strcmp(loc[l].id, snap[i]->id)) {
				found = true;
				break;
			}
		state = state_of(snap[i], found ? &loc[l] : NULL, found,
				 &reason);
		if (terminal(state) && !q->show_terminated)
			continue;
		if (q->state && state != (int)q->state)
			continue;
		if (!has_tags(snap[i], q->tags, q->n_tags))
			continue;
		if (j++ < skip)
			continue;
		if (k == page) {
			snprintf(next, sizeof(next), "%zu", skip + page);
			break;
		}
		view(&views[k], snap[i], state, reason);
		/* the view points into snap[i]: keep it until packed */
		out[k] = &views[k].sb;
		k++;
	}
	resp.n_sandboxes = k;
	resp.sandboxes = out;
	resp.next_page_token = next;
	len = coreweave__sandbox__v1__list_sandboxes_response__get_packed_size(
		&resp);
	buf = malloc(len ? len : 1);
	if (!buf)
		goto oom;
	coreweave__sandbox__v1__list_sandboxes_response__pack(&resp, buf);
	gs_reply(st, buf, len);
	for (i = 0; i < k; i++)
		view_free(&views[i]);
	goto out;
oom:
	fail(st, GS_RESOURCE_EXHAUSTED, NULL, "out of memory");
out:
	free(buf);
	free(out);
	free(views);
	for (i = 0; snap && i < n; i++) {
		free(snap[i]->spec);
		free(snap[i]);
	}
	free(snap);
	free(loc);
	coreweave__sandbox__v1__list_sandboxes_request__free_unpacked(q, NULL);
}

/* ---- DeleteSandbox / PurgeSandboxes ------------------------------------------------ */

/* Stop with the grace period and destroy; the record stays TERMINATED. */
static int terminate(const char *id, int grace, char *msg, size_t ml)
{
	struct rec *r;
	char g[16];
	int rc;

	pthread_mutex_lock(&rlock);
	r = rec_find_locked(id);
	if (!r) {
		pthread_mutex_unlock(&rlock);
		return -ENOENT;
	}
	if (r->state == ST_TERMINATED) {
		pthread_mutex_unlock(&rlock);
		return 0;
	}
	if (r->busy) {
		pthread_mutex_unlock(&rlock);
		snprintf(msg, ml, "a delete of %s is in progress", id);
		return -EBUSY;
	}
	r->busy = true;
	pthread_mutex_unlock(&rlock);

	snprintf(g, sizeof(g), "%d", grace);
	rc = 0;
	if (grace > 0)
		rc = srv_sb_verb(id, API_VERB_STOP, g, msg, ml);
	if (rc == -ENOENT)
		rc = 0;
	if (!rc) {
		rc = srv_sb_verb(id, API_VERB_DESTROY, "", msg, ml);
		if (rc == -ENOENT)
			rc = 0;
	}
	pthread_mutex_lock(&rlock);
	r->busy = false;
	if (!rc) {
		r->state = ST_TERMINATED;
		snprintf(r->reason, sizeof(r->reason), "deleted by the user");
		r->end = time(NULL);
		rec_save(r);
	}
	pthread_mutex_unlock(&rlock);
	return rc;
}

static void h_delete(struct gs_stream *st, const uint8_t *m, size_t len)
{
	Coreweave__Sandbox__V1__DeleteSandboxRequest *q =
		coreweave__sandbox__v1__delete_sandbox_request__unpack(NULL,
								       len, m);
	Coreweave__Sandbox__V1__DeleteSandboxResponse resp =
		COREWEAVE__SANDBOX__V1__DELETE_SANDBOX_RESPONSE__INIT;
	struct sbview v;
	struct rec r;
	char msg[512], reason[256];
	uint8_t *buf;
	int rc, state, grace;

	if (!q) {
		fail(st, GS_INVALID_ARGUMENT, "CWSANDBOX_INVALID_REQUEST",
		     "cannot parse DeleteSandboxRequest");
		return;
	}
	if (!*q->sandbox_id) {
		fail(st, GS_INVALID_ARGUMENT, "CWSANDBOX_INVALID_REQUEST",
		     "sandbox_id is required");
		goto out;
	}
	/* the grace must end well inside the call's deadline */
	grace = q->grace_period_seconds < 0 ? 0 : q->grace_period_seconds;
	if (grace > 300)
		grace = 300;
	if (grace && gs_time_left(st) < grace + 2)
		grace = gs_time_left(st) > 3 ? (int)gs_time_left(st) - 2 : 0;
	rc = terminate(q->sandbox_id, grace, msg, sizeof(msg));
	if (rc == -ENOENT) {
		if (q->allow_missing) {
			len = coreweave__sandbox__v1__delete_sandbox_response__get_packed_size(&resp);
			buf = malloc(len + 1);
			if (buf) {
				coreweave__sandbox__v1__delete_sandbox_response__pack(&resp, buf);
				gs_reply(st, buf, len);
			}
			free(buf);
		} else {
			not_found(st, q->sandbox_id);
		}
		goto out;
	}
	if (rc) {
		fail(st, code_of(rc), NULL, "delete %s: %s", q->sandbox_id,
		     msg);
		goto out;
	}
	if (rec_get(q->sandbox_id, &r, &state, reason, sizeof(reason))) {
		not_found(st, q->sandbox_id);
		goto out;
	}
	view(&v, &r, state, reason);
	resp.sandbox = &v.sb;
	len = coreweave__sandbox__v1__delete_sandbox_response__get_packed_size(
		&resp);
	buf = malloc(len + 1);
	if (buf) {
		coreweave__sandbox__v1__delete_sandbox_response__pack(&resp,
								      buf);
		gs_reply(st, buf, len);
	}
	free(buf);
	view_free(&v);
	free(r.spec);
out:
	coreweave__sandbox__v1__delete_sandbox_request__free_unpacked(q, NULL);
}

static void h_purge(struct gs_stream *st, const uint8_t *m, size_t len)
{
	Coreweave__Sandbox__V1__PurgeSandboxesRequest *q =
		coreweave__sandbox__v1__purge_sandboxes_request__unpack(NULL,
									len,
									m);
	Coreweave__Sandbox__V1__PurgeSandboxesResponse resp =
		COREWEAVE__SANDBOX__V1__PURGE_SANDBOXES_RESPONSE__INIT;
	char ids[RECS_MAX > 256 ? 256 : RECS_MAX][32], msg[256];
	char *failed[256];
	size_t n = 0, i, nf = 0;
	uint8_t *buf;

	if (!q) {
		fail(st, GS_INVALID_ARGUMENT, "CWSANDBOX_INVALID_REQUEST",
		     "cannot parse PurgeSandboxesRequest");
		return;
	}
	if (!q->n_tags && !q->purge_all) {
		fail(st, GS_INVALID_ARGUMENT, "CWSANDBOX_INVALID_REQUEST",
		     "give tags or purge_all");
		goto out;
	}
	pthread_mutex_lock(&rlock);
	for (i = 0; i < nrecs && n < 256; i++)
		if (recs[i]->state != ST_TERMINATED &&
		    (q->purge_all || has_tags(recs[i], q->tags, q->n_tags)))
			snprintf(ids[n++], 32, "%s", recs[i]->id);
	pthread_mutex_unlock(&rlock);
	for (i = 0; i < n && !q->dry_run; i++)
		if (terminate(ids[i], 0, msg, sizeof(msg)))
			failed[nf++] = ids[i];
	resp.purge_count = (int)(n - nf);
	resp.n_failed_sandbox_ids = nf;
	resp.failed_sandbox_ids = failed;
	len = coreweave__sandbox__v1__purge_sandboxes_response__get_packed_size(
		&resp);
	buf = malloc(len + 1);
	if (buf) {
		coreweave__sandbox__v1__purge_sandboxes_response__pack(&resp,
								       buf);
		gs_reply(st, buf, len);
	}
	free(buf);
out:
	coreweave__sandbox__v1__purge_sandboxes_request__free_unpacked(q,
								       NULL);
}

/* ---- files ------------------------------------------------------------------ */

static bool path_ok(struct gs_stream *st, const char *path)
{
	if (path[0] != '/') {
		fail(st, GS_INVALID_ARGUMENT, "CWSANDBOX_INVALID_REQUEST",
		     "path must be absolute: %s", path);
		return false;
	}
	return true;
}

static void h_read(struct gs_stream *st, const uint8_t *m, size_t len)
{
	Coreweave__Sandbox__V1__ReadFileRequest *q =
		coreweave__sandbox__v1__read_file_request__unpack(NULL, len, m);
	Coreweave__Sandbox__V1__ReadFileResponse resp =
		COREWEAVE__SANDBOX__V1__READ_FILE_RESPONSE__INIT;
	struct api_file *f = NULL;
	struct stat sb;
	char msg[512];
	uint8_t *data = NULL, *buf = NULL;
	size_t got = 0;
	ssize_t n;
	int rc;

	if (!q) {
		fail(st, GS_INVALID_ARGUMENT, "CWSANDBOX_INVALID_REQUEST",
		     "cannot parse ReadFileRequest");
		return;
	}
	if (!need_running(st, q->sandbox_id) || !path_ok(st, q->path))
		goto out;
	rc = srv_stat(q->sandbox_id, q->path, &sb, msg, sizeof(msg));
	if (!rc && S_ISDIR(sb.st_mode))
		rc = -EISDIR;
	if (rc) {
		fail_file(st, rc, q->path, "read", msg);
		goto out;
	}
	if ((size_t)sb.st_size > FILE_MAX) {
		too_large(st, q->path, "read", sb.st_size);
		goto out;
	}
	rc = srv_open(q->sandbox_id, q->path, O_RDONLY, 0, &f, msg,
		      sizeof(msg));
	if (rc) {
		fail_file(st, rc, q->path, "read", msg);
		goto out;
	}
	data = malloc(FILE_MAX + 1);
	if (!data) {
		fail(st, GS_RESOURCE_EXHAUSTED, NULL, "out of memory");
		goto out;
	}
	/* read to EOF (the file may have grown since the stat) */
	while (got <= FILE_MAX) {
		size_t want = FILE_MAX + 1 - got;

		if (want > (1u << 20))
			want = 1u << 20;
		n = srv_pread(f, data + got, want, got, msg, sizeof(msg));
		if (n < 0) {
			fail_file(st, (int)n, q->path, "read", msg);
			goto out;
		}
		if (n == 0)
			break;
		got += n;
	}
	if (got > FILE_MAX) {
		too_large(st, q->path, "read", got);
		goto out;
	}
	resp.content.data = data;
	resp.content.len = got;
	len = coreweave__sandbox__v1__read_file_response__get_packed_size(
		&resp);
	buf = malloc(len + 1);
	if (!buf) {
		fail(st, GS_RESOURCE_EXHAUSTED, NULL, "out of memory");
		goto out;
	}
	coreweave__sandbox__v1__read_file_response__pack(&resp, buf);
	gs_reply(st, buf, len);
out:
	if (f)
		srv_close(f, msg, sizeof(msg));
	free(data);
	free(buf);
	if (q)
		coreweave__sandbox__v1__read_file_request__free_unpacked(q,
									 NULL);
}

/* mkdir -p of path's parent directories */
static void parents(const char *id, const char *path)
{
	char p[4096], msg[256];
	char *s;

	snprintf(p, sizeof(p), "%s", path);
	for (s = strchr(p + 1, '/'); s; s = strchr(s + 1, '/')) {
		*s = '\0';
		srv_mkdir(id, p, 0755, msg, sizeof(msg));
		*s = '/';
	}
}

static void h_write(struct gs_stream *st, const uint8_t *m, size_t len)
{
	Coreweave__Sandbox__V1__WriteFileRequest *q =
		coreweave__sandbox__v1__write_file_request__unpack(NULL, len,
								   m);
	struct api_file *f = NULL;
	char msg[512];
	size_t off = 0, n;
	int rc;

	if (!q) {
		fail(st, GS_INVALID_ARGUMENT, "CWSANDBOX_INVALID_REQUEST",
		     "cannot parse WriteFileRequest");
		return;
	}
	if (!need_running(st, q->sandbox_id) || !path_ok(st, q->path))
		goto out;
	if (q->content.len > FILE_MAX) {
		too_large(st, q->path, "write", q->content.len);
		goto out;
	}
	parents(q->sandbox_id, q->path);
	rc = srv_open(q->sandbox_id, q->path, O_WRONLY | O_CREAT | O_TRUNC,
		      0644, &f, msg, sizeof(msg));
	if (rc) {
		fail_file(st, rc, q->path, "write", msg);
		goto out;
	}
	while (off < q->content.len) {
		n = q->content.len - off;
		if (n > (1u << 20))
			n = 1u << 20;
		rc = srv_pwrite(f, q->content.data + off, n, off, msg,
				sizeof(msg));
		if (rc) {
			fail_file(st, rc, q->path, "write", msg);
			goto out;
		}
		off += n;
	}
	rc = srv_close(f, msg, sizeof(msg));
	f = NULL;
	if (rc)
		fail_file(st, rc, q->path, "write", msg);
	else
		gs_reply(st, "", 0);
out:
	if (f)
		srv_close(f, msg, sizeof(msg));
	coreweave__sandbox__v1__write_file_request__free_unpacked(q, NULL);
}

/* ---- unary Exec -------------------------------------------------------------------- */

struct uexec {
	pthread_mutex_t m;
	pthread_cond_t c;
	bool started, exited;
	int err, code;
	char emsg[512];
	struct srv_buf out[2];
	int64_t produced[2];
	bool trunc[2];
};

static void ux_started(void *ud, int err, const char *msg)
{
	struct uexec *u = ud;

	pthread_mutex_lock(&u->m);
	u->started = true;
	if (err == -ENOENT) {
		/* the program is missing: as a shell reports it */
		char m[600];
		int n = snprintf(m, sizeof(m), "%s\n",
				 msg ? msg : "command not found");

		srv_buf_add(&u->out[1], m, (size_t)n < sizeof(m) ?
					   (size_t)n : sizeof(m) - 1);
		u->produced[1] += n;
		u->code = 127;
		u->exited = true;
	} else if (err) {
		u->err = err;
		snprintf(u->emsg, sizeof(u->emsg), "%s",
			 msg ? msg : strerror(-err));
		u->exited = true;
	}
	pthread_cond_broadcast(&u->c);
	pthread_mutex_unlock(&u->m);
}

static int ux_output(void *ud, int stream, const void *buf, size_t len)
{
	struct uexec *u = ud;
	int i = stream == 2;
	size_t room;

	pthread_mutex_lock(&u->m);
	u->produced[i] += len;
	room = u->out[i].max - u->out[i].len;
	if (len > room) {
		u->trunc[i] = true;
		len = room;
	}
	if (len)
		srv_buf_add(&u->out[i], buf, len);
	pthread_mutex_unlock(&u->m);
	return 0;
}

static void ux_exited(void *ud, int code, int err, const char *msg)
{
	struct uexec *u = ud;

	pthread_mutex_lock(&u->m);
	u->exited = true;
	u->code = code;
	if (err) {
		u->err = err;
		snprintf(u->emsg, sizeof(u->emsg), "%s",
			 msg ? msg : strerror(-err));
	}
	pthread_cond_broadcast(&u->c);
	pthread_mutex_unlock(&u->m);
}

/* NULL-terminated "K=V" strings from a map; free with free(). */
static char **env_of(Coreweave__Sandbox__V1__ExecRequest__EnvEntry **e,
		     size_t n)
{
	char **v = calloc(n + 1, sizeof(*v));
	size_t i;

	for (i = 0; v && i < n; i++)
		if (asprintf(&v[i], "%s=%s", e[i]->key, e[i]->value) < 0)
			v[i] = NULL;
	return v;
}

static void strv_free(char **v)
{
	size_t i;

	for (i = 0; v && v[i]; i++)
		free(v[i]);
	free(v);
}

static char **argv_of(char **cmd, size_t n)
{
	char **v = calloc(n + 1, sizeof(*v));

	if (v)
		memcpy(v, cmd, n * sizeof(*v));
	return v;
}

static void h_exec(struct gs_stream *st, const uint8_t *m, size_t len)
{
	Coreweave__Sandbox__V1__ExecRequest *q =
		coreweave__sandbox__v1__exec_request__unpack(NULL, len, m);
	Coreweave__Sandbox__V1__ExecResponse resp =
		COREWEAVE__SANDBOX__V1__EXEC_RESPONSE__INIT;
	struct api_exec_cbs cbs = { ux_started, ux_output, ux_exited };
	struct api_exec_req req = { 0 };
	struct api_exec *x = NULL;
	struct uexec u;
	char **env = NULL, **argv = NULL;
	size_t cap;
	uint8_t *buf;
	bool killed = false, late = false;

	memset(&u, 0, sizeof(u));
	pthread_mutex_init(&u.m, NULL);
	pthread_cond_init(&u.c, NULL);
	if (!q) {
		fail(st, GS_INVALID_ARGUMENT, "CWSANDBOX_INVALID_REQUEST",
		     "cannot parse ExecRequest");
		goto out;
	}
	if (!q->n_command) {
		fail(st, GS_INVALID_ARGUMENT, "CWSANDBOX_INVALID_REQUEST",
		     "command is required");
		goto out;
	}
	if (!need_running(st, q->sandbox_id))
		goto out;
	cap = q->max_output_bytes > 0 ? (size_t)q->max_output_bytes
				      : EXEC_OUT_DEF;
	if (cap > GS_MSG_MAX / 2 - 1024)
		cap = GS_MSG_MAX / 2 - 1024;
	srv_buf_init(&u.out[0], cap);
	srv_buf_init(&u.out[1], cap);
	env = env_of(q->env, q->n_env);
	argv = argv_of(q->command, q->n_command);
	if (!env || !argv) {
		fail(st, GS_RESOURCE_EXHAUSTED, NULL, "out of memory");
		goto out;
	}
	req.argv = (const char *const *)argv;
	req.env = (const char *const *)env;
	api_exec_start(srv_g.be, q->sandbox_id, &req, &cbs, &u, &x);
	pthread_mutex_lock(&u.m);
	while (!u.exited) {
		struct timespec ts;
		double left = gs_time_left(st);
		bool done;

		pthread_mutex_lock(&gs_lock);
		done = gs_finished_locked(st);
		pthread_mutex_unlock(&gs_lock);
		if ((done || left <= 0) && !killed && x) {
			/* deadline or the caller left: end the command */
			pthread_mutex_unlock(&u.m);
			api_exec_signal(srv_g.be, x, SIGKILL);
			pthread_mutex_lock(&u.m);
			killed = late = true;
			continue;
		}
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 200 * 1000000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&u.c, &u.m, &ts);
	}
	pthread_mutex_unlock(&u.m);
	if (x)
		api_exec_free(srv_g.be, x);
	if (late) {
		fail(st, GS_DEADLINE_EXCEEDED, "CWSANDBOX_COMMAND_TIMEOUT",
		     "command did not finish before the deadline");
		goto out;
	}
	if (u.err) {
		fail(st, u.err == -ENOENT ? GS_NOT_FOUND : code_of(u.err),
		     NULL, "exec: %s", u.emsg);
		goto out;
	}
	resp.stdout.data = (uint8_t *)u.out[0].p;
	resp.stdout.len = u.out[0].len;
	resp.stderr.data = (uint8_t *)u.out[1].p;
	resp.stderr.len = u.out[1].len;
	resp.exit_code = u.code;
	resp.stdout_truncated = u.trunc[0];
	resp.stderr_truncated = u.trunc[1];
	resp.stdout_bytes_produced = u.produced[0];
	resp.stderr_bytes_produced = u.produced[1];
	len = coreweave__sandbox__v1__exec_response__get_packed_size(&resp);
	buf = malloc(len + 1);
	if (buf) {
		coreweave__sandbox__v1__exec_response__pack(&resp, buf);
		gs_reply(st, buf, len);
	}
	free(buf);
out:
	srv_buf_free(&u.out[0]);
	srv_buf_free(&u.out[1]);
	strv_free(env);
	free(argv);
	pthread_mutex_destroy(&u.m);
	pthread_cond_destroy(&u.c);
	if (q)
		coreweave__sandbox__v1__exec_request__free_unpacked(q, NULL);
}

/* ---- StreamExec ------------------------------------------------------------------ */

/* One StreamExec call.  Fields under gs_lock.  Freed (exec_free on a
 * thread of its own) once the command ended (or never started) and the
 * stream is gone. */
struct chunk {
	struct chunk *next;
	size_t len;
	uint8_t data[];
};

struct sx {
	struct sx *next;	/* all live calls (under gs_lock) */
	struct gs_stream *st;
	struct api_exec *x;
	Coreweave__Sandbox__V1__ExecStreamInit *init;
	bool init_seen, started, ended, gone, eof_in, stdin_closed;
	bool writing, out_paused, freeing;
	int inuse;		/* loop-thread calls on x in progress */
	struct chunk *qh, *qt;
};

static struct sx *sxs;		/* under gs_lock */

static void *sx_free_thread(void *p)
{
	struct sx *s = p;
	struct chunk *c;

	if (s->x)
		api_exec_free(srv_g.be, s->x);
	while ((c = s->qh)) {
		s->qh = c->next;
		free(c);
	}
	if (s->init)
		coreweave__sandbox__v1__exec_stream_init__free_unpacked(
			s->init, NULL);
	gs_release(s->st);
	free(s);
	return NULL;
}

/* gs_lock held: free s when both sides are done. */
static void sx_maybe_free_locked(struct sx *s)
{
	struct sx **pp;
	pthread_attr_t a;
	pthread_t th;

	if (!s->ended || !s->gone || s->freeing || s->writing || s->inuse)
		return;
	s->freeing = true;
	gs_set_svc(s->st, NULL);
	for (pp = &sxs; *pp; pp = &(*pp)->next)
		if (*pp == s) {
			*pp = s->next;
			break;
		}
	pthread_attr_init(&a);
	pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
	if (pthread_create(&th, &a, sx_free_thread, s))
		sx_free_thread(s);	/* last resort, inline */
	pthread_attr_destroy(&a);
}

static void send_resp_locked(struct sx *s,
			     Coreweave__Sandbox__V1__ExecStreamResponse *r,
			     long *queued)
{
	size_t n = coreweave__sandbox__v1__exec_stream_response__get_packed_size(r);
	uint8_t stackbuf[256], *buf = n <= sizeof(stackbuf) ? stackbuf
							   : malloc(n);
	long q = -ENOMEM;

	if (buf) {
		coreweave__sandbox__v1__exec_stream_response__pack(r, buf);
		q = gs_send_locked(s->st, buf, n);
		if (buf != stackbuf)
			free(buf);
	}
	if (queued)
		*queued = q;
}

static void sx_started(void *ud, int err, const char *msg)
{
	struct sx *s = ud;
	Coreweave__Sandbox__V1__ExecStreamResponse r =
		COREWEAVE__SANDBOX__V1__EXEC_STREAM_RESPONSE__INIT;
	Coreweave__Sandbox__V1__ExecStreamReady rd =
		COREWEAVE__SANDBOX__V1__EXEC_STREAM_READY__INIT;
	Ts t;

	pthread_mutex_lock(&gs_lock);
	if (err == -ENOENT) {
		/* the program is missing: ready, the sentence on stderr,
		 * exit 127, as a shell reports it */
		Coreweave__Sandbox__V1__ExecStreamOutput o =
			COREWEAVE__SANDBOX__V1__EXEC_STREAM_OUTPUT__INIT;
		Coreweave__Sandbox__V1__ExecStreamExit ex =
			COREWEAVE__SANDBOX__V1__EXEC_STREAM_EXIT__INIT;
		char m[600];
		int n = snprintf(m, sizeof(m), "%s\n",
				 msg ? msg : "command not found");

		ts_set(&t, time(NULL));
		rd.ready_time = &t;
		r.message_case =
			COREWEAVE__SANDBOX__V1__EXEC_STREAM_RESPONSE__MESSAGE_READY;
		r.ready = &rd;
		send_resp_locked(s, &r, NULL);
		o.stream =
		COREWEAVE__SANDBOX__V1__EXEC_STREAM_OUTPUT__STREAM__STREAM_STDERR;
		o.data.data = (uint8_t *)m;
		o.data.len = (size_t)n < sizeof(m) ? (size_t)n : sizeof(m) - 1;
		r.message_case =
			COREWEAVE__SANDBOX__V1__EXEC_STREAM_RESPONSE__MESSAGE_OUTPUT;
		r.output = &o;
		send_resp_locked(s, &r, NULL);
		ex.exit_code = 127;
		ex.completed_time = &t;
		r.message_case =
			COREWEAVE__SANDBOX__V1__EXEC_STREAM_RESPONSE__MESSAGE_EXIT;
		r.exit = &ex;
		send_resp_locked(s, &r, NULL);
		gs_finish_locked(s->st, GS_OK, NULL, NULL, NULL);
		s->ended = true;
		sx_maybe_free_locked(s);
	} else if (err) {
		char m[600];

		snprintf(m, sizeof(m), "exec: %s",
			 msg ? msg : strerror(-err));
		gs_finish_locked(s->st, err == -ENOENT ? GS_NOT_FOUND
						       : code_of(err),
				 m, NULL, NULL);
		s->ended = true;
		sx_maybe_free_locked(s);
	} else {
		s->started = true;
		ts_set(&t, time(NULL));
		rd.ready_time = &t;
		r.message_case =
			COREWEAVE__SANDBOX__V1__EXEC_STREAM_RESPONSE__MESSAGE_READY;
		r.ready = &rd;
		send_resp_locked(s, &r, NULL);
	}
	pthread_mutex_unlock(&gs_lock);
}

static int sx_output(void *ud, int stream, const void *buf, size_t len)
{
	struct sx *s = ud;
	Coreweave__Sandbox__V1__ExecStreamResponse r =
		COREWEAVE__SANDBOX__V1__EXEC_STREAM_RESPONSE__INIT;
	Coreweave__Sandbox__V1__ExecStreamOutput o =
		COREWEAVE__SANDBOX__V1__EXEC_STREAM_OUTPUT__INIT;
	long q;
	int pause = 0;

	o.stream = stream == 2 ?
		COREWEAVE__SANDBOX__V1__EXEC_STREAM_OUTPUT__STREAM__STREAM_STDERR :
		COREWEAVE__SANDBOX__V1__EXEC_STREAM_OUTPUT__STREAM__STREAM_STDOUT;
	o.data.data = (uint8_t *)buf;
	o.data.len = len;
	r.message_case =
		COREWEAVE__SANDBOX__V1__EXEC_STREAM_RESPONSE__MESSAGE_OUTPUT;
	r.output = &o;
	pthread_mutex_lock(&gs_lock);
	send_resp_locked(s, &r, &q);
	if (q > (long)OUT_HIGH) {
		/* the client reads slowly: push back on the command */
		s->out_paused = true;
		gs_pending_locked(s->st);
		pause = 1;
	}
	pthread_mutex_unlock(&gs_lock);
	return pause;
}

static void sx_exited(void *ud, int code, int err, const char *msg)
{
	struct sx *s = ud;
	Coreweave__Sandbox__V1__ExecStreamResponse r =
		COREWEAVE__SANDBOX__V1__EXEC_STREAM_RESPONSE__INIT;
	Coreweave__Sandbox__V1__ExecStreamExit ex =
		COREWEAVE__SANDBOX__V1__EXEC_STREAM_EXIT__INIT;
	Coreweave__Sandbox__V1__ExecStreamError er =
		COREWEAVE__SANDBOX__V1__EXEC_STREAM_ERROR__INIT;
	Ts t;

	pthread_mutex_lock(&gs_lock);
	if (err) {
		er.message = (char *)(msg ? msg : strerror(-err));
		er.code = "EXEC_LOST";
		r.message_case =
			COREWEAVE__SANDBOX__V1__EXEC_STREAM_RESPONSE__MESSAGE_ERROR;
		r.error = &er;
	} else {
		ex.exit_code = code;
		ts_set(&t, time(NULL));
		ex.completed_time = &t;
		r.message_case =
			COREWEAVE__SANDBOX__V1__EXEC_STREAM_RESPONSE__MESSAGE_EXIT;
		r.exit = &ex;
	}
	send_resp_locked(s, &r, NULL);
	gs_finish_locked(s->st, GS_OK, NULL, NULL, NULL);
	s->ended = true;
	sx_maybe_free_locked(s);
	pthread_mutex_unlock(&gs_lock);
}

static void *sx_start_thread(void *p)
{
	struct sx *s = p;
	struct api_exec_cbs cbs = { sx_started, sx_output, sx_exited };
	struct api_exec_req req = { 0 };
	Coreweave__Sandbox__V1__ExecStreamInit *in = s->init;
	char **env = calloc(in->n_env + 1, sizeof(*env)), **argv;
	size_t i;

	argv = argv_of(in->command, in->n_command);
	for (i = 0; env && i < in->n_env; i++)
		if (asprintf(&env[i], "%s=%s", in->env[i]->key,
			     in->env[i]->value) < 0)
			env[i] = NULL;
	if (!env || !argv) {
		gs_finish(s->st, GS_RESOURCE_EXHAUSTED, "out of memory", NULL,
			  NULL);
		goto fail;
	}
	if (!need_running(s->st, in->sandbox_id))
		goto fail;
	req.argv = (const char *const *)argv;
	req.env = (const char *const *)env;
	req.tty = in->tty;
	req.want_stdin = true;
	/* callbacks wait for gs_lock until s->x is set */
	pthread_mutex_lock(&gs_lock);
	if (s->gone) {
		pthread_mutex_unlock(&gs_lock);
		goto fail;
	}
	api_exec_start(srv_g.be, in->sandbox_id, &req, &cbs, s, &s->x);
	if (!s->x) {
		/* started(err) ran inline and set s->ended */
		pthread_mutex_unlock(&gs_lock);
		goto out;
	}
	pthread_mutex_unlock(&gs_lock);
	gs_wake();
	goto out;
fail:
	pthread_mutex_lock(&gs_lock);
	s->ended = true;
	sx_maybe_free_locked(s);
	pthread_mutex_unlock(&gs_lock);
out:
	strv_free(env);
	free(argv);
	return NULL;
}

static void sx_msg(struct gs_stream *st, const uint8_t *m, size_t len)
{
	Coreweave__Sandbox__V1__ExecStreamRequest *q =
		coreweave__sandbox__v1__exec_stream_request__unpack(NULL, len,
								    m);
	struct sx *s;
	struct chunk *c;
	pthread_attr_t a;
	pthread_t th;
	bool over;

	pthread_mutex_lock(&gs_lock);
	s = gs_svc(st);
	over = gs_finished_locked(st) || (s && s->gone);
	if (over || !q)
		gs_consume_locked(st, len);
	pthread_mutex_unlock(&gs_lock);
	if (over) {
		if (q)
			coreweave__sandbox__v1__exec_stream_request__free_unpacked(q, NULL);
		return;
	}
	if (!q) {
		fail(st, GS_INVALID_ARGUMENT, "CWSANDBOX_INVALID_REQUEST",
		     "cannot parse ExecStreamRequest");
		return;
	}
	if (!s) {
		if (q->message_case !=
		    COREWEAVE__SANDBOX__V1__EXEC_STREAM_REQUEST__MESSAGE_INIT) {
			fail(st, GS_INVALID_ARGUMENT,
			     "CWSANDBOX_INVALID_REQUEST",
			     "the first message must be init");
			goto out;
		}
		if (!q->init->n_command) {
			fail(st, GS_INVALID_ARGUMENT,
			     "CWSANDBOX_INVALID_REQUEST",
			     "init.command is required");
			goto out;
		}
		s = calloc(1, sizeof(*s));
		if (!s) {
			fail(st, GS_RESOURCE_EXHAUSTED, NULL, "out of memory");
			goto out;
		}
		s->st = st;
		s->init = q->init;
		q->init = NULL;	/* s owns it */
		q->message_case =
			COREWEAVE__SANDBOX__V1__EXEC_STREAM_REQUEST__MESSAGE__NOT_SET;
		gs_hold(st);
		pthread_mutex_lock(&gs_lock);
		s->next = sxs;
		sxs = s;
		gs_set_svc(st, s);
		gs_consume_locked(st, len);
		pthread_mutex_unlock(&gs_lock);
		pthread_attr_init(&a);
		pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
		if (pthread_create(&th, &a, sx_start_thread, s)) {
			gs_finish(st, GS_RESOURCE_EXHAUSTED, "no thread", NULL,
				  NULL);
			pthread_mutex_lock(&gs_lock);
			s->ended = true;
			pthread_mutex_unlock(&gs_lock);
		}
		pthread_attr_destroy(&a);
		goto out;
	}
	pthread_mutex_lock(&gs_lock);
	switch (q->message_case) {
	case COREWEAVE__SANDBOX__V1__EXEC_STREAM_REQUEST__MESSAGE_STDIN:
		if (s->eof_in || !q->stdin.len) {
			gs_consume_locked(st, len);
			break;
		}
		c = malloc(sizeof(*c) + q->stdin.len);
		if (!c) {
			gs_consume_locked(st, len);
			gs_finish_locked(st, GS_RESOURCE_EXHAUSTED,
					 "out of memory", NULL, NULL);
			break;
		}
		/* the window is given back when the command took the
		 * bytes: that is the flow control of stdin */
		c->next = NULL;
		c->len = q->stdin.len;
		memcpy(c->data, q->stdin.data, c->len);
		if (s->qt)
			s->qt->next = c;
		else
			s->qh = c;
		s->qt = c;
		/* the protobuf framing of this message (len - data) */
		gs_consume_locked(st, len - c->len);
		gs_wake();
		break;
	case COREWEAVE__SANDBOX__V1__EXEC_STREAM_REQUEST__MESSAGE_CLOSE:
		s->eof_in = true;
		gs_consume_locked(st, len);
		gs_wake();
		break;
	case COREWEAVE__SANDBOX__V1__EXEC_STREAM_REQUEST__MESSAGE_INIT:
		gs_consume_locked(st, len);
		gs_finish_locked(st, GS_INVALID_ARGUMENT,
				 "init may only be the first message",
				 "CWSANDBOX_INVALID_REQUEST", NULL);
		break;
	default:	/* resize (no TTY size to set here), unknown */
		gs_consume_locked(st, len);
		break;
	}
	pthread_mutex_unlock(&gs_lock);
out:
	coreweave__sandbox__v1__exec_stream_request__free_unpacked(q, NULL);
}

static void sx_eof(struct gs_stream *st)
{
	struct sx *s;

	pthread_mutex_lock(&gs_lock);
	s = gs_svc(st);
	if (!s && !gs_finished_locked(st))
		gs_finish_locked(st, GS_INVALID_ARGUMENT,
				 "StreamExec needs an init message",
				 "CWSANDBOX_INVALID_REQUEST", NULL);
	if (s)
		s->eof_in = true;
	pthread_mutex_unlock(&gs_lock);
	gs_wake();
}

static void sx_write_done(void *ud, int err, const char *msg)
{
	struct chunk *c;
	struct sx *s = ud;

	(void)msg;
	pthread_mutex_lock(&gs_lock);
	c = s->qh;
	if (c) {
		s->qh = c->next;
		if (!s->qh)
			s->qt = NULL;
		if (!s->gone)
			gs_consume_locked(s->st, c->len);
		free(c);
	}
	if (err) {
		/* the command closed its stdin: drop the rest quietly */
		s->eof_in = true;
		while ((c = s->qh)) {
			s->qh = c->next;
			if (!s->gone)
				gs_consume_locked(s->st, c->len);
			free(c);
		}
		s->qt = NULL;
	}
	s->writing = false;
	sx_maybe_free_locked(s);
	pthread_mutex_unlock(&gs_lock);
	gs_wake();
}

/* Loop thread, after every wake: feed stdin, one write in flight per
 * command; EOF once the queue is empty. */
static void sx_wake(void)
{
	struct sx *s, *todo[64];
	bool close_it[64];
	int n = 0, i;

	pthread_mutex_lock(&gs_lock);
	for (s = sxs; s && n < 64; s = s->next) {
		if (!s->started || !s->x || s->writing || s->ended ||
		    s->freeing || s->gone)
			continue;
		if (s->qh) {
			s->writing = true;
			close_it[n] = false;
			todo[n++] = s;
		} else if (s->eof_in && !s->stdin_closed) {
			s->stdin_closed = true;
			s->inuse++;
			close_it[n] = true;
			todo[n++] = s;
		}
	}
	pthread_mutex_unlock(&gs_lock);
	for (i = 0; i < n; i++) {
		s = todo[i];
		if (!close_it[i]) {
			api_exec_write(srv_g.be, s->x, s->qh->data,
				       s->qh->len, sx_write_done, s);
			continue;
		}
		api_exec_close_stdin(srv_g.be, s->x);
		pthread_mutex_lock(&gs_lock);
		s->inuse--;
		sx_maybe_free_locked(s);
		pthread_mutex_unlock(&gs_lock);
	}
}

/* Output drained below the low mark: let the command write again. */
static void sx_drain(struct gs_stream *st)
{
	struct sx *s;
	bool go = false;

	pthread_mutex_lock(&gs_lock);
	s = gs_svc(st);
	if (s && s->out_paused && s->x && !s->ended && !s->freeing) {
		s->out_paused = false;
		s->inuse++;
		go = true;
	}
	pthread_mutex_unlock(&gs_lock);
	if (!go)
		return;
	api_exec_resume(srv_g.be, s->x);
	pthread_mutex_lock(&gs_lock);
	s->inuse--;
	sx_maybe_free_locked(s);
	pthread_mutex_unlock(&gs_lock);
}

static void sx_gone(struct gs_stream *st)
{
	struct sx *s;
	struct api_exec *x = NULL;

	pthread_mutex_lock(&gs_lock);
	s = gs_svc(st);
	if (s && !s->gone) {
		if (!s->ended && s->x) {
			x = s->x;
			s->inuse++;
		}
		s->gone = true;
		sx_maybe_free_locked(s);
	}
	pthread_mutex_unlock(&gs_lock);
	/* the caller left: end the command (its exited callback frees) */
	if (x) {
		api_exec_signal(srv_g.be, x, SIGKILL);
		pthread_mutex_lock(&gs_lock);
		s->inuse--;
		sx_maybe_free_locked(s);
		pthread_mutex_unlock(&gs_lock);
	}
}

/* ---- file-system snapshots --------------------------------------------------------
 *
 * On the platform a snapshot is of one scratch volume and is restored into
 * a scratch volume of a new sandbox (ScratchVolume.restore_from_snapshot_id).
 * Here a sandbox has no volumes but its whole file system, so a snapshot is
 * the local runtime's snapshot of the sandbox (the template DATADIR/
 * templates/ID) and a CreateSandbox with any scratch volume restoring ID
 * starts from that template.  scratch_volume_name is recorded as
 * source_volume_name, not checked.  Snapshots are READY when
 * CreateFileSystemSnapshot answers (the local copy is synchronous).  The
 * record is DATADIR/server-cwsandbox-fss/ID.pb, a packed
 * FileSystemSnapshot.  Reasons (the reference names 17 CWSANDBOX_FSS_*
 * without listing them): CWSANDBOX_FSS_NOT_FOUND, CWSANDBOX_FSS_IN_USE,
 * CWSANDBOX_FSS_NOT_READY. */

typedef Coreweave__Sandbox__V1__FileSystemSnapshot Fss;

static pthread_mutex_t fss_lock = PTHREAD_MUTEX_INITIALIZER;

static bool fss_id_ok(const char *id)
{
	size_t n = strlen(id);

	return n > 4 && n < 40 && !strncmp(id, "fss-", 4) &&
	       strspn(id + 4, "0123456789abcdef") == n - 4;
}

static void fss_path(const char *id, char *out, size_t len)
{
	snprintf(out, len, "%s/server-cwsandbox-fss/%s.pb", srv_g.datadir, id);
}

/* The record of id, or NULL (free with ..._free_unpacked). */
static Fss *fss_load(const char *id)
{
	char path[700];
	uint8_t buf[8192];
	ssize_t n;
	int fd;

	if (!fss_id_ok(id))
		return NULL;
	fss_path(id, path, sizeof(path));
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	n = read(fd, buf, sizeof(buf));
	close(fd);
	if (n <= 0)
		return NULL;
	return coreweave__sandbox__v1__file_system_snapshot__unpack(NULL,
								    (size_t)n,
								    buf);
}

static int fss_save(const Fss *f)
{
	char path[700], tmp[720];
	uint8_t buf[8192];
	size_t n = coreweave__sandbox__v1__file_system_snapshot__get_packed_size(f);
	int fd, rc = 0;

	if (n > sizeof(buf))
		return -EINVAL;
	coreweave__sandbox__v1__file_system_snapshot__pack(f, buf);
	snprintf(path, sizeof(path), "%s/server-cwsandbox-fss", srv_g.datadir);
	if (mkdir(path, 0700) && errno != EEXIST)
		return -errno;
	fss_path(f->file_system_snapshot_id, path, sizeof(path));
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0 || write(fd, buf, n) != (ssize_t)n || fsync(fd))
		rc = -EIO;
	if (fd >= 0)
		close(fd);
	if (!rc && rename(tmp, path))
		rc = -errno;
	return rc;
}

static void fss_reply(struct gs_stream *st, const Fss *f)
{
	uint8_t buf[8192];
	size_t n = coreweave__sandbox__v1__file_system_snapshot__get_packed_size(f);

	if (n > sizeof(buf)) {
		fail(st, GS_INTERNAL, NULL, "snapshot record too large");
		return;
	}
	coreweave__sandbox__v1__file_system_snapshot__pack(f, buf);
	gs_reply(st, buf, n);
}

static bool fss_not_found(struct gs_stream *st, const char *id)
{
	const char *meta[] = { "file_system_snapshot_id", id, NULL };
	char m[200];

	snprintf(m, sizeof(m), "file system snapshot %.100s not found", id);
	gs_finish(st, GS_NOT_FOUND, m, "CWSANDBOX_FSS_NOT_FOUND", meta);
	return false;
}

/* CreateSandbox: the snapshot a scratch volume restores (at most one,
 * READY), copied to out ("" none); false when answered with an error. */
static bool fss_restore_of(struct gs_stream *st, const Spec *spec,
			   char *out, size_t len)
{
	size_t i;

	*out = '\0';
	for (i = 0; i < spec->n_volumes; i++) {
		const Coreweave__Sandbox__V1__SandboxVolume *v =
			spec->volumes[i];
		const char *id;
		Fss *f;
		int state;

		if (v->source_case !=
			    COREWEAVE__SANDBOX__V1__SANDBOX_VOLUME__SOURCE_SCRATCH ||
		    !v->scratch || !*v->scratch->restore_from_snapshot_id)
			continue;
		id = v->scratch->restore_from_snapshot_id;
		if (*out && strcmp(out, id)) {
			fail(st, GS_INVALID_ARGUMENT,
			     "CWSANDBOX_INVALID_REQUEST", "this server "
			     "restores one snapshot per sandbox");
			return false;
		}
		f = fss_load(id);
		if (!f)
			return fss_not_found(st, id);
		state = f->state;
		coreweave__sandbox__v1__file_system_snapshot__free_unpacked(f,
									    NULL);
		if (state != COREWEAVE__SANDBOX__V1__SNAPSHOT_STATE__SNAPSHOT_STATE_READY) {
			fail(st, GS_FAILED_PRECONDITION,
			     "CWSANDBOX_FSS_NOT_READY",
			     "file system snapshot %.100s is not ready", id);
			return false;
		}
		snprintf(out, len, "%s", id);
	}
	return true;
}

static __thread long long fss_du;

static int fss_du_cb(const char *p, const struct stat *sb, int fl,
		     struct FTW *ftw)
{
	(void)p;
	(void)ftw;
	if (fl == FTW_F)
		fss_du += sb->st_size;
	return 0;
}

static void h_fss_create(struct gs_stream *st, const uint8_t *m, size_t len)
{
	Coreweave__Sandbox__V1__CreateFileSystemSnapshotRequest *q =
		coreweave__sandbox__v1__create_file_system_snapshot_request__unpack(
			NULL, len, m);
	Fss f = COREWEAVE__SANDBOX__V1__FILE_SYSTEM_SNAPSHOT__INIT, *old;
	Ts ct, now;
	char id[40], msg[512], tpl[700];
	struct dirent *de;
	DIR *d;
	int rc;

	if (!q) {
		fail(st, GS_INVALID_ARGUMENT, "CWSANDBOX_INVALID_REQUEST",
		     "cannot parse CreateFileSystemSnapshotRequest");
		return;
	}
	if (strlen(q->request_id) > 128) {
		fail(st, GS_INVALID_ARGUMENT, "CWSANDBOX_INVALID_REQUEST",
		     "request_id is longer than 128 bytes");
		goto out;
	}
	if (!need_running(st, q->sandbox_id))
		goto out;
	pthread_mutex_lock(&fss_lock);
	/* idempotency: the same request_id answers the first snapshot */
	snprintf(tpl, sizeof(tpl), "%s/server-cwsandbox-fss", srv_g.datadir);
	d = *q->request_id ? opendir(tpl) : NULL;
	while (d && (de = readdir(d))) {
		char *dot = strstr(de->d_name, ".pb");

		if (!dot || dot[3])
			continue;
		snprintf(id, sizeof(id), "%.*s", (int)(dot - de->d_name),
			 de->d_name);
		old = fss_load(id);
		if (old && !strcmp(old->request_id, q->request_id)) {
			closedir(d);
			pthread_mutex_unlock(&fss_lock);
			fss_reply(st, old);
			coreweave__sandbox__v1__file_system_snapshot__free_unpacked(old, NULL);
			goto out;
		}
		if (old)
			coreweave__sandbox__v1__file_system_snapshot__free_unpacked(old, NULL);
	}
	if (d)
		closedir(d);
	if (new_id(id, sizeof(id))) {
		pthread_mutex_unlock(&fss_lock);
		fail(st, GS_INTERNAL, NULL, "no random bytes");
		goto out;
	}
	memcpy(id, "fss", 3);	/* "sb-" + 20 hex -> "fss-" + 20 hex */
	memmove(id + 4, id + 3, strlen(id + 3) + 1);
	id[3] = '-';
	rc = srv_sb_verb(q->sandbox_id, API_VERB_SNAPSHOT, id, msg,
			 sizeof(msg));
	if (rc) {
		pthread_mutex_unlock(&fss_lock);
		fail(st, code_of(rc), "CWSANDBOX_FSS_FAILED",
		     "snapshot of %s: %s", q->sandbox_id, msg);
		goto out;
	}
	snprintf(tpl, sizeof(tpl), "%s/templates/%s", srv_g.datadir, id);
	fss_du = 0;
	nftw(tpl, fss_du_cb, 16, FTW_PHYS);
	ts_set(&ct, time(NULL));
	now = ct;
	f.file_system_snapshot_id = id;
	f.state = COREWEAVE__SANDBOX__V1__SNAPSHOT_STATE__SNAPSHOT_STATE_READY;
	f.size_bytes = fss_du;
	f.source_sandbox_id = q->sandbox_id;
	f.trigger = COREWEAVE__SANDBOX__V1__SNAPSHOT_TRIGGER__SNAPSHOT_TRIGGER_MANUAL;
	f.create_time = &ct;
	f.complete_time = &now;
	f.updated_at = &now;
	f.source_volume_name = q->scratch_volume_name;
	f.request_id = q->request_id;
	rc = fss_save(&f);
	pthread_mutex_unlock(&fss_lock);
	if (rc)
		fail(st, GS_INTERNAL, NULL, "cannot store the snapshot record");
	else
		fss_reply(st, &f);
out:
	coreweave__sandbox__v1__create_file_system_snapshot_request__free_unpacked(
		q, NULL);
}

static void h_fss_get(struct gs_stream *st, const uint8_t *m, size_t len)
{
	Coreweave__Sandbox__V1__GetFileSystemSnapshotRequest *q =
		coreweave__sandbox__v1__get_file_system_snapshot_request__unpack(
			NULL, len, m);
	Fss *f;

	if (!q) {
		fail(st, GS_INVALID_ARGUMENT, "CWSANDBOX_INVALID_REQUEST",
		     "cannot parse GetFileSystemSnapshotRequest");
		return;
	}
	if (!*q->file_system_snapshot_id) {
		fail(st, GS_INVALID_ARGUMENT, "CWSANDBOX_INVALID_REQUEST",
		     "file_system_snapshot_id is required");
	} else if (!(f = fss_load(q->file_system_snapshot_id))) {
		fss_not_found(st, q->file_system_snapshot_id);
	} else {
		fss_reply(st, f);
		coreweave__sandbox__v1__file_system_snapshot__free_unpacked(f,
									    NULL);
	}
	coreweave__sandbox__v1__get_file_system_snapshot_request__free_unpacked(
		q, NULL);
}

static int fss_cmp(const void *a, const void *b)
{
	const Fss *x = *(Fss *const *)a, *y = *(Fss *const *)b;

	return strcmp(x->file_system_snapshot_id, y->file_system_snapshot_id);
}

/* Paged by ID order; the token is the last ID of the page before. */
static void h_fss_list(struct gs_stream *st, const uint8_t *m, size_t len)
{
	Coreweave__Sandbox__V1__ListFileSystemSnapshotsRequest *q =
		coreweave__sandbox__v1__list_file_system_snapshots_request__unpack(
			NULL, len, m);
	Coreweave__Sandbox__V1__ListFileSystemSnapshotsResponse resp =
		COREWEAVE__SANDBOX__V1__LIST_FILE_SYSTEM_SNAPSHOTS_RESPONSE__INIT;
	Fss **all = NULL, **nall;
	size_t n = 0, cap = 0, i, first = 0, size, pn;
	char dir[700], id[40], tok[40] = "";
	struct dirent *de;
	uint8_t *buf;
	DIR *d;

	if (!q) {
		fail(st, GS_INVALID_ARGUMENT, "CWSANDBOX_INVALID_REQUEST",
		     "cannot parse ListFileSystemSnapshotsRequest");
		return;
	}
	if (q->page_size < 0) {
		fail(st, GS_INVALID_ARGUMENT, "CWSANDBOX_INVALID_REQUEST",
		     "page_size must not be negative");
		goto out;
	}
	snprintf(dir, sizeof(dir), "%s/server-cwsandbox-fss", srv_g.datadir);
	d = opendir(dir);
	while (d && (de = readdir(d))) {
		char *dot = strstr(de->d_name, ".pb");
		Fss *f;

		if (!dot || dot[3])
			continue;
		snprintf(id, sizeof(id), "%.*s", (int)(dot - de->d_name),
			 de->d_name);
		f = fss_load(id);
		if (!f)
			continue;
		if (*q->source_sandbox_id &&
		    strcmp(f->source_sandbox_id, q->source_sandbox_id)) {
			coreweave__sandbox__v1__file_system_snapshot__free_unpacked(f, NULL);
			continue;
		}
		if (n == cap) {
			cap = cap ? 2 * cap : 16;
			nall = realloc(all, cap * sizeof(*all));
			if (!nall) {
				coreweave__sandbox__v1__file_system_snapshot__free_unpacked(f, NULL);
				break;
			}
			all = nall;
		}
		all[n++] = f;
	}
	if (d)
		closedir(d);
	if (n)
		qsort(all, n, sizeof(*all), fss_cmp);
	if (*q->page_token)
		while (first < n &&
		       strcmp(all[first]->file_system_snapshot_id,
			      q->page_token) <= 0)
			first++;
	pn = q->page_size > 0 && (size_t)q->page_size < n - first ?
		     (size_t)q->page_size : n - first;
	if (first + pn < n && pn)
		snprintf(tok, sizeof(tok), "%s",
			 all[first + pn - 1]->file_system_snapshot_id);
	resp.n_file_system_snapshots = pn;
	resp.file_system_snapshots = all ? all + first : NULL;
	resp.next_page_token = tok;
	size = coreweave__sandbox__v1__list_file_system_snapshots_response__get_packed_size(
		&resp);
	buf = malloc(size ? size : 1);
	if (buf) {
		coreweave__sandbox__v1__list_file_system_snapshots_response__pack(
			&resp, buf);
		gs_reply(st, buf, size);
		free(buf);
	} else {
		fail(st, GS_RESOURCE_EXHAUSTED, NULL, "out of memory");
	}
	for (i = 0; i < n; i++)
		coreweave__sandbox__v1__file_system_snapshot__free_unpacked(all[i],
									    NULL);
	free(all);
out:
	coreweave__sandbox__v1__list_file_system_snapshots_request__free_unpacked(
		q, NULL);
}

static int fss_rm_cb(const char *p, const struct stat *sb, int fl,
		     struct FTW *ftw)
{
	(void)sb;
	(void)ftw;
	return (fl == FTW_DP ? rmdir(p) : unlink(p)) ? -1 : 0;
}

/* Answers the record as it was, now DELETING (the platform's shape). */
static void h_fss_delete(struct gs_stream *st, const uint8_t *m, size_t len)
{
	Coreweave__Sandbox__V1__DeleteFileSystemSnapshotRequest *q =
		coreweave__sandbox__v1__delete_file_system_snapshot_request__unpack(
			NULL, len, m);
	struct api_sandbox *sbs = NULL;
	size_t nsb = 0, i = 0;
	char msg[256], path[700];
	Fss *f = NULL;

	if (!q) {
		fail(st, GS_INVALID_ARGUMENT, "CWSANDBOX_INVALID_REQUEST",
		     "cannot parse DeleteFileSystemSnapshotRequest");
		return;
	}
	pthread_mutex_lock(&fss_lock);
	f = fss_load(q->file_system_snapshot_id);
	if (!f) {
		Fss none = COREWEAVE__SANDBOX__V1__FILE_SYSTEM_SNAPSHOT__INIT;

		pthread_mutex_unlock(&fss_lock);
		if (!q->allow_missing) {
			fss_not_found(st, q->file_system_snapshot_id);
		} else {
			none.file_system_snapshot_id =
				q->file_system_snapshot_id;
			fss_reply(st, &none);
		}
		goto out;
	}
	/* the local runtime stacks a template under the sandboxes made
	 * from it: not while one of them lives */
	if (!srv_sb_list(&sbs, &nsb, msg, sizeof(msg)))
		for (i = 0; i < nsb; i++)
			if (!strcmp(sbs[i].template,
				    f->file_system_snapshot_id) &&
			    sbs[i].state != API_ST_STOPPED &&
			    sbs[i].state != API_ST_DESTROYED &&
			    sbs[i].state != API_ST_FAILED)
				break;
	if (sbs && i < nsb) {
		pthread_mutex_unlock(&fss_lock);
		fail(st, GS_FAILED_PRECONDITION, "CWSANDBOX_FSS_IN_USE",
		     "file system snapshot %s is in use by sandbox %s",
		     f->file_system_snapshot_id, sbs[i].id);
		goto out;
	}
	snprintf(path, sizeof(path), "%s/templates/%s", srv_g.datadir,
		 f->file_system_snapshot_id);
	if (!access(path, F_OK) &&
	    nftw(path, fss_rm_cb, 16, FTW_DEPTH | FTW_PHYS)) {
		pthread_mutex_unlock(&fss_lock);
		fail(st, GS_INTERNAL, NULL, "could not remove the snapshot");
		goto out;
	}
	fss_path(f->file_system_snapshot_id, path, sizeof(path));
	unlink(path);
	pthread_mutex_unlock(&fss_lock);
	f->state = COREWEAVE__SANDBOX__V1__SNAPSHOT_STATE__SNAPSHOT_STATE_DELETING;
	fss_reply(st, f);
out:
	free(sbs);
	if (f)
		coreweave__sandbox__v1__file_system_snapshot__free_unpacked(f,
									    NULL);
	coreweave__sandbox__v1__delete_file_system_snapshot_request__free_unpacked(
		q, NULL);
}

/* ---- the table ---------------------------------------------------------------- */

const struct gs_method gs_methods[] = {
	{ "CreateSandbox", h_create, NULL, NULL, NULL },
	{ "GetSandbox", h_get, NULL, NULL, NULL },
	{ "ListSandboxes", h_list, NULL, NULL, NULL },
	{ "DeleteSandbox", h_delete, NULL, NULL, NULL },
	{ "PurgeSandboxes", h_purge, NULL, NULL, NULL },
	{ "Exec", h_exec, NULL, NULL, NULL },
	{ "StreamExec", NULL, sx_msg, sx_eof, sx_gone },
	{ "ReadFile", h_read, NULL, NULL, NULL },
	{ "WriteFile", h_write, NULL, NULL, NULL },
	/* not served: UNIMPLEMENTED (ConnectSandbox: clients then fall
	 * back to the gateway, i.e. to us) */
	{ "CreateSandboxFromTemplate", NULL, NULL, NULL, NULL },
	{ "StreamLogs", NULL, NULL, NULL, NULL },
	{ "CreateFileSystemSnapshot", h_fss_create, NULL, NULL, NULL },
	{ "GetFileSystemSnapshot", h_fss_get, NULL, NULL, NULL },
	{ "ListFileSystemSnapshots", h_fss_list, NULL, NULL, NULL },
	{ "DeleteFileSystemSnapshot", h_fss_delete, NULL, NULL, NULL },
	{ "ConnectSandbox", NULL, NULL, NULL, NULL },
	{ NULL, NULL, NULL, NULL, NULL }
};

int gs_svc_init(void)
{
	gs_on_wake = sx_wake;
	gs_on_drain = sx_drain;
	return recs_load();
}

void gs_svc_free(void)
{
	size_t i;

	pthread_mutex_lock(&rlock);
	for (i = 0; i < nrecs; i++)
		rec_free(recs[i]);
	nrecs = 0;
	pthread_mutex_unlock(&rlock);
}
