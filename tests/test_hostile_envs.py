"""Property-based hostile-action tests for ``NextItemGymEnv.step`` and ``NextItemEnv.step``.

A bad action (ids out of 1..N, wrong shape, non-integer dtype, non-array) must raise a
``ValueError``/``LaresError`` whose message mentions the action, and must leave the env where it
was: the next valid step scores the same target. A valid slate (any integer dtype, duplicates
allowed) is rewarded exactly ``reward_fn(slate, target)``, a number in [0, 1].

Decision pinned here: float slates are refused even when every value is integral (``[1.0, 2.0]``),
because a float slate is most often a policy output that was never rounded or gathered.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lares_rl.core.errors import LaresError
from lares_rl.envs import NextItemGymEnv
from lares_rl.envs.batched_env import NextItemEnv
from lares_rl.rewards import REWARDS, make_reward
from lares_rl.rewards.context import context_needs
from tests.hostile import report_examples, scaled

EXAMPLES: Counter = Counter()  # examples run per property, reported at module teardown
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module", autouse=True)
def _report_examples():
    yield
    report_examples("envs", EXAMPLES)


# ------------------------------------------------------------------ logged data


@st.composite
def logged_data(draw):
    """Random flat logs: 1..5 users with 4..9 items each, ids in 1..N, episodes hide the last 2."""
    num_items = draw(st.integers(1, 20))
    lengths = draw(st.lists(st.integers(4, 9), min_size=1, max_size=5))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    items = np.array(draw(st.lists(st.integers(1, num_items), min_size=int(offsets[-1]), max_size=int(offsets[-1]))), dtype=np.int64)
    return dict(
        items=items,
        offsets=offsets,
        users=np.arange(len(lengths)),
        starts=offsets[:-1] + 1,
        stops=offsets[1:] - 2,
        num_items=num_items,
    )


# the rewards an env can build from a name alone (beyond-accuracy ones need the run's item context)
rewards = st.tuples(st.sampled_from(sorted(name for name in REWARDS if not context_needs(REWARDS[name]))), st.integers(1, 12))


def _valid_slate(draw, n: int, k: int, shape: tuple = ()) -> np.ndarray:
    values = draw(st.lists(st.integers(1, n), min_size=int(np.prod(shape, dtype=int)) * k, max_size=int(np.prod(shape, dtype=int)) * k))
    return np.array(values, dtype=np.int64).reshape(*shape, k)


@st.composite
def bad_gym_actions(draw, n: int, k: int):
    """Actions the gymnasium env must refuse, with a short label of why."""
    valid = _valid_slate(draw, n, k)
    kind = draw(st.sampled_from(["range", "shape", "float", "bool", "string", "object", "ragged", "none", "complex", "time"]))
    if kind == "range":
        slate = valid.astype(object)
        bad = draw(st.sampled_from([0, n + 1, -1, -(2**63), 2**63 - 1, 2**64 - 1, 10**30, -(10**30)]))
        slate[draw(st.integers(0, k - 1))] = bad
        as_array = draw(st.booleans()) and -(2**63) <= bad < 2**63
        return kind, (slate.astype(np.int64) if as_array else slate.tolist())
    if kind == "shape":
        shapes = [(), (k + 1,), (2, k), (k, 1), (0,), (1, k)] + ([(k - 1,)] if k > 1 else [])
        shape = draw(st.sampled_from(shapes))
        return kind, np.ones(shape, dtype=np.int64) if shape else np.int64(1)
    if kind == "float":
        frac = draw(st.sampled_from([0.5, 0.25, 0.0, 1e-9]))
        dtype = draw(st.sampled_from([np.float16, np.float32, np.float64]))
        return kind, (valid + frac).astype(dtype) if draw(st.booleans()) else torch.tensor(valid + frac, dtype=torch.float32)
    if kind == "bool":
        return kind, np.ones(k, dtype=bool) if draw(st.booleans()) else [True] * k
    if kind == "string":
        return kind, draw(st.sampled_from([[str(v) for v in valid], " ".join(map(str, valid)), "", str(valid[0])]))
    if kind == "object":
        return kind, draw(
            st.sampled_from([{"a": 1}, {int(v) for v in valid}, [None] * k, object(), [1, "2"] + [3] * (k - 2) if k > 1 else ["1"]])
        )
    if kind == "ragged":
        return kind, [[1, 2], [3]] if k != 2 else [[1], [2, 3]]
    if kind == "none":
        return kind, None
    if kind == "complex":
        return kind, valid.astype(np.complex64)
    return kind, np.ones(k, dtype="timedelta64[s]")


def _gym_env(data, k, reward):
    name, rk = reward
    return NextItemGymEnv(**data, max_len=3, slate_size=k, horizon=3, reward_fn=make_reward(name, k=rk))


def _raises_about_action(fn) -> Exception:
    with pytest.raises((ValueError, LaresError)) as info:
        fn()
    assert "action" in str(info.value).lower(), str(info.value)
    return info.value


@settings(max_examples=scaled(150), **SETTINGS)
@given(data=logged_data(), k=st.integers(1, 6), reward=rewards, draw=st.data())
def test_gym_bad_actions_raise_and_leave_the_episode_untouched(data, k, reward, draw):
    EXAMPLES["gym_bad_action"] += 1
    env = _gym_env(data, k, reward)
    obs, _ = env.reset(seed=0, options={"episode": draw.draw(st.integers(0, len(data["users"]) - 1))})
    kind, action = draw.draw(bad_gym_actions(data["num_items"], k))
    EXAMPLES[f"gym_bad_action:{kind}"] += 1
    _raises_about_action(lambda: env.step(action))
    # the rejected step did not move the cursor: the valid step reveals the same first target
    episode = env._episode
    slate = _valid_slate(draw.draw, data["num_items"], k)
    obs2, reward_value, *_, info = env.step(slate)
    assert int(info["target"]) == int(data["items"][data["starts"][episode]])
    assert obs["length"] == 1


@settings(max_examples=scaled(100), **SETTINGS)
@given(data=logged_data(), k=st.integers(1, 6), reward=rewards, draw=st.data())
def test_gym_valid_slates_score_exactly_the_reward_function(data, k, reward, draw):
    EXAMPLES["gym_valid_slate"] += 1
    env = _gym_env(data, k, reward)
    episode = draw.draw(st.integers(0, len(data["users"]) - 1))
    env.reset(seed=0, options={"episode": episode})
    cursor = int(data["starts"][episode])
    done = False
    while not done:
        slate = _valid_slate(draw.draw, data["num_items"], k)
        as_type = draw.draw(st.sampled_from(["int64", "int32", "uint8", "list", "torch"]))
        if as_type == "list":
            action = slate.tolist()
        elif as_type == "torch":
            action = torch.from_numpy(slate)
        elif as_type == "uint8" and data["num_items"] > 255:
            action = slate
        else:
            action = slate.astype(as_type)
        _, value, terminated, truncated, info = env.step(action)
        target = int(data["items"][cursor])
        expected = float(make_reward(reward[0], k=reward[1])(torch.from_numpy(slate)[None], torch.tensor([target]))[0])
        assert 0.0 <= value <= 1.0 and value == expected and int(info["target"]) == target
        hits = np.flatnonzero(slate == target)
        assert int(info["rank"]) == (int(hits[0]) if hits.size else -1)
        cursor += 1
        done = terminated or truncated


# ------------------------------------------------------------------ batched TorchRL env

B = 4


@st.composite
def bad_batched_actions(draw, n: int, k: int):
    valid = torch.from_numpy(_valid_slate(draw, n, k, (B,)))
    kind = draw(st.sampled_from(["range", "shape", "float", "bool", "complex", "nontensor", "sparse", "missing"]))
    if kind == "range":
        dtype = draw(st.sampled_from([torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8, torch.uint64]))
        lows = {torch.uint8: [0], torch.uint64: [0]}.get(dtype, [0, -1, int(torch.iinfo(dtype).min)])
        highs = [v for v in (n + 1, int(torch.iinfo(dtype).max)) if v <= torch.iinfo(dtype).max and v > n]
        if dtype == torch.uint64:
            highs.append(2**63)  # wraps negative in int64; must still be refused
        bad = draw(st.sampled_from(lows + highs))
        slate = valid.clone().to(torch.int64).to(dtype) if dtype != torch.uint64 else valid.to(torch.uint64)
        if dtype == torch.uint64 and bad >= 2**63:
            slate = torch.full((B, k), 2**63, dtype=torch.uint64)
        else:
            slate[draw(st.integers(0, B - 1)), draw(st.integers(0, k - 1))] = bad
        return kind, slate
    if kind == "shape":
        shape = draw(st.sampled_from([(B,), (B, k + 1), (B, 2, k), (B, k, 1), (B, 0)] + ([(B, k - 1)] if k > 1 else [])))
        return kind, torch.ones(shape, dtype=torch.int64)
    if kind == "float":
        dtype = draw(st.sampled_from([torch.float16, torch.bfloat16, torch.float32, torch.float64]))
        return kind, (valid + draw(st.sampled_from([0.0, 0.5, 0.25]))).to(dtype)
    if kind == "bool":
        return kind, torch.ones(B, k, dtype=torch.bool)
    if kind == "complex":
        return kind, valid.to(torch.complex64)
    if kind == "nontensor":
        return kind, draw(st.sampled_from(["abc", [["1"] * k] * B, None]))
    if kind == "sparse":
        return kind, valid.to_sparse()
    return kind, "<missing>"


def _batched_env(data, k, reward, horizon=1):
    name, rk = reward
    return NextItemEnv(**data, batch_size=B, max_len=3, slate_size=k, horizon=horizon, reward_fn=make_reward(name, k=rk), seed=0)


@settings(max_examples=scaled(120), **SETTINGS)
@given(data=logged_data(), k=st.integers(1, 5), reward=rewards, draw=st.data())
def test_batched_bad_actions_raise_and_leave_the_env_untouched(data, k, reward, draw):
    EXAMPLES["batched_bad_action"] += 1
    env = _batched_env(data, k, reward)
    td = env.reset()
    kind, action = draw.draw(bad_batched_actions(data["num_items"], k))
    EXAMPLES[f"batched_bad_action:{kind}"] += 1
    bad = td.clone()
    if kind == "nontensor":
        bad.set_non_tensor("action", action)
    elif kind != "missing":
        bad.set("action", action)
    _raises_about_action(lambda: env.step(bad))
    td["action"] = torch.from_numpy(_valid_slate(draw.draw, data["num_items"], k, (B,)))
    out = env.step(td)
    assert torch.equal(out["next", "target"], torch.as_tensor(data["items"])[td["cursor"]])


@settings(max_examples=scaled(80), **SETTINGS)
@given(data=logged_data(), k=st.integers(1, 5), reward=rewards, draw=st.data(), horizon=st.integers(1, 3))
def test_batched_valid_slates_score_exactly_the_reward_function(data, k, reward, draw, horizon):
    EXAMPLES["batched_valid_slate"] += 1
    env = _batched_env(data, k, reward, horizon)
    td = env.reset()
    fn = make_reward(reward[0], k=reward[1])
    for _ in range(horizon):
        slate = torch.from_numpy(_valid_slate(draw.draw, data["num_items"], k, (B,)))
        dtype = draw.draw(st.sampled_from([torch.int64, torch.int32, torch.int16, torch.uint8]))
        if dtype == torch.uint8 and data["num_items"] > 255:
            dtype = torch.int64
        td["action"] = slate.to(dtype)
        out = env.step(td)
        target = torch.as_tensor(data["items"])[td["cursor"]]
        reward_value = out["next", "reward"].squeeze(-1)
        assert torch.equal(out["next", "target"], target)
        assert ((reward_value >= 0) & (reward_value <= 1)).all()
        assert torch.equal(reward_value, fn(slate, target).to(torch.float32))
        if out["next", "done"].any():
            break
        td = out["next"].clone()


@settings(max_examples=scaled(50), **SETTINGS)
@given(
    data=logged_data(),
    episode=st.one_of(
        st.integers(-(10**30), 10**30),
        st.floats(allow_nan=True),
        st.booleans(),
        st.text(max_size=3),
        st.sampled_from([[1], (0,), np.int64(0), np.float64(0.0), np.int32(1)]),
    ),
)
def test_gym_reset_episode_option_is_an_index_or_refused(data, episode):
    """``options={"episode": e}``: an int in range starts that episode; anything else is a ValueError
    (a float such as 1.5 or True is never truncated to an episode silently)."""
    EXAMPLES["gym_reset_episode"] += 1
    env = NextItemGymEnv(**data, max_len=3, slate_size=2)
    valid = not isinstance(episode, (bool, np.bool_)) and isinstance(episode, (int, np.integer)) and 0 <= episode < len(data["users"])
    if valid:
        obs, info = env.reset(options={"episode": episode})
        assert info["episode"] == int(episode) and obs["items"][0] == data["items"][data["offsets"][int(episode)]]
    else:
        with pytest.raises(ValueError, match=r"options\['episode'\]"):
            env.reset(options={"episode": episode})
