// SPDX-License-Identifier: GPL-2.0-only
/*
 * virtio-blk: a disk image file as a virtio block device.
 *
 * The kernel's notify (kernel context, which must not block) takes the
 * requests off the queue and hands them to I/O workers, host threads that
 * read and write the image straight into the kernel's memory (preadv and
 * pwritev on the request's own buffers: no bounce copy), then complete the
 * request and raise the interrupt.  Several requests are in flight at once.
 *
 * What a real disk offers, we offer: FLUSH (fdatasync of the image),
 * DISCARD and WRITE_ZEROES (holes punched, so images stay sparse), BLK_SIZE,
 * SEG_MAX, RO for read-only images, and 64-bit sector numbers.
 *
 * Large writes go around the host's page cache (O_DIRECT, on a second open
 * of the image): the disk takes them straight from the kernel's pages, and
 * the host neither copies them nor takes fresh pages for its cache, which
 * on a virtual machine costs more than the copy.  The host invalidates what
 * it had cached of the range, so buffered reads stay coherent.  Large reads
 * go around it too, for the same reasons, unless the host has all of the
 * range cached; the host writes back what it holds dirty of the range
 * first.  Only where the host tells what it has cached (cachestat(2), or
 * mincore(2) where that is missing; see lkl_um/host_cache.h): for an image
 * the user may neither write nor owns, every read is buffered.
 */

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <linux/virtio_blk.h>
#include <linux/virtio_ids.h>
#include <linux/virtio_ring.h>

#include <lkl_um/host_cache.h>

#include "blk.h"
#include "virtio.h"

#define SECTOR 512u
#define WORKERS 4
#define MAX_DISKS 64
#define SEG_MAX (LKLUM_VQ_SIZE - 2)
#define DIRECT_MIN (128u << 10)	/* less: the host's cache is better */

struct request {
	struct lklum_chain chain;
	struct request *next;		/* in the work queue */
};

struct blk {
	struct lklum_virtio_dev vdev;	/* first: blk_of() relies on it */
	int fd;
	int hold_fd;			/* kept open while plugged in, or -1 */
	int direct_fd;			/* the image with O_DIRECT, or -1 */
	unsigned int direct_align;	/* what O_DIRECT needs of offsets */
	int direct_reads;		/* what the host has not cached: too */
	int cached_read_fd;		/* then the rest: never read ahead */
	struct lkl_um_cache_view cache;	/* what it has cached of the image */
	int readonly;
	uint64_t sectors;
	struct virtio_blk_config config;
	char serial[VIRTIO_BLK_ID_BYTES];

	struct request *requests;	/* one per queue entry, by head */
	pthread_mutex_t lock;		/* the work queue */
	pthread_cond_t work;
	struct request *first, *last;
	int stopping;
	pthread_t workers[WORKERS];
	unsigned int nr_workers;
};

static struct blk *disks[MAX_DISKS];

static struct blk *blk_of(struct lklum_virtio_dev *vdev)
{
	return (struct blk *)vdev;
}

/* Memory for the host part: mmap, since malloc() here may be the kernel's. */
static void *alloc_pages(size_t size)
{
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	return p == MAP_FAILED ? NULL : p;
}

/* --- requests ------------------------------------------------------------- */

/* Copies at most @size bytes out of the device-readable segments after the
 * first @skip bytes. */
static size_t copy_out(const struct lklum_chain *c, size_t skip, void *to,
		       size_t size)
{
	size_t done = 0;
	unsigned int i;

	for (i = 0; i < c->nr_out && done < size; i++) {
		size_t len = c->iov[i].iov_len;

		if (skip >= len) {
			skip -= len;
			continue;
		}
		len -= skip;
		if (len > size - done)
			len = size - done;
		memcpy((char *)to + done, (char *)c->iov[i].iov_base + skip, len);
		done += len;
		skip = 0;
	}
	return done;
}

/*
 * The data segments of a request: after the 16-byte header for reads and
 * writes; before the status byte.  Fills @iov, returns their count.
 */
static int data_segments(const struct lklum_chain *c, int writing,
			 struct iovec *iov)
{
	const struct iovec *from = writing ? c->iov : c->iov + c->nr_out;
	unsigned int n = writing ? c->nr_out : c->nr_in;
	size_t skip = writing ? sizeof(struct virtio_blk_outhdr) : 0;
	int count = 0;
	unsigned int i;

