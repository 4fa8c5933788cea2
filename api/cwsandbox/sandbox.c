/* sandbox.c - CW sandboxes: list, get, create, verbs, and the record as
 * JSON for `info`.
 *
 * Names.  CW assigns IDs; sbxfs keeps the NAME a user gave to mkdir as
 * the tag `sbxfs-name=NAME`, so another mount or a remount finds it (and
 * `ListSandboxes` by that tag answers "does NAME exist").  A sandbox made
 * elsewhere without that tag shows under its ID.
 *
 * Verbs.  CW has one end-of-life RPC: `stop [GRACE]` and `destroy` are
 * both DeleteSandbox (grace GRACE, default 10 s as the SDKs use; destroy:
 * 0) followed by GetSandbox polled until a terminal state.  start, pause
 * and resume are refused (the v1 API has no such RPC).  snapshot and
 * template= are file-system snapshots (snap.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "api/rfile.h"
#include "api/cwsandbox/cw_int.h"
#include "sandbox.pb-c.h"

#define NAME_TAG "sbxfs-name="
#define TPL_TAG "sbxfs-template="	/* template=SNAP as given */
#define LIST_PAGES 100

typedef Coreweave__Sandbox__V1__Sandbox Sandbox;

/* ---- proto3-JSON of any message (for `info`) ---------------------------- */

static void camel(const char *s, char *out, size_t len)
{
	size_t o = 0;
	bool up = false;

	for (; *s && o + 1 < len; s++) {
		if (*s == '_') {
			up = true;
			continue;
		}
		out[o++] = up && *s >= 'a' && *s <= 'z' ? *s - 32 : *s;
		up = false;
	}
	out[o] = '\0';
}

static cJSON *b64json(const ProtobufCBinaryData *b)
{
	static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	char *s = malloc(b->len / 3 * 4 + 5);
	size_t i, o = 0;
	cJSON *j;

	if (!s)
		return NULL;
	for (i = 0; i + 2 < b->len; i += 3) {
		uint32_t v = b->data[i] << 16 | b->data[i + 1] << 8 |
			     b->data[i + 2];

		s[o++] = t[v >> 18];
		s[o++] = t[(v >> 12) & 63];
		s[o++] = t[(v >> 6) & 63];
		s[o++] = t[v & 63];
	}
	if (i < b->len) {
		uint32_t v = b->data[i] << 16 |
			     (i + 1 < b->len ? b->data[i + 1] << 8 : 0);

		s[o++] = t[v >> 18];
		s[o++] = t[(v >> 12) & 63];
		s[o++] = i + 1 < b->len ? t[(v >> 6) & 63] : '=';
		s[o++] = '=';
	}
	s[o] = '\0';
	j = cJSON_CreateString(s);
	free(s);
	return j;
}

static cJSON *msg_json(const ProtobufCMessage *m);

/* proto3 JSON of a Timestamp: RFC 3339 in UTC, "Z", nanos when set */
static cJSON *ts_json(const Coreweave__Sandbox__V1__Timestamp *t)
{
	time_t s = (time_t)t->seconds;
	struct tm tm;
	char buf[64];
	size_t n;

	if (!gmtime_r(&s, &tm))
		return cJSON_CreateNull();
	n = strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
	if (t->nanos > 0 && t->nanos < 1000000000)
		snprintf(buf + n, sizeof(buf) - n, ".%09dZ", (int)t->nanos);
	else
		snprintf(buf + n, sizeof(buf) - n, "Z");
	return cJSON_CreateString(buf);
}

static cJSON *val_json(const ProtobufCFieldDescriptor *f, const void *p)
{
	char num[32];

	switch (f->type) {
	case PROTOBUF_C_TYPE_INT32:
	case PROTOBUF_C_TYPE_SINT32:
	case PROTOBUF_C_TYPE_SFIXED32:
		return cJSON_CreateNumber(*(const int32_t *)p);
	case PROTOBUF_C_TYPE_UINT32:
	case PROTOBUF_C_TYPE_FIXED32:
		return cJSON_CreateNumber(*(const uint32_t *)p);
	case PROTOBUF_C_TYPE_INT64:
	case PROTOBUF_C_TYPE_SINT64:
	case PROTOBUF_C_TYPE_SFIXED64:
		snprintf(num, sizeof(num), "%lld",
			 (long long)*(const int64_t *)p);
		return cJSON_CreateString(num);
	case PROTOBUF_C_TYPE_UINT64:
	case PROTOBUF_C_TYPE_FIXED64:
		snprintf(num, sizeof(num), "%llu",
			 (unsigned long long)*(const uint64_t *)p);
		return cJSON_CreateString(num);
	case PROTOBUF_C_TYPE_FLOAT:
		return cJSON_CreateNumber(*(const float *)p);
	case PROTOBUF_C_TYPE_DOUBLE:
		return cJSON_CreateNumber(*(const double *)p);
	case PROTOBUF_C_TYPE_BOOL:
		return cJSON_CreateBool(*(const protobuf_c_boolean *)p);
	case PROTOBUF_C_TYPE_ENUM: {
		const ProtobufCEnumValue *ev =
			protobuf_c_enum_descriptor_get_value(f->descriptor,
						*(const int *)p);

		return ev ? cJSON_CreateString(ev->name)
			  : cJSON_CreateNumber(*(const int *)p);
	}
	case PROTOBUF_C_TYPE_STRING:
		return cJSON_CreateString(*(char *const *)p ? *(char *const *)p
							    : "");
	case PROTOBUF_C_TYPE_BYTES:
		return b64json(p);
	case PROTOBUF_C_TYPE_MESSAGE:
		if (*(ProtobufCMessage *const *)p &&
		    (*(ProtobufCMessage *const *)p)->descriptor ==
			    &coreweave__sandbox__v1__timestamp__descriptor)
			return ts_json(*(const Coreweave__Sandbox__V1__Timestamp
					 *const *)p);
		return *(ProtobufCMessage *const *)p ?
		       msg_json(*(ProtobufCMessage *const *)p) :
		       cJSON_CreateObject();
	}
	return cJSON_CreateNull();
}

