// SPDX-License-Identifier: GPL-2.0-only
/*
 * The virtio-mmio transport and split virtqueues, device side, as the
 * virtio 1.x specification has them: the registers the kernel's
 * virtio-mmio driver reads and writes, descriptor chains taken off the
 * available ring, completions put on the used ring.
 */

#define _GNU_SOURCE
#include <errno.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>

#include <linux/virtio_config.h>
#include <linux/virtio_mmio.h>

#include "virtio.h"

#define MMIO_MAGIC 0x74726976u		/* "virt" */
#define MMIO_VERSION 2			/* virtio 1.x, not legacy */
#define VENDOR_ID 0x4d554b4cu		/* "LKUM" */

#define load_acquire(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define store_release(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)

void *lklum_guest(uint64_t addr, uint64_t len)
{
	uint64_t size = high_physmem - uml_physmem;

	if (addr > size || len > size - addr)
		return NULL;
	return (void *)(uml_physmem + addr);
}

/* --- virtqueues ------------------------------------------------------------ */

static void reset_queue(struct lklum_virtqueue *vq)
{
	vq->num = LKLUM_VQ_SIZE;
	vq->ready = 0;
	vq->desc_addr = vq->avail_addr = vq->used_addr = 0;
	vq->desc = NULL;
	vq->avail = NULL;
	vq->used = NULL;
	vq->last_avail = 0;
}

static int enable_queue(struct lklum_virtqueue *vq)
{
	vq->desc = lklum_guest(vq->desc_addr, sizeof(*vq->desc) * vq->num);
	vq->avail = lklum_guest(vq->avail_addr,
				sizeof(*vq->avail) + 2 * vq->num + 2);
	vq->used = lklum_guest(vq->used_addr, sizeof(*vq->used) +
			       sizeof(struct vring_used_elem) * vq->num + 2);
	if (!vq->desc || !vq->avail || !vq->used)
		return -EFAULT;
	vq->last_avail = 0;
	return 0;
}

/* Adds descriptor @d to @chain; returns 0 or -EIO. */
static int add_segment(struct lklum_chain *chain, const struct vring_desc *d)
{
	unsigned int n = chain->nr_out + chain->nr_in;
	void *base;

	if (n >= sizeof(chain->iov) / sizeof(chain->iov[0]))
		return -EIO;
	/* Device-readable segments come first, then device-writable ones. */
	if (!(d->flags & VRING_DESC_F_WRITE) && chain->nr_in)
		return -EIO;
	base = lklum_guest(d->addr, d->len);
	if (!base)
		return -EIO;
	chain->iov[n].iov_base = base;
	chain->iov[n].iov_len = d->len;
	if (d->flags & VRING_DESC_F_WRITE)
		chain->nr_in++;
	else
		chain->nr_out++;
	return 0;
}

/* Walks the chain starting at @head of the table @table of @num entries. */
static int walk_chain(struct lklum_chain *chain, const struct vring_desc *table,
		      unsigned int num, uint16_t head, int indirect_ok)
{
	unsigned int i = head, steps = 0;

	for (;;) {
		const struct vring_desc *d;
		int err;

		if (i >= num || ++steps > num)
			return -EIO;
		d = &table[i];
		if (d->flags & VRING_DESC_F_INDIRECT) {
			const struct vring_desc *inner;

			if (!indirect_ok || d->len % sizeof(*d) ||
			    d->flags & VRING_DESC_F_NEXT)
				return -EIO;
			inner = lklum_guest(d->addr, d->len);
			if (!inner)
				return -EIO;
			return walk_chain(chain, inner, d->len / sizeof(*d), 0,
					  0);
		}
		err = add_segment(chain, d);
		if (err)
			return err;
		if (!(d->flags & VRING_DESC_F_NEXT))
			return 0;
		i = d->next;
	}
}

int lklum_vq_peek(struct lklum_virtqueue *vq)
{
	if (!vq->ready || load_acquire(&vq->avail->idx) == vq->last_avail)
		return -1;
	return vq->avail->ring[vq->last_avail % vq->num];
}

int lklum_vq_pop(struct lklum_virtio_dev *vdev, struct lklum_virtqueue *vq,
		 struct lklum_chain *chain)
{
	int err;

