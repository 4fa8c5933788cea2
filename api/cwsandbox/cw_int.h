/* cw_int.h - private header of the CW Sandbox backend (api/cwsandbox/).
 *
 * Split: cw.c (ops table, options, key, the one service thread: the
 * shared loop of api/netloop.c with its curl multi handle, work queue and
 * timers, typed here), rpc.c (gRPC over libcurl:
 * HTTP/2, length-prefixed messages, trailers, grpc-timeout; unary and
 * bidirectional streaming calls), errmap.c (gRPC status + ErrorInfo
 * reason -> errno, the only place that does it), sandbox.c (list, get,
 * create, verbs, NAME tags, the record as JSON), exec.c (StreamExec).
 *
 * Threading: every call state machine, the multi handle and everything
 * below the "loop only" mark run on the service thread.  Other threads
 * reach it with cw_post(), which queues a work item and wakes the thread
 * (curl_multi_wakeup); it drains the whole queue each time it wakes.
 * Callbacks into api.h callers run on that thread.
 */
#ifndef SBXFS_CW_INT_H
#define SBXFS_CW_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <curl/curl.h>
#include <protobuf-c/protobuf-c.h>

#include "api/api.h"
#include "api/netloop.h"

struct api_rfile_ops;

struct cw;

/* A work item and a timer of the shared loop (api/netloop.h: queue
 * order, the deadline an item carries), with a typed callback. */
struct cw_work {
	struct nl_work nl;
	void (*fn)(struct cw *w, struct cw_work *wk);
};

struct cw_timer {
	struct nl_timer nl;
	void (*fn)(struct cw *w, struct cw_timer *t);
};

struct cw_call;

#define CW_GONE_MAX 128

struct cw {
	struct api_backend *be;
	char *base;		/* "http://host:port", no trailing slash */
	bool prior_knowledge;	/* http:// : h2c with prior knowledge */
	char *auth_hdr;		/* "authorization: Bearer KEY": secret */
	int64_t timeout_ms;
	bool show_terminated;
	char *image;		/* default container image */
	bool trace;		/* SBXFS_CW_TRACE: log each call (no key) */

	/* The service thread with its curl multi handle (loop.multi), work
	 * queue and timers: the shared loop of the remote backends
	 * (api/netloop.h).  loop.op_deadline: the deadline of the user
	 * operation whose step runs now (0: none), set while a work item or
	 * a call's completion runs, so that the calls it makes (a follow-up
	 * command after an upload, the create after the name check) share
	 * the one bound of the operation. */
	struct netloop loop;

	/* ---- loop only ---- */
	struct cw_call *calls;	/* live calls */
	struct api_exec *execs;	/* live StreamExecs */
	/* stop and destroy are both DeleteSandbox on CW: this mount keeps
	 * what it stopped on view (as stopped) and forgets what it
	 * destroyed (sandbox.c) */
	char gone[CW_GONE_MAX][API_ID_MAX];
	size_t gone_next;
	char (*stopped)[API_ID_MAX];
	size_t nstopped;
};

struct cw *cw_of(struct api_backend *be);
int64_t cw_now_ms(void);
/* A call's bound in ms: ms less what the running operation spent of its
 * own bound already (at least 1; ms as is outside an operation). */
int64_t cw_op_left(struct cw *w, int64_t ms);
bool cw_in_loop(struct cw *w);
void cw_post(struct cw *w, struct cw_work *wk,
	     void (*fn)(struct cw *w, struct cw_work *wk));
void cw_timer_arm(struct cw *w, struct cw_timer *t, int64_t ms,
		  void (*fn)(struct cw *w, struct cw_timer *t));
void cw_timer_cancel(struct cw *w, struct cw_timer *t);

/* ---- rpc.c: gRPC calls (loop thread) ---- */

/* Outcome of a call: gRPC status (0 = OK) or a transport failure. */
struct cw_status {
	int code;		/* gRPC code; -1: transport failure */
	int err;		/* -errno (0 when OK) from errmap.c */
	char msg[512];		/* sentence for err / the log */
	char reason[96];	/* ErrorInfo.reason (domain cwsandbox.com) */
};

/* Unary: done(ud, st, resp, len) once; resp valid during the call only.
 * deadline_ms: the call's bound (grpc-timeout and curl's timeout). */
typedef void (*cw_unary_fn)(struct cw *w, void *ud,
			    const struct cw_status *st, const uint8_t *resp,
			    size_t len);
/* Pack msg (a protobuf-c message) and send it; 0 or -errno (then done
 * is not called). */
int cw_unary(struct cw *w, const char *method, const ProtobufCMessage *msg,
	     int64_t deadline_ms, cw_unary_fn done, void *ud);

/* Bidirectional stream.  on_msg gets each response message (return 1 to
 * pause delivery until cw_stream_resume); on_end runs once, last.
 * Requests go with cw_stream_send (queued; `taken` runs when curl took
 * the bytes); cw_stream_close_send ends the request side (END_STREAM);
 * cw_stream_cancel aborts (on_end then runs with CANCELLED, inline). */
