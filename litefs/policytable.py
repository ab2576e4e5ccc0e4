"""The policy table, evaluated the way xcatd does (pure).

Rows are sorted by ``priority`` as numbers (lower first); the first row whose columns all
match the request decides: ``allow``/``accept``/``trusted`` allow, anything else denies; no
matching row denies. Columns, blank or ``*`` matching anything:

* ``name`` — the peer's authenticated name (client certificate CN); ``*`` still requires one;
* ``host`` — one of the names the peer is known by (node name, reverse-DNS name, address);
* ``commands`` — comma list of command names;
* ``parameters`` — a regular expression searched in the space-joined arguments;
* ``noderange`` — the nodes the request is about: a row covering none of them is skipped; a
  deny row covering any denies; an allow row covering all the nodes still undecided allows,
  and one covering only some allows those and leaves the rest to the following rows (as
  xcatd's ``leftnodes``); a request about no node skips the row. mountd applies this to the
  node a request is about even when the node asked anonymously (xcatd only looks at an
  explicit noderange), so a row like ``noderange=gpu rule=deny`` does hold those nodes off;
* ``time`` — not supported by xcatd either; ignored.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from litefs import saferegex

_ALLOW_RE = re.compile(r"allow|accept|trusted", re.IGNORECASE)


@dataclass(frozen=True)
class PolicyRule:
    priority: str
    name: str | None = None
    host: str | None = None
    commands: str | None = None
    noderange: str | None = None
    parameters: str | None = None
    rule: str | None = None

    @property
    def allows(self) -> bool:
        return bool(self.rule and _ALLOW_RE.search(self.rule))

    def describe(self) -> str:
        return f"policy row priority={self.priority} rule={self.rule or ''}"


@dataclass(frozen=True)
class Decision:
    allowed: bool
    rule: PolicyRule | None
    reason: str


def _priority_key(item: tuple[int, PolicyRule]) -> tuple[float, int]:
    index, rule = item
    try:
        return (float(rule.priority), index)
    except ValueError:
        return (0.0, index)  # Perl's <=> treats a non-number as 0


def sort_rules(rules: Iterable[PolicyRule]) -> tuple[PolicyRule, ...]:
    """Rules in evaluation order (numeric priority; ties keep table order)."""
    return tuple(r for _i, r in sorted(enumerate(rules), key=_priority_key))


def _broken(rule: PolicyRule, why: str) -> Decision:
    """The verdict for a row that cannot be evaluated: deny, and say which row and why."""
    return Decision(False, rule, f"denied: {rule.describe()} cannot be evaluated ({why})")


def check_rule(rule: PolicyRule, expand: Callable[[str], set[str]]) -> str | None:
    """Why ``rule`` could never be evaluated (None if it can): for write-time checks."""
    if _set(rule.parameters):
        why = saferegex.check(rule.parameters or "")
        if why:
            return why
    if _set(rule.noderange):
        try:
            expand(rule.noderange or "")
        except Exception as exc:  # reported to the admin, row refused
            return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return None


def row_problem(row: Mapping[str, str | None]) -> str | None:
    """Why a policy table row could never be evaluated (None if fine): refused when written
    (chtab, tabrestore), since at run time such a row denies everything it is asked about."""
    from litefs.noderange import syntax_problem

    params = row.get("parameters") or ""
    if _set(params):
        why = saferegex.check(params)
        if why:
            return f"parameters: {why}"
    nr = row.get("noderange") or ""
    if _set(nr):
        why = syntax_problem(nr)
        if why:
            return f"noderange: {why}"
    return None


def _set(value: str | None) -> bool:
    return bool(value) and value != "*"


def decide(
    rules: tuple[PolicyRule, ...],
    *,
    command: str,
    peername: str | None = None,
    peerhosts: Iterable[str] = (),
    nodes: Iterable[str] = (),
    args: Iterable[str] = (),
    expand: Callable[[str], set[str]] | None = None,
) -> Decision:
    """First matching rule of ``rules`` (already sorted) decides; none matching denies.

    ``expand`` turns a policy noderange into node names. A row that cannot be evaluated
    (its noderange or parameters do not parse, name unknown nodes, exceed a bound) fails
    closed: it denies, naming the row. Skipping it instead would let a typo in a *deny* row
    hand the decision to a later *allow* row.
    """
    hosts = set(peerhosts)
    asked = list(nodes)
    left = asked  # nodes no allow row has covered yet
    params = " ".join(args)
    for rule in rules:
        if rule.name:
            if not peername:
                continue
            if rule.name != "*" and rule.name != peername:
                continue
        if _set(rule.host) and rule.host not in hosts:
            continue
        if _set(rule.commands) and command not in [
            c.strip() for c in (rule.commands or "").split(",")
        ]:
            continue
        if _set(rule.parameters):
            try:
                if not saferegex.search(rule.parameters or "", params):
                    continue
            except saferegex.RegexError as exc:
                return _broken(rule, str(exc))
        if _set(rule.noderange):
            if not left:
                continue
            if expand is None:
                return _broken(rule, "its noderange cannot be evaluated here")
            try:
                covered = expand(rule.noderange or "")
            except Exception as exc:  # any failure denies (fail closed)
                return _broken(rule, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            hits = [n for n in left if n in covered]
            if not hits:
                continue
            if rule.allows and len(hits) != len(left):
                left = [n for n in left if n not in covered]
                continue
        verdict = "allowed" if rule.allows else "denied"
        return Decision(rule.allows, rule, f"{verdict} by {rule.describe()}")
    if left and len(left) != len(asked):
        return Decision(False, None, f"matched no policy row for {','.join(left)}")
    return Decision(False, None, "matched no policy row")
