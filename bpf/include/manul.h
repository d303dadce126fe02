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
	MANUL_ERR_NO_SCRATCH = 4,	/* a per-CPU scratch lookup failed (denied) */
	MANUL_ERR_NO_PATH = 5,		/* a path could not be resolved (denied) */
	MANUL_ERR_NO_STORAGE = 6,	/* task storage could not be created */
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
	MANUL_EV_TLS = 4,		/* struct manul_tls_event */
	MANUL_EV_QUARANTINE = 5,	/* struct manul_quarantine_event */
	MANUL_EV_SANDBOX = 6,		/* struct manul_sandbox_event */
	MANUL_EV_BEHAVIOUR = 7,		/* struct manul_bl_event */
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

/* ---- TLS discovery (bpf/tls.bpf.c) -------------------------------------------
 * A ClientHello is captured from the first payload byte of a TCP stream up
 * to the end of its handshake message, across segments, at most
 * MANUL_TLS_CAPTURE bytes. The prefix rule (agent/discovery/clienthello.py
 * docstring) decides whether a stream starts with one.
 */
#define MANUL_TLS_CAPTURE 4096		/* bytes of ClientHello kept, at most */
#define MANUL_TLS_BUF (2 * MANUL_TLS_CAPTURE)	/* room for masked offsets */

enum manul_tls_flags {
	MANUL_TLS_COMPLETE = 1,		/* the whole handshake message is here */
	MANUL_TLS_TRUNCATED = 2,	/* cut at MANUL_TLS_CAPTURE */
	MANUL_TLS_MULTISEG = 4,		/* assembled from more than one segment */
	MANUL_TLS_GAP = 8,		/* a sequence gap ended the capture early */
	MANUL_TLS_NO_PROC = 16,		/* no connect() seen: pid/comm unknown */
};

/* Per-socket state (BPF_MAP_TYPE_SK_STORAGE `tls_sk`). A socket whose first
 * payload is not a ClientHello, or whose ClientHello was sent, is DONE:
 * every later packet of it costs this one lookup. */
enum manul_tls_state {
	MANUL_TLS_ST_CAPTURING = 1,
	MANUL_TLS_ST_DONE = 2,
};

struct manul_tls_sk {
	__u32 state;
	__u32 isn;			/* TCP sequence of the first payload byte */
	__u32 got;			/* bytes captured, contiguous from isn */
	__u32 next_rec;			/* stream offset of the next record header */
	__u32 hs_total;			/* handshake message length + 4 */
	__u32 hs_seen;			/* handshake bytes in the records walked */
};

/* Who connected a socket (cgroup/connect4/6, observe only), by cookie. */
struct manul_sock_proc {
	__u32 pid;
	__u32 tgid;
	__u32 uid;
	__u32 _pad;
	__u64 cgroup_id;
	char comm[MANUL_COMM_LEN];
};

/* One captured ClientHello; `len` bytes of `data` follow the fixed part.
 * The record in the ring buffer is sizeof(fixed part) + len bytes long. */
struct manul_tls_event {
	struct manul_event_hdr hdr;
	__u64 cookie;			/* socket cookie */
	__u64 cgroup_id;		/* the socket's cgroup (bpf_skb_cgroup_id) */
	__u32 pid;			/* from the connect hook; 0 if unknown */
	__u32 tgid;
	__u32 uid;
	__u32 flags;			/* enum manul_tls_flags */
	__u16 family;			/* AF_INET or AF_INET6 */
	__u16 sport;			/* host byte order */
	__u16 dport;
	__u16 len;			/* bytes of data */
	__u8 saddr[16];			/* IPv4 in the first 4 bytes */
	__u8 daddr[16];
	char comm[MANUL_COMM_LEN];
	__u8 data[MANUL_TLS_BUF];
};

/* ---- Behaviour (bpf/baseline.bpf.c, agent/baseline) -------------------------
 * What watched workloads do: execs, file opens, outbound connections,
 * Unix-socket connects, listening sockets. The baseline lives in the kernel:
 * an event whose key is in `bl_seen` (exact) or whose path has a prefix in
 * `bl_prefix` (a generalised directory) is counted there and never sent
 * up; a novel one is sent once and its key inserted, so it is counted from
 * then on (docs/baseline.md).
 */