	if (!writing)
		n--;	/* the status byte */
	for (i = 0; i < n; i++) {
		if (skip >= from[i].iov_len) {
			skip -= from[i].iov_len;
			continue;
		}
		iov[count].iov_base = (char *)from[i].iov_base + skip;
		iov[count].iov_len = from[i].iov_len - skip;
		skip = 0;
		count++;
	}
	return count;
}

static size_t iov_bytes(const struct iovec *iov, int n)
{
	size_t total = 0;

	while (n--)
		total += iov++->iov_len;
	return total;
}

/* Moves @iov on by @done bytes; returns the segments left. */
static int iov_advance(struct iovec **iov, int n, size_t done)
{
	while (n > 0 && done >= (*iov)->iov_len) {
		done -= (*iov)->iov_len;
		(*iov)++;
		n--;
	}
	if (n > 0) {
		(*iov)->iov_base = (char *)(*iov)->iov_base + done;
		(*iov)->iov_len -= done;
	}
	return n;
}

static int direct_aligned(const struct blk *b, const struct iovec *iov,
			  int n, off_t offset)
{
	int i;

	if (offset % b->direct_align)
		return 0;
	for (i = 0; i < n; i++)
		if ((uintptr_t)iov[i].iov_base % b->direct_align ||
		    iov[i].iov_len % b->direct_align)
			return 0;
	return 1;
}

/* Whether a read of @bytes at @offset goes around the host's cache. */
static int read_direct(struct blk *b, off_t offset, size_t bytes)
{
	return __atomic_load_n(&b->direct_reads, __ATOMIC_RELAXED) &&
	       !lkl_um_all_cached(&b->cache, (uint64_t)offset, bytes);
}

/*
 * Reads or writes what it can of a large @iov with O_DIRECT; moves @iov
 * and *@offset past what was done and returns the segments left, for the
 * buffered read or write to finish (whatever O_DIRECT refused).
 */
static int transfer_direct(struct blk *b, int writing, struct iovec **iov,
			   int n, off_t *offset)
{
	while (n > 0 && b->direct_fd >= 0 &&
	       iov_bytes(*iov, n) >= DIRECT_MIN &&
	       direct_aligned(b, *iov, n, *offset) &&
	       (writing || read_direct(b, *offset, iov_bytes(*iov, n)))) {
		ssize_t done = writing ?
			pwritev(b->direct_fd, *iov, n, *offset) :
			preadv(b->direct_fd, *iov, n, *offset);

		if (done < 0 && errno == EINTR)
			continue;
		/* Refused: this filesystem reads no file so; no more tries. */
		if (done < 0 && errno == EINVAL && !writing)
			__atomic_store_n(&b->direct_reads, 0, __ATOMIC_RELAXED);
		if (done <= 0)
			break;
		n = iov_advance(iov, n, done);
		*offset += done;
	}
	return n;
}

/* Reads or writes all of @iov at @offset; returns 0 or -errno. */
static int transfer(struct blk *b, int writing, struct iovec *iov, int n,
		    off_t offset)
{
	int fd = b->fd;

	if (!writing && b->cached_read_fd >= 0 &&
	    __atomic_load_n(&b->direct_reads, __ATOMIC_RELAXED))
		fd = b->cached_read_fd;
	n = transfer_direct(b, writing, &iov, n, &offset);
	while (n > 0) {
		ssize_t done = writing ? pwritev(fd, iov, n, offset) :
					 preadv(fd, iov, n, offset);

		if (done < 0 && errno == EINTR)
			continue;
		if (done < 0)
			return -errno;
		if (done == 0) {
			/* Past the end of the file: a read sees zeros. */
			if (writing)
				return -EIO;
			while (n--) {
				memset(iov->iov_base, 0, iov->iov_len);
				iov++;
			}
			return 0;
		}
		offset += done;
		n = iov_advance(&iov, n, done);
	}
	return 0;
}

