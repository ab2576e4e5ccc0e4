"""What mountd knows from the database, loaded once and shared until the tables change.

A :class:`TableView` is an immutable picture of the tables: the planner's snapshot plus the
few things mountd reads itself (hosts for identity, policy, site, node names). Plans are
computed from it lazily, once per node, and kept with it, so a boot storm of thousands of
nodes reads the database once. :class:`Catalog` hands out the current view and notices table
changes (``chtab``, ``tabrestore``) without a restart: every ``check_interval`` seconds it
compares a cheap fingerprint (the SQLite file's and WAL's stat, or PostgreSQL's WAL position)
and reloads when it moved. Database work runs in worker threads behind a small limiter, with
a timeout; when the database goes away the last good view keeps serving and health says so.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import trio
from sqlalchemy import Engine, select, text
from sqlalchemy.exc import SQLAlchemyError

from litefs.errors import LitefsError, MountdError
from litefs.policytable import PolicyRule, sort_rules
from litefs.schema import TABLES, active

from .identity import hosts_index

#: Most names one noderange from a request may generate (ranges, brackets); the budget is
#: twice the cluster's node count (at least 10,000), so a hostile x[1-999999] is refused at
#: once and the work it can cause stays proportional to the cluster.
MAX_REQUEST_NAMES = 100_000


class PlanEntry:
    """One node's plan in the forms mountd sends (or why there is none).

    The classic ``litefile``/``litetree`` lines are made on first use: in a boot storm of
    litefs nodes nobody asks for them, and every microsecond per node counts.
    """

    __slots__ = ("_litefile", "_litetree", "error", "node", "plan", "plan_json")

    def __init__(self, node: str, plan: Any, plan_json: bytes | None, error: str | None = None):
        self.node = node
        self.plan = plan  # litefs.plan.Plan, or None with ``error``
        self.plan_json = plan_json  # the plan's dict as compact JSON (spliced into replies)
        self.error = error
        self._litefile: tuple[str, ...] | None = None
        self._litetree: tuple[str, ...] | None = None

    @property
    def image(self) -> str | None:
        return self.plan.image if self.plan is not None else None

    @property
    def litefile(self) -> tuple[str, ...]:
        if self._litefile is None:
            from litefs import planner

            self._litefile = tuple(planner.xcat_litefile_lines(self.plan)) if self.plan else ()
        return self._litefile

    @property
    def litetree(self) -> tuple[str, ...]:
        if self._litetree is None:
            from litefs import planner

            self._litetree = tuple(planner.xcat_litetree_lines(self.plan)) if self.plan else ()
        return self._litetree


@dataclass
class TableView:
    generation: int
    snapshot: Any  # litefs.planner.Snapshot
    nodes: frozenset[str]
    hosts: dict[str, str]
    policy: tuple[PolicyRule, ...]
    site: dict[str, str]
    loaded_at: float
    #: osimage name → its ``rootimg`` folder on this host (as liteimg finds it:
    #: ``linuximage.rootimgdir``, else ``<installdir>/netboot/<osvers>/<osarch>/<profile>``).
    image_dirs: dict[str, str] = field(default_factory=dict)
    _plans: dict[str, PlanEntry] = field(default_factory=dict)
    _universe: Any = None
    _by_image: dict[str, set[str]] | None = None
    #: id(rules tuple) → (that tuple, its JSON): the planner shares one rules tuple among the
    #: nodes of an image, so its encoding is done once per image, not once per node.
    _rules_json: dict[int, tuple[Any, bytes]] = field(default_factory=dict)
    _policy_sets: dict[str, frozenset[str] | LitefsError] = field(default_factory=dict)

    @property
    def require_client_cert(self) -> bool:
        """``site.litefs_require_client_cert=yes``: a node must prove who it is by certificate."""
        return (self.site.get("litefs_require_client_cert") or "").strip().lower() in (
            "yes", "1", "true",
        )

    @property
    def domains(self) -> tuple[str, ...]:
        dom = self.site.get("domain")
        return (dom,) if dom else ()

    def plan(self, node: str) -> PlanEntry:
        """The node's plan, computed on first use and kept for the life of this view."""
        entry = self._plans.get(node)
        if entry is None:
            entry = _compute_plan(self.snapshot, node, self._rules_json)
            self._plans[node] = entry
        return entry

    def classic_litefile(self, node: str) -> tuple[str, ...]:
        """The classic ``litefile`` answer for a stock xCAT node.

        xCAT's litefile reads only litefile rows, so a node whose full plan fails on a
        litetree or statemnt variable (the cookbook's ``$noderes.nfssserver`` typo) still gets
        its litefile list, as from xcatd; raises LitefsError when the litefile rows themselves
        cannot be planned."""
        entry = self.plan(node)
        if entry.plan is not None:
            return entry.litefile
        from litefs import planner

        return tuple(planner.xcat_litefile_lines(planner.litefile_plan_for_node(self.snapshot, node)))

    def expand(self, text_: str) -> set[str]:
        """A noderange → node names (raises NoderangeError for unknown names).

        The universe refuses ``^file`` atoms (its default reader) and bounds the names one
        expansion may generate: the text may come from the network."""
        from litefs import noderange

        if self._universe is None:
            # A range need not name more than about the cluster's nodes; the floor keeps
            # sparse name ranges on small clusters working.
            budget = min(MAX_REQUEST_NAMES, max(10_000, 2 * len(self.nodes)))
            self._universe = self.snapshot.universe(max_names=budget)
        return set(noderange.expand(text_, self._universe))

    def expand_policy(self, text_: str) -> set[str]:
        """A policy row's noderange, expanded once per view (it is asked on every request)."""
        got = self._policy_sets.get(text_)
        if got is None:
            try:
                got = frozenset(self.expand(text_))
            except LitefsError as exc:
                got = exc
            self._policy_sets[text_] = got
        if isinstance(got, Exception):
            raise got
        return set(got)

    def nodes_for_target(self, target: str) -> set[str]:
        """``litefs notify`` target: an osimage name (the nodes booting it) or a noderange."""
        from litefs import planner

        if target in self.snapshot.osimage and target not in self.nodes:
            if self._by_image is None:
                by_image: dict[str, set[str]] = {}
                for node in self.nodes:
                    try:
                        image = planner.image_for_node(self.snapshot, node)
                    except Exception:  # a broken cell leaves this node out, nothing more
                        continue
                    by_image.setdefault(image, set()).add(node)
                self._by_image = by_image
            return set(self._by_image.get(target, ()))
        return self.expand(target)


