// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * sandbox.bpf.c: enforce compiled Cedar sandboxes on file open, exec and
 * connect, per cgroup.
 *
 * The policy maps, their two lookups (manul_sbx_path, manul_sbx_connect)
 * and their layouts come from sandbox_maps.bpf.c (folded in below) and the
 * "Sandbox policy maps" section of manul.h. Every hook here is a few lines
 * that hand off to one matcher:
 *
 *   binding  the task's cgroup, else its deepest bound ancestor, in
 *            `sandbox_cgroups` (only levels `sandbox_config` says are bound);
 *            none: not sandboxed, allow at once;
 *   key      the resolved path (bpf_d_path from the task's root) or the
 *            destination (IPv4-mapped IPv6 as IPv4);
 *   verdict  one LPM lookup; a deny (or an unresolvable path) is reported
 *            on `sandbox_events` and refused in enforce mode: -ENOENT for a
 *            file, -EPERM for exec, -ECONNREFUSED for a connection.
 *
 * Programs, by mechanism (agent/sandbox/kernel.py loads one set;
 * docs/sandbox.md has the threat model, operation by operation):
 *   BPF LSM   files: file_open (read/write from f_mode; FMODE_EXEC opens
 *             are the exec's own), and every operation that changes what a
 *             path names, as writeFile: path_mknod (O_CREAT, before the file
 *             exists), path_mkdir, path_unlink, path_rmdir, path_symlink,
 *             path_truncate, path_chmod, path_chown, and the dentry-only
 *             inode_setattr (times), inode_setxattr, inode_removexattr
 *             (sbx_write_dentry: every mount that names it); path_link and
 *             path_rename also refuse a new name that would grant more than
 *             the old one ("refer", sbx_refer).
 *             exec: bprm_check_security; mmap_file / file_mprotect with
 *             PROT_EXEC need exec or loadLibrary, except the kernel's own
 *             mappings during a permitted execve (task storage, sbx_exec).
 *             network: socket_connect (connect, io_uring connect,
 *             TCP_FASTOPEN_CONNECT), socket_sendmsg (MSG_FASTOPEN and any
 *             non-UDP datagram with an address), cgroup/sendmsg4/6 (UDP),
 *             socket_create (raw IP and packet sockets: openRawSocket).
 *             confinement (built in): ptrace_access_check (ptrace,
 *             process_vm_*, /proc/PID/mem of a process outside the
 *             sandbox), sb_mount, move_mount, sb_pivotroot, path_chroot,
 *             userns_create: a sandboxed process cannot change what its
 *             paths resolve to.
 *   fallback  cgroup/connect4/6 (TFO included: pre_connect runs them),
 *             sendmsg4/6, sock_create (raw IP sockets; packet sockets are
 *             out of its reach), same maps, same answers; files and exec
 *             from tracepoints after the fact (sys_exit_open*,
 *             sched_process_exec), which can only report (would-deny
 *             events flagged DEGRADED).
 *
 * Fail closed: a scratch buffer that cannot be had, a path that cannot be
 * resolved, task storage that cannot be created: denied and counted in
 * manul_errors (exported as manul_bpf_errors_total).
 *
 * Paths: bpf_d_path() in file_open and bprm_check_security (in the
 * kernel's sleepable LSM hook set, which is what bpf_d_path_allowed()
 * checks). Everywhere else (hooks that get a directory and a dentry, or a
 * dentry alone, and the tracepoints) the path is walked through d_parent /
 * mnt_parent (sbx_walk), as d_path does: at most MANUL_WALK_DEPTH components,
 * each cut at NAME_MAX; a deeper path cannot be resolved and is denied.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "manul.h"
#include "events.h"
#include "pathwalk.h"
#include "ratelimit.h"
/* The policy maps and their lookups (also built alone for the layout tests). */
#include "sandbox_maps.bpf.c"

MANUL_BTF_EXPORT(manul_sandbox_event);

#define AF_UNSPEC 0
#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define IPPROTO_MPTCP 262
#define ENOENT 2
#define EPERM 1
#define ECONNREFUSED 111
#define FMODE_READ 0x1
#define FMODE_WRITE 0x2
#define FMODE_EXEC 0x20
#define __FMODE_EXEC 0x20		/* the same bit, in f_flags */
#define EXDEV 18
#define PROT_EXEC 0x4
#define VM_EXEC 0x4
#define MSG_FASTOPEN 0x20000000
#define SOCK_TYPE_MASK 0xf
#define SOCK_RAW 3
#define SOCK_PACKET 10
#define AF_PACKET 17
#define IPPROTO_UDPLITE 136
#define PTRACE_MODE_ATTACH 0x02
#define RENAME_EXCHANGE (1 << 1)
#define S_IFMT 00170000
#define S_IFDIR 0040000
#define SBX_ALL_SLOTS ((1U << MANUL_SBX_PATH_ACTIONS) - 1)

#define SBX_PATH_BUF MANUL_WALK_BUF	/* PATH_MAX: what bpf_d_path may write */
#define SBX_PATH_MASK (SBX_PATH_BUF - 1)

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct manul_sandbox_config);
} sandbox_config SEC(".maps");

/* Exact counts (manul.h): per (bound cgroup, generation, rule, action,
 * verdict, mode, mechanism), and per (action, verdict, mode) in total. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct manul_sbx_count_key);
	__type(value, __u64);
} sandbox_counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct manul_sbx_totals);
} sandbox_totals SEC(".maps");

/* What the agent has reported of each bound cgroup's held events (written by
 * the agent only), so that a restarted agent reports what was held while no
 * agent ran, and nothing twice. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);		/* bound cgroup id */
	__type(value, __u64);		/* held events reported */
} sandbox_reported SEC(".maps");

/* The event budgets (manul.h, struct manul_event_budget): [0] per bound
 * cgroup, [1] the node's; and their buckets (ratelimit.h). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct manul_event_budget);
} sandbox_budget_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);		/* bound cgroup id */
	__type(value, struct manul_rate_bucket);
} sandbox_budget SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);		/* kernel sandbox id */
	__type(value, struct manul_sandbox_meta);
} sandbox_meta SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct manul_sandbox_rule_key);
	__type(value, struct manul_sandbox_rule);
} sandbox_rules SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);		/* cgroup id */
	__type(value, struct manul_sandbox_bound);
} sandbox_bound SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22);
} sandbox_events SEC(".maps");

/* Per-CPU scratch: the LPM key (prefixlen, sandbox id) directly followed
 * by the path buffer, so the resolved path is the key's data in place. */
struct sbx_scratch {
	__u32 prefixlen;
	__u32 sandbox_id;
	char path[SBX_PATH_BUF];
	char walk[MANUL_WALK_SIZE];	/* the tracepoints' walk, built backwards (pathwalk.h) */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sbx_scratch);
} sbx_scratch SEC(".maps");

/* Who is asking: the binding that applies and the cgroup it belongs to. */
struct sbx_who {
	__u64 bound_cgroup_id;
	__u32 sandbox_id;
	__u32 flags;
};

/* The deepest binding of the current task's cgroup or its ancestors. */
static __always_inline bool sbx_bound(struct sbx_who *who)
{
	struct manul_sandbox_config *cfg;
	struct manul_sandbox_binding *b;
	__u32 zero = 0, i, lvl;
	__u64 id;

	cfg = bpf_map_lookup_elem(&sandbox_config, &zero);
	if (!cfg || !cfg->level_mask)
		return false;
	for (i = 0; i <= MANUL_SBX_MAX_LEVEL; i++) {
		lvl = cfg->max_level - i;
		if (lvl < cfg->min_level || lvl > MANUL_SBX_MAX_LEVEL)
			break;
		if (!(cfg->level_mask & (1ULL << lvl)))
			continue;
		id = bpf_get_current_ancestor_cgroup_id(lvl);
		if (!id)
			continue;	/* the task sits above this level */
		b = bpf_map_lookup_elem(&sandbox_cgroups, &id);
		if (b) {
			who->bound_cgroup_id = id;
			who->sandbox_id = b->sandbox_id;
			who->flags = b->flags;
			return true;
		}
	}
	return false;
}

static __always_inline struct sbx_scratch *sbx_scratch_get(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&sbx_scratch, &zero);
}


/* A permitted execve in progress: its new mm, so that the kernel's own
 * mappings of the binary and its ELF interpreter (mmap_file during
 * load_elf_binary) are not decided again as loadLibrary. Set in
 * bprm_check_security when the exec is permitted, cleared when the exec
 * completes (sched_process_exec). A failed exec leaves the task on its old
 * mm, which never equals the freed bprm->mm, so nothing carries over. */
