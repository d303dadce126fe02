// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * baseline.bpf.c: what watched workloads do, filtered against their learned
 * baseline in the kernel; only novel events reach user space.
 *
 * Observation only: nothing here changes what a process may do. Hooks:
 *   exec     tracepoint sched_process_exec (the new program, resolved)
 *   open     fexit security_file_open where BPF trampolines load (every
 *            open, any ABI, io_uring); else tracepoints sys_exit_open,
 *            openat, openat2, creat, open_by_handle_at (the file now at
 *            the returned descriptor; 64-bit system calls only)
 *   connect  tracepoint sock/inet_sock_set_state (TCP: SYN_SENT, which
 *            TCP Fast Open reaches too; LISTEN), and cgroup/connect4/6,
 *            sendmsg4/6 at the cgroup v2 root for UDP peers
 *   unix     fentry security_unix_stream_connect; else tracepoints
 *            sys_enter/sys_exit_connect (the path of the Unix socket a
 *            stream socket connects to)
 * Every hook asks bl_scope() first: a process outside the watched
 * cgroups costs a hash lookup per cgroup level. Then bl_report(): known keys are counted
 * and dropped; a novel key is sent once and inserted.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "manul.h"
#include "events.h"
#include "pathwalk.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

MANUL_BTF_EXPORT(manul_bl_event);
MANUL_BTF_EXPORT(manul_bl_prefix);
MANUL_BTF_EXPORT(manul_bl_inode);
MANUL_BTF_EXPORT(manul_bl_file);

#define AF_UNIX 1
#define AF_INET 2
#define AF_INET6 10
#define SOCK_DGRAM 2
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define TCP_SYN_SENT 2
#define TCP_LISTEN 10
#define FMODE_READ 0x1
#define FMODE_WRITE 0x2
#define FMODE_EXEC 0x20
#define S_IFMT 00170000
#define S_IFDIR 0040000
#define PROC_SUPER_MAGIC 0x9fa0

/* Set before load: observe every cgroup not marked 0 in bl_watch (--baseline
 * all), not only those marked 1 (registered agents); the local port range,
 * whose listening ports are folded to 0 (ephemeral). */
const volatile __u32 observe_all = 0;
const volatile __u16 ephemeral_lo = 32768;
const volatile __u16 ephemeral_hi = 60999;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);		/* cgroup id */
	__type(value, __u64);		/* its scope; 0: never (the agent, the root) */
} bl_watch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct manul_bl_key);
	__type(value, __u64);		/* times seen since inserted */
} bl_seen SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct manul_bl_prefix);
	__type(value, __u64);		/* the directory's length in bytes, with its '/' */
} bl_prefix SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} bl_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct manul_bl_file);
	__type(value, __u8);
} bl_files SEC(".maps");

/* Catalogued credentials by inode, and their own small ring buffer: a flood of
 * novel events that fills bl_events cannot make a credential read get lost. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct manul_bl_inode);
	__type(value, __u32);
} bl_secrets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 16);
} bl_alerts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MANUL_BL_KINDS);
	__type(key, __u32);
	__type(value, struct manul_bl_counts);
} bl_stats SEC(".maps");

struct bl_scratch {
	struct manul_bl_key key;
	struct manul_bl_inode inode;	/* of a path event's file (bl_secret) */
	struct manul_bl_file file;	/* its (dentry, mount) for bl_files */
	struct manul_bl_prefix prefix;
	char tmp[MANUL_PATH_MAX];
	char walk[MANUL_WALK_SIZE];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct bl_scratch);
} bl_scratch SEC(".maps");

static __always_inline struct manul_bl_counts *bl_counts(__u32 kind)
{
	__u32 idx = kind & (MANUL_BL_KINDS - 1);

	return bpf_map_lookup_elem(&bl_stats, &idx);
}

/* The scope of the current process (manul.h), or 0: not watched. The nearest
 * listed cgroup wins: its own, else its deepest listed ancestor. */
static __always_inline __u64 bl_scope(__u64 cgid)
{
	__u64 *v = bpf_map_lookup_elem(&bl_watch, &cgid), found = observe_all ? cgid : 0, anc;
	int level;

	if (v)
		return *v;
	for (level = 1; level < MANUL_BL_MAX_LEVEL; level++) {
		anc = bpf_get_current_ancestor_cgroup_id(level);
		if (!anc || anc == cgid)
			break;
		v = bpf_map_lookup_elem(&bl_watch, &anc);
		if (v)
			found = *v;
	}
	return found;
}