def _compute_plan(
    snapshot: Any, node: str, rules_json: dict[int, tuple[Any, bytes]] | None = None
) -> PlanEntry:
    """``plan_for_node`` and its JSON (byte for byte ``_compact(plan.to_dict())``)."""
    from litefs import planner

    try:
        plan = planner.plan_for_node(snapshot, node)
    except LitefsError as exc:
        return PlanEntry(node, None, None, str(exc))
    except Exception as exc:  # a table value must not take mountd down
        # A cell the planner did not expect (an arithmetic regex cell that overflows, ...)
        # fails this node's plan only; the type names the failure without echoing the cell.
        return PlanEntry(
            node, None, None,
            f"cannot plan {node}: internal error {type(exc).__name__} while evaluating its "
            "table values; see 'litefs plan " + node + "' on the management node",
        )
    as_dict = plan.to_dict()
    if rules_json is None:
        return PlanEntry(node, plan, _compact(as_dict))
    cached = rules_json.get(id(plan.rules))
    if cached is None or cached[0] is not plan.rules:
        cached = (plan.rules, _compact(as_dict["rules"]))
        rules_json[id(plan.rules)] = cached
    # Encode the rest with an empty rules list and splice the shared encoding in. The
    # top-level key is the only unescaped '"rules":[]' (quotes inside strings are escaped).
    as_dict["rules"] = []
    head = _compact(as_dict)
    return PlanEntry(node, plan, head.replace(b'"rules":[]', b'"rules":' + cached[1], 1))


def _compact(obj: Any) -> bytes:
    import json

    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


# --- loading ------------------------------------------------------------------------------


def load_view(engine: Engine, generation: int) -> TableView:
    """Read everything mountd needs in one transaction (runs in a worker thread)."""
    from litefs import planner

    with engine.connect() as conn:
        snapshot = planner.load_snapshot(conn)
        p = TABLES["policy"]
        rules = sort_rules(
            PolicyRule(
                priority=r.priority, name=r.name, host=r.host, commands=r.commands,
                noderange=r.noderange, parameters=r.parameters, rule=r.rule,
            )
            for r in conn.execute(select(p).where(active(p)))
        )
        li = TABLES["linuximage"]
        rootimgdirs = {
            (r.imagename or "").strip(): (r.rootimgdir or "").strip()
            for r in conn.execute(select(li.c.imagename, li.c.rootimgdir).where(active(li)))
        }
    # hosts.ip through the planner's attribute lookup: group rows and regex cells
    # (|node(\d+)|10.0.0.($1+0)|) give each node its own address, as in xCAT.
    rows = []
    for node in snapshot.nodes:
        try:
            ip = snapshot.attrs.get(node, "hosts", "ip")
            other = snapshot.attrs.get(node, "hosts", "otherinterfaces")
        except Exception:  # a broken cell (even one that overflows) costs only this node
            continue
        rows.append((node, ip, other))
    return TableView(
        generation=generation, snapshot=snapshot, nodes=frozenset(snapshot.nodes),
        hosts=hosts_index(rows), policy=rules,
        site={k: v or "" for k, v in snapshot.site.items()}, loaded_at=time.time(),
        image_dirs=image_dirs(snapshot, rootimgdirs),
    )


def image_dirs(snapshot: Any, rootimgdirs: dict[str, str]) -> dict[str, str]:
    """osimage name → rootimg folder, as ``liteimg`` locates it."""
    installdir = (snapshot.site.get("installdir") or "").strip() or "/install"
    out = {}
    for name, row in snapshot.osimage.items():
        base = rootimgdirs.get(name) or ""
        if not base:
            parts = [(row.get(k) or "").strip() for k in ("osvers", "osarch", "profile")]
            if not all(parts):
                continue
            base = f"{installdir}/netboot/{parts[0]}/{parts[1]}/{parts[2]}"
        out[name] = base.rstrip("/") + "/rootimg"
    return out


