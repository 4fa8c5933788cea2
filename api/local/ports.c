/* ports.c - NAME/ports/PORT of the local runtime.
 *
 * A sandbox made with network=host shares this machine's network: the
 * service is at 127.0.0.1:PORT already.  One with a network of its own
 * (the default: loopback only, nothing routed) is reached through a
 * forwarder: a listener on 127.0.0.1 (ephemeral port, never another
 * address) whose accepted connections are joined, byte for byte, to a
 * connection to 127.0.0.1:PORT made from inside the sandbox's network
 * namespace (a socket created by this thread after setns into
 * /proc/INIT/ns/net, then setns back).  One thread per forwarder polls the
 * listener and its connections; it ends once the sandbox is gone (checked
 * every second) or the backend is freed (local_ports_fini).  The sandbox
 * init is looked up at each accept, so a stop/start keeps the URL. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "api/local/local_core.h"

#define FWD_CONNS 32
#define FWD_BUF 16384

struct pipe_half {	/* one direction: from -> to */
	char buf[FWD_BUF];
	size_t len, off;
	bool eof;	/* from said EOF (or failed) */
	bool shut;	/* to was shut down for writing */
};

struct conn {
	int host, sb;	 /* accepted client, socket in the sandbox */
	bool connecting; /* sb's connect in progress */
	struct pipe_half up, down; /* host -> sb, sb -> host */
};

struct fwd {
	struct local *l;
	char name[64];
	unsigned port, hport;
	int lfd, evfd;
	pthread_t thr;
	bool done; /* (fwd_mu) the thread ended */
	struct conn *c[FWD_CONNS];
	struct fwd *next;
};

static pthread_mutex_t fwd_mu = PTHREAD_MUTEX_INITIALIZER;
static struct fwd *fwds;

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void conn_free(struct conn *c)
{
	if (!c)
		return;
	if (c->host >= 0)
		close(c->host);
	if (c->sb >= 0)
		close(c->sb);
	free(c);
}

/* A socket in the sandbox's network namespace, connecting to PORT on its
 * loopback (non-blocking).  -1 when the sandbox is not running. */
static int sb_connect(struct fwd *f, bool *connecting)
{
	char path[64], msg[160];
	struct sockaddr_in a = { .sin_family = AF_INET };
	pid_t pid;
	bool host;
	int ns, self, s = -1;

	if (local_sb_net(f->l, f->name, &pid, &host, msg, sizeof(msg)))
		return -1;
	snprintf(path, sizeof(path), "/proc/%d/ns/net", (int)pid);
	ns = open(path, O_RDONLY | O_CLOEXEC);
	self = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
	if (ns >= 0 && self >= 0 && setns(ns, CLONE_NEWNET) == 0) {
		s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
			   0);
		if (setns(self, CLONE_NEWNET)) {
			/* never stay in the sandbox's network */
			api_log("local: ports: cannot leave the network of "
				"'%s': %s", f->name, strerror(errno));
			abort();
		}
	}
	if (ns >= 0)
		close(ns);
	if (self >= 0)
		close(self);
	if (s < 0)
		return -1;
	a.sin_port = htons((unsigned short)f->port);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	*connecting = false;
	if (connect(s, (struct sockaddr *)&a, sizeof(a))) {
		if (errno != EINPROGRESS) {
			close(s);
			return -1;
		}
		*connecting = true;
	}
	return s;
}

static void fwd_accept(struct fwd *f)
{
	int h = accept4(f->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	struct conn *c;
	int i;

	if (h < 0)
		return;
	for (i = 0; i < FWD_CONNS && f->c[i]; i++)
		;
	c = i < FWD_CONNS ? calloc(1, sizeof(*c)) : NULL;
	if (!c) {
		close(h);
		return;
	}
	c->host = h;
	c->sb = sb_connect(f, &c->connecting);
	if (c->sb < 0) {
		conn_free(c); /* the client sees the connection closed */
		return;
	}
	f->c[i] = c;
}

/* Move bytes one way; false when the connection must end. */
static bool half_io(struct pipe_half *p, int from, int to, short rev_from,
		    short rev_to)
{
	if (p->len == 0 && !p->eof && (rev_from & (POLLIN | POLLHUP |
						   POLLERR))) {
		ssize_t n = read(from, p->buf, sizeof(p->buf));

		if (n > 0) {
			p->len = (size_t)n;
			p->off = 0;
		} else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
			p->eof = true;
		}
	}
	if (p->len && (rev_to & (POLLOUT | POLLERR | POLLHUP))) {
		ssize_t n = send(to, p->buf + p->off, p->len, MSG_NOSIGNAL);

		if (n > 0) {
			p->off += (size_t)n;
			p->len -= (size_t)n;
		} else if (n < 0 && errno != EAGAIN && errno != EINTR) {
			return false;
		}
	}
	if (p->eof && !p->len && !p->shut) {
		shutdown(to, SHUT_WR);
		p->shut = true;
	}
	return true;
}

