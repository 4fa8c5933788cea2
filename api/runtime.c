/* runtime.c - one work queue, a worker pool, timers, keyed serial queues
 * (see runtime.h).
 *
 * One mutex guards everything.  `ready` is the FIFO the workers take from.
 * A key with work in flight has an entry in `keys`: while its current item
 * is ready or running the key is `active` and further items wait in its
 * own list (`held`); when the current item returns, the key's next item is
 * appended to `ready`.  So a worker never waits for a key.  The timer
 * thread moves due timers to `ready`, and held items whose deadline passed
 * to `ready` with -ETIMEDOUT (they no longer hold their key's turn).
 * `live` counts every item not yet called; shutdown ends when it is 0.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/runtime.h"

#define RT_BUCKETS 64

static __thread struct rt_item *rt_cur; /* keyed work being called */

struct rt_key;

struct rt_item {
	struct rt_item *next;
	struct rt_key *key; /* set while the item holds its key's turn */
	rt_fn fn;
	void *arg;
	int64_t deadline; /* 0: none */
	int64_t due;	  /* timers */
	uint64_t id;	  /* timers; 0: an rt_again call of keyed work */
	int64_t again;	  /* rt_again: >= 0 */
	int err;
};

struct rt_key {
	struct rt_key *next; /* bucket chain */
	bool active;	     /* an item of this key is ready or running */
	struct rt_item *head, *tail; /* held behind the active one */
	char name[];
};

struct rt {
	pthread_mutex_t mu;
	pthread_cond_t work_cv;	 /* ready not empty, or the end */
	pthread_cond_t timer_cv; /* timers or deadlines changed */
	struct rt_item *rhead, *rtail;
	struct rt_item *timers; /* sorted by due */
	struct rt_key *keys[RT_BUCKETS];
	bool stopping;
	unsigned long live;
	uint64_t next_id;
	struct rt_stats st;
	unsigned nthr;
	pthread_t timer_thr;
	pthread_t thr[];
};

int64_t rt_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static unsigned rt_hash(const char *s)
{
	unsigned h = 2166136261u;

	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 16777619u;
	return h % RT_BUCKETS;
}

static struct rt_key **key_slot(struct rt *rt, const char *name)
{
	struct rt_key **pp = &rt->keys[rt_hash(name)];

	while (*pp && strcmp((*pp)->name, name))
		pp = &(*pp)->next;
	return pp;
}

static void push_ready(struct rt *rt, struct rt_item *it)
{
	it->next = NULL;
	if (rt->rtail)
		rt->rtail->next = it;
	else
		rt->rhead = it;
	rt->rtail = it;
	rt->st.queued++;
	pthread_cond_signal(&rt->work_cv);
}

/* The key's current item returned: its next one, or the key goes. */
static void key_next(struct rt *rt, struct rt_key *k)
{
	struct rt_item *it = k->head;

	if (it) {
		k->head = it->next;
		if (!k->head)
			k->tail = NULL;
		rt->st.held--;
		it->key = k;
		push_ready(rt, it);
		return;
	}
	struct rt_key **pp = key_slot(rt, k->name);
	*pp = k->next;
	free(k);
}

static void *rt_worker(void *arg)
{
	struct rt *rt = arg;

	pthread_mutex_lock(&rt->mu);
	for (;;) {
		while (!rt->rhead && !(rt->stopping && rt->live == 0))
			pthread_cond_wait(&rt->work_cv, &rt->mu);
		struct rt_item *it = rt->rhead;
		if (!it)
			break;
		rt->rhead = it->next;
		if (!rt->rhead)
			rt->rtail = NULL;
		rt->st.queued--;
		if (!it->err && it->deadline && rt_now_ms() >= it->deadline)
			it->err = -ETIMEDOUT;
		if (it->err == -ETIMEDOUT)
			rt->st.expired++;
		rt->st.running++;
		it->again = -1;
		rt_cur = it->key && !it->err ? it : NULL;
		pthread_mutex_unlock(&rt->mu);
		it->fn(it->arg, it->err);
		rt_cur = NULL;
		pthread_mutex_lock(&rt->mu);
		rt->st.running--;
		rt->st.done++;
		if (it->again >= 0) {
			/* called again later, still holding its key */
			struct rt_item **pp;
			it->due = rt_now_ms() + it->again;
			it->deadline = 0;
			it->id = 0;
			for (pp = &rt->timers; *pp && (*pp)->due <= it->due;
			     pp = &(*pp)->next)
				;
			it->next = *pp;
			*pp = it;
			rt->st.timers++;
			if (rt->timers == it)
				pthread_cond_signal(&rt->timer_cv);
			continue;
		}
		if (it->key)
			key_next(rt, it->key);
		free(it);
		if (--rt->live == 0 && rt->stopping) {
			pthread_cond_broadcast(&rt->work_cv);
			pthread_cond_signal(&rt->timer_cv);
		}
	}
	pthread_mutex_unlock(&rt->mu);
	return NULL;
}

