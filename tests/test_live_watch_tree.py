"""mountd's tree watcher: the pure path logic (hypothesis) and real inotify on real folders."""

from __future__ import annotations

import os
from pathlib import Path

import trio
from hypothesis import given
from hypothesis import strategies as st
from litefs.mountd import watch_tree
from litefs.mountd.watch_tree import TreeWatch, WatchLimit, coalesce, view_path

_seg = st.text(alphabet="abc.", min_size=1, max_size=3).filter(lambda s: s not in (".", ".."))
_paths = st.lists(st.lists(_seg, min_size=1, max_size=4).map(lambda p: "/" + "/".join(p)),
                  max_size=40)


@given(_paths, st.integers(min_value=1, max_value=50))
def test_coalesce_covers_every_path_with_no_redundancy(paths: list[str], limit: int) -> None:
    out = coalesce(paths, limit)
    if out == ["/"]:
        return
    assert len(out) <= limit
    covered = lambda p, q: p == q or p.startswith(q + "/")  # noqa: E731
    for p in paths:  # every changed path is refreshed by one listed path
        assert any(covered(p, q) for q in out)
    for q in out:  # and nothing listed is below another listed path
        assert not any(covered(q, r) for r in out if r != q)
    assert set(out) <= set(paths)


def test_coalesce_past_limit_is_everything() -> None:
    assert coalesce([f"/f{i}" for i in range(10)], 5) == ["/"]
    assert coalesce(["/etc", "/"]) == ["/"]
    assert view_path("") == "/" and view_path("etc/motd") == "/etc/motd"


async def _collect(tw: TreeWatch, change, want: set[str]) -> list[tuple[str, list[str]]]:  # type: ignore[no-untyped-def]
    got: list[tuple[str, list[str]]] = []
    async with trio.open_nursery() as n:
        n.start_soon(tw.run, lambda root, paths: got.append((root, paths)))
        await trio.sleep(0.05)
        change()
        with trio.fail_after(10):
            while not want <= {p for _, ps in got for p in ps}:
                await trio.sleep(0.02)
        n.cancel_scope.cancel()
    return got


def test_real_inotify_reports_view_paths_and_follows_new_folders(tmp_path: Path) -> None:
    root = tmp_path / "rootimg"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "motd").write_text("v1\n")
    tw = TreeWatch(settle=0.05)
    try:
        tw.set_roots([str(root)])
        assert tw.watch_count == 2  # one per folder: rootimg and etc

        def change() -> None:
            (root / "etc" / "motd").write_text("v2\n")
            (root / "opt" / "app").mkdir(parents=True)

        trio.run(_collect, tw, change, {"/etc/motd", "/opt"})
        # The new folders are watched now: a file in them is reported too.
        got = trio.run(_collect, tw, lambda: (root / "opt/app/x.conf").write_text("x"),
                       {"/opt/app/x.conf"})
        assert all(r == str(root) for r, _ in got)
        tw.set_roots([])
        assert tw.watch_count == 0
    finally:
        tw.close()


class _TinyLimit(watch_tree.Inotify):
    """The kernel's fs.inotify.max_user_watches, but 3 (the real limit is system-wide)."""

    def add(self, path: str) -> int:
        if getattr(self, "_n", 0) >= 3:
            raise WatchLimit(28, "fs.inotify.max_user_watches reached")
        self._n = getattr(self, "_n", 0) + 1
        return super().add(path)


def test_out_of_watches_falls_back_to_scanning_with_one_log_line(tmp_path: Path) -> None:
    root = tmp_path / "rootimg"
    for d in ("a", "b", "c", "d"):
        (root / d).mkdir(parents=True)
    logged: list[tuple] = []
    tw = TreeWatch(settle=0.02, scan_interval=0.1, log=lambda *a, **k: logged.append((a, k)))
    tw._ino.close()
    tw._ino = _TinyLimit()
    try:
        tw.set_roots([str(root)])
        assert tw.watch_count == 0  # gave its watches back: scanning instead
        assert [a[0] for a, _ in logged] == ["watch_fallback"]
        assert "max_user_watches" in logged[0][1]["reason"]
        # The scan sees c/new and c (its folder changed): "/c" covers both.
        got = trio.run(_collect, tw, lambda: (root / "c" / "new").write_text("n"), {"/c"})
        assert got[0][0] == str(root)
    finally:
        tw.close()


def test_symlinks_are_not_followed_out_of_the_tree(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "rootimg"
    root.mkdir()
    os.symlink(outside, root / "link")
    tw = TreeWatch(settle=0.02)
    try:
        tw.set_roots([str(root)])
        assert tw.watch_count == 1  # the root only; the link's target is not ours
    finally:
        tw.close()


def test_announcement_payload_is_bounded_and_hostile_payloads_are_ignored() -> None:
    from litefs.mountd.db_watch import MAX_PAYLOAD, decode_announcement, encode_announcement

    many = [f"/etc/{'x' * 200}{i}" for i in range(100)]
    payload = encode_announcement("me", "compute", many)
    assert len(payload.encode()) <= MAX_PAYLOAD
    assert decode_announcement(payload) == ("me", "compute", ["/"])  # too many: everything
    assert decode_announcement(encode_announcement("me", "n01", ["/etc/motd"])) == (
        "me", "n01", ["/etc/motd"])
    for bad in ("", "[]", "{", '{"o":1,"t":"x","p":[]}', '{"o":"a","t":"x","p":"/"}'):
        assert decode_announcement(bad) is None
    # Relative or non-string paths from the wire are dropped, never passed to a node.
    assert decode_announcement('{"o":"a","t":"x","p":["../x",3,"/ok","//a/../../b"]}') == (
        "a", "x", ["/ok", "/b"])


def test_kernel_queue_overflow_means_everything_changed(tmp_path: Path) -> None:
    root = tmp_path / "rootimg"
    root.mkdir()
    tw = TreeWatch(settle=0.01, max_paths=10**7)  # so only IN_Q_OVERFLOW can say "/"
    try:
        tw.set_roots([str(root)])
        try:
            with open("/proc/sys/fs/inotify/max_queued_events") as f:
                queue = int(f.read())
        except OSError:
            queue = 16384
        # More events than the kernel queues while nobody reads: it drops them and says so.
        for i in range(queue // 2 + 100):
            (root / f"f{i}").touch()  # create + attrib + close_write: >2 events each
        while True:
            events = tw._ino.read()
            if not events:
                break
            tw._handle(events)
        assert tw._take() == [(str(root), ["/"])]
    finally:
        tw.close()
