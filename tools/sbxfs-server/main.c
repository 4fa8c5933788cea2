/* main.c - sbxfs-server: serve the local runtime's sandboxes over Wrenn's
 * control-plane API (same paths, shapes, codes and quirks). */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FUSE_USE_VERSION 34
#include <fuse_opt.h>
#include <libwebsockets.h>

#include "grpc.h"
#include "src/notify.h"
#include "srv.h"

struct srv srv_g = {
	.lock = PTHREAD_MUTEX_INITIALIZER,
	.cond = PTHREAD_COND_INITIALIZER,
	.upload_limit = 2096914,
};

extern const struct lws_protocols srv_protocols[];

static void usage(FILE *f)
{
	fprintf(f,
"usage: sbxfs-server [options]\n"
"Serve this machine's local sbxfs sandboxes over the Wrenn control-plane\n"
"API (/v1/capsules...).  Clients authenticate with X-API-Key.\n"
"\n"
"  --listen ADDR:PORT   address to bind (default 127.0.0.1:8642)\n"
"  --port PORT          port only (0: pick a free one); prints\n"
"                       'listening on ADDR:PORT'\n"
"  --data DIR           local runtime data dir (default /var/lib/sbxfs-server)\n"
"  --upload-limit N     emulate Wrenn's envd upload ceiling: largest file\n"
"                       one files/write may carry (default 2096914; 0 = off)\n"
"  --timeout SECONDS    backend request bound (default 60)\n"
"  --print-key          print the API key and exit\n"
"  --api wrenn|cwsandbox|wrenn,cwsandbox\n"
"                       which API to serve (default wrenn).  cwsandbox is\n"
"                       CW Sandbox's gRPC SandboxService (HTTP/2 without\n"
"                       TLS; authorization: Bearer KEY), by default on\n"
"                       127.0.0.1:8643; alone it takes --listen/--port\n"
"  --cw-listen ADDR:PORT  the cwsandbox listener when both are served\n"
"  -h, --help           this text\n"
"  -V, --version        version\n"
"\n"
"The API key (wrn_ + 32 hex) is made on first start, stored in\n"
"DIR/server-key (mode 0600) and printed once.  Stop with SIGTERM.\n");
}

/* Read or create DATADIR/server-key.  *created tells whether it is new. */
static int load_key(const char *dir, bool create, bool *created)
{
	char path[600], buf[64];
	unsigned char raw[16];
	struct stat st;
	ssize_t n;
	int fd, i;

	*created = false;
	snprintf(path, sizeof(path), "%s/server-key", dir);
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd >= 0) {
		if (fstat(fd, &st) || (st.st_mode & 077) ||
		    st.st_uid != geteuid()) {
			fprintf(stderr, "sbxfs-server: %s must be owned by "
				"this user and mode 0600\n", path);
			close(fd);
			return -EPERM;
		}
		n = read(fd, buf, sizeof(buf) - 1);
		close(fd);
		if (n < 36) {
			fprintf(stderr, "sbxfs-server: %s: bad key\n", path);
			return -EINVAL;
		}
		buf[36] = '\0';
		if (strncmp(buf, "wrn_", 4) ||
		    strspn(buf + 4, "0123456789abcdef") != 32) {
			fprintf(stderr, "sbxfs-server: %s: bad key\n", path);
			return -EINVAL;
		}
		snprintf(srv_g.key, sizeof(srv_g.key), "%s", buf);
		return 0;
	}
	if (errno != ENOENT || !create) {
		fprintf(stderr, "sbxfs-server: %s: %s\n", path,
			strerror(errno));
		return -errno;
	}
	fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
	if (fd < 0 || read(fd, raw, sizeof(raw)) != sizeof(raw)) {
		fprintf(stderr, "sbxfs-server: /dev/urandom unreadable\n");
		if (fd >= 0)
			close(fd);
		return -EIO;
	}
	close(fd);
	memcpy(buf, "wrn_", 4);
	for (i = 0; i < 16; i++)
		snprintf(buf + 4 + 2 * i, 3, "%02x", raw[i]);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		fprintf(stderr, "sbxfs-server: %s: %s\n", path,
			strerror(errno));
		return -errno;
	}
	buf[36] = '\n';
	if (write(fd, buf, 37) != 37 || fsync(fd)) {
		close(fd);
		unlink(path);
		return -EIO;
	}
	close(fd);
	buf[36] = '\0';
	snprintf(srv_g.key, sizeof(srv_g.key), "%s", buf);
	*created = true;
	return 0;
}

