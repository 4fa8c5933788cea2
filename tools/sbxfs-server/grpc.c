/* grpc.c - the gRPC transport of sbxfs-server: HTTP/2 with prior knowledge
 * on one loop thread (libnghttp2 does the framing, HPACK, flow control and
 * trailers), gRPC's length-prefixed messages, grpc-timeout, Bearer auth,
 * trailers-only errors with a google.rpc.Status detail.
 *
 * Lock: gs_lock is recursive.  The loop thread holds it while it drives
 * nghttp2_session_mem_send (the data source reads the queued output and
 * submits trailers from inside it) and while it submits responses; it
 * drops it around every call into the service (on_msg, on_eof, on_gone,
 * on_drain, on_wake) and around nghttp2_session_mem_recv, whose callbacks
 * lock briefly where they touch shared fields.  Workers and exec callbacks
 * only ever take gs_lock, never call nghttp2.
 *
 * Request flow control: automatic WINDOW_UPDATE is off.  The 5-byte
 * prefix of every message is consumed when the message is complete; a
 * unary body is consumed as it arrives; StreamExec consumes each stdin
 * message's payload once the command took it (gs_consume_locked), so a
 * client streaming stdin faster than the command reads it is held back by
 * HTTP/2 itself.  Bytes left unconsumed when a stream ends are given back
 * to the connection window.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <nghttp2/nghttp2.h>

#include "grpc.h"
#include "rpc_status.pb-c.h"

#define SVC_PREFIX "/coreweave.sandbox.v1.SandboxService/"
#define STREAM_WIN (1 << 20)		/* per-stream receive window */
#define CONN_WIN (16 << 20)		/* connection receive window */
#define TX_LOW (256u << 10)		/* output low-water mark */
#define CONNS_MAX 256

pthread_mutex_t gs_lock = PTHREAD_RECURSIVE_MUTEX_INITIALIZER_NP;
void (*gs_on_drain)(struct gs_stream *st);
void (*gs_on_wake)(void);

struct gs_conn {
	struct gs_conn *next;
	int fd;
	nghttp2_session *s;
	struct gs_stream *streams;
	struct srv_buf out;	/* serialized frames not yet written */
	size_t out_off;
	bool dead;
};

struct gs_stream {
	struct gs_stream *next;	/* in c->streams (loop thread) */
	struct gs_stream *gnext; /* on the loop's "ended" list */
	struct gs_conn *c;	/* NULL once the connection is gone */
	int32_t id;
	int refs;

	/* request (loop thread only) */
	char path[192];
	char auth[160];
	bool post, ctype_ok, te_ok;
	const struct gs_method *m;
	bool rejected;		/* answered at the headers */
	bool started;		/* unary worker started / first message */
	struct srv_buf rx;	/* bytes of messages not yet complete */
	size_t unconsumed;	/* received, window not yet given back */
	double deadline;	/* monotonic seconds; 0 = none */

	/* response (gs_lock) */
	struct srv_buf tx;
	size_t tx_off;		/* bytes of tx already handed to nghttp2 */
	bool hdr_sent, finished, trailers_sent, closed, gone_called;
	bool drain_want;
	int status;
	char *smsg, *details;
	size_t to_consume;
	void *svc;
};

static struct {
	pthread_t th;
	bool running;
	volatile int stop;
	int lfd, efd;
	struct gs_conn *conns;
	int nconns;
	struct gs_stream *ended;	/* closed by nghttp2, service not told */
} L = { .lfd = -1, .efd = -1 };

