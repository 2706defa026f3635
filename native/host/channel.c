// SPDX-License-Identifier: GPL-2.0-only
/*
 * The channel: how the kernel takes system calls from the client's
 * submission ring and hands results back on its completion ring, and the
 * doorbells in both directions (see protocol.h).
 *
 * These functions are the kernel's um_lib_host_ops: they run in kernel
 * context, on a kernel stack, with the kernel's own serialisation (one
 * hostcall task at a time takes a call).  They only touch the window and
 * the doorbell socket, and never block.
 */

#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "blk.h"
#include "host.h"

/* Fds that came with the doorbells, waiting for the call that takes them. */
#define MAX_PASSED_FDS 16
static struct {
	uint32_t token;
	int fd;
} passed_fds[MAX_PASSED_FDS];
static unsigned int nr_passed_fds;

static struct lkl_um_window *window;
static struct lkl_um_sqe *sq_entries;
static struct lkl_um_cqe *cq_entries;
static int doorbell_fd = -1;
static int console_fd = 2;
/*
 * How long the idle kernel polls for calls before it sleeps.  Waking a
 * sleeping kernel costs far more than a call (50 to 150 us in a VM, where
 * the host must wake an idle vCPU), so the poll adapts as KVM's halt
 * polling does: a call that comes soon after a poll gave up doubles it,
 * up to IDLE_POLL_MAX_NS; a sleep longer than that halves it, down to
 * what the client asked for.  A busy client then never waits for a wake
 * up, and an idle kernel still sleeps.
 */
#define IDLE_POLL_MAX_NS 400000
static uint64_t idle_poll_min_ns, idle_poll_ns, slept_since;

#define load_acquire(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define store_release(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define full_barrier() __atomic_thread_fence(__ATOMIC_SEQ_CST)

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + ts.tv_nsec;
}

static void ring_client(void)
{
	static const char bell;

	/* A full socket queue holds a doorbell already. */
	while (send(doorbell_fd, &bell, 1, MSG_DONTWAIT | MSG_NOSIGNAL) < 0 &&
	       errno == EINTR)
		;
}

static int calls_waiting(void)
{
	return load_acquire(&window->sq.tail) != window->sq.head ||
	       load_acquire(&window->halt_requested);
}

/* --- um_lib_host_ops ----------------------------------------------------- */

static void console_write(const char *buf, unsigned int len)
{
	while (len) {
		ssize_t n = write(console_fd, buf, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return;
		buf += n;
		len -= n;
	}
}

static int read_socket(void);

static const struct lklum_disk_arg *boot_disks;
static unsigned int nr_boot_disks;

static void booted(void)
{
	char message[128];
	unsigned int i;
	int err;

	/* The disks given on the command line are there from the start. */
	for (i = 0; i < nr_boot_disks; i++) {
		err = lklum_blk_add(boot_disks[i].fd, boot_disks[i].readonly,
				    NULL, -1);
		if (err >= 0)
			continue;
		snprintf(message, sizeof(message),
			 "lkl-um: cannot add disk fd %d: error %d\n",
			 boot_disks[i].fd, err);
		console_write(message, strlen(message));
	}
	store_release(&window->state, LKL_UM_STATE_RUNNING);
	ring_client();
	/*
	 * A client that went away while we booted (killed before its mount
	 * was ready, say) raised no doorbell IRQ: that was not registered
	 * yet.  Look once, now that it is, or we would wait for it for ever.
	 */
	if (read_socket() < 0)
		store_release(&window->halt_requested, 1);
}

static int take_call(struct um_lib_call *call)
{
	uint32_t head = window->sq.head;
	uint32_t tail = load_acquire(&window->sq.tail);
	const struct lkl_um_sqe *sqe;
	int i;

	if (head == tail)
		return load_acquire(&window->halt_requested) ? UM_LIB_HALT :
							       UM_LIB_NONE;

	sqe = &sq_entries[head & (window->sq_entries - 1)];
	call->nr = sqe->nr;
	for (i = 0; i < 6; i++)
		call->args[i] = sqe->args[i];
	call->cookie = sqe->tag;
	store_release(&window->sq.head, head + 1);

	return tail - head > 1 ? UM_LIB_TAKEN_MORE : UM_LIB_TAKEN;
}

static void complete_call(unsigned long long cookie, long ret)
{
	uint32_t tail = window->cq.tail;
	struct lkl_um_cqe *cqe;

	/*
	 * The client keeps at most cq_entries calls in flight, so there is
	 * always room; a client that breaks that rule loses results.
	 */
	if (tail - load_acquire(&window->cq.head) >= window->cq_entries)
		return;

	cqe = &cq_entries[tail & (window->cq_entries - 1)];
	cqe->ret = ret;
	cqe->tag = cookie;
	store_release(&window->cq.tail, tail + 1);

	full_barrier();
	if (__atomic_load_n(&window->cq.flags, __ATOMIC_RELAXED) &
	    LKL_UM_NEED_WAKEUP &&
	    __atomic_exchange_n(&window->cq.flags, 0, __ATOMIC_SEQ_CST) &
	    LKL_UM_NEED_WAKEUP)
		ring_client();
}

/* Keeps an fd that came on the socket; closes it when there is no room. */
static void keep_fd(const struct lkl_um_fd_message *m, int fd)
{
	if (m->magic != LKL_UM_FD_MAGIC || nr_passed_fds == MAX_PASSED_FDS) {
		close(fd);
		return;
	}
	passed_fds[nr_passed_fds].token = m->token;
	passed_fds[nr_passed_fds].fd = fd;
	nr_passed_fds++;
}

/*
 * Reads every message on the socket: doorbells, and fds passed for calls.
 * Returns 0, or a negative errno when the client has gone.
 */
static int read_socket(void)
{
	union {
		struct lkl_um_fd_message fd_message;
		char doorbells[64];
	} buf;
	union {
		struct cmsghdr align;
		char space[CMSG_SPACE(sizeof(int))];
	} control;

	for (;;) {
		struct iovec iov = { .iov_base = &buf, .iov_len = sizeof(buf) };
		struct msghdr msg = {
			.msg_iov = &iov,
			.msg_iovlen = 1,
			.msg_control = &control,
			.msg_controllen = sizeof(control),
		};
		struct cmsghdr *cmsg;
		ssize_t n = recvmsg(doorbell_fd, &msg,
				    MSG_DONTWAIT | MSG_CMSG_CLOEXEC);

		if (n == 0)
			return -EPIPE;
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)	/* EAGAIN: all read; else the client has gone */
			return errno == EAGAIN ? 0 : -errno;
		cmsg = CMSG_FIRSTHDR(&msg);
		if (cmsg && cmsg->cmsg_level == SOL_SOCKET &&
		    cmsg->cmsg_type == SCM_RIGHTS) {
			int fd;

			memcpy(&fd, CMSG_DATA(cmsg), sizeof(fd));
			if (n == sizeof(buf.fd_message))
				keep_fd(&buf.fd_message, fd);
			else
				close(fd);
		}
	}
}

