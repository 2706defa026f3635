// SPDX-License-Identifier: MIT
/*
 * The client library: start a kernel process, make system calls into it
 * through the window, and let it go.  See lkl_um.h for the interface and
 * protocol.h for the window.
 *
 * Calls in flight each own a slot; the completion's tag is the slot number.
 * A slot is either a blocking call's, which the thread that made the call
 * waits on, or an asynchronous call's, whose result goes to the "ready"
 * queue for lkl_um_reap().  Whoever holds the lock reaps the completion
 * ring for everyone.  One waiting thread at a time (the "sleeper") sleeps
 * in poll() on the doorbell socket; the others wait on the condition
 * variable, which is broadcast whenever results arrive.
 */

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <lkl_um.h>
#include <lkl_um/protocol.h>

#include "heap.h"

#define RING_ENTRIES 1024u
#define RINGS_AREA (128u * 1024)	/* header and both rings */
#define DEFAULT_MEMORY (64ull << 20)
#define MIN_MEMORY (32ull << 20)	/* less does not boot */
/*
 * Memory is a file the kernel fills as it uses it, so more than the host's
 * RAM is fine; 400 GiB booted here and 1 TiB did not (UML's address space).
 */
#define MAX_MEMORY (256ull << 30)
#define DEFAULT_HEAP (32ull << 20)
#define DEFAULT_BOOT_TIMEOUT_MS 30000u
#define DEFAULT_SPIN_US 50
#define WINDOW_ATTEMPTS 16
#define FIRST_DISK_FD 5		/* in the kernel process: 5, 6, ... */
#define MAX_BOOT_DISKS 16
#define FIRST_PRIVATE_FD (FIRST_DISK_FD + MAX_BOOT_DISKS)	/* clear of those */

#define load_acquire(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define store_release(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define full_barrier() __atomic_thread_fence(__ATOMIC_SEQ_CST)

_Static_assert(sizeof(struct lkl_um_window) +
	       RING_ENTRIES * (sizeof(struct lkl_um_sqe) +
			       sizeof(struct lkl_um_cqe)) <= RINGS_AREA,
	       "rings fit");

enum slot_kind { SLOT_FREE, SLOT_BLOCKING, SLOT_ASYNC };

struct slot {
	enum slot_kind kind;
	int done;
	long ret;
	uint64_t tag;
};

struct lkl_um {
	pthread_mutex_t lock;
	pthread_cond_t cond;		/* results arrived, or a slot freed */

	struct lkl_um_window *window;
	size_t window_size;
	struct lkl_um_sqe *sq;
	struct lkl_um_cqe *cq;

	int sock;			/* our end of the doorbell pair */
	int window_fd;			/* the window's memfd */
	int console_fd;			/* the in-memory console, or -1 */
	pid_t pid;
	int exit_status;		/* -1 while the process runs */
	int gone;			/* the kernel process has gone */
	int sleeper;			/* a thread sleeps in poll() */
	int armed;			/* we asked for a doorbell */
	uint32_t next_token;		/* for fds passed to the kernel process */
	uint64_t spin_ns;

	struct slot slots[RING_ENTRIES];
	uint32_t free_slots[RING_ENTRIES];
	uint32_t nr_free;
	uint32_t ready[RING_ENTRIES];	/* finished asynchronous slots */
	uint32_t ready_head, nr_ready;

	pthread_mutex_t heap_lock;
	struct lklum_heap heap;
};

/* --- errors --------------------------------------------------------------- */

static __thread char last_error[2048];

const char *lkl_um_last_error(void)
{
	return last_error;
}

__attribute__((format(printf, 2, 3)))
static int fail(int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(last_error, sizeof(last_error), fmt, ap);
	va_end(ap);
	return err;
}

/* --- small helpers ------------------------------------------------------- */

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + ts.tv_nsec;
}

static void ring_kernel(struct lkl_um *k)
{
	static const char bell;

	/* A full socket queue holds a doorbell already. */
	while (send(k->sock, &bell, 1, MSG_DONTWAIT | MSG_NOSIGNAL) < 0 &&
	       errno == EINTR)
		;
}

/* Moves @fd to FIRST_PRIVATE_FD or above, close-on-exec. */
static int private_fd(int fd)
{
	int moved;

	if (fd < 0 || fd >= FIRST_PRIVATE_FD)
		return fd;
	moved = fcntl(fd, F_DUPFD_CLOEXEC, FIRST_PRIVATE_FD);
	close(fd);
	return moved;
}