static double now_mono(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

void gs_wake(void)
{
	uint64_t one = 1;

	if (L.efd >= 0 && write(L.efd, &one, sizeof(one)) < 0) {
		/* counter full: the loop is awake anyway */
	}
}

/* ---- references ---------------------------------------------------------- */

static void st_free(struct gs_stream *st)
{
	srv_buf_free(&st->rx);
	srv_buf_free(&st->tx);
	free(st->smsg);
	free(st->details);
	free(st);
}

void gs_hold(struct gs_stream *st)
{
	pthread_mutex_lock(&gs_lock);
	st->refs++;
	pthread_mutex_unlock(&gs_lock);
}

static void put_locked(struct gs_stream *st)
{
	if (--st->refs == 0)
		st_free(st);
}

void gs_release(struct gs_stream *st)
{
	pthread_mutex_lock(&gs_lock);
	put_locked(st);
	pthread_mutex_unlock(&gs_lock);
}

void gs_set_svc(struct gs_stream *st, void *p)
{
	pthread_mutex_lock(&gs_lock);
	st->svc = p;
	pthread_mutex_unlock(&gs_lock);
}

void *gs_svc(struct gs_stream *st)
{
	void *p;

	pthread_mutex_lock(&gs_lock);
	p = st->svc;
	pthread_mutex_unlock(&gs_lock);
	return p;
}

double gs_time_left(struct gs_stream *st)
{
	double d = st->deadline;	/* set before any worker starts */

	return d ? d - now_mono() : 1e9;
}

/* ---- answering ------------------------------------------------------------- */

bool gs_finished_locked(struct gs_stream *st)
{
	return st->finished || st->closed;
}

long gs_send_locked(struct gs_stream *st, const void *msg, size_t len)
{
	unsigned char hdr[5];

	if (st->finished || st->closed)
		return -EPIPE;
	hdr[0] = 0;
	hdr[1] = len >> 24;
	hdr[2] = len >> 16;
	hdr[3] = len >> 8;
	hdr[4] = len;
	st->tx.max = (size_t)-1;
	if (srv_buf_add(&st->tx, hdr, 5) ||
	    (len && srv_buf_add(&st->tx, msg, len)))
		return -ENOMEM;
	gs_wake();
	return (long)(st->tx.len - st->tx_off);
}

int gs_send(struct gs_stream *st, const void *msg, size_t len)
{
	long r;

	pthread_mutex_lock(&gs_lock);
	r = gs_send_locked(st, msg, len);
	pthread_mutex_unlock(&gs_lock);
	return r < 0 ? (int)r : 0;
}

size_t gs_pending_locked(struct gs_stream *st)
{
	st->drain_want = true;
	return st->tx.len - st->tx_off;
}

void gs_consume_locked(struct gs_stream *st, size_t n)
{
	st->to_consume += n;
	gs_wake();
}

/* base64 without padding, as gRPC emits -bin values */
static char *b64(const uint8_t *p, size_t n)
{
	struct srv_buf b;
	char *s;

	srv_buf_init(&b, (size_t)-1);
	if (srv_base64(&b, p, n) || srv_buf_add(&b, "", 1)) {
		srv_buf_free(&b);
		return NULL;
	}
	s = b.p;
	while (b.len > 1 && s[b.len - 2] == '=')
		s[--b.len - 1] = '\0';
	return s;
}

/* google.rpc.Status{code, message, [ErrorInfo{reason, "cwsandbox.com",
 * meta}]}, packed and base64'd for grpc-status-details-bin. */
static char *status_details(int code, const char *msg, const char *reason,
			    const char *const *meta)
{
	Google__Rpc__ErrorInfo ei = GOOGLE__RPC__ERROR_INFO__INIT;
	Google__Rpc__ErrorInfo__MetadataEntry me[8], *mp[8];
	Google__Rpc__Any any = GOOGLE__RPC__ANY__INIT, *anyp = &any;
	Google__Rpc__Status s = GOOGLE__RPC__STATUS__INIT;
	uint8_t *eb = NULL, *sb = NULL;
	size_t n = 0, el, sl;
	char *out = NULL;

	ei.reason = (char *)reason;
	ei.domain = "cwsandbox.com";
	while (meta && meta[2 * n] && meta[2 * n + 1] && n < 8) {
		google__rpc__error_info__metadata_entry__init(&me[n]);
		me[n].key = (char *)meta[2 * n];
		me[n].value = (char *)meta[2 * n + 1];
		mp[n] = &me[n];
		n++;
	}
	ei.n_metadata = n;
	ei.metadata = mp;
	el = google__rpc__error_info__get_packed_size(&ei);
	eb = malloc(el ? el : 1);
	if (!eb)
		goto out;
	google__rpc__error_info__pack(&ei, eb);
	any.type_url = "type.googleapis.com/google.rpc.ErrorInfo";
	any.value.data = eb;
	any.value.len = el;
	s.code = code;
	s.message = (char *)(msg ? msg : "");
	s.n_details = 1;
	s.details = &anyp;
	sl = google__rpc__status__get_packed_size(&s);
	sb = malloc(sl ? sl : 1);
	if (!sb)
		goto out;
	google__rpc__status__pack(&s, sb);
	out = b64(sb, sl);
out:
	free(eb);
	free(sb);
	return out;
}

void gs_finish_locked(struct gs_stream *st, int code, const char *msg,
		      const char *reason, const char *const *meta)
{
	if (st->finished || st->closed)
		return;
	st->finished = true;
	st->status = code;
	st->smsg = msg && *msg ? strdup(msg) : NULL;
	st->details = code && reason ? status_details(code, msg, reason, meta)
				     : NULL;
	gs_wake();
}

void gs_finish(struct gs_stream *st, int code, const char *msg,
	       const char *reason, const char *const *meta)
{
	pthread_mutex_lock(&gs_lock);
	gs_finish_locked(st, code, msg, reason, meta);
	pthread_mutex_unlock(&gs_lock);
}

void gs_reply(struct gs_stream *st, const void *msg, size_t len)
{
	pthread_mutex_lock(&gs_lock);
	if (gs_send_locked(st, msg, len) >= 0)
		gs_finish_locked(st, GS_OK, NULL, NULL, NULL);
	pthread_mutex_unlock(&gs_lock);
}

/* ---- nghttp2 glue (loop thread) -------------------------------------------- */

#define NV(n, v) { (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, \
		   strlen(v), NGHTTP2_NV_FLAG_NONE }

