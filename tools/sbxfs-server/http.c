/* http.c - the libwebsockets side: routing, auth, request pipes, writes.
 *
 * Only the lws service thread touches a `struct lws`.  Workers fill
 * r->out / drain r->in under srv_g.lock and call srv_wake(); the lws thread
 * drains srv_g.wakeq on LWS_CALLBACK_EVENT_WAIT_CANCELLED.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include <libwebsockets.h>

#include "srv.h"

struct pss {
	struct srv_req *r;
	/* chunked request body decoder */
	int te_state;
	size_t te_left;
	bool te;
};

/* ---- request objects ---------------------------------------------------- */

static struct srv_req *req_new(void)
{
	struct srv_req *r = calloc(1, sizeof(*r));

	if (!r)
		return NULL;
	r->refs = 1;
	r->clen = -1;
	srv_buf_init(&r->in, SRV_PIPE_WIN * 8);
	srv_buf_init(&r->out, SRV_PIPE_WIN * 2 + SRV_BODY_MAX);
	srv_buf_init(&r->wsin, SRV_JSON_MAX);
	return r;
}

void srv_req_put_locked(struct srv_req *r)
{
	struct srv_wsq *q;

	if (--r->refs > 0)
		return;
	srv_buf_free(&r->in);
	srv_buf_free(&r->out);
	srv_buf_free(&r->wsin);
	while ((q = r->wq_head)) {
		r->wq_head = q->next;
		free(q);
	}
	free(r);
}

void srv_wake_locked(struct srv_req *r)
{
	if (!r->queued && r->wsi) {
		r->queued = true;
		r->refs++;
		r->wnext = srv_g.wakeq;
		srv_g.wakeq = r;
	}
	pthread_cond_broadcast(&srv_g.cond);
	if (srv_g.ctx)
		lws_cancel_service(srv_g.ctx);
}

void srv_wake(struct srv_req *r)
{
	pthread_mutex_lock(&srv_g.lock);
	srv_wake_locked(r);
	pthread_mutex_unlock(&srv_g.lock);
}

/* ---- worker side -------------------------------------------------------- */

ssize_t srv_read(struct srv_req *r, void *buf, size_t n)
{
	ssize_t got;

	pthread_mutex_lock(&srv_g.lock);
	if (r->expect100 && !r->cont_want && !r->status && !r->in_eof) {
		/* the client holds the body back until it sees this */
		r->cont_want = true;
		srv_wake_locked(r);
	}
	while (!r->in.len && !r->in_eof && !r->gone)
		pthread_cond_wait(&srv_g.cond, &srv_g.lock);
	if (!r->in.len) {
		got = r->in_eof ? 0 : -EPIPE;
	} else {
		got = n < r->in.len ? n : r->in.len;
		memcpy(buf, r->in.p, got);
		srv_buf_consume(&r->in, got);
		if (r->rx_paused && r->in.len < SRV_PIPE_WIN / 2) {
			r->rx_resume = true;
			srv_wake_locked(r);
		}
	}
	pthread_mutex_unlock(&srv_g.lock);
	return got;
}

int srv_read_all(struct srv_req *r, struct srv_buf *b, size_t max)
{
	char tmp[16384];
	ssize_t n;
	int rc;

	srv_buf_init(b, max);
	for (;;) {
		n = srv_read(r, tmp, sizeof(tmp));
		if (n <= 0)
			return (int)n;
		rc = srv_buf_add(b, tmp, n);
		if (rc)
			return rc;
	}
}

static void respond_locked(struct srv_req *r, int status, const char *ctype,
			   const void *body, size_t len)
{
	if (r->status)
		return;
	r->status = status;
	snprintf(r->rtype, sizeof(r->rtype), "%s", ctype ? ctype : "");
	/* Go's net/http sends bodies over 2048 bytes chunked */
	r->chunked = len > 2048;
	r->out.len = 0;
	if (len && srv_buf_add(&r->out, body, len)) {
		r->status = 500;
		r->chunked = false;
	}
	r->out_eof = true;
	srv_wake_locked(r);
}

void srv_respond(struct srv_req *r, int status, const char *ctype,
		 const void *body, size_t len)
{
	pthread_mutex_lock(&srv_g.lock);
	respond_locked(r, status, ctype, body, len);
	pthread_mutex_unlock(&srv_g.lock);
}

void srv_json(struct srv_req *r, int status, struct srv_buf *b)
{
	srv_buf_add(b, "\n", 1);
	srv_respond(r, status, "application/json", b->p, b->len);
}

void srv_error(struct srv_req *r, int status, const char *code,
	       const char *msg)
{
	struct srv_buf b;

	srv_buf_init(&b, 65536);
	srv_buf_addf(&b, "{\"error\":{\"code\":");
	srv_json_str(&b, code, strlen(code));
	srv_buf_addf(&b, ",\"message\":");
	srv_json_str(&b, msg, strlen(msg));
	srv_buf_addf(&b, "}}");
	srv_json(r, status, &b);
	srv_buf_free(&b);
}

