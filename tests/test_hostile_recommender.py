"""Property-based hostile-input tests for ``Recommender.recommend`` on a tiny trained checkpoint.

Every call must end in correct recommendations or a ``LaresError`` (``InvalidHistoryError`` with
the index of the first bad history): never a ``TypeError``/``IndexError`` from deep inside, and
never a silently wrong answer. Correct means: no padding item, no duplicates, no seen item when
``exclude_seen``, exactly ``min(top_k, items left)`` items, scores sorted descending and equal to
the policy's own scores of the most recent ``max_len`` known items, unknown ids reported exactly
(as strings, in history order).

Decisions pinned here: ids are strings or integers (``50`` and ``"50"`` are one item; numpy ints
and ``np.str_`` too); floats, bools, None, bytes, containers and tensors inside a history are
refused, and so are histories without a time order (sets, dicts) or that are not 1-D.
"""

from __future__ import annotations

import numbers
import warnings
from collections import Counter
from decimal import Decimal

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lares_rl.core.errors import LaresError
from lares_rl.serve.recommender import HistoryTruncatedWarning, InvalidHistoryError, Recommender
from tests.hostile import report_examples, scaled
from tests.tiny_checkpoint import IDS, MAX_LEN, N, save_ring_checkpoint

NUMERIC_IDS = [str(10 * i) for i in range(1, N + 1)]  # a catalog where int ids are known items
EXAMPLES: Counter = Counter()  # examples run per property, reported at module teardown
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module", autouse=True)
def _report_examples():
    yield
    report_examples("recommender", EXAMPLES)


@pytest.fixture(scope="module")
def recommenders(tmp_path_factory):
    """The checkpoint's Recommender (ids i1..i12, titles) and one on the same policy with ids 10..120."""
    path = save_ring_checkpoint(tmp_path_factory.mktemp("hostile_ckpt") / "tiny.pt", steps=5)
    named = Recommender.from_checkpoint(path, device="cpu", deterministic=True)
    numeric = Recommender(named.policy, ["<pad>", *NUMERIC_IDS], MAX_LEN, device="cpu", deterministic=True)
    return {"named": named, "numeric": numeric}


# ------------------------------------------------------------------ strategies and reference

BAD_ELEMENTS = [
    None,
    1.0,
    3.5,
    float("nan"),
    float("inf"),
    True,
    False,
    np.bool_(True),
    np.float64(2.0),
    b"i1",
    bytearray(b"i1"),
    ["i1"],
    ("i1",),
    {"i1": 1},
    {"i1"},
    Decimal(1),
    1j,
    torch.tensor(1),
    np.array(["i1"]),
]


def element(catalog: list[str]):
    known = st.sampled_from(catalog)
    known_variants = st.one_of(known, known.map(np.str_), known.filter(str.isdigit).map(int), known.filter(str.isdigit).map(np.int64))
    unknown = st.one_of(
        st.sampled_from(["<pad>", "", " ", "I1", "i0", "i13", " i1", "i1 ", "nan", "None", "0", "-1", "10.0", "中", "x" * 500]),
        st.text(max_size=6),
        st.integers(-(10**30), 10**30),
        st.integers(-(2**63), 2**63 - 1).map(np.int64),
    )
    return st.one_of(known_variants, known_variants, unknown)


def is_bad(item) -> bool:
    return isinstance(item, bool) or not isinstance(item, (str, numbers.Integral))


@st.composite
def history(draw, catalog: list[str], max_size: int = 12):
    """Known/unknown ids in a list, tuple or object array; one in five holds a non-id element."""
    items = draw(st.lists(element(catalog), max_size=max_size))
    if draw(st.integers(0, 4)) == 0:
        items.insert(draw(st.integers(0, len(items))), draw(st.sampled_from(BAD_ELEMENTS)))
    container = draw(st.sampled_from([list, tuple, "array"]))
    if container == "array":
        array = np.empty(len(items), dtype=object)
        for j, item in enumerate(items):  # element-wise, so a nested list stays one element
            array[j] = item
        return array
    return container(items)


