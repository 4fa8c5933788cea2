/* exec.c - commands in Wrenn capsules over the exec/stream WebSocket.
 *
 * The command runs under a small /bin/sh wrapper (cwd, env, and a parent
 * shell that turns a signal death into 128+N), started with
 * {"type":"start","cmd":"/bin/sh","args":["-c",WRAPPER,"sbxfs",argv...]}.
 * Server messages are JSON text that may come fragmented; after "exit" or
 * "error" the server drops TCP without a close frame (quirk 25): that is a
 * normal end then, and a lost command otherwise.
 *
 * Limits of the platform, stated honestly:
 *  - output "data" is the bytes as a lossy UTF-8 string (quirk 23): text
 *    is exact, bytes that are not valid UTF-8 arrive as U+FFFD;
 *  - there is no stdin on exec/stream: stdin is uploaded in numbered
 *    chunk files that a feeder in the capsule writes into a FIFO (see
 *    "stdin" below); the PTY endpoint drops input when its buffer is full
 *    and merges stdout with stderr, so tty is refused with EOPNOTSUPP;
 *  - signals go through a second (foreground) exec that signals the
 *    wrapper's descendants, found through /proc/PID/task/TID/children.
 *
 * Everything here runs on the service thread except exec_start (queues),
 * exec_resume/exec_signal (queue) and exec_free (queues, then waits until
 * the service thread has detached the exec, so no callback runs after it
 * returns).
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libwebsockets.h>

#include "api/wrenn/capsule.h"
#include "api/wrenn/errmap.h"
#include "api/wrenn/exec.h"
#include "api/wrenn/files.h"
#include "api/wrenn/http.h"

#define RX_MAX (4u << 20) /* one server message, JSON-escaped */

struct pend {
	struct pend *next;
	int stream; /* 1, 2; 0 = exit */
	size_t len;
	char data[];
};

struct api_exec {
	struct wrenn_work wk;	/* start */
	struct wrenn_work wk2;	/* resume / signal */
	struct wrenn_work wk3;	/* free */
	struct wrenn *w;
	struct api_exec *next;	/* w->execs list */
	char id[API_ID_MAX];
	char *start_msg;	/* JSON start message */
	struct api_exec_cbs cbs;
	void *ud;
	struct lws *wsi;
	struct wrenn_timer timer;
	char *rx;
	size_t rxlen;
	struct pend *phead, *ptail;
	long pid;		/* the wrapper shell */
	long cmd_pid;		/* the command (b64 mode) */
	int mode;		/* 0: no mode line yet, 1: b64, 2: raw,
				   3: hex */
	char *lbuf[3];		/* partial lines: stdout 1, stderr 2 */
	size_t llen[3];
	int exit_code;
	int sent_sig;
	int pend_sig;		/* signal requested from another thread */
	int wait_sig;		/* loop: signal waiting for the pid */
	bool established, start_sent;
	bool started;		/* started() ran */
	bool ended;		/* exited() ran (or started() with error) */
	bool got_exit;
	bool paused;
	bool detached;		/* exec_free ran: no callbacks; free */
	bool resume_req;
	bool in_cb;
	int hold;		/* >0: a caller up the stack still uses x */
	bool kept;
	/* stdin: in_buf, in_len, d_*, in_closed, in_err under lock */
	bool want_in;
	char in_dir[128];
	char *in_buf;
	size_t in_len;
	char *d_buf;		/* a write that did not fit yet */
	size_t d_len;
	api_done_fn d_cb;
	void *d_ud;
	bool d_has, in_closed;
	int in_err;
	bool in_busy, in_eof_done; /* loop only */
	unsigned in_seq;
	char *in_chunk;
	size_t in_chunk_len;
	pthread_mutex_t lock;	/* pend_sig, resume_req, stdin */
	struct free_sync *fsync; /* exec_free's waiter */
};

/* Lives on exec_free's stack: the service thread signals it and never
 * touches it again, so x can be released right after. */
struct free_sync {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool done;
};

#define XS(w) ((w)->execs)

/* ---- the wrapper script ------------------------------------------------- */

static bool env_name_ok(const char *s, size_t n)
{
	size_t i;

	if (!n || (s[0] >= '0' && s[0] <= '9'))
		return false;
	for (i = 0; i < n; i++)
		if (!(s[i] == '_' || (s[i] >= 'a' && s[i] <= 'z') ||
		      (s[i] >= 'A' && s[i] <= 'Z') ||
		      (s[i] >= '0' && s[i] <= '9')))
			return false;
	return true;
}

static int sbuf_add(char **buf, size_t *len, size_t *cap, const char *s)
{
	size_t n = strlen(s);
	char *p;

	if (*len + n + 1 > *cap) {
		size_t c = *cap ? *cap * 2 : 256;

		while (c < *len + n + 1)
			c *= 2;
		p = realloc(*buf, c);
		if (!p)
			return -ENOMEM;
		*buf = p;
		*cap = c;
	}
	memcpy(*buf + *len, s, n + 1);
	*len += n;
	return 0;
}

/* The encoders: one text line per read of the command's output, short
 * enough (4001 bytes) to be one atomic pipe write, so it never interleaves
 * with the "sbxfs:pid:" line.  perl (Essential on Debian) writes hex;
 * dd + base64 is the slower fallback; with neither the output goes raw
 * (lossy).  The first stdout line names the mode. */
static const char wrap_head[] =
	"if command -v perl >/dev/null 2>&1; then M=hex; "
	"E() { perl -e '$|=1;while(sysread(STDIN,$b,2000))"
	"{print unpack(\"H*\",$b),\"\\n\"}'; }; "
	"elif command -v base64 >/dev/null 2>&1 && "
	"command -v dd >/dev/null 2>&1; then M=b64; "
	"E() { while c=$(dd bs=3000 count=1 2>/dev/null | base64 | "
	"tr -d '\\n'); [ -n \"$c\" ]; do printf '%s\\n' \"$c\"; done; }; "
	"else printf 'sbxfs:raw\\n'; ";