struct sbx_exec_state {
	__u64 mm;
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct sbx_exec_state);
} sbx_exec SEC(".maps");

/* Stacked file systems. overlayfs (every container's root) does its own
 * work on its layers -- copy-up opens, attributes and xattrs, the real
 * file behind an open -- with its mounter's credentials, from inside an
 * operation on the overlay that a hook here has already decided; those
 * inner calls name the layers, not anything the sandbox's policy names,
 * and are not decided again. They are recognised by the credentials: the
 * task's effective cred is overridden (cred != real_cred) and is the
 * creator_cred of an overlay a sandboxed task has reached through a hook
 * here (noted in sbx_walk and on write opens, before any inner call can
 * happen: copy-ups follow only writes and attribute changes), with the same
 * fsuid and effective capabilities as when noted. A task cannot install
 * another task's cred as its own, so this is not a way around a sandbox;
 * io_uring personalities are the task's own earlier creds. */
#define OVERLAYFS_SUPER_MAGIC 0x794c7630

struct ovl_fs___manul {
	const struct cred *creator_cred;
} __attribute__((preserve_access_index));

struct sbx_stack_cred {
	__u64 sb;			/* the overlay's super block, for debugging */
	__u64 cap_effective;
	__u32 fsuid;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);		/* struct cred * */
	__type(value, struct sbx_stack_cred);
} sbx_stack_creds SEC(".maps");

static __always_inline void sbx_cred_id(const struct cred *cred, struct sbx_stack_cred *v)
{
	v->fsuid = BPF_CORE_READ(cred, fsuid.val);
	bpf_probe_read_kernel(&v->cap_effective, sizeof(v->cap_effective),
			      (void *)cred + bpf_core_field_offset(struct cred, cap_effective));
}

/* Note the creator cred of the overlay `sb`, if it is one. */
static __always_inline void sbx_note_stack(struct super_block *sb)
{
	struct sbx_stack_cred v = {};
	struct ovl_fs___manul *ofs;
	const struct cred *cred;
	__u64 key;

	if (!bpf_core_type_exists(struct ovl_fs___manul))
		return;		/* overlay is not loaded: its inner calls are decided (fail closed) */
	if (BPF_CORE_READ(sb, s_magic) != OVERLAYFS_SUPER_MAGIC)
		return;
	ofs = BPF_CORE_READ(sb, s_fs_info);
	cred = BPF_CORE_READ(ofs, creator_cred);
	if (!cred)
		return;
	key = (__u64)cred;
	if (bpf_map_lookup_elem(&sbx_stack_creds, &key))
		return;
	v.sb = (__u64)sb;
	sbx_cred_id(cred, &v);
	bpf_map_update_elem(&sbx_stack_creds, &key, &v, BPF_ANY);
}

/* Whether this call is a stacked file system's own work (see above). */
static __always_inline bool sbx_stacked(void)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	const struct cred *cred = BPF_CORE_READ(task, cred);
	struct sbx_stack_cred *known, now = {};
	__u64 key = (__u64)cred;

	if (cred == BPF_CORE_READ(task, real_cred))
		return false;
	known = bpf_map_lookup_elem(&sbx_stack_creds, &key);
	if (!known)
		return false;
	sbx_cred_id(cred, &now);
	return now.fsuid == known->fsuid && now.cap_effective == known->cap_effective;
}

/* What is being decided, for the report. */
struct sbx_ask {
	__u8 action;			/* path slot, MANUL_SBX_CONNECT, ... */
	__u8 op;			/* enum manul_sbx_op */
	__u8 mechanism;
	__u8 flags;			/* enum manul_sbx_event_flags */
	__u32 rule_id;
};

/* Count one decision, exactly (sandbox_counts, sandbox_totals); false: the
 * bound cgroup's event budget is spent, so no event is sent for it. */
static __always_inline bool sbx_count(const struct sbx_who *who, const struct sbx_ask *a,
				      __u64 generation, __u8 verdict, bool enforce)
{
	struct manul_sbx_count_key k = {};
	struct manul_sbx_totals *t;
	__u64 *n, one = 1;
	__u32 zero = 0, slot;

	k.bound_cgroup_id = who->bound_cgroup_id;
	k.generation = generation;
	k.sandbox_id = who->sandbox_id;
	k.rule_id = a->rule_id;
	k.action = a->action;
	k.verdict = verdict;
	k.enforce = enforce;
	k.mechanism = a->mechanism;
	t = bpf_map_lookup_elem(&sandbox_totals, &zero);
	if (t) {
		slot = (__u32)a->action * 4 + (verdict == MANUL_SBX_DENIED ? 0 : 2) + enforce;
		barrier_var(slot);	/* keep the mask: the verifier needs the bound */
		slot &= MANUL_SBX_TOTAL_SLOTS - 1;
		/* atomic: a sleepable hook may be preempted on this CPU */
		__sync_fetch_and_add(&t->decisions[slot], 1);
	}
	n = bpf_map_lookup_elem(&sandbox_counts, &k);
	if (n) {
		__sync_fetch_and_add(n, 1);
	} else if (bpf_map_update_elem(&sandbox_counts, &k, &one, BPF_NOEXIST)) {
		n = bpf_map_lookup_elem(&sandbox_counts, &k);	/* another CPU made it */
		if (n)
			__sync_fetch_and_add(n, 1);
		else if (t)
			__sync_fetch_and_add(&t->untracked, 1);
	}
	if (manul_budget_allow(&sandbox_budget, &sandbox_budget_config, who->bound_cgroup_id))
		return true;
	if (t)
		__sync_fetch_and_add(&t->held, 1);
	return false;
}

/* Report one deny or would-deny. `s` (may be NULL) holds the path. */
static __always_inline void sbx_report(const struct sbx_who *who, const struct sbx_ask *a,
				       struct sbx_scratch *s, long path_len,
				       const struct manul_net_key *net, __u16 port, __u8 proto)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct manul_sandbox_meta *meta;
	struct manul_sandbox_event *ev;
	bool enforce = who->flags & MANUL_SBX_F_ENFORCE;
	__u64 id = bpf_get_current_pid_tgid(), generation;
	__u8 verdict = (enforce && a->mechanism != MANUL_SBX_M_TRACEPOINT) ?
		MANUL_SBX_DENIED : MANUL_SBX_WOULD_DENY;

	meta = bpf_map_lookup_elem(&sandbox_meta, &who->sandbox_id);
	generation = meta ? meta->generation : 0;
	if (!sbx_count(who, a, generation, verdict, enforce))
		return;
	ev = manul_reserve(&sandbox_events, sizeof(*ev), MANUL_EV_SANDBOX);
	if (!ev)
		return;
	ev->cgroup_id = bpf_get_current_cgroup_id();
	ev->bound_cgroup_id = who->bound_cgroup_id;
	ev->generation = generation;
	ev->pid = (__u32)id;
	ev->tgid = id >> 32;
	ev->ppid = BPF_CORE_READ(task, real_parent, tgid);
	ev->uid = (__u32)bpf_get_current_uid_gid();
	ev->sandbox_id = who->sandbox_id;
	ev->rule_id = a->rule_id;
	ev->action = a->action;
	ev->op = a->op;
	ev->enforce = enforce;
	ev->mechanism = a->mechanism;
	ev->flags = a->flags;
	if (a->mechanism == MANUL_SBX_M_TRACEPOINT && enforce)
		ev->flags |= MANUL_SBX_EV_DEGRADED;
	ev->verdict = verdict;
	ev->proto = proto;
	ev->family = 0;
	ev->port = port;
	ev->path_len = 0;
	ev->_pad[0] = ev->_pad[1] = ev->_pad[2] = 0;
	__builtin_memset(ev->addr, 0, sizeof(ev->addr));
	ev->path[0] = 0;
	if (net) {
		ev->family = net->family;
		__builtin_memcpy(ev->addr, net->addr, sizeof(ev->addr));
	}
	if (s && path_len > 0) {
		ev->path_len = path_len > 0xffff ? 0xffff : path_len - 1;
		if (path_len > MANUL_PATH_MAX)
			ev->flags |= MANUL_SBX_EV_TRUNCATED;
		if (bpf_probe_read_kernel_str(ev->path, sizeof(ev->path), s->path) < 0)
			manul_count_err(MANUL_ERR_READ);
	}
	bpf_get_current_comm(ev->comm, sizeof(ev->comm));
	bpf_ringbuf_submit(ev, 0);
}