static size_t val_size(const ProtobufCFieldDescriptor *f)
{
	switch (f->type) {
	case PROTOBUF_C_TYPE_INT64: case PROTOBUF_C_TYPE_SINT64:
	case PROTOBUF_C_TYPE_SFIXED64: case PROTOBUF_C_TYPE_UINT64:
	case PROTOBUF_C_TYPE_FIXED64: return 8;
	case PROTOBUF_C_TYPE_DOUBLE: return sizeof(double);
	case PROTOBUF_C_TYPE_STRING: case PROTOBUF_C_TYPE_MESSAGE:
		return sizeof(void *);
	case PROTOBUF_C_TYPE_BYTES: return sizeof(ProtobufCBinaryData);
	case PROTOBUF_C_TYPE_BOOL: return sizeof(protobuf_c_boolean);
	default: return 4;
	}
}

/* proto3: a singular field without presence is emitted when not zero */
static bool is_zero(const ProtobufCFieldDescriptor *f, const void *p)
{
	static const char zero[16];

	switch (f->type) {
	case PROTOBUF_C_TYPE_STRING:
		return !*(char *const *)p || !**(char *const *)p;
	case PROTOBUF_C_TYPE_BYTES:
		return !((const ProtobufCBinaryData *)p)->len;
	case PROTOBUF_C_TYPE_MESSAGE:
		return !*(void *const *)p;
	default:
		return !memcmp(p, zero, val_size(f));
	}
}

static bool is_map_entry(const ProtobufCFieldDescriptor *f)
{
	const ProtobufCMessageDescriptor *d = f->descriptor;
	size_t n;

	if (f->type != PROTOBUF_C_TYPE_MESSAGE || !d || d->n_fields != 2)
		return false;
	n = strlen(d->name);
	return n > 5 && !strcmp(d->name + n - 5, "Entry");
}

static cJSON *msg_json(const ProtobufCMessage *m)
{
	const ProtobufCMessageDescriptor *d = m->descriptor;
	cJSON *o = cJSON_CreateObject();
	char name[128];
	unsigned i;

	for (i = 0; o && i < d->n_fields; i++) {
		const ProtobufCFieldDescriptor *f = &d->fields[i];
		const char *base = (const char *)m;
		const void *p = base + f->offset;
		cJSON *v = NULL;

		camel(f->name, name, sizeof(name));
		if (f->label == PROTOBUF_C_LABEL_REPEATED) {
			size_t n = *(const size_t *)(base +
						     f->quantifier_offset), k;
			const char *arr = *(char *const *)p;

			if (!n)
				continue;
			if (is_map_entry(f)) {
				v = cJSON_CreateObject();
				for (k = 0; v && k < n; k++) {
					const ProtobufCMessage *e =
						((ProtobufCMessage *const *)
						 arr)[k];
					const ProtobufCFieldDescriptor *kf =
						&e->descriptor->fields[0];
					const ProtobufCFieldDescriptor *vf =
						&e->descriptor->fields[1];
					char *key = *(char *const *)(
						(const char *)e + kf->offset);

					cJSON_AddItemToObject(v, key ? key : "",
						val_json(vf, (const char *)e +
							 vf->offset));
				}
			} else {
				v = cJSON_CreateArray();
				for (k = 0; v && k < n; k++)
					cJSON_AddItemToArray(v, val_json(f,
						arr + k * val_size(f)));
			}
		} else if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
			if (*(const uint32_t *)(base + f->quantifier_offset) !=
			    f->id)
				continue;
			v = val_json(f, p);
		} else if (f->label == PROTOBUF_C_LABEL_OPTIONAL &&
			   f->type != PROTOBUF_C_TYPE_STRING &&
			   f->type != PROTOBUF_C_TYPE_MESSAGE) {
			if (!*(const protobuf_c_boolean *)(base +
						f->quantifier_offset))
				continue;
			v = val_json(f, p);
		} else {
			if (is_zero(f, p))
				continue;
			v = val_json(f, p);
		}
		if (v)
			cJSON_AddItemToObject(o, name, v);
	}
	return o;
}

char *cw_msg_json(const ProtobufCMessage *m)
{
	cJSON *j = msg_json(m);
	char *s = j ? cJSON_Print(j) : NULL;

	cJSON_Delete(j);
	return s;
}

/* ---- records ------------------------------------------------------------ */

static enum api_state state_of(int s)
{
	switch (s) {
	case COREWEAVE__SANDBOX__V1__STATE__STATE_CREATING:
	case COREWEAVE__SANDBOX__V1__STATE__STATE_PENDING:
		return API_ST_CREATING;
	case COREWEAVE__SANDBOX__V1__STATE__STATE_RUNNING:
		return API_ST_RUNNING;
	case COREWEAVE__SANDBOX__V1__STATE__STATE_PAUSED:
		return API_ST_PAUSED;
	case COREWEAVE__SANDBOX__V1__STATE__STATE_TERMINATING:
		return API_ST_STOPPING;
	case COREWEAVE__SANDBOX__V1__STATE__STATE_COMPLETED:
	case COREWEAVE__SANDBOX__V1__STATE__STATE_TERMINATED:
		return API_ST_STOPPED;
	case COREWEAVE__SANDBOX__V1__STATE__STATE_FAILED:
		return API_ST_FAILED;
	}
	return API_ST_UNKNOWN;
}

static bool terminal(int s)
{
	return s == COREWEAVE__SANDBOX__V1__STATE__STATE_COMPLETED ||
	       s == COREWEAVE__SANDBOX__V1__STATE__STATE_FAILED ||
	       s == COREWEAVE__SANDBOX__V1__STATE__STATE_TERMINATED;
}

static int pstate(const Sandbox *s)
{
	return s->status ? (int)s->status->state : 0;
}