/* grpc-message is percent-encoded: everything outside printable ASCII and
 * '%' itself. */
static void pct(const char *in, char *out, size_t len)
{
	size_t o = 0;

	for (; *in && o + 4 < len; in++) {
		unsigned char ch = *in;

		if (ch < 0x20 || ch > 0x7e || ch == '%')
			o += snprintf(out + o, len - o, "%%%02X", ch);
		else
			out[o++] = ch;
	}
	out[o] = '\0';
}

static int status_nv(struct gs_stream *st, nghttp2_nv *nv, char *code,
		     char *msg, size_t ml)
{
	int n = 0;

	snprintf(code, 12, "%d", st->status);
	nv[n++] = (nghttp2_nv)NV("grpc-status", code);
	if (st->smsg) {
		pct(st->smsg, msg, ml);
		nv[n++] = (nghttp2_nv)NV("grpc-message", msg);
	}
	if (st->details)
		nv[n++] = (nghttp2_nv)NV("grpc-status-details-bin",
					 st->details);
	return n;
}

static ssize_t data_read(nghttp2_session *s, int32_t id, uint8_t *buf,
			 size_t length, uint32_t *flags,
			 nghttp2_data_source *src, void *ud)
{
	struct gs_stream *st = src->ptr;
	size_t n;

	(void)ud;
	pthread_mutex_lock(&gs_lock);
	n = st->tx.len - st->tx_off;
	if (n > length)
		n = length;
	if (n) {
		memcpy(buf, st->tx.p + st->tx_off, n);
		st->tx_off += n;
		if (st->tx_off == st->tx.len) {
			st->tx.len = st->tx_off = 0;
		} else if (st->tx_off > (1u << 20)) {
			srv_buf_consume(&st->tx, st->tx_off);
			st->tx_off = 0;
		}
		pthread_mutex_unlock(&gs_lock);
		return (ssize_t)n;
	}
	if (!st->finished) {
		pthread_mutex_unlock(&gs_lock);
		return NGHTTP2_ERR_DEFERRED;
	}
	*flags |= NGHTTP2_DATA_FLAG_EOF;
	if (!st->trailers_sent) {
		nghttp2_nv nv[3];
		char code[12], msg[1024];
		int k = status_nv(st, nv, code, msg, sizeof(msg));

		*flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
		st->trailers_sent = true;
		if (nghttp2_submit_trailer(s, id, nv, k)) {
			pthread_mutex_unlock(&gs_lock);
			return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
		}
	}
	pthread_mutex_unlock(&gs_lock);
	return 0;
}

