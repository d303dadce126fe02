// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * maps_test.bpf.c (tests only): one map of each kind the agent reads and
 * writes (hash, per-CPU array, LPM trie), for the map API tests.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct lpm_key {
	__u32 prefixlen;
	__u8 data[8];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, __u32);
	__type(value, __u64);
} t_hash SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u32);
} t_percpu SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 64);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct lpm_key);
	__type(value, __u32);
} t_lpm SEC(".maps");

SEC("tracepoint/sched/sched_process_exec")
int maps_test_touch(void *ctx)
{
	__u32 k = 0;
	__u32 *v = bpf_map_lookup_elem(&t_percpu, &k);

	if (v)
		*v += 1;
	return 0;
}
