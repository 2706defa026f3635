// SPDX-License-Identifier: MIT
/*
 * Prints, as JSON, the layouts of the structures @lkl-um/core decodes and
 * the constants it uses, as the kernel's own UAPI headers define them.
 * scripts/generate.mjs compiles it against build/kernel/include/uapi only
 * (no libc headers), runs it, and writes src/generated/abi.ts.
 */

#include <linux/types.h>
#include <linux/fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <linux/mount.h>
#include <linux/openat2.h>
#include <linux/stat.h>
#include <linux/time_types.h>
#include <linux/uio.h>
#include <linux/xattr.h>
#include <asm/stat.h>
#include <asm/statfs.h>
#include <asm-generic/fcntl.h>

int printf(const char *fmt, ...);

/* The kernel's own linux_dirent64 and the umount2()/utimensat() constants,
 * which the UAPI headers do not export: build.sh copies them. */
typedef __u64 u64;
typedef __s64 s64;
#include "linux_dirent.h"
#include "constants.h"

#define offsetof(t, m) __builtin_offsetof(t, m)
#define sizeof_field(t, m) sizeof(((t *)0)->m)

static int first;

static void open_struct(const char *name, unsigned long size)
{
	printf("%s\n    \"%s\": { \"size\": %lu, \"fields\": {", first ? "" : ",",
	       name, size);
	first = 0;
}

