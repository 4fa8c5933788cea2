/* rfcheck.c - a seeded model-based random-operation checker for a
 * directory (written for sbxfs; run on a mount's NAME/fs/tmp).
 *
 *   rfcheck DIR SEED NOPS [NNAMES [FLAGS]]
 *
 * FLAGS "u": no fstat/ftruncate on a descriptor whose file was unlinked
 * or replaced (for a backend without fd-based attributes).
 *
 * Runs NOPS random operations on a few names in DIR through real system
 * calls (open with O_CREAT/O_TRUNC/O_APPEND, pwrite, write in append
 * mode, pread, ftruncate up and down, fstat, stat, mmap MAP_SHARED
 * writes, rename, unlink while open, close, whole-file reads through a
 * fresh descriptor; several descriptors per file) and the same operations
 * on an in-memory model (files as content objects, names and descriptors
 * pointing at them).  The first divergence is reported with the seed,
 * the operation number, the operation, expected and actual results and
 * the last operations before it; exit 1.  Exit 0: no divergence.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAXF 64	      /* content objects */
#define MAXFD 6	      /* descriptors open at once */
#define MAXSIZE 20000 /* largest size the operations produce */
#define HIST 24

struct obj {
	bool used;
	unsigned char *data;
	size_t size;
	int refs; /* names + descriptors */
};

struct desc {
	bool open;
	int fd;
	int obj;
	bool append, rd, wr;
	off_t pos; /* for append-mode writes: not used (kernel decides) */
};

static struct obj objs[MAXF];
static int names[16]; /* name i -> obj, -1 when absent */
static int nnames = 3;
static struct desc fds[MAXFD];
static const char *dir;
static uint64_t rng;
static unsigned long opno;
static unsigned long seed;
static char hist[HIST][200];
static bool no_orphan_attrs;

/* Does some name still point at object o? */
static bool named(int o)
{
	for (int i = 0; i < nnames; i++)
		if (names[i] == o)
			return true;
	return false;
}

static uint64_t rnd(void)
{
	/* xorshift64*: seeded, reproducible */
	rng ^= rng >> 12;
	rng ^= rng << 25;
	rng ^= rng >> 27;
	return rng * 2685821657736338717ull;
}

static unsigned pick(unsigned n)
{
	return (unsigned)(rnd() % n);
}

static void note(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(hist[opno % HIST], sizeof(hist[0]), fmt, ap);
	va_end(ap);
}

static void fail(const char *fmt, ...)
{
	va_list ap;
	unsigned long i, from = opno >= HIST - 1 ? opno - (HIST - 1) : 0;

	fprintf(stderr, "rfcheck: seed %lu: divergence at operation %lu: ",
		seed, opno);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nlast operations:\n");
	for (i = from; i <= opno; i++)
		fprintf(stderr, "  %5lu %s\n", i, hist[i % HIST]);
	exit(1);
}

static void path_of(int name, char *buf, size_t len)
{
	snprintf(buf, len, "%s/rf%d", dir, name);
}

static int obj_new(void)
{
	for (int i = 0; i < MAXF; i++)
		if (!objs[i].used) {
			objs[i] = (struct obj){ .used = true };
			return i;
		}
	fail("model out of objects");
	return -1;
}

static void obj_put(int o)
{
	if (--objs[o].refs == 0) {
		free(objs[o].data);
		objs[o] = (struct obj){ 0 };
	}
}

static void obj_resize(struct obj *o, size_t size)
{
	if (size > o->size) {
		o->data = realloc(o->data, size);
		if (!o->data)
			fail("model out of memory");
		memset(o->data + o->size, 0, size - o->size);
	}
	o->size = size;
}

static void fill(unsigned char *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		b[i] = (unsigned char)('a' + pick(26));
}

/* Compare n bytes read at off with the model; describe the first diff. */
static void same(const char *what, const struct obj *o, uint64_t off,
		 const unsigned char *got, size_t n)
{
	size_t want = off >= o->size ? 0 : o->size - off;

	if (want > n)
		want = n;
	for (size_t i = 0; i < n && i < want; i++)
		if (got[i] != o->data[off + i])
			fail("%s: byte %llu is 0x%02x, model says 0x%02x",
			     what, (unsigned long long)(off + i), got[i],
			     o->data[off + i]);
}

