// SPDX-License-Identifier: MIT
/*
 * lklfuse-server: a filesystem image mounted with FUSE, served by the Linux
 * kernel's own driver in an lkl-um kernel process.  FUSE requests go from
 * libfuse's threads straight to the kernel as system calls: no JavaScript
 * per request.  The lklfuse command (packages/lklfuse) starts it, and
 * daemonizes it once it says it is ready.
 *
 *   lklfuse-server --image FILE --type TYPE [--partition N] [--readonly]
 *                  [--opts OPTIONS] [--mb MB] [--lock-fd FD] [--uid N]
 *                  [--gid N] [--ready-fd FD] [--daemon] [--writeback-cache]
 *                  [--debug] [--fuse-opts OPTIONS] MOUNTPOINT
 *
 * The shape is passthrough_ll's (libfuse/example): an inode is an O_PATH fd
 * in the kernel, every operation an *at() call relative to it; an open file
 * is a kernel fd.  Buffers live in the window: a read replies straight from
 * it.  Exit status: 0 clean unmount, 2 could not start.
 */

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/fs.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <syslog.h>
#include <unistd.h>

#include <lkl_um.h>
#include <lkl_um/host_cache.h>

#include "fuse-loader.h"
#include "serve.h"

#define TIMEOUT 30.0		/* we are the image's only user */
#define MAX_IO (1 << 20)	/* max_read, max_write */
#define HANDLE_ROOM 512	/* two file handles, each with a mount id */
#define SCRATCH (MAX_IO + 3 * PATH_MAX + 4096 + HANDLE_ROOM)
#define ROOT "/image"
#define HOST_READ_AHEAD_KB "4096"	/* on our mount, as root */
#define DISK_READ_AHEAD_KB "16384"	/* the kernel's, on the image */
#define IMAGE_LOCK_WAIT_MS 15000
#define SERVE_THREADS 16	/* requests served at once */
#define DIRECT_READ_MIN (512 * 1024)	/* reads around the kernel's cache */

static struct fuse_api fuse;
static struct lkl_um *k;
static unsigned int disk_read;	/* reads that go to the disk, or 0 */

static struct {
	const char *image, *type, *opts, *mountpoint, *fuse_opts;
	const char *log;		/* the kernel's messages go here */
	char mountpoint_abs[PATH_MAX];	/* as /proc/self/mountinfo shows it */
	int partition, readonly, mb, ready_fd, lock_fd, writeback, debug;
	int daemon, single_thread, max_read;
	long uid, gid, mount_flags;	/* MS_* for the kernel's mount */
} o = { .mb = 256, .ready_fd = -1, .lock_fd = -1, .uid = -1, .gid = -1,
	.max_read = MAX_IO };

/* --- system calls ----------------------------------------------------------- */

#define SYS(nr, ...) lkl_um_call(k, nr, __VA_ARGS__)

/*
 * Each FUSE thread has a scratch area in the window: three paths, a stat
 * buffer, room for the largest read or write, and two file handles' (their
 * own: an inode is reopened by its handle in the middle of a request, and
 * its handle is compared with a file's while a reply is being built in
 * data, as readdirplus does).
 */
struct scratch {
	char *path[3];
	void *stat;
	char *data;
	void *handle;		/* a handle to open an inode by */
	void *found_handle;	/* a file's, to compare with it */
};

/* Where name_to_handle_at() puts the mount id, after a handle at @h. */
static int *mount_id_after(void *h)
{
	return (int *)((char *)h + HANDLE_ROOM / 2 - sizeof(int));
}

static pthread_key_t scratch_key;

static void free_scratch(void *p)
{
	lkl_um_free(k, p);
}

static struct scratch scratch(void)
{
	char *base = pthread_getspecific(scratch_key);

	if (!base) {
		base = lkl_um_alloc(k, SCRATCH);
		if (!base) {
			fprintf(stderr, "lklfuse: the window is full\n");
			abort();
		}
		pthread_setspecific(scratch_key, base);
	}
	return (struct scratch){
		.path = { base, base + PATH_MAX, base + 2 * PATH_MAX },
		.stat = base + 3 * PATH_MAX,
		.data = base + 3 * PATH_MAX + 4096,
		.handle = base + 3 * PATH_MAX + 4096 + MAX_IO,
		.found_handle = base + 3 * PATH_MAX + 4096 + MAX_IO +
				HANDLE_ROOM / 2,
	};
}

/* Copies @s into @w (a window buffer of PATH_MAX) and returns its address. */
static long wpath(char *w, const char *s)
{
	snprintf(w, PATH_MAX, "%s", s);
	return (long)w;
}

/* The kernel's procfs name for its fd: the inode itself, links included. */
static long fdpath(char *w, int fd)
{
	snprintf(w, PATH_MAX, "/proc/self/fd/%d", fd);
	return (long)w;
}

/* --- inodes ------------------------------------------------------------------ */

/*
 * An inode the host knows has an O_PATH fd in the kernel, which pins the
 * kernel's inode and dentry: 2-3 KiB of its memory each, which a tree of a
 * hundred thousand files would exhaust.  So only the most recently used
 * ones keep their fd open (MAX_OPEN_PER_MB per MiB of kernel memory); the
 * others keep a file handle (name_to_handle_at), and open_by_handle_at
 * opens them again when a request needs them.  An fd a request took stays
 * open until the request is done (release_held()); an inode whose
 * filesystem gives no handles keeps its fd.  So does a deleted one, which
 * its handle would no longer find, while the host knows it: a process may
 * still be in the directory, or have the file open (keep_if_deleted()).
 *
 * Where handles do not last (FAT's find only inodes the kernel has cached,
 * exfat gives none), the least used inodes are forgotten instead: the host
 * is asked to drop their names (forget_by_name()), and forgets each inode
 * nothing else holds, which closes its fd.  A later use looks it up again.
 */
#define MAX_OPEN_PER_MB 64
#define MAX_HELD 8		/* fd_of() calls in one request, at most */

struct inode {
	struct inode *hash_next;
	struct inode *lru_prev, *lru_next;	/* closable, least recent first */
	int fd;			/* O_PATH, in the kernel; -1 while closed */
	int users;		/* requests holding fd */
	bool keep_open;		/* no handle to open it again by, or deleted */
	bool forgotten;		/* by the host, while in use here */
	bool unhashed;		/* deleted: its number is a new file's now */
	enum { ACL_UNKNOWN, ACL_NONE, ACL_DEFAULT } default_acl;	/* a directory's, as last seen */
	unsigned int xattr_changes;	/* made through us: a default ACL seen before may be gone */
	struct file_handle *handle;
	struct inode *parent;	/* and name: where the host looked it up */
	char *name;		/* (by_name filesystems only), or NULL */
	struct inode *forget_next;	/* queued for forget_by_name() */
	bool asked_to_forget;	/* by forget_by_name(): kept open meanwhile */
	dev_t dev;
	ino_t ino;
	uint64_t nlookup;
};

static struct inode root;
static pthread_mutex_t inodes_lock = PTHREAD_MUTEX_INITIALIZER;
static bool dont_mask;	/* the host leaves the caller's umask to us */
static bool writeback_cache;	/* the host's, as agreed at INIT */
static struct fuse_session *session;

/*
 * The inodes the host knows, by (dev, ino): a lookup of a name whose inode
 * is known already must give the same one.  Chained, and doubled when it
 * holds twice as many inodes as buckets: a tree of a million files stays
 * as fast to look up in as one of ten.
 */
static struct inode **buckets;
static size_t nr_buckets, nr_inodes;

static struct inode **bucket_of(dev_t dev, ino_t ino)
{
	uint64_t h = ((uint64_t)ino ^ ((uint64_t)dev << 40)) *
		     0x9e3779b97f4a7c15ull;

	return &buckets[(h >> 24) & (nr_buckets - 1)];
}

/* Under inodes_lock. */
static struct inode *find_inode(dev_t dev, ino_t ino)
{
	struct inode *i = nr_buckets ? *bucket_of(dev, ino) : NULL;

	while (i && (i->ino != ino || i->dev != dev))
		i = i->hash_next;
	return i;
}

/* Under inodes_lock.  Returns -ENOMEM, the table unchanged. */
static int add_inode(struct inode *i)
{
	struct inode **b;

	if (nr_inodes >= 2 * nr_buckets) {
		size_t old = nr_buckets, n;
		struct inode **was = buckets, *next;

		buckets = calloc(old ? old * 2 : 1024, sizeof(*buckets));
		if (!buckets) {
			buckets = was;
			return -ENOMEM;
		}
		nr_buckets = old ? old * 2 : 1024;
		for (n = 0; n < old; n++)
			for (struct inode *j = was[n]; j; j = next) {
				next = j->hash_next;
				b = bucket_of(j->dev, j->ino);
				j->hash_next = *b;
				*b = j;
			}
		free(was);
	}
	b = bucket_of(i->dev, i->ino);
	i->hash_next = *b;
	*b = i;
	nr_inodes++;
	return 0;
}

/* Under inodes_lock. */
static void remove_inode(struct inode *i)
{
	struct inode **p = bucket_of(i->dev, i->ino);

	while (*p != i)
		p = &(*p)->hash_next;
	*p = i->hash_next;
	nr_inodes--;
}

static struct inode *inode_of(fuse_ino_t ino)
{
	return ino == FUSE_ROOT_ID ? &root : (struct inode *)(uintptr_t)ino;
}

static struct inode lru = { .lru_prev = &lru, .lru_next = &lru };
static int mount_fd = -1;	/* the root, for open_by_handle_at: not O_PATH, which it refuses */
static size_t nr_open;		/* inodes with an fd, root aside */
static bool closed_any;		/* some inode's fd has been closed */
static bool by_name;		/* inodes are forgotten, not closed: no lasting handles */
/* Queued for forget_by_name(), least recently used first. */
static struct inode *forget_first, **forget_last = &forget_first;
static pthread_cond_t forget_queued = PTHREAD_COND_INITIALIZER;
static bool forget_stop;
static __thread struct inode *held[MAX_HELD];
static __thread int nr_held;
static __thread int fd_error;	/* why fd_of() failed in this request, or 0 */

/* Under inodes_lock. */
static void lru_remove(struct inode *i)
{
	if (!i->lru_next)
		return;
	i->lru_prev->lru_next = i->lru_next;
	i->lru_next->lru_prev = i->lru_prev;
	i->lru_prev = i->lru_next = NULL;
}

/* Under inodes_lock. */
static void lru_add(struct inode *i)
{
	i->lru_prev = lru.lru_prev;
	i->lru_next = &lru;
	lru.lru_prev->lru_next = i;
	lru.lru_prev = i;
}

/*
 * The inode's O_PATH fd, opened again by its handle if it was closed; held
 * until the request is done.  -1 if it cannot be, which the call it is
 * given to refuses (EBADF); the request's error is then fd_of()'s own
 * (reply_error()).
 */
static int fd_of(fuse_ino_t ino)
{
	struct inode *i = inode_of(ino);
	long fd = -1;
	int n;

	if (i == &root)
		return root.fd;
	for (n = 0; n < nr_held; n++)
		if (held[n] == i)
			return i->fd;	/* held already by this request */
	pthread_mutex_lock(&inodes_lock);
	while (i->fd < 0) {
		struct scratch s = scratch();

		memcpy(s.handle, i->handle, sizeof(*i->handle) + i->handle->handle_bytes);
		pthread_mutex_unlock(&inodes_lock);
		fd = SYS(SYS_open_by_handle_at, mount_fd, (long)s.handle,
			 O_PATH | O_CLOEXEC);
		if (fd < 0) {
			fd_error = (int)-fd;
			return -1;
		}
		pthread_mutex_lock(&inodes_lock);
		if (i->fd < 0) {
			i->fd = (int)fd;
			nr_open++;
			fd = -1;
		}
	}
	i->users++;
	lru_remove(i);
	pthread_mutex_unlock(&inodes_lock);
	if (fd >= 0)
		SYS(SYS_close, fd);	/* another request opened it first */
	/* More than a request takes: then it stays open (a leak, not a crash). */
	if (nr_held < MAX_HELD)
		held[nr_held++] = i;
	return i->fd;
}

