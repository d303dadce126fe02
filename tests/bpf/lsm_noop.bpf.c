// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * lsm_noop.bpf.c (bench/sandbox.py only, needs BPF LSM): the baseline the
 * sandbox's cost is measured against: the same LSM hooks, doing nothing.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

SEC("lsm/file_open")
int BPF_PROG(noop_file_open, struct file *file, int ret)
{
	return ret;
}

SEC("lsm/socket_connect")
int BPF_PROG(noop_socket_connect, struct socket *sock, struct sockaddr *address, int addrlen,
	     int ret)
{
	return ret;
}

SEC("lsm/path_rename")
int BPF_PROG(noop_path_rename, const struct path *old_dir, struct dentry *old_dentry,
	     const struct path *new_dir, struct dentry *new_dentry, unsigned int flags, int ret)
{
	return ret;
}

SEC("lsm/path_unlink")
int BPF_PROG(noop_path_unlink, const struct path *dir, struct dentry *dentry, int ret)
{
	return ret;
}

SEC("lsm/path_mknod")
int BPF_PROG(noop_path_mknod, const struct path *dir, struct dentry *dentry, umode_t mode,
	     unsigned int dev, int ret)
{
	return ret;
}

SEC("lsm/mmap_file")
int BPF_PROG(noop_mmap_file, struct file *file, unsigned long reqprot, unsigned long prot,
	     unsigned long flags, int ret)
{
	return ret;
}

SEC("lsm/socket_sendmsg")
int BPF_PROG(noop_socket_sendmsg, struct socket *sock, struct msghdr *msg, int size, int ret)
{
	return ret;
}