/* --- the rings ------------------------------------------------------------ */

static void fail_in_flight(struct lkl_um *k);

/* Reads every doorbell waiting; notices the kernel process going.  Returns
 * whether anything was read.  Lock held. */
static int drain_socket(struct lkl_um *k)
{
	int got = 0;
	char buf[64];

	while (!k->gone) {
		ssize_t n = recv(k->sock, buf, sizeof(buf), MSG_DONTWAIT);

		if (n > 0) {
			got = 1;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			break;
		k->gone = 1;
		got = 1;
	}
	return got;
}

/*
 * Takes back a request for a doorbell, or reads the doorbell it brought:
 * no system call unless we asked.  (lkl_um_reap() reads the socket anyway
 * when it finds nothing, to see an end of file.)  Lock held.
 */
static void drain_doorbell(struct lkl_um *k)
{
	if (!k->armed)
		return;
	if (__atomic_exchange_n(&k->window->cq.flags, 0, __ATOMIC_SEQ_CST) &
	    LKL_UM_NEED_WAKEUP) {
		k->armed = 0;	/* the kernel never saw it: no doorbell */
		return;
	}
	if (drain_socket(k))
		k->armed = 0;	/* else it is on its way: read it next time */
}

/* A slot is freed by whoever takes its result: the waiting thread, or
 * lkl_um_reap(). */
static void complete_slot(struct lkl_um *k, uint32_t i, long ret)
{
	struct slot *s = &k->slots[i];

	s->ret = ret;
	s->done = 1;
	if (s->kind == SLOT_ASYNC)
		k->ready[(k->ready_head + k->nr_ready++) % RING_ENTRIES] = i;
}

static void free_slot(struct lkl_um *k, uint32_t i)
{
	k->slots[i].kind = SLOT_FREE;
	k->free_slots[k->nr_free++] = i;
}

/* Takes every result off the completion ring.  Lock held. */
static int reap_ring(struct lkl_um *k)
{
	uint32_t head = k->window->cq.head;
	uint32_t tail = load_acquire(&k->window->cq.tail);
	int n = 0;

	for (; head != tail; head++, n++) {
		const struct lkl_um_cqe *cqe = &k->cq[head % RING_ENTRIES];

		if (cqe->tag < RING_ENTRIES &&
		    k->slots[cqe->tag].kind != SLOT_FREE &&
		    !k->slots[cqe->tag].done)
			complete_slot(k, (uint32_t)cqe->tag, cqe->ret);
	}
	store_release(&k->window->cq.head, head);

	if (k->gone)
		fail_in_flight(k);
	if (n || k->gone)
		pthread_cond_broadcast(&k->cond);
	return n;
}

/* The kernel process has gone: every call still in flight fails. */
static void fail_in_flight(struct lkl_um *k)
{
	uint32_t i;

	for (i = 0; i < RING_ENTRIES; i++)
		if (k->slots[i].kind != SLOT_FREE && !k->slots[i].done)
			complete_slot(k, i, -ESHUTDOWN);
}

/* Results in the ring not reaped yet.  Without the lock: a hint. */
static int results_waiting(struct lkl_um *k)
{
	return load_acquire(&k->window->cq.tail) !=
	       __atomic_load_n(&k->window->cq.head, __ATOMIC_RELAXED);
}

/* Asks for a doorbell with the next result; returns 1 if one came already. */
static int arm_completions(struct lkl_um *k)
{
	k->armed = 1;
	__atomic_store_n(&k->window->cq.flags, LKL_UM_NEED_WAKEUP,
			 __ATOMIC_RELAXED);
	full_barrier();
	return results_waiting(k);
}

static int take_slot(struct lkl_um *k, enum slot_kind kind, uint64_t tag,
		     uint32_t *slot)
{
	uint32_t i;

	if (!k->nr_free)
		return -EAGAIN;
	i = k->free_slots[--k->nr_free];
	k->slots[i] = (struct slot){ .kind = kind, .tag = tag };
	*slot = i;
	return 0;
}

/* Puts a call on the submission ring.  Lock held. */
static void push_call(struct lkl_um *k, long nr, const long args[6],
		      uint32_t slot)
{
	uint32_t tail = k->window->sq.tail;
	struct lkl_um_sqe *sqe = &k->sq[tail % RING_ENTRIES];
	int i;

	sqe->nr = nr;
	for (i = 0; i < 6; i++)
		sqe->args[i] = args[i];
	sqe->tag = slot;
	store_release(&k->window->sq.tail, tail + 1);
}

/* Rings the kernel if it sleeps.  Outside the lock. */
static void wake_kernel(struct lkl_um *k)
{
	full_barrier();
	if (__atomic_load_n(&k->window->sq.flags, __ATOMIC_RELAXED) &
	    LKL_UM_NEED_WAKEUP &&
	    __atomic_exchange_n(&k->window->sq.flags, 0, __ATOMIC_SEQ_CST) &
	    LKL_UM_NEED_WAKEUP)
		ring_kernel(k);
}

/* --- calls ---------------------------------------------------------------- */

int lkl_um_submit(struct lkl_um *k, long nr, const long args[6], uint64_t tag)
{
	uint32_t slot;
	int err;

	pthread_mutex_lock(&k->lock);
	err = k->gone ? -ESHUTDOWN : take_slot(k, SLOT_ASYNC, tag, &slot);
	if (!err)
		push_call(k, nr, args, slot);
	pthread_mutex_unlock(&k->lock);
	if (!err)
		wake_kernel(k);
	return err;
}

/*
 * Sleeps in poll() on the doorbell socket for everyone, @timeout_ms at
 * most.  Lock held.
 */
static void sleep_for_results_at_most(struct lkl_um *k, int timeout_ms)
{
	struct pollfd pfd = { .fd = k->sock, .events = POLLIN };

	k->sleeper = 1;
	if (!arm_completions(k)) {
		pthread_mutex_unlock(&k->lock);
		poll(&pfd, 1, timeout_ms);
		pthread_mutex_lock(&k->lock);
	}
	if (drain_socket(k))
		k->armed = 0;
	k->sleeper = 0;
	pthread_cond_broadcast(&k->cond);
}

static void sleep_for_results(struct lkl_um *k)
{
	sleep_for_results_at_most(k, 1000);
}

long lkl_um_syscall(struct lkl_um *k, long nr, const long args[6])
{
	uint64_t spin_until = now_ns() + k->spin_ns;
	struct slot *s;
	uint32_t slot;
	long ret;

	pthread_mutex_lock(&k->lock);
	while (!k->gone && take_slot(k, SLOT_BLOCKING, 0, &slot)) {
		/* All slots busy: wait for one, reaping for everyone. */
		if (reap_ring(k))
			continue;
		if (!k->sleeper)
			sleep_for_results(k);
		else
			pthread_cond_wait(&k->cond, &k->lock);
	}
	if (k->gone) {
		pthread_mutex_unlock(&k->lock);
		return -ESHUTDOWN;
	}
	push_call(k, nr, args, slot);
	pthread_mutex_unlock(&k->lock);
	wake_kernel(k);

	s = &k->slots[slot];
	pthread_mutex_lock(&k->lock);
	for (;;) {
		reap_ring(k);
		if (s->done)
			break;
		if (now_ns() < spin_until) {
			/* Spin on the ring, not on the lock other callers need. */
			pthread_mutex_unlock(&k->lock);
			while (!results_waiting(k) &&
			       !__atomic_load_n(&s->done, __ATOMIC_ACQUIRE) &&
			       now_ns() < spin_until)
				__builtin_ia32_pause();
			pthread_mutex_lock(&k->lock);
		} else if (!k->sleeper) {
			sleep_for_results(k);
		} else {
			pthread_cond_wait(&k->cond, &k->lock);
		}
	}
	ret = s->ret;
	free_slot(k, slot);
	pthread_cond_broadcast(&k->cond);
	pthread_mutex_unlock(&k->lock);
	return ret;
}

long lkl_um_syscall_as_owner(struct lkl_um *k, uid_t uid, gid_t gid, long nr,
			     const long args[4])
{
	const long call[6] = {
		args[0], args[1], args[2], args[3],
		(long)((uint64_t)gid << 32 | uid), nr,
	};

	return lkl_um_syscall(k, LKL_UM_CALL_AS_OWNER, call);
}

int lkl_um_reap(struct lkl_um *k, struct lkl_um_completion *out,
		unsigned int max)
{
	unsigned int n = 0;

	pthread_mutex_lock(&k->lock);
	drain_doorbell(k);
	reap_ring(k);
	if (!k->nr_ready && !k->gone) {
		/* Nothing came: has the kernel process gone (end of file)? */
		drain_socket(k);
		if (!k->gone && arm_completions(k))
			reap_ring(k);
		else if (k->gone)
			reap_ring(k);
	}
	while (n < max && k->nr_ready) {
		uint32_t i = k->ready[k->ready_head];

		out[n++] = (struct lkl_um_completion){ .tag = k->slots[i].tag,
						       .ret = k->slots[i].ret };
		free_slot(k, i);
		k->ready_head = (k->ready_head + 1) % RING_ENTRIES;
		k->nr_ready--;
	}
	pthread_mutex_unlock(&k->lock);
	return (int)n;
}

int lkl_um_pending(struct lkl_um *k)
{
	/* Unlocked and without a system call: a hint for pollers. */
	return __atomic_load_n(&k->nr_ready, __ATOMIC_RELAXED) ||
	       results_waiting(k) || __atomic_load_n(&k->gone, __ATOMIC_RELAXED);
}

int lkl_um_event_fd(const struct lkl_um *k)
{
	return k->sock;
}

unsigned int lkl_um_in_flight(struct lkl_um *k)
{
	unsigned int n;

	pthread_mutex_lock(&k->lock);
	n = RING_ENTRIES - k->nr_free;
	pthread_mutex_unlock(&k->lock);
	return n;
}

/* --- disks ---------------------------------------------------------------- */

int lkl_um_send_fd(struct lkl_um *k, int fd, uint32_t *token)
{
	struct lkl_um_fd_message m = { .magic = LKL_UM_FD_MAGIC };
	union {
		struct cmsghdr align;
		char space[CMSG_SPACE(sizeof(int))];
	} control;
	struct iovec iov = { .iov_base = &m, .iov_len = sizeof(m) };
	struct msghdr msg = {
		.msg_iov = &iov,
		.msg_iovlen = 1,
		.msg_control = &control,
		.msg_controllen = sizeof(control),
	};
	struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
	ssize_t n;

	pthread_mutex_lock(&k->lock);
	m.token = ++k->next_token;
	pthread_mutex_unlock(&k->lock);
	cmsg->cmsg_level = SOL_SOCKET;
	cmsg->cmsg_type = SCM_RIGHTS;
	cmsg->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cmsg), &fd, sizeof(fd));

	/* The socket holds few messages: wait for room, briefly. */
	for (int tries = 0; tries < 1000; tries++) {
		n = sendmsg(k->sock, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n == sizeof(m)) {
			*token = m.token;
			return 0;
		}
		if (n < 0 && errno != EAGAIN && errno != EINTR)
			return fail(-errno, "cannot pass an fd to the kernel "
				    "process: %s", strerror(errno));
		ring_kernel(k);
		usleep(1000);
	}
	return fail(-EAGAIN, "the kernel process does not read its socket");
}