/* DISCARD and WRITE_ZEROES: punch holes, or zero ranges in place. */
static int zero_ranges(struct blk *b, const struct lklum_chain *c, int discard)
{
	struct virtio_blk_discard_write_zeroes range;
	size_t at = sizeof(struct virtio_blk_outhdr);

	while (copy_out(c, at, &range, sizeof(range)) == sizeof(range)) {
		uint64_t sector = range.sector, count = range.num_sectors;
		int unmap = discard ||
			    range.flags & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP;
		int mode = FALLOC_FL_KEEP_SIZE |
			   (unmap ? FALLOC_FL_PUNCH_HOLE : FALLOC_FL_ZERO_RANGE);

		at += sizeof(range);
		if (sector > b->sectors || count > b->sectors - sector)
			return -EIO;
		if (fallocate(b->fd, mode, sector * SECTOR, count * SECTOR) &&
		    !(errno == EOPNOTSUPP && discard) &&
		    fallocate(b->fd, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE,
			      sector * SECTOR, count * SECTOR))
			return -errno;
	}
	return 0;
}

/* Runs one request; returns its virtio status. */
static uint8_t run_request(struct blk *b, const struct lklum_chain *c,
			   uint32_t *written)
{
	struct iovec iov[LKLUM_VQ_SIZE + 2];
	struct virtio_blk_outhdr hdr;
	uint64_t bytes;
	int n, writing;

	*written = 0;
	if (copy_out(c, 0, &hdr, sizeof(hdr)) != sizeof(hdr))
		return VIRTIO_BLK_S_IOERR;

	switch (hdr.type) {
	case VIRTIO_BLK_T_IN:
	case VIRTIO_BLK_T_OUT:
		writing = hdr.type == VIRTIO_BLK_T_OUT;
		if (writing && b->readonly)
			return VIRTIO_BLK_S_IOERR;
		n = data_segments(c, writing, iov);
		bytes = iov_bytes(iov, n);
		if (bytes % SECTOR || hdr.sector > b->sectors ||
		    bytes / SECTOR > b->sectors - hdr.sector)
			return VIRTIO_BLK_S_IOERR;
		if (transfer(b, writing, iov, n, hdr.sector * SECTOR))
			return VIRTIO_BLK_S_IOERR;
		if (!writing)
			*written = bytes;
		return VIRTIO_BLK_S_OK;
	case VIRTIO_BLK_T_FLUSH:
		return fdatasync(b->fd) ? VIRTIO_BLK_S_IOERR : VIRTIO_BLK_S_OK;
	case VIRTIO_BLK_T_GET_ID:
		n = data_segments(c, 0, iov);
		if (n < 1)
			return VIRTIO_BLK_S_IOERR;
		*written = iov[0].iov_len < sizeof(b->serial) ?
				   iov[0].iov_len : sizeof(b->serial);
		memcpy(iov[0].iov_base, b->serial, *written);
		return VIRTIO_BLK_S_OK;
	case VIRTIO_BLK_T_DISCARD:
	case VIRTIO_BLK_T_WRITE_ZEROES:
		if (b->readonly)
			return VIRTIO_BLK_S_IOERR;
		return zero_ranges(b, c, hdr.type == VIRTIO_BLK_T_DISCARD) ?
			       VIRTIO_BLK_S_IOERR : VIRTIO_BLK_S_OK;
	}
	return VIRTIO_BLK_S_UNSUPP;
}

static void complete(struct blk *b, struct request *r, uint8_t status,
		     uint32_t written)
{
	const struct lklum_chain *c = &r->chain;
	const struct iovec *last = &c->iov[c->nr_out + c->nr_in - 1];

	/* The status byte is the last byte of the last writable segment. */
	if (c->nr_in && last->iov_len)
		((uint8_t *)last->iov_base)[last->iov_len - 1] = status;
	lklum_vq_push(&b->vdev, &b->vdev.vq[0], c->head, written + 1);
}

/* --- I/O workers -------------------------------------------------------------- */

static void *worker(void *arg)
{
	struct blk *b = arg;

	for (;;) {
		struct request *r;
		uint32_t written;
		uint8_t status;

		pthread_mutex_lock(&b->lock);
		while (!b->first && !b->stopping)
			pthread_cond_wait(&b->work, &b->lock);
		r = b->first;
		if (r) {
			b->first = r->next;
			if (!b->first)
				b->last = NULL;
		}
		pthread_mutex_unlock(&b->lock);
		if (!r)
			return NULL;

		status = run_request(b, &r->chain, &written);
		complete(b, r, status, written);
	}
}

