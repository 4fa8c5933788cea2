/* capsule.c - capsule records and the lifecycle and snapshot endpoints.
 *
 * The local sandbox named after the capsule ID is the real thing; this
 * file keeps what Wrenn stores beside it (sizes, TTL, timestamps, stopped
 * capsules) in DATADIR/server-capsules/ID.json, and reconciles the status
 * with the backend on every read.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "srv.h"

#define CAPS_MAX 4096

static struct srv_capsule *caps[CAPS_MAX];	/* under srv_g.lock */
static size_t ncaps;

bool srv_id_valid(const char *id)
{
	return strlen(id) == 28 && !strncmp(id, "cl-", 3) &&
	       strspn(id + 3, "0123456789abcdefghijklmnopqrstuvwxyz") == 25;
}

/* Wrenn's SafeName: ^[a-zA-Z0-9][a-zA-Z0-9._-]{0,63}$ */
static bool safe_name(const char *s)
{
	static const char ok[] = "abcdefghijklmnopqrstuvwxyz"
				 "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
	size_t n = strlen(s);

	if (!n || n > 64 || !strchr(ok, s[0]))
		return false;
	return strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
			 "0123456789._-") == n;
}

static int rnd(void *p, size_t n)
{
	int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
	ssize_t got;

	if (fd < 0)
		return -errno;
	got = read(fd, p, n);
	close(fd);
	return got == (ssize_t)n ? 0 : -EIO;
}

/* cl- + a random 128-bit number in base36, 25 digits. */
static int new_id(char *out)
{
	unsigned char v[16];
	int i, j;

	if (rnd(v, sizeof(v)))
		return -EIO;
	memcpy(out, "cl-", 3);
	for (i = 27; i >= 3; i--) {
		unsigned rem = 0;

		for (j = 0; j < 16; j++) {
			unsigned cur = (rem << 8) | v[j];

			v[j] = cur / 36;
			rem = cur % 36;
		}
		out[i] = "0123456789abcdefghijklmnopqrstuvwxyz"[rem];
	}
	out[28] = '\0';
	return 0;
}

static struct srv_capsule *find_locked(const char *id)
{
	size_t i;

	for (i = 0; i < ncaps; i++)
		if (!strcmp(caps[i]->id, id))
			return caps[i];
	return NULL;
}

static void save_locked(const struct srv_capsule *c)
{
	char path[700], tmp[720];
	cJSON *o = cJSON_CreateObject();
	char *s;
	FILE *f;

	if (!o)
		return;
	cJSON_AddStringToObject(o, "id", c->id);
	cJSON_AddStringToObject(o, "status", c->status);
	cJSON_AddStringToObject(o, "template", c->template);
	cJSON_AddNumberToObject(o, "vcpus", c->vcpus);
	cJSON_AddNumberToObject(o, "memory_mb", c->memory_mb);
	cJSON_AddNumberToObject(o, "timeout_sec", c->timeout_sec);
	cJSON_AddNumberToObject(o, "created_at", (double)c->created_at);
	cJSON_AddNumberToObject(o, "started_at", (double)c->started_at);
	cJSON_AddNumberToObject(o, "last_active", (double)c->last_active);
	cJSON_AddNumberToObject(o, "last_updated", (double)c->last_updated);
	s = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	if (!s)
		return;
	snprintf(path, sizeof(path), "%s/server-capsules/%s.json",
		 srv_g.datadir, c->id);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	f = fopen(tmp, "w");
	if (f) {
		fputs(s, f);
		if (fclose(f) == 0)
			rename(tmp, path);
		else
			unlink(tmp);
	}
	free(s);
}

static void set_status_locked(struct srv_capsule *c, const char *st)
{
	if (!strcmp(c->status, st))
		return;
	snprintf(c->status, sizeof(c->status), "%s", st);
	c->last_updated = time(NULL);
	save_locked(c);
}

static int num(const cJSON *o, const char *k)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);

	return cJSON_IsNumber(v) ? (int)v->valuedouble : 0;
}

