/* capsule.h - layer 2 of the Wrenn backend: capsules.
 *
 * capsule.c: list, get, create (with the reconcile of a create that timed
 * out), verbs, the client-side NAME->ID alias map, keep-alive pings of
 * capsules with long work in progress, and the foreground sh exec the
 * layers above use for joins, kills and attribute changes.
 *
 * It uses the transport (http.h) and the error mapping only.  What it
 * needs of the files layer above (land queued writes before a verb; drop
 * cached listings after a command or a destroy) reaches it as hooks that
 * the top (wrenn.c) sets.
 */
#ifndef SBXFS_WRENN_CAPSULE_H
#define SBXFS_WRENN_CAPSULE_H

#include <stdbool.h>
#include <stddef.h>

#include "api/api.h"
#include "api/wrenn/http.h"

/* Set by the layer above; both may be NULL. */
struct wrenn_capsule_hooks {
	/* Before a command runs in capsule id, and before pause, snapshot
	 * and destroy: land the writes still queued for it.  0 when there
	 * is nothing to wait for, else 1 and done(ud) once they landed. */
	int (*sync)(struct wrenn *w, const char *id, void (*done)(void *ud),
		    void *ud);
	/* Files of capsule id may have changed under dir (NULL: anywhere):
	 * forget what is cached of them. */
	void (*changed)(struct wrenn *w, const char *id, const char *dir);
};

/* Load the alias map and keep hooks (copied by reference: static), and
 * register the keep-alive turn with the loop. */
int wrenn_capsule_init(struct wrenn *w,
		       const struct wrenn_capsule_hooks *hooks);
/* At shutdown, after the loop stopped: free the timed-out creates still
 * being reconciled. */
void wrenn_reconcile_drop_all(struct wrenn *w);
void wrenn_alias_free(struct wrenn *w);
void wrenn_keep_free_all(struct wrenn *w);

/* The hooks above, for the layers that share them (no-ops when unset). */
int wrenn_capsule_sync(struct wrenn *w, const char *id,
		       void (*done)(void *ud), void *ud);
void wrenn_capsule_changed(struct wrenn *w, const char *id,
			   const char *dir);

/* Resolve NAME or ID to an ID (loop thread).  0 or -ENOENT. */
int wrenn_resolve(struct wrenn *w, const char *name_or_id, char *id,
		  size_t len);
bool wrenn_id_valid(const char *id);
void wrenn_gone_add(struct wrenn *w, const char *id);
enum api_state wrenn_state_parse(const char *status);

void wrenn_sb_list(struct api_backend *be, api_list_fn cb, void *ud);
void wrenn_sb_get(struct api_backend *be, const char *id,
		  api_sandbox_fn cb, void *ud);
void wrenn_sb_create(struct api_backend *be, const char *name,
		     const struct api_kv *kv, size_t nkv, api_sandbox_fn cb,
		     void *ud);
void wrenn_sb_verb(struct api_backend *be, const char *id,
		   enum api_verb verb, const char *arg, api_done_fn cb,
		   void *ud);

/* Loop thread: keep capsule id awake while refs > 0 (ping). */
void wrenn_keep_get(struct wrenn *w, const char *id);
void wrenn_keep_put(struct wrenn *w, const char *id);

/* Foreground exec of a /bin/sh script (loop thread), byte-exact output
 * discarded; cb gets err, and the exit code through *code via msg. */
typedef void (*wrenn_sh_cb)(void *ud, int err, const char *msg, int code,
			    const char *out);
void wrenn_sh(struct wrenn *w, const char *id, const char *script,
	      wrenn_sh_cb cb, void *ud);
/* The same, keeping cached listings (the caller updates what the script
 * changed: a store touches one entry). */
void wrenn_sh_keep(struct wrenn *w, const char *id, const char *script,
		   wrenn_sh_cb cb, void *ud);

#endif
