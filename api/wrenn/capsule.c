/* capsule.c - Wrenn capsules: list, get, create, verbs, aliases, sh exec,
 * keep-alive pings.  Layer 2 (capsule.h): uses the transport and the
 * error mapping only; the files layer reaches it through hooks.
 *
 * Wrenn assigns capsule IDs (cl-...), so sbxfs keeps the user's NAME->ID
 * map on the client, per base URL, in a 0600 JSON file under
 * ~/.local/state/sbxfs/ that survives remounts.  Every change re-reads the
 * file first, so two mounts of the same platform do not undo each other's
 * aliases.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "api/wrenn/capsule.h"
#include "api/wrenn/http.h"

struct wrenn_alias {
	char name[API_ID_MAX];
	char id[API_ID_MAX];
};

/* Keep-alive registration: capsules with long work in progress. */
struct wrenn_keep {
	struct wrenn_keep *next;
	char id[API_ID_MAX];
	int refs;
	int64_t last_ms;
};

#define ALIAS_FILE_MAX (4u << 20)

/* ---- aliases ------------------------------------------------------------ */

bool wrenn_id_valid(const char *id)
{
	size_t i;

	if (strncmp(id, "cl-", 3) || strlen(id) != 28)
		return false;
	for (i = 3; i < 28; i++)
		if (!((id[i] >= '0' && id[i] <= '9') ||
		      (id[i] >= 'a' && id[i] <= 'z')))
			return false;
	return true;
}

void wrenn_alias_free(struct wrenn *w)
{
	free(w->aliases);
	w->aliases = NULL;
	w->naliases = 0;
}

static int alias_read(struct wrenn *w)
{
	struct wrenn_alias *a = NULL;
	const cJSON *al, *it;
	struct stat st;
	char *buf;
	cJSON *j;
	size_t n = 0, i = 0;
	ssize_t got;
	int fd;

	wrenn_alias_free(w);
	fd = open(w->state_path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? 0 : -errno;
	if (fstat(fd, &st) || st.st_size > ALIAS_FILE_MAX) {
		close(fd);
		return -EFBIG;
	}
	buf = malloc((size_t)st.st_size + 1);
	if (!buf) {
		close(fd);
		return -ENOMEM;
	}
	got = read(fd, buf, (size_t)st.st_size);
	close(fd);
	if (got < 0) {
		free(buf);
		return -EIO;
	}
	j = cJSON_ParseWithLength(buf, (size_t)got);
	free(buf);
	al = cJSON_GetObjectItemCaseSensitive(j, "aliases");
	cJSON_ArrayForEach(it, al) n++;
	if (n)
		a = calloc(n, sizeof(*a));
	if (n && !a) {
		cJSON_Delete(j);
		return -ENOMEM;
	}
	cJSON_ArrayForEach(it, al)
	{
		if (!cJSON_IsString(it) || !it->string ||
		    !wrenn_id_valid(it->valuestring) ||
		    strlen(it->string) >= API_ID_MAX)
			continue;
		snprintf(a[i].name, API_ID_MAX, "%s", it->string);
		snprintf(a[i].id, API_ID_MAX, "%s", it->valuestring);
		i++;
	}
	cJSON_Delete(j);
	w->aliases = a;
	w->naliases = i;
	return 0;
}

static int mkdir_p(char *path, mode_t mode)
{
	char *p;

	for (p = path + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(path, mode) && errno != EEXIST) {
			*p = '/';
			return -errno;
		}
		*p = '/';
	}
	return 0;
}

static int alias_write(struct wrenn *w)
{
	char tmp[sizeof(w->state_path) + 16];
	cJSON *j = cJSON_CreateObject(), *al;
	char *txt = NULL;
	size_t i, len;
	int fd, err = 0;

	al = cJSON_AddObjectToObject(j, "aliases");
	cJSON_AddStringToObject(j, "base_url", w->base);
	for (i = 0; al && i < w->naliases; i++)
		cJSON_AddStringToObject(al, w->aliases[i].name,
					w->aliases[i].id);
	txt = al ? cJSON_Print(j) : NULL;
	cJSON_Delete(j);
	if (!txt)
		return -ENOMEM;
	snprintf(tmp, sizeof(tmp), "%s", w->state_path);
	err = mkdir_p(tmp, 0700);
	if (err)
		goto out;
	snprintf(tmp, sizeof(tmp), "%s.%d", w->state_path, (int)getpid());
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		err = -errno;
		goto out;
	}
	len = strlen(txt);
	if (write(fd, txt, len) != (ssize_t)len || fsync(fd))
		err = -EIO;
	close(fd);
	if (!err && rename(tmp, w->state_path))
		err = -errno;
	if (err)
		unlink(tmp);
out:
	free(txt);
	if (err)
		api_log("wrenn: cannot save aliases to %s: %s",
			w->state_path, strerror(-err));
	return err;
}

static int alias_load(struct wrenn *w)
{
	int err = alias_read(w);

	if (err)
		api_log("wrenn: cannot read aliases %s: %s",
			w->state_path, strerror(-err));
	return err == -ENOENT ? 0 : err;
}

static const char *alias_name_of(struct wrenn *w, const char *id)
{
	size_t i;

	for (i = 0; i < w->naliases; i++)
		if (!strcmp(w->aliases[i].id, id))
			return w->aliases[i].name;
	return "";
}

