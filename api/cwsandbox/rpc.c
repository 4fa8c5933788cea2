/* rpc.c - gRPC over libcurl for the CW Sandbox backend.
 *
 * One easy handle per call on the backend's one multi handle, HTTP/2
 * (prior knowledge for http://, ALPN h2 for https://), so all calls share
 * one multiplexed connection (PIPEWAIT).  A message is the 5-byte gRPC
 * prefix and a packed protobuf.  The status comes in trailers, which
 * libcurl hands to the header callback like headers; a trailers-only
 * answer carries it in the headers.  Streaming calls send through a read
 * callback that pauses (CURL_READFUNC_PAUSE) when the queue is empty and
 * is woken with curl_easy_pause when a message is queued; delivery of
 * responses pauses (CURL_WRITEFUNC_PAUSE) while the consumer asked so.
 *
 * Everything here runs on the service thread.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/cwsandbox/cw_int.h"

#define SVC "/coreweave.sandbox.v1.SandboxService/"
#define RX_MAX ((100u << 20) + 5)	/* the SDKs' message cap */

struct sendq {
	struct sendq *next;
	size_t len, off;
	void *tag;
	uint8_t data[];
};

struct cw_call {
	struct cw_call *next;
	struct cw *w;
	CURL *h;
	struct curl_slist *hdrs;
	char method[48];
	bool streaming;
	uint8_t *req;		/* unary: the framed request */
	cw_unary_fn done;
	struct cw_stream_cbs cbs;
	void *ud;

	struct sendq *sh, *st;
	bool send_closed;
	bool send_paused;	/* read callback returned PAUSE */
	bool recv_hold;		/* consumer paused delivery */
	bool recv_paused;	/* write callback returned PAUSE */
	bool in_cb, cancelled, ended, transport_done;

	uint8_t *rx;
	size_t rx_len, rx_cap, rx_off;
	long http;
	struct cw_status status;
	bool got_status;
	CURLcode rc;
	int64_t op_deadline;	/* restored while done() runs */
};

/* ---- helpers ---------------------------------------------------------- */

static uint8_t *frame(const ProtobufCMessage *m, size_t *len)
{
	size_t n = protobuf_c_message_get_packed_size(m);
	uint8_t *b = malloc(n + 5);

	if (!b)
		return NULL;
	b[0] = 0;
	b[1] = n >> 24;
	b[2] = n >> 16;
	b[3] = n >> 8;
	b[4] = n;
	protobuf_c_message_pack(m, b + 5);
	*len = n + 5;
	return b;
}

static void pct_decode(const char *in, size_t n, char *out, size_t ol)
{
	size_t i, o = 0;

	for (i = 0; i < n && o + 1 < ol; i++) {
		unsigned v;

		if (in[i] == '%' && i + 2 < n &&
		    sscanf(in + i + 1, "%2x", &v) == 1) {
			out[o++] = (char)v;
			i += 2;
		} else {
			out[o++] = in[i];
		}
	}
	out[o] = '\0';
}

static size_t on_header(char *p, size_t sz, size_t nm, void *ud)
{
	struct cw_call *c = ud;
	size_t n = sz * nm, vl;
	const char *v;

	if (n >= 5 && !memcmp(p, "HTTP/", 5)) {
		const char *s = memchr(p, ' ', n);

		if (s)
			c->http = strtol(s + 1, NULL, 10);
		return n;
	}
	v = memchr(p, ':', n);
	if (!v)
		return n;
	vl = n - (v + 1 - p);
	for (v++; vl && (*v == ' ' || *v == '\t'); v++, vl--)
		;
	while (vl && (v[vl - 1] == '\r' || v[vl - 1] == '\n' ||
		      v[vl - 1] == ' '))
		vl--;
#define HDR(lit) ((size_t)(v - 1 - p) >= sizeof(lit) - 1 && \
		  !strncasecmp(p, lit, sizeof(lit) - 1) && \
		  p[sizeof(lit) - 1] == ':')
	if (HDR("grpc-status")) {
		c->status.code = (int)strtol(v, NULL, 10);
		c->got_status = true;
	} else if (HDR("grpc-message")) {
		pct_decode(v, vl, c->status.msg, sizeof(c->status.msg));
	} else if (HDR("grpc-status-details-bin")) {
		cw_err_details(&c->status, v, vl);
	}
#undef HDR
	return n;
}

/* Hand complete messages to the stream's consumer; false when it paused
 * or cancelled. */