void srv_errorf(struct srv_req *r, int status, const char *code,
		const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	srv_error(r, status, code, msg);
}

void srv_no_content(struct srv_req *r)
{
	srv_respond(r, 204, NULL, NULL, 0);
}

void srv_begin(struct srv_req *r, int status, const char *ctype)
{
	pthread_mutex_lock(&srv_g.lock);
	if (!r->status) {
		r->status = status;
		snprintf(r->rtype, sizeof(r->rtype), "%s", ctype);
		r->chunked = true;
	}
	pthread_mutex_unlock(&srv_g.lock);
}

int srv_write(struct srv_req *r, const void *p, size_t n)
{
	int rc = 0;

	pthread_mutex_lock(&srv_g.lock);
	while (!r->gone && r->out.len >= SRV_PIPE_WIN)
		pthread_cond_wait(&srv_g.cond, &srv_g.lock);
	if (r->gone)
		rc = -EPIPE;
	else
		rc = srv_buf_add(&r->out, p, n);
	if (!rc)
		srv_wake_locked(r);
	pthread_mutex_unlock(&srv_g.lock);
	return rc;
}

void srv_end(struct srv_req *r)
{
	pthread_mutex_lock(&srv_g.lock);
	r->out_eof = true;
	srv_wake_locked(r);
	pthread_mutex_unlock(&srv_g.lock);
}

/* ---- WebSocket queue ---------------------------------------------------- */

int srv_ws_send_locked(struct srv_req *r, const char *json, size_t len)
{
	struct srv_wsq *q;

	if (r->gone || r->ws_close)
		return -EPIPE;
	q = malloc(sizeof(*q) + len + 1);
	if (!q)
		return -ENOMEM;
	q->next = NULL;
	q->len = len + 1;
	memcpy(q->data, json, len);
	q->data[len] = '\n';
	if (r->wq_tail)
		r->wq_tail->next = q;
	else
		r->wq_head = q;
	r->wq_tail = q;
	r->wq_bytes += q->len;
	srv_wake_locked(r);
	return r->wq_bytes > SRV_PIPE_WIN ? -EAGAIN : 0;
}

void srv_ws_error_close_locked(struct srv_req *r, const char *msg)
{
	struct srv_buf b;

	srv_buf_init(&b, 8192);
	srv_buf_addf(&b, "{\"type\":\"error\",\"data\":");
	srv_json_str(&b, msg, strlen(msg));
	srv_buf_addf(&b, "}");
	if (b.p)
		srv_ws_send_locked(r, b.p, b.len);
	srv_buf_free(&b);
	r->ws_close = true;
	srv_wake_locked(r);
}

/* ---- routing ------------------------------------------------------------ */

enum auth_kind { AUTH_NONE, AUTH_KEY, AUTH_WS };

struct route {
	enum srv_method method;
	const char *pat;	/* segments; "{id}" / "{sel}" placeholders */
	srv_handler_fn fn;
	enum auth_kind auth;
};

static void h_health(struct srv_req *r)
{
	struct srv_buf b;

	srv_buf_init(&b, 256);
	srv_buf_addf(&b, "{\"status\":\"ok\",\"version\":\"%s\"}",
		     SBXFS_VERSION);
	srv_json(r, 200, &b);
	srv_buf_free(&b);
}

static void h_ws_plain(struct srv_req *r)
{
	/* gorilla's answer to a GET without an Upgrade */
	const char m[] = "Bad Request\n";

	srv_respond(r, 400, "text/plain; charset=utf-8", m, sizeof(m) - 1);
}

static const struct route routes[] = {
	{ SRV_GET, "/health", h_health, AUTH_NONE },
	{ SRV_POST, "/v1/capsules", srv_h_create, AUTH_KEY },
	{ SRV_GET, "/v1/capsules", srv_h_list, AUTH_KEY },
	{ SRV_GET, "/v1/capsules/{id}", srv_h_get, AUTH_KEY },
	{ SRV_DELETE, "/v1/capsules/{id}", srv_h_destroy, AUTH_KEY },
	{ SRV_POST, "/v1/capsules/{id}/pause", srv_h_pause, AUTH_KEY },
	{ SRV_POST, "/v1/capsules/{id}/resume", srv_h_resume, AUTH_KEY },
	{ SRV_POST, "/v1/capsules/{id}/ping", srv_h_ping, AUTH_KEY },
	{ SRV_POST, "/v1/capsules/{id}/exec", srv_h_exec, AUTH_KEY },
	{ SRV_GET, "/v1/capsules/{id}/exec/stream", h_ws_plain, AUTH_WS },
	{ SRV_GET, "/v1/capsules/{id}/processes", srv_h_proc_list, AUTH_KEY },
	{ SRV_GET, "/v1/capsules/{id}/processes/{sel}/stream", h_ws_plain,
	  AUTH_WS },
	{ SRV_DELETE, "/v1/capsules/{id}/processes/{sel}", srv_h_proc_kill,
	  AUTH_KEY },
	{ SRV_POST, "/v1/capsules/{id}/files/write", srv_h_write, AUTH_KEY },
	{ SRV_POST, "/v1/capsules/{id}/files/stream/write",
	  srv_h_stream_write, AUTH_KEY },
	{ SRV_POST, "/v1/capsules/{id}/files/read", srv_h_read, AUTH_KEY },
	{ SRV_POST, "/v1/capsules/{id}/files/stream/read", srv_h_stream_read,
	  AUTH_KEY },
	{ SRV_POST, "/v1/capsules/{id}/files/list", srv_h_list_dir,
	  AUTH_KEY },
	{ SRV_POST, "/v1/capsules/{id}/files/mkdir", srv_h_mkdir, AUTH_KEY },
	{ SRV_POST, "/v1/capsules/{id}/files/remove", srv_h_remove,
	  AUTH_KEY },
	{ SRV_POST, "/v1/snapshots", srv_h_snap_create, AUTH_KEY },
	{ SRV_GET, "/v1/snapshots", srv_h_snap_list, AUTH_KEY },
	{ SRV_DELETE, "/v1/snapshots/{sel}", srv_h_snap_delete, AUTH_KEY },
};