static int free_desc(void)
{
	for (int i = 0; i < MAXFD; i++)
		if (!fds[i].open)
			return i;
	return -1;
}

static int some_desc(void)
{
	int c[MAXFD], n = 0;

	for (int i = 0; i < MAXFD; i++)
		if (fds[i].open)
			c[n++] = i;
	return n ? c[pick((unsigned)n)] : -1;
}

/* ---- operations --------------------------------------------------------- */

static void op_open(void)
{
	int d = free_desc(), name = (int)pick((unsigned)nnames), fd, o;
	int acc = pick(4) ? O_RDWR : (pick(2) ? O_RDONLY : O_WRONLY);
	int flags = acc;
	char p[4200];

	if (d < 0)
		return;
	if (pick(3) == 0 || names[name] < 0)
		flags |= O_CREAT;
	if (acc != O_RDONLY && pick(5) == 0)
		flags |= O_TRUNC;
	if (acc != O_RDONLY && pick(4) == 0)
		flags |= O_APPEND;
	path_of(name, p, sizeof(p));
	note("open rf%d %s%s%s%s -> d%d", name,
	     acc == O_RDWR ? "rw" : acc == O_RDONLY ? "r" : "w",
	     flags & O_CREAT ? "|creat" : "", flags & O_TRUNC ? "|trunc" : "",
	     flags & O_APPEND ? "|append" : "", d);
	fd = open(p, flags | O_CLOEXEC, 0644);
	if (names[name] < 0 && !(flags & O_CREAT)) {
		if (fd >= 0 || errno != ENOENT)
			fail("open of a missing name: fd %d errno %d", fd,
			     errno);
		return;
	}
	if (fd < 0)
		fail("open: %s", strerror(errno));
	if (names[name] < 0) {
		names[name] = obj_new();
		objs[names[name]].refs = 1;
	}
	o = names[name];
	if (flags & O_TRUNC)
		obj_resize(&objs[o], 0);
	objs[o].refs++;
	fds[d] = (struct desc){ .open = true, .fd = fd, .obj = o,
				.append = flags & O_APPEND,
				.rd = acc != O_WRONLY, .wr = acc != O_RDONLY };
}

static void op_close(void)
{
	int d = some_desc();

	if (d < 0)
		return;
	note("close d%d", d);
	if (close(fds[d].fd))
		fail("close: %s", strerror(errno));
	fds[d].open = false;
	obj_put(fds[d].obj);
}

static void op_write(void)
{
	int d = some_desc();
	unsigned char buf[4096];
	size_t n = 1 + pick(sizeof(buf) / (pick(4) ? 8 : 1));
	struct obj *o;
	uint64_t off;
	ssize_t r;

	if (d < 0 || !fds[d].wr)
		return;
	o = &objs[fds[d].obj];
	off = pick(MAXSIZE - (unsigned)n);
	if (fds[d].append)
		off = o->size;
	if (off + n > MAXSIZE)
		return;
	fill(buf, n);
	note("%s d%d %zu bytes @%llu", fds[d].append ? "append" : "pwrite",
	     d, n, (unsigned long long)off);
	r = fds[d].append ? write(fds[d].fd, buf, n) :
			    pwrite(fds[d].fd, buf, n, (off_t)off);
	if (r != (ssize_t)n)
		fail("write returned %zd (%s)", r, r < 0 ? strerror(errno) :
		     "short");
	if (off + n > o->size)
		obj_resize(o, off + n);
	memcpy(o->data + off, buf, n);
}

