"""One request path, normalised before anything is decided on it.

The destination (which MCP server or agent behind a shared host and port),
the protocol's sub-paths and the per-hop token's audience are all chosen
from the path. If the decision point read `/mcp/../hr` as the `/mcp`
server while the upstream resolved it to `/hr`, a caller allowed on one
server would reach another with a token minted for the first. So the path
is normalised as RFC 3986 section 6.2.2 says (and as Envoy's
`normalize_path` and `merge_slashes` do), and what two readers could
disagree on is refused with a reason instead:

- percent-encoded unreserved characters are decoded (`%7E` -> `~`, `%41`
  -> `A`), other escapes are upper-cased (`%3a` -> `%3A`);
- an encoded `.`, `/` or `\\` (`%2E`, `%2F`, `%5C`), a literal `\\`, a
  control character or a malformed escape is refused: servers differ on
  whether `%2e%2e` is a dot segment or `%2F` a separator;
- repeated slashes are merged, then `.` and `..` segments removed (a `..`
  above the root stays at the root, as RFC 3986 5.2.4 says).
"""

from __future__ import annotations

import re
import string

from agent.decision.errors import RequestError

_UNRESERVED = frozenset(string.ascii_letters + string.digits + "-_~")  # "." is refused below
_AMBIGUOUS = {"2E": "`.`", "2F": "`/`", "5C": "`\\`"}
_ESCAPE = re.compile(r"%(..)?", re.DOTALL)
_HEX = frozenset(string.hexdigits)
MAX_PATH = 8192


def _escape(m: re.Match[str], raw: str) -> str:
    code = m.group(1)
    if code is None or not (code[0] in _HEX and code[1] in _HEX):
        raise RequestError(f"path `{raw[:200]}`: `{m.group(0)}` is not a valid percent-escape")
    code = code.upper()
    if code in _AMBIGUOUS:
        raise RequestError(f"path `{raw[:200]}` encodes {_AMBIGUOUS[code]} as `%{code}`; "
                           "servers disagree on what that means, so it is refused")
    ch = chr(int(code, 16))
    return ch if ch in _UNRESERVED else f"%{code}"


def _remove_dot_segments(path: str) -> str:
    out: list[str] = []
    segments = path.split("/")[1:]  # the path starts with "/"
    for i, seg in enumerate(segments):
        last = i == len(segments) - 1
        if seg == ".":
            if last:
                out.append("")  # "/a/." -> "/a/"
        elif seg == "..":
            if out:
                out.pop()
            if last:
                out.append("")  # "/a/b/.." -> "/a/"
        else:
            out.append(seg)
    return "/" + "/".join(out)


def normalize_path(raw: str) -> str:
    """The path part of a request target (no query), normalised; RequestError
    (a deny with this reason) for a path two readers could take differently."""
    if len(raw) > MAX_PATH:
        raise RequestError(f"the request path is {len(raw)} bytes long; at most {MAX_PATH}")
    if not raw.startswith("/"):
        raise RequestError(f"path `{raw[:200]}` does not start with `/`")
    if "\\" in raw:
        raise RequestError(f"path `{raw[:200]}` contains `\\`; servers disagree on whether it "
                           "separates segments, so it is refused")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in raw):
        raise RequestError(f"path {raw[:200]!r} contains a control character")
    decoded = _ESCAPE.sub(lambda m: _escape(m, raw), raw)
    merged = re.sub(r"/{2,}", "/", decoded)
    return _remove_dot_segments(merged)


__all__ = ["MAX_PATH", "normalize_path"]