/* Match path against pat; fills id/sel.  Segments never contain '/'. */
static bool match(const char *pat, const char *path, char *id, size_t il,
		  char *sel, size_t sl)
{
	while (*pat && *path) {
		if (*pat == '{') {
			bool is_id = !strncmp(pat, "{id}", 4);
			const char *e = strchr(path, '/');
			size_t n = e ? (size_t)(e - path) : strlen(path);

			if (!n || n >= (is_id ? il : sl))
				return false;
			memcpy(is_id ? id : sel, path, n);
			(is_id ? id : sel)[n] = '\0';
			path += n;
			pat = strchr(pat, '}') + 1;
			continue;
		}
		if (*pat != *path)
			return false;
		pat++;
		path++;
	}
	return !*pat && !*path;
}

/* Find the route: 0 found, 404 no path matched, 405 wrong method. */
static int route_find(struct srv_req *r, const struct route **out)
{
	size_t i;
	int rc = 404;
	char id[64], sel[128];

	for (i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
		if (!match(routes[i].pat, r->path, id, sizeof(id), sel,
			   sizeof(sel)))
			continue;
		rc = 405;
		if (routes[i].method != r->method)
			continue;
		snprintf(r->id, sizeof(r->id), "%s", id);
		snprintf(r->sel, sizeof(r->sel), "%s", sel);
		if (!strchr(routes[i].pat, '{')) {
			r->id[0] = '\0';
			r->sel[0] = '\0';
		} else if (!strstr(routes[i].pat, "{id}")) {
			r->id[0] = '\0';
		} else if (!strstr(routes[i].pat, "{sel}")) {
			r->sel[0] = '\0';
		}
		*out = &routes[i];
		return 0;
	}
	return rc;
}

/* Constant-time compare of the presented key. */
static bool key_ok(const char *k)
{
	size_t i, n = strlen(srv_g.key);
	unsigned char d = 0;

	if (strlen(k) != n)
		return false;
	for (i = 0; i < n; i++)
		d |= (unsigned char)(k[i] ^ srv_g.key[i]);
	return d == 0;
}

static int hdr(struct lws *wsi, enum lws_token_indexes t, char *buf,
	       size_t len)
{
	int n;

	buf[0] = '\0';
	if (lws_hdr_total_length(wsi, t) <= 0)
		return 0;
	n = lws_hdr_copy(wsi, buf, len, t);
	if (n < 0) {
		buf[0] = '\0';
		return -1;
	}
	return n;
}

static int custom_hdr(struct lws *wsi, const char *name, char *buf,
		      size_t len)
{
	int n;

	buf[0] = '\0';
	n = lws_hdr_custom_copy(wsi, buf, len, name, strlen(name));
	if (n < 0)
		buf[0] = '\0';
	return n;
}

/* 0 authenticated; else 401 message. */
static const char *auth_check(struct lws *wsi)
{
	char k[128], a[1024];

	if (custom_hdr(wsi, "x-api-key:", k, sizeof(k)) > 0 || k[0]) {
		if (!key_ok(k))
			return "invalid API key";
		return NULL;
	}
	if (hdr(wsi, WSI_TOKEN_HTTP_AUTHORIZATION, a, sizeof(a)) > 0)
		return "invalid or expired token";
	return "X-API-Key or Authorization: Bearer <token> required";
}

