// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * ringbuf_mixed.bpf.c (tests only): on each getppid() of one process,
 * writes `count` records whose sizes vary (8..64 bytes, each holding its
 * sequence number) and reserves-then-discards every third one, so the
 * consumer's handling of mixed sizes and discarded records is tested.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#define NR_getppid 110

char LICENSE[] SEC("license") = "Dual BSD/GPL";

const volatile __u32 target_tgid = 0;
const volatile __u32 count = 0;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 16);
} mixed_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64[16]);
} scratch SEC(".maps");

SEC("raw_tracepoint/sys_enter")
int mixed(struct bpf_raw_tracepoint_args *ctx)
{
	__u32 k = 0;
	__u64 *buf;

	if (ctx->args[1] != NR_getppid || target_tgid != bpf_get_current_pid_tgid() >> 32)
		return 0;
	buf = bpf_map_lookup_elem(&scratch, &k);
	if (!buf)
		return 0;
	for (__u32 i = 0; i < 256 && i < count; i++) {
		if (i % 3 == 2) {
			__u64 *r = bpf_ringbuf_reserve(&mixed_events, 24, 0);

			if (r)
				bpf_ringbuf_discard(r, 0);
			continue;
		}
		buf[0] = i;
		bpf_ringbuf_output(&mixed_events, buf, 8 * (1 + (i & 7)), 0);
	}
	return 0;
}
