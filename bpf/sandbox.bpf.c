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
 * Programs, by mechanism (agent/sandbox/kernel.py loads one set):
 *   BPF LSM   lsm/file_open (read/write from f_mode; FMODE_EXEC opens are
 *             the exec's own and are decided in bprm_check_security),
 *             lsm/bprm_check_security, lsm/socket_connect; plus
 *             cgroup/sendmsg4/6 for unconnected UDP.
 *   fallback  cgroup/connect4/6 and sendmsg4/6 (same maps, same answers;
 *             -ECONNREFUSED through bpf_set_retval), and for files and exec
 *             tracepoints after the fact: sys_exit_open* and
 *             sched_process_exec, which can only report (would-deny events
 *             flagged DEGRADED).
 *
 * Paths: bpf_d_path() in the LSM hooks (allowed there: file_open and
 * bprm_check_security are in the kernel's sleepable LSM hook set, which is
 * what bpf_d_path_allowed() checks). The tracepoints cannot call it, so
 * they walk d_parent / mnt_parent themselves (sbx_walk): at most
 * SBX_WALK_DEPTH components, each cut at NAME_MAX; a deeper path is
 * reported as truncated.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "manul.h"
#include "events.h"
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

#define SBX_PATH_BUF 4096		/* PATH_MAX: what bpf_d_path may write */
#define SBX_PATH_MASK (SBX_PATH_BUF - 1)
#define SBX_WALK_DEPTH 48		/* components the tracepoints' walk follows */
#define SBX_NAME_MAX 255

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct manul_sandbox_config);
} sandbox_config SEC(".maps");

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
	char walk[SBX_PATH_BUF + SBX_NAME_MAX + 1];	/* the tracepoints' walk, built backwards */
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

/* Report one deny or would-deny. `s` (may be NULL) holds the path. */
static __always_inline void sbx_report(const struct sbx_who *who, __u8 action,
				       struct manul_sbx_verdict v, __u8 mechanism,
				       __u8 extra_flags, struct sbx_scratch *s, long path_len,
				       const struct manul_net_key *net, __u16 port, __u8 proto)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct manul_sandbox_meta *meta;
	struct manul_sandbox_event *ev;
	bool enforce = who->flags & MANUL_SBX_F_ENFORCE;
	__u64 id = bpf_get_current_pid_tgid();

	ev = manul_reserve(&sandbox_events, sizeof(*ev), MANUL_EV_SANDBOX);
	if (!ev)
		return;
	ev->cgroup_id = bpf_get_current_cgroup_id();
	ev->bound_cgroup_id = who->bound_cgroup_id;
	meta = bpf_map_lookup_elem(&sandbox_meta, &who->sandbox_id);
	ev->generation = meta ? meta->generation : 0;
	ev->pid = (__u32)id;
	ev->tgid = id >> 32;
	ev->ppid = BPF_CORE_READ(task, real_parent, tgid);
	ev->uid = (__u32)bpf_get_current_uid_gid();
	ev->sandbox_id = who->sandbox_id;
	ev->rule_id = v.rule_id;
	ev->action = action;
	ev->enforce = enforce;
	ev->mechanism = mechanism;
	ev->flags = extra_flags;
	if (mechanism == MANUL_SBX_M_TRACEPOINT && enforce)
		ev->flags |= MANUL_SBX_EV_DEGRADED;
	ev->verdict = (enforce && mechanism != MANUL_SBX_M_TRACEPOINT) ?
		MANUL_SBX_DENIED : MANUL_SBX_WOULD_DENY;
	ev->proto = proto;
	ev->family = 0;
	ev->port = port;
	ev->path_len = 0;
	ev->_pad = 0;
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

/* ---- paths -------------------------------------------------------------- */

static __always_inline __u8 sbx_first_slot(__u32 need)
{
	return (need & (1U << MANUL_SBX_READ)) ? MANUL_SBX_READ :
	       (need & (1U << MANUL_SBX_WRITE)) ? MANUL_SBX_WRITE : MANUL_SBX_EXEC;
}

/* The one path matcher. s->path holds the resolved path, `len` bytes with
 * its NUL (len <= 0: it could not be resolved, which denies). `need` is a
 * mask of path slots, all of which must be allowed; the first one that is
 * not decides. Reports a deny; returns 0 or -err (enforce mode, LSM). */
