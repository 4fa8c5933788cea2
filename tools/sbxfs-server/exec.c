/* exec.c - commands: foreground and background exec, the process table,
 * and the exec/stream WebSocket.
 *
 * Every command runs the way envd runs it: through
 *   /bin/sh -c 'echo $$; exec /usr/bin/nice -n 0 "$@"' sh CMD ARGS...
 * so CMD is looked up in PATH without a shell (127 from nice when absent)
 * and the first stdout line tells us the PID inside the sandbox, which the
 * API reports and accepts.  All state is under srv_g.lock; api_exec_* calls
 * that may wait on the backend are made without it.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <libwebsockets.h>

#include "srv.h"

#define OUT_MAX (64u << 20)	/* foreground stdout/stderr cap each */
#define CHUNK 32768		/* envd's STD_CHUNK_SIZE */
#define WRAP "echo $$; exec /usr/bin/nice -n 0 \"$@\""

struct srv_proc {
	struct srv_proc *next;
	int refs;
	char capsule[32];
	char tag[72];
	char *cmd;
	cJSON *args;		/* array of strings or NULL */
	int pid;		/* -1 until the wrapper told us */
	char pidl[24];
	size_t pidn;
	struct api_exec *x;
	bool x_set, exited, start_failed, freed;
	bool paused, want_resume;
	int code;
	char emsg[512];
	struct srv_buf early;	/* stderr seen before the PID line */
	/* consumers */
	bool fg;		/* a foreground worker collects */
	struct srv_buf out, err;
	bool overflow;
	struct srv_req *ws;
	bool ws_start_sent;
};

static struct srv_proc *procs;	/* under srv_g.lock */

static void proc_put_locked(struct srv_proc *p)
{
	struct srv_proc **pp;

	if (--p->refs > 0)
		return;
	for (pp = &procs; *pp; pp = &(*pp)->next)
		if (*pp == p) {
			*pp = p->next;
			break;
		}
	free(p->cmd);
	cJSON_Delete(p->args);
	srv_buf_free(&p->out);
	srv_buf_free(&p->err);
	srv_buf_free(&p->early);
	free(p);
}

static int map_code(int code)
{
	/* envd reports -1 for a process killed by a signal; the backend
	 * reports 128+N.  (An explicit exit 129..159 reads as a signal.) */
	return code > 128 && code < 160 ? -1 : code;
}

/* ---- WebSocket messages ------------------------------------------------- */

static void ws_start_locked(struct srv_proc *p)
{
	char m[64];

	if (!p->ws || p->ws_start_sent)
		return;
	p->ws_start_sent = true;
	snprintf(m, sizeof(m), "{\"type\":\"start\",\"pid\":%d}",
		 p->pid > 0 ? p->pid : 0);
	srv_ws_send_locked(p->ws, m, strlen(m));
}

/* 0, or 1 when the socket's queue is full (pause the process). */
static int ws_output_locked(struct srv_proc *p, int stream, const char *buf,
			    size_t len)
{
	struct srv_buf b;
	int full = 0;

	while (len && p->ws) {
		size_t n = len > CHUNK ? CHUNK : len;

		srv_buf_init(&b, CHUNK * 7);
		srv_buf_addf(&b, "{\"type\":\"%s\",\"data\":",
			     stream == 2 ? "stderr" : "stdout");
		srv_json_str(&b, buf, n);
		srv_buf_add(&b, "}", 1);
		if (b.p && srv_ws_send_locked(p->ws, b.p, b.len) == -EAGAIN)
			full = 1;
		srv_buf_free(&b);
		buf += n;
		len -= n;
	}
	return full;
}

static void ws_finish_locked(struct srv_proc *p)
{
	char m[64];

	if (!p->ws)
		return;
	if (p->start_failed) {
		srv_ws_error_close_locked(p->ws, p->emsg);
	} else {
		ws_start_locked(p);
		snprintf(m, sizeof(m), "{\"type\":\"exit\",\"exit_code\":%d}",
			 p->code);
		srv_ws_send_locked(p->ws, m, strlen(m));
		p->ws->ws_close = true;
		srv_wake_locked(p->ws);
	}
	p->ws->proc = NULL;
	srv_req_put_locked(p->ws);
	p->ws = NULL;
	proc_put_locked(p);	/* the socket's; the table still holds one */
}

