"""A least-privilege Cedar sandbox suggested from a learned baseline.

`manul suggest <agent>` (the CLI) calls `suggest` on the agent's learned
`Profile` and prints Cedar sandbox policy text for a person to review:
one `permit` per kernel action holding exactly what the baseline saw, and
one `forbid` that keeps the credential catalogue out of reach of every
generalised directory. The text compiles with `compiler.compile_policies`
for principal `Agent::"<key>"` without approximations; the tests check it
with the compiler's reference evaluator and with cedarpy.

How baseline items become sandbox actions (docs/sandbox.md says what each
action decides):

    read      readFile; its directory readFile too (listings: the baseline
              skips directory opens, the sandbox decides them)
    write     writeFile and readFile (an O_RDWR open needs both)
    exec      exec and loadLibrary (an exec grant already permits mapping
              the program; listed so both actions agree)
    /proc/self/..., /proc/pid/...   the /proc/ prefix: the baseline folds pids,
              the sandbox sees /proc/<pid>/... (a wide grant, commented)
    connect   connectNetwork on that address, port and protocol
    listen,   no sandbox action: listed as comments
    unix
    *.so      read shared objects, read directories under a `lib*`
              component, the ELF interpreter of each program: loadLibrary
    scripts   a `#!` script the baseline saw read by an interpreter it saw
              run: exec on the script (the kernel decides exec on the
              script, then on its interpreter; the baseline records only
              the program that ends up running, `mm->exe_file`)

Scripts and ELF interpreters come from the files themselves:
`programs.interpreters_for` reads them (under a root, for a container's
files; re-exported here with the readers) and its result goes to
`suggest(..., interpreters=...)`. `suggest` itself does no I/O: the same
inputs give the same text.

The kernel matches path prefixes, not inner `*`: a generalised directory
becomes `like "dir/*"`, which admits subdirectories too, and a credential
pattern with an inner `*` (`*/.ssh/id_*`) cannot be a `forbid` as it
stands (the compiler refuses it). The forbid therefore instantiates each
such pattern below each generalised directory (`dir/.ssh/id_*`) and says
in a comment what stays out of its reach (`dir/a/.ssh/id_rsa`).
"""

from __future__ import annotations

import ipaddress
import posixpath
import textwrap
import time
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fnmatch import fnmatchcase

from agent.baseline.catalog import CREDENTIALS, METADATA_ADDRESSES, credential
from agent.baseline.events import Item, Kind
from agent.baseline.profile import Profile
from agent.baseline.programs import (  # re-exported: the CLI needs both halves
    elf_interpreter,
    interpreters_for,
    script_interpreter,
)
from compiler import layout

__all__ = ["elf_interpreter", "interpreters_for", "script_interpreter", "suggest"]

_PATH_KINDS = frozenset({Kind.READ, Kind.WRITE})
_FANOUT = 32  # terms per `||` chain: Cedar's parser recurses once per operand
_NOT_LIBRARY_DIRS = ("/var/lib/",)  # state, not code, despite the `lib`


# ---- Cedar text ----------------------------------------------------------------


def _escape(text: str, *, pattern: bool = False) -> str:
    """`text` inside a Cedar string literal (a `like` pattern's with `pattern`).
    Control, format and separator characters are escaped, so nothing in a path
    can end a comment or a line, or reorder what a reviewer sees."""
    out: list[str] = []
    for ch in text:
        if ch in '\\"':
            out.append("\\" + ch)
        elif ch == "*" and pattern:
            out.append("\\*")
        elif unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Cs"):
            out.append(f"\\u{{{ord(ch):x}}}")
        else:
            out.append(ch)
    return "".join(out)


def _string(text: str) -> str:
    return f'"{_escape(text)}"'


def _like(prefix: str) -> str:
    return f'resource.path like "{_escape(prefix, pattern=True)}*"'