static __always_inline int sbx_path_check(const struct sbx_who *who, struct sbx_scratch *s,
					  long len, __u32 need, __u8 mechanism, int err)
{
	struct manul_sbx_verdict v = { 0, 0 };
	__u8 action = sbx_first_slot(need);
	__u32 slot;

	if (len > 0) {
		s->sandbox_id = who->sandbox_id;
		s->prefixlen = 32 + 8 * (len < MANUL_SBX_PATH_BYTES ? len : MANUL_SBX_PATH_BYTES);
		for (slot = 0; slot < MANUL_SBX_PATH_ACTIONS; slot++) {
			if (!(need & (1U << slot)))
				continue;
			v = manul_sbx_path((const struct manul_path_key *)s, slot);
			if (!v.allow) {
				action = slot;
				break;
			}
		}
		if (v.allow)
			return 0;
	}
	sbx_report(who, action, v, mechanism, len > 0 ? 0 : MANUL_SBX_EV_NO_PATH,
		   len > 0 ? s : NULL, len, NULL, 0, 0);
	if (!(who->flags & MANUL_SBX_F_ENFORCE) || mechanism == MANUL_SBX_M_TRACEPOINT)
		return 0;
	return -err;
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
	if (mode & FMODE_READ)
		need |= 1U << MANUL_SBX_READ;
	if (mode & FMODE_WRITE)
		need |= 1U << MANUL_SBX_WRITE;
	if (!need)
		need = 1U << MANUL_SBX_READ;	/* open(O_ACCMODE == 3): ioctl only; a read */
	s = sbx_scratch_get();
	if (!s)
		return 0;
	return sbx_path_check(&who, s, bpf_d_path((struct path *)&file->f_path, s->path, SBX_PATH_BUF),
			      need, MANUL_SBX_M_LSM, ENOENT);
}

SEC("lsm/bprm_check_security")
int BPF_PROG(manul_sbx_bprm_check, struct linux_binprm *bprm, int ret)
{
	struct sbx_who who;
	struct sbx_scratch *s;

	if (ret)
		return ret;
	if (!sbx_bound(&who))
		return 0;
	s = sbx_scratch_get();
	if (!s)
		return 0;
	return sbx_path_check(&who, s, bpf_d_path((struct path *)&bprm->file->f_path, s->path, SBX_PATH_BUF),
			      1U << MANUL_SBX_EXEC, MANUL_SBX_M_LSM, EPERM);
}

/* ---- the tracepoints' own path walk (no bpf_d_path there) ---------------- */

struct sbx_walk_ctx {
	struct sbx_scratch *s;
	struct dentry *dentry;
	struct vfsmount *vfsmnt;
	struct mount *mnt;
	struct dentry *root_dentry;
	struct vfsmount *root_mnt;
	__u64 mnt_off;
	__u32 pos;			/* where the path starts in s->walk */
	__u32 done;			/* reached the root */
};

/* One step up: a component, or a mount crossing. 1 stops bpf_loop. */
static long sbx_walk_step(__u32 i, void *data)
{
	struct sbx_walk_ctx *c = data;
	struct dentry *dentry = c->dentry, *parent, *mnt_root;
	struct vfsmount *vfsmnt = c->vfsmnt;
	struct mount *mnt = c->mnt, *mnt_parent;
	struct qstr name;
	__u32 len, pos;

	if (dentry == c->root_dentry && vfsmnt == c->root_mnt)
		goto done;
	mnt_root = BPF_CORE_READ(vfsmnt, mnt_root);
	if (dentry == mnt_root) {
		mnt_parent = BPF_CORE_READ(mnt, mnt_parent);
		if (mnt_parent == mnt)
			goto done;	/* the namespace's root mount */
		c->dentry = BPF_CORE_READ(mnt, mnt_mountpoint);
		c->mnt = mnt_parent;
		c->vfsmnt = (void *)mnt_parent + c->mnt_off;
		return 0;
	}
	parent = BPF_CORE_READ(dentry, d_parent);
	if (parent == dentry)
		goto done;		/* a file system's own root */
	name = BPF_CORE_READ(dentry, d_name);
	len = name.len;
	if (len > SBX_NAME_MAX)
		len = SBX_NAME_MAX;
	pos = c->pos;
	if (pos < len + 2 || pos > SBX_PATH_MASK)
		return 1;		/* longer than PATH_MAX: truncated */
	pos -= len;
	if (bpf_probe_read_kernel(&c->s->walk[pos & SBX_PATH_MASK], len & SBX_NAME_MAX,
				  name.name) < 0)
		manul_count_err(MANUL_ERR_READ);
	pos -= 1;
	c->s->walk[pos & SBX_PATH_MASK] = '/';
	c->pos = pos;
	c->dentry = parent;
	return 0;
done:
	c->done = 1;
	return 1;
}

/* Build the path of (vfsmnt, dentry) from the task's root into s->path, as
 * d_path would (bpf_d_path is not allowed in tracepoints); returns its
 * length with the NUL, or -1 when it is deeper than SBX_WALK_DEPTH
 * components or longer than PATH_MAX. */