/* name == NULL: drop every alias of id. */
static int alias_set(struct wrenn *w, const char *name, const char *id,
		     bool del)
{
	struct wrenn_alias *a;
	size_t i;

	alias_read(w);
	for (i = 0; i < w->naliases;) {
		if ((name && !strcmp(w->aliases[i].name, name)) ||
		    (del && !name && !strcmp(w->aliases[i].id, id))) {
			w->aliases[i] = w->aliases[--w->naliases];
			continue;
		}
		i++;
	}
	if (!del) {
		a = realloc(w->aliases, (w->naliases + 1) * sizeof(*a));
		if (!a)
			return -ENOMEM;
		w->aliases = a;
		snprintf(a[w->naliases].name, API_ID_MAX, "%s", name);
		snprintf(a[w->naliases].id, API_ID_MAX, "%s", id);
		w->naliases++;
	}
	return alias_write(w);
}

/* IDs seen destroyed: any later use is ENOENT without a round trip (the
 * platform would say 409 "not running" on file routes). */
void wrenn_gone_add(struct wrenn *w, const char *id)
{
	size_t i;

	for (i = 0; i < WRENN_GONE_MAX; i++)
		if (!strcmp(w->gone[i], id))
			return;
	snprintf(w->gone[w->gone_next], API_ID_MAX, "%s", id);
	w->gone_next = (w->gone_next + 1) % WRENN_GONE_MAX;
}

static bool gone(struct wrenn *w, const char *id)
{
	size_t i;

	for (i = 0; i < WRENN_GONE_MAX; i++)
		if (!strcmp(w->gone[i], id))
			return true;
	return false;
}

int wrenn_resolve(struct wrenn *w, const char *name_or_id, char *id,
		  size_t len)
{
	size_t i;

	if (gone(w, name_or_id))
		return -ENOENT;
	if (wrenn_id_valid(name_or_id)) {
		snprintf(id, len, "%s", name_or_id);
		return 0;
	}
	for (i = 0; i < w->naliases; i++)
		if (!strcmp(w->aliases[i].name, name_or_id)) {
			if (gone(w, w->aliases[i].id))
				return -ENOENT;
			snprintf(id, len, "%s", w->aliases[i].id);
			return 0;
		}
	return -ENOENT;
}

/* ---- capsule records ---------------------------------------------------- */

enum api_state wrenn_state_parse(const char *s)
{
	static const struct {
		const char *word;
		enum api_state st;
	} map[] = {
		{ "pending", API_ST_CREATING },
		{ "starting", API_ST_CREATING },
		{ "running", API_ST_RUNNING },
		{ "paused", API_ST_PAUSED },
		{ "hibernated", API_ST_PAUSED },
		/* a stopped capsule can never run again: it is gone */
		{ "stopped", API_ST_DESTROYED },
		{ "error", API_ST_FAILED },
		{ "missing", API_ST_UNKNOWN },
	};
	size_t i;

	for (i = 0; s && i < sizeof(map) / sizeof(map[0]); i++)
		if (!strcasecmp(s, map[i].word))
			return map[i].st;
	return API_ST_UNKNOWN;
}

/* RFC 3339 with seconds precision and any offset; 0 when malformed. */
static time_t rfc3339(const char *s)
{
	struct tm tm = { 0 };
	const char *p;
	long off = 0;
	time_t t;

	if (!s)
		return 0;
	p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
	if (!p)
		return 0;
	if (*p == '.')
		for (p++; *p >= '0' && *p <= '9'; p++)
			;
	if (*p == '+' || *p == '-') {
		int hh, mm;

		if (sscanf(p + 1, "%2d:%2d", &hh, &mm) != 2)
			return 0;
		off = (hh * 3600L + mm * 60L) * (*p == '-' ? -1 : 1);
	} else if (*p != 'Z' && *p != 'z') {
		return 0;
	}
	t = timegm(&tm);
	return t == (time_t)-1 ? 0 : t - off;
}

static const char *jstr(const cJSON *o, const char *k)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);

	return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* Fill sb from a Capsule object; info points into *info (caller frees). */
static int capsule_rec(struct wrenn *w, const cJSON *c, struct api_sandbox *sb,
		       char **info)
{
	const char *id = jstr(c, "id"), *t = jstr(c, "template");

	memset(sb, 0, sizeof(*sb));
	if (!id || !wrenn_id_valid(id))
		return -EPROTO;
	snprintf(sb->id, sizeof(sb->id), "%s", id);
	snprintf(sb->name, sizeof(sb->name), "%s", alias_name_of(w, id));
	snprintf(sb->template, sizeof(sb->template), "%s", t ? t : "");
	sb->state = wrenn_state_parse(jstr(c, "status"));
	if (sb->state == API_ST_DESTROYED)
		wrenn_gone_add(w, id);
	sb->created = rfc3339(jstr(c, "created_at"));
	if (sb->name[0]) {
		/* the record plus the client-side alias, so that `info`
		 * says which NAME points here */
		cJSON *d = cJSON_Duplicate(c, true);

		if (d && !cJSON_HasObjectItem(d, "name"))
			cJSON_AddStringToObject(d, "name", sb->name);
		*info = d ? cJSON_PrintUnformatted(d) : NULL;
		cJSON_Delete(d);
	} else {
		*info = cJSON_PrintUnformatted(c);
	}
	sb->info_json = *info;
	return 0;
}

/* ---- list --------------------------------------------------------------- */

struct list_op {
	struct wrenn_work wk;
	struct wrenn *w;
	api_list_fn cb;
	void *ud;
	cJSON *all;	/* array of capsule objects collected */
	int pending;	/* outstanding GETs */
	int err;
	char msg[256];
};