static const char *name_tag(const Sandbox *s)
{
	size_t i;

	for (i = 0; s->spec && i < s->spec->n_tags; i++)
		if (!strncmp(s->spec->tags[i], NAME_TAG, strlen(NAME_TAG)))
			return s->spec->tags[i] + strlen(NAME_TAG);
	return "";
}

/* The user's tags of s ("a,b", without the NAME tag) stored after the
 * NUL of the malloc'd *json, so they live and die with it; out->tags and
 * out->info_json point into it (API_CAP_TAGS). */
static void tags_attach(const Sandbox *s, struct api_sandbox *out,
			char **json)
{
	char tags[1024] = "";
	size_t n = 0, jl;
	char *j;

	for (size_t i = 0; s->spec && i < s->spec->n_tags; i++) {
		const char *t = s->spec->tags[i];

		if (!t || !strncmp(t, NAME_TAG, strlen(NAME_TAG)) ||
		    !api_tag_valid(t) || n + strlen(t) + 2 > sizeof(tags))
			continue;
		n += (size_t)snprintf(tags + n, sizeof(tags) - n, "%s%s",
				      n ? "," : "", t);
	}
	if (!*json)
		return;
	jl = strlen(*json);
	j = realloc(*json, jl + 1 + n + 1);
	if (!j)
		return;
	memcpy(j + jl + 1, tags, n + 1);
	*json = j;
	out->info_json = j;
	out->tags = j + jl + 1;
}

/* Fill out from s; info_json malloc'd into *json (caller frees). */
static void to_api(const Sandbox *s, struct api_sandbox *out, char **json)
{
	memset(out, 0, sizeof(*out));
	snprintf(out->id, sizeof(out->id), "%s", s->sandbox_id);
	snprintf(out->name, sizeof(out->name), "%s", name_tag(s));
	if (s->spec && s->spec->n_containers && s->spec->containers[0])
		snprintf(out->template, sizeof(out->template), "%s",
			 s->spec->containers[0]->image);
	/* restored from a snapshot: that is where it started (by the NAME
	 * given to template=, kept as a tag; else the snapshot's ID) */
	for (size_t i = 0; s->spec && i < s->spec->n_tags; i++)
		if (!strncmp(s->spec->tags[i], TPL_TAG, strlen(TPL_TAG))) {
			snprintf(out->template, sizeof(out->template), "%s",
				 s->spec->tags[i] + strlen(TPL_TAG));
			goto tpl_done;
		}
	for (size_t i = 0; s->spec && i < s->spec->n_volumes; i++) {
		const Coreweave__Sandbox__V1__SandboxVolume *v =
			s->spec->volumes[i];

		if (v && v->source_case ==
			    COREWEAVE__SANDBOX__V1__SANDBOX_VOLUME__SOURCE_SCRATCH &&
		    v->scratch && *v->scratch->restore_from_snapshot_id)
			snprintf(out->template, sizeof(out->template), "%s",
				 v->scratch->restore_from_snapshot_id);
	}
tpl_done:
	out->state = state_of(pstate(s));
	if (s->status && s->status->create_time)
		out->created = s->status->create_time->seconds;
	*json = json ? cw_msg_json(&s->base) : NULL;
	out->info_json = json ? *json : NULL;
	if (json)
		tags_attach(s, out, json);
}

/* ---- what this mount stopped or destroyed (loop only) -------------------- */

bool cw_is_gone(struct cw *w, const char *id)
{
	size_t i;

	for (i = 0; i < CW_GONE_MAX; i++)
		if (!strcmp(w->gone[i], id))
			return true;
	return false;
}

static bool is_stopped(struct cw *w, const char *id)
{
	size_t i;

	for (i = 0; i < w->nstopped; i++)
		if (!strcmp(w->stopped[i], id))
			return true;
	return false;
}

static void stopped_drop(struct cw *w, const char *id)
{
	size_t i;

	for (i = 0; i < w->nstopped; i++)
		if (!strcmp(w->stopped[i], id)) {
			memcpy(w->stopped[i], w->stopped[--w->nstopped],
			       API_ID_MAX);
			return;
		}
}

static void stopped_add(struct cw *w, const char *id)
{
	void *n;

	if (is_stopped(w, id))
		return;
	n = realloc(w->stopped, (w->nstopped + 1) * API_ID_MAX);
	if (!n)
		return;		/* only costs showing it as stopped */
	w->stopped = n;
	snprintf(w->stopped[w->nstopped++], API_ID_MAX, "%s", id);
}

static void gone_add(struct cw *w, const char *id)
{
	stopped_drop(w, id);
	if (cw_is_gone(w, id))
		return;
	snprintf(w->gone[w->gone_next], API_ID_MAX, "%s", id);
	w->gone_next = (w->gone_next + 1) % CW_GONE_MAX;
}

/* ---- list --------------------------------------------------------------- */

struct list_op {
	struct cw_work wk;
	struct api_backend *be;
	api_list_fn cb;
	void *ud;
	char tag[API_ID_MAX + 16];	/* "" or a tag to filter on */
	bool all;			/* show terminated too */
	/* results */
	struct api_sandbox *v;
	char **json;
	size_t n, cap;
	char token[256];
	int pages;
	/* when used by create / get: what to do with the list */
	void (*then)(struct cw *w, struct list_op *op, int err,
		     const char *msg);
	void *owner;
};

static void list_free(struct list_op *op)
{
	size_t i;

	for (i = 0; i < op->n; i++)
		free(op->json[i]);
	free(op->json);
	free(op->v);
	free(op);
}

static void list_send(struct cw *w, struct list_op *op);

