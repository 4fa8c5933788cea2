/* http.c - the Wrenn REST request engine over one curl multi handle.
 *
 * Every request has the same shape (sshfs-style): build, send, decode,
 * free.  Runs on the service thread only.  Connection reuse and keep-alive
 * come from the multi handle's connection cache.  A 429 answer is retried
 * after Retry-After while the request's time bound allows it.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/wrenn/errmap.h"
#include "api/wrenn/http.h"

#define HTTP_TRIES 5

struct wrenn_http {
	struct wrenn *w;
	struct wrenn_http *prev, *next; /* live list, for abort_all */
	CURL *easy;
	char *url;
	const char *method;
	char *body;
	size_t blen;
	struct curl_slist *hdrs;
	curl_mime *mime;
	wrenn_src_fn src;
	void *src_ud;
	uint64_t src_len, src_pos;
	wrenn_sink_fn sink;
	void *sink_ud;
	int sink_err;
	char *resp;
	size_t rlen, rcap;
	int64_t deadline;
	int tries;
	int fail; /* pending failure to report from the timer */
	uint64_t moved;		  /* bytes in or out since the last check */
	struct wrenn_timer watch; /* transfers: no byte by the deadline */
	bool in_multi;
	struct wrenn_timer timer;
	wrenn_http_cb cb;
	void *ud;
	char errbuf[CURL_ERROR_SIZE];
};

static void live_add(struct wrenn_http *h)
{
	h->prev = NULL;
	h->next = h->w->reqs;
	if (h->next)
		h->next->prev = h;
	h->w->reqs = h;
}

static void live_del(struct wrenn_http *h)
{
	if (h->prev)
		h->prev->next = h->next;
	else
		h->w->reqs = h->next;
	if (h->next)
		h->next->prev = h->prev;
	h->prev = h->next = NULL;
}

struct wrenn_http *wrenn_http_new(struct wrenn *w, const char *method,
				  const char *path, const char *json)
{
	struct wrenn_http *h = calloc(1, sizeof(*h));
	size_t n;

	if (!h)
		return NULL;
	h->w = w;
	h->method = method;
	n = strlen(w->base) + strlen(path) + 1;
	h->url = malloc(n);
	if (json) {
		h->blen = strlen(json);
		h->body = malloc(h->blen + 1);
		if (h->body)
			memcpy(h->body, json, h->blen + 1);
	}
	h->easy = curl_easy_init();
	if (!h->url || (json && !h->body) || !h->easy) {
		curl_easy_cleanup(h->easy);
		free(h->url);
		free(h->body);
		free(h);
		return NULL;
	}
	snprintf(h->url, n, "%s%s", w->base, path);
	return h;
}

void wrenn_http_sink(struct wrenn_http *h, wrenn_sink_fn sink, void *ud)
{
	h->sink = sink;
	h->sink_ud = ud;
}

static size_t src_read(char *buf, size_t size, size_t nitems, void *arg)
{
	struct wrenn_http *h = arg;
	size_t want = size * nitems;
	ssize_t n;

	if (h->src_pos >= h->src_len)
		return 0;
	if (want > h->src_len - h->src_pos)
		want = (size_t)(h->src_len - h->src_pos);
	n = h->src(h->src_ud, buf, want, h->src_pos);
	if (n <= 0) {
		h->sink_err = n < 0 ? (int)n : -EIO;
		return CURL_READFUNC_ABORT;
	}
	h->src_pos += (uint64_t)n;
	h->moved += (uint64_t)n;
	return (size_t)n;
}

static int src_seek(void *arg, curl_off_t off, int origin)
{
	struct wrenn_http *h = arg;

	if (origin != SEEK_SET || off < 0 || (uint64_t)off > h->src_len)
		return CURL_SEEKFUNC_FAIL;
	h->src_pos = (uint64_t)off;
	return CURL_SEEKFUNC_OK;
}