/* A fresh key for (cgroup, kind) in the per-CPU scratch. */
static __always_inline struct bl_scratch *bl_start(__u64 scope, __u32 kind)
{
	__u32 zero = 0;
	struct bl_scratch *s = bpf_map_lookup_elem(&bl_scratch, &zero);

	if (!s) {
		manul_count_err(MANUL_ERR_NO_SCRATCH);
		return NULL;
	}
	__builtin_memset(&s->key, 0, sizeof(s->key));
	__builtin_memset(&s->inode, 0, sizeof(s->inode));
	__builtin_memset(&s->file, 0, sizeof(s->file));
	s->key.scope = scope;
	s->key.kind = kind;
	return s;
}

/* No '/' from byte `from` of the key's path on: a file directly in the
 * generalised directory, not in a subdirectory of it (a bpf_loop: checked
 * once by the verifier, not once per byte). */
struct bl_slash_ctx {
	struct bl_scratch *s;
	__u32 from;
	__u32 found;
};

static long bl_slash_step(__u32 i, void *data)
{
	struct bl_slash_ctx *c = data;
	__u32 j = c->from + i;
	char ch;

	if (j >= MANUL_PATH_MAX)
		return 1;
	ch = c->s->key.path[j & (MANUL_PATH_MAX - 1)];
	if (!ch)
		return 1;
	if (ch == '/') {
		c->found = 1;
		return 1;
	}
	return 0;
}

static __always_inline bool bl_no_slash_from(struct bl_scratch *s, __u32 from)
{
	struct bl_slash_ctx c = { .s = s, .from = from, .found = 0 };

	bpf_loop(MANUL_PATH_MAX, bl_slash_step, &c, 0);
	return !c.found;
}

/* Is the key's path a file directly in a generalised directory of its
 * baseline? (bl_prefix's value: the directory's length with its '/'.) */
static __always_inline bool bl_under_prefix(struct bl_scratch *s)
{
	struct manul_bl_prefix *p = &s->prefix;
	__u64 *len;

	p->prefixlen = 96 + 8 * MANUL_BL_PREFIX_MAX;
	__builtin_memcpy(p->scope, &s->key.scope, 8);
	p->kind = s->key.kind;
	__builtin_memcpy(p->path, s->key.path, MANUL_BL_PREFIX_MAX);
	len = bpf_map_lookup_elem(&bl_prefix, p);
	return len && bl_no_slash_from(s, (__u32)*len);
}

/* Count a known key; send a novel one (once) and remember it. */
/* 1 when the key is now in the baseline (known, or sent and remembered). */
static __always_inline int bl_report(struct bl_scratch *s, __u32 flags)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct manul_bl_counts *n = bl_counts(s->key.kind);
	struct task_struct *parent;
	struct manul_bl_event *ev;
	__u64 *seen, one = 1, id;

	if (n)
		n->seen++;
	if (flags & MANUL_BL_F_SECRET)
		s->key.secret = 1;	/* a learned path never hides a credential */
	seen = bpf_map_lookup_elem(&bl_seen, &s->key);
	if (seen) {
		__sync_fetch_and_add(seen, 1);
		if (n)
			n->known++;
		return 1;
	}
	if (s->key.path[0] && !(flags & MANUL_BL_F_SECRET) && bl_under_prefix(s)) {
		if (n)
			n->known++;
		return 1;
	}
	ev = manul_reserve((flags & MANUL_BL_F_SECRET) ? (void *)&bl_alerts : (void *)&bl_events,
			   sizeof(*ev), MANUL_EV_BEHAVIOUR);
	if (!ev) {
		if (n)
			n->lost++;	/* not remembered: sent next time */
		return 0;
	}
	if (bpf_map_update_elem(&bl_seen, &s->key, &one, BPF_NOEXIST) &&
	    !bpf_map_lookup_elem(&bl_seen, &s->key))
		manul_count_err(MANUL_ERR_MAP_UPDATE);
	__builtin_memcpy(&ev->key, &s->key, sizeof(ev->key));
	ev->cgroup_id = bpf_get_current_cgroup_id();
	id = bpf_get_current_pid_tgid();
	ev->pid = (__u32)id;
	ev->tgid = id >> 32;
	ev->uid = (__u32)bpf_get_current_uid_gid();
	ev->flags = flags;
	ev->dev = s->inode.dev;
	ev->ino = s->inode.ino;
	parent = BPF_CORE_READ(task, real_parent);
	ev->ppid = BPF_CORE_READ(parent, tgid);
	bpf_get_current_comm(ev->comm, sizeof(ev->comm));
	BPF_CORE_READ_STR_INTO(&ev->pcomm, parent, comm);
	bpf_ringbuf_submit(ev, 0);
	if (n)
		n->sent++;
	return 1;
}

