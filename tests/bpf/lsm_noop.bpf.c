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