def db_fingerprint(engine: Engine) -> Hashable:
    """Something that changes whenever the tables may have changed; cheap to compute."""
    if engine.url.get_backend_name() == "sqlite":
        path = engine.url.database or ""
        out = []
        for suffix in ("", "-wal"):
            try:
                st = os.stat(path + suffix)
                out.append((st.st_mtime_ns, st.st_size, st.st_ino))
            except FileNotFoundError:
                if suffix == "":
                    raise MountdError(f"database file {path} is gone") from None
                out.append(None)
        return tuple(out)
    with engine.connect() as conn:
        # Any committed write moves the WAL position (on a standby: the replayed position).
        return conn.execute(text(
            "SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()::text "
            "ELSE pg_current_wal_lsn()::text END"
        )).scalar()


class Catalog:
    """Hands out the current :class:`TableView`, reloading it when the tables changed.

    One check or reload at a time. Requests that arrive meanwhile wait for it up to
    ``stale_grace`` seconds, then get the previous view: a database that hangs delays the
    one request that noticed, not every node. Time is trio's clock, so tests drive the check
    interval with a MockClock.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        check_interval: float = 1.0,
        stale_grace: float = 0.5,
        db_timeout: float = 10.0,
        threads: int = 4,
        loader: Callable[[Engine, int], TableView] = load_view,
        fingerprint: Callable[[Engine], Hashable] = db_fingerprint,
        log: Callable[..., None] | None = None,
    ) -> None:
        self.engine = engine
        self.check_interval = check_interval
        self.stale_grace = stale_grace
        self.db_timeout = db_timeout
        self.limiter = trio.CapacityLimiter(threads)
        self._loader = loader
        self._fingerprint = fingerprint
        self._log = log or (lambda *a, **k: None)
        self._view: TableView | None = None
        self._fp: Hashable = None
        self._next_check = -float("inf")
        self._forced = True
        self._lock = trio.Lock()
        self._generation = 0
        self.db_error: str | None = None

    def invalidate(self) -> None:
        """Reload at the next request (after ``chtab``, or on an admin ``reload``)."""
        self._forced = True

    @property
    def current(self) -> TableView | None:
        """The view in hand, without touching the database (None before the first load)."""
        return self._view

    def _settled(self) -> bool:
        """True when no database work is due: the view is fresh, or it failed a moment ago."""
        now = trio.current_time()
        if now >= self._next_check:
            return False
        return self.db_error is not None or (self._view is not None and not self._forced)

    def _current(self) -> TableView:
        if self._view is None:
            # Said to whoever asked, so nothing about the database (host, user, the driver's
            # error): mountd's own log has those (db_unavailable, with the URL).
            raise MountdError("database unavailable; mountd retries every second (its log says why)")
        return self._view

    async def _in_thread(self, fn: Callable[[], Any]) -> Any:
        with trio.fail_after(self.db_timeout):
            return await trio.to_thread.run_sync(fn, limiter=self.limiter, abandon_on_cancel=True)

    async def view(self) -> TableView:
        if self._settled():
            return self._current()
        if self._view is not None and self._lock.locked():
            # Another request is checking the database. Wait a moment for fresh tables, but
            # a slow or hung database must not hold every node: then serve the last view.
            with trio.move_on_after(self.stale_grace):
                async with self._lock:
                    pass
            return self._current()
        async with self._lock:
            if self._settled():
                return self._current()
            forced = self._forced
            try:
                fp = await self._in_thread(lambda: self._fingerprint(self.engine))
                if self._view is None or forced or fp != self._fp:
                    self._generation += 1
                    gen = self._generation
                    start = trio.current_time()
                    view = await self._in_thread(lambda: self._loader(self.engine, gen))
                    self._view, self._fp = view, fp
                    self._log(
                        "tables_loaded", generation=gen, nodes=len(view.nodes),
                        seconds=round(trio.current_time() - start, 3),
                    )
                self._forced = False
                if self.db_error is not None:
                    self._log("db_available", generation=self._generation)
                self.db_error = None
                self._next_check = trio.current_time() + self.check_interval
            except (SQLAlchemyError, OSError, LitefsError, trio.TooSlowError) as exc:
                reason = _describe(exc)
                if self.db_error != reason:
                    self._log("db_unavailable", error=reason,
                              database=self.engine.url.render_as_string(hide_password=True))
                self.db_error = reason
                # Try again soon, not on every request: a dead database must not add a
                # timeout to every node's request while a good view is at hand.
                self._next_check = trio.current_time() + 1.0
            return self._current()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, trio.TooSlowError):
        return "no answer from the database in time"
    orig = getattr(exc, "orig", None) or exc
    lines = str(orig).strip().splitlines()
    return lines[0] if lines else type(orig).__name__
