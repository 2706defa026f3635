// SPDX-License-Identifier: GPL-2.0-only
/*
 * lkl-um-kernel: the kernel process.
 *
 * The client library spawns it; it is not meant to be run by hand:
 *
 *   lkl-um-kernel --window=FD,ADDRESS --channel=FD [--poll-us=N]
 *                 [--disk=FD[,ro]]... -- [KERNEL ARGUMENT]...
 *
 * --window   the window memfd, and the address the client mapped it at: we
 *            map it at the same one (LKL_UM_EXIT_WINDOW_TAKEN if we cannot,
 *            and the client retries elsewhere)
 * --channel  our end of the doorbell socket pair
 * --poll-us  how long the idle kernel polls for calls before it sleeps
 * --disk     a disk image, there from boot: a virtio-blk disk (vda, vdb, ...
 *            in order); ",ro" makes it read-only
 *
 * The console is fd 2, as the client set it up; fd 1 goes there too.  Then
 * the kernel boots with the given command line and serves the client until
 * it halts, or until the client goes away.
 */

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/personality.h>
#include <sys/stat.h>
#include <unistd.h>

#include "host.h"

#define DEFAULT_POLL_US 50
#define MAX_BOOT_DISKS 16

static void usage(const char *why)
{
	fprintf(stderr, "lkl-um-kernel: %s\n"
		"usage: lkl-um-kernel --window=FD,ADDRESS --channel=FD "
		"[--poll-us=N] [--disk=FD[,ro]]... -- [KERNEL ARGUMENT]...\n"
		"The kernel process of lkl-um; the client library starts it.\n",
		why);
	exit(LKL_UM_EXIT_USAGE);
}

static int parse_fd(const char *s)
{
	char *end;
	long fd = strtol(s, &end, 10);

	if (end == s || *end || fd < 0 || fd > 65535 ||
	    fcntl((int)fd, F_GETFD) < 0)
		usage("not an open file descriptor");
	return (int)fd;
}

/*
 * Maps the window at the client's address; exits when that fails.  Its fd
 * stays open in @window_fd: the kernel maps the window again as physical memory.
 */
static struct lkl_um_window *map_window(const char *spec, int *window_fd)
{
	struct lkl_um_window *w;
	unsigned long long addr;
	char fd_text[16], *end;
	const char *comma;
	struct stat st;
	void *p;
	int fd;

	/* Parsed by hand: the kernel, linked in, brings its own sscanf(). */
	comma = strchr(spec, ',');
	if (!comma || comma == spec || comma - spec >= (long)sizeof(fd_text))
		usage("--window wants FD,ADDRESS");
	memcpy(fd_text, spec, comma - spec);
	fd_text[comma - spec] = 0;
	fd = parse_fd(fd_text);
	addr = strtoull(comma + 1, &end, 0);
	if (end == comma + 1 || *end)
		usage("--window wants FD,ADDRESS");
	if (fstat(fd, &st) < 0 || st.st_size < (off_t)sizeof(*w))
		exit(LKL_UM_EXIT_BAD_WINDOW);

	p = mmap((void *)(uintptr_t)addr, st.st_size, PROT_READ | PROT_WRITE,
		 MAP_SHARED | MAP_FIXED_NOREPLACE, fd, 0);
	if (p == MAP_FAILED)
		exit(errno == EEXIST ? LKL_UM_EXIT_WINDOW_TAKEN :
				       LKL_UM_EXIT_BAD_WINDOW);
	if (p != (void *)(uintptr_t)addr) /* a kernel without NOREPLACE */
		exit(LKL_UM_EXIT_WINDOW_TAKEN);
	fcntl(fd, F_SETFD, FD_CLOEXEC);
	*window_fd = fd;

	w = p;
	if (w->magic != LKL_UM_MAGIC || w->version != LKL_UM_PROTOCOL_VERSION ||
	    w->base != addr || w->size != (uint64_t)st.st_size) {
		fprintf(stderr, "lkl-um-kernel: not a window of protocol %u\n",
			LKL_UM_PROTOCOL_VERSION);
		exit(LKL_UM_EXIT_BAD_WINDOW);
	}
	return w;
}