int lkl_um_add_disk(struct lkl_um *k, const struct lkl_um_disk *disk)
{
	uint32_t token, hold = 0;
	long ret;
	int err;

	err = lkl_um_send_fd(k, disk->fd, &token);
	if (!err && disk->hold_fd > 0)
		err = lkl_um_send_fd(k, disk->hold_fd, &hold);
	if (err)
		return err;
	ret = lkl_um_call(k, LKL_UM_CALL_ADD_DISK, token,
			  disk->readonly ? LKL_UM_DISK_READONLY : 0, hold);
	if (ret < 0)
		return fail((int)ret, "cannot add the disk: %s",
			    strerror((int)-ret));
	return (int)ret;
}

int lkl_um_remove_disk(struct lkl_um *k, int id)
{
	return (int)lkl_um_call(k, LKL_UM_CALL_REMOVE_DISK, id);
}

/* --- buffers -------------------------------------------------------------- */

void *lkl_um_alloc(struct lkl_um *k, size_t size)
{
	void *p;

	pthread_mutex_lock(&k->heap_lock);
	p = lklum_heap_alloc(&k->heap, size ? size : 1);
	pthread_mutex_unlock(&k->heap_lock);
	return p;
}

void lkl_um_free(struct lkl_um *k, void *buf)
{
	if (!buf)
		return;
	pthread_mutex_lock(&k->heap_lock);
	if (lklum_heap_free(&k->heap, buf))
		fprintf(stderr, "lkl_um_free: %p is not a window buffer\n", buf);
	pthread_mutex_unlock(&k->heap_lock);
}

