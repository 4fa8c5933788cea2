/* notify.c - READY=1 for systemd's Type=notify: one datagram to the unix
 * socket named by $NOTIFY_SOCKET (a path, or "@name" in the abstract
 * namespace), as sd_notify(3) describes the protocol. */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "src/notify.h"

static char notify_path[sizeof(((struct sockaddr_un *)0)->sun_path)];

void notify_init(void)
{
	const char *p = getenv("NOTIFY_SOCKET");

	if (p && (p[0] == '/' || p[0] == '@') &&
	    strlen(p) < sizeof(notify_path))
		memcpy(notify_path, p, strlen(p) + 1);
	unsetenv("NOTIFY_SOCKET");
}

void notify_ready(void)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t n = strlen(notify_path);
	int fd;

	if (!n)
		return;
	memcpy(sa.sun_path, notify_path, n);
	if (sa.sun_path[0] == '@')
		sa.sun_path[0] = '\0';
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd >= 0) {
		(void)sendto(fd, "READY=1", 7, MSG_NOSIGNAL,
			     (struct sockaddr *)&sa,
			     (socklen_t)(offsetof(struct sockaddr_un, sun_path) +
					 n));
		close(fd);
	}
	notify_path[0] = '\0';
}
