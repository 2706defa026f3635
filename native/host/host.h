/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * The host part of the kernel process: what its files share.
 *
 * Everything here is linked into one executable with the kernel, so every
 * global name starts with lklum_ to stay clear of the kernel's.
 */

#ifndef LKLUM_HOST_H
#define LKLUM_HOST_H

#include <lkl_um/protocol.h>
#include <um_library.h>

/* A disk given on the command line: --disk=FD[,ro] */
struct lklum_disk_arg {
	int fd;
	int readonly;
};

/* channel.c */
const struct um_lib_host_ops *
lklum_channel_init(struct lkl_um_window *w, int window_fd, int channel_fd,
		   unsigned int poll_us, const struct lklum_disk_arg *disks,
		   unsigned int nr_disks);
void lklum_channel_halted(void);

#endif
