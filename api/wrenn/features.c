/* features.c - Wrenn's templates and port URLs for MOUNT/templates/ and
 * NAME/ports/PORT (wrenn.md section 7).
 *
 *  - templates: GET /v1/snapshots (the team's snapshots and the
 *    platform's templates, platform:true), DELETE /v1/snapshots/{name}
 *    (403 for a platform template: EPERM; 404: ENOENT; a 409 from a
 *    server that refuses a template in use: EBUSY).
 *  - ports: the proxy URL the SDK builds, {scheme}://{port}-{id}.{host of
 *    the base URL} (the path of the base URL dropped); nothing is asked of
 *    the server (the proxy answers 409 itself when the capsule is not
 *    running).  Wrenn does not say which ports listen: `ls NAME/ports/`
 *    is empty (sb_ports left out). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "api/wrenn/capsule.h"
#include "api/wrenn/features.h"
#include "api/wrenn/http.h"

struct feat_op {
	struct wrenn_work wk; /* first: posted to the loop */
	struct wrenn *w;
	char name[API_ID_MAX];
	unsigned port;
	api_tpl_fn lcb;
	api_done_fn dcb;
	api_str_fn scb;
	void *ud;
};

static struct feat_op *op_new(struct api_backend *be, const char *name)
{
	struct feat_op *op = calloc(1, sizeof(*op));

	if (!op)
		return NULL;
	op->w = wrenn_of(be);
	if (name)
		snprintf(op->name, sizeof(op->name), "%s", name);
	return op;
}

/* [A-Za-z0-9._-]{1,127}, not "." or "..": safe in a URL path. */
static bool name_ok(const char *s)
{
	size_t n = strlen(s);

	if (!n || n >= API_ID_MAX || !strcmp(s, ".") || !strcmp(s, ".."))
		return false;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		      (*s >= '0' && *s <= '9') || *s == '.' || *s == '_' ||
		      *s == '-'))
			return false;
	return true;
}

/* RFC 3339 (seconds, any fraction and offset); 0 when malformed. */
static time_t when(const char *s)
{
	struct tm tm = { 0 };
	const char *p = s ? strptime(s, "%Y-%m-%dT%H:%M:%S", &tm) : NULL;
	long off = 0;
	time_t t;

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
	}
	t = timegm(&tm);
	return t == (time_t)-1 ? 0 : t - off;
}

/* ---- templates ---------------------------------------------------------- */

static void list_got(void *ud, int err, const char *msg,
		     const struct wrenn_resp *r)
{
	struct feat_op *op = ud;
	struct api_template *ts = NULL;
	char **jsons = NULL;
	size_t n = 0, cap;
	const cJSON *it;

	if (err) {
		op->lcb(op->ud, err, msg, NULL, 0);
		free(op);
		return;
	}
	if (!cJSON_IsArray(r->json)) {
		op->lcb(op->ud, -EIO, "wrenn: the snapshot list is not a "
			"JSON array", NULL, 0);
		free(op);
		return;
	}
	cap = (size_t)cJSON_GetArraySize(r->json);
	ts = calloc(cap ? cap : 1, sizeof(*ts));
	jsons = calloc(cap ? cap : 1, sizeof(*jsons));
	if (!ts || !jsons) {
		free(ts);
		free(jsons);
		op->lcb(op->ud, -ENOMEM, "wrenn: out of memory", NULL, 0);
		free(op);
		return;
	}
	cJSON_ArrayForEach(it, r->json)
	{
		const cJSON *nm = cJSON_GetObjectItemCaseSensitive(it, "name");
		const cJSON *ty = cJSON_GetObjectItemCaseSensitive(it, "type");
		const cJSON *sz =
			cJSON_GetObjectItemCaseSensitive(it, "size_bytes");
		const cJSON *ca =
			cJSON_GetObjectItemCaseSensitive(it, "created_at");

		if (n == cap || !cJSON_IsString(nm) || !name_ok(nm->valuestring))
			continue;
		snprintf(ts[n].name, sizeof(ts[n].name), "%s", nm->valuestring);
		snprintf(ts[n].kind, sizeof(ts[n].kind), "%s",
			 cJSON_IsString(ty) ? ty->valuestring : "template");
		ts[n].size = cJSON_IsNumber(sz) ? (long long)sz->valuedouble
						: -1;
		ts[n].created = cJSON_IsString(ca) ? when(ca->valuestring) : 0;
		jsons[n] = cJSON_PrintUnformatted(it);
		ts[n].info_json = jsons[n];
		n++;
	}
	op->lcb(op->ud, 0, NULL, ts, n);
	for (size_t i = 0; i < n; i++)
		free(jsons[i]);
	free(jsons);
	free(ts);
	free(op);
}

