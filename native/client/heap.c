// SPDX-License-Identifier: MIT
/*
 * The window heap: a binary buddy allocator.
 *
 * The heap is split into 64-byte units.  block[unit] describes the block
 * starting at that unit: its order plus BLOCK_FREE or BLOCK_USED, or 0 when
 * no block starts there.  A free block holds its free-list links (unit
 * numbers, NONE at the ends) in its first eight bytes.
 */

#include <errno.h>
#include <stdlib.h>

#include "heap.h"

#define BLOCK_ORDER 0x3f
#define BLOCK_FREE 0x40
#define BLOCK_USED 0x80
#define NONE UINT32_MAX

struct free_links {
	uint32_t prev, next;
};

static struct free_links *links(struct lklum_heap *h, uint32_t unit)
{
	return (struct free_links *)(h->base +
				     ((size_t)unit << LKLUM_HEAP_MIN_ORDER));
}

static void push_free(struct lklum_heap *h, uint32_t unit, unsigned int order)
{
	uint32_t first = h->free_list[order];

	links(h, unit)->prev = NONE;
	links(h, unit)->next = first;
	if (first != NONE)
		links(h, first)->prev = unit;
	h->free_list[order] = unit;
	h->block[unit] = order | BLOCK_FREE;
}

static void unlink_free(struct lklum_heap *h, uint32_t unit, unsigned int order)
{
	struct free_links *l = links(h, unit);

	if (l->prev != NONE)
		links(h, l->prev)->next = l->next;
	else
		h->free_list[order] = l->next;
	if (l->next != NONE)
		links(h, l->next)->prev = l->prev;
	h->block[unit] = 0;
}

int lklum_heap_init(struct lklum_heap *h, void *base, size_t size)
{
	unsigned int order = LKLUM_HEAP_MIN_ORDER, i;

	while (((size_t)1 << order) < size)
		order++;
	if (((size_t)1 << order) != size || order >= LKLUM_HEAP_MAX_ORDERS)
		return -EINVAL;

	h->base = base;
	h->order = order;
	h->used = 0;
	h->block = calloc(size >> LKLUM_HEAP_MIN_ORDER, 1);
	if (!h->block)
		return -ENOMEM;
	for (i = 0; i < LKLUM_HEAP_MAX_ORDERS; i++)
		h->free_list[i] = NONE;
	push_free(h, 0, order);
	return 0;
}

void lklum_heap_destroy(struct lklum_heap *h)
{
	free(h->block);
	h->block = NULL;
}

void *lklum_heap_alloc(struct lklum_heap *h, size_t size)
{
	unsigned int want = LKLUM_HEAP_MIN_ORDER, order;
	uint32_t unit;

	while (((size_t)1 << want) < size) {
		if (++want > h->order)
			return NULL;
	}
	for (order = want; order <= h->order; order++)
		if (h->free_list[order] != NONE)
			break;
	if (order > h->order)
		return NULL;

	unit = h->free_list[order];
	unlink_free(h, unit, order);
	/* Split down to the size wanted, freeing the upper halves. */
	while (order > want) {
		order--;
		push_free(h, unit + (1u << (order - LKLUM_HEAP_MIN_ORDER)),
			  order);
	}
	h->block[unit] = want | BLOCK_USED;
	h->used += (size_t)1 << want;
	return h->base + ((size_t)unit << LKLUM_HEAP_MIN_ORDER);
}

int lklum_heap_free(struct lklum_heap *h, void *p)
{
	size_t offset = (char *)p - h->base;
	unsigned int order;
	uint32_t unit;

	if ((char *)p < h->base || offset >= ((size_t)1 << h->order) ||
	    offset & ((1u << LKLUM_HEAP_MIN_ORDER) - 1))
		return -EINVAL;
	unit = offset >> LKLUM_HEAP_MIN_ORDER;
	if (!(h->block[unit] & BLOCK_USED))
		return -EINVAL;

	order = h->block[unit] & BLOCK_ORDER;
	h->used -= (size_t)1 << order;
	/* Merge with the buddy while it is free and whole. */
	while (order < h->order) {
		uint32_t buddy = unit ^ (1u << (order - LKLUM_HEAP_MIN_ORDER));

		if (h->block[buddy] != (order | BLOCK_FREE))
			break;
		unlink_free(h, buddy, order);
		h->block[unit] = 0;
		unit &= ~(1u << (order - LKLUM_HEAP_MIN_ORDER));
		order++;
	}
	push_free(h, unit, order);
	return 0;
}
