/* util.c - small helpers of the FUSE side: logging, text and directory
 * replies, ctl command parsing, the host view of sandbox symlinks. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>

#include "fs/fs_int.h"

static bool log_syslog;

void fs_log_syslog(bool on)
{
	if (on && !log_syslog)
		openlog("sbxfs", LOG_PID, LOG_DAEMON);
	log_syslog = on;
}

static void log_emit(const char *line)
{
	if (log_syslog)
		syslog(LOG_NOTICE, "%s", line);
	else /* one fprintf per line: lines of threads don't interleave */
		fprintf(stderr, "sbxfs: %s\n", line);
}

/* Rate limit (bad input must not flood the log: 10,000 malformed ctl
 * writes are not 10,000 lines).  Two rules, like syslogd's and the
 * kernel's printk_ratelimit:
 *  - a line identical to the previous one within LOG_REPEAT_S seconds is
 *    only counted; the count is told ("last message repeated N times")
 *    before the next different line, or with the same line once the
 *    window is over;
 *  - beyond a burst of LOG_BURST lines, at most LOG_RATE a second pass
 *    (token bucket); what was dropped is told when lines pass again. */
#define LOG_REPEAT_S 30
#define LOG_BURST 100.0
#define LOG_RATE 5.0

static struct {
	pthread_mutex_t mu;
	char last[2048];
	unsigned long repeats;	/* of `last`, not yet told */
	time_t last_t;		/* when `last` was emitted */
	double tokens;
	struct timespec refill;	/* bucket last refilled */
	unsigned long dropped;	/* by the bucket, not yet told */
} lg = { .mu = PTHREAD_MUTEX_INITIALIZER, .tokens = LOG_BURST };

static bool log_take_token(void)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	if (lg.refill.tv_sec) {
		double dt = (double)(now.tv_sec - lg.refill.tv_sec) +
			    (double)(now.tv_nsec - lg.refill.tv_nsec) / 1e9;

		lg.tokens += dt * LOG_RATE;
		if (lg.tokens > LOG_BURST)
			lg.tokens = LOG_BURST;
	}
	lg.refill = now;
	if (lg.tokens < 1.0)
		return false;
	lg.tokens -= 1.0;
	return true;
}

