/* SPDX-License-Identifier: GPL-2.0-only OR MIT */
/*
 * cachestat(2), Linux 6.5: how much of a file's range the host has in its
 * page cache.  The kernel process's disk reads what the host has not cached
 * around its cache (native/host/blk.c), where cachestat tells it what that
 * is; lklfuse's server asks the same to know that its large reads then go
 * to the disk.  Older hosts' headers lack it.
 */
#ifndef LKL_UM_CACHESTAT_H
#define LKL_UM_CACHESTAT_H

#include <stdint.h>
#include <sys/syscall.h>
#include <sys/vfs.h>
#include <unistd.h>

#ifdef __NR_cachestat
#define LKL_UM_NR_CACHESTAT __NR_cachestat
#else
#define LKL_UM_NR_CACHESTAT 451	/* x86-64, arm64 and the generic table */
#endif

#define LKL_UM_OVERLAYFS_MAGIC 0x794c7630

struct lkl_um_cachestat_range {
	uint64_t off, len;
};

struct lkl_um_cachestat {
	uint64_t nr_cache, nr_dirty, nr_writeback, nr_evicted,
		nr_recently_evicted;
};

/*
 * Returns 0, or -1 with errno: ENOSYS before Linux 6.5; EPERM from a
 * seccomp filter, or for a file the caller neither owns nor may write.
 * @st counts pages of the host's size.
 */
static inline int lkl_um_cachestat(int fd, uint64_t off, uint64_t len,
				   struct lkl_um_cachestat *st)
{
	struct lkl_um_cachestat_range range = { off, len };

	return (int)syscall(LKL_UM_NR_CACHESTAT, fd, &range, st, 0);
}

/*
 * Whether cachestat tells what the host has cached of @fd's file.  Not
 * through overlayfs: the cache there is the file's below, and cachestat of
 * the overlay's file says none.
 */
static inline int lkl_um_host_cache_known(int fd)
{
	struct lkl_um_cachestat st;
	struct statfs fs;

	return !fstatfs(fd, &fs) && fs.f_type != LKL_UM_OVERLAYFS_MAGIC &&
	       !lkl_um_cachestat(fd, 0, 4096, &st);
}

#endif
