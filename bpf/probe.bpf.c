// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * probe.bpf.c: one tiny program per kernel mechanism Manul may use.
 * agent/kernel/probe.py loads them one at a time and attaches each, because
 * loading is the only honest test of what a kernel allows (BPF LSM can be
 * compiled in and listed yet refused, as on kernels with lockdown).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} probe_rb SEC(".maps");

SEC("tracepoint/sched/sched_process_exec")
int probe_tracepoint(void *ctx) { return 0; }

SEC("raw_tracepoint/sched_process_exec")
int probe_raw_tracepoint(void *ctx) { return 0; }

SEC("tp_btf/sched_process_exec")
int BPF_PROG(probe_tp_btf, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	return 0;
}

SEC("lsm/file_open")
int BPF_PROG(probe_lsm, struct file *file)
{
	return 0;
}

SEC("fentry/do_unlinkat")
int BPF_PROG(probe_fentry, int dfd, struct filename *name)
{
	return 0;
}

SEC("tracepoint/sched/sched_process_fork")
int probe_ringbuf(void *ctx)
{
	__u64 v = 0;

	bpf_ringbuf_output(&probe_rb, &v, sizeof(v), 0);
	return 0;
}

SEC("cgroup_skb/egress")
int probe_cgroup_skb(struct __sk_buff *skb) { return 1; }

SEC("cgroup/connect4")
int probe_sock_addr(struct bpf_sock_addr *ctx) { return 1; }

SEC("uprobe")
int BPF_KPROBE(probe_uprobe) { return 0; }