/*
 * Under inodes_lock: lets go of a use of @i.  True when @i is to be freed
 * (the host forgot it meanwhile): by free_inode(), outside the lock.
 */
static bool put_inode(struct inode *i)
{
	if (--i->users)
		return false;
	if (i->forgotten)
		return true;
	if (!i->keep_open && i->fd >= 0 && !i->lru_next)
		lru_add(i);
	return false;
}

/* An inode out of the table and the LRU: closes its fd and frees it. */
static void free_inode(struct inode *i)
{
	struct inode *parent = i->parent;
	bool gone;

	if (i->fd >= 0)
		SYS(SYS_close, i->fd);
	free(i->handle);
	free(i->name);
	free(i);
	if (parent && parent != &root) {
		pthread_mutex_lock(&inodes_lock);
		gone = put_inode(parent);
		pthread_mutex_unlock(&inodes_lock);
		if (gone)
			free_inode(parent);
	}
}

/* lstat of @name in directory fd @dir ("" for the fd itself). */
static long stat_at(int dir, const char *name, struct stat *st)
{
	struct scratch s = scratch();
	long ret = SYS(SYS_newfstatat, dir, wpath(s.path[0], name),
		       (long)s.stat, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW);

	if (ret >= 0)
		memcpy(st, s.stat, sizeof(*st));
	return ret;
}

/* Whether the file @fd has open has no name left. */
static bool deleted(int fd)
{
	struct stat st;

	return stat_at(fd, "", &st) >= 0 && !st.st_nlink;
}

/*
 * Takes a file handle for @i while its fd is open: false when its
 * filesystem gives none (then it keeps its fd).
 */
static bool take_handle(struct inode *i, int fd)
{
	_Static_assert(sizeof(struct file_handle) + MAX_HANDLE_SZ + sizeof(int) <=
		       HANDLE_ROOM / 2, "HANDLE_ROOM holds two handles and mount ids");
	struct scratch s = scratch();
	struct file_handle *h = s.handle;

	/*
	 * FAT's handles find an inode only while the kernel has it cached
	 * (its inode numbers are made up as it reads): never closed there.
	 */
	static bool no_handles;	/* the filesystem gives none (exfat) */
	long ret;

	if (no_handles || mount_fd < 0 || !strcmp(o.type, "vfat") ||
	    !strcmp(o.type, "msdos"))
		return false;
	h->handle_bytes = MAX_HANDLE_SZ;
	ret = SYS(SYS_name_to_handle_at, fd, wpath(s.path[0], ""), (long)h,
		  (long)mount_id_after(h), AT_EMPTY_PATH);
	if (ret == -EOPNOTSUPP)
		no_handles = true;
	if (ret < 0)
		return false;
	i->handle = malloc(sizeof(*h) + h->handle_bytes);
	if (!i->handle)
		return false;
	memcpy(i->handle, h, sizeof(*h) + h->handle_bytes);
	return true;
}

/* Closes the least recently used fds while more than the kernel's memory allows are open. */
static void close_least_used(void)
{
	size_t max_open = (size_t)o.mb * MAX_OPEN_PER_MB;

	/* Read unlocked: most requests find nothing to do, and leave at once. */
	if (__atomic_load_n(&nr_open, __ATOMIC_RELAXED) <= max_open)
		return;
	pthread_mutex_lock(&inodes_lock);
	while (nr_open > max_open && lru.lru_next != &lru) {
		struct inode *i = lru.lru_next;
		int fd = i->fd;
		bool dead, kept;

		lru_remove(i);
		/* Outside the lock (system calls), in use meanwhile. */
		i->users++;
		pthread_mutex_unlock(&inodes_lock);
		dead = deleted(fd);
		kept = dead || (!i->handle && !take_handle(i, fd));
		pthread_mutex_lock(&inodes_lock);
		/* Forgotten meanwhile: out of the count already. */
		if (kept && !i->keep_open && !i->forgotten) {
			i->keep_open = true;
			nr_open--;	/* open for good: out of the count */
			if (!dead && i->name) {
				i->asked_to_forget = true;
				i->users++;	/* the queue's */
				i->forget_next = NULL;
				*forget_last = i;
				forget_last = &i->forget_next;
				pthread_cond_signal(&forget_queued);
			}
		}
		if (i->users > 1 || kept) {
			if (put_inode(i)) {
				pthread_mutex_unlock(&inodes_lock);
				free_inode(i);
				pthread_mutex_lock(&inodes_lock);
			}
			continue;	/* back in the LRU once let go */
		}
		i->users--;
		if (i->forgotten) {
			pthread_mutex_unlock(&inodes_lock);
			free_inode(i);
			pthread_mutex_lock(&inodes_lock);
			continue;
		}
		/* Taken by a request meanwhile: back in the LRU once let go. */
		if (i->users)
			continue;
		i->fd = -1;
		nr_open--;
		closed_any = true;
		pthread_mutex_unlock(&inodes_lock);
		SYS(SYS_close, fd);
		pthread_mutex_lock(&inodes_lock);
	}
	pthread_mutex_unlock(&inodes_lock);
}

/* The end of a request: the fds it held may be closed now. */
static void release_held(void)
{
	fd_error = 0;
	if (nr_held) {
		pthread_mutex_lock(&inodes_lock);
		while (nr_held) {
			struct inode *i = held[--nr_held];

			if (put_inode(i)) {
				pthread_mutex_unlock(&inodes_lock);
				free_inode(i);
				pthread_mutex_lock(&inodes_lock);
			}
		}
		pthread_mutex_unlock(&inodes_lock);
	}
	/* Also after requests on the root alone (mkdir /d1 ... /d100000). */
	close_least_used();
}

/* What the host sees: uid= and gid= show everything as the mounter's. */
static void present(struct stat *st)
{
	if (o.uid >= 0)
		st->st_uid = o.uid;
	if (o.gid >= 0)
		st->st_gid = o.gid;
}

/* Whether @fd's file has @handle: the same file, not one that took its number. */
static bool has_handle(long fd, const struct file_handle *handle,
		       struct scratch *s)
{
	struct file_handle *h = s->found_handle;

	h->handle_bytes = MAX_HANDLE_SZ;
	return SYS(SYS_name_to_handle_at, fd, wpath(s->path[1], ""), (long)h,
		   (long)mount_id_after(h), AT_EMPTY_PATH) >= 0 &&
	       h->handle_bytes == handle->handle_bytes &&
	       h->handle_type == handle->handle_type &&
	       !memcmp(h->f_handle, handle->f_handle, h->handle_bytes);
}

/*
 * Under inodes_lock: @i, found by the number of the file just opened as
 * *@fd, has its fd closed.  It is that file (then *@fd becomes its fd,
 * and -1 here), or a deleted one whose number a new file has taken (then
 * it leaves the table, and the new file's inode is returned if another
 * request made it meanwhile, else NULL: to be made).  Their handles tell.
 */
static struct inode *reopened_or_new(struct inode *i, long *fd,
				     const struct stat *st, struct scratch *s)
{
	bool same, usable;

	i->users++;	/* kept meanwhile */
	memcpy(s->handle, i->handle, sizeof(*i->handle) + i->handle->handle_bytes);
	pthread_mutex_unlock(&inodes_lock);
	same = has_handle(*fd, s->handle, s);
	pthread_mutex_lock(&inodes_lock);
	if (same && i->fd < 0 && !i->forgotten) {
		i->fd = (int)*fd;
		nr_open++;
		*fd = -1;
	} else if (!same && !i->unhashed && !i->forgotten) {
		remove_inode(i);
		i->unhashed = true;
	}
	/* Forgotten by the host meanwhile: out of the table, a new one made. */
	usable = same && !i->forgotten;
	if (put_inode(i)) {
		pthread_mutex_unlock(&inodes_lock);
		free_inode(i);
		pthread_mutex_lock(&inodes_lock);
	}
	return usable ? i : find_inode(st->st_dev, st->st_ino);
}

/* Looks @name up in @parent, taking a reference on its inode. */
static int lookup(fuse_ino_t parent, const char *name,
		  struct fuse_entry_param *e)
{
	struct scratch s = scratch();
	struct inode *i;
	long fd, ret;

