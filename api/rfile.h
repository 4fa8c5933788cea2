/* rfile.h - the shared remote-file layer: one cached copy per file per
 * mount, for every backend whose platform cannot read or write at an
 * offset (Wrenn, CW Sandbox, ...).
 *
 * A remote backend gives a few primitives (struct api_rfile_ops) and
 * calls api_rfile_new() from its init; api.c then routes every file
 * operation through this layer (be->rf), which keeps:
 *
 *  - one node per (sandbox, path) while any descriptor has it open or a
 *    write-back is in flight: all descriptors and processes share its
 *    content (an unlinked temp file, api/stage.c), so pwrite anywhere,
 *    O_APPEND at the true end, O_TRUNC, ftruncate up and down, mmap and
 *    read-after-write behave as on a local disk;
 *  - write-back of the whole content at flush (close(2)) and fsync, as
 *    ONE atomic store (the backend writes elsewhere and renames), with
 *    the attribute changes made meanwhile (chmod, chown, utimes) in the
 *    same store; its error goes back to that close/fsync;
 *  - rename and unlink of an open file move or detach the node, so data
 *    written later follows the file, and an unlinked file stays readable
 *    and writable until its last close (then it is dropped, never
 *    stored);
 *  - stat/readdir overlays: an open file's size, mtime and pending
 *    attributes are answered from the node, with no platform call;
 *  - close-to-open consistency: a node lives only while the file is open
 *    (or being stored), so the next open after the last close reads the
 *    sandbox's current content.
 *
 * Locking: one mutex per layer; callbacks into callers always run with
 * it released.  Backend primitives may call back inline or from their
 * own thread.
 */
#ifndef SBXFS_API_RFILE_H
#define SBXFS_API_RFILE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "api/api.h"

struct api_rfile;

/* Sink of a fetch: bytes in order; return 0 or -errno to abort. */
typedef int (*api_rf_sink_fn)(void *ud, const void *buf, size_t len);

/* A file a batch lands (store_batch). */
struct api_rf_member {
	const char *path;
	struct stat st;
};

/* What a remote backend provides.  Paths are absolute in the sandbox,
 * normalised.  Each primitive calls `done` exactly once (inline or from
 * a backend thread), bounded by the backend's deadline. */
struct api_rfile_ops {
	/* Read the whole file: bytes go to sink in order, then done.
	 * `expect` is the size the listing reported (a hint; a backend
	 * whose transfer cannot report errors checks it). */
	void (*fetch)(struct api_backend *be, const char *id,
		      const char *path, uint64_t expect, api_rf_sink_fn sink,
		      void *sink_ud, api_done_fn done, void *ud);
	/* Replace path atomically with the len bytes of fd (read with
	 * pread; fd stays valid until done): write elsewhere in the
	 * sandbox, apply sa (MODE always set; UID/GID when set, else the
	 * replaced file's owner is kept; ATIME/MTIME when set), then
	 * rename over path.  On failure path keeps its old content and no
	 * temporary is left behind. */
	void (*store)(struct api_backend *be, const char *id,
		      const char *path, int fd, uint64_t len,
		      const struct api_setattr *sa, api_done_fn done,
		      void *ud);
	/* Optional (small-file batching, see api_rfile_config): upload the
	 * len bytes of fd (an archive the layer made) to apath in the
	 * sandbox, then run the shell script `script`, which unpacks it,
	 * moves each file into place with rename(2) and removes apath and
	 * its temporaries whatever happens; exit status 0 = every file
	 * landed.  m[0..nm) are the files it lands, with what a listing
	 * would now show (a backend keeping listings updates them).  On an
	 * upload failure the backend removes apath itself.  Without it,
	 * the layer stores queued files one by one with store. */
	void (*store_batch)(struct api_backend *be, const char *id, int fd,
			    uint64_t len, const char *apath,
			    const char *script,
			    const struct api_rf_member *m, size_t nm,
			    api_done_fn done, void *ud);
};

/* Attach the layer to be (be->rf).  cap: largest cached file (0: none).
 * 0/-errno. */
int api_rfile_new(struct api_backend *be, const struct api_rfile_ops *ops,
		  uint64_t cap);
