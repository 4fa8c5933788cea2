/* netloop_test.c - api/netloop.c, the service loop of the remote
 * backends: posting from other threads, order, deadlines, timers (fired,
 * cancelled, moved, armed from a callback), finished transfers, turns,
 * stop with work queued.  Waits are on conditions, bounded. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "api/netloop.h"

#define WAIT_MS 10000
#define TIMEOUT_MS 5000

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;

/* Wait until *flag (under mu), at most WAIT_MS. */
static bool wait_flag(const volatile int *flag, int want)
{
	int64_t end = nl_now_ms() + WAIT_MS;
	bool r;

	pthread_mutex_lock(&mu);
	while (*flag < want && nl_now_ms() < end) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 10 * 1000000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&cv, &mu, &ts);
	}
	r = *flag >= want;
	pthread_mutex_unlock(&mu);
	return r;
}

static void bump(volatile int *flag)
{
	pthread_mutex_lock(&mu);
	(*flag)++;
	pthread_cond_broadcast(&cv);
	pthread_mutex_unlock(&mu);
}

static struct netloop *loop_new(const struct nl_ops *ops, void *owner)
{
	struct netloop *nl = calloc(1, sizeof(*nl));

	cr_assert(nl);
	cr_assert_eq(nl_init(nl, owner, ops, TIMEOUT_MS), 0);
	return nl;
}

static void loop_free(struct netloop *nl)
{
	nl_stop(nl);
	cr_assert_not(nl_started(nl));
	nl_destroy(nl);
	nl_destroy(nl); /* twice is harmless */
	free(nl);
}

/* ---- posting -------------------------------------------------------- */

#define NTHR 4
#define NPER 400

struct item {
	struct nl_work wk;
	int thr, seq;
	int64_t deadline; /* op_deadline seen while it ran */
	bool in_loop;
	struct item *child; /* posted from the callback */
};

static struct {
	int log_thr[NTHR * NPER + 64];
	int log_seq[NTHR * NPER + 64];
	int n;
	volatile int done;
} rec;

static void item_run(struct netloop *nl, struct nl_work *wk)
{
	struct item *it = (struct item *)wk;

	it->in_loop = nl_in_loop(nl);
	it->deadline = nl->op_deadline;
	rec.log_thr[rec.n] = it->thr;
	rec.log_seq[rec.n] = it->seq;
	rec.n++;
	if (it->child)
		nl_post(nl, &it->child->wk, item_run);
	bump(&rec.done);
}

struct poster {
	struct netloop *nl;
	struct item *items;
	int thr;
};

static void *poster_main(void *arg)
{
	struct poster *p = arg;
	int i;

	for (i = 0; i < NPER; i++) {
		p->items[i].thr = p->thr;
		p->items[i].seq = i;
		nl_post(p->nl, &p->items[i].wk, item_run);
	}
	return NULL;
}

Test(netloop, post_from_threads_in_order)
{
	struct netloop *nl = loop_new(NULL, NULL);
	struct item *items = calloc(NTHR * NPER, sizeof(*items));
	struct poster p[NTHR];
	pthread_t th[NTHR];
	int last[NTHR], i;

	memset(&rec, 0, sizeof(rec));
	cr_assert_eq(nl_start(nl), 0);
	cr_assert(nl_started(nl));
	cr_assert_not(nl_in_loop(nl));
	for (i = 0; i < NTHR; i++) {
		p[i] = (struct poster){ nl, items + i * NPER, i };
		cr_assert_eq(pthread_create(&th[i], NULL, poster_main, &p[i]),
			     0);
	}
	for (i = 0; i < NTHR; i++)
		pthread_join(th[i], NULL);
	cr_assert(wait_flag(&rec.done, NTHR * NPER),
		  "%d of %d items ran", rec.done, NTHR * NPER);
	loop_free(nl);
	/* each exactly once, on the loop, each poster's in its order */
	cr_assert_eq(rec.n, NTHR * NPER);
	for (i = 0; i < NTHR; i++)
		last[i] = -1;
	for (i = 0; i < rec.n; i++) {
		cr_assert_eq(rec.log_seq[i], last[rec.log_thr[i]] + 1,
			     "poster %d: item %d ran after %d",
			     rec.log_thr[i], rec.log_seq[i],
			     last[rec.log_thr[i]]);
		last[rec.log_thr[i]] = rec.log_seq[i];
	}
	for (i = 0; i < NTHR * NPER; i++)
		cr_assert(items[i].in_loop);
	free(items);
}

/* A step posted by a running item comes after what was queued before it
 * and carries the deadline of the item's operation; one posted from
 * outside starts a new operation (now + timeout). */