static void list_run(struct wrenn *w, struct wrenn_work *wk)
{
	wrenn_call(w, "GET", "/v1/snapshots", NULL, list_got, wk);
}

void wrenn_tpl_list(struct api_backend *be, api_tpl_fn cb, void *ud)
{
	struct feat_op *op = op_new(be, NULL);

	if (!op) {
		cb(ud, -ENOMEM, "wrenn: out of memory", NULL, 0);
		return;
	}
	op->lcb = cb;
	op->ud = ud;
	wrenn_post(op->w, &op->wk, list_run);
}

static void delete_got(void *ud, int err, const char *msg,
		       const struct wrenn_resp *r)
{
	struct feat_op *op = ud;
	char m[320];

	(void)r;
	if (err == -EEXIST) { /* 409: the template is in use */
		snprintf(m, sizeof(m), "%s", msg ? msg : "in use");
		op->dcb(op->ud, -EBUSY, m);
	} else {
		op->dcb(op->ud, err, msg);
	}
	free(op);
}

static void delete_run(struct wrenn *w, struct wrenn_work *wk)
{
	struct feat_op *op = (struct feat_op *)wk;
	char path[API_ID_MAX + 32];

	snprintf(path, sizeof(path), "/v1/snapshots/%s", op->name);
	wrenn_call(w, "DELETE", path, NULL, delete_got, op);
}

void wrenn_tpl_delete(struct api_backend *be, const char *name,
		      api_done_fn cb, void *ud)
{
	struct feat_op *op;

	if (!name || !name_ok(name)) {
		cb(ud, -ENOENT, "wrenn: no such template");
		return;
	}
	op = op_new(be, name);
	if (!op) {
		cb(ud, -ENOMEM, "wrenn: out of memory");
		return;
	}
	op->dcb = cb;
	op->ud = ud;
	wrenn_post(op->w, &op->wk, delete_run);
}

/* ---- ports -------------------------------------------------------------- */

static void port_run(struct wrenn *w, struct wrenn_work *wk)
{
	struct feat_op *op = (struct feat_op *)wk;
	char id[API_ID_MAX], url[1024];
	const char *b = w->base, *host, *end;

	if (wrenn_id_valid(op->name))
		snprintf(id, sizeof(id), "%s", op->name);
	else if (wrenn_resolve(w, op->name, id, sizeof(id))) {
		op->scb(op->ud, -ENOENT, "wrenn: no such capsule", NULL);
		free(op);
		return;
	}
	host = strstr(b, "://");
	host = host ? host + 3 : b;
	end = host + strcspn(host, "/?#");
	if (end == host || (size_t)(end - host) > 512) {
		op->scb(op->ud, -EINVAL, "wrenn: the base URL has no host",
			NULL);
		free(op);
		return;
	}
	snprintf(url, sizeof(url), "%s://%u-%s.%.*s",
		 strncmp(b, "https:", 6) ? "http" : "https", op->port, id,
		 (int)(end - host), host);
	op->scb(op->ud, 0, NULL, url);
	free(op);
}

void wrenn_sb_port(struct api_backend *be, const char *id, unsigned port,
		   api_str_fn cb, void *ud)
{
	struct feat_op *op;

	if (!id || strlen(id) >= API_ID_MAX) {
		cb(ud, -ENOENT, "wrenn: no such capsule", NULL);
		return;
	}
	op = op_new(be, id);
	if (!op) {
		cb(ud, -ENOMEM, "wrenn: out of memory", NULL);
		return;
	}
	op->port = port;
	op->scb = cb;
	op->ud = ud;
	wrenn_post(op->w, &op->wk, port_run);
}
