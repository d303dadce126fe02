// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * tls.bpf.c: every TLS ClientHello leaving this node, with its process.
 *
 * manul_tls_egress (cgroup_skb/egress at the cgroup v2 root) looks at the
 * first payload bytes of each TCP stream. If they start a ClientHello (the
 * prefix rule of agent/discovery/clienthello.py, on any port), it copies the
 * stream from its first byte until the handshake message is complete, across
 * segments and retransmissions, at most MANUL_TLS_CAPTURE bytes, and writes
 * one manul_tls_event to the `tls_events` ring buffer. Any other stream is
 * marked DONE in its socket storage: every later packet of it costs one
 * lookup and is never copied. Traffic is never changed (always returns 1).
 *
 * manul_tls_connect4/6 (cgroup/connect4, connect6; observe only) record who
 * connected each socket, by socket cookie, so the handshake names its
 * process even when the packet leaves from softirq context.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "manul.h"
#include "events.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

MANUL_BTF_EXPORT(manul_tls_event);

#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define AF_INET 2
#define AF_INET6 10
#define PROTO_TCP 6
#define CAP_MASK (MANUL_TLS_CAPTURE - 1)
#define MAX_RECORDS 8		/* record headers walked per segment */
#define DATA_OFF ((__u32)__builtin_offsetof(struct manul_tls_event, data))

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct manul_tls_sk);
} tls_sk SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct manul_sock_proc);
} sock_proc SEC(".maps");

/* ClientHellos that span segments, by socket cookie, until complete. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 256);
	__type(key, __u64);
	__type(value, struct manul_tls_event);
} tls_partial SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct manul_tls_event);
} tls_scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22);
} tls_events SEC(".maps");

struct pkt {
	__u32 off;		/* payload offset in the skb */
	__u32 len;		/* payload length */
	__u32 seq;		/* TCP sequence of the first payload byte */
	__u16 family;
	__u16 sport;
	__u16 dport;
	__u8 saddr[16];
	__u8 daddr[16];
};

static __always_inline int parse(struct __sk_buff *skb, struct pkt *p)
{
	__u32 l4;
	__u8 b, doff;
	__u16 ports[2];
	__u32 seq;

	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		if (bpf_skb_load_bytes(skb, 0, &b, 1))
			return -1;
		l4 = (b & 0xf) * 4;
		if (l4 < 20 || bpf_skb_load_bytes(skb, 9, &b, 1) || b != PROTO_TCP)
			return -1;
		if (bpf_skb_load_bytes(skb, 12, p->saddr, 4) ||
		    bpf_skb_load_bytes(skb, 16, p->daddr, 4))
			return -1;
		p->family = AF_INET;
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		if (bpf_skb_load_bytes(skb, 6, &b, 1) || b != PROTO_TCP)
			return -1;	/* extension headers: not a stream we follow */
		if (bpf_skb_load_bytes(skb, 8, p->saddr, 16) ||
		    bpf_skb_load_bytes(skb, 24, p->daddr, 16))
			return -1;
		l4 = 40;
		p->family = AF_INET6;
	} else {
		return -1;
	}
	if (bpf_skb_load_bytes(skb, l4, ports, 4) ||
	    bpf_skb_load_bytes(skb, l4 + 4, &seq, 4) ||
	    bpf_skb_load_bytes(skb, l4 + 12, &doff, 1))
		return -1;
	p->sport = bpf_ntohs(ports[0]);
	p->dport = bpf_ntohs(ports[1]);
	p->seq = bpf_ntohl(seq);
	p->off = l4 + (doff >> 4) * 4;
	p->len = skb->len > p->off ? skb->len - p->off : 0;
	return 0;
}

