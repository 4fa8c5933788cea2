/* stage.h - local staging of remote files (generic, for remote backends).
 *
 * Remote platforms cannot write at an offset, so an open file is staged in
 * an unlinked temporary file: reads are served from it once the remote
 * content has been downloaded into it (api_stage_fill appends as bytes
 * arrive, so reads of a prefix can be answered before the download ends);
 * writes land in it; flush uploads the whole of it once.  The remote copy
 * is never truncated before the new content is there: O_TRUNC only
 * empties the stage.
 *
 * A stage is not thread-safe: its owner serialises calls.  Sizes are
 * capped per stage (cap) and across all stages of the process (the total
 * set with api_stage_set_total_cap); going over either gives -EFBIG.
 */
#ifndef SBXFS_API_STAGE_H
#define SBXFS_API_STAGE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

struct api_stage;

/* New empty stage; its file in $TMPDIR (default /tmp) is made at the
 * first byte.  0/-errno. */
int api_stage_new(uint64_t cap, struct api_stage **out);
void api_stage_free(struct api_stage *st);
/* Process-wide cap on staged bytes (0 = none). */
void api_stage_set_total_cap(uint64_t cap);

/* Download side: append remote bytes; mark the content complete. */
int api_stage_fill(struct api_stage *st, const void *buf, size_t len);
void api_stage_loaded(struct api_stage *st);
/* Drop any partial download (retry, or O_TRUNC). */
int api_stage_reset(struct api_stage *st);
bool api_stage_is_loaded(const struct api_stage *st);
/* Bytes present so far (the whole size once loaded). */
uint64_t api_stage_size(const struct api_stage *st);

/* pread: returns bytes (0 at EOF) or -errno. */
ssize_t api_stage_read(struct api_stage *st, void *buf, size_t len,
		       uint64_t off);
/* pwrite at off (extends, holes read as zeros); marks dirty. */
ssize_t api_stage_write(struct api_stage *st, const void *buf, size_t len,
			uint64_t off);
int api_stage_truncate(struct api_stage *st, uint64_t size);

/* The backing descriptor (for copying a snapshot); -1 while nothing was
 * ever written (size 0). */
int api_stage_fd(const struct api_stage *st);

bool api_stage_dirty(const struct api_stage *st);
void api_stage_set_dirty(struct api_stage *st, bool dirty);

#endif