/* Was this file (dentry, mount, inode) already judged for the scope and
 * kind? Then it is counted as known without walking its path (nor clearing
 * the scratch). `f` is filled for bl_report_file either way. */
static __always_inline bool bl_file_known(struct manul_bl_file *f, __u64 scope, __u32 kind,
					  struct vfsmount *mnt, struct dentry *dentry,
					  struct inode *inode)
{
	struct manul_bl_counts *n;

	f->scope = scope;
	f->kind = kind;
	f->dentry = (__u64)dentry;
	f->mnt = (__u64)mnt;
	f->ino = BPF_CORE_READ(inode, i_ino);
	f->generation = BPF_CORE_READ(inode, i_generation);
	if (!bpf_map_lookup_elem(&bl_files, f))
		return false;
	n = bl_counts(kind);
	if (n) {
		n->seen++;
		n->known++;
	}
	return true;
}

/* bl_report for a file event; a file now in the baseline is remembered by
 * (dentry, mount) for bl_file_known. Credentials never are. */
static __always_inline void bl_report_file(struct bl_scratch *s, __u32 flags)
{
	__u8 one = 1;

	if (bl_report(s, flags) && !(flags & MANUL_BL_F_SECRET) && s->file.dentry)
		bpf_map_update_elem(&bl_files, &s->file, &one, BPF_ANY);
}

/* /proc/<pid>/... -> /proc/self/... for the caller's own process, else
 * /proc/pid/... (MANUL_BL_F_PROC_OTHER): a pid is never novelty. */
static __always_inline __u32 bl_fold_proc(struct bl_scratch *s)
{
	char *p = s->key.path;
	__u32 id = bpf_get_current_pid_tgid() >> 32, tid = (__u32)bpf_get_current_pid_tgid();
	__u32 n = 0, nd = 0, off, flags = 0;
	int i;

	if (p[0] != '/' || p[1] != 'p' || p[2] != 'r' || p[3] != 'o' || p[4] != 'c' ||
	    p[5] != '/')
		return 0;
	for (i = 0; i < 10; i++) {
		char ch = p[6 + i];

		if (ch >= '0' && ch <= '9') {
			n = n * 10 + (ch - '0');
			nd++;
			continue;
		}
		if (ch == '/' || ch == 0)
			break;
		return 0;		/* /proc/sys, /proc/net, ... */
	}
	if (nd == 0 || i == 10)
		return 0;
	if (bpf_probe_read_kernel(s->tmp, MANUL_BL_PREFIX_MAX, p + 6 + (nd & 15)) < 0)
		return 0;
	if (n == id || n == tid) {
		__builtin_memcpy(p + 6, "self", 4);
		off = 10;
	} else {
		__builtin_memcpy(p + 6, "pid", 3);
		off = 9;
		flags = MANUL_BL_F_PROC_OTHER;
	}
	bpf_probe_read_kernel(p + (off & 15), MANUL_BL_PREFIX_MAX, s->tmp);
	__builtin_memset(p + MANUL_PATH_MAX - 8, 0, 8);
	return flags;
}

/* The file's identity into `k` (for the event), and MANUL_BL_F_SECRET when
 * it is a catalogued credential. */
static __always_inline __u32 bl_secret(struct manul_bl_inode *k, struct inode *inode)
{
	k->ino = 0;
	k->dev = 0;
	k->_pad = 0;
	if (!inode)
		return 0;
	k->ino = BPF_CORE_READ(inode, i_ino);
	k->dev = BPF_CORE_READ(inode, i_sb, s_dev);
	return bpf_map_lookup_elem(&bl_secrets, k) ? MANUL_BL_F_SECRET : 0;
}

/* A file with no path from the task's root (a memfd, a dentry that
 * open_by_handle_at could not connect, another namespace's file): its name,
 * as /(anonymous)/<name>, so that it is still an event, never a hole. */
