/* SPDX-License-Identifier: GPL-2.0-only OR MIT */
/*
 * The window protocol between a client (native/client) and the kernel
 * process (native/host).
 *
 * The window is a memfd the client creates, maps and hands to the kernel
 * process, which maps it at the same address.  Every pointer a system call
 * carries points into it, so nested structures need no translation.  It
 * holds, in this order:
 *
 *   struct lkl_um_window        the header: geometry, state, ring indexes
 *   struct lkl_um_sqe[]         submission ring (client -> kernel)
 *   struct lkl_um_cqe[]         completion ring (kernel -> client)
 *   heap                        buffers the client allocates for calls
 *
 * Rings are single producer / single consumer with free-running 32-bit
 * indexes: the producer writes an entry, then publishes it with a release
 * store of its tail; the consumer reads the tail with an acquire load.
 *
 * Doorbells are one-byte messages on a SOCK_SEQPACKET socket pair.  They are
 * sent only to a side that has said it sleeps (LKL_UM_NEED_WAKEUP in the
 * ring's flags, set by the consumer before it sleeps and taken by the
 * producer when it rings), so a burst of calls costs at most one doorbell.
 * A full socket queue means a doorbell is pending already: it is dropped.
 */

#ifndef LKL_UM_PROTOCOL_H
#define LKL_UM_PROTOCOL_H

#include <stdint.h>

#define LKL_UM_MAGIC 0x4d554b4cu	/* "LKUM" */
#define LKL_UM_PROTOCOL_VERSION 1u

/* Exit codes of the kernel process, besides the kernel's own (0 and 1). */
#define LKL_UM_EXIT_USAGE 64		/* bad arguments */
#define LKL_UM_EXIT_WINDOW_TAKEN 75	/* the window address is in use */
#define LKL_UM_EXIT_BAD_WINDOW 76	/* not a window of this protocol */

/* struct lkl_um_window.state */
enum lkl_um_state {
	LKL_UM_STATE_BOOTING = 0,
	LKL_UM_STATE_RUNNING = 1,
	LKL_UM_STATE_HALTED = 2,
};

/* struct lkl_um_ring.flags */
#define LKL_UM_NEED_WAKEUP 1u

/*
 * Calls for the kernel process's host part rather than for the kernel: the
 * negative numbers.
 */
/* (fd token, flags, token of an fd to hold or 0) -> disk id */
#define LKL_UM_CALL_ADD_DISK (-1)
#define LKL_UM_CALL_REMOVE_DISK (-2)	/* (disk id) -> 0 */
#define LKL_UM_DISK_READONLY 1u		/* flags of ADD_DISK */

/*
 * A call the kernel runs for a user: system call args[5], with args[0] to
 * args[3] as its arguments, makes what it creates as owned by the uid in
 * the low 32 bits of args[4] and the gid in the high ones.  Permission
 * checks stay the caller's (root's).  The kernel's UM_LIB_CALL_AS_OWNER.
 */
#define LKL_UM_CALL_AS_OWNER 0x10000

/*
 * An fd for the host part (a disk image) travels on the doorbell socket as
 * a message of its own, this struct with the fd in an SCM_RIGHTS control
 * message, before the call that names it by its token.
 */
#define LKL_UM_FD_MAGIC 0x44464b4cu	/* "LKFD" */
struct lkl_um_fd_message {
	uint32_t magic;
	uint32_t token;
};

/* One system call: x86_64 number, six arguments, the client's tag. */
struct lkl_um_sqe {
	int64_t nr;
	int64_t args[6];
	uint64_t tag;
};

/* Its result: the return value (-errno on failure) and the tag. */
struct lkl_um_cqe {
	int64_t ret;
	uint64_t tag;
};

#define LKL_UM_CACHELINE 64

/* The indexes of one ring, each on a cache line of its own. */
struct lkl_um_ring {
	uint32_t head __attribute__((aligned(LKL_UM_CACHELINE)));
	uint32_t tail __attribute__((aligned(LKL_UM_CACHELINE)));
	uint32_t flags __attribute__((aligned(LKL_UM_CACHELINE)));
};

struct lkl_um_window {
	uint32_t magic;
	uint32_t version;
	uint64_t size;			/* of the whole window, in bytes */
	uint64_t base;			/* its address in both processes */
	uint32_t sq_entries;		/* a power of two */
	uint32_t cq_entries;		/* a power of two */
	uint64_t sq_offset;		/* from the start of the window */
	uint64_t cq_offset;
	uint64_t heap_offset;
	uint64_t heap_size;
	uint32_t state;			/* enum lkl_um_state, set by the kernel */
	uint32_t halt_requested;	/* set by the client */
	struct lkl_um_ring sq;
	struct lkl_um_ring cq;
};

_Static_assert(sizeof(struct lkl_um_sqe) == 64, "sqe layout");
_Static_assert(sizeof(struct lkl_um_cqe) == 16, "cqe layout");
_Static_assert(sizeof(struct lkl_um_ring) == 3 * LKL_UM_CACHELINE,
	       "ring layout");
_Static_assert(sizeof(struct lkl_um_window) == 8 * LKL_UM_CACHELINE,
	       "window layout");

static inline struct lkl_um_sqe *lkl_um_sq_entries(struct lkl_um_window *w)
{
	return (struct lkl_um_sqe *)((char *)w + w->sq_offset);
}

static inline struct lkl_um_cqe *lkl_um_cq_entries(struct lkl_um_window *w)
{
	return (struct lkl_um_cqe *)((char *)w + w->cq_offset);
}

#endif
