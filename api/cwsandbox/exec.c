/* exec.c - commands over StreamExec, as the SDKs drive it: `init`, wait
 * for `ready`, stdin in messages of at most 64 KiB, `close` at EOF, then
 * the end of the request stream; `output` frames by stream, one `exit`
 * (or `error`), OK trailers.
 *
 * The argv runs as
 *     /bin/sh -c 'echo $$ >&2; [cd -- "$1" || exit 1; shift;] exec "$@"'
 *         sh [CWD] ARGV...
 * so that no quoting is involved, cwd is honoured (the API has no cwd
 * field) and the first stderr line is the command's PID inside the
 * sandbox (stripped here): `kill` sends the signal with a unary Exec of
 * `kill` (the API has no signal RPC), to the process group when the
 * command leads one.
 *
 * Lifetime: the caller owns x until exec_free.  Everything runs on the
 * service thread; exec_free from another thread waits there until the
 * loop has let go, so no callback runs after it returns.  x is freed once
 * it is freed by the caller, its call has ended and no callback of it is
 * running.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/rfile.h"
#include "api/cwsandbox/cw_int.h"
#include "sandbox.pb-c.h"

#define CHUNK 65536		/* the SDKs' STDIN_CHUNK_SIZE */
#define WRAP "echo $$ >&2; exec \"$@\""
#define WRAP_CWD "echo $$ >&2; cd -- \"$1\" || exit 1; shift; exec \"$@\""

struct wr {			/* one exec_write */
	struct cw_work wk;
	struct wr *next;	/* x->writes: not yet taken */
	struct api_exec *x;
	api_done_fn cb;
	void *ud;
	size_t len;
	uint8_t data[];
};

struct api_exec {
	struct api_exec *next;	/* w->execs */
	struct cw *w;
	struct api_exec_cbs cbs;
	void *ud;
	char id[API_ID_MAX];
	char **argv;		/* the wrapped argv */
	char **env;		/* "K=V" */
	bool tty, want_stdin;

	struct cw_call *call;
	bool ready, started_sent, exited_sent, got_exit;
	bool eof_want, eof_sent, freed;
	int in_cb;
	int code;
	char emsg[512];
	struct wr *pend;	/* writes before `ready` */
	struct wr *writes;	/* sent, not yet taken */
	int pid;		/* atomic; 0 until known */
	char pidl[24];
	size_t pidn;
	bool pid_done;
	uint8_t *early;		/* stdout before the PID line (rare) */
	size_t nearly;
	struct cw_work wk_start;
	bool synced;	 /* queued small files landed before the start */
	bool sync_wait;	 /* waiting for them: x must stay */
	/* `ready` and the PID must come within the operation's bound */
	struct cw_timer start_tm;
	bool start_late;
};

static void strv_free(char **v)
{
	size_t i;

	for (i = 0; v && v[i]; i++)
		free(v[i]);
	free(v);
}

static void x_free_now(struct cw *w, struct api_exec *x)
{
	struct api_exec **pp;
	struct wr *q;

	cw_timer_cancel(w, &x->start_tm);
	for (pp = &w->execs; *pp; pp = &(*pp)->next)
		if (*pp == x) {
			*pp = x->next;
			break;
		}
	while ((q = x->pend)) {
		x->pend = q->next;
		free(q);
	}
	while ((q = x->writes)) {
		x->writes = q->next;
		free(q);
	}
	strv_free(x->argv);
	strv_free(x->env);
	free(x->early);
	free(x);
}

/* Free x when nothing refers to it any more; true when it is gone. */
static bool maybe_free(struct cw *w, struct api_exec *x)
{
	if (!x->freed || x->call || x->in_cb || x->sync_wait)
		return false;
	x_free_now(w, x);
	return true;
}

/* ---- callbacks to the caller (service thread) ---------------------------- */

static void say_started(struct api_exec *x, int err, const char *msg)
{
	if (x->started_sent || x->freed)
		return;
	x->started_sent = true;
	if (err)
		x->exited_sent = true;	/* nothing follows a failed start */
	x->in_cb++;
	x->cbs.started(x->ud, err, msg);
	x->in_cb--;
}

