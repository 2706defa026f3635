// SPDX-License-Identifier: MIT
/*
 * Calls in flight at once: a blocked call does not hold up the others,
 * many threads call at once, asynchronous calls complete, and the maximum
 * number of calls in flight is enforced.
 */

#include "helpers.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <unistd.h>


static struct lkl_um *k;

/* A read of an empty pipe blocks in the kernel; getpid behind it does not. */
static void test_blocked_call(void)
{
	int *fds = lkl_um_alloc(k, 2 * sizeof(int));
	char *data = wstr(k, "wake up");
	struct pipe_reader r;
	int i;

	OK(lkl_um_call(k, SYS_pipe2, (long)fds, 0));
	pipe_reader_start(&r, k, fds[0]);
	usleep(20000);
	for (i = 0; i < 100; i++)
		CHECK(OK(lkl_um_call(k, SYS_getpid)) == 1, "getpid");
	CHECK(r.ret == -1, "the read has not returned");
	OK(lkl_um_call(k, SYS_write, fds[1], (long)data, 8));
	pthread_join(r.thread, NULL);
	CHECK(r.ret == 8 && !strcmp(r.buf, "wake up"), "read %ld", r.ret);
	OK(lkl_um_call(k, SYS_close, fds[0]));
	OK(lkl_um_call(k, SYS_close, fds[1]));
	PASS("a blocked read does not stop getpid behind it");
}

#define THREADS 16
#define CALLS_PER_THREAD 2000

static void *hammer(void *arg)
{
	long id = (long)arg, i;
	char name[32];
	char *path, *buf = lkl_um_alloc(k, 16);
	long fd;

	snprintf(name, sizeof(name), "/thread-%ld", id);
	path = wstr(k, name);
	fd = OK(lkl_um_call(k, SYS_open, (long)path, O_RDWR | O_CREAT, 0600));
	for (i = 0; i < CALLS_PER_THREAD; i++) {
		*(long *)buf = id * 1000000 + i;
		CHECK(OK(lkl_um_call(k, SYS_pwrite64, fd, (long)buf, 8, 0)) ==
		      8, "pwrite");
		*(long *)buf = 0;
		CHECK(OK(lkl_um_call(k, SYS_pread64, fd, (long)buf, 8, 0)) ==
		      8, "pread");
		CHECK(*(long *)buf == id * 1000000 + i, "thread %ld read %ld",
		      id, *(long *)buf);
	}
	OK(lkl_um_call(k, SYS_close, fd));
	lkl_um_free(k, path);
	lkl_um_free(k, buf);
	return NULL;
}

static void test_threads(void)
{
	pthread_t t[THREADS];
	long i;

	for (i = 0; i < THREADS; i++)
		pthread_create(&t[i], NULL, hammer, (void *)i);
	for (i = 0; i < THREADS; i++)
		pthread_join(t[i], NULL);
	PASS("16 threads calling at once");
}

static void test_async(void)
{
	struct lkl_um_completion c[64];
	struct pollfd pfd = { .fd = lkl_um_event_fd(k), .events = POLLIN };
	long seen = 0, sum = 0, i;
	int n;

	for (i = 0; i < 1000; i++)
		OK(lkl_um_submit(k, SYS_getppid, (const long[6]){ 0 }, i));
	while (seen < 1000) {
		n = lkl_um_reap(k, c, 64);
		if (!n) {
			CHECK(poll(&pfd, 1, 5000) == 1, "event fd timed out");
			continue;
		}
		for (i = 0; i < n; i++) {
			CHECK(c[i].ret == 0, "getppid of pid 1 is 0");
			sum += c[i].tag;
		}
		seen += n;
	}
	CHECK(sum == 999 * 1000 / 2, "every tag once: %ld", sum);
	CHECK(lkl_um_in_flight(k) == 0, "nothing in flight");
	PASS("1000 asynchronous calls");
}

static void test_in_flight_limit(void)
{
	struct lkl_um_completion c[64];
	int submitted = 0, n, err;

	while (!(err = lkl_um_submit(k, SYS_getpid, (const long[6]){ 0 },
				     submitted)))
		submitted++;
	CHECK(err == -EAGAIN && submitted == 1024, "limit at %d: %d",
	      submitted, err);
	while (submitted) {
		n = lkl_um_reap(k, c, 64);
		if (!n)
			usleep(100);
		submitted -= n;
	}
	PASS("the in-flight limit gives EAGAIN");
}

int main(void)
{
	k = start_kernel(NULL);
	test_blocked_call();
	test_threads();
	test_async();
	test_in_flight_limit();
	lkl_um_close(k, 10000);
	return 0;
}
