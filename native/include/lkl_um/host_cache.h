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

#include <stdint.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* A view of one file's pages in the host's cache; map is NULL for none. */
struct lkl_um_cache_view {
	unsigned char *map;
	uint64_t size;
};

/* Past any folio of a file @size long: no large folio reaches this far. */
static inline uint64_t lkl_um_past_folios(uint64_t size)
{
	const uint64_t gib = 1ULL << 30;

	return (size + 2 * gib - 1) / gib * gib;
}

/*
 * Whether the host hides its cache of @fd's file (@size long) from us, as
 * it does from a caller who may neither write the file nor owns it (with
 * CAP_FOWNER over its owner): mincore then says every page is cached.
 * Asked of a page past the file's end, which no cache can hold.
 */
static inline int lkl_um_cache_hidden(int fd, uint64_t size)
{
	long page = sysconf(_SC_PAGESIZE);
	unsigned char cached = 1;
	void *beyond = mmap(NULL, (size_t)page, PROT_READ, MAP_SHARED, fd,
			    (off_t)lkl_um_past_folios(size));

	if (beyond == MAP_FAILED)
		return 1;
	if (mincore(beyond, (size_t)page, &cached))
		cached = 1;
	munmap(beyond, (size_t)page);
	return cached & 1;
}

/*
 * Maps @fd's file (a regular one) to look at its cache: 0, or -1 where the
 * host would not tell or the file cannot be mapped; @v then has no map.
 * The mapping takes address space only, as large as the file: up to the
 * 128 TiB of x86-64's user half, past which mmap fails and reads stay
 * buffered.
 */
static inline int lkl_um_cache_view_open(struct lkl_um_cache_view *v, int fd)
{
	struct stat st;
	void *map;

	v->map = NULL;
	v->size = 0;
	if (fstat(fd, &st) || !S_ISREG(st.st_mode) || st.st_size <= 0 ||
	    lkl_um_cache_hidden(fd, (uint64_t)st.st_size))
		return -1;
	map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
	if (map == MAP_FAILED)
		return -1;
	v->map = (unsigned char *)map;
	v->size = (uint64_t)st.st_size;
	return 0;
}

/* Unmaps what lkl_um_cache_view_open() mapped; @v has no map after. */
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
