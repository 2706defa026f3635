/* SPDX-License-Identifier: MIT */
/*
 * What the C tests share: starting a kernel, checking results, reporting.
 *
 * A test program runs its cases in order and exits 0 when all passed, 1
 * when one failed.  The kernel executable comes from LKL_UM_KERNEL (ctest
 * sets it); without it a test fails, saying so.
 */

#ifndef LKLUM_TEST_HELPERS_H
#define LKLUM_TEST_HELPERS_H

#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>

#include <lkl_um.h>

#define CHECK(cond, ...)                                                   \
	do {                                                               \
		if (!(cond)) {                                             \
			fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__,      \
				__LINE__, #cond);                          \
			fprintf(stderr, __VA_ARGS__);                      \
			fputc('\n', stderr);                               \
			exit(1);                                           \
		}                                                          \
	} while (0)

/* A system call that must succeed; its value. */
#define OK(call)                                                           \
	({                                                                 \
		long ret_ = (call);                                        \
		CHECK(ret_ >= 0, "%s returned %ld (%s)", #call, ret_,     \
		      strerror((int)-ret_));                               \
		ret_;                                                      \
	})

/* A system call that must fail with -err. */
#define FAILS(call, err)                                                   \
	do {                                                               \
		long ret_ = (call);                                        \
		CHECK(ret_ == -(err), "%s returned %ld, wanted -%s",       \
		      #call, ret_, #err);                                  \
	} while (0)

static inline struct lkl_um *start_kernel(const char *cmdline)
{
	struct lkl_um_options opts;
	struct lkl_um *k;
	int err;

	lkl_um_options_init(&opts);
	opts.cmdline = cmdline;
	err = lkl_um_start(&opts, &k);
	CHECK(!err, "lkl_um_start: %s", lkl_um_last_error());
	return k;
}

/* Copies @s into a new window buffer. */
static inline char *wstr(struct lkl_um *k, const char *s)
{
	char *p = lkl_um_alloc(k, strlen(s) + 1);

	CHECK(p, "window full");
	return strcpy(p, s);
}

#define PASS(name) printf("ok %s\n", (name))

/* A read of a pipe in a thread of its own, which blocks until written. */
struct pipe_reader {
	struct lkl_um *k;
	int fd;
	char *buf;
	long ret;
	pthread_t thread;
};

static inline void *pipe_reader_run(void *arg)
{
	struct pipe_reader *r = arg;

	r->ret = lkl_um_call(r->k, SYS_read, r->fd, (long)r->buf, 8);
	return NULL;
}

static inline void pipe_reader_start(struct pipe_reader *r,
				     struct lkl_um *k, int fd)
{
	*r = (struct pipe_reader){ .k = k, .fd = fd, .ret = -1,
				   .buf = lkl_um_alloc(k, 8) };
	pthread_create(&r->thread, NULL, pipe_reader_run, r);
}

#endif