static void str(const cJSON *o, const char *k, char *out, size_t len)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);

	snprintf(out, len, "%s", cJSON_IsString(v) ? v->valuestring : "");
}

int srv_capsules_load(void)
{
	char dir[600], path[900], buf[4096];
	struct dirent *de;
	int rc = 0;
	DIR *d;

	snprintf(dir, sizeof(dir), "%s/server-capsules", srv_g.datadir);
	if (mkdir(dir, 0700) && errno != EEXIST)
		return -errno;
	d = opendir(dir);
	if (!d)
		return -errno;
	pthread_mutex_lock(&srv_g.lock);
	while ((de = readdir(d)) && ncaps < CAPS_MAX) {
		struct srv_capsule *c;
		size_t n;
		cJSON *o;
		FILE *f;

		n = strlen(de->d_name);
		if (n != 33 || strcmp(de->d_name + 28, ".json"))
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		f = fopen(path, "r");
		if (!f)
			continue;
		n = fread(buf, 1, sizeof(buf) - 1, f);
		fclose(f);
		buf[n] = '\0';
		o = cJSON_Parse(buf);
		c = calloc(1, sizeof(*c));
		if (!o || !c) {
			cJSON_Delete(o);
			free(c);
			rc = -EINVAL;
			continue;
		}
		str(o, "id", c->id, sizeof(c->id));
		str(o, "status", c->status, sizeof(c->status));
		str(o, "template", c->template, sizeof(c->template));
		c->vcpus = num(o, "vcpus");
		c->memory_mb = num(o, "memory_mb");
		c->timeout_sec = num(o, "timeout_sec");
		c->created_at = num(o, "created_at");
		c->started_at = num(o, "started_at");
		c->last_active = num(o, "last_active");
		c->last_updated = num(o, "last_updated");
		cJSON_Delete(o);
		if (!srv_id_valid(c->id)) {
			free(c);
			continue;
		}
		caps[ncaps++] = c;
	}
	pthread_mutex_unlock(&srv_g.lock);
	closedir(d);
	return rc;
}

int srv_capsule_get(const char *id, struct srv_capsule *out)
{
	struct srv_capsule *c;
	int rc = -ENOENT;

	pthread_mutex_lock(&srv_g.lock);
	c = find_locked(id);
	if (c) {
		*out = *c;
		rc = 0;
	}
	pthread_mutex_unlock(&srv_g.lock);
	return rc;
}

void srv_capsule_touch(const char *id)
{
	struct srv_capsule *c;

	pthread_mutex_lock(&srv_g.lock);
	c = find_locked(id);
	if (c)
		c->last_active = time(NULL);
	pthread_mutex_unlock(&srv_g.lock);
}

/* Wrenn's status word for a backend state. */
static const char *wstatus(enum api_state st)
{
	switch (st) {
	case API_ST_CREATING:
		return "pending";
	case API_ST_RUNNING:
		return "running";
	case API_ST_PAUSED:
		return "paused";
	case API_ST_FAILED:
		return "error";
	case API_ST_UNKNOWN:
		return NULL;
	default:
		return "stopped";
	}
}

/* Reconcile one record with the backend (worker thread). */
static void refresh(const char *id)
{
	struct api_sandbox sb;
	struct srv_capsule *c;
	const char *st = NULL;
	char msg[256];
	int rc;

	rc = srv_sb_get(id, &sb, msg, sizeof(msg));
	if (!rc)
		st = wstatus(sb.state);
	else if (rc == -ENOENT)
		st = "stopped";
	pthread_mutex_lock(&srv_g.lock);
	c = find_locked(id);
	if (c && st && strcmp(c->status, "pending") &&
	    strcmp(c->status, "error"))
		set_status_locked(c, st);
	pthread_mutex_unlock(&srv_g.lock);
}