/* The answer to a deny: -err in enforce mode under an enforcing mechanism. */
static __always_inline int sbx_answer(const struct sbx_who *who, __u8 mechanism, int err)
{
	if (!(who->flags & MANUL_SBX_F_ENFORCE) || mechanism == MANUL_SBX_M_TRACEPOINT)
		return 0;
	return -err;
}

/* Something the hook needs could not be had: deny (fail closed), count, report. */
static __always_inline int sbx_fail(const struct sbx_who *who, __u8 action, __u8 op,
				    __u8 mechanism, __u32 err_kind, int err)
{
	struct sbx_ask a = { .action = action, .op = op, .mechanism = mechanism,
			     .flags = MANUL_SBX_EV_NO_PATH, .rule_id = 0 };

	manul_count_err(err_kind);
	sbx_report(who, &a, NULL, 0, NULL, 0, 0);
	return sbx_answer(who, mechanism, err);
}

/* ---- paths -------------------------------------------------------------- */

static __always_inline __u8 sbx_first_slot(__u32 need)
{
	return (need & (1U << MANUL_SBX_READ)) ? MANUL_SBX_READ :
	       (need & (1U << MANUL_SBX_WRITE)) ? MANUL_SBX_WRITE :
	       (need & (1U << MANUL_SBX_EXEC)) ? MANUL_SBX_EXEC : MANUL_SBX_LOAD_LIBRARY;
}

/* Fill the LPM key in front of s->path for a path of `len` bytes with its NUL. */
static __always_inline void sbx_path_key(const struct sbx_who *who, struct sbx_scratch *s,
					 long len)
{
	s->sandbox_id = who->sandbox_id;
	s->prefixlen = 32 + 8 * (len < MANUL_SBX_PATH_BYTES ? len : MANUL_SBX_PATH_BYTES);
}

/* The one path lookup: the entry that decides s->path (NULL: no entry, deny). */
static __always_inline struct manul_path_val *sbx_path_val(const struct sbx_who *who,
							   struct sbx_scratch *s, long len)
{
	sbx_path_key(who, s, len);
	return bpf_map_lookup_elem(&sandbox_paths, (struct manul_path_key *)s);
}

/* The one path matcher. s->path holds the resolved path, `len` bytes with
 * its NUL (len <= 0: it could not be resolved, which denies). `need` is a
 * mask of path slots, all of which must be allowed; the first one that is
 * not decides. `any` (a mask) instead allows when any of its slots is
 * allowed (mmap PROT_EXEC: exec or loadLibrary). Reports a deny; returns 0
 * or -err (enforce mode, LSM). `found` (may be NULL) receives the entry
 * that decided, for callers that need its other slots (links, renames). */
static __always_inline int sbx_path_decide(const struct sbx_who *who, struct sbx_scratch *s,
					   long len, __u32 need, __u32 any, __u8 op,
					   __u8 mechanism, int err, struct manul_path_val **found)
{
	struct manul_path_val *val = NULL;
	struct sbx_ask a = { .action = sbx_first_slot(need | any), .op = op,
			     .mechanism = mechanism, .flags = 0, .rule_id = 0 };
	__u32 allow = 0, slot;

	if (len > 0) {
		val = sbx_path_val(who, s, len);
		if (found)
			*found = val;
		if (val)
			allow = val->allow;
		if (any) {
			if (allow & any)
				return 0;
			/* report the last slot asked for (loadLibrary for mmap) */
			slot = (any & (1U << MANUL_SBX_LOAD_LIBRARY)) ? MANUL_SBX_LOAD_LIBRARY :
			       sbx_first_slot(any);
			a.action = slot;
		} else {
			if ((allow & need) == need)
				return 0;
			a.action = sbx_first_slot(need & ~allow);
		}
		if (val && a.action < MANUL_SBX_PATH_ACTIONS)
			a.rule_id = val->rule_id[a.action & 3];
	} else {
		a.flags = MANUL_SBX_EV_NO_PATH;
		manul_count_err(MANUL_ERR_NO_PATH);
	}
	sbx_report(who, &a, len > 0 ? s : NULL, len, NULL, 0, 0);
	return sbx_answer(who, mechanism, err);
}

static __always_inline int sbx_path_check(const struct sbx_who *who, struct sbx_scratch *s,
					  long len, __u32 need, __u8 op, __u8 mechanism, int err)
{
	return sbx_path_decide(who, s, len, need, 0, op, mechanism, err, NULL);
}

/* Whether `mnt` is a kernel-internal mount: overlayfs opens its layers'
 * directories through private clones (clone_private_mount sets mnt_ns to
 * MNT_NS_INTERNAL, an ERR_PTR) on behalf of an open of the overlay's own
 * file, which was decided already. Nothing in user space can open through
 * such a mount, and its d_path is relative to the layer. */
static __always_inline bool sbx_internal_mount(struct vfsmount *mnt)
{
	struct mount *m = (void *)mnt - bpf_core_field_offset(struct mount, mnt);
	unsigned long ns = (unsigned long)BPF_CORE_READ(m, mnt_ns);

	return ns >= (unsigned long)-4095;	/* IS_ERR_VALUE */
}

SEC("lsm/file_open")
int BPF_PROG(manul_sbx_file_open, struct file *file, int ret)
{
	struct sbx_who who;
	struct sbx_scratch *s;
	__u32 need = 0, mode;

	if (ret)
		return ret;
	if (!sbx_bound(&who))
		return 0;
	mode = file->f_mode;
	/* The exec's own open (and its ELF interpreter's) carries __FMODE_EXEC
	 * in f_flags (6.1) or FMODE_EXEC in f_mode (later kernels); user space
	 * cannot set either. bprm_check_security decides the exec. */
	if ((mode & FMODE_EXEC) || (file->f_flags & __FMODE_EXEC))
		return 0;
	if (sbx_internal_mount(file->f_path.mnt))
		return 0;
	if (mode & FMODE_WRITE)	/* a write open of an image file copies it up */
		sbx_note_stack(BPF_CORE_READ(file, f_path.mnt, mnt_sb));
	if (mode & FMODE_READ)
		need |= 1U << MANUL_SBX_READ;
	if (mode & FMODE_WRITE)
		need |= 1U << MANUL_SBX_WRITE;
	if (!need)
		need = 1U << MANUL_SBX_READ;	/* open(O_ACCMODE == 3): ioctl only; a read */
	s = sbx_scratch_get();
	if (!s)
		return sbx_fail(&who, sbx_first_slot(need), MANUL_SBX_OP_OPEN, MANUL_SBX_M_LSM,
				MANUL_ERR_NO_SCRATCH, ENOENT);
	return sbx_path_check(&who, s, bpf_d_path((struct path *)&file->f_path, s->path, SBX_PATH_BUF),
			      need, MANUL_SBX_OP_OPEN, MANUL_SBX_M_LSM, ENOENT);
}

SEC("lsm/bprm_check_security")
int BPF_PROG(manul_sbx_bprm_check, struct linux_binprm *bprm, int ret)
{
	struct sbx_exec_state *st;
	struct sbx_who who;
	struct sbx_scratch *s;
	int err;

	if (ret)
		return ret;
	if (!sbx_bound(&who))
		return 0;
	s = sbx_scratch_get();
	if (!s)
		return sbx_fail(&who, MANUL_SBX_EXEC, MANUL_SBX_OP_EXEC, MANUL_SBX_M_LSM,
				MANUL_ERR_NO_SCRATCH, EPERM);
	err = sbx_path_check(&who, s, bpf_d_path((struct path *)&bprm->file->f_path, s->path,
						 SBX_PATH_BUF),
			     1U << MANUL_SBX_EXEC, MANUL_SBX_OP_EXEC, MANUL_SBX_M_LSM, EPERM);
	if (err)
		return err;
	/* permitted (or audit mode): the loader's own mappings of this exec follow */
	st = bpf_task_storage_get(&sbx_exec, bpf_get_current_task_btf(), 0,
				  BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!st) {
		manul_count_err(MANUL_ERR_NO_STORAGE);
		return 0;	/* the exec's mappings will be decided as loadLibrary: closed */
	}
	st->mm = (__u64)bprm->mm;
	return 0;
}

/* The exec is done (the new image's mappings are made): forget it. */
SEC("tp_btf/sched_process_exec")
int BPF_PROG(manul_sbx_exec_done, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	bpf_task_storage_delete(&sbx_exec, bpf_get_current_task_btf());
	return 0;
}

/* ---- the path walk (where bpf_d_path cannot be used): pathwalk.h -------- */