enum manul_bl_kind {
	MANUL_BL_EXEC = 1,		/* path: the new program (resolved) */
	MANUL_BL_READ = 2,		/* path: a file opened for reading only */
	MANUL_BL_WRITE = 3,		/* path: a file opened for writing (maybe reading too) */
	MANUL_BL_CONNECT = 4,		/* addr, port, proto: a TCP connect or a UDP peer */
	MANUL_BL_LISTEN = 5,		/* port, proto: a listening TCP socket */
	MANUL_BL_UNIX = 6,		/* path: a Unix stream socket connected to */
	MANUL_BL_KINDS = 8,
};

/* manul_bl_event.flags */
#define MANUL_BL_F_READ 1		/* the open has FMODE_READ */
#define MANUL_BL_F_WRITE 2		/* ... FMODE_WRITE */
#define MANUL_BL_F_TRUNCATED 4		/* the path was cut at MANUL_PATH_MAX */
#define MANUL_BL_F_PROC_OTHER 8		/* /proc/<pid>/... of another process, as /proc/pid */
#define MANUL_BL_F_SECRET 16		/* the file is a catalogued credential (`bl_secrets`),
					 * whatever its path: sent through `bl_alerts` */
#define MANUL_BL_F_ANON 32		/* no path from the task's root (a memfd, a disconnected
					 * dentry): `path` is /(anonymous)/<its name> */

/* A catalogued credential file on this node, by inode (`bl_secrets`: user
 * space stats the catalogue's paths): a hard link, a bind mount or a
 * /proc/<pid>/root path to it is still that file. `dev` is the kernel's
 * encoding of the super block's s_dev (major << 20 | minor). */
struct manul_bl_inode {
	__u64 ino;
	__u32 dev;
	__u32 _pad;
};

/* Whose baseline an event is checked against: `bl_watch` maps a cgroup to a
 * scope, and a process is in the scope of its nearest listed cgroup or
 * ancestor. Registered agents get MANUL_BL_SCOPE_AGENT | a number of the
 * agent's (one baseline for all its pods); with --baseline all, an unlisted
 * cgroup is its own scope (its id). Scope 0 in `bl_watch` means never. */
#define MANUL_BL_SCOPE_AGENT (1ULL << 63)
#define MANUL_BL_MAX_LEVEL 16		/* ancestors looked at, at most */

/* The exact baseline key (`bl_seen`, an LRU hash: key -> times seen). Unused
 * fields are zero: a path event has no address, a network event no path. */
struct manul_bl_key {
	__u64 scope;
	__u32 kind;			/* enum manul_bl_kind */
	__u16 port;			/* connect: the peer's; listen: the local one; host order */
	__u8 proto;			/* IPPROTO_TCP or IPPROTO_UDP */
	__u8 secret;			/* 1: a credential by inode (never a learned key) */
	__u8 addr[16];			/* connect: the peer, IPv4 as ::ffff:a.b.c.d */
	char path[MANUL_PATH_MAX];	/* exec, read, write, unix: NUL-padded */
};

/* A generalised directory (`bl_prefix`, an LPM trie -> the directory's
 * length with its '/'): every path event of (scope, kind) for a file
 * directly in `path` is known (not in its subdirectories). prefixlen counts bits of the data
 * after it: 96 for scope and kind, then 8 per byte of path. */
#define MANUL_BL_PREFIX_MAX 240
struct manul_bl_prefix {
	__u32 prefixlen;
	__u8 scope[8];			/* little-endian, as in memory */
	__u32 kind;
	char path[MANUL_BL_PREFIX_MAX];
};

/* A file already judged for a scope (`bl_files`, an LRU hash -> 1): the next
 * open of the same (dentry, mount) skips the path walk. The inode and its
 * generation make a reused dentry of another file a different key. User
 * space drops a scope's entries when it forgets the scope. */
struct manul_bl_file {
	__u64 scope;
	__u64 dentry;
	__u64 mnt;
	__u64 ino;
	__u32 generation;
	__u32 kind;
};

/* Per-CPU counters (`bl_stats`, indexed by enum manul_bl_kind): one lookup
 * per event counts it. */
struct manul_bl_counts {
	__u64 seen;			/* events of watched workloads */
	__u64 sent;			/* novel: sent to user space */
	__u64 known;			/* in the baseline: counted, not sent */
	__u64 lost;			/* novel, but the ring buffer was full */
};

