/* snap.c - CW file-system snapshots as the mount's snapshots and templates.
 *
 * `snapshot NAME` is CreateFileSystemSnapshot of the sandbox (no scratch
 * volume named: the platform's default volume; sbxfs-server snapshots the
 * whole file system), polled with GetFileSystemSnapshot until READY.  A
 * snapshot has an ID but no name or tags on CW, so the NAME goes into the
 * request_id, "sbxfs:NAME:RANDOM" (the platform returns it in every
 * record): another mount or a remount finds the snapshot by NAME through
 * ListFileSystemSnapshots.  A snapshot made elsewhere is known by its ID.
 *
 * `new NAME template=SNAP` restores SNAP (a NAME or an ID) into a scratch
 * volume of the new sandbox (ScratchVolume.restore_from_snapshot_id).
 * MOUNT/templates/ lists the snapshots (ListFileSystemSnapshots, paged)
 * and rmdir there is DeleteFileSystemSnapshot.
 */
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api/cwsandbox/cw_int.h"
#include "sandbox.pb-c.h"

#define SNAP_PREFIX "sbxfs:"
#define FSS_PAGES 100

typedef Coreweave__Sandbox__V1__FileSystemSnapshot Fss;

#define READY COREWEAVE__SANDBOX__V1__SNAPSHOT_STATE__SNAPSHOT_STATE_READY
#define FAILED COREWEAVE__SANDBOX__V1__SNAPSHOT_STATE__SNAPSHOT_STATE_FAILED
#define DELETING \
	COREWEAVE__SANDBOX__V1__SNAPSHOT_STATE__SNAPSHOT_STATE_DELETING

/* NAME from the request_id this mount gave the snapshot, else its ID. */
static void fss_name(const Fss *f, char *out, size_t len)
{
	const char *r = f->request_id, *e;

	if (r && !strncmp(r, SNAP_PREFIX, strlen(SNAP_PREFIX))) {
		r += strlen(SNAP_PREFIX);
		e = strrchr(r, ':');
		if (e && e > r) {
			snprintf(out, len, "%.*s", (int)(e - r), r);
			return;
		}
	}
	snprintf(out, len, "%s", f->file_system_snapshot_id);
}

static bool snap_name_ok(const char *s)
{
	size_t n = strlen(s);

	return n && n < 64 && s[0] != '.' && s[0] != '-' &&
	       strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
			 "0123456789._-") == n;
}

/* ---- one operation: list (all pages), then what it is for -------------- */

enum snap_kind { K_LIST, K_DELETE, K_CREATE, K_RESOLVE };

struct snap_op {
	struct cw_work wk;
	struct cw_timer tm;
	struct cw *w;
	enum snap_kind kind;
	api_tpl_fn tcb;
	api_done_fn dcb;
	void (*rcb)(struct cw *w, void *ud, int err, const char *msg,
		    const char *id);
	void *ud;
	char name[API_ID_MAX];	/* snapshot NAME (or ID) */
	char sb[API_ID_MAX];	/* create: the sandbox */
	char id[API_ID_MAX];	/* the snapshot's ID once known */
	int64_t deadline;
	int64_t delay;
	Fss **v;
	size_t n, cap;
	char token[256];
	int pages;
};

static void op_free(struct snap_op *op)
{
	size_t i;

	for (i = 0; i < op->n; i++)
		coreweave__sandbox__v1__file_system_snapshot__free_unpacked(
			op->v[i], NULL);
	free(op->v);
	free(op);
}

static void op_fail(struct snap_op *op, int err, const char *msg)
{
	switch (op->kind) {
	case K_LIST:
		op->tcb(op->ud, err, msg, NULL, 0);
		break;
	case K_RESOLVE:
		op->rcb(op->w, op->ud, err, msg, NULL);
		break;
	default:
		op->dcb(op->ud, err, msg);
	}
	op_free(op);
}

/* The listed snapshot called name (or with that ID), not being deleted;
 * the newest when several carry the name. */
static const Fss *find(const struct snap_op *op, const char *name)
{
	const Fss *best = NULL;
	char nm[API_ID_MAX];
	size_t i;

	for (i = 0; i < op->n; i++) {
		const Fss *f = op->v[i];

		if (f->state == DELETING)
			continue;
		fss_name(f, nm, sizeof(nm));
		if (strcmp(nm, name) &&
		    strcmp(f->file_system_snapshot_id, name))
			continue;
		if (!best || (f->create_time && best->create_time &&
			      f->create_time->seconds >
				      best->create_time->seconds))
			best = f;
	}
	return best;
}