int wrenn_http_upload(struct wrenn_http *h, const char *path,
		      wrenn_src_fn src, void *ud, uint64_t len)
{
	curl_mimepart *p;

	h->fail = -ENOMEM; /* until the parts are in place */
	h->mime = curl_mime_init(h->easy);
	if (!h->mime)
		return -ENOMEM;
	h->src = src;
	h->src_ud = ud;
	h->src_len = len;
	/* Order matters on files/stream/write (quirk 29): path first, as a
	 * plain value; then the file, which must carry a filename
	 * (quirk 28) or the server answers "file field is required". */
	p = curl_mime_addpart(h->mime);
	if (!p || curl_mime_name(p, "path") ||
	    curl_mime_data(p, path, CURL_ZERO_TERMINATED))
		return -ENOMEM;
	p = curl_mime_addpart(h->mime);
	if (!p || curl_mime_name(p, "file") ||
	    curl_mime_filename(p, "upload") ||
	    curl_mime_type(p, "application/octet-stream") ||
	    curl_mime_data_cb(p, (curl_off_t)len, src_read, src_seek, NULL,
			      h))
		return -ENOMEM;
	h->fail = 0;
	return 0;
}

static size_t on_body(char *buf, size_t size, size_t nmemb, void *arg)
{
	struct wrenn_http *h = arg;
	size_t n = size * nmemb;
	long status = 0;
	char *p;

	curl_easy_getinfo(h->easy, CURLINFO_RESPONSE_CODE, &status);
	h->moved += n;
	if (h->sink && status >= 200 && status < 300) {
		h->sink_err = h->sink(h->sink_ud, buf, n);
		return h->sink_err ? 0 : n;
	}
	if (h->rlen + n + 1 > h->w->resp_max) {
		h->sink_err = -EFBIG;
		return 0;
	}
	if (h->rlen + n + 1 > h->rcap) {
		size_t cap = h->rcap ? h->rcap : 4096;

		while (cap < h->rlen + n + 1)
			cap *= 2;
		p = realloc(h->resp, cap);
		if (!p) {
			h->sink_err = -ENOMEM;
			return 0;
		}
		h->resp = p;
		h->rcap = cap;
	}
	memcpy(h->resp + h->rlen, buf, n);
	h->rlen += n;
	h->resp[h->rlen] = '\0';
	return n;
}

static void http_free(struct wrenn_http *h)
{
	wrenn_timer_cancel(h->w, &h->timer);
	wrenn_timer_cancel(h->w, &h->watch);
	if (h->in_multi) {
		curl_multi_remove_handle(h->w->loop.multi, h->easy);
		h->w->nreq--;
	}
	live_del(h);
	curl_easy_cleanup(h->easy);
	curl_mime_free(h->mime);
	curl_slist_free_all(h->hdrs);
	free(h->url);
	free(h->body);
	free(h->resp);
	free(h);
}

static void finish(struct wrenn_http *h, int err, const char *msg)
{
	struct wrenn_resp r = { 0 };
	cJSON *j = NULL;

	curl_easy_getinfo(h->easy, CURLINFO_RESPONSE_CODE, &r.status);
	r.body = h->resp ? h->resp : "";
	r.len = h->rlen;
	if (!err && h->rlen)
		j = cJSON_ParseWithLength(h->resp, h->rlen);
	r.json = j;
	/* one message while the platform cannot be reached, one when it
	 * can again (the status poller asks every few seconds) */
	if (err == -EHOSTUNREACH)
		api_log_once("wrenn-unreachable", "wrenn: %s is unreachable "
			     "(%s); further failures are counted quietly",
			     h->w->base, msg);
	else if (!err || r.status)
		api_log_clear("wrenn-unreachable", "wrenn: %s answers again",
			      h->w->base);
	{
		/* follow-up requests belong to the same operation */
		int64_t saved = h->w->loop.op_deadline;

		h->w->loop.op_deadline = h->deadline;
		h->cb(h->ud, err, err ? msg : NULL, &r);
		h->w->loop.op_deadline = saved;
	}
	cJSON_Delete(j);
	http_free(h);
}

