// SPDX-License-Identifier: MIT
/*
 * The boot test, in the spirit of LKL's: boot, then a tour of the basic
 * system calls, each checked, then halt.
 */

#include "helpers.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>


static struct lkl_um *k;

static void test_getpid(void)
{
	CHECK(OK(lkl_um_call(k, SYS_getpid)) == 1, "hostcall tasks are pid 1");
	CHECK(OK(lkl_um_call(k, SYS_getuid)) == 0, "and root");
	PASS("getpid");
}

static void test_umask(void)
{
	long old = OK(lkl_um_call(k, SYS_umask, 0077));

	CHECK(OK(lkl_um_call(k, SYS_umask, old)) == 0077, "umask round trip");
	PASS("umask");
}

static void test_open(void)
{
	char *path = wstr(k, "/creat-me"), *missing = wstr(k, "/no/such/file");
	long fd = OK(lkl_um_call(k, SYS_creat, (long)path, 0644));

	OK(lkl_um_call(k, SYS_close, fd));
	fd = OK(lkl_um_call(k, SYS_open, (long)path, O_RDONLY));
	OK(lkl_um_call(k, SYS_close, fd));
	FAILS(lkl_um_call(k, SYS_close, fd), EBADF);
	FAILS(lkl_um_call(k, SYS_open, (long)missing, O_RDONLY), ENOENT);
	lkl_um_free(k, path);
	lkl_um_free(k, missing);
	PASS("creat/open/close");
}

static void test_read_write(void)
{
	static const char text[] = "The quick brown fox";
	char *path = wstr(k, "/rw"), *buf = lkl_um_alloc(k, 64);
	long fd = OK(lkl_um_call(k, SYS_open, (long)path,
				 O_RDWR | O_CREAT | O_TRUNC, 0600));

	strcpy(buf, text);
	CHECK(OK(lkl_um_call(k, SYS_write, fd, (long)buf, sizeof(text))) ==
	      sizeof(text), "short write");
	CHECK(OK(lkl_um_call(k, SYS_lseek, fd, 0, SEEK_CUR)) == sizeof(text),
	      "SEEK_CUR after write");
	CHECK(OK(lkl_um_call(k, SYS_lseek, fd, 4, SEEK_SET)) == 4, "SEEK_SET");
	memset(buf, 0, 64);
	CHECK(OK(lkl_um_call(k, SYS_read, fd, (long)buf, 5)) == 5, "read");
	CHECK(!memcmp(buf, "quick", 5), "read back %.5s", buf);
	CHECK(OK(lkl_um_call(k, SYS_lseek, fd, 1, SEEK_CUR)) == 10, "SEEK_CUR");
	CHECK(OK(lkl_um_call(k, SYS_lseek, fd, -4, SEEK_END)) ==
	      sizeof(text) - 4, "SEEK_END");
	CHECK(OK(lkl_um_call(k, SYS_read, fd, (long)buf, 64)) == 4, "tail");
	CHECK(!memcmp(buf, "fox", 4), "tail is %s", buf);
	CHECK(OK(lkl_um_call(k, SYS_read, fd, (long)buf, 64)) == 0, "EOF");
	OK(lkl_um_call(k, SYS_close, fd));
	lkl_um_free(k, path);
	lkl_um_free(k, buf);
	PASS("write/read/lseek");
}

static void test_stat(void)
{
	char *path = wstr(k, "/stat-me");
	struct stat *st = lkl_um_alloc(k, sizeof(*st));
	long fd = OK(lkl_um_call(k, SYS_open, (long)path, O_RDWR | O_CREAT,
				 0640));

	OK(lkl_um_call(k, SYS_ftruncate, fd, 12345));
	OK(lkl_um_call(k, SYS_fstat, fd, (long)st));
	CHECK(S_ISREG(st->st_mode) && (st->st_mode & 07777) == 0640,
	      "mode %o", st->st_mode);
	CHECK(st->st_size == 12345, "size %ld", (long)st->st_size);
	OK(lkl_um_call(k, SYS_close, fd));
	memset(st, 0, sizeof(*st));
	OK(lkl_um_call(k, SYS_stat, (long)path, (long)st));
	CHECK(st->st_size == 12345 && st->st_nlink == 1, "stat");
	lkl_um_free(k, path);
	lkl_um_free(k, st);
	PASS("fstat/stat");
}