Test(netloop, order_and_deadline)
{
	struct netloop *nl = loop_new(NULL, NULL);
	struct item it[5];
	int64_t before, after;
	int i;

	memset(&rec, 0, sizeof(rec));
	memset(it, 0, sizeof(it));
	for (i = 0; i < 5; i++)
		it[i].seq = i;
	it[0].child = &it[3];
	it[3].child = &it[4];
	before = nl_now_ms();
	/* posted before the start: queued, run once it starts */
	nl_post(nl, &it[0].wk, item_run);
	nl_post(nl, &it[1].wk, item_run);
	nl_post(nl, &it[2].wk, item_run);
	after = nl_now_ms();
	cr_assert_eq(nl_start(nl), 0);
	cr_assert(wait_flag(&rec.done, 5));
	loop_free(nl);
	cr_assert_eq(rec.n, 5);
	for (i = 0; i < 5; i++)
		cr_assert_eq(rec.log_seq[i], i, "position %d: item %d", i,
			     rec.log_seq[i]);
	for (i = 0; i < 3; i++) {
		cr_assert_geq(it[i].deadline, before + TIMEOUT_MS);
		cr_assert_leq(it[i].deadline, after + TIMEOUT_MS);
	}
	cr_assert_eq(it[3].deadline, it[0].deadline);
	cr_assert_eq(it[4].deadline, it[0].deadline);
}

/* ---- timers --------------------------------------------------------- */

struct tmr {
	struct nl_timer t;
	int64_t due, at, opdl;
	volatile int fired;
	int again; /* re-arm itself this many more times */
};

static void tm_fired(struct netloop *nl, struct nl_timer *t)
{
	struct tmr *m = (struct tmr *)t;

	m->at = nl_now_ms();
	m->opdl = nl->op_deadline;
	if (m->again > 0) {
		m->again--;
		m->due = nl_now_ms() + 5;
		nl_timer_arm(nl, t, 5, tm_fired);
	}
	bump(&m->fired);
}

static struct tmr tms[5];

static void arm_run(struct netloop *nl, struct nl_work *wk)
{
	int64_t now = nl_now_ms();

	(void)wk;
	tms[0].due = now + 30;
	nl_timer_arm(nl, &tms[0].t, 30, tm_fired);
	tms[1].due = now + 10;
	nl_timer_arm(nl, &tms[1].t, 10, tm_fired);
	/* cancelled: never fires */
	nl_timer_arm(nl, &tms[2].t, 20, tm_fired);
	nl_timer_cancel(nl, &tms[2].t);
	nl_timer_cancel(nl, &tms[2].t); /* twice is harmless */
	/* moved from far to near */
	nl_timer_arm(nl, &tms[3].t, 600000, tm_fired);
	tms[3].due = nl_now_ms() + 5;
	nl_timer_arm(nl, &tms[3].t, 5, tm_fired);
	/* negative: at once */
	tms[4].due = now;
	nl_timer_arm(nl, &tms[4].t, -7, tm_fired);
}

static volatile int fence_ran;

static void fence_run(struct netloop *nl, struct nl_work *wk)
{
	(void)nl;
	(void)wk;
	bump(&fence_ran);
}

Test(netloop, timers_fire_cancel_move)
{
	struct netloop *nl = loop_new(NULL, NULL);
	struct nl_work arm, fence;
	int i;

	memset(tms, 0, sizeof(tms));
	fence_ran = 0;
	cr_assert_eq(nl_start(nl), 0);
	nl_post(nl, &arm, arm_run);
	for (i = 0; i < 5; i++)
		if (i != 2)
			cr_assert(wait_flag(&tms[i].fired, 1),
				  "timer %d did not fire", i);
	/* every timer due by now has fired: the cancelled one would have
	 * been due before timer 0, whose pass ended before this item */
	nl_post(nl, &fence, fence_run);
	cr_assert(wait_flag(&fence_ran, 1));
	loop_free(nl);
	for (i = 0; i < 5; i++) {
		if (i == 2) {
			cr_assert_eq(tms[i].fired, 0, "cancelled timer fired");
			cr_assert_not(tms[i].t.armed);
			continue;
		}
		cr_assert_eq(tms[i].fired, 1, "timer %d fired %d times", i,
			     tms[i].fired);
		cr_assert_geq(tms[i].at, tms[i].due, "timer %d early by %lld",
			      i, (long long)(tms[i].due - tms[i].at));
		cr_assert_eq(tms[i].opdl, 0, "a timer runs outside any "
			     "operation");
		cr_assert_not(tms[i].t.armed);
	}
}