def _shown(text: str) -> str:
    """`text` for a comment: escaped the same way, so it stays one comment line."""
    return _escape(text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace"))


def _short(path: str) -> str:
    shown = _shown(path)
    return shown if len(shown) <= 72 else shown[:69] + "..."


def _representable(path: str, limit: int) -> str | None:
    """Why `path` cannot be a kernel key of at most `limit` bytes, or None."""
    if "\0" in path:
        return "holds a NUL"
    try:
        size = len(path.encode("utf-8"))
    except UnicodeEncodeError:
        return "is not UTF-8 (no Cedar request has it)"
    if size > limit:
        return (f"is {size} bytes, more than a kernel key holds ({limit}); "
                "the baseline cuts paths at 255")
    return None


def _cut(text: str, limit: int) -> str:
    return text.encode("utf-8")[:limit].decode("utf-8", "ignore")


def _any(terms: list[list[str]]) -> list[str]:
    """Terms (each a list of lines) joined with `||`, in parenthesised groups
    of at most `_FANOUT` so that no chain is deep."""
    while len(terms) > _FANOUT:
        terms = [["(", *("  " + line for line in _join(terms[i:i + _FANOUT])), ")"]
                 for i in range(0, len(terms), _FANOUT)]
    return _join(terms)


def _comment(text: str) -> list[str]:
    return ["// " + line for line in textwrap.wrap(text, 86, break_long_words=False,
                                                     break_on_hyphens=False)]


def _join(terms: list[list[str]]) -> list[str]:
    out: list[str] = []
    for n, term in enumerate(terms):
        out.extend(term[:-1])
        out.append(term[-1] + (" ||" if n < len(terms) - 1 else ""))
    return out


def _set_contains(paths: Mapping[str, str], what: str = "resource.path") -> list[str]:
    """`[p, ...].contains(what)`, one path a line, each with its note."""
    lines = ["["]
    for n, (p, note) in enumerate(sorted(paths.items())):
        comma = "," if n < len(paths) - 1 else ""
        lines.append(f"  {_string(p)}{comma}" + (f" // {note}" if note else ""))
    lines.append(f"].contains({what})")
    return lines


@dataclass
class _Grant:
    """What one `permit` allows: exact paths and directory prefixes in
    commented groups (a path stays in the first group that names it)."""

    groups: dict[str, dict[str, str]] = field(default_factory=dict)  # comment -> path -> note
    prefixes: dict[str, dict[str, str]] = field(default_factory=dict)  # comment -> dir/ -> note
    peers: dict[tuple[int, int, int, str], tuple[str, str]] = field(default_factory=dict)
    # ^ connectNetwork: (version, address, port, protocol) -> (note, Cedar expression)

    def exact(self, group: str, path: str, note: str = "") -> None:
        if not any(path in g for g in self.groups.values()):
            self.groups.setdefault(group, {})[path] = note

    def prefix(self, group: str, prefix: str, note: str = "") -> None:
        if not any(prefix in g for g in self.prefixes.values()):
            self.prefixes.setdefault(group, {})[prefix] = note

    def covered(self, path: str) -> bool:
        return any(path.startswith(p) for g in self.prefixes.values() for p in g)

    def when(self) -> list[str]:
        out: list[list[str]] = []
        for comment, paths in sorted(self.groups.items(), key=_group_order):
            kept = {p: n for p, n in paths.items() if not self.covered(p)}
            if kept:
                out.append([*_comment(comment), *_set_contains(kept)])
        for comment, prefixes in sorted(self.prefixes.items(), key=_group_order):
            for n, (p, note) in enumerate(sorted(prefixes.items())):
                head = _comment(comment) if n == 0 else []
                out.append([*head, *([f"// {note}"] if note else []), _like(p)])
        for n, (_, (note, expr)) in enumerate(sorted(self.peers.items())):
            head = _comment(_CONNECT) if n == 0 else []
            out.append([*head, *([f"// {note}"] if note else []), expr])
        return _any(out)

    def __bool__(self) -> bool:
        return bool(self.groups or self.prefixes or self.peers)


# ---- what each item grants ----------------------------------------------------------

_READ = "files read"
_WRITTEN_READ = "files written (an O_RDWR open needs readFile as well)"
_LISTED = ("directories holding them, so they can be listed (the baseline skips "
           "directory opens; the sandbox decides them as readFile)")
_WRITTEN = "files written"
_DIRS = ("generalised directories: every file directly in each was learned; "
         '`like "dir/*"` also admits its subdirectories')
_PROC = ("/proc/self/... and /proc/pid/...: the sandbox sees /proc/<pid>/..., which "
         "only the /proc/ prefix covers (every process the workload can see)")
_RUN = "programs run"
_SCRIPTS = ("scripts run through an interpreter: the kernel decides exec on the script, "
            "then on the interpreter (the baseline records only the interpreter)")
_RUN_MAPPED = "programs run (an exec grant already permits mapping them)"
_LOADERS = ("ELF interpreters (the kernel's own mappings during a permitted exec are "
            "allowed anyway; needed when the loader maps a program itself)")
_LIBS = "shared objects read"
_LIB_DIRS = "generalised directories of libraries"
_CONNECT = "peers connected to"
_DEVICES = ("the standard devices: the baseline sees only opens that succeed, and a "
            "shell's open of /dev/tty fails without a terminal, but the sandbox decides it")
_GROUPS = (_READ, _WRITTEN_READ, _LISTED, _WRITTEN, _RUN, _SCRIPTS, _RUN_MAPPED, _LOADERS, _LIBS,
           _PROC, _DIRS, _LIB_DIRS, _DEVICES)
# Opened by every shell and runtime, often in vain (no terminal): never novelty, and
# nothing to protect.
STANDARD_DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom",
                    "/dev/tty")