static void *fwd_thread(void *arg)
{
	struct fwd *f = arg;
	struct pollfd pf[2 + 2 * FWD_CONNS];
	int at[2 + 2 * FWD_CONNS];
	double next_check = now_s() + 1.0;

	for (;;) {
		int n = 0;

		pf[n++] = (struct pollfd){ .fd = f->evfd, .events = POLLIN };
		pf[n++] = (struct pollfd){ .fd = f->lfd, .events = POLLIN };
		for (int i = 0; i < FWD_CONNS; i++) {
			struct conn *c = f->c[i];
			short eh = 0, es = 0;

			if (!c)
				continue;
			if (c->connecting) {
				es = POLLOUT;
			} else {
				if (!c->up.len && !c->up.eof)
					eh |= POLLIN;
				if (c->down.len)
					eh |= POLLOUT;
				if (!c->down.len && !c->down.eof)
					es |= POLLIN;
				if (c->up.len)
					es |= POLLOUT;
			}
			/* a descriptor with nothing to wait for is left out
			 * (fd -1): its POLLHUP would wake poll at once, over
			 * and over, while the other side cannot take data */
			at[n] = i;
			pf[n++] = (struct pollfd){ .fd = eh ? c->host : -1,
						   .events = eh };
			at[n] = i;
			pf[n++] = (struct pollfd){ .fd = es ? c->sb : -1,
						   .events = es };
		}
		int r = poll(pf, (nfds_t)n, 1000);
		if (r < 0 && errno != EINTR)
			break;
		if (pf[0].revents)
			break; /* local_ports_fini */
		if (now_s() >= next_check) {
			char root[PATH_MAX];

			next_check = now_s() + 1.0;
			if (local_sb_root(f->l, f->name, root, sizeof(root)))
				break; /* the sandbox is gone */
		}
		if (r <= 0)
			continue;
		for (int k = 2; k < n; k += 2) {
			struct conn *c = f->c[at[k]];
			short rh = pf[k].revents, rs = pf[k + 1].revents;
			bool ok = true;

			if (c->connecting) {
				int e = 0;
				socklen_t el = sizeof(e);

				if (!rs)
					continue;
				getsockopt(c->sb, SOL_SOCKET, SO_ERROR, &e, &el);
				c->connecting = false;
				ok = e == 0;
			} else {
				ok = half_io(&c->up, c->host, c->sb, rh, rs) &&
				     half_io(&c->down, c->sb, c->host, rs, rh);
				if ((rh | rs) & POLLNVAL)
					ok = false;
			}
			if (!ok || (c->up.shut && c->down.shut)) {
				conn_free(c);
				f->c[at[k]] = NULL;
			}
		}
		if (pf[1].revents & POLLIN)
			fwd_accept(f);
	}
	for (int i = 0; i < FWD_CONNS; i++) {
		conn_free(f->c[i]);
		f->c[i] = NULL;
	}
	close(f->lfd);
	f->lfd = -1;
	pthread_mutex_lock(&fwd_mu);
	f->done = true;
	pthread_mutex_unlock(&fwd_mu);
	return NULL;
}

static void fwd_free(struct fwd *f)
{
	uint64_t one = 1;

	if (write(f->evfd, &one, sizeof(one)) < 0)
		api_log("local: ports: cannot stop a forwarder: %s",
			strerror(errno));
	pthread_join(f->thr, NULL);
	close(f->evfd);
	free(f);
}

/* fwd_mu held: take out of the list the forwarders whose thread ended
 * (their sandbox went) and, with `all`, every forwarder of l. */
static void reap_locked(struct local *l, bool all, struct fwd **gone)
{
	for (struct fwd **pp = &fwds; *pp;) {
		struct fwd *f = *pp;

		if (f->done || (all && f->l == l)) {
			*pp = f->next;
			f->next = *gone;
			*gone = f;
			continue;
		}
		pp = &f->next;
	}
}

static void free_list(struct fwd *gone)
{
	while (gone) {
		struct fwd *n = gone->next;

		fwd_free(gone);
		gone = n;
	}
}

void local_ports_fini(struct local *l)
{
	struct fwd *gone = NULL;

	pthread_mutex_lock(&fwd_mu);
	reap_locked(l, true, &gone);
	pthread_mutex_unlock(&fwd_mu);
	free_list(gone);
}

