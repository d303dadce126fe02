// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * verifier_reject.bpf.c (tests only): dereferences a map lookup without a
 * NULL check, which the verifier must refuse. Tests that the error names
 * the object and program and carries the verifier log.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} counter SEC(".maps");

SEC("tracepoint/sched/sched_process_exec")
int unchecked_lookup(void *ctx)
{
	__u32 k = 0;
	__u64 *v = bpf_map_lookup_elem(&counter, &k);

	*v += 1;	/* no NULL check: rejected */
	return 0;
}