static void refresh_all(void)
{
	struct api_sandbox *sbs;
	size_t n, i, j;
	char msg[256];

	if (srv_sb_list(&sbs, &n, msg, sizeof(msg)))
		return;
	pthread_mutex_lock(&srv_g.lock);
	for (i = 0; i < ncaps; i++) {
		struct srv_capsule *c = caps[i];
		const char *st = "stopped";

		if (!strcmp(c->status, "pending") ||
		    !strcmp(c->status, "error") ||
		    !strcmp(c->status, "stopped"))
			continue;
		for (j = 0; j < n; j++)
			if (!strcmp(sbs[j].id, c->id))
				break;
		if (j < n)
			st = wstatus(sbs[j].state);
		if (st)
			set_status_locked(c, st);
	}
	pthread_mutex_unlock(&srv_g.lock);
	free(sbs);
}

static void capsule_json(struct srv_buf *b, const struct srv_capsule *c)
{
	static char kernel[128];
	char t[40];

	if (!kernel[0]) {
		struct utsname u;

		if (!uname(&u))
			snprintf(kernel, sizeof(kernel), "%s", u.release);
	}
	srv_buf_addf(b, "{\"id\":\"%s\",\"status\":\"%s\",\"template\":",
		     c->id, c->status);
	srv_json_str(b, c->template, strlen(c->template));
	srv_buf_addf(b, ",\"vcpus\":%d,\"memory_mb\":%d,\"timeout_sec\":%d",
		     c->vcpus, c->memory_mb, c->timeout_sec);
	if (strcmp(c->status, "pending"))
		srv_buf_addf(b, ",\"host_ip\":\"127.0.0.1\"");
	srv_rfc3339(c->created_at, t, sizeof(t));
	srv_buf_addf(b, ",\"created_at\":\"%s\"", t);
	if (c->started_at) {
		srv_rfc3339(c->started_at, t, sizeof(t));
		srv_buf_addf(b, ",\"started_at\":\"%s\"", t);
	}
	if (c->last_active) {
		srv_rfc3339(c->last_active, t, sizeof(t));
		srv_buf_addf(b, ",\"last_active_at\":\"%s\"", t);
	}
	srv_rfc3339(c->last_updated, t, sizeof(t));
	srv_buf_addf(b, ",\"last_updated\":\"%s\"", t);
	if (strcmp(c->status, "pending"))
		srv_buf_addf(b, ",\"metadata\":{\"agent_version\":\"sbxfs-"
			     "server %s\",\"kernel_version\":\"%s\"}",
			     SBXFS_VERSION, kernel);
	srv_buf_addf(b, "}");
}

static void answer_capsule(struct srv_req *r, int status, const char *id)
{
	struct srv_capsule c;
	struct srv_buf b;

	if (srv_capsule_get(id, &c)) {
		srv_error(r, 404, "not_found", "sandbox not found");
		return;
	}
	srv_buf_init(&b, 65536);
	capsule_json(&b, &c);
	srv_json(r, status, &b);
	srv_buf_free(&b);
}

/* Parse a JSON object body; answers 400 itself and returns NULL. */
static cJSON *json_body(struct srv_req *r)
{
	struct srv_buf b;
	cJSON *o;
	int rc;

	rc = srv_read_all(r, &b, SRV_JSON_MAX);
	if (rc == -EPIPE) {
		srv_buf_free(&b);
		return NULL;
	}
	o = rc || !b.p ? NULL : cJSON_ParseWithLength(b.p, b.len);
	srv_buf_free(&b);
	if (!o || !cJSON_IsObject(o)) {
		cJSON_Delete(o);
		srv_error(r, 400, "invalid_request", "invalid JSON body");
		return NULL;
	}
	return o;
}

/* A Go int field: absent/null = 0; a wrong type fails the decode. */
static int int_field(const cJSON *o, const char *k, int *out)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);

	*out = 0;
	if (!v || cJSON_IsNull(v))
		return 0;
	if (!cJSON_IsNumber(v) || v->valuedouble != (double)(long)v->valuedouble)
		return -EINVAL;
	*out = (int)v->valuedouble;
	return 0;
}