static __always_inline void bl_anon_path(struct bl_scratch *s, struct dentry *dentry,
					 __u32 *flags)
{
	const unsigned char *name = BPF_CORE_READ(dentry, d_name.name);

	__builtin_memset(s->key.path, 0, sizeof(s->key.path));
	__builtin_memcpy(s->key.path, "/(anonymous)/", 13);
	if (name)
		bpf_probe_read_kernel_str(s->key.path + 13, MANUL_PATH_MAX - 13, name);
	*flags |= MANUL_BL_F_ANON;
}

/* The path of (mnt, dentry) into the key; flags for the event. */
static __always_inline int bl_path(struct bl_scratch *s, struct vfsmount *mnt,
				   struct dentry *dentry, __u32 *flags)
{
	__u32 full = 0;
	long len = manul_walk_path(s->walk, s->key.path, MANUL_PATH_MAX, mnt, dentry, false,
				   &full);

	if (len <= 0)
		return -1;
	if (full > MANUL_PATH_MAX)
		*flags |= MANUL_BL_F_TRUNCATED;
	if (BPF_CORE_READ(mnt, mnt_sb, s_magic) == PROC_SUPER_MAGIC)
		*flags |= bl_fold_proc(s);
	return 0;
}

SEC("tracepoint/sched/sched_process_exec")
int manul_bl_exec(void *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	__u64 scope = bl_scope(bpf_get_current_cgroup_id());
	struct manul_bl_file fk = {};
	struct bl_scratch *s;
	struct vfsmount *mnt;
	struct dentry *dentry;
	struct file *exe;
	__u32 flags = 0;

	if (!scope)
		return 0;
	exe = BPF_CORE_READ(task, mm, exe_file);
	if (!exe) {
		manul_count_err(MANUL_ERR_NO_PATH);
		return 0;
	}
	mnt = BPF_CORE_READ(exe, f_path.mnt);
	dentry = BPF_CORE_READ(exe, f_path.dentry);
	if (bl_file_known(&fk, scope, MANUL_BL_EXEC, mnt, dentry, BPF_CORE_READ(exe, f_inode)))
		return 0;
	s = bl_start(scope, MANUL_BL_EXEC);
	if (!s)
		return 0;
	s->file = fk;
	if (bl_path(s, mnt, dentry, &flags) < 0)
		bl_anon_path(s, dentry, &flags);
	bl_report_file(s, flags);
	return 0;
}

/* The file behind descriptor `fd` of the current task, or NULL. */
static __always_inline struct file *bl_fd_file(long fd)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	struct file **fds, *file = NULL;

	if (fd < 0 || !fdt || fd >= BPF_CORE_READ(fdt, max_fds))
		return NULL;
	fds = BPF_CORE_READ(fdt, fd);
	if (bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]) < 0)
		return NULL;
	return file;
}

/* An opened file of the current task: its path against the scope's baseline. */
static __always_inline int bl_file(struct file *file, __u64 scope)
{
	struct manul_bl_inode ik = {};
	struct manul_bl_file fk = {};
	struct bl_scratch *s;
	__u32 kind;
	struct vfsmount *mnt;
	struct dentry *dentry;
	struct inode *inode;
	__u32 flags = 0, mode;
	umode_t imode;

	mode = BPF_CORE_READ(file, f_mode);
	if (mode & FMODE_EXEC)
		return 0;		/* an exec's own opens: manul_bl_exec */
	imode = BPF_CORE_READ(file, f_inode, i_mode);
	if ((imode & S_IFMT) == S_IFDIR)
		return 0;		/* a directory listing is not a file access */
	if (mode & FMODE_READ)
		flags |= MANUL_BL_F_READ;
	if (mode & FMODE_WRITE)
		flags |= MANUL_BL_F_WRITE;
	kind = (mode & FMODE_WRITE) ? MANUL_BL_WRITE : MANUL_BL_READ;
	inode = BPF_CORE_READ(file, f_inode);
	mnt = BPF_CORE_READ(file, f_path.mnt);
	dentry = BPF_CORE_READ(file, f_path.dentry);
	flags |= bl_secret(&ik, inode);
	if (!(flags & MANUL_BL_F_SECRET) && bl_file_known(&fk, scope, kind, mnt, dentry, inode))
		return 0;	/* the common case: no walk, no scratch */
	s = bl_start(scope, kind);
	if (!s)
		return 0;
	s->inode = ik;
	s->file = fk;
	if (bl_path(s, mnt, dentry, &flags) < 0)
		bl_anon_path(s, dentry, &flags);
	bl_report_file(s, flags);
	return 0;
}