void *lkl_um_window(struct lkl_um *k, size_t *size)
{
	if (size)
		*size = k->window_size;
	return k->window;
}

int lkl_um_window_fd(const struct lkl_um *k)
{
	return k->window_fd;
}

/* --- the kernel process --------------------------------------------------- */

pid_t lkl_um_pid(const struct lkl_um *k)
{
	return k->pid;
}

/* Collects the exit status if the process has ended.  Lock held or not. */
static int poll_exit(struct lkl_um *k, int options)
{
	int status;

	if (k->exit_status < 0 && k->pid > 0 &&
	    waitpid(k->pid, &status, options) == k->pid)
		k->exit_status = status;
	return k->exit_status;
}

int lkl_um_exit_status(struct lkl_um *k)
{
	return poll_exit(k, WNOHANG);
}

/* Waits for the process to exit, up to @timeout_ms, then kills it. */
static int wait_exit(struct lkl_um *k, unsigned int timeout_ms)
{
	uint64_t deadline = now_ns() + (uint64_t)timeout_ms * 1000000;

	while (poll_exit(k, WNOHANG) < 0) {
		if (now_ns() >= deadline) {
			kill(k->pid, SIGKILL);
			return poll_exit(k, 0);
		}
		usleep(1000);
	}
	return k->exit_status;
}