top_ks = st.one_of(
    st.integers(1, N),
    st.integers(1, N),
    st.integers(1, N),
    st.integers(-3, N + 3),
    st.sampled_from([3.0, "3", None, True, False, np.int64(3), np.int32(0), 2.5, 10**30]),
)


def expected_error(histories, catalog: list[str]) -> int | None:
    """Index of the first history the API must refuse (empty, a bad element, or no known id)."""
    for h, hist in enumerate(histories):
        items = list(hist)
        if not items or any(is_bad(x) for x in items) or not any(str(x) in catalog[1:] for x in items):
            return h
    return None


def reference_scores(rec: Recommender, known: list[int]) -> torch.Tensor:
    """The policy's own scores for the most recent MAX_LEN known items (no masking)."""
    window = known[-MAX_LEN:]
    seq = torch.zeros(1, MAX_LEN, dtype=torch.int64)
    seq[0, : len(window)] = torch.tensor(window)
    with torch.inference_mode():
        return rec.policy.scores(rec.policy.encode(seq, torch.tensor([len(window)]), rec.k)[:, -1])[0]


def check_result(rec: Recommender, hist, result, top_k: int, exclude_seen: bool) -> None:
    catalog = rec.item_ids
    tokens = [str(x) for x in hist]
    known = [catalog.index(t) for t in tokens if t in catalog[1:]]
    assert result.unknown_items == [t for t in tokens if t not in catalog[1:]]
    assert result.truncated == (len(known) > MAX_LEN)
    seen = {catalog[i] for i in known}
    items = result.items
    assert "<pad>" not in items and len(set(items)) == len(items) and set(items) <= set(catalog[1:])
    if exclude_seen:
        assert not seen & set(items)
        assert len(items) == min(top_k, N - len(seen))
    else:
        assert len(items) == top_k
    assert len(result.scores) == len(items) and all(np.isfinite(result.scores))
    assert result.scores == sorted(result.scores, reverse=True)
    if rec.item_titles is not None:
        assert result.titles == [rec.item_titles[catalog.index(i)] for i in items]
    ref = reference_scores(rec, known)
    np.testing.assert_allclose(result.scores, [float(ref[catalog.index(i)]) for i in items], rtol=1e-4, atol=1e-5)
    eligible = [i for i in range(1, N + 1) if not (exclude_seen and catalog[i] in seen)]
    rest = [float(ref[i]) for i in eligible if catalog[i] not in items]
    if items and rest:  # nothing left out scores above the last recommended item
        assert max(rest) <= result.scores[-1] + 1e-4


# ------------------------------------------------------------------ properties


@settings(max_examples=scaled(200), **SETTINGS)
@given(
    data=st.data(),
    catalog=st.sampled_from(["named", "numeric"]),
    top_k=top_ks,
    exclude_seen=st.booleans(),
    batch_size=st.integers(1, 4),
)
def test_histories_give_correct_top_k_or_a_clear_error(recommenders, data, catalog, top_k, exclude_seen, batch_size):
    EXAMPLES["histories"] += 1
    rec = recommenders[catalog]
    histories = data.draw(st.lists(history(rec.item_ids[1:]), max_size=4))
    k_ok = isinstance(top_k, numbers.Integral) and not isinstance(top_k, (bool, np.bool_)) and 1 <= top_k <= N
    bad_at = expected_error(histories, rec.item_ids)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", HistoryTruncatedWarning)
        if not k_ok:
            EXAMPLES["histories:bad_top_k"] += 1
            with pytest.raises(LaresError, match=r"top_k="):
                rec.recommend(histories, top_k=top_k, exclude_seen=exclude_seen, batch_size=batch_size)
            return
        if bad_at is not None:
            EXAMPLES["histories:bad_history"] += 1
            with pytest.raises(InvalidHistoryError, match=rf"^history {bad_at} ") as info:
                rec.recommend(histories, top_k=top_k, exclude_seen=exclude_seen, batch_size=batch_size)
            assert info.value.index == bad_at
            return
        EXAMPLES["histories:scored"] += 1
        results = rec.recommend(histories, top_k=top_k, exclude_seen=exclude_seen, batch_size=batch_size)
    assert len(results) == len(histories)
    for hist, result in zip(histories, results):
        check_result(rec, hist, result, int(top_k), exclude_seen)


