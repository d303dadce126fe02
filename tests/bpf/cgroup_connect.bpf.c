// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * cgroup_connect.bpf.c (tests only): a cgroup/connect4 program that reports
 * every IPv4 connect of its cgroup and refuses one port, plus a tracepoint
 * on a name that does not exist, to test attach rollback. The host tests
 * use it to check cgroup attach, ring-buffer events and pinning.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "manul.h"
#include "events.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

MANUL_BTF_EXPORT(manul_test_event);

const volatile __u16 deny_port = 0;	/* host byte order; 0 = deny nothing */
const volatile __u32 marker = 0;	/* copied into events: tells builds apart */

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 16);
} test_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u64);
} connects_by_port SEC(".maps");

SEC("cgroup/connect4")
int test_connect4(struct bpf_sock_addr *ctx)
{
	__u32 port = bpf_ntohs(ctx->user_port);
	struct manul_test_event *ev;
	__u64 one = 1, *n;

	n = bpf_map_lookup_elem(&connects_by_port, &port);
	if (n)
		__sync_fetch_and_add(n, 1);
	else if (bpf_map_update_elem(&connects_by_port, &port, &one, BPF_NOEXIST))
		manul_count_err(MANUL_ERR_MAP_UPDATE);

	ev = manul_reserve(&test_events, sizeof(*ev), MANUL_EV_TEST);
	if (ev) {
		ev->pid = (__u32)bpf_get_current_pid_tgid();
		ev->tgid = bpf_get_current_pid_tgid() >> 32;
		ev->cgroup_id = bpf_get_current_cgroup_id();
		ev->kind = marker;
		ev->value = port;
		bpf_get_current_comm(ev->comm, sizeof(ev->comm));
		bpf_ringbuf_submit(ev, 0);
	}
	return deny_port && port == deny_port ? 0 : 1;
}

SEC("tracepoint/manul_no_such_category/no_such_event")
int test_missing_tracepoint(void *ctx)
{
	return 0;
}
