"""The key filter (persistence/key_filter.py): a key it was given is always "maybe"; one
it was not is "surely new" once it is ready, but for a small share of false positives."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from persistence.key_filter import KeyFilter

pairs = st.lists(st.tuples(st.text(max_size=12), st.text(max_size=40)), max_size=200)


@given(added=pairs, generation=st.sampled_from([0, 1]))
def test_every_key_added_may_be_held(added, generation) -> None:
    """No false negatives, whatever the keys (the property replays rely on)."""
    f = KeyFilter(1 << 12)
    f.ready = True
    for cid, key in added:
        f.add(generation, cid, key)
    assert all(f.may_hold(cid, key) for cid, key in added)
    assert f.unknown("c", []) == []


def test_until_ready_every_key_may_be_held() -> None:
    f = KeyFilter(1 << 20)
    assert f.may_hold("c", "never-added")
    f.ready = True
    assert not f.may_hold("c", "never-added")
    assert f.statistics()["key_filter_passed"] == 1
    assert f.statistics()["key_filter_held"] == 1


def test_keys_are_per_customer_and_few_new_ones_are_held() -> None:
    f = KeyFilter(1 << 20)  # 4 Mi bits per table
    f.ready = True
    for i in range(100_000):
        f.add(i % 2, f"c{i % 50}", f"k{i}")
    assert not f.may_hold("c-other", "k1")
    held = sum(f.may_hold("c1", f"new-{i}") for i in range(20_000))
    # 100,000 keys over 2 x 4 Mi bits, 4 hashes: about 0.01 % each, under 0.1 % here.
    assert held < 20


def test_clearing_a_generation_forgets_only_its_keys() -> None:
    f = KeyFilter(1 << 16)
    f.ready = True
    f.add(0, "c", "old")
    f.add(1, "c", "kept")
    f.clear(0)
    assert not f.may_hold("c", "old")
    assert f.may_hold("c", "kept")
    assert f.unknown("c", ["old", "kept"]) == ["kept"]
    assert f.bytes == 1 << 16


@given(kept=pairs, dropped=pairs, generation=st.sampled_from([0, 1]))
def test_clearing_one_generation_keeps_every_key_of_the_other(kept, dropped,
                                                              generation) -> None:
    f = KeyFilter(1 << 12)
    f.ready = True
    for cid, key in dropped:
        f.add(generation, cid, key)
    for cid, key in kept:
        f.add(1 - generation, cid, key)
    f.clear(generation)
    assert all(f.may_hold(cid, key) for cid, key in kept)


@given(added=pairs, generation=st.sampled_from([0, 1]))
def test_saved_bits_hold_every_key_in_another_filter_with_the_salt(added, generation) -> None:
    """What a store saves and a new process takes back: the same salt gives the same
    positions, so every key of the saved filter may be held by the one restored."""
    f = KeyFilter(1 << 12, b"salt")
    for cid, key in added:
        f.add(generation, cid, key)
    g = KeyFilter(1 << 12, b"salt")
    g.ready = True
    g.add(generation, "later", "key")  # restoring adds to what is there
    assert g.restore(generation, f.snapshot(generation))
    assert all(g.may_hold(cid, key) for cid, key in added)
    assert g.may_hold("later", "key")


def test_positions_depend_on_the_salt_and_the_pair() -> None:
    a, b = KeyFilter(1 << 12, b"one"), KeyFilter(1 << 12, b"two")
    for f in (a, b):
        for i in range(50):
            f.add(0, f"c{i}", f"k{i}")
    assert a.snapshot(0) != b.snapshot(0)
    c, d = KeyFilter(1 << 12, b"one"), KeyFilter(1 << 12, b"one")
    c.add(0, "ab", "c")
    d.add(0, "a", "bc")  # the same characters, another pair
    assert c.snapshot(0) != d.snapshot(0)


def test_bits_of_another_size_or_scheme_are_refused() -> None:
    f = KeyFilter(1 << 12, b"s")
    f.add(0, "c", "k")
    saved = f.snapshot(0)
    g = KeyFilter(1 << 13, b"s")
    g.ready = True
    assert not g.restore(0, saved)
    h = KeyFilter(1 << 12, b"s")
    h.ready = True
    assert not h.restore(0, b"another scheme" + saved[14:])
    assert not h.restore(0, saved[:-1])
    assert not g.may_hold("c", "k") and not h.may_hold("c", "k")
    assert h.restore(0, saved) and h.may_hold("c", "k")