static void req_fill(struct srv_req *r, struct lws *wsi)
{
	char cl[32], ex[64];

	if (lws_hdr_total_length(wsi, WSI_TOKEN_GET_URI) > 0) {
		r->method = SRV_GET;
		hdr(wsi, WSI_TOKEN_GET_URI, r->path, sizeof(r->path));
	} else if (lws_hdr_total_length(wsi, WSI_TOKEN_POST_URI) > 0) {
		r->method = SRV_POST;
		hdr(wsi, WSI_TOKEN_POST_URI, r->path, sizeof(r->path));
	} else if (lws_hdr_total_length(wsi, WSI_TOKEN_DELETE_URI) > 0) {
		r->method = SRV_DELETE;
		hdr(wsi, WSI_TOKEN_DELETE_URI, r->path, sizeof(r->path));
	} else {
		static const enum lws_token_indexes o[] = {
			WSI_TOKEN_PUT_URI, WSI_TOKEN_PATCH_URI,
			WSI_TOKEN_OPTIONS_URI, WSI_TOKEN_HEAD_URI };
		size_t i;

		r->method = SRV_OTHER;
		for (i = 0; i < sizeof(o) / sizeof(o[0]); i++)
			if (hdr(wsi, o[i], r->path, sizeof(r->path)) > 0)
				break;
	}
	/* the hosted base URL ends in /api (Caddy strips it): accept both */
	if (!strncmp(r->path, "/api/", 5))
		memmove(r->path, r->path + 4, strlen(r->path + 4) + 1);
	hdr(wsi, WSI_TOKEN_HTTP_URI_ARGS, r->query, sizeof(r->query));
	hdr(wsi, WSI_TOKEN_HTTP_CONTENT_TYPE, r->ctype, sizeof(r->ctype));
	if (hdr(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH, cl, sizeof(cl)) > 0) {
		char *e;

		r->clen = strtoll(cl, &e, 10);
		if (e == cl || r->clen < 0)
			r->clen = -1;
	}
	/* lws 4.1 ignores Expect; curl waits 1 s for the 100 without it */
	if (hdr(wsi, WSI_TOKEN_HTTP_EXPECT, ex, sizeof(ex)) > 0 &&
	    !strcasecmp(ex, "100-continue") && r->clen != 0)
		r->expect100 = true;
}

/* ---- worker threads ----------------------------------------------------- */

static void *worker(void *arg)
{
	struct srv_req *r = arg;

	r->fn(r);
	if (r->clen >= 0 && r->clen <= (long long)SRV_BODY_MAX * 2) {
		/* drop what the handler left unread, so the answer can be
		 * followed by the next request on this connection */
		char tmp[16384];

		while (srv_read(r, tmp, sizeof(tmp)) > 0)
			;
	}
	pthread_mutex_lock(&srv_g.lock);
	if (!r->status)
		respond_locked(r, 500, "application/json", NULL, 0);
	srv_g.workers--;
	pthread_cond_broadcast(&srv_g.cond);
	srv_req_put_locked(r);
	pthread_mutex_unlock(&srv_g.lock);
	return NULL;
}

static int spawn(struct srv_req *r)
{
	pthread_attr_t at;
	pthread_t t;
	int rc;

	pthread_mutex_lock(&srv_g.lock);
	if (srv_g.workers >= SRV_WORKERS_MAX || srv_g.stopping) {
		pthread_mutex_unlock(&srv_g.lock);
		return -EAGAIN;
	}
	srv_g.workers++;
	r->refs++;
	pthread_mutex_unlock(&srv_g.lock);
	pthread_attr_init(&at);
	pthread_attr_setstacksize(&at, 2 * 1024 * 1024);
	pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
	rc = pthread_create(&t, &at, worker, r);
	pthread_attr_destroy(&at);
	if (rc) {
		pthread_mutex_lock(&srv_g.lock);
		srv_g.workers--;
		srv_req_put_locked(r);
		pthread_mutex_unlock(&srv_g.lock);
		return -rc;
	}
	return 0;
}

/* ---- lws thread --------------------------------------------------------- */

static void detach_locked(struct pss *ps)
{
	struct srv_req *r = ps->r;

	if (!r)
		return;
	ps->r = NULL;
	r->wsi = NULL;
	r->gone = true;
	pthread_cond_broadcast(&srv_g.cond);
	srv_req_put_locked(r);
}

static void drain_wakeq(void)
{
	struct srv_req *r, *next;

	pthread_mutex_lock(&srv_g.lock);
	r = srv_g.wakeq;
	srv_g.wakeq = NULL;
	for (; r; r = next) {
		next = r->wnext;
		r->queued = false;
		if (r->wsi) {
			if (r->rx_resume && r->rx_paused) {
				r->rx_paused = false;
				r->rx_resume = false;
				lws_rx_flow_control(r->wsi, 1);
			}
			lws_callback_on_writable(r->wsi);
		}
		srv_req_put_locked(r);
	}
	pthread_mutex_unlock(&srv_g.lock);
	srv_procs_reap();
}

static void plain(struct srv_req *r, int status, const char *body)
{
	srv_respond(r, status, "text/plain; charset=utf-8", body,
		    strlen(body));
}