static void list_finish(struct list_op *op)
{
	struct api_sandbox *sbs = NULL;
	char **infos = NULL;
	size_t n = 0, i = 0;
	const cJSON *c;

	if (op->err)
		goto out;
	n = (size_t)cJSON_GetArraySize(op->all);
	sbs = calloc(n ? n : 1, sizeof(*sbs));
	infos = calloc(n ? n : 1, sizeof(*infos));
	if (!sbs || !infos) {
		op->err = -ENOMEM;
		goto out;
	}
	cJSON_ArrayForEach(c, op->all)
		if (!capsule_rec(op->w, c, &sbs[i], &infos[i]))
			i++;
out:
	if (op->err)
		op->cb(op->ud, op->err, op->msg, NULL, 0);
	else
		op->cb(op->ud, 0, NULL, sbs, i);
	for (n = 0; infos && n < i; n++)
		free(infos[n]);
	free(infos);
	free(sbs);
	cJSON_Delete(op->all);
	free(op);
}

struct list_get {
	struct list_op *op;
	char id[API_ID_MAX];
};

static void list_got_one(void *ud, int err, const char *msg,
			 const struct wrenn_resp *r)
{
	struct list_get *g = ud;
	struct list_op *op = g->op;

	(void)msg;
	if (!err && cJSON_IsObject(r->json) &&
	    wrenn_state_parse(jstr(r->json, "status")) == API_ST_DESTROYED) {
		/* stopped: gone for good; forget the name */
		wrenn_gone_add(op->w, g->id);
		err = -ENOENT;
	}
	if (!err && cJSON_IsObject(r->json))
		cJSON_AddItemToArray(op->all,
				     cJSON_Duplicate(r->json, true));
	else if (err == -ENOENT)
		/* destroyed behind our back: forget the name */
		alias_set(op->w, NULL, g->id, true);
	free(g);
	if (--op->pending == 0)
		list_finish(op);
}

static bool listed(const cJSON *all, const char *id)
{
	const cJSON *c;

	cJSON_ArrayForEach(c, all)
	{
		const char *cid = jstr(c, "id");

		if (cid && !strcmp(cid, id))
			return true;
	}
	return false;
}

static void list_got(void *ud, int err, const char *msg,
		     const struct wrenn_resp *r)
{
	struct list_op *op = ud;
	struct wrenn *w = op->w;
	char path[256];
	size_t i;

	if (err || !cJSON_IsArray(r->json)) {
		op->err = err ? err : -EPROTO;
		snprintf(op->msg, sizeof(op->msg), "%s",
			 err ? msg : "wrenn: capsule list is not an array");
		list_finish(op);
		return;
	}
	op->all = cJSON_Duplicate(r->json, true);
	if (!op->all) {
		op->err = -ENOMEM;
		snprintf(op->msg, sizeof(op->msg), "wrenn: out of memory");
		list_finish(op);
		return;
	}
	alias_read(w);
	/* The list hides stopped and error capsules (quirk 8): ask for the
	 * ones we named ourselves one by one. */
	op->pending = 1;
	for (i = 0; i < w->naliases; i++) {
		struct list_get *g;

		if (listed(op->all, w->aliases[i].id))
			continue;
		g = calloc(1, sizeof(*g));
		if (!g)
			continue;
		g->op = op;
		snprintf(g->id, sizeof(g->id), "%s", w->aliases[i].id);
		snprintf(path, sizeof(path), "/v1/capsules/%s", g->id);
		op->pending++;
		wrenn_call(w, "GET", path, NULL, list_got_one, g);
	}
	if (--op->pending == 0)
		list_finish(op);
}

static void list_run(struct wrenn *w, struct wrenn_work *wk)
{
	struct list_op *op = (struct list_op *)wk;

	wrenn_call(w, "GET", "/v1/capsules", NULL, list_got, op);
}

void wrenn_sb_list(struct api_backend *be, api_list_fn cb, void *ud)
{
	struct wrenn *w = wrenn_of(be);
	struct list_op *op = calloc(1, sizeof(*op));

	if (!op) {
		cb(ud, -ENOMEM, "wrenn: out of memory", NULL, 0);
		return;
	}
	op->w = w;
	op->cb = cb;
	op->ud = ud;
	wrenn_post(w, &op->wk, list_run);
}

/* ---- get / create ------------------------------------------------------- */

struct sb_op {
	struct wrenn_work wk;
	struct wrenn *w;
	api_sandbox_fn cb;
	void *ud;
	char id[API_ID_MAX];
	char name[API_ID_MAX];
	char *body;
	int64_t deadline;
	struct wrenn_timer timer;
	cJSON *before;	 /* create: capsule IDs listed before the POST */
	int tries;	 /* create: reconcile polls left */
};

static void sb_op_done(struct sb_op *op, int err, const char *msg,
		       const cJSON *c)
{
	struct api_sandbox sb;
	char *info = NULL;

	if (!err && capsule_rec(op->w, c, &sb, &info)) {
		err = -EPROTO;
		msg = "wrenn: malformed capsule record";
	}
	if (err)
		op->cb(op->ud, err, msg, NULL);
	else
		op->cb(op->ud, 0, NULL, &sb);
	free(info);
	cJSON_Delete(op->before);
	free(op->body);
	free(op);
}

