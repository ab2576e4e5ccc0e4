"""The write side's decisions, as pure functions of what is at the names involved.

Each changing request (rename, rmdir, unlink, link, open for writing) first gathers facts about
its names (:class:`Side`), then asks these functions whether POSIX and the overlay rules allow it
(an errno if not) and which bookkeeping steps it needs (whiteouts, opaque markers). They do no
I/O, so the rules are unit-tested without a mount (``tests/test_fs_policy.py``), as mergerfs keeps
its policies apart from its syscalls. The overlay rules are kernel overlayfs's where litefs has a
choice: a directory with lower content cannot be renamed (EXDEV), a name that hides lower content
gets a whiteout when removed, a directory moved or made over such a name is opaque.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Side:
    """What is at one name of a change."""

    is_dir: bool
    #: reached through the raw /.statelite/<layer> path: no rules, no whiteouts
    raw: bool = False
    #: the entry lives in the writable layer already (nothing to copy up)
    in_upper: bool = False
    #: a directory with content in a lower layer (it cannot move: the lower part would stay)
    lower_dir: bool = False


def upper_refusal(*, read_only: bool, synthetic_parent: bool, wanted: str | None, have: bool) -> int | None:
    """May a change be made below a parent whose rule writes to the ``wanted`` upper layer
    (None: no writable layer, read-only content), given the mount ``have`` that layer?"""
    if read_only or synthetic_parent or wanted is None or not have:
        return errno.EROFS
    return None


def raw_refusal(*, read_only: bool, layer_writable: bool) -> int | None:
    """May a change be made through the raw /.statelite/<layer> path?"""
    return errno.EROFS if read_only or not layer_writable else None


def wants_write(flags: int) -> bool:
    """Does an open with ``flags`` change the file (and so need it copied up first)?"""
    return (flags & os.O_ACCMODE) != os.O_RDONLY or bool(flags & os.O_TRUNC)


def open_access(flags: int) -> int:
    """The R_OK/W_OK bits an open with ``flags`` needs, as open(2) checks them."""
    acc = flags & os.O_ACCMODE
    want = 0
    if acc in (os.O_RDONLY, os.O_RDWR):
        want |= os.R_OK
    if acc in (os.O_WRONLY, os.O_RDWR) or flags & os.O_TRUNC:
        want |= os.W_OK
    return want


def rename_refusal(
    src: Side,
    dst: Side | None,
    *,
    same_upper: bool,
    dst_parent_raw: bool,
    noreplace: bool,
    exchange: bool,
    dst_is_empty: Callable[[], bool],
) -> int | None:
    """rename(2)'s answer before anything changes (None: go ahead). ``dst`` is None when the
    new name is free; ``same_upper`` says both names write to the same layer;
    ``dst_is_empty`` is asked only when a directory would be replaced (it lists it)."""
    if not same_upper or src.raw != dst_parent_raw:
        return errno.EXDEV
    if noreplace and dst is not None:
        return errno.EEXIST
    if exchange and dst is None:
        return errno.ENOENT
    if src.is_dir and not src.raw and src.lower_dir:
        return errno.EXDEV
    if dst is not None and not exchange:
        if dst.is_dir and not src.is_dir:
            return errno.EISDIR
        if src.is_dir and not dst.is_dir:
            return errno.ENOTDIR
        if dst.is_dir and not dst_is_empty():
            return errno.ENOTEMPTY
    if exchange and dst is not None and dst.is_dir and not dst.raw and dst.lower_dir:
        return errno.EXDEV
    return None


@dataclass(frozen=True, slots=True)
class RenameSteps:
    """Bookkeeping around the backing rename."""

    #: the replaced destination is an upper directory: its markers go before it does
    clear_dst_markers: bool
    #: a directory moved over a name with lower content must not merge with it
    make_src_opaque: bool
    #: the new name no longer hides anything
    drop_dst_whiteout: bool
    #: the old name had lower content, which must stay hidden
    whiteout_src: bool


def rename_steps(
    src: Side, dst: Side | None, *, exchange: bool, dst_parent_raw: bool, src_lower: bool, dst_lower: bool
) -> RenameSteps:
    """``src_lower``/``dst_lower``: a lower layer would show the old/new name once the upper
    entry is gone."""
    return RenameSteps(
        clear_dst_markers=dst is not None and dst.in_upper and dst.is_dir and not exchange,
        make_src_opaque=src.is_dir and dst_lower and not exchange and not src.raw,
        drop_dst_whiteout=not exchange and not dst_parent_raw,
        whiteout_src=not exchange and src_lower,
    )


def rmdir_refusal(
    target: Side | None, *, write_refusal: int | None, busy: bool, is_empty: Callable[[], bool]
) -> int | None:
    """rmdir(2)'s answer, in the kernel's order. ``write_refusal`` is :func:`upper_refusal`'s
    answer for the name; ``busy``: a directory litefs makes up, or the root of a raw layer;
    ``is_empty`` is asked last (it lists the directory)."""
    if target is None:
        return errno.ENOENT
    if not target.is_dir:
        return errno.ENOTDIR
    if write_refusal is not None:
        return write_refusal
    if busy:
        return errno.EBUSY
    if not is_empty():
        return errno.ENOTEMPTY
    return None


def unlink_refusal(target: Side | None, *, write_refusal: int | None) -> int | None:
    if target is None:
        return errno.ENOENT
    if target.is_dir:
        return errno.EISDIR
    return write_refusal


@dataclass(frozen=True, slots=True)
class RemoveSteps:
    #: a lower layer would show the name again: record it as deleted
    whiteout: bool
    #: there is a backing entry in the writable layer to remove
    remove_backing: bool


def remove_steps(target: Side, *, lower: bool) -> RemoveSteps:
    """What removing ``target`` (unlink or rmdir) does in the writable layer."""
    return RemoveSteps(whiteout=lower, remove_backing=target.in_upper or target.raw)


def link_refusal(src: Side, *, same_upper: bool) -> int | None:
    """link(2): directories cannot be linked; a link cannot cross writable layers."""
    if src.is_dir:
        return errno.EPERM
    if not same_upper:
        return errno.EXDEV
    return None