static int str_field(const cJSON *o, const char *k, const char **out)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);

	*out = NULL;
	if (!v || cJSON_IsNull(v))
		return 0;
	if (!cJSON_IsString(v))
		return -EINVAL;
	*out = v->valuestring;
	return 0;
}

static bool template_exists(const char *name)
{
	char p[700];
	struct stat st;

	snprintf(p, sizeof(p), "%s/templates/%s", srv_g.datadir, name);
	return !stat(p, &st) && S_ISDIR(st.st_mode);
}

/* Stored sizes of a snapshot: 0 when known. */
static int snap_meta(const char *name, int *vcpus, int *mem, time_t *ct)
{
	char p[700], buf[1024];
	size_t n;
	cJSON *o;
	FILE *f;

	snprintf(p, sizeof(p), "%s/server-snapshots/%s.json", srv_g.datadir,
		 name);
	f = fopen(p, "r");
	if (!f)
		return -ENOENT;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	o = cJSON_Parse(buf);
	if (!o)
		return -EINVAL;
	*vcpus = num(o, "vcpus");
	*mem = num(o, "memory_mb");
	*ct = num(o, "created_at");
	cJSON_Delete(o);
	return 0;
}

void srv_h_create(struct srv_req *r)
{
	const char *tpl = NULL;
	struct srv_capsule *c;
	struct api_kv kv[1];
	int vcpus, mem, tmo, rc, sv, sm;
	char msg[512], id[32];
	time_t ct;
	cJSON *o;

	o = json_body(r);
	if (!o)
		return;
	if (int_field(o, "vcpus", &vcpus) ||
	    int_field(o, "memory_mb", &mem) ||
	    int_field(o, "timeout_sec", &tmo) ||
	    str_field(o, "template", &tpl)) {
		cJSON_Delete(o);
		srv_error(r, 400, "invalid_request", "invalid JSON body");
		return;
	}
	if (!tpl || !tpl[0])
		tpl = "minimal";
	if (!safe_name(tpl)) {
		srv_errorf(r, 400, "invalid_request",
			   "invalid template name: %s", tpl);
		cJSON_Delete(o);
		return;
	}
	if (strcmp(tpl, "minimal") && !template_exists(tpl)) {
		cJSON_Delete(o);
		srv_error(r, 404, "not_found", "resource not found");
		return;
	}
	if (vcpus <= 0)
		vcpus = 1;
	if (mem <= 0)
		mem = 512;
	if (tmo < 0)
		tmo = 0;
	if (strcmp(tpl, "minimal") && !snap_meta(tpl, &sv, &sm, &ct)) {
		if (sv > 0)
			vcpus = sv;
		if (sm > 0)
			mem = sm;
	}
	c = calloc(1, sizeof(*c));
	if (!c || new_id(id)) {
		free(c);
		cJSON_Delete(o);
		srv_error(r, 500, "internal_error", "out of resources");
		return;
	}
	snprintf(c->id, sizeof(c->id), "%s", id);
	snprintf(c->status, sizeof(c->status), "pending");
	snprintf(c->template, sizeof(c->template), "%s", tpl);
	c->vcpus = vcpus;
	c->memory_mb = mem;
	c->timeout_sec = tmo;
	c->created_at = c->last_updated = time(NULL);
	kv[0].key = "template";
	kv[0].value = c->template;
	pthread_mutex_lock(&srv_g.lock);
	if (ncaps >= CAPS_MAX) {
		pthread_mutex_unlock(&srv_g.lock);
		free(c);
		cJSON_Delete(o);
		srv_error(r, 503, "no_hosts_available",
			  "no host has capacity for this capsule");
		return;
	}
	caps[ncaps++] = c;
	save_locked(c);
	pthread_mutex_unlock(&srv_g.lock);

	rc = srv_sb_create(id, kv, strcmp(tpl, "minimal") ? 1 : 0, msg,
			   sizeof(msg));
	cJSON_Delete(o);
	pthread_mutex_lock(&srv_g.lock);
	c = find_locked(id);
	if (c) {
		if (rc) {
			set_status_locked(c, "error");
		} else {
			c->started_at = c->last_active = time(NULL);
			set_status_locked(c, "running");
		}
	}
	pthread_mutex_unlock(&srv_g.lock);
	if (rc) {
		srv_errorf(r, 502, "agent_error", "internal: create sandbox: %s",
			   msg);
		return;
	}
	answer_capsule(r, 201, id);
}