static void timer_fired(struct wrenn *w, struct wrenn_timer *t);

/* A transfer is bounded by progress: nothing moved by the operation's
 * deadline (or within a request bound since the last check) ends it. */
static void watch_fired(struct wrenn *w, struct wrenn_timer *t)
{
	struct wrenn_http *h = (struct wrenn_http *)((char *)t -
				offsetof(struct wrenn_http, watch));
	char msg[160];

	if (h->moved) {
		h->moved = 0;
		wrenn_timer_arm(w, &h->watch, w->timeout_ms, watch_fired);
		return;
	}
	snprintf(msg, sizeof(msg), "wrenn: %s %s: no data within the "
		 "timeout", h->method,
		 strstr(h->url, "/v1/") ? strstr(h->url, "/v1/") : h->url);
	finish(h, -ETIMEDOUT, msg);
}

static int submit(struct wrenn_http *h)
{
	struct wrenn *w = h->w;
	int64_t left = h->deadline - wrenn_now_ms();

	if (left <= 0)
		return -ETIMEDOUT;
	h->rlen = 0;
	h->src_pos = 0;
	h->sink_err = 0;
	if (h->sink || h->mime) {
		/* Transfers are bounded by stalls, not by total time: a
		 * 256 MiB download legitimately outlasts the bound. */
		curl_easy_setopt(h->easy, CURLOPT_TIMEOUT_MS, 0L);
		curl_easy_setopt(h->easy, CURLOPT_CONNECTTIMEOUT_MS,
				 (long)left);
		curl_easy_setopt(h->easy, CURLOPT_LOW_SPEED_LIMIT, 1L);
		curl_easy_setopt(h->easy, CURLOPT_LOW_SPEED_TIME,
				 (long)(w->timeout_ms + 999) / 1000);
		h->moved = 0;
		wrenn_timer_arm(w, &h->watch, left, watch_fired);
	} else {
		curl_easy_setopt(h->easy, CURLOPT_TIMEOUT_MS, (long)left);
	}
	if (curl_multi_add_handle(w->loop.multi, h->easy) != CURLM_OK)
		return -ENOMEM;
	h->in_multi = true;
	w->nreq++;
	return 0;
}

