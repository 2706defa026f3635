/* SPDX-License-Identifier: GPL-2.0-only OR MIT */
/*
 * cachestat(2), Linux 6.5: how much of a file's range the host has in its
 * page cache.  The kernel process's disk reads what the host has not cached
 * around its cache (native/host/blk.c), and lklfuse's server knows from it
 * that its large reads then go to the disk.  Older hosts' headers lack it.
 */
#ifndef LKL_UM_CACHESTAT_H
#define LKL_UM_CACHESTAT_H

#include <stdint.h>
#include <unistd.h>

#define LKL_UM_SYS_CACHESTAT 451	/* the same on every architecture */

struct lkl_um_cachestat_range {
	uint64_t off, len;
};

struct lkl_um_cachestat {
	uint64_t nr_cache, nr_dirty, nr_writeback, nr_evicted,
		nr_recently_evicted;
};

/* Returns 0, or -1 with errno (ENOSYS before Linux 6.5, or EPERM from a
 * seccomp filter). */
static inline int lkl_um_cachestat(int fd, uint64_t off, uint64_t len,
				   struct lkl_um_cachestat *st)
{
	struct lkl_um_cachestat_range range = { off, len };

	return (int)syscall(LKL_UM_SYS_CACHESTAT, fd, &range, st, 0);
}

#endif