static void get_got(void *ud, int err, const char *msg,
		    const struct wrenn_resp *r)
{
	struct sb_op *op = ud;

	if (!err && !cJSON_IsObject(r->json)) {
		err = -EPROTO;
		msg = "wrenn: capsule record is not an object";
	}
	sb_op_done(op, err, msg, r->json);
}

static void get_run(struct wrenn *w, struct wrenn_work *wk)
{
	struct sb_op *op = (struct sb_op *)wk;
	char path[256];

	/* get still answers for a destroyed ID: its record says so */
	if (wrenn_id_valid(op->name))
		snprintf(op->id, sizeof(op->id), "%s", op->name);
	else if (wrenn_resolve(w, op->name, op->id, sizeof(op->id))) {
		sb_op_done(op, -ENOENT, "wrenn: no such capsule", NULL);
		return;
	}
	snprintf(path, sizeof(path), "/v1/capsules/%s", op->id);
	wrenn_call(w, "GET", path, NULL, get_got, op);
}

static struct sb_op *sb_op_new(struct api_backend *be, const char *name,
			       api_sandbox_fn cb, void *ud)
{
	struct sb_op *op;

	if (!name || strlen(name) >= API_ID_MAX) {
		cb(ud, -ENAMETOOLONG, "wrenn: name too long", NULL);
		return NULL;
	}
	op = calloc(1, sizeof(*op));
	if (!op) {
		cb(ud, -ENOMEM, "wrenn: out of memory", NULL);
		return NULL;
	}
	op->w = wrenn_of(be);
	op->cb = cb;
	op->ud = ud;
	snprintf(op->name, sizeof(op->name), "%s", name);
	return op;
}

void wrenn_sb_get(struct api_backend *be, const char *id,
		  api_sandbox_fn cb, void *ud)
{
	struct sb_op *op = sb_op_new(be, id, cb, ud);

	if (op)
		wrenn_post(op->w, &op->wk, get_run);
}

static void create_poll(struct wrenn *w, struct wrenn_timer *t);

/* ---- orphan-free create --------------------------------------------------
 * A create whose answer never came (time-out, cut connection) may still
 * make a capsule on the server, which would show as an unnamed cl-
 * directory, and a retry would make another.  The platform takes no
 * client token on create, so the capsule is found by difference: the
 * capsule list just before the POST against the list after it, minus
 * what we know by name.  Exactly one newcomer is adopted under the name
 * the user asked for (or destroyed when the name was taken meanwhile or
 * none was given); none after a while means nothing was made; several
 * (other clients creating at the same moment) are left alone and
 * logged. */

static void reconcile_end(struct sb_op *op)
{
	cJSON_Delete(op->before);
	free(op->body);
	free(op);
}

static void reconcile_destroyed(void *ud, int err, const char *msg,
				const struct wrenn_resp *r)
{
	struct sb_op *op = ud;

	(void)r;
	if (err)
		api_log("wrenn: could not destroy capsule %s left by a "
			"timed-out create: %s", op->id, msg);
	else
		wrenn_gone_add(op->w, op->id);
	reconcile_end(op);
}

static void reconcile_poll(struct wrenn *w, struct wrenn_timer *t);

static void reconcile_listed(void *ud, int err, const char *msg,
			     const struct wrenn_resp *r)
{
	struct sb_op *op = ud;
	struct wrenn *w = op->w;
	const cJSON *c;
	const char *found = NULL;
	int n = 0;
	char path[256], id[API_ID_MAX];

	(void)msg;
	if (!err && cJSON_IsArray(r->json)) {
		alias_read(w);
		cJSON_ArrayForEach(c, r->json)
		{
			const char *cid = jstr(c, "id");

			if (!cid || listed(op->before, cid) || gone(w, cid) ||
			    alias_name_of(w, cid)[0])
				continue;
			found = cid;
			n++;
		}
	}
	if (n > 1) {
		api_log("wrenn: a create timed out and %d unknown capsules "
			"appeared meanwhile; none adopted", n);
		reconcile_end(op);
		return;
	}
	if (n == 0) {
		if (--op->tries > 0) {
			wrenn_timer_arm(w, &op->timer, 1000, reconcile_poll);
			return;
		}
		reconcile_end(op); /* nothing was made */
		return;
	}
	snprintf(op->id, sizeof(op->id), "%s", found);
	if (op->name[0] && wrenn_resolve(w, op->name, id, sizeof(id))) {
		alias_set(w, op->name, op->id, false);
		api_log("wrenn: capsule %s from a timed-out create adopted "
			"as %s", op->id, op->name);
		reconcile_end(op);
		return;
	}
	api_log("wrenn: destroying capsule %s left by a timed-out create",
		op->id);
	snprintf(path, sizeof(path), "/v1/capsules/%s", op->id);
	wrenn_call(w, "DELETE", path, NULL, reconcile_destroyed, op);
}

static void reconcile_poll(struct wrenn *w, struct wrenn_timer *t)
{
	struct sb_op *op = (struct sb_op *)((char *)t -
					    offsetof(struct sb_op, timer));

	wrenn_call(w, "GET", "/v1/capsules", NULL, reconcile_listed, op);
}

/* At shutdown: reconciles still waiting for their next poll are dropped
 * (their user was answered long ago); frees what they hold. */
static void reconcile_drop(struct wrenn_timer *t)
{
	reconcile_end((struct sb_op *)((char *)t -
				       offsetof(struct sb_op, timer)));
}

void wrenn_reconcile_drop_all(struct wrenn *w)
{
	wrenn_timer_drop_all(w, reconcile_poll, reconcile_drop);
}

