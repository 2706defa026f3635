// SPDX-License-Identifier: MIT
/*
 * bench/boot-syscalls: what a kernel costs to start and to talk to.
 *
 *   boot        spawn to "booted", median of 20 boots
 *   round trip  blocking getpid, p50 and p99 of 100k calls
 *   pipelined   getpid calls/s with 64 in flight
 *   RSS         the kernel process's peak resident memory (mem=64M)
 *
 * The reference in the same run is the host kernel: a getpid system call
 * made directly.  Run it with LKL_UM_KERNEL set (npm run bench:boot does).
 */

#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <lkl_um.h>

#define BOOTS 20
#define ROUND_TRIPS 100000
#define PIPELINED 2000000
#define DEPTH 64

static double now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int by_value(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static struct lkl_um *start(const struct lkl_um_options *opts)
{
	struct lkl_um *k;

	if (lkl_um_start(opts, &k)) {
		fprintf(stderr, "boot-syscalls: %s\n", lkl_um_last_error());
		exit(2);
	}
	return k;
}

static long peak_rss_kib(pid_t pid)
{
	char path[64], line[256];
	long kib = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", pid);
	f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, "VmHWM:", 6))
			kib = atol(line + 6);
	fclose(f);
	return kib;
}

int main(void)
{
	static double samples[ROUND_TRIPS];
	struct lkl_um_completion done[DEPTH];
	struct lkl_um_options opts;
	double boot[BOOTS], t0, host_ns;
	long submitted = 0, completed = 0;
	struct lkl_um *k;
	int i, n;

	lkl_um_options_init(&opts);
	opts.memory = 64 << 20;

	for (i = 0; i < BOOTS; i++) {
		t0 = now_us();
		k = start(&opts);
		boot[i] = now_us() - t0;
		lkl_um_close(k, 10000);
	}
	qsort(boot, BOOTS, sizeof(*boot), by_value);

	k = start(&opts);
	for (i = 0; i < 1000; i++)
		lkl_um_call(k, SYS_getpid);
	for (i = 0; i < ROUND_TRIPS; i++) {
		t0 = now_us();
		lkl_um_call(k, SYS_getpid);
		samples[i] = now_us() - t0;
	}
	qsort(samples, ROUND_TRIPS, sizeof(*samples), by_value);

	t0 = now_us();
	while (completed < PIPELINED) {
		while (submitted < PIPELINED && submitted - completed < DEPTH &&
		       !lkl_um_submit(k, SYS_getpid, (const long[6]){ 0 },
				      submitted))
			submitted++;
		n = lkl_um_reap(k, done, DEPTH);
		completed += n;
	}
	double pipelined = PIPELINED / ((now_us() - t0) / 1e6);

	t0 = now_us();
	for (i = 0; i < ROUND_TRIPS; i++)
		syscall(SYS_getpid);
	host_ns = (now_us() - t0) * 1000 / ROUND_TRIPS;

	long rss = peak_rss_kib(lkl_um_pid(k));
	lkl_um_halt(k, 10000);
	lkl_um_close(k, 1000);

	printf("boot to ready (median of %d):   %8.1f ms   (min %.1f, max %.1f)\n",
	       BOOTS, boot[BOOTS / 2] / 1000, boot[0] / 1000,
	       boot[BOOTS - 1] / 1000);
	printf("getpid round trip p50:        %8.2f us\n",
	       samples[ROUND_TRIPS / 2]);
	printf("getpid round trip p99:        %8.2f us\n",
	       samples[ROUND_TRIPS * 99 / 100]);
	printf("pipelined getpid, %d deep:    %8.0f calls/s\n", DEPTH,
	       pipelined);
	printf("kernel process peak RSS:      %8.1f MiB (mem=64M)\n",
	       rss / 1024.0);
	printf("reference: host getpid        %8.3f us; lkl-um round trip is %.0fx\n",
	       host_ns / 1000, samples[ROUND_TRIPS / 2] * 1000 / host_ns);
	return 0;
}