/* Build the path of (vfsmnt, dentry) from the task's root into s->path, as
 * d_path would (bpf_d_path is not allowed in tracepoints); returns its
 * length with the NUL, 0 when the dentry is not below the mount's root, or
 * -1 when it is deeper than MANUL_WALK_DEPTH components or longer than
 * PATH_MAX. A name the task's root does not reach (a chroot's caller, an fd
 * from outside it) is, like d_path's, the path from the namespace's root;
 * with `reachable`, it is 0 instead: no name the task has. */
static __always_inline long sbx_walk_from(struct sbx_scratch *s, struct vfsmount *vfsmnt,
					  struct dentry *dentry, bool reachable)
{
	__u32 full = 0;

	sbx_note_stack(BPF_CORE_READ(vfsmnt, mnt_sb));
	return manul_walk_path(s->walk, s->path, SBX_PATH_BUF, vfsmnt, dentry, reachable, &full);
}


/* ---- operations that change what a path names: writeFile ---------------- */

/* (mnt, dentry) -> s->path; the length with the NUL, or <= 0. */
static __always_inline long sbx_walk(struct sbx_scratch *s, struct vfsmount *vfsmnt,
				     struct dentry *dentry)
{
	return sbx_walk_from(s, vfsmnt, dentry, false);
}

static __always_inline long sbx_resolve(struct sbx_scratch *s, struct vfsmount *mnt,
					struct dentry *dentry)
{
	if (!mnt || !dentry)
		return -1;
	return sbx_walk(s, mnt, dentry);
}

/* writeFile on the name `dentry` in directory `dir` (it may not exist yet). */
static __always_inline int sbx_write_name(const struct path *dir, struct dentry *dentry, __u8 op)
{
	struct sbx_who who;
	struct sbx_scratch *s;

	if (!sbx_bound(&who))
		return 0;
	s = sbx_scratch_get();
	if (!s)
		return sbx_fail(&who, MANUL_SBX_WRITE, op, MANUL_SBX_M_LSM, MANUL_ERR_NO_SCRATCH,
				ENOENT);
	return sbx_path_check(&who, s, sbx_resolve(s, BPF_CORE_READ(dir, mnt), dentry),
			      1U << MANUL_SBX_WRITE, op, MANUL_SBX_M_LSM, ENOENT);
}

/* writeFile on an existing path (truncate, chmod, chown). */
static __always_inline int sbx_write_path(const struct path *path, __u8 op)
{
	return sbx_write_name(path, BPF_CORE_READ(path, dentry), op);
}

SEC("lsm/path_mknod")
int BPF_PROG(manul_sbx_path_mknod, const struct path *dir, struct dentry *dentry, umode_t mode,
	     unsigned int dev, int ret)
{
	return ret ? ret : sbx_write_name(dir, dentry, MANUL_SBX_OP_CREATE);
}

SEC("lsm/path_mkdir")
int BPF_PROG(manul_sbx_path_mkdir, const struct path *dir, struct dentry *dentry, umode_t mode,
	     int ret)
{
	return ret ? ret : sbx_write_name(dir, dentry, MANUL_SBX_OP_MKDIR);
}

SEC("lsm/path_unlink")
int BPF_PROG(manul_sbx_path_unlink, const struct path *dir, struct dentry *dentry, int ret)
{
	return ret ? ret : sbx_write_name(dir, dentry, MANUL_SBX_OP_UNLINK);
}

SEC("lsm/path_rmdir")
int BPF_PROG(manul_sbx_path_rmdir, const struct path *dir, struct dentry *dentry, int ret)
{
	return ret ? ret : sbx_write_name(dir, dentry, MANUL_SBX_OP_RMDIR);
}

SEC("lsm/path_symlink")
int BPF_PROG(manul_sbx_path_symlink, const struct path *dir, struct dentry *dentry,
	     const char *old_name, int ret)
{
	return ret ? ret : sbx_write_name(dir, dentry, MANUL_SBX_OP_SYMLINK);
}

SEC("lsm/path_truncate")
int BPF_PROG(manul_sbx_path_truncate, const struct path *path, int ret)
{
	return ret ? ret : sbx_write_path(path, MANUL_SBX_OP_TRUNCATE);
}

SEC("lsm/path_chmod")
int BPF_PROG(manul_sbx_path_chmod, const struct path *path, umode_t mode, int ret)
{
	return ret ? ret : sbx_write_path(path, MANUL_SBX_OP_CHMOD);
}

SEC("lsm/path_chown")
int BPF_PROG(manul_sbx_path_chown, const struct path *path, __u32 uid, __u32 gid, int ret)
{
	return ret ? ret : sbx_write_path(path, MANUL_SBX_OP_CHOWN);
}

/* ---- metadata changes that reach a dentry only: utimes, xattrs ---------- */

/* The kernel's two layouts of "the mounts of a super block": a list_head
 * threaded through mount.mnt_instance (6.1 ...) or a pointer chain through
 * mount.mnt_next_for_sb (6.13 ...). CO-RE picks one; the other is dead code. */
struct super_block___list {
	struct list_head s_mounts;
} __attribute__((preserve_access_index));

struct mount___list {
	struct list_head mnt_instance;
} __attribute__((preserve_access_index));

struct super_block___chain {
	struct mount *s_mounts;
} __attribute__((preserve_access_index));

struct mount___chain {
	struct mount *mnt_next_for_sb;
} __attribute__((preserve_access_index));

#define SBX_MAX_MOUNTS 16		/* mounts of one super block we look through */

static __always_inline struct mount *sbx_sb_first(struct super_block *sb)
{
	if (bpf_core_field_exists(struct mount___list, mnt_instance)) {
		struct super_block___list *l = (void *)sb;
		struct list_head *first = BPF_CORE_READ(l, s_mounts.next);

		if (first == (void *)sb + bpf_core_field_offset(struct super_block___list, s_mounts))
			return NULL;
		return (void *)first - bpf_core_field_offset(struct mount___list, mnt_instance);
	}
	return BPF_CORE_READ((struct super_block___chain *)sb, s_mounts);
}

static __always_inline struct mount *sbx_sb_next(struct super_block *sb, struct mount *m)
{
	if (bpf_core_field_exists(struct mount___list, mnt_instance)) {
		struct mount___list *l = (void *)m;
		struct list_head *next = BPF_CORE_READ(l, mnt_instance.next);

		if (next == (void *)sb + bpf_core_field_offset(struct super_block___list, s_mounts))
			return NULL;
		return (void *)next - bpf_core_field_offset(struct mount___list, mnt_instance);
	}
	return BPF_CORE_READ((struct mount___chain *)m, mnt_next_for_sb);
}

/* One mount of the dentry's super block per bpf_loop step (a loop the
 * verifier checks once, not once per mount). */
struct sbx_mnt_ctx {
	const struct sbx_who *who;
	struct sbx_scratch *s;
	struct dentry *dentry;
	struct super_block *sb;
	struct mnt_namespace *ns;
	struct mount *m;
	__u32 found;
	int err;
	__u8 op;
};

static long sbx_mnt_step(__u32 i, void *data)
{
	struct sbx_mnt_ctx *c = data;
	struct mount *m = c->m;
	long len;

	if (!m)
		return 1;
	if (BPF_CORE_READ(m, mnt_ns) == c->ns) {
		len = sbx_walk_from(c->s, (void *)m + bpf_core_field_offset(struct mount, mnt),
				    c->dentry, true);
		if (len != 0) {
			c->found++;
			c->err = sbx_path_check(c->who, c->s, len, 1U << MANUL_SBX_WRITE, c->op,
						MANUL_SBX_M_LSM, ENOENT);
			if (c->err)
				return 1;
		}
	}
	c->m = sbx_sb_next(c->sb, m);
	return 0;
}

/* writeFile on a dentry the hook got without its mount: every mount of its
 * super block in the task's mount namespace that the dentry lies below, and
 * that the task's root reaches, names it once; every such path must permit
 * the write. None found, or
 * more mounts than we look through: denied (fail closed). */
static __always_inline int sbx_write_dentry(struct dentry *dentry, __u8 op)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct sbx_mnt_ctx c = {};
	struct sbx_who who;

	if (!sbx_bound(&who) || sbx_stacked())
		return 0;
	c.s = sbx_scratch_get();
	if (!c.s)
		return sbx_fail(&who, MANUL_SBX_WRITE, op, MANUL_SBX_M_LSM, MANUL_ERR_NO_SCRATCH,
				ENOENT);
	c.who = &who;
	c.dentry = dentry;
	c.op = op;
	c.ns = BPF_CORE_READ(task, nsproxy, mnt_ns);
	c.sb = BPF_CORE_READ(dentry, d_sb);
	c.m = sbx_sb_first(c.sb);
	bpf_loop(SBX_MAX_MOUNTS, sbx_mnt_step, &c, 0);
	if (c.err)
		return c.err;
	if (!c.found || c.m)
		return sbx_fail(&who, MANUL_SBX_WRITE, op, MANUL_SBX_M_LSM, MANUL_ERR_NO_PATH,
				ENOENT);
	return 0;
}