static void test_mkdir(void)
{
	char *path = wstr(k, "/dir");
	struct stat *st = lkl_um_alloc(k, sizeof(*st));

	OK(lkl_um_call(k, SYS_mkdir, (long)path, 0755));
	FAILS(lkl_um_call(k, SYS_mkdir, (long)path, 0755), EEXIST);
	OK(lkl_um_call(k, SYS_stat, (long)path, (long)st));
	CHECK(S_ISDIR(st->st_mode), "a directory");
	lkl_um_free(k, path);
	lkl_um_free(k, st);
	PASS("mkdir");
}

/* The owner and group of @path, as uid << 32 | gid. */
static long owner_of(const char *path)
{
	char *p = wstr(k, path);
	struct stat *st = lkl_um_alloc(k, sizeof(*st));
	long ids;

	OK(lkl_um_call(k, SYS_lstat, (long)p, (long)st));
	ids = (long)st->st_uid << 32 | st->st_gid;
	lkl_um_free(k, p);
	lkl_um_free(k, st);
	return ids;
}

#define IDS(uid, gid) ((long)(uid) << 32 | (gid))

static void test_as_owner(void)
{
	char *dir = wstr(k, "/owned"), *file = wstr(k, "/owned/file");
	char *sub = wstr(k, "/owned/dir"), *fifo = wstr(k, "/owned/fifo");
	char *link = wstr(k, "/owned/link"), *shared = wstr(k, "/owned/shared");
	char *in_shared = wstr(k, "/owned/shared/file"), *mine = wstr(k, "/owned/root's");
	long fd;

	/* Root's 0700 directory: the checks stay root's. */
	OK(lkl_um_call(k, SYS_mkdir, (long)dir, 0700));
	fd = OK(lkl_um_call_as_owner(k, 1000, 100, SYS_openat, AT_FDCWD,
				     (long)file, O_CREAT | O_WRONLY, 04755));
	OK(lkl_um_call(k, SYS_close, fd));
	OK(lkl_um_call_as_owner(k, 1000, 100, SYS_mkdirat, AT_FDCWD, (long)sub, 0755));
	OK(lkl_um_call_as_owner(k, 1001, 101, SYS_mknodat, AT_FDCWD, (long)fifo,
				S_IFIFO | 0644, 0));
	OK(lkl_um_call_as_owner(k, 1002, 102, SYS_symlinkat, (long)file, AT_FDCWD,
				(long)link));
	CHECK(owner_of("/owned/file") == IDS(1000, 100), "file %lx", owner_of("/owned/file"));
	CHECK(owner_of("/owned/dir") == IDS(1000, 100), "directory");
	CHECK(owner_of("/owned/fifo") == IDS(1001, 101), "fifo");
	CHECK(owner_of("/owned/link") == IDS(1002, 102), "symlink");

	/* What the user asked for stays: the setuid bit, which a chown clears. */
	{
		struct stat *st = lkl_um_alloc(k, sizeof(*st));

		OK(lkl_um_call(k, SYS_stat, (long)file, (long)st));
		CHECK((st->st_mode & 07777) == 04755, "mode %o", st->st_mode);
		lkl_um_free(k, st);
	}

	/* A setgid directory's group wins. */
	OK(lkl_um_call(k, SYS_mkdir, (long)shared, 0777));
	OK(lkl_um_call(k, SYS_chown, (long)shared, 0, 50));
	OK(lkl_um_call(k, SYS_chmod, (long)shared, 02777));
	fd = OK(lkl_um_call_as_owner(k, 1000, 100, SYS_openat, AT_FDCWD,
				     (long)in_shared, O_CREAT | O_WRONLY, 0644));
	OK(lkl_um_call(k, SYS_close, fd));
	CHECK(owner_of("/owned/shared/file") == IDS(1000, 50), "setgid directory");

	/* Only that call: the next is root's again. */
	OK(lkl_um_call(k, SYS_mkdir, (long)mine, 0755));
	CHECK(owner_of("/owned/root's") == IDS(0, 0), "root's after");

	/* Credentials cannot be changed so; ids that map to nobody are refused. */
	FAILS(lkl_um_call_as_owner(k, 1000, 100, SYS_setuid, 1000), EINVAL);
	FAILS(lkl_um_call_as_owner(k, 1000, 100, SYS_setfsuid, 1000), EINVAL);
	FAILS(lkl_um_call_as_owner(k, (uid_t)-1, 100, SYS_mkdirat, AT_FDCWD,
				   (long)sub, 0755), EINVAL);
	FAILS(lkl_um_call_as_owner(k, 1000, 100, SYS_fork), ENOSYS);
	CHECK(OK(lkl_um_call(k, SYS_geteuid)) == 0, "still root");

	lkl_um_free(k, dir);
	lkl_um_free(k, file);
	lkl_um_free(k, sub);
	lkl_um_free(k, fifo);
	lkl_um_free(k, link);
	lkl_um_free(k, shared);
	lkl_um_free(k, in_shared);
	lkl_um_free(k, mine);
	PASS("calls made for a user: their files are the user's");
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void test_nanosleep(void)
{
	struct timespec *ts = lkl_um_alloc(k, sizeof(*ts));
	double t0 = now(), slept;

	*ts = (struct timespec){ .tv_nsec = 20 * 1000 * 1000 };
	OK(lkl_um_call(k, SYS_nanosleep, (long)ts, 0));
	slept = now() - t0;
	CHECK(slept >= 0.019 && slept < 10, "slept %.3f s", slept);
	lkl_um_free(k, ts);
	PASS("nanosleep");
}

static void test_pipe_epoll(void)
{
	int *fds = lkl_um_alloc(k, 2 * sizeof(int));
	struct epoll_event *ev = lkl_um_alloc(k, 2 * sizeof(*ev));
	char *buf = wstr(k, "ping");
	long ep;

	OK(lkl_um_call(k, SYS_pipe2, (long)fds, O_CLOEXEC));
	ep = OK(lkl_um_call(k, SYS_epoll_create1, 0));
	ev[0] = (struct epoll_event){ .events = EPOLLIN, .data.u64 = 42 };
	OK(lkl_um_call(k, SYS_epoll_ctl, ep, EPOLL_CTL_ADD, fds[0],
		       (long)ev));
	CHECK(OK(lkl_um_call(k, SYS_epoll_wait, ep, (long)ev, 2, 0)) == 0,
	      "nothing to read yet");
	CHECK(OK(lkl_um_call(k, SYS_write, fds[1], (long)buf, 4)) == 4,
	      "pipe write");
	CHECK(OK(lkl_um_call(k, SYS_epoll_wait, ep, (long)ev, 2, 1000)) == 1,
	      "readable");
	CHECK(ev[0].data.u64 == 42 && ev[0].events & EPOLLIN, "the event");
	memset(buf, 0, 4);
	CHECK(OK(lkl_um_call(k, SYS_read, fds[0], (long)buf, 4)) == 4 &&
	      !memcmp(buf, "ping", 4), "pipe read");
	OK(lkl_um_call(k, SYS_close, ep));
	OK(lkl_um_call(k, SYS_close, fds[0]));
	OK(lkl_um_call(k, SYS_close, fds[1]));
	lkl_um_free(k, fds);
	lkl_um_free(k, ev);
	lkl_um_free(k, buf);
	PASS("pipe2/epoll");
}

/* Lists @dir with getdents64; returns whether an entry @want is there. */
static int has_entry(const char *dir, const char *want)
{
	char *path = wstr(k, dir), *buf = lkl_um_alloc(k, 8192);
	long fd = OK(lkl_um_call(k, SYS_open, (long)path,
				 O_RDONLY | O_DIRECTORY));
	int found = 0;
	long n;

	while ((n = OK(lkl_um_call(k, SYS_getdents64, fd, (long)buf,
				   8192))) > 0) {
		for (long off = 0; off < n;) {
			struct dirent64 *d = (struct dirent64 *)(buf + off);

			found |= !strcmp(d->d_name, want);
			off += d->d_reclen;
		}
	}
	OK(lkl_um_call(k, SYS_close, fd));
	lkl_um_free(k, path);
	lkl_um_free(k, buf);
	return found;
}

static void test_proc_sysfs(void)
{
	char *proc = wstr(k, "/proc"), *sys = wstr(k, "/sys");
	char *procfs = wstr(k, "proc"), *sysfs = wstr(k, "sysfs");
	char *root = wstr(k, "/"), *cwd = lkl_um_alloc(k, 256);

	OK(lkl_um_call(k, SYS_mkdir, (long)proc, 0555));
	OK(lkl_um_call(k, SYS_mkdir, (long)sys, 0555));
	OK(lkl_um_call(k, SYS_mount, (long)procfs, (long)proc, (long)procfs,
		       0, 0));
	OK(lkl_um_call(k, SYS_mount, (long)sysfs, (long)sys, (long)sysfs,
		       0, 0));

	OK(lkl_um_call(k, SYS_chdir, (long)proc));
	CHECK(OK(lkl_um_call(k, SYS_getcwd, (long)cwd, 256)) > 0 &&
	      !strcmp(cwd, "/proc"), "cwd %s", cwd);
	CHECK(has_entry(".", "self") && has_entry(".", "1"), "/proc lists");
	OK(lkl_um_call(k, SYS_chdir, (long)sys));
	CHECK(has_entry(".", "kernel") && has_entry(".", "block"),
	      "/sys lists");
	OK(lkl_um_call(k, SYS_chdir, (long)root));

	OK(lkl_um_call(k, SYS_umount2, (long)proc, 0));
	OK(lkl_um_call(k, SYS_umount2, (long)sys, 0));
	FAILS(lkl_um_call(k, SYS_umount2, (long)sys, 0), EINVAL);
	CHECK(!has_entry("/proc", "self"), "proc unmounted");
	lkl_um_free(k, proc);
	lkl_um_free(k, sys);
	lkl_um_free(k, procfs);
	lkl_um_free(k, sysfs);
	lkl_um_free(k, root);
	lkl_um_free(k, cwd);
	PASS("mount proc and sysfs, chdir, getdents64, umount");
}

static void test_efault(void)
{
	char host_buf[16];
	char *path = wstr(k, "/rw");
	long fd = OK(lkl_um_call(k, SYS_open, (long)path, O_RDONLY));

	/* Host memory outside the window is not the kernel's to touch. */
	FAILS(lkl_um_call(k, SYS_read, fd, (long)host_buf, 16), EFAULT);
	FAILS(lkl_um_call(k, SYS_read, fd, 0x1000, 16), EFAULT);
	FAILS(lkl_um_call(k, SYS_open, (long)"/rw", O_RDONLY), EFAULT);
	/* A buffer that runs off the end of the window. */
	{
		size_t size;
		char *w = lkl_um_window(k, &size);

		FAILS(lkl_um_call(k, SYS_read, fd, (long)(w + size - 4), 16),
		      EFAULT);
	}
	OK(lkl_um_call(k, SYS_close, fd));
	lkl_um_free(k, path);
	PASS("pointers outside the window give EFAULT");
}

static void test_refused(void)
{
	FAILS(lkl_um_call(k, SYS_fork), ENOSYS);
	FAILS(lkl_um_call(k, SYS_execve, 0, 0, 0), ENOSYS);
	FAILS(lkl_um_call(k, SYS_exit, 0), ENOSYS);
	FAILS(lkl_um_call(k, SYS_mmap, 0, 4096, 3, 0x22, -1, 0), ENOSYS);
	FAILS(lkl_um_call(k, SYS_ptrace, 0, 0, 0, 0), ENOSYS);
	FAILS(lkl_um_call(k, 100000), ENOSYS);
	CHECK(OK(lkl_um_call(k, SYS_getpid)) == 1, "still serving");
	PASS("execve, fork, exit, mmap, ptrace: ENOSYS");
}

static void test_halt(void)
{
	int status = lkl_um_halt(k, 10000);

	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
	      "clean power-off, status %#x", status);
	FAILS(lkl_um_call(k, SYS_getpid), ESHUTDOWN);
	lkl_um_close(k, 1000);
	PASS("halt");
}

int main(void)
{
	k = start_kernel(NULL);
	PASS("boot");
	test_getpid();
	test_umask();
	test_open();
	test_read_write();
	test_stat();
	test_mkdir();
	test_as_owner();
	test_nanosleep();
	test_pipe_epoll();
	test_proc_sysfs();
	test_efault();
	test_refused();
	test_halt();
	return 0;
}