static bool deliver(struct cw_call *c)
{
	while (c->rx_len - c->rx_off >= 5 && !c->recv_hold && !c->cancelled) {
		const uint8_t *p = c->rx + c->rx_off;
		uint32_t len = (uint32_t)p[1] << 24 | p[2] << 16 | p[3] << 8 |
			       p[4];

		if (c->rx_len - c->rx_off < (size_t)len + 5)
			break;
		c->rx_off += (size_t)len + 5;
		c->in_cb = true;
		if (c->cbs.on_msg(c->w, c->ud, p + 5, len))
			c->recv_hold = true;
		c->in_cb = false;
	}
	if (c->rx_off == c->rx_len)
		c->rx_len = c->rx_off = 0;
	return !c->recv_hold && !c->cancelled;
}

static size_t on_write(char *p, size_t sz, size_t nm, void *ud)
{
	struct cw_call *c = ud;
	size_t n = sz * nm;

	if (c->cancelled)
		return 0;
	if (c->recv_hold) {
		c->recv_paused = true;
		return CURL_WRITEFUNC_PAUSE;
	}
	if (c->rx_off && c->rx_off > c->rx_cap / 2) {
		memmove(c->rx, c->rx + c->rx_off, c->rx_len - c->rx_off);
		c->rx_len -= c->rx_off;
		c->rx_off = 0;
	}
	if (c->rx_len + n > c->rx_cap) {
		size_t cap = c->rx_cap ? c->rx_cap : 65536;
		uint8_t *nb;

		while (cap < c->rx_len + n)
			cap *= 2;
		if (cap > RX_MAX + 65536)
			return 0;	/* over the message cap: abort */
		nb = realloc(c->rx, cap);
		if (!nb)
			return 0;
		c->rx = nb;
		c->rx_cap = cap;
	}
	memcpy(c->rx + c->rx_len, p, n);
	c->rx_len += n;
	if (c->streaming)
		deliver(c);
	return c->cancelled ? 0 : n;
}

static size_t on_read(char *buf, size_t sz, size_t nm, void *ud)
{
	struct cw_call *c = ud;
	size_t room = sz * nm, got = 0, k;
	struct sendq *q;

	if (c->cancelled)
		return CURL_READFUNC_ABORT;
	while (got < room && (q = c->sh)) {
		k = q->len - q->off;
		if (k > room - got)
			k = room - got;
		memcpy(buf + got, q->data + q->off, k);
		q->off += k;
		got += k;
		if (q->off < q->len)
			break;
		c->sh = q->next;
		if (!c->sh)
			c->st = NULL;
		if (q->tag && c->cbs.taken) {
			c->in_cb = true;
			c->cbs.taken(c->w, c->ud, q->tag);
			c->in_cb = false;
		}
		free(q);
	}
	if (got)
		return got;
	if (c->send_closed)
		return 0;
	c->send_paused = true;
	return CURL_READFUNC_PAUSE;
}

static void call_free(struct cw *w, struct cw_call *c)
{
	struct cw_call **pp;
	struct sendq *q;

	for (pp = &w->calls; *pp; pp = &(*pp)->next)
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	if (c->h) {
		curl_multi_remove_handle(w->loop.multi, c->h);
		curl_easy_cleanup(c->h);
	}
	curl_slist_free_all(c->hdrs);
	while ((q = c->sh)) {
		c->sh = q->next;
		free(q);
	}
	free(c->req);
	free(c->rx);
	free(c);
}

