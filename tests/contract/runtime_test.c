/* runtime_test.c - api/runtime.c: keyed serial queues, deadlines, timers,
 * shutdown.  Waits are on conditions, bounded. */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <criterion/criterion.h>

#include "api/runtime.h"

#define RW_WAIT_MS 10000

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;

struct job {
	int id;
	int err;
	bool called;
	int calls;
	int64_t at;
	bool *gate; /* hold the worker until *gate */
	int *log, *nlog;
};

static void job_fn(void *arg, int err)
{
	struct job *j = arg;

	pthread_mutex_lock(&mu);
	while (!err && j->gate && !*j->gate)
		pthread_cond_wait(&cv, &mu);
	j->err = err;
	j->called = true;
	j->calls++;
	j->at = rt_now_ms();
	if (j->log)
		j->log[(*j->nlog)++] = j->id;
	pthread_cond_broadcast(&cv);
	pthread_mutex_unlock(&mu);
}

static bool wait_called(struct job *j)
{
	int64_t end = rt_now_ms() + RW_WAIT_MS;

	pthread_mutex_lock(&mu);
	while (!j->called && rt_now_ms() < end) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 10 * 1000000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&cv, &mu, &ts);
	}
	bool r = j->called;
	pthread_mutex_unlock(&mu);
	return r;
}

static void open_gate(bool *g)
{
	pthread_mutex_lock(&mu);
	*g = true;
	pthread_cond_broadcast(&cv);
	pthread_mutex_unlock(&mu);
}

/* Work of a held key waits without a worker: other keys go on. */
Test(runtime, busy_key_holds_no_worker)
{
	struct rt *rt = rt_new(2);
	bool gate = false;
	int log[8], nlog = 0;
	struct job a0 = {.id = 0, .gate = &gate, .log = log, .nlog = &nlog};
	struct job a[4], b = {.id = 9, .log = log, .nlog = &nlog};

	cr_assert_not_null(rt);
	cr_assert_eq(rt_submit(rt, "A", 0, job_fn, &a0), 0);
	for (int i = 0; i < 4; i++) {
		a[i] = (struct job){.id = i + 1, .log = log, .nlog = &nlog};
		cr_assert_eq(rt_submit(rt, "A", 0, job_fn, &a[i]), 0);
	}
	cr_assert_eq(rt_submit(rt, "B", 0, job_fn, &b), 0);
	cr_assert(wait_called(&b), "B waited for A's key");
	cr_expect(rt_key_busy(rt, "A"));
	struct rt_stats st;
	rt_stats(rt, &st);
	/* A's four wait behind its key, not on the ready queue (B's worker
	 * may still be on its way back: `running` is 1 or 2) */
	cr_expect_eq(st.held, 4, "held %u", st.held);
	cr_expect_eq(st.queued, 0, "queued %u", st.queued);
	open_gate(&gate);
	cr_assert(wait_called(&a[3]));
	/* B first, then A's in submission order */
	int want[] = {9, 0, 1, 2, 3, 4};
	for (int i = 0; i < 6; i++)
		cr_expect_eq(log[i], want[i], "log[%d] = %d", i, log[i]);
	rt_free(rt);
	cr_expect_eq(a0.calls + a[0].calls + a[3].calls + b.calls, 4);
}

/* A held item whose deadline passes is called with -ETIMEDOUT then, while
 * its key is still held; the key's later work still runs in order. */
Test(runtime, deadline_while_key_held)
{
	struct rt *rt = rt_new(2);
	bool gate = false;
	struct job h = {.gate = &gate}, late = {0}, after = {0};
	int64_t t0 = rt_now_ms();

	cr_assert_eq(rt_submit(rt, "A", 0, job_fn, &h), 0);
	cr_assert_eq(rt_submit(rt, "A", t0 + 200, job_fn, &late), 0);
	cr_assert_eq(rt_submit(rt, "A", 0, job_fn, &after), 0);
	cr_assert(wait_called(&late));
	cr_expect_eq(late.err, -ETIMEDOUT);
	cr_expect_geq(late.at - t0, 190, "expired after %lld ms",
		      (long long)(late.at - t0));
	cr_expect_lt(late.at - t0, 2000);
	cr_expect(!h.called && !after.called);
	open_gate(&gate);
	cr_assert(wait_called(&after));
	cr_expect_eq(after.err, 0);
	struct rt_stats st;
	rt_stats(rt, &st);
	cr_expect_eq(st.expired, 1);
	rt_free(rt);
}