	if (!vq->ready || load_acquire(&vq->avail->idx) == vq->last_avail)
		return 0;

	chain->head = vq->avail->ring[vq->last_avail % vq->num];
	chain->nr_out = chain->nr_in = 0;
	vq->last_avail++;
	err = walk_chain(chain, vq->desc, vq->num, chain->head, 1);
	if (err) {
		lklum_vq_push(vdev, vq, chain->head, 0);
		return err;
	}
	return 1;
}

void lklum_vq_push(struct lklum_virtio_dev *vdev, struct lklum_virtqueue *vq,
		   uint16_t head, uint32_t len)
{
	static const char one = 1;
	struct vring_used_elem *e;
	uint16_t idx;

	pthread_mutex_lock(&vq->used_lock);
	idx = vq->used->idx;
	e = &vq->used->ring[idx % vq->num];
	e->id = head;
	e->len = len;
	store_release(&vq->used->idx, (uint16_t)(idx + 1));
	pthread_mutex_unlock(&vq->used_lock);

	__atomic_or_fetch(&vdev->interrupt_status, VIRTIO_MMIO_INT_VRING,
			  __ATOMIC_SEQ_CST);
	/* A full pipe holds an interrupt already. */
	while (write(vdev->irq_write_fd, &one, 1) < 0 && errno == EINTR)
		;
}

/* --- registers ------------------------------------------------------------- */

static void reset_device(struct lklum_virtio_dev *vdev)
{
	unsigned int i;

	vdev->status = 0;
	vdev->driver_features = 0;
	vdev->features_sel = vdev->driver_features_sel = vdev->queue_sel = 0;
	__atomic_store_n(&vdev->interrupt_status, 0, __ATOMIC_SEQ_CST);
	for (i = 0; i < vdev->nr_queues; i++)
		reset_queue(&vdev->vq[i]);
}

static struct lklum_virtqueue *selected(struct lklum_virtio_dev *vdev)
{
	return vdev->queue_sel < vdev->nr_queues ? &vdev->vq[vdev->queue_sel]
						 : NULL;
}

static unsigned long mmio_read(void *priv, unsigned int offset, int size)
{
	struct lklum_virtio_dev *vdev = priv;
	struct lklum_virtqueue *vq = selected(vdev);
	uint64_t value = 0;

	if (offset >= VIRTIO_MMIO_CONFIG) {
		vdev->type->config_read(vdev, offset - VIRTIO_MMIO_CONFIG,
					&value, size);
		return value;
	}
	switch (offset) {
	case VIRTIO_MMIO_MAGIC_VALUE:
		return MMIO_MAGIC;
	case VIRTIO_MMIO_VERSION:
		return MMIO_VERSION;
	case VIRTIO_MMIO_DEVICE_ID:
		return vdev->type->device_id;
	case VIRTIO_MMIO_VENDOR_ID:
		return VENDOR_ID;
	case VIRTIO_MMIO_DEVICE_FEATURES:
		return vdev->features_sel > 1 ? 0 :
		       (uint32_t)(vdev->features >> (32 * vdev->features_sel));
	case VIRTIO_MMIO_QUEUE_NUM_MAX:
		return vq ? LKLUM_VQ_SIZE : 0;
	case VIRTIO_MMIO_QUEUE_READY:
		return vq ? vq->ready : 0;
	case VIRTIO_MMIO_INTERRUPT_STATUS:
		return __atomic_load_n(&vdev->interrupt_status,
				       __ATOMIC_SEQ_CST);
	case VIRTIO_MMIO_STATUS:
		return vdev->status;
	case VIRTIO_MMIO_SHM_LEN_LOW:
	case VIRTIO_MMIO_SHM_LEN_HIGH:
		return 0xffffffffu;	/* no shared memory regions */
	case VIRTIO_MMIO_CONFIG_GENERATION:
		return 0;		/* the config never changes */
	}
	return 0;
}

static void set_low(uint64_t *v, uint32_t low)
{
	*v = (*v & ~0xffffffffull) | low;
}

static void set_high(uint64_t *v, uint32_t high)
{
	*v = (*v & 0xffffffffull) | (uint64_t)high << 32;
}

