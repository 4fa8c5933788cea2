/* srv.h - private header of sbxfs-server (local sandboxes over Wrenn's API).
 *
 * Threads: one libwebsockets service thread owns every socket.  Each HTTP
 * request that needs the backend runs in its own worker thread, which
 * talks to the platform through blocking wrappers around api.h (sync.c)
 * and to its socket through a pair of bounded pipes (struct srv_req): the
 * worker blocks when a pipe is full or empty, the lws thread is woken
 * through a queue and lws_cancel_service() and drains everything queued.
 */
#ifndef SBXFS_SRV_H
#define SBXFS_SRV_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <time.h>

#include "api/api.h"

struct lws;
struct lws_context;

/* ---- growable buffer with a cap (curl's dynbuf) ------------------------ */

struct srv_buf {
	char *p;
	size_t len, cap, max;
};

void srv_buf_init(struct srv_buf *b, size_t max);
void srv_buf_free(struct srv_buf *b);
/* 0 or -ENOMEM / -E2BIG (over max). */
int srv_buf_add(struct srv_buf *b, const void *p, size_t n);
int srv_buf_addf(struct srv_buf *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* Drop the first n bytes. */
void srv_buf_consume(struct srv_buf *b, size_t n);

/* JSON string as Go's encoding/json writes it (HTML-safe escapes, invalid
 * UTF-8 as \ufffd), quotes included. */
int srv_json_str(struct srv_buf *b, const char *s, size_t n);
bool srv_utf8_valid(const void *p, size_t n);
/* Standard padded base64. */
int srv_base64(struct srv_buf *b, const void *p, size_t n);
/* RFC 3339, seconds precision, UTC. */
void srv_rfc3339(time_t t, char *out, size_t len);

/* ---- server state ------------------------------------------------------ */

#define SRV_BODY_MAX (100u << 20)	/* files/write cap (Wrenn's) */
#define SRV_JSON_MAX (1u << 20)		/* JSON request bodies */
#define SRV_PIPE_WIN (1u << 20)		/* in/out pipe window */
#define SRV_WORKERS_MAX 64

struct srv {
	struct lws_context *ctx;
	struct api_backend *be;
	char datadir[512];
	char key[40];
	size_t upload_limit;	/* envd's body cap emulation, 0 = off */
	volatile int stopping;

	pthread_mutex_t lock;	/* queue, worker count, capsule table */
	pthread_cond_t cond;
	struct srv_req *wakeq;	/* requests the lws thread must look at */
	int workers;
};

extern struct srv srv_g;

/* ---- one HTTP transaction or WebSocket --------------------------------- */

enum srv_method { SRV_GET, SRV_POST, SRV_DELETE, SRV_OTHER };

struct srv_req;
typedef void (*srv_handler_fn)(struct srv_req *r);

struct srv_req {
	/* set by the lws thread before the worker starts; read-only after */
	enum srv_method method;
	char path[512];
	char query[512];
	char id[64];		/* capsule id from the path, or "" */
	char sel[128];		/* second path parameter (pid/tag/name) */
	char ctype[256];	/* Content-Type */
	long long clen;		/* Content-Length, -1 if absent */
	bool expect100;		/* Expect: 100-continue */
	srv_handler_fn fn;

	/* below: guarded by srv_g.lock */
	int refs;
	struct lws *wsi;	/* NULL once the connection is gone */
	bool gone;
	struct srv_req *wnext;
	bool queued;

	struct srv_buf in;	/* request body not yet consumed */
	bool in_eof;
	long long in_total;
	bool rx_paused, rx_resume;
	/* interim "100 Continue": asked by the first read of the body (as
	 * Go does), written by the lws thread unless an answer came first */
	bool cont_want, cont_sent;

	int status;		/* 0 until the worker answered */
	char rtype[64];
	bool chunked, hdr_sent, out_eof, done;
	struct srv_buf out;
	bool close_after;
	bool await_eof;		/* answered; waiting for the body */

	/* WebSocket (exec stream) */
	bool ws;
	struct srv_wsq *wq_head, *wq_tail;	/* messages to send */
	size_t wq_bytes;
	size_t wq_off;		/* bytes of head already sent */
	bool ws_close;		/* drop TCP once the queue is empty */
	bool ws_authed;
	bool ws_started;	/* got `start` */
	bool ws_attach;		/* processes/{sel}/stream */
	struct srv_proc *proc;
	time_t ws_deadline;
	struct srv_buf wsin;
};

struct srv_wsq {
	struct srv_wsq *next;
	size_t len;
	char data[];
};

void srv_req_put_locked(struct srv_req *r);
/* Wake the lws thread about r (locked variant for callers holding it). */
void srv_wake_locked(struct srv_req *r);
void srv_wake(struct srv_req *r);

/* Worker side.  Read body bytes: >0, 0 at EOF, -EPIPE when gone. */
ssize_t srv_read(struct srv_req *r, void *buf, size_t n);
/* Read the whole body (cap max): 0, -E2BIG, -EPIPE; b is initialised. */
int srv_read_all(struct srv_req *r, struct srv_buf *b, size_t max);
/* Answer in one go. */
void srv_respond(struct srv_req *r, int status, const char *ctype,
		 const void *body, size_t len);
void srv_json(struct srv_req *r, int status, struct srv_buf *b);
void srv_error(struct srv_req *r, int status, const char *code,
	       const char *msg);
void srv_errorf(struct srv_req *r, int status, const char *code,
		const char *fmt, ...) __attribute__((format(printf, 4, 5)));
void srv_no_content(struct srv_req *r);
/* Streamed answer: begin (chunked), write (blocks on a full pipe;
 * -EPIPE when gone), end. */
void srv_begin(struct srv_req *r, int status, const char *ctype);
int srv_write(struct srv_req *r, const void *p, size_t n);
void srv_end(struct srv_req *r);

/* WebSocket side: queue one complete JSON message (a trailing newline is
 * added); -EAGAIN when the queue is over its window (caller pauses). */
int srv_ws_send_locked(struct srv_req *r, const char *json, size_t len);
void srv_ws_error_close_locked(struct srv_req *r, const char *msg);

/* ---- blocking wrappers over api.h (sync.c); never on the lws thread ---- */

struct srv_dirent {
	char *name;
	struct stat st;
};

int srv_sb_get(const char *id, struct api_sandbox *sb, char *msg,
	       size_t ml);
/* *out malloc'd array */
int srv_sb_list(struct api_sandbox **out, size_t *n, char *msg, size_t ml);
int srv_sb_create(const char *id, const struct api_kv *kv, size_t nkv,
		  char *msg, size_t ml);
int srv_sb_verb(const char *id, enum api_verb v, const char *arg, char *msg,
		size_t ml);
int srv_stat(const char *id, const char *path, struct stat *st, char *msg,
	     size_t ml);
int srv_readdir(const char *id, const char *path, struct srv_dirent **out,
		size_t *n, char *msg, size_t ml);
void srv_dirents_free(struct srv_dirent *d, size_t n);
int srv_open(const char *id, const char *path, int flags, mode_t mode,
	     struct api_file **f, char *msg, size_t ml);
ssize_t srv_pread(struct api_file *f, void *buf, size_t n, off_t off,
		  char *msg, size_t ml);
int srv_pwrite(struct api_file *f, const void *buf, size_t n, off_t off,
	       char *msg, size_t ml);
int srv_close(struct api_file *f, char *msg, size_t ml);
int srv_mkdir(const char *id, const char *path, mode_t mode, char *msg,
	      size_t ml);
int srv_unlink(const char *id, const char *path, char *msg, size_t ml);
int srv_rmdir(const char *id, const char *path, char *msg, size_t ml);
int srv_readlink(const char *id, const char *path, char *buf, size_t len,
		 char *msg, size_t ml);

/* ---- capsules (capsule.c) ---------------------------------------------- */

struct srv_capsule {
	char id[32];
	char status[16];	/* running, paused, stopped, error, pending */
	char template[72];
	int vcpus, memory_mb, timeout_sec;
	time_t created_at, started_at, last_active, last_updated;
};

bool srv_id_valid(const char *id);
int srv_capsules_load(void);
/* Copy of the record: 0 or -ENOENT. */
int srv_capsule_get(const char *id, struct srv_capsule *c);
/* proxy.c: Wrenn's port proxy.  Host "PORT-cl-ID.rest" -> port, id. */
bool srv_proxy_match(const char *host, unsigned *port, char *id, size_t il);
void srv_h_proxy(struct srv_req *r);
void srv_capsule_touch(const char *id);
void srv_capsule_reaper_start(void);
void srv_capsule_reaper_stop(void);

void srv_h_create(struct srv_req *r);
void srv_h_list(struct srv_req *r);
void srv_h_get(struct srv_req *r);
void srv_h_destroy(struct srv_req *r);
void srv_h_pause(struct srv_req *r);
void srv_h_resume(struct srv_req *r);
void srv_h_ping(struct srv_req *r);
void srv_h_snap_create(struct srv_req *r);
void srv_h_snap_list(struct srv_req *r);
void srv_h_snap_delete(struct srv_req *r);
/* Shared check of exec/file routes: 0 when running, else answered. */
int srv_need_running(struct srv_req *r, const char *style);

/* ---- exec (exec.c) ----------------------------------------------------- */

void srv_h_exec(struct srv_req *r);
void srv_h_proc_list(struct srv_req *r);
void srv_h_proc_kill(struct srv_req *r);
/* WebSocket events, lws thread, srv_g.lock held. */
void srv_ws_message_locked(struct srv_req *r, const char *msg, size_t len);
void srv_ws_closed_locked(struct srv_req *r);
/* processes/{sel}/stream once authenticated. */
void srv_ws_attach_locked(struct srv_req *r);
/* Called by the lws thread after it drained a WS queue. */
void srv_ws_drained_locked(struct srv_req *r);
void srv_procs_reap(void);

/* ---- files (files.c) --------------------------------------------------- */

void srv_h_write(struct srv_req *r);
void srv_h_stream_write(struct srv_req *r);
void srv_h_read(struct srv_req *r);
void srv_h_stream_read(struct srv_req *r);
void srv_h_list_dir(struct srv_req *r);
void srv_h_mkdir(struct srv_req *r);
void srv_h_remove(struct srv_req *r);

#endif