static void listed(struct cw *w, struct snap_op *op);
static void list_send(struct cw *w, struct snap_op *op);

static void list_got(struct cw *w, void *ud, const struct cw_status *st,
		     const uint8_t *resp, size_t len)
{
	struct snap_op *op = ud;
	Coreweave__Sandbox__V1__ListFileSystemSnapshotsResponse *r;
	size_t i;

	if (st->err) {
		op_fail(op, st->err, st->msg);
		return;
	}
	r = coreweave__sandbox__v1__list_file_system_snapshots_response__unpack(
		NULL, len, resp);
	if (!r) {
		op_fail(op, -EIO, "ListFileSystemSnapshots: malformed answer");
		return;
	}
	for (i = 0; i < r->n_file_system_snapshots; i++) {
		if (op->n == op->cap) {
			size_t cap = op->cap ? 2 * op->cap : 16;
			Fss **a = realloc(op->v, cap * sizeof(*a));

			if (!a)
				break;
			op->v = a;
			op->cap = cap;
		}
		/* keep the message: taken out of the response below */
		op->v[op->n++] = r->file_system_snapshots[i];
	}
	/* what was taken leaves r (the rest, after an out of memory, is
	 * freed with it) */
	if (i && i < r->n_file_system_snapshots)
		memmove(r->file_system_snapshots,
			r->file_system_snapshots + i,
			(r->n_file_system_snapshots - i) *
				sizeof(*r->file_system_snapshots));
	r->n_file_system_snapshots -= i;
	if (*r->next_page_token) {
		if (!strcmp(r->next_page_token, op->token) ||
		    ++op->pages >= FSS_PAGES) {
			coreweave__sandbox__v1__list_file_system_snapshots_response__free_unpacked(r, NULL);
			op_fail(op, -EIO, "ListFileSystemSnapshots: the "
				"platform repeats its page token");
			return;
		}
		snprintf(op->token, sizeof(op->token), "%s",
			 r->next_page_token);
		coreweave__sandbox__v1__list_file_system_snapshots_response__free_unpacked(r, NULL);
		list_send(w, op);
		return;
	}
	coreweave__sandbox__v1__list_file_system_snapshots_response__free_unpacked(
		r, NULL);
	listed(w, op);
}

static void list_send(struct cw *w, struct snap_op *op)
{
	Coreweave__Sandbox__V1__ListFileSystemSnapshotsRequest q =
		COREWEAVE__SANDBOX__V1__LIST_FILE_SYSTEM_SNAPSHOTS_REQUEST__INIT;
	int err;

	q.page_size = 100;
	q.page_token = op->token;
	err = cw_unary(w, "ListFileSystemSnapshots", &q.base, w->timeout_ms,
		       list_got, op);
	if (err)
		op_fail(op, err, "ListFileSystemSnapshots: cannot send");
}

static void op_run(struct cw *w, struct cw_work *wk)
{
	struct snap_op *op = (struct snap_op *)wk;

	op->deadline = w->loop.op_deadline ? w->loop.op_deadline
				      : cw_now_ms() + w->timeout_ms;
	if (op->kind == K_CREATE && cw_is_gone(w, op->sb)) {
		op_fail(op, -ENOENT, "no such sandbox (destroyed)");
		return;
	}
	list_send(w, op);
}

static struct snap_op *op_new(struct api_backend *be, enum snap_kind kind,
			      const char *name)
{
	struct snap_op *op = calloc(1, sizeof(*op));

	if (!op)
		return NULL;
	op->w = cw_of(be);
	op->kind = kind;
	snprintf(op->name, sizeof(op->name), "%s", name ? name : "");
	return op;
}

/* ---- create: CreateFileSystemSnapshot, then GetFileSystemSnapshot ------- */

static void poll_send(struct cw *w, struct snap_op *op);

static void snap_state(struct cw *w, struct snap_op *op, const Fss *f)
{
	char m[400];

	if (f->state == READY) {
		op->dcb(op->ud, 0, NULL);
		op_free(op);
	} else if (f->state == FAILED || f->state == DELETING) {
		snprintf(m, sizeof(m), "snapshot %s (%s) failed: %s", op->name,
			 op->id, *f->state_reason ? f->state_reason
						  : "no reason given");
		op_fail(op, -EIO, m);
	} else if (cw_now_ms() >= op->deadline) {
		snprintf(m, sizeof(m), "snapshot %s (%s) not ready within the "
			 "request timeout; it may still complete", op->name,
			 op->id);
		op_fail(op, -ETIMEDOUT, m);
	} else {
		poll_send(w, op);
	}
}

