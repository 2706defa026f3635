/* SPDX-License-Identifier: GPL-2.0-only */
/* virtio-blk disks: image files served to the kernel (blk.c). */

#ifndef LKLUM_BLK_H
#define LKLUM_BLK_H

/*
 * Plugs in image @fd as a disk, which the kernel probes (partitions too)
 * before this returns.  Process context (a host call, or booted()).  The
 * disk owns @fd from then on, and @hold_fd (or -1): a file kept open as
 * long as the disk is plugged in, for the locks on it.  Returns the device
 * id, or -errno; on failure the caller keeps both.
 */
int lklum_blk_add(int fd, int readonly, const char *serial, int hold_fd);

/* Unplugs disk @id and closes its image.  Returns 0 or -errno. */
int lklum_blk_remove(int id);

#endif