/* Submit what the service queued on st (gs_lock held). */
static void st_flush_locked(struct gs_conn *c, struct gs_stream *st)
{
	if (st->closed)
		return;
	if (st->to_consume) {
		nghttp2_session_consume(c->s, st->id, st->to_consume);
		st->unconsumed -= st->to_consume < st->unconsumed ?
				  st->to_consume : st->unconsumed;
		st->to_consume = 0;
	}
	if (!st->hdr_sent && st->finished && !st->tx.len) {
		/* trailers-only */
		nghttp2_nv nv[5];
		char code[12], msg[1024];
		int k = 0;

		nv[k++] = (nghttp2_nv)NV(":status", "200");
		nv[k++] = (nghttp2_nv)NV("content-type", "application/grpc");
		k += status_nv(st, nv + k, code, msg, sizeof(msg));
		st->hdr_sent = st->trailers_sent = true;
		nghttp2_submit_response(c->s, st->id, nv, k, NULL);
	} else if (!st->hdr_sent && (st->tx.len || st->finished)) {
		nghttp2_nv nv[2] = {
			NV(":status", "200"),
			NV("content-type", "application/grpc"),
		};
		nghttp2_data_provider dp = { .source.ptr = st,
					     .read_callback = data_read };

		st->hdr_sent = true;
		nghttp2_submit_response(c->s, st->id, nv, 2, &dp);
	} else if (st->hdr_sent && !st->trailers_sent &&
		   (st->tx.len || st->finished)) {
		nghttp2_session_resume_data(c->s, st->id);
	}
}

static void reject(struct gs_stream *st, int code, const char *msg)
{
	pthread_mutex_lock(&gs_lock);
	st->rejected = true;
	gs_finish_locked(st, code, msg, NULL, NULL);
	pthread_mutex_unlock(&gs_lock);
}

