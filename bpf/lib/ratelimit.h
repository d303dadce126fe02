/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * ratelimit.h: a per-key event budget, checked before bpf_ringbuf_reserve so
 * that one storming workload cannot fill a ring buffer that every workload
 * shares (the other workloads' events keep their own budgets).
 *
 * One token bucket per (key, CPU) in an LRU per-CPU hash of
 * struct manul_rate_bucket: `rate` tokens a second, `burst` at most, one per
 * event. Per CPU, so no locks and no lost updates; a workload may send
 * `rate` events a second on each CPU it runs on (the agent divides a
 * workload's budget by the number of CPUs). An evicted or fresh bucket starts
 * full. What is refused is counted in the bucket (`held`, an atomic add: a
 * sleepable program can be preempted by another task on the same CPU); the
 * caller has already counted the decision itself, so nothing is lost from
 * the metrics, only the event.
 */
#ifndef MANUL_RATELIMIT_H
#define MANUL_RATELIMIT_H

#include "manul.h"

#define MANUL_RATE_NS 1000000000ULL
#define MANUL_RATE_MAX 1000000		/* rate and burst: the agent caps both */
#define MANUL_RATE_IDLE_NS (10 * MANUL_RATE_NS)	/* a longer gap refills as this */

/* Whether the event of `key` may be sent; `rate` 0: no budget, always. */
static __always_inline bool manul_rate_allow(void *buckets, __u64 key, __u32 rate, __u32 burst)
{
	struct manul_rate_bucket *b, fresh = {};
	__u64 now, gap, cap, tokens;

	if (!rate)
		return true;
	if (rate > MANUL_RATE_MAX)
		rate = MANUL_RATE_MAX;
	if (burst < 1)
		burst = 1;
	if (burst > MANUL_RATE_MAX)
		burst = MANUL_RATE_MAX;
	cap = (__u64)burst * MANUL_RATE_NS;
	now = bpf_ktime_get_ns();
	b = bpf_map_lookup_elem(buckets, &key);
	if (!b) {
		fresh.stamp_ns = now;
		fresh.tokens = cap - MANUL_RATE_NS;	/* this event spends one */
		bpf_map_update_elem(buckets, &key, &fresh, BPF_ANY);
		return true;
	}
	/* another CPU created the entry: this CPU's bucket is still zeroed; a task
	 * that preempted us may have stamped it after our `now` */
	if (!b->stamp_ns)
		gap = MANUL_RATE_IDLE_NS;
	else
		gap = now > b->stamp_ns ? now - b->stamp_ns : 0;
	if (gap > MANUL_RATE_IDLE_NS)
		gap = MANUL_RATE_IDLE_NS;
	tokens = b->stamp_ns ? b->tokens : 0;
	tokens += gap * rate;
	if (tokens > cap)
		tokens = cap;
	b->stamp_ns = now;
	if (tokens >= MANUL_RATE_NS) {
		b->tokens = tokens - MANUL_RATE_NS;
		return true;
	}
	b->tokens = tokens;
	__sync_fetch_and_add(&b->held, 1);
	return false;
}

#define MANUL_RATE_NODE 0		/* the node's bucket (cgroup ids are never 0) */

/* Whether the event of `key` may be sent: within the workload's budget
 * (config[0]) and then the node's (config[1]). A refusal by the node's
 * budget is counted as held for the workload too, so that it can be
 * reported as the workload's. */
static __always_inline bool manul_budget_allow(void *buckets, void *config, __u64 key)
{
	struct manul_event_budget *w, *n;
	struct manul_rate_bucket *b;
	__u32 i0 = 0, i1 = 1;

	w = bpf_map_lookup_elem(config, &i0);
	if (w && !manul_rate_allow(buckets, key, w->rate, w->burst))
		return false;
	n = bpf_map_lookup_elem(config, &i1);
	if (n && !manul_rate_allow(buckets, MANUL_RATE_NODE, n->rate, n->burst)) {
		b = bpf_map_lookup_elem(buckets, &key);
		if (b)
			__sync_fetch_and_add(&b->held, 1);
		return false;
	}
	return true;
}

#endif /* MANUL_RATELIMIT_H */
