/* SPDX-License-Identifier: GPL-2.0-only OR MIT */
/*
 * What the host has of an image file in its page cache.  The kernel
 * process's disk reads what the host has not cached around its cache
 * (native/host/blk.c); lklfuse's server asks the same to know that its
 * large reads then go to the disk.
 *
 * cachestat(2) tells it where it can (Linux 6.5 and later, not through
 * overlayfs).  Elsewhere (Debian 12's 6.1, a container's overlayfs root)
 * mincore(2) does, through a read-only shared mapping of the file: never
 * read, it only names the file's pages to mincore, which takes no fault
 * and changes nothing in the cache; through overlayfs the mapping is the
 * file's below, whose cache it is.  cachestat is preferred: it needs no
 * mapping in the kernel process, whose address space is UML's too.
 */
#ifndef LKL_UM_HOST_CACHE_H
#define LKL_UM_HOST_CACHE_H

#include <stdint.h>
#include <sys/mman.h>
#include <sys/stat.h>
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
static inline int lkl_um_cachestat_works(int fd)
{
	struct lkl_um_cachestat st;
	struct statfs fs;

	return !fstatfs(fd, &fs) && fs.f_type != LKL_UM_OVERLAYFS_MAGIC &&
	       !lkl_um_cachestat(fd, 0, 4096, &st);
}

/*
 * A view of one file's pages in the host's cache: through cachestat on
 * @fd, or else through @map (NULL for none).
 */
struct lkl_um_cache_view {
	int fd;			/* cachestat tells, or -1 */
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
 * Looks at @fd's file's cache (a regular file's): through cachestat, or
 * else a mapping.  0, or -1 where the host would not tell or the file
 * cannot be mapped.
 * The mapping takes address space only, as large as the file: up to the
 * 128 TiB of x86-64's user half, past which mmap fails and reads stay
 * buffered.
 */
static inline int lkl_um_cache_view_open(struct lkl_um_cache_view *v, int fd)
{
	struct stat st;
	void *map;

	v->fd = -1;
	v->map = NULL;
	v->size = 0;
	if (fstat(fd, &st) || !S_ISREG(st.st_mode) || st.st_size <= 0)
		return -1;
	if (lkl_um_cachestat_works(fd)) {
		v->fd = fd;	/* the caller's, which it keeps open meanwhile */
		return 0;
	}
	if (lkl_um_cache_hidden(fd, (uint64_t)st.st_size))
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
	v->fd = -1;
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
	struct lkl_um_cachestat st;
	unsigned char pages[256];
	uint64_t bytes, i;

	if (v->fd >= 0)
		return lkl_um_cachestat(v->fd, off, len, &st) ||
		       st.nr_cache >= (end + page - 1) / page - off / page;
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