/* Held items past their deadline leave their key's list with -ETIMEDOUT;
 * returns the earliest deadline still held (0: none). */
static int64_t expire_held(struct rt *rt, int64_t now)
{
	int64_t next = 0;

	for (int b = 0; b < RT_BUCKETS; b++) {
		for (struct rt_key *k = rt->keys[b]; k; k = k->next) {
			struct rt_item **pp = &k->head, *prev = NULL;
			while (*pp) {
				struct rt_item *it = *pp;
				if (!it->deadline || it->deadline > now) {
					if (it->deadline &&
					    (!next || it->deadline < next))
						next = it->deadline;
					prev = it;
					pp = &it->next;
					continue;
				}
				*pp = it->next;
				if (k->tail == it)
					k->tail = prev;
				rt->st.held--;
				it->err = -ETIMEDOUT;
				push_ready(rt, it);
			}
		}
	}
	return next;
}

static void *rt_timer_main(void *arg)
{
	struct rt *rt = arg;

	pthread_mutex_lock(&rt->mu);
	while (!(rt->stopping && rt->live == 0)) {
		int64_t now = rt_now_ms(), next;

		/* at shutdown timers fire at once, with -ESHUTDOWN; work
		 * that asked to be called again keeps its time */
		for (struct rt_item **pp = &rt->timers; rt->stopping && *pp;) {
			struct rt_item *t = *pp;
			if (!t->id) {
				pp = &t->next;
				continue;
			}
			*pp = t->next;
			rt->st.timers--;
			t->err = -ESHUTDOWN;
			push_ready(rt, t);
		}
		while (rt->timers && rt->timers->due <= now) {
			struct rt_item *t = rt->timers;
			rt->timers = t->next;
			rt->st.timers--;
			t->err = 0;
			push_ready(rt, t);
		}
		next = expire_held(rt, now);
		if (rt->timers && (!next || rt->timers->due < next))
			next = rt->timers->due;
		if (!next) {
			pthread_cond_wait(&rt->timer_cv, &rt->mu);
		} else {
			struct timespec ts = {
				.tv_sec = (time_t)(next / 1000),
				.tv_nsec = (long)(next % 1000) * 1000000,
			};
			pthread_cond_timedwait(&rt->timer_cv, &rt->mu, &ts);
		}
	}
	pthread_mutex_unlock(&rt->mu);
	return NULL;
}

struct rt *rt_new(unsigned nworkers)
{
	pthread_condattr_t ca;
	struct rt *rt;
	int e;

	if (nworkers < 1)
		nworkers = 1;
	rt = calloc(1, sizeof(*rt) + nworkers * sizeof(pthread_t));
	if (!rt)
		return NULL;
	pthread_mutex_init(&rt->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&rt->timer_cv, &ca);
	pthread_condattr_destroy(&ca);
	pthread_cond_init(&rt->work_cv, NULL);
	e = pthread_create(&rt->timer_thr, NULL, rt_timer_main, rt);
	if (e)
		goto fail;
	for (unsigned i = 0; i < nworkers; i++) {
		e = pthread_create(&rt->thr[i], NULL, rt_worker, rt);
		if (e)
			break;
		rt->nthr++;
	}
	rt->st.workers = rt->nthr;
	if (rt->nthr)
		return rt;
	pthread_mutex_lock(&rt->mu);
	rt->stopping = true;
	pthread_cond_signal(&rt->timer_cv);
	pthread_mutex_unlock(&rt->mu);
	pthread_join(rt->timer_thr, NULL);
fail:
	pthread_cond_destroy(&rt->work_cv);
	pthread_cond_destroy(&rt->timer_cv);
	pthread_mutex_destroy(&rt->mu);
	free(rt);
	errno = e;
	return NULL;
}

