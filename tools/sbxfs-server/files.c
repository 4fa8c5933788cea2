/* files.c - the files/ endpoints, with envd's semantics and the control
 * plane's error mapping (missing file: 502 agent_error, or an empty 200 on
 * the streaming read). */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>

#include "srv.h"

#define HOME "/root"	/* files run as root (envd username=root) */
#define PATH_CAP 4096
#define LIST_MAX 200000	/* entries per files/list answer */
#define RM_DEPTH 128

/* ---- paths -------------------------------------------------------------- */

/* envd's expand_and_resolve: absolute as is, ~ = home, relative under it. */
static int resolve(const char *in, char *out, size_t len)
{
	int n;

	if (!in || !in[0])
		return -EINVAL;
	if (in[0] == '/')
		n = snprintf(out, len, "%s", in);
	else if (!strcmp(in, "~"))
		n = snprintf(out, len, "%s", HOME);
	else if (!strncmp(in, "~/", 2))
		n = snprintf(out, len, "%s/%s", HOME, in + 2);
	else
		n = snprintf(out, len, "%s/%s", HOME, in);
	if (n < 0 || (size_t)n >= len)
		return -ENAMETOOLONG;
	/* drop trailing slashes but keep "/" */
	while (n > 1 && out[n - 1] == '/')
		out[--n] = '\0';
	return 0;
}

/* Lexically normalise an absolute path (., .., //). */
static void normalize(char *p)
{
	char *src = p, *dst = p;

	while (*src) {
		if (*src == '/') {
			while (*src == '/')
				src++;
			if (!strncmp(src, "./", 2) || !strcmp(src, ".")) {
				src++;
				continue;
			}
			if (!strncmp(src, "../", 3) || !strcmp(src, "..")) {
				src += 2;
				while (dst > p && *--dst != '/')
					;
				continue;
			}
			*dst++ = '/';
			continue;
		}
		*dst++ = *src++;
	}
	if (dst > p + 1 && dst[-1] == '/')
		dst--;
	if (dst == p)
		*dst++ = '/';
	*dst = '\0';
}

/* JSON body with a "path": the resolved path, or answered 400. */
static cJSON *path_body(struct srv_req *r, char *path, size_t len)
{
	const cJSON *v;
	struct srv_buf b;
	cJSON *o;
	int rc;

	rc = srv_read_all(r, &b, SRV_JSON_MAX);
	o = rc || !b.p ? NULL : cJSON_ParseWithLength(b.p, b.len);
	srv_buf_free(&b);
	if (rc == -EPIPE) {
		cJSON_Delete(o);
		return NULL;
	}
	if (!o || !cJSON_IsObject(o)) {
		cJSON_Delete(o);
		srv_error(r, 400, "invalid_request", "invalid JSON body");
		return NULL;
	}
	v = cJSON_GetObjectItemCaseSensitive(o, "path");
	if (!cJSON_IsString(v) || !v->valuestring[0]) {
		cJSON_Delete(o);
		srv_error(r, 400, "invalid_request", "path is required");
		return NULL;
	}
	if (resolve(v->valuestring, path, len)) {
		cJSON_Delete(o);
		srv_error(r, 400, "invalid_request", "invalid path");
		return NULL;
	}
	return o;
}

/* envd's 404 text wrapped the way the host agent and control plane do. */
static void envd_error(struct srv_req *r, const char *op, const char *path,
		       int err, const char *msg)
{
	if (err == -ENOENT)
		srv_errorf(r, 502, "agent_error",
			   "internal: %s: envd returned status 404: "
			   "{\"code\":404,\"message\":\"path '%s' does not "
			   "exist\"}", op, path);
	else
		srv_errorf(r, 502, "agent_error", "internal: %s: %s", op,
			   msg && msg[0] ? msg : api_strerror(err));
}

/* ---- read --------------------------------------------------------------- */

static void link_target(const char *id, const char *path, char *tgt,
			size_t tl, const char **type);