/* stdout and stderr each through their own encoder; the command's
 * status comes back through fd 5 of a command substitution.  fd 8 is its
 * stdin (the feeder's FIFO, or /dev/null).  The command runs in the
 * foreground (an `&` job would ignore SIGINT) of a shell that reports its
 * pid, applies cwd and env ($P, so that a failing cd is reported through
 * the encoders) and then execs it. */
static const char wrap_b64[] =
	"printf 'sbxfs:%s\\n' $M; exec 6>&1; "
	"rc=$( { { { /bin/sh -c 'echo \"sbxfs:pid:$$\" >&6; eval \"$1\"; "
	"shift; exec \"$@\" 6>&-' sbxfs \"$P\" \"$@\" 0<&8 8<&- 5>&- 7>&-; "
	"echo $? >&5; } "
	"2>&1 1>&7 | E 5>&- 6>&- 7>&- 8<&- >&2; } 7>&1 | "
	"E 5>&- 6>&- 7>&- 8<&-; } 5>&1 1>&6 ); ";

/* stdin: exec/stream has none, so the client uploads numbered chunk
 * files into D (D/N, then an empty D/N.ok once D/N is complete, and
 * D/N.eof at the end) and a feeder loop in the capsule cats them in order
 * into a FIFO that is the command's stdin.  Byte-exact, ordered, with a
 * real EOF; the price is a poll (50 ms) per chunk. */
static const char wrap_in[] =
	"mkdir -p \"$D\" && rm -f \"$D/f\" && mkfifo \"$D/f\" || exit 125; "
	"( i=0; while :; do while [ ! -e \"$D/$i.ok\" ]; do "
	"[ -e \"$D/$i.eof\" ] && exit 0; "
	"sleep 0.05 2>/dev/null || sleep 1; done; cat \"$D/$i\"; "
	"rm -f \"$D/$i\" \"$D/$i.ok\"; i=$((i+1)); done ) "
	"> \"$D/f\" 2>/dev/null & F=$!; exec 8< \"$D/f\"; ";

static int script_build(const struct api_exec_req *req, const char *indir,
			char **out)
{
	char *envp = NULL, *inp = NULL, *buf = NULL, *q;
	size_t len = 0, cap = 0, elen = 0, ecap = 0, ilen = 0, icap = 0, i;
	const char *clean;
	int e = sbuf_add(&envp, &elen, &ecap, "");

	if (!e && req->cwd && req->cwd[0]) {
		q = api_shell_quote(req->cwd);
		e = q ? sbuf_add(&envp, &elen, &ecap, "cd -- ") : -ENOMEM;
		if (!e)
			e = sbuf_add(&envp, &elen, &ecap, q);
		if (!e)
			e = sbuf_add(&envp, &elen, &ecap, " || exit 126; ");
		free(q);
	}
	for (i = 0; !e && req->env && req->env[i]; i++) {
		const char *eq = strchr(req->env[i], '=');

		if (!eq || !env_name_ok(req->env[i],
					(size_t)(eq - req->env[i]))) {
			e = -EINVAL;
			break;
		}
		q = api_shell_quote(req->env[i]);
		e = q ? sbuf_add(&envp, &elen, &ecap, "export ") : -ENOMEM;
		if (!e)
			e = sbuf_add(&envp, &elen, &ecap, q);
		if (!e)
			e = sbuf_add(&envp, &elen, &ecap, "; ");
		free(q);
	}
	if (!e && indir) {
		q = api_shell_quote(indir);
		e = q ? sbuf_add(&inp, &ilen, &icap, "D=") : -ENOMEM;
		if (!e)
			e = sbuf_add(&inp, &ilen, &icap, q);
		if (!e)
			e = sbuf_add(&inp, &ilen, &icap, "; ");
		if (!e)
			e = sbuf_add(&inp, &ilen, &icap, wrap_in);
		free(q);
	} else if (!e) {
		e = sbuf_add(&inp, &ilen, &icap, "exec 8</dev/null; ");
	}
	clean = indir ? "kill $F 2>/dev/null; rm -rf \"$D\"; " : "";
	q = e ? NULL : api_shell_quote(envp);
	if (!e && !q)
		e = -ENOMEM;
	if (!e)
		e = sbuf_add(&buf, &len, &cap, "P=");
	if (!e)
		e = sbuf_add(&buf, &len, &cap, q);
	free(q);
	if (!e)
		e = sbuf_add(&buf, &len, &cap, "; ");
	if (!e)
		e = sbuf_add(&buf, &len, &cap, wrap_head);
	/* raw fallback: the shell stays the parent so that a signal death
	 * is reported as 128+N (Wrenn itself says -1) */
	if (!e)
		e = sbuf_add(&buf, &len, &cap, "eval \"$P\"; ");
	if (!e)
		e = sbuf_add(&buf, &len, &cap, inp);
	if (!e)
		e = sbuf_add(&buf, &len, &cap, "\"$@\" 0<&8 8<&-; rc=$?; ");
	if (!e)
		e = sbuf_add(&buf, &len, &cap, clean);
	if (!e)
		e = sbuf_add(&buf, &len, &cap, "exit $rc; fi; ");
	if (!e)
		e = sbuf_add(&buf, &len, &cap, inp);
	if (!e)
		e = sbuf_add(&buf, &len, &cap, wrap_b64);
	if (!e)
		e = sbuf_add(&buf, &len, &cap, clean);
	if (!e)
		e = sbuf_add(&buf, &len, &cap, "exit \"$rc\"");
	free(envp);
	free(inp);
	if (e) {
		free(buf);
		return e;
	}
	*out = buf;
	return 0;
}

/* The wrapper for req, with stdin chunks expected in indir when
 * req->want_stdin.  Exported for the unit tests. */
char *wrenn_exec_script(const struct api_exec_req *req, const char *indir,
			int *err)
{
	char *s = NULL;

	*err = script_build(req, req->want_stdin ? indir : NULL, &s);
	return s;
}