static void say_exited(struct api_exec *x, int code, int err,
		       const char *msg)
{
	if (x->exited_sent || x->freed)
		return;
	x->exited_sent = true;
	x->in_cb++;
	x->cbs.exited(x->ud, code, err, msg);
	x->in_cb--;
}

/* Fail writes that will never be taken. */
static void fail_writes(struct api_exec *x)
{
	struct wr *q;

	while ((q = x->pend) || (q = x->writes)) {
		if (q == x->pend)
			x->pend = q->next;
		else
			x->writes = q->next;
		if (!x->freed) {
			x->in_cb++;
			q->cb(q->ud, -EPIPE, "the command's stdin is closed");
			x->in_cb--;
		}
		free(q);
	}
}

/* ---- the stream ---------------------------------------------------------------- */

static void send_write(struct cw *w, struct api_exec *x, struct wr *q)
{
	Coreweave__Sandbox__V1__ExecStreamRequest r =
		COREWEAVE__SANDBOX__V1__EXEC_STREAM_REQUEST__INIT;
	size_t off = 0, n;
	int err = 0;

	r.message_case =
		COREWEAVE__SANDBOX__V1__EXEC_STREAM_REQUEST__MESSAGE_STDIN;
	while (!err && off < q->len) {
		n = q->len - off < CHUNK ? q->len - off : CHUNK;
		r.stdin.data = q->data + off;
		r.stdin.len = n;
		off += n;
		/* the caller hears back when the last piece was taken */
		err = cw_stream_send(w, x->call, &r.base,
				     off == q->len ? q : NULL);
	}
	if (err || !q->len) {
		if (!x->freed) {
			x->in_cb++;
			q->cb(q->ud, err, err ? "cannot send stdin" : NULL);
			x->in_cb--;
		}
		free(q);
		return;
	}
	q->next = x->writes;
	x->writes = q;
}

static void send_eof(struct cw *w, struct api_exec *x)
{
	Coreweave__Sandbox__V1__ExecStreamRequest r =
		COREWEAVE__SANDBOX__V1__EXEC_STREAM_REQUEST__INIT;
	Coreweave__Sandbox__V1__ExecStreamClose cl =
		COREWEAVE__SANDBOX__V1__EXEC_STREAM_CLOSE__INIT;

	if (x->eof_sent || !x->call)
		return;
	x->eof_sent = true;
	r.message_case =
		COREWEAVE__SANDBOX__V1__EXEC_STREAM_REQUEST__MESSAGE_CLOSE;
	r.close = &cl;
	cw_stream_send(w, x->call, &r.base, NULL);
	cw_stream_close_send(w, x->call);
}

static void on_taken(struct cw *w, void *ud, void *tag)
{
	struct api_exec *x = ud;
	struct wr *q = tag, **pp;

	(void)w;
	for (pp = &x->writes; *pp; pp = &(*pp)->next)
		if (*pp == q) {
			*pp = q->next;
			break;
		}
	if (!x->freed) {
		x->in_cb++;
		q->cb(q->ud, 0, NULL);
		x->in_cb--;
	}
	free(q);
}

/* The command counts as started once `ready` came and (without a TTY)
 * the wrapper told its PID, so that kill works from the first moment. */
static int maybe_started(struct api_exec *x)
{
	int pause = 0;

	if (x->started_sent || !x->ready || (!x->tty && !x->pid_done))
		return 0;
	say_started(x, 0, NULL);
	if (x->nearly && !x->freed) {
		x->in_cb++;
		pause = x->cbs.output(x->ud, 1, x->early, x->nearly);
		x->in_cb--;
	}
	free(x->early);
	x->early = NULL;
	x->nearly = 0;
	return pause;
}

/* stderr: the first line is the PID from the wrapper */
static int out_stderr(struct api_exec *x, const uint8_t *p, size_t n)
{
	size_t i = 0;
	int pause = 0;

	while (!x->pid_done && i < n) {
		char ch = p[i++];

		if (ch == '\n' || x->pidn + 1 >= sizeof(x->pidl)) {
			x->pidl[x->pidn] = '\0';
			__atomic_store_n(&x->pid, atoi(x->pidl),
					 __ATOMIC_RELEASE);
			x->pid_done = true;
			pause = maybe_started(x);
		} else {
			x->pidl[x->pidn++] = ch;
		}
	}
	if (i == n || x->freed)
		return pause;
	return x->cbs.output(x->ud, 2, p + i, n - i) || pause;
}