	memset(e, 0, sizeof(*e));
	e->attr_timeout = e->entry_timeout = TIMEOUT;
	fd = SYS(SYS_openat, fd_of(parent), wpath(s.path[0], name),
		 O_PATH | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return (int)fd;
	ret = stat_at((int)fd, "", &e->attr);
	if (ret < 0) {
		SYS(SYS_close, fd);
		return (int)ret;
	}

	pthread_mutex_lock(&inodes_lock);
	i = find_inode(e->attr.st_dev, e->attr.st_ino);
	if (i && i->fd < 0)
		i = reopened_or_new(i, &fd, &e->attr, &s);
	if (i) {
		i->nlookup++;
		if (i->asked_to_forget && i->keep_open) {
			/* The host kept it (in use), and looks it up again: closable again. */
			i->asked_to_forget = false;
			i->keep_open = false;
			nr_open++;
			if (!i->users && !i->lru_next)
				lru_add(i);
		}
		pthread_mutex_unlock(&inodes_lock);
		if (fd >= 0)
			SYS(SYS_close, fd);
	} else {
		i = malloc(sizeof(*i));
		if (i)
			*i = (struct inode){ .fd = (int)fd,
					     .dev = e->attr.st_dev,
					     .ino = e->attr.st_ino,
					     .nlookup = 1 };
		if (i && by_name) {
			i->name = strdup(name);
			if (i->name) {
				i->parent = inode_of(parent);
				if (i->parent != &root)
					i->parent->users++;	/* held by this request */
			}
		}
		if (!i || add_inode(i)) {
			if (i && i->parent && i->parent != &root)
				i->parent->users--;	/* still held by this request */
			pthread_mutex_unlock(&inodes_lock);
			SYS(SYS_close, fd);
			if (i)
				free(i->name);
			free(i);
			return -ENOMEM;
		}
		nr_open++;
		lru_add(i);
		pthread_mutex_unlock(&inodes_lock);
	}
	e->ino = (uintptr_t)i;
	present(&e->attr);
	return 0;
}

static void forget_one(fuse_ino_t ino, uint64_t n)
{
	struct inode *i = inode_of(ino);

	if (i == &root)
		return;
	pthread_mutex_lock(&inodes_lock);
	if (n > i->nlookup)
		n = i->nlookup;
	i->nlookup -= n;
	if (!i->nlookup) {
		if (!i->unhashed)
			remove_inode(i);
		lru_remove(i);
		if (i->fd >= 0 && !i->keep_open)
			nr_open--;
		/* In use here still: freed when let go. */
		i->forgotten = i->users > 0;
		pthread_mutex_unlock(&inodes_lock);
		if (!i->forgotten)
			free_inode(i);
		return;
	}
	pthread_mutex_unlock(&inodes_lock);
}

/*
 * Before @name in @dir loses its name (unlink, rmdir, a rename over it):
 * if the host knows its inode and that inode's fd is closed, opens it
 * again.  Deleted, it could not be opened by its handle any more, and the
 * host may still use it: as a process's working directory, or for an
 * open file's xattrs.  Open, it is kept open once deleted: closing it
 * finds it so (close_least_used()).
 */
static void keep_if_deleted(int dir, const char *name)
{
	int was_error = fd_error;
	struct inode *i;
	struct stat st;
	bool gone;

	if (!__atomic_load_n(&closed_any, __ATOMIC_RELAXED) ||
	    stat_at(dir, name, &st) < 0)
		return;
	pthread_mutex_lock(&inodes_lock);
	i = find_inode(st.st_dev, st.st_ino);
	if (!i || i->fd >= 0 || i->forgotten) {
		pthread_mutex_unlock(&inodes_lock);
		return;
	}
	i->users++;
	pthread_mutex_unlock(&inodes_lock);
	if (fd_of((uintptr_t)i) < 0)
		fd_error = was_error;	/* another file took its number: not ours */
	pthread_mutex_lock(&inodes_lock);
	gone = put_inode(i);
	pthread_mutex_unlock(&inodes_lock);
	if (gone)
		free_inode(i);
}

/* A thread that takes no signals: libfuse's handlers are the main thread's. */
static int start_thread(pthread_t *thread, void *(*fn)(void *), void *arg)
{
	sigset_t all, old;
	int err;

	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	err = pthread_create(thread, NULL, fn, arg);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return err;
}

/*
 * Asks the host to drop the names of the inodes close_least_used() queued,
 * each as it was looked up: one that nothing else holds is then forgotten,
 * which closes its fd.  Its own thread: the host may have to wait for a
 * request in the same directory before it drops the name.
 */
static void *forget_by_name(void *se)
{
	pthread_mutex_lock(&inodes_lock);
	for (;;) {
		char name[1024];	/* a FAT name is up to 255 UTF-16 units */
		fuse_ino_t parent;
		struct inode *i;
		size_t len;
		bool gone;

		while (!forget_first && !forget_stop)
			pthread_cond_wait(&forget_queued, &inodes_lock);
		if (forget_stop)
			break;
		i = forget_first;
		forget_first = i->forget_next;
		if (!forget_first)
			forget_last = &forget_first;
		/* Copied: a rename may change them meanwhile (renamed()). */
		parent = i->parent == &root ? FUSE_ROOT_ID : (uintptr_t)i->parent;
		len = strlen(i->name);
		if (len < sizeof(name))
			memcpy(name, i->name, len + 1);
		pthread_mutex_unlock(&inodes_lock);
		if (len < sizeof(name))
			fuse.notify_inval_entry(se, parent, name, len);
		pthread_mutex_lock(&inodes_lock);
		gone = put_inode(i);
		if (gone) {
			pthread_mutex_unlock(&inodes_lock);
			free_inode(i);
			pthread_mutex_lock(&inodes_lock);
		}
	}
	pthread_mutex_unlock(&inodes_lock);
	return NULL;
}

/*
 * Stops forget_by_name() once serving has ended.  It may be waiting for
 * a directory's lock that the host holds while a request in it waits in
 * the device, which nobody reads now: so serve what comes until the
 * thread is done.  Otherwise both would wait for ever, and the process
 * could not even be killed.
 */
static void stop_forgetting(struct fuse_session *se, pthread_t thread)
{
	struct pollfd device = { .fd = fuse.session_fd(se), .events = POLLIN };
	struct fuse_buf buf = { 0 };

	pthread_mutex_lock(&inodes_lock);
	forget_stop = true;
	pthread_cond_signal(&forget_queued);
	pthread_mutex_unlock(&inodes_lock);
	while (pthread_tryjoin_np(thread, NULL) == EBUSY) {
		if (poll(&device, 1, 10) <= 0 ||
		    fuse.session_receive_buf(se, &buf) <= 0)
			continue;
		fuse.session_process_buf(se, &buf);
		release_held();
	}
	free(buf.mem);
}

/* --- operations --------------------------------------------------------------- */

/*
 * Whether the kernel process has ended, after a call failed with
 * ESHUTDOWN.  Its socket closes as it exits, a moment before its parent
 * can collect its status; so wait that moment (a second at most).
 */
static int kernel_ended(void)
{
	int tries;

	for (tries = 0; tries < 1000; tries++) {
		if (lkl_um_exit_status(k) != -1)
			return 1;
		usleep(1000);
	}
	return 0;
}

/* The error of a request; the reason an inode could not be opened, if it could not. */
static void reply_error(fuse_req_t req, int err)
{
	/*
	 * The kernel is gone (killed): nothing can be served any more, so
	 * stop, which unmounts and tells why, rather than fail every call.
	 */
	if (err == ESHUTDOWN && kernel_ended())
		fuse.session_exit(session);
	fuse.reply_err(req, err && fd_error ? fd_error : err);
}

static void reply_entry_or_err(fuse_req_t req, fuse_ino_t parent,
			       const char *name, long ret)
{
	struct fuse_entry_param e;

	if (ret < 0) {
		reply_error(req, (int)-ret);
		return;
	}
	ret = lookup(parent, name, &e);
	if (ret < 0)
		reply_error(req, (int)-ret);
	else
		fuse.reply_entry(req, &e);
}

static void op_init(void *data, struct fuse_conn_info *conn)
{
	(void)data;
	conn->max_write = MAX_IO;
	conn->max_read = (unsigned int)o.max_read;	/* as mounted: else no mount */
	if (conn->capable & FUSE_CAP_READDIRPLUS)
		conn->want |= FUSE_CAP_READDIRPLUS;
	if (o.writeback && conn->capable & FUSE_CAP_WRITEBACK_CACHE) {
		conn->want |= FUSE_CAP_WRITEBACK_CACHE;
		writeback_cache = true;
	}
	if (conn->capable & FUSE_CAP_DONT_MASK) {
		conn->want |= FUSE_CAP_DONT_MASK;
		dont_mask = true;
	}
	/* Locks stay with the host kernel: nobody else uses the image. */
	conn->want &= ~(FUSE_CAP_POSIX_LOCKS | FUSE_CAP_FLOCK_LOCKS);
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fuse_entry_param e;
	int err = lookup(parent, name, &e);

	if (err == -ENOENT) {
		/* A negative entry, cached like the others. */
		memset(&e, 0, sizeof(e));
		e.entry_timeout = TIMEOUT;
		fuse.reply_entry(req, &e);
	} else if (err) {
		reply_error(req, -err);
	} else {
		fuse.reply_entry(req, &e);
	}
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	forget_one(ino, nlookup);
	fuse.reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count,
			    struct fuse_forget_data *forgets)
{
	size_t i;

	for (i = 0; i < count; i++)
		forget_one(forgets[i].ino, forgets[i].nlookup);
	fuse.reply_none(req);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	struct stat st;
	long ret = stat_at(fd_of(ino), "", &st);

	(void)fi;
	if (ret < 0) {
		reply_error(req, (int)-ret);
		return;
	}
	present(&st);
	fuse.reply_attr(req, &st, TIMEOUT);
}

/*
 * An open file.  Large reads go to a second open of it with O_DIRECT, made
 * at the first such read: the disk's workers then read straight into the
 * window, and the kernel's page cache keeps no second copy of what the
 * host's FUSE cache holds.  File systems without direct I/O keep the first.
 */
struct open_file {
	long fd;
	long direct_fd;		/* DIRECT_NOT_YET, DIRECT_NONE or an fd */
	bool whole_writes;	/* opened with O_DIRECT: see op_write() */
};

#define DIRECT_NOT_YET (-1L)
#define DIRECT_NONE (-2L)

static struct open_file *file_of(const struct fuse_file_info *fi)
{
	return (struct open_file *)(uintptr_t)fi->fh;
}

static long file_fd(const struct fuse_file_info *fi)
{
	return file_of(fi)->fd;
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr,
		       int valid, struct fuse_file_info *fi)
{
	struct scratch s = scratch();
	int fd = fd_of(ino);
	long ret = 0;

	if (valid & FUSE_SET_ATTR_MODE)
		ret = fi ? SYS(SYS_fchmod, file_fd(fi), attr->st_mode) :
			   SYS(SYS_chmod, fdpath(s.path[0], fd), attr->st_mode);
	if (!ret && valid & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID))
		ret = SYS(SYS_fchownat, fd, wpath(s.path[0], ""),
			  valid & FUSE_SET_ATTR_UID ? (long)attr->st_uid : -1,
			  valid & FUSE_SET_ATTR_GID ? (long)attr->st_gid : -1,
			  AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW);
	if (!ret && valid & FUSE_SET_ATTR_SIZE)
		ret = fi ? SYS(SYS_ftruncate, file_fd(fi), attr->st_size) :
			   SYS(SYS_truncate, fdpath(s.path[0], fd),
			       attr->st_size);
	if (!ret && valid & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME)) {
		struct timespec *ts = s.stat;

		ts[0] = (struct timespec){ .tv_nsec = UTIME_OMIT };
		ts[1] = ts[0];
		if (valid & FUSE_SET_ATTR_ATIME_NOW)
			ts[0].tv_nsec = UTIME_NOW;
		else if (valid & FUSE_SET_ATTR_ATIME)
			ts[0] = attr->st_atim;
		if (valid & FUSE_SET_ATTR_MTIME_NOW)
			ts[1].tv_nsec = UTIME_NOW;
		else if (valid & FUSE_SET_ATTR_MTIME)
			ts[1] = attr->st_mtim;
		ret = fi ? SYS(SYS_utimensat, file_fd(fi), 0, (long)ts, 0) :
			   SYS(SYS_utimensat, AT_FDCWD, fdpath(s.path[0], fd),
			       (long)ts, 0);
		/* A symlink's times: through its O_PATH fd, not followed. */
		if (ret == -ELOOP || (ret == -ENOENT && !fi))
			ret = SYS(SYS_utimensat, fd, wpath(s.path[0], ""),
				  (long)ts, AT_EMPTY_PATH);
	}
	if (ret < 0) {
		reply_error(req, (int)-ret);
		return;
	}
	op_getattr(req, ino, fi);
}

static void op_readlink(fuse_req_t req, fuse_ino_t ino)
{
	struct scratch s = scratch();
	long n = SYS(SYS_readlinkat, fd_of(ino), wpath(s.path[0], ""),
		     (long)s.data, PATH_MAX - 1);

	if (n < 0) {
		reply_error(req, (int)-n);
		return;
	}
	s.data[n] = 0;
	fuse.reply_readlink(req, s.data);
}

/*
 * New entries belong to whoever made them, as on any filesystem: the kernel
 * makes them with the caller's uid and gid (in a setgid directory, the
 * directory's group), in the same call, so no one ever sees them as root's.
 * The host has checked the caller's permissions, and taken a setgid bit the
 * caller may not give; file systems that keep no owners (vfat, exfat) show
 * their own.  Root's own calls need no change of ids.
 */
static long make_as_caller(fuse_req_t req, long nr, long a0, long a1, long a2,
			   long a3)
{
	const struct fuse_ctx *ctx = fuse.req_ctx(req);

	if (!ctx->uid && !ctx->gid)
		return SYS(nr, a0, a1, a2, a3);
	return lkl_um_call_as_owner(k, ctx->uid, ctx->gid, nr, a0, a1, a2, a3);
}

/*
 * The mode to make a file with.  The host leaves the caller's umask to us
 * (FUSE_CAP_DONT_MASK), so that a default ACL on the directory decides
 * instead where there is one, as on a local filesystem: the kernel inside
 * has umask 0 and applies the ACL itself.
 */