static char *start_message(const struct api_exec_req *req,
			   const char *indir, int *err)
{
	char *script = wrenn_exec_script(req, indir, err), *txt;
	cJSON *j, *args;
	size_t i;

	if (!script)
		return NULL;
	j = cJSON_CreateObject();
	cJSON_AddStringToObject(j, "type", "start");
	cJSON_AddStringToObject(j, "cmd", "/bin/sh");
	args = cJSON_AddArrayToObject(j, "args");
	cJSON_AddItemToArray(args, cJSON_CreateString("-c"));
	cJSON_AddItemToArray(args, cJSON_CreateString(script));
	cJSON_AddItemToArray(args, cJSON_CreateString("sbxfs"));
	for (i = 0; req->argv[i]; i++)
		cJSON_AddItemToArray(args, cJSON_CreateString(req->argv[i]));
	txt = args ? cJSON_PrintUnformatted(j) : NULL;
	cJSON_Delete(j);
	free(script);
	if (!txt)
		*err = -ENOMEM;
	return txt;
}

/* ---- lifetime ----------------------------------------------------------- */

static void x_unlist(struct api_exec *x)
{
	struct api_exec **pp;

	for (pp = &XS(x->w); *pp; pp = &(*pp)->next)
		if (*pp == x) {
			*pp = x->next;
			break;
		}
}

static void x_release(struct api_exec *x)
{
	struct pend *p;

	wrenn_timer_cancel(x->w, &x->timer);
	x_unlist(x);
	while ((p = x->phead)) {
		x->phead = p->next;
		free(p);
	}
	free(x->rx);
	free(x->in_buf);
	free(x->in_chunk);
	free(x->d_buf);
	free(x->lbuf[1]);
	free(x->lbuf[2]);
	free(x->start_msg);
	pthread_mutex_destroy(&x->lock);
	free(x);
}

/* Free when nothing refers to x any more. */
static void x_maybe_release(struct api_exec *x)
{
	if (x->detached && !x->wsi && !x->in_cb && !x->hold)
		x_release(x);
}

static void x_close(struct api_exec *x)
{
	if (x->wsi)
		lws_set_timeout(x->wsi, PENDING_TIMEOUT_USER_REASON_BASE,
				LWS_TO_KILL_ASYNC);
}

static void x_unkeep(struct api_exec *x)
{
	if (x->kept) {
		x->kept = false;
		wrenn_keep_put(x->w, x->id);
	}
}

/* The end: exactly one of started(err) or exited() closes the story. */
static void x_end(struct api_exec *x, int code, int err, const char *msg)
{
	if (x->ended)
		return;
	x->ended = true;
	x_unkeep(x);
	/* a command may have changed any file: forget cached listings */
	wrenn_dcache_drop(x->w, x->id, NULL);
	wrenn_timer_cancel(x->w, &x->timer);
	if (x->detached)
		return;
	x->in_cb = true;
	if (!x->started)
		x->cbs.started(x->ud, err ? err : -EIO,
			       msg ? msg : "wrenn: exec failed");
	else
		x->cbs.exited(x->ud, code, err, err ? msg : NULL);
	x->in_cb = false;
}

/* ---- signals ------------------------------------------------------------ */

static void sig_done(void *ud, int err, const char *msg, int code,
		     const char *out)
{
	(void)ud;
	(void)code;
	(void)out;
	if (err)
		api_log("wrenn: signal delivery failed: %s",
			msg);
}

/* Signal pid's descendants (and pid itself when self): the tree is
 * collected first and signalled in one kill, so a parent cannot run on
 * (e.g. to `echo`) between its children's death and its own. */
static void x_kill(struct wrenn *w, const char *id, long pid, int sig,
		   bool self)
{
	char script[512], me[32] = "";

	if (self)
		snprintf(me, sizeof(me), "%ld ", pid);
	snprintf(script, sizeof(script),
		 "k() { for c in $(cat /proc/$1/task/*/children "
		 "2>/dev/null); do echo $c; k $c; done; }; "
		 "p=$(k %ld); kill -%d %s$p 2>/dev/null; exit 0",
		 pid, sig, me);
	wrenn_sh(w, id, script, sig_done, NULL);
}

/* Signal the command: its own tree when its pid is known (b64 mode), the
 * wrapper's descendants in raw mode; otherwise keep it pending until the
 * pid line arrives. */
static void x_signal(struct api_exec *x, int sig)
{
	if (x->cmd_pid > 0) {
		x->sent_sig = sig;
		x_kill(x->w, x->id, x->cmd_pid, sig, true);
	} else if (x->mode == 2 && x->pid > 0) {
		x->sent_sig = sig;
		x_kill(x->w, x->id, x->pid, sig, false);
	} else {
		x->wait_sig = sig;
	}
}

static void kill_done(void *ud, int err, const char *msg,
		      const struct wrenn_resp *r)
{
	(void)ud;
	(void)r;
	/* ENOENT: the process ended on its own meanwhile */
	if (err && err != -ENOENT)
		api_log("wrenn: kill failed: %s", msg);
}

/* ---- messages ----------------------------------------------------------- */

static void deliver(struct api_exec *x);

static int queue_pend(struct api_exec *x, int stream, const char *data,
		      size_t len)
{
	struct pend *p = malloc(sizeof(*p) + len);

	if (!p)
		return -ENOMEM;
	p->next = NULL;
	p->stream = stream;
	p->len = len;
	memcpy(p->data, data, len);
	if (x->ptail)
		x->ptail->next = p;
	else
		x->phead = p;
	x->ptail = p;
	return 0;
}

static int exit_code_of(struct api_exec *x, int code)
{
	if (code >= 0 && code <= 255)
		return code;
	/* -1: killed by a signal the platform does not name */
	return 128 + (x->sent_sig > 0 ? x->sent_sig : SIGKILL);
}

/* Hand queued output (and the exit) to the caller while it accepts. */
static void deliver(struct api_exec *x)
{
	struct pend *p;
	int r;

	while (!x->paused && (p = x->phead)) {
		x->phead = p->next;
		if (!x->phead)
			x->ptail = NULL;
		if (p->stream == 0) {
			free(p);
			x_end(x, exit_code_of(x, x->exit_code), 0, NULL);
			x_close(x);
			return;
		}
		r = 0;
		if (!x->detached && !x->ended) {
			x->in_cb = true;
			r = x->cbs.output(x->ud, p->stream, p->data, p->len);
			x->in_cb = false;
		}
		free(p);
		if (r == 1 && !x->detached) {
			x->paused = true;
			if (x->wsi)
				lws_rx_flow_control(x->wsi, 0);
		}
	}
}