static void do_read(struct srv_req *r, bool stream)
{
	char path[PATH_CAP], msg[512];
	static const char *ct = "application/octet-stream";
	struct api_file *f = NULL;
	struct stat st;
	char *buf;
	off_t off = 0;
	ssize_t n;
	cJSON *o;
	int rc;

	if (srv_need_running(r, "files"))
		return;
	o = path_body(r, path, sizeof(path));
	if (!o)
		return;
	cJSON_Delete(o);
	rc = srv_stat(r->id, path, &st, msg, sizeof(msg));
	if (!rc && S_ISLNK(st.st_mode)) {
		/* envd opens through links; the backend's open follows them
		 * inside the sandbox, the target's type decides here */
		char tgt[PATH_CAP] = "";
		const char *t;

		link_target(r->id, path, tgt, sizeof(tgt), &t);
		rc = tgt[0] ? srv_stat(r->id, tgt, &st, msg, sizeof(msg)) :
			-ENOENT;
	}
	if (!rc && !S_ISREG(st.st_mode)) {
		rc = S_ISDIR(st.st_mode) ? -EISDIR : -EINVAL;
		snprintf(msg, sizeof(msg), "envd returned status 400: "
			 "{\"code\":400,\"message\":\"path '%.200s' is not "
			 "a regular file\"}", path);
	}
	if (!rc)
		rc = srv_open(r->id, path, O_RDONLY, 0, &f, msg, sizeof(msg));
	if (rc) {
		if (stream) /* the 200 was committed before envd answered */
			srv_respond(r, 200, ct, NULL, 0);
		else
			envd_error(r, "read file", path, rc, msg);
		return;
	}
	buf = malloc(65536);
	if (!buf) {
		srv_close(f, msg, sizeof(msg));
		srv_error(r, 500, "internal_error", "out of memory");
		return;
	}
	n = srv_pread(f, buf, 65536, 0, msg, sizeof(msg));
	if (n < 0 && !stream) {
		envd_error(r, "read file", path, (int)n, msg);
	} else if (n <= 0) {
		srv_respond(r, 200, ct, NULL, 0);
	} else if (n <= 2048 && !stream) {
		/* small: Go sends it with a Content-Length */
		ssize_t m = srv_pread(f, buf + n, 65536 - n, n, msg,
				      sizeof(msg));

		if (m > 0)
			goto big;
		srv_respond(r, 200, ct, buf, n);
	} else {
big:
		srv_begin(r, 200, ct);
		for (;;) {
			if (srv_write(r, buf, n))
				break;
			off += n;
			n = srv_pread(f, buf, 65536, off, msg, sizeof(msg));
			if (n <= 0)
				break;	/* an error truncates the body */
		}
		srv_end(r);
	}
	free(buf);
	srv_close(f, msg, sizeof(msg));
}

void srv_h_read(struct srv_req *r)
{
	do_read(r, false);
}

void srv_h_stream_read(struct srv_req *r)
{
	do_read(r, true);
}

/* ---- FileEntry ---------------------------------------------------------- */

static const char *ftype(mode_t m)
{
	return S_ISREG(m) ? "file" : S_ISDIR(m) ? "directory" : "unknown";
}

static void perm_string(mode_t m, char *o)
{
	static const char rwx[] = "rwxrwxrwx";
	int i;

	o[0] = S_ISDIR(m) ? 'd' : S_ISLNK(m) ? 'l' : S_ISCHR(m) ? 'c' :
	       S_ISBLK(m) ? 'b' : S_ISFIFO(m) ? 'p' : S_ISSOCK(m) ? 's' : '-';
	for (i = 0; i < 9; i++)
		o[1 + i] = (m & (0400 >> i)) ? rwx[i] : '-';
	if (m & S_ISUID)
		o[3] = (m & 0100) ? 's' : 'S';
	if (m & S_ISGID)
		o[6] = (m & 0010) ? 's' : 'S';
	if (m & S_ISVTX)
		o[9] = (m & 0001) ? 't' : 'T';
	o[10] = '\0';
}