static int on_http(struct lws *wsi, struct pss *ps)
{
	const struct route *rt = NULL;
	struct srv_req *r;
	char te[64];
	int rc;

	pthread_mutex_lock(&srv_g.lock);
	detach_locked(ps);
	pthread_mutex_unlock(&srv_g.lock);
	r = req_new();
	if (!r)
		return -1;
	req_fill(r, wsi);
	r->wsi = wsi;
	ps->r = r;
	ps->te = false;
	ps->te_state = 0;
	ps->te_left = 0;
	if (hdr(wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING, te, sizeof(te)) > 0 &&
	    strcasestr(te, "chunked")) {
		/* lws 4.1 does not decode chunked request bodies: we do,
		 * and close the connection afterwards */
		ps->te = true;
		r->close_after = true;
	} else if (r->method == SRV_POST && r->clen < 0) {
		/* lws would wait for a body that never comes */
		r->in_eof = true;
		r->close_after = true;
	} else if (r->clen <= 0) {
		r->in_eof = true;
	}

	{
		/* Wrenn's port proxy: Host PORT-ID.anything, no key */
		char host[256], pid[64];
		unsigned pport;

		if (hdr(wsi, WSI_TOKEN_HOST, host, sizeof(host)) > 0 &&
		    srv_proxy_match(host, &pport, pid, sizeof(pid))) {
			snprintf(r->id, sizeof(r->id), "%s", pid);
			snprintf(r->sel, sizeof(r->sel), "%u", pport);
			r->fn = srv_h_proxy;
			if (spawn(r))
				plain(r, 503, "server busy\n");
			return 0;
		}
	}
	rc = route_find(r, &rt);
	if (rc == 404 && (!strncmp(r->path, "/v1/capsules", 12) ||
			  !strncmp(r->path, "/v1/snapshots", 13)) &&
	    (auth_check(wsi) != NULL)) {
		srv_error(r, 401, "unauthorized", auth_check(wsi));
		return 0;
	}
	if (rc == 404) {
		plain(r, 404, "404 page not found\n");
		return 0;
	}
	if (rc == 405) {
		if (!strncmp(r->path, "/v1/", 4) && auth_check(wsi)) {
			srv_error(r, 401, "unauthorized", auth_check(wsi));
			return 0;
		}
		srv_respond(r, 405, NULL, NULL, 0);
		return 0;
	}
	if (rt->auth == AUTH_KEY && auth_check(wsi)) {
		srv_error(r, 401, "unauthorized", auth_check(wsi));
		return 0;
	}
	if (r->id[0] && !srv_id_valid(r->id)) {
		srv_error(r, 400, "invalid_request", "invalid sandbox ID");
		return 0;
	}
	r->fn = rt->fn;
	if (spawn(r))
		srv_error(r, 503, "internal_error", "server busy");
	return 0;
}

/* Feed request body bytes (chunked transfer decoded here). */
static int on_body(struct pss *ps, const unsigned char *p, size_t len)
{
	struct srv_req *r = ps->r;
	int rc = 0;

	if (!r)
		return 0;
	pthread_mutex_lock(&srv_g.lock);
	if (!ps->te) {
		r->in_total += len;
		if (!r->status)
			rc = srv_buf_add(&r->in, p, len);
	} else {
		size_t i = 0;

		while (i < len && !r->in_eof && !rc) {
			unsigned char c = p[i];

			switch (ps->te_state) {
			case 0: /* size */
				if (c == '\r' || c == ';') {
					ps->te_state = 1;
				} else if (c == '\n') {
					ps->te_state = ps->te_left ? 2 : 4;
				} else {
					int v = (c >= '0' && c <= '9') ?
						c - '0' :
						(c | 0x20) >= 'a' &&
						(c | 0x20) <= 'f' ?
						(c | 0x20) - 'a' + 10 : -1;

					if (v < 0 || ps->te_left >> 56) {
						rc = -EINVAL;
						break;
					}
					ps->te_left = ps->te_left * 16 + v;
				}
				i++;
				break;
			case 1: /* to end of size line */
				if (c == '\n')
					ps->te_state = ps->te_left ? 2 : 4;
				i++;
				break;
			case 2: { /* data */
				size_t n = len - i;

				if (n > ps->te_left)
					n = ps->te_left;
				r->in_total += n;
				if (!r->status)
					rc = srv_buf_add(&r->in, p + i, n);
				ps->te_left -= n;
				i += n;
				if (!ps->te_left)
					ps->te_state = 3;
				break;
			}
			case 3: /* CRLF after data */
				if (c == '\n')
					ps->te_state = 0;
				i++;
				break;
			default:
				break;
			}
			if (ps->te_state == 4)
				r->in_eof = true;
		}
	}
	if (rc)
		r->gone = true;	/* the worker sees EPIPE */
	if (r->in.len > SRV_PIPE_WIN && !r->rx_paused && r->wsi) {
		r->rx_paused = true;
		lws_rx_flow_control(r->wsi, 0);
	}
	pthread_cond_broadcast(&srv_g.cond);
	pthread_mutex_unlock(&srv_g.lock);
	return rc ? -1 : 0;
}