/* The create failed without an answer: tell the user now, then look for
 * what the server may have made anyway (op lives on). */
static bool reconcile_start(struct sb_op *op, int err, const char *msg)
{
	if (op->id[0] || !op->before ||
	    !(err == -ETIMEDOUT || err == -ECONNRESET || err == -EIO ||
	      err == -EHOSTUNREACH || err == -ECONNABORTED))
		return false;
	op->cb(op->ud, err, msg, NULL);
	op->tries = (int)(2 * op->w->timeout_ms / 1000) + 5;
	if (op->tries > 60)
		op->tries = 60;
	wrenn_timer_arm(op->w, &op->timer, 500, reconcile_poll);
	return true;
}

static void create_check(void *ud, int err, const char *msg,
			 const struct wrenn_resp *r)
{
	struct sb_op *op = ud;
	enum api_state st;

	if (!err && !cJSON_IsObject(r->json)) {
		err = -EPROTO;
		msg = "wrenn: capsule record is not an object";
	}
	if (err) {
		if (!reconcile_start(op, err, msg))
			sb_op_done(op, err, msg, NULL);
		return;
	}
	if (!op->id[0]) {
		const char *id = jstr(r->json, "id");

		if (!id || !wrenn_id_valid(id)) {
			sb_op_done(op, -EPROTO, "wrenn: create answered "
				   "without a capsule ID", NULL);
			return;
		}
		snprintf(op->id, sizeof(op->id), "%s", id);
		if (op->name[0])
			alias_set(op->w, op->name, op->id, false);
	}
	st = wrenn_state_parse(jstr(r->json, "status"));
	/* Wrenn's create is synchronous (201 running); a pending answer
	 * from another server is polled until it settles. */
	if (st == API_ST_CREATING || st == API_ST_UNKNOWN) {
		if (wrenn_now_ms() < op->deadline) {
			wrenn_timer_arm(op->w, &op->timer, 500, create_poll);
			return;
		}
		sb_op_done(op, -ETIMEDOUT, "wrenn: capsule did not start in "
			   "time", NULL);
		return;
	}
	if (st == API_ST_FAILED || st == API_ST_STOPPED) {
		sb_op_done(op, -EIO, "wrenn: capsule failed to start", NULL);
		return;
	}
	sb_op_done(op, 0, NULL, r->json);
}

static void create_poll(struct wrenn *w, struct wrenn_timer *t)
{
	struct sb_op *op = (struct sb_op *)((char *)t -
					    offsetof(struct sb_op, timer));
	char path[256];

	snprintf(path, sizeof(path), "/v1/capsules/%s", op->id);
	w->loop.op_deadline = op->deadline; /* still the mkdir's */
	wrenn_call(w, "GET", path, NULL, create_check, op);
}

static void create_post(struct sb_op *op)
{
	op->deadline = wrenn_deadline(op->w);
	wrenn_call(op->w, "POST", "/v1/capsules", op->body, create_check, op);
}

static void create_snapped(void *ud, int err, const char *msg,
			   const struct wrenn_resp *r)
{
	struct sb_op *op = ud;

	(void)msg;
	/* without the list a lost create cannot be found again, but the
	 * create itself may still work */
	if (!err && cJSON_IsArray(r->json))
		op->before = cJSON_Duplicate(r->json, true);
	if (err == -ETIMEDOUT) {
		sb_op_done(op, err, msg, NULL);
		return;
	}
	create_post(op);
}

/* List first (what exists before), then create. */
static void create_snap(struct sb_op *op)
{
	wrenn_call(op->w, "GET", "/v1/capsules", NULL, create_snapped, op);
}

/* An alias that already exists: usable again only when its capsule is
 * gone or stopped. */
static void create_old(void *ud, int err, const char *msg,
		       const struct wrenn_resp *r)
{
	struct sb_op *op = ud;
	enum api_state st = API_ST_UNKNOWN;

	if (!err)
		st = wrenn_state_parse(jstr(r->json, "status"));
	if (err == -ENOENT || (!err && (st == API_ST_STOPPED ||
					st == API_ST_FAILED))) {
		alias_set(op->w, op->name, "", true);
		op->id[0] = '\0';
		create_snap(op);
		return;
	}
	if (!err) {
		err = -EEXIST;
		msg = "wrenn: a capsule with that name exists";
	}
	sb_op_done(op, err, msg, NULL);
}

static void create_run(struct wrenn *w, struct wrenn_work *wk)
{
	struct sb_op *op = (struct sb_op *)wk;
	char path[256];

	alias_read(w);
	if (op->name[0] && !wrenn_resolve(w, op->name, op->id,
					  sizeof(op->id))) {
		snprintf(path, sizeof(path), "/v1/capsules/%s", op->id);
		wrenn_call(w, "GET", path, NULL, create_old, op);
		return;
	}
	op->id[0] = '\0';
	create_snap(op);
}

static int kv_int(const char *v, long *out)
{
	char *end;

	errno = 0;
	*out = strtol(v, &end, 10);
	return errno || end == v || *end || *out < 0 || *out > 1000000 ?
		       -EINVAL : 0;
}