/* The prefix rule; keep identical to looks_like_client_hello(). */
static __always_inline bool client_hello_prefix(const __u8 *b)
{
	__u32 rec_len = ((__u32)b[3] << 8) | b[4];

	return b[0] == 0x16 && b[1] == 0x03 && b[2] >= 0x01 && b[2] <= 0x04 &&
	       rec_len >= 1 && rec_len <= 16384 && b[5] == 0x01;
}

/* Walk the record headers now inside the capture; true when the handshake
 * message is complete or the capture is full. */
static __always_inline bool walk_records(struct manul_tls_sk *st, struct manul_tls_event *ev)
{
	for (int i = 0; i < MAX_RECORDS; i++) {
		__u32 o, rl;

		if (st->hs_seen >= st->hs_total || st->next_rec + 5 > st->got)
			break;
		o = st->next_rec & CAP_MASK;
		if (ev->data[o] != 0x16) {	/* not a handshake record: stop */
			st->hs_total = st->hs_seen;
			break;
		}
		rl = ((__u32)ev->data[o + 3] << 8) | ev->data[o + 4];
		st->hs_seen += rl;
		st->next_rec += 5 + rl;
	}
	if (st->got >= MANUL_TLS_CAPTURE) {
		if (st->hs_seen < st->hs_total || st->next_rec > st->got)
			ev->flags |= MANUL_TLS_TRUNCATED;
		return true;
	}
	/* complete: every handshake byte, up to the end of its last record */
	return st->hs_seen >= st->hs_total &&
	       st->got >= st->next_rec - (st->hs_seen - st->hs_total);
}

static __always_inline void emit(struct __sk_buff *skb, struct manul_tls_event *ev,
				 struct pkt *p, __u64 cookie, __u32 got)
{
	struct manul_sock_proc *proc = bpf_map_lookup_elem(&sock_proc, &cookie);
	__u32 len = got;

	if (len > MANUL_TLS_CAPTURE)
		len = MANUL_TLS_CAPTURE;
	ev->hdr.type = MANUL_EV_TLS;
	ev->hdr.size = DATA_OFF + len;
	ev->hdr.cpu = bpf_get_smp_processor_id();
	ev->hdr.ktime_ns = bpf_ktime_get_ns();
	ev->cookie = cookie;
	ev->cgroup_id = bpf_skb_cgroup_id(skb);
	ev->family = p->family;
	ev->sport = p->sport;
	ev->dport = p->dport;
	ev->len = len;
	__builtin_memcpy(ev->saddr, p->saddr, 16);
	__builtin_memcpy(ev->daddr, p->daddr, 16);
	if (proc) {
		ev->pid = proc->pid;
		ev->tgid = proc->tgid;
		ev->uid = proc->uid;
		__builtin_memcpy(ev->comm, proc->comm, MANUL_COMM_LEN);
	} else {
		ev->pid = ev->tgid = ev->uid = 0;
		ev->comm[0] = 0;
		ev->flags |= MANUL_TLS_NO_PROC;
	}
	if (bpf_ringbuf_output(&tls_events, ev, DATA_OFF + len, 0))
		manul_count_err(MANUL_ERR_RINGBUF_FULL);
}