static int fwd_start(struct local *l, const char *name, unsigned port,
		     unsigned *hport, char *msg, size_t msglen)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t al = sizeof(a);
	struct fwd *f = calloc(1, sizeof(*f));
	int err;

	if (!f)
		return -ENOMEM;
	f->l = l;
	snprintf(f->name, sizeof(f->name), "%s", name);
	f->port = port;
	f->evfd = eventfd(0, EFD_CLOEXEC);
	f->lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK); /* loopback only */
	if (f->evfd < 0 || f->lfd < 0 ||
	    bind(f->lfd, (struct sockaddr *)&a, sizeof(a)) ||
	    listen(f->lfd, 64) ||
	    getsockname(f->lfd, (struct sockaddr *)&a, &al))
		goto fail;
	f->hport = ntohs(a.sin_port);
	err = pthread_create(&f->thr, NULL, fwd_thread, f);
	if (err) {
		errno = err;
		goto fail;
	}
	*hport = f->hport;
	f->next = fwds;
	fwds = f;
	return 0;
fail:
	err = -errno;
	snprintf(msg, msglen, "cannot listen on 127.0.0.1 for port %u: %s",
		 port, strerror(errno));
	if (f->lfd >= 0)
		close(f->lfd);
	if (f->evfd >= 0)
		close(f->evfd);
	free(f);
	return err;
}

void local_sb_port(struct api_backend *be, const char *id, unsigned port,
		   api_str_fn cb, void *ud)
{
	struct local *l = local_of(be);
	char msg[256], url[64];
	struct fwd *gone = NULL;
	unsigned hport = 0;
	pid_t pid;
	bool host;
	int err;

	if (local_name_check(id)) {
		cb(ud, -ENOENT, "no such sandbox", NULL);
		return;
	}
	err = local_sb_net(l, id, &pid, &host, msg, sizeof(msg));
	if (err) {
		cb(ud, err, msg, NULL);
		return;
	}
	if (host) {
		snprintf(url, sizeof(url), "http://127.0.0.1:%u", port);
		cb(ud, 0, NULL, url);
		return;
	}
	pthread_mutex_lock(&fwd_mu);
	reap_locked(l, false, &gone);
	for (struct fwd *f = fwds; f; f = f->next)
		if (f->l == l && f->port == port && !f->done &&
		    !strcmp(f->name, id))
			hport = f->hport;
	if (!hport)
		err = fwd_start(l, id, port, &hport, msg, sizeof(msg));
	pthread_mutex_unlock(&fwd_mu);
	free_list(gone);
	if (err) {
		cb(ud, err, msg, NULL);
		return;
	}
	snprintf(url, sizeof(url), "http://127.0.0.1:%u", hport);
	cb(ud, 0, NULL, url);
}

/* ---- the ports listening in the sandbox --------------------------------- */

static int cmp_uint(const void *a, const void *b)
{
	unsigned x = *(const unsigned *)a, y = *(const unsigned *)b;

	return x < y ? -1 : x > y;
}

/* LISTEN sockets of /proc/PID/net/tcp{,6} (the PID's network). */
static size_t listening(pid_t pid, unsigned *ports, size_t max)
{
	static const char *const files[] = { "tcp", "tcp6" };
	size_t n = 0;

	for (size_t i = 0; i < 2; i++) {
		char path[64], line[512];
		FILE *fp;

		snprintf(path, sizeof(path), "/proc/%d/net/%s", (int)pid,
			 files[i]);
		fp = fopen(path, "re");
		if (!fp)
			continue;
		while (fgets(line, sizeof(line), fp) && n < max) {
			char local[128], remote[128], st[8];
			unsigned port;
			char *colon;

			if (sscanf(line, "%*s %127s %127s %7s", local, remote,
				   st) != 3 || strcmp(st, "0A"))
				continue;
			colon = strrchr(local, ':');
			if (!colon || sscanf(colon + 1, "%x", &port) != 1)
				continue;
			bool dup = false;
			for (size_t k = 0; k < n && !dup; k++)
				dup = ports[k] == port;
			if (!dup && port)
				ports[n++] = port;
		}
		fclose(fp);
	}
	qsort(ports, n, sizeof(*ports), cmp_uint);
	return n;
}

void local_sb_ports(struct api_backend *be, const char *id, api_str_fn cb,
		    void *ud)
{
	struct local *l = local_of(be);
	unsigned ports[256];
	char msg[256], *text;
	size_t n, len = 0;
	pid_t pid;
	bool host;
	int err;

	if (local_name_check(id)) {
		cb(ud, -ENOENT, "no such sandbox", NULL);
		return;
	}
	err = local_sb_net(l, id, &pid, &host, msg, sizeof(msg));
	if (err) {
		/* not running: nothing listens */
		cb(ud, err == -EBUSY ? 0 : err, err == -EBUSY ? NULL : msg,
		   err == -EBUSY ? "" : NULL);
		return;
	}
	n = listening(pid, ports, 256);
	text = malloc(n * 7 + 1);
	if (!text) {
		cb(ud, -ENOMEM, api_strerror(ENOMEM), NULL);
		return;
	}
	text[0] = '\0';
	for (size_t i = 0; i < n; i++)
		len += (size_t)snprintf(text + len, 8, "%u\n", ports[i]);
	cb(ud, 0, NULL, text);
	free(text);
}