static void user_name(uid_t u, char *o, size_t len)
{
	struct passwd pw, *res = NULL;
	char buf[2048];

	if (!getpwuid_r(u, &pw, buf, sizeof(buf), &res) && res)
		snprintf(o, len, "%s", pw.pw_name);
	else
		snprintf(o, len, "%u", (unsigned)u);
}

static void group_name(gid_t g, char *o, size_t len)
{
	struct group gr, *res = NULL;
	char buf[2048];

	if (!getgrgid_r(g, &gr, buf, sizeof(buf), &res) && res)
		snprintf(o, len, "%s", gr.gr_name);
	else
		snprintf(o, len, "%u", (unsigned)g);
}

/* Follow the symlink at `path` (up to 8 hops): canonical target + type. */
static void link_target(const char *id, const char *path, char *tgt,
			size_t tl, const char **type)
{
	char cur[PATH_CAP], lk[PATH_CAP], msg[128];
	struct stat st;
	int hop;

	*type = "unknown";
	snprintf(cur, sizeof(cur), "%s", path);
	for (hop = 0; hop < 8; hop++) {
		if (srv_readlink(id, cur, lk, sizeof(lk), msg, sizeof(msg)))
			return;
		if (lk[0] == '/') {
			snprintf(cur, sizeof(cur), "%s", lk);
		} else {
			char *s = strrchr(cur, '/');
			char dir[PATH_CAP];

			snprintf(dir, sizeof(dir), "%.*s",
				 (int)(s ? s - cur : 0), cur);
			if (snprintf(cur, sizeof(cur), "%s/%s", dir, lk) >=
			    (int)sizeof(cur))
				return;
		}
		normalize(cur);
		if (srv_stat(id, cur, &st, msg, sizeof(msg)))
			return;	/* broken link: "unknown" */
		if (!S_ISLNK(st.st_mode)) {
			snprintf(tgt, tl, "%s", cur);
			*type = ftype(st.st_mode);
			return;
		}
	}
}

static void entry_json(struct srv_buf *b, const char *id, const char *name,
		       const char *path, const struct stat *st)
{
	char perms[12], own[64], grp[64], tgt[PATH_CAP] = "";
	const char *type = ftype(st->st_mode);

	if (S_ISLNK(st->st_mode))
		link_target(id, path, tgt, sizeof(tgt), &type);
	perm_string(st->st_mode, perms);
	user_name(st->st_uid, own, sizeof(own));
	group_name(st->st_gid, grp, sizeof(grp));
	srv_buf_addf(b, "{\"name\":");
	srv_json_str(b, name, strlen(name));
	srv_buf_addf(b, ",\"path\":");
	srv_json_str(b, path, strlen(path));
	srv_buf_addf(b, ",\"type\":\"%s\",\"size\":%lld,\"mode\":%u,"
		     "\"permissions\":\"%s\",\"owner\":", type,
		     (long long)st->st_size, (unsigned)(st->st_mode & 07777),
		     perms);
	srv_json_str(b, own, strlen(own));
	srv_buf_addf(b, ",\"group\":");
	srv_json_str(b, grp, strlen(grp));
	srv_buf_addf(b, ",\"modified_at\":%lld", (long long)st->st_mtime);
	if (tgt[0]) {
		srv_buf_addf(b, ",\"symlink_target\":");
		srv_json_str(b, tgt, strlen(tgt));
	}
	srv_buf_add(b, "}", 1);
}

/* ---- list --------------------------------------------------------------- */