static void add_date(struct lws *wsi, unsigned char **p, unsigned char *end)
{
	char d[64];
	time_t t = time(NULL);
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(d, sizeof(d), "%a, %d %b %Y %H:%M:%S GMT", &tm);
	if (lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_DATE,
					 (unsigned char *)d, strlen(d), p, end))
		lwsl_err("%s: header space\n", __func__);
}

/* Status line with Go's reason phrases (lws lacks some, e.g. 201). */
static int status_line(struct lws *wsi, int code, unsigned char **p,
		       unsigned char *end)
{
	static const struct {
		int code;
		const char *text;
	} t[] = {
		{ 101, "Switching Protocols" }, { 200, "OK" },
		{ 201, "Created" }, { 202, "Accepted" },
		{ 204, "No Content" }, { 400, "Bad Request" },
		{ 401, "Unauthorized" }, { 403, "Forbidden" },
		{ 404, "Not Found" }, { 405, "Method Not Allowed" },
		{ 409, "Conflict" }, { 413, "Request Entity Too Large" },
		{ 500, "Internal Server Error" }, { 501, "Not Implemented" },
		{ 502, "Bad Gateway" }, { 503, "Service Unavailable" },
	};
	const char *text = "";
	char line[64];
	size_t i;
	int n;

	for (i = 0; i < sizeof(t) / sizeof(t[0]); i++)
		if (t[i].code == code)
			text = t[i].text;
	n = snprintf(line, sizeof(line), "HTTP/1.1 %d %s", code, text);
	return lws_add_http_header_by_name(wsi, NULL, (unsigned char *)line,
					   n, p, end);
}

#define WCHUNK 32768

static int on_http_writeable(struct lws *wsi, struct pss *ps)
{
	static unsigned char buf[LWS_PRE + WCHUNK + 64];
	unsigned char *start = buf + LWS_PRE, *p = start;
	unsigned char *end = buf + sizeof(buf) - 1;
	struct srv_req *r = ps->r;
	size_t n = 0;
	bool fin;

	if (!r)
		return 0;
	pthread_mutex_lock(&srv_g.lock);
	if (r->done) {
		/* everything flushed: drop the connection (body unread or
		 * chunked request) */
		pthread_mutex_unlock(&srv_g.lock);
		return -1;
	}
	if (r->cont_want && !r->cont_sent && !r->hdr_sent && !r->status &&
	    !r->in_eof && !r->gone) {
		/* interim response: lws has no API for it, but it is plain
		 * bytes ahead of the final header */
		static const char c100[] = "HTTP/1.1 100 Continue\r\n\r\n";

		r->cont_sent = true;
		memcpy(start, c100, sizeof(c100) - 1);
		pthread_mutex_unlock(&srv_g.lock);
		if (lws_write(wsi, start, sizeof(c100) - 1,
			      LWS_WRITE_HTTP_HEADERS) < 0)
			return -1;
		lws_callback_on_writable(wsi);
		return 0;
	}
	if (!r->status) {
		pthread_mutex_unlock(&srv_g.lock);
		return 0;
	}
	if (!r->hdr_sent) {
		if (status_line(wsi, r->status, &p, end))
			goto fail;
		if (r->rtype[0] &&
		    lws_add_http_header_by_token(wsi,
			WSI_TOKEN_HTTP_CONTENT_TYPE,
			(unsigned char *)r->rtype, strlen(r->rtype), &p, end))
			goto fail;
		if (!strncmp(r->rtype, "text/plain", 10) &&
		    lws_add_http_header_by_name(wsi,
				(unsigned char *)"x-content-type-options:",
				(unsigned char *)"nosniff", 7, &p, end))
			goto fail;
		add_date(wsi, &p, end);
		if (r->chunked) {
			if (lws_add_http_header_by_token(wsi,
				WSI_TOKEN_HTTP_TRANSFER_ENCODING,
				(unsigned char *)"chunked", 7, &p, end))
				goto fail;
		} else if (r->status != 204 && r->status != 304) {
			if (lws_add_http_header_content_length(wsi,
							       r->out.len,
							       &p, end))
				goto fail;
		}
		if (!r->in_eof)
			r->close_after = true;	/* promised below */
		if (r->close_after &&
		    lws_add_http_header_by_token(wsi, WSI_TOKEN_CONNECTION,
			(unsigned char *)"close", 5, &p, end))
			goto fail;
		if (lws_finalize_http_header(wsi, &p, end))
			goto fail;
		r->hdr_sent = true;
		if (!r->chunked) {
			/* whole body is known: send it with the headers */
			if (r->out.len && r->out.len <= (size_t)(end - p)) {
				memcpy(p, r->out.p, r->out.len);
				p += r->out.len;
				srv_buf_consume(&r->out, r->out.len);
			}
		}
		if (lws_write(wsi, start, p - start,
			      LWS_WRITE_HTTP_HEADERS) < 0)
			goto fail;
		p = start;
	}
	if (r->out.len) {
		n = r->out.len < WCHUNK ? r->out.len : WCHUNK;
		if (r->chunked) {
			int h = snprintf((char *)p, 16, "%zx\r\n", n);

			p += h;
		}
		memcpy(p, r->out.p, n);
		p += n;
		if (r->chunked) {
			memcpy(p, "\r\n", 2);
			p += 2;
		}
		srv_buf_consume(&r->out, n);
		pthread_cond_broadcast(&srv_g.cond);
	}
	fin = r->out_eof && !r->out.len;
	if (fin && r->chunked) {
		memcpy(p, "0\r\n\r\n", 5);
		p += 5;
	}
	if (p > start && lws_write(wsi, start, p - start, LWS_WRITE_HTTP) < 0)
		goto fail;
	if (!fin) {
		if (r->out.len)
			lws_callback_on_writable(wsi);
		pthread_mutex_unlock(&srv_g.lock);
		return 0;
	}
	if (!r->in_eof && !r->gone) {
		/* answered early: finish once the body is in (the worker
		 * drains it), as Go's server does */
		r->await_eof = true;
		pthread_mutex_unlock(&srv_g.lock);
		return 0;
	}
	if (r->close_after || !r->in_eof) {
		r->done = true;
		lws_callback_on_writable(wsi);
		pthread_mutex_unlock(&srv_g.lock);
		return 0;
	}
	detach_locked(ps);
	pthread_mutex_unlock(&srv_g.lock);
	return lws_http_transaction_completed(wsi) ? -1 : 0;
fail:
	pthread_mutex_unlock(&srv_g.lock);
	return -1;
}

