/* proxy.c - Wrenn's port proxy (wrenn.md section 7): a request whose Host
 * (port stripped) starts with PORT-ID. is passed to TCP port PORT of
 * capsule ID, with no authentication, errors in plain text (400 bad port
 * or ID, 404 unknown capsule, 409 not running, 502 proxy error).  The
 * capsule is a local sandbox: the bytes go through the local backend's
 * port forwarder (api_sb_port).  One request per connection to the
 * service (HTTP/1.0, Connection: close); the answer's status and
 * Content-Type are kept, its body streamed back.  GET, POST and DELETE
 * only (what the server's request parser knows). */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "tools/sbxfs-server/srv.h"

#define PROXY_HDR_MAX 65536
#define PROXY_IO_SECS 60

bool srv_proxy_match(const char *host, unsigned *port, char *id, size_t il)
{
	unsigned p = 0;
	const char *s = host, *d;
	size_t n;

	if (!(*s >= '1' && *s <= '9'))
		return false;
	for (; *s >= '0' && *s <= '9'; s++) {
		p = p * 10 + (unsigned)(*s - '0');
		if (p > 65535)
			return false;
	}
	if (*s != '-' || strncmp(s + 1, "cl-", 3))
		return false;
	s++;
	d = strchr(s, '.');
	if (!d)
		return false;
	n = (size_t)(d - s);
	for (size_t i = 3; i < n; i++)
		if (!((s[i] >= '0' && s[i] <= '9') ||
		      (s[i] >= 'a' && s[i] <= 'z')))
			return false;
	if (n <= 3 || n >= il)
		return false;
	memcpy(id, s, n);
	id[n] = '\0';
	*port = p;
	return true;
}

/* api_sb_port, waited for. */
struct pwait {
	pthread_mutex_t mu;
	pthread_cond_t cond;
	bool done;
	int err;
	char url[256], msg[256];
};

static void got_url(void *ud, int err, const char *msg, const char *s)
{
	struct pwait *w = ud;

	pthread_mutex_lock(&w->mu);
	w->err = err;
	snprintf(w->url, sizeof(w->url), "%s", s && !err ? s : "");
	snprintf(w->msg, sizeof(w->msg), "%s", msg ? msg : "");
	w->done = true;
	pthread_cond_signal(&w->cond);
	pthread_mutex_unlock(&w->mu);
}

static int sb_port(const char *id, unsigned port, unsigned *hport,
		   char *msg, size_t ml)
{
	struct pwait w = { .mu = PTHREAD_MUTEX_INITIALIZER,
			   .cond = PTHREAD_COND_INITIALIZER };
	const char *colon;

	api_sb_port(srv_g.be, id, port, got_url, &w);
	pthread_mutex_lock(&w.mu);
	while (!w.done)
		pthread_cond_wait(&w.cond, &w.mu);
	pthread_mutex_unlock(&w.mu);
	if (w.err) {
		snprintf(msg, ml, "%s", w.msg);
		return w.err;
	}
	colon = strrchr(w.url, ':');
	if (strncmp(w.url, "http://127.0.0.1:", 17) || !colon ||
	    (*hport = (unsigned)atoi(colon + 1)) == 0) {
		snprintf(msg, ml, "unexpected forwarder address %.200s", w.url);
		return -EIO;
	}
	return 0;
}