static int list_rec(struct srv_req *r, struct srv_buf *b, const char *dir,
		    unsigned depth, size_t *count, char *msg, size_t ml)
{
	struct srv_dirent *d;
	size_t n, i;
	int rc;

	rc = srv_readdir(r->id, dir, &d, &n, msg, ml);
	if (rc)
		return rc;
	for (i = 0; i < n && *count < LIST_MAX; i++) {
		char p[PATH_CAP];

		if (snprintf(p, sizeof(p), "%s/%s", strcmp(dir, "/") ? dir :
			     "", d[i].name) >= (int)sizeof(p))
			continue;
		if ((*count)++)
			srv_buf_add(b, ",", 1);
		entry_json(b, r->id, d[i].name, p, &d[i].st);
		if (depth > 1 && S_ISDIR(d[i].st.st_mode))
			list_rec(r, b, p, depth - 1, count, msg, ml);
	}
	srv_dirents_free(d, n);
	return 0;
}

void srv_h_list_dir(struct srv_req *r)
{
	char path[PATH_CAP], msg[512];
	const cJSON *dv;
	struct srv_buf b;
	struct stat st;
	unsigned depth = 1;
	size_t count = 0;
	cJSON *o;
	int rc;

	if (srv_need_running(r, "files"))
		return;
	o = path_body(r, path, sizeof(path));
	if (!o)
		return;
	dv = cJSON_GetObjectItemCaseSensitive(o, "depth");
	if (cJSON_IsNumber(dv) && dv->valuedouble >= 1)
		depth = dv->valuedouble > 64 ? 64 : (unsigned)dv->valuedouble;
	cJSON_Delete(o);
	rc = srv_stat(r->id, path, &st, msg, sizeof(msg));
	if (!rc && S_ISLNK(st.st_mode)) {
		char tgt[PATH_CAP] = "";
		const char *t;

		link_target(r->id, path, tgt, sizeof(tgt), &t);
		if (tgt[0])
			snprintf(path, sizeof(path), "%s", tgt);
		rc = srv_stat(r->id, path, &st, msg, sizeof(msg));
	}
	if (!rc && !S_ISDIR(st.st_mode)) {
		srv_errorf(r, 502, "agent_error", "internal: list dir: "
			   "invalid_argument: path is not a directory: %s",
			   path);
		return;
	}
	if (rc) {
		srv_errorf(r, 502, "agent_error", "internal: list dir: "
			   "not_found: path not found: %s", path);
		return;
	}
	srv_buf_init(&b, 256u << 20);
	srv_buf_addf(&b, "{\"entries\":[");
	rc = list_rec(r, &b, path, depth, &count, msg, sizeof(msg));
	if (rc) {
		srv_buf_free(&b);
		srv_errorf(r, 502, "agent_error", "internal: list dir: %s",
			   msg);
		return;
	}
	srv_buf_addf(&b, "]}");
	srv_json(r, 200, &b);
	srv_buf_free(&b);
}

/* ---- mkdir, remove ------------------------------------------------------ */

/* 0 when path is a directory or a symlink to one, else -ENOTDIR/-errno.
 * envd follows symlinks in parents (os.MkdirAll); "path/." makes the
 * backend follow the link itself, resolved inside the sandbox root. */
static int is_dir(const char *id, const char *path, char *msg, size_t ml)
{
	char dot[PATH_CAP];
	struct stat st;
	int rc;

	rc = srv_stat(id, path, &st, msg, ml);
	if (!rc && S_ISLNK(st.st_mode)) {
		if (snprintf(dot, sizeof(dot), "%s/.", path) >=
		    (int)sizeof(dot))
			return -ENAMETOOLONG;
		rc = srv_stat(id, dot, &st, msg, ml);
		if (rc == -ENOENT || rc == -ELOOP)
			rc = -ENOTDIR;	/* dangling or looping link */
	}
	if (!rc && !S_ISDIR(st.st_mode))
		rc = -ENOTDIR;
	if (rc == -ENOTDIR)
		snprintf(msg, ml, "not a directory");
	return rc;
}

/* mkdir -p; 0/-errno. */
static int mkdir_p(const char *id, const char *path, char *msg, size_t ml)
{
	char p[PATH_CAP];
	size_t i;
	int rc;

	snprintf(p, sizeof(p), "%s", path);
	for (i = 1;; i++) {
		if (p[i] != '/' && p[i] != '\0')
			continue;
		{
			char c = p[i];

			p[i] = '\0';
			rc = srv_mkdir(id, p, 0755, msg, ml);
			if (rc == -EEXIST)
				rc = is_dir(id, p, msg, ml);
			p[i] = c;
			if (rc)
				return rc;
			if (!c)
				return 0;
		}
	}
}