/* ---- WebSocket ---------------------------------------------------------- */

#define WS_FRAG 4082	/* gorilla: 4096-byte buffer minus header room */

static int on_ws_writeable(struct lws *wsi, struct pss *ps)
{
	static unsigned char buf[LWS_PRE + WS_FRAG];
	struct srv_req *r = ps->r;
	struct srv_wsq *q;
	size_t n;
	int flags;

	if (!r)
		return -1;
	pthread_mutex_lock(&srv_g.lock);
	q = r->wq_head;
	if (!q) {
		if (r->ws_close) {
			/* gorilla's conn.Close(): TCP goes, no close frame */
			pthread_mutex_unlock(&srv_g.lock);
			shutdown(lws_get_socket_fd(wsi), SHUT_RDWR);
			return -1;
		}
		pthread_mutex_unlock(&srv_g.lock);
		return 0;
	}
	n = q->len - r->wq_off;
	if (n > WS_FRAG)
		n = WS_FRAG;
	memcpy(buf + LWS_PRE, q->data + r->wq_off, n);
	flags = lws_write_ws_flags(LWS_WRITE_TEXT, r->wq_off == 0,
				   r->wq_off + n == q->len);
	r->wq_off += n;
	if (r->wq_off == q->len) {
		r->wq_head = q->next;
		if (!r->wq_head)
			r->wq_tail = NULL;
		r->wq_bytes -= q->len;
		r->wq_off = 0;
		free(q);
		srv_ws_drained_locked(r);
	}
	pthread_mutex_unlock(&srv_g.lock);
	if (lws_write(wsi, buf + LWS_PRE, n, flags) < (int)n)
		return -1;
	lws_callback_on_writable(wsi);
	return 0;
}

/* Answer an upgrade we refuse, synchronously: lws completes the
 * transaction as soon as CONFIRM_UPGRADE returns >0. */
static int write_now(struct lws *wsi, int status, const char *ctype,
		     const char *body)
{
	unsigned char buf[LWS_PRE + 2048];
	unsigned char *start = buf + LWS_PRE, *p = start;
	unsigned char *end = buf + sizeof(buf) - 1;
	size_t n = strlen(body);

	if (status_line(wsi, status, &p, end) ||
	    lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_CONTENT_TYPE,
		(unsigned char *)ctype, strlen(ctype), &p, end))
		return -1;
	add_date(wsi, &p, end);
	if (lws_add_http_header_content_length(wsi, n, &p, end) ||
	    lws_finalize_http_header(wsi, &p, end) ||
	    n > (size_t)(end - p))
		return -1;
	memcpy(p, body, n);
	p += n;
	if (lws_write(wsi, start, p - start, LWS_WRITE_HTTP_HEADERS) < 0)
		return -1;
	return 1;
}