static void list_got(struct cw *w, void *ud, const struct cw_status *st,
		     const uint8_t *resp, size_t len)
{
	struct list_op *op = ud;
	Coreweave__Sandbox__V1__ListSandboxesResponse *r;
	size_t i;
	int err = st->err;
	const char *msg = st->msg;

	if (err)
		goto done;
	r = coreweave__sandbox__v1__list_sandboxes_response__unpack(NULL, len,
								    resp);
	if (!r) {
		err = -EIO;
		msg = "ListSandboxes: malformed answer";
		goto done;
	}
	for (i = 0; i < r->n_sandboxes; i++) {
		const char *id = r->sandboxes[i]->sandbox_id;

		if (cw_is_gone(w, id))
			continue;
		if (!op->all && terminal(pstate(r->sandboxes[i])) &&
		    !is_stopped(w, id))
			continue;
		if (op->n == op->cap) {
			size_t cap = op->cap ? op->cap * 2 : 32;
			void *a = realloc(op->v, cap * sizeof(*op->v));
			void *b;

			if (a)
				op->v = a;
			b = a ? realloc(op->json, cap * sizeof(*op->json))
			      : NULL;
			if (!b) {
				err = -ENOMEM;
				msg = NULL;
				break;
			}
			op->json = b;
			op->cap = cap;
		}
		to_api(r->sandboxes[i], &op->v[op->n], &op->json[op->n]);
		op->n++;
	}
	if (!err && *r->next_page_token) {
		if (!strcmp(r->next_page_token, op->token) ||
		    ++op->pages >= LIST_PAGES) {
			err = -EIO;
			msg = "ListSandboxes: the platform repeats its page "
			      "token";
		} else {
			snprintf(op->token, sizeof(op->token), "%s",
				 r->next_page_token);
			coreweave__sandbox__v1__list_sandboxes_response__free_unpacked(r, NULL);
			list_send(w, op);
			return;
		}
	}
	coreweave__sandbox__v1__list_sandboxes_response__free_unpacked(r,
								       NULL);
done:
	if (op->then) {
		op->then(w, op, err, msg);
		return;
	}
	if (err)
		op->cb(op->ud, err, msg, NULL, 0);
	else
		op->cb(op->ud, 0, NULL, op->v, op->n);
	list_free(op);
}

static void list_send(struct cw *w, struct list_op *op)
{
	Coreweave__Sandbox__V1__ListSandboxesRequest q =
		COREWEAVE__SANDBOX__V1__LIST_SANDBOXES_REQUEST__INIT;
	char *tags[1] = { op->tag };
	struct cw_status st = { .code = 13, .err = -ENOMEM };
	int err;

	q.page_size = 100;
	q.page_token = op->token;
	/* what this mount stopped stays on view */
	q.show_terminated = op->all || w->nstopped;
	if (op->tag[0]) {
		q.n_tags = 1;
		q.tags = tags;
	}
	err = cw_unary(w, "ListSandboxes", &q.base, w->timeout_ms, list_got,
		       op);
	if (err) {
		st.err = err;
		snprintf(st.msg, sizeof(st.msg), "ListSandboxes: %s",
			 strerror(-err));
		list_got(w, op, &st, NULL, 0);
	}
}

static void list_run(struct cw *w, struct cw_work *wk)
{
	list_send(w, (struct list_op *)wk);
}

static struct list_op *list_new(struct api_backend *be)
{
	struct list_op *op = calloc(1, sizeof(*op));

	if (op)
		op->be = be;
	return op;
}

void cw_sb_list(struct api_backend *be, api_list_fn cb, void *ud)
{
	struct list_op *op = list_new(be);
	struct cw *w = cw_of(be);

	if (!op) {
		cb(ud, -ENOMEM, NULL, NULL, 0);
		return;
	}
	op->cb = cb;
	op->ud = ud;
	op->all = w->show_terminated;
	cw_post(w, &op->wk, list_run);
}

/* ---- get ----------------------------------------------------------------- */

struct sb_op {
	struct cw_work wk;
	struct cw_timer tm;
	struct api_backend *be;
	api_sandbox_fn cb;
	api_done_fn dcb;
	void *ud;
	char id[API_ID_MAX];
	char name[API_ID_MAX];
	enum api_verb verb;
	int grace;
	int64_t deadline;	/* monotonic ms */
	int64_t delay;		/* poll backoff */
	bool by_name_tried;
	Coreweave__Sandbox__V1__CreateSandboxRequest *creq;
};

static void sb_op_free(struct sb_op *op)
{
	free(op);
}

static void get_send(struct cw *w, struct sb_op *op);

static void get_by_name_done(struct cw *w, struct list_op *l, int err,
			     const char *msg)
{
	struct sb_op *op = l->owner;

	(void)w;
	if (!err && l->n == 1)
		op->cb(op->ud, 0, NULL, &l->v[0]);
	else if (!err)
		op->cb(op->ud, -ENOENT, "no such sandbox", NULL);
	else
		op->cb(op->ud, err, msg, NULL);
	list_free(l);
	sb_op_free(op);
}

static void get_got(struct cw *w, void *ud, const struct cw_status *st,
		    const uint8_t *resp, size_t len)
{
	struct sb_op *op = ud;
	struct api_sandbox sb;
	Sandbox *s;
	char *json = NULL;

	if (st->err == -ENOENT && !op->by_name_tried) {
		/* maybe a NAME: look for its tag */
		struct list_op *l = list_new(op->be);

		op->by_name_tried = true;
		if (l) {
			snprintf(l->tag, sizeof(l->tag), NAME_TAG "%s",
				 op->id);
			l->all = w->show_terminated;
			l->then = get_by_name_done;
			l->owner = op;
			list_send(w, l);
			return;
		}
	}
	if (st->err) {
		op->cb(op->ud, st->err, st->msg, NULL);
		sb_op_free(op);
		return;
	}
	s = coreweave__sandbox__v1__sandbox__unpack(NULL, len, resp);
	if (!s) {
		op->cb(op->ud, -EIO, "GetSandbox: malformed answer", NULL);
	} else {
		to_api(s, &sb, &json);
		op->cb(op->ud, 0, NULL, &sb);
		free(json);
		coreweave__sandbox__v1__sandbox__free_unpacked(s, NULL);
	}
	sb_op_free(op);
}