#define LINE_MAX_B64 (64u << 10)

static int b64_val(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

static int hex_val(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Decode one hex line in place; returns the byte count or -1. */
static ssize_t hex_line(char *s, size_t n)
{
	size_t i;
	int hi, lo;

	if (n % 2)
		return -1;
	for (i = 0; i < n; i += 2) {
		hi = hex_val((unsigned char)s[i]);
		lo = hex_val((unsigned char)s[i + 1]);
		if (hi < 0 || lo < 0)
			return -1;
		s[i / 2] = (char)(hi << 4 | lo);
	}
	return (ssize_t)(n / 2);
}

/* Decode one base64 line in place; returns the byte count or -1. */
static ssize_t b64_line(char *s, size_t n)
{
	unsigned acc = 0;
	size_t i, o = 0;
	int bits = 0, v;

	for (i = 0; i < n; i++) {
		if (s[i] == '=')
			break;
		v = b64_val((unsigned char)s[i]);
		if (v < 0)
			return -1;
		acc = (acc << 6) | (unsigned)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			s[o++] = (char)((acc >> bits) & 0xff);
		}
	}
	return (ssize_t)o;
}

/* One complete line of stream st (without '\n'). */
static int take_line(struct api_exec *x, int st, char *line, size_t n)
{
	ssize_t got;

	if (x->mode == 0) {
		if (st != 1)
			return -EPROTO;
		if (n == 9 && !memcmp(line, "sbxfs:b64", 9))
			x->mode = 1;
		else if (n == 9 && !memcmp(line, "sbxfs:hex", 9))
			x->mode = 3;
		else if (n == 9 && !memcmp(line, "sbxfs:raw", 9))
			x->mode = 2;
		else
			return -EPROTO;
		if (x->mode == 2 && x->wait_sig) {
			int sig = x->wait_sig;

			x->wait_sig = 0;
			x_signal(x, sig);
		}
		return 0;
	}
	if (memchr(line, ':', n)) {
		/* control line; base64 never holds ':' */
		if (st == 1 && n > 10 && !memcmp(line, "sbxfs:pid:", 10)) {
			line[n] = '\0';
			x->cmd_pid = strtol(line + 10, NULL, 10);
			if (x->wait_sig) {
				int sig = x->wait_sig;

				x->wait_sig = 0;
				x_signal(x, sig);
			}
			return 0;
		}
		return -EPROTO;
	}
	got = x->mode == 3 ? hex_line(line, n) : b64_line(line, n);
	if (got < 0)
		return -EPROTO;
	return got ? queue_pend(x, st, line, (size_t)got) : 0;
}

/* Output text of one server message: split into lines, decode. */
static int take_output(struct api_exec *x, int st, const char *data,
		       size_t len)
{
	const char *nl;
	bool held;
	size_t n;
	char *b;
	int err;

	if (x->mode == 0 && st == 2) {
		/* stderr overtook the mode line: hold it raw until then */
		if (x->llen[2] + len > LINE_MAX_B64)
			return -EPROTO;
		b = realloc(x->lbuf[2], x->llen[2] + len + 1);
		if (!b)
			return -ENOMEM;
		x->lbuf[2] = b;
		memcpy(b + x->llen[2], data, len);
		x->llen[2] += len;
		return 0;
	}
	while (len) {
		if (x->mode == 2)
			return queue_pend(x, st, data, len);
		nl = memchr(data, '\n', len);
		n = nl ? (size_t)(nl - data) : len;
		if (x->llen[st] + n + 1 > LINE_MAX_B64)
			return -EPROTO;
		b = realloc(x->lbuf[st], x->llen[st] + n + 1);
		if (!b)
			return -ENOMEM;
		x->lbuf[st] = b;
		memcpy(b + x->llen[st], data, n);
		x->llen[st] += n;
		data += n;
		len -= n;
		if (!nl)
			break;
		data++;
		len--;
		n = x->llen[st];
		x->llen[st] = 0;
		held = x->mode == 0 && st == 1;
		err = take_line(x, st, b, n);
		if (err)
			return err;
		if (held && x->llen[2]) {
			/* the mode is known now: replay the held stderr */
			char *h = x->lbuf[2];
			size_t hl = x->llen[2];

			x->lbuf[2] = NULL;
			x->llen[2] = 0;
			err = take_output(x, 2, h, hl);
			free(h);
			if (err)
				return err;
		}
	}
	return 0;
}

static void on_message(struct api_exec *x)
{
	cJSON *j = cJSON_ParseWithLength(x->rx, x->rxlen);
	const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "type");
	const cJSON *d = cJSON_GetObjectItemCaseSensitive(j, "data");
	const char *type = cJSON_IsString(t) ? t->valuestring : "";
	const char *data = cJSON_IsString(d) ? d->valuestring : NULL;
	char msg[512];

	x->rxlen = 0;
	if (!j) {
		x_end(x, -1, -EPROTO, "wrenn: exec stream sent a message "
		      "that is not JSON");
		x_close(x);
		return;
	}
	if (!strcmp(type, "start") && !x->started) {
		const cJSON *pid = cJSON_GetObjectItemCaseSensitive(j, "pid");

		x->pid = cJSON_IsNumber(pid) ? (long)pid->valuedouble : 0;
		x->started = true;
		wrenn_timer_cancel(x->w, &x->timer);
		if (!x->detached) {
			x->in_cb = true;
			x->cbs.started(x->ud, 0, NULL);
			x->in_cb = false;
		}
		/* a signal asked for before start waits for the command's
		 * pid (b64 mode) */
	} else if ((!strcmp(type, "stdout") || !strcmp(type, "stderr")) &&
		   x->started) {
		/* "data" is omitted when empty (quirk 22) */
		int err = data && data[0] ?
				  take_output(x, type[3] == 'o' ? 1 : 2, data,
					      strlen(data)) :
				  0;

		if (err) {
			x_end(x, -1, err, err == -ENOMEM ?
			      "wrenn: out of memory" :
			      "wrenn: garbled output from the exec wrapper");
			x_close(x);
		}
		deliver(x);
	} else if (!strcmp(type, "exit")) {
		const cJSON *c = cJSON_GetObjectItemCaseSensitive(j,
								  "exit_code");

		x->got_exit = true;
		x->exit_code = cJSON_IsNumber(c) ? c->valueint : -1;
		if (!x->started) {
			/* tolerate a server that skips "start" */
			x->started = true;
			if (!x->detached) {
				x->in_cb = true;
				x->cbs.started(x->ud, 0, NULL);
				x->in_cb = false;
			}
		}
		queue_pend(x, 0, "", 0);
		deliver(x);
	} else if (!strcmp(type, "error")) {
		int err = wrenn_err_text(data, EIO);

		x->got_exit = true;
		snprintf(msg, sizeof(msg), "wrenn: %s",
			 data ? data : "exec failed");
		/* output already queued goes first */
		while (x->phead && !x->paused && !x->detached)
			deliver(x);
		x_end(x, -1, -err, msg);
		x_close(x);
	}
	/* "ping" and anything else: ignored */
	cJSON_Delete(j);
}

