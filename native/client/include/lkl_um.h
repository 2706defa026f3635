/* SPDX-License-Identifier: MIT */
/*
 * lkl_um.h - run a Linux kernel in a process of its own and make system
 * calls into it.
 *
 * lkl_um_start() spawns a kernel process (User-Mode Linux in library mode,
 * the lkl-um-kernel executable) and waits until it has booted.  System
 * calls then go through a window of memory shared with it: every pointer
 * argument must point into the window, into a buffer from lkl_um_alloc().
 * Calls use the x86_64 system call numbers of <asm/unistd.h>.
 *
 * Calls can be made blocking (lkl_um_syscall(), from any number of threads
 * at once) or asynchronously (lkl_um_submit(), then lkl_um_reap() once
 * lkl_um_event_fd() polls readable).  Many may be in flight; a call that
 * blocks inside the kernel does not hold up the others.
 *
 * Errors: functions return a negative errno.  When the kernel process has
 * gone (halted, crashed, killed), every call in flight and every later one
 * fails with -ESHUTDOWN; lkl_um_console() still shows what the kernel said
 * last.  lkl_um_last_error() describes the last failure of the calling
 * thread in words.
 *
 * Ownership: the struct lkl_um and every fd it opens belong to the library
 * until lkl_um_close().  Buffers from lkl_um_alloc() belong to the caller
 * until lkl_um_free(); they must not be freed while a call uses them.
 *
 * All functions are thread-safe.
 */

#ifndef LKL_UM_H
#define LKL_UM_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

struct lkl_um;

/**
 * struct lkl_um_options - how to start a kernel
 * @kernel: path of the lkl-um-kernel executable; NULL means the
 *	LKL_UM_KERNEL environment variable
 * @cmdline: more kernel command line arguments, space separated, or NULL
 * @memory: kernel memory in bytes, from 32 MiB to 256 GiB (the kernel takes
 *	host memory as it uses it); 0 means 64 MiB
 * @heap_size: bytes of window for call buffers, rounded up to a power of
 *	two; 0 means 32 MiB
 * @console_fd: where the kernel console goes: -1 keeps it in memory for
 *	lkl_um_console(), another fd (2 for stderr) gets a copy of it
 * @boot_timeout_ms: how long to wait for the kernel to boot; 0 means 30 s
 * @spin_us: how long a blocking call polls for its result before it
 *	sleeps; -1 means the default (50 us)
 * @kernel_poll_us: the same for the idle kernel; -1 means 50 us
 * @disks: disk images there from boot (vda, vdb, ... in this order); the
 *	kernel process gets a copy of each fd, the caller keeps its own
 * @nr_disks: how many
 */
struct lkl_um_options {
	const char *kernel;
	const char *cmdline;
	uint64_t memory;
	uint64_t heap_size;
	int console_fd;
	unsigned int boot_timeout_ms;
	int spin_us;
	int kernel_poll_us;
	const struct lkl_um_disk *disks;
	unsigned int nr_disks;
};

/**
 * struct lkl_um_disk - a disk image for the kernel
 * @fd: the image, a regular file or a block device
 * @readonly: the disk is read-only (a read-only @fd must be)
 * @hold_fd: lkl_um_add_disk() only: another file the kernel process keeps
 *	open as long as the disk is plugged in, and so the open file
 *	description locks on it (a loop device's file); 0 for none
 */
struct lkl_um_disk {
	int fd;
	int readonly;
	int hold_fd;
};

/**
 * struct lkl_um_completion - the result of an asynchronous call
 * @tag: the tag given to lkl_um_submit()
 * @ret: the call's return value, -errno on failure
 */
struct lkl_um_completion {
	uint64_t tag;
	long ret;
};

/** lkl_um_options_init() - fill @opts with the defaults */
void lkl_um_options_init(struct lkl_um_options *opts);

/**
 * lkl_um_start() - spawn a kernel process and wait until it has booted
 * @opts: the options, or NULL for the defaults
 * @kp: set to the new kernel's handle on success
 *
 * Returns 0, or -errno: -ENOENT when the kernel executable is missing,
 * -ETIMEDOUT when it did not boot in time, -ECHILD when it exited during
 * boot (lkl_um_last_error() then holds its last console lines).
 */
int lkl_um_start(const struct lkl_um_options *opts, struct lkl_um **kp);

/**
 * lkl_um_syscall() - make a system call and wait for its result
 * @k: the kernel
 * @nr: the system call number (x86_64)
 * @args: its six arguments; pointers must point into the window
 *
 * Returns what the system call returns, -errno on failure.
 */
long lkl_um_syscall(struct lkl_um *k, long nr, const long args[6]);

/** lkl_um_call() - lkl_um_syscall() with the arguments listed */
#define lkl_um_call(k, nr, ...) \
	lkl_um_syscall((k), (nr), (const long[6]){ __VA_ARGS__ })

/**
 * lkl_um_syscall_as_owner() - a system call whose new files are a user's
 * @k: the kernel
 * @uid: the owner of what the call creates
 * @gid: its group (in a setgid directory, the directory's, as always)
 * @nr: the system call (x86_64): one that creates, with at most four
 *	arguments, such as openat, mkdirat, mknodat or symlinkat
 * @args: its four arguments
 *
 * Only ownership changes: the call's permission checks are the kernel
 * process's own (root's).  Returns what the system call returns; -EINVAL
 * for a call that changes credentials.
 */
long lkl_um_syscall_as_owner(struct lkl_um *k, uid_t uid, gid_t gid, long nr,
			     const long args[4]);