static void get_send(struct cw *w, struct sb_op *op)
{
	Coreweave__Sandbox__V1__GetSandboxRequest q =
		COREWEAVE__SANDBOX__V1__GET_SANDBOX_REQUEST__INIT;
	struct cw_status st = { .code = 13 };
	int err;

	q.sandbox_id = op->id;
	err = cw_unary(w, "GetSandbox", &q.base, w->timeout_ms, get_got, op);
	if (err) {
		st.err = err;
		snprintf(st.msg, sizeof(st.msg), "GetSandbox: %s",
			 strerror(-err));
		op->by_name_tried = true;
		get_got(w, op, &st, NULL, 0);
	}
}

static void get_run(struct cw *w, struct cw_work *wk)
{
	struct sb_op *op = (struct sb_op *)wk;

	if (cw_is_gone(w, op->id)) {
		op->cb(op->ud, -ENOENT, "no such sandbox (destroyed)", NULL);
		sb_op_free(op);
		return;
	}
	get_send(w, op);
}

void cw_sb_get(struct api_backend *be, const char *id, api_sandbox_fn cb,
	       void *ud)
{
	struct sb_op *op = calloc(1, sizeof(*op));

	if (!op) {
		cb(ud, -ENOMEM, NULL, NULL);
		return;
	}
	op->be = be;
	op->cb = cb;
	op->ud = ud;
	snprintf(op->id, sizeof(op->id), "%s", id);
	cw_post(cw_of(be), &op->wk, get_run);
}

/* ---- polling until a state -------------------------------------------------- */

/* Poll GetSandbox until running (create) or terminal (stop/destroy). */
static void poll_send(struct cw *w, struct sb_op *op);

static void poll_finish(struct sb_op *op, int err, const char *msg,
			const Sandbox *s)
{
	struct api_sandbox sb;
	char *json = NULL;

	if (op->cb) {
		if (!err && s) {
			to_api(s, &sb, &json);
			op->cb(op->ud, 0, NULL, &sb);
			free(json);
		} else {
			op->cb(op->ud, err ? err : -EIO, msg, NULL);
		}
	} else {
		struct cw *w = cw_of(op->be);

		if (!err && op->verb == API_VERB_DESTROY)
			gone_add(w, op->id);
		else if (!err && op->verb == API_VERB_STOP)
			stopped_add(w, op->id);
		op->dcb(op->ud, err, msg);
	}
	sb_op_free(op);
}

static void poll_tick(struct cw *w, struct cw_timer *t)
{
	struct sb_op *op = (struct sb_op *)((char *)t -
					    offsetof(struct sb_op, tm));

	w->loop.op_deadline = op->deadline;	/* the create's or the verb's */
	poll_send(w, op);
}

static void poll_got(struct cw *w, void *ud, const struct cw_status *st,
		     const uint8_t *resp, size_t len)
{
	struct sb_op *op = ud;
	bool creating = op->cb != NULL;
	char msg[600];
	Sandbox *s;
	int ps;

	if (st->err == -ENOENT && !creating) {
		poll_finish(op, 0, NULL, NULL);	/* gone: done */
		return;
	}
	if (st->err) {
		poll_finish(op, st->err, st->msg, NULL);
		return;
	}
	s = coreweave__sandbox__v1__sandbox__unpack(NULL, len, resp);
	if (!s) {
		poll_finish(op, -EIO, "GetSandbox: malformed answer", NULL);
		return;
	}
	ps = pstate(s);
	if (creating && ps == COREWEAVE__SANDBOX__V1__STATE__STATE_RUNNING) {
		poll_finish(op, 0, NULL, s);
	} else if (creating && terminal(ps)) {
		snprintf(msg, sizeof(msg), "sandbox %s ended while starting: "
			 "%s", op->id, s->status && *s->status->state_reason ?
			 s->status->state_reason : "no reason given");
		poll_finish(op, -EIO, msg, NULL);
	} else if (!creating && terminal(ps)) {
		poll_finish(op, 0, NULL, NULL);
	} else if (cw_now_ms() >= op->deadline) {
		snprintf(msg, sizeof(msg), "sandbox %s: still %s after the "
			 "request timeout", op->id,
			 api_state_name(state_of(ps)));
		poll_finish(op, -ETIMEDOUT, msg, NULL);
	} else {
		cw_timer_arm(w, &op->tm, op->delay, poll_tick);
		op->delay = op->delay * 3 / 2 > 2000 ? 2000
						      : op->delay * 3 / 2;
	}
	if (s)
		coreweave__sandbox__v1__sandbox__free_unpacked(s, NULL);
}

static void poll_send(struct cw *w, struct sb_op *op)
{
	Coreweave__Sandbox__V1__GetSandboxRequest q =
		COREWEAVE__SANDBOX__V1__GET_SANDBOX_REQUEST__INIT;
	int err;

	q.sandbox_id = op->id;
	err = cw_unary(w, "GetSandbox", &q.base, w->timeout_ms, poll_got, op);
	if (err)
		poll_finish(op, err, "GetSandbox: cannot send", NULL);
}

/* ---- create ---------------------------------------------------------------------- */

static bool name_ok(const char *s)
{
	size_t n = strlen(s);

	return n && n < 64 && strcmp(s, ".") && strcmp(s, "..") &&
	       strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
			 "0123456789._-") == n && s[0] != '.' && s[0] != '-';
}