void rt_free(struct rt *rt)
{
	if (!rt)
		return;
	pthread_mutex_lock(&rt->mu);
	rt->stopping = true;
	pthread_cond_broadcast(&rt->work_cv);
	pthread_cond_signal(&rt->timer_cv);
	pthread_mutex_unlock(&rt->mu);
	pthread_join(rt->timer_thr, NULL);
	for (unsigned i = 0; i < rt->nthr; i++)
		pthread_join(rt->thr[i], NULL);
	pthread_cond_destroy(&rt->work_cv);
	pthread_cond_destroy(&rt->timer_cv);
	pthread_mutex_destroy(&rt->mu);
	free(rt);
}

int rt_submit(struct rt *rt, const char *key, int64_t deadline_ms, rt_fn fn,
	      void *arg)
{
	struct rt_item *it = calloc(1, sizeof(*it));
	struct rt_key *k = NULL;

	if (!it)
		return -ENOMEM;
	it->fn = fn;
	it->arg = arg;
	it->deadline = deadline_ms;
	pthread_mutex_lock(&rt->mu);
	if (rt->stopping) {
		pthread_mutex_unlock(&rt->mu);
		free(it);
		return -ESHUTDOWN;
	}
	if (key) {
		struct rt_key **pp = key_slot(rt, key);
		k = *pp;
		if (!k) {
			size_t n = strlen(key) + 1;
			k = malloc(sizeof(*k) + n);
			if (!k) {
				pthread_mutex_unlock(&rt->mu);
				free(it);
				return -ENOMEM;
			}
			memset(k, 0, sizeof(*k));
			memcpy(k->name, key, n);
			*pp = k;
		}
	}
	rt->live++;
	if (k && k->active) {
		if (k->tail)
			k->tail->next = it;
		else
			k->head = it;
		k->tail = it;
		rt->st.held++;
		if (deadline_ms)
			pthread_cond_signal(&rt->timer_cv);
	} else {
		if (k) {
			k->active = true;
			it->key = k;
		}
		push_ready(rt, it);
	}
	pthread_mutex_unlock(&rt->mu);
	return 0;
}

uint64_t rt_after(struct rt *rt, int64_t ms, rt_fn fn, void *arg)
{
	struct rt_item *t = calloc(1, sizeof(*t)), **pp;
	uint64_t id;

	if (!t)
		return 0;
	t->fn = fn;
	t->arg = arg;
	t->due = rt_now_ms() + (ms > 0 ? ms : 0);
	pthread_mutex_lock(&rt->mu);
	if (rt->stopping) {
		pthread_mutex_unlock(&rt->mu);
		free(t);
		return 0;
	}
	id = t->id = ++rt->next_id;
	for (pp = &rt->timers; *pp && (*pp)->due <= t->due; pp = &(*pp)->next)
		;
	t->next = *pp;
	*pp = t;
	rt->st.timers++;
	rt->live++;
	if (rt->timers == t)
		pthread_cond_signal(&rt->timer_cv);
	pthread_mutex_unlock(&rt->mu);
	return id;
}

bool rt_again(int64_t ms)
{
	if (!rt_cur)
		return false;
	rt_cur->again = ms > 0 ? ms : 0;
	return true;
}

bool rt_cancel(struct rt *rt, uint64_t id)
{
	struct rt_item **pp, *t = NULL;

	if (!id)
		return false;
	pthread_mutex_lock(&rt->mu);
	for (pp = &rt->timers; *pp; pp = &(*pp)->next) {
		if ((*pp)->id == id) {
			t = *pp;
			*pp = t->next;
			rt->st.timers--;
			if (--rt->live == 0 && rt->stopping) {
				pthread_cond_broadcast(&rt->work_cv);
				pthread_cond_signal(&rt->timer_cv);
			}
			break;
		}
	}
	pthread_mutex_unlock(&rt->mu);
	free(t);
	return t != NULL;
}

bool rt_key_busy(struct rt *rt, const char *key)
{
	pthread_mutex_lock(&rt->mu);
	bool r = *key_slot(rt, key) != NULL;
	pthread_mutex_unlock(&rt->mu);
	return r;
}

void rt_stats(struct rt *rt, struct rt_stats *st)
{
	pthread_mutex_lock(&rt->mu);
	*st = rt->st;
	pthread_mutex_unlock(&rt->mu);
}
