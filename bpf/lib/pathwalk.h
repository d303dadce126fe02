/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * pathwalk.h: the path of (vfsmount, dentry) from the current task's root,
 * walked through d_parent / mnt_parent as d_path does, for the programs
 * that cannot call bpf_d_path (tracepoints, kprobes, most LSM hooks).
 *
 * The walk builds the path backwards in a caller's buffer of
 * MANUL_WALK_SIZE bytes (a per-CPU map value), at most MANUL_WALK_DEPTH
 * components and PATH_MAX bytes, and copies it forwards into `out`.
 */
#ifndef MANUL_PATHWALK_H
#define MANUL_PATHWALK_H

#include "manul.h"
#include "errmetrics.h"

#define MANUL_WALK_BUF 4096		/* PATH_MAX */
#define MANUL_WALK_MASK (MANUL_WALK_BUF - 1)
#define MANUL_WALK_DEPTH 48		/* components followed */
#define MANUL_NAME_MAX 255
#define MANUL_WALK_SIZE (MANUL_WALK_BUF + MANUL_NAME_MAX + 1)

struct manul_walk_ctx {
	char *walk;
	struct dentry *dentry;
	struct vfsmount *vfsmnt;
	struct mount *mnt;
	struct dentry *root_dentry;
	struct vfsmount *root_mnt;
	__u64 mnt_off;
	__u32 pos;			/* where the path starts in walk */
	__u32 done;			/* reached the root */
	__u32 outside;			/* the dentry is not below the mount's root */
	__u32 unreached;		/* ... or below it, but not below the task's root */
};

/* One step up: a component, or a mount crossing. 1 stops bpf_loop. */
static long manul_walk_step(__u32 i, void *data)
{
	struct manul_walk_ctx *c = data;
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
		if (mnt_parent == mnt) {
			c->unreached = 1;	/* the namespace's root, not the task's */
			goto done;
		}
		c->dentry = BPF_CORE_READ(mnt, mnt_mountpoint);
		c->mnt = mnt_parent;
		c->vfsmnt = (void *)mnt_parent + c->mnt_off;
		return 0;
	}
	parent = BPF_CORE_READ(dentry, d_parent);
	if (parent == dentry) {
		c->outside = 1;		/* a file system's root, but not this mount's */
		goto done;
	}
	name = BPF_CORE_READ(dentry, d_name);
	len = name.len;
	if (len > MANUL_NAME_MAX)
		len = MANUL_NAME_MAX;
	pos = c->pos;
	if (pos < len + 2 || pos > MANUL_WALK_MASK)
		return 1;		/* longer than PATH_MAX: truncated */
	pos -= len;
	if (bpf_probe_read_kernel(&c->walk[pos & MANUL_WALK_MASK], len & MANUL_NAME_MAX,
				  name.name) < 0)
		manul_count_err(MANUL_ERR_READ);
	pos -= 1;
	c->walk[pos & MANUL_WALK_MASK] = '/';
	c->pos = pos;
	c->dentry = parent;
	return 0;
done:
	c->done = 1;
	return 1;
}

/* Walk (vfsmnt, dentry) into `walk` (MANUL_WALK_SIZE bytes) and copy the
 * path, NUL-terminated, to `out` (`out_size` bytes, a power of two at most
 * MANUL_WALK_BUF; a longer path is cut and counted MANUL_ERR_TRUNCATED).
 * Returns the length copied with the NUL; 0 when the dentry is not below
 * the mount's root (or, with `reachable`, not below the task's root: no
 * name the task has); -1 when deeper than MANUL_WALK_DEPTH components or
 * longer than PATH_MAX. A name the task's root does not reach is, like
 * d_path's, the path from the namespace's root. `*full` gets the whole
 * length with the NUL (more than `out_size` when cut). */
static __always_inline long manul_walk_path(char *walk, char *out, __u32 out_size,
					    struct vfsmount *vfsmnt, struct dentry *dentry,
					    bool reachable, __u32 *full)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct manul_walk_ctx c = {
		.walk = walk,
		.dentry = dentry,
		.vfsmnt = vfsmnt,
		.root_dentry = BPF_CORE_READ(task, fs, root.dentry),
		.root_mnt = BPF_CORE_READ(task, fs, root.mnt),
		.mnt_off = bpf_core_field_offset(struct mount, mnt),
		.pos = MANUL_WALK_BUF - 1,
		.done = 0,
		.outside = 0,
		.unreached = 0,
	};
	__u32 pos, len;

	if (!vfsmnt || !dentry)
		return -1;
	c.mnt = (void *)vfsmnt - c.mnt_off;
	walk[MANUL_WALK_BUF - 1] = 0;
	bpf_loop(MANUL_WALK_DEPTH, manul_walk_step, &c, 0);
	if (!c.done) {
		manul_count_err(MANUL_ERR_TRUNCATED);
		return -1;
	}
	if (c.outside || (reachable && c.unreached))
		return 0;	/* not below this mount: no path through it */
	pos = c.pos;
	if (pos == MANUL_WALK_BUF - 1) {
		pos -= 1;
		walk[MANUL_WALK_BUF - 2] = '/';	/* the root itself */
	}
	len = MANUL_WALK_BUF - pos;	/* with the NUL */
	if (len > MANUL_WALK_MASK)
		return -1;
	*full = len;
	if (len > out_size) {
		manul_count_err(MANUL_ERR_TRUNCATED);
		len = out_size;
		if (bpf_probe_read_kernel(out, out_size - 1, &walk[pos & MANUL_WALK_MASK]) < 0)
			return -1;
		out[(out_size - 1) & MANUL_WALK_MASK] = 0;
		return len;
	}
	if (bpf_probe_read_kernel(out, len & MANUL_WALK_MASK, &walk[pos & MANUL_WALK_MASK]) < 0)
		return -1;
	return len;
}

#endif /* MANUL_PATHWALK_H */