static void create_got(struct cw *w, void *ud, const struct cw_status *st,
		       const uint8_t *resp, size_t len)
{
	struct sb_op *op = ud;
	Sandbox *s;

	if (st->err) {
		poll_finish(op, st->err, st->msg, NULL);
		return;
	}
	s = coreweave__sandbox__v1__sandbox__unpack(NULL, len, resp);
	if (!s || !*s->sandbox_id) {
		if (s)
			coreweave__sandbox__v1__sandbox__free_unpacked(s, NULL);
		poll_finish(op, -EIO, "CreateSandbox: malformed answer", NULL);
		return;
	}
	snprintf(op->id, sizeof(op->id), "%s", s->sandbox_id);
	coreweave__sandbox__v1__sandbox__free_unpacked(s, NULL);
	op->delay = 200;
	poll_send(w, op);
}

/* the request built by cw_sb_create; freed here */
static void creq_free(Coreweave__Sandbox__V1__CreateSandboxRequest *q);

static void create_checked(struct cw *w, struct list_op *l, int err,
			   const char *msg)
{
	struct sb_op *op = l->owner;
	char m[400];

	if (!err && l->n) {
		snprintf(m, sizeof(m), "a sandbox named %s exists (%s)",
			 op->name, l->v[0].id);
		err = -EEXIST;
		msg = m;
	}
	list_free(l);
	if (err) {
		creq_free(op->creq);
		poll_finish(op, err, msg, NULL);
		return;
	}
	{
		Coreweave__Sandbox__V1__CreateSandboxRequest *q = op->creq;

		/* packed at once: the request can go */
		op->creq = NULL;
		err = cw_unary(w, "CreateSandbox", &q->base, w->timeout_ms,
			       create_got, op);
		creq_free(q);
		if (err)
			poll_finish(op, err, "CreateSandbox: cannot send",
				    NULL);
	}
}

/* The request is built by hand from heap pieces we own (not unpacked). */
struct creq {
	Coreweave__Sandbox__V1__CreateSandboxRequest q;
	Coreweave__Sandbox__V1__Sandbox sb;
	Coreweave__Sandbox__V1__SandboxSpec spec;
	Coreweave__Sandbox__V1__Container c, *cp;
	Coreweave__Sandbox__V1__Resources res;
	Coreweave__Sandbox__V1__ResourceRequirements rr;
	char *tags[65];
	Coreweave__Sandbox__V1__Container__EnvironmentVariablesEntry env[64],
		*envp[64];
	Coreweave__Sandbox__V1__Service svc[16], *svcp[16];
	/* template=SNAP: a scratch volume restoring the snapshot */
	Coreweave__Sandbox__V1__SandboxVolume vol, *volp;
	Coreweave__Sandbox__V1__ScratchVolume scr;
	char tpl[API_ID_MAX];	/* SNAP as given, resolved before create */
	char snap_id[API_ID_MAX];
	char *strs[256];	/* everything strdup'd, freed at the end */
	size_t nstrs;
	char rid[40];
};

static void create_name_check(struct cw *w, struct sb_op *op);
static char *keep(struct creq *r, const char *s, size_t n);

/* template=SNAP resolved: the new sandbox gets a scratch volume restoring
 * it (the platform's way to start from a snapshot) */
static void create_resolved(struct cw *w, void *ud, int err, const char *msg,
			    const char *id)
{
	struct sb_op *op = ud;
	struct creq *r = (struct creq *)op->creq;

	if (err) {
		creq_free(op->creq);
		op->creq = NULL;
		poll_finish(op, err, msg, NULL);
		return;
	}
	snprintf(r->snap_id, sizeof(r->snap_id), "%s", id);
	coreweave__sandbox__v1__sandbox_volume__init(&r->vol);
	coreweave__sandbox__v1__scratch_volume__init(&r->scr);
	r->scr.restore_from_snapshot_id = r->snap_id;
	r->vol.name = "restored";
	r->vol.source_case =
		COREWEAVE__SANDBOX__V1__SANDBOX_VOLUME__SOURCE_SCRATCH;
	r->vol.scratch = &r->scr;
	r->volp = &r->vol;
	r->spec.n_volumes = 1;
	r->spec.volumes = &r->volp;
	if (r->spec.n_tags < 64) {
		char tag[API_ID_MAX + 20];

		snprintf(tag, sizeof(tag), TPL_TAG "%s", r->tpl);
		r->tags[r->spec.n_tags] = keep(r, tag, strlen(tag));
		if (r->tags[r->spec.n_tags])
			r->spec.n_tags++;
	}
	create_name_check(w, op);
}

static void create_run(struct cw *w, struct cw_work *wk)
{
	struct sb_op *op = (struct sb_op *)wk;
	struct creq *r = (struct creq *)op->creq;

	if (r->tpl[0]) {
		cw_snap_resolve(w, r->tpl, create_resolved, op);
		return;
	}
	create_name_check(w, op);
}

static void create_name_check(struct cw *w, struct sb_op *op)
{
	struct list_op *l = list_new(op->be);

	if (!l) {
		creq_free(op->creq);
		poll_finish(op, -ENOMEM, NULL, NULL);
		return;
	}
	/* NAME taken? (a terminated one may be reused) */
	snprintf(l->tag, sizeof(l->tag), NAME_TAG "%s", op->name);
	l->then = create_checked;
	l->owner = op;
	list_send(w, l);
}


static void creq_free(Coreweave__Sandbox__V1__CreateSandboxRequest *q)
{
	struct creq *r = (struct creq *)q;
	size_t i;

	if (!r)
		return;
	for (i = 0; i < r->nstrs; i++)
		free(r->strs[i]);
	free(r);
}

static char *keep(struct creq *r, const char *s, size_t n)
{
	char *d;

	if (r->nstrs >= 256)
		return NULL;
	d = strndup(s, n);
	if (d)
		r->strs[r->nstrs++] = d;
	return d;
}

static void uuid(char *out, size_t len)
{
	unsigned char v[16];
	int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);

	if (fd < 0 || read(fd, v, sizeof(v)) != sizeof(v)) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		memcpy(v, &ts, sizeof(ts) < 16 ? sizeof(ts) : 16);
	}
	if (fd >= 0)
		close(fd);
	v[6] = (v[6] & 0x0f) | 0x40;
	v[8] = (v[8] & 0x3f) | 0x80;
	snprintf(out, len, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-"
		 "%02x%02x%02x%02x%02x%02x", v[0], v[1], v[2], v[3], v[4],
		 v[5], v[6], v[7], v[8], v[9], v[10], v[11], v[12], v[13],
		 v[14], v[15]);
}