static int cmp_newest(const void *a, const void *b)
{
	const struct srv_capsule *x = *(struct srv_capsule *const *)a;
	const struct srv_capsule *y = *(struct srv_capsule *const *)b;

	return x->created_at < y->created_at ? 1 :
	       x->created_at > y->created_at ? -1 : strcmp(y->id, x->id);
}

void srv_h_list(struct srv_req *r)
{
	struct srv_capsule **sorted;
	struct srv_buf b;
	size_t i, k = 0;

	refresh_all();
	srv_buf_init(&b, 64u << 20);
	pthread_mutex_lock(&srv_g.lock);
	sorted = calloc(ncaps ? ncaps : 1, sizeof(*sorted));
	if (!sorted) {
		pthread_mutex_unlock(&srv_g.lock);
		srv_error(r, 500, "internal_error", "out of memory");
		return;
	}
	memcpy(sorted, caps, ncaps * sizeof(*sorted));
	qsort(sorted, ncaps, sizeof(*sorted), cmp_newest);
	srv_buf_add(&b, "[", 1);
	for (i = 0; i < ncaps; i++) {
		if (!strcmp(sorted[i]->status, "stopped") ||
		    !strcmp(sorted[i]->status, "error"))
			continue;
		if (k++)
			srv_buf_add(&b, ",", 1);
		capsule_json(&b, sorted[i]);
	}
	pthread_mutex_unlock(&srv_g.lock);
	free(sorted);
	srv_buf_add(&b, "]", 1);
	srv_json(r, 200, &b);
	srv_buf_free(&b);
}

void srv_h_get(struct srv_req *r)
{
	refresh(r->id);
	answer_capsule(r, 200, r->id);
}

void srv_h_destroy(struct srv_req *r)
{
	struct srv_capsule c, *cp;
	char msg[512];
	int rc;

	if (srv_capsule_get(r->id, &c)) {
		srv_error(r, 404, "not_found", "resource not found");
		return;
	}
	rc = srv_sb_verb(r->id, API_VERB_DESTROY, "", msg, sizeof(msg));
	if (rc && rc != -ENOENT) {
		srv_errorf(r, 502, "agent_error", "internal: destroy: %s",
			   msg);
		return;
	}
	pthread_mutex_lock(&srv_g.lock);
	cp = find_locked(r->id);
	if (cp)
		set_status_locked(cp, "stopped");
	pthread_mutex_unlock(&srv_g.lock);
	srv_no_content(r);
}

/* pause/resume/ping: needs `need`, applies verb, ends in `after`. */
static int verb(struct srv_req *r, const char *need, const char *notmsg,
		enum api_verb v, const char *after)
{
	struct srv_capsule c, *cp;
	char msg[512];
	int rc;

	refresh(r->id);
	if (srv_capsule_get(r->id, &c)) {
		srv_error(r, 404, "not_found", "resource not found");
		return -1;
	}
	if (strcmp(c.status, need)) {
		srv_error(r, 409, "invalid_state", notmsg);
		return -1;
	}
	rc = srv_sb_verb(r->id, v, "", msg, sizeof(msg));
	if (rc == -EOPNOTSUPP && v == API_VERB_PING)
		rc = 0;
	if (rc) {
		srv_errorf(r, 502, "agent_error", "internal: %s: %s",
			   api_verb_name(v), msg);
		return -1;
	}
	pthread_mutex_lock(&srv_g.lock);
	cp = find_locked(r->id);
	if (cp) {
		if (v != API_VERB_PAUSE)
			cp->last_active = time(NULL);
		if (v == API_VERB_RESUME)
			cp->started_at = time(NULL);
		set_status_locked(cp, after);
		save_locked(cp);
	}
	pthread_mutex_unlock(&srv_g.lock);
	return 0;
}

