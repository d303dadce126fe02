/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * ratelimit.h: a per-key event budget, checked before bpf_ringbuf_reserve so
 * that one storming workload cannot fill a ring buffer that every workload
 * shares (the other workloads' events keep their own budgets).
 *
 * One token bucket per (key, CPU) in an LRU per-CPU hash of
 * struct manul_rate_bucket: `rate` tokens a second, `burst` at most, one per
 * event. Per CPU, so no locks and no lost updates; a workload may send
 * `rate` events a second on each CPU it runs on. An evicted or fresh bucket
 * starts full. What is refused is counted in the bucket (`held`); the
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
	/* another CPU created the entry: this CPU's bucket is still zeroed */
	gap = b->stamp_ns ? now - b->stamp_ns : MANUL_RATE_IDLE_NS;
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
	b->held += 1;
	return false;
}

#endif /* MANUL_RATELIMIT_H */
