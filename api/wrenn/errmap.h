/* errmap.h - layer 0 of the Wrenn backend: errors to errno.
 *
 * errmap.c is the one place where an HTTP status with its error envelope,
 * a curl failure or an error text (WebSocket error message, agent_error)
 * becomes an errno and a sentence.  Pure functions: no backend state, so
 * it sits below everything (README.md, "Layers").
 */
#ifndef SBXFS_WRENN_ERRMAP_H
#define SBXFS_WRENN_ERRMAP_H

#include <stddef.h>

#include <curl/curl.h>

/* errno for an HTTP answer: status, error envelope code, message.
 * Writes a sentence to msg.  `body` may be NULL or not JSON. */
int wrenn_err_http(long status, const char *body, size_t len, char *msg,
		   size_t msglen);
/* errno for a curl failure. */
int wrenn_err_curl(CURLcode rc, char *msg, size_t msglen,
		   const char *detail);
/* errno for an error text (WebSocket {"type":"error"} data, or an
 * agent_error message): "not found" -> ENOENT ... */
int wrenn_err_text(const char *text, int dflt);

#endif
