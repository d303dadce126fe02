// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * exec.bpf.c: one event per successful exec (sched_process_exec), with the
 * process, its parent and its cgroup. Feeds workload attribution and the
 * behavioural baseline.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "manul.h"
#include "events.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

MANUL_BTF_EXPORT(manul_exec_event);

/* Only report execs in this cgroup's subtree when non-zero (set before load). */
const volatile __u64 filter_cgroup_id = 0;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} exec_events SEC(".maps");

SEC("tracepoint/sched/sched_process_exec")
int manul_exec(struct trace_event_raw_sched_process_exec *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task_btf();
	struct manul_exec_event *ev;
	__u64 cgid = bpf_get_current_cgroup_id();
	unsigned int off;

	if (filter_cgroup_id && cgid != filter_cgroup_id)
		return 0;

	ev = manul_reserve(&exec_events, sizeof(*ev), MANUL_EV_EXEC);
	if (!ev)
		return 0;
	ev->pid = (__u32)bpf_get_current_pid_tgid();
	ev->tgid = bpf_get_current_pid_tgid() >> 32;
	ev->ppid = BPF_CORE_READ(task, real_parent, tgid);
	ev->uid = (__u32)bpf_get_current_uid_gid();
	ev->cgroup_id = cgid;
	bpf_get_current_comm(ev->comm, sizeof(ev->comm));
	off = ctx->__data_loc_filename & 0xFFFF;
	if (bpf_probe_read_kernel_str(ev->filename, sizeof(ev->filename),
				      (void *)ctx + off) < 0) {
		manul_count_err(MANUL_ERR_READ);
		ev->filename[0] = 0;
	}
	bpf_ringbuf_submit(ev, 0);
	return 0;
}