struct manul_bl_event {
	struct manul_event_hdr hdr;
	struct manul_bl_key key;
	__u64 cgroup_id;		/* the process's own cgroup */
	__u32 pid;
	__u32 tgid;
	__u32 ppid;			/* the parent's tgid */
	__u32 uid;
	__u32 flags;			/* MANUL_BL_F_* */
	__u32 dev;			/* path events: the file's (kernel encoding), else 0 */
	__u64 ino;			/* ... and its inode */
	char comm[MANUL_COMM_LEN];
	char pcomm[MANUL_COMM_LEN];	/* the parent's */
};

/* ---- Quarantine (bpf/quarantine.bpf.c) ---------------------------------------
 * Workloads in `quarantined` (cgroup id -> 1) may connect only to addresses
 * in `quarantine_allow` (the gateway); anything else is refused (EPERM)
 * and reported.
 */
struct manul_addr_key {			/* LPM key: prefixlen counts bits of `addr` */
	__u32 prefixlen;
	__u8 addr[16];			/* IPv4 as ::ffff:a.b.c.d */
};

struct manul_quarantine_event {
	struct manul_event_hdr hdr;
	__u64 cgroup_id;
	__u32 pid;
	__u32 tgid;
	__u16 family;
	__u16 dport;
	__u32 _pad;
	__u8 daddr[16];
	char comm[MANUL_COMM_LEN];
};

/* ---- Sandbox enforcement (bpf/sandbox.bpf.c, agent/sandbox) ------------------
 * The hooks decide with the policy maps of the next section; what they
 * report, and the small state agent/sandbox keeps pinned beside those maps
 * so that a restarted agent recovers what it applied (docs/sandbox.md).
 *
 * Kernel sandbox ids are the policy maps' `sandbox_id`: one per applied
 * generation, so a new generation is written beside the old one and each
 * cgroup is flipped to it with one update of `sandbox_cgroups`.
 */
#define MANUL_SBX_NAME_LEN	128
#define MANUL_SBX_POLICIES_LEN	240
#define MANUL_SBX_MAX_LEVEL	63	/* deepest cgroup level a binding may have */

/* manul_sandbox_event.action: the path slots (enum manul_sbx_path_action),
 * then connect, raw sockets, and Manul's built-in confinement. */
#define MANUL_SBX_CONNECT	4
#define MANUL_SBX_RAW_SOCKET	5	/* openRawSocket: a raw IP or packet socket */
#define MANUL_SBX_CONFINE	6	/* built in: ptrace, mount, chroot, user namespaces */

/* manul_sandbox_event.op: which operation asked (audit records name it). */
enum manul_sbx_op {
	MANUL_SBX_OP_OPEN = 0,		/* file_open */
	MANUL_SBX_OP_EXEC = 1,		/* bprm_check_security */
	MANUL_SBX_OP_MMAP = 2,		/* mmap_file with PROT_EXEC */
	MANUL_SBX_OP_MPROTECT = 3,	/* file_mprotect adding PROT_EXEC */
	MANUL_SBX_OP_CREATE = 4,	/* path_mknod: O_CREAT, mknod, mkfifo */
	MANUL_SBX_OP_MKDIR = 5,
	MANUL_SBX_OP_UNLINK = 6,
	MANUL_SBX_OP_RMDIR = 7,
	MANUL_SBX_OP_SYMLINK = 8,
	MANUL_SBX_OP_LINK = 9,
	MANUL_SBX_OP_RENAME = 10,
	MANUL_SBX_OP_TRUNCATE = 11,
	MANUL_SBX_OP_CHMOD = 12,
	MANUL_SBX_OP_CHOWN = 13,
	MANUL_SBX_OP_CONNECT = 14,	/* connect(), io_uring connect, TFO */
	MANUL_SBX_OP_SENDMSG = 15,	/* sendmsg/sendto with an address */
	MANUL_SBX_OP_SOCKET = 16,	/* socket(): raw IP or packet */
	MANUL_SBX_OP_PTRACE = 17,	/* ptrace, process_vm_*, /proc/PID/mem, pidfd_getfd */
	MANUL_SBX_OP_MOUNT = 18,	/* mount, move_mount, pivot_root */
	MANUL_SBX_OP_CHROOT = 19,
	MANUL_SBX_OP_USERNS = 20,	/* creating a user namespace */
	MANUL_SBX_OP_SETXATTR = 21,
	MANUL_SBX_OP_UTIMES = 22,
	MANUL_SBX_OP_IOCTL = 23,	/* file attribute ioctls: chattr, fsxattr */
};

