// SPDX-License-Identifier: MIT
/*
 * Kernels coming and going: two at once are independent, a killed kernel
 * process fails the calls in flight cleanly, a kernel whose client lets
 * go halts by itself, and timer ticks while it halts do not crash it.
 */

#include "helpers.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/syscall.h>
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
	CHECK(now() - t0 < 30, "and promptly: %.2f s", now() - t0);
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
		/* (Well under a second here; a loaded machine may be slower.) */
		CHECK(now() - t0 < 10, "the kernel process is still there");
		usleep(1000);
	}
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
	      "it powered off cleanly: %#x", status);
	PASS("a kernel whose client lets go halts by itself");
}

struct ticker {
	pthread_t thread;
	int pidfd;		/* the kernel process: never a pid reused */
	atomic_int stop;
};

/* Sends the kernel process SIGALRM, its timer's signal, every 20 us. */
static void *tick(void *arg)
{
	struct ticker *t = arg;

	while (!atomic_load(&t->stop) &&
	       syscall(SYS_pidfd_send_signal, t->pidfd, SIGALRM, NULL, 0) == 0)
		usleep(20);
	return NULL;
}

/*
 * A tick that comes while the kernel powers off was handled after the
 * halt, on the host's stack, and the kernel panicked ("Segfault with no
 * mm"); about one halt in three did, ticked this fast.
 */
static void test_ticks_while_halting(void)
{
	int i;

	for (i = 0; i < 30; i++) {
		struct lkl_um *k = start_kernel(NULL);
		char console[4096];
		struct ticker t = {
			.pidfd = (int)syscall(SYS_pidfd_open, lkl_um_pid(k), 0),
		};
		int ret;

		CHECK(t.pidfd >= 0, "pidfd_open: %s", strerror(errno));
		CHECK(pthread_create(&t.thread, NULL, tick, &t) == 0,
		      "a ticking thread");
		usleep(2000);	/* ticks while it serves, too */
		ret = lkl_um_halt(k, 10000);
		atomic_store(&t.stop, 1);
		pthread_join(t.thread, NULL);
		close(t.pidfd);
		lkl_um_console(k, console, sizeof(console));
		CHECK(ret == 0, "halt %d of 30 (status %#x): %s", i + 1,
		      lkl_um_exit_status(k), console);
		lkl_um_close(k, 1000);
	}
	PASS("timer ticks while the kernel halts do not crash it");
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
	test_ticks_while_halting();
	test_bad_kernel();
	return 0;
}