/* The doorbell rang: we slept, for how long tells the poll how to adapt. */
static void adapt_idle_poll(void)
{
	uint64_t slept;

	if (!slept_since || !idle_poll_min_ns)
		return;
	slept = now_ns() - slept_since;
	slept_since = 0;
	if (slept < IDLE_POLL_MAX_NS && idle_poll_ns < IDLE_POLL_MAX_NS)
		idle_poll_ns = idle_poll_ns * 2 > IDLE_POLL_MAX_NS ?
			       IDLE_POLL_MAX_NS : idle_poll_ns * 2;
	else if (slept >= IDLE_POLL_MAX_NS && idle_poll_ns > idle_poll_min_ns)
		idle_poll_ns = idle_poll_ns / 2 < idle_poll_min_ns ?
			       idle_poll_min_ns : idle_poll_ns / 2;
}

static int ack_doorbell(void)
{
	adapt_idle_poll();
	return read_socket();
}

/* Takes the fd passed with @token, or returns -EBADF. */
static int take_fd(uint32_t token)
{
	unsigned int i;
	int fd;

	read_socket();
	for (i = 0; i < nr_passed_fds; i++) {
		if (passed_fds[i].token != token)
			continue;
		fd = passed_fds[i].fd;
		passed_fds[i] = passed_fds[--nr_passed_fds];
		return fd;
	}
	return -EBADF;
}

static long host_call(long nr, const long *args)
{
	int fd, hold, ret;

	switch (nr) {
	case LKL_UM_CALL_ADD_DISK:
		fd = take_fd((uint32_t)args[0]);
		hold = args[2] ? take_fd((uint32_t)args[2]) : -1;
		if (fd < 0 || (args[2] && hold < 0)) {
			ret = fd < 0 ? fd : hold;
		} else {
			ret = lklum_blk_add(fd, args[1] & LKL_UM_DISK_READONLY,
					    NULL, hold);
			if (ret >= 0)
				return ret;
		}
		if (fd >= 0)
			close(fd);
		if (hold >= 0)
			close(hold);
		return ret;
	case LKL_UM_CALL_REMOVE_DISK:
		return lklum_blk_remove((int)args[0]);
	}
	return -ENOSYS;
}

static int arm_doorbell(void)
{
	__atomic_store_n(&window->sq.flags, LKL_UM_NEED_WAKEUP,
			 __ATOMIC_RELAXED);
	full_barrier();
	return calls_waiting();
}

static int idle_poll(void)
{
	uint64_t deadline;

	if (!idle_poll_ns)
		return 0;

	/* While we poll, the client need not ring. */
	__atomic_store_n(&window->sq.flags, 0, __ATOMIC_RELAXED);
	deadline = now_ns() + idle_poll_ns;
	do {
		if (calls_waiting())
			return 1;
		/* Handled first; the idle loop polls again after. */
		if (um_lib_irq_pending())
			return 0;
		__builtin_ia32_pause();
	} while (now_ns() < deadline);

	if (arm_doorbell())
		return 1;
	slept_since = now_ns();
	return 0;
}

static struct um_lib_host_ops channel_ops = {
	.console_write	= console_write,
	.booted		= booted,
	.take_call	= take_call,
	.complete_call	= complete_call,
	.ack_doorbell	= ack_doorbell,
	.arm_doorbell	= arm_doorbell,
	.idle_poll	= idle_poll,
	.call		= host_call,
};

const struct um_lib_host_ops *
lklum_channel_init(struct lkl_um_window *w, int window_fd, int channel_fd,
		   unsigned int poll_us, const struct lklum_disk_arg *disks,
		   unsigned int nr_disks)
{
	boot_disks = disks;
	nr_boot_disks = nr_disks;
	window = w;
	sq_entries = lkl_um_sq_entries(w);
	cq_entries = lkl_um_cq_entries(w);
	doorbell_fd = channel_fd;
	idle_poll_min_ns = idle_poll_ns = (uint64_t)poll_us * 1000;

	channel_ops.window_start = (unsigned long)w;
	channel_ops.window_size = w->size;
	channel_ops.window_fd = window_fd;
	channel_ops.doorbell_fd = channel_fd;
	return &channel_ops;
}

void lklum_channel_halted(void)
{
	store_release(&window->state, LKL_UM_STATE_HALTED);
}