/* A timer armed from a work item's callback, re-armed from its own. */
static void chain_run(struct netloop *nl, struct nl_work *wk)
{
	(void)wk;
	tms[0].again = 3;
	tms[0].due = nl_now_ms() + 5;
	nl_timer_arm(nl, &tms[0].t, 5, tm_fired);
}

Test(netloop, timer_armed_from_callback)
{
	struct netloop *nl = loop_new(NULL, NULL);
	struct nl_work wk;

	memset(tms, 0, sizeof(tms));
	cr_assert_eq(nl_start(nl), 0);
	nl_post(nl, &wk, chain_run);
	cr_assert(wait_flag(&tms[0].fired, 4), "fired %d of 4 times",
		  tms[0].fired);
	loop_free(nl);
	cr_assert_eq(tms[0].fired, 4);
	cr_assert_geq(tms[0].at, tms[0].due);
}

/* drop_if hands over the matching armed timers (at shutdown). */
static bool match_odd(struct nl_timer *t, void *arg)
{
	(void)arg;
	return ((struct tmr *)t - tms) % 2 == 1;
}

static void drop_one(struct nl_timer *t, void *arg)
{
	(*(int *)arg)++;
	((struct tmr *)t)->fired = -1;
}

static void arm_far_run(struct netloop *nl, struct nl_work *wk)
{
	int i;

	(void)wk;
	for (i = 0; i < 5; i++)
		nl_timer_arm(nl, &tms[i].t, 600000, tm_fired);
	bump(&fence_ran);
}

Test(netloop, timer_drop_if_after_stop)
{
	struct netloop *nl = loop_new(NULL, NULL);
	struct nl_work wk;
	int dropped = 0, i;

	memset(tms, 0, sizeof(tms));
	fence_ran = 0;
	cr_assert_eq(nl_start(nl), 0);
	nl_post(nl, &wk, arm_far_run);
	cr_assert(wait_flag(&fence_ran, 1));
	nl_stop(nl);
	nl_timer_drop_if(nl, match_odd, drop_one, &dropped);
	cr_assert_eq(dropped, 2);
	for (i = 0; i < 5; i++) {
		cr_assert_eq(tms[i].fired, i % 2 ? -1 : 0);
		cr_assert_eq(tms[i].t.armed, i % 2 == 0);
	}
	loop_free(nl);
}

/* ---- stop ----------------------------------------------------------- */

#define NQ 200

static struct {
	volatile int gate_in, gate_open;
	int ran[NQ];
	int order[NQ + 2];
	int n;
	int hook_at, late_at; /* positions in order[] */
	struct nl_work late;
	struct nl_work items[NQ];
} st;

static void gate_run(struct netloop *nl, struct nl_work *wk)
{
	(void)nl;
	(void)wk;
	bump(&st.gate_in);
	wait_flag(&st.gate_open, 1); /* the test fails below if not */
}

static void q_run(struct netloop *nl, struct nl_work *wk)
{
	int i = (int)(wk - st.items);

	(void)nl;
	st.ran[i]++;
	st.order[st.n++] = i;
}

static void late_run(struct netloop *nl, struct nl_work *wk)
{
	(void)nl;
	(void)wk;
	st.late_at = st.n;
	st.order[st.n++] = -2;
}

/* ends what is "in flight": its ending posts one more step */
static void hook_stopping(struct netloop *nl)
{
	st.hook_at = st.n;
	st.order[st.n++] = -1;
	nl_post(nl, &st.late, late_run);
}

static void *stopper(void *arg)
{
	nl_stop(arg);
	return NULL;
}

static bool stop_asked(struct netloop *nl)
{
	bool r;

	pthread_mutex_lock(&nl->qlock);
	r = nl->stopping;
	pthread_mutex_unlock(&nl->qlock);
	return r;
}

