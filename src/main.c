/* main.c - sbxfs: options, backend, mount, daemon, loop.  Sequences the
 * modules; each parses its own options from the shared fuse_args. */
#include <errno.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fs/fs_int.h"
#include "src/notify.h"
#include <fuse_opt.h>

/* Our own -o options and flags. */
struct main_opts {
	char *poll;
	char *template;
	char *attr_timeout;
	int foreground, debug, single, help, version;
	int allow_other;
	char *nonopt[3];
	int nnonopt;
};

enum { KEY_HELP, KEY_VERSION, KEY_FG, KEY_DEBUG, KEY_SINGLE, KEY_ALLOW,
       KEY_IGNORE };

static const struct fuse_opt main_spec[] = {
	{ "poll=%s", offsetof(struct main_opts, poll), 0 },
	{ "template=%s", offsetof(struct main_opts, template), 0 },
	{ "attr_timeout=%s", offsetof(struct main_opts, attr_timeout), 0 },
	FUSE_OPT_KEY("-h", KEY_HELP),
	FUSE_OPT_KEY("--help", KEY_HELP),
	FUSE_OPT_KEY("-V", KEY_VERSION),
	FUSE_OPT_KEY("--version", KEY_VERSION),
	FUSE_OPT_KEY("-f", KEY_FG),
	FUSE_OPT_KEY("-d", KEY_DEBUG),
	FUSE_OPT_KEY("debug", KEY_DEBUG),
	FUSE_OPT_KEY("-s", KEY_SINGLE),
	FUSE_OPT_KEY("allow_other", KEY_ALLOW),
	/* fstab and mount(8) options meant for mount, systemd or the mount
	 * helper, not for the filesystem.  mount(8) drops them before it
	 * runs mount.fuse3, but they still arrive when mount.fuse3 or sbxfs
	 * is run by hand with an fstab line's options (see sbxfs(1)). */
	FUSE_OPT_KEY("defaults", KEY_IGNORE),
	FUSE_OPT_KEY("_netdev", KEY_IGNORE),
	FUSE_OPT_KEY("auto", KEY_IGNORE),
	FUSE_OPT_KEY("noauto", KEY_IGNORE),
	FUSE_OPT_KEY("nofail", KEY_IGNORE),
	FUSE_OPT_KEY("user", KEY_IGNORE),
	FUSE_OPT_KEY("nouser", KEY_IGNORE),
	FUSE_OPT_KEY("users", KEY_IGNORE),
	FUSE_OPT_KEY("comment=", KEY_IGNORE),
	FUSE_OPT_END
};

/* Sizes take a K, M or G suffix (powers of 1024), for every option whose
 * name ends in "_max" (wrenn_upload_max=64M): rewritten here to the plain
 * byte count the backends parse.  1: arg replaced in outargs; 0: not a
 * size with a suffix (left alone); -1: bad or too large. */
static int size_opt(const char *arg, struct fuse_args *outargs)
{
	const char *eq = strchr(arg, '=');
	char *end, buf[256];
	unsigned long long v;
	unsigned shift;

	if (!eq || eq - arg < 4 || strncmp(eq - 4, "_max", 4) ||
	    eq[1] < '0' || eq[1] > '9')
		return 0;
	errno = 0;
	v = strtoull(eq + 1, &end, 10);
	switch (*end) {
	case 'k': case 'K': shift = 10; break;
	case 'm': case 'M': shift = 20; break;
	case 'g': case 'G': shift = 30; break;
	default: return 0; /* plain bytes: the backend checks them */
	}
	if (errno || end[1] || v > (~0ull >> shift)) {
		fprintf(stderr, "sbxfs: bad size '%s': want bytes, or a number "
			"with K, M or G\n", arg);
		return -1;
	}
	snprintf(buf, sizeof buf, "-o%.*s%llu", (int)(eq + 1 - arg), arg,
		 v << shift);
	return fuse_opt_add_arg(outargs, buf) == -1 ? -1 : 1;
}

static int opt_proc(void *data, const char *arg, int key,
		    struct fuse_args *outargs)
{
	struct main_opts *o = data;

	(void)outargs;
	switch (key) {
	case FUSE_OPT_KEY_NONOPT:
		if (o->nnonopt == 2) {
			fprintf(stderr, "sbxfs: too many arguments: '%s'\n",
				arg);
			return -1;
		}
		o->nonopt[o->nnonopt++] = strdup(arg);
		return 0;
	case KEY_HELP:
		o->help = 1;
		return 0;
	case KEY_VERSION:
		o->version = 1;
		return 0;
	case KEY_FG:
		o->foreground = 1;
		return 0;
	case KEY_DEBUG:
		/* libfuse prints requests with -o debug: keep it. */
		o->debug = 1;
		o->foreground = 1;
		return 1;
	case KEY_SINGLE:
		o->single = 1;
		return 0;
	case KEY_ALLOW:
		o->allow_other = 1;
		return 1;
	case KEY_IGNORE:
		return 0;
	case FUSE_OPT_KEY_OPT:
		/* x-systemd.automount, x-gvfs-show...: userspace only */
		if (!strncmp(arg, "x-", 2))
			return 0;
		switch (size_opt(arg, outargs)) {
		case 1:
			return 0;
		case -1:
			return -1;
		default:
			return 1;
		}
	default:
		return 1;
	}
}

