/* loop.c - the Wrenn backend's service thread (transport layer, http.h).
 *
 * One thread owns the curl multi handle and the libwebsockets context.
 * It sleeps in curl_multi_poll() with the descriptors of the registered
 * turns (the WebSocket sockets) as extra descriptors, so HTTP and
 * WebSocket traffic share one wait; other threads queue work with
 * wrenn_post() and wake it with curl_multi_wakeup().  The woken side
 * drains the whole queue (wakeups coalesce).  Timers (429 retries, exec
 * deadlines) are a short list checked on every turn; the layers above
 * run their own per-turn work (WebSocket service, keep-alive pings) as
 * turns registered with wrenn_loop_add().
 */
#include <errno.h>
#include <stddef.h>
#include <time.h>

#include "api/wrenn/http.h"

struct wrenn *wrenn_of(struct api_backend *be)
{
	return be->priv;
}

int64_t wrenn_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t wrenn_deadline(struct wrenn *w)
{
	return w->op_deadline ? w->op_deadline :
				wrenn_now_ms() + w->timeout_ms;
}

bool wrenn_in_loop(struct wrenn *w)
{
	return w->thr_started && pthread_equal(pthread_self(), w->thr);
}

void wrenn_post(struct wrenn *w, struct wrenn_work *wk,
		void (*fn)(struct wrenn *w, struct wrenn_work *wk))
{
	wk->fn = fn;
	wk->next = NULL;
	/* a new user operation, or a step of the one running here */
	wk->deadline = wrenn_in_loop(w) && w->op_deadline ?
			       w->op_deadline :
			       wrenn_now_ms() + w->timeout_ms;
	pthread_mutex_lock(&w->qlock);
	if (w->qtail)
		w->qtail->next = wk;
	else
		w->qhead = wk;
	w->qtail = wk;
	pthread_mutex_unlock(&w->qlock);
	curl_multi_wakeup(w->multi);
}

void wrenn_timer_cancel(struct wrenn *w, struct wrenn_timer *t)
{
	struct wrenn_timer **pp;

	if (!t->armed)
		return;
	for (pp = &w->timers; *pp; pp = &(*pp)->next)
		if (*pp == t) {
			*pp = t->next;
			break;
		}
	t->armed = false;
}

void wrenn_timer_arm(struct wrenn *w, struct wrenn_timer *t, int64_t ms,
		     void (*fn)(struct wrenn *w, struct wrenn_timer *t))
{
	wrenn_timer_cancel(w, t);
	t->fn = fn;
	t->due_ms = wrenn_now_ms() + (ms > 0 ? ms : 0);
	t->next = w->timers;
	w->timers = t;
	t->armed = true;
}

void wrenn_timer_drop_all(struct wrenn *w,
			  void (*fn)(struct wrenn *w, struct wrenn_timer *t),
			  void (*drop)(struct wrenn_timer *t))
{
	struct wrenn_timer **pp = &w->timers;

	while (*pp) {
		struct wrenn_timer *t = *pp;

		if (t->fn == fn) {
			*pp = t->next;
			t->armed = false;
			drop(t);
		} else {
			pp = &t->next;
		}
	}
}

/* Fire due timers; return ms until the next one (or -1). */
static int64_t timers_run(struct wrenn *w)
{
	int64_t now = wrenn_now_ms(), next = -1;
	struct wrenn_timer *t;

again:
	for (t = w->timers; t; t = t->next) {
		if (t->due_ms <= now) {
			wrenn_timer_cancel(w, t);
			w->op_deadline = 0; /* timers start their own */
			t->fn(w, t);
			/* the list may have changed under us */
			goto again;
		}
	}
	for (t = w->timers; t; t = t->next)
		if (next < 0 || t->due_ms - now < next)
			next = t->due_ms - now;
	return next;
}

int wrenn_loop_add(struct wrenn *w, const struct wrenn_turn *t)
{
	if (w->nturns >= WRENN_TURNS_MAX)
		return -ENOSPC;
	w->turns[w->nturns++] = t;
	return 0;
}

static bool queue_run(struct wrenn *w)
{
	struct wrenn_work *wk, *next;
	bool stop;

	pthread_mutex_lock(&w->qlock);
	wk = w->qhead;
	w->qhead = w->qtail = NULL;
	stop = w->stopping;
	pthread_mutex_unlock(&w->qlock);
	for (; wk; wk = next) {
		next = wk->next;
		w->op_deadline = wk->deadline;
		wk->fn(w, wk);
		w->op_deadline = 0;
	}
	return stop;
}

static void *loop_main(void *arg)
{
	struct wrenn *w = arg;
	struct curl_waitfd fds[64];
	int running, n, i;
	int64_t t, tk, want;

	for (;;) {
		if (queue_run(w))
			break;
		curl_multi_perform(w->multi, &running);
		wrenn_http_reap(w);
		tk = -1;
		for (i = 0; i < w->nturns; i++) {
			want = w->turns[i]->run(w);
			if (want >= 0 && (tk < 0 || want < tk))
				tk = want;
		}
		t = timers_run(w);
		/* timers may have queued work or started transfers */
		curl_multi_perform(w->multi, &running);
		wrenn_http_reap(w);
		{
			long ct = -1;

			curl_multi_timeout(w->multi, &ct);
			if (ct >= 0 && (t < 0 || ct < t))
				t = ct;
		}
		if (tk >= 0 && (t < 0 || tk < t))
			t = tk;
		n = 0;
		for (i = 0; i < w->nturns; i++)
			if (w->turns[i]->pollfds)
				n += w->turns[i]->pollfds(w, fds + n, 64 - n);
		/* lws keeps internal timers (close, ping-pong): look in
		 * often while WebSockets are live. */
		if (n > 0 && (t < 0 || t > 100))
			t = 100;
		if (t < 0 || t > 1000)
			t = 1000;
		curl_multi_poll(w->multi, fds, (unsigned)n, (int)t, NULL);
	}
	return NULL;
}

int wrenn_loop_start(struct wrenn *w)
{
	if (pthread_create(&w->thr, NULL, loop_main, w))
		return -EAGAIN;
	w->thr_started = true;
	return 0;
}

void wrenn_loop_stop(struct wrenn *w)
{
	if (!w->thr_started)
		return;
	pthread_mutex_lock(&w->qlock);
	w->stopping = true;
	pthread_mutex_unlock(&w->qlock);
	curl_multi_wakeup(w->multi);
	pthread_join(w->thr, NULL);
	w->thr_started = false;
}