enum manul_sbx_verdict_kind {
	MANUL_SBX_DENIED = 1,		/* the operation was refused */
	MANUL_SBX_WOULD_DENY = 2,	/* allowed: audit mode, or audit-only mechanism */
};

enum manul_sbx_mechanism {
	MANUL_SBX_M_LSM = 1,		/* BPF LSM hook */
	MANUL_SBX_M_CGROUP = 2,		/* cgroup connect/sendmsg hook */
	MANUL_SBX_M_TRACEPOINT = 3,	/* tracepoint after the fact: audit only */
};

enum manul_sbx_event_flags {
	MANUL_SBX_EV_TRUNCATED = 1,	/* path longer than manul_sandbox_event.path */
	MANUL_SBX_EV_NO_PATH = 2,	/* the path could not be resolved (denied) */
	MANUL_SBX_EV_DEGRADED = 4,	/* enforce mode, but this mechanism only reports */
	MANUL_SBX_EV_REFER = 8,		/* link/rename: the new name would grant more */
	MANUL_SBX_EV_SUBTREE = 16,	/* a directory rename: rights below it differ (EXDEV) */
};

/* One deny or would-deny (ring buffer `sandbox_events`). */
struct manul_sandbox_event {
	struct manul_event_hdr hdr;
	__u64 cgroup_id;		/* the task's cgroup */
	__u64 bound_cgroup_id;		/* the cgroup (itself or an ancestor) bound */
	__u64 generation;		/* of the sandbox that decided */
	__u32 pid;
	__u32 tgid;
	__u32 ppid;			/* parent's tgid */
	__u32 uid;
	__u32 sandbox_id;
	__u32 rule_id;			/* 0: nothing permitted (default deny) */
	__u8 action;			/* enum manul_sbx_path_action or MANUL_SBX_CONNECT */
	__u8 verdict;			/* enum manul_sbx_verdict_kind */
	__u8 enforce;			/* 1: binding in enforce mode, 0: audit */
	__u8 mechanism;			/* enum manul_sbx_mechanism */
	__u8 proto;			/* connect: MANUL_SBX_PROTO_* bit, 0 = other */
	__u8 flags;			/* enum manul_sbx_event_flags */
	__u16 family;			/* connect: AF_INET or AF_INET6 */
	__u16 port;			/* connect: host byte order */
	__u16 path_len;			/* file/exec: resolved length (may exceed path) */
	__u8 op;			/* enum manul_sbx_op */
	__u8 _pad[3];
	__u8 addr[16];			/* connect: IPv4 in the first 4 bytes; socket: family, type */
	char comm[MANUL_COMM_LEN];
	char path[MANUL_PATH_MAX];	/* file/exec: resolved path, NUL-terminated */
};

/* sandbox_config: BPF_MAP_TYPE_ARRAY, one element. `level_mask` bit L says
 * some binding is a cgroup at level L (the root is level 0); the hooks look
 * up the task's ancestors only at those levels, deepest first, between
 * min_level and max_level. Python's counters live here too, so that they
 * survive a restart. */
struct manul_sandbox_config {
	__u64 level_mask;
	__u32 min_level;
	__u32 max_level;
	__u64 generation;		/* the last generation applied */
	__u64 _reserved;
};

/* sandbox_counts: BPF_MAP_TYPE_PERCPU_HASH, what was decided -> __u64. Every
 * deny and would-deny is counted here before its event is reserved, so the
 * counts are exact whether or not the event reaches user space (ring buffer
 * full, or held back by the per-cgroup event budget). */
struct manul_sbx_count_key {
	__u64 bound_cgroup_id;
	__u64 generation;		/* of the sandbox that decided */
	__u32 sandbox_id;
	__u32 rule_id;			/* 0: default deny */
	__u8 action;
	__u8 verdict;			/* enum manul_sbx_verdict_kind */
	__u8 enforce;
	__u8 mechanism;
	__u32 _pad;
};