void srv_h_mkdir(struct srv_req *r)
{
	char path[PATH_CAP], msg[512];
	struct srv_buf b;
	struct stat st;
	const char *name;
	cJSON *o;
	int rc;

	if (srv_need_running(r, "files"))
		return;
	o = path_body(r, path, sizeof(path));
	if (!o)
		return;
	cJSON_Delete(o);
	normalize(path);
	rc = srv_stat(r->id, path, &st, msg, sizeof(msg));
	if (!rc && S_ISLNK(st.st_mode) && !is_dir(r->id, path, msg,
						     sizeof(msg)))
		st.st_mode = S_IFDIR;	/* a link to a directory counts */
	if (!rc && S_ISDIR(st.st_mode)) {
		srv_errorf(r, 409, "conflict", "already_exists: directory "
			   "already exists: %s", path);
		return;
	}
	if (!rc) {
		srv_errorf(r, 400, "invalid_request", "invalid_argument: "
			   "path already exists but is not a directory: %s",
			   path);
		return;
	}
	rc = mkdir_p(r->id, path, msg, sizeof(msg));
	if (!rc)
		rc = srv_stat(r->id, path, &st, msg, sizeof(msg));
	if (rc) {
		if (rc == -ENOTDIR)
			srv_errorf(r, 400, "invalid_request",
				   "invalid_argument: a parent of %s is not "
				   "a directory", path);
		else
			srv_errorf(r, 502, "agent_error",
				   "internal: make dir: %s", msg);
		return;
	}
	name = strrchr(path, '/');
	name = name && name[1] ? name + 1 : path;
	srv_buf_init(&b, 65536);
	srv_buf_addf(&b, "{\"entry\":");
	entry_json(&b, r->id, name, path, &st);
	srv_buf_add(&b, "}", 1);
	srv_json(r, 200, &b);
	srv_buf_free(&b);
}

static int rm_rf(const char *id, const char *path, int depth, char *msg,
		 size_t ml)
{
	struct srv_dirent *d;
	struct stat st;
	size_t n, i;
	int rc;

	rc = srv_stat(id, path, &st, msg, ml);
	if (rc)
		return rc;
	if (!S_ISDIR(st.st_mode))
		return srv_unlink(id, path, msg, ml);
	if (depth > RM_DEPTH)
		return -ELOOP;
	rc = srv_readdir(id, path, &d, &n, msg, ml);
	if (rc)
		return rc;
	for (i = 0; i < n && !rc; i++) {
		char p[PATH_CAP];

		if (snprintf(p, sizeof(p), "%s/%s", strcmp(path, "/") ?
			     path : "", d[i].name) >= (int)sizeof(p)) {
			rc = -ENAMETOOLONG;
			break;
		}
		if (S_ISDIR(d[i].st.st_mode))
			rc = rm_rf(id, p, depth + 1, msg, ml);
		else
			rc = srv_unlink(id, p, msg, ml);
	}
	srv_dirents_free(d, n);
	return rc ? rc : srv_rmdir(id, path, msg, ml);
}

void srv_h_remove(struct srv_req *r)
{
	char path[PATH_CAP], msg[512];
	cJSON *o;
	int rc;

	if (srv_need_running(r, "files"))
		return;
	o = path_body(r, path, sizeof(path));
	if (!o)
		return;
	cJSON_Delete(o);
	rc = rm_rf(r->id, path, 0, msg, sizeof(msg));
	if (rc == -ENOENT)
		srv_errorf(r, 502, "agent_error", "internal: remove: "
			   "not_found: path not found: %s", path);
	else if (rc)
		srv_errorf(r, 502, "agent_error", "internal: remove: %s",
			   msg);
	else
		srv_no_content(r);
}

