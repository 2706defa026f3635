/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * A virtio-mmio device (virtio 1.x, split virtqueues) modelled in the host
 * part of the kernel process: its registers, its virtqueues, its
 * interrupt.  A device type (blk.c) supplies the config space and what to
 * do with the requests on its queues.
 *
 * Register reads and writes come from the kernel (kernel context, one at a
 * time).  Requests can be finished from any thread: lklum_vq_push() is
 * thread-safe and raises the interrupt.
 */

#ifndef LKLUM_VIRTIO_H
#define LKLUM_VIRTIO_H

#include <pthread.h>
#include <stdint.h>
#include <sys/uio.h>

#include <linux/virtio_ring.h>

#include "host.h"

#define LKLUM_VQ_SIZE 256
#define LKLUM_VQ_MAX 4

struct lklum_virtqueue {
	uint16_t num;
	uint32_t ready;
	uint64_t desc_addr, avail_addr, used_addr;
	struct vring_desc *desc;
	struct vring_avail *avail;
	struct vring_used *used;
	uint16_t last_avail;		/* the next available entry to take */
	pthread_mutex_t used_lock;	/* completions may come from any thread */
};

/* One request: a descriptor chain, mapped into this process. */
struct lklum_chain {
	uint16_t head;
	unsigned int nr_out, nr_in;	/* device-readable, then -writable */
	struct iovec iov[LKLUM_VQ_SIZE + 2];
};

struct lklum_virtio_dev;

struct lklum_virtio_type {
	uint32_t device_id;
	/* Reads the device's config space. */
	void (*config_read)(struct lklum_virtio_dev *vdev, unsigned int offset,
			    void *buf, unsigned int size);
	/* The driver put requests on queue @q. */
	void (*notify)(struct lklum_virtio_dev *vdev, unsigned int q);
};

struct lklum_virtio_dev {
	struct um_lib_device dev;	/* what the kernel sees */
	const struct lklum_virtio_type *type;
	uint64_t features;		/* offered */
	uint64_t driver_features;
	uint32_t features_sel, driver_features_sel, queue_sel;
	uint32_t status;
	uint32_t interrupt_status;
	unsigned int nr_queues;
	struct lklum_virtqueue vq[LKLUM_VQ_MAX];
	int irq_write_fd;		/* written to interrupt */
	int id;				/* the kernel's, once added */
};

/* Sets @vdev up (and its interrupt eventfd); returns 0 or -errno. */
int lklum_virtio_init(struct lklum_virtio_dev *vdev,
		      const struct lklum_virtio_type *type, uint64_t features,
		      unsigned int nr_queues);
void lklum_virtio_destroy(struct lklum_virtio_dev *vdev);

/* The head of the next request of @vq, or -1 when there is none. */
int lklum_vq_peek(struct lklum_virtqueue *vq);
/*
 * Takes the next request of @vq into @chain; returns 1, 0 when there is
 * none, or -EIO for a chain that points outside the kernel's memory (it is
 * completed empty).
 */
int lklum_vq_pop(struct lklum_virtio_dev *vdev, struct lklum_virtqueue *vq,
		 struct lklum_chain *chain);
/* Completes request @head, @len bytes written; raises the interrupt. */
void lklum_vq_push(struct lklum_virtio_dev *vdev, struct lklum_virtqueue *vq,
		   uint16_t head, uint32_t len);

/* Where the kernel's physical range [addr, addr + len) is, or NULL. */
void *lklum_guest(uint64_t addr, uint64_t len);

#endif
