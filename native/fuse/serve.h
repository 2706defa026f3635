/* SPDX-License-Identifier: MIT */
/*
 * Serving a FUSE session: libfuse's multi-threaded loop, with a thread that
 * keeps polling the device for a while after each request.
 */
#ifndef LKLUM_FUSE_SERVE_H
#define LKLUM_FUSE_SERVE_H

#include "fuse-loader.h"

/**
 * fuse_serve() - serve @se until it is unmounted or exited by a signal
 * @api: libfuse, as fuse_api_load() found it
 * @se: a mounted session
 * @threads: how many requests may be served at once
 * @disk_read: aligned reads of this many bytes or more cross to the image
 *	on the host, and mostly wait for its disk: their thread hands over
 *	listening at once; 0 if none do
 * @request_done: called after each request, on the thread that served it
 *	(to let go of what it held); may be NULL
 *
 * Return: 0 when unmounted or stopped by a signal, else a negative errno.
 */
int fuse_serve(const struct fuse_api *api, struct fuse_session *se,
	       unsigned int threads, unsigned int disk_read,
	       void (*request_done)(void));

#endif
