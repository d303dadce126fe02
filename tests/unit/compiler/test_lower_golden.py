"""Golden bytes: what `lower` writes, field by field (after Tetragon's
`pkg/selectors/kernel_test.go`). If a layout changes, these tests and the
comments in bpf/include/manul.h change in the same commit.
"""

from __future__ import annotations

import sys

import pytest

from compiler import Compilation, PolicySource, compile_policies

pytestmark = pytest.mark.skipif(sys.byteorder != "little", reason="golden bytes are little-endian")

TEXT = """
@id("read-a") permit(principal, action == Action::"readFile", resource)
  when { resource.path like "/a*" };
@id("no-write-ab") forbid(principal, action == Action::"writeFile", resource)
  when { resource.path == "/a/b" };
@id("svc") permit(principal, action == Action::"connectNetwork", resource)
  when { resource.ip.isInRange(ip("10.1.0.0/16")) && resource.port >= 8000 && resource.port <= 8080
         && resource.protocol == "tcp" };
"""


def h(*fields: str) -> str:
    """Concatenate hex fields (written one per line with a comment)."""
    return "".join(fields)


def zeros(n: int) -> str:
    return "00" * n


@pytest.fixture(scope="module")
def comp() -> Compilation:
    return compile_policies([PolicySource("g.cedar", TEXT)])


def entries(comp: Compilation, m: str) -> dict[str, tuple[str, str]]:
    s = comp.sandbox("default")
    assert s is not None and s.sandbox_id == 1
    return {e.what: (e.key.hex(), e.value.hex()) for e in s.maps[m]}


def test_rule_table(comp: Compilation) -> None:
    assert {k: (v.effect, v.policies) for k, v in comp.rules.items()} == {
        1: ("permit", ("read-a",)),
        2: ("forbid", ("no-write-ab",)),
        3: ("permit", ("svc",)),
    }


def test_path_entries(comp: Compilation) -> None:
    got = entries(comp, "sandbox_paths")
    assert set(got) == {"*", "/a*", "/a/b"}
    assert got["*"] == (
        h(
            "20000000",  # prefixlen 32: the sandbox id only
            "01000000",  # sandbox_id 1
            zeros(252),  # path: none
        ),
        h(
            zeros(16),  # rule_id[read, write, exec, loadLibrary] = 0: nothing permitted
            "00",  # allow: nothing
            "01",  # sub_or: something below (/a*) allows read
            "00",  # sub_and: not everything below does
            "00",  # pad
        ),
    )
    assert got["/a*"] == (
        h(
            "30000000",  # prefixlen 48 = 32 + 8 * len("/a"): a prefix, no NUL
            "01000000",  # sandbox_id 1
            "2f61",  # "/a"
            zeros(250),
        ),
        h(
            "01000000",  # rule_id[read] = 1 (permit read-a)
            "00000000",  # rule_id[write] = 0
            zeros(8),  # exec, loadLibrary
            "01",  # allow: read
            "01",  # sub_or: read, here and below (/a/b)
            "01",  # sub_and: read everywhere below too
            "00",
        ),
    )
    assert got["/a/b"] == (
        h(
            "48000000",  # prefixlen 72 = 32 + 8 * len("/a/b\0"): exact, NUL included
            "01000000",
            "2f612f6200",  # "/a/b\0"
            zeros(247),
        ),
        h(
            "01000000",  # rule_id[read] = 1: the shorter prefix `/a*` is merged in
            "02000000",  # rule_id[write] = 2 (forbid no-write-ab)
            zeros(8),
            "01",  # allow: read only
            "0101",  # sub_or, sub_and: an exact path has nothing below it
            "00",
        ),
    )


def test_net_entries(comp: Compilation) -> None:
    got = entries(comp, "sandbox_net")
    assert set(got) == {"0.0.0.0/0", "::/0", "10.1.0.0/16"}
    empty_val = h("00000000", zeros(12 * 16))  # nranges 0: all denied, rule 0
    assert got["0.0.0.0/0"] == (
        h("40000000", "01000000", "02000000", zeros(16)),  # prefixlen 64, sandbox 1, AF_INET
        empty_val,
    )
    assert got["::/0"] == (
        h("40000000", "01000000", "0a000000", zeros(16)),  # AF_INET6 = 10
        empty_val,
    )
    assert got["10.1.0.0/16"] == (
        h(
            "50000000",  # prefixlen 80 = 64 + 16
            "01000000",  # sandbox_id 1
            "02000000",  # family AF_INET
            "0a010000",  # 10.1.0.0, network byte order
            zeros(12),
        ),
        h(
            "01000000",  # nranges 1
            "401f",  # port_lo 8000
            "901f",  # port_hi 8080
            "01",  # protos: TCP
            "01",  # allow
            "0000",  # pad
            "03000000",  # rule_id 3 (permit svc)
            zeros(12 * 15),  # unused ranges
        ),
    )
