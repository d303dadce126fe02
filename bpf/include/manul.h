/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * manul.h: every struct, constant and enum shared between Manul's BPF
 * programs and its Python side.
 *
 * Python mirrors each struct exactly once, in agent/kernel/abi.py (runtime,
 * events) or compiler/layout.py (policy maps), and tests/host/test_abi.py
 * checks every mirror's size and field offsets against the BTF of the
 * compiled objects. Change a struct here and its mirror in the same commit.
 *
 * Rules: fixed-width types only, explicit padding fields, no bitfields.
 */
#ifndef MANUL_H
#define MANUL_H

/* Put `struct NAME` into the object's BTF even when the program only casts
 * to it (ring-buffer records), so the ABI test can check its mirror. */
#define MANUL_BTF_EXPORT(name) \
	const struct name *__manul_btf_##name __attribute__((unused))

#define MANUL_COMM_LEN 16
#define MANUL_PATH_MAX 256

/* ---- Error and drop counters (bpf/lib/errmetrics.h) ------------------------
 * A per-CPU array indexed by enum manul_err. Nothing is dropped silently: a
 * failed reserve or map update is counted here and exported as a metric.
 */
enum manul_err {
	MANUL_ERR_RINGBUF_FULL = 0,	/* bpf_ringbuf_reserve() returned NULL */
	MANUL_ERR_MAP_UPDATE = 1,	/* bpf_map_update_elem() failed */
	MANUL_ERR_READ = 2,		/* a bpf_probe_read*() failed */
	MANUL_ERR_TRUNCATED = 3,	/* data longer than its buffer was cut */
	MANUL_ERR_MAX = 8,
};

/* ---- Ring-buffer events -----------------------------------------------------
 * Every record in every Manul ring buffer starts with this header. `type`
 * says which struct follows; `size` is the record's total length in bytes.
 */
enum manul_event_type {
	MANUL_EV_EXEC = 1,		/* struct manul_exec_event */
	MANUL_EV_BENCH = 2,		/* struct manul_bench_event */
	MANUL_EV_TEST = 3,		/* struct manul_test_event (tests/bpf) */
};

struct manul_event_hdr {
	__u16 type;
	__u16 size;
	__u32 cpu;
	__u64 ktime_ns;
};

/* sched_process_exec: who ran what, in which cgroup (bpf/exec.bpf.c). */
struct manul_exec_event {
	struct manul_event_hdr hdr;
	__u32 pid;			/* thread id in the root pid namespace */
	__u32 tgid;
	__u32 ppid;			/* parent's tgid */
	__u32 uid;
	__u64 cgroup_id;		/* cgroup v2 id == inode of its directory */
	char comm[MANUL_COMM_LEN];
	char filename[MANUL_PATH_MAX];
};

/* The ring-buffer benchmark's payload (bpf/bench.bpf.c). */
struct manul_bench_event {
	struct manul_event_hdr hdr;
	__u64 seq;
	__u64 payload[4];
};

/* Events of the programs under tests/bpf. */
struct manul_test_event {
	struct manul_event_hdr hdr;
	__u32 pid;
	__u32 tgid;
	__u64 cgroup_id;
	__u32 kind;
	__u32 value;
	char comm[MANUL_COMM_LEN];
};

#endif /* MANUL_H */
