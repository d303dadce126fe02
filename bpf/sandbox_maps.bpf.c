// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * sandbox_maps.bpf.c: the sandbox policy maps that `manul compile` fills,
 * declared with their key and value structs so that the structs land in
 * BTF (the ABI test checks compiler/layout.py against them), and the two
 * lookups every sandbox hook makes, written once as the layout comments in
 * manul.h describe them. bpf/sandbox.bpf.c (the LSM hooks) folds these in.
 *
 * `sandbox_decide` is a raw tracepoint program that is never attached: user space fills
 * `query` and runs it with BPF_PROG_TEST_RUN to ask the kernel's own LPM
 * tries what they decide, which is how tests compare the reference
 * evaluator (compiler/evaluate.py) with the kernel.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "manul.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

MANUL_BTF_EXPORT(manul_net_range);
MANUL_BTF_EXPORT(manul_sbx_sock_key);
MANUL_BTF_EXPORT(manul_sbx_sock_val);

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, struct manul_sandbox_binding);
} sandbox_cgroups SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct manul_path_key);
	__type(value, struct manul_path_val);
} sandbox_paths SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct manul_net_key);
	__type(value, struct manul_net_val);
} sandbox_net SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, struct manul_sbx_sock_key);
	__type(value, struct manul_sbx_sock_val);
} sandbox_sockets SEC(".maps");

/* One decision: allow and the deciding rule id. */
struct manul_sbx_verdict {
	__u32 allow;
	__u32 rule_id;
};

/* Decide a path action: `key` is filled as manul.h says (prefixlen, sandbox
 * id, the path bytes with their NUL when it fits). */
static __always_inline struct manul_sbx_verdict
manul_sbx_path(const struct manul_path_key *key, __u32 slot)
{
	struct manul_sbx_verdict v = { 0, 0 };
	struct manul_path_val *val;

	if (slot >= MANUL_SBX_PATH_ACTIONS)
		return v;
	val = bpf_map_lookup_elem(&sandbox_paths, key);
	if (!val)
		return v;		/* no entry at all: fail closed */
	v.allow = (val->allow >> slot) & 1;
	v.rule_id = val->rule_id[slot];
	return v;
}

/* Decide openRawSocket for one socket kind (enum manul_sbx_sock_kind). */
static __always_inline struct manul_sbx_verdict
manul_sbx_socket(__u32 sandbox_id, __u32 kind)
{
	struct manul_sbx_verdict v = { 0, 0 };
	struct manul_sbx_sock_key key = { .sandbox_id = sandbox_id, .kind = kind };
	struct manul_sbx_sock_val *val;

	val = bpf_map_lookup_elem(&sandbox_sockets, &key);
	if (!val)
		return v;		/* nothing permits it: default deny */
	v.allow = val->allow;
	v.rule_id = val->rule_id;
	return v;
}

/* Decide a connect: `key` holds the (IPv4-normalised) destination, `port`
 * in host order, `proto_bit` a MANUL_SBX_PROTO_* bit (0 for others). */
static __always_inline struct manul_sbx_verdict
manul_sbx_connect(const struct manul_net_key *key, __u16 port, __u8 proto_bit)
{
	struct manul_sbx_verdict v = { 0, 0 };
	struct manul_net_val *val;
	__u32 i;

	val = bpf_map_lookup_elem(&sandbox_net, key);
	if (!val)
		return v;
	for (i = 0; i < MANUL_SBX_NET_RANGES; i++) {
		if (i >= val->nranges)
			break;
		if (val->range[i].port_lo <= port && port <= val->range[i].port_hi &&
		    (val->range[i].protos & proto_bit)) {
			v.allow = val->range[i].allow;
			v.rule_id = val->range[i].rule_id;
			return v;
		}
	}
	return v;
}

/* The test-run interface: which lookup, its key, and the answer. */
struct manul_sbx_query {
	__u32 kind;			/* 0 = path, 1 = connect, 2 = socket (slot: its kind) */
	__u32 slot;			/* path: enum manul_sbx_path_action */
	__u16 port;			/* connect */
	__u8 proto_bit;			/* connect */
	__u8 pad;
	struct manul_sbx_verdict out;
	struct manul_path_key path;
	struct manul_net_key net;
};

struct manul_sbx_query query;

SEC("raw_tp")
int sandbox_decide(void *ctx)
{
	if (query.kind == 0)
		query.out = manul_sbx_path(&query.path, query.slot);
	else if (query.kind == 1)
		query.out = manul_sbx_connect(&query.net, query.port, query.proto_bit);
	else
		query.out = manul_sbx_socket(query.path.sandbox_id, query.slot);
	return 0;
}