static void parse_disk(const char *spec, struct lklum_disk_arg *disk)
{
	char fd_text[16];
	const char *comma = strchr(spec, ',');
	size_t len = comma ? (size_t)(comma - spec) : strlen(spec);

	if (len == 0 || len >= sizeof(fd_text) || (comma && strcmp(comma, ",ro")))
		usage("--disk wants FD or FD,ro");
	memcpy(fd_text, spec, len);
	fd_text[len] = 0;
	disk->fd = parse_fd(fd_text);
	disk->readonly = comma != NULL;
	fcntl(disk->fd, F_SETFD, FD_CLOEXEC);
}

/*
 * UML's physical memory runs from the binary to 4 MiB past the start of
 * the host's heap, and the host puts the heap of a binary linked where
 * ours is anywhere in the gigabyte after it.  The struct pages of that gap
 * came out of the kernel's memory: up to 16 MiB of it, a different amount
 * in each run.  So the kernel process runs without address randomisation
 * (exec'ing itself again once): its heap right after the binary, and the
 * same memory in every run.  The binary itself was never randomised.
 */
static void without_random_layout(char **argv, char **envp)
{
	int persona = personality(0xffffffff);
	char self[PATH_MAX];
	ssize_t n;

	/* By its name: "exe" would become the process's name. */
	n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n < 0 || persona < 0 || persona & ADDR_NO_RANDOMIZE ||
	    personality((unsigned long)persona | ADDR_NO_RANDOMIZE) < 0)
		return;
	self[n] = '\0';
	execve(self, argv, envp);
	personality((unsigned long)persona);	/* could not: as we are */
}

int main(int argc, char **argv, char **envp)
{
	static struct lklum_disk_arg disks[MAX_BOOT_DISKS];
	const struct um_lib_host_ops *ops;
	unsigned int nr_disks = 0;
	struct lkl_um_window *window = NULL;
	unsigned int poll_us = DEFAULT_POLL_US;
	int channel_fd = -1, window_fd = -1;
	char **kernel_argv;
	int i, kernel_argc, ret;

	without_random_layout(argv, envp);
	for (i = 1; i < argc && strcmp(argv[i], "--"); i++) {
		if (!strncmp(argv[i], "--window=", 9))
			window = map_window(argv[i] + 9, &window_fd);
		else if (!strncmp(argv[i], "--channel=", 10))
			channel_fd = parse_fd(argv[i] + 10);
		else if (!strncmp(argv[i], "--poll-us=", 10))
			poll_us = (unsigned int)strtoul(argv[i] + 10, NULL, 10);
		else if (!strncmp(argv[i], "--disk=", 7) &&
			 nr_disks < MAX_BOOT_DISKS)
			parse_disk(argv[i] + 7, &disks[nr_disks++]);
		else
			usage("unknown option");
	}
	if (!window || channel_fd < 0)
		usage("--window and --channel are required");
	fcntl(channel_fd, F_SETFD, FD_CLOEXEC);

	/* UML's own messages go to stdout: send them to the console too. */
	dup2(2, 1);

	/*
	 * The kernel command line: argv[0], our console, a tmpfs as the root
	 * (xattrs, ACLs, a size limit: ramfs has none of them), then what
	 * follows "--", which may override both.
	 */
	static char *defaults[] = { "console=host", "rootfstype=tmpfs" };
	const int nr_defaults = sizeof(defaults) / sizeof(defaults[0]);

	kernel_argc = 1 + nr_defaults + (i < argc ? argc - i - 1 : 0);
	kernel_argv = calloc(kernel_argc + 1, sizeof(*kernel_argv));
	if (!kernel_argv)
		return 1;
	kernel_argv[0] = argv[0];
	memcpy(kernel_argv + 1, defaults, sizeof(defaults));
	memcpy(kernel_argv + 1 + nr_defaults, argv + i + 1,
	       (kernel_argc - 1 - nr_defaults) * sizeof(*kernel_argv));

	ops = lklum_channel_init(window, window_fd, channel_fd, poll_us, disks,
				 nr_disks);
	ret = uml_library_main(ops, kernel_argc, kernel_argv, envp);
	lklum_channel_halted();
	return ret;
}
