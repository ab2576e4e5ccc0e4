"""liteimg validation (reference §2.5): every message verbatim, and the doc's allowed/forbidden matrix."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from litefs.options import VALID_OPTIONS
from litefs.plan import Rule
from litefs.validate import validate_rules

VALID_LIST = (
    "tmpfs persistent localdisk rw ro con link tmpfs,rw link,ro link,persistent link,con"
)


@pytest.mark.parametrize(
    ("entries", "messages"),
    [
        ([("/etc/x", "bogus")], [f" /etc/x has invalid option. The valid options: {VALID_LIST}"]),
        ([("/etc/x", "tempfs")], [f" /etc/x has invalid option. The valid options: {VALID_LIST}"]),
        ([("etc/x", "tmpfs")], [" etc/x is not one absolute path. "]),
        ([("/etc/x/", "con")], [' /etc/x/ is directory, don\'t use "con" as its option ']),
        ([("/etc/x/", "link,con")], [' /etc/x/ is directory, don\'t use "con" as its option ']),
        (
            [("/etc/", "ro"), ("/etc/a", "ro")],
            ['the directory "/etc/" should not be with "ro" or "con" as its option'],
        ),
        (
            [("/etc/", "link,ro"), ("/etc/a", "link,ro")],
            ['the directory "/etc/" should not be with "ro" or "con" as its option'],
        ),
        (
            [("/root/", "link"), ("/root/.ssh/", "link,ro")],
            ['Based on the option of /root/, /root/.ssh/ should not use "link,ro" as its option'],
        ),
        (
            [("/root/", "tmpfs,rw"), ("/root/a", "tmpfs")],
            ['Based on the option of /root/, /root/a can only use "link"-based options'],
        ),
        (
            # xCAT means to reject this but its check never fires; litefs does (DESIGN).
            [("/var/", "tmpfs"), ("/var/log/", "link")],
            ['Based on the option of /var/, /var/log/ should not use "link"-based options'],
        ),
        (
            [("/var/", "persistent"), ("/var/tmp/", "tmpfs")],
            ["/var/tmp/ should have persistent option like /var/ "],
        ),
        (
            [("/var/", "link,persistent"), ("/var/tmp/", "link")],
            ["/var/tmp/ should have persistent option like /var/ "],
        ),
    ],
)
def test_each_message_verbatim(entries: list[tuple[str, str]], messages: list[str]) -> None:
    assert validate_rules(entries) == messages


def test_no_files_message() -> None:
    assert validate_rules([], image="img1") == [
        "There are no files to sync for img1.  You have to have some files read/write filled "
        "out in the synclist table."
    ]
    assert validate_rules([]) == []


def test_all_problems_are_reported_at_once() -> None:
    msgs = validate_rules([("rel", "bad"), ("/d/", "con"), ("/ok", "tmpfs")])
    assert len(msgs) == 3
    # xCAT's wording (liteimg's messages, leading/trailing blanks included), in row order.
    assert msgs == [
        " rel has invalid option. The valid options: tmpfs persistent localdisk rw ro con link "
        "tmpfs,rw link,ro link,persistent link,con",
        " rel is not one absolute path. ",
        ' /d/ is directory, don\'t use "con" as its option ',
    ]


def test_tempfs_is_accepted_for_boot_only() -> None:
    assert validate_rules([("/etc/x", "tempfs")], boot=True) == []


def test_mtab_under_non_link_parent_is_allowed() -> None:
    assert validate_rules([("/etc/", "tmpfs"), ("/etc/mtab", "link")]) == []


def test_accepts_rules() -> None:
    rules = [Rule("/var", "persistent", True), Rule("/var/tmp", "tmpfs", True)]
    assert validate_rules(rules) == ["/var/tmp/ should have persistent option like /var/ "]


def test_grandchild_is_checked_against_nearest_listed_ancestor() -> None:
    # /a/b/c's nearest listed ancestor is /a/b/ (persistent), not /a/ (tmpfs).
    assert validate_rules(
        [("/a/", "tmpfs"), ("/a/b/", "persistent"), ("/a/b/c", "persistent")]
    ) == []
    assert validate_rules([("/a/", "tmpfs"), ("/a/b/", "persistent"), ("/a/b/c", "tmpfs")]) == [
        "/a/b/c should have persistent option like /a/b/ "
    ]


# Doc matrix (advanced_features.rst), as the code (and the DESIGN fix) decides it.
ALLOWED = [
    ("tmpfs", "tmpfs"), ("tmpfs", "persistent"), ("tmpfs", "ro"), ("tmpfs", "con"),
    ("persistent", "persistent"), ("link", "link"), ("link", "link,persistent"),
    ("link", "link,con"), ("link,persistent", "link,persistent"),
]
FORBIDDEN = [
    ("persistent", "tmpfs"), ("ro", "tmpfs"), ("ro", "ro"), ("link,persistent", "link"),
    ("link,persistent", "link,ro"), ("link,persistent", "link,con"), ("tmpfs", "link"),
    ("link", "persistent"), ("link", "link,ro"),
]


@pytest.mark.parametrize(("parent", "child"), ALLOWED)
def test_doc_matrix_allowed(parent: str, child: str) -> None:
    child_path = "/p/c" if "con" in child else "/p/c/"
    assert validate_rules([("/p/", parent), (child_path, child)]) == []


@pytest.mark.parametrize(("parent", "child"), FORBIDDEN)
def test_doc_matrix_forbidden(parent: str, child: str) -> None:
    assert validate_rules([("/p/", parent), ("/p/c", child)]) != []


paths = st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=3).map(
    lambda parts: "/" + "/".join(parts)
)


@given(st.lists(st.tuples(paths, st.sampled_from(VALID_OPTIONS)), max_size=8))
def test_files_only_lists_always_pass(entries: list[tuple[str, str]]) -> None:
    # No listed directory means no parent/child pairs: only per-entry checks, all satisfied.
    assert validate_rules(dict(entries).items()) == []


@given(
    st.dictionaries(
        st.tuples(paths, st.booleans()).map(lambda t: t[0] + ("/" if t[1] else "")),
        st.sampled_from(VALID_OPTIONS),
        max_size=8,
    ),
    st.randoms(),
)
def test_messages_do_not_depend_on_row_order(entries: dict[str, str], rnd: random.Random) -> None:
    rows = list(entries.items())
    shuffled = rows[:]
    rnd.shuffle(shuffled)
    assert sorted(validate_rules(rows)) == sorted(validate_rules(shuffled))