void fs_log(const char *fmt, ...)
{
	char line[2048], note[128];
	time_t now = time(NULL);
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	/* one line per message: a name or a server's text with a newline
	 * or an escape sequence cannot forge or hide lines */
	for (char *p = line; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = ' ';
	pthread_mutex_lock(&lg.mu);
	bool same = strcmp(line, lg.last) == 0 &&
		    now - lg.last_t < LOG_REPEAT_S;

	if (same) {
		lg.repeats++;
		pthread_mutex_unlock(&lg.mu);
		return;
	}
	if (!log_take_token()) {
		lg.dropped++;
		pthread_mutex_unlock(&lg.mu);
		return;
	}
	/* What was held back is told first, in one line that costs a
	 * token too, so the bucket bounds every line written. */
	if (lg.repeats || lg.dropped) {
		if (lg.dropped)
			snprintf(note, sizeof note, "last message repeated "
				 "%lu times; %lu more lines dropped (over %.0f "
				 "a second)", lg.repeats, lg.dropped,
				 LOG_RATE);
		else
			snprintf(note, sizeof note, "last message repeated "
				 "%lu times", lg.repeats);
		log_emit(note);
		lg.repeats = lg.dropped = 0;
		if (!log_take_token()) {
			lg.dropped++;
			lg.last[0] = '\0';
			pthread_mutex_unlock(&lg.mu);
			return;
		}
	}
	memcpy(lg.last, line, sizeof lg.last);
	lg.last_t = now;
	log_emit(line);
	pthread_mutex_unlock(&lg.mu);
}

void fs_reply_text(fuse_req_t req, const char *text, size_t len, size_t size,
		   off_t off)
{
	if (off < 0 || (size_t)off >= len) {
		fuse_reply_buf(req, NULL, 0);
		return;
	}
	size_t n = len - (size_t)off;
	n = n < size ? n : size;
	/* Reply from a private copy: once the reply is written the reader
	 * may close at once, and its release (on another thread) may free
	 * `text` while fuse_reply_buf is still returning. */
	char *copy = malloc(n);
	if (!copy) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	memcpy(copy, text + off, n);
	fuse_reply_buf(req, copy, n);
	free(copy);
}

/* ---- synthetic directory listings --------------------------------------- */

int fs_dir_add(struct fs_dir *d, const char *name, const struct stat *st)
{
	if (d->n == d->cap) {
		size_t cap = d->cap ? d->cap * 2 : 16;
		struct fs_dent *e = realloc(d->e, cap * sizeof *e);

		if (!e)
			return -ENOMEM;
		d->e = e;
		d->cap = cap;
	}
	d->e[d->n].name = strdup(name);
	if (!d->e[d->n].name)
		return -ENOMEM;
	d->e[d->n].st = *st;
	d->n++;
	return 0;
}

void fs_dir_free(struct fs_dir *d)
{
	for (size_t i = 0; i < d->n; i++)
		free(d->e[i].name);
	free(d->e);
	d->e = NULL;
	d->n = d->cap = 0;
}

void fs_dir_reply(fuse_req_t req, const struct fs_dir *d, size_t size,
		  off_t off, bool plus)
{
	char *buf = malloc(size ? size : 1);
	size_t used = 0;

	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	for (size_t i = off < 0 ? 0 : (size_t)off; i < d->n; i++) {
		const struct fs_dent *e = &d->e[i];
		size_t n;

		if (plus) {
			/* nodeid 0: listed, not linked, so no lookup
			 * reference the kernel would later forget. */
			struct fuse_entry_param ep = { .attr = e->st };

			n = fuse_add_direntry_plus(req, buf + used,
						   size - used, e->name, &ep,
						   (off_t)i + 1);
		} else {
			n = fuse_add_direntry(req, buf + used, size - used,
					      e->name, &e->st, (off_t)i + 1);
		}
		if (n > size - used)
			break;
		used += n;
	}
	fuse_reply_buf(req, buf, used);
	free(buf);
}

/* ---- ctl command parsing ------------------------------------------------ */

int fs_ctl_check(const char *buf, size_t size, char *msg, size_t msglen)
{
	for (size_t i = 0; i < size; i++) {
		unsigned char ch = (unsigned char)buf[i];

		if (ch == '\n' || ch == '\t' || (ch >= 0x20 && ch != 0x7f))
			continue;
		if (ch == 0)
			snprintf(msg, msglen, "byte %zu is a NUL byte; nothing "
				 "was done", i + 1);
		else
			snprintf(msg, msglen, "byte %zu is the control "
				 "character 0x%02x; nothing was done", i + 1,
				 ch);
		return -EINVAL;
	}
	return 0;
}

/* Keys of settings: what backends document (template, network, tag...). */
static bool key_valid(const char *k, size_t n)
{
	if (n == 0 || n > 64)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)k[i];

		if (!isalnum(ch) && ch != '_' && ch != '-' && ch != '.')
			return false;
	}
	return true;
}

int fs_new_parse(char *line, struct fs_cmd *c, char *msg, size_t msglen)
{
	if (fs_cmd_parse(line, c)) {
		snprintf(msg, msglen, "more than %d words in one line",
			 FS_CMD_MAXF);
		return -EINVAL;
	}
	if (c->nf == 0)
		return 0;
	if (strcmp(c->f[0], "new") != 0) {
		snprintf(msg, msglen, "unknown verb '%.64s'; verbs: new NAME "
			 "[key=value ...]", c->f[0]);
		return -EINVAL;
	}
	if (c->nf < 2) {
		snprintf(msg, msglen, "'new' needs a NAME");
		return -EINVAL;
	}
	if (!fs_name_valid(c->f[1]) || fs_name_reserved(c->f[1])) {
		snprintf(msg, msglen, "new %.64s: %s", c->f[1],
			 fs_name_reserved(c->f[1]) ? "that name is reserved" :
			 FS_NAME_RULE);
		return -EINVAL;
	}
	for (int i = 2; i < c->nf; i++) {
		const char *eq = strchr(c->f[i], '=');

		if (!eq || !key_valid(c->f[i], (size_t)(eq - c->f[i]))) {
			snprintf(msg, msglen, "new %s: '%.64s' is not "
				 "key=value (key: letters, digits, '_', '-', "
				 "'.')", c->f[1], c->f[i]);
			return -EINVAL;
		}
		/* tag=T is the one repeatable setting */
		for (int k = 2; k < i && strncmp(c->f[i], "tag=", 4); k++) {
			size_t kl = (size_t)(eq - c->f[i]);

			if (!strncmp(c->f[k], c->f[i], kl + 1)) {
				snprintf(msg, msglen, "new %s: '%.*s' given "
					 "twice", c->f[1], (int)kl, c->f[i]);
				return -EINVAL;
			}
		}
	}
	return 0;
}

