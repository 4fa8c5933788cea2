/* stage.c - local staging of remote files in unlinked temporary files. */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api/stage.h"

struct api_stage {
	int fd; /* -1 until the first byte: an empty file costs no file */
	uint64_t size; /* bytes in the file (filled or written) */
	uint64_t cap;
	bool loaded;
	bool dirty;
};

static _Atomic uint64_t total_bytes;
static _Atomic uint64_t total_cap;

void api_stage_set_total_cap(uint64_t cap)
{
	atomic_store(&total_cap, cap);
}

/* Account growth from st->size to nsize; -EFBIG over a cap. */
static int grow(struct api_stage *st, uint64_t nsize)
{
	uint64_t add, tc;

	if (nsize <= st->size)
		return 0;
	if (st->cap && nsize > st->cap)
		return -EFBIG;
	add = nsize - st->size;
	tc = atomic_load(&total_cap);
	if (atomic_fetch_add(&total_bytes, add) + add > tc && tc) {
		atomic_fetch_sub(&total_bytes, add);
		return -EFBIG;
	}
	return 0;
}

static void shrink(struct api_stage *st, uint64_t nsize)
{
	if (nsize < st->size)
		atomic_fetch_sub(&total_bytes, st->size - nsize);
}

/* The backing file, made at the first byte (an O_TMPFILE costs a scan
 * of ext4's inode bitmap: creating 2,000 empty files spent most of its
 * time there).  0/-errno. */
static int backing(struct api_stage *st)
{
	const char *dir = getenv("TMPDIR");
	char tmpl[4096];
	int fd;

	if (st->fd >= 0)
		return 0;
	if (!dir || dir[0] != '/')
		dir = "/tmp";
	/* O_TMPFILE: never visible by name, gone on crash */
	fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd < 0) {
		snprintf(tmpl, sizeof(tmpl), "%s/sbxfs-stage-XXXXXX", dir);
		fd = mkostemp(tmpl, O_CLOEXEC);
		if (fd >= 0)
			unlink(tmpl);
	}
	if (fd < 0)
		return -errno;
	st->fd = fd;
	return 0;
}

int api_stage_new(uint64_t cap, struct api_stage **out)
{
	struct api_stage *st = calloc(1, sizeof(*st));

	if (!st)
		return -ENOMEM;
	st->fd = -1;
	st->cap = cap;
	*out = st;
	return 0;
}

void api_stage_free(struct api_stage *st)
{
	if (!st)
		return;
	shrink(st, 0);
	if (st->fd >= 0)
		close(st->fd);
	free(st);
}

int api_stage_fill(struct api_stage *st, const void *buf, size_t len)
{
	const char *p = buf;
	ssize_t n;
	int err;

	if (len && (err = backing(st)))
		return err;
	err = grow(st, st->size + len);
	if (err)
		return err;
	while (len) {
		n = pwrite(st->fd, p, len, (off_t)st->size);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
		st->size += (uint64_t)n;
	}
	return 0;
}

void api_stage_loaded(struct api_stage *st)
{
	st->loaded = true;
}

int api_stage_reset(struct api_stage *st)
{
	if (st->fd >= 0 && ftruncate(st->fd, 0))
		return -errno;
	shrink(st, 0);
	st->size = 0;
	st->loaded = false;
	return 0;
}

bool api_stage_is_loaded(const struct api_stage *st)
{
	return st->loaded;
}

uint64_t api_stage_size(const struct api_stage *st)
{
	return st->size;
}

ssize_t api_stage_read(struct api_stage *st, void *buf, size_t len,
		       uint64_t off)
{
	ssize_t n;

	if (off >= st->size)
		return 0;
	if (len > st->size - off)
		len = (size_t)(st->size - off);
	do
		n = pread(st->fd, buf, len, (off_t)off);
	while (n < 0 && errno == EINTR);
	return n < 0 ? -errno : n;
}

ssize_t api_stage_write(struct api_stage *st, const void *buf, size_t len,
			uint64_t off)
{
	ssize_t n;
	int err;

	if (off + len < off)
		return -EFBIG;
	if (len && (err = backing(st)))
		return err;
	err = grow(st, off + len);
	if (err)
		return err;
	do
		n = pwrite(st->fd, buf, len, (off_t)off);
	while (n < 0 && errno == EINTR);
	if (n < 0) {
		err = -errno;
		/* give back what grow() reserved */
		if (off + len > st->size)
			atomic_fetch_sub(&total_bytes, off + len - st->size);
		return err;
	}
	if (off + (uint64_t)n > st->size) {
		if (off + len > off + (uint64_t)n)
			atomic_fetch_sub(&total_bytes, len - (size_t)n);
		st->size = off + (uint64_t)n;
	} else if (off + len > st->size) {
		atomic_fetch_sub(&total_bytes, off + len - st->size);
	}
	st->dirty = true;
	return n;
}

int api_stage_truncate(struct api_stage *st, uint64_t size)
{
	int err = size || st->fd >= 0 ? backing(st) : 0;

	if (!err)
		err = grow(st, size);
	if (err)
		return err;
	if (st->fd >= 0 && ftruncate(st->fd, (off_t)size))
		return -errno;
	shrink(st, size);
	st->size = size;
	st->dirty = true;
	return 0;
}

bool api_stage_dirty(const struct api_stage *st)
{
	return st->dirty;
}

void api_stage_set_dirty(struct api_stage *st, bool dirty)
{
	st->dirty = dirty;
}

int api_stage_fd(const struct api_stage *st)
{
	return st->fd;
}