static __always_inline long sbx_walk(struct sbx_scratch *s, struct vfsmount *vfsmnt,
				     struct dentry *dentry)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct sbx_walk_ctx c = {
		.s = s,
		.dentry = dentry,
		.vfsmnt = vfsmnt,
		.root_dentry = BPF_CORE_READ(task, fs, root.dentry),
		.root_mnt = BPF_CORE_READ(task, fs, root.mnt),
		.mnt_off = bpf_core_field_offset(struct mount, mnt),
		.pos = SBX_PATH_BUF - 1,
		.done = 0,
	};
	__u32 pos, len;

	c.mnt = (void *)vfsmnt - c.mnt_off;
	s->walk[SBX_PATH_BUF - 1] = 0;
	bpf_loop(SBX_WALK_DEPTH, sbx_walk_step, &c, 0);
	if (!c.done) {
		manul_count_err(MANUL_ERR_TRUNCATED);
		return -1;
	}
	pos = c.pos;
	if (pos == SBX_PATH_BUF - 1) {
		pos -= 1;
		s->walk[SBX_PATH_BUF - 2] = '/';	/* the root itself */
	}
	len = SBX_PATH_BUF - pos;	/* with the NUL */
	if (len > SBX_PATH_MASK)
		return -1;
	if (bpf_probe_read_kernel(s->path, len, &s->walk[pos & SBX_PATH_MASK]) < 0)
		return -1;
	return len;
}

static __always_inline int sbx_tp_file(struct sbx_who *who, struct file *file, __u32 need)
{
	struct sbx_scratch *s = sbx_scratch_get();

	if (!s || !file)
		return 0;
	sbx_path_check(who, s, sbx_walk(s, BPF_CORE_READ(file, f_path.mnt),
					BPF_CORE_READ(file, f_path.dentry)),
		       need, MANUL_SBX_M_TRACEPOINT, ENOENT);
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
	return sbx_tp_file(&who, file, need);
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
	return sbx_tp_file(&who, BPF_CORE_READ(bprm, file), 1U << MANUL_SBX_EXEC);
}

/* ---- network ------------------------------------------------------------- */

/* `key` holds family and addr (IPv4-mapped IPv6 already turned into IPv4). */
static __always_inline int sbx_net_check(const struct sbx_who *who, struct manul_net_key *key,
					 __u16 port, int protocol, __u8 mechanism)
{
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
	sbx_report(who, MANUL_SBX_CONNECT, v, mechanism, 0, NULL, 0, key, port, bit);
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

SEC("lsm/socket_connect")
int BPF_PROG(manul_sbx_socket_connect, struct socket *sock, struct sockaddr *address,
	     int addrlen, int ret)
{
	struct manul_net_key key;
	struct sbx_who who;
	struct sockaddr_in6 sin6;
	__u16 family, port;

	if (ret)
		return ret;
	if (!sbx_bound(&who))
		return 0;
	family = address->sa_family;
	if (family == AF_INET) {
		if (addrlen < (int)sizeof(struct sockaddr_in))
			return 0;	/* the kernel refuses it (EINVAL) */
		/* sockaddr_in fits struct sockaddr: read it in place (port in
		 * sa_data[0..1], address in sa_data[2..5]), no helper call */
		__builtin_memset(key.addr, 0, sizeof(key.addr));
		key.family = AF_INET;
		key.addr[0] = address->sa_data[2];
		key.addr[1] = address->sa_data[3];
		key.addr[2] = address->sa_data[4];
		key.addr[3] = address->sa_data[5];
		port = ((__u8)address->sa_data[0] << 8) | (__u8)address->sa_data[1];
	} else if (family == AF_INET6) {
		if (addrlen < (int)sizeof(sin6))
			return 0;
		if (bpf_probe_read_kernel(&sin6, sizeof(sin6), address) < 0)
			return 0;
		sbx_key_v6(&key, sin6.sin6_addr.in6_u.u6_addr32);
		port = bpf_ntohs(sin6.sin6_port);
	} else {
		return 0;		/* AF_UNSPEC (disconnect), AF_UNIX, ...: not network egress */
	}
	return sbx_net_check(&who, &key, port, sock->sk->sk_protocol, MANUL_SBX_M_LSM);
}

/* cgroup/connect* and sendmsg*: 1 = go on; 0 with a retval = refuse. */
static __always_inline int sbx_sock_addr(struct bpf_sock_addr *ctx, bool v6)
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
	err = sbx_net_check(&who, &key, bpf_ntohs(ctx->user_port), ctx->protocol,
			    MANUL_SBX_M_CGROUP);
	if (!err)
		return 1;
	if (bpf_core_enum_value_exists(enum bpf_func_id, BPF_FUNC_set_retval))
		bpf_set_retval(err);	/* -ECONNREFUSED instead of the hook's -EPERM */
	return 0;
}

SEC("cgroup/connect4")
int manul_sbx_connect4(struct bpf_sock_addr *ctx) { return sbx_sock_addr(ctx, false); }

SEC("cgroup/connect6")
int manul_sbx_connect6(struct bpf_sock_addr *ctx) { return sbx_sock_addr(ctx, true); }

SEC("cgroup/sendmsg4")
int manul_sbx_sendmsg4(struct bpf_sock_addr *ctx) { return sbx_sock_addr(ctx, false); }

SEC("cgroup/sendmsg6")
int manul_sbx_sendmsg6(struct bpf_sock_addr *ctx) { return sbx_sock_addr(ctx, true); }
