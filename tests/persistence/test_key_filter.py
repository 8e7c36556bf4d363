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


def saved(f: KeyFilter, generation: int, part: int) -> list[tuple[int, bytes]]:
    return [(offset, f.part(generation, offset, part))
            for offset in range(0, f.table_bytes(), part)]


@given(added=pairs, generation=st.sampled_from([0, 1]), part=st.sampled_from([100, 512]))
def test_saved_bits_hold_every_key_in_another_filter_with_the_salt(added, generation,
                                                                   part) -> None:
    """What a store saves and a new process takes back, in parts: the same salt gives the
    same positions, so every key of the saved filter may be held by the one restored."""
    f = KeyFilter(1 << 12, b"salt")
    for cid, key in added:
        f.add(generation, cid, key)
    g = KeyFilter(1 << 12, b"salt")
    g.ready = True
    g.add(generation, "later", "key")  # restoring adds to what is there
    for offset, bits in saved(f, generation, part):
        g.restore_part(generation, offset, bits)
    assert all(g.may_hold(cid, key) for cid, key in added)
    assert g.may_hold("later", "key")


def test_positions_depend_on_the_salt_and_the_pair() -> None:
    a, b = KeyFilter(1 << 12, b"one"), KeyFilter(1 << 12, b"two")
    for f in (a, b):
        for i in range(50):
            f.add(0, f"c{i}", f"k{i}")
    assert saved(a, 0, 512) != saved(b, 0, 512)
    c, d = KeyFilter(1 << 12, b"one"), KeyFilter(1 << 12, b"one")
    c.add(0, "ab", "c")
    d.add(0, "a", "bc")  # the same characters, another pair
    assert saved(c, 0, 512) != saved(d, 0, 512)


def test_only_a_whole_save_of_the_period_size_and_scheme_is_taken() -> None:
    """The store takes saved parts back only when they are one whole save (a crash or a
    second save midway leaves a mix) of the generation's current period, in the filter's
    size and scheme: anything else could lack keys the tables hold."""
    from persistence.durable import _whole_filter
    from persistence.key_filter import SCHEME

    def parts(*rows: tuple) -> list[tuple]:
        return [(i, *row) for i, row in enumerate(rows)]

    whole = parts((7, 3, SCHEME, 100), (7, 3, SCHEME, 28))
    assert _whole_filter(whole, 7, 128) == 3
    assert _whole_filter(whole, 9, 128) is None  # emptied since
    assert _whole_filter(whole, 7, 256) is None  # another size
    assert _whole_filter(whole[:1], 7, 128) is None  # a part missing
    assert _whole_filter([whole[0], (2, *whole[1][1:])], 7, 128) is None  # not in order
    assert _whole_filter(parts((7, 3, SCHEME, 100), (7, 4, SCHEME, 28)), 7, 128) is None
    assert _whole_filter(parts((7, 3, "another", 128)), 7, 128) is None
    assert _whole_filter([], 7, 128) is None