static struct cw_call *call_new(struct cw *w, const char *method,
				int64_t deadline_ms, int *err)
{
	struct cw_call *c = calloc(1, sizeof(*c));
	char url[1024], tmo[48];
	CURL *h;

	*err = -ENOMEM;
	if (!c)
		return NULL;
	c->w = w;
	/* one bound per user operation: a step after the first gets what
	 * is left of it */
	if (deadline_ms > 0) {
		deadline_ms = cw_op_left(w, deadline_ms);
		c->op_deadline = cw_in_loop(w) && w->loop.op_deadline ?
			w->loop.op_deadline : cw_now_ms() + deadline_ms;
	}
	snprintf(c->method, sizeof(c->method), "%s", method);
	h = c->h = curl_easy_init();
	if (!h) {
		free(c);
		return NULL;
	}
	snprintf(url, sizeof(url), "%s" SVC "%s", w->base, method);
	c->hdrs = curl_slist_append(NULL, "content-type: application/grpc");
	c->hdrs = curl_slist_append(c->hdrs, "te: trailers");
	c->hdrs = curl_slist_append(c->hdrs, w->auth_hdr);
	c->hdrs = curl_slist_append(c->hdrs, "Expect:");
	if (deadline_ms > 0) {
		/* grpc-timeout: at most 8 digits */
		snprintf(tmo, sizeof(tmo), "grpc-timeout: %lldm",
			 (long long)(deadline_ms > 99999999 ? 99999999
							    : deadline_ms));
		c->hdrs = curl_slist_append(c->hdrs, tmo);
	}
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, c->hdrs);
	curl_easy_setopt(h, CURLOPT_USERAGENT, "sbxfs/" SBXFS_VERSION
			 " grpc-c-curl");
	curl_easy_setopt(h, CURLOPT_HTTP_VERSION, w->prior_knowledge ?
			 CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE :
			 CURL_HTTP_VERSION_2TLS);
	if (w->prior_knowledge) {
		/* libcurl 7.88 never sends a second request on a reused
		 * prior-knowledge (h2c) connection (the transfer stalls);
		 * over plaintext, which is loopback and tests in practice,
		 * every call gets its own connection */
		curl_easy_setopt(h, CURLOPT_FRESH_CONNECT, 1L);
		curl_easy_setopt(h, CURLOPT_FORBID_REUSE, 1L);
	} else {
		curl_easy_setopt(h, CURLOPT_PIPEWAIT, 1L);
	}
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)(deadline_ms > 0 &&
			 deadline_ms < w->timeout_ms ? deadline_ms :
			 w->timeout_ms));
	if (deadline_ms > 0)
		curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)deadline_ms);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, c);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_write);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, c);
	curl_easy_setopt(h, CURLOPT_PRIVATE, c);
	curl_easy_setopt(h, CURLOPT_POST, 1L);
	/* bigger reads per read-callback call: fewer pauses on uploads */
	curl_easy_setopt(h, CURLOPT_UPLOAD_BUFFERSIZE, 512L * 1024);
	if (w->trace)
		fprintf(stderr, "sbxfs: cwsandbox: call %s\n", method);
	*err = 0;
	return c;
}

static int call_start(struct cw *w, struct cw_call *c)
{
	if (curl_multi_add_handle(w->loop.multi, c->h) != CURLM_OK)
		return -EIO;
	c->next = w->calls;
	w->calls = c;
	return 0;
}

/* ---- unary ------------------------------------------------------------ */

