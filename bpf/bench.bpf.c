// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * bench.bpf.c: the event source of bench/ringbuf.py. On each getppid() of
 * one target process it writes `burst` records to a ring buffer, so the
 * consumer, not the syscall rate, is what the benchmark measures. Reserve
 * failures are counted like everywhere else (errmetrics.h).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "manul.h"
#include "events.h"

#define NR_getppid 110	/* x86_64 */
#define MAX_BURST 256

char LICENSE[] SEC("license") = "Dual BSD/GPL";

MANUL_BTF_EXPORT(manul_bench_event);

/* [0] = target tgid, [1] = records per syscall (<= MAX_BURST),
 * [2] = 1 to submit without waking the consumer (it spins), 0 for the
 * default adaptive wake-up. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 3);
	__type(key, __u32);
	__type(value, __u32);
} bench_cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22);
} bench_events SEC(".maps");

SEC("raw_tracepoint/sys_enter")
int manul_bench(struct bpf_raw_tracepoint_args *ctx)
{
	__u32 k0 = 0, k1 = 1, k2 = 2, *tgid, *burst, *nowake;
	__u64 flags;
	__u64 seq = bpf_ktime_get_ns();

	if (ctx->args[1] != NR_getppid)
		return 0;
	tgid = bpf_map_lookup_elem(&bench_cfg, &k0);
	burst = bpf_map_lookup_elem(&bench_cfg, &k1);
	nowake = bpf_map_lookup_elem(&bench_cfg, &k2);
	if (!tgid || !burst || !nowake || *tgid != bpf_get_current_pid_tgid() >> 32)
		return 0;
	flags = *nowake ? BPF_RB_NO_WAKEUP : 0;
	for (int i = 0; i < MAX_BURST && i < *burst; i++) {
		struct manul_bench_event *ev;

		ev = manul_reserve(&bench_events, sizeof(*ev), MANUL_EV_BENCH);
		if (!ev)
			continue;
		ev->seq = seq + i;
		ev->payload[0] = i;
		bpf_ringbuf_submit(ev, flags);
	}
	return 0;
}