static int on_msg(struct cw *w, void *ud, const uint8_t *m, size_t len)
{
	struct api_exec *x = ud;
	Coreweave__Sandbox__V1__ExecStreamResponse *r =
		coreweave__sandbox__v1__exec_stream_response__unpack(NULL,
								     len, m);
	int pause = 0;
	struct wr *q;

	if (!r || x->freed)
		goto out;
	switch (r->message_case) {
	case COREWEAVE__SANDBOX__V1__EXEC_STREAM_RESPONSE__MESSAGE_READY:
		if (x->ready)
			break;
		x->ready = true;
		pause = maybe_started(x);
		while (!x->freed && (q = x->pend)) {
			x->pend = q->next;
			send_write(w, x, q);
		}
		if (!x->freed && x->eof_want)
			send_eof(w, x);
		break;
	case COREWEAVE__SANDBOX__V1__EXEC_STREAM_RESPONSE__MESSAGE_OUTPUT: {
		const ProtobufCBinaryData *d = &r->output->data;
		bool err = r->output->stream ==
		   COREWEAVE__SANDBOX__V1__EXEC_STREAM_OUTPUT__STREAM__STREAM_STDERR;

		if (!d->len)
			break;
		if (!err && !x->started_sent) {
			/* stdout overtook the PID line: keep it (bounded) */
			uint8_t *nb = x->nearly + d->len <= (1u << 20) ?
				realloc(x->early, x->nearly + d->len) : NULL;

			if (nb) {
				if (d->len)
					memcpy(nb + x->nearly, d->data,
					       d->len);
				x->early = nb;
				x->nearly += d->len;
			}
			break;
		}
		x->in_cb++;
		if (err && !x->tty)
			pause = out_stderr(x, d->data, d->len);
		else
			pause = x->cbs.output(x->ud, 1, d->data, d->len);
		x->in_cb--;
		break;
	}
	case COREWEAVE__SANDBOX__V1__EXEC_STREAM_RESPONSE__MESSAGE_EXIT:
		x->got_exit = true;
		x->code = r->exit->exit_code;
		if (x->code < 0)	/* a platform's "killed by signal" */
			x->code = 128 + (-x->code > 127 ? 127 : -x->code);
		else if (x->code > 255)
			x->code &= 255;
		break;
	case COREWEAVE__SANDBOX__V1__EXEC_STREAM_RESPONSE__MESSAGE_ERROR:
		snprintf(x->emsg, sizeof(x->emsg), "command stream: %s (%s)",
			 r->error->message, r->error->code);
		break;
	default:
		break;		/* unknown: skip */
	}
out:
	if (r)
		coreweave__sandbox__v1__exec_stream_response__free_unpacked(r,
									     NULL);
	return x->freed ? 0 : pause;
}

static void on_end(struct cw *w, void *ud, const struct cw_status *st)
{
	struct api_exec *x = ud;

	x->call = NULL;
	cw_timer_cancel(w, &x->start_tm);
	fail_writes(x);
	if (!x->started_sent && x->ready && (x->got_exit || x->emsg[0])) {
		x->pid_done = true;	/* ended before it told its PID */
		maybe_started(x);
	}
	if (!x->started_sent && x->start_late) {
		say_started(x, -ETIMEDOUT, "the command did not start within "
			    "the request timeout (no `ready` from the "
			    "platform)");
	} else if (!x->started_sent) {
		say_started(x, st->err ? st->err : -EIO,
			    st->err ? st->msg :
			    "the command stream ended before `ready`");
	} else if (x->got_exit) {
		say_exited(x, x->code, 0, NULL);
	} else if (x->emsg[0]) {
		say_exited(x, -1, -EIO, x->emsg);
	} else {
		say_exited(x, -1, st->err ? st->err : -EIO, st->err ? st->msg :
			   "the command stream ended without an exit status");
	}
	maybe_free(w, x);
}

static const struct cw_stream_cbs stream_cbs = { on_msg, on_end, on_taken };