static void plain(struct srv_req *r, int status, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void plain(struct srv_req *r, int status, const char *fmt, ...)
{
	char body[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(body, sizeof(body) - 1, fmt, ap);
	va_end(ap);
	strcat(body, "\n");
	srv_respond(r, status, "text/plain; charset=utf-8", body,
		    strlen(body));
}

static int send_all(int fd, const void *p, size_t n)
{
	const char *c = p;

	while (n) {
		ssize_t w = send(fd, c, n, MSG_NOSIGNAL);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		c += w;
		n -= (size_t)w;
	}
	return 0;
}

void srv_h_proxy(struct srv_req *r)
{
	static const char *const mname[] = {
		[SRV_GET] = "GET", [SRV_POST] = "POST",
		[SRV_DELETE] = "DELETE" };
	struct srv_capsule c;
	struct sockaddr_in a = { .sin_family = AF_INET };
	struct timeval tv = { .tv_sec = PROXY_IO_SECS };
	struct srv_buf body, head;
	char msg[256], line[2048], ctype[128] = "";
	unsigned port = (unsigned)atoi(r->sel), hport = 0;
	int fd = -1, status = 0, err;
	char *end;

	if (r->method != SRV_GET && r->method != SRV_POST &&
	    r->method != SRV_DELETE) {
		plain(r, 502, "proxy error: method not supported here");
		return;
	}
	if (srv_capsule_get(r->id, &c)) {
		plain(r, 404, "sandbox not found");
		return;
	}
	if (strcmp(c.status, "running")) {
		plain(r, 409, "sandbox is not running (status: %s)", c.status);
		return;
	}
	err = sb_port(r->id, port, &hport, msg, sizeof(msg));
	if (err) {
		plain(r, 502, "proxy error: %s", msg);
		return;
	}
	srv_buf_init(&body, SRV_BODY_MAX);
	if (srv_read_all(r, &body, SRV_BODY_MAX)) {
		srv_buf_free(&body);
		plain(r, 502, "proxy error: request body too large");
		return;
	}
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	a.sin_port = htons((unsigned short)hport);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd >= 0) {
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	}
	snprintf(line, sizeof(line),
		 "%s %s%s%s HTTP/1.0\r\nHost: 127.0.0.1:%u\r\n"
		 "Content-Length: %zu\r\nConnection: close\r\n\r\n",
		 mname[r->method], r->path, r->query[0] ? "?" : "", r->query,
		 port, body.len);
	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) ||
	    send_all(fd, line, strlen(line)) ||
	    (body.len && send_all(fd, body.p, body.len))) {
		plain(r, 502, "proxy error: %s", strerror(errno));
		goto out;
	}
	/* the answer's head, then its body as it comes */
	srv_buf_init(&head, PROXY_HDR_MAX);
	for (;;) {
		char buf[16384];
		ssize_t n = recv(fd, buf, sizeof(buf), 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0 || srv_buf_add(&head, buf, (size_t)n))
			break;
		if (memmem(head.p, head.len, "\r\n\r\n", 4))
			break;
	}
	end = head.len ? memmem(head.p, head.len, "\r\n\r\n", 4) : NULL;
	if (end)
		*end = '\0'; /* the head is a string from here */
	if (!end || sscanf(head.p, "HTTP/%*s %d", &status) != 1 ||
	    status < 100 || status > 599) {
		srv_buf_free(&head);
		plain(r, 502, "proxy error: no HTTP answer from port %u", port);
		goto out;
	}
	for (char *h = strstr(head.p, "\r\n"); h; h = strstr(h + 2, "\r\n"))
		if (!strncasecmp(h + 2, "Content-Type:", 13)) {
			const char *v = h + 2 + 13;

			v += strspn(v, " \t");
			snprintf(ctype, sizeof(ctype), "%.*s",
				 (int)strcspn(v, "\r\n"), v);
		}
	srv_begin(r, status, ctype[0] ? ctype : "application/octet-stream");
	{
		size_t hl = (size_t)(end + 4 - head.p);
		int werr = 0;

		if (head.len > hl)
			werr = srv_write(r, head.p + hl, head.len - hl);
		srv_buf_free(&head);
		while (!werr) {
			char buf[65536];
			ssize_t n = recv(fd, buf, sizeof(buf), 0);

			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0)
				break;
			werr = srv_write(r, buf, (size_t)n);
		}
	}
	srv_end(r);
out:
	if (fd >= 0)
		close(fd);
	srv_buf_free(&body);
}
