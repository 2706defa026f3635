// SPDX-License-Identifier: MIT
/*
 * The disk test: images made by the real mkfs tools, given to the kernel
 * at boot or plugged in later, mounted, written and read back, and checked
 * clean by their own fsck after the kernel has halted.  Also: sectors past
 * 4 GiB and past 2 TiB, and removing a disk.
 */

#include "helpers.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char work[] = "/tmp/lkl-um-disk-XXXXXX";

/* Runs a shell command; fails the test, with what to install, if it fails. */
static void sh(const char *fmt, ...)
{
	char cmd[1024];
	va_list ap;
	int status;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	status = system(cmd);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
	      "`%s` failed (%#x); is its tool installed? (.ci/debian-packages)",
	      cmd, status);
}

static long mount_dev(struct lkl_um *k, const char *dev, const char *dir,
		      const char *type, unsigned long flags)
{
	char *s = wstr(k, dev), *d = wstr(k, dir), *t = wstr(k, type);
	long ret;

	lkl_um_call(k, SYS_mkdir, (long)d, 0755);
	ret = lkl_um_call(k, SYS_mount, (long)s, (long)d, (long)t, flags, 0);
	lkl_um_free(k, s);
	lkl_um_free(k, d);
	lkl_um_free(k, t);
	return ret;
}

static void write_file(struct lkl_um *k, const char *path, const char *text)
{
	char *p = wstr(k, path), *data = wstr(k, text);
	long fd = OK(lkl_um_call(k, SYS_open, (long)p,
				 O_WRONLY | O_CREAT | O_TRUNC, 0644));

	CHECK(OK(lkl_um_call(k, SYS_write, fd, (long)data, strlen(text))) ==
	      (long)strlen(text), "write %s", path);
	OK(lkl_um_call(k, SYS_fsync, fd));
	OK(lkl_um_call(k, SYS_close, fd));
	lkl_um_free(k, p);
	lkl_um_free(k, data);
}

static void check_file(struct lkl_um *k, const char *path, const char *text)
{
	char *p = wstr(k, path), *buf = lkl_um_alloc(k, 4096);
	long fd = OK(lkl_um_call(k, SYS_open, (long)p, O_RDONLY));
	long n = OK(lkl_um_call(k, SYS_read, fd, (long)buf, 4095));

	buf[n] = 0;
	CHECK(!strcmp(buf, text), "%s holds '%s', wanted '%s'", path, buf, text);
	OK(lkl_um_call(k, SYS_close, fd));
	lkl_um_free(k, p);
	lkl_um_free(k, buf);
}

/* The first entry of directory @path in the kernel, into @name. */
static void first_entry(struct lkl_um *k, const char *path, const char *prefix,
			char *name, size_t size)
{
	char *p = wstr(k, path), *buf = lkl_um_alloc(k, 4096);
	long fd = OK(lkl_um_call(k, SYS_open, (long)p, O_RDONLY | O_DIRECTORY));
	long n = OK(lkl_um_call(k, SYS_getdents64, fd, (long)buf, 4096));

	name[0] = 0;
	for (long off = 0; off < n && !name[0];) {
		struct dirent64 *d = (struct dirent64 *)(buf + off);

		if (!strncmp(d->d_name, prefix, strlen(prefix)) &&
		    strlen(d->d_name) < size)
			memcpy(name, d->d_name, strlen(d->d_name) + 1);
		off += d->d_reclen;
	}
	CHECK(name[0], "nothing like %s* in %s", prefix, path);
	OK(lkl_um_call(k, SYS_close, fd));
	lkl_um_free(k, p);
	lkl_um_free(k, buf);
}

/*
 * The device node of disk @id: the kernel names disks in the order it
 * finds them, and may not reuse a name at once, so ask sysfs.
 */
static void disk_node(struct lkl_um *k, int id, char *node, size_t size)
{
	char path[128], virtio[32], block[16];

	snprintf(path, sizeof(path), "/sys/bus/platform/devices/virtio-mmio.%d",
		 id);
	first_entry(k, path, "virtio", virtio, sizeof(virtio));
	snprintf(path + strlen(path), sizeof(path) - strlen(path), "/%s/block",
		 virtio);
	first_entry(k, path, "vd", block, sizeof(block));
	snprintf(node, size, "/dev/%s", block);
}