/* A successful open system call: the file now at descriptor `fd`. */
static __always_inline int bl_open(long fd)
{
	struct file *file;
	__u64 scope;

	if (fd < 0)
		return 0;
	scope = bl_scope(bpf_get_current_cgroup_id());
	if (!scope)
		return 0;
	file = bl_fd_file(fd);
	return file ? bl_file(file, scope) : 0;
}

/* With BPF trampolines: every open the LSM checks let through, whatever
 * asked for it — any system call ABI (int $0x80 included), io_uring,
 * open_by_handle_at, a kernel open on the task's behalf. The system call
 * tracepoints below are the fallback (they never see 32-bit calls nor
 * io_uring); one set or the other is loaded (BehaviourSensor). */
SEC("fexit/security_file_open")
int BPF_PROG(manul_bl_fopen, struct file *file, int ret)
{
	__u64 scope;

	if (ret)
		return 0;
	scope = bl_scope(bpf_get_current_cgroup_id());
	return scope ? bl_file(file, scope) : 0;
}

/* The fallback: every system call that returns a new descriptor for a path
 * (32-bit calls and io_uring are not seen: docs/baseline.md). */
SEC("tracepoint/syscalls/sys_exit_openat")
int manul_bl_openat(struct trace_event_raw_sys_exit *ctx)
{
	return bl_open(ctx->ret);
}

SEC("tracepoint/syscalls/sys_exit_openat2")
int manul_bl_openat2(struct trace_event_raw_sys_exit *ctx)
{
	return bl_open(ctx->ret);
}

SEC("tracepoint/syscalls/sys_exit_open")
int manul_bl_open(struct trace_event_raw_sys_exit *ctx)
{
	return bl_open(ctx->ret);
}

SEC("tracepoint/syscalls/sys_exit_creat")
int manul_bl_creat(struct trace_event_raw_sys_exit *ctx)
{
	return bl_open(ctx->ret);
}

SEC("tracepoint/syscalls/sys_exit_open_by_handle_at")
int manul_bl_open_by_handle(struct trace_event_raw_sys_exit *ctx)
{
	return bl_open(ctx->ret);
}

/* Unix stream connects: the descriptor at entry, the peer's path at a
 * successful exit (resolved by the kernel: a relative name cannot hide it). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, __u64);		/* pid_tgid */
	__type(value, __s64);		/* the socket's descriptor */
} bl_connecting SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_connect")
int manul_bl_connect_enter(struct trace_event_raw_sys_enter *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__s64 fd = ctx->args[0];
	__u16 family = 0;

	/* only Unix sockets are followed here (TCP and UDP have their own hooks) */
	if (bpf_probe_read_user(&family, sizeof(family), (void *)ctx->args[1]) < 0 ||
	    family != AF_UNIX)
		return 0;
	if (!bl_scope(bpf_get_current_cgroup_id()))
		return 0;
	bpf_map_update_elem(&bl_connecting, &id, &fd, BPF_ANY);
	return 0;
}

