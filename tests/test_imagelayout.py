"""Reading liteimg's layout (moved link-family paths, placeholders) and the adapted plan."""

from __future__ import annotations

import json
import os
from pathlib import Path

from litefs.fs.imagelayout import moved_paths, open_originals, read_layout
from litefs.fs.layers import LayerSet
from litefs.options import LayerKind
from litefs.plan import Plan, Rule
from litefs.resolve import ORIGINALS, LayerRef, for_liteimg_layout, resolve

PLAN = Plan(image="img", rules=(
    Rule("/etc/ntp.conf", "link", False),
    Rule("/etc/own", "link", False),
    Rule("/etc/ssh", "link", True),
    Rule("/etc/ssh/sshd_config", "link,persistent", False),
    Rule("/var/log", "persistent", True),
    Rule("/var/new", "tmpfs", True),
))


def _image(root: Path, liteimgd: bool = True) -> Path:
    (root / "etc").mkdir(parents=True)
    (root / "var/log").mkdir(parents=True)
    (root / ".default/etc/ssh").mkdir(parents=True)
    (root / ".default/etc/ntp.conf").write_text("server a\n")
    (root / ".default/etc/own").write_text("x\n")
    os.symlink("../.statelite/tmpfs/etc/ntp.conf", root / "etc/ntp.conf")
    os.symlink("../.statelite/tmpfs/etc/ssh", root / "etc/ssh")
    os.symlink("/elsewhere/own", root / "etc/own")  # the admin's own link: not liteimg's
    (root / ".statelite").mkdir()
    if liteimgd:
        (root / ".statelite/litefile.save").write_text("img: link          /etc/ntp.conf\n")
        (root / ".statelite/liteimg.json").write_text(json.dumps({"created": ["/var/new"]}))
    return root


def test_moved_paths_are_exactly_liteimgs_links(tmp_path: Path) -> None:
    layers = LayerSet(str(_image(tmp_path / "img")), [])
    assert layers.layout.liteimgd and layers.layout.made_up == frozenset({"/var/new"})
    assert moved_paths(PLAN, layers.image, layers.layout) == {"/etc/ntp.conf", "/etc/ssh"}
    assert layers.originals is not None and layers.lower(LayerKind.IMAGE, ORIGINALS) is layers.originals
    layers.close()


def test_an_image_without_litefile_save_is_read_as_it_is(tmp_path: Path) -> None:
    layers = LayerSet(str(_image(tmp_path / "img", liteimgd=False)), [])
    assert not read_layout(layers.image).liteimgd
    assert layers.originals is None
    assert moved_paths(PLAN, layers.image, layers.layout) == frozenset()
    assert open_originals(layers.image) is not None  # /.default alone does not make it liteimg'd
    layers.close()


def test_adapted_plan_reads_moved_paths_and_below_from_default() -> None:
    plan = Plan(image="img", rules=PLAN.rules, sources=())
    adapted = for_liteimg_layout(plan, frozenset({"/etc/ssh", "/etc/ntp.conf"}),
                                 frozenset({"/var/new"}))
    orig = LayerRef(LayerKind.IMAGE, ORIGINALS)
    assert resolve(adapted, "/etc/ntp.conf").lowers == (orig,)
    assert resolve(adapted, "/etc/ssh/moduli").lowers == (orig,)
    assert resolve(adapted, "/etc/ssh/sshd_config").lowers == (orig,)  # child of a moved dir
    assert resolve(adapted, "/var/log/x").lowers == (LayerRef(LayerKind.IMAGE),)  # bind family: in place
    assert resolve(adapted, "/var/new/x").lowers == ()  # a placeholder liteimg made up
    assert resolve(adapted, "/etc/passwd").lowers == (LayerRef(LayerKind.IMAGE),)
    assert resolve(plan, "/etc/ntp.conf").lowers == (LayerRef(LayerKind.IMAGE),)  # the original is untouched
    assert for_liteimg_layout(plan, frozenset(), frozenset()) is plan
    with_src = Plan(image="img", rules=PLAN.rules[:1], sources=PLAN.sources)
    assert resolve(for_liteimg_layout(with_src, frozenset({"/etc/ntp.conf"}), frozenset()),
                   "/etc/ntp.conf").lowers == (orig,)
