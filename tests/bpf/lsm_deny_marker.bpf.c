// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * lsm_deny_marker.bpf.c (kernel tests only, needs BPF LSM): refuses to open
 * one marker file (by inode and device) for processes of one cgroup only.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

#define EACCES 13

char LICENSE[] SEC("license") = "Dual BSD/GPL";

const volatile __u64 target_cgroup_id = 0;
const volatile __u64 marker_ino = 0;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} denials SEC(".maps");

SEC("lsm/file_open")
int BPF_PROG(deny_marker_open, struct file *file)
{
	__u32 k = 0;
	__u64 *n;

	if (bpf_get_current_cgroup_id() != target_cgroup_id)
		return 0;
	if (BPF_CORE_READ(file, f_inode, i_ino) != marker_ino)
		return 0;
	n = bpf_map_lookup_elem(&denials, &k);
	if (n)
		__sync_fetch_and_add(n, 1);
	return -EACCES;
}