int cw_unary(struct cw *w, const char *method, const ProtobufCMessage *msg,
	     int64_t deadline_ms, cw_unary_fn done, void *ud)
{
	struct cw_call *c;
	size_t len;
	int err;

	c = call_new(w, method, deadline_ms, &err);
	if (!c)
		return err;
	c->req = frame(msg, &len);
	if (!c->req) {
		call_free(w, c);
		return -ENOMEM;
	}
	c->done = done;
	c->ud = ud;
	curl_easy_setopt(c->h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
	curl_easy_setopt(c->h, CURLOPT_POSTFIELDS, c->req);
	err = call_start(w, c);
	if (err)
		call_free(w, c);
	return err;
}

/* ---- streaming --------------------------------------------------------- */

struct cw_call *cw_stream_open(struct cw *w, const char *method,
			       const struct cw_stream_cbs *cbs, void *ud,
			       int *err)
{
	struct cw_call *c = call_new(w, method, 0, err);

	if (!c)
		return NULL;
	c->streaming = true;
	c->cbs = *cbs;
	c->ud = ud;
	curl_easy_setopt(c->h, CURLOPT_READFUNCTION, on_read);
	curl_easy_setopt(c->h, CURLOPT_READDATA, c);
	*err = call_start(w, c);
	if (*err) {
		call_free(w, c);
		return NULL;
	}
	return c;
}

static void unpause(struct cw_call *c)
{
	int mask = (c->recv_paused ? CURLPAUSE_RECV : 0) |
		   (c->send_paused ? CURLPAUSE_SEND : 0);

	if (c->h && !c->transport_done)
		curl_easy_pause(c->h, mask);
}

int cw_stream_send(struct cw *w, struct cw_call *c,
		   const ProtobufCMessage *msg, void *tag)
{
	struct sendq *q;
	size_t len;
	uint8_t *b;

	(void)w;
	if (c->send_closed || c->ended || c->transport_done)
		return -EPIPE;
	b = frame(msg, &len);
	if (!b)
		return -ENOMEM;
	q = malloc(sizeof(*q) + len);
	if (!q) {
		free(b);
		return -ENOMEM;
	}
	memcpy(q->data, b, len);
	free(b);
	q->len = len;
	q->off = 0;
	q->tag = tag;
	q->next = NULL;
	if (c->st)
		c->st->next = q;
	else
		c->sh = q;
	c->st = q;
	if (c->send_paused) {
		c->send_paused = false;
		unpause(c);
	}
	return 0;
}

void cw_stream_close_send(struct cw *w, struct cw_call *c)
{
	(void)w;
	c->send_closed = true;
	if (c->send_paused) {
		c->send_paused = false;
		unpause(c);
	}
}

static void stream_end(struct cw *w, struct cw_call *c)
{
	struct cw_status st = c->status;

	if (c->ended)
		return;
	c->ended = true;
	c->cbs.on_end(w, c->ud, &st);
	call_free(w, c);
}

void cw_stream_resume(struct cw *w, struct cw_call *c)
{
	if (!c->recv_hold)
		return;
	c->recv_hold = false;
	if (!deliver(c))
		return;
	if (c->transport_done) {
		stream_end(w, c);
		return;
	}
	if (c->recv_paused) {
		c->recv_paused = false;
		unpause(c);
	}
}

void cw_stream_cancel(struct cw *w, struct cw_call *c)
{
	if (c->ended)
		return;
	c->cancelled = true;
	c->status.code = 1;
	c->status.err = -ECANCELED;
	snprintf(c->status.msg, sizeof(c->status.msg), "cancelled");
	if (c->in_cb)
		return;		/* the callbacks abort the transfer */
	stream_end(w, c);
}

/* ---- completion ---------------------------------------------------------- */

/* HTTP status of an answer without grpc-status, as gRPC maps it */
static int code_of_http(long http)
{
	switch (http) {
	case 400: return 13;
	case 401: return 16;
	case 403: return 7;
	case 404: return 12;
	case 429: case 502: case 503: case 504: return 14;
	}
	return 2;
}

static void finish_status(struct cw_call *c, CURLcode rc)
{
	struct cw_status *st = &c->status;

	if (c->cancelled)
		return;
	if (rc != CURLE_OK && !(c->got_status && rc == CURLE_HTTP2_STREAM)) {
		st->code = -1;
		snprintf(st->msg, sizeof(st->msg), "%s: %s", c->method,
			 curl_easy_strerror(rc));
	} else if (!c->got_status) {
		st->code = c->http == 200 ? 13 : code_of_http(c->http);
		snprintf(st->msg, sizeof(st->msg), "%s: %s (HTTP %ld)",
			 c->method, c->http == 200 ?
			 "call ended without gRPC status" :
			 "not a gRPC answer", c->http);
	}
	cw_err_map(st, rc);
	/* one message while the platform cannot be reached, one when it
	 * answers again */
	if (st->err == -EHOSTUNREACH)
		api_log_once("cwsandbox-unreachable", "cwsandbox: %s is "
			     "unreachable (%s); further failures are counted "
			     "quietly", c->w->base, st->msg);
	else if (st->code >= 0)
		api_log_clear("cwsandbox-unreachable", "cwsandbox: %s "
			      "answers again", c->w->base);
}

void cw_rpc_done(struct cw *w, CURL *h, CURLcode rc)
{
	struct cw_call *c = NULL;
	const uint8_t *msg = NULL;
	size_t len = 0;

	curl_easy_getinfo(h, CURLINFO_PRIVATE, (char **)&c);
	if (!c)
		return;
	c->transport_done = true;
	curl_multi_remove_handle(w->loop.multi, h);
	curl_easy_cleanup(h);
	c->h = NULL;
	if (!c->streaming) {
		finish_status(c, rc);
		if (!c->status.code) {
			const uint8_t *p = c->rx;

			if (c->rx_len >= 5) {
				len = (uint32_t)p[1] << 24 | p[2] << 16 |
				      p[3] << 8 | p[4];
				msg = p + 5;
			}
			if (c->rx_len < 5 || c->rx_len != len + 5) {
				c->status.code = 13;
				snprintf(c->status.msg, sizeof(c->status.msg),
					 "%s: malformed answer", c->method);
				cw_err_map(&c->status, CURLE_OK);
				msg = NULL;
				len = 0;
			}
		}
		if (w->trace)
			fprintf(stderr, "sbxfs: cwsandbox: %s -> %d %s\n",
				c->method, c->status.code, c->status.msg);
		{
			/* follow-up calls belong to the same operation */
			int64_t saved = w->loop.op_deadline;

			w->loop.op_deadline = c->op_deadline;
			c->done(w, c->ud, &c->status, msg, len);
			w->loop.op_deadline = saved;
		}
		call_free(w, c);
		return;
	}
	finish_status(c, rc);
	if (c->recv_hold && !c->cancelled)
		return;		/* on_end after the consumer resumed */
	stream_end(w, c);
}

void cw_rpc_abort_all(struct cw *w)
{
	while (w->calls) {
		struct cw_call *c = w->calls;

		c->cancelled = true;
		c->status.code = 1;
		c->status.err = -ECANCELED;
		snprintf(c->status.msg, sizeof(c->status.msg),
			 "the mount is going away");
		if (c->streaming) {
			stream_end(w, c);
		} else {
			c->done(w, c->ud, &c->status, NULL, 0);
			call_free(w, c);
		}
	}
}