Test(netloop, stop_runs_queued_work)
{
	static const struct nl_ops ops = { .stopping = hook_stopping };
	struct netloop *nl = loop_new(&ops, NULL);
	struct nl_work gate;
	pthread_t th;
	int64_t end;
	int i;

	memset(&st, 0, sizeof(st));
	st.hook_at = st.late_at = -1;
	cr_assert_eq(nl_start(nl), 0);
	nl_post(nl, &gate, gate_run);
	cr_assert(wait_flag(&st.gate_in, 1));
	/* the loop is busy: all of these are queued when stop is asked */
	for (i = 0; i < NQ; i++)
		nl_post(nl, &st.items[i], q_run);
	cr_assert_eq(pthread_create(&th, NULL, stopper, nl), 0);
	end = nl_now_ms() + WAIT_MS;
	while (!stop_asked(nl) && nl_now_ms() < end)
		usleep(1000);
	cr_assert(stop_asked(nl));
	bump(&st.gate_open);
	pthread_join(th, NULL);
	/* stop returned: everything ran, once, in order; the hook after
	 * the queue, what it posted after the hook */
	cr_assert_eq(st.n, NQ + 2);
	for (i = 0; i < NQ; i++) {
		cr_assert_eq(st.ran[i], 1, "item %d ran %d times", i,
			     st.ran[i]);
		cr_assert_eq(st.order[i], i);
	}
	cr_assert_eq(st.hook_at, NQ);
	cr_assert_eq(st.late_at, NQ + 1);
	cr_assert_not(nl_in_loop(nl));
	loop_free(nl);
}

/* ---- transfers and turns -------------------------------------------- */

static struct {
	volatile int done;
	CURLcode rc;
	bool in_loop, same;
	void *owner;
	CURL *easy;
	int64_t opdl_seen;
} xf;

static void xf_done(struct netloop *nl, CURL *easy, CURLcode rc)
{
	xf.rc = rc;
	xf.in_loop = nl_in_loop(nl);
	xf.owner = nl->owner;
	xf.same = easy == xf.easy;
	curl_multi_remove_handle(nl->multi, easy);
	curl_easy_cleanup(easy);
	xf.easy = NULL;
	bump(&xf.done);
}

static void xf_start(struct netloop *nl, struct nl_work *wk)
{
	(void)wk;
	xf.opdl_seen = nl_deadline(nl);
	xf.easy = curl_easy_init();
	if (!xf.easy)
		return;
	curl_easy_setopt(xf.easy, CURLOPT_URL,
			 "file:///nonexistent/sbxfs-netloop-test");
	if (curl_multi_add_handle(nl->multi, xf.easy) != CURLM_OK)
		xf.easy = NULL;
}

Test(netloop, finished_transfer_goes_to_done)
{
	static const struct nl_ops ops = { .done = xf_done };
	int owner;
	struct netloop *nl = loop_new(&ops, &owner);
	struct nl_work wk;
	int64_t before = nl_now_ms();

	memset(&xf, 0, sizeof(xf));
	cr_assert_eq(nl_start(nl), 0);
	nl_post(nl, &wk, xf_start);
	cr_assert(wait_flag(&xf.done, 1));
	loop_free(nl);
	cr_assert_neq(xf.rc, CURLE_OK);
	cr_assert(xf.in_loop);
	cr_assert(xf.same);
	cr_assert_eq(xf.owner, &owner);
	/* inside a step, a request gets the step's deadline */
	cr_assert_geq(xf.opdl_seen, before + TIMEOUT_MS);
	cr_assert_leq(xf.opdl_seen, nl_now_ms() + TIMEOUT_MS);
}

static struct {
	int fd[2];
	volatile int got, runs;
	int arg;
} tn;

static int64_t turn_run(struct netloop *nl, void *arg)
{
	char c;

	if (nl_in_loop(nl) && arg == &tn.arg)
		tn.runs++;
	if (read(tn.fd[0], &c, 1) == 1 && c == 'x')
		bump(&tn.got);
	return -1;
}

static int turn_fds(struct netloop *nl, void *arg, struct curl_waitfd *fds,
		    int max)
{
	(void)nl;
	(void)arg;
	if (max < 1)
		return 0;
	fds[0].fd = tn.fd[0];
	fds[0].events = CURL_WAIT_POLLIN;
	fds[0].revents = 0;
	return 1;
}

Test(netloop, turn_runs_and_waits_on_its_fds)
{
	static const struct nl_turn turn = { .run = turn_run,
					     .pollfds = turn_fds };
	struct netloop *nl = loop_new(NULL, NULL);
	int i;

	memset(&tn, 0, sizeof(tn));
	cr_assert_eq(pipe2(tn.fd, O_NONBLOCK | O_CLOEXEC), 0);
	for (i = 0; i < NL_TURNS_MAX; i++)
		cr_assert_eq(nl_turn_add(nl, &turn, &tn.arg), 0);
	cr_assert_eq(nl_turn_add(nl, &turn, &tn.arg), -ENOSPC);
	cr_assert_eq(nl_start(nl), 0);
	cr_assert_eq(write(tn.fd[1], "x", 1), 1);
	cr_assert(wait_flag(&tn.got, 1));
	loop_free(nl);
	cr_assert_geq(tn.runs, NL_TURNS_MAX);
	close(tn.fd[0]);
	close(tn.fd[1]);
}
