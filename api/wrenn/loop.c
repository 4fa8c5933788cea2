/* loop.c - the Wrenn backend's service thread (transport layer, http.h).
 *
 * The thread, its curl multi handle, work queue, timers and the
 * deadline of the user operation are the shared loop of the remote
 * backends (api/netloop.c).  What is Wrenn's: the typed work items and
 * timers below (struct wrenn in the callbacks), the finished transfers
 * handed to http.c, and the turns the layers above register with
 * wrenn_loop_add() (exec.c: libwebsockets service, whose sockets the
 * loop waits on beside curl's; capsule.c: keep-alive pings).
 */
#include <errno.h>
#include <stddef.h>

#include "api/wrenn/http.h"

#define WRENN_OF(nl) ((struct wrenn *)(nl)->owner)
#define CONTAINER(p, type, member) \
	((type *)(void *)((char *)(p)-offsetof(type, member)))

struct wrenn *wrenn_of(struct api_backend *be)
{
	return be->priv;
}

int64_t wrenn_now_ms(void)
{
	return nl_now_ms();
}

int64_t wrenn_deadline(struct wrenn *w)
{
	return nl_deadline(&w->loop);
}

bool wrenn_in_loop(struct wrenn *w)
{
	return nl_in_loop(&w->loop);
}

static void work_run(struct netloop *nl, struct nl_work *nwk)
{
	struct wrenn_work *wk = CONTAINER(nwk, struct wrenn_work, nl);

	wk->fn(WRENN_OF(nl), wk);
}

void wrenn_post(struct wrenn *w, struct wrenn_work *wk,
		void (*fn)(struct wrenn *w, struct wrenn_work *wk))
{
	wk->fn = fn;
	nl_post(&w->loop, &wk->nl, work_run);
}

static void timer_run(struct netloop *nl, struct nl_timer *nt)
{
	struct wrenn_timer *t = CONTAINER(nt, struct wrenn_timer, nl);

	t->fn(WRENN_OF(nl), t);
}

void wrenn_timer_cancel(struct wrenn *w, struct wrenn_timer *t)
{
	nl_timer_cancel(&w->loop, &t->nl);
}

void wrenn_timer_arm(struct wrenn *w, struct wrenn_timer *t, int64_t ms,
		     void (*fn)(struct wrenn *w, struct wrenn_timer *t))
{
	t->fn = fn;
	nl_timer_arm(&w->loop, &t->nl, ms, timer_run);
}

struct drop_arg {
	void (*fn)(struct wrenn *w, struct wrenn_timer *t);
	void (*drop)(struct wrenn_timer *t);
};

static bool drop_match(struct nl_timer *nt, void *arg)
{
	const struct drop_arg *a = arg;

	return CONTAINER(nt, struct wrenn_timer, nl)->fn == a->fn;
}

static void drop_one(struct nl_timer *nt, void *arg)
{
	const struct drop_arg *a = arg;

	a->drop(CONTAINER(nt, struct wrenn_timer, nl));
}

void wrenn_timer_drop_all(struct wrenn *w,
			  void (*fn)(struct wrenn *w, struct wrenn_timer *t),
			  void (*drop)(struct wrenn_timer *t))
{
	struct drop_arg a = { fn, drop };

	nl_timer_drop_if(&w->loop, drop_match, drop_one, &a);
}

static int64_t turn_run(struct netloop *nl, void *arg)
{
	const struct wrenn_turn *t = arg;

	return t->run(WRENN_OF(nl));
}

static int turn_pollfds(struct netloop *nl, void *arg,
			struct curl_waitfd *fds, int max)
{
	const struct wrenn_turn *t = arg;

	return t->pollfds ? t->pollfds(WRENN_OF(nl), fds, max) : 0;
}

static const struct nl_turn turn = { .run = turn_run,
				     .pollfds = turn_pollfds };

int wrenn_loop_add(struct wrenn *w, const struct wrenn_turn *t)
{
	return nl_turn_add(&w->loop, &turn, (void *)t);
}

static void transfer_done(struct netloop *nl, CURL *easy, CURLcode rc)
{
	wrenn_http_done(WRENN_OF(nl), easy, rc);
}

/* Requests still in flight at the stop end after it, off the loop
 * (wrenn.c: wrenn_http_abort_all), as they always did. */
static const struct nl_ops wrenn_loop_ops = { .done = transfer_done };

int wrenn_loop_init(struct wrenn *w)
{
	return nl_init(&w->loop, w, &wrenn_loop_ops, w->timeout_ms);
}

void wrenn_loop_destroy(struct wrenn *w)
{
	nl_destroy(&w->loop);
}

int wrenn_loop_start(struct wrenn *w)
{
	return nl_start(&w->loop);
}

void wrenn_loop_stop(struct wrenn *w)
{
	nl_stop(&w->loop);
}
