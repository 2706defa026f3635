/* SPDX-License-Identifier: MIT */
/*
 * A buddy allocator for the window's heap: the buffers system calls point
 * at.  Its bookkeeping lives in client memory, except the free-list links,
 * which live in the free blocks themselves.  Not thread-safe: the caller
 * locks.
 */

#ifndef LKLUM_HEAP_H
#define LKLUM_HEAP_H

#include <stddef.h>
#include <stdint.h>

#define LKLUM_HEAP_MIN_ORDER 6			/* 64-byte blocks */
#define LKLUM_HEAP_MAX_ORDERS 40

struct lklum_heap {
	char *base;
	unsigned int order;			/* the heap is 1 << order bytes */
	uint8_t *block;				/* per 64-byte unit, see heap.c */
	uint32_t free_list[LKLUM_HEAP_MAX_ORDERS];
	size_t used;
};

/* @size must be a power of two, at least 64 bytes; returns -ENOMEM or 0. */
int lklum_heap_init(struct lklum_heap *h, void *base, size_t size);
void lklum_heap_destroy(struct lklum_heap *h);
void *lklum_heap_alloc(struct lklum_heap *h, size_t size);
/* Returns -EINVAL for a pointer that is not an allocated block. */
int lklum_heap_free(struct lklum_heap *h, void *p);

#endif