size_t lkl_um_console(struct lkl_um *k, char *buf, size_t size)
{
	struct stat st;
	off_t from;
	ssize_t n;

	if (!size)
		return 0;
	buf[0] = 0;
	if (k->console_fd < 0 || fstat(k->console_fd, &st) < 0)
		return 0;
	from = st.st_size > (off_t)(size - 1) ? st.st_size - (off_t)(size - 1)
					       : 0;
	n = pread(k->console_fd, buf, size - 1, from);
	if (n < 0)
		n = 0;
	buf[n] = 0;
	return (size_t)n;
}

void lkl_um_options_init(struct lkl_um_options *opts)
{
	memset(opts, 0, sizeof(*opts));
	opts->console_fd = -1;
	opts->spin_us = -1;
	opts->kernel_poll_us = -1;
}

static size_t round_up_pow2(uint64_t n)
{
	size_t p = 1u << LKLUM_HEAP_MIN_ORDER;

	while (p < n)
		p <<= 1;
	return p;
}

/* Maps @fd at a random address high in the address space, where the
 * kernel process is unlikely to have anything. */
static void *map_window(int fd, size_t size)
{
	uint64_t r;
	void *p;

	if (getrandom(&r, sizeof(r), 0) != sizeof(r))
		r = now_ns() ^ ((uint64_t)getpid() << 32);
	/* 2 MiB-aligned, in [16 TiB, 80 TiB) */
	r = (0x100000000000ull + r % 0x400000000000ull) & ~0x1fffffull;
	p = mmap((void *)(uintptr_t)r, size, PROT_READ | PROT_WRITE,
		 MAP_SHARED | MAP_FIXED_NOREPLACE, fd, 0);
	return p == (void *)(uintptr_t)r ? p : MAP_FAILED;
}

static void init_window(struct lkl_um *k, size_t heap_size)
{
	struct lkl_um_window *w = k->window;

	memset(w, 0, sizeof(*w));
	w->magic = LKL_UM_MAGIC;
	w->version = LKL_UM_PROTOCOL_VERSION;
	w->size = k->window_size;
	w->base = (uintptr_t)w;
	w->sq_entries = RING_ENTRIES;
	w->cq_entries = RING_ENTRIES;
	w->sq_offset = sizeof(*w);
	w->cq_offset = w->sq_offset + RING_ENTRIES * sizeof(struct lkl_um_sqe);
	w->heap_offset = RINGS_AREA;
	w->heap_size = heap_size;
	k->sq = lkl_um_sq_entries(w);
	k->cq = lkl_um_cq_entries(w);
}

static char *format_arg(const char *fmt, ...)
{
	char *s;
	va_list ap;

	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) < 0)
		s = NULL;
	va_end(ap);
	return s;
}