SEC("lsm/inode_setxattr")
int BPF_PROG(manul_sbx_inode_setxattr, void *idmap, struct dentry *dentry, const char *name,
	     const void *value, size_t size, int flags, int ret)
{
	return ret ? ret : sbx_write_dentry(dentry, MANUL_SBX_OP_SETXATTR);
}

SEC("lsm/inode_removexattr")
int BPF_PROG(manul_sbx_inode_removexattr, void *idmap, struct dentry *dentry, const char *name,
	     int ret)
{
	return ret ? ret : sbx_write_dentry(dentry, MANUL_SBX_OP_SETXATTR);
}

#define ATTR_MODE	(1 << 0)
#define ATTR_UID	(1 << 1)
#define ATTR_GID	(1 << 2)
#define ATTR_SIZE	(1 << 3)
#define ATTR_ATIME	(1 << 4)
#define ATTR_MTIME	(1 << 5)
#define ATTR_FORCE	(1 << 9)
#define ATTR_KILL_SUID	(1 << 11)
#define ATTR_KILL_SGID	(1 << 12)

/* utimes/utimensat/futimens: notify_change with only times to set. Mode,
 * owner and size changes were decided in path_chmod/chown/truncate; the
 * kernel's own clearing of set-id bits on a write was decided at the open. */
static __always_inline int sbx_setattr(struct dentry *dentry, struct iattr *attr)
{
	unsigned int valid = BPF_CORE_READ(attr, ia_valid);

	if (!(valid & (ATTR_ATIME | ATTR_MTIME)) ||
	    (valid & (ATTR_MODE | ATTR_UID | ATTR_GID | ATTR_SIZE | ATTR_FORCE | ATTR_KILL_SUID |
		      ATTR_KILL_SGID)))
		return 0;
	return sbx_write_dentry(dentry, MANUL_SBX_OP_UTIMES);
}

/* The hook's arguments differ by kernel: (dentry, attr) on 6.1, (idmap,
 * dentry, attr) later. The loader picks the program that matches the
 * kernel's BTF (agent/sandbox/kernel.py); the other one is never loaded. */
SEC("lsm/inode_setattr")
int BPF_PROG(manul_sbx_inode_setattr, struct dentry *dentry, struct iattr *attr, int ret)
{
	return ret ? ret : sbx_setattr(dentry, attr);
}

SEC("lsm/inode_setattr")
int BPF_PROG(manul_sbx_inode_setattr_idmap, void *idmap, struct dentry *dentry,
	     struct iattr *attr, int ret)
{
	return ret ? ret : sbx_setattr(dentry, attr);
}

/* An operation on an open file, decided on its path (walked from its mount):
 * all of `need`, or any of `any`; EPERM (the file is open: its existence is
 * no secret). */
static __always_inline int sbx_file_decide(const struct sbx_who *who, struct file *file,
					   __u32 need, __u32 any, __u8 op)
{
	struct sbx_scratch *s = sbx_scratch_get();

	if (!s)	/* reported as sbx_path_decide would: loadLibrary for a mapping */
		return sbx_fail(who, (any & (1U << MANUL_SBX_LOAD_LIBRARY)) ?
				MANUL_SBX_LOAD_LIBRARY : sbx_first_slot(need | any), op,
				MANUL_SBX_M_LSM, MANUL_ERR_NO_SCRATCH, EPERM);
	return sbx_path_decide(who, s, sbx_resolve(s, BPF_CORE_READ(file, f_path.mnt),
						    BPF_CORE_READ(file, f_path.dentry)),
			       need, any, op, MANUL_SBX_M_LSM, EPERM, NULL);
}

/* chattr(1) and friends: inode flags (immutable, append-only, ...) and
 * fsxattr change through an ioctl on any open file, a read-only one too. */
#define FS_IOC_SETFLAGS		0x40086602
#define FS_IOC32_SETFLAGS	0x40046602
#define FS_IOC_SETVERSION	0x40087602
#define FS_IOC32_SETVERSION	0x40047602
#define FS_IOC_FSSETXATTR	0x401c5820

SEC("lsm/file_ioctl")
int BPF_PROG(manul_sbx_file_ioctl, struct file *file, unsigned int cmd, unsigned long arg,
	     int ret)
{
	struct sbx_who who;

	if (ret)
		return ret;
	if (cmd != FS_IOC_SETFLAGS && cmd != FS_IOC32_SETFLAGS && cmd != FS_IOC_FSSETXATTR &&
	    cmd != FS_IOC_SETVERSION && cmd != FS_IOC32_SETVERSION)
		return 0;
	if (!sbx_bound(&who))
		return 0;
	/* overlayfs asks again for the real file, opened through its private
	 * mount: the caller's ioctl on the overlay file was decided already */
	if (sbx_internal_mount(BPF_CORE_READ(file, f_path.mnt)))
		return 0;
	return sbx_file_decide(&who, file, 1U << MANUL_SBX_WRITE, 0, MANUL_SBX_OP_IOCTL);
}

/* ---- links and renames: a new name never grants more ("refer") ---------- */

/* What one name grants, for the refer rule. */
struct sbx_rights {
	__u32 allow;			/* slots allowed on the name itself */
	__u32 sub_or;			/* on the name's subtree (a directory): anything below */
	__u32 sub_and;			/* ... and everything below */
	__u32 rule_id[MANUL_SBX_PATH_ACTIONS];
	long len;
};

static __always_inline bool sbx_is_dir(struct dentry *d)
{
	return (BPF_CORE_READ(d, d_inode, i_mode) & S_IFMT) == S_IFDIR;
}

/* What the entry `val` grants the name it decided (`len` bytes). */
static __always_inline void sbx_rights_fill(struct sbx_rights *r,
					    const struct manul_path_val *val, long len)
{
	r->len = len;
	r->allow = val->allow & SBX_ALL_SLOTS;
	r->sub_or = r->sub_and = r->allow;
	r->rule_id[0] = val->rule_id[0];
	r->rule_id[1] = val->rule_id[1];
	r->rule_id[2] = val->rule_id[2];
	r->rule_id[3] = val->rule_id[3];
}

/* s->path holds a directory's path (`dirlen` bytes with the NUL): make it
 * the path of its entry `d` (existing or not), as sbx_walk(d) would give,
 * without walking the directory again. */
static __always_inline long sbx_dir_name(struct sbx_scratch *s, long dirlen, struct dentry *d)
{
	struct qstr name = BPF_CORE_READ(d, d_name);
	__u32 pos, len = name.len;

	if (dirlen <= 0)
		return dirlen;
	pos = dirlen - 1;		/* where the NUL is */
	if (len > MANUL_NAME_MAX || pos + len + 2 > SBX_PATH_BUF)
		return -1;
	if (dirlen != 2) {		/* "/\0": the root takes no separator */
		s->path[pos & SBX_PATH_MASK] = '/';
		pos++;
	}
	if (bpf_probe_read_kernel(&s->path[pos & SBX_PATH_MASK], len & MANUL_NAME_MAX, name.name) < 0)
		return -1;
	pos += len;
	s->path[pos & SBX_PATH_MASK] = 0;
	return pos + 1;
}

/* What the path in s->path (`len` bytes, <= 0: unresolved) grants, in r;
 * its directory's subtree too (lookup of `D/`, whose entry bounds every
 * path below D). Denies (and reports writeFile) when the name itself is not
 * writable: non-zero then (-err to return, or 1: stop, reported). */
