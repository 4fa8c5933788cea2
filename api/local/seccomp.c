/* seccomp.c - the system-call filter of every process in a local sandbox.
 *
 * Built once with libseccomp (never hand-written BPF) when the backend
 * starts, exported as a BPF program, and loaded by each sandbox process
 * (its PID 1 and every command) in the forked child right before it runs
 * sandbox code: a forked child of a threaded process must not allocate,
 * so libseccomp is not called there.  NO_NEW_PRIVS is set first (setuid
 * binaries inside cannot gain privileges, and loading needs no extra
 * capability).
 *
 * The rules have the effect of Docker's default profile for a container
 * without CAP_SYS_ADMIN: everything that changes the kernel, other
 * namespaces or the mount table, or that reaches kernel state shared with
 * the host, answers EPERM:
 *   - new namespaces: unshare, setns, clone with any CLONE_NEW* flag
 *     (clone3 answers ENOSYS, as in Docker, so libc falls back to clone,
 *     whose flags a filter can see);
 *   - the mount table: mount, umount2, pivot_root and the new mount API;
 *   - keyrings, bpf, perf_event_open, userfaultfd, io_uring;
 *   - the machine: reboot, kexec_*, modules, swapon/off, acct, clocks,
 *     syslog, iopl/ioperm, quotactl, open_by_handle_at, lookup_dcookie,
 *     vhangup, nfsservctl, uselib, personality changes other than the
 *     usual ones.
 * The 32-bit x86 and x32 ABIs get the same rules, so int 0x80 is no way
 * round them.  ptrace stays allowed: the sandbox's PID namespace holds
 * only its own processes, so there is nothing outside to attach to.
 */
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <seccomp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "api/local/local_int.h"

#ifndef CLONE_NEWTIME
#define CLONE_NEWTIME 0x00000080
#endif

static struct sock_fprog sc_prog;

static const char *const sc_denied[] = {
	"mount", "umount", "umount2", "pivot_root", "fsopen", "fsconfig",
	"fsmount", "fspick", "move_mount", "open_tree", "mount_setattr",
	"unshare", "setns", "keyctl", "add_key", "request_key", "bpf",
	"perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter",
	"io_uring_register", "reboot", "kexec_load", "kexec_file_load",
	"init_module", "finit_module", "delete_module", "create_module",
	"swapon", "swapoff", "acct", "settimeofday", "stime",
	"clock_settime", "clock_adjtime", "adjtimex", "syslog", "iopl",
	"ioperm", "quotactl", "quotactl_fd", "open_by_handle_at",
	"lookup_dcookie", "vhangup", "nfsservctl", "uselib", "vm86",
	"vm86old", "get_kernel_syms", "query_module", "_sysctl",
	"fanotify_init", "kcmp", "ustat", "sysfs",
};

static const unsigned long sc_newns[] = {
	CLONE_NEWUSER, CLONE_NEWNS,	CLONE_NEWPID,	 CLONE_NEWNET,
	CLONE_NEWUTS,  CLONE_NEWIPC, CLONE_NEWCGROUP, CLONE_NEWTIME,
};

/* A rule for a name this kernel or ABI lacks is skipped, not an error. */
static int sc_add(scmp_filter_ctx ctx, uint32_t action, const char *name,
		  unsigned nargs, const struct scmp_arg_cmp *args)
{
	int nr = seccomp_syscall_resolve_name(name);
	int r;

	if (nr == __NR_SCMP_ERROR)
		return 0;
	r = seccomp_rule_add_array(ctx, action, nr, nargs, args);
	return r == -EDOM || r == -EFAULT ? 0 : r;
}

int local_seccomp_init(char *msg, size_t msglen)
{
	scmp_filter_ctx ctx;
	char *buf = NULL;
	size_t len = 0;
	int fd = -1, r;

	if (sc_prog.filter)
		return 0;
	ctx = seccomp_init(SCMP_ACT_ALLOW);
	if (!ctx) {
		snprintf(msg, msglen, "seccomp_init failed");
		return -ENOMEM;
	}
#if defined(__x86_64__)
	seccomp_arch_add(ctx, SCMP_ARCH_X86);
	seccomp_arch_add(ctx, SCMP_ARCH_X32);
#endif
	r = 0;
	for (size_t i = 0; !r && i < sizeof(sc_denied) / sizeof(*sc_denied);
	     i++)
		r = sc_add(ctx, SCMP_ACT_ERRNO(EPERM), sc_denied[i], 0, NULL);
	for (size_t i = 0; !r && i < sizeof(sc_newns) / sizeof(*sc_newns);
	     i++) {
		struct scmp_arg_cmp a = SCMP_A0(SCMP_CMP_MASKED_EQ,
						sc_newns[i], sc_newns[i]);
		r = sc_add(ctx, SCMP_ACT_ERRNO(EPERM), "clone", 1, &a);
	}
	if (!r)
		r = sc_add(ctx, SCMP_ACT_ERRNO(ENOSYS), "clone3", 0, NULL);
	if (r) {
		snprintf(msg, msglen, "cannot build the seccomp filter: %s",
			 strerror(-r));
		goto out;
	}
	fd = memfd_create("sbxfs-seccomp", MFD_CLOEXEC);
	if (fd < 0) {
		r = -errno;
		snprintf(msg, msglen, "memfd_create: %s", strerror(errno));
		goto out;
	}
	r = seccomp_export_bpf(ctx, fd);
	if (r) {
		snprintf(msg, msglen, "cannot export the seccomp filter: %s",
			 strerror(-r));
		goto out;
	}
	off_t size = lseek(fd, 0, SEEK_END);
	if (size <= 0 || size % (off_t)sizeof(struct sock_filter) ||
	    size / (off_t)sizeof(struct sock_filter) > BPF_MAXINSNS) {
		r = -EINVAL;
		snprintf(msg, msglen, "the seccomp filter has a bad size");
		goto out;
	}
	len = (size_t)size;
	buf = malloc(len);
	if (!buf || pread(fd, buf, len, 0) != (ssize_t)len) {
		r = -EIO;
		snprintf(msg, msglen, "cannot read the seccomp filter back");
		free(buf);
		goto out;
	}
	sc_prog.len = (unsigned short)(len / sizeof(struct sock_filter));
	sc_prog.filter = (struct sock_filter *)buf;
out:
	if (fd >= 0)
		close(fd);
	seccomp_release(ctx);
	return r;
}

void local_seccomp_fini(void)
{
	free(sc_prog.filter);
	sc_prog.filter = NULL;
	sc_prog.len = 0;
}

/* In a forked child: raw system calls only. */
int local_seccomp_apply(void)
{
	if (!sc_prog.filter)
		return -EINVAL;
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
		return -errno;
	if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &sc_prog))
		return -errno;
	return 0;
}