struct fs {
	const char *type;
	const char *mkfs;	/* %s: the image */
	const char *fsck;	/* %s: the image; NULL: none */
};

static const struct fs writable[] = {
	{ "ext4", "truncate -s 64M %s && mkfs.ext4 -q -F %s", "e2fsck -fn %s" },
	{ "btrfs", "truncate -s 128M %s && mkfs.btrfs -q -f %s",
	  "btrfs check --readonly %s" },
	{ "xfs", "truncate -s 320M %s && mkfs.xfs -q -f %s", "xfs_repair -n %s" },
	{ "vfat", "truncate -s 32M %s && mkfs.vfat %s", "fsck.vfat -n %s" },
	{ "exfat", "truncate -s 32M %s && mkfs.exfat %s", "fsck.exfat -n %s" },
	{ "f2fs", "truncate -s 128M %s && mkfs.f2fs -q -f %s",
	  "fsck.f2fs --dry-run %s | (! grep -q '\\[Fail\\]')" },
	{ "ntfs3", "truncate -s 32M %s && mkntfs -q -F -f %s", "ntfsfix -n %s" },
	{ "udf", "truncate -s 32M %s && mkudffs --utf8 --media-type=hd %s",
	  NULL },
};

/* Each writable filesystem, given at boot: mount, write, read back. */
static void test_writable(void)
{
	const unsigned int n = sizeof(writable) / sizeof(writable[0]);
	struct lkl_um_disk disks[sizeof(writable) / sizeof(writable[0])];
	struct lkl_um_options opts;
	char image[256], dev[16], dir[32];
	struct lkl_um *k;
	unsigned int i;

	for (i = 0; i < n; i++) {
		snprintf(image, sizeof(image), "%s/%s.img", work,
			 writable[i].type);
		sh(writable[i].mkfs, image, image);
		disks[i].fd = open(image, O_RDWR);
		disks[i].readonly = 0;
		CHECK(disks[i].fd >= 0, "open %s", image);
	}
	lkl_um_options_init(&opts);
	opts.memory = 512 << 20;
	opts.disks = disks;
	opts.nr_disks = n;
	CHECK(!lkl_um_start(&opts, &k), "start: %s", lkl_um_last_error());
	for (i = 0; i < n; i++)
		close(disks[i].fd);

	OK(mount_dev(k, "devtmpfs", "/dev", "devtmpfs", 0));
	for (i = 0; i < n; i++) {
		char path[64];

		snprintf(dev, sizeof(dev), "/dev/vd%c", 'a' + i);
		snprintf(dir, sizeof(dir), "/mnt-%s", writable[i].type);
		OK(mount_dev(k, dev, dir, writable[i].type, 0));
		snprintf(path, sizeof(path), "%s/hello", dir);
		write_file(k, path, writable[i].type);
		check_file(k, path, writable[i].type);
		OK(lkl_um_call(k, SYS_umount2, (long)wstr(k, dir), 0));
		OK(mount_dev(k, dev, dir, writable[i].type, MS_RDONLY));
		check_file(k, path, writable[i].type);
	}
	CHECK(lkl_um_halt(k, 30000) == 0, "clean halt");
	lkl_um_close(k, 1000);

	/* Halting unmounted everything: each fsck is clean. */
	for (i = 0; i < n; i++) {
		snprintf(image, sizeof(image), "%s/%s.img", work,
			 writable[i].type);
		if (writable[i].fsck)
			sh(writable[i].fsck, image);
		unlink(image);
	}
	PASS("ext4 btrfs xfs vfat exfat f2fs ntfs3 udf: write, read, fsck");
}