static __always_inline int sbx_rights_at(const struct sbx_who *who, struct sbx_scratch *s,
					 long len, bool dir, __u8 op, struct sbx_rights *r)
{
	struct manul_path_val *val = NULL;
	int err;

	err = sbx_path_decide(who, s, len, 1U << MANUL_SBX_WRITE, 0, op, MANUL_SBX_M_LSM, ENOENT,
			      &val);
	if (err || len <= 0 || !val)
		return err ? err : 1;	/* audit mode, or no entry: reported; stop here */
	sbx_rights_fill(r, val, len);
	if (dir && len >= 2 && len <= MANUL_SBX_PATH_BYTES) {
		/* "D\0" -> "D/": the longest entry covering everything below D */
		s->path[(len - 1) & SBX_PATH_MASK] = '/';
		s->prefixlen = 32 + 8 * len;
		val = bpf_map_lookup_elem(&sandbox_paths, (struct manul_path_key *)s);
		s->path[(len - 1) & SBX_PATH_MASK] = 0;
		if (!val) {
			r->sub_or = SBX_ALL_SLOTS;	/* unknown: assume the widest ... */
			r->sub_and = 0;			/* ... and the narrowest */
		} else {
			r->sub_or = (val->sub_or | val->allow) & SBX_ALL_SLOTS;
			r->sub_and = val->sub_and & val->allow & SBX_ALL_SLOTS;
		}
	} else if (dir) {
		r->sub_or = SBX_ALL_SLOTS;	/* too long to look up below: fail closed */
		r->sub_and = 0;
	}
	return 0;
}

/* `to` may not grant what `from` does not: the moved or linked object would
 * become reachable with more rights. Reports on `from`'s path (still in
 * s->path when `from_last`), as the action it would gain. */
static __always_inline int sbx_refer(const struct sbx_who *who, struct sbx_scratch *s,
				     const struct sbx_rights *from, const struct sbx_rights *to,
				     bool dir, __u8 op, bool from_in_s)
{
	struct sbx_ask a = { .op = op, .mechanism = MANUL_SBX_M_LSM, .flags = MANUL_SBX_EV_REFER };
	__u32 gain = to->allow & ~from->allow & SBX_ALL_SLOTS;
	int err = ENOENT;

	if (!gain && dir) {
		/* below a directory: anything the new place grants, every path of
		 * the old place must already have; else refuse with EXDEV, so that
		 * mv(1) copies file by file, each copy decided */
		gain = to->sub_or & ~from->sub_and & SBX_ALL_SLOTS;
		a.flags |= MANUL_SBX_EV_SUBTREE;
		err = EXDEV;
	}
	if (!gain)
		return 0;
	a.action = sbx_first_slot(gain);
	a.rule_id = from->rule_id[a.action & 3];
	sbx_report(who, &a, from_in_s ? s : NULL, from_in_s ? from->len : 0, NULL, 0, 0);
	return sbx_answer(who, MANUL_SBX_M_LSM, err);
}

SEC("lsm/path_link")
int BPF_PROG(manul_sbx_path_link, struct dentry *old_dentry, const struct path *new_dir,
	     struct dentry *new_dentry, int ret)
{
	struct sbx_rights from = {}, to = {};
	struct manul_path_val *val;
	struct vfsmount *mnt;
	struct sbx_who who;
	struct sbx_scratch *s;
	int err;

	if (ret)
		return ret;
	if (!sbx_bound(&who))
		return 0;
	s = sbx_scratch_get();
	if (!s)
		return sbx_fail(&who, MANUL_SBX_WRITE, MANUL_SBX_OP_LINK, MANUL_SBX_M_LSM,
				MANUL_ERR_NO_SCRATCH, ENOENT);
	mnt = BPF_CORE_READ(new_dir, mnt);	/* a link never crosses mounts */
	err = sbx_rights_at(&who, s, sbx_dir_name(s, sbx_resolve(s, mnt, BPF_CORE_READ(new_dir, dentry)),
						   new_dentry),
			    false, MANUL_SBX_OP_LINK, &to);
	if (err)
		return err < 0 ? err : 0;
	/* the old name needs no writeFile: linking does not change it; but it
	 * must already grant whatever the new name would */
	from.len = sbx_resolve(s, mnt, old_dentry);
	if (from.len <= 0)
		return sbx_path_check(&who, s, from.len, 1U << MANUL_SBX_READ, MANUL_SBX_OP_LINK,
				      MANUL_SBX_M_LSM, ENOENT);
	val = sbx_path_val(&who, s, from.len);
	if (val)
		sbx_rights_fill(&from, val, from.len);	/* no entry: it grants nothing */
	return sbx_refer(&who, s, &from, &to, false, MANUL_SBX_OP_LINK, true);
}

SEC("lsm/path_rename")
int BPF_PROG(manul_sbx_path_rename, const struct path *old_dir, struct dentry *old_dentry,
	     const struct path *new_dir, struct dentry *new_dentry, unsigned int flags, int ret)
{
	struct sbx_rights from = {}, to = {};
	struct dentry *old_parent, *new_parent;
	struct vfsmount *mnt;
	struct sbx_who who;
	struct sbx_scratch *s;
	bool exchange = flags & RENAME_EXCHANGE, old_is_dir, new_is_dir = false;
	long dirlen;
	int err;

	if (ret)
		return ret;
	if (!sbx_bound(&who))
		return 0;
	s = sbx_scratch_get();
	if (!s)
		return sbx_fail(&who, MANUL_SBX_WRITE, MANUL_SBX_OP_RENAME, MANUL_SBX_M_LSM,
				MANUL_ERR_NO_SCRATCH, ENOENT);
	mnt = BPF_CORE_READ(old_dir, mnt);	/* a rename never crosses mounts */
	old_parent = BPF_CORE_READ(old_dir, dentry);
	new_parent = BPF_CORE_READ(new_dir, dentry);
	old_is_dir = sbx_is_dir(old_dentry);
	if (exchange)
		new_is_dir = sbx_is_dir(new_dentry);
	/* the new name first, so that the old one is in s->path for the report;
	 * a rename within one directory walks it once */
	dirlen = sbx_resolve(s, mnt, new_parent);
	err = sbx_rights_at(&who, s, sbx_dir_name(s, dirlen, new_dentry),
			    old_is_dir || new_is_dir, MANUL_SBX_OP_RENAME, &to);
	if (err)
		return err < 0 ? err : 0;
	if (old_parent != new_parent)
		dirlen = sbx_resolve(s, mnt, old_parent);
	/* with RENAME_EXCHANGE the object at the new name moves to the old one
	 * too: both names must be writable and neither move may gain rights */
	err = sbx_rights_at(&who, s, sbx_dir_name(s, dirlen, old_dentry),
			    old_is_dir || new_is_dir, MANUL_SBX_OP_RENAME, &from);
	if (err)
		return err < 0 ? err : 0;
	if (exchange) {
		err = sbx_refer(&who, s, &to, &from, new_is_dir, MANUL_SBX_OP_RENAME, false);
		if (err)
			return err;
	}
	return sbx_refer(&who, s, &from, &to, old_is_dir, MANUL_SBX_OP_RENAME, true);
}

/* ---- executable mappings: exec or loadLibrary --------------------------- */

/* Whether the current task is inside a permitted execve (the loader's own
 * mappings of the binary and its ELF interpreter). */
static __always_inline bool sbx_in_exec(void)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct sbx_exec_state *st;

	st = bpf_task_storage_get(&sbx_exec, task, 0, 0);
	return st && st->mm && st->mm == (__u64)task->mm;
}

static __always_inline int sbx_map_exec(struct file *file, __u8 op)
{
	struct sbx_who who;

	if (!sbx_bound(&who))
		return 0;
	if (sbx_in_exec())
		return 0;
	return sbx_file_decide(&who, file, 0,
			       (1U << MANUL_SBX_EXEC) | (1U << MANUL_SBX_LOAD_LIBRARY), op);
}

SEC("lsm/mmap_file")
int BPF_PROG(manul_sbx_mmap_file, struct file *file, unsigned long reqprot, unsigned long prot,
	     unsigned long flags, int ret)
{
	if (ret)
		return ret;
	if (!file || !(prot & PROT_EXEC))
		return 0;	/* anonymous or not executable: not a file's code */
	return sbx_map_exec(file, MANUL_SBX_OP_MMAP);
}

SEC("lsm/file_mprotect")
int BPF_PROG(manul_sbx_file_mprotect, struct vm_area_struct *vma, unsigned long reqprot,
	     unsigned long prot, int ret)
{
	struct file *file;

	if (ret)
		return ret;
	if (!(prot & PROT_EXEC) || (vma->vm_flags & VM_EXEC))
		return 0;	/* not adding PROT_EXEC: decided when it was mapped */
	file = vma->vm_file;
	if (!file)
		return 0;
	return sbx_map_exec(file, MANUL_SBX_OP_MPROTECT);
}

/* ---- confinement: no driving an outsider, no changing what paths mean ---- */

static __always_inline int sbx_confine(const struct sbx_who *who, __u8 op)
{
	struct sbx_ask a = { .action = MANUL_SBX_CONFINE, .op = op, .mechanism = MANUL_SBX_M_LSM };

	sbx_report(who, &a, NULL, 0, NULL, 0, 0);
	return sbx_answer(who, MANUL_SBX_M_LSM, EPERM);
}