static void fss_got(struct cw *w, void *ud, const struct cw_status *st,
		    const uint8_t *resp, size_t len)
{
	struct snap_op *op = ud;
	Fss *f;

	if (st->err) {
		op_fail(op, st->err, st->msg);
		return;
	}
	f = coreweave__sandbox__v1__file_system_snapshot__unpack(NULL, len,
								 resp);
	if (!f || !*f->file_system_snapshot_id) {
		if (f)
			coreweave__sandbox__v1__file_system_snapshot__free_unpacked(f, NULL);
		op_fail(op, -EIO, "snapshot: malformed answer");
		return;
	}
	snprintf(op->id, sizeof(op->id), "%s", f->file_system_snapshot_id);
	snap_state(w, op, f);
	coreweave__sandbox__v1__file_system_snapshot__free_unpacked(f, NULL);
}

static void poll_tick(struct cw *w, struct cw_timer *t)
{
	struct snap_op *op = (struct snap_op *)((char *)t -
					       offsetof(struct snap_op, tm));
	Coreweave__Sandbox__V1__GetFileSystemSnapshotRequest q =
		COREWEAVE__SANDBOX__V1__GET_FILE_SYSTEM_SNAPSHOT_REQUEST__INIT;
	int err;

	w->loop.op_deadline = op->deadline;
	q.file_system_snapshot_id = op->id;
	err = cw_unary(w, "GetFileSystemSnapshot", &q.base, w->timeout_ms,
		       fss_got, op);
	if (err)
		op_fail(op, err, "GetFileSystemSnapshot: cannot send");
}

static void poll_send(struct cw *w, struct snap_op *op)
{
	op->delay = op->delay ? (op->delay * 3 / 2 > 2000 ? 2000
							  : op->delay * 3 / 2)
			      : 200;
	cw_timer_arm(w, &op->tm, op->delay, poll_tick);
}

static void create_send(struct cw *w, struct snap_op *op)
{
	Coreweave__Sandbox__V1__CreateFileSystemSnapshotRequest q =
		COREWEAVE__SANDBOX__V1__CREATE_FILE_SYSTEM_SNAPSHOT_REQUEST__INIT;
	char rid[API_ID_MAX + 32];
	unsigned char v[4] = { 0 };
	int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC), err;

	if (fd >= 0) {
		if (read(fd, v, sizeof(v)) != sizeof(v))
			v[0] = (unsigned char)cw_now_ms();
		close(fd);
	}
	/* NAME rides in the idempotency token (at most 128 bytes) */
	snprintf(rid, sizeof(rid), SNAP_PREFIX "%s:%02x%02x%02x%02x",
		 op->name, v[0], v[1], v[2], v[3]);
	q.sandbox_id = op->sb;
	q.request_id = rid;
	err = cw_unary(w, "CreateFileSystemSnapshot", &q.base, w->timeout_ms,
		       fss_got, op);
	if (err)
		op_fail(op, err, "CreateFileSystemSnapshot: cannot send");
}

/* ---- delete -------------------------------------------------------------- */

static void deleted(struct cw *w, void *ud, const struct cw_status *st,
		    const uint8_t *resp, size_t len)
{
	struct snap_op *op = ud;

	(void)w;
	(void)resp;
	(void)len;
	if (st->err) {
		op_fail(op, st->err, st->msg);
		return;
	}
	op->dcb(op->ud, 0, NULL);
	op_free(op);
}

/* ---- after the list ------------------------------------------------------ */