static void mmio_write(void *priv, unsigned int offset, int size,
		       unsigned long value)
{
	struct lklum_virtio_dev *vdev = priv;
	struct lklum_virtqueue *vq = selected(vdev);

	(void)size;
	switch (offset) {
	case VIRTIO_MMIO_DEVICE_FEATURES_SEL:
		vdev->features_sel = value;
		break;
	case VIRTIO_MMIO_DRIVER_FEATURES_SEL:
		vdev->driver_features_sel = value;
		break;
	case VIRTIO_MMIO_DRIVER_FEATURES:
		if (vdev->driver_features_sel == 0)
			set_low(&vdev->driver_features, value);
		else if (vdev->driver_features_sel == 1)
			set_high(&vdev->driver_features, value);
		vdev->driver_features &= vdev->features;
		break;
	case VIRTIO_MMIO_QUEUE_SEL:
		vdev->queue_sel = value;
		break;
	case VIRTIO_MMIO_QUEUE_NUM:
		if (vq && value && value <= LKLUM_VQ_SIZE &&
		    !(value & (value - 1)))
			vq->num = value;
		break;
	case VIRTIO_MMIO_QUEUE_READY:
		if (vq) {
			vq->ready = value && !enable_queue(vq);
		}
		break;
	case VIRTIO_MMIO_QUEUE_NOTIFY:
		if (value < vdev->nr_queues && vdev->vq[value].ready)
			vdev->type->notify(vdev, value);
		break;
	case VIRTIO_MMIO_INTERRUPT_ACK:
		__atomic_and_fetch(&vdev->interrupt_status, ~(uint32_t)value,
				   __ATOMIC_SEQ_CST);
		break;
	case VIRTIO_MMIO_STATUS:
		if (value == 0)
			reset_device(vdev);
		else
			vdev->status = value;
		break;
	case VIRTIO_MMIO_QUEUE_DESC_LOW:
		if (vq)
			set_low(&vq->desc_addr, value);
		break;
	case VIRTIO_MMIO_QUEUE_DESC_HIGH:
		if (vq)
			set_high(&vq->desc_addr, value);
		break;
	case VIRTIO_MMIO_QUEUE_AVAIL_LOW:
		if (vq)
			set_low(&vq->avail_addr, value);
		break;
	case VIRTIO_MMIO_QUEUE_AVAIL_HIGH:
		if (vq)
			set_high(&vq->avail_addr, value);
		break;
	case VIRTIO_MMIO_QUEUE_USED_LOW:
		if (vq)
			set_low(&vq->used_addr, value);
		break;
	case VIRTIO_MMIO_QUEUE_USED_HIGH:
		if (vq)
			set_high(&vq->used_addr, value);
		break;
	}
}

int lklum_virtio_init(struct lklum_virtio_dev *vdev,
		      const struct lklum_virtio_type *type, uint64_t features,
		      unsigned int nr_queues)
{
	unsigned int i;
	int pipe[2];

	memset(vdev, 0, sizeof(*vdev));
	vdev->type = type;
	vdev->features = features | 1ull << VIRTIO_F_VERSION_1;
	vdev->nr_queues = nr_queues;
	vdev->id = -1;
	for (i = 0; i < nr_queues; i++)
		pthread_mutex_init(&vdev->vq[i].used_lock, NULL);
	reset_device(vdev);

	vdev->dev.read = mmio_read;
	vdev->dev.write = mmio_write;
	vdev->dev.priv = vdev;
	/*
	 * A pipe, not an eventfd: the kernel learns of IRQ fds through SIGIO,
	 * which eventfds do not send.
	 */
	if (pipe2(pipe, O_CLOEXEC | O_NONBLOCK) < 0)
		return -errno;
	vdev->dev.irq_fd = pipe[0];
	vdev->irq_write_fd = pipe[1];
	return 0;
}

void lklum_virtio_destroy(struct lklum_virtio_dev *vdev)
{
	unsigned int i;

	if (vdev->dev.irq_fd >= 0) {
		close(vdev->dev.irq_fd);
		close(vdev->irq_write_fd);
	}
	for (i = 0; i < vdev->nr_queues; i++)
		pthread_mutex_destroy(&vdev->vq[i].used_lock);
}