/* --help: every source first, then each option once with its default;
 * the backends' own options come from their tables (api_print_help). */
static void usage(const char *prog)
{
	printf("usage: %s [options] [SOURCE] MOUNTPOINT\n"
	       "\n"
	       "Mounts code-execution sandboxes as files.\n"
	       "Unmount with: fusermount3 -u MOUNTPOINT\n"
	       "\n"
	       "SOURCE picks the platform:\n"
	       "    local                  the embedded local runtime "
	       "(default), state in\n"
	       "                           /var/lib/sbxfs\n"
	       "    local:DATADIR          the same, state kept in DATADIR\n"
	       "    wrenn[:BASE_URL]       Wrenn capsules (key: "
	       "$WRENN_API_KEY or -o keyfile=)\n"
	       "    cwsandbox[:URL]        CW Sandbox (key: "
	       "$CWSANDBOX_API_KEY or -o keyfile=)\n"
	       "\n"
	       "General options:\n"
	       "    -h, --help             print this help\n"
	       "    -V, --version          print the version\n"
	       "    -f                     stay in the foreground (default: "
	       "daemonize, log to\n"
	       "                           syslog)\n"
	       "    -d, -o debug           debug output (implies -f)\n"
	       "    -s                     single-threaded loop (default: "
	       "multi-threaded)\n"
	       "    -o opt,[opt...]        mount options\n"
	       "\n"
	       "Mount options:\n"
	       "    -o poll=SECONDS        status poll interval (default 2)\n"
	       "    -o template=NAME       default template of new sandboxes "
	       "(default: none)\n"
	       "    -o attr_timeout=SECS   kernel attribute cache of fs/ "
	       "files (default 1)\n"
	       "    -o allow_other         let other users in, with "
	       "default_permissions\n"
	       "                           (default: only the mounting "
	       "user)\n"
	       "    -o allow_root          let root in too (default: off)\n"
	       "    -o auto_unmount        unmount when sbxfs ends (default: "
	       "off)\n"
	       "Sizes (options ending in _max) take bytes, or K, M, G "
	       "(powers of 1024):\n"
	       "    -o wrenn_upload_max=64M\n"
	       "\n",
	       prog);
}

static int parse_secs(const char *name, const char *s, double *out,
		      bool zero_ok)
{
	char *end;

	errno = 0;
	double v = strtod(s, &end);
	if (errno || end == s || *end || v < 0 || (!zero_ok && v == 0) ||
	    v > 86400) {
		fprintf(stderr, "sbxfs: bad %s '%s': want seconds%s\n", name,
			s, zero_ok ? " >= 0" : " > 0");
		return -1;
	}
	*out = v;
	return 0;
}

/* The name /proc/mounts shows for SOURCE (see main). */
static const char *fsname_of(const char *source)
{
	if (!source)
		return "local";
	if (strlen(source) > 200 ||
	    strspn(source, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
		   "0123456789:/._-~+") != strlen(source))
		return "sbxfs";
	return source;
}

/* A second copy of the arguments: the backend is opened twice (see
 * below), and each api_open consumes its options. */
static int args_copy(const struct fuse_args *from, struct fuse_args *to)
{
	for (int i = 0; i < from->argc; i++)
		if (fuse_opt_add_arg(to, from->argv[i]) == -1)
			return -1;
	return 0;
}