def _group_order(group: tuple[str, object]) -> int:
    return _GROUPS.index(group[0])


def _proc_rest(path: str) -> bool:
    """/proc/self/... or /proc/pid/...: the baseline's folded form of /proc/<pid>/..."""
    return path.startswith(("/proc/self/", "/proc/pid/")) or path in ("/proc/self", "/proc/pid")


def _library(path: str) -> bool:
    name = posixpath.basename(path)
    return name.endswith(".so") or ".so." in name


def _library_dir(directory: str) -> bool:
    if (directory + "/").startswith(_NOT_LIBRARY_DIRS):
        return False
    return any(part.startswith("lib") for part in directory.split("/"))


def _note(item: Item) -> str:
    what = credential(item)
    return f"credential: {what}" if what else ""


@dataclass
class _Suggestion:
    grants: dict[str, _Grant] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    observed: list[str] = field(default_factory=list)

    def grant(self, action: str) -> _Grant:
        return self.grants.setdefault(action, _Grant())

    def path(self, action: str, group: str, path: str, note: str = "") -> bool:
        why = _representable(path, layout.EXACT_PATH_MAX)
        if why is not None:
            self.skipped.append(f"{action} {_short(path)}: the path {why}")
            return False
        self.grant(action).exact(group, path, note)
        return True

    def directory(self, action: str, group: str, directory: str, note: str = "") -> bool:
        prefix = directory.rstrip("/") + "/"
        why = _representable(prefix, layout.PREFIX_PATH_MAX)
        if why is not None:
            self.skipped.append(f"{action} {_short(prefix)}*: the directory {why}")
            return False
        self.grant(action).prefix(group, prefix, note)
        return True