/* Whether `task` runs in the bound cgroup or below it. */
static __always_inline bool sbx_task_inside(const struct sbx_who *who, struct task_struct *task)
{
	struct cgroup_subsys_state *css;
	struct cgroup *cg = BPF_CORE_READ(task, cgroups, dfl_cgrp);
	__u32 i;

	for (i = 0; i < MANUL_SBX_MAX_LEVEL + 1 && cg; i++) {
		if (BPF_CORE_READ(cg, kn, id) == who->bound_cgroup_id)
			return true;
		css = BPF_CORE_READ(cg, self.parent);
		cg = (struct cgroup *)css;	/* self is a cgroup's first member */
	}
	return false;
}

SEC("lsm/ptrace_access_check")
int BPF_PROG(manul_sbx_ptrace, struct task_struct *child, unsigned int mode, int ret)
{
	struct sbx_who who;

	if (ret)
		return ret;
	if (!(mode & PTRACE_MODE_ATTACH))
		return 0;	/* reading /proc/PID/stat and the like */
	if (!sbx_bound(&who) || sbx_task_inside(&who, child))
		return 0;
	return sbx_confine(&who, MANUL_SBX_OP_PTRACE);
}

static __always_inline int sbx_confine_op(__u8 op)
{
	struct sbx_who who;

	if (!sbx_bound(&who))
		return 0;
	return sbx_confine(&who, op);
}

SEC("lsm/sb_mount")
int BPF_PROG(manul_sbx_sb_mount, const char *dev_name, const struct path *path,
	     const char *type, unsigned long flags, void *data, int ret)
{
	return ret ? ret : sbx_confine_op(MANUL_SBX_OP_MOUNT);
}

SEC("lsm/move_mount")
int BPF_PROG(manul_sbx_move_mount, const struct path *from_path, const struct path *to_path,
	     int ret)
{
	return ret ? ret : sbx_confine_op(MANUL_SBX_OP_MOUNT);
}

SEC("lsm/sb_pivotroot")
int BPF_PROG(manul_sbx_sb_pivotroot, const struct path *old_path, const struct path *new_path,
	     int ret)
{
	return ret ? ret : sbx_confine_op(MANUL_SBX_OP_MOUNT);
}

SEC("lsm/path_chroot")
int BPF_PROG(manul_sbx_path_chroot, const struct path *path, int ret)
{
	return ret ? ret : sbx_confine_op(MANUL_SBX_OP_CHROOT);
}

SEC("lsm/userns_create")
int BPF_PROG(manul_sbx_userns_create, const struct cred *cred, int ret)
{
	return ret ? ret : sbx_confine_op(MANUL_SBX_OP_USERNS);
}
/* ---- the fallback: files and exec reported after the fact ---------------- */

static __always_inline int sbx_tp_file(struct sbx_who *who, struct file *file, __u32 need,
				       __u8 op)
{
	struct sbx_scratch *s = sbx_scratch_get();

	if (!file)
		return 0;
	if (!s)
		return sbx_fail(who, sbx_first_slot(need), op, MANUL_SBX_M_TRACEPOINT,
				MANUL_ERR_NO_SCRATCH, ENOENT);
	sbx_path_check(who, s, sbx_walk(s, BPF_CORE_READ(file, f_path.mnt),
					BPF_CORE_READ(file, f_path.dentry)),
		       need, op, MANUL_SBX_M_TRACEPOINT, ENOENT);
	return 0;
}

/* After open*() returned fd `ret`: the file it opened, decided after the fact. */
static __always_inline int sbx_tp_open(long ret)
{
	struct task_struct *task;
	struct sbx_who who;
	struct file **fds, *file = NULL;
	unsigned int max;
	__u32 need = 0, mode;

	if (ret < 0 || !sbx_bound(&who))
		return 0;
	task = (struct task_struct *)bpf_get_current_task_btf();
	fds = BPF_CORE_READ(task, files, fdt, fd);
	max = BPF_CORE_READ(task, files, fdt, max_fds);
	if ((unsigned long)ret >= max)
		return 0;
	if (bpf_probe_read_kernel(&file, sizeof(file), &fds[ret]) < 0 || !file) {
		manul_count_err(MANUL_ERR_READ);
		return 0;
	}
	mode = BPF_CORE_READ(file, f_mode);
	if (mode & FMODE_READ)
		need |= 1U << MANUL_SBX_READ;
	if (mode & FMODE_WRITE)
		need |= 1U << MANUL_SBX_WRITE;
	if (!need)
		return 0;		/* O_PATH and friends: no data access */
	return sbx_tp_file(&who, file, need, MANUL_SBX_OP_OPEN);
}

SEC("tracepoint/syscalls/sys_exit_openat")
int manul_sbx_tp_openat(struct trace_event_raw_sys_exit *ctx) { return sbx_tp_open(ctx->ret); }

SEC("tracepoint/syscalls/sys_exit_open")
int manul_sbx_tp_open(struct trace_event_raw_sys_exit *ctx) { return sbx_tp_open(ctx->ret); }

SEC("tracepoint/syscalls/sys_exit_openat2")
int manul_sbx_tp_openat2(struct trace_event_raw_sys_exit *ctx) { return sbx_tp_open(ctx->ret); }

SEC("tracepoint/syscalls/sys_exit_creat")
int manul_sbx_tp_creat(struct trace_event_raw_sys_exit *ctx) { return sbx_tp_open(ctx->ret); }