/* ---- multipart ---------------------------------------------------------- */

struct mp {
	struct srv_req *r;
	char delim[200];	/* "\r\n--" boundary */
	size_t dlen;
	struct srv_buf buf;
	bool in_eof;
	bool in_part, part_end, done;
};

/* Boundary from a Content-Type; 0 or -EINVAL. */
static int mp_init(struct mp *m, struct srv_req *r)
{
	const char *b = strcasestr(r->ctype, "boundary=");
	size_t n;

	memset(m, 0, sizeof(*m));
	m->r = r;
	if (!b)
		return -EINVAL;
	b += 9;
	if (*b == '"') {
		b++;
		n = strcspn(b, "\"");
	} else {
		n = strcspn(b, "; \t");
	}
	if (!n || n > 70)
		return -EINVAL;
	m->dlen = snprintf(m->delim, sizeof(m->delim), "\r\n--%.*s", (int)n,
			   b);
	/* start as if a CRLF preceded the first boundary */
	srv_buf_init(&m->buf, SRV_PIPE_WIN * 2);
	srv_buf_add(&m->buf, "\r\n", 2);
	return 0;
}

static int mp_fill(struct mp *m)
{
	char tmp[65536];
	ssize_t n;

	if (m->in_eof)
		return 0;
	n = srv_read(m->r, tmp, sizeof(tmp));
	if (n < 0)
		return (int)n;
	if (!n) {
		m->in_eof = true;
		return 0;
	}
	return srv_buf_add(&m->buf, tmp, n) ? -E2BIG : 1;
}

static const char *find(const char *h, size_t hl, const char *n, size_t nl)
{
	return memmem(h, hl, n, nl);
}

/* Body bytes of the current part: >0, 0 at its end, <0 error. */
static ssize_t mp_read(struct mp *m, char *out, size_t len)
{
	for (;;) {
		const char *d;
		size_t avail;
		int rc;

		if (!m->in_part)
			return 0;
		d = find(m->buf.p, m->buf.len, m->delim, m->dlen);
		avail = d ? (size_t)(d - m->buf.p) :
			m->buf.len >= m->dlen ? m->buf.len - m->dlen + 1 : 0;
		if (avail) {
			if (avail > len)
				avail = len;
			memcpy(out, m->buf.p, avail);
			srv_buf_consume(&m->buf, avail);
			return avail;
		}
		if (d) {
			m->in_part = false;
			return 0;
		}
		rc = mp_fill(m);
		if (rc < 0)
			return rc;
		if (!rc)
			return -EPROTO;	/* truncated body */
	}
}

static void disp_param(const char *h, const char *key, char *out,
		       size_t len, bool *has)
{
	const char *p = h;
	size_t kl = strlen(key);

	*has = false;
	out[0] = '\0';
	while ((p = strcasestr(p, key))) {
		if ((p == h || p[-1] == ';' || p[-1] == ' ' || p[-1] == '\t')
		    && p[kl] == '=') {
			const char *v = p + kl + 1;
			size_t n;

			if (*v == '"') {
				v++;
				n = strcspn(v, "\"");
			} else {
				n = strcspn(v, "; \t\r\n");
			}
			snprintf(out, len, "%.*s", (int)n, v);
			*has = true;
			return;
		}
		p += kl;
	}
}

