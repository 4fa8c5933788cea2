/* wrenn_int.h - private header of the Wrenn backend (api/wrenn/).
 *
 * Split: wrenn.c (ops table, init/free, the one service thread with its
 * work queue and timers, capsule keep-alive pings), http.c (libcurl multi
 * request engine: JSON and multipart requests, streamed bodies, 429
 * retries), errmap.c (HTTP status + error envelope -> errno, the only
 * place that does it), capsule.c (capsules, verbs, the client-side
 * NAME->ID alias map), files.c (files over files/list, read, write, mkdir,
 * remove, with api/stage.c staging), exec.c (exec/stream WebSocket).
 *
 * Threading: every field of struct wrenn below the "loop only" mark and
 * every request, file and exec state machine is touched only by the
 * service thread.  Other threads reach it with wrenn_post(), which queues
 * a work item and wakes the thread (curl_multi_wakeup); the thread drains
 * the whole queue each time it wakes.
 */
#ifndef SBXFS_WRENN_INT_H
#define SBXFS_WRENN_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>

#include "api/api.h"

struct lws_context;
struct wrenn;

/* One queued unit of work; embedded in the structure it belongs to. */
struct wrenn_work {
	struct wrenn_work *next;
	void (*fn)(struct wrenn *w, struct wrenn_work *wk);
	int64_t deadline; /* of the user operation it belongs to */
};

/* A one-shot timer (loop thread only). */
/* capsule.c: free the timed-out creates still being reconciled (at
 * shutdown, after the loop thread stopped). */
struct wrenn;
void wrenn_reconcile_drop_all(struct wrenn *w);

struct wrenn_timer {
	struct wrenn_timer *next;
	int64_t due_ms; /* monotonic */
	void (*fn)(struct wrenn *w, struct wrenn_timer *t);
	bool armed;
};

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

#define WRENN_GONE_MAX 64

struct wrenn_dcache; /* files.c */
struct wrenn_http;   /* http.c */

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

	CURLM *multi;
	struct lws_context *lws;
	pthread_t thr;
	bool thr_started;

	pthread_mutex_t qlock;
	struct wrenn_work *qhead, *qtail;
	bool stopping;

	/* ---- loop only ---- */
	struct wrenn_timer *timers;
	/* Deadline of the user operation whose code runs now (0: none).
	 * One -o timeout= bounds a whole operation, however many requests
	 * it takes: work posted, requests made and their callbacks carry
	 * it on, so a follow-up request gets only what is left. */
	int64_t op_deadline;
	struct wrenn_keep *keeps;
	struct wrenn_alias *aliases;
	size_t naliases;
	struct wrenn_dcache *dcache;
	struct api_exec *execs;   /* live WebSocket execs (exec.c) */
	struct api_file *files;   /* open files (files.c) */
	int nreq;		  /* requests in the multi handle */
	struct wrenn_http *reqs;  /* live requests (http.c) */
	char gone[WRENN_GONE_MAX][API_ID_MAX]; /* destroyed IDs (ring) */
	size_t gone_next;
};

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
/* Loop thread: keep capsule id awake while refs > 0 (ping). */
void wrenn_keep_get(struct wrenn *w, const char *id);
void wrenn_keep_put(struct wrenn *w, const char *id);

/* ---- errmap.c ---- */

/* errno for an HTTP answer: status, error envelope code, message.
 * Writes a sentence to msg.  `body` may be NULL or not JSON. */
int wrenn_err_http(long status, const char *body, size_t len, char *msg,
		   size_t msglen);
/* errno for a curl failure. */
int wrenn_err_curl(CURLcode rc, char *msg, size_t msglen,
		   const char *detail);
/* errno for an error text (WebSocket {"type":"error"} data, or an
 * agent_error message): "not found" -> ENOENT ... */
int wrenn_err_text(const char *text, int dflt);

/* ---- http.c ---- */

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

struct wrenn_http;

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
/* Service: called by the loop after curl_multi_perform. */
void wrenn_http_reap(struct wrenn *w);
void wrenn_http_abort_all(struct wrenn *w);

/* ---- capsule.c ---- */

int wrenn_alias_load(struct wrenn *w);
void wrenn_alias_free(struct wrenn *w);
/* Resolve NAME or ID to an ID (loop thread).  0 or -ENOENT. */
int wrenn_resolve(struct wrenn *w, const char *name_or_id, char *id,
		  size_t len);
bool wrenn_id_valid(const char *id);
void wrenn_gone_add(struct wrenn *w, const char *id);
enum api_state wrenn_state_parse(const char *status);

