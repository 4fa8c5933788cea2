/* http.h - layer 1 of the Wrenn backend: the transport.
 *
 * loop.c: the typed face of the one service thread, which is the shared
 * loop of the remote backends (api/netloop.c: work queue, timers, the
 * deadline of the user operation being served); http.c: REST requests
 * on the curl multi handle the loop sleeps in (JSON, multipart uploads,
 * streamed bodies, 429 retried after Retry-After within the deadline).
 *
 * Threading: every field of struct wrenn below the "loop only" mark and
 * every request, file and exec state machine is touched only by the
 * service thread.  Other threads reach it with wrenn_post(), which queues
 * a work item and wakes the thread (curl_multi_wakeup); the thread drains
 * the whole queue each time it wakes.
 *
 * The layers above (README.md, "Layers") reach the loop only through
 * what is declared here; the loop reaches them only through the turns
 * they register (wrenn_loop_add), never by name.
 */
#ifndef SBXFS_WRENN_HTTP_H
#define SBXFS_WRENN_HTTP_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>

#include "api/api.h"
#include "api/netloop.h"

struct lws_context;
struct wrenn;

/* One queued unit of work; embedded in the structure it belongs to.
 * The queue, its order and the deadline it carries are the shared
 * loop's (api/netloop.h); this adds only the typed callback. */
struct wrenn_work {
	struct nl_work nl;
	void (*fn)(struct wrenn *w, struct wrenn_work *wk);
};

/* A one-shot timer (loop thread only), on the shared loop's list. */
struct wrenn_timer {
	struct nl_timer nl;
	void (*fn)(struct wrenn *w, struct wrenn_timer *t);
};

/* A layer above that must run on every turn of the loop (WebSocket
 * service, keep-alive pings).  Registered before wrenn_loop_start. */
struct wrenn_turn {
	/* Run what is due; return ms until it wants to run again, or -1. */
	int64_t (*run)(struct wrenn *w);
	/* Extra descriptors to wait on; returns the count (<= max).  May be
	 * NULL.  While there are any, the loop looks in every 100 ms. */
	int (*pollfds)(struct wrenn *w, struct curl_waitfd *fds, int max);
};

/* State of the layers above, opaque here (each defined by its layer). */
struct wrenn_alias;	     /* capsule.c */
struct wrenn_keep;	     /* capsule.c */
struct wrenn_capsule_hooks; /* capsule.h */
struct wrenn_dcache;	     /* files.c */
struct wrenn_http;	     /* http.c */

#define WRENN_GONE_MAX 64

struct wrenn {
	struct api_backend *be;
	char *base;	 /* "https://host/api", no trailing slash */
	char *key;	 /* secret: never logged */
	char *key_hdr;	 /* "X-API-Key: <key>" */
	int64_t timeout_ms;
	int64_t ping_ms;	 /* keep-alive ping interval */
	size_t upload_max;	 /* largest single upload (bytes) */
	uint64_t stage_max;	 /* largest staged file (bytes) */
	size_t resp_max;	 /* cap on buffered JSON responses */
	bool trace;		 /* SBXFS_WRENN_TRACE: log each request */
	char state_path[4096]; /* alias map file */

	/* The service thread, its curl multi handle (loop.multi), queue
	 * and timers (api/netloop.h).  loop.op_deadline: deadline of the
	 * user operation whose code runs now (0: none).  One -o timeout=
	 * bounds a whole operation, however many requests it takes: work
	 * posted, requests made and their callbacks carry it on, so a
	 * follow-up request gets only what is left. */
	struct netloop loop;
	struct lws_context *lws;

	/* ---- loop only ---- */
	int nreq;		  /* requests in the multi handle */
	struct wrenn_http *reqs;  /* live requests (http.c) */

	/* owned by capsule.c */
	const struct wrenn_capsule_hooks *hooks;
	struct wrenn_keep *keeps;
	struct wrenn_alias *aliases;
	size_t naliases;
	char gone[WRENN_GONE_MAX][API_ID_MAX]; /* destroyed IDs (ring) */
	size_t gone_next;
	/* owned by files.c */
	struct wrenn_dcache *dcache;
	/* owned by exec.c */
	struct api_exec *execs;   /* live WebSocket execs */
};