struct cw_stream_cbs {
	int (*on_msg)(struct cw *w, void *ud, const uint8_t *msg, size_t len);
	void (*on_end)(struct cw *w, void *ud, const struct cw_status *st);
	void (*taken)(struct cw *w, void *ud, void *tag);
};
struct cw_call *cw_stream_open(struct cw *w, const char *method,
			       const struct cw_stream_cbs *cbs, void *ud,
			       int *err);
int cw_stream_send(struct cw *w, struct cw_call *c,
		   const ProtobufCMessage *msg, void *tag);
void cw_stream_close_send(struct cw *w, struct cw_call *c);
void cw_stream_resume(struct cw *w, struct cw_call *c);
void cw_stream_cancel(struct cw *w, struct cw_call *c);
/* Service thread: the multi handle told us a transfer ended. */
void cw_rpc_done(struct cw *w, CURL *h, CURLcode rc);
/* Stop: abort every call (their on_end/done run). */
void cw_rpc_abort_all(struct cw *w);

/* ---- errmap.c ---- */

/* Fill st->err from st->code / st->reason (and curl's code when the
 * transport failed). */
void cw_err_map(struct cw_status *st, CURLcode rc);
/* Decode a grpc-status-details-bin value (base64 google.rpc.Status) and
 * keep ErrorInfo.reason when its domain is cwsandbox.com. */
void cw_err_details(struct cw_status *st, const char *b64, size_t len);

/* ---- sandbox.c ---- */

void cw_sb_list(struct api_backend *be, api_list_fn cb, void *ud);
/* ports.c: NAME/ports/PORT from status.services (GetSandbox). */
void cw_sb_port(struct api_backend *be, const char *id, unsigned port,
		api_str_fn cb, void *ud);
void cw_sb_ports(struct api_backend *be, const char *id, api_str_fn cb,
		 void *ud);
void cw_sb_get(struct api_backend *be, const char *id, api_sandbox_fn cb,
	       void *ud);
void cw_sb_create(struct api_backend *be, const char *name,
		  const struct api_kv *kv, size_t nkv, api_sandbox_fn cb,
		  void *ud);
void cw_sb_verb(struct api_backend *be, const char *id, enum api_verb verb,
		const char *arg, api_done_fn cb, void *ud);
/* Loop only: id was destroyed through this mount (ops answer ENOENT). */
bool cw_is_gone(struct cw *w, const char *id);
/* protobuf-c message -> JSON text (proto3-JSON names, enums by name,
 * bytes base64, 64-bit as strings); malloc'd. */
char *cw_msg_json(const ProtobufCMessage *m);

/* ---- snap.c: file-system snapshots ---- */

void cw_tpl_list(struct api_backend *be, api_tpl_fn cb, void *ud);
void cw_tpl_delete(struct api_backend *be, const char *name,
		   api_done_fn cb, void *ud);
/* `snapshot NAME` of sandbox id */
void cw_snap_create(struct api_backend *be, const char *id, const char *name,
		    api_done_fn cb, void *ud);
/* Loop only: the ID of the READY snapshot called name (or with that ID);
 * cb once, as a step of the running operation. */
void cw_snap_resolve(struct cw *w, const char *name,
		     void (*cb)(struct cw *w, void *ud, int err,
				const char *msg, const char *id),
		     void *ud);

/* ---- files.c ---- */

extern const struct api_rfile_ops cw_rfile_ops;
/* errno named by a failed command's stderr (C library messages); 127:
 * EOPNOTSUPP; anything else EIO. */
int cw_text_errno(const char *text, int code);
void cw_file_stat(struct api_backend *be, const char *id, const char *path,
		  api_stat_fn cb, void *ud);
void cw_file_readdir(struct api_backend *be, const char *id,
		     const char *path, api_readdir_fn cb, void *ud);
void cw_file_mkdir(struct api_backend *be, const char *id, const char *path,
		   mode_t mode, api_done_fn cb, void *ud);
void cw_file_unlink(struct api_backend *be, const char *id, const char *path,
		    api_done_fn cb, void *ud);
void cw_file_rmdir(struct api_backend *be, const char *id, const char *path,
		   api_done_fn cb, void *ud);

/* ---- exec.c ---- */

void cw_exec_start(struct api_backend *be, const char *id,
		   const struct api_exec_req *req,
		   const struct api_exec_cbs *cbs, void *ud,
		   struct api_exec **out);
void cw_exec_write(struct api_backend *be, struct api_exec *x,
		   const void *buf, size_t len, api_done_fn cb, void *ud);
void cw_exec_close_stdin(struct api_backend *be, struct api_exec *x);
void cw_exec_resume(struct api_backend *be, struct api_exec *x);
int cw_exec_signal(struct api_backend *be, struct api_exec *x, int sig);
void cw_exec_free(struct api_backend *be, struct api_exec *x);
int cw_exec_pid(struct api_backend *be, struct api_exec *x);

#endif