/* ---- backend callbacks (backend thread) --------------------------------- */

static void cb_started(void *ud, int err, const char *msg)
{
	struct srv_proc *p = ud;

	if (!err)
		return;
	pthread_mutex_lock(&srv_g.lock);
	p->start_failed = true;
	p->exited = true;
	snprintf(p->emsg, sizeof(p->emsg), "internal: exec: %s",
		 msg ? msg : api_strerror(err));
	ws_finish_locked(p);
	pthread_cond_broadcast(&srv_g.cond);
	pthread_mutex_unlock(&srv_g.lock);
	if (srv_g.ctx)
		lws_cancel_service(srv_g.ctx);
}

static int deliver_locked(struct srv_proc *p, int stream, const char *buf,
			  size_t len)
{
	if (p->fg) {
		struct srv_buf *b = stream == 2 ? &p->err : &p->out;

		if (!p->overflow && srv_buf_add(b, buf, len))
			p->overflow = true;
	}
	return ws_output_locked(p, stream, buf, len);
}

static int cb_output(void *ud, int stream, const void *vbuf, size_t len)
{
	struct srv_proc *p = ud;
	const char *buf = vbuf;
	int rc = 0;

	pthread_mutex_lock(&srv_g.lock);
	if (p->pid < 0 && stream == 1) {
		/* the wrapper's PID line */
		while (len && p->pid < 0) {
			char c = *buf++;

			len--;
			if (c == '\n') {
				p->pidl[p->pidn] = '\0';
				p->pid = (int)strtol(p->pidl, NULL, 10);
				if (p->pid <= 0)
					p->pid = 0;
				ws_start_locked(p);
				if (p->early.len)
					deliver_locked(p, 2, p->early.p,
						       p->early.len);
				srv_buf_free(&p->early);
				pthread_cond_broadcast(&srv_g.cond);
			} else if (p->pidn < sizeof(p->pidl) - 1) {
				p->pidl[p->pidn++] = c;
			}
		}
	}
	if (len && p->pid < 0 && stream == 2 &&
	    !srv_buf_add(&p->early, buf, len))
		len = 0;
	if (len)
		rc = deliver_locked(p, stream, buf, len);
	if (rc)
		p->paused = true;
	pthread_mutex_unlock(&srv_g.lock);
	return rc;
}

static void cb_exited(void *ud, int code, int err, const char *msg)
{
	struct srv_proc *p = ud;

	pthread_mutex_lock(&srv_g.lock);
	if (p->pid < 0)
		p->pid = 0;
	if (err) {
		p->start_failed = true;
		snprintf(p->emsg, sizeof(p->emsg), "internal: exec: %s",
			 msg ? msg : api_strerror(err));
	}
	p->code = map_code(code);
	p->exited = true;
	ws_finish_locked(p);
	pthread_cond_broadcast(&srv_g.cond);
	pthread_mutex_unlock(&srv_g.lock);
	if (srv_g.ctx)
		lws_cancel_service(srv_g.ctx);
}

static const struct api_exec_cbs cbs = { cb_started, cb_output, cb_exited };

/* Free finished execs and resume paused ones (lws thread, or shutdown). */
void srv_procs_reap(void)
{
	struct srv_proc *p;

	for (;;) {
		struct api_exec *x = NULL;
		bool resume = false;

		pthread_mutex_lock(&srv_g.lock);
		for (p = procs; p; p = p->next) {
			if (p->x_set && p->exited && !p->freed) {
				p->freed = true;
				x = p->x;
				p->x = NULL;
				break;
			}
			if (p->x_set && p->x && p->want_resume) {
				p->want_resume = false;
				p->paused = false;
				x = p->x;
				resume = true;
				break;
			}
		}
		if (p)
			p->refs++;
		pthread_mutex_unlock(&srv_g.lock);
		if (!p)
			return;
		if (x && resume)
			api_exec_resume(srv_g.be, x);
		else if (x)
			api_exec_free(srv_g.be, x);
		pthread_mutex_lock(&srv_g.lock);
		if (!resume)
			p->refs--;	/* the table's reference */
		proc_put_locked(p);
		pthread_mutex_unlock(&srv_g.lock);
	}
}

