// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * quarantine.bpf.c: cut a shadow agent off from everything but the gateway.
 *
 * Attached at the cgroup v2 root (cgroup/connect4, connect6, sendmsg4,
 * sendmsg6). A process whose cgroup is in `quarantined` may connect (TCP,
 * or UDP with connect()) only to addresses in `quarantine_allow` (the AI
 * gateway and whatever else the operator allows); anything else is refused
 * with EPERM and reported on `quarantine_events`. Unconnected UDP
 * (sendmsg) is refused the same way, except DNS (port 53), so the workload
 * can still resolve the gateway. Other cgroups pay one hash lookup.
 *
 * Every refusal is counted per cgroup (`quarantine_counts`, exact); its event
 * is sent only within the cgroup's budget and the node's
 * (`quarantine_budget_config`, ratelimit.h),
 * so one storming workload cannot fill the ring buffer for the others.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "manul.h"
#include "events.h"
#include "ratelimit.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

MANUL_BTF_EXPORT(manul_quarantine_event);

#define AF_INET 2
#define AF_INET6 10

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);		/* cgroup id */
	__type(value, __u32);		/* 1 */
} quarantined SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct manul_addr_key);
	__type(value, __u32);		/* 1 */
} quarantine_allow SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 18);
} quarantine_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);		/* cgroup id */
	__type(value, __u64);		/* refusals */
} quarantine_counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);		/* [0] per cgroup, [1] the node's */
	__type(key, __u32);
	__type(value, struct manul_event_budget);
} quarantine_budget_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);		/* cgroup id */
	__type(value, struct manul_rate_bucket);
} quarantine_budget SEC(".maps");

/* What the agent has reported of each cgroup's held refusal events (written
 * by the agent only; see sandbox_reported). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, __u64);
} quarantine_reported SEC(".maps");

/* Count the refusal; whether its event may be sent. */
static __always_inline bool count(__u64 cgid)
{
	__u64 *n, one = 1;

	n = bpf_map_lookup_elem(&quarantine_counts, &cgid);
	if (n)
		__sync_fetch_and_add(n, 1);
	else if (bpf_map_update_elem(&quarantine_counts, &cgid, &one, BPF_NOEXIST)) {
		n = bpf_map_lookup_elem(&quarantine_counts, &cgid);
		if (n)
			__sync_fetch_and_add(n, 1);
		else
			manul_count_err(MANUL_ERR_MAP_UPDATE);
	}
	return manul_budget_allow(&quarantine_budget, &quarantine_budget_config, cgid);
}

static __always_inline int check(struct bpf_sock_addr *ctx, bool v6, bool dns_ok)
{
	__u64 cgid = bpf_get_current_cgroup_id();
	struct manul_addr_key key = {};
	struct manul_quarantine_event *ev;
	__u16 port;

	if (!bpf_map_lookup_elem(&quarantined, &cgid))
		return 1;
	port = bpf_ntohs(ctx->user_port);
	if (dns_ok && port == 53)
		return 1;
	key.prefixlen = 128;
	if (v6) {
		/* user_ip6: four __u32 in network order */
		__builtin_memcpy(&key.addr[0], &ctx->user_ip6[0], 4);
		__builtin_memcpy(&key.addr[4], &ctx->user_ip6[1], 4);
		__builtin_memcpy(&key.addr[8], &ctx->user_ip6[2], 4);
		__builtin_memcpy(&key.addr[12], &ctx->user_ip6[3], 4);
	} else {
		__u32 ip4 = ctx->user_ip4;

		key.addr[10] = 0xff;
		key.addr[11] = 0xff;
		__builtin_memcpy(&key.addr[12], &ip4, 4);
	}
	if (bpf_map_lookup_elem(&quarantine_allow, &key))
		return 1;
	if (!count(cgid))
		return 0;
	ev = manul_reserve(&quarantine_events, sizeof(*ev), MANUL_EV_QUARANTINE);
	if (ev) {
		__u64 id = bpf_get_current_pid_tgid();

		ev->cgroup_id = cgid;
		ev->pid = (__u32)id;
		ev->tgid = id >> 32;
		ev->family = v6 ? AF_INET6 : AF_INET;
		ev->dport = port;
		ev->_pad = 0;
		__builtin_memcpy(ev->daddr, key.addr, 16);
		bpf_get_current_comm(ev->comm, sizeof(ev->comm));
		bpf_ringbuf_submit(ev, 0);
	}
	return 0;
}

SEC("cgroup/connect4")
int manul_quarantine_connect4(struct bpf_sock_addr *ctx) { return check(ctx, false, false); }

SEC("cgroup/connect6")
int manul_quarantine_connect6(struct bpf_sock_addr *ctx) { return check(ctx, true, false); }

SEC("cgroup/sendmsg4")
int manul_quarantine_sendmsg4(struct bpf_sock_addr *ctx) { return check(ctx, false, true); }

SEC("cgroup/sendmsg6")
int manul_quarantine_sendmsg6(struct bpf_sock_addr *ctx) { return check(ctx, true, true); }