/* The JSON body of POST /v1/capsules from key=value settings. */
static char *create_body(const struct api_kv *kv, size_t nkv, char *msg,
			 size_t msglen)
{
	cJSON *j = cJSON_CreateObject();
	char *txt = NULL;
	size_t i;
	long n;

	for (i = 0; j && i < nkv; i++) {
		const char *k = kv[i].key, *v = kv[i].value ? kv[i].value : "";
		const char *field = NULL;

		if (!strcmp(k, "template")) {
			cJSON_DeleteItemFromObject(j, "template");
			cJSON_AddStringToObject(j, "template", v);
			continue;
		}
		if (!strcmp(k, "vcpus") || !strcmp(k, "cpus"))
			field = "vcpus";
		else if (!strcmp(k, "memory_mb") || !strcmp(k, "memory"))
			field = "memory_mb";
		else if (!strcmp(k, "timeout_sec") || !strcmp(k, "timeout"))
			field = "timeout_sec";
		if (!field) {
			snprintf(msg, msglen, "wrenn: unknown setting '%s' "
				 "(template, vcpus, memory_mb, timeout_sec)",
				 k);
			goto bad;
		}
		if (kv_int(v, &n)) {
			snprintf(msg, msglen, "wrenn: %s wants a number, not "
				 "'%s'", k, v);
			goto bad;
		}
		cJSON_DeleteItemFromObject(j, field);
		cJSON_AddNumberToObject(j, field, (double)n);
	}
	/* never an empty body: Wrenn answers 400 to that (quirk 5) */
	txt = j ? cJSON_PrintUnformatted(j) : NULL;
bad:
	cJSON_Delete(j);
	return txt;
}

void wrenn_sb_create(struct api_backend *be, const char *name,
		     const struct api_kv *kv, size_t nkv, api_sandbox_fn cb,
		     void *ud)
{
	struct sb_op *op;
	char msg[256] = "wrenn: out of memory";

	if (!name)
		name = "";
	if (strchr(name, '/') || !strcmp(name, ".") || !strcmp(name, "..") ||
	    wrenn_id_valid(name)) {
		cb(ud, -EINVAL, "wrenn: a capsule name may not contain '/' "
		   "or look like a capsule ID", NULL);
		return;
	}
	op = sb_op_new(be, name, cb, ud);
	if (!op)
		return;
	op->body = create_body(kv, nkv, msg, sizeof(msg));
	if (!op->body) {
		cb(ud, strcmp(msg, "wrenn: out of memory") ? -EINVAL :
		   -ENOMEM, msg, NULL);
		free(op);
		return;
	}
	wrenn_post(op->w, &op->wk, create_run);
}

/* ---- verbs -------------------------------------------------------------- */

struct verb_op {
	struct wrenn_work wk;
	struct wrenn *w;
	api_done_fn cb;
	void *ud;
	enum api_verb verb;
	char id[API_ID_MAX];
	char name[API_ID_MAX];
	char arg[API_ID_MAX];
	char msg[256];
	bool was_running;
};

static void verb_done(struct verb_op *op, int err, const char *msg)
{
	op->cb(op->ud, err, err ? msg : NULL);
	free(op);
}

static void verb_got(void *ud, int err, const char *msg,
		     const struct wrenn_resp *r);

/* After a 409: is the capsule already where the verb wanted it? */
static void verb_recheck(void *ud, int err, const char *msg,
			 const struct wrenn_resp *r)
{
	struct verb_op *op = ud;
	enum api_state st, want;

	want = op->verb == API_VERB_PAUSE ? API_ST_PAUSED : API_ST_RUNNING;
	st = err ? API_ST_UNKNOWN : wrenn_state_parse(jstr(r->json, "status"));
	if (st == want) {
		verb_done(op, 0, NULL);
		return;
	}
	if (st == API_ST_DESTROYED)
		wrenn_gone_add(op->w, op->id);
	verb_done(op, st == API_ST_DESTROYED ? -ENOENT : -EBUSY,
		  op->msg[0] ? op->msg : msg);
}

static void verb_got(void *ud, int err, const char *msg,
		     const struct wrenn_resp *r)
{
	struct verb_op *op = ud;
	char path[256];

	(void)r;
	if (op->verb == API_VERB_DESTROY && (!err || err == -ENOENT)) {
		alias_set(op->w, NULL, op->id, true);
		wrenn_capsule_changed(op->w, op->id, NULL);
		wrenn_gone_add(op->w, op->id);
	}
	if (err == -EBUSY && (op->verb == API_VERB_PAUSE ||
			      op->verb == API_VERB_RESUME)) {
		/* pause when paused, resume when running: already there */
		snprintf(op->msg, sizeof(op->msg), "%s", msg);
		snprintf(path, sizeof(path), "/v1/capsules/%s", op->id);
		wrenn_call(op->w, "GET", path, NULL, verb_recheck, op);
		return;
	}
	verb_done(op, err, msg);
}

/* Destroy: Wrenn answers 204 for an already stopped capsule too; that
 * one is gone, so say ENOENT as for any missing sandbox. */
static void destroy_checked(void *ud, int err, const char *msg,
			    const struct wrenn_resp *r)
{
	struct verb_op *op = ud;
	char path[256];

	if (!err && wrenn_state_parse(jstr(r->json, "status")) ==
			    API_ST_DESTROYED) {
		err = -ENOENT;
		msg = "wrenn: capsule already destroyed";
	}
	if (err) {
		if (err == -ENOENT) {
			alias_set(op->w, NULL, op->id, true);
			wrenn_gone_add(op->w, op->id);
		}
		verb_done(op, err, msg);
		return;
	}
	snprintf(path, sizeof(path), "/v1/capsules/%s", op->id);
	wrenn_call(op->w, "DELETE", path, NULL, verb_got, op);
}

