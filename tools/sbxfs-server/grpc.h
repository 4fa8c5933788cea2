/* grpc.h - sbxfs-server's gRPC side: CW Sandbox's v1 SandboxService over
 * HTTP/2 (libnghttp2), serving the local sandboxes.
 *
 * Threads and ownership.  One loop thread (grpc.c) owns the listening
 * socket, every connection and every nghttp2 session; nothing else calls
 * nghttp2.  A unary RPC is read whole by the loop thread and handed to a
 * worker thread (grpc_svc.c), which calls api.h through the blocking
 * wrappers of sync.c and answers with gs_reply()/gs_fail().  StreamExec is
 * driven by the loop thread (messages in) and by the backend's exec
 * callbacks (messages out).  Everything a worker or a callback touches in
 * a stream is guarded by gs_lock; the loop thread is woken through an
 * eventfd and looks at every stream marked dirty.
 *
 * A stream is freed when both the loop (nghttp2 closed it) and its
 * service side (worker, exec) let go: refs, under gs_lock.
 */
#ifndef SBXFS_GRPC_H
#define SBXFS_GRPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "srv.h"

/* gRPC status codes */
enum {
	GS_OK = 0, GS_CANCELLED = 1, GS_UNKNOWN = 2, GS_INVALID_ARGUMENT = 3,
	GS_DEADLINE_EXCEEDED = 4, GS_NOT_FOUND = 5, GS_ALREADY_EXISTS = 6,
	GS_PERMISSION_DENIED = 7, GS_RESOURCE_EXHAUSTED = 8,
	GS_FAILED_PRECONDITION = 9, GS_ABORTED = 10, GS_OUT_OF_RANGE = 11,
	GS_UNIMPLEMENTED = 12, GS_INTERNAL = 13, GS_UNAVAILABLE = 14,
	GS_DATA_LOSS = 15, GS_UNAUTHENTICATED = 16
};

#define GS_MSG_MAX (100u << 20)		/* the SDKs' message cap */

struct gs_stream;

/* One RPC of the service.  Unary: `unary` runs on a worker thread with the
 * whole request message.  Streaming (StreamExec): `on_msg` runs on the
 * loop thread for each request message, `on_eof` at the request's end,
 * `on_gone` when the stream ends early (peer reset, connection lost,
 * deadline); all three with gs_lock NOT held. */
struct gs_method {
	const char *name;
	void (*unary)(struct gs_stream *st, const uint8_t *msg, size_t len);
	void (*on_msg)(struct gs_stream *st, const uint8_t *msg, size_t len);
	void (*on_eof)(struct gs_stream *st);
	void (*on_gone)(struct gs_stream *st);
};

extern const struct gs_method gs_methods[];	/* ends with name NULL */

extern pthread_mutex_t gs_lock;

/* Start / stop the loop thread on ADDR:PORT (port 0: any).  gs_start
 * returns the bound port or -errno. */
int gs_start(const char *addr, int port);
void gs_stop(void);

/* ---- answering (any thread) -------------------------------------------- */

/* Queue one response message (a packed protobuf, framed here).  -EPIPE
 * when the stream is already finished or gone. */
int gs_send(struct gs_stream *st, const void *msg, size_t len);
/* Same with gs_lock held; returns the bytes now queued (>= 0). */
long gs_send_locked(struct gs_stream *st, const void *msg, size_t len);
/* Finish with a status; message and ErrorInfo reason may be NULL.  meta:
 * NULL or NULL-terminated key, value, key, value... for ErrorInfo. */
void gs_finish(struct gs_stream *st, int code, const char *msg,
	       const char *reason, const char *const *meta);
void gs_finish_locked(struct gs_stream *st, int code, const char *msg,
		      const char *reason, const char *const *meta);
/* Unary helpers: reply with one message and OK. */
void gs_reply(struct gs_stream *st, const void *msg, size_t len);
bool gs_finished_locked(struct gs_stream *st);

/* Seconds left before the call's deadline (grpc-timeout), or a large
 * number without one. */
double gs_time_left(struct gs_stream *st);

/* Service data hung on a stream (StreamExec's state). */
void gs_set_svc(struct gs_stream *st, void *p);
void *gs_svc(struct gs_stream *st);

/* References held by the service side (worker, exec callbacks). */
void gs_hold(struct gs_stream *st);
void gs_release(struct gs_stream *st);

/* The request's window: tell the peer it may send n more bytes (StreamExec
 * consumes stdin bytes only when the command took them). */
void gs_consume_locked(struct gs_stream *st, size_t n);
/* Output queued but not yet sent (flow control of exec output). */
size_t gs_pending_locked(struct gs_stream *st);
/* Called by the loop thread when a stream's output queue drained below
 * the low mark (gs_lock not held). */
extern void (*gs_on_drain)(struct gs_stream *st);
/* Called on the loop thread after every wake (gs_lock not held): lets the
 * service feed stdin from the loop thread. */
extern void (*gs_on_wake)(void);
/* Wake the loop (any thread, with or without gs_lock). */
void gs_wake(void);

/* ---- the service (grpc_svc.c) ------------------------------------------ */

int gs_svc_init(void);
void gs_svc_free(void);

#endif