/* Start a command; p has refs for the table + caller.  0/-errno. */
static struct srv_proc *proc_new(const char *capsule, const char *cmd,
				 const cJSON *args, const char *tag)
{
	struct srv_proc *p = calloc(1, sizeof(*p));

	if (!p)
		return NULL;
	p->refs = 2;
	p->pid = -1;
	snprintf(p->capsule, sizeof(p->capsule), "%s", capsule);
	snprintf(p->tag, sizeof(p->tag), "%s", tag ? tag : "");
	p->cmd = strdup(cmd);
	p->args = args ? cJSON_Duplicate(args, 1) : NULL;
	srv_buf_init(&p->out, OUT_MAX);
	srv_buf_init(&p->err, OUT_MAX);
	srv_buf_init(&p->early, 1u << 20);
	if (!p->cmd || (args && !p->args)) {
		free(p->cmd);
		cJSON_Delete(p->args);
		free(p);
		return NULL;
	}
	return p;
}

/* Called without srv_g.lock.  argv from cmd/args; env/cwd may be NULL. */
static void proc_start(struct srv_proc *p, const char *const *env,
		       const char *cwd)
{
	const char **argv;
	struct api_exec_req req;
	struct api_exec *x = NULL;
	int n = p->args ? cJSON_GetArraySize(p->args) : 0, i, k = 0;

	argv = calloc(n + 6, sizeof(*argv));
	if (!argv) {
		cb_started(p, -ENOMEM, NULL);
		pthread_mutex_lock(&srv_g.lock);
		p->x_set = true;
		pthread_mutex_unlock(&srv_g.lock);
		return;
	}
	argv[k++] = "/bin/sh";
	argv[k++] = "-c";
	argv[k++] = WRAP;
	argv[k++] = "sh";
	argv[k++] = p->cmd;
	for (i = 0; i < n; i++)
		argv[k++] = cJSON_GetArrayItem(p->args, i)->valuestring;
	argv[k] = NULL;
	memset(&req, 0, sizeof(req));
	req.argv = argv;
	req.cwd = cwd;
	req.env = env;
	srv_capsule_touch(p->capsule);
	api_exec_start(srv_g.be, p->capsule, &req, &cbs, p, &x);
	free(argv);
	pthread_mutex_lock(&srv_g.lock);
	p->x = x;
	p->x_set = true;
	if (!x && !p->exited) {
		p->exited = p->start_failed = true;
		snprintf(p->emsg, sizeof(p->emsg), "internal: exec failed");
	}
	pthread_mutex_unlock(&srv_g.lock);
	if (srv_g.ctx)
		lws_cancel_service(srv_g.ctx);
}

static void table_add(struct srv_proc *p)
{
	pthread_mutex_lock(&srv_g.lock);
	p->next = procs;
	procs = p;
	pthread_mutex_unlock(&srv_g.lock);
}

/* args must be an array of strings (Go's decode fails otherwise). */
static bool args_ok(const cJSON *a)
{
	const cJSON *e;

	if (!a || cJSON_IsNull(a))
		return true;
	if (!cJSON_IsArray(a))
		return false;
	cJSON_ArrayForEach(e, a)
		if (!cJSON_IsString(e))
			return false;
	return true;
}