/* Spawns the kernel process.  Fds: 0 and 1 /dev/null, 2 the console, 3 the
 * window, 4 the doorbell socket. */
static int spawn_kernel(struct lkl_um *k, const struct lkl_um_options *opts,
			const char *kernel, int window_fd, int kernel_sock,
			int console_fd)
{
	const uint64_t memory = opts->memory ? opts->memory : DEFAULT_MEMORY;
	char *argv[64] = { (char *)kernel }, *cmdline = NULL, *save, *word;
	int disk_fds[MAX_BOOT_DISKS], nr_disks = 0;
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	sigset_t none, all;
	int argc = 1, err, i;

	if (opts->nr_disks > MAX_BOOT_DISKS)
		return fail(-E2BIG, "at most %d disks at boot", MAX_BOOT_DISKS);
	/* Out of the way of the fds the child gets at 2..4 first. */
	for (; nr_disks < (int)opts->nr_disks; nr_disks++) {
		const struct lkl_um_disk *d = &opts->disks[nr_disks];
		int flags = fcntl(d->fd, F_GETFL);

		if (flags >= 0 && !d->readonly &&
		    (flags & O_ACCMODE) == O_RDONLY) {
			err = fail(-EROFS, "disk %d: a read-only fd for a "
				   "read-write disk", nr_disks);
			goto out_disks;
		}
		disk_fds[nr_disks] = fcntl(d->fd, F_DUPFD_CLOEXEC,
					   FIRST_PRIVATE_FD);
		if (disk_fds[nr_disks] < 0) {
			err = fail(-errno, "disk %d: %s", nr_disks,
				   strerror(errno));
			goto out_disks;
		}
	}

	argv[argc++] = format_arg("--window=3,%#llx",
				  (unsigned long long)(uintptr_t)k->window);
	argv[argc++] = format_arg("--channel=4");
	if (opts->kernel_poll_us >= 0)
		argv[argc++] = format_arg("--poll-us=%d", opts->kernel_poll_us);
	for (i = 0; i < nr_disks; i++)
		argv[argc++] = format_arg("--disk=%d%s", FIRST_DISK_FD + i,
					  opts->disks[i].readonly ? ",ro" : "");
	argv[argc++] = format_arg("--");
	argv[argc++] = format_arg("mem=%lluK",
				  (unsigned long long)(memory >> 10));
	/* The delay loop needs no calibration: nothing here busy-waits. */
	argv[argc++] = format_arg("lpj=1000000");
	argv[argc++] = format_arg("quiet");
	if (opts->cmdline) {
		cmdline = strdup(opts->cmdline);
		for (word = strtok_r(cmdline, " \t\n", &save);
		     word && argc < 62; word = strtok_r(NULL, " \t\n", &save))
			argv[argc++] = format_arg("%s", word);
	}
	argv[argc] = NULL;

	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
	posix_spawn_file_actions_adddup2(&fa, console_fd, 2);
	posix_spawn_file_actions_adddup2(&fa, window_fd, 3);
	posix_spawn_file_actions_adddup2(&fa, kernel_sock, 4);
	for (i = 0; i < nr_disks; i++)
		posix_spawn_file_actions_adddup2(&fa, disk_fds[i],
						 FIRST_DISK_FD + i);
	posix_spawnattr_init(&attr);
	sigemptyset(&none);
	sigfillset(&all);
	posix_spawnattr_setsigmask(&attr, &none);
	posix_spawnattr_setsigdefault(&attr, &all);
	posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK |
				 POSIX_SPAWN_SETSIGDEF);

	err = posix_spawn(&k->pid, kernel, &fa, &attr, argv, environ);

	posix_spawnattr_destroy(&attr);
	posix_spawn_file_actions_destroy(&fa);
	for (i = 1; i < argc; i++)
		free(argv[i]);
	free(cmdline);
	if (err)
		err = fail(-err, "cannot start the kernel process %s: %s",
			   kernel, strerror(err));
out_disks:
	while (nr_disks--)
		close(disk_fds[nr_disks]);
	return err;
}

/* Waits for "booted".  Returns 0, -ETIMEDOUT, or -ECHILD when the kernel
 * process ended (with its exit status in k->exit_status). */