/* ---- libwebsockets ------------------------------------------------------ */

static int ws_cb(struct lws *wsi, enum lws_callback_reasons reason,
		 void *user, void *in, size_t len)
{
	struct api_exec *x = lws_get_opaque_user_data(wsi);
	unsigned char **p, *end;
	char msg[300];

	(void)user;
	if (!x)
		return 0;
	switch (reason) {
	case LWS_CALLBACK_CLIENT_APPEND_HANDSHAKE_HEADER:
		p = (unsigned char **)in;
		end = *p + len;
		/* the key goes in a header, never the URL (quirk 3) */
		if (lws_add_http_header_by_name(
			    wsi, (const unsigned char *)"x-api-key:",
			    (const unsigned char *)x->w->key,
			    (int)strlen(x->w->key), p, end))
			return -1;
		break;
	case LWS_CALLBACK_CLIENT_ESTABLISHED:
		x->established = true;
		lws_callback_on_writable(wsi);
		break;
	case LWS_CALLBACK_CLIENT_WRITEABLE:
		if (x->detached && !x->start_sent)
			return -1;
		if (!x->start_sent) {
			size_t n = strlen(x->start_msg);
			unsigned char *b = malloc(LWS_PRE + n);

			if (!b)
				return -1;
			memcpy(b + LWS_PRE, x->start_msg, n);
			x->start_sent = true;
			if (lws_write(wsi, b + LWS_PRE, n, LWS_WRITE_TEXT) <
			    (int)n) {
				free(b);
				return -1;
			}
			free(b);
		}
		break;
	case LWS_CALLBACK_CLIENT_RECEIVE:
		if (x->rxlen + len > RX_MAX) {
			x_end(x, -1, -EIO, "wrenn: exec stream message too "
			      "large");
			return -1;
		}
		if (len) {
			char *nb = realloc(x->rx, x->rxlen + len + 1);

			if (!nb) {
				x_end(x, -1, -ENOMEM, "wrenn: out of memory");
				return -1;
			}
			x->rx = nb;
			memcpy(x->rx + x->rxlen, in, len);
			x->rxlen += len;
		}
		/* fragments: one JSON object per complete message */
		if (lws_is_final_fragment(wsi) &&
		    !lws_remaining_packet_payload(wsi))
			on_message(x);
		break;
	case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
		snprintf(msg, sizeof(msg), "wrenn: exec stream: %s",
			 in ? (const char *)in : "connection failed");
		x_end(x, -1,
		      -wrenn_err_text(msg, in && (strstr(in, "onnect") ||
						  strstr(in, "refused")) ?
						   EHOSTUNREACH : EIO),
		      msg);
		/* libwebsockets still calls WSI_DESTROY for this wsi:
		 * it must not find x, which may be freed just below */
		x->wsi = NULL;
		lws_set_opaque_user_data(wsi, NULL);
		x_maybe_release(x);
		break;
	case LWS_CALLBACK_CLIENT_CLOSED:
		/* no close frame after exit (quirk 25): normal once exit or
		 * error came; a lost command otherwise */
		if (!x->got_exit)
			x_end(x, -1, -EIO, "wrenn: exec stream closed before "
			      "the command's exit status arrived");
		break;
	case LWS_CALLBACK_WSI_DESTROY:
		if (!x->got_exit && !x->ended)
			x_end(x, -1, -EIO, "wrenn: exec stream closed before "
			      "the command's exit status arrived");
		x->wsi = NULL;
		lws_set_opaque_user_data(wsi, NULL);
		x_maybe_release(x);
		break;
	default:
		break;
	}
	return 0;
}

static const struct lws_protocols protocols[] = {
	{ "wrenn-exec", ws_cb, 0, 65536, 0, NULL, 0 },
	{ NULL, NULL, 0, 0, 0, NULL, 0 }
};

/* Ping when idle, hang up when a ping goes unanswered: a silent server
 * cannot hold a stream forever. */
static lws_retry_bo_t retry_policy = {
	.secs_since_valid_ping = 20,
	.secs_since_valid_hangup = 60,
};

static const struct wrenn_turn exec_turn;

int wrenn_exec_init(struct wrenn *w)
{
	struct lws_context_creation_info info;

	lws_set_log_level(LLL_ERR, NULL);
	memset(&info, 0, sizeof(info));
	info.port = CONTEXT_PORT_NO_LISTEN;
	info.protocols = protocols;
	info.gid = (gid_t)-1;
	info.uid = (uid_t)-1;
	info.options = LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
	w->lws = lws_create_context(&info);
	if (!w->lws)
		return -ENOMEM;
	retry_policy.secs_since_valid_hangup =
		(uint16_t)(20 + (w->timeout_ms + 999) / 1000);
	return wrenn_loop_add(w, &exec_turn);
}