static mode_t creation_mode(fuse_req_t req, fuse_ino_t parent, mode_t mode)
{
	mode_t umask = dont_mask ? fuse.req_ctx(req)->umask : 0;
	struct inode *dir = inode_of(parent);

	if (!umask)
		return mode;
	/*
	 * Asked once: it changes only by an xattr call, through us.  An answer
	 * that such a call may have changed meanwhile is used, not kept.
	 */
	int acl = __atomic_load_n(&dir->default_acl, __ATOMIC_ACQUIRE);

	if (acl == ACL_UNKNOWN) {
		unsigned int changes = __atomic_load_n(&dir->xattr_changes,
							__ATOMIC_ACQUIRE);
		struct scratch s = scratch();

		acl = SYS(SYS_getxattr, fdpath(s.path[0], fd_of(parent)),
			  wpath(s.path[1], "system.posix_acl_default"), 0,
			  0) > 0 ? ACL_DEFAULT : ACL_NONE;
		if (__atomic_load_n(&dir->xattr_changes, __ATOMIC_ACQUIRE) ==
		    changes)
			__atomic_store_n(&dir->default_acl, acl, __ATOMIC_RELEASE);
	}
	return acl == ACL_DEFAULT ? mode : mode & ~umask;
}

static void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name,
		     mode_t mode, dev_t rdev)
{
	struct scratch s = scratch();
	long ret;

	mode = creation_mode(req, parent, mode);
	ret = make_as_caller(req, SYS_mknodat, fd_of(parent),
			     wpath(s.path[0], name), mode, rdev);
	reply_entry_or_err(req, parent, name, ret);
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name,
		     mode_t mode)
{
	struct scratch s = scratch();
	long ret;

	mode = creation_mode(req, parent, mode);
	ret = make_as_caller(req, SYS_mkdirat, fd_of(parent),
			     wpath(s.path[0], name), mode, 0);
	reply_entry_or_err(req, parent, name, ret);
}

static void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent,
		       const char *name)
{
	struct scratch s = scratch();
	long ret = make_as_caller(req, SYS_symlinkat, wpath(s.path[0], link),
				  fd_of(parent), wpath(s.path[1], name), 0);

	reply_entry_or_err(req, parent, name, ret);
}

static void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t parent,
		    const char *name)
{
	struct scratch s = scratch();
	long ret = SYS(SYS_linkat, AT_FDCWD, fdpath(s.path[0], fd_of(ino)),
		       fd_of(parent), wpath(s.path[1], name), AT_SYMLINK_FOLLOW);

	/* /proc/self/fd of a symlink's O_PATH fd is the link itself. */
	if (ret == -ENOENT || ret == -EXDEV || ret == -EPERM)
		ret = SYS(SYS_linkat, fd_of(ino), wpath(s.path[0], ""),
			  fd_of(parent), wpath(s.path[1], name), AT_EMPTY_PATH);
	reply_entry_or_err(req, parent, name, ret);
}

static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct scratch s = scratch();

	keep_if_deleted(fd_of(parent), name);
	reply_error(req, (int)-SYS(SYS_unlinkat, fd_of(parent),
				   wpath(s.path[0], name), 0));
}

static void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct scratch s = scratch();

	keep_if_deleted(fd_of(parent), name);
	reply_error(req, (int)-SYS(SYS_unlinkat, fd_of(parent),
			       wpath(s.path[0], name), AT_REMOVEDIR));
}

/*
 * After a rename where inodes keep their names (by_name): the inode now
 * at @name in @parent is known there from now on, for forget_by_name().
 */
static void renamed(fuse_ino_t parent, const char *name)
{
	struct inode *i, *was;
	bool gone = false;
	struct stat st;
	char *copy;

	if (stat_at(fd_of(parent), name, &st) < 0)
		return;
	copy = strdup(name);
	if (!copy)
		return;
	pthread_mutex_lock(&inodes_lock);
	i = find_inode(st.st_dev, st.st_ino);
	if (!i || !i->name) {
		pthread_mutex_unlock(&inodes_lock);
		free(copy);
		return;
	}
	was = i->parent;
	free(i->name);
	i->name = copy;
	i->parent = inode_of(parent);
	if (i->parent != &root)
		i->parent->users++;	/* held by this request */
	if (was != &root)
		gone = put_inode(was);
	pthread_mutex_unlock(&inodes_lock);
	if (gone)
		free_inode(was);
}

static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name,
		      fuse_ino_t newparent, const char *newname,
		      unsigned int flags)
{
	struct scratch s = scratch();
	long ret;

	if (!(flags & RENAME_EXCHANGE))
		keep_if_deleted(fd_of(newparent), newname);
	ret = SYS(SYS_renameat2, fd_of(parent), wpath(s.path[0], name),
		  fd_of(newparent), wpath(s.path[1], newname), flags);
	if (!ret && by_name) {
		renamed(newparent, newname);
		if (flags & RENAME_EXCHANGE)
			renamed(parent, name);
	}
	reply_error(req, (int)-ret);
}

/*
 * The flags the kernel opens a file with.  With a writeback cache the host
 * kernel may read what it was told to write.  O_APPEND and O_DIRECT stay on
 * the host's side.  The host works out where each append goes and sends
 * that offset, which an O_APPEND fd would ignore; and it writes a shared
 * mapping's pages back through the same file, at their own offsets.  FUSE
 * already keeps O_DIRECT I/O out of the host's page cache, and large reads
 * go around the kernel's (see struct open_file).
 */
static int open_flags(int flags)
{
	if (o.writeback && (flags & O_ACCMODE) == O_WRONLY)
		flags = (flags & ~O_ACCMODE) | O_RDWR;
	return (flags & ~(O_NOFOLLOW | O_APPEND | O_DIRECT)) | O_CLOEXEC;
}

/* Undoes the octal escapes (\040 for a space ...) of a /proc mount field. */
static void unescape_mount_field(char *field)
{
	char *to = field;

	for (; *field; field++, to++) {
		if (field[0] == '\\' && field[1] >= '0' && field[1] <= '3' &&
		    field[2] >= '0' && field[2] <= '7' &&
		    field[3] >= '0' && field[3] <= '7') {
			*to = (char)((field[1] - '0') << 6 | (field[2] - '0') << 3 |
				     (field[3] - '0'));
			field += 3;
		} else {
			*to = *field;
		}
	}
	*to = '\0';
}

/*
 * The host's read-ahead on our mount.  FUSE holds it to the host's default
 * (128 KiB), which leaves a sequential reader one request in flight at a
 * time, each waiting for its copies; as far as the kernel reads ahead on the
 * image keeps several in flight.  Only root may change it (sysfs): for
 * others it stays as it is.  The INIT reply narrows it, so this runs after.
 */
static void widen_host_read_ahead(void)
{
	unsigned int major, minor, found_major = 0, found_minor = 0;
	char *line = NULL, mnt[PATH_MAX], path[64];
	size_t size = 0;
	FILE *info;
	int fd;

	if (!o.mountpoint_abs[0])
		return;
	info = fopen("/proc/self/mountinfo", "re");
	if (!info)
		return;
	while (getline(&line, &size, info) > 0) {
		if (sscanf(line, "%*u %*u %u:%u %*s %4095s", &major, &minor,
			   mnt) != 3 || !strstr(line, " - fuse.lklfuse "))
			continue;
		unescape_mount_field(mnt);
		if (!strcmp(mnt, o.mountpoint_abs)) {
			found_major = major;	/* the last one is ours */
			found_minor = minor;
		}
	}
	free(line);
	fclose(info);
	if (!found_major && !found_minor)
		return;
	snprintf(path, sizeof(path), "/sys/class/bdi/%u:%u/read_ahead_kb",
		 found_major, found_minor);
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	/* On failure it stays as it was: slower reads, nothing wrong. */
	if (write(fd, HOST_READ_AHEAD_KB, strlen(HOST_READ_AHEAD_KB)) < 0)
		errno = 0;
	close(fd);
}

/* Makes @fd the open file of @fi: returns @fd, or -ENOMEM having closed it. */
static long set_open_file(struct fuse_file_info *fi, long fd)
{
	struct open_file *f = malloc(sizeof(*f));

	if (!f) {
		SYS(SYS_close, fd);
		return -ENOMEM;
	}
	f->fd = fd;
	f->direct_fd = DIRECT_NOT_YET;
	f->whole_writes = fi->flags & O_DIRECT;
	fi->fh = (uintptr_t)f;
	return fd;
}

/* @f's O_DIRECT fd, opened at the first call; DIRECT_NONE when it has none. */
static long direct_fd(struct open_file *f, fuse_ino_t ino, struct scratch *s)
{
	long fd = __atomic_load_n(&f->direct_fd, __ATOMIC_ACQUIRE);
	long want = DIRECT_NOT_YET;

	if (fd != DIRECT_NOT_YET)
		return fd;
	fd = SYS(SYS_openat, AT_FDCWD, fdpath(s->path[0], fd_of(ino)),
		 O_RDONLY | O_DIRECT | O_CLOEXEC, 0);
	if (fd < 0)
		fd = DIRECT_NONE;
	/* Another thread may have opened one meanwhile: keep the first. */
	if (!__atomic_compare_exchange_n(&f->direct_fd, &want, fd, false,
					 __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
		if (fd >= 0)
			SYS(SYS_close, fd);
		fd = want;
	}
	return fd;
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	static pthread_once_t read_ahead_once = PTHREAD_ONCE_INIT;
	struct scratch s = scratch();
	long fd = SYS(SYS_openat, AT_FDCWD, fdpath(s.path[0], fd_of(ino)),
		      open_flags(fi->flags), 0);

	/* An append-only file opens only with O_APPEND: it keeps it. */
	if (fd == -EPERM && (fi->flags & O_APPEND))
		fd = SYS(SYS_openat, AT_FDCWD, fdpath(s.path[0], fd_of(ino)),
			 open_flags(fi->flags) | O_APPEND, 0);
	pthread_once(&read_ahead_once, widen_host_read_ahead);
	if (fd >= 0)
		fd = set_open_file(fi, fd);
	if (fd < 0) {
		reply_error(req, (int)-fd);
		return;
	}
	fi->keep_cache = 1;	/* nobody else changes the file */
	fuse.reply_open(req, fi);
}

static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name,
		      mode_t mode, struct fuse_file_info *fi)
{
	struct scratch s = scratch();
	struct fuse_entry_param e;
	long fd, err;

	mode = creation_mode(req, parent, mode);
	fd = make_as_caller(req, SYS_openat, fd_of(parent),
			    wpath(s.path[0], name), open_flags(fi->flags) | O_CREAT,
			    mode);
	if (fd >= 0)
		fd = set_open_file(fi, fd);
	if (fd < 0) {
		reply_error(req, (int)-fd);
		return;
	}
	err = lookup(parent, name, &e);
	if (err) {
		SYS(SYS_close, file_fd(fi));
		free(file_of(fi));
		reply_error(req, (int)-err);
		return;
	}
	fuse.reply_create(req, &e, fi);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	struct scratch s = scratch();
	struct open_file *f = file_of(fi);
	long n = -EINVAL, fd;

	if (size > MAX_IO)
		size = MAX_IO;
	if (size >= DIRECT_READ_MIN && !((size | off) % 4096)) {
		fd = direct_fd(f, ino, &s);
		if (fd >= 0)
			n = SYS(SYS_pread64, fd, (long)s.data, size, off);
	}
	/* Small, unaligned, or failed (EINVAL: not here): the page cache. */
	if (n < 0)
		n = SYS(SYS_pread64, f->fd, (long)s.data, size, off);
	if (n < 0)
		reply_error(req, (int)-n);
	else
		fuse.reply_buf(req, s.data, n);	/* straight from the window */
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf,
		     size_t size, off_t off, struct fuse_file_info *fi)
{
	struct scratch s = scratch();
	struct open_file *f = file_of(fi);
	long n, more;

	(void)ino;
	if (size > MAX_IO)
		size = MAX_IO;
	memcpy(s.data, buf, size);
	n = SYS(SYS_pwrite64, f->fd, (long)s.data, size, off);
	/*
	 * The host's FUSE turns a short O_DIRECT write into EIO: its direct
	 * I/O goes out asynchronously, and has no short count to give back.
	 * So write on, and what stops it is the error to tell (EFBIG at the
	 * largest file, ENOSPC): the host truncates what it extended.
	 */
	while (f->whole_writes && n > 0 && (size_t)n < size) {
		more = SYS(SYS_pwrite64, f->fd, (long)(s.data + n), size - n,
			   off + n);
		if (more <= 0) {
			n = more < 0 ? more : n;
			break;
		}
		n += more;
	}
	if (n < 0)
		reply_error(req, (int)-n);
	else
		fuse.reply_write(req, n);
}

