"""The write side's decisions (litefs.fs.policy), without a mount."""

from __future__ import annotations

import errno
import os

from hypothesis import given
from hypothesis import strategies as st

from litefs.fs import policy
from litefs.fs.policy import Side

FILE = Side(is_dir=False, in_upper=True)
LOWER_FILE = Side(is_dir=False)
DIR = Side(is_dir=True, in_upper=True)
LOWER_DIR = Side(is_dir=True, lower_dir=True)
RAW_FILE = Side(is_dir=False, raw=True)


def _rename(src, dst, *, same_upper=True, dst_parent_raw=False, noreplace=False, exchange=False, empty=True):
    asked = []

    def is_empty() -> bool:
        asked.append(True)
        return empty

    code = policy.rename_refusal(src, dst, same_upper=same_upper, dst_parent_raw=dst_parent_raw,
                                 noreplace=noreplace, exchange=exchange, dst_is_empty=is_empty)
    return code, bool(asked)


def test_rename_across_writable_layers_or_in_and_out_of_a_raw_path_is_exdev() -> None:
    assert _rename(FILE, None, same_upper=False)[0] == errno.EXDEV
    assert _rename(FILE, None, dst_parent_raw=True)[0] == errno.EXDEV
    assert _rename(RAW_FILE, None, dst_parent_raw=False)[0] == errno.EXDEV
    assert _rename(RAW_FILE, None, dst_parent_raw=True)[0] is None


def test_rename_flags() -> None:
    assert _rename(FILE, FILE, noreplace=True)[0] == errno.EEXIST
    assert _rename(FILE, None, noreplace=True)[0] is None
    assert _rename(FILE, None, exchange=True)[0] == errno.ENOENT
    assert _rename(FILE, DIR, exchange=True)[0] is None  # exchange swaps kinds freely


def test_a_directory_with_lower_content_does_not_move_as_in_overlayfs() -> None:
    assert _rename(LOWER_DIR, None)[0] == errno.EXDEV
    assert _rename(FILE, LOWER_DIR, exchange=True)[0] == errno.EXDEV
    assert _rename(Side(is_dir=True, raw=True, lower_dir=True), None, dst_parent_raw=True)[0] is None


def test_rename_over_an_existing_name() -> None:
    assert _rename(FILE, DIR)[0] == errno.EISDIR
    assert _rename(DIR, FILE)[0] == errno.ENOTDIR
    assert _rename(DIR, DIR, empty=False) == (errno.ENOTEMPTY, True)
    assert _rename(DIR, DIR, empty=True) == (None, True)
    # Only a directory being replaced is listed.
    assert _rename(FILE, FILE) == (None, False)
    assert _rename(DIR, DIR, exchange=True, empty=False) == (None, False)


sides = st.builds(Side, is_dir=st.booleans(), raw=st.booleans(), in_upper=st.booleans(), lower_dir=st.booleans())


@given(sides, st.one_of(st.none(), sides), st.booleans(), st.booleans(), st.booleans(), st.booleans(), st.booleans())
def test_rename_lists_the_destination_only_when_a_directory_would_be_replaced(
        src, dst, same_upper, dst_parent_raw, noreplace, exchange, empty) -> None:
    code, asked = _rename(src, dst, same_upper=same_upper, dst_parent_raw=dst_parent_raw,
                          noreplace=noreplace, exchange=exchange, empty=empty)
    if asked:
        assert dst is not None and dst.is_dir and src.is_dir and not exchange
    if code is None and dst is not None and not exchange:
        assert dst.is_dir == src.is_dir  # never a file over a directory or the reverse
    assert code in (None, errno.EXDEV, errno.EEXIST, errno.ENOENT, errno.EISDIR, errno.ENOTDIR, errno.ENOTEMPTY)