def _collect(profile: Profile, interpreters: Mapping[str, str]) -> _Suggestion:
    s = _Suggestion()
    for device in STANDARD_DEVICES:
        s.path("readFile", _DEVICES, device)
        s.path("writeFile", _DEVICES, device)
    for item in sorted(profile.items):
        if item.kind in _PATH_KINDS and _proc_rest(item.path):
            action = "readFile" if item.kind is Kind.READ else "writeFile"
            s.observed.append(f"{_shown(str(item))}: permitted through the /proc/ prefix")
            s.directory(action, _PROC, "/proc")
            if item.kind is Kind.WRITE:
                s.directory("readFile", _PROC, "/proc")
            continue
        if item.kind is Kind.READ:
            if s.path("readFile", _READ, item.path, _note(item)):
                s.path("readFile", _LISTED, posixpath.dirname(item.path))
                if _library(item.path):
                    s.path("loadLibrary", _LIBS, item.path)
        elif item.kind is Kind.WRITE:
            if s.path("writeFile", _WRITTEN, item.path, _note(item)):
                s.path("readFile", _WRITTEN_READ, item.path, _note(item))
                s.path("readFile", _LISTED, posixpath.dirname(item.path))
        elif item.kind is Kind.EXEC:
            if s.path("exec", _RUN, item.path):
                s.path("loadLibrary", _RUN_MAPPED, item.path)
        elif item.kind is Kind.CONNECT:
            _connect(s, item)
        else:
            s.observed.append(f"{_shown(str(item))}: observed, not a sandbox action")
    for (kind, d), _ in sorted(profile.prefixes.items()):
        if kind is Kind.READ:
            if s.directory("readFile", _DIRS, d):
                s.path("readFile", _LISTED, d)
                if _library_dir(d):
                    s.directory("loadLibrary", _LIB_DIRS, d)
        elif kind is Kind.WRITE:
            if s.directory("writeFile", _DIRS, d):
                s.directory("readFile", _DIRS, d)
                s.path("readFile", _LISTED, d)
        elif kind is Kind.EXEC:
            if s.directory("exec", _DIRS, d):
                s.directory("loadLibrary", _DIRS, d)
        else:
            s.observed.append(f"{kind} {_shown(d)}/*: observed, not a sandbox action")
    loaders: dict[str, list[str]] = {}
    for program, interp in sorted(interpreters.items()):
        if profile.covers(Item(Kind.EXEC, path=program)):
            loaders.setdefault(interp, []).append(program)
        elif s.path("exec", _SCRIPTS, program, f"through {_shown(interp)}"):
            s.path("exec", _SCRIPTS, interp, f"interpreter of {_shown(program)}")
            s.path("loadLibrary", _RUN_MAPPED, interp)
    for interp, programs in sorted(loaders.items()):
        s.path("loadLibrary", _LOADERS, interp,
               f"of {_shown(programs[0])}" if len(programs) == 1
               else f"of {len(programs)} programs")
    return s


def _connect(s: _Suggestion, item: Item) -> None:
    if item.proto not in ("tcp", "udp"):
        s.skipped.append(f"{_shown(str(item))}: the sandbox permits only tcp and udp")
        return
    try:
        addr = ipaddress.ip_address(item.addr)
    except ValueError:
        s.skipped.append(f"{_shown(str(item))}: not an IP address")
        return
    what = METADATA_ADDRESSES.get(str(addr), "")
    expr = (f'(resource.ip == ip("{addr}") && resource.port == {item.port} && '
            f'resource.protocol == "{item.proto}")')
    s.grant("connectNetwork").peers[(addr.version, int(addr), item.port, item.proto)] = (
        what, expr)


# ---- the credential forbid ----------------------------------------------------------

_Token = tuple[str, str]  # ("lit", char) | ("star", "") | ("one", "?" or "[...]")


def _tokens(glob: str) -> list[_Token]:
    """An fnmatch glob as tokens (`*` spans `/`, as in the catalogue)."""
    out: list[_Token] = []
    i = 0
    while i < len(glob):
        c = glob[i]
        if c == "*":
            out.append(("star", ""))
        elif c == "?":
            out.append(("one", "?"))
        elif c == "[":
            j = i + 1
            if j < len(glob) and glob[j] == "!":
                j += 1
            if j < len(glob) and glob[j] == "]":
                j += 1
            while j < len(glob) and glob[j] != "]":
                j += 1
            if j >= len(glob):
                out.append(("lit", c))
            else:
                out.append(("one", glob[i:j + 1]))
                i = j
        else:
            out.append(("lit", c))
        i += 1
    return out


def _closure(tokens: list[_Token], states: set[int]) -> set[int]:
    todo, out = list(states), set(states)
    while todo:
        i = todo.pop()
        if i < len(tokens) and tokens[i][0] == "star" and i + 1 not in out:
            out.add(i + 1)
            todo.append(i + 1)
    return out


