// SPDX-License-Identifier: MIT
/* libfuse3 by dlopen(): see fuse-loader.h. */

#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>

#include "fuse-loader.h"

/* The first of @names the library has. */
static void *find(void *lib, const char *const *names)
{
	for (; *names; names++) {
		void *f = dlsym(lib, *names);

		/*
		 * libfuse 3.17 and later export the 3.0 ABI of some functions
		 * (fuse_session_new) only under that symbol version.
		 */
		if (!f)
			f = dlvsym(lib, *names, "FUSE_3.0");
		if (f)
			return f;
	}
	return NULL;
}

#define NAMES(...) ((const char *const[]){ __VA_ARGS__, NULL })

int fuse_api_load(struct fuse_api *api, char *why, size_t size)
{
	/* 3.17 raised the library's version to 4, with the same 3.x API. */
	static const char *const libraries[] = { "libfuse3.so.3", "libfuse3.so.4",
						 "libfuse3.so" };
	void *lib = NULL;
	unsigned int i;

	for (i = 0; !lib && i < sizeof(libraries) / sizeof(libraries[0]); i++)
		lib = dlopen(libraries[i], RTLD_NOW | RTLD_LOCAL);
	if (!lib) {
		snprintf(why, size, "libfuse3 is not installed (%s); on "
			 "Debian/Ubuntu: sudo apt-get install fuse3", dlerror());
		return -1;
	}

#define LOAD(field, ...)                                                   \
	do {                                                               \
		*(void **)&api->field = find(lib, NAMES(__VA_ARGS__));     \
		if (!api->field) {                                         \
			snprintf(why, size, "libfuse3 has no %s: too old "  \
				 "(lklfuse needs 3.2 or later)", #field);  \
			return -1;                                         \
		}                                                          \
	} while (0)

	LOAD(session_new, "fuse_session_new");
	LOAD(session_mount, "fuse_session_mount");
	LOAD(session_unmount, "fuse_session_unmount");
	LOAD(session_destroy, "fuse_session_destroy");
	LOAD(session_fd, "fuse_session_fd");
	LOAD(session_receive_buf, "fuse_session_receive_buf");
	LOAD(session_process_buf, "fuse_session_process_buf");
	LOAD(session_exited, "fuse_session_exited");
	LOAD(session_exit, "fuse_session_exit");
	LOAD(set_signal_handlers, "fuse_set_signal_handlers");
	LOAD(remove_signal_handlers, "fuse_remove_signal_handlers");
	LOAD(req_userdata, "fuse_req_userdata");
	LOAD(req_ctx, "fuse_req_ctx");
	LOAD(reply_err, "fuse_reply_err");
	LOAD(reply_none, "fuse_reply_none");
	LOAD(reply_entry, "fuse_reply_entry");
	LOAD(reply_create, "fuse_reply_create");
	LOAD(reply_attr, "fuse_reply_attr");
	LOAD(reply_readlink, "fuse_reply_readlink");
	LOAD(reply_open, "fuse_reply_open");
	LOAD(reply_write, "fuse_reply_write");
	LOAD(reply_buf, "fuse_reply_buf");
	LOAD(reply_statfs, "fuse_reply_statfs");
	LOAD(reply_xattr, "fuse_reply_xattr");
	LOAD(reply_lseek, "fuse_reply_lseek");
	LOAD(reply_ioctl, "fuse_reply_ioctl");
	LOAD(add_direntry, "fuse_add_direntry");
	LOAD(add_direntry_plus, "fuse_add_direntry_plus");
	LOAD(notify_inval_entry, "fuse_lowlevel_notify_inval_entry");
	LOAD(notify_inval_inode, "fuse_lowlevel_notify_inval_inode");
	return 0;
}