SEC("tracepoint/syscalls/sys_exit_open_by_handle_at")
int manul_sbx_tp_open_by_handle(struct trace_event_raw_sys_exit *ctx)
{
	return sbx_tp_open(ctx->ret);
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(manul_sbx_tp_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	struct sbx_who who;

	if (!sbx_bound(&who))
		return 0;
	return sbx_tp_file(&who, BPF_CORE_READ(bprm, file), 1U << MANUL_SBX_EXEC, MANUL_SBX_OP_EXEC);
}

/* ---- network ------------------------------------------------------------- */

/* `key` holds family and addr (IPv4-mapped IPv6 already turned into IPv4). */
static __always_inline int sbx_net_check(const struct sbx_who *who, struct manul_net_key *key,
					 __u16 port, int protocol, __u8 op, __u8 mechanism)
{
	struct sbx_ask a = { .action = MANUL_SBX_CONNECT, .op = op, .mechanism = mechanism };
	struct manul_sbx_verdict v;
	__u8 bit = 0;

	if (protocol == IPPROTO_TCP || protocol == IPPROTO_MPTCP)
		bit = MANUL_SBX_PROTO_TCP;
	else if (protocol == IPPROTO_UDP)
		bit = MANUL_SBX_PROTO_UDP;
	key->sandbox_id = who->sandbox_id;
	key->prefixlen = 64 + (key->family == AF_INET ? 32 : 128);
	v = manul_sbx_connect(key, port, bit);
	if (v.allow)
		return 0;
	a.rule_id = v.rule_id;
	sbx_report(who, &a, NULL, 0, key, port, bit);
	return (who->flags & MANUL_SBX_F_ENFORCE) ? -ECONNREFUSED : 0;
}

/* Fill key->family/addr from an IPv6 address (four network-order words). */
static __always_inline void sbx_key_v6(struct manul_net_key *key, const __u32 a[4])
{
	__builtin_memset(key->addr, 0, sizeof(key->addr));
	if (a[0] == 0 && a[1] == 0 && a[2] == bpf_htonl(0xffff)) {
		key->family = AF_INET;	/* ::ffff:a.b.c.d is a.b.c.d */
		__builtin_memcpy(&key->addr[0], &a[3], 4);
		return;
	}
	key->family = AF_INET6;
	__builtin_memcpy(&key->addr[0], &a[0], 4);
	__builtin_memcpy(&key->addr[4], &a[1], 4);
	__builtin_memcpy(&key->addr[8], &a[2], 4);
	__builtin_memcpy(&key->addr[12], &a[3], 4);
}

/* Read a user sockaddr the kernel copied in: family, address, port. 1 when
 * it is an AF_INET/AF_INET6 destination; 0 when it names no peer we decide
 * (AF_UNSPEC: a disconnect; AF_UNIX ...); -1 when it is too short (the
 * kernel refuses it with EINVAL). `unspec_is_inet`: udp_sendmsg treats an
 * AF_UNSPEC address on an AF_INET socket as AF_INET. */
static __always_inline int sbx_sockaddr(struct sockaddr *address, int addrlen,
					struct manul_net_key *key, __u16 *port, bool unspec_is_inet)
{
	struct sockaddr_in6 sin6;
	__u16 family;

	if (addrlen < 2)
		return -1;
	family = BPF_CORE_READ(address, sa_family);
	if (family == AF_UNSPEC && unspec_is_inet)
		family = AF_INET;
	if (family == AF_INET) {
		if (addrlen < (int)sizeof(struct sockaddr_in))
			return -1;
		/* sockaddr_in fits struct sockaddr: port in sa_data[0..1],
		 * address in sa_data[2..5] */
		if (bpf_probe_read_kernel(&sin6, sizeof(struct sockaddr_in), address) < 0)
			return -1;
		__builtin_memset(key->addr, 0, sizeof(key->addr));
		key->family = AF_INET;
		__builtin_memcpy(&key->addr[0], &((struct sockaddr_in *)&sin6)->sin_addr, 4);
		*port = bpf_ntohs(((struct sockaddr_in *)&sin6)->sin_port);
		return 1;
	}
	if (family == AF_INET6) {
		if (addrlen < (int)sizeof(sin6))
			return -1;
		if (bpf_probe_read_kernel(&sin6, sizeof(sin6), address) < 0)
			return -1;
		sbx_key_v6(key, sin6.sin6_addr.in6_u.u6_addr32);
		*port = bpf_ntohs(sin6.sin6_port);
		return 1;
	}
	return 0;
}

SEC("lsm/socket_connect")
int BPF_PROG(manul_sbx_socket_connect, struct socket *sock, struct sockaddr *address,
	     int addrlen, int ret)
{
	struct manul_net_key key;
	struct sbx_who who;
	__u16 port = 0;
	__u16 sfam;

	if (ret)
		return ret;
	if (!sbx_bound(&who))
		return 0;
	sfam = sock->sk->__sk_common.skc_family;
	if (sfam != AF_INET && sfam != AF_INET6)
		return 0;		/* AF_UNIX, netlink, ...: not network egress */
	if (sbx_sockaddr(address, addrlen, &key, &port, false) <= 0)
		return 0;		/* AF_UNSPEC (disconnect), or the kernel refuses it */
	return sbx_net_check(&who, &key, port, sock->sk->sk_protocol, MANUL_SBX_OP_CONNECT,
			     MANUL_SBX_M_LSM);
}

/* sendmsg/sendto with an address, where no cgroup hook decides it: TCP Fast
 * Open (MSG_FASTOPEN connects; socket_connect is not called on that path)
 * and datagrams of protocols other than UDP (ICMP echo sockets, ...). UDP
 * is decided by cgroup/sendmsg4/6, which see the address udp_sendmsg uses. */
SEC("lsm/socket_sendmsg")
int BPF_PROG(manul_sbx_socket_sendmsg, struct socket *sock, struct msghdr *msg, int size, int ret)
{
	struct manul_net_key key;
	struct sbx_who who;
	struct sock *sk;
	void *name;
	int namelen, proto, r;
	__u16 port = 0, sfam;

	if (ret)
		return ret;
	name = msg->msg_name;
	namelen = msg->msg_namelen;
	if (!name || namelen <= 0)
		return 0;		/* a connected socket: its peer was decided */
	sk = sock->sk;
	sfam = sk->__sk_common.skc_family;
	if (sfam != AF_INET && sfam != AF_INET6)
		return 0;
	proto = sk->sk_protocol;
	if (proto == IPPROTO_UDP || proto == IPPROTO_UDPLITE)
		return 0;		/* cgroup/sendmsg4/6 */
	if ((proto == IPPROTO_TCP || proto == IPPROTO_MPTCP) && !(msg->msg_flags & MSG_FASTOPEN))
		return 0;		/* TCP ignores the address unless it is Fast Open */
	if (!sbx_bound(&who))
		return 0;
	r = sbx_sockaddr(name, namelen, &key, &port, sfam == AF_INET);
	if (r <= 0)
		return 0;
	return sbx_net_check(&who, &key, port, proto, MANUL_SBX_OP_SENDMSG, MANUL_SBX_M_LSM);
}

/* Raw IP and packet sockets see and forge every peer: openRawSocket. */
static __always_inline __u32 sbx_raw_kind(int family, int type)
{
	if (family == AF_PACKET)
		return MANUL_SBX_SOCK_PACKET;
	if ((family == AF_INET || family == AF_INET6) &&
	    ((type & SOCK_TYPE_MASK) == SOCK_RAW || (type & SOCK_TYPE_MASK) == SOCK_PACKET))
		return MANUL_SBX_SOCK_RAW;
	return 0;
}

static __always_inline int sbx_socket_check(const struct sbx_who *who, int family, int type,
					    int protocol, __u8 mechanism)
{
	struct sbx_ask a = { .action = MANUL_SBX_RAW_SOCKET, .op = MANUL_SBX_OP_SOCKET,
			     .mechanism = mechanism };
	struct manul_sbx_verdict v;
	struct manul_net_key key = {};
	__u32 kind = sbx_raw_kind(family, type);

	if (!kind)
		return 0;
	v = manul_sbx_socket(who->sandbox_id, kind);
	if (v.allow)
		return 0;
	a.rule_id = v.rule_id;
	key.family = family;
	key.addr[0] = kind;
	key.addr[1] = type & SOCK_TYPE_MASK;
	sbx_report(who, &a, NULL, 0, &key, (__u16)protocol, 0);
	return sbx_answer(who, mechanism, EPERM);
}

SEC("lsm/socket_create")
int BPF_PROG(manul_sbx_socket_create, int family, int type, int protocol, int kern, int ret)
{
	struct sbx_who who;

	if (ret)
		return ret;
	if (kern || !sbx_raw_kind(family, type))
		return 0;
	if (!sbx_bound(&who))
		return 0;
	return sbx_socket_check(&who, family, type, protocol, MANUL_SBX_M_LSM);
}

/* The fallback's socket(): AF_INET/AF_INET6 only (packet sockets never
 * reach cgroup/sock_create). 1 = go on, 0 = EPERM. */
SEC("cgroup/sock_create")
int manul_sbx_sock_create(struct bpf_sock *ctx)
{
	struct sbx_who who;

	if (!sbx_raw_kind(ctx->family, ctx->type))
		return 1;
	if (!sbx_bound(&who))
		return 1;
	return sbx_socket_check(&who, ctx->family, ctx->type, ctx->protocol,
				MANUL_SBX_M_CGROUP) ? 0 : 1;
}

/* cgroup/connect* and sendmsg*: 1 = go on; 0 with a retval = refuse. */
static __always_inline int sbx_sock_addr(struct bpf_sock_addr *ctx, bool v6, __u8 op)
{
	struct manul_net_key key;
	struct sbx_who who;
	__u32 a[4];
	int err;

	if (!sbx_bound(&who))
		return 1;
	if (v6) {
		a[0] = ctx->user_ip6[0];
		a[1] = ctx->user_ip6[1];
		a[2] = ctx->user_ip6[2];
		a[3] = ctx->user_ip6[3];
		sbx_key_v6(&key, a);
	} else {
		__builtin_memset(key.addr, 0, sizeof(key.addr));
		key.family = AF_INET;
		a[0] = ctx->user_ip4;
		__builtin_memcpy(&key.addr[0], &a[0], 4);
	}
	err = sbx_net_check(&who, &key, bpf_ntohs(ctx->user_port), ctx->protocol, op,
			    MANUL_SBX_M_CGROUP);
	if (!err)
		return 1;
	if (bpf_core_enum_value_exists(enum bpf_func_id, BPF_FUNC_set_retval))
		bpf_set_retval(err);	/* -ECONNREFUSED instead of the hook's -EPERM */
	return 0;
}

SEC("cgroup/connect4")
int manul_sbx_connect4(struct bpf_sock_addr *ctx) { return sbx_sock_addr(ctx, false, MANUL_SBX_OP_CONNECT); }

SEC("cgroup/connect6")
int manul_sbx_connect6(struct bpf_sock_addr *ctx) { return sbx_sock_addr(ctx, true, MANUL_SBX_OP_CONNECT); }

SEC("cgroup/sendmsg4")
int manul_sbx_sendmsg4(struct bpf_sock_addr *ctx) { return sbx_sock_addr(ctx, false, MANUL_SBX_OP_SENDMSG); }

SEC("cgroup/sendmsg6")
int manul_sbx_sendmsg6(struct bpf_sock_addr *ctx) { return sbx_sock_addr(ctx, true, MANUL_SBX_OP_SENDMSG); }