/* Build the request from NAME and `new` settings; NULL + msg on error. */
static struct creq *creq_build(struct cw *w, const char *name,
			       const struct api_kv *kv, size_t nkv, int *err,
			       char *msg, size_t ml)
{
	struct creq *r = calloc(1, sizeof(*r));
	char tag[API_ID_MAX + 16];
	size_t i;

	*err = -ENOMEM;
	if (!r)
		return NULL;
	coreweave__sandbox__v1__create_sandbox_request__init(&r->q);
	coreweave__sandbox__v1__sandbox__init(&r->sb);
	coreweave__sandbox__v1__sandbox_spec__init(&r->spec);
	coreweave__sandbox__v1__container__init(&r->c);
	coreweave__sandbox__v1__resources__init(&r->res);
	coreweave__sandbox__v1__resource_requirements__init(&r->rr);
	uuid(r->rid, sizeof(r->rid));
	r->q.request_id = r->rid;
	r->q.sandbox = &r->sb;
	r->sb.spec = &r->spec;
	r->cp = &r->c;
	r->spec.n_containers = 1;
	r->spec.containers = &r->cp;
	r->spec.primary_container = "main";
	r->c.name = "main";
	r->c.image = w->image;
	/* what the SDKs run by default: idle until terminated */
	r->c.command = "/bin/sh";
	snprintf(tag, sizeof(tag), NAME_TAG "%s", name);
	r->tags[0] = keep(r, tag, strlen(tag));
	r->spec.n_tags = 1;
	r->spec.tags = r->tags;
	if (!r->tags[0])
		goto fail;
	for (i = 0; i < nkv; i++) {
		const char *k = kv[i].key, *v = kv[i].value ? kv[i].value : "";
		const char *eq;

		if (!strcmp(k, "template")) {
			/* a snapshot's NAME or ID: resolved in create_run */
			if (!*v || strlen(v) >= sizeof(r->tpl))
				goto bad;
			snprintf(r->tpl, sizeof(r->tpl), "%s", v);
		} else if (!strcmp(k, "image")) {
			r->c.image = keep(r, v, strlen(v));
		} else if (!strcmp(k, "tag")) {
			if (r->spec.n_tags >= 64 || !*v ||
			    !strncmp(v, NAME_TAG, strlen(NAME_TAG)))
				goto bad;
			r->tags[r->spec.n_tags++] = keep(r, v, strlen(v));
		} else if (!strcmp(k, "cpus")) {
			r->res.cpu = keep(r, v, strlen(v));
		} else if (!strcmp(k, "memory")) {
			r->res.memory = keep(r, v, strlen(v));
		} else if (!strcmp(k, "env")) {
			size_t n = r->c.n_environment_variables;

			eq = strchr(v, '=');
			if (!eq || eq == v || n >= 64)
				goto bad;
			coreweave__sandbox__v1__container__environment_variables_entry__init(&r->env[n]);
			r->env[n].key = keep(r, v, eq - v);
			r->env[n].value = keep(r, eq + 1, strlen(eq + 1));
			r->envp[n] = &r->env[n];
			r->c.n_environment_variables = n + 1;
			r->c.environment_variables = r->envp;
		} else if (!strcmp(k, "port")) {
			size_t n = r->spec.n_services;
			char *e;
			long p = strtol(v, &e, 10);

			if (*e || p < 1 || p > 65535 || n >= 16)
				goto bad;
			coreweave__sandbox__v1__service__init(&r->svc[n]);
			r->svc[n].port = (int)p;
			r->svc[n].visibility =
				COREWEAVE__SANDBOX__V1__VISIBILITY__VISIBILITY_PUBLIC;
			r->svcp[n] = &r->svc[n];
			r->spec.n_services = n + 1;
			r->spec.services = r->svcp;
		} else {
			snprintf(msg, ml, "cwsandbox: unknown setting '%s' "
				 "(known: image=IMG tag=T cpus=N memory=SIZE "
				 "env=K=V port=P)", k);
			*err = -EINVAL;
			goto fail;
		}
		continue;
bad:
		snprintf(msg, ml, "cwsandbox: bad value for %s: '%s'", k, v);
		*err = -EINVAL;
		goto fail;
	}
	if (*r->res.cpu || *r->res.memory) {
		r->rr.requests = &r->res;
		r->c.resource_requirements = &r->rr;
	}
	{
		/* args: -c 'trap "exit 0" TERM INT; sleep infinity & wait' */
		static char *args[2] = {
			"-c", "trap \"exit 0\" TERM INT; sleep infinity & wait"
		};

		r->c.n_args = 2;
		r->c.args = args;
	}
	for (i = 0; i < r->nstrs; i++)
		if (!r->strs[i])
			goto fail;
	*err = 0;
	return r;
fail:
	creq_free(&r->q);
	return NULL;
}

void cw_sb_create(struct api_backend *be, const char *name,
		  const struct api_kv *kv, size_t nkv, api_sandbox_fn cb,
		  void *ud)
{
	struct cw *w = cw_of(be);
	struct sb_op *op;
	struct creq *r;
	char msg[256] = "";
	int err;

	if (!name_ok(name)) {
		cb(ud, -EINVAL, "cwsandbox: names are [A-Za-z0-9][A-Za-z0-9._-]"
		   "{0,62}", NULL);
		return;
	}
	r = creq_build(w, name, kv, nkv, &err, msg, sizeof(msg));
	if (!r) {
		cb(ud, err, msg[0] ? msg : NULL, NULL);
		return;
	}
	op = calloc(1, sizeof(*op));
	if (!op) {
		creq_free(&r->q);
		cb(ud, -ENOMEM, NULL, NULL);
		return;
	}
	op->be = be;
	op->cb = cb;
	op->ud = ud;
	op->creq = &r->q;
	snprintf(op->name, sizeof(op->name), "%s", name);
	op->deadline = cw_now_ms() + w->timeout_ms;
	cw_post(w, &op->wk, create_run);
}