/* ---- loop.c: the service thread ---- */

struct wrenn *wrenn_of(struct api_backend *be);
int64_t wrenn_now_ms(void);
bool wrenn_in_loop(struct wrenn *w);

/* The deadline a new request of the current operation gets. */
int64_t wrenn_deadline(struct wrenn *w);

/* Queue wk->fn(w, wk) on the service thread (any thread). */
void wrenn_post(struct wrenn *w, struct wrenn_work *wk,
		void (*fn)(struct wrenn *w, struct wrenn_work *wk));
/* Loop thread: arm t to fire in ms milliseconds (re-arming moves it). */
void wrenn_timer_arm(struct wrenn *w, struct wrenn_timer *t, int64_t ms,
		     void (*fn)(struct wrenn *w, struct wrenn_timer *t));
void wrenn_timer_cancel(struct wrenn *w, struct wrenn_timer *t);
/* Disarm every timer armed with fn and hand each to drop (at shutdown,
 * after the loop stopped). */
void wrenn_timer_drop_all(struct wrenn *w,
			  void (*fn)(struct wrenn *w, struct wrenn_timer *t),
			  void (*drop)(struct wrenn_timer *t));

/* Add a turn (before wrenn_loop_start); turns run in the order added.
 * -ENOSPC when NL_TURNS_MAX are there. */
int wrenn_loop_add(struct wrenn *w, const struct wrenn_turn *t);
/* Set up the multi handle (0 or -ENOMEM); tear it down (after the stop,
 * once the requests are gone; safe when never set up). */
int wrenn_loop_init(struct wrenn *w);
void wrenn_loop_destroy(struct wrenn *w);
/* Start the service thread; stop it: work queued before the stop still
 * runs (on the service thread), nothing runs after it returns. */
int wrenn_loop_start(struct wrenn *w);
void wrenn_loop_stop(struct wrenn *w);

/* ---- http.c: requests ---- */

struct wrenn_resp {
	long status;
	const char *body; /* NUL-terminated, may be "" */
	size_t len;
	cJSON *json;	  /* parsed body when it is JSON, else NULL */
};

typedef void (*wrenn_http_cb)(void *ud, int err, const char *msg,
			      const struct wrenn_resp *r);
/* Streamed body: return 0 to go on, -errno to abort the transfer. */
typedef int (*wrenn_sink_fn)(void *ud, const void *buf, size_t len);
/* Streamed upload source: fill buf from offset off of the part. */
typedef ssize_t (*wrenn_src_fn)(void *ud, void *buf, size_t len,
				uint64_t off);

/* Loop thread.  path is appended to the base URL.  body is a JSON text
 * (copied) or NULL.  The callback runs exactly once, on the loop thread
 * (never inline).  err == 0 only for a 2xx answer. */
struct wrenn_http *wrenn_http_new(struct wrenn *w, const char *method,
				  const char *path, const char *json);
/* Stream the response body into sink instead of buffering it; the
 * request is then bounded by stall time, not total time. */
void wrenn_http_sink(struct wrenn_http *h, wrenn_sink_fn sink, void *ud);
/* multipart/form-data: a "path" value part first, then a "file" part
 * with filename "upload" whose len bytes come from src. */
int wrenn_http_upload(struct wrenn_http *h, const char *path,
		      wrenn_src_fn src, void *ud, uint64_t len);
void wrenn_http_go(struct wrenn_http *h, wrenn_http_cb cb, void *ud);
/* Finish h now with -ECANCELED (its callback runs inline). */
void wrenn_http_cancel(struct wrenn_http *h);
/* Shortcut: new + go.  path/json copied. */
void wrenn_call(struct wrenn *w, const char *method, const char *path,
		const char *json, wrenn_http_cb cb, void *ud);
/* Called by the loop for each transfer of the multi handle that ended. */
void wrenn_http_done(struct wrenn *w, CURL *easy, CURLcode rc);
/* At shutdown, after the loop stopped: every live request ends with
 * -ECANCELED. */
void wrenn_http_abort_all(struct wrenn *w);

#endif