static void start_late(struct cw *w, struct cw_timer *t)
{
	struct api_exec *x = (struct api_exec *)((char *)t -
		offsetof(struct api_exec, start_tm));

	if (x->started_sent || !x->call)
		return;
	x->start_late = true;
	cw_stream_cancel(w, x->call);	/* on_end says started(ETIMEDOUT) */
}

static void start_run(struct cw *w, struct cw_work *wk);
static void start_run_now(struct cw *w, struct api_exec *x);

static void start_synced_run(struct cw *w, struct cw_work *wk)
{
	struct api_exec *x = (struct api_exec *)((char *)wk -
		offsetof(struct api_exec, wk_start));

	x->sync_wait = false;
	start_run(w, wk);
}

/* (the remote-file layer's thread) the sandbox's queued files landed */
static void start_synced(void *ud)
{
	struct api_exec *x = ud;

	cw_post(x->w, &x->wk_start, start_synced_run);
}

static void start_run(struct cw *w, struct cw_work *wk)
{
	struct api_exec *x = (struct api_exec *)((char *)wk -
		offsetof(struct api_exec, wk_start));

	/* the command sees our writes: small files still queued for the
	 * sandbox land first (x is kept meanwhile: sync_wait) */
	if (!x->synced) {
		x->synced = true;
		if (!x->freed && w->be->rf) {
			x->sync_wait = true;
			if (api_rfile_sync(w->be->rf, x->id, start_synced, x))
				return;
			x->sync_wait = false;
		}
	}
	start_run_now(w, x);
}

static void start_run_now(struct cw *w, struct api_exec *x)
{
	Coreweave__Sandbox__V1__ExecStreamRequest r =
		COREWEAVE__SANDBOX__V1__EXEC_STREAM_REQUEST__INIT;
	Coreweave__Sandbox__V1__ExecStreamInit in =
		COREWEAVE__SANDBOX__V1__EXEC_STREAM_INIT__INIT;
	Coreweave__Sandbox__V1__ExecStreamInit__EnvEntry *ep = NULL, **epp = NULL;
	size_t n = 0, i;
	int err;

	x->next = w->execs;
	w->execs = x;
	if (x->freed) {
		maybe_free(w, x);
		return;
	}
	if (cw_is_gone(w, x->id)) {
		say_started(x, -ENOENT, "no such sandbox (destroyed)");
		maybe_free(w, x);
		return;
	}
	x->call = cw_stream_open(w, "StreamExec", &stream_cbs, x, &err);
	if (!x->call) {
		say_started(x, err, "cannot open the command stream");
		maybe_free(w, x);
		return;
	}
	cw_timer_arm(w, &x->start_tm, cw_op_left(w, w->timeout_ms),
		     start_late);
	while (x->argv[n])
		n++;
	in.sandbox_id = x->id;
	in.n_command = n;
	in.command = x->argv;
	in.tty = x->tty;
	for (n = 0; x->env && x->env[n]; n++)
		;
	if (n) {
		ep = calloc(n, sizeof(*ep));
		epp = calloc(n, sizeof(*epp));
		for (i = 0; ep && epp && i < n; i++) {
			char *eq = strchr(x->env[i], '=');

			coreweave__sandbox__v1__exec_stream_init__env_entry__init(&ep[i]);
			if (eq)
				*eq = '\0';
			ep[i].key = x->env[i];
			ep[i].value = eq ? eq + 1 : "";
			epp[i] = &ep[i];
		}
		if (ep && epp) {
			in.n_env = n;
			in.env = epp;
		}
	}
	r.message_case =
		COREWEAVE__SANDBOX__V1__EXEC_STREAM_REQUEST__MESSAGE_INIT;
	r.init = &in;
	err = cw_stream_send(w, x->call, &r.base, NULL);
	/* restore "K=V" (packed already) */
	for (i = 0; ep && i < in.n_env; i++)
		ep[i].key[strlen(ep[i].key)] = '=';
	free(ep);
	free(epp);
	if (err) {
		cw_stream_cancel(w, x->call);	/* on_end says started(err) */
		return;
	}
	/* without stdin: end the request right after init (no `close`) */
	if (!x->want_stdin)
		cw_stream_close_send(w, x->call);
}

