// SPDX-License-Identifier: MIT
/*
 * hello: boot a kernel, talk to it, halt it.  The smallest complete use of
 * the client library.
 *
 *   LKL_UM_KERNEL=build/native/bin/lkl-um-kernel build/native/hello
 */

#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include <lkl_um.h>

int main(void)
{
	struct timespec t0, t1;
	struct utsname *uts;
	struct lkl_um *k;
	char *path, *text;
	long fd, n;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	if (lkl_um_start(NULL, &k)) {
		fprintf(stderr, "hello: %s\n", lkl_um_last_error());
		return 2;
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	printf("booted a kernel in %.1f ms, pid %d on the host\n",
	       (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6,
	       lkl_um_pid(k));

	uts = lkl_um_alloc(k, sizeof(*uts));
	lkl_um_call(k, SYS_uname, (long)uts);
	printf("uname: %s %s %s\n", uts->sysname, uts->release, uts->machine);
	printf("getpid inside: %ld\n", lkl_um_call(k, SYS_getpid));

	path = lkl_um_alloc(k, 64);
	text = lkl_um_alloc(k, 64);
	strcpy(path, "/hello.txt");
	strcpy(text, "hello from the host\n");
	fd = lkl_um_call(k, SYS_open, (long)path, O_RDWR | O_CREAT, 0644);
	lkl_um_call(k, SYS_write, fd, (long)text, strlen(text));
	memset(text, 0, 64);
	n = lkl_um_call(k, SYS_pread64, fd, (long)text, 64, 0);
	printf("wrote and read back %s (%ld bytes): %s", path, n, text);
	lkl_um_call(k, SYS_close, fd);

	printf("halt: exit status %d\n", lkl_um_halt(k, 10000));
	lkl_um_close(k, 1000);
	return 0;
}
