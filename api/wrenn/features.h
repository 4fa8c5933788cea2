/* features.h - layer 3 of the Wrenn backend, beside files.h: templates
 * and ports.
 *
 * features.c: MOUNT/templates/ (snapshots) and NAME/ports/PORT (the proxy
 * URL, computed).  Uses the capsule layer, the transport and the error
 * mapping.
 */
#ifndef SBXFS_WRENN_FEATURES_H
#define SBXFS_WRENN_FEATURES_H

#include "api/api.h"

void wrenn_tpl_list(struct api_backend *be, api_tpl_fn cb, void *ud);
void wrenn_tpl_delete(struct api_backend *be, const char *name,
		      api_done_fn cb, void *ud);
void wrenn_sb_port(struct api_backend *be, const char *id, unsigned port,
		   api_str_fn cb, void *ud);

#endif