void wrenn_sb_list(struct api_backend *be, api_list_fn cb, void *ud);
void wrenn_sb_get(struct api_backend *be, const char *id,
		  api_sandbox_fn cb, void *ud);
void wrenn_sb_create(struct api_backend *be, const char *name,
		     const struct api_kv *kv, size_t nkv, api_sandbox_fn cb,
		     void *ud);
void wrenn_sb_verb(struct api_backend *be, const char *id,
		   enum api_verb verb, const char *arg, api_done_fn cb,
		   void *ud);

/* Foreground exec of a /bin/sh script (loop thread), byte-exact output
 * discarded; cb gets err, and the exit code through *code via msg. */
typedef void (*wrenn_sh_cb)(void *ud, int err, const char *msg, int code,
			    const char *out);
void wrenn_sh(struct wrenn *w, const char *id, const char *script,
	      wrenn_sh_cb cb, void *ud);
/* The same, keeping cached listings (the caller updates what the script
 * changed: a store touches one entry). */
void wrenn_sh_keep(struct wrenn *w, const char *id, const char *script,
		   wrenn_sh_cb cb, void *ud);

/* ---- features.c: MOUNT/templates/ and NAME/ports/PORT ---- */
void wrenn_tpl_list(struct api_backend *be, api_tpl_fn cb, void *ud);
void wrenn_tpl_delete(struct api_backend *be, const char *name,
		      api_done_fn cb, void *ud);
void wrenn_sb_port(struct api_backend *be, const char *id, unsigned port,
		   api_str_fn cb, void *ud);
/* ---- files.c ---- */

/* Parse one FileEntry into st; returns the name or NULL if malformed. */
const char *wrenn_entry_stat(const cJSON *e, struct stat *st);
void wrenn_dcache_free(struct wrenn *w);
void wrenn_file_stat(struct api_backend *be, const char *id,
		     const char *path, api_stat_fn cb, void *ud);
void wrenn_file_readdir(struct api_backend *be, const char *id,
			const char *path, api_readdir_fn cb, void *ud);
void wrenn_file_mkdir(struct api_backend *be, const char *id,
		      const char *path, mode_t mode, api_done_fn cb,
		      void *ud);
void wrenn_file_unlink(struct api_backend *be, const char *id,
		       const char *path, api_done_fn cb, void *ud);
void wrenn_file_rmdir(struct api_backend *be, const char *id,
		      const char *path, api_done_fn cb, void *ud);
/* The remote-file primitives (fetch, atomic store) for api/rfile.c. */
struct api_rfile_ops;
extern const struct api_rfile_ops wrenn_rfile_ops;
/* Loop: upload every dirty cached file of capsule id before a command
 * runs there (so it sees what was written, and a following exec-emulated
 * utimens/chmod is not undone by a later upload).  Returns 0 when there
 * is nothing to wait for, else 1 and calls done(ud) once all finished. */
int wrenn_files_sync(struct wrenn *w, const char *id,
		     void (*done)(void *ud), void *ud);
/* Forget cached listings of capsule id (all of them when id is NULL). */
void wrenn_dcache_drop(struct wrenn *w, const char *id, const char *dir);

/* ---- exec.c ---- */

int wrenn_exec_init(struct wrenn *w);
void wrenn_exec_free_all(struct wrenn *w);
/* Loop: fill pollfds of live WebSockets; returns count (<= max). */
int wrenn_exec_pollfds(struct wrenn *w, struct curl_waitfd *fds, int max);
void wrenn_exec_service(struct wrenn *w);
void wrenn_exec_start(struct api_backend *be, const char *id,
		      const struct api_exec_req *req,
		      const struct api_exec_cbs *cbs, void *ud,
		      struct api_exec **out);
void wrenn_exec_write(struct api_backend *be, struct api_exec *x,
		      const void *buf, size_t len, api_done_fn cb, void *ud);
void wrenn_exec_close_stdin(struct api_backend *be, struct api_exec *x);
void wrenn_exec_resume(struct api_backend *be, struct api_exec *x);
int wrenn_exec_signal(struct api_backend *be, struct api_exec *x, int sig);
void wrenn_exec_free(struct api_backend *be, struct api_exec *x);

/* Build the /bin/sh wrapper that runs argv with cwd, env and (when
 * want_stdin) stdin chunks from the capsule directory indir ("" cwd: the
 * home).  malloc'd; NULL with *err set on failure. */
char *wrenn_exec_script(const struct api_exec_req *req, const char *indir,
			int *err);

#endif
