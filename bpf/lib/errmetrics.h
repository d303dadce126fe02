/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * errmetrics.h: count every error a Manul BPF program meets instead of
 * dropping it silently (after Tetragon's bpf/lib/errmetrics.h). Each object
 * that includes this gets its own `manul_errors` per-CPU array; the agent
 * sums it and exports manul_bpf_errors_total{object,kind}.
 */
#ifndef MANUL_ERRMETRICS_H
#define MANUL_ERRMETRICS_H

#include "manul.h"

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MANUL_ERR_MAX);
	__type(key, __u32);
	__type(value, __u64);
} manul_errors SEC(".maps");

static __always_inline void manul_count_err(__u32 kind)
{
	__u64 *v = bpf_map_lookup_elem(&manul_errors, &kind);

	if (v)
		*v += 1;
}

#endif /* MANUL_ERRMETRICS_H */
