"""Noderange expansion as xCAT does it (NodeRange.pm, reference §10.1), as a pure function.

``expand(text, universe)`` turns ``n01-n10,-n05,rack1@compute,/gpu.*`` into node names. It
works on a small :class:`Universe` (the node names in order, each node's static groups, the
dynamic groups and an attribute lookup), so it needs no database and is tested on its own.
Exclusions (``-atom``) win regardless of their position; ``@`` intersects; parentheses group.
Names that match no node or group are collected and reported together in one
``NoderangeError``: nothing is silently dropped. The result is in the universe's node order.

One module (~510 lines): one grammar, its bounds (size, depth, regex engine) and its
expander belong together; splitting the parser from the evaluator would split the bounds too.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

from litefs import saferegex
from litefs.errors import LitefsError, NoderangeError
from litefs.names import check_node_name

#: attr(node, table, column) -> value or None (inheritance and regex cells already applied).
AttrLookup = Callable[[str, str, str], "str | None"]

#: Attribute names xCAT's object layer (``nodegroup.wherevals``) uses, mapped to table.column.
DEF_ATTRS: dict[str, str] = {
    "os": "nodetype.os",
    "arch": "nodetype.arch",
    "profile": "nodetype.profile",
    "provmethod": "nodetype.provmethod",
    "nodetype": "nodetype.nodetype",
    "groups": "nodelist.groups",
    "status": "nodelist.status",
    "rack": "nodepos.rack",
    "unit": "nodepos.u",
    "chassis": "nodepos.chassis",
    "slot": "nodepos.slot",
    "room": "nodepos.room",
    "height": "nodepos.height",
    "ip": "hosts.ip",
    "hostnames": "hosts.hostnames",
    "mac": "mac.mac",
    "servicenode": "noderes.servicenode",
    "xcatmaster": "noderes.xcatmaster",
    "nfsserver": "noderes.nfsserver",
    "tftpserver": "noderes.tftpserver",
    "netboot": "noderes.netboot",
    "installnic": "noderes.installnic",
    "primarynic": "noderes.primarynic",
}

_SELECTOR = re.compile(r"^([A-Za-z_]\w*)\.([A-Za-z_]\w*)(==|=~|!=|!~)(.*)$", re.S)
_WHERE = re.compile(r"^([A-Za-z_][\w.]*?)(==|=~|!=|!~)(.*)$", re.S)
_RUNS = re.compile(r"\d+|\D+")
_PLUS = re.compile(r"^(.*?)(\d+)\+(\d+)$")
_MAX_EXPANSION = 1_000_000  # a typo like n1-n99999999 must not eat the server's memory
_MAX_FILE_DEPTH = 8
#: Longest noderange text and deepest bracket nesting accepted: the parser recurses per
#: level, and 5,000 nested '(' must be a one-line error, not a RecursionError.
MAX_TEXT = 64 * 1024
MAX_DEPTH = 32
#: Largest ``^file`` read (the CLI only): a noderange file is a list of names.
MAX_FILE_BYTES = 1 << 20
#: Unknown names listed in an error; the rest are counted (an error is not a data dump).
_MAX_LISTED = 20


def no_files(path: str) -> str:
    """The default ``read_file``: requests from the network or the admin socket, policy
    rows and dynamic groups never make us read a file (mountd runs as root)."""
    raise NoderangeError(
        f"noderange files (^{_clip(path)}) are only accepted by the local command line tools"
    )


def read_noderange_file(path: str) -> str:
    """``^path`` for the local CLI: a regular file of at most MAX_FILE_BYTES, read without
    blocking (a FIFO or /dev/zero is refused instead of hanging or filling memory)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as exc:
        raise NoderangeError(f"cannot read noderange file {path}: {exc.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NoderangeError(f"noderange file {path} is not a regular file")
        data = os.read(fd, MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise NoderangeError(f"cannot read noderange file {path}: {exc.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_FILE_BYTES:
        raise NoderangeError(f"noderange file {path} is larger than {MAX_FILE_BYTES} bytes")
    return data.decode("utf-8", "replace")


def _clip(text: str, limit: int = 60) -> str:
    """``text`` shortened for an error message (hostile input must not flood a reply)."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_shape(text: str) -> None:
    """Refuse a noderange that is too long or nested too deeply, before any parsing."""
    if len(text) > MAX_TEXT:
        raise NoderangeError(f"noderange is too long ({len(text)} characters, limit {MAX_TEXT})")
    depth = 0
    for ch in text:
        if ch in "([{":
            depth += 1
            if depth > MAX_DEPTH:
                raise NoderangeError(
                    f"noderange nests brackets more than {MAX_DEPTH} deep: {_clip(text, 40)!r}"
                )
        elif ch in ")]}":
            depth -= 1


@dataclass
class Universe:
    """Everything a noderange can refer to.

    ``nodes``: every node name, in the order results are returned. ``groups``: node -> its
    static groups (``nodelist.groups``). ``dynamic``: dynamic group -> ``wherevals``
    (``attr==val::attr=~re``). ``declared_groups``: group names defined in ``nodegroup``
    (a declared group without members expands to nothing instead of being unknown).
    ``attr``: node attribute lookup for selectors and dynamic groups. ``read_file``: reads
    ``^/path`` files; the default refuses them (only the local CLI passes
    :func:`read_noderange_file`). ``max_names``: how many names one expansion may generate
    in all (ranges, brackets), so a request's work is bounded. ``digit_prefix``/``digit_suffix``: what an all-digits atom gets
    (xCAT's ``XCAT_NODE_PREFIX``/``SUFFIX``, default ``node``).
    """

    nodes: Sequence[str]
    groups: Mapping[str, Sequence[str]] = field(default_factory=dict)
    dynamic: Mapping[str, str] = field(default_factory=dict)
    declared_groups: frozenset[str] = frozenset()
    attr: AttrLookup | None = None
    read_file: Callable[[str], str] = no_files
    max_names: int = _MAX_EXPANSION
    digit_prefix: str = "node"
    digit_suffix: str = ""

    @cached_property
    def order(self) -> dict[str, int]:
        return {n: i for i, n in enumerate(self.nodes)}

    @cached_property
    def members(self) -> dict[str, list[str]]:
        """Static group -> member nodes, in node order."""
        out: dict[str, list[str]] = {g: [] for g in self.declared_groups}
        for node in self.nodes:
            for g in self.groups.get(node, ()):
                out.setdefault(g, []).append(node)
        return out

    def lookup(self, node: str, table: str, column: str) -> str | None:
        if self.attr is None:
            raise NoderangeError(f"attribute selector {table}.{column} needs node attributes")
        return self.attr(node, table, column)


def expand(text: str, universe: Universe) -> list[str]:
    """Expand a noderange into node names (universe order, no duplicates).

    Raises NoderangeError for a syntax error or, listing all of them, for names that are
    neither nodes nor groups.
    """
    if text is None or not text.strip():
        raise NoderangeError("empty noderange")
    check_shape(text)
    unknown: list[str] = []
    try:
        found = _Expander(universe, unknown).expr(text.strip(), 0)
    except RecursionError:  # check_shape bounds nesting; this is the last line of defence
        raise NoderangeError("noderange is nested too deeply") from None
    if unknown:
        seen = list(dict.fromkeys(unknown))
        listed = ",".join(_clip(n) for n in seen[:_MAX_LISTED])
        if len(seen) > _MAX_LISTED:
            listed += f",... ({len(seen) - _MAX_LISTED} more)"
        raise NoderangeError(
            "invalid nodes and/or groups in noderange: " + listed
            + " (no such node or group in the nodelist/nodegroup tables)"
        )
    for name in found:
        # Only a nodelist row written before names were checked can get here; never hand such
        # a name to a caller that joins it into a path.
        try:
            check_node_name(name)
        except LitefsError as exc:
            raise NoderangeError(f"noderange yields a bad nodelist entry: {exc}; fix that row") from None
    order = universe.order
    return sorted(found, key=order.__getitem__)


# --- splitting --------------------------------------------------------------------------


def split_top(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside (), [] and {}; unbalanced brackets are a NoderangeError."""
    parts: list[str] = []
    depth = 0
    start = 0
    for i, ch in enumerate(text):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth < 0:
                raise NoderangeError(f"unbalanced {ch!r} in noderange {_clip(text)!r}")
        elif ch == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth != 0:
        raise NoderangeError(f"unbalanced brackets in noderange {_clip(text)!r}")
    parts.append(text[start:])
    return parts


# --- ranges -----------------------------------------------------------------------------


def _seq(left: str, right: str, limit: int = _MAX_EXPANSION) -> list[str] | None:
    """Numbers from ``left`` to ``right`` with the left end's zero padding (string increment).

    The size is checked before anything is generated: ``x1-x999999999`` costs nothing."""
    if len(left) > 18 or len(right) > 18:  # int() of a 4,300-digit run is itself slow
        raise NoderangeError(f"range {_clip(left)}-{_clip(right)} is too large")
    a, b = int(left), int(right)
    if b < a:
        return None
    cap = min(limit, _MAX_EXPANSION)
    if b - a >= cap:
        raise NoderangeError(
            f"range {_clip(left)}-{_clip(right)} is too large ({b - a + 1} names, limit {cap})"
        )
    width = len(left)
    return [str(n).zfill(width) for n in range(a, b + 1)]


def range_names(left: str, right: str, limit: int = _MAX_EXPANSION) -> list[str] | None:
    """Expand ``left``..``right`` (e.g. ``node001``, ``node010``); None if not a range.

    Both ends are split into digit and non-digit runs; the run lists must have the same
    shape, exactly one numeric run may differ (zero differing runs: the single name), and
    the sequence keeps the left end's padding (``n001-n010`` → n001…n010).
    """
    lr, rr = _RUNS.findall(left), _RUNS.findall(right)
    if not lr or len(lr) != len(rr):
        return None
    diff = [i for i, (x, y) in enumerate(zip(lr, rr, strict=True)) if x != y]
    if not diff:
        return [left]
    if len(diff) != 1:
        return None
    i = diff[0]
    if not (lr[i].isdigit() and rr[i].isdigit()):
        return None
    nums = _seq(lr[i], rr[i], limit)
    if nums is None:
        return None
    head, tail = "".join(lr[:i]), "".join(lr[i + 1 :])
    return [head + n + tail for n in nums]


def bracket_names(atom: str, limit: int = _MAX_EXPANSION) -> list[str] | None:
    """Expand ``prefix[1-3,7]suffix`` (several brackets allowed); None without brackets."""
    start = atom.find("[")
    if start < 0:
        return None
    depth = 0
    end = -1
    for i in range(start, len(atom)):
        if atom[i] == "[":
            depth += 1
        elif atom[i] == "]":
            depth -= 1
            if depth == 0:
                end = i
                break
    if end < 0:
        raise NoderangeError(f"unbalanced '[' in {_clip(atom)!r}")
    head, spec, tail = atom[:start], atom[start + 1 : end], atom[end + 1 :]
    values: list[str] = []
    for item in split_top(spec, ","):
        item = item.strip()
        sub = bracket_names(item, limit)
        if sub is not None:  # nested bracket: expand the inside first
            values.extend(sub)
            continue
        if "-" in item or ":" in item:
            lo, _, hi = item.replace(":", "-").partition("-")
            seq = range_names(lo, hi, limit) if lo and hi else None
            if seq is None:
                raise NoderangeError(f"bad range {_clip(item)!r} in brackets of {_clip(atom)!r}")
            values.extend(seq)
        elif item:
            values.append(item)
        else:
            raise NoderangeError(f"empty item in brackets of {_clip(atom)!r}")
        if len(values) > limit:
            raise NoderangeError(f"bracket expression {_clip(atom)!r} is too large")
    tails = bracket_names(tail, limit) or [tail]
    if len(values) * len(tails) > min(limit, _MAX_EXPANSION):
        raise NoderangeError(f"bracket expression {_clip(atom)!r} is too large")
    return [head + v + t for v in values for t in tails]


def _split_range(atom: str) -> tuple[str, str] | None:
    if atom.count(":") == 1:
        left, right = atom.split(":")
        return (left, right) if left and right else None
    dashes = atom.count("-")
    if dashes % 2 == 0:  # xCAT: an even number of '-' cannot be split into two equal names
        return None
    parts = atom.split("-")
    mid = dashes // 2 + 1
    left, right = "-".join(parts[:mid]), "-".join(parts[mid:])
    return (left, right) if left and right else None


# --- matching ---------------------------------------------------------------------------


def _matches(value: str | None, op: str, want: str) -> bool:
    v = value or ""
    if op == "==":
        return v == want
    if op == "!=":
        return v != want
    try:
        hit = saferegex.search(want, v)  # linear time: the pattern may be hostile
    except saferegex.RegexError as exc:
        raise NoderangeError(str(exc)) from None
    return hit if op == "=~" else not hit


class _Expander:
    def __init__(self, universe: Universe, unknown: list[str]) -> None:
        self.u = universe
        self.unknown = unknown
        self.budget = universe.max_names

    def spend(self, count: int, atom: str) -> None:
        """Charge ``count`` generated names to this expansion's budget."""
        self.budget -= count
        if self.budget < 0:
            raise NoderangeError(
                f"noderange names more than {self.u.max_names} nodes "
                f"(at {_clip(atom, 40)!r}); use groups or smaller ranges"
            )

    def expr(self, text: str, depth: int) -> set[str]:
        include: set[str] = set()
        exclude: set[str] = set()
        for raw in self._atoms(text, depth):
            atom = raw.strip()
            if not atom:
                continue
            target = include
            if atom.startswith("-"):
                target, atom = exclude, atom[1:].strip()
                if not atom:
                    raise NoderangeError(f"'-' without a name in noderange {_clip(text)!r}")
            target |= self.intersection(atom, depth)
        return include - exclude

    def _atoms(self, text: str, depth: int) -> list[str]:
        out: list[str] = []
        for atom in split_top(text, ","):
            a = atom.strip()
            if a.startswith("^"):
                if depth >= _MAX_FILE_DEPTH:
                    raise NoderangeError(f"noderange files nested too deeply at {a!r}")
                out.extend(self._file_atoms(a[1:], depth + 1))
            else:
                out.append(a)
        return out

    def _file_atoms(self, path: str, depth: int) -> list[str]:
        try:
            text = self.u.read_file(path)
        except OSError as exc:
            raise NoderangeError(f"cannot read noderange file {path}: {exc.strerror}") from None
        atoms: list[str] = []
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                atoms.extend(self._atoms(line, depth))
        return atoms

    def intersection(self, atom: str, depth: int) -> set[str]:
        pieces = split_top(atom, "@") if "@" in atom else [atom]
        result: set[str] | None = None
        for piece in pieces:
            piece = piece.strip()
            if not piece:
                raise NoderangeError(f"empty side of '@' in {_clip(atom)!r}")
            got = self.primary(piece, depth)
            result = got if result is None else result & got
        return result or set()

    def primary(self, atom: str, depth: int) -> set[str]:
        if atom.startswith("(") and atom.endswith(")") and _wraps(atom):
            return self.expr(atom[1:-1], depth)
        return self.atom(atom)

    def atom(self, atom: str, record: bool = True) -> set[str]:
        u = self.u
        if atom in u.order:
            return {atom}
        if atom in u.dynamic:
            return self._dynamic(atom)
        members = u.members.get(atom)
        if members is not None:
            return set(members)
        m = _SELECTOR.match(atom)
        if m:
            table, column, op, want = m.groups()
            if op in ("=~", "!~"):  # refuse a bad pattern even when there is no node to try
                _matches("", op, want)
            return {n for n in u.nodes if _matches(u.lookup(n, table, column), op, want)}
        if atom.isdigit():
            return self.atom(u.digit_prefix + atom + u.digit_suffix, record)
        if re.fullmatch(r"\d+[-:]\d+", atom):
            lo, hi = re.split(r"[-:]", atom)
            p, s = u.digit_prefix, u.digit_suffix
            return self.atom(f"{p}{lo}{s}-{p}{hi}{s}", record)
        if atom.startswith("/"):
            try:
                rx = saferegex.compile(atom[1:])
            except saferegex.RegexError as exc:
                raise NoderangeError(str(exc)) from None
            return {n for n in u.nodes if rx.fullmatch(n)}
        names = bracket_names(atom, self.budget)
        if names is None:
            names = self._plus(atom, self.budget)
        if names is None:
            ends = _split_range(atom)
            names = range_names(*ends, self.budget) if ends else None
        if names is None:
            if record:
                self.unknown.append(atom)
            return set()
        self.spend(len(names), atom)
        out: set[str] = set()
        for name in names:
            out |= self.atom(name, record)
        return out

    @staticmethod
    def _plus(atom: str, limit: int) -> list[str] | None:
        m = _PLUS.match(atom)
        if not m:
            return None
        head, start, count = m.groups()
        if len(start) > 18 or len(count) > 18:
            raise NoderangeError(f"{_clip(atom)!r} is too large")
        a = int(start)
        if int(count) >= min(limit, _MAX_EXPANSION):
            raise NoderangeError(f"{_clip(atom)!r} is too large")
        return [head + str(n).zfill(len(start)) for n in range(a, a + int(count) + 1)]

    def _dynamic(self, group: str) -> set[str]:
        conds: list[tuple[str, str, str, str]] = []
        for cond in self.u.dynamic[group].split("::"):
            cond = cond.strip()
            if not cond:
                continue
            m = _WHERE.match(cond)
            if not m:
                raise NoderangeError(f"dynamic group {group}: bad condition {cond!r}")
            attr, op, want = m.groups()
            full = attr if "." in attr else DEF_ATTRS.get(attr)
            if full is None:
                raise NoderangeError(
                    f"dynamic group {group}: unknown attribute {attr!r} "
                    "(use table.column, e.g. nodetype.os)"
                )
            table, column = full.split(".", 1)
            conds.append((table, column, op, want))
        return {
            n
            for n in self.u.nodes
            if all(_matches(self.u.lookup(n, t, c), op, w) for t, c, op, w in conds)
        }


def syntax_problem(text: str) -> str | None:
    """Why ``text`` can never be a valid noderange (None if it may be), without a database:
    bad brackets, too deep or large, a bad regex, a ``^file``. Unknown names are not a
    problem here (nodes may be added later). For write-time checks of stored noderanges."""
    try:
        check_shape(text)
        _Expander(Universe(nodes=(), attr=lambda _n, _t, _c: None), []).expr(text.strip(), 0)
    except NoderangeError as exc:
        return str(exc)
    except RecursionError:
        return "noderange is nested too deeply"
    return None


def _wraps(atom: str) -> bool:
    """True when the outer parentheses of ``atom`` enclose all of it: ``(a,b)`` not ``(a)@(b)``."""
    depth = 0
    for i, ch in enumerate(atom):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0 and i != len(atom) - 1:
                return False
    return True