/* ---- verbs ------------------------------------------------------------------ */

static void delete_got(struct cw *w, void *ud, const struct cw_status *st,
		       const uint8_t *resp, size_t len)
{
	struct sb_op *op = ud;

	(void)resp;
	(void)len;
	if (st->err) {
		op->dcb(op->ud, st->err, st->msg);
		sb_op_free(op);
		return;
	}
	op->delay = 200;
	poll_send(w, op);
}

static void ping_got(struct cw *w, void *ud, const struct cw_status *st,
		     const uint8_t *resp, size_t len)
{
	struct sb_op *op = ud;
	Sandbox *s = NULL;
	int err = st->err;
	const char *msg = st->err ? st->msg : NULL;

	(void)w;
	if (!err) {
		s = coreweave__sandbox__v1__sandbox__unpack(NULL, len, resp);
		if (!s) {
			err = -EIO;
			msg = "GetSandbox: malformed answer";
		} else if (pstate(s) !=
			   COREWEAVE__SANDBOX__V1__STATE__STATE_RUNNING) {
			err = -EBUSY;
			msg = "the sandbox is not running";
		}
	}
	if (s)
		coreweave__sandbox__v1__sandbox__free_unpacked(s, NULL);
	op->dcb(op->ud, err, msg);
	sb_op_free(op);
}

static void verb_run(struct cw *w, struct cw_work *wk)
{
	struct sb_op *op = (struct sb_op *)wk;
	int err;

	w->loop.op_deadline = op->deadline;	/* with the grace period */
	if (cw_is_gone(w, op->id)) {
		op->dcb(op->ud, -ENOENT, "no such sandbox (destroyed)");
		sb_op_free(op);
		return;
	}
	if (op->verb == API_VERB_PING) {
		Coreweave__Sandbox__V1__GetSandboxRequest q =
			COREWEAVE__SANDBOX__V1__GET_SANDBOX_REQUEST__INIT;

		q.sandbox_id = op->id;
		err = cw_unary(w, "GetSandbox", &q.base, w->timeout_ms,
			       ping_got, op);
	} else {
		Coreweave__Sandbox__V1__DeleteSandboxRequest q =
			COREWEAVE__SANDBOX__V1__DELETE_SANDBOX_REQUEST__INIT;

		q.sandbox_id = op->id;
		q.grace_period_seconds = op->grace;
		err = cw_unary(w, "DeleteSandbox", &q.base,
			       w->timeout_ms + op->grace * 1000LL,
			       delete_got, op);
	}
	if (err) {
		op->dcb(op->ud, err, "cannot send the request");
		sb_op_free(op);
	}
}

static void cw_sb_verb_now(struct api_backend *be, const char *id,
			   enum api_verb verb, const char *arg,
			   api_done_fn cb, void *ud);

struct verb_wait {
	struct api_backend *be;
	char id[API_ID_MAX];
	enum api_verb verb;
	char *arg;
	api_done_fn cb;
	void *ud;
};

static void verb_synced(void *ud)
{
	struct verb_wait *v = ud;

	cw_sb_verb_now(v->be, v->id, v->verb, v->arg, v->cb, v->ud);
	free(v->arg);
	free(v);
}

/* Small files still queued for the sandbox land before a verb acts on
 * it (a snapshot must hold them; stop and destroy end the sandbox). */
void cw_sb_verb(struct api_backend *be, const char *id, enum api_verb verb,
		const char *arg, api_done_fn cb, void *ud)
{
	struct verb_wait *v = NULL;

	if (be->rf && verb != API_VERB_PING)
		v = calloc(1, sizeof(*v));
	if (v) {
		v->be = be;
		snprintf(v->id, sizeof(v->id), "%s", id);
		v->verb = verb;
		v->arg = arg ? strdup(arg) : NULL;
		v->cb = cb;
		v->ud = ud;
		if ((!arg || v->arg) &&
		    api_rfile_sync(be->rf, id, verb_synced, v))
			return;
		free(v->arg);
		free(v);
	}
	cw_sb_verb_now(be, id, verb, arg, cb, ud);
}

static void cw_sb_verb_now(struct api_backend *be, const char *id,
			   enum api_verb verb, const char *arg,
			   api_done_fn cb, void *ud)
{
	struct cw *w = cw_of(be);
	struct sb_op *op;
	char *e;
	long g = 10;

	if (verb == API_VERB_SNAPSHOT) {
		cw_snap_create(be, id, arg, cb, ud);
		return;
	}
	if (verb != API_VERB_STOP && verb != API_VERB_DESTROY &&
	    verb != API_VERB_PING) {
		cb(ud, -EOPNOTSUPP, "cwsandbox: the platform has no "
		   "start, pause or resume of a sandbox (stop ends it for "
		   "good)");
		return;
	}
	if (verb == API_VERB_STOP && arg && *arg) {
		g = strtol(arg, &e, 10);
		if (*e || g < 0 || g > 3600) {
			cb(ud, -EINVAL, "stop GRACE: seconds, 0 to 3600");
			return;
		}
	}
	op = calloc(1, sizeof(*op));
	if (!op) {
		cb(ud, -ENOMEM, NULL);
		return;
	}
	op->be = be;
	op->dcb = cb;
	op->ud = ud;
	op->verb = verb;
	op->grace = verb == API_VERB_STOP ? (int)g : 0;
	snprintf(op->id, sizeof(op->id), "%s", id);
	op->deadline = cw_now_ms() + w->timeout_ms + op->grace * 1000LL;
	cw_post(w, &op->wk, verb_run);
}
