/* SPDX-License-Identifier: GPL-2.0-only OR MIT */
/*
 * What the host has of an image file in its page cache, seen through a
 * read-only shared mapping of the file and mincore(2), which every Linux
 * has.  The kernel process's disk reads what the host has not cached
 * around its cache (native/host/blk.c); lklfuse's server asks the same to
 * know that its large reads then go to the disk.
 *
 * Nothing is ever read through the mapping: it only names the file's pages
 * to mincore, which takes no fault and changes nothing in the cache.
 * Through overlayfs the mapping is the file's below, whose cache it is.
 */
#ifndef LKL_UM_HOST_CACHE_H
#define LKL_UM_HOST_CACHE_H

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* A view of one file's pages in the host's cache; map is NULL for none. */
struct lkl_um_cache_view {
	unsigned char *map;
	uint64_t size;
};

/*
 * Whether mincore tells the truth about @fd's file: the host reveals the
 * cache of a file only to a caller who owns it or may write it (or root);
 * to anyone else mincore says all of it is cached.
 */
static inline int lkl_um_cache_told(int fd, const struct stat *st)
{
	char path[32];

	if (geteuid() == 0 || st->st_uid == geteuid() ||
	    (fcntl(fd, F_GETFL) & O_ACCMODE) != O_RDONLY)
		return 1;
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	return faccessat(AT_FDCWD, path, W_OK, AT_EACCESS) == 0;
}

/*
 * Maps @fd's file (a regular one) to look at its cache: 0, or -1 where the
 * host would not tell or the file cannot be mapped; @v then has no map.
 */
static inline int lkl_um_cache_view_open(struct lkl_um_cache_view *v, int fd)
{
	struct stat st;
	void *map;

	v->map = NULL;
	v->size = 0;
	if (fstat(fd, &st) || !S_ISREG(st.st_mode) || st.st_size <= 0 ||
	    !lkl_um_cache_told(fd, &st))
		return -1;
	map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
	if (map == MAP_FAILED)
		return -1;
	v->map = (unsigned char *)map;
	v->size = (uint64_t)st.st_size;
	return 0;
}

static inline void lkl_um_cache_view_close(struct lkl_um_cache_view *v)
{
	if (v->map)
		munmap(v->map, (size_t)v->size);
	v->map = NULL;
}

/*
 * Whether the host's cache holds all of @len bytes at @off of the file;
 * also when it cannot tell (then reads go through the cache, as always).
 */
static inline int lkl_um_all_cached(const struct lkl_um_cache_view *v,
				    uint64_t off, uint64_t len)
{
	uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
	uint64_t at = off / page * page, end = off + len;
	unsigned char pages[256];
	uint64_t bytes, i;

	if (!v->map || end > v->size)
		return 1;
	for (; at < end; at += bytes) {
		bytes = end - at < sizeof(pages) * page ?
			end - at : sizeof(pages) * page;
		if (mincore(v->map + at, (size_t)bytes, pages))
			return 1;
		for (i = 0; i < (bytes + page - 1) / page; i++)
			if (!(pages[i] & 1))
				return 0;
	}
	return 1;
}

/* Whether the host tells what it has cached of @fd's file. */
static inline int lkl_um_host_cache_known(int fd)
{
	struct lkl_um_cache_view v;

	if (lkl_um_cache_view_open(&v, fd))
		return 0;
	lkl_um_cache_view_close(&v);
	return 1;
}

#endif