/* sandbox_totals: BPF_MAP_TYPE_PERCPU_ARRAY, one element: every decision by
 * (action, verdict, mode), exact even when sandbox_counts is full, and what
 * did not become an event. Slot: action * 4 + (verdict - 1) * 2 + enforce. */
#define MANUL_SBX_TOTAL_SLOTS 64
struct manul_sbx_totals {
	__u64 decisions[MANUL_SBX_TOTAL_SLOTS];
	__u64 held;			/* not sent: the bound cgroup's event budget was spent */
	__u64 untracked;		/* not in sandbox_counts: it was full */
};

/* Event budgets (bpf/lib/ratelimit.h): `sandbox_budget_config` and
 * `quarantine_budget_config`, BPF_MAP_TYPE_ARRAY of two: [0] what each
 * workload (bound or quarantined cgroup) may send per CPU, [1] what the node
 * may send per CPU in all. Rate 0: no limit. */
struct manul_event_budget {
	__u32 rate;			/* events a second */
	__u32 burst;			/* at most this many at once */
};

/* A per-key event budget (bpf/lib/ratelimit.h): one token bucket per key and
 * CPU, in a BPF_MAP_TYPE_LRU_PERCPU_HASH. Tokens are kept in billionths. */
struct manul_rate_bucket {
	__u64 stamp_ns;			/* last refill (bpf_ktime_get_ns); 0: fresh */
	__u64 tokens;			/* 1e9 = one event */
	__u64 held;			/* events refused so far (never reset) */
};

/* sandbox_meta: BPF_MAP_TYPE_HASH, kernel sandbox id -> what it is. The
 * hooks read `generation` for events; the rest is for the agent. */
struct manul_sandbox_meta {
	__u64 generation;
	__u64 applied_ns;		/* CLOCK_REALTIME */
	__u32 npaths;			/* entries written to sandbox_paths */
	__u32 nnet;			/* entries written to sandbox_net */
	__u32 nrules;
	__u32 flags;			/* MANUL_SBX_F_* it was applied with */
	__u8 digest[32];		/* sha256 of the compiler's inputs */
	char name[MANUL_SBX_NAME_LEN];	/* the compiled sandbox, e.g. Agent::"a" */
	char target[MANUL_SBX_NAME_LEN];	/* what it was applied to */
};

/* sandbox_rules: BPF_MAP_TYPE_HASH, (generation, rule id) -> the Cedar
 * policy @ids it stands for, comma-separated (agent only). */
struct manul_sandbox_rule_key {
	__u64 generation;
	__u32 rule_id;
	__u32 _pad;
};

struct manul_sandbox_rule {
	__u8 effect;			/* 1 = permit, 2 = forbid */
	__u8 truncated;			/* 1: `policies` was cut */
	__u16 npolicies;
	char policies[MANUL_SBX_POLICIES_LEN];
};

/* sandbox_bound: BPF_MAP_TYPE_HASH, cgroup id -> how the agent bound it
 * (agent only; the hooks read sandbox_cgroups). */
struct manul_sandbox_bound {
	__u64 bound_ns;			/* CLOCK_REALTIME */
	__u32 level;			/* cgroup level (root = 0) */
	__u32 _pad;
	char path[MANUL_SBX_NAME_LEN];	/* relative to the cgroup v2 root */
	char target[MANUL_SBX_NAME_LEN];	/* cgroup path or workload name */
};