static void op_release(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	struct open_file *f = file_of(fi);

	(void)ino;
	SYS(SYS_close, f->fd);
	if (f->direct_fd >= 0)
		SYS(SYS_close, f->direct_fd);
	free(f);
	reply_error(req, 0);
}

static void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync,
		     struct fuse_file_info *fi)
{
	(void)ino;
	reply_error(req, (int)-SYS(datasync ? SYS_fdatasync : SYS_fsync,
				   file_fd(fi)));
}

/* --- directories ------------------------------------------------------------- */

struct linux_dirent64 {
	uint64_t d_ino;
	int64_t d_off;
	unsigned short d_reclen;
	unsigned char d_type;
	char d_name[];
};

struct dir {
	int fd;			/* the kernel's */
	off_t offset;		/* where the kernel's position is */
	char buf[32768];
	long len, pos;
	pthread_mutex_t lock;
};

static void op_opendir(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	struct scratch s = scratch();
	struct dir *d = calloc(1, sizeof(*d));
	long fd;

	if (!d) {
		reply_error(req, ENOMEM);
		return;
	}
	fd = SYS(SYS_openat, fd_of(ino), wpath(s.path[0], "."),
		 O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
	if (fd < 0) {
		free(d);
		reply_error(req, (int)-fd);
		return;
	}
	d->fd = (int)fd;
	pthread_mutex_init(&d->lock, NULL);
	fi->fh = (uintptr_t)d;
	fi->cache_readdir = 1;
	fuse.reply_open(req, fi);
}

static void readdir_common(fuse_req_t req, fuse_ino_t ino, size_t size,
			   off_t off, struct fuse_file_info *fi, int plus)
{
	struct dir *d = (struct dir *)(uintptr_t)fi->fh;
	struct scratch s = scratch();
	char *out = s.data;
	size_t used = 0;
	long err = 0;

	if (size > MAX_IO)
		size = MAX_IO;
	pthread_mutex_lock(&d->lock);
	if (off != d->offset) {
		err = SYS(SYS_lseek, d->fd, off, SEEK_SET);
		if (err >= 0)
			d->offset = off;
		d->len = d->pos = 0;
	}
	while (err >= 0) {
		struct linux_dirent64 *de;
		struct fuse_entry_param e;
		size_t n;

		if (d->pos >= d->len) {
			char *w = s.path[0];	/* PATH_MAX * 3 of window */

			err = SYS(SYS_getdents64, d->fd, (long)w, 3 * PATH_MAX);
			if (err <= 0)
				break;
			memcpy(d->buf, w, err);
			d->len = err;
			d->pos = 0;
		}
		de = (struct linux_dirent64 *)(d->buf + d->pos);
		memset(&e, 0, sizeof(e));
		e.attr.st_ino = de->d_ino;
		e.attr.st_mode = de->d_type << 12;
		if (plus) {
			int dots = !strcmp(de->d_name, ".") ||
				   !strcmp(de->d_name, "..");

			if (!dots) {
				err = lookup(ino, de->d_name, &e);
				/* Removed since it was listed: not there. */
				if (err == -ENOENT) {
					err = 0;
					d->pos += de->d_reclen;
					d->offset = de->d_off;
					continue;
				}
				if (err)
					break;
			}
			n = fuse.add_direntry_plus(req, out + used, size - used,
						   de->d_name, &e, de->d_off);
			if (n > size - used) {
				if (!dots)
					forget_one(e.ino, 1);
				break;
			}
		} else {
			n = fuse.add_direntry(req, out + used, size - used,
					      de->d_name, &e.attr, de->d_off);
			if (n > size - used)
				break;
		}
		used += n;
		d->pos += de->d_reclen;
		d->offset = de->d_off;
	}
	pthread_mutex_unlock(&d->lock);
	/* An error after some entries: give those; the next call sees it. */
	if (err < 0 && !used)
		reply_error(req, (int)-err);
	else
		fuse.reply_buf(req, out, used);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	readdir_common(req, ino, size, off, fi, 0);
}

static void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size,
			   off_t off, struct fuse_file_info *fi)
{
	readdir_common(req, ino, size, off, fi, 1);
}

static void op_releasedir(fuse_req_t req, fuse_ino_t ino,
			  struct fuse_file_info *fi)
{
	struct dir *d = (struct dir *)(uintptr_t)fi->fh;

	(void)ino;
	SYS(SYS_close, d->fd);
	pthread_mutex_destroy(&d->lock);
	free(d);
	reply_error(req, 0);
}

static void op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync,
			struct fuse_file_info *fi)
{
	struct dir *d = (struct dir *)(uintptr_t)fi->fh;

	(void)ino;
	reply_error(req, (int)-SYS(datasync ? SYS_fdatasync : SYS_fsync,
				   d->fd));
}

/* --- the rest ---------------------------------------------------------------- */

/*
 * The ioctls of chattr, lsattr and xfs_io (inode flags and the project
 * attributes) and of fstrim.  FUSE passes on only ioctls whose argument
 * size is in the command; these are such, and the file system's own.  The
 * host has checked that the caller owns the file, and may set the flags
 * it sets, before it sends us the flags.
 */
static void op_ioctl(fuse_req_t req, fuse_ino_t ino, int cmd, void *arg,
		     struct fuse_file_info *fi, unsigned int flags,
		     const void *in, size_t in_size, size_t out_size)
{
	struct scratch s = scratch();
	unsigned int ucmd = (unsigned int)cmd;
	size_t size = _IOC_SIZE(ucmd);
	long fd, ret;

	(void)ino;
	(void)arg;
	switch (ucmd) {
	case FS_IOC_GETFLAGS:
	case FS_IOC_SETFLAGS:
	case FS_IOC32_GETFLAGS:
	case FS_IOC32_SETFLAGS:
		size = sizeof(int);	/* what the kernel reads and writes */
		break;
	case FS_IOC_FSGETXATTR:
	case FS_IOC_FSSETXATTR:
	case FITRIM:
		break;
	default:
		reply_error(req, ENOTTY);
		return;
	}
	if ((_IOC_DIR(ucmd) & _IOC_WRITE) && in_size < size) {
		reply_error(req, EINVAL);
		return;
	}
	if ((_IOC_DIR(ucmd) & _IOC_READ) && out_size < size) {
		reply_error(req, EINVAL);
		return;
	}
	fd = flags & FUSE_IOCTL_DIR ?
		((struct dir *)(uintptr_t)fi->fh)->fd : file_fd(fi);
	if (_IOC_DIR(ucmd) & _IOC_WRITE)
		memcpy(s.data, in, size);
	ret = SYS(SYS_ioctl, fd, ucmd, (long)s.data);
	if (ret < 0)
		reply_error(req, (int)-ret);
	else
		fuse.reply_ioctl(req, (int)ret, s.data,
				 _IOC_DIR(ucmd) & _IOC_READ ? size : 0);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct scratch s = scratch();
	struct statfs *f = s.stat;
	struct statvfs v;
	long ret = SYS(SYS_fstatfs, fd_of(ino), (long)f);

	if (ret < 0) {
		reply_error(req, (int)-ret);
		return;
	}
	memset(&v, 0, sizeof(v));
	v.f_bsize = f->f_bsize;
	v.f_frsize = f->f_frsize ? f->f_frsize : f->f_bsize;
	v.f_blocks = f->f_blocks;
	v.f_bfree = f->f_bfree;
	v.f_bavail = f->f_bavail;
	v.f_files = f->f_files;
	v.f_ffree = f->f_ffree;
	v.f_favail = f->f_ffree;
	v.f_namemax = f->f_namelen;
	fuse.reply_statfs(req, &v);
}

/*
 * Extended attributes through the kernel's procfs name for the inode.  A
 * symlink's too: the procfs link of its O_PATH fd, followed, ends at the
 * symlink itself (not where it points), as lgetxattr() on its name would.
 */
static long xattr_call(long nr, fuse_ino_t ino, struct scratch *s, long a,
		       long b, long c, long d)
{
	struct inode *i = inode_of(ino);
	long ret = SYS(nr, fdpath(s->path[0], fd_of(ino)), a, b, c, d);

	if (nr == SYS_setxattr || nr == SYS_removexattr) {
		/* An ACL, maybe: asked again, and answers asked before dropped. */
		__atomic_fetch_add(&i->xattr_changes, 1, __ATOMIC_ACQ_REL);
		__atomic_store_n(&i->default_acl, ACL_UNKNOWN, __ATOMIC_RELEASE);
	}
	return ret;
}

/*
 * An access ACL sets the mode's group bits.  The host keeps a file's
 * attributes for TIMEOUT after an xattr call, and with a writeback cache
 * it does not even ask again for the change time: so it is told.
 */
static void acl_changed(fuse_ino_t ino, const char *name, long ret)
{
	if (!ret && writeback_cache &&
	    !strcmp(name, "system.posix_acl_access"))
		fuse.notify_inval_inode(session, ino, -1, 0);
}

static void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
			const char *value, size_t size, int flags)
{
	struct scratch s = scratch();
	long ret;

	if (size > MAX_IO) {
		reply_error(req, E2BIG);
		return;
	}
	memcpy(s.data, value, size);
	ret = xattr_call(SYS_setxattr, ino, &s, wpath(s.path[1], name),
			 (long)s.data, size, flags);
	acl_changed(ino, name, ret);
	reply_error(req, (int)-ret);
}

/* A size of 0 asks how big the value (or the list) is. */
static void reply_xattr_result(fuse_req_t req, long n, size_t size,
			       const char *data)
{
	if (n < 0)
		reply_error(req, (int)-n);
	else if (!size)
		fuse.reply_xattr(req, n);
	else
		fuse.reply_buf(req, data, n);
}

static void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
			size_t size)
{
	struct scratch s = scratch();
	long n;

	if (size > MAX_IO)
		size = MAX_IO;
	n = xattr_call(SYS_getxattr, ino, &s,
		       wpath(s.path[1], name), (long)s.data, size, 0);
	reply_xattr_result(req, n, size, s.data);
}

static void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	struct scratch s = scratch();
	long n;

	if (size > MAX_IO)
		size = MAX_IO;
	n = xattr_call(SYS_listxattr, ino, &s, (long)s.data,
		       size, 0, 0);
	reply_xattr_result(req, n, size, s.data);
}

static void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	struct scratch s = scratch();
	long ret = xattr_call(SYS_removexattr, ino, &s, wpath(s.path[1], name),
			      0, 0, 0);

	acl_changed(ino, name, ret);
	reply_error(req, (int)-ret);
}