/* Kernel context: takes the requests off the queue, hands them to workers. */
static void blk_notify(struct lklum_virtio_dev *vdev, unsigned int q)
{
	struct blk *b = blk_of(vdev);
	struct lklum_virtqueue *vq = &vdev->vq[q];

	for (;;) {
		int head = lklum_vq_peek(vq);
		struct request *r;

		if (head < 0)
			break;
		/* A head stays in flight until completed: its request is free. */
		r = &b->requests[head % LKLUM_VQ_SIZE];
		if (lklum_vq_pop(vdev, vq, &r->chain) <= 0)
			continue;
		r->next = NULL;
		pthread_mutex_lock(&b->lock);
		if (b->last)
			b->last->next = r;
		else
			b->first = r;
		b->last = r;
		pthread_cond_signal(&b->work);
		pthread_mutex_unlock(&b->lock);
	}
}

static void blk_config_read(struct lklum_virtio_dev *vdev, unsigned int offset,
			    void *buf, unsigned int size)
{
	struct blk *b = blk_of(vdev);

	if (offset < sizeof(b->config) && size <= sizeof(b->config) - offset)
		memcpy(buf, (char *)&b->config + offset, size);
}

static const struct lklum_virtio_type blk_type = {
	.device_id	= VIRTIO_ID_BLOCK,
	.config_read	= blk_config_read,
	.notify		= blk_notify,
};

/* --- disks -------------------------------------------------------------------- */

static int image_size(int fd, uint64_t *size)
{
	struct stat st;

	if (fstat(fd, &st) < 0)
		return -errno;
	if (S_ISREG(st.st_mode)) {
		*size = st.st_size;
		return 0;
	}
	if (S_ISBLK(st.st_mode))
		return ioctl(fd, BLKGETSIZE64, size) < 0 ? -errno : 0;
	return -EINVAL;	/* a directory, a FIFO, ... */
}

/*
 * A second open of a regular image with O_DIRECT, for large reads and
 * writes; none where the host's filesystem does not do O_DIRECT.
 */
static void open_direct(struct blk *b)
{
	int reads_told = lkl_um_host_cache_known(b->fd);
	struct statx stx;
	char path[32];

	b->direct_fd = -1;
	b->direct_reads = 0;
	b->cached_read_fd = -1;
	if (statx(b->fd, "", AT_EMPTY_PATH, STATX_TYPE | STATX_DIOALIGN, &stx) ||
	    !S_ISREG(stx.stx_mode))
		return;
	/* Reads go around the host's cache only where it tells what it has. */
	if (b->readonly && !reads_told)
		return;
	/*
	 * Whole pages only: a buffered write to the rest of a page that a
	 * direct write covered in part would keep a stale copy of it in the
	 * host's cache, written back over the direct write later.
	 */
	b->direct_align = (unsigned int)sysconf(_SC_PAGESIZE);
	if (stx.stx_mask & STATX_DIOALIGN) {
		if (!stx.stx_dio_offset_align)
			return;	/* the filesystem has no O_DIRECT */
		if (stx.stx_dio_offset_align > b->direct_align)
			b->direct_align = stx.stx_dio_offset_align;
		if (stx.stx_dio_mem_align > b->direct_align)
			b->direct_align = stx.stx_dio_mem_align;
	}
	snprintf(path, sizeof(path), "/proc/self/fd/%d", b->fd);
	b->direct_fd = open(path, (b->readonly ? O_RDONLY : O_RDWR) |
				  O_DIRECT | O_CLOEXEC);
	if (b->direct_fd >= 0 && reads_told)
		b->direct_reads = !lkl_um_cache_view_open(&b->cache, b->fd);
	/*
	 * The kernel reads ahead for itself.  Were the host to read ahead of
	 * a buffered read too, its cache would hold what the kernel asks
	 * for next, that read would be buffered in turn and read further
	 * ahead, and all of the image would go through the host's cache
	 * after all.  So the reads through its cache, on an open of their
	 * own, bring in no more than they ask for.
	 */
	if (b->direct_reads) {
		b->cached_read_fd = open(path, O_RDONLY | O_CLOEXEC);
		if (b->cached_read_fd >= 0)
			posix_fadvise(b->cached_read_fd, 0, 0,
				      POSIX_FADV_RANDOM);
	}
}