void srv_h_pause(struct srv_req *r)
{
	if (!verb(r, "running", "resource is not running", API_VERB_PAUSE,
		  "paused"))
		answer_capsule(r, 200, r->id);
}

void srv_h_resume(struct srv_req *r)
{
	if (!verb(r, "paused", "resource is not paused", API_VERB_RESUME,
		  "running"))
		answer_capsule(r, 200, r->id);
}

void srv_h_ping(struct srv_req *r)
{
	if (!verb(r, "running", "resource is not running", API_VERB_PING,
		  "running"))
		srv_no_content(r);
}

int srv_need_running(struct srv_req *r, const char *style)
{
	struct srv_capsule c;

	refresh(r->id);
	if (srv_capsule_get(r->id, &c) || !strcmp(c.status, "stopped")) {
		/* a destroyed capsule's host record is gone as well */
		if (!srv_capsule_get(r->id, &c) && style[0] == 'e') {
			srv_errorf(r, 409, "invalid_state",
				   "sandbox is not running (status: %s)",
				   c.status);
			return -1;
		}
		if (srv_capsule_get(r->id, &c)) {
			srv_error(r, 404, "not_found", "sandbox not found");
			return -1;
		}
	}
	if (strcmp(c.status, "running")) {
		if (style[0] == 'e')
			srv_errorf(r, 409, "invalid_state",
				   "sandbox is not running (status: %s)",
				   c.status);
		else
			srv_error(r, 409, "invalid_state",
				  "sandbox is not running");
		return -1;
	}
	return 0;
}

/* ---- inactivity auto-pause (Wrenn's TTL reaper, every 2 s) ------------- */

static pthread_t reaper;
static bool reaper_on;
static pthread_mutex_t reaper_m = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t reaper_c = PTHREAD_COND_INITIALIZER;
static bool reaper_stop;

static void *reaper_main(void *arg)
{
	char id[32], msg[256];
	struct timespec ts;
	size_t i;

	(void)arg;
	pthread_mutex_lock(&reaper_m);
	while (!reaper_stop) {
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += 2;
		pthread_cond_timedwait(&reaper_c, &reaper_m, &ts);
		if (reaper_stop)
			break;
		pthread_mutex_unlock(&reaper_m);
		for (;;) {
			time_t now = time(NULL);

			id[0] = '\0';
			pthread_mutex_lock(&srv_g.lock);
			for (i = 0; i < ncaps; i++) {
				struct srv_capsule *c = caps[i];

				if (c->timeout_sec > 0 &&
				    !strcmp(c->status, "running") &&
				    now - c->last_active > c->timeout_sec) {
					snprintf(id, sizeof(id), "%s", c->id);
					/* not again until it ran */
					c->last_active = now;
					break;
				}
			}
			pthread_mutex_unlock(&srv_g.lock);
			if (!id[0])
				break;
			if (!srv_sb_verb(id, API_VERB_PAUSE, "", msg,
					 sizeof(msg))) {
				struct srv_capsule *c;

				pthread_mutex_lock(&srv_g.lock);
				c = find_locked(id);
				if (c)
					set_status_locked(c, "paused");
				pthread_mutex_unlock(&srv_g.lock);
			}
		}
		pthread_mutex_lock(&reaper_m);
	}
	pthread_mutex_unlock(&reaper_m);
	return NULL;
}

void srv_capsule_reaper_start(void)
{
	reaper_on = !pthread_create(&reaper, NULL, reaper_main, NULL);
}