static void op_read(void)
{
	int d = some_desc();
	unsigned char buf[8192];
	size_t n = 1 + pick(sizeof(buf));
	struct obj *o;
	uint64_t off;
	ssize_t r, want;

	if (d < 0 || !fds[d].rd)
		return;
	o = &objs[fds[d].obj];
	off = pick(2) && o->size ? pick((unsigned)o->size) : pick(MAXSIZE);
	note("pread d%d %zu @%llu", d, n, (unsigned long long)off);
	r = pread(fds[d].fd, buf, n, (off_t)off);
	want = off >= o->size ? 0 : (ssize_t)(o->size - off);
	if (want > (ssize_t)n)
		want = (ssize_t)n;
	if (r != want)
		fail("pread returned %zd (%s), model says %zd", r,
		     r < 0 ? strerror(errno) : "bytes", want);
	same("pread", o, off, buf, (size_t)r);
}

static void op_truncate(void)
{
	int d = some_desc();
	size_t size = pick(3) ? pick(MAXSIZE) : 0;

	if (d < 0 || !fds[d].wr ||
	    (no_orphan_attrs && !named(fds[d].obj)))
		return;
	note("ftruncate d%d %zu", d, size);
	if (ftruncate(fds[d].fd, (off_t)size))
		fail("ftruncate: %s", strerror(errno));
	obj_resize(&objs[fds[d].obj], size);
}

static void op_fstat(void)
{
	int d = some_desc();
	struct stat st;

	if (d < 0 || (no_orphan_attrs && !named(fds[d].obj)))
		return;
	note("fstat d%d", d);
	if (fstat(fds[d].fd, &st))
		fail("fstat: %s", strerror(errno));
	if ((size_t)st.st_size != objs[fds[d].obj].size)
		fail("fstat size %lld, model says %zu", (long long)st.st_size,
		     objs[fds[d].obj].size);
}

static void op_stat(void)
{
	int name = (int)pick((unsigned)nnames);
	struct stat st;
	char p[4200];
	int r;

	path_of(name, p, sizeof(p));
	note("stat rf%d", name);
	r = stat(p, &st);
	if (names[name] < 0) {
		if (r == 0 || errno != ENOENT)
			fail("stat of a missing name: %d errno %d", r, errno);
		return;
	}
	if (r)
		fail("stat: %s", strerror(errno));
	if ((size_t)st.st_size != objs[names[name]].size)
		fail("stat size %lld, model says %zu", (long long)st.st_size,
		     objs[names[name]].size);
}

static void op_mmap(void)
{
	int d = some_desc();
	struct obj *o;
	unsigned char *m, buf[512];
	size_t off, n;

	if (d < 0 || !fds[d].rd || !fds[d].wr || fds[d].append)
		return;
	o = &objs[fds[d].obj];
	if (!o->size)
		return;
	off = pick((unsigned)o->size);
	n = 1 + pick(sizeof(buf));
	if (off + n > o->size)
		n = o->size - off;
	fill(buf, n);
	note("mmap d%d write %zu @%zu (size %zu)", d, n, off, o->size);
	m = mmap(NULL, o->size, PROT_READ | PROT_WRITE, MAP_SHARED,
		 fds[d].fd, 0);
	if (m == MAP_FAILED)
		fail("mmap: %s", strerror(errno));
	same("mmap read", o, 0, m, o->size);
	memcpy(m + off, buf, n);
	if (msync(m, o->size, MS_SYNC))
		fail("msync: %s", strerror(errno));
	munmap(m, o->size);
	memcpy(o->data + off, buf, n);
}

static void op_rename(void)
{
	int a = (int)pick((unsigned)nnames), b = (int)pick((unsigned)nnames);
	char pa[4200], pb[4200];
	int r;

	if (a == b)
		return;
	path_of(a, pa, sizeof(pa));
	path_of(b, pb, sizeof(pb));
	note("rename rf%d rf%d", a, b);
	r = rename(pa, pb);
	if (names[a] < 0) {
		if (r == 0 || errno != ENOENT)
			fail("rename of a missing name: %d errno %d", r,
			     errno);
		return;
	}
	if (r)
		fail("rename: %s", strerror(errno));
	if (names[b] >= 0)
		obj_put(names[b]);
	names[b] = names[a];
	names[a] = -1;
}

