// SPDX-License-Identifier: MIT
/*
 * Serving a FUSE session with a polling thread.
 *
 * libfuse's own loop has every idle thread asleep in read() on the device,
 * so each request starts with a wake-up, and on a virtual machine waking a
 * thread whose CPU went idle costs tens of microseconds: more than the
 * kernel takes to do most requests.  Here one thread, the listener, takes
 * the requests (the device is non-blocking): it polls the device for a
 * while before it sleeps, so a program doing one system call after another
 * finds it awake, and it serves what it takes itself.
 *
 * Another thread becomes the listener while the first serves a request
 * that waits for the disk, so that it holds up nothing else: always for an
 * fsync and for a read the server says goes to the disk, and for another
 * large read or write when more requests are waiting behind it.
 * The readahead of a sequential reader is then served in parallel, which
 * keeps several of its reads in flight on the disk.  Handing over
 * on every request instead, as libfuse does, halves the speed of small
 * requests on two CPUs, and a thread polling the device while the one
 * request there is served takes a CPU that the kernel needs.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <linux/fuse.h>

#include "serve.h"

#define POLL_NS 50000		/* how long an idle thread keeps polling */
#define LARGE_IO (64u << 10)	/* reads and writes that may wait */
#define MAX_THREADS 64

struct server {
	const struct fuse_api *api;
	struct fuse_session *se;
	int fuse_fd;
	uint32_t disk_read;		/* aligned reads that cross to the image */
	void (*request_done)(void);	/* after each request, on its thread */
	int stop_fd;			/* readable once we are stopping */
	pthread_mutex_t lock;
	pthread_cond_t idle;		/* threads waiting to listen */
	int listening;			/* a thread listens (under lock) */
	atomic_int stopping;
	atomic_int error;		/* the first failure, a negative errno */
	sem_t finished;			/* a thread saw the session end */
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + ts.tv_nsec;
}

static int over(struct server *s)
{
	return atomic_load(&s->stopping) || s->api->session_exited(s->se);
}

/* A request (> 0), the end of the session (0) or an error (< 0). */
static int receive(struct server *s, struct fuse_buf *buf)
{
	int res = s->api->session_receive_buf(s->se, buf);

	return res == -EINTR ? -EAGAIN : res;
}

/* Listens on the device: polls it for POLL_NS, then sleeps in poll(). */
static int listen_device(struct server *s, struct fuse_buf *buf)
{
	struct pollfd fds[2] = {
		{ .fd = s->fuse_fd, .events = POLLIN },
		{ .fd = s->stop_fd, .events = POLLIN },
	};
	uint64_t until = now_ns() + POLL_NS;

	for (;;) {
		int res;

		if (over(s))
			return 0;
		res = receive(s, buf);
		if (res != -EAGAIN)
			return res;
		if (now_ns() < until) {
			__builtin_ia32_pause();
			continue;
		}
		if (poll(fds, 2, -1) < 0 && errno != EINTR)
			return -errno;
	}
}

/* How long a request may keep its thread: what serving it may wait for. */
enum wait {
	WAITS_NOT,		/* the kernel's caches serve it */
	WAITS_MAYBE,		/* a large read or write: the disk, perhaps */
	WAITS_SURELY,		/* a flush or a read from the disk, a long copy */
};

static enum wait may_wait(const struct server *s, const struct fuse_buf *buf)
{
	const struct fuse_in_header *in = buf->mem;
	const struct fuse_read_in *read = (const void *)(in + 1);
	const void *arg = in + 1;

	if (buf->flags & FUSE_BUF_IS_FD || buf->size < sizeof(*in))
		return WAITS_MAYBE;	/* not ours to look into */
	switch (in->opcode) {
	case FUSE_READ:
		if (buf->size < sizeof(*in) + sizeof(struct fuse_read_in))
			return WAITS_NOT;
		if (s->disk_read && read->size >= s->disk_read &&
		    !((read->size | read->offset) % 4096))
			return WAITS_SURELY;
		return read->size >= LARGE_IO ? WAITS_MAYBE : WAITS_NOT;
	case FUSE_WRITE:
		return buf->size >= sizeof(*in) + sizeof(struct fuse_write_in) &&
		       ((const struct fuse_write_in *)arg)->size >= LARGE_IO ?
			       WAITS_MAYBE : WAITS_NOT;
	case FUSE_FSYNC:
	case FUSE_FSYNCDIR:
	case FUSE_FALLOCATE:
	case FUSE_COPY_FILE_RANGE:
	case FUSE_DESTROY:
		return WAITS_SURELY;
	}
	return WAITS_NOT;
}