void wrenn_exec_free_all(struct wrenn *w)
{
	struct api_exec *x;

	/* service thread is gone: end every stream, then the context */
	for (x = XS(w); x; x = x->next)
		x_end(x, -1, -ECANCELED, "wrenn: backend shutting down");
	if (w->lws)
		lws_context_destroy(w->lws);
	w->lws = NULL;
	while ((x = XS(w))) {
		x->wsi = NULL;
		x->detached = true;
		x_release(x);
	}
}

static int exec_pollfds(struct wrenn *w, struct curl_waitfd *fds, int max)
{
	struct api_exec *x;
	int n = 0;

	for (x = XS(w); x && n < max; x = x->next) {
		if (!x->wsi)
			continue;
		fds[n].fd = lws_get_socket_fd(x->wsi);
		if (fds[n].fd < 0)
			continue;
		fds[n].events = x->paused ? 0 : CURL_WAIT_POLLIN;
		if (!x->established || !x->start_sent)
			fds[n].events |= CURL_WAIT_POLLOUT;
		fds[n].revents = 0;
		n++;
	}
	return n;
}

static int64_t exec_service(struct wrenn *w)
{
	if (w->lws)
		lws_service(w->lws, -1); /* < 0: do not wait */
	return -1;
}

/* Serviced on every turn of the loop, its sockets in the loop's wait. */
static const struct wrenn_turn exec_turn = {
	.run = exec_service,
	.pollfds = exec_pollfds,
};

/* ---- operations --------------------------------------------------------- */

static void start_timeout(struct wrenn *w, struct wrenn_timer *t)
{
	struct api_exec *x = (struct api_exec *)((char *)t -
			     offsetof(struct api_exec, timer));

	(void)w;
	if (!x->started) {
		x_end(x, -1, -ETIMEDOUT, "wrenn: exec did not start within "
		      "the request timeout");
		x_close(x);
	}
}

/* host, port, path prefix and TLS from the base URL */
static int split_base(const char *base, char *host, size_t hlen, int *port,
		      const char **prefix, bool *tls)
{
	const char *h, *e, *c;
	size_t n;

	*tls = !strncmp(base, "https://", 8);
	h = base + (*tls ? 8 : 7);
	e = strchr(h, '/');
	if (!e)
		e = h + strlen(h);
	*prefix = e;
	*port = *tls ? 443 : 80;
	if (*h == '[') {
		c = memchr(h, ']', (size_t)(e - h));
		if (!c)
			return -EINVAL;
		n = (size_t)(c - h - 1);
		if (n >= hlen)
			return -EINVAL;
		memcpy(host, h + 1, n);
		host[n] = '\0';
		c++;
	} else {
		c = memchr(h, ':', (size_t)(e - h));
		n = (size_t)((c ? c : e) - h);
		if (n >= hlen || !n)
			return -EINVAL;
		memcpy(host, h, n);
		host[n] = '\0';
	}
	if (c && *c == ':')
		*port = (int)strtol(c + 1, NULL, 10);
	return *port > 0 && *port < 65536 ? 0 : -EINVAL;
}

static void start_synced(void *ud);
static void start_connect(struct wrenn *w, struct api_exec *x);

static void start_run(struct wrenn *w, struct wrenn_work *wk)
{
	struct api_exec *x = (struct api_exec *)((char *)wk -
			     offsetof(struct api_exec, wk));
	char id[API_ID_MAX];

	x->next = XS(w);
	XS(w) = x;
	if (x->detached) {
		x_maybe_release(x);
		return;
	}
	if (wrenn_resolve(w, x->id, id, sizeof(id))) {
		x_end(x, -1, -ENOENT, "wrenn: no such capsule");
		x_maybe_release(x);
		return;
	}
	snprintf(x->id, sizeof(x->id), "%s", id);
	x->hold++;
	if (wrenn_files_sync(w, x->id, start_synced, x))
		return; /* start_synced goes on */
	x->hold--;
	start_connect(w, x);
}

/* Dirty staged files of the capsule are uploaded: connect now. */
static void start_synced(void *ud)
{
	struct api_exec *x = ud;

	x->hold--;
	if (x->detached) {
		x_maybe_release(x);
		return;
	}
	start_connect(x->w, x);
}

static void start_connect(struct wrenn *w, struct api_exec *x)
{
	struct lws_client_connect_info ci;
	char host[256], path[512];
	const char *prefix;
	bool tls;
	int port;

	if (split_base(w->base, host, sizeof(host), &port, &prefix, &tls)) {
		x_end(x, -1, -EINVAL, "wrenn: cannot parse the base URL");
		x_maybe_release(x);
		return;
	}
	snprintf(path, sizeof(path), "%s/v1/capsules/%s/exec/stream", prefix,
		 x->id);
	wrenn_timer_arm(w, &x->timer, w->timeout_ms, start_timeout);
	wrenn_keep_get(w, x->id);
	x->kept = true;
	memset(&ci, 0, sizeof(ci));
	ci.context = w->lws;
	ci.address = host;
	ci.port = port;
	ci.path = path;
	ci.host = host;
	ci.origin = host;
	ci.ssl_connection = tls ? LCCSCF_USE_SSL : 0;
	/* no subprotocol is negotiated (quirk 18): bind ours locally */
	ci.protocol = NULL;
	ci.local_protocol_name = "wrenn-exec";
	ci.opaque_user_data = x;
	ci.retry_and_idle_policy = &retry_policy;
	ci.pwsi = &x->wsi;
	x->hold++;
	if (!lws_client_connect_via_info(&ci)) {
		x->wsi = NULL;
		x_end(x, -1, -EHOSTUNREACH, "wrenn: cannot connect the exec "
		      "stream");
	}
	x->hold--;
	x_maybe_release(x);
}

void wrenn_exec_start(struct api_backend *be, const char *id,
		      const struct api_exec_req *req,
		      const struct api_exec_cbs *cbs, void *ud,
		      struct api_exec **out)
{
	struct wrenn *w = wrenn_of(be);
	struct api_exec *x;
	int err = 0;