void wrenn_http_go(struct wrenn_http *h, wrenn_http_cb cb, void *ud)
{
	struct wrenn *w = h->w;
	int err;

	h->cb = cb;
	h->ud = ud;
	live_add(h);
	h->hdrs = curl_slist_append(h->hdrs, w->key_hdr);
	/* no 1 s "Expect: 100-continue" stall before upload bodies */
	h->hdrs = curl_slist_append(h->hdrs, "Expect:");
	if (h->body)
		h->hdrs = curl_slist_append(h->hdrs,
					    "Content-Type: application/json");
	curl_easy_setopt(h->easy, CURLOPT_URL, h->url);
	curl_easy_setopt(h->easy, CURLOPT_PRIVATE, h);
	curl_easy_setopt(h->easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h->easy, CURLOPT_ERRORBUFFER, h->errbuf);
	curl_easy_setopt(h->easy, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(h->easy, CURLOPT_WRITEDATA, h);
	curl_easy_setopt(h->easy, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(h->easy, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h->easy, CURLOPT_USERAGENT, "sbxfs/" SBXFS_VERSION);
	if (h->mime) {
		curl_easy_setopt(h->easy, CURLOPT_MIMEPOST, h->mime);
	} else if (!strcmp(h->method, "POST")) {
		curl_easy_setopt(h->easy, CURLOPT_POSTFIELDS,
				 h->body ? h->body : "");
		curl_easy_setopt(h->easy, CURLOPT_POSTFIELDSIZE,
				 (long)(h->body ? h->blen : 0));
	} else if (strcmp(h->method, "GET")) {
		curl_easy_setopt(h->easy, CURLOPT_CUSTOMREQUEST, h->method);
	}
	curl_easy_setopt(h->easy, CURLOPT_HTTPHEADER, h->hdrs);
	h->deadline = wrenn_deadline(w);
	if (w->trace)
		api_log("wrenn: %s %s", h->method,
			h->url + strlen(w->base));
	err = h->fail ? h->fail : h->hdrs ? submit(h) : -ENOMEM;
	if (err) {
		/* report from the loop, never inline */
		h->fail = err;
		wrenn_timer_arm(w, &h->timer, 0, timer_fired);
	}
}

void wrenn_call(struct wrenn *w, const char *method, const char *path,
		const char *json, wrenn_http_cb cb, void *ud)
{
	struct wrenn_http *h = wrenn_http_new(w, method, path, json);

	if (!h) {
		struct wrenn_resp r = { 0 };

		/* ENOMEM: nothing better than reporting at once */
		cb(ud, -ENOMEM, "wrenn: out of memory", &r);
		return;
	}
	wrenn_http_go(h, cb, ud);
}

static void timer_fired(struct wrenn *w, struct wrenn_timer *t)
{
	struct wrenn_http *h = (struct wrenn_http *)((char *)t -
				offsetof(struct wrenn_http, timer));
	char msg[160];
	int err = h->fail;

	(void)w;
	if (!err) {
		err = submit(h);
		if (!err)
			return;
	}
	snprintf(msg, sizeof(msg), "wrenn: %s %s: %s", h->method,
		 strstr(h->url, "/v1/") ? strstr(h->url, "/v1/") : h->url,
		 api_strerror(err));
	finish(h, err, msg);
}

/* A 429: try again after Retry-After if the bound allows it. */
static bool retry_later(struct wrenn_http *h)
{
	curl_off_t ra = 0;
	int64_t delay, left;

	if (++h->tries >= HTTP_TRIES)
		return false;
	curl_easy_getinfo(h->easy, CURLINFO_RETRY_AFTER, &ra);
	delay = ra > 0 ? (int64_t)ra * 1000 : 500 * h->tries;
	left = h->deadline - wrenn_now_ms();
	if (delay >= left)
		return false;
	curl_multi_remove_handle(h->w->loop.multi, h->easy);
	h->in_multi = false;
	h->w->nreq--;
	wrenn_timer_arm(h->w, &h->timer, delay, timer_fired);
	return true;
}

void wrenn_http_done(struct wrenn *w, CURL *easy, CURLcode rc)
{
	struct wrenn_http *h = NULL;
	char msg[512];
	long status;
	int err;

	(void)w;
	curl_easy_getinfo(easy, CURLINFO_PRIVATE, &h);
	if (!h)
		return;
	status = 0;
	curl_easy_getinfo(h->easy, CURLINFO_RESPONSE_CODE, &status);
	if (rc != CURLE_OK) {
		if (h->sink_err) {
			err = h->sink_err;
			snprintf(msg, sizeof(msg), "wrenn: %s",
				 api_strerror(err));
		} else {
			err = wrenn_err_curl(rc, msg, sizeof(msg), h->errbuf);
		}
	} else if (status == 429 && retry_later(h)) {
		return;
	} else {
		err = wrenn_err_http(status, h->resp, h->rlen, msg,
				     sizeof(msg));
	}
	finish(h, err, msg);
}

void wrenn_http_abort_all(struct wrenn *w)
{
	struct wrenn_http *h;

	while ((h = w->reqs))
		finish(h, -ECANCELED, "wrenn: backend shutting down");
}

void wrenn_http_cancel(struct wrenn_http *h)
{
	finish(h, -ECANCELED, "wrenn: request cancelled");
}