int fs_cmd_parse(char *line, struct fs_cmd *c)
{
	char *p = line;

	c->nf = 0;
	for (;;) {
		while (*p && isspace((unsigned char)*p))
			*p++ = '\0';
		if (!*p)
			return 0;
		if (c->nf == FS_CMD_MAXF)
			return -EINVAL;
		c->f[c->nf++] = p;
		while (*p && !isspace((unsigned char)*p))
			p++;
	}
}

const struct fs_cmdtab *fs_cmd_lookup(const struct fs_cmd *c,
				      const struct fs_cmdtab *tab, size_t n,
				      char *msg, size_t msglen)
{
	if (c->nf == 0) {
		snprintf(msg, msglen, "empty command");
		return NULL;
	}
	for (size_t i = 0; i < n; i++) {
		const struct fs_cmdtab *t = &tab[i];
		int na = c->nf - 1;

		if (strcmp(c->f[0], t->verb) != 0)
			continue;
		if (na >= t->minargs && na <= t->maxargs)
			return t;
		if (t->minargs == t->maxargs)
			snprintf(msg, msglen,
				 "'%s' takes %d argument%s, got %d", t->verb,
				 t->minargs, t->minargs == 1 ? "" : "s", na);
		else
			snprintf(msg, msglen,
				 "'%s' takes %d to %d arguments, got %d",
				 t->verb, t->minargs, t->maxargs, na);
		return NULL;
	}

	size_t len = (size_t)snprintf(msg, msglen,
				      "unknown verb '%.64s'; verbs:", c->f[0]);
	for (size_t i = 0; i < n && len < msglen; i++)
		len += (size_t)snprintf(msg + len, msglen - len, " %s",
					tab[i].verb);
	return NULL;
}

/* ---- symlinks ----------------------------------------------------------- */

/* Lexically normalise absolute `path` into comps (pointers into a copy):
 * drop "" and ".", ".." pops (at / it stays at /, as the kernel does). */
static int norm_push(char *s, char **comps, int *n, int max)
{
	for (char *tok = strtok(s, "/"); tok; tok = strtok(NULL, "/")) {
		if (strcmp(tok, ".") == 0)
			continue;
		if (strcmp(tok, "..") == 0) {
			if (*n > 0)
				(*n)--;
			continue;
		}
		if (*n == max)
			return -ENAMETOOLONG;
		comps[(*n)++] = tok;
	}
	return 0;
}