static int on_begin_headers(nghttp2_session *s, const nghttp2_frame *f,
			    void *ud)
{
	struct gs_conn *c = ud;
	struct gs_stream *st;

	if (f->hd.type != NGHTTP2_HEADERS ||
	    f->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
	st = calloc(1, sizeof(*st));
	if (!st)
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	st->id = f->hd.stream_id;
	st->c = c;
	st->refs = 1;		/* the loop's, until nghttp2 closes it */
	srv_buf_init(&st->rx, GS_MSG_MAX + 5);
	srv_buf_init(&st->tx, (size_t)-1);
	st->next = c->streams;
	c->streams = st;
	nghttp2_session_set_stream_user_data(s, st->id, st);
	return 0;
}

/* grpc-timeout: 1-8 digits and a unit H M S m u n */
static double parse_timeout(const char *v, size_t n)
{
	double x = 0;
	size_t i;

	if (n < 2 || n > 9)
		return -1;
	for (i = 0; i + 1 < n; i++) {
		if (v[i] < '0' || v[i] > '9')
			return -1;
		x = x * 10 + (v[i] - '0');
	}
	switch (v[n - 1]) {
	case 'H': return x * 3600;
	case 'M': return x * 60;
	case 'S': return x;
	case 'm': return x / 1e3;
	case 'u': return x / 1e6;
	case 'n': return x / 1e9;
	}
	return -1;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *f,
		     const uint8_t *name, size_t nl, const uint8_t *val,
		     size_t vl, uint8_t flags, void *ud)
{
	struct gs_stream *st;

	(void)flags;
	(void)ud;
	if (f->hd.type != NGHTTP2_HEADERS ||
	    f->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
	st = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
	if (!st)
		return 0;
#define IS(lit) (nl == sizeof(lit) - 1 && !memcmp(name, lit, nl))
	if (IS(":path")) {
		if (vl < sizeof(st->path)) {
			memcpy(st->path, val, vl);
			st->path[vl] = '\0';
		}
	} else if (IS(":method")) {
		st->post = vl == 4 && !memcmp(val, "POST", 4);
	} else if (IS("content-type")) {
		st->ctype_ok = vl >= 16 &&
			       !memcmp(val, "application/grpc", 16) &&
			       (vl == 16 || val[16] == '+' || val[16] == ';');
	} else if (IS("authorization")) {
		if (vl < sizeof(st->auth)) {
			memcpy(st->auth, val, vl);
			st->auth[vl] = '\0';
		}
	} else if (IS("grpc-timeout")) {
		double t = parse_timeout((const char *)val, vl);

		if (t >= 0)
			st->deadline = now_mono() + t;
	}
#undef IS
	return 0;
}

/* constant-time comparison of the Bearer token with the server key */
static bool auth_ok(const char *h)
{
	const char *k = srv_g.key;
	size_t i, kl = strlen(k);
	unsigned char d = 0;

	if (strncmp(h, "Bearer ", 7))
		return false;
	h += 7;
	if (strlen(h) != kl)
		return false;
	for (i = 0; i < kl; i++)
		d |= (unsigned char)h[i] ^ (unsigned char)k[i];
	return d == 0;
}

struct unary_job {
	struct gs_stream *st;
	struct srv_buf b;
};

static void *unary_worker(void *p)
{
	struct unary_job *j = p;
	struct gs_stream *st = j->st;

	st->m->unary(st, (uint8_t *)j->b.p + 5, j->b.len - 5);
	pthread_mutex_lock(&gs_lock);
	/* a handler that forgot to answer must not leave a hung call */
	gs_finish_locked(st, GS_INTERNAL, "no answer", NULL, NULL);
	put_locked(st);
	pthread_mutex_unlock(&gs_lock);
	srv_buf_free(&j->b);
	free(j);
	return NULL;
}

static void start_unary(struct gs_stream *st)
{
	struct unary_job *j;
	pthread_attr_t a;
	pthread_t th;
	uint32_t len;
	const uint8_t *p = (const uint8_t *)st->rx.p;

	if (st->rx.len < 5) {
		reject(st, GS_INTERNAL, "request message missing");
		return;
	}
	len = (uint32_t)p[1] << 24 | p[2] << 16 | p[3] << 8 | p[4];
	if (p[0] & 1) {
		reject(st, GS_UNIMPLEMENTED, "compressed messages are not "
		       "supported (no grpc-encoding negotiated)");
		return;
	}
	if (st->rx.len != (size_t)len + 5) {
		reject(st, GS_UNIMPLEMENTED, "a unary call takes exactly "
		       "one request message");
		return;
	}
	j = malloc(sizeof(*j));
	if (!j) {
		reject(st, GS_RESOURCE_EXHAUSTED, "out of memory");
		return;
	}
	j->st = st;
	j->b = st->rx;		/* the worker owns the bytes now */
	srv_buf_init(&st->rx, 0);
	st->started = true;
	pthread_mutex_lock(&gs_lock);
	st->refs++;
	pthread_mutex_unlock(&gs_lock);
	pthread_attr_init(&a);
	pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
	if (pthread_create(&th, &a, unary_worker, j)) {
		pthread_attr_destroy(&a);
		srv_buf_free(&j->b);
		free(j);
		gs_release(st);
		reject(st, GS_RESOURCE_EXHAUSTED, "no thread for the call");
		return;
	}
	pthread_attr_destroy(&a);
}

/* Hand the complete messages in st->rx to a streaming method. */
static void stream_msgs(struct gs_stream *st)
{
	const uint8_t *p;
	uint32_t len;
	size_t off = 0;

	while (!st->rejected && st->rx.len - off >= 5) {
		p = (const uint8_t *)st->rx.p + off;
		len = (uint32_t)p[1] << 24 | p[2] << 16 | p[3] << 8 | p[4];
		if (p[0] & 1) {
			reject(st, GS_UNIMPLEMENTED, "compressed messages "
			       "are not supported");
			break;
		}
		if (len > GS_MSG_MAX) {
			reject(st, GS_RESOURCE_EXHAUSTED, "message larger "
			       "than 100 MiB");
			break;
		}
		if (st->rx.len - off < (size_t)len + 5)
			break;
		pthread_mutex_lock(&gs_lock);
		gs_consume_locked(st, 5);
		pthread_mutex_unlock(&gs_lock);
		st->started = true;
		st->m->on_msg(st, p + 5, len);
		off += (size_t)len + 5;
	}
	srv_buf_consume(&st->rx, off);
}

static int on_headers_done(struct gs_conn *c, struct gs_stream *st)
{
	const struct gs_method *m;
	const char *name;

	(void)c;
	if (!st->post) {
		reject(st, GS_UNIMPLEMENTED, "gRPC calls are POST");
		return 0;
	}
	if (!st->ctype_ok) {
		reject(st, GS_INTERNAL, "content-type is not "
		       "application/grpc");
		return 0;
	}
	if (!auth_ok(st->auth)) {
		reject(st, GS_UNAUTHENTICATED, st->auth[0] ?
		       "invalid API key" : "missing authorization: Bearer "
		       "API key");
		return 0;
	}
	if (strncmp(st->path, SVC_PREFIX, strlen(SVC_PREFIX))) {
		reject(st, GS_UNIMPLEMENTED, "unknown service");
		return 0;
	}
	name = st->path + strlen(SVC_PREFIX);
	for (m = gs_methods; m->name; m++)
		if (!strcmp(m->name, name))
			break;
	if (!m->name || (!m->unary && !m->on_msg)) {
		reject(st, GS_UNIMPLEMENTED, "method not implemented by "
		       "sbxfs-server");
		return 0;
	}
	st->m = m;
	return 0;
}

static void end_of_request(struct gs_stream *st)
{
	if (st->rejected || !st->m)
		return;
	if (st->m->unary)
		start_unary(st);
	else if (st->m->on_eof)
		st->m->on_eof(st);
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *f,
			 void *ud)
{
	struct gs_conn *c = ud;
	struct gs_stream *st;

	if (f->hd.type != NGHTTP2_HEADERS && f->hd.type != NGHTTP2_DATA)
		return 0;
	st = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
	if (!st)
		return 0;
	if (f->hd.type == NGHTTP2_HEADERS &&
	    f->headers.cat == NGHTTP2_HCAT_REQUEST)
		on_headers_done(c, st);
	if (f->hd.flags & NGHTTP2_FLAG_END_STREAM)
		end_of_request(st);
	return 0;
}

static int on_data_chunk(nghttp2_session *s, uint8_t flags, int32_t id,
			 const uint8_t *data, size_t len, void *ud)
{
	struct gs_stream *st = nghttp2_session_get_stream_user_data(s, id);

	(void)flags;
	(void)ud;
	if (!st || st->rejected || !st->m) {
		nghttp2_session_consume(s, id, len);
		return 0;
	}
	if (st->m->unary) {
		nghttp2_session_consume(s, id, len);
		if (srv_buf_add(&st->rx, data, len))
			reject(st, GS_RESOURCE_EXHAUSTED, "request message "
			       "larger than 100 MiB");
		return 0;
	}
	st->unconsumed += len;
	st->rx.max = (size_t)-1;
	if (srv_buf_add(&st->rx, data, len)) {
		reject(st, GS_RESOURCE_EXHAUSTED, "out of memory");
		return 0;
	}
	stream_msgs(st);
	return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t id, uint32_t err,
			   void *ud)
{
	struct gs_conn *c = ud;
	struct gs_stream *st = nghttp2_session_get_stream_user_data(s, id);
	struct gs_stream **pp;

	(void)err;
	if (!st)
		return 0;
	nghttp2_session_set_stream_user_data(s, id, NULL);
	for (pp = &c->streams; *pp; pp = &(*pp)->next)
		if (*pp == st) {
			*pp = st->next;
			break;
		}
	if (st->unconsumed || st->rx.len)
		nghttp2_session_consume_connection(s, st->unconsumed);
	pthread_mutex_lock(&gs_lock);
	st->closed = true;
	st->c = NULL;
	st->gnext = L.ended;
	L.ended = st;
	pthread_mutex_unlock(&gs_lock);
	return 0;
}

/* Tell the service about streams that ended, then drop the loop's ref. */
static void reap_ended(void)
{
	struct gs_stream *st;

	for (;;) {
		pthread_mutex_lock(&gs_lock);
		st = L.ended;
		if (st)
			L.ended = st->gnext;
		pthread_mutex_unlock(&gs_lock);
		if (!st)
			return;
		if (st->m && st->m->on_gone && st->started)
			st->m->on_gone(st);
		gs_release(st);
	}
}

/* ---- connections ------------------------------------------------------------ */

static void conn_free(struct gs_conn *c)
{
	struct gs_stream *st, *n;

	for (st = c->streams; st; st = n) {
		n = st->next;
		nghttp2_session_set_stream_user_data(c->s, st->id, NULL);
		pthread_mutex_lock(&gs_lock);
		st->closed = true;
		st->c = NULL;
		st->gnext = L.ended;
		L.ended = st;
		pthread_mutex_unlock(&gs_lock);
	}
	c->streams = NULL;
	nghttp2_session_del(c->s);
	srv_buf_free(&c->out);
	close(c->fd);
	free(c);
	reap_ended();
}

static void conn_new(int fd)
{
	nghttp2_session_callbacks *cb;
	nghttp2_option *opt;
	nghttp2_settings_entry set[] = {
		{ NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 256 },
		{ NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WIN },
		{ NGHTTP2_SETTINGS_MAX_FRAME_SIZE, 1 << 16 },
	};
	struct gs_conn *c;
	int one = 1;

	if (L.nconns >= CONNS_MAX) {
		close(fd);
		return;
	}
	c = calloc(1, sizeof(*c));
	if (!c) {
		close(fd);
		return;
	}
	c->fd = fd;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	srv_buf_init(&c->out, (size_t)-1);
	nghttp2_session_callbacks_new(&cb);
	nghttp2_session_callbacks_set_on_begin_headers_callback(cb,
		on_begin_headers);
	nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cb,
		on_frame_recv);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb,
		on_data_chunk);
	nghttp2_session_callbacks_set_on_stream_close_callback(cb,
		on_stream_close);
	nghttp2_option_new(&opt);
	nghttp2_option_set_no_auto_window_update(opt, 1);
	nghttp2_session_server_new2(&c->s, cb, c, opt);
	nghttp2_option_del(opt);
	nghttp2_session_callbacks_del(cb);
	nghttp2_submit_settings(c->s, NGHTTP2_FLAG_NONE, set, 3);
	nghttp2_session_set_local_window_size(c->s, NGHTTP2_FLAG_NONE, 0,
					      CONN_WIN);
	c->next = L.conns;
	L.conns = c;
	L.nconns++;
}