void srv_h_exec(struct srv_req *r)
{
	const cJSON *cmd, *args, *tmo, *bg, *tag, *envs, *cwd, *e;
	char tagbuf[72], **env = NULL;
	struct timespec t0, t1, dl;
	struct srv_buf b;
	struct srv_proc *p;
	long timeout = 30;
	bool background;
	cJSON *o;
	int rc, n = 0;

	if (srv_need_running(r, "exec"))
		return;
	rc = srv_read_all(r, &b, SRV_JSON_MAX);
	o = rc || !b.p ? NULL : cJSON_ParseWithLength(b.p, b.len);
	srv_buf_free(&b);
	if (rc == -EPIPE)
		return;
	cmd = cJSON_GetObjectItemCaseSensitive(o, "cmd");
	args = cJSON_GetObjectItemCaseSensitive(o, "args");
	tmo = cJSON_GetObjectItemCaseSensitive(o, "timeout_sec");
	bg = cJSON_GetObjectItemCaseSensitive(o, "background");
	tag = cJSON_GetObjectItemCaseSensitive(o, "tag");
	envs = cJSON_GetObjectItemCaseSensitive(o, "envs");
	cwd = cJSON_GetObjectItemCaseSensitive(o, "cwd");
	if (!o || !cJSON_IsObject(o) || !args_ok(args) ||
	    (cmd && !cJSON_IsString(cmd) && !cJSON_IsNull(cmd)) ||
	    (tmo && !cJSON_IsNumber(tmo) && !cJSON_IsNull(tmo)) ||
	    (bg && !cJSON_IsBool(bg) && !cJSON_IsNull(bg)) ||
	    (tag && !cJSON_IsString(tag) && !cJSON_IsNull(tag)) ||
	    (cwd && !cJSON_IsString(cwd) && !cJSON_IsNull(cwd)) ||
	    (envs && !cJSON_IsObject(envs) && !cJSON_IsNull(envs))) {
		cJSON_Delete(o);
		srv_error(r, 400, "invalid_request", "invalid JSON body");
		return;
	}
	if (!cJSON_IsString(cmd) || !cmd->valuestring[0]) {
		cJSON_Delete(o);
		srv_error(r, 400, "invalid_request", "cmd is required");
		return;
	}
	background = cJSON_IsTrue(bg);
	if (cJSON_IsNumber(tmo) && tmo->valuedouble > 0)
		timeout = tmo->valuedouble > 1e6 ? 1000000 :
			  (long)tmo->valuedouble;
	if (background && cJSON_IsString(tag) && tag->valuestring[0]) {
		snprintf(tagbuf, sizeof(tagbuf), "%s", tag->valuestring);
	} else if (background) {
		unsigned v = 0;
		FILE *f = fopen("/dev/urandom", "r");

		if (f) {
			if (fread(&v, sizeof(v), 1, f) != 1)
				v = (unsigned)time(NULL);
			fclose(f);
		}
		snprintf(tagbuf, sizeof(tagbuf), "proc-%08x", v);
	}
	/* envs and cwd count only for background commands */
	if (background && cJSON_IsObject(envs)) {
		int m = cJSON_GetArraySize(envs);

		env = calloc(m + 1, sizeof(*env));
		cJSON_ArrayForEach(e, envs) {
			if (!env || !cJSON_IsString(e) || n >= m)
				continue;
			if (asprintf(&env[n], "%s=%s", e->string,
				     e->valuestring) > 0)
				n++;
			else
				env[n] = NULL;
		}
	}
	p = proc_new(r->id, cmd->valuestring, args, background ? tagbuf :
		     NULL);
	if (!p) {
		cJSON_Delete(o);
		srv_error(r, 500, "internal_error", "out of memory");
		goto out;
	}
	p->fg = !background;
	table_add(p);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	proc_start(p, (const char *const *)env,
		   background && cJSON_IsString(cwd) ? cwd->valuestring :
		   NULL);

	clock_gettime(CLOCK_REALTIME, &dl);
	dl.tv_sec += background ? 10 : timeout;
	pthread_mutex_lock(&srv_g.lock);
	while (!p->exited && (!background || p->pid < 0) && !r->gone &&
	       !srv_g.stopping &&
	       pthread_cond_timedwait(&srv_g.cond, &srv_g.lock, &dl) !=
	       ETIMEDOUT)
		;
	if (p->start_failed) {
		snprintf(tagbuf, sizeof(tagbuf), "%s", "");
		p->fg = false;
		pthread_mutex_unlock(&srv_g.lock);
		srv_error(r, 502, "agent_error", p->emsg);
	} else if (background) {
		srv_buf_init(&b, 65536);
		srv_buf_addf(&b, "{\"sandbox_id\":\"%s\",\"cmd\":", r->id);
		srv_json_str(&b, p->cmd, strlen(p->cmd));
		srv_buf_addf(&b, ",\"pid\":%d,\"tag\":", p->pid > 0 ?
			     p->pid : 0);
		srv_json_str(&b, p->tag, strlen(p->tag));
		srv_buf_add(&b, "}", 1);
		pthread_mutex_unlock(&srv_g.lock);
		srv_json(r, 202, &b);
		srv_buf_free(&b);
	} else if (!p->exited) {
		/* like envd: the deadline ends the call, not the process */
		p->fg = false;
		srv_buf_free(&p->out);
		srv_buf_free(&p->err);
		pthread_mutex_unlock(&srv_g.lock);
		srv_error(r, 502, "agent_error",
			  "internal: exec: stream error: deadline_exceeded: "
			  "context deadline exceeded");
	} else if (p->overflow) {
		p->fg = false;
		pthread_mutex_unlock(&srv_g.lock);
		srv_errorf(r, 502, "agent_error",
			   "internal: exec: output exceeds %u bytes",
			   OUT_MAX);
	} else {
		bool b64 = !srv_utf8_valid(p->out.p, p->out.len) ||
			   !srv_utf8_valid(p->err.p, p->err.len);
		long ms;

		p->fg = false;
		clock_gettime(CLOCK_MONOTONIC, &t1);
		ms = (t1.tv_sec - t0.tv_sec) * 1000 +
		     (t1.tv_nsec - t0.tv_nsec) / 1000000;
		srv_buf_init(&b, OUT_MAX * 3);
		srv_buf_addf(&b, "{\"sandbox_id\":\"%s\",\"cmd\":", r->id);
		srv_json_str(&b, p->cmd, strlen(p->cmd));
		srv_buf_addf(&b, ",\"stdout\":");
		if (b64) {
			srv_buf_add(&b, "\"", 1);
			srv_base64(&b, p->out.p, p->out.len);
			srv_buf_add(&b, "\",\"stderr\":\"", 12);
			srv_base64(&b, p->err.p, p->err.len);
			srv_buf_add(&b, "\"", 1);
		} else {
			srv_json_str(&b, p->out.p ? p->out.p : "",
				     p->out.len);
			srv_buf_addf(&b, ",\"stderr\":");
			srv_json_str(&b, p->err.p ? p->err.p : "",
				     p->err.len);
		}
		srv_buf_addf(&b, ",\"exit_code\":%d,\"duration_ms\":%ld,"
			     "\"encoding\":\"%s\"}", p->code, ms,
			     b64 ? "base64" : "utf-8");
		pthread_mutex_unlock(&srv_g.lock);
		srv_json(r, 200, &b);
		srv_buf_free(&b);
	}
	pthread_mutex_lock(&srv_g.lock);
	proc_put_locked(p);
	pthread_mutex_unlock(&srv_g.lock);
	srv_capsule_touch(r->id);
	cJSON_Delete(o);
out:
	while (env && n-- > 0)
		free(env[n]);
	free(env);
}