void srv_capsule_reaper_stop(void)
{
	if (!reaper_on)
		return;
	pthread_mutex_lock(&reaper_m);
	reaper_stop = true;
	pthread_cond_signal(&reaper_c);
	pthread_mutex_unlock(&reaper_m);
	pthread_join(reaper, NULL);
	reaper_on = false;
}

/* ---- snapshots ---------------------------------------------------------- */

static __thread long long du_sum;

static int du_cb(const char *p, const struct stat *st, int fl,
		 struct FTW *ftw)
{
	(void)p;
	(void)ftw;
	if (fl == FTW_F)
		du_sum += st->st_size;
	return 0;
}

static void snap_json(struct srv_buf *b, const char *name)
{
	char p[700], t[40];
	int vc = 0, mem = 0;
	time_t ct = 0;
	struct stat st;

	snprintf(p, sizeof(p), "%s/templates/%s", srv_g.datadir, name);
	if (snap_meta(name, &vc, &mem, &ct) && !stat(p, &st))
		ct = st.st_mtime;
	du_sum = 0;
	nftw(p, du_cb, 16, FTW_PHYS);
	srv_buf_addf(b, "{\"name\":");
	srv_json_str(b, name, strlen(name));
	srv_buf_addf(b, ",\"type\":\"snapshot\"");
	if (vc)
		srv_buf_addf(b, ",\"vcpus\":%d", vc);
	if (mem)
		srv_buf_addf(b, ",\"memory_mb\":%d", mem);
	srv_rfc3339(ct, t, sizeof(t));
	srv_buf_addf(b, ",\"size_bytes\":%lld,\"created_at\":\"%s\","
		     "\"platform\":false}", du_sum, t);
}

void srv_h_snap_create(struct srv_req *r)
{
	const char *sid = NULL, *name = NULL;
	char nm[80], msg[512], p[700];
	struct srv_capsule c, *cp;
	struct srv_buf b;
	unsigned char h[4];
	FILE *f;
	cJSON *o;
	int rc;

	o = json_body(r);
	if (!o)
		return;
	if (str_field(o, "sandbox_id", &sid) || str_field(o, "name", &name)) {
		cJSON_Delete(o);
		srv_error(r, 400, "invalid_request", "invalid JSON body");
		return;
	}
	if (!sid || !srv_id_valid(sid)) {
		cJSON_Delete(o);
		srv_error(r, 400, "invalid_request", "invalid sandbox ID");
		return;
	}
	if (name && name[0]) {
		snprintf(nm, sizeof(nm), "%s", name);
	} else {
		rnd(h, sizeof(h));
		snprintf(nm, sizeof(nm), "template-%02x%02x%02x%02x", h[0],
			 h[1], h[2], h[3]);
	}
	snprintf(c.id, sizeof(c.id), "%s", sid);
	cJSON_Delete(o);
	if (!safe_name(nm)) {
		srv_errorf(r, 400, "invalid_request", "invalid name: %s", nm);
		return;
	}
	if (!strcmp(nm, "minimal")) {
		srv_error(r, 409, "name_reserved",
			  "name is reserved by a platform template");
		return;
	}
	if (template_exists(nm)) {
		srv_error(r, 409, "template_name_taken",
			  "a template with this name already exists");
		return;
	}
	refresh(c.id);
	if (srv_capsule_get(c.id, &c)) {
		srv_error(r, 404, "not_found", "sandbox not found");
		return;
	}
	if (strcmp(c.status, "running") && strcmp(c.status, "paused")) {
		srv_errorf(r, 409, "invalid_state",
			   "sandbox is not running or paused (status: %s)",
			   c.status);
		return;
	}
	rc = srv_sb_verb(c.id, API_VERB_SNAPSHOT, nm, msg, sizeof(msg));
	if (rc) {
		srv_errorf(r, 502, "agent_error", "internal: snapshot: %s",
			   msg);
		return;
	}
	/* Wrenn leaves the source capsule paused */
	if (!strcmp(c.status, "running") &&
	    !srv_sb_verb(c.id, API_VERB_PAUSE, "", msg, sizeof(msg))) {
		pthread_mutex_lock(&srv_g.lock);
		cp = find_locked(c.id);
		if (cp)
			set_status_locked(cp, "paused");
		pthread_mutex_unlock(&srv_g.lock);
	}
	snprintf(p, sizeof(p), "%s/server-snapshots", srv_g.datadir);
	mkdir(p, 0700);
	snprintf(p, sizeof(p), "%s/server-snapshots/%s.json", srv_g.datadir,
		 nm);
	f = fopen(p, "w");
	if (f) {
		fprintf(f, "{\"vcpus\":%d,\"memory_mb\":%d,\"created_at\":%lld}",
			c.vcpus, c.memory_mb, (long long)time(NULL));
		fclose(f);
	}
	srv_buf_init(&b, 65536);
	snap_json(&b, nm);
	srv_json(r, 201, &b);
	srv_buf_free(&b);
}

