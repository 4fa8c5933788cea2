/* poll.c - sets of poll handles waiting for a change (status, job
 * streams).  The owner of a set protects it with its own lock. */
#include <poll.h>
#include <stdlib.h>

#include "fs/fs_int.h"

/* A set is a singly linked list; the head pointer is the set. */
struct fs_pollers {
	struct fuse_pollhandle *ph;
	struct fs_pollers *next;
};

/* A process that polls in a loop registers a handle each time; bound the
 * set so a busy poller cannot grow it forever (the oldest gets a spurious
 * wake-up, which poll() callers must tolerate anyway). */
#define FS_POLLERS_MAX 1024

void fs_pollers_add(struct fs_pollers **set, struct fuse_pollhandle *ph)
{
	struct fs_pollers *p = malloc(sizeof *p);
	size_t n = 0;

	if (!ph) {
		free(p);
		return;
	}
	if (!p) {
		fuse_lowlevel_notify_poll(ph);
		fuse_pollhandle_destroy(ph);
		return;
	}
	p->ph = ph;
	p->next = *set;
	*set = p;
	for (struct fs_pollers **q = set; *q; q = &(*q)->next) {
		if (++n > FS_POLLERS_MAX) {
			struct fs_pollers *old = *q;

			*q = NULL;
			while (old) {
				struct fs_pollers *nx = old->next;

				fuse_lowlevel_notify_poll(old->ph);
				fuse_pollhandle_destroy(old->ph);
				free(old);
				old = nx;
			}
			break;
		}
	}
}

void fs_pollers_wake(struct fs_pollers **set)
{
	struct fs_pollers *p = *set;

	*set = NULL;
	while (p) {
		struct fs_pollers *nx = p->next;

		fuse_lowlevel_notify_poll(p->ph);
		fuse_pollhandle_destroy(p->ph);
		free(p);
		p = nx;
	}
}

void fs_pollers_free(struct fs_pollers **set)
{
	struct fs_pollers *p = *set;

	*set = NULL;
	while (p) {
		struct fs_pollers *nx = p->next;

		fuse_pollhandle_destroy(p->ph);
		free(p);
		p = nx;
	}
}