static int wait_booted(struct lkl_um *k, unsigned int timeout_ms)
{
	uint64_t deadline = now_ns() + (uint64_t)timeout_ms * 1000000;
	struct pollfd pfd = { .fd = k->sock, .events = POLLIN };

	for (;;) {
		int64_t left = (int64_t)(deadline - now_ns()) / 1000000;

		if (load_acquire(&k->window->state) == LKL_UM_STATE_RUNNING)
			return 0;
		drain_socket(k);
		if (k->gone) {
			poll_exit(k, 0);
			return -ECHILD;
		}
		if (left <= 0)
			return -ETIMEDOUT;
		poll(&pfd, 1, left > 100 ? 100 : (int)left);
	}
}

static void free_handle(struct lkl_um *k)
{
	if (k->window)
		munmap(k->window, k->window_size);
	if (k->sock >= 0)
		close(k->sock);
	if (k->console_fd >= 0)
		close(k->console_fd);
	if (k->window_fd >= 0)
		close(k->window_fd);
	if (k->heap.block)
		lklum_heap_destroy(&k->heap);
	pthread_mutex_destroy(&k->lock);
	pthread_mutex_destroy(&k->heap_lock);
	pthread_cond_destroy(&k->cond);
	free(k);
}

static void describe_exit(struct lkl_um *k, const char *kernel)
{
	char console[1024];
	int status = k->exit_status;

	lkl_um_console(k, console, sizeof(console));
	if (WIFEXITED(status))
		fail(-ECHILD, "the kernel process %s exited with status %d "
		     "while booting%s%s", kernel, WEXITSTATUS(status),
		     console[0] ? "; its console said:\n" : "", console);
	else
		fail(-ECHILD, "the kernel process %s was killed by signal %d "
		     "while booting%s%s", kernel, WTERMSIG(status),
		     console[0] ? "; its console said:\n" : "", console);
}

/* One attempt at starting: returns 0, -EAGAIN to retry at another window
 * address, or -errno. */
static int try_start(struct lkl_um *k, const struct lkl_um_options *opts,
		     const char *kernel, size_t heap_size)
{
	unsigned int timeout = opts->boot_timeout_ms ? opts->boot_timeout_ms :
						       DEFAULT_BOOT_TIMEOUT_MS;
	int pair[2], console_fd, err;

	k->window_fd = private_fd(memfd_create("lkl-um-window", MFD_CLOEXEC));
	if (k->window_fd < 0 || ftruncate(k->window_fd, k->window_size) < 0)
		return fail(-errno, "cannot make the window: %s",
			    strerror(errno));
	k->window = map_window(k->window_fd, k->window_size);
	if (k->window == MAP_FAILED) {
		k->window = NULL;
		return -EAGAIN;
	}
	init_window(k, heap_size);

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) < 0)
		return fail(-errno, "cannot make the doorbell socket: %s",
			    strerror(errno));
	k->sock = private_fd(pair[0]);
	pair[1] = private_fd(pair[1]);
	fcntl(k->sock, F_SETFL, O_NONBLOCK);

	console_fd = opts->console_fd;
	if (console_fd < 0) {
		k->console_fd = private_fd(memfd_create("lkl-um-console",
							MFD_CLOEXEC));
		console_fd = k->console_fd;
	}

	err = spawn_kernel(k, opts, kernel, k->window_fd, pair[1], console_fd);
	close(pair[1]);
	if (err)
		return err;

	err = wait_booted(k, timeout);
	if (err == -ECHILD && WIFEXITED(k->exit_status) &&
	    WEXITSTATUS(k->exit_status) == LKL_UM_EXIT_WINDOW_TAKEN)
		return -EAGAIN;
	if (err == -ECHILD) {
		describe_exit(k, kernel);
		return err;
	}
	if (err == -ETIMEDOUT) {
		kill(k->pid, SIGKILL);
		poll_exit(k, 0);
		return fail(err, "the kernel process %s did not boot in %u ms",
			    kernel, timeout);
	}
	return 0;
}

/* Undoes a failed attempt, keeping the handle. */
static void reset_attempt(struct lkl_um *k)
{
	if (k->window)
		munmap(k->window, k->window_size);
	k->window = NULL;
	if (k->sock >= 0)
		close(k->sock);
	if (k->console_fd >= 0)
		close(k->console_fd);
	if (k->window_fd >= 0)
		close(k->window_fd);
	k->sock = k->console_fd = k->window_fd = -1;
	k->gone = 0;
	k->pid = 0;
	k->exit_status = -1;
}

