// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * ringbuf_consumer.c: the minimal C consumer bench/ringbuf.py compares the
 * Python consumer against. Opens a pinned ring buffer, consumes for N
 * seconds, spinning on libbpf's ring_buffer__consume (no sleeping, so what
 * is measured is the consumer's own cost), touching each record's seq, and
 * prints the count. Built by the benchmark itself with the system cc.
 */
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static uint64_t count, sum;

static int on_event(void *ctx, void *data, size_t size)
{
	(void)ctx;
	if (size >= 24)
		sum += *(uint64_t *)((char *)data + 16);
	count++;
	return 0;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	struct ring_buffer *rb;
	double end;
	int fd;

	if (argc != 3) {
		fprintf(stderr, "usage: %s PINNED_RINGBUF SECONDS\n", argv[0]);
		return 2;
	}
	fd = bpf_obj_get(argv[1]);
	if (fd < 0) {
		perror("bpf_obj_get");
		return 1;
	}
	rb = ring_buffer__new(fd, on_event, NULL, NULL);
	if (!rb) {
		perror("ring_buffer__new");
		return 1;
	}
	printf("ready\n");
	fflush(stdout);
	end = now() + atof(argv[2]);
	while (now() < end)
		ring_buffer__consume(rb);
	ring_buffer__consume(rb);
	printf("%llu %llu\n", (unsigned long long)count, (unsigned long long)sum);
	ring_buffer__free(rb);
	return 0;
}
