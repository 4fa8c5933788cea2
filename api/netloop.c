/* netloop.c - the service loop of the remote backends (netloop.h).
 *
 * A turn: run the queue until it is empty; stop if asked; let curl move
 * its transfers and hand the finished ones to ops->done; run the
 * registered turns; fire due timers; let curl move again (timers and
 * turns may have started transfers); then sleep in curl_multi_poll()
 * with the turns' descriptors until the earliest of: a wakeup (nl_post),
 * a descriptor, curl's own timeout, a timer, a turn's wish, 1 s.
 */
#include <errno.h>
#include <stddef.h>
#include <time.h>

#include "api/netloop.h"

int64_t nl_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int nl_init(struct netloop *nl, void *owner, const struct nl_ops *ops,
	    int64_t timeout_ms)
{
	static const struct nl_ops none;

	nl->multi = curl_multi_init();
	if (!nl->multi)
		return -ENOMEM;
	pthread_mutex_init(&nl->qlock, NULL);
	nl->owner = owner;
	nl->ops = ops ? ops : &none;
	nl->timeout_ms = timeout_ms;
	return 0;
}

void nl_destroy(struct netloop *nl)
{
	if (!nl->multi)
		return;
	curl_multi_cleanup(nl->multi);
	nl->multi = NULL;
	pthread_mutex_destroy(&nl->qlock);
}

/* The loop this thread serves (NULL off every loop): set by the thread
 * itself, so it holds from its first item on, before pthread_create has
 * even returned to the starter. */
static __thread const struct netloop *nl_current;

bool nl_in_loop(const struct netloop *nl)
{
	return nl_current == nl;
}

bool nl_started(const struct netloop *nl)
{
	return nl->thr_started;
}

int64_t nl_deadline(const struct netloop *nl)
{
	return nl->op_deadline ? nl->op_deadline :
				 nl_now_ms() + nl->timeout_ms;
}

int64_t nl_op_left(const struct netloop *nl, int64_t ms)
{
	int64_t spent;

	if (!nl_in_loop(nl) || !nl->op_deadline)
		return ms;
	spent = nl_now_ms() + nl->timeout_ms - nl->op_deadline;
	if (spent > 0)
		ms -= spent;
	return ms > 0 ? ms : 1;
}

void nl_post(struct netloop *nl, struct nl_work *wk,
	     void (*fn)(struct netloop *nl, struct nl_work *wk))
{
	wk->fn = fn;
	wk->next = NULL;
	/* a new user operation, or a step of the one running here */
	wk->deadline = nl_in_loop(nl) && nl->op_deadline ?
			       nl->op_deadline :
			       nl_now_ms() + nl->timeout_ms;
	pthread_mutex_lock(&nl->qlock);
	if (nl->qtail)
		nl->qtail->next = wk;
	else
		nl->qhead = wk;
	nl->qtail = wk;
	pthread_mutex_unlock(&nl->qlock);
	curl_multi_wakeup(nl->multi);
}

void nl_timer_cancel(struct netloop *nl, struct nl_timer *t)
{
	struct nl_timer **pp;

	if (!t->armed)
		return;
	for (pp = &nl->timers; *pp; pp = &(*pp)->next)
		if (*pp == t) {
			*pp = t->next;
			break;
		}
	t->armed = false;
}

void nl_timer_arm(struct netloop *nl, struct nl_timer *t, int64_t ms,
		  void (*fn)(struct netloop *nl, struct nl_timer *t))
{
	nl_timer_cancel(nl, t);
	t->fn = fn;
	t->due_ms = nl_now_ms() + (ms > 0 ? ms : 0);
	t->next = nl->timers;
	nl->timers = t;
	t->armed = true;
}

void nl_timer_drop_if(struct netloop *nl,
		      bool (*match)(struct nl_timer *t, void *arg),
		      void (*drop)(struct nl_timer *t, void *arg), void *arg)
{
	struct nl_timer **pp = &nl->timers;

	while (*pp) {
		struct nl_timer *t = *pp;

		if (match(t, arg)) {
			*pp = t->next;
			t->armed = false;
			drop(t, arg);
		} else {
			pp = &t->next;
		}
	}
}