/* ---- Sandbox policy maps (compiler/layout.py) ------------------------------
 * The kernel half of `manul compile`. The compiler (compiler/) turns Cedar
 * sandbox policies into entries of the maps below; agent/sandbox writes
 * them; bpf/sandbox.bpf.c reads them from BPF LSM hooks (cgroup connect and
 * sendmsg hooks where LSM cannot load). docs/policy.md has the policy view.
 *
 * A *sandbox* is one principal (an Agent, an anonymous member of an
 * AgentClass, or `default`) with a numeric id >= 1 in every key. Cedar's
 * rules are resolved at compile time: forbid beats permit, anything not
 * permitted is denied, per action, and every LPM entry already carries the
 * verdicts of all shorter prefixes that match it. So the BPF side makes ONE
 * lookup per decision and never combines entries.
 *
 * How a hook decides:
 *  1. Sandbox. Look up the task's cgroup id in `sandbox_cgroups`; if it
 *     misses, look up its ancestors (bpf_get_current_ancestor_cgroup_id)
 *     and take the deepest binding, so a child cgroup cannot escape. No
 *     binding: not sandboxed, allow. MANUL_SBX_F_ENFORCE clear: decide and
 *     report, but allow (audit mode).
 *  2. Key. Build the key below from what the hook sees (a resolved path,
 *     or family + address); one bpf_map_lookup_elem() on the LPM map.
 *  3. Verdict. A miss is a deny (fail closed); the compiler writes a root
 *     entry (prefixlen = 32 for paths, 64 for each address family) for
 *     every sandbox, so a miss means the sandbox id has no entries at all.
 *     `rule_id` names the deciding policies (CompiledSandbox.rules maps it
 *     to Cedar @ids); 0 = nothing permitted (Cedar's default deny).
 *  4. Errno. file: -ENOENT (the file looks absent); exec and loadLibrary:
 *     -EPERM; connect: -ECONNREFUSED (cgroup fallback: bpf_set_retval()
 *     where the kernel has it, else the hook's -EPERM).
 */
#define MANUL_SBX_LPM_DATA_MAX	256	/* the kernel's LPM_DATA_SIZE_MAX */
#define MANUL_SBX_PATH_BYTES	252	/* LPM data minus the sandbox id */
#define MANUL_SBX_PATH_ACTIONS	4
#define MANUL_SBX_NET_RANGES	16

/* Slots of manul_path_val: rule_id[] index and `allow` bit number. */
enum manul_sbx_path_action {
	MANUL_SBX_READ = 0,		/* readFile: file_open with FMODE_READ */
	MANUL_SBX_WRITE = 1,		/* writeFile: file_open with FMODE_WRITE */
	MANUL_SBX_EXEC = 2,		/* exec: bprm_check_security */
	MANUL_SBX_LOAD_LIBRARY = 3,	/* loadLibrary: mmap_file/file_mprotect with PROT_EXEC */
};

#define MANUL_SBX_PROTO_TCP	1	/* manul_net_range.protos bits */
#define MANUL_SBX_PROTO_UDP	2
#define MANUL_SBX_F_ENFORCE	1	/* manul_sandbox_binding.flags */

/* sandbox_cgroups: BPF_MAP_TYPE_HASH, key __u64 cgroup id (the inode of the
 * cgroup v2 directory), value below; max_entries 4096 suggested. Written by
 * agent/sandbox when a workload starts; the compiler does not fill it. */
struct manul_sandbox_binding {
	__u32 sandbox_id;
	__u32 flags;			/* MANUL_SBX_F_* */
};

/* sandbox_paths: BPF_MAP_TYPE_LPM_TRIE (BPF_F_NO_PREALLOC), key and value
 * below; max_entries 65536 suggested. Decides readFile, writeFile, exec and
 * loadLibrary on the path the kernel resolved (d_path from the task's root:
 * absolute, symlinks resolved, no `.`/`..`).
 *
 *   byte 0    4           8                                   8+252
 *        | prefixlen | sandbox_id | path bytes ...                 |
 *
 * Entries (prefixlen counts bits of sandbox_id + path):
 *   exact `/a/b`      path = "/a/b\0"  prefixlen = 32 + 8 * 5
 *   prefix `/a/b*`    path = "/a/b"    prefixlen = 32 + 8 * 4
 *   root (`*`)        path = ""        prefixlen = 32
 * The NUL inside an exact key's prefix is what keeps `/a/b` from matching
 * `/a/bc`. So an exact path is at most 251 bytes, a prefix at most 252;
 * the compiler refuses longer ones.
 *
 * sub_or and sub_and summarise the entries that extend this one (their
 * keys start with this key): a lookup of `D/` that lands here bounds the
 * rights of every path below directory D, which is how a directory rename
 * is decided without walking the tree (bpf/sandbox.bpf.c, sbx_refer).
 *
 * Lookup: resolve the path into a scratch buffer (bpf_d_path, up to
 * PATH_MAX; failure: deny), copy n = min(strlen + 1, 252) bytes (the NUL
 * included when it fits) to key.path, prefixlen = 32 + 8 * n. A path cut
 * at 252 bytes is still decided exactly: no entry is longer than 252.
 * Allowed iff every needed slot's bit is set in `allow` (O_RDWR needs READ
 * and WRITE). An open with FMODE_EXEC is the exec itself: decide it as
 * EXEC in bprm_check_security, not as a read.
 */