/* Next part: 1 with name/filename, 0 at the end, <0 error. */
static int mp_next(struct mp *m, char *name, size_t nl, char *fname,
		   size_t fl, bool *has_fname)
{
	char tmp[4096];
	const char *d, *e;
	ssize_t n;
	int rc;

	/* finish the current part */
	while (m->in_part && (n = mp_read(m, tmp, sizeof(tmp))) > 0)
		;
	if (m->in_part)
		return -EPROTO;
	if (m->done)
		return 0;
	for (;;) {
		d = find(m->buf.p, m->buf.len, m->delim, m->dlen);
		if (d && (size_t)(d - m->buf.p) + m->dlen + 2 <= m->buf.len)
			break;
		if (!d && m->buf.len > m->dlen)
			srv_buf_consume(&m->buf, m->buf.len - m->dlen);
		rc = mp_fill(m);
		if (rc <= 0)
			return rc ? rc : -EPROTO;
	}
	srv_buf_consume(&m->buf, d - m->buf.p + m->dlen);
	if (!strncmp(m->buf.p, "--", 2)) {
		m->done = true;
		return 0;
	}
	/* headers up to CRLFCRLF (after the boundary line's CRLF) */
	for (;;) {
		e = m->buf.p ? find(m->buf.p, m->buf.len, "\r\n\r\n", 4) :
			NULL;
		if (e)
			break;
		if (m->buf.len > 16384)
			return -E2BIG;
		rc = mp_fill(m);
		if (rc <= 0)
			return rc ? rc : -EPROTO;
	}
	{
		size_t hl = e - m->buf.p;
		char *h = strndup(m->buf.p, hl);
		char *cd;
		bool has;

		if (!h)
			return -ENOMEM;
		cd = strcasestr(h, "content-disposition:");
		if (cd) {
			char *eol = strstr(cd, "\r\n");

			if (eol)
				*eol = '\0';
			disp_param(cd, "name", name, nl, &has);
			disp_param(cd, "filename", fname, fl, has_fname);
		} else {
			name[0] = '\0';
			*has_fname = false;
		}
		free(h);
		srv_buf_consume(&m->buf, hl + 4);
	}
	m->in_part = true;
	return 1;
}

/* ---- write -------------------------------------------------------------- */

struct upload {
	struct srv_req *r;
	char path[PATH_CAP];
	struct api_file *f;
	off_t off;
	struct srv_buf held;	/* content held back (limit / no path yet) */
	int err;
	char msg[512];
};

static int up_open(struct upload *u)
{
	char dir[PATH_CAP], *s;
	int rc;

	snprintf(dir, sizeof(dir), "%s", u->path);
	s = strrchr(dir, '/');
	if (s && s != dir) {
		*s = '\0';
		rc = mkdir_p(u->r->id, dir, u->msg, sizeof(u->msg));
		if (rc)
			return rc;
	}
	return srv_open(u->r->id, u->path, O_WRONLY | O_CREAT | O_TRUNC,
			0644, &u->f, u->msg, sizeof(u->msg));
}

static int up_put(struct upload *u, const void *p, size_t n)
{
	int rc;

	if (!u->f) {
		rc = up_open(u);
		if (rc)
			return rc;
	}
	rc = srv_pwrite(u->f, p, n, u->off, u->msg, sizeof(u->msg));
	if (!rc)
		u->off += n;
	return rc;
}

/* Copy the file part; buffer it while the path is unknown or while the
 * envd ceiling is emulated (nothing is written when it is exceeded). */
static int up_part(struct upload *u, struct mp *m, bool have_path)
{
	char *buf = malloc(65536);
	ssize_t n;
	int rc = 0;

	if (!buf)
		return -ENOMEM;
	while ((n = mp_read(m, buf, 65536)) > 0) {
		if (!have_path || srv_g.upload_limit) {
			if (srv_g.upload_limit &&
			    u->held.len + n > srv_g.upload_limit) {
				rc = -EFBIG;
				break;
			}
			if (srv_buf_add(&u->held, buf, n)) {
				rc = -EFBIG;
				break;
			}
			continue;
		}
		rc = up_put(u, buf, n);
		if (rc)
			break;
	}
	free(buf);
	if (!rc && n < 0)
		rc = (int)n;
	return rc;
}

