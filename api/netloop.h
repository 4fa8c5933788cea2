/* netloop.h - the service loop of the remote backends (Wrenn, CW Sandbox).
 *
 * One thread per backend owns a curl multi handle and sleeps in
 * curl_multi_poll().  Other threads hand it work with nl_post(), which
 * queues an item and wakes the thread (curl_multi_wakeup); the woken
 * thread runs the whole queue, in the order posted.  Timers are a short
 * list checked on every turn.  A backend adds what is its own through
 * struct nl_ops (a finished transfer, the stop) and turns (nl_turn_add:
 * work to run on every turn, extra descriptors to wait on).
 *
 * Deadlines: -o timeout= bounds a whole user operation, however many
 * steps and requests it takes.  nl_post() stamps an item posted from
 * another thread with now + timeout_ms (a new operation); one posted by
 * a step running on the loop inherits that step's deadline.  While an
 * item runs, op_deadline holds its deadline (0 outside any operation;
 * timers run with 0 and start their own); backends carry it through
 * their request callbacks by saving and restoring op_deadline.
 *
 * Threading: nl_post() from any thread (until nl_stop); everything else
 * from the loop thread, or after nl_stop has returned.
 */
#ifndef SBXFS_NETLOOP_H
#define SBXFS_NETLOOP_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <curl/curl.h>

struct netloop;

/* One queued unit of work; embedded in the structure it belongs to. */
struct nl_work {
	struct nl_work *next;
	void (*fn)(struct netloop *nl, struct nl_work *wk);
	int64_t deadline; /* of the user operation it belongs to */
};

/* A one-shot timer (loop thread only). */
struct nl_timer {
	struct nl_timer *next;
	int64_t due_ms; /* monotonic */
	void (*fn)(struct netloop *nl, struct nl_timer *t);
	bool armed;
};

/* Work that must run on every turn of the loop (WebSocket service,
 * keep-alive pings).  arg is the one given to nl_turn_add. */
struct nl_turn {
	/* Run what is due; return ms until it wants to run again, or -1. */
	int64_t (*run)(struct netloop *nl, void *arg);
	/* Extra descriptors to wait on; returns the count (<= max).  May be
	 * NULL.  While there are any, the loop looks in every 100 ms. */
	int (*pollfds)(struct netloop *nl, void *arg, struct curl_waitfd *fds,
		       int max);
};

/* What the backend adds (either may be NULL). */
struct nl_ops {
	/* A transfer of the multi handle ended (CURLMSG_DONE). */
	void (*done)(struct netloop *nl, CURL *easy, CURLcode rc);
	/* On the loop thread once nl_stop was asked, after the queue ran
	 * empty and before it runs the last time: end what is in flight. */
	void (*stopping)(struct netloop *nl);
};

#define NL_TURNS_MAX 4
#define NL_POLLFDS_MAX 64

struct netloop {
	CURLM *multi;	/* the backend adds its transfers here (loop) */
	void *owner;	/* the backend's state, for the callbacks */
	int64_t timeout_ms;
	/* Loop only: the deadline of the operation whose step runs now
	 * (0: none).  Backends save, set and restore it around the
	 * callbacks of a request so that its follow-ups share the bound. */
	int64_t op_deadline;

	/* ---- private ---- */
	const struct nl_ops *ops;
	pthread_t thr;
	bool thr_started;
	pthread_mutex_t qlock;
	struct nl_work *qhead, *qtail;
	bool stopping;
	struct {
		const struct nl_turn *t;
		void *arg;
	} turns[NL_TURNS_MAX];
	int nturns;
	struct nl_timer *timers;
};

int64_t nl_now_ms(void); /* CLOCK_MONOTONIC */

/* Make the multi handle; 0 or -ENOMEM.  ops may be NULL. */
int nl_init(struct netloop *nl, void *owner, const struct nl_ops *ops,
	    int64_t timeout_ms);
/* After nl_stop (or without nl_start): clean the multi handle up.  Safe
 * on a zeroed netloop that nl_init never set up. */
void nl_destroy(struct netloop *nl);
/* Add a turn (before nl_start); turns run in the order added.  -ENOSPC
 * when NL_TURNS_MAX are there. */
int nl_turn_add(struct netloop *nl, const struct nl_turn *t, void *arg);
/* Start the service thread: 0 or -EAGAIN. */
int nl_start(struct netloop *nl);
/* Stop and join the service thread: every item posted before the call
 * runs (ops->stopping first ends what is in flight; items those
 * endings post run too); timers still armed do not fire (see
 * nl_timer_drop_if).  No callback runs after it returns. */
void nl_stop(struct netloop *nl);

/* True on the service thread; true from nl_start until nl_stop. */
bool nl_in_loop(const struct netloop *nl);
bool nl_started(const struct netloop *nl);
/* The deadline a new request of the current operation gets. */
int64_t nl_deadline(const struct netloop *nl);
/* ms less what the running operation spent of its own bound already (at
 * least 1; ms as is outside an operation or off the loop). */
int64_t nl_op_left(const struct netloop *nl, int64_t ms);

/* Queue wk->fn(nl, wk) on the service thread (any thread). */
void nl_post(struct netloop *nl, struct nl_work *wk,
	     void (*fn)(struct netloop *nl, struct nl_work *wk));
/* Loop thread: arm t to fire in ms milliseconds (re-arming moves it). */
void nl_timer_arm(struct netloop *nl, struct nl_timer *t, int64_t ms,
		  void (*fn)(struct netloop *nl, struct nl_timer *t));
void nl_timer_cancel(struct netloop *nl, struct nl_timer *t);
/* Disarm every timer for which match(t, arg) is true and hand each to
 * drop(t, arg) (at shutdown, after nl_stop). */
void nl_timer_drop_if(struct netloop *nl,
		      bool (*match)(struct nl_timer *t, void *arg),
		      void (*drop)(struct nl_timer *t, void *arg), void *arg);

#endif