int fs_symlink_host(const char *linkpath, const char *target, char *out,
		    size_t outlen)
{
	enum { MAXC = 512 };
	char dirbuf[4096], tbuf[4096];
	char *dir[MAXC], *comps[MAXC];
	int ndir = 0, n = 0, depth;
	size_t len = 0;

	if (strlen(linkpath) >= sizeof dirbuf || strlen(target) >= sizeof tbuf)
		return -ENAMETOOLONG;
	if (target[0] != '/') {
		/* Relative: fine unless it climbs above the root, where the
		 * sandbox clamps at / but the host would walk out of fs/. */
		int d = 0, min = 0;

		snprintf(dirbuf, sizeof dirbuf, "%s", linkpath);
		snprintf(tbuf, sizeof tbuf, "%s", target);
		for (char *t = strtok(dirbuf, "/"); t; t = strtok(NULL, "/"))
			d++;
		d--; /* the link's own name */
		for (char *t = strtok(tbuf, "/"); t; t = strtok(NULL, "/")) {
			if (strcmp(t, "..") == 0)
				d--;
			else if (strcmp(t, ".") != 0)
				d++;
			if (d < min)
				min = d;
		}
		if (min >= 0) {
			if (strlen(target) >= outlen)
				return -ENAMETOOLONG;
			snprintf(out, outlen, "%s", target);
			return 0;
		}
		/* Resolve against the link's directory, then treat as
		 * absolute. */
		snprintf(dirbuf, sizeof dirbuf, "%s", linkpath);
		char *slash = strrchr(dirbuf, '/');
		if (slash)
			*slash = '\0';
		if (norm_push(dirbuf, comps, &n, MAXC))
			return -ENAMETOOLONG;
		snprintf(tbuf, sizeof tbuf, "%s", target);
		if (norm_push(tbuf, comps, &n, MAXC))
			return -ENAMETOOLONG;
	} else {
		snprintf(tbuf, sizeof tbuf, "%s", target);
		if (norm_push(tbuf, comps, &n, MAXC))
			return -ENAMETOOLONG;
	}

	/* Depth of the link's directory below the sandbox root. */
	char lbuf[4096];
	snprintf(lbuf, sizeof lbuf, "%s", linkpath);
	if (norm_push(lbuf, dir, &ndir, MAXC))
		return -ENAMETOOLONG;
	depth = ndir > 0 ? ndir - 1 : 0;

	out[0] = '\0';
	for (int i = 0; i < depth; i++) {
		int w = snprintf(out + len, outlen - len, "%s..",
				 len ? "/" : "");
		if (w < 0 || (size_t)w >= outlen - len)
			return -ENAMETOOLONG;
		len += (size_t)w;
	}
	for (int i = 0; i < n; i++) {
		int w = snprintf(out + len, outlen - len, "%s%s",
				 len ? "/" : "", comps[i]);
		if (w < 0 || (size_t)w >= outlen - len)
			return -ENAMETOOLONG;
		len += (size_t)w;
	}
	if (len == 0)
		snprintf(out, outlen, ".");
	return 0;
}

bool fs_name_valid(const char *name)
{
	size_t n = strlen(name);

	/* The first character is a letter or digit: no "-rf" that tools
	 * take for an option, no ".hidden" that ls hides, no "." / "..". */
	if (n == 0 || n > FS_NAME_MAX || !isalnum((unsigned char)name[0]))
		return false;
	for (size_t i = 1; i < n; i++) {
		unsigned char ch = (unsigned char)name[i];

		if (!isalnum(ch) && ch != '.' && ch != '_' && ch != '-')
			return false;
	}
	return true;
}

bool fs_name_reserved(const char *name)
{
	static const char *const reserved[] = { "ctl", "err", "templates" };

	for (size_t i = 0; i < sizeof reserved / sizeof reserved[0]; i++)
		if (!strcmp(name, reserved[i]))
			return true;
	return false;
}

/* ---- directories listed at open (fi->fh owns a malloc'd fs_dir) -------- */

void fs_dir_open_reply(fuse_req_t req, struct fuse_file_info *fi,
		       struct fs_dir *d, int err)
{
	if (err) {
		fs_dir_free(d);
		free(d);
		fuse_reply_err(req, -err);
		return;
	}
	fi->fh = (uintptr_t)d;
	fuse_reply_open(req, fi);
}

void fs_dir_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	(void)ino;
	fs_dir_reply(req, (struct fs_dir *)(uintptr_t)fi->fh, size, off,
		     false);
}

void fs_dir_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size,
			off_t off, struct fuse_file_info *fi)
{
	(void)ino;
	fs_dir_reply(req, (struct fs_dir *)(uintptr_t)fi->fh, size, off,
		     true);
}

void fs_dir_releasedir(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	struct fs_dir *d = (struct fs_dir *)(uintptr_t)fi->fh;

	(void)ino;
	fs_dir_free(d);
	free(d);
	fuse_reply_err(req, 0);
}