static void stop_workers(struct blk *b)
{
	unsigned int i;

	pthread_mutex_lock(&b->lock);
	b->stopping = 1;
	pthread_cond_broadcast(&b->work);
	pthread_mutex_unlock(&b->lock);
	for (i = 0; i < b->nr_workers; i++)
		pthread_join(b->workers[i], NULL);
}

static void free_blk(struct blk *b)
{
	stop_workers(b);
	lklum_virtio_destroy(&b->vdev);
	pthread_cond_destroy(&b->work);
	pthread_mutex_destroy(&b->lock);
	if (b->requests)
		munmap(b->requests, LKLUM_VQ_SIZE * sizeof(*b->requests));
	if (b->fd >= 0)
		close(b->fd);
	if (b->hold_fd >= 0)
		close(b->hold_fd);
	if (b->direct_fd >= 0)
		close(b->direct_fd);
	if (b->cached_read_fd >= 0)
		close(b->cached_read_fd);
	lkl_um_cache_view_close(&b->cache);
	munmap(b, sizeof(*b));
}

/* Workers take no signals: those are the kernel's, on the main thread. */
static int start_workers(struct blk *b)
{
	sigset_t all, old;
	int err = 0;

	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	for (b->nr_workers = 0; b->nr_workers < WORKERS; b->nr_workers++) {
		err = pthread_create(&b->workers[b->nr_workers], NULL, worker, b);
		if (err)
			break;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return -err;
}

int lklum_blk_add(int fd, int readonly, const char *serial, int hold_fd)
{
	uint64_t features, size;
	struct blk *b;
	int err, slot;

	for (slot = 0; slot < MAX_DISKS && disks[slot]; slot++)
		;
	if (slot == MAX_DISKS)
		return -ENOSPC;
	err = image_size(fd, &size);
	if (err)
		return err;
	if (!readonly && (fcntl(fd, F_GETFL) & O_ACCMODE) == O_RDONLY)
		return -EROFS;

	b = alloc_pages(sizeof(*b));
	if (!b)
		return -ENOMEM;
	features = 1ull << VIRTIO_BLK_F_SEG_MAX | 1ull << VIRTIO_BLK_F_BLK_SIZE |
		   1ull << VIRTIO_BLK_F_FLUSH | 1ull << VIRTIO_RING_F_INDIRECT_DESC;
	features |= readonly ? 1ull << VIRTIO_BLK_F_RO :
			       1ull << VIRTIO_BLK_F_DISCARD |
				       1ull << VIRTIO_BLK_F_WRITE_ZEROES;
	err = lklum_virtio_init(&b->vdev, &blk_type, features, 1);
	if (err) {
		munmap(b, sizeof(*b));
		return err;
	}
	b->fd = fd;
	b->hold_fd = hold_fd;
	b->readonly = readonly;
	open_direct(b);
	b->sectors = size / SECTOR;
	strncpy(b->serial, serial ? serial : "lkl-um", sizeof(b->serial));
	b->config = (struct virtio_blk_config){
		.capacity = b->sectors,
		.seg_max = SEG_MAX,
		.blk_size = SECTOR,
		.max_discard_sectors = UINT32_MAX,
		.max_discard_seg = 1,
		.discard_sector_alignment = 4096 / SECTOR,
		.max_write_zeroes_sectors = UINT32_MAX,
		.max_write_zeroes_seg = 1,
		.write_zeroes_may_unmap = 1,
	};
	pthread_mutex_init(&b->lock, NULL);
	pthread_cond_init(&b->work, NULL);
	b->requests = alloc_pages(LKLUM_VQ_SIZE * sizeof(*b->requests));
	err = b->requests ? start_workers(b) : -ENOMEM;
	if (!err) {
		disks[slot] = b;
		err = um_lib_device_add(&b->vdev.dev);
	}
	if (err < 0) {
		disks[slot] = NULL;
		b->fd = b->hold_fd = -1;	/* the caller keeps its fds on failure */
		free_blk(b);
		return err;
	}
	b->vdev.id = err;
	return err;
}

int lklum_blk_remove(int id)
{
	int slot, err;

	for (slot = 0; slot < MAX_DISKS; slot++)
		if (disks[slot] && disks[slot]->vdev.id == id)
			break;
	if (slot == MAX_DISKS)
		return -ENODEV;
	err = um_lib_device_remove(id);
	if (err)
		return err;
	free_blk(disks[slot]);
	disks[slot] = NULL;
	return 0;
}