static int more_waiting(struct server *s)
{
	struct pollfd fd = { .fd = s->fuse_fd, .events = POLLIN };

	return poll(&fd, 1, 0) > 0;
}

static void take_turn(struct server *s)
{
	pthread_mutex_lock(&s->lock);
	while (s->listening && !atomic_load(&s->stopping))
		pthread_cond_wait(&s->idle, &s->lock);
	s->listening = 1;
	pthread_mutex_unlock(&s->lock);
}

static void hand_over(struct server *s)
{
	pthread_mutex_lock(&s->lock);
	s->listening = 0;
	pthread_cond_signal(&s->idle);
	pthread_mutex_unlock(&s->lock);
}

static void stop(struct server *s, int error)
{
	int none = 0;

	if (error)
		atomic_compare_exchange_strong(&s->error, &none, error);
	atomic_store(&s->stopping, 1);
	pthread_mutex_lock(&s->lock);
	pthread_cond_broadcast(&s->idle);
	pthread_mutex_unlock(&s->lock);
	sem_post(&s->finished);
}

static void *serve_requests(void *arg)
{
	struct server *s = arg;
	struct fuse_buf buf = { 0 };
	int listening = 0, res;
	enum wait wait;

	for (;;) {
		if (!listening)
			take_turn(s);
		listening = 1;
		res = listen_device(s, &buf);
		if (res <= 0)
			break;
		/*
		 * Another thread listens while this one waits: at once for a
		 * flush (whatever comes next would wait for all of it) or a
		 * read from the disk (the reads queued after it are too), and
		 * for a large read or write when requests are queued behind
		 * it (alone, its wait is short, and waking a thread is not).
		 */
		wait = may_wait(s, &buf);
		if (wait == WAITS_SURELY ||
		    (wait == WAITS_MAYBE && more_waiting(s))) {
			hand_over(s);
			listening = 0;
		}
		s->api->session_process_buf(s->se, &buf);
		if (s->request_done)
			s->request_done();
	}
	stop(s, res < 0 ? res : 0);
	free(buf.mem);
	return NULL;
}

/* Worker threads take no signals: libfuse's handlers run on the caller. */
static unsigned int start_threads(struct server *s, pthread_t *threads,
				  unsigned int count)
{
	sigset_t all, old;
	unsigned int started;

	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	for (started = 0; started < count; started++)
		if (pthread_create(&threads[started], NULL, serve_requests, s))
			break;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return started;
}

int fuse_serve(const struct fuse_api *api, struct fuse_session *se,
	       unsigned int threads, unsigned int disk_read,
	       void (*request_done)(void))
{
	struct server s = { .api = api, .se = se, .disk_read = disk_read,
			    .request_done = request_done };
	pthread_t ids[MAX_THREADS];
	unsigned int started, i;
	int flags;

	s.fuse_fd = api->session_fd(se);
	flags = fcntl(s.fuse_fd, F_GETFL);
	if (flags < 0 || fcntl(s.fuse_fd, F_SETFL, flags | O_NONBLOCK) < 0)
		return -errno;
	s.stop_fd = eventfd(0, EFD_CLOEXEC);
	if (s.stop_fd < 0)
		return -errno;
	sem_init(&s.finished, 0, 0);
	pthread_mutex_init(&s.lock, NULL);
	pthread_cond_init(&s.idle, NULL);

	if (threads > MAX_THREADS)
		threads = MAX_THREADS;
	started = start_threads(&s, ids, threads);
	if (!started)
		stop(&s, -EAGAIN);

	/*
	 * Until a thread sees the end, or a signal handler exits the session.
	 * A signal handled just before sem_wait() interrupts nothing: look
	 * again every second.
	 */
	while (!api->session_exited(se)) {
		struct timespec until;

		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += 1;
		if (!sem_timedwait(&s.finished, &until))
			break;
	}
	/* Wakes the listener (poll) and the threads waiting for its turn. */
	if (eventfd_write(s.stop_fd, 1) < 0)
		stop(&s, -errno);
	else
		stop(&s, 0);
	for (i = 0; i < started; i++)
		pthread_join(ids[i], NULL);

	close(s.stop_fd);
	sem_destroy(&s.finished);
	pthread_cond_destroy(&s.idle);
	pthread_mutex_destroy(&s.lock);
	return atomic_load(&s.error);
}