void srv_h_snap_list(struct srv_req *r)
{
	char dir[600], t[40], type[32] = "";
	struct srv_buf b;
	struct dirent *de;
	DIR *d;

	{
		const char *q = strstr(r->query, "type=");

		if (q)
			snprintf(type, sizeof(type), "%.*s",
				 (int)strcspn(q + 5, "&"), q + 5);
	}
	srv_buf_init(&b, 16u << 20);
	srv_buf_add(&b, "[", 1);
	if (strcmp(type, "snapshot")) {
		srv_rfc3339(0, t, sizeof(t));
		srv_buf_addf(&b, "{\"name\":\"minimal\",\"type\":\"base\","
			     "\"size_bytes\":0,\"created_at\":\"%s\","
			     "\"platform\":true}", t);
	}
	snprintf(dir, sizeof(dir), "%s/templates", srv_g.datadir);
	d = strcmp(type, "base") ? opendir(dir) : NULL;
	while (d && (de = readdir(d))) {
		if (de->d_name[0] == '.' || !safe_name(de->d_name))
			continue;
		if (b.len > 1)
			srv_buf_add(&b, ",", 1);
		snap_json(&b, de->d_name);
	}
	if (d)
		closedir(d);
	srv_buf_add(&b, "]", 1);
	srv_json(r, 200, &b);
	srv_buf_free(&b);
}

static int rm_cb(const char *p, const struct stat *st, int fl,
		 struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	return (fl == FTW_DP ? rmdir(p) : unlink(p)) ? -1 : 0;
}

void srv_h_snap_delete(struct srv_req *r)
{
	char p[700];
	size_t i;

	if (!strcmp(r->sel, "minimal")) {
		srv_error(r, 403, "forbidden",
			  "platform templates cannot be deleted");
		return;
	}
	if (!safe_name(r->sel) || !template_exists(r->sel)) {
		srv_error(r, 404, "not_found", "template not found");
		return;
	}
	pthread_mutex_lock(&srv_g.lock);
	for (i = 0; i < ncaps; i++) {
		if (!strcmp(caps[i]->template, r->sel) &&
		    strcmp(caps[i]->status, "stopped") &&
		    strcmp(caps[i]->status, "error"))
			break;
	}
	pthread_mutex_unlock(&srv_g.lock);
	if (i < ncaps) {
		/* the local runtime stacks it under live capsules */
		srv_error(r, 409, "conflict",
			  "conflict: template is in use by a capsule");
		return;
	}
	snprintf(p, sizeof(p), "%s/templates/%s", srv_g.datadir, r->sel);
	if (nftw(p, rm_cb, 16, FTW_DEPTH | FTW_PHYS)) {
		srv_error(r, 500, "internal_error",
			  "could not remove the template");
		return;
	}
	snprintf(p, sizeof(p), "%s/server-snapshots/%s.json", srv_g.datadir,
		 r->sel);
	unlink(p);
	srv_no_content(r);
}