struct manul_path_key {
	__u32 prefixlen;
	__u32 sandbox_id;		/* host byte order, always fully matched */
	__u8 path[MANUL_SBX_PATH_BYTES];
};

struct manul_path_val {
	__u32 rule_id[MANUL_SBX_PATH_ACTIONS];	/* per slot; 0 = default deny */
	__u8 allow;			/* bit (1 << slot): 1 = allow */
	__u8 sub_or;			/* OR of `allow` over this entry and every entry below it */
	__u8 sub_and;			/* AND of the same: what every path below has */
	__u8 pad;
};

/* sandbox_net: BPF_MAP_TYPE_LPM_TRIE (BPF_F_NO_PREALLOC), key and value
 * below; max_entries 16384 suggested. Decides connectNetwork.
 *
 *   byte 0    4           8          12                  28
 *        | prefixlen | sandbox_id | family | addr[16]      |
 *
 * Entries: prefixlen = 64 + CIDR bits; family AF_INET (2) or AF_INET6
 * (10); addr in network byte order, IPv4 in addr[0..3], the rest zero.
 * Host names in policies are resolved by the agent and compiled to /32 and
 * /128 entries.
 *
 * Lookup: an IPv4-mapped IPv6 destination (::ffff:a.b.c.d) is looked up as
 * AF_INET a.b.c.d; prefixlen = 64 + 32 (IPv4) or 64 + 128 (IPv6). The value
 * holds up to 16 port ranges, disjoint in (port, protocol) and sorted by
 * port_lo; gaps are denied with rule 0:
 *
 *   bit = TCP ? MANUL_SBX_PROTO_TCP : UDP ? MANUL_SBX_PROTO_UDP : 0;
 *   for (i = 0; i < MANUL_SBX_NET_RANGES && i < v->nranges; i++)
 *       if (v->range[i].port_lo <= port && port <= v->range[i].port_hi &&
 *           (v->range[i].protos & bit))
 *           return v->range[i].allow;     (rule: v->range[i].rule_id)
 *   return deny;                           (rule 0)
 *
 * port is in host byte order (bpf_ntohs of the sockaddr's). Protocols other
 * than TCP and UDP match no range and are denied.
 */
struct manul_net_key {
	__u32 prefixlen;
	__u32 sandbox_id;		/* host byte order, always fully matched */
	__u32 family;			/* AF_INET or AF_INET6, always fully matched */
	__u8 addr[16];
};

struct manul_net_range {
	__u16 port_lo;			/* inclusive, host byte order */
	__u16 port_hi;			/* inclusive */
	__u8 protos;			/* MANUL_SBX_PROTO_* bits */
	__u8 allow;			/* 1 = allow, 0 = deny (by a forbid: rule_id) */
	__u16 pad;
	__u32 rule_id;
};

struct manul_net_val {
	__u32 nranges;			/* ranges in use, <= MANUL_SBX_NET_RANGES */
	struct manul_net_range range[MANUL_SBX_NET_RANGES];
};

/* sandbox_sockets: BPF_MAP_TYPE_HASH, key below, value manul_sbx_sock_val;
 * max_entries 8192 suggested. Decides openRawSocket: socket() of a raw IP
 * socket (AF_INET/AF_INET6, SOCK_RAW) or a packet socket (AF_PACKET) in a
 * sandbox. A miss is a deny with rule 0 (nothing permitted it). */
enum manul_sbx_sock_kind {
	MANUL_SBX_SOCK_RAW = 1,		/* SocketKind::"raw" */
	MANUL_SBX_SOCK_PACKET = 2,	/* SocketKind::"packet" */
};

struct manul_sbx_sock_key {
	__u32 kind;			/* enum manul_sbx_sock_kind */
	__u32 sandbox_id;		/* at offset 4, as in every policy map key */
};

struct manul_sbx_sock_val {
	__u32 allow;			/* 1 = allow */
	__u32 rule_id;
};

#endif /* MANUL_H */