#define STRUCT(type, name) \
	do { open_struct(name, sizeof(type)); int f_ = 1;
#define FIELD(type, field) \
	printf("%s\n      \"%s\": [%lu, %lu]", f_ ? "" : ",", #field, \
	       (unsigned long)offsetof(type, field), \
	       (unsigned long)sizeof_field(type, field)); f_ = 0;
#define END_STRUCT() printf(" } }"); } while (0)

#define CONST(name) \
	printf("%s\n    \"%s\": %lld", first ? "" : ",", #name, \
	       (long long)(name)); first = 0;

int main(void)
{
	printf("{\n  \"structs\": {");
	first = 1;

	STRUCT(struct stat, "stat")
	FIELD(struct stat, st_dev) FIELD(struct stat, st_ino)
	FIELD(struct stat, st_nlink) FIELD(struct stat, st_mode)
	FIELD(struct stat, st_uid) FIELD(struct stat, st_gid)
	FIELD(struct stat, st_rdev) FIELD(struct stat, st_size)
	FIELD(struct stat, st_blksize) FIELD(struct stat, st_blocks)
	FIELD(struct stat, st_atime) FIELD(struct stat, st_atime_nsec)
	FIELD(struct stat, st_mtime) FIELD(struct stat, st_mtime_nsec)
	FIELD(struct stat, st_ctime) FIELD(struct stat, st_ctime_nsec)
	END_STRUCT();

	STRUCT(struct statx, "statx")
	FIELD(struct statx, stx_mask) FIELD(struct statx, stx_blksize)
	FIELD(struct statx, stx_attributes) FIELD(struct statx, stx_nlink)
	FIELD(struct statx, stx_uid) FIELD(struct statx, stx_gid)
	FIELD(struct statx, stx_mode) FIELD(struct statx, stx_ino)
	FIELD(struct statx, stx_size) FIELD(struct statx, stx_blocks)
	FIELD(struct statx, stx_attributes_mask)
	FIELD(struct statx, stx_atime) FIELD(struct statx, stx_btime)
	FIELD(struct statx, stx_ctime) FIELD(struct statx, stx_mtime)
	FIELD(struct statx, stx_rdev_major) FIELD(struct statx, stx_rdev_minor)
	FIELD(struct statx, stx_dev_major) FIELD(struct statx, stx_dev_minor)
	FIELD(struct statx, stx_mnt_id)
	END_STRUCT();

	STRUCT(struct statx_timestamp, "statx_timestamp")
	FIELD(struct statx_timestamp, tv_sec)
	FIELD(struct statx_timestamp, tv_nsec)
	END_STRUCT();

	STRUCT(struct linux_dirent64, "linux_dirent64")
	FIELD(struct linux_dirent64, d_ino) FIELD(struct linux_dirent64, d_off)
	FIELD(struct linux_dirent64, d_reclen)
	FIELD(struct linux_dirent64, d_type)
	printf(",\n      \"d_name\": [%lu, 0]",
	       (unsigned long)offsetof(struct linux_dirent64, d_name));
	END_STRUCT();

	STRUCT(struct statfs, "statfs")
	FIELD(struct statfs, f_type) FIELD(struct statfs, f_bsize)
	FIELD(struct statfs, f_blocks) FIELD(struct statfs, f_bfree)
	FIELD(struct statfs, f_bavail) FIELD(struct statfs, f_files)
	FIELD(struct statfs, f_ffree) FIELD(struct statfs, f_fsid)
	FIELD(struct statfs, f_namelen) FIELD(struct statfs, f_frsize)
	FIELD(struct statfs, f_flags)
	END_STRUCT();

	STRUCT(struct __kernel_timespec, "timespec")
	FIELD(struct __kernel_timespec, tv_sec)
	FIELD(struct __kernel_timespec, tv_nsec)
	END_STRUCT();

	STRUCT(struct iovec, "iovec")
	FIELD(struct iovec, iov_base) FIELD(struct iovec, iov_len)
	END_STRUCT();

	STRUCT(struct open_how, "open_how")
	FIELD(struct open_how, flags) FIELD(struct open_how, mode)
	FIELD(struct open_how, resolve)
	END_STRUCT();

	STRUCT(struct fstrim_range, "fstrim_range")
	FIELD(struct fstrim_range, start) FIELD(struct fstrim_range, len)
	FIELD(struct fstrim_range, minlen)
	END_STRUCT();

	STRUCT(struct flock, "flock")
	FIELD(struct flock, l_type) FIELD(struct flock, l_whence)
	FIELD(struct flock, l_start) FIELD(struct flock, l_len)
	FIELD(struct flock, l_pid)
	END_STRUCT();

	printf("\n  },\n  \"constants\": {");
	first = 1;
	CONST(O_RDONLY) CONST(O_WRONLY) CONST(O_RDWR) CONST(O_ACCMODE)
	CONST(O_CREAT) CONST(O_EXCL) CONST(O_NOCTTY) CONST(O_TRUNC)
	CONST(O_APPEND) CONST(O_NONBLOCK) CONST(O_DSYNC) CONST(O_DIRECT)
	CONST(O_LARGEFILE) CONST(O_DIRECTORY) CONST(O_NOFOLLOW)
	CONST(O_NOATIME) CONST(O_CLOEXEC) CONST(O_SYNC) CONST(O_PATH)
	CONST(O_TMPFILE)
	CONST(AT_FDCWD) CONST(AT_SYMLINK_NOFOLLOW) CONST(AT_REMOVEDIR)
	CONST(AT_SYMLINK_FOLLOW) CONST(AT_NO_AUTOMOUNT) CONST(AT_EMPTY_PATH)
	CONST(AT_STATX_SYNC_AS_STAT) CONST(AT_EACCESS)
	CONST(S_IFMT) CONST(S_IFSOCK) CONST(S_IFLNK) CONST(S_IFREG)
	CONST(S_IFBLK) CONST(S_IFDIR) CONST(S_IFCHR) CONST(S_IFIFO)
	CONST(S_ISUID) CONST(S_ISGID) CONST(S_ISVTX)
	CONST(STATX_TYPE) CONST(STATX_MODE) CONST(STATX_NLINK) CONST(STATX_UID)
	CONST(STATX_GID) CONST(STATX_ATIME) CONST(STATX_MTIME)
	CONST(STATX_CTIME) CONST(STATX_INO) CONST(STATX_SIZE)
	CONST(STATX_BLOCKS) CONST(STATX_BASIC_STATS) CONST(STATX_BTIME)
	CONST(XATTR_CREATE) CONST(XATTR_REPLACE)
	CONST(RENAME_NOREPLACE) CONST(RENAME_EXCHANGE) CONST(RENAME_WHITEOUT)
	CONST(SEEK_SET) CONST(SEEK_CUR) CONST(SEEK_END) CONST(SEEK_DATA)
	CONST(SEEK_HOLE)
	CONST(MS_RDONLY) CONST(MS_NOSUID) CONST(MS_NODEV) CONST(MS_NOEXEC)
	CONST(MS_SYNCHRONOUS) CONST(MS_REMOUNT) CONST(MS_DIRSYNC)
	CONST(MS_NOATIME) CONST(MS_NODIRATIME) CONST(MS_BIND) CONST(MS_MOVE)
	CONST(MS_REC) CONST(MS_SILENT) CONST(MS_POSIXACL) CONST(MS_RELATIME)
	CONST(MS_STRICTATIME) CONST(MS_LAZYTIME) CONST(MS_NOSYMFOLLOW)
	CONST(MS_I_VERSION) CONST(MS_MANDLOCK)
	CONST(FALLOC_FL_KEEP_SIZE) CONST(FALLOC_FL_PUNCH_HOLE)
	CONST(FALLOC_FL_ZERO_RANGE)
	CONST(F_GETLK) CONST(F_SETLK) CONST(F_SETLKW) CONST(F_RDLCK)
	CONST(F_WRLCK) CONST(F_UNLCK) CONST(LOCK_SH) CONST(LOCK_EX)
	CONST(LOCK_NB) CONST(LOCK_UN)
	CONST(UTIME_NOW) CONST(UTIME_OMIT)
	CONST(FITRIM) CONST(FIFREEZE) CONST(FITHAW)
	CONST(MNT_FORCE) CONST(MNT_DETACH) CONST(MNT_EXPIRE)
	CONST(UMOUNT_NOFOLLOW)
	printf("\n  }\n}\n");
	return 0;
}