static void op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode,
			 off_t offset, off_t length, struct fuse_file_info *fi)
{
	(void)ino;
	reply_error(req, (int)-SYS(SYS_fallocate, file_fd(fi), mode, offset,
				   length));
}

static void op_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence,
		     struct fuse_file_info *fi)
{
	long ret;

	(void)ino;
	/*
	 * With a writeback cache, what the host has not written back yet is
	 * data the kernel here cannot see, and the host asks without writing
	 * it first.  ENOSYS makes it answer itself from then on: all data, up
	 * to the size it knows.
	 */
	if (writeback_cache) {
		reply_error(req, ENOSYS);
		return;
	}
	ret = SYS(SYS_lseek, file_fd(fi), off, whence);
	/* An offset below -4095 is no errno (btrfs near 2^63 gives one). */
	if (ret < 0)
		reply_error(req, ret >= -4095 ? (int)-ret : EINVAL);
	else
		fuse.reply_lseek(req, ret);
}

static void op_copy_file_range(fuse_req_t req, fuse_ino_t ino_in,
			       off_t off_in, struct fuse_file_info *fi_in,
			       fuse_ino_t ino_out, off_t off_out,
			       struct fuse_file_info *fi_out, size_t len,
			       int flags)
{
	struct scratch s = scratch();
	int64_t *offs = s.stat;
	long n;

	(void)ino_in;
	(void)ino_out;
	offs[0] = off_in;
	offs[1] = off_out;
	n = SYS(SYS_copy_file_range, file_fd(fi_in), (long)&offs[0],
		file_fd(fi_out),
		(long)&offs[1], len, flags);
	if (n < 0)
		reply_error(req, (int)-n);
	else
		fuse.reply_write(req, n);
}

static const struct fuse_lowlevel_ops ops = {
	.init = op_init,
	.lookup = op_lookup,
	.forget = op_forget,
	.forget_multi = op_forget_multi,
	.getattr = op_getattr,
	.setattr = op_setattr,
	.readlink = op_readlink,
	.mknod = op_mknod,
	.mkdir = op_mkdir,
	.symlink = op_symlink,
	.link = op_link,
	.unlink = op_unlink,
	.rmdir = op_rmdir,
	.rename = op_rename,
	.open = op_open,
	.create = op_create,
	.read = op_read,
	.write = op_write,
	/*
	 * No flush: the kernel's block filesystems do nothing at close(2)
	 * but drop POSIX locks, which the host keeps here.  Without it the
	 * host stops asking, and a close costs no round trip.
	 */
	.release = op_release,
	.fsync = op_fsync,
	.opendir = op_opendir,
	.readdir = op_readdir,
	.readdirplus = op_readdirplus,
	.releasedir = op_releasedir,
	.fsyncdir = op_fsyncdir,
	.statfs = op_statfs,
	.setxattr = op_setxattr,
	.getxattr = op_getxattr,
	.listxattr = op_listxattr,
	.removexattr = op_removexattr,
	.fallocate = op_fallocate,
	.lseek = op_lseek,
	.copy_file_range = op_copy_file_range,
	.ioctl = op_ioctl,
};

/* --- setting up ---------------------------------------------------------------- */

static void show_console(bool last);