static void snap_resumed(void *ud, int err, const char *msg,
			 const struct wrenn_resp *r)
{
	struct verb_op *op = ud;

	(void)r;
	if (err) {
		char m[400];

		snprintf(m, sizeof(m), "wrenn: snapshot taken, but the "
			 "capsule stayed paused: %s", msg);
		verb_done(op, err, m);
		return;
	}
	verb_done(op, 0, NULL);
}

static void snap_taken(void *ud, int err, const char *msg,
		       const struct wrenn_resp *r)
{
	struct verb_op *op = ud;
	char path[256];

	(void)r;
	if (err || !op->was_running) {
		verb_done(op, err, msg);
		return;
	}
	/* Wrenn leaves the source paused (quirk 36); give it back in the
	 * state it had, as the local backend does. */
	snprintf(path, sizeof(path), "/v1/capsules/%s/resume", op->id);
	wrenn_call(op->w, "POST", path, NULL, snap_resumed, op);
}

static void snap_state(void *ud, int err, const char *msg,
		       const struct wrenn_resp *r)
{
	struct verb_op *op = ud;
	cJSON *j;
	char *body;

	if (err) {
		verb_done(op, err, msg);
		return;
	}
	op->was_running = wrenn_state_parse(jstr(r->json, "status")) ==
			  API_ST_RUNNING;
	j = cJSON_CreateObject();
	cJSON_AddStringToObject(j, "sandbox_id", op->id);
	cJSON_AddStringToObject(j, "name", op->arg);
	body = cJSON_PrintUnformatted(j);
	cJSON_Delete(j);
	if (!body) {
		verb_done(op, -ENOMEM, "wrenn: out of memory");
		return;
	}
	wrenn_call(op->w, "POST", "/v1/snapshots", body, snap_taken, op);
	free(body);
}

static void verb_go(struct wrenn *w, struct wrenn_work *wk);

/* Small files queued for the capsule (api/rfile.c) landed: go on. */
static void verb_synced(void *ud)
{
	struct verb_op *op = ud;

	wrenn_post(op->w, &op->wk, verb_go);
}

static void verb_run(struct wrenn *w, struct wrenn_work *wk)
{
	struct verb_op *op = (struct verb_op *)wk;

	if (wrenn_resolve(w, op->name, op->id, sizeof(op->id))) {
		verb_done(op, -ENOENT, "wrenn: no such capsule");
		return;
	}
	/* what a snapshot, a pause or the end must not miss: our writes */
	if ((op->verb == API_VERB_PAUSE || op->verb == API_VERB_SNAPSHOT ||
	     op->verb == API_VERB_DESTROY) &&
	    wrenn_capsule_sync(w, op->id, verb_synced, op))
		return;
	verb_go(w, wk);
}

static void verb_go(struct wrenn *w, struct wrenn_work *wk)
{
	struct verb_op *op = (struct verb_op *)wk;
	static const char *const sub[API_VERB__COUNT] = {
		[API_VERB_PAUSE] = "pause",
		[API_VERB_RESUME] = "resume",
		[API_VERB_PING] = "ping",
	};
	char path[256];

	switch (op->verb) {
	case API_VERB_PAUSE:
	case API_VERB_RESUME:
	case API_VERB_PING:
		snprintf(path, sizeof(path), "/v1/capsules/%s/%s", op->id,
			 sub[op->verb]);
		wrenn_call(w, "POST", path, NULL, verb_got, op);
		break;
	case API_VERB_DESTROY:
		snprintf(path, sizeof(path), "/v1/capsules/%s", op->id);
		wrenn_call(w, "GET", path, NULL, destroy_checked, op);
		break;
	case API_VERB_SNAPSHOT:
		snprintf(path, sizeof(path), "/v1/capsules/%s", op->id);
		wrenn_call(w, "GET", path, NULL, snap_state, op);
		break;
	default:
		verb_done(op, -EOPNOTSUPP, "wrenn: capsules cannot be "
			  "started or stopped, only paused and resumed");
	}
}

void wrenn_sb_verb(struct api_backend *be, const char *id,
		   enum api_verb verb, const char *arg, api_done_fn cb,
		   void *ud)
{
	struct verb_op *op;
	const char *p;

	if (verb == API_VERB_SNAPSHOT) {
		/* the platform's SafeName rule; refuse early and clearly */
		if (!arg || !arg[0] || strlen(arg) > 64) {
			cb(ud, -EINVAL, "wrenn: snapshot needs a NAME of 1-64 "
			   "characters");
			return;
		}
		for (p = arg; *p; p++)
			if (!((*p >= 'a' && *p <= 'z') ||
			      (*p >= 'A' && *p <= 'Z') ||
			      (*p >= '0' && *p <= '9') ||
			      (p > arg && strchr("._-", *p)))) {
				cb(ud, -EINVAL, "wrenn: snapshot NAME may "
				   "use letters, digits, '.', '_', '-'");
				return;
			}
	}
	if (!id || strlen(id) >= API_ID_MAX) {
		cb(ud, -ENOENT, "wrenn: no such capsule");
		return;
	}
	op = calloc(1, sizeof(*op));
	if (!op) {
		cb(ud, -ENOMEM, "wrenn: out of memory");
		return;
	}
	op->w = wrenn_of(be);
	op->cb = cb;
	op->ud = ud;
	op->verb = verb;
	snprintf(op->name, sizeof(op->name), "%s", id);
	snprintf(op->arg, sizeof(op->arg), "%s", arg ? arg : "");
	wrenn_post(op->w, &op->wk, verb_run);
}

