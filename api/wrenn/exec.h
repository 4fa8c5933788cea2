/* exec.h - layer 4 of the Wrenn backend: commands.
 *
 * exec.c: the exec/stream WebSocket client (libwebsockets, serviced as a
 * turn of the loop), the /bin/sh wrapper that makes output byte-exact and
 * feeds stdin, signals.  Uses the files layer (land writes before a
 * command, drop listings after it), the capsule layer, the transport and
 * the error mapping.
 */
#ifndef SBXFS_WRENN_EXEC_H
#define SBXFS_WRENN_EXEC_H

#include <stddef.h>

#include "api/api.h"
#include "api/wrenn/http.h"

/* Create the WebSocket context and register its turn with the loop. */
int wrenn_exec_init(struct wrenn *w);
void wrenn_exec_free_all(struct wrenn *w);
void wrenn_exec_start(struct api_backend *be, const char *id,
		      const struct api_exec_req *req,
		      const struct api_exec_cbs *cbs, void *ud,
		      struct api_exec **out);
void wrenn_exec_write(struct api_backend *be, struct api_exec *x,
		      const void *buf, size_t len, api_done_fn cb, void *ud);
void wrenn_exec_close_stdin(struct api_backend *be, struct api_exec *x);
void wrenn_exec_resume(struct api_backend *be, struct api_exec *x);
int wrenn_exec_signal(struct api_backend *be, struct api_exec *x, int sig);
void wrenn_exec_free(struct api_backend *be, struct api_exec *x);

/* Build the /bin/sh wrapper that runs argv with cwd, env and (when
 * want_stdin) stdin chunks from the capsule directory indir ("" cwd: the
 * home).  malloc'd; NULL with *err set on failure. */
char *wrenn_exec_script(const struct api_exec_req *req, const char *indir,
			int *err);

#endif