static void listed(struct cw *w, struct snap_op *op)
{
	const Fss *f;
	char m[400];
	int err;

	switch (op->kind) {
	case K_LIST: {
		struct api_template *t = calloc(op->n ? op->n : 1, sizeof(*t));
		char **js = calloc(op->n ? op->n : 1, sizeof(*js));
		size_t i, k = 0;

		if (!t || !js) {
			free(t);
			free(js);
			op_fail(op, -ENOMEM, "out of memory");
			return;
		}
		for (i = 0; i < op->n; i++) {
			f = op->v[i];
			if (f->state == DELETING)
				continue;
			fss_name(f, t[k].name, sizeof(t[k].name));
			snprintf(t[k].kind, sizeof(t[k].kind), "snapshot");
			t[k].size = f->size_bytes;
			t[k].created = f->create_time ?
				(time_t)f->create_time->seconds : 0;
			js[k] = cw_msg_json(&f->base);
			t[k].info_json = js[k];
			k++;
		}
		op->tcb(op->ud, 0, NULL, t, k);
		for (i = 0; i < k; i++)
			free(js[i]);
		free(js);
		free(t);
		op_free(op);
		return;
	}
	case K_RESOLVE:
		f = find(op, op->name);
		if (!f) {
			snprintf(m, sizeof(m), "cwsandbox: no such snapshot: "
				 "%s", op->name);
			op_fail(op, -ENOENT, m);
		} else if (f->state != READY) {
			snprintf(m, sizeof(m), "cwsandbox: snapshot %s is not "
				 "ready", op->name);
			op_fail(op, -EBUSY, m);
		} else {
			op->rcb(w, op->ud, 0, NULL, f->file_system_snapshot_id);
			op_free(op);
		}
		return;
	case K_DELETE: {
		Coreweave__Sandbox__V1__DeleteFileSystemSnapshotRequest q =
			COREWEAVE__SANDBOX__V1__DELETE_FILE_SYSTEM_SNAPSHOT_REQUEST__INIT;

		f = find(op, op->name);
		if (!f) {
			op_fail(op, -ENOENT, "cwsandbox: no such snapshot");
			return;
		}
		snprintf(op->id, sizeof(op->id), "%s",
			 f->file_system_snapshot_id);
		q.file_system_snapshot_id = op->id;
		err = cw_unary(w, "DeleteFileSystemSnapshot", &q.base,
			       w->timeout_ms, deleted, op);
		if (err)
			op_fail(op, err, "DeleteFileSystemSnapshot: cannot "
				"send");
		return;
	}
	case K_CREATE:
		f = find(op, op->name);
		if (f) {
			snprintf(m, sizeof(m), "a snapshot named %s exists "
				 "(%s)", op->name, f->file_system_snapshot_id);
			op_fail(op, -EEXIST, m);
			return;
		}
		create_send(w, op);
		return;
	}
}

/* ---- entry points --------------------------------------------------------- */

void cw_tpl_list(struct api_backend *be, api_tpl_fn cb, void *ud)
{
	struct snap_op *op = op_new(be, K_LIST, NULL);

	if (!op) {
		cb(ud, -ENOMEM, "out of memory", NULL, 0);
		return;
	}
	op->tcb = cb;
	op->ud = ud;
	cw_post(op->w, &op->wk, op_run);
}

void cw_tpl_delete(struct api_backend *be, const char *name,
		   api_done_fn cb, void *ud)
{
	struct snap_op *op = op_new(be, K_DELETE, name);

	if (!op) {
		cb(ud, -ENOMEM, "out of memory");
		return;
	}
	op->dcb = cb;
	op->ud = ud;
	cw_post(op->w, &op->wk, op_run);
}

void cw_snap_create(struct api_backend *be, const char *id, const char *name,
		    api_done_fn cb, void *ud)
{
	struct snap_op *op;

	if (!name || !snap_name_ok(name)) {
		cb(ud, -EINVAL, "snapshot NAME: [A-Za-z0-9][A-Za-z0-9._-]"
		   "{0,62}");
		return;
	}
	op = op_new(be, K_CREATE, name);
	if (!op) {
		cb(ud, -ENOMEM, "out of memory");
		return;
	}
	snprintf(op->sb, sizeof(op->sb), "%s", id);
	op->dcb = cb;
	op->ud = ud;
	cw_post(op->w, &op->wk, op_run);
}

void cw_snap_resolve(struct cw *w, const char *name,
		     void (*cb)(struct cw *w, void *ud, int err,
				const char *msg, const char *id),
		     void *ud)
{
	struct snap_op *op = calloc(1, sizeof(*op));

	if (!op) {
		cb(w, ud, -ENOMEM, "out of memory", NULL);
		return;
	}
	op->w = w;
	op->kind = K_RESOLVE;
	op->rcb = cb;
	op->ud = ud;
	snprintf(op->name, sizeof(op->name), "%s", name);
	op_run(w, &op->wk);	/* in the loop already: a step of the create */
}
