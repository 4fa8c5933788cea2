/* files.h - layer 3 of the Wrenn backend: files.
 *
 * files.c: listings (cached, coalesced), stat, mkdir, unlink, rmdir, and
 * the fetch / store / store_batch primitives of api/rfile.c.  Uses the
 * capsule layer (resolve, sh exec, keep-alive), the transport and the
 * error mapping.  wrenn.c hands wrenn_files_sync and wrenn_dcache_drop to
 * the capsule layer as its hooks.
 */
#ifndef SBXFS_WRENN_FILES_H
#define SBXFS_WRENN_FILES_H

#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "api/api.h"
#include "api/wrenn/capsule.h"

/* Parse one FileEntry into st; returns the name or NULL if malformed. */
const char *wrenn_entry_stat(const cJSON *e, struct stat *st);
void wrenn_dcache_free(struct wrenn *w);
void wrenn_file_stat(struct api_backend *be, const char *id,
		     const char *path, api_stat_fn cb, void *ud);
void wrenn_file_readdir(struct api_backend *be, const char *id,
			const char *path, api_readdir_fn cb, void *ud);
void wrenn_file_mkdir(struct api_backend *be, const char *id,
		      const char *path, mode_t mode, api_done_fn cb,
		      void *ud);
void wrenn_file_unlink(struct api_backend *be, const char *id,
		       const char *path, api_done_fn cb, void *ud);
void wrenn_file_rmdir(struct api_backend *be, const char *id,
		      const char *path, api_done_fn cb, void *ud);
/* The remote-file primitives (fetch, atomic store) for api/rfile.c. */
struct api_rfile_ops;
extern const struct api_rfile_ops wrenn_rfile_ops;
/* Loop: upload every dirty cached file of capsule id before a command
 * runs there (so it sees what was written, and a following exec-emulated
 * utimens/chmod is not undone by a later upload).  Returns 0 when there
 * is nothing to wait for, else 1 and calls done(ud) once all finished. */
int wrenn_files_sync(struct wrenn *w, const char *id,
		     void (*done)(void *ud), void *ud);
/* Forget cached listings of capsule id (all of them when id is NULL). */
void wrenn_dcache_drop(struct wrenn *w, const char *id, const char *dir);

#endif