def _residuals(tokens: list[_Token], consumed: str) -> set[int]:
    """Where matching `tokens` can stand after reading `consumed`."""
    states = _closure(tokens, {0})
    for c in consumed:
        nxt: set[int] = set()
        for i in states:
            if i == len(tokens):
                continue
            kind, v = tokens[i]
            if kind == "star":
                nxt.add(i)
            elif (kind == "lit" and v == c) or (kind == "one" and fnmatchcase(c, v)):
                nxt.add(i + 1)
        states = _closure(tokens, nxt)
        if not states:
            break
    return states


def _literal(tokens: list[_Token]) -> tuple[str, list[_Token]]:
    n = next((i for i, t in enumerate(tokens) if t[0] != "lit"), len(tokens))
    return "".join(v for _, v in tokens[:n]), tokens[n:]


@dataclass
class _Forbid:
    exact: dict[str, str] = field(default_factory=dict)  # path -> what
    prefixes: dict[str, str] = field(default_factory=dict)  # prefix -> what
    beyond: dict[str, set[str]] = field(default_factory=dict)  # dir/ -> globs it misses

    def add_exact(self, path: str, what: str) -> None:
        if len(path.encode("utf-8")) > layout.EXACT_PATH_MAX:
            self.add_prefix(path, what)  # widened: sound for a forbid
        else:
            self.exact.setdefault(path, what)

    def add_prefix(self, prefix: str, what: str) -> None:
        self.prefixes.setdefault(_cut(prefix, layout.PREFIX_PATH_MAX), what)

    def covers(self, path: str) -> bool:
        return path in self.exact or any(path.startswith(p) for p in self.prefixes)


def _credential_globs(profile: Profile) -> list[tuple[str, str]]:
    out: dict[str, str] = {}
    for p in CREDENTIALS:
        if p.kinds & _PATH_KINDS:
            out.setdefault(p.glob, p.what)
    for glob in profile.credentials:
        if "\0" not in glob:  # no kernel path holds one
            out.setdefault(glob, "credential listed for this agent")
    return sorted(out.items())


def _forbid(profile: Profile, grants: Mapping[str, _Grant]) -> _Forbid:
    """Every catalogued credential a permit's directory prefix could admit."""
    f = _Forbid()
    dirs = sorted({p for action in ("readFile", "writeFile") if action in grants
                   for g in grants[action].prefixes.values() for p in g
                   if p != "/proc/"})  # procfs holds no catalogued file
    for glob, what in _credential_globs(profile):
        tokens = _tokens(glob)
        lit, rest = _literal(tokens)
        if not rest:
            f.add_exact(lit, what)
            continue
        if rest == [("star", "")]:
            f.add_prefix(lit, what)
            continue
        for d in dirs:
            for i in sorted(_residuals(tokens, d)):
                lit, rest = _literal(tokens[i:])
                where = f"{what} (`{_shown(glob)}` below {_shown(d)})"
                if "//" in d + lit:  # no resolved path has one
                    continue
                if not rest and lit:
                    f.add_exact(d + lit, where)
                elif lit or rest == [("star", "")]:
                    f.add_prefix(d + lit, where)
                else:
                    f.beyond.setdefault(d, set()).add(glob)
    return f