static void do_write(struct srv_req *r, bool stream)
{
	char name[128], fname[512], val[PATH_CAP];
	bool has_fname, have_path = false, have_file = false;
	struct upload u;
	struct mp m;
	int rc;

	if (srv_need_running(r, "files"))
		return;
	if (!stream && (!strcasestr(r->ctype, "multipart/form-data") ||
			mp_init(&m, r))) {
		srv_error(r, 400, "invalid_request",
			  "expected multipart/form-data");
		return;
	}
	if (stream && (!strcasestr(r->ctype, "multipart/") ||
		       mp_init(&m, r))) {
		srv_error(r, 400, "invalid_request",
			  "expected multipart/form-data with boundary");
		return;
	}
	if (!stream && r->clen > (long long)SRV_BODY_MAX) {
		srv_buf_free(&m.buf);
		srv_error(r, 413, "too_large", "file exceeds 100 MB limit");
		return;
	}
	memset(&u, 0, sizeof(u));
	u.r = r;
	srv_buf_init(&u.held, SRV_BODY_MAX);
	while ((rc = mp_next(&m, name, sizeof(name), fname, sizeof(fname),
			     &has_fname)) > 0) {
		if (!strcmp(name, "path") && !has_fname && !have_path) {
			ssize_t n = mp_read(&m, val, sizeof(val) - 1);
			size_t got = n > 0 ? n : 0;

			while (n > 0 && got < sizeof(val) - 1) {
				n = mp_read(&m, val + got,
					    sizeof(val) - 1 - got);
				if (n > 0)
					got += n;
			}
			val[got] = '\0';
			if (val[0] && !resolve(val, u.path, sizeof(u.path)))
				have_path = true;
			if (stream && have_file)
				break;	/* Go's loop stops at both */
			continue;
		}
		if (!strcmp(name, "file") && !have_file &&
		    (has_fname || stream)) {
			have_file = true;
			if (stream && !have_path) {
				/* quirk: drained while looking for path;
				 * the file ends up empty */
				continue;
			}
			rc = up_part(&u, &m, have_path);
			if (rc)
				break;
			if (stream)
				break;
		}
	}
	if (rc == -EFBIG && !stream && !srv_g.upload_limit) {
		srv_error(r, 413, "too_large", "file exceeds 100 MB limit");
	} else if (rc == -EFBIG) {
		srv_errorf(r, 502, "agent_error", "internal: write file: envd "
			   "returned status 500: error reading field "
			   "'file': body exceeds %zu bytes",
			   srv_g.upload_limit);
	} else if (rc == -EPIPE) {
		/* client gone */
	} else if (rc < 0 && !u.err && !u.f && rc != -EPROTO &&
		   rc != -E2BIG) {
		if (u.msg[0])
			srv_errorf(r, 502, "agent_error",
				   "internal: write file: %s", u.msg);
		else
			srv_errorf(r, 502, "agent_error",
				   "internal: write file: %s",
				   api_strerror(rc));
	} else if (rc < 0 && (rc == -EPROTO || rc == -E2BIG)) {
		srv_error(r, 400, "invalid_request",
			  "malformed multipart body");
	} else if (rc < 0) {
		srv_errorf(r, 502, "agent_error", "internal: write file: %s",
			   u.msg[0] ? u.msg : api_strerror(rc));
	} else if (!have_path) {
		srv_error(r, 400, "invalid_request", "path field is required");
	} else if (!have_file) {
		srv_error(r, 400, "invalid_request", "file field is required");
	} else {
		rc = 0;
		if (u.held.len || !u.f)
			rc = up_put(&u, u.held.p ? u.held.p : "",
				    u.held.len);
		if (!rc && u.f) {
			rc = srv_close(u.f, u.msg, sizeof(u.msg));
			u.f = NULL;
		}
		if (rc)
			srv_errorf(r, 502, "agent_error",
				   "internal: write file: %s",
				   u.msg[0] ? u.msg : api_strerror(rc));
		else
			srv_no_content(r);
	}
	if (u.f) {
		char msg[128];

		srv_close(u.f, msg, sizeof(msg));
	}
	srv_buf_free(&u.held);
	srv_buf_free(&m.buf);
}

void srv_h_write(struct srv_req *r)
{
	do_write(r, false);
}

void srv_h_stream_write(struct srv_req *r)
{
	do_write(r, true);
}