int main(int argc, char *argv[])
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct fuse_args args2 = FUSE_ARGS_INIT(0, NULL);
	struct main_opts mo = { 0 };
	struct fs_opts fo = { .poll_interval = 2.0, .attr_timeout = 1.0 };
	struct api_backend *be = NULL;
	struct fuse_session *se = NULL;
	static struct fs fs;
	const char *source = NULL, *mountpoint = NULL;
	char fsopt[256];
	int ret = 1, err;

	notify_init();
	if (fuse_opt_parse(&args, &mo, main_spec, opt_proc) == -1)
		goto out;
	if (mo.help) {
		/* libfuse's own help would list allow_other a second time;
		 * its three options are in ours. */
		usage(argv[0]);
		api_print_help();
		ret = 0;
		goto out;
	}
	if (mo.version) {
		printf("sbxfs version %s\n", SBXFS_VERSION);
		printf("FUSE library version %s\n", fuse_pkgversion());
		fflush(stdout); /* fusermount3 prints to the same stdout */
		fuse_lowlevel_version();
		ret = 0;
		goto out;
	}
	if (mo.nnonopt == 0) {
		fprintf(stderr, "usage: %s [options] [SOURCE] MOUNTPOINT\n"
			"       %s --help\n", argv[0], argv[0]);
		goto out;
	}
	mountpoint = mo.nonopt[mo.nnonopt - 1];
	if (mo.nnonopt == 2)
		source = mo.nonopt[0];
	if (mo.poll && parse_secs("poll", mo.poll, &fo.poll_interval, false))
		goto out;
	if (mo.attr_timeout &&
	    parse_secs("attr_timeout", mo.attr_timeout, &fo.attr_timeout,
		       true))
		goto out;
	if (mo.template && !fs_name_valid(mo.template)) {
		fprintf(stderr, "sbxfs: bad template name '%s'\n",
			mo.template);
		goto out;
	}
	fo.template = mo.template;

	/* Threads do not survive fork(), and fuse_daemonize forks.  So the
	 * backend is opened twice: once here, in the foreground, only to
	 * check SOURCE, options and credentials and report mistakes on the
	 * terminal (then closed: its threads end, sandboxes stay); and once
	 * more after fuse_daemonize, for real.  Each open consumes its own
	 * copy of the arguments. */
	if (args_copy(&args, &args2) == -1)
		goto out;
	err = api_open(source, &args, &be);
	if (err) {
		fprintf(stderr, "sbxfs: cannot open %s: %s\n",
			source ? source : "local", strerror(-err));
		goto out;
	}
	/* The source as written is the mount's name, as sshfs does, so that
	 * mount -a finds an fstab line already mounted (libmount compares
	 * sources); keys never are in it.  A source that could carry a
	 * secret or break the option string (user:pass@ in a URL, a query,
	 * commas) shows as "sbxfs" instead. */
	snprintf(fsopt, sizeof fsopt, "-ofsname=%s,subtype=%s",
		 fsname_of(source), be->ops->name);
	api_close(be);
	be = NULL;
	if (fuse_opt_add_arg(&args, fsopt) == -1)
		goto out;
	/* Owner-only by default (no allow_other); other users only with
	 * the kernel checking permissions. */
	if (mo.allow_other &&
	    fuse_opt_add_arg(&args, "-odefault_permissions") == -1)
		goto out;

	se = fuse_session_new(&args, &fs_ops, sizeof fs_ops, &fs);
	if (!se)
		goto out;
	if (fuse_session_mount(se, mountpoint) != 0)
		goto out_destroy;
	if (fuse_daemonize(mo.foreground) != 0)
		goto out_unmount;
	if (!mo.foreground) {
		fs_log_syslog(true);
		api_log_syslog(true); /* api/'s messages too */
	}

	err = api_open(source, &args2, &be);
	if (err) {
		fs_log("cannot open %s: %s", source ? source : "local",
		       strerror(-err));
		goto out_unmount;
	}
	fo.timeout = be->timeout;
	err = fs_init(&fs, be, &fo);
	if (err) {
		fs_log("cannot start: %s", strerror(-err));
		goto out_close;
	}
	fs_attach(&fs, se);
	if (fuse_set_signal_handlers(se) != 0)
		goto out_free;
	/* mounted and about to serve: Type=notify units are up (with -f;
	 * a daemonized child is not the unit's main process) */
	if (mo.foreground)
		notify_ready();

	if (mo.single) {
		ret = fuse_session_loop(se);
	} else {
		struct fuse_loop_config cfg = {
			.clone_fd = 0,
			.max_idle_threads = 10,
		};
		ret = fuse_session_loop_mt(se, &cfg);
	}
	/* libfuse returns the signal that ended the loop.  SIGTERM, SIGINT
	 * or SIGHUP is how sbxfs -f is asked to stop (systemctl stop, ^C):
	 * a clean exit, or systemd would mark the unit failed. */
	ret = (ret == 0 || ret == SIGTERM || ret == SIGINT || ret == SIGHUP)
		      ? 0
		      : 1;
	fuse_remove_signal_handlers(se);
out_free:
	fuse_session_unmount(se);
	fs_free(&fs);
	api_close(be);
	fuse_session_destroy(se);
	se = NULL;
	goto out;
out_close:
	api_close(be);
out_unmount:
	fuse_session_unmount(se);
out_destroy:
	fuse_session_destroy(se);
out:
	for (int i = 0; i < mo.nnonopt; i++)
		free(mo.nonopt[i]);
	free(mo.poll);
	free(mo.template);
	free(mo.attr_timeout);
	fuse_opt_free_args(&args);
	fuse_opt_free_args(&args2);
	return ret;
}