def _forbid_text(profile: Profile, principal: str, slug: str, f: _Forbid) -> list[str]:
    learned: dict[str, dict[str, str]] = {"readFile": {}, "writeFile": {}}
    for item in profile.items:
        if (item.kind in _PATH_KINDS and f.covers(item.path)
                and _representable(item.path, layout.EXACT_PATH_MAX) is None):
            learned["readFile"][item.path] = ""
            if item.kind is Kind.WRITE:
                learned["writeFile"][item.path] = ""
    out = _comment(
        "Credentials (the baseline's catalogue and this agent's own patterns) stay out of "
        "reach, whatever a directory's `like` admits: forbid beats permit. Patterns with an "
        "inner `*` are instantiated directly below each generalised directory (the kernel "
        "matches path prefixes only); paths the baseline holds exactly stay allowed "
        "(`unless`).")
    if f.beyond:
        out += _comment("Deeper below a generalised directory these patterns are out of this "
                        "forbid's reach (an inner `*` is no prefix): review those directories.")
        for d, globs in sorted(f.beyond.items()):
            out += ["//   " + line for line in textwrap.wrap(
                f"below {_shown(d)}: " + ", ".join(f"`{_shown(g)}`" for g in sorted(globs)),
                84, break_long_words=False, break_on_hyphens=False, subsequent_indent="  ")]
    terms: list[list[str]] = []
    if f.exact:
        terms.append(_set_contains(f.exact))
    terms.extend([f"// {what}", _like(p)] for p, what in sorted(f.prefixes.items()))
    if not terms:
        return []
    out += [
        f"@id({_string(f'suggested-{slug}-credentials')})",
        "forbid (",
        f"  principal == Agent::{_string(principal)},",
        '  action in [Action::"readFile", Action::"writeFile"],',
        "  resource",
        ")",
        "when {",
        *("  " + line for line in _any(terms)),
        "}",
    ]
    excepted = [
        [f'(action == Action::"{action}" &&', *("  " + x for x in _set_contains(paths)), ")"]
        for action, paths in learned.items() if paths
    ]
    if excepted:
        out += ["unless {", "  // learned exactly: they stay allowed",
                *("  " + line for line in _any(excepted)), "}"]
    out[-1] += ";"
    return out


# ---- the policy text ----------------------------------------------------------------

_ORDER = ("readFile", "writeFile", "exec", "loadLibrary", "connectNetwork")


def _utc(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def suggest(profile: Profile, principal: str, *, interpreters: Mapping[str, str] | None = None,
            now: float | None = None) -> str:
    """Cedar sandbox policies for `Agent::"<principal>"` permitting what
    `profile` learned, and nothing else; see the module docstring.

    `interpreters` maps a program to what the kernel loads to run it, as
    `interpreters_for` returns: for a program the baseline ran, its ELF
    interpreter (permitted `loadLibrary`); for any other path, a `#!` script
    and its interpreter (both permitted `exec`). `now` ends the learning
    window in the header while the profile is still learning (default: the
    clock). The same inputs always give the same text.
    """
    s = _collect(profile, interpreters or {})
    slug = principal.replace("/", "-")
    end = profile.learned_at if profile.learned_at is not None else (
        time.time() if now is None else now)
    still = "" if profile.learned_at is not None else " (still learning)"
    dirs = len(profile.prefixes)
    out = _comment(
        f"Generated by `manul suggest {_shown(principal)}` from the baseline learned between "
        f"{_utc(profile.started)} and {_utc(end)}{still}: {len(profile.items)} items and "
        f"{dirs} {'directory' if dirs == 1 else 'directories'}.")
    out += _comment(
        "A suggestion: review it before applying it. It permits what the agent did while it "
        "was learned, which may include what it should never do. A generalised directory is "
        '`like "dir/*"`, which also admits its subdirectories, while the baseline generalised '
        "only the files directly in it.")
    if profile.novel:
        out += _comment(f"Not included: {len(profile.novel)} items seen after learning "
                        "(`manul baseline show`).")
    if s.skipped:
        out.append("// Skipped (not representable in a kernel sandbox):")
        out.extend(f"//   {x}" for x in sorted(set(s.skipped)))
    if s.observed:
        out.append("// Observed:")
        out.extend(f"//   {x}" for x in sorted(set(s.observed)))
    for action in _ORDER:
        g = s.grants.get(action)
        if not g:
            out += ["", f"// {action}: nothing observed, nothing permitted"]
            continue
        out += [
            "",
            f"@id({_string(f'suggested-{slug}-{action}')})",
            "permit (",
            f"  principal == Agent::{_string(principal)},",
            f'  action == Action::"{action}",',
            "  resource",
            ")",
            "when {",
            *("  " + line for line in g.when()),
            "};",
        ]
    out += ["", *_forbid_text(profile, principal, slug, _forbid(profile, s.grants))]
    return "\n".join(out) + "\n"