/* Serialize and write what nghttp2 has for the peer.  Gs_lock held (the
 * data source reads the output queues).  0, or -1 when the peer is gone. */
static int conn_write(struct gs_conn *c)
{
	for (;;) {
		if (c->out_off < c->out.len) {
			ssize_t w = send(c->fd, c->out.p + c->out_off,
					 c->out.len - c->out_off,
					 MSG_NOSIGNAL | MSG_DONTWAIT);

			if (w < 0)
				return errno == EAGAIN || errno == EINTR ?
				       0 : -1;
			c->out_off += w;
			continue;
		}
		c->out.len = c->out_off = 0;
		{
			const uint8_t *d;
			ssize_t n = nghttp2_session_mem_send(c->s, &d);

			if (n < 0)
				return -1;
			if (n == 0)
				return 0;
			if (srv_buf_add(&c->out, d, n))
				return -1;
		}
	}
}

static int conn_read(struct gs_conn *c)
{
	uint8_t buf[65536];
	ssize_t n = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT);

	if (n == 0)
		return -1;
	if (n < 0)
		return errno == EAGAIN || errno == EINTR ? 0 : -1;
	if (nghttp2_session_mem_recv(c->s, buf, n) < 0)
		return -1;
	return 0;
}

/* Deadlines, queued answers, consumed windows: one pass over all
 * streams (gs_lock held). */