void srv_h_proc_list(struct srv_req *r)
{
	struct srv_buf b;
	struct srv_proc *p;
	int k = 0;

	if (srv_need_running(r, "exec"))
		return;
	srv_capsule_touch(r->id);
	srv_buf_init(&b, 16u << 20);
	srv_buf_addf(&b, "{\"processes\":[");
	pthread_mutex_lock(&srv_g.lock);
	for (p = procs; p; p = p->next) {
		if (strcmp(p->capsule, r->id) || p->exited || p->pid <= 0)
			continue;
		if (k++)
			srv_buf_add(&b, ",", 1);
		srv_buf_addf(&b, "{\"pid\":%d", p->pid);
		if (p->tag[0]) {
			srv_buf_addf(&b, ",\"tag\":");
			srv_json_str(&b, p->tag, strlen(p->tag));
		}
		srv_buf_addf(&b, ",\"cmd\":");
		srv_json_str(&b, p->cmd, strlen(p->cmd));
		if (p->args && cJSON_GetArraySize(p->args)) {
			const cJSON *e;
			int j = 0;

			srv_buf_addf(&b, ",\"args\":[");
			cJSON_ArrayForEach(e, p->args) {
				if (j++)
					srv_buf_add(&b, ",", 1);
				srv_json_str(&b, e->valuestring,
					     strlen(e->valuestring));
			}
			srv_buf_add(&b, "]", 1);
		}
		srv_buf_add(&b, "}", 1);
	}
	pthread_mutex_unlock(&srv_g.lock);
	srv_buf_addf(&b, "]}");
	srv_json(r, 200, &b);
	srv_buf_free(&b);
}

