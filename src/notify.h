/* notify.h - tell systemd a Type=notify service is ready (sd_notify's
 * READY=1, without libsystemd). */
#ifndef SBXFS_NOTIFY_H
#define SBXFS_NOTIFY_H

/* Takes $NOTIFY_SOCKET out of the environment (so no child, sandboxes
 * included, inherits it) and keeps it for notify_ready.  Call first thing
 * in main, before any thread starts. */
void notify_init(void);

/* Sends READY=1 to the socket kept by notify_init, once; nothing when
 * there is none.  Errors are ignored: systemd's start timeout reports a
 * lost message. */
void notify_ready(void);

#endif