static double service_streams_locked(void)
{
	struct gs_conn *c;
	struct gs_stream *st;
	double now = now_mono(), next = 1.0, left;

	for (c = L.conns; c; c = c->next)
		for (st = c->streams; st; st = st->next) {
			if (st->deadline && !st->finished) {
				left = st->deadline - now;
				if (left <= 0)
					gs_finish_locked(st,
						GS_DEADLINE_EXCEEDED,
						"deadline exceeded", NULL,
						NULL);
				else if (left < next)
					next = left;
			}
			st_flush_locked(c, st);
		}
	return next;
}

/* Streams whose output drained below the low mark. */
static void notify_drained(void)
{
	struct gs_conn *c;
	struct gs_stream *st, *hit[64];
	int n = 0, i;

	pthread_mutex_lock(&gs_lock);
	for (c = L.conns; c; c = c->next)
		for (st = c->streams; st && n < 64; st = st->next)
			if (st->drain_want &&
			    st->tx.len - st->tx_off < TX_LOW) {
				st->drain_want = false;
				st->refs++;
				hit[n++] = st;
			}
	pthread_mutex_unlock(&gs_lock);
	for (i = 0; i < n; i++) {
		if (gs_on_drain)
			gs_on_drain(hit[i]);
		gs_release(hit[i]);
	}
}