static int on_confirm_upgrade(struct lws *wsi)
{
	struct srv_req *r = req_new();
	const struct route *rt = NULL;
	int rc = 0;

	if (!r)
		return -1;
	req_fill(r, wsi);
	if (route_find(r, &rt) || rt->auth != AUTH_WS)
		/* not a WebSocket route: answer as chi would */
		rc = write_now(wsi, 404, "text/plain; charset=utf-8",
			       "404 page not found\n");
	else if (!srv_id_valid(r->id))
		rc = write_now(wsi, 400, "application/json",
			       "{\"error\":{\"code\":\"invalid_request\","
			       "\"message\":\"invalid sandbox ID\"}}\n");
	pthread_mutex_lock(&srv_g.lock);
	srv_req_put_locked(r);
	pthread_mutex_unlock(&srv_g.lock);
	return rc;
}

static int on_ws_filter(struct lws *wsi, struct pss *ps)
{
	struct srv_req *r = req_new();
	const struct route *rt = NULL;

	if (!r)
		return -1;
	req_fill(r, wsi);
	if (route_find(r, &rt) || rt->auth != AUTH_WS) {
		pthread_mutex_lock(&srv_g.lock);
		srv_req_put_locked(r);
		pthread_mutex_unlock(&srv_g.lock);
		return -1;
	}
	r->ws = true;
	r->ws_attach = strstr(rt->pat, "/processes/") != NULL;
	r->ws_authed = auth_check(wsi) == NULL;
	ps->r = r;
	return 0;
}

static int callback(struct lws *wsi, enum lws_callback_reasons reason,
		    void *user, void *in, size_t len)
{
	struct pss *ps = user;
	struct srv_req *r;

	if (!ps && reason != LWS_CALLBACK_EVENT_WAIT_CANCELLED &&
	    reason != LWS_CALLBACK_HTTP_CONFIRM_UPGRADE)
		return 0;
	switch (reason) {
	case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
		drain_wakeq();
		return 0;
	case LWS_CALLBACK_HTTP:
		return on_http(wsi, ps);
	case LWS_CALLBACK_HTTP_BODY:
		return on_body(ps, in, len);
	case LWS_CALLBACK_HTTP_BODY_COMPLETION:
		if (ps->r) {
			pthread_mutex_lock(&srv_g.lock);
			ps->r->in_eof = true;
			if (ps->r->await_eof)
				lws_callback_on_writable(wsi);
			pthread_cond_broadcast(&srv_g.cond);
			pthread_mutex_unlock(&srv_g.lock);
		}
		return 0;
	case LWS_CALLBACK_HTTP_WRITEABLE:
		return on_http_writeable(wsi, ps);
	case LWS_CALLBACK_CLOSED_HTTP:
	case LWS_CALLBACK_HTTP_DROP_PROTOCOL:
		if (ps && ps->r && !ps->r->ws) {
			pthread_mutex_lock(&srv_g.lock);
			detach_locked(ps);
			pthread_mutex_unlock(&srv_g.lock);
		}
		return 0;
	case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
		return on_confirm_upgrade(wsi);
	case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
		return ps ? on_ws_filter(wsi, ps) : -1;
	case LWS_CALLBACK_ESTABLISHED:
		if (!ps->r)
			return -1;
		pthread_mutex_lock(&srv_g.lock);
		ps->r->wsi = wsi;
		if (ps->r->ws_attach && ps->r->ws_authed)
			srv_ws_attach_locked(ps->r);
		pthread_mutex_unlock(&srv_g.lock);
		/* wait for a `start` (or the 5 s first-message auth) */
		lws_set_timer_usecs(wsi, 5 * LWS_USEC_PER_SEC);
		return 0;
	case LWS_CALLBACK_TIMER:
		r = ps->r;
		if (!r)
			return -1;
		pthread_mutex_lock(&srv_g.lock);
		if (!r->ws_authed && !r->ws_started)
			srv_ws_error_close_locked(r, "authentication failed");
		pthread_mutex_unlock(&srv_g.lock);
		return 0;
	case LWS_CALLBACK_RECEIVE:
		r = ps->r;
		if (!r)
			return -1;
		pthread_mutex_lock(&srv_g.lock);
		if (srv_buf_add(&r->wsin, in, len)) {
			pthread_mutex_unlock(&srv_g.lock);
			return -1;
		}
		if (lws_is_final_fragment(wsi) &&
		    !lws_remaining_packet_payload(wsi)) {
			srv_ws_message_locked(r, r->wsin.p ? r->wsin.p : "",
					      r->wsin.len);
			r->wsin.len = 0;
		}
		pthread_mutex_unlock(&srv_g.lock);
		return 0;
	case LWS_CALLBACK_SERVER_WRITEABLE:
		return on_ws_writeable(wsi, ps);
	case LWS_CALLBACK_CLOSED:
		if (ps && ps->r) {
			pthread_mutex_lock(&srv_g.lock);
			srv_ws_closed_locked(ps->r);
			detach_locked(ps);
			pthread_mutex_unlock(&srv_g.lock);
		}
		return 0;
	default:
		break;
	}
	return 0;
}

const struct lws_protocols srv_protocols[] = {
	{ "wrenn", callback, sizeof(struct pss), 65536, 0, NULL, 65536 },
	{ NULL, NULL, 0, 0, 0, NULL, 0 }
};
