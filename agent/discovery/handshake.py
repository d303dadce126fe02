"""One captured TLS handshake, decoded from a `manul_tls_event` record.

The discovery sensor hands these to the service; they carry what the
kernel saw (socket, cgroup, process, addresses) and the raw ClientHello
bytes, not yet parsed.
"""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass

from agent.kernel import abi

_AF_INET = 2


@dataclass(frozen=True, slots=True)
class Handshake:
    cookie: int
    cgroup_id: int
    pid: int
    tgid: int
    uid: int
    comm: str
    flags: int
    src: str
    sport: int
    dst: str
    dport: int
    data: bytes
    ktime_ns: int  # CLOCK_MONOTONIC (bpf_ktime_get_ns) when captured
    seen_at: float  # wall-clock time the agent decoded it

    @property
    def complete(self) -> bool:
        return bool(self.flags & abi.TLS_COMPLETE)

    @property
    def truncated(self) -> bool:
        return bool(self.flags & abi.TLS_TRUNCATED)

    @property
    def multisegment(self) -> bool:
        return bool(self.flags & abi.TLS_MULTISEG)

    @property
    def proc_known(self) -> bool:
        return not self.flags & abi.TLS_NO_PROC


def _addr(family: int, raw: bytes) -> str:
    if family == _AF_INET:
        return str(ipaddress.IPv4Address(raw[:4]))
    return str(ipaddress.IPv6Address(raw))


def decode(record: bytes) -> Handshake:
    """A ring-buffer record of type MANUL_EV_TLS as a Handshake."""
    n = abi.TLS_DATA_OFFSET
    ev = abi.decode(abi.manul_tls_event, record[:n])
    return Handshake(
        cookie=ev.cookie, cgroup_id=ev.cgroup_id, pid=ev.pid, tgid=ev.tgid, uid=ev.uid,
        comm=ev.comm.decode(errors="replace"), flags=ev.flags,
        src=_addr(ev.family, bytes(ev.saddr)), sport=ev.sport,
        dst=_addr(ev.family, bytes(ev.daddr)), dport=ev.dport,
        data=record[n: n + ev.len], ktime_ns=ev.hdr.ktime_ns, seen_at=time.time(),
    )
