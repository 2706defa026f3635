// SPDX-License-Identifier: MIT
/*
 * Kernels coming and going: two at once are independent, a killed kernel
 * process fails the calls in flight cleanly, and a kernel whose client lets
 * go halts by itself.
 */

#include "helpers.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>


static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void test_two_kernels(void)
{
	struct lkl_um *a = start_kernel(NULL), *b = start_kernel(NULL);
	char *pa = wstr(a, "/only-in-a"), *pb = wstr(b, "/only-in-a");

	CHECK(lkl_um_pid(a) != lkl_um_pid(b), "two processes");
	OK(lkl_um_call(a, SYS_close,
		       OK(lkl_um_call(a, SYS_creat, (long)pa, 0600))));
	FAILS(lkl_um_call(b, SYS_access, (long)pb, F_OK), ENOENT);
	OK(lkl_um_call(a, SYS_access, (long)pa, F_OK));
	CHECK(lkl_um_halt(a, 10000) == 0, "a halts");
	CHECK(OK(lkl_um_call(b, SYS_getpid)) == 1, "b still serves");
	lkl_um_close(a, 1000);
	lkl_um_close(b, 10000);
	PASS("two kernels are independent");
}

static void test_killed_mid_call(void)
{
	struct lkl_um *k = start_kernel("loglevel=6");
	int *fds = lkl_um_alloc(k, 2 * sizeof(int));
	struct pipe_reader r;
	char console[4096];
	double t0;
	int status;

	OK(lkl_um_call(k, SYS_pipe2, (long)fds, 0));
	pipe_reader_start(&r, k, fds[0]);
	usleep(20000);

	t0 = now();
	kill(lkl_um_pid(k), SIGKILL);
	pthread_join(r.thread, NULL);
	CHECK(r.ret == -ESHUTDOWN, "the pending read got %ld", r.ret);
	CHECK(now() - t0 < 3, "and promptly: %.2f s", now() - t0);
	FAILS(lkl_um_call(k, SYS_getpid), ESHUTDOWN);
	FAILS(lkl_um_submit(k, SYS_getpid, (const long[6]){ 0 }, 0),
	      ESHUTDOWN);

	while ((status = lkl_um_exit_status(k)) < 0)
		usleep(1000);
	CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
	      "killed: %#x", status);
	lkl_um_console(k, console, sizeof(console));
	CHECK(strstr(console, "Linux version"), "the console is kept: %s",
	      console);
	lkl_um_close(k, 1000);
	PASS("a killed kernel fails pending and later calls with ESHUTDOWN");
}

static void test_client_lets_go(void)
{
	struct lkl_um *k = start_kernel(NULL);
	pid_t pid = lkl_um_pid(k);
	double t0 = now();
	int status = 0;

	lkl_um_close(k, 0);
	while (waitpid(pid, &status, WNOHANG) == 0) {
		CHECK(now() - t0 < 1, "the kernel process is still there");
		usleep(1000);
	}
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
	      "it powered off cleanly: %#x", status);
	PASS("a kernel whose client lets go halts within a second");
}

static void test_bad_kernel(void)
{
	struct lkl_um_options opts;
	struct lkl_um *k;

	lkl_um_options_init(&opts);
	opts.kernel = "/nonexistent/lkl-um-kernel";
	CHECK(lkl_um_start(&opts, &k) == -ENOENT, "missing executable");
	CHECK(strstr(lkl_um_last_error(), "/nonexistent/lkl-um-kernel"),
	      "the message names it: %s", lkl_um_last_error());

	lkl_um_options_init(&opts);
	opts.cmdline = "mem=1K";
	CHECK(lkl_um_start(&opts, &k) == -ECHILD, "a kernel that cannot boot");
	CHECK(strstr(lkl_um_last_error(), "while booting"),
	      "the message says so: %s", lkl_um_last_error());
	PASS("a kernel that cannot start gives a clear error");
}

int main(void)
{
	test_two_kernels();
	test_killed_mid_call();
	test_client_lets_go();
	test_bad_kernel();
	return 0;
}