/* The read-only filesystems, made from a tree, plugged in after boot. */
static void test_readonly(void)
{
	static const struct {
		const char *type, *make;
	} ro[] = {
		{ "iso9660", "xorriso -as mkisofs -quiet -R -J -o %s %s" },
		{ "squashfs", "mksquashfs %2$s %1$s -quiet -noappend -no-progress" },
		{ "erofs", "mkfs.erofs %s %s >/dev/null" },
	};
	struct lkl_um *k = start_kernel(NULL);
	char image[256], src[256], dev[32], dir[32], path[64];
	unsigned int i;

	snprintf(src, sizeof(src), "%s/src", work);
	sh("mkdir -p %s && echo tree > %s/file", src, src);
	OK(mount_dev(k, "devtmpfs", "/dev", "devtmpfs", 0));
	OK(mount_dev(k, "sysfs", "/sys", "sysfs", 0));
	for (i = 0; i < sizeof(ro) / sizeof(ro[0]); i++) {
		struct lkl_um_disk disk = { .readonly = 1 };
		int id;

		snprintf(image, sizeof(image), "%s/%s.img", work, ro[i].type);
		sh(ro[i].make, image, src);
		disk.fd = open(image, O_RDONLY);
		id = lkl_um_add_disk(k, &disk);
		close(disk.fd);
		CHECK(id >= 0, "add %s: %s", ro[i].type, lkl_um_last_error());
		disk_node(k, id, dev, sizeof(dev));
		snprintf(dir, sizeof(dir), "/ro-%s", ro[i].type);
		FAILS(mount_dev(k, dev, dir, ro[i].type, 0), EACCES);
		OK(mount_dev(k, dev, dir, ro[i].type, MS_RDONLY));
		snprintf(path, sizeof(path), "%s/file", dir);
		check_file(k, path, "tree\n");
		OK(lkl_um_call(k, SYS_umount2, (long)wstr(k, dir), 0));
		OK(lkl_um_remove_disk(k, id));
		unlink(image);
	}
	FAILS(lkl_um_remove_disk(k, 42), ENODEV);
	lkl_um_close(k, 10000);
	PASS("iso9660 squashfs erofs: read-only, plugged in and out");
}

/*
 * Sectors past 4 GiB and past 2 TiB reach the right place in the image,
 * written with O_DIRECT from the window.
 */
static void test_large(void)
{
	static const long long offsets[] = { 5ll << 30, 3ll << 40 };
	struct lkl_um_disk disk = { .readonly = 0 };
	char image[256], host[16];
	struct lkl_um *k = start_kernel(NULL);
	unsigned int i;
	char *buf, *dev;
	long fd;

	snprintf(image, sizeof(image), "%s/large.img", work);
	sh("truncate -s 4T %s", image);
	disk.fd = open(image, O_RDWR);
	CHECK(lkl_um_add_disk(k, &disk) >= 0, "add: %s", lkl_um_last_error());
	OK(mount_dev(k, "devtmpfs", "/dev", "devtmpfs", 0));
	buf = lkl_um_alloc(k, 4096);
	dev = wstr(k, "/dev/vda");
	/*
	 * O_DIRECT, straight between the window and the image.  A buffer
	 * outside the window is an error, not a crash.
	 */
	fd = OK(lkl_um_call(k, SYS_open, (long)dev, O_RDWR | O_DIRECT));
	FAILS(lkl_um_call(k, SYS_pwrite64, fd, (long)host, 4096, 0), EFAULT);
	for (i = 0; i < 2; i++) {
		memset(buf, 0, 4096);
		snprintf(buf, 4096, "at %lld", offsets[i]);
		CHECK(OK(lkl_um_call(k, SYS_pwrite64, fd, (long)buf, 4096,
				     offsets[i])) == 4096, "pwrite");
	}
	OK(lkl_um_call(k, SYS_fsync, fd));
	OK(lkl_um_call(k, SYS_close, fd));
	for (i = 0; i < 2; i++) {
		char want[32];

		snprintf(want, sizeof(want), "at %lld", offsets[i]);
		CHECK(pread(disk.fd, host, sizeof(host), offsets[i]) ==
		      sizeof(host) && !strncmp(host, want, strlen(want)),
		      "the host finds '%s' at %lld", want, offsets[i]);
	}
	close(disk.fd);
	lkl_um_close(k, 10000);
	unlink(image);
	PASS("64-bit sectors: past 4 GiB and 2 TiB; O_DIRECT gives EFAULT");
}

int main(void)
{
	CHECK(mkdtemp(work), "mkdtemp");
	test_writable();
	test_readonly();
	test_large();
	rmdir(work);
	return 0;
}