/* Timers fire in order, cancel stops one, shutdown fires the rest with
 * -ESHUTDOWN and lets queued work run: every function once. */
Test(runtime, timers_cancel_shutdown)
{
	struct rt *rt = rt_new(1);
	struct job t1 = {0}, t2 = {0}, t3 = {0}, far = {0}, q = {0};
	int64_t t0 = rt_now_ms();

	uint64_t id1 = rt_after(rt, 100, job_fn, &t1);
	uint64_t id2 = rt_after(rt, 50, job_fn, &t2);
	uint64_t id3 = rt_after(rt, 80, job_fn, &t3);
	uint64_t idf = rt_after(rt, 600000, job_fn, &far);
	cr_assert(id1 && id2 && id3 && idf);
	cr_expect(rt_cancel(rt, id3));
	cr_assert(wait_called(&t1));
	cr_expect(t2.called && t2.at <= t1.at);
	cr_expect_geq(t1.at - t0, 95);
	cr_expect(!rt_cancel(rt, id1), "a fired timer cancelled");
	cr_assert_eq(rt_submit(rt, "k", 0, job_fn, &q), 0);
	rt_free(rt);
	cr_expect(!t3.called);
	cr_expect_eq(far.calls, 1);
	cr_expect_eq(far.err, -ESHUTDOWN);
	cr_expect_eq(q.calls, 1);
	cr_expect_eq(q.err, 0);
}

/* Many keys, many items: each key's work in order, nothing lost. */
#define NK 16
#define NI 200
static int seen[NK];
static int bad;

static void order_fn(void *arg, int err)
{
	int v = (int)(intptr_t)arg, k = v / NI, i = v % NI;

	pthread_mutex_lock(&mu);
	if (err || seen[k] != i)
		bad++;
	seen[k] = i + 1;
	pthread_mutex_unlock(&mu);
}

Test(runtime, many_keys_in_order)
{
	struct rt *rt = rt_new(3);
	char key[16];

	for (int i = 0; i < NI; i++)
		for (int k = 0; k < NK; k++) {
			snprintf(key, sizeof(key), "k%d", k);
			cr_assert_eq(rt_submit(rt, key, 0, order_fn,
					       (void *)(intptr_t)(k * NI + i)),
				     0);
		}
	rt_free(rt);
	cr_expect_eq(bad, 0);
	for (int k = 0; k < NK; k++)
		cr_expect_eq(seen[k], NI);
}

Test(runtime, free_when_idle)
{
	struct rt *rt = rt_new(1);

	cr_assert_not_null(rt);
	rt_free(rt); /* nothing queued: returns at once */
}

/* Keyed work that asks to be called again keeps its key but no worker:
 * with one worker, other keys' work runs between its calls, and its own
 * key's next item waits until it is done. */
static int again_left = 5, again_calls;
static int64_t again_first, again_last;

static void again_fn(void *arg, int err)
{
	(void)arg;
	pthread_mutex_lock(&mu);
	if (!again_calls++)
		again_first = rt_now_ms();
	again_last = rt_now_ms();
	if (!err && again_left-- > 0)
		cr_expect(rt_again(40));
	pthread_cond_broadcast(&cv);
	pthread_mutex_unlock(&mu);
}

Test(runtime, again_holds_key_not_worker)
{
	struct rt *rt = rt_new(1);
	struct job other = {0}, next = {0};

	cr_expect(!rt_again(10), "rt_again outside keyed work");
	cr_assert_eq(rt_submit(rt, "A", 0, again_fn, NULL), 0);
	cr_assert_eq(rt_submit(rt, "A", 0, job_fn, &next), 0);
	cr_assert_eq(rt_submit(rt, "B", 0, job_fn, &other), 0);
	cr_assert(wait_called(&other), "B waited for A's calls");
	pthread_mutex_lock(&mu);
	int calls = again_calls;
	pthread_mutex_unlock(&mu);
	cr_expect_lt(calls, 6, "B ran only after all of A's calls");
	cr_expect(rt_key_busy(rt, "A"));
	cr_assert(wait_called(&next));
	cr_expect_eq(again_calls, 6);
	cr_expect_geq(next.at, again_last);
	cr_expect_geq(again_last - again_first, 5 * 40 - 5);
	rt_free(rt);
}