/** lkl_um_call_as_owner() - lkl_um_syscall_as_owner() with the arguments listed */
#define lkl_um_call_as_owner(k, uid, gid, nr, ...) \
	lkl_um_syscall_as_owner((k), (uid), (gid), (nr), (const long[4]){ __VA_ARGS__ })

/**
 * lkl_um_submit() - start a system call without waiting for it
 * @k: the kernel
 * @nr: the system call number (x86_64)
 * @args: its six arguments
 * @tag: handed back with the result by lkl_um_reap()
 *
 * Returns 0, -EAGAIN when the maximum number of calls is in flight (reap
 * some first), or -ESHUTDOWN.
 */
int lkl_um_submit(struct lkl_um *k, long nr, const long args[6],
		  uint64_t tag);

/**
 * lkl_um_reap() - collect results of asynchronous calls
 * @k: the kernel
 * @out: where to store them
 * @max: room in @out
 *
 * Never blocks.  Returns how many were stored.  When it returns 0, the
 * event fd is armed: it polls readable when there are more.
 */
int lkl_um_reap(struct lkl_um *k, struct lkl_um_completion *out,
		unsigned int max);

/**
 * lkl_um_pending() - whether lkl_um_reap() has results to give
 *
 * Cheap (no lock, no system call): for callers that poll while calls are
 * in flight.  Only lkl_um_reap() arms the event fd.
 */
int lkl_um_pending(struct lkl_um *k);

/**
 * lkl_um_event_fd() - an fd that polls readable when lkl_um_reap() has
 * results, or the kernel process has gone.  Owned by @k: do not read it.
 */
int lkl_um_event_fd(const struct lkl_um *k);

/** lkl_um_in_flight() - the number of calls whose results are not reaped */
unsigned int lkl_um_in_flight(struct lkl_um *k);

/**
 * lkl_um_alloc() - allocate a call buffer in the window
 * @k: the kernel
 * @size: its size in bytes
 *
 * Returns the buffer, aligned to 64 bytes, or NULL when the window is full.
 */
void *lkl_um_alloc(struct lkl_um *k, size_t size);

/** lkl_um_free() - free a buffer from lkl_um_alloc(); NULL is ignored */
void lkl_um_free(struct lkl_um *k, void *buf);

/**
 * lkl_um_window() - where the window is mapped
 * @k: the kernel
 * @size: set to its size in bytes
 */
void *lkl_um_window(struct lkl_um *k, size_t *size);

/**
 * lkl_um_window_fd() - the window's memfd, to map it a second time (for a
 * mapping that must outlive the handle).  Owned by @k: do not close it.
 * Calls still take addresses in the lkl_um_window() mapping.
 */
int lkl_um_window_fd(const struct lkl_um *k);

/**
 * lkl_um_add_disk() - plug in a disk
 * @k: the kernel
 * @disk: the image; the kernel process gets a copy of its fd
 *
 * The kernel probes the disk, partition table included, before this
 * returns.  Returns the disk's id (its device is the virtio-mmio.<id>
 * platform device), or -errno: -EROFS for a read-only fd not added
 * read-only, -EINVAL for an fd that is not a file or block device.
 */
int lkl_um_add_disk(struct lkl_um *k, const struct lkl_um_disk *disk);

/** lkl_um_remove_disk() - unplug disk @id; unmount it first */
int lkl_um_remove_disk(struct lkl_um *k, int id);

/**
 * lkl_um_send_fd() - pass an fd to the kernel process for a later call
 * @k: the kernel
 * @fd: the fd; the kernel process gets a copy
 * @token: set to the number that names it in the call (LKL_UM_CALL_*)
 *
 * For callers that submit the calls themselves, asynchronously; see
 * lkl_um_add_disk() for the blocking form.  Returns 0 or -errno.
 */
int lkl_um_send_fd(struct lkl_um *k, int fd, uint32_t *token);

/**
 * lkl_um_halt() - halt the kernel: it syncs, unmounts every filesystem and
 * powers off
 * @k: the kernel
 * @timeout_ms: how long to wait for that; after it the process is killed
 *
 * Waits for the calls in flight first.  Returns the kernel process's exit
 * status (0 for a clean power-off), or -errno.  Later calls fail with
 * -ESHUTDOWN.
 */
int lkl_um_halt(struct lkl_um *k, unsigned int timeout_ms);

/**
 * lkl_um_close() - let go of a kernel and free its handle
 * @k: the kernel, or NULL
 * @timeout_ms: how long to wait for the kernel process to exit; 0 does not
 *	wait
 *
 * A kernel that is still running sees its client go and halts by itself
 * (sync, unmount, power off).  If it has not exited within @timeout_ms it is
 * killed.
 */
void lkl_um_close(struct lkl_um *k, unsigned int timeout_ms);

/**
 * lkl_um_console() - what the kernel said last
 * @k: the kernel
 * @buf: where to copy the end of its console output, NUL-terminated
 * @size: size of @buf
 *
 * Returns the number of bytes copied, without the NUL.  Only when the
 * console is kept in memory (console_fd -1).
 */
size_t lkl_um_console(struct lkl_um *k, char *buf, size_t size);

/** lkl_um_pid() - the kernel process's pid */
pid_t lkl_um_pid(const struct lkl_um *k);

/**
 * lkl_um_exit_status() - how the kernel process ended: its wait status as
 * waitpid() gives it, or -1 while it runs
 */
int lkl_um_exit_status(struct lkl_um *k);

/** lkl_um_last_error() - the last failure of this thread, in words */
const char *lkl_um_last_error(void);

#ifdef __cplusplus
}
#endif

#endif