void cw_exec_start(struct api_backend *be, const char *id,
		   const struct api_exec_req *req,
		   const struct api_exec_cbs *cbs, void *ud,
		   struct api_exec **out)
{
	struct cw *w = cw_of(be);
	struct api_exec *x = calloc(1, sizeof(*x));
	size_t n = 0, i, k = 0, ne = 0;

	*out = NULL;
	while (req->argv && req->argv[n])
		n++;
	while (req->env && req->env[ne])
		ne++;
	if (!x || !n)
		goto fail;
	x->w = w;
	x->cbs = *cbs;
	x->ud = ud;
	x->tty = req->tty;
	x->want_stdin = req->want_stdin;
	snprintf(x->id, sizeof(x->id), "%s", id);
	x->argv = calloc(n + 6, sizeof(*x->argv));
	x->env = calloc(ne + 1, sizeof(*x->env));
	if (!x->argv || !x->env)
		goto fail;
	if (x->tty) {
		/* a TTY merges the streams: no PID line */
		for (i = 0; i < n; i++)
			x->argv[k++] = strdup(req->argv[i]);
	} else {
		x->argv[k++] = strdup("/bin/sh");
		x->argv[k++] = strdup("-c");
		x->argv[k++] = strdup(req->cwd ? WRAP_CWD : WRAP);
		x->argv[k++] = strdup("sh");
		if (req->cwd)
			x->argv[k++] = strdup(req->cwd);
		for (i = 0; i < n; i++)
			x->argv[k++] = strdup(req->argv[i]);
	}
	for (i = 0; i < ne; i++)
		x->env[i] = strdup(req->env[i]);
	for (i = 0; i < k; i++)
		if (!x->argv[i])
			goto fail;
	for (i = 0; i < ne; i++)
		if (!x->env[i])
			goto fail;
	*out = x;
	cw_post(w, &x->wk_start, start_run);
	return;
fail:
	if (x) {
		strv_free(x->argv);
		strv_free(x->env);
		free(x);
	}
	cbs->started(ud, n ? -ENOMEM : -EINVAL, n ? NULL : "empty command");
}

/* ---- stdin --------------------------------------------------------------------- */

static void write_run(struct cw *w, struct cw_work *wk)
{
	struct wr *q = (struct wr *)wk;
	struct api_exec *x = q->x;

	if (x->freed || !x->call || x->eof_want || x->exited_sent) {
		if (!x->freed)
			q->cb(q->ud, -EPIPE, "the command's stdin is closed");
		free(q);
		return;
	}
	if (!x->ready) {
		struct wr **pp = &x->pend;

		while (*pp)
			pp = &(*pp)->next;
		q->next = NULL;
		*pp = q;
		return;
	}
	send_write(w, x, q);
}

void cw_exec_write(struct api_backend *be, struct api_exec *x,
		   const void *buf, size_t len, api_done_fn cb, void *ud)
{
	struct wr *q = malloc(sizeof(*q) + len);

	if (!q) {
		cb(ud, -ENOMEM, NULL);
		return;
	}
	q->x = x;
	q->cb = cb;
	q->ud = ud;
	q->len = len;
	q->next = NULL;
	if (len)
		memcpy(q->data, buf, len);
	cw_post(cw_of(be), &q->wk, write_run);
}

struct xop {
	struct cw_work wk;
	struct api_exec *x;
	int sig;
};

static void close_run(struct cw *w, struct cw_work *wk)
{
	struct xop *o = (struct xop *)wk;
	struct api_exec *x = o->x;

	free(o);
	if (x->freed || x->eof_want)
		return;
	x->eof_want = true;
	/* after the queued writes: they were posted before us */
	if (x->ready && x->call && !x->pend)
		send_eof(w, x);
}

void cw_exec_close_stdin(struct api_backend *be, struct api_exec *x)
{
	struct xop *o = calloc(1, sizeof(*o));

	if (!o)
		return;
	o->x = x;
	cw_post(cw_of(be), &o->wk, close_run);
}

static void resume_run(struct cw *w, struct cw_work *wk)
{
	struct xop *o = (struct xop *)wk;
	struct api_exec *x = o->x;

	free(o);
	if (!x->freed && x->call)
		cw_stream_resume(w, x->call);
}