	*out = NULL;
	if (req->tty) {
		cbs->started(ud, -EOPNOTSUPP,
			     "wrenn: no terminal for commands on Wrenn");
		return;
	}
	if (!req->argv || !req->argv[0] || strlen(id) >= API_ID_MAX) {
		cbs->started(ud, -EINVAL, "wrenn: empty command");
		return;
	}
	x = calloc(1, sizeof(*x));
	if (!x) {
		cbs->started(ud, -ENOMEM, "wrenn: out of memory");
		return;
	}
	if (req->want_stdin) {
		static unsigned seq;
		unsigned r = (unsigned)random() ^ (unsigned)wrenn_now_ms();

		x->want_in = true;
		snprintf(x->in_dir, sizeof(x->in_dir),
			 "/tmp/.sbxfs-stdin-%d-%u-%08x", (int)getpid(),
			 __atomic_add_fetch(&seq, 1, __ATOMIC_RELAXED), r);
	}
	x->start_msg = start_message(req, x->in_dir, &err);
	if (!x->start_msg) {
		free(x);
		cbs->started(ud, err, err == -EINVAL ?
			     "wrenn: bad environment entry (NAME=VALUE)" :
			     "wrenn: out of memory");
		return;
	}
	pthread_mutex_init(&x->lock, NULL);
	x->w = w;
	x->cbs = *cbs;
	x->ud = ud;
	snprintf(x->id, sizeof(x->id), "%s", id);
	*out = x;
	wrenn_post(w, &x->wk, start_run);
}

static void in_pump(struct api_exec *x);

static void resume_run(struct wrenn *w, struct wrenn_work *wk)
{
	struct api_exec *x = (struct api_exec *)((char *)wk -
			     offsetof(struct api_exec, wk2));
	int sig;

	(void)w;
	pthread_mutex_lock(&x->lock);
	sig = x->pend_sig;
	x->pend_sig = 0;
	x->resume_req = false;
	pthread_mutex_unlock(&x->lock);
	if (sig && !x->ended)
		x_signal(x, sig);
	in_pump(x);
	if (x->paused && !x->detached) {
		x->paused = false;
		deliver(x);
		if (!x->paused && x->wsi)
			lws_rx_flow_control(x->wsi, 1);
	}
}

/* resume and signal share one work item: a request flag says whether it
 * is already queued (both are idempotent). */
static void poke(struct api_exec *x)
{
	bool post;

	pthread_mutex_lock(&x->lock);
	post = !x->resume_req;
	x->resume_req = true;
	pthread_mutex_unlock(&x->lock);
	if (post)
		wrenn_post(x->w, &x->wk2, resume_run);
}

/* ---- stdin through uploaded chunks -------------------------------------- */

#define IN_CAP (4u << 20) /* bytes accepted ahead of the uploads */

static void in_pump(struct api_exec *x);

static ssize_t in_src(void *ud, void *buf, size_t len, uint64_t off)
{
	struct api_exec *x = ud;

	if (off >= x->in_chunk_len)
		return 0;
	if (len > x->in_chunk_len - off)
		len = (size_t)(x->in_chunk_len - off);
	memcpy(buf, x->in_chunk + off, len);
	return (ssize_t)len;
}

static void in_fail(struct api_exec *x, int err, const char *msg)
{
	api_done_fn cb = NULL;
	void *ud = NULL;

	api_log("wrenn: stdin upload failed: %s", msg);
	pthread_mutex_lock(&x->lock);
	x->in_err = err;
	if (x->d_has) {
		cb = x->d_cb;
		ud = x->d_ud;
		x->d_has = false;
		free(x->d_buf);
		x->d_buf = NULL;
	}
	pthread_mutex_unlock(&x->lock);
	x->in_busy = false;
	if (cb && !x->detached)
		cb(ud, err, msg);
}

static int in_upload(struct api_exec *x, const char *suffix, uint64_t len,
		     wrenn_http_cb cb)
{
	struct wrenn_http *h;
	char path[256], dest[200];

	snprintf(path, sizeof(path), "/v1/capsules/%s/files/write", x->id);
	snprintf(dest, sizeof(dest), "%s/%u%s", x->in_dir, x->in_seq, suffix);
	h = wrenn_http_new(x->w, "POST", path, NULL);
	if (!h)
		return -ENOMEM;
	x->in_busy = true;
	x->hold++; /* x stays until the upload reported */
	wrenn_http_upload(h, dest, in_src, x, len);
	wrenn_http_go(h, cb, x);
	return 0;
}

static void in_marked(void *ud, int err, const char *msg,
		      const struct wrenn_resp *r)
{
	struct api_exec *x = ud;

	(void)r;
	x->hold--;
	x->in_busy = false;
	free(x->in_chunk);
	x->in_chunk = NULL;
	x->in_chunk_len = 0;
	if (err) {
		in_fail(x, err, msg);
	} else {
		x->in_seq++;
		in_pump(x);
	}
	x_maybe_release(x);
}

static void in_sent(void *ud, int err, const char *msg,
		    const struct wrenn_resp *r)
{
	struct api_exec *x = ud;

	(void)r;
	x->hold--;
	x->in_busy = false;
	if (!err && !x->detached) {
		/* D/N is complete: let the feeder have it */
		x->in_chunk_len = 0;
		err = in_upload(x, ".ok", 0, in_marked);
		if (!err)
			return;
		msg = "wrenn: out of memory";
	}
	free(x->in_chunk);
	x->in_chunk = NULL;
	if (err)
		in_fail(x, err, msg);
	x_maybe_release(x);
}

static void in_eof_sent(void *ud, int err, const char *msg,
			const struct wrenn_resp *r)
{
	struct api_exec *x = ud;

	(void)r;
	x->hold--;
	x->in_busy = false;
	if (err)
		in_fail(x, err, msg);
	x_maybe_release(x);
}