__attribute__((format(printf, 1, 2), noreturn))
static void die(const char *fmt, ...)
{
	va_list ap;

	fputs("lklfuse: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	if (k)
		lkl_um_close(k, 10000);
	show_console(true);
	exit(2);
}

/* File systems with a journal that a read-only mount may skip. */
static bool has_journal(const char *type)
{
	return !strcmp(type, "ext3") || !strcmp(type, "ext4") ||
	       !strcmp(type, "xfs");
}

static long kmount(const char *src, const char *dir, const char *type,
		   unsigned long flags, const char *data)
{
	struct scratch s = scratch();

	SYS(SYS_mkdir, wpath(s.path[0], dir), 0755);
	return SYS(SYS_mount, wpath(s.path[0], src), wpath(s.path[1], dir),
		   wpath(s.path[2], type), flags,
		   data ? (long)strcpy(s.data, data) : 0);
}

/* The first entry of kernel directory @dir starting with @prefix. */
static int first_entry(const char *dir, const char *prefix, char *name,
		       size_t size)
{
	struct scratch s = scratch();
	long fd = SYS(SYS_open, wpath(s.path[0], dir), O_RDONLY | O_DIRECTORY);
	long n, off;

	if (fd < 0)
		return (int)fd;
	name[0] = 0;
	while (!name[0] && (n = SYS(SYS_getdents64, fd, (long)s.data,
				    MAX_IO)) > 0) {
		for (off = 0; off < n && !name[0];) {
			struct linux_dirent64 *d = (void *)(s.data + off);

			if (!strncmp(d->d_name, prefix, strlen(prefix)))
				snprintf(name, size, "%.63s", d->d_name);
			off += d->d_reclen;
		}
	}
	SYS(SYS_close, fd);
	return name[0] ? 0 : -ENOENT;
}

/* Writes @text to the kernel's file @path (sysfs); errors are not fatal. */
static void write_kernel_file(const char *path, const char *text)
{
	struct scratch s = scratch();
	long fd = SYS(SYS_open, wpath(s.path[0], path), O_WRONLY);

	if (fd < 0)
		return;
	SYS(SYS_write, fd, (long)strcpy(s.data, text), (long)strlen(text));
	SYS(SYS_close, fd);
}

/* The number in the kernel's file @path (sysfs), or -1. */
static long read_kernel_number(const char *path)
{
	struct scratch s = scratch();
	long fd = SYS(SYS_open, wpath(s.path[0], path), O_RDONLY);
	long n;

	if (fd < 0)
		return -1;
	n = SYS(SYS_read, fd, (long)s.data, 31);
	SYS(SYS_close, fd);
	if (n <= 0)
		return -1;
	s.data[n] = '\0';
	return strtol(s.data, NULL, 10);
}

/* The partition table: MBR, GPT's header and entries; GPT's backup at the end. */
#define TABLE_HEAD (34 * 512)
#define TABLE_TAIL (33 * 512)

/*
 * Locks bytes of the image, as @lkl-um/core does for the other tools: an
 * open file description lock on the open file the kernel process got, so
 * it lasts as long as the kernel.  Waits a while for a kernel still
 * syncing after an unmount.
 */
static void lock_range(int fd, const char *name, short type, off_t start,
		       off_t len)
{
	struct flock lock = {
		.l_type = type,
		.l_whence = SEEK_SET,
		.l_start = start,
		.l_len = len,
	};
	int tries = IMAGE_LOCK_WAIT_MS / 50;

	while (fcntl(fd, F_OFD_SETLK, &lock) < 0) {
		if ((errno != EAGAIN && errno != EACCES) || !tries--)
			die("%s: in use by another lkl-um kernel (an lklfuse "
			    "mount, or one still syncing after its unmount)",
			    name);
		usleep(50000);
	}
}

/*
 * The file of the image when it is a loop device: a kernel using the file
 * and one using the device write the same bytes, so both lock them in the
 * file, as @lkl-um/core does.  The kernel process keeps it open with the
 * disk, and so the locks.
 */
static struct {
	int fd;
	off_t offset, size;	/* the device's bytes in it; size 0: to the end */
	char name[PATH_MAX + 64];
} loop_file = { .fd = -1 };

/* The first line of the host's file @path (sysfs), into @buf. */
static bool read_host_line(const char *path, char *buf, size_t size)
{
	FILE *f = fopen(path, "re");
	bool ok = f && fgets(buf, (int)size, f);

	if (f)
		fclose(f);
	if (ok)
		buf[strcspn(buf, "\n")] = '\0';
	return ok;
}

static off_t read_host_number(const char *path)
{
	char line[32];

	return read_host_line(path, line, sizeof(line)) ? strtoll(line, NULL, 10) :
							   0;
}

/* Opens the file of loop device (or partition of one) @fd, if it is one. */
static void open_loop_file(int fd)
{
	char dir[PATH_MAX], path[PATH_MAX + 32], file[PATH_MAX];
	off_t start = 0, size = 0, limit;
	struct stat st;

	if (fstat(fd, &st) || !S_ISBLK(st.st_mode))
		return;
	snprintf(path, sizeof(path), "/sys/dev/block/%u:%u",
		 major(st.st_rdev), minor(st.st_rdev));
	if (!realpath(path, dir))
		return;
	snprintf(path, sizeof(path), "%s/partition", dir);
	if (!access(path, F_OK)) {
		snprintf(path, sizeof(path), "%s/start", dir);
		start = read_host_number(path) * 512;
		snprintf(path, sizeof(path), "%s/size", dir);
		size = read_host_number(path) * 512;
		*strrchr(dir, '/') = '\0';	/* the loop device itself */
	}
	snprintf(path, sizeof(path), "%s/loop/backing_file", dir);
	if (!read_host_line(path, file, sizeof(file)))
		return;	/* not a loop device */
	snprintf(path, sizeof(path), "%s/loop/sizelimit", dir);
	limit = read_host_number(path);
	snprintf(path, sizeof(path), "%s/loop/offset", dir);
	loop_file.offset = read_host_number(path) + start;
	loop_file.size = size ? size : limit;
	/* One we may not open goes unlocked, as in @lkl-um/core. */
	loop_file.fd = open(file, (o.readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC);
	snprintf(loop_file.name, sizeof(loop_file.name),
		 "%s (a loop device of %s)", o.image, file);
}

/* Locks bytes of the image, and of its file if it is a loop device. */
static void lock_bytes(int fd, short type, off_t start, off_t len)
{
	lock_range(fd, o.image, type, start, len);
	if (loop_file.fd < 0)
		return;
	if (!len && loop_file.size)
		len = loop_file.size - start;	/* to the device's end */
	lock_range(loop_file.fd, loop_file.name, type, loop_file.offset + start,
		   len);
}

/* Whether the image has a GPT: its header's signature in the second sector (of 512 or 4096 bytes). */
static bool is_gpt(int fd)
{
	char signature[8];

	return (pread(fd, signature, 8, 512) == 8 &&
		!memcmp(signature, "EFI PART", 8)) ||
	       (pread(fd, signature, 8, 4096) == 8 &&
		!memcmp(signature, "EFI PART", 8));
}

/*
 * Whether the kernel process's disk reads what the host has not cached
 * around the host's cache, as native/host/blk.c does for a regular image
 * on a filesystem with O_DIRECT, where the host tells what it
 * has cached.  Our direct reads then each cross to the image and mostly
 * wait for the disk, and are best handed over at once; otherwise the
 * host's read-ahead serves them, and reads of one image at more offsets
 * at once defeat it.
 */
static bool disk_reads_around_host_cache(int fd)
{
	struct statx stx;
	char path[32];
	int direct;

	if (statx(fd, "", AT_EMPTY_PATH, STATX_TYPE | STATX_DIOALIGN, &stx) ||
	    !S_ISREG(stx.stx_mode) ||
	    (stx.stx_mask & STATX_DIOALIGN && !stx.stx_dio_offset_align) ||
	    !lkl_um_host_cache_known(fd))
		return false;
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	direct = open(path, O_RDONLY | O_DIRECT | O_CLOEXEC);
	if (direct < 0)
		return false;
	close(direct);
	return true;
}

/*
 * Before the kernel reads the disk: all of it, at once (never an upgrade:
 * two servers upgrading would wait for each other); or, for a partition,
 * the partition table, shared, held still while the kernel reads it.
 */
static void lock_before_reading(int fd)
{
	short type = o.readonly ? F_RDLCK : F_WRLCK;

	if (o.partition)
		lock_bytes(fd, F_RDLCK, 0, TABLE_HEAD);
	else
		lock_bytes(fd, type, 0, 0);
}

/*
 * Once the kernel has read the partition table: the partition we serve,
 * shared to read, exclusive to write, so that other kernels may serve the
 * others; and GPT's backup table (on an MBR disk those sectors are the
 * last partition's).
 */
static void lock_partition(int fd, const char *block)
{
	short type = o.readonly ? F_RDLCK : F_WRLCK;
	off_t start, len, size;
	char path[256];

	if (!o.partition)
		return;
	snprintf(path, sizeof(path), "/sys/block/%s/size", block);
	size = (off_t)read_kernel_number(path) * 512;
	if (is_gpt(fd) && size > TABLE_HEAD + TABLE_TAIL)
		lock_bytes(fd, F_RDLCK, size - TABLE_TAIL, TABLE_TAIL);
	snprintf(path, sizeof(path), "/sys/block/%s/%s%d/start", block, block,
		 o.partition);
	start = (off_t)read_kernel_number(path) * 512;
	snprintf(path, sizeof(path), "/sys/block/%s/%s%d/size", block, block,
		 o.partition);
	len = (off_t)read_kernel_number(path) * 512;
	if (start < 0 || len <= 0)
		die("%s: no partition %d", o.image, o.partition);
	lock_bytes(fd, type, start, len);
}

/*
 * Whether the filesystem is read-only: mounted so, or gone so after an
 * error (errors=remount-ro, an aborted journal).
 */
static bool root_read_only(void)
{
	struct scratch s = scratch();
	struct statfs *f = s.stat;

	return SYS(SYS_statfs, wpath(s.path[0], ROOT), (long)f) == 0 &&
	       (f->f_flags & ST_RDONLY);
}

/*
 * Whether the filesystem was mounted read-write, and so is synced at the
 * end (squashfs, say, mounts read-only when asked for read-write).
 */
static bool mounted_writable;

static void mount_image(void)
{
	struct lkl_um_disk disk = { .readonly = o.readonly };
	char path[256], virtio[64], block[64];
	unsigned long flags;
	long ret;
	int id;

	if (kmount("devtmpfs", "/dev", "devtmpfs", 0, NULL) < 0 ||
	    kmount("sysfs", "/sys", "sysfs", 0, NULL) < 0 ||
	    kmount("proc", "/proc", "proc", 0, NULL) < 0)
		die("cannot mount the kernel's own filesystems");
	SYS(SYS_umask, 0);
	/* Every message to the log, as LKL's lklfuse has them. */
	if (o.log)
		write_kernel_file("/proc/sys/kernel/printk", "8");

	disk.fd = open(o.image, o.readonly ? O_RDONLY : O_RDWR);
	if (disk.fd < 0)
		die("%s: %s", o.image, strerror(errno));
	open_loop_file(disk.fd);
	disk.hold_fd = loop_file.fd > 0 ? loop_file.fd : 0;
	lock_before_reading(disk.fd);
	id = lkl_um_add_disk(k, &disk);
	if (id < 0)
		die("%s: %s", o.image, lkl_um_last_error());

	snprintf(path, sizeof(path), "/sys/bus/platform/devices/virtio-mmio.%d",
		 id);
	if (first_entry(path, "virtio", virtio, sizeof(virtio)) < 0)
		die("%s: the kernel made no device for it", o.image);
	snprintf(path + strlen(path), sizeof(path) - strlen(path), "/%s/block",
		 virtio);
	if (first_entry(path, "vd", block, sizeof(block)) < 0)
		die("%s: the kernel made no block device for it", o.image);
	/* It has only read the partition table yet: locked before any more. */
	lock_partition(disk.fd, block);
	if (disk_reads_around_host_cache(disk.fd))
		disk_read = DIRECT_READ_MIN;
	close(disk.fd);	/* the kernel process has its own, and the lock */
	if (loop_file.fd >= 0)
		close(loop_file.fd);	/* likewise */
	/*
	 * Read ahead further than the host reads ahead on our mount: each
	 * disk request crosses to the host, and only many in flight keep
	 * the disk busy while the FUSE requests are copied (16 MiB reads
	 * a cold file 12% faster than 4 MiB here, at the disk's speed).
	 */
	snprintf(path, sizeof(path), "/sys/block/%s/queue/read_ahead_kb", block);
	write_kernel_file(path, DISK_READ_AHEAD_KB);

	if (o.partition)
		snprintf(path, sizeof(path), "/dev/%s%d", block, o.partition);
	else
		snprintf(path, sizeof(path), "/dev/%s", block);

	flags = (unsigned long)o.mount_flags | (o.readonly ? MS_RDONLY : 0);
	ret = kmount(path, ROOT, o.type, flags, o.opts);
	/*
	 * A journal to replay, which a read-only image cannot take: mounted
	 * as mount -o ro,norecovery would, without what the journal holds.
	 */
	if (ret == -EROFS && o.readonly && has_journal(o.type)) {
		char opts[PATH_MAX];

		snprintf(opts, sizeof(opts), "%s%snorecovery",
			 o.opts ? o.opts : "", o.opts ? "," : "");
		ret = kmount(path, ROOT, o.type, flags, opts);
	}
	/*
	 * A filesystem the kernel only reads (iso9660) refuses read-write:
	 * mounted read-only, as mount(8) does (squashfs does it itself).
	 */
	if (ret == -EACCES && !o.readonly)
		ret = kmount(path, ROOT, o.type, flags | MS_RDONLY, o.opts);
	if (ret < 0)
		die("%s: cannot mount as %s: %s", o.image, o.type,
		    strerror((int)-ret));
	mounted_writable = !root_read_only();
}

static void parse(int argc, char **argv)
{
	static const struct {
		const char *name;
		const char **text;
		int *number;
		long *lnumber;
		int *flag;	/* takes no value */
	} args[] = {
		{ "--readonly", .flag = &o.readonly },
		{ "--writeback-cache", .flag = &o.writeback },
		{ "--debug", .flag = &o.debug },
		{ "--daemon", .flag = &o.daemon },
		{ "--single-thread", .flag = &o.single_thread },
		{ "--log", .text = &o.log },
		{ "--image", .text = &o.image },
		{ "--type", .text = &o.type },
		{ "--opts", .text = &o.opts },
		{ "--fuse-opts", .text = &o.fuse_opts },
		{ "--partition", .number = &o.partition },
		{ "--mb", .number = &o.mb },
		{ "--max-read", .number = &o.max_read },
		{ "--ready-fd", .number = &o.ready_fd },
		{ "--lock-fd", .number = &o.lock_fd },
		{ "--uid", .lnumber = &o.uid },
		{ "--gid", .lnumber = &o.gid },
		{ "--mount-flags", .lnumber = &o.mount_flags },
	};
	int i;
	unsigned int j;

	for (i = 1; i < argc; i++) {
		for (j = 0; j < sizeof(args) / sizeof(args[0]); j++) {
			if (strcmp(argv[i], args[j].name))
				continue;
			if (args[j].flag) {
				*args[j].flag = 1;
				break;
			}
			if (i + 1 == argc)
				continue;
			i++;
			if (args[j].text)
				*args[j].text = argv[i];
			else if (args[j].number)
				*args[j].number = atoi(argv[i]);
			else
				*args[j].lnumber = atol(argv[i]);
			break;
		}
		if (j == sizeof(args) / sizeof(args[0])) {
			if (argv[i][0] == '-' || o.mountpoint)
				die("usage: lklfuse-server --image FILE --type "
				    "TYPE [options] MOUNTPOINT (see lklfuse "
				    "--help)");
			o.mountpoint = argv[i];
		}
	}
	if (!o.image || !o.type || !o.mountpoint)
		die("--image, --type and a mountpoint are needed");
}

/*
 * The lklfuse command took the image's lock= file and hands us its fd.  The
 * kernel process inherits it too, out of the way of the fds it is given:
 * the lock is held until the last writer of the image has exited, even if
 * we are killed.
 */
static void keep_lock(void)
{
	if (o.lock_fd < 0)
		return;
	if (fcntl(o.lock_fd, F_DUPFD, 64) < 0)
		die("the lock's fd: %s", strerror(errno));
	close(o.lock_fd);
}

/*
 * In the foreground, what the kernel says (its errors: a corrupt block, a
 * journal aborted) is shown on our stderr as it comes, as dmesg would have
 * it for a kernel mount.  The console is a memfd of ours; a thread copies
 * its new whole lines, and frees what it has shown.  A daemon keeps the
 * console in memory; log= puts it in a file.
 */
static struct {
	int fd;
	off_t shown;
	bool broken;			/* stderr went away: no more */
	atomic_int stop;
	pthread_t thread;
	pthread_mutex_t lock;		/* the relay and die() both show */
} console = { .fd = -1, .lock = PTHREAD_MUTEX_INITIALIZER };

/* What every library-mode kernel says, with nothing wrong: not shown. */
static bool routine_line(const char *line, size_t len)
{
	static const char *const routine[] = {
		"Warning: unable to open an initial console.\n",
		"reboot: Power down\n",
	};
	unsigned int i;

	for (i = 0; i < sizeof(routine) / sizeof(routine[0]); i++)
		if (len == strlen(routine[i]) && !memcmp(line, routine[i], len))
			return true;
	return false;
}

static void show_text(const char *text, size_t len)
{
	if (!console.broken && !routine_line(text, len) &&
	    write(2, text, len) < 0)
		console.broken = true;	/* EPIPE: nobody reads it now */
}

/*
 * Shows the console's new whole lines; at @last, what follows them too
 * (the kernel has stopped).  A line longer than the buffer goes in pieces.
 */
static void show_console(bool last)
{
	char buf[4096], *line, *end;
	struct stat st;
	ssize_t n;

	if (console.fd < 0)
		return;
	pthread_mutex_lock(&console.lock);
	while (fstat(console.fd, &st) == 0 && console.shown < st.st_size) {
		n = pread(console.fd, buf, sizeof(buf), console.shown);
		if (n <= 0)
			break;
		for (line = buf; (end = memchr(line, '\n', buf + n - line));
		     line = end + 1) {
			show_text(line, (size_t)(end + 1 - line));
			console.shown += end + 1 - line;
		}
		if (line == buf + n)
			continue;
		if (line > buf && !last)
			break;		/* the rest of this line comes later */
		if (line == buf && n < (ssize_t)sizeof(buf) && !last)
			break;
		show_text(line, (size_t)(buf + n - line));
		console.shown += buf + n - line;
	}
	/* What is shown needs no memory. */
	fallocate(console.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0,
		  console.shown & ~(off_t)4095);
	pthread_mutex_unlock(&console.lock);
}

static void *relay_console(void *unused)
{
	(void)unused;
	while (!atomic_load(&console.stop)) {
		show_console(false);
		usleep(200000);
	}
	return NULL;
}

static int start_console_relay(void)
{
	int err;

	console.fd = memfd_create("lklfuse-console", MFD_CLOEXEC);
	if (console.fd < 0)
		die("cannot keep the kernel's console: %s", strerror(errno));
	err = pthread_create(&console.thread, NULL, relay_console, NULL);
	if (err)
		die("cannot keep the kernel's console: %s", strerror(err));
	return console.fd;
}

/* Shows the last of the console; the kernel has stopped writing to it. */
static void stop_console_relay(void)
{
	if (console.fd < 0)
		return;
	atomic_store(&console.stop, 1);
	pthread_join(console.thread, NULL);
	show_console(true);
}

/* Whether the last of @on and @off among the comma-separated @opts is @on. */
static bool last_word_is(const char *opts, const char *on, const char *off)
{
	bool found = false;
	size_t n;

	for (; opts && *opts; opts += n + (opts[n] == ',')) {
		n = strcspn(opts, ",");
		if (n == strlen(on) && !strncmp(opts, on, n))
			found = true;
		else if (n == strlen(off) && !strncmp(opts, off, n))
			found = false;
	}
	return found;
}

/*
 * The per-mount flags of our mount, from /proc/self/mountinfo: not from
 * statvfs(), which would ask our own filesystem, not yet served.
 */
static unsigned long mount_flags_of(const char *mountpoint)
{
	static const struct {
		const char *word;
		unsigned long flag;
	} words[] = {
		{ "ro", MS_RDONLY }, { "noexec", MS_NOEXEC },
		{ "nosuid", MS_NOSUID }, { "nodev", MS_NODEV },
		{ "noatime", MS_NOATIME }, { "nodiratime", MS_NODIRATIME },
		{ "relatime", MS_RELATIME }, { "sync", MS_SYNCHRONOUS },
	};
	char *line = NULL, mnt[PATH_MAX], opts[256];
	unsigned long flags = 0;
	size_t size = 0;
	unsigned int i;
	FILE *info = fopen("/proc/self/mountinfo", "re");

	if (!info)
		return 0;
	while (getline(&line, &size, info) > 0) {
		if (sscanf(line, "%*u %*u %*u:%*u %*s %4095s %255s", mnt,
			   opts) != 2)
			continue;
		unescape_mount_field(mnt);
		if (strcmp(mnt, mountpoint))
			continue;
		flags = 0;	/* the last one is ours */
		for (i = 0; i < sizeof(words) / sizeof(words[0]); i++)
			if (last_word_is(opts, words[i].word, ""))
				flags |= words[i].flag;
	}
	free(line);
	fclose(info);
	return flags;
}

/*
 * -o dev and -o suid, for root.  libfuse mounts through fusermount3 for
 * auto_unmount, and fusermount3 mounts nodev,nosuid unless told otherwise,
 * which libfuse does not pass on: the mount's own flags are changed after
 * (a bind remount, keeping the others), as fuse2fs's direct mount has them.
 */
static void allow_dev_suid(void)
{
	bool dev = last_word_is(o.fuse_opts, "dev", "nodev");
	bool suid = last_word_is(o.fuse_opts, "suid", "nosuid");
	unsigned long flags;

	if ((!dev && !suid) || !o.mountpoint_abs[0])
		return;
	if (geteuid() != 0) {
		fprintf(stderr, "lklfuse: %s: dev and suid need root: mounted "
			"nodev,nosuid\n", o.mountpoint);
		return;
	}
	flags = mount_flags_of(o.mountpoint_abs);
	if (!flags)
		return;	/* not found: a remount would lose its flags */
	flags |= MS_REMOUNT | MS_BIND;
	if (dev)
		flags &= ~MS_NODEV;
	if (suid)
		flags &= ~MS_NOSUID;
	if (mount(NULL, o.mountpoint_abs, NULL, flags, NULL) < 0)
		fprintf(stderr, "lklfuse: %s: cannot allow%s%s: %s\n",
			o.mountpoint, dev ? " dev" : "", suid ? " suid" : "",
			strerror(errno));
}

/* @text into @out, with ',' and '\\' escaped as a libfuse option value needs. */
static void escape_option(char *out, size_t size, const char *text)
{
	size_t n = 0;

	for (; *text && n + 2 < size; text++) {
		if (*text == ',' || *text == '\\')
			out[n++] = '\\';
		out[n++] = *text;
	}
	out[n] = '\0';
}

/*
 * Whether everything written is in the image.  A write the host refused
 * (its disk full, say) fails in the background, long after the writer was
 * told it was done: it is told here, on stderr, in syslog (a daemon's
 * stderr goes nowhere), in the kernel's log (for log=), and in our exit
 * status.
 */
static bool sync_image(void)
{
	struct scratch s = scratch();
	long fd = SYS(SYS_open, wpath(s.path[0], ROOT), O_RDONLY | O_DIRECTORY);
	long synced = fd < 0 ? fd : SYS(SYS_syncfs, fd);
	/* EINVAL: directories there take no fsync, which tells nothing. */
	long fsynced = synced ? 0 : SYS(SYS_fsync, fd);
	const char *loss = "what was written may not all be in the image";

	if (fd >= 0)
		SYS(SYS_close, fd);
	/*
	 * syncfs says 0 in two cases where what was written is lost: a
	 * filesystem that shut itself down after an error (ext4, xfs, f2fs)
	 * says EIO to an fsync of its root, though; one that went read-only
	 * (vfat, btrfs) has nothing more to write, and shows it in statfs.
	 */
	if (synced)
		snprintf(s.data, PATH_MAX, "lklfuse: %s: %s: %s\n", o.image,
			 loss, strerror((int)-synced));
	else if (fsynced == -EIO)
		snprintf(s.data, PATH_MAX, "lklfuse: %s: the filesystem shut "
			 "itself down after an error: %s\n", o.image, loss);
	else if (root_read_only())
		snprintf(s.data, PATH_MAX, "lklfuse: %s: the filesystem went "
			 "read-only after an error: %s\n", o.image, loss);
	else
		return true;
	fputs(s.data, stderr);
	syslog(LOG_ERR, "%s", s.data + strlen("lklfuse: "));	/* as a daemon */
	fd = o.log ? SYS(SYS_open, wpath(s.path[0], "/dev/kmsg"), O_WRONLY) : -1;
	if (fd >= 0) {
		SYS(SYS_write, fd, (long)s.data, (long)strlen(s.data));
		SYS(SYS_close, fd);
	}
	return false;
}

/*
 * As a daemon, once mounted: nobody reads our stdio any more (a pipe held
 * open would keep `$(lklfuse ...)` waiting), so it goes to /dev/null.
 */
static void let_go_of_terminal(void)
{
	int null = open("/dev/null", O_RDWR);

	if (null < 0)
		return;
	dup2(null, 0);
	dup2(null, 1);
	dup2(null, 2);
	if (null > 2)
		close(null);
}

int main(int argc, char **argv)
{
	struct lkl_um_options opts;
	struct fuse_session *se;
	pthread_t forgetting;
	char why[512], fsname[2 * PATH_MAX], fuse_o[2 * PATH_MAX + 256];
	char *fargv[8];
	struct fuse_args fargs;
	int fargc = 0, ret, halted;

	/* A reader of our stderr that went away is not a reason to stop. */
	signal(SIGPIPE, SIG_IGN);
	/*
	 * The kernel process is our child: how it ended is ours to collect,
	 * which an ignored SIGCHLD (inherited) would not let us do.
	 */
	signal(SIGCHLD, SIG_DFL);
	parse(argc, argv);
	if (o.max_read <= 0 || o.max_read > MAX_IO)
		o.max_read = MAX_IO;	/* what the scratch buffers hold */
	if (fuse_api_load(&fuse, why, sizeof(why)))
		die("%s", why);
	keep_lock();
	if (o.ready_fd >= 0)
		fcntl(o.ready_fd, F_SETFD, FD_CLOEXEC);
	pthread_key_create(&scratch_key, free_scratch);

	lkl_um_options_init(&opts);
	opts.memory = (uint64_t)o.mb << 20;
	if (o.log) {
		opts.console_fd = open(o.log, O_WRONLY | O_CREAT | O_APPEND |
					      O_CLOEXEC, 0644);
		if (opts.console_fd < 0)
			die("%s: %s", o.log, strerror(errno));
	} else if (!o.daemon) {
		opts.console_fd = start_console_relay();
	}
	/* A scratch buffer per serving thread, and room for the allocator. */
	opts.heap_size = 4 * SERVE_THREADS * (size_t)SCRATCH;
	if (lkl_um_start(&opts, &k))
		die("%s", lkl_um_last_error());
	if (o.log)
		close(opts.console_fd);	/* the kernel process has its own */
	mount_image();
	root.fd = (int)SYS(SYS_open, wpath(scratch().path[0], ROOT),
			   O_PATH | O_DIRECTORY | O_CLOEXEC);
	mount_fd = (int)SYS(SYS_open, wpath(scratch().path[0], ROOT),
			    O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	root.nlookup = 2;

	/*
	 * The mount: named after the image, as its real path (where other
	 * tools look for it), commas and backslashes escaped for libfuse's
	 * option parser; cleaned up if we are killed.
	 */
	escape_option(fsname, sizeof(fsname), o.image);
	snprintf(fuse_o, sizeof(fuse_o),
		 "fsname=%s,subtype=lklfuse,auto_unmount,max_read=%d%s%s%s", fsname, o.max_read,
		 mounted_writable ? "" : ",ro", o.fuse_opts ? "," : "",
		 o.fuse_opts ? o.fuse_opts : "");
	fargv[fargc++] = "lklfuse";
	fargv[fargc++] = "-o";
	fargv[fargc++] = fuse_o;
	if (o.debug)
		fargv[fargc++] = "-d";
	fargv[fargc] = NULL;
	fargs = (struct fuse_args){ .argc = fargc, .argv = fargv };

	se = fuse.session_new(&fargs, &ops, sizeof(ops), NULL);
	if (!se)
		die("cannot start a FUSE session (options: %s)", fuse_o);
	session = se;
	if (fuse.set_signal_handlers(se))
		die("cannot set signal handlers");
	if (!realpath(o.mountpoint, o.mountpoint_abs))
		o.mountpoint_abs[0] = '\0';
	if (fuse.session_mount(se, o.mountpoint))
		die("cannot mount on %s", o.mountpoint);
	allow_dev_suid();

	/* Ready: the lklfuse command may let go of us now. */
	if (o.ready_fd >= 0) {
		if (write(o.ready_fd, "", 1) < 0)
			die("cannot tell lklfuse that we are ready");
		close(o.ready_fd);
	}
	if (o.daemon)
		let_go_of_terminal();

	by_name = !strcmp(o.type, "vfat") || !strcmp(o.type, "msdos") ||
		  !strcmp(o.type, "exfat");
	if (by_name && start_thread(&forgetting, forget_by_name, se))
		by_name = false;	/* then every fd stays open, as before */
	ret = fuse_serve(&fuse, se, o.single_thread ? 1 : SERVE_THREADS,
			 disk_read, release_held);
	if (by_name)
		stop_forgetting(se, forgetting);
	if (ret)
		fprintf(stderr, "lklfuse: serving %s: %s\n", o.mountpoint,
			strerror(-ret));

	/* Unmounted (or a signal): everything synced, the image clean. */
	fuse.session_unmount(se);
	fuse.remove_signal_handlers(se);
	/* libfuse restores SIGPIPE: a closed stderr must not kill us now. */
	signal(SIGPIPE, SIG_IGN);
	fuse.session_destroy(se);
	if (mounted_writable && !sync_image())
		ret = 1;
	halted = lkl_um_halt(k, 60000);
	if (halted != 0) {
		char why[128];

		/* A kernel killed earlier leaves no last error: its status says it. */
		if (halted < 0)
			snprintf(why, sizeof(why), "%s", strerror(-halted));
		else if (WIFSIGNALED(halted))
			snprintf(why, sizeof(why), "its process was killed by SIG%s",
				 sigabbrev_np(WTERMSIG(halted)) ?: "?");
		else
			snprintf(why, sizeof(why), "its process exited with %d",
				 WEXITSTATUS(halted));
		fprintf(stderr, "lklfuse: %s: the kernel did not power off "
			"cleanly: %s\n", o.image, *lkl_um_last_error() ?
			lkl_um_last_error() : why);
		ret = 1;
	}
	lkl_um_close(k, 1000);
	stop_console_relay();
	return ret ? 1 : 0;
}