static void on_signal(int sig)
{
	(void)sig;
	srv_g.stopping = 1;
	if (srv_g.ctx)
		lws_cancel_service(srv_g.ctx);
}

static int mkdirs(const char *dir)
{
	char p[512];
	size_t i;

	snprintf(p, sizeof(p), "%s", dir);
	for (i = 1; p[i]; i++) {
		if (p[i] != '/')
			continue;
		p[i] = '\0';
		if (mkdir(p, 0755) && errno != EEXIST)
			return -errno;
		p[i] = '/';
	}
	if (mkdir(p, 0700) && errno != EEXIST)
		return -errno;
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "listen", required_argument, NULL, 'l' },
		{ "port", required_argument, NULL, 'p' },
		{ "data", required_argument, NULL, 'd' },
		{ "upload-limit", required_argument, NULL, 'u' },
		{ "timeout", required_argument, NULL, 't' },
		{ "print-key", no_argument, NULL, 'k' },
		{ "api", required_argument, NULL, 'a' },
		{ "cw-listen", required_argument, NULL, 'c' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 }
	};
	struct lws_context_creation_info info;
	char addr[128] = "127.0.0.1", src[600], tmo[64] = "";
	const char *datadir = "/var/lib/sbxfs-server";
	long port = 8642;
	bool print_key = false, created, port_set = false;
	bool api_wrenn = true, api_cw = false;
	char cwaddr[128] = "127.0.0.1";
	long cwport = 8643;
	int gport = -1;
	struct lws_vhost *vh;
	struct sigaction sa;
	char *e, *colon;
	int c, rc, i;

	notify_init();
	while ((c = getopt_long(argc, argv, "hV", opts, NULL)) != -1) {
		switch (c) {
		case 'l':
			colon = strrchr(optarg, ':');
			if (!colon || colon == optarg ||
			    (size_t)(colon - optarg) >= sizeof(addr)) {
				fprintf(stderr, "sbxfs-server: --listen "
					"wants ADDR:PORT\n");
				return 2;
			}
			memcpy(addr, optarg, colon - optarg);
			addr[colon - optarg] = '\0';
			optarg = colon + 1;
			/* fallthrough */
		case 'p':
			port = strtol(optarg, &e, 10);
			if (*e || e == optarg || port < 0 || port > 65535) {
				fprintf(stderr, "sbxfs-server: bad port\n");
				return 2;
			}
			port_set = true;
			break;
		case 'a':
			api_wrenn = !strcmp(optarg, "wrenn") ||
				    !strcmp(optarg, "wrenn,cwsandbox") ||
				    !strcmp(optarg, "cwsandbox,wrenn");
			api_cw = !!strstr(optarg, "cwsandbox");
			if (!api_wrenn && !api_cw) {
				fprintf(stderr, "sbxfs-server: --api wants "
					"wrenn, cwsandbox or both\n");
				return 2;
			}
			break;
		case 'c':
			colon = strrchr(optarg, ':');
			if (!colon || colon == optarg ||
			    (size_t)(colon - optarg) >= sizeof(cwaddr)) {
				fprintf(stderr, "sbxfs-server: --cw-listen "
					"wants ADDR:PORT\n");
				return 2;
			}
			memcpy(cwaddr, optarg, colon - optarg);
			cwaddr[colon - optarg] = '\0';
			cwport = strtol(colon + 1, &e, 10);
			if (*e || e == colon + 1 || cwport < 0 ||
			    cwport > 65535) {
				fprintf(stderr, "sbxfs-server: bad port\n");
				return 2;
			}
			break;
		case 'd':
			datadir = optarg;
			break;
		case 'u':
			srv_g.upload_limit = strtoul(optarg, &e, 10);
			if (*e || e == optarg) {
				fprintf(stderr, "sbxfs-server: bad limit\n");
				return 2;
			}
			break;
		case 't':
			snprintf(tmo, sizeof(tmo), "timeout=%s", optarg);
			break;
		case 'k':
			print_key = true;
			break;
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			printf("sbxfs-server %s\n", SBXFS_VERSION);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return 2;
	}
	if (strlen(datadir) >= sizeof(srv_g.datadir) - 64) {
		fprintf(stderr, "sbxfs-server: data dir path too long\n");
		return 2;
	}
	snprintf(srv_g.datadir, sizeof(srv_g.datadir), "%s", datadir);
	if (print_key) {
		if (load_key(datadir, false, &created))
			return 1;
		printf("%s\n", srv_g.key);
		return 0;
	}
	rc = mkdirs(datadir);
	if (rc) {
		fprintf(stderr, "sbxfs-server: %s: %s\n", datadir,
			strerror(-rc));
		return 1;
	}
	if (load_key(datadir, true, &created))
		return 1;
	if (created) {
		/* the only time the key is ever shown unasked */
		printf("API key (stored in %s/server-key, shown once): %s\n",
		       datadir, srv_g.key);
		fflush(stdout);
	}

	{
		char *fargv[4] = { argv[0], NULL, NULL, NULL };
		struct fuse_args fa = { 1, fargv, 0 };

		if (tmo[0]) {
			fargv[1] = "-o";
			fargv[2] = tmo;
			fa.argc = 3;
		}
		snprintf(src, sizeof(src), "local:%s", datadir);
		rc = api_open(src, &fa, &srv_g.be);
		fuse_opt_free_args(&fa);
		if (rc) {
			fprintf(stderr, "sbxfs-server: cannot open %s: %s\n",
				src, strerror(-rc));
			return 1;
		}
	}
	if (api_cw && !api_wrenn) {
		/* cwsandbox alone takes --listen / --port */
		snprintf(cwaddr, sizeof(cwaddr), "%s", addr);
		if (port_set)
			cwport = port;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	if (api_cw) {
		gport = gs_start(cwaddr, (int)cwport);
		if (gport < 0) {
			fprintf(stderr, "sbxfs-server: cannot serve cwsandbox "
				"on %s:%ld: %s\n", cwaddr, cwport,
				strerror(-gport));
			api_close(srv_g.be);
			return 1;
		}
		printf("%slistening on %s:%d\n", api_wrenn ? "cwsandbox " : "",
		       cwaddr, gport);
		fflush(stdout);
	}
	if (!api_wrenn) {
		notify_ready(); /* systemd Type=notify */
		/* signals set srv_g.stopping; nothing else to serve here */
		sigset_t none;

		sigemptyset(&none);
		while (!srv_g.stopping)
			sigsuspend(&none);
		gs_stop();
		srv_procs_reap();
		api_close(srv_g.be);
		return 0;
	}
	if (srv_capsules_load())
		fprintf(stderr, "sbxfs-server: some capsule records "
			"could not be read\n");

	lws_set_log_level(LLL_ERR, NULL);
	memset(&info, 0, sizeof(info));
	info.port = (int)port;
	info.iface = addr;
	info.protocols = srv_protocols;
	info.vhost_name = "default";
	info.max_http_header_data = 16384;
	info.max_http_header_pool = 64;
	info.pt_serv_buf_size = 65536;
	info.timeout_secs = 60;
	info.keepalive_timeout = 620;
	info.options = LWS_SERVER_OPTION_DISABLE_IPV6;
	srv_g.ctx = lws_create_context(&info);
	if (!srv_g.ctx) {
		fprintf(stderr, "sbxfs-server: cannot listen on %s:%ld\n",
			addr, port);
		gs_stop();
		api_close(srv_g.be);
		return 1;
	}
	vh = lws_get_vhost_by_name(srv_g.ctx, "default");
	printf("listening on %s:%d\n", addr,
	       vh ? lws_get_vhost_listen_port(vh) : (int)port);
	fflush(stdout);
	notify_ready(); /* systemd Type=notify */

	srv_capsule_reaper_start();
	while (!srv_g.stopping)
		if (lws_service(srv_g.ctx, 0) < 0)
			break;

	/* stop: no new workers; wake the ones waiting on sockets */
	pthread_mutex_lock(&srv_g.lock);
	srv_g.stopping = 1;
	pthread_mutex_unlock(&srv_g.lock);
	srv_capsule_reaper_stop();
	gs_stop();
	lws_context_destroy(srv_g.ctx);
	pthread_mutex_lock(&srv_g.lock);
	srv_g.ctx = NULL;
	for (i = 0; i < 100 && srv_g.workers; i++) {
		struct timespec ts;

		pthread_cond_broadcast(&srv_g.cond);
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 100000000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&srv_g.cond, &srv_g.lock, &ts);
	}
	rc = srv_g.workers;
	pthread_mutex_unlock(&srv_g.lock);
	srv_procs_reap();
	if (!rc)
		api_close(srv_g.be);
	return 0;
}