void cw_exec_resume(struct api_backend *be, struct api_exec *x)
{
	struct xop *o = calloc(1, sizeof(*o));

	if (!o)
		return;
	o->x = x;
	cw_post(cw_of(be), &o->wk, resume_run);
}

/* ---- signals --------------------------------------------------------------------- */

struct killop {
	struct cw_work wk;
	char id[API_ID_MAX];
	char sig[8], pid[16];
};

static void kill_done(struct cw *w, void *ud, const struct cw_status *st,
		      const uint8_t *resp, size_t len)
{
	(void)resp;
	(void)len;
	if (st->err && w->trace)
		fprintf(stderr, "sbxfs: cwsandbox: kill: %s\n", st->msg);
	free(ud);
}

static void kill_run(struct cw *w, struct cw_work *wk)
{
	struct killop *k = (struct killop *)wk;
	Coreweave__Sandbox__V1__ExecRequest q =
		COREWEAVE__SANDBOX__V1__EXEC_REQUEST__INIT;
	char *argv[] = { "/bin/sh", "-c",
		"kill -s \"$1\" -- \"-$2\" 2>/dev/null || kill -s \"$1\" "
		"\"$2\"", "sh", k->sig, k->pid };

	q.sandbox_id = k->id;
	q.command = argv;
	q.n_command = 6;
	if (cw_unary(w, "Exec", &q.base, w->timeout_ms, kill_done, k))
		free(k);
}

static int send_kill(struct cw *w, struct api_exec *x, int sig)
{
	struct killop *k;
	const char *name = sigabbrev_np(sig);
	int pid = __atomic_load_n(&x->pid, __ATOMIC_ACQUIRE);

	if (pid <= 1)
		return -ESRCH;
	if (!name)
		return -EINVAL;
	k = calloc(1, sizeof(*k));
	if (!k)
		return -ENOMEM;
	snprintf(k->id, sizeof(k->id), "%s", x->id);
	snprintf(k->sig, sizeof(k->sig), "%s", name);
	snprintf(k->pid, sizeof(k->pid), "%d", pid);
	cw_post(w, &k->wk, kill_run);
	return 0;
}

int cw_exec_signal(struct api_backend *be, struct api_exec *x, int sig)
{
	if (x->tty)
		return -EOPNOTSUPP;
	return send_kill(cw_of(be), x, sig);
}

int cw_exec_pid(struct api_backend *be, struct api_exec *x)
{
	int pid = __atomic_load_n(&x->pid, __ATOMIC_ACQUIRE);

	(void)be;
	return pid > 0 ? pid : -EAGAIN;
}

/* ---- free ------------------------------------------------------------------------- */

static void free_in_loop(struct cw *w, struct api_exec *x)
{
	x->freed = true;
	if (x->call) {
		if (!x->exited_sent)
			send_kill(w, x, SIGKILL);
		/* on_end runs (now, or when the transfer aborts) and frees
		 * x: it must not be touched after this */
		cw_stream_cancel(w, x->call);
		return;
	}
	maybe_free(w, x);
}

struct freeop {
	struct cw_work wk;
	struct api_exec *x;
	pthread_mutex_t m;
	pthread_cond_t c;
	bool done;
};

static void free_run(struct cw *w, struct cw_work *wk)
{
	struct freeop *f = (struct freeop *)wk;

	free_in_loop(w, f->x);
	pthread_mutex_lock(&f->m);
	f->done = true;
	pthread_cond_signal(&f->c);
	pthread_mutex_unlock(&f->m);
}

void cw_exec_free(struct api_backend *be, struct api_exec *x)
{
	struct cw *w = cw_of(be);
	struct freeop f = { .x = x, .done = false };

	if (!x)
		return;
	if (cw_in_loop(w)) {
		free_in_loop(w, x);
		return;
	}
	/* from another thread: the loop marks x freed (no callback runs
	 * after that) and lets go of it; wait until it did */
	pthread_mutex_init(&f.m, NULL);
	pthread_cond_init(&f.c, NULL);
	cw_post(w, &f.wk, free_run);
	pthread_mutex_lock(&f.m);
	while (!f.done)
		pthread_cond_wait(&f.c, &f.m);
	pthread_mutex_unlock(&f.m);
	pthread_mutex_destroy(&f.m);
	pthread_cond_destroy(&f.c);
}