static void op_unlink(void)
{
	int a = (int)pick((unsigned)nnames);
	char p[4200];
	int r;

	path_of(a, p, sizeof(p));
	note("unlink rf%d", a);
	r = unlink(p);
	if (names[a] < 0) {
		if (r == 0 || errno != ENOENT)
			fail("unlink of a missing name: %d errno %d", r,
			     errno);
		return;
	}
	if (r)
		fail("unlink: %s", strerror(errno));
	obj_put(names[a]);
	names[a] = -1;
}

/* A fresh descriptor reads the whole file (close-to-open). */
static void op_readall(void)
{
	int name = (int)pick((unsigned)nnames), fd;
	static unsigned char buf[MAXSIZE + 4096];
	ssize_t r, got = 0;
	char p[4200];

	if (names[name] < 0)
		return;
	path_of(name, p, sizeof(p));
	note("read whole rf%d", name);
	fd = open(p, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		fail("open for reading: %s", strerror(errno));
	while ((r = read(fd, buf + got, sizeof(buf) - (size_t)got)) > 0)
		got += r;
	if (r < 0)
		fail("read: %s", strerror(errno));
	close(fd);
	if ((size_t)got != objs[names[name]].size)
		fail("whole read gave %zd bytes, model says %zu", got,
		     objs[names[name]].size);
	same("whole read", &objs[names[name]], 0, buf, (size_t)got);
}

int main(int argc, char **argv)
{
	static void (*const ops[])(void) = {
		op_open,  op_open,    op_close,	 op_close, op_write,
		op_write, op_write,   op_read,	 op_read,  op_truncate,
		op_fstat, op_stat,    op_mmap,	 op_rename, op_unlink,
		op_readall, op_readall,
	};
	unsigned long nops;
	char p[4200];

	if (argc < 4) {
		fprintf(stderr, "usage: rfcheck DIR SEED NOPS [NNAMES]\n");
		return 2;
	}
	dir = argv[1];
	seed = strtoul(argv[2], NULL, 10);
	nops = strtoul(argv[3], NULL, 10);
	if (argc > 4)
		nnames = atoi(argv[4]);
	if (nnames < 1 || nnames > 16)
		nnames = 3;
	no_orphan_attrs = argc > 5 && strchr(argv[5], 'u');
	rng = seed * 0x9E3779B97F4A7C15ull + 1;
	for (int i = 0; i < nnames; i++) {
		names[i] = -1;
		path_of(i, p, sizeof(p));
		unlink(p); /* a clean start */
	}
	for (opno = 0; opno < nops; opno++) {
		snprintf(hist[opno % HIST], sizeof(hist[0]), "(nothing)");
		ops[pick(sizeof(ops) / sizeof(*ops))]();
	}
	for (int d = 0; d < MAXFD; d++)
		if (fds[d].open) {
			opno++;
			snprintf(hist[opno % HIST], sizeof(hist[0]), "-");
			note("close d%d (end)", d);
			if (close(fds[d].fd))
				fail("close: %s", strerror(errno));
		}
	/* what the sandbox keeps after every close */
	for (int i = 0; i < nnames; i++) {
		opno++;
		snprintf(hist[opno % HIST], sizeof(hist[0]), "(nothing)");
		if (names[i] < 0)
			continue;
		int fd;
		static unsigned char buf[MAXSIZE + 4096];
		ssize_t r, got = 0;

		path_of(i, p, sizeof(p));
		note("final read rf%d", i);
		fd = open(p, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			fail("final open: %s", strerror(errno));
		while ((r = read(fd, buf + got, sizeof(buf) - (size_t)got)) >
		       0)
			got += r;
		close(fd);
		if ((size_t)got != objs[names[i]].size)
			fail("final read gave %zd bytes, model says %zu", got,
			     objs[names[i]].size);
		same("final read", &objs[names[i]], 0, buf, (size_t)got);
		unlink(p);
	}
	printf("rfcheck: seed %lu: %lu operations, 0 divergences\n", seed,
	       nops);
	return 0;
}