@settings(max_examples=scaled(60), **SETTINGS)
@given(data=st.data(), cold_start=st.booleans(), batch_size=st.integers(1, 4))
def test_record_mode_answers_every_good_history_and_flags_every_bad_one(recommenders, data, cold_start, batch_size):
    """``on_invalid="record"`` (the service mode of ``lares-rl recommend``): one result per history,
    an ``error`` exactly where ``raise`` mode would refuse that history alone, and every other
    history answered as if it had been scored on its own; ``cold_start`` turns the empty and
    all-unknown ones into popularity answers."""
    EXAMPLES["record"] += 1
    rec = recommenders["named"]
    histories = data.draw(st.lists(history(rec.item_ids[1:]), max_size=5))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", HistoryTruncatedWarning)
        results = rec.recommend(histories, top_k=3, batch_size=batch_size, on_invalid="record", cold_start=cold_start)
    assert len(results) == len(histories)
    for hist, result in zip(histories, results):
        items = list(hist)
        structurally_bad = any(is_bad(x) for x in items)
        nothing_known = not any(str(x) in rec.item_ids[1:] for x in items)
        if structurally_bad or (nothing_known and not cold_start):
            assert result.error and result.items == [], (hist, result)
        elif nothing_known:
            assert result.cold_start and len(result.items) == 3 and result.error is None
        else:
            assert result.error is None and not result.cold_start
            check_result(rec, hist, result, 3, True)


@settings(max_examples=scaled(12), **SETTINGS)
@given(
    data=st.data(),
    top_k=st.integers(1, N),
    exclude_seen=st.booleans(),
    unknown_share=st.sampled_from([0.0, 0.5, 0.999]),
)
def test_huge_histories(recommenders, data, top_k, exclude_seen, unknown_share):
    """10,000-item histories: the window keeps the most recent known items, unknown ids all reported."""
    EXAMPLES["huge"] += 1
    rec = recommenders["named"]
    seed = data.draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    hist = [f"u{j}" if rng.random() < unknown_share else IDS[int(rng.integers(N))] for j in range(10_000)]
    hist[int(rng.integers(len(hist)))] = IDS[0]  # at least one known id
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        [result] = rec.recommend([hist], top_k=top_k, exclude_seen=exclude_seen)
    check_result(rec, hist, result, top_k, exclude_seen)
    assert sum(issubclass(w.category, HistoryTruncatedWarning) for w in caught) == int(result.truncated)


HOSTILE_CONTAINERS = [
    None,
    5,
    "i1",
    b"i1",
    {"a": ["i1"]},
    {("i1",)},
    3.5,
    object(),
    [None],
    ["i1"],
    [np.array("i1")],
    [np.array([["i1", "i2"]])],
    [{"i1", "i2"}],
    [{"i1": 1}],
    [bytearray(b"i1")],
    [iter(["i1"])],
    [],
]


@settings(max_examples=scaled(40), **SETTINGS)
@given(
    histories=st.sampled_from(range(len(HOSTILE_CONTAINERS))), exclude_seen=st.sampled_from([True, False, np.bool_(True), None, "no", 1, 0])
)
def test_hostile_containers_and_flags(recommenders, histories, exclude_seen):
    """Whatever is passed as ``histories`` (or ``exclude_seen``): results or a LaresError, never a TypeError."""
    EXAMPLES["containers"] += 1
    value = HOSTILE_CONTAINERS[histories]
    rec = recommenders["named"]
    try:
        results = rec.recommend(value, top_k=3, exclude_seen=exclude_seen)
    except LaresError as exc:
        assert str(exc)
        return
    assert isinstance(exclude_seen, (bool, np.bool_)), "a non-bool exclude_seen was silently interpreted"
    assert len(results) == len(value)
    for hist, result in zip(value, results):
        check_result(rec, hist, result, 3, bool(exclude_seen))
