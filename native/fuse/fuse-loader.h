/* SPDX-License-Identifier: MIT */
/*
 * libfuse3, loaded at run time: lkl-um works on machines without libfuse,
 * and only lklfuse needs it.  The types come from libfuse's headers (the
 * 3.1 API, which every libfuse 3 has); the functions from dlopen().
 */

#ifndef LKLUM_FUSE_LOADER_H
#define LKLUM_FUSE_LOADER_H

#define FUSE_USE_VERSION 31
#include <fuse3/fuse_lowlevel.h>

struct fuse_api {
	struct fuse_session *(*session_new)(struct fuse_args *args,
					    const struct fuse_lowlevel_ops *op,
					    size_t op_size, void *userdata);
	int (*session_mount)(struct fuse_session *se, const char *mountpoint);
	void (*session_unmount)(struct fuse_session *se);
	void (*session_destroy)(struct fuse_session *se);
	int (*session_fd)(struct fuse_session *se);
	int (*session_receive_buf)(struct fuse_session *se,
				   struct fuse_buf *buf);
	void (*session_process_buf)(struct fuse_session *se,
				    const struct fuse_buf *buf);
	int (*session_exited)(struct fuse_session *se);
	void (*session_exit)(struct fuse_session *se);
	int (*set_signal_handlers)(struct fuse_session *se);
	void (*remove_signal_handlers)(struct fuse_session *se);
	void *(*req_userdata)(fuse_req_t req);
	const struct fuse_ctx *(*req_ctx)(fuse_req_t req);
	int (*reply_err)(fuse_req_t req, int err);
	void (*reply_none)(fuse_req_t req);
	int (*reply_entry)(fuse_req_t req, const struct fuse_entry_param *e);
	int (*reply_create)(fuse_req_t req, const struct fuse_entry_param *e,
			    const struct fuse_file_info *fi);
	int (*reply_attr)(fuse_req_t req, const struct stat *attr,
			  double attr_timeout);
	int (*reply_readlink)(fuse_req_t req, const char *link);
	int (*reply_open)(fuse_req_t req, const struct fuse_file_info *fi);
	int (*reply_write)(fuse_req_t req, size_t count);
	int (*reply_buf)(fuse_req_t req, const char *buf, size_t size);
	int (*reply_statfs)(fuse_req_t req, const struct statvfs *stbuf);
	int (*reply_xattr)(fuse_req_t req, size_t count);
	int (*reply_lseek)(fuse_req_t req, off_t off);
	int (*reply_ioctl)(fuse_req_t req, int result, const void *buf,
			   size_t size);
	size_t (*add_direntry)(fuse_req_t req, char *buf, size_t bufsize,
			       const char *name, const struct stat *stbuf,
			       off_t off);
	size_t (*add_direntry_plus)(fuse_req_t req, char *buf, size_t bufsize,
				    const char *name,
				    const struct fuse_entry_param *e, off_t off);
	int (*notify_inval_entry)(struct fuse_session *se, fuse_ino_t parent,
				  const char *name, size_t namelen);
	int (*notify_inval_inode)(struct fuse_session *se, fuse_ino_t ino,
				  off_t off, off_t len);
};

/*
 * Loads libfuse3 into @api.  Returns 0, or -1 with a message for the user
 * (what to install) in @why.
 */
int fuse_api_load(struct fuse_api *api, char *why, size_t size);

#endif