int lkl_um_start(const struct lkl_um_options *opts, struct lkl_um **kp)
{
	struct lkl_um_options defaults;
	const char *kernel;
	struct lkl_um *k;
	size_t heap_size;
	int attempt, err = -EAGAIN;
	uint32_t i;

	if (!opts) {
		lkl_um_options_init(&defaults);
		opts = &defaults;
	}
	kernel = opts->kernel ? opts->kernel : getenv("LKL_UM_KERNEL");
	if (!kernel || !*kernel)
		return fail(-EINVAL, "no kernel executable: set "
			    "lkl_um_options.kernel or LKL_UM_KERNEL");
	if (access(kernel, X_OK) < 0)
		return fail(-errno, "the kernel executable %s: %s", kernel,
			    strerror(errno));
	if (opts->memory && (opts->memory < MIN_MEMORY ||
			     opts->memory > MAX_MEMORY))
		return fail(-EINVAL, "kernel memory of %llu MiB: it must be "
			    "from %llu MiB to %llu GiB",
			    (unsigned long long)(opts->memory >> 20),
			    MIN_MEMORY >> 20, MAX_MEMORY >> 30);

	k = calloc(1, sizeof(*k));
	if (!k)
		return fail(-ENOMEM, "out of memory");
	pthread_mutex_init(&k->lock, NULL);
	pthread_mutex_init(&k->heap_lock, NULL);
	pthread_cond_init(&k->cond, NULL);
	k->sock = k->console_fd = k->window_fd = -1;
	k->exit_status = -1;
	k->spin_ns = (uint64_t)(opts->spin_us >= 0 ? opts->spin_us :
				DEFAULT_SPIN_US) * 1000;
	for (i = 0; i < RING_ENTRIES; i++)
		k->free_slots[i] = RING_ENTRIES - 1 - i;
	k->nr_free = RING_ENTRIES;

	heap_size = round_up_pow2(opts->heap_size ? opts->heap_size :
				  DEFAULT_HEAP);
	k->window_size = RINGS_AREA + heap_size;

	for (attempt = 0; attempt < WINDOW_ATTEMPTS && err == -EAGAIN;
	     attempt++) {
		reset_attempt(k);
		err = try_start(k, opts, kernel, heap_size);
	}
	if (err == -EAGAIN)
		err = fail(-EADDRINUSE, "found no address free for the window "
			   "in both processes");
	if (!err)
		err = lklum_heap_init(&k->heap,
				      (char *)k->window + RINGS_AREA,
				      heap_size);
	if (err) {
		if (k->pid > 0 && poll_exit(k, WNOHANG) < 0) {
			kill(k->pid, SIGKILL);
			poll_exit(k, 0);
		}
		free_handle(k);
		return err;
	}
	*kp = k;
	return 0;
}

int lkl_um_halt(struct lkl_um *k, unsigned int timeout_ms)
{
	uint64_t deadline = now_ns() + (uint64_t)timeout_ms * 500000;

	/*
	 * Give the calls in flight half the time to finish.  Look often: a
	 * thread reaping asynchronous calls (lkl_um_reap()) may read the
	 * doorbell this one sleeps on.
	 */
	pthread_mutex_lock(&k->lock);
	while (!k->gone && k->nr_free + k->nr_ready < RING_ENTRIES &&
	       now_ns() < deadline) {
		if (!k->sleeper)
			sleep_for_results_at_most(k, 2);
		else
			pthread_cond_wait(&k->cond, &k->lock);
		reap_ring(k);
	}
	store_release(&k->window->halt_requested, 1);
	pthread_mutex_unlock(&k->lock);
	ring_kernel(k);
	wait_exit(k, timeout_ms / 2);

	pthread_mutex_lock(&k->lock);
	k->gone = 1;
	fail_in_flight(k);
	pthread_mutex_unlock(&k->lock);
	return k->exit_status;
}

void lkl_um_close(struct lkl_um *k, unsigned int timeout_ms)
{
	if (!k)
		return;
	/* Our end closing is what tells the kernel to halt by itself. */
	close(k->sock);
	k->sock = -1;
	if (timeout_ms)
		wait_exit(k, timeout_ms);
	free_handle(k);
}