/* ---- foreground sh exec (helpers: joins, kills) ------------------------- */

struct sh_op {
	struct wrenn *w;
	char id[API_ID_MAX];
	wrenn_sh_cb cb;
	void *ud;
	bool keep_listings; /* the caller knows what the command changed */
};

static char *field_decode(const cJSON *v, bool b64, size_t *len)
{
	const char *s = cJSON_IsString(v) ? v->valuestring : "";
	size_t n = strlen(s), i, o = 0;
	unsigned acc = 0;
	int bits = 0;
	char *out = malloc(n + 1);

	if (!out)
		return NULL;
	if (!b64) {
		memcpy(out, s, n + 1);
		*len = n;
		return out;
	}
	for (i = 0; i < n; i++) {
		const char *tbl = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnop"
				  "qrstuvwxyz0123456789+/";
		const char *p = strchr(tbl, s[i]);

		if (s[i] == '=' || !p || !s[i])
			continue;
		acc = (acc << 6) | (unsigned)(p - tbl);
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (char)((acc >> bits) & 0xff);
		}
	}
	out[o] = '\0';
	*len = o;
	return out;
}

static void sh_got(void *ud, int err, const char *msg,
		   const struct wrenn_resp *r)
{
	struct sh_op *op = ud;
	const cJSON *code;
	char *out = NULL, *errs = NULL;
	size_t olen = 0, elen = 0;
	bool b64;
	int c = -1;

	if (!op->keep_listings)
		wrenn_capsule_changed(op->w, op->id, NULL);
	if (!err) {
		code = cJSON_GetObjectItemCaseSensitive(r->json, "exit_code");
		if (!cJSON_IsNumber(code)) {
			err = -EPROTO;
			msg = "wrenn: exec answer without exit_code";
		} else {
			c = code->valueint;
		}
	}
	if (!err) {
		const char *enc = jstr(r->json, "encoding");

		b64 = enc && !strcmp(enc, "base64");
		out = field_decode(cJSON_GetObjectItemCaseSensitive(
					   r->json, "stdout"), b64, &olen);
		errs = field_decode(cJSON_GetObjectItemCaseSensitive(
					    r->json, "stderr"), b64, &elen);
		if (errs)
			errs[strcspn(errs, "\n")] = '\0';
		msg = errs && errs[0] ? errs : NULL;
	}
	op->cb(op->ud, err, msg, c, out ? out : "");
	free(out);
	free(errs);
	free(op);
}

static void sh_run(struct wrenn *w, const char *id, const char *script,
		   wrenn_sh_cb cb, void *ud, bool keep);

void wrenn_sh(struct wrenn *w, const char *id, const char *script,
	      wrenn_sh_cb cb, void *ud)
{
	sh_run(w, id, script, cb, ud, false);
}

void wrenn_sh_keep(struct wrenn *w, const char *id, const char *script,
		   wrenn_sh_cb cb, void *ud)
{
	sh_run(w, id, script, cb, ud, true);
}

static void sh_run(struct wrenn *w, const char *id, const char *script,
		   wrenn_sh_cb cb, void *ud, bool keep)
{
	struct sh_op *op = calloc(1, sizeof(*op));
	cJSON *j = cJSON_CreateObject(), *args;
	char path[256], *body = NULL;
	long t = (long)((wrenn_deadline(w) - wrenn_now_ms()) / 1000);

	args = cJSON_AddArrayToObject(j, "args");
	cJSON_AddItemToArray(args, cJSON_CreateString("-c"));
	cJSON_AddItemToArray(args, cJSON_CreateString(script));
	cJSON_AddStringToObject(j, "cmd", "/bin/sh");
	/* the server's own bound, below ours so its 502 reaches us */
	cJSON_AddNumberToObject(j, "timeout_sec", t > 2 ? t - 1 : 1);
	body = args ? cJSON_PrintUnformatted(j) : NULL;
	cJSON_Delete(j);
	if (!op || !body) {
		free(op);
		free(body);
		cb(ud, -ENOMEM, "wrenn: out of memory", -1, "");
		return;
	}
	op->w = w;
	snprintf(op->id, sizeof(op->id), "%s", id);
	op->cb = cb;
	op->ud = ud;
	op->keep_listings = keep;
	snprintf(path, sizeof(path), "/v1/capsules/%s/exec", id);
	wrenn_call(w, "POST", path, body, sh_got, op);
	free(body);
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

static int64_t keeps_run(struct wrenn *w)
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
	return w->keeps ? w->ping_ms : -1;
}

static const struct wrenn_turn keep_turn = { .run = keeps_run };

void wrenn_keep_free_all(struct wrenn *w)
{
	while (w->keeps) {
		struct wrenn_keep *k = w->keeps;

		w->keeps = k->next;
		free(k);
	}
}

/* ---- set-up and the hooks of the files layer ---------------------------- */

int wrenn_capsule_init(struct wrenn *w,
		       const struct wrenn_capsule_hooks *hooks)
{
	int err = alias_load(w);

	if (err)
		return err;
	w->hooks = hooks;
	return wrenn_loop_add(w, &keep_turn);
}

int wrenn_capsule_sync(struct wrenn *w, const char *id,
		       void (*done)(void *ud), void *ud)
{
	return w->hooks && w->hooks->sync ? w->hooks->sync(w, id, done, ud) :
					    0;
}

void wrenn_capsule_changed(struct wrenn *w, const char *id, const char *dir)
{
	if (w->hooks && w->hooks->changed)
		w->hooks->changed(w, id, dir);
}
