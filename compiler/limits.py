"""Kernel limits a policy must fit, checked before anything is lowered.

The LPM trie caps key data at 256 bytes (`LPM_DATA_SIZE_MAX`); 4 of them
hold the sandbox id, so a path prefix may be 252 bytes and an exact path
251 (its key also holds the terminating NUL). Used by `validate` (policy
literals) and `entities` (path-set members).
"""

from __future__ import annotations

from compiler import layout


def path_problem(value: str, pattern: tuple[str | None, ...] | None) -> str | None:
    """Why `value` (or `pattern`, a `like` pattern) cannot be a key, or None.

    A pattern becomes a prefix key of its literal part before the first `*`
    (for an inner `*` too: `lower` narrows with that prefix), or an exact key
    when it has no `*`.
    """
    literal, limit = value, layout.EXACT_PATH_MAX
    if pattern is not None:
        first = next((i for i, el in enumerate(pattern) if el is None), len(pattern))
        literal = "".join(el for el in pattern[:first] if el is not None)
        limit = layout.PREFIX_PATH_MAX if first < len(pattern) else layout.EXACT_PATH_MAX
    if "\0" in literal:
        return f"path `{short(literal)}` contains a NUL character: no kernel path does"
    size = len(literal.encode("utf-8", "surrogatepass"))
    if size > limit:
        return (
            f"path `{short(literal)}` is {size} bytes: a kernel key holds at most {limit} "
            "(the LPM trie caps key data at 256 bytes, 4 of them the sandbox id)"
        )
    return None


def short(s: str) -> str:
    s = s.replace("\0", "\\0")
    return s if len(s) <= 48 else s[:45] + "..."