SEC("cgroup_skb/egress")
int manul_tls_egress(struct __sk_buff *skb)
{
	struct bpf_sock *sk = skb->sk;
	struct manul_tls_event *ev;
	struct manul_tls_sk *st;
	struct pkt p = {};
	__u32 zero = 0, at, skip, n;
	__u64 cookie;
	__u8 pre[9];

	if (!sk)
		return 1;
	sk = bpf_sk_fullsock(sk);
	if (!sk || sk->protocol != PROTO_TCP)
		return 1;
	st = bpf_sk_storage_get(&tls_sk, sk, 0, 0);
	if (st && st->state == MANUL_TLS_ST_DONE)
		return 1;	/* the one check every other packet pays */
	if (parse(skb, &p) || p.len == 0)
		return 1;	/* handshake and pure ACK segments */

	if (!st) {		/* first payload of this stream */
		st = bpf_sk_storage_get(&tls_sk, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
		if (!st) {
			manul_count_err(MANUL_ERR_MAP_UPDATE);
			return 1;
		}
		if (p.len < sizeof(pre) || bpf_skb_load_bytes(skb, p.off, pre, sizeof(pre)) ||
		    !client_hello_prefix(pre)) {
			st->state = MANUL_TLS_ST_DONE;
			return 1;
		}
		st->state = MANUL_TLS_ST_CAPTURING;
		st->isn = p.seq;
		st->got = 0;
		st->next_rec = 0;
		st->hs_seen = 0;
		st->hs_total = (((__u32)pre[6] << 16) | ((__u32)pre[7] << 8) | pre[8]) + 4;
	}

	cookie = bpf_get_socket_cookie(skb);
	at = p.seq - st->isn;			/* where this segment starts in the stream */
	if (st->got == 0) {
		ev = bpf_map_lookup_elem(&tls_scratch, &zero);
		if (!ev)
			return 1;
		ev->flags = 0;
	} else {
		ev = bpf_map_lookup_elem(&tls_partial, &cookie);
		if (!ev) {			/* evicted: give up on this one */
			manul_count_err(MANUL_ERR_TRUNCATED);
			st->state = MANUL_TLS_ST_DONE;
			return 1;
		}
		ev->flags |= MANUL_TLS_MULTISEG;
	}
	if (at > st->got) {			/* a gap: report what we have */
		ev->flags |= MANUL_TLS_GAP;
		goto finish;
	}
	skip = st->got - at;			/* bytes of a retransmission we have */
	if (skip >= p.len)
		return 1;
	n = p.len - skip;
	if (n > MANUL_TLS_CAPTURE - st->got)
		n = MANUL_TLS_CAPTURE - st->got;
	if (n == 0 || n > MANUL_TLS_CAPTURE)
		goto finish;
	if (bpf_skb_load_bytes(skb, p.off + skip, &ev->data[st->got & CAP_MASK], n)) {
		manul_count_err(MANUL_ERR_READ);
		goto finish;
	}
	st->got += n;
	if (!walk_records(st, ev)) {
		if (st->got == n &&		/* first segment: keep it for the next */
		    bpf_map_update_elem(&tls_partial, &cookie, ev, BPF_ANY)) {
			manul_count_err(MANUL_ERR_MAP_UPDATE);
			goto finish;
		}
		return 1;
	}
	ev->flags |= MANUL_TLS_COMPLETE;
	if (ev->flags & MANUL_TLS_TRUNCATED)
		ev->flags &= ~MANUL_TLS_COMPLETE;
finish:
	emit(skb, ev, &p, cookie, st->got);
	st->state = MANUL_TLS_ST_DONE;
	if (ev->flags & MANUL_TLS_MULTISEG)
		bpf_map_delete_elem(&tls_partial, &cookie);
	return 1;
}

static __always_inline int record_proc(struct bpf_sock_addr *ctx)
{
	struct manul_sock_proc proc = {};
	__u64 cookie = bpf_get_socket_cookie(ctx);
	__u64 id = bpf_get_current_pid_tgid();

	proc.pid = (__u32)id;
	proc.tgid = id >> 32;
	proc.uid = (__u32)bpf_get_current_uid_gid();
	proc.cgroup_id = bpf_get_current_cgroup_id();
	bpf_get_current_comm(proc.comm, sizeof(proc.comm));
	if (bpf_map_update_elem(&sock_proc, &cookie, &proc, BPF_ANY))
		manul_count_err(MANUL_ERR_MAP_UPDATE);
	return 1;
}

SEC("cgroup/connect4")
int manul_tls_connect4(struct bpf_sock_addr *ctx)
{
	return record_proc(ctx);
}

SEC("cgroup/connect6")
int manul_tls_connect6(struct bpf_sock_addr *ctx)
{
	return record_proc(ctx);
}