void srv_h_proc_kill(struct srv_req *r)
{
	struct srv_proc *p;
	struct api_exec *x = NULL;
	char *e;
	long pid;
	int sig = SIGKILL, rc;
	const char *q = strstr(r->query, "signal=");

	if (srv_need_running(r, "exec"))
		return;
	srv_capsule_touch(r->id);
	if (q && !strncmp(q + 7, "SIGTERM", 7) &&
	    (q[14] == '\0' || q[14] == '&'))
		sig = SIGTERM;
	pid = strtol(r->sel, &e, 10);
	if (*e || e == r->sel)
		pid = -1;
	pthread_mutex_lock(&srv_g.lock);
	for (p = procs; p; p = p->next) {
		if (strcmp(p->capsule, r->id) || p->exited || !p->x)
			continue;
		if (pid >= 0 ? p->pid == pid : !strcmp(p->tag, r->sel))
			break;
	}
	if (p) {
		p->refs++;
		x = p->x;
	}
	pthread_mutex_unlock(&srv_g.lock);
	if (!p) {
		srv_error(r, 404, "not_found", "process not found");
		return;
	}
	rc = api_exec_signal(srv_g.be, x, sig);
	pthread_mutex_lock(&srv_g.lock);
	proc_put_locked(p);
	pthread_mutex_unlock(&srv_g.lock);
	if (rc && rc != -ESRCH)
		srv_errorf(r, 502, "agent_error", "internal: kill: %s",
			   api_strerror(rc));
	else
		srv_no_content(r);
}

/* ---- exec/stream -------------------------------------------------------- */

