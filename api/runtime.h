/* runtime.h - one work queue, a small worker pool, timers and keyed serial
 * queues, for backends whose work blocks (mounts, forks, freezing, copying:
 * the local backend).  Nothing here waits on a platform; a caller (a FUSE
 * thread) only ever enqueues.
 *
 * Work runs on one of `nworkers` threads, in submission order.  Work
 * submitted under a key (a sandbox's name) runs one at a time per key, in
 * submission order for that key; a worker never waits for a busy key: the
 * key's next item is put on the queue only when the current one returns,
 * and meanwhile the workers take other work.  Every function is called
 * exactly once, with err:
 *   0            run it;
 *   -ETIMEDOUT   its deadline passed before it could start (it waited
 *                behind its key, or for a worker); it must only complete
 *                its caller with that error and free what it owns;
 *   -ESHUTDOWN   a timer whose runtime is being freed.
 * rt_free() returns only once every function has been called: no call
 * after free.
 */
#ifndef SBXFS_RUNTIME_H
#define SBXFS_RUNTIME_H

#include <stdbool.h>
#include <stdint.h>

struct rt;
typedef void (*rt_fn)(void *arg, int err);

/* CLOCK_MONOTONIC in milliseconds: the clock of deadlines and timers. */
int64_t rt_now_ms(void);

/* A runtime with `nworkers` threads (at least 1) and one timer thread.
 * NULL on failure (errno set). */
struct rt *rt_new(unsigned nworkers);

/* Refuse new work (-ESHUTDOWN), fire pending timers with -ESHUTDOWN, let
 * queued work run (keyed work still in order, deadlines still checked),
 * then join the threads and free.  Work running when it is called may not
 * submit more.  Not from a worker. */
void rt_free(struct rt *rt);

/* Queue fn(arg, err).  `key` (copied; NULL: none) serialises it with the
 * other work of that key.  `deadline_ms` (rt_now_ms() clock; 0: none):
 * not started by then, it is called with -ETIMEDOUT at that moment, even
 * while its key is still held.  0, or -ENOMEM / -ESHUTDOWN (then fn is
 * never called). */
int rt_submit(struct rt *rt, const char *key, int64_t deadline_ms, rt_fn fn,
	      void *arg);

/* From inside keyed work only: when this call of fn returns, keep the
 * key and call fn(arg, 0) again after `ms` milliseconds (no worker is
 * held meanwhile: how work that waits for something, such as processes
 * to end, waits).  At shutdown it is still called, at its time.  false
 * (nothing changes) outside keyed work. */
bool rt_again(int64_t ms);

/* Call fn(arg, 0) on a worker after `ms` milliseconds (-ESHUTDOWN when
 * the runtime is freed first).  Returns a timer id (> 0), or 0 when it
 * could not be set (then fn is never called). */
uint64_t rt_after(struct rt *rt, int64_t ms, rt_fn fn, void *arg);

/* Cancel a timer.  true: fn will never be called; false: it was called,
 * is being called or is queued to be (the id is unknown).  Ids are never
 * reused, so cancelling a fired timer is safe. */
bool rt_cancel(struct rt *rt, uint64_t id);

/* True while work of `key` runs or waits. */
bool rt_key_busy(struct rt *rt, const char *key);

/* Counters, for tests and logs. */
struct rt_stats {
	unsigned workers;	 /* threads */
	unsigned running;	 /* functions being called now */
	unsigned queued;	 /* ready to run, waiting for a worker */
	unsigned held;		 /* keyed work waiting behind its key */
	unsigned timers;	 /* pending timers and rt_again calls */
	unsigned long long done; /* calls made so far */
	unsigned long long expired; /* of which with -ETIMEDOUT */
};
void rt_stats(struct rt *rt, struct rt_stats *st);

#endif