def test_rename_steps() -> None:
    s = policy.rename_steps(DIR, DIR, exchange=False, dst_parent_raw=False, src_lower=False, dst_lower=True)
    assert s.clear_dst_markers and s.make_src_opaque and s.drop_dst_whiteout and not s.whiteout_src
    s = policy.rename_steps(LOWER_FILE, None, exchange=False, dst_parent_raw=False, src_lower=True, dst_lower=False)
    assert s.whiteout_src and not s.make_src_opaque and not s.clear_dst_markers
    s = policy.rename_steps(DIR, DIR, exchange=True, dst_parent_raw=False, src_lower=True, dst_lower=True)
    assert s == policy.RenameSteps(False, False, False, False)  # an exchange leaves both names in use
    s = policy.rename_steps(RAW_FILE, None, exchange=False, dst_parent_raw=True, src_lower=False, dst_lower=False)
    assert not s.drop_dst_whiteout  # no whiteouts through a raw path


def test_rmdir_answers_in_the_kernels_order() -> None:
    never = lambda: (_ for _ in ()).throw(AssertionError("listed"))  # noqa: E731
    assert policy.rmdir_refusal(None, write_refusal=errno.EROFS, busy=True, is_empty=never) == errno.ENOENT
    assert policy.rmdir_refusal(FILE, write_refusal=errno.EROFS, busy=True, is_empty=never) == errno.ENOTDIR
    assert policy.rmdir_refusal(DIR, write_refusal=errno.EROFS, busy=True, is_empty=never) == errno.EROFS
    assert policy.rmdir_refusal(DIR, write_refusal=None, busy=True, is_empty=never) == errno.EBUSY
    assert policy.rmdir_refusal(DIR, write_refusal=None, busy=False, is_empty=lambda: False) == errno.ENOTEMPTY
    assert policy.rmdir_refusal(DIR, write_refusal=None, busy=False, is_empty=lambda: True) is None


def test_unlink_and_what_removal_leaves() -> None:
    assert policy.unlink_refusal(None, write_refusal=errno.EROFS) == errno.ENOENT
    assert policy.unlink_refusal(DIR, write_refusal=None) == errno.EISDIR
    assert policy.unlink_refusal(FILE, write_refusal=errno.EROFS) == errno.EROFS
    assert policy.remove_steps(LOWER_FILE, lower=True) == policy.RemoveSteps(whiteout=True, remove_backing=False)
    assert policy.remove_steps(FILE, lower=True) == policy.RemoveSteps(whiteout=True, remove_backing=True)
    assert policy.remove_steps(FILE, lower=False) == policy.RemoveSteps(whiteout=False, remove_backing=True)
    assert policy.remove_steps(RAW_FILE, lower=False).remove_backing


def test_link_and_upper_layer_choice() -> None:
    assert policy.link_refusal(DIR, same_upper=True) == errno.EPERM
    assert policy.link_refusal(FILE, same_upper=False) == errno.EXDEV
    assert policy.link_refusal(FILE, same_upper=True) is None
    assert policy.upper_refusal(read_only=False, synthetic_parent=False, wanted="tmpfs", have=True) is None
    for kw in ({"read_only": True}, {"synthetic_parent": True}, {"wanted": None}, {"have": False}):
        args = {"read_only": False, "synthetic_parent": False, "wanted": "tmpfs", "have": True, **kw}
        assert policy.upper_refusal(**args) == errno.EROFS
    assert policy.raw_refusal(read_only=False, layer_writable=True) is None
    assert policy.raw_refusal(read_only=False, layer_writable=False) == errno.EROFS


@given(st.sampled_from([os.O_RDONLY, os.O_WRONLY, os.O_RDWR]), st.booleans(), st.booleans())
def test_open_flags(acc, trunc, append) -> None:
    flags = acc | (os.O_TRUNC if trunc else 0) | (os.O_APPEND if append else 0)
    assert policy.wants_write(flags) == (acc != os.O_RDONLY or trunc)
    want = policy.open_access(flags)
    assert bool(want & os.R_OK) == (acc != os.O_WRONLY)
    assert bool(want & os.W_OK) == (acc != os.O_RDONLY or trunc)