/* Loop: move accepted bytes to the capsule, one chunk at a time. */
static void in_pump(struct api_exec *x)
{
	api_done_fn cb = NULL;
	void *ud = NULL;
	size_t n = 0;
	bool eof = false;
	char *chunk = NULL;

	if (!x->want_in || x->in_busy || x->detached || x->in_eof_done)
		return;
	pthread_mutex_lock(&x->lock);
	if (x->d_has && x->in_len + x->d_len <= IN_CAP) {
		/* a deferred write fits now: take it */
		char *nb = realloc(x->in_buf, x->in_len + x->d_len + 1);

		if (nb) {
			x->in_buf = nb;
			memcpy(nb + x->in_len, x->d_buf, x->d_len);
			x->in_len += x->d_len;
			cb = x->d_cb;
			ud = x->d_ud;
			free(x->d_buf);
			x->d_buf = NULL;
			x->d_has = false;
		}
	}
	if (x->in_len && !x->in_err) {
		n = x->in_len < x->w->upload_max ? x->in_len :
						   x->w->upload_max;
		chunk = malloc(n);
		if (chunk) {
			memcpy(chunk, x->in_buf, n);
			memmove(x->in_buf, x->in_buf + n, x->in_len - n);
			x->in_len -= n;
		}
	} else if (x->in_closed && !x->d_has && !x->in_err) {
		eof = true;
	}
	pthread_mutex_unlock(&x->lock);
	if (cb)
		cb(ud, 0, NULL);
	if (chunk) {
		x->in_chunk = chunk;
		x->in_chunk_len = n;
		if (in_upload(x, "", n, in_sent)) {
			free(chunk);
			x->in_chunk = NULL;
			in_fail(x, -ENOMEM, "wrenn: out of memory");
		}
	} else if (n) {
		in_fail(x, -ENOMEM, "wrenn: out of memory");
	} else if (eof) {
		x->in_eof_done = true;
		x->in_chunk_len = 0;
		if (in_upload(x, ".eof", 0, in_eof_sent))
			in_fail(x, -ENOMEM, "wrenn: out of memory");
	}
}

void wrenn_exec_write(struct api_backend *be, struct api_exec *x,
		      const void *buf, size_t len, api_done_fn cb, void *ud)
{
	int err;

	(void)be;
	pthread_mutex_lock(&x->lock);
	err = !x->want_in ? -EBADF : x->in_closed ? -EPIPE : x->in_err;
	if (!err && x->d_has)
		err = -EBUSY; /* one write in flight at a time */
	if (!err && (x->in_len + len <= IN_CAP || !x->in_len)) {
		char *nb = realloc(x->in_buf, x->in_len + len + 1);

		if (!nb) {
			err = -ENOMEM;
		} else {
			x->in_buf = nb;
			memcpy(nb + x->in_len, buf, len);
			x->in_len += len;
			pthread_mutex_unlock(&x->lock);
			cb(ud, 0, NULL);
			poke(x);
			return;
		}
	} else if (!err) {
		/* full: take it later, and say so only then */
		x->d_buf = malloc(len ? len : 1);
		if (!x->d_buf) {
			err = -ENOMEM;
		} else {
			memcpy(x->d_buf, buf, len);
			x->d_len = len;
			x->d_cb = cb;
			x->d_ud = ud;
			x->d_has = true;
		}
	}
	pthread_mutex_unlock(&x->lock);
	if (err)
		cb(ud, err, api_strerror(err));
	else
		poke(x);
}

void wrenn_exec_close_stdin(struct api_backend *be, struct api_exec *x)
{
	(void)be;
	pthread_mutex_lock(&x->lock);
	x->in_closed = true;
	pthread_mutex_unlock(&x->lock);
	poke(x);
}

void wrenn_exec_resume(struct api_backend *be, struct api_exec *x)
{
	(void)be;
	poke(x);
}

int wrenn_exec_signal(struct api_backend *be, struct api_exec *x, int sig)
{
	(void)be;
	if (sig <= 0 || sig >= 65)
		return -EINVAL;
	pthread_mutex_lock(&x->lock);
	x->pend_sig = sig;
	pthread_mutex_unlock(&x->lock);
	poke(x);
	return 0;
}

static void free_run(struct wrenn *w, struct wrenn_work *wk)
{
	struct api_exec *x = (struct api_exec *)((char *)wk -
			     offsetof(struct api_exec, wk3));
	struct free_sync *fs = x->fsync;

	x->detached = true;
	if (x->started && !x->got_exit && x->pid > 0) {
		char path[256];

		/* closing the stream does not kill (quirk 26): do it */
		if (x->cmd_pid > 0) {
			/* the wrapper then cleans up and exits by itself */
			x_kill(w, x->id, x->cmd_pid, SIGKILL, true);
		} else {
			x_kill(w, x->id, x->pid, SIGKILL, false);
			snprintf(path, sizeof(path),
				 "/v1/capsules/%s/processes/%ld", x->id,
				 x->pid);
			wrenn_call(w, "DELETE", path, NULL, kill_done, NULL);
		}
	}
	x_unkeep(x);
	x_close(x);
	if (fs) {
		pthread_mutex_lock(&fs->lock);
		fs->done = true;
		pthread_cond_signal(&fs->cond);
		pthread_mutex_unlock(&fs->lock);
	}
	x_maybe_release(x);
}

void wrenn_exec_free(struct api_backend *be, struct api_exec *x)
{
	struct wrenn *w = wrenn_of(be);
	struct free_sync fs = { .done = false };

	if (!x)
		return;
	if (wrenn_in_loop(w)) {
		x->fsync = NULL;
		free_run(w, &x->wk3);
		return;
	}
	pthread_mutex_init(&fs.lock, NULL);
	pthread_cond_init(&fs.cond, NULL);
	x->fsync = &fs;
	wrenn_post(w, &x->wk3, free_run);
	pthread_mutex_lock(&fs.lock);
	while (!fs.done)
		pthread_cond_wait(&fs.cond, &fs.lock);
	pthread_mutex_unlock(&fs.lock);
	pthread_mutex_destroy(&fs.lock);
	pthread_cond_destroy(&fs.cond);
}