/* Fire due timers; return ms until the next one (or -1). */
static int64_t timers_run(struct netloop *nl)
{
	int64_t now = nl_now_ms(), next = -1;
	struct nl_timer *t;

again:
	for (t = nl->timers; t; t = t->next) {
		if (t->due_ms <= now) {
			nl_timer_cancel(nl, t);
			nl->op_deadline = 0; /* timers start their own */
			t->fn(nl, t);
			/* the list may have changed under us */
			goto again;
		}
	}
	for (t = nl->timers; t; t = t->next)
		if (next < 0 || t->due_ms - now < next)
			next = t->due_ms - now;
	return next;
}

int nl_turn_add(struct netloop *nl, const struct nl_turn *t, void *arg)
{
	if (nl->nturns >= NL_TURNS_MAX)
		return -ENOSPC;
	nl->turns[nl->nturns].t = t;
	nl->turns[nl->nturns].arg = arg;
	nl->nturns++;
	return 0;
}

/* Run the queue until it is empty, in the order posted (wakeups
 * coalesce; what the items post runs in the same drain). */
static void drain(struct netloop *nl)
{
	struct nl_work *wk, *next;

	for (;;) {
		pthread_mutex_lock(&nl->qlock);
		wk = nl->qhead;
		nl->qhead = nl->qtail = NULL;
		pthread_mutex_unlock(&nl->qlock);
		if (!wk)
			return;
		for (; wk; wk = next) {
			next = wk->next; /* fn may free wk */
			nl->op_deadline = wk->deadline;
			wk->fn(nl, wk);
			nl->op_deadline = 0;
		}
	}
}

static void transfers_run(struct netloop *nl)
{
	CURLMsg *m;
	int running, left;

	curl_multi_perform(nl->multi, &running);
	while ((m = curl_multi_info_read(nl->multi, &left)))
		if (m->msg == CURLMSG_DONE && nl->ops->done)
			nl->ops->done(nl, m->easy_handle, m->data.result);
}

static bool stop_asked(struct netloop *nl)
{
	bool stop;

	pthread_mutex_lock(&nl->qlock);
	stop = nl->stopping;
	pthread_mutex_unlock(&nl->qlock);
	return stop;
}

static void *loop_main(void *arg)
{
	struct netloop *nl = arg;
	struct curl_waitfd fds[NL_POLLFDS_MAX];
	int64_t t, tk, want;
	long ct;
	int n, i;

	nl_current = nl;
	for (;;) {
		drain(nl);
		if (stop_asked(nl))
			break;
		transfers_run(nl);
		tk = -1;
		for (i = 0; i < nl->nturns; i++) {
			want = nl->turns[i].t->run(nl, nl->turns[i].arg);
			if (want >= 0 && (tk < 0 || want < tk))
				tk = want;
		}
		t = timers_run(nl);
		/* timers and turns may have queued work or started transfers */
		transfers_run(nl);
		ct = -1;
		curl_multi_timeout(nl->multi, &ct);
		if (ct >= 0 && (t < 0 || ct < t))
			t = ct;
		if (tk >= 0 && (t < 0 || tk < t))
			t = tk;
		n = 0;
		for (i = 0; i < nl->nturns; i++)
			if (nl->turns[i].t->pollfds)
				n += nl->turns[i].t->pollfds(
					nl, nl->turns[i].arg, fds + n,
					NL_POLLFDS_MAX - n);
		/* libraries behind the descriptors keep internal timers
		 * (lws: close, ping-pong): look in often while any are live */
		if (n > 0 && (t < 0 || t > 100))
			t = 100;
		if (t < 0 || t > 1000)
			t = 1000;
		curl_multi_poll(nl->multi, fds, (unsigned)n, (int)t, NULL);
	}
	if (nl->ops->stopping)
		nl->ops->stopping(nl);
	drain(nl);
	return NULL;
}

int nl_start(struct netloop *nl)
{
	if (pthread_create(&nl->thr, NULL, loop_main, nl))
		return -EAGAIN;
	nl->thr_started = true;
	return 0;
}

void nl_stop(struct netloop *nl)
{
	if (!nl->thr_started)
		return;
	pthread_mutex_lock(&nl->qlock);
	nl->stopping = true;
	pthread_mutex_unlock(&nl->qlock);
	curl_multi_wakeup(nl->multi);
	pthread_join(nl->thr, NULL);
	nl->thr_started = false;
}