/* Deadline expiry of a streaming call also tells the service. */
static void expire_streams(void)
{
	struct gs_conn *c;
	struct gs_stream *st, *hit[64];
	int n = 0, i;

	pthread_mutex_lock(&gs_lock);
	for (c = L.conns; c; c = c->next)
		for (st = c->streams; st && n < 64; st = st->next)
			if (st->m && st->m->on_gone && st->started &&
			    st->finished && st->status ==
			    GS_DEADLINE_EXCEEDED && !st->gone_called) {
				st->gone_called = true;
				st->refs++;
				hit[n++] = st;
			}
	pthread_mutex_unlock(&gs_lock);
	for (i = 0; i < n; i++) {
		hit[i]->m->on_gone(hit[i]);
		gs_release(hit[i]);
	}
}

static void *loop(void *arg)
{
	struct pollfd pf[CONNS_MAX + 2];
	struct gs_conn *c, **cp, *cs[CONNS_MAX];
	double next;
	int n, i, fd;

	(void)arg;
	while (!L.stop) {
		if (gs_on_wake)
			gs_on_wake();
		pthread_mutex_lock(&gs_lock);
		next = service_streams_locked();
		for (c = L.conns; c; c = c->next)
			if (!c->dead && conn_write(c))
				c->dead = true;
		pthread_mutex_unlock(&gs_lock);
		expire_streams();
		notify_drained();
		reap_ended();
		/* drop dead connections */
		for (cp = &L.conns; *cp;) {
			c = *cp;
			if (c->dead || (!nghttp2_session_want_read(c->s) &&
					!nghttp2_session_want_write(c->s) &&
					c->out_off >= c->out.len)) {
				*cp = c->next;
				L.nconns--;
				conn_free(c);
				continue;
			}
			cp = &c->next;
		}
		pf[0] = (struct pollfd){ .fd = L.efd, .events = POLLIN };
		pf[1] = (struct pollfd){ .fd = L.lfd, .events = POLLIN };
		n = 2;
		for (c = L.conns; c; c = c->next) {
			short ev = POLLIN;

			if (c->out_off < c->out.len ||
			    nghttp2_session_want_write(c->s))
				ev |= POLLOUT;
			cs[n - 2] = c;
			pf[n++] = (struct pollfd){ .fd = c->fd, .events = ev };
		}
		if (poll(pf, n, (int)(next * 1000) + 1) < 0 && errno != EINTR)
			break;
		if (pf[0].revents & POLLIN) {
			uint64_t v;

			if (read(L.efd, &v, sizeof(v)) < 0) {
				/* nothing: spurious */
			}
		}
		if (pf[1].revents & POLLIN) {
			while ((fd = accept4(L.lfd, NULL, NULL,
					     SOCK_CLOEXEC | SOCK_NONBLOCK))
			       >= 0)
				conn_new(fd);
		}
		for (i = 2; i < n; i++) {
			c = cs[i - 2];
			if (pf[i].revents & (POLLIN | POLLHUP | POLLERR))
				if (conn_read(c))
					c->dead = true;
			reap_ended();
		}
	}
	while (L.conns) {
		c = L.conns;
		L.conns = c->next;
		conn_free(c);
	}
	L.nconns = 0;
	return NULL;
}

int gs_start(const char *addr, int port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t sl = sizeof(sa);
	int one = 1, rc;

	if (inet_pton(AF_INET, addr, &sa.sin_addr) != 1)
		return -EINVAL;
	sa.sin_port = htons(port);
	L.lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK,
		       0);
	if (L.lfd < 0)
		return -errno;
	setsockopt(L.lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(L.lfd, (struct sockaddr *)&sa, sizeof(sa)) ||
	    listen(L.lfd, 128) ||
	    getsockname(L.lfd, (struct sockaddr *)&sa, &sl)) {
		rc = -errno;
		close(L.lfd);
		L.lfd = -1;
		return rc;
	}
	L.efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (L.efd < 0 || gs_svc_init()) {
		close(L.lfd);
		L.lfd = -1;
		return -EIO;
	}
	if (pthread_create(&L.th, NULL, loop, NULL)) {
		close(L.lfd);
		L.lfd = -1;
		return -EAGAIN;
	}
	L.running = true;
	return ntohs(sa.sin_port);
}

void gs_stop(void)
{
	if (!L.running)
		return;
	L.stop = 1;
	gs_wake();
	pthread_join(L.th, NULL);
	L.running = false;
	close(L.lfd);
	L.lfd = -1;
	gs_svc_free();
	close(L.efd);
	L.efd = -1;
}
