/* caps.c - the capabilities a process keeps inside a local sandbox.
 *
 * Sandboxes run in a user namespace of their own (idmap.c), so any
 * capability is a capability over the sandbox's own namespaces and files
 * only.  Still, as container runtimes do, every process that enters a
 * sandbox (its PID 1 and each exec'd command) keeps only the set they
 * grant by default, minus CAP_MKNOD: no CAP_SYS_ADMIN (no mounts, even of
 * the filesystems a user namespace may mount), CAP_SYS_PTRACE,
 * CAP_NET_ADMIN, CAP_SYS_MODULE...  The bounding set is lowered too, so no
 * setuid binary or file capability inside can raise it again.  Runs in a
 * freshly forked child: no allocation, raw syscalls only.
 */
#include <errno.h>
#include <linux/capability.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "api/local/local_int.h"

static const int local_caps_kept[] = {
	CAP_CHOWN,	  CAP_DAC_OVERRIDE, CAP_FSETID,	 CAP_FOWNER,
	CAP_NET_RAW,	  CAP_SETGID,	    CAP_SETUID,	 CAP_SETFCAP,
	CAP_SETPCAP,	  CAP_NET_BIND_SERVICE, CAP_SYS_CHROOT, CAP_KILL,
	CAP_AUDIT_WRITE,
};

static int kept(int cap)
{
	for (size_t i = 0; i < sizeof(local_caps_kept) / sizeof(int); i++)
		if (local_caps_kept[i] == cap)
			return 1;
	return 0;
}

int local_caps_restrict(void)
{
	struct __user_cap_header_struct hdr = {
		.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };
	struct __user_cap_data_struct data[2] = {{0, 0, 0}, {0, 0, 0}};
	int cap;

	for (cap = 0; cap <= 63; cap++) {
		if (kept(cap))
			continue;
		if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 &&
		    errno != EINVAL) /* EINVAL: unknown to this kernel */
			return -errno;
	}
	for (size_t i = 0; i < sizeof(local_caps_kept) / sizeof(int); i++) {
		cap = local_caps_kept[i];
		data[cap / 32].effective |= 1u << (cap % 32);
		data[cap / 32].permitted |= 1u << (cap % 32);
		data[cap / 32].inheritable |= 1u << (cap % 32);
	}
	if (syscall(SYS_capset, &hdr, data) < 0)
		return -errno;
	return 0;
}