/* Detach and free (every file must be closed; api_rfile_drain first). */
void api_rfile_free(struct api_backend *be);

/* Small-file batching (only with ops->store_batch): at the last close a
 * changed file of at most file_max bytes is queued rather than stored
 * alone; the queue of a sandbox goes as ONE store_batch after a short
 * idle delay, when it is large, and before anything that must see it
 * (fsync, api_rfile_sync, rename, unmount).  close(2) then returns at
 * once; a write-back error that comes later is kept per sandbox and
 * returned by the next close/fsync of any file of that sandbox (Linux's
 * errseq model).  sync_close: no batching, every close stores and waits
 * (as without store_batch).  Call right after api_rfile_new. */
void api_rfile_config(struct api_backend *be, uint64_t file_max,
		      bool sync_close);
/* Write back everything queued or in flight and wait for it (bounded by
 * timeout seconds); stops the batching thread.  A backend calls it from
 * its free, before it stops its own threads. */
void api_rfile_drain(struct api_backend *be, double timeout);
/* fsync: write back this file now (dequeued from a batch) and wait;
 * returns its error, else a deferred one not yet reported to f. */
void api_rfile_fsync(struct api_backend *be, struct api_file *f,
		     api_done_fn cb, void *ud);

/* Write back every dirty file of sandbox id; done(ud) once all stores
 * ended (whatever their result: their errors go to the next close).
 * Returns 0 when nothing had to be waited for (done not called), else 1.
 * Used before a command runs in the sandbox so that it sees our writes. */
int api_rfile_sync(struct api_rfile *rf, const char *id,
		   void (*done)(void *ud), void *ud);

/* Routed to from api.c when be->rf is set (same contracts as api.h). */
void api_rfile_stat(struct api_backend *be, const char *id,
		    const char *path, api_stat_fn cb, void *ud);
void api_rfile_readdir(struct api_backend *be, const char *id,
		       const char *path, api_readdir_fn cb, void *ud);
void api_rfile_open(struct api_backend *be, const char *id,
		    const char *path, int flags, mode_t mode, api_open_fn cb,
		    void *ud);
void api_rfile_read(struct api_backend *be, struct api_file *f, off_t off,
		    size_t size, api_data_fn cb, void *ud);
void api_rfile_write(struct api_backend *be, struct api_file *f, off_t off,
		     const void *buf, size_t len, api_size_fn cb, void *ud);
void api_rfile_flush(struct api_backend *be, struct api_file *f,
		     api_done_fn cb, void *ud);
void api_rfile_close(struct api_backend *be, struct api_file *f,
		     api_done_fn cb, void *ud);
void api_rfile_fstat(struct api_backend *be, struct api_file *f,
		     api_stat_fn cb, void *ud);
void api_rfile_ftruncate(struct api_backend *be, struct api_file *f,
			 off_t size, api_done_fn cb, void *ud);
void api_rfile_unlink(struct api_backend *be, const char *id,
		      const char *path, api_done_fn cb, void *ud);
void api_rfile_rename(struct api_backend *be, const char *id,
		      const char *from, const char *to, unsigned flags,
		      api_done_fn cb, void *ud);
void api_rfile_setattr(struct api_backend *be, const char *id,
		       const char *path, const struct api_setattr *sa,
		       api_done_fn cb, void *ud);

/* The backend's own path for these (no layer): api.c implements them;
 * the layer calls them for what it does not hold itself. */
void api_raw_file_stat(struct api_backend *be, const char *id,
		       const char *path, api_stat_fn cb, void *ud);
void api_raw_file_readdir(struct api_backend *be, const char *id,
			  const char *path, api_readdir_fn cb, void *ud);
void api_raw_file_unlink(struct api_backend *be, const char *id,
			 const char *path, api_done_fn cb, void *ud);
void api_raw_file_rename(struct api_backend *be, const char *id,
			 const char *from, const char *to, unsigned flags,
			 api_done_fn cb, void *ud);
void api_raw_file_setattr(struct api_backend *be, const char *id,
			  const char *path, const struct api_setattr *sa,
			  api_done_fn cb, void *ud);

#endif