/* The Unix socket `peer` a stream socket of the current task connects to. */
static __always_inline int bl_unix_peer(struct unix_sock *peer)
{
	struct dentry *dentry;
	struct bl_scratch *s;
	__u32 flags = 0;
	__u64 scope;

	if (!peer)
		return 0;
	dentry = BPF_CORE_READ(peer, path.dentry);
	if (!dentry)
		return 0;		/* an abstract or unbound socket: no path */
	scope = bl_scope(bpf_get_current_cgroup_id());
	if (!scope)
		return 0;
	s = bl_start(scope, MANUL_BL_UNIX);
	if (!s)
		return 0;
	flags |= bl_secret(&s->inode, BPF_CORE_READ(dentry, d_inode));
	if (bl_path(s, BPF_CORE_READ(peer, path.mnt), dentry, &flags) < 0) {
		manul_count_err(MANUL_ERR_NO_PATH);
		return 0;
	}
	bl_report(s, flags);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_connect")
int manul_bl_connect_exit(struct trace_event_raw_sys_exit *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__s64 *fdp = bpf_map_lookup_elem(&bl_connecting, &id);
	struct socket *sock;
	struct file *file;
	struct sock *sk;
	long fd;

	if (!fdp)
		return 0;
	fd = *fdp;
	bpf_map_delete_elem(&bl_connecting, &id);
	if (ctx->ret != 0)
		return 0;
	file = bl_fd_file(fd);
	if (!file)
		return 0;
	sock = BPF_CORE_READ(file, private_data);
	sk = BPF_CORE_READ(sock, sk);
	if (!sk || BPF_CORE_READ(sk, __sk_common.skc_family) != AF_UNIX)
		return 0;
	return bl_unix_peer((struct unix_sock *)BPF_CORE_READ((struct unix_sock *)sk, peer));
}

/* With BPF trampolines: every Unix stream connect the LSM is asked about,
 * whatever asked for it (io_uring, 32-bit calls). */
SEC("fentry/security_unix_stream_connect")
int BPF_PROG(manul_bl_funix, struct sock *sock, struct sock *other, struct sock *newsk)
{
	return bl_unix_peer((struct unix_sock *)other);
}

static __always_inline void bl_v4(__u8 *addr, __u32 ip4)
{
	__builtin_memset(addr, 0, 10);
	addr[10] = 0xff;
	addr[11] = 0xff;
	__builtin_memcpy(addr + 12, &ip4, 4);
}

SEC("tracepoint/sock/inet_sock_set_state")
int manul_bl_tcp(struct trace_event_raw_inet_sock_set_state *ctx)
{
	struct bl_scratch *s;
	int state = ctx->newstate;
	__u64 scope;
	__u16 port;

	if (ctx->protocol != IPPROTO_TCP || (state != TCP_SYN_SENT && state != TCP_LISTEN))
		return 0;
	scope = bl_scope(bpf_get_current_cgroup_id());
	if (!scope)
		return 0;
	s = bl_start(scope, state == TCP_LISTEN ? MANUL_BL_LISTEN : MANUL_BL_CONNECT);
	if (!s)
		return 0;
	s->key.proto = IPPROTO_TCP;
	if (state == TCP_LISTEN) {
		port = ctx->sport;
		if (port >= ephemeral_lo && port <= ephemeral_hi)
			port = 0;
		s->key.port = port;
	} else {
		s->key.port = ctx->dport;
		/* (the tracepoint's arrays are copied: a moved ctx pointer cannot be read) */
		if (ctx->family == AF_INET6)
			bpf_probe_read_kernel(s->key.addr, 16, ctx->daddr_v6);
		else
			bl_v4(s->key.addr, *(__u32 *)ctx->daddr);
	}
	bl_report(s, 0);
	return 0;
}

/* UDP peers: connect(2) and sendto(2) with an address (TCP: manul_bl_tcp). */
static __always_inline int bl_udp(struct bpf_sock_addr *ctx, bool v6)
{
	struct bl_scratch *s;
	__u64 scope;

	if (ctx->type != SOCK_DGRAM)
		return 1;
	scope = bl_scope(bpf_get_current_cgroup_id());
	if (!scope)
		return 1;
	s = bl_start(scope, MANUL_BL_CONNECT);
	if (!s)
		return 1;
	s->key.proto = IPPROTO_UDP;
	s->key.port = bpf_ntohs((__u16)ctx->user_port);
	if (v6) {
		__u32 *a = (__u32 *)s->key.addr;

		a[0] = ctx->user_ip6[0];
		a[1] = ctx->user_ip6[1];
		a[2] = ctx->user_ip6[2];
		a[3] = ctx->user_ip6[3];
	} else {
		bl_v4(s->key.addr, ctx->user_ip4);
	}
	bl_report(s, 0);
	return 1;
}

SEC("cgroup/connect4")
int manul_bl_connect4(struct bpf_sock_addr *ctx)
{
	return bl_udp(ctx, false);
}

SEC("cgroup/connect6")
int manul_bl_connect6(struct bpf_sock_addr *ctx)
{
	return bl_udp(ctx, true);
}

SEC("cgroup/sendmsg4")
int manul_bl_sendmsg4(struct bpf_sock_addr *ctx)
{
	return bl_udp(ctx, false);
}

SEC("cgroup/sendmsg6")
int manul_bl_sendmsg6(struct bpf_sock_addr *ctx)
{
	return bl_udp(ctx, true);
}