void srv_ws_message_locked(struct srv_req *r, const char *msg, size_t len)
{
	const cJSON *type, *cmd, *args;
	struct srv_capsule c;
	struct srv_proc *p;
	cJSON *o;

	if (r->ws_close)
		return;
	o = cJSON_ParseWithLength(msg, len);
	type = cJSON_GetObjectItemCaseSensitive(o, "type");
	if (!r->ws_authed) {
		/* only a JWT could authenticate here, and we issue none */
		cJSON_Delete(o);
		srv_ws_error_close_locked(r, "authentication failed");
		return;
	}
	if (r->ws_attach) {
		/* the process stream reads nothing from the client */
		cJSON_Delete(o);
		return;
	}
	if (r->ws_started) {
		if (cJSON_IsString(type) && !strcmp(type->valuestring, "stop")) {
			/* cancel the stream; the process keeps running */
			p = r->proc;
			if (p) {
				p->ws = NULL;
				r->proc = NULL;
				if (p->paused)
					p->want_resume = true;
				proc_put_locked(p);
				srv_req_put_locked(r);
			}
			r->ws_close = true;
			srv_wake_locked(r);
		}
		cJSON_Delete(o);
		return;
	}
	cmd = cJSON_GetObjectItemCaseSensitive(o, "cmd");
	args = cJSON_GetObjectItemCaseSensitive(o, "args");
	if (!cJSON_IsString(type) || strcmp(type->valuestring, "start") ||
	    !cJSON_IsString(cmd) || !cmd->valuestring[0]) {
		cJSON_Delete(o);
		srv_ws_error_close_locked(r, "first message must be type "
					  "'start' with a 'cmd' field");
		return;
	}
	r->ws_started = true;
	if (!args_ok(args))
		args = NULL;
	pthread_mutex_unlock(&srv_g.lock);
	if (srv_capsule_get(r->id, &c)) {
		pthread_mutex_lock(&srv_g.lock);
		srv_ws_error_close_locked(r, "sandbox not found");
		cJSON_Delete(o);
		return;
	}
	if (strcmp(c.status, "running")) {
		char m[128];

		snprintf(m, sizeof(m), "sandbox is not running (status: %s)",
			 c.status);
		pthread_mutex_lock(&srv_g.lock);
		srv_ws_error_close_locked(r, m);
		cJSON_Delete(o);
		return;
	}
	p = proc_new(r->id, cmd->valuestring, args, NULL);
	cJSON_Delete(o);
	if (!p) {
		pthread_mutex_lock(&srv_g.lock);
		srv_ws_error_close_locked(r, "internal: out of memory");
		return;
	}
	pthread_mutex_lock(&srv_g.lock);
	if (r->gone) {
		/* client left meanwhile: nothing to run for */
		p->refs = 1;
		proc_put_locked(p);
		return;
	}
	p->ws = r;		/* p's second ref is the socket's */
	r->proc = p;
	r->refs++;
	p->next = procs;
	procs = p;
	pthread_mutex_unlock(&srv_g.lock);
	proc_start(p, NULL, NULL);
	pthread_mutex_lock(&srv_g.lock);
}

void srv_ws_closed_locked(struct srv_req *r)
{
	struct srv_proc *p = r->proc;

	if (!p)
		return;
	/* closing the socket cancels the stream, not the process */
	p->ws = NULL;
	r->proc = NULL;
	if (p->paused)
		p->want_resume = true;
	proc_put_locked(p);
	srv_req_put_locked(r);
	if (srv_g.ctx)
		lws_cancel_service(srv_g.ctx);
}

void srv_ws_drained_locked(struct srv_req *r)
{
	struct srv_proc *p = r->proc;

	if (p && p->paused && !p->want_resume &&
	    r->wq_bytes < SRV_PIPE_WIN / 2) {
		p->want_resume = true;
		if (srv_g.ctx)
			lws_cancel_service(srv_g.ctx);
	}
}

void srv_ws_attach_locked(struct srv_req *r)
{
	struct srv_capsule c;
	struct srv_proc *p;
	char *end;
	long pid;

	r->ws_started = true;
	pthread_mutex_unlock(&srv_g.lock);
	if (srv_capsule_get(r->id, &c)) {
		pthread_mutex_lock(&srv_g.lock);
		srv_ws_error_close_locked(r, "sandbox not found");
		return;
	}
	pthread_mutex_lock(&srv_g.lock);
	if (strcmp(c.status, "running")) {
		char m[128];

		snprintf(m, sizeof(m), "sandbox is not running (status: %s)",
			 c.status);
		srv_ws_error_close_locked(r, m);
		return;
	}
	pid = strtol(r->sel, &end, 10);
	if (*end || end == r->sel)
		pid = -1;
	for (p = procs; p; p = p->next) {
		if (strcmp(p->capsule, r->id) || p->exited || p->pid <= 0)
			continue;
		if (pid >= 0 ? p->pid == pid : !strcmp(p->tag, r->sel))
			break;
	}
	if (!p || p->ws) {
		/* Wrenn: an unknown process just closes, no message */
		r->ws_close = true;
		srv_wake_locked(r);
		return;
	}
	/* output from now on; no replay */
	p->refs++;
	p->ws = r;
	r->proc = p;
	r->refs++;
	p->ws_start_sent = false;
	ws_start_locked(p);
}
