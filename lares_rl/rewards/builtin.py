"""Ranking rewards: tensor functions that score a recommended slate against the held-out item.

Every reward has the signature ``reward(slate, target, **options) -> Tensor``:

- ``slate``: int64 ``[B, K]`` item ids ranked best first (duplicates allowed; the first
  occurrence of the target counts),
- ``target``: int64 ``[B]`` the true next item of each row,
- returns float32 ``[B]`` in ``[0, 1]``, 0 on a miss.

With a single held-out item, Recall@k and Hit@k are the same number; both names exist because
papers use both. ``k`` larger than the slate width means the whole slate.

The built-in rewards live in :data:`REWARDS` and are chosen with the Hydra group
``reward=recall|hit|ndcg|mrr`` (``configs/reward/<name>.yaml``). A user reward plugs in without
touching this file: write a function with the signature above and point ``_target_`` at it::

    # my_pkg/rewards.py
    def top1(slate, target):
        return (slate[:, 0] == target).float()

    # on the command line:  reward._target_=my_pkg.rewards.top1  (keep _partial_: true)
    # or a file of your own config dir holding:
    #   _target_: my_pkg.rewards.top1
    #   _partial_: true

Beyond-accuracy rewards (``novelty``, ``long_tail``, ``diversity``, ``embedding_diversity``) also
take a field of the run's item context (training popularity, item categories, the frozen item
table) by naming it as a parameter; :func:`lares_rl.rewards.context.bind_context` fills it in before
training, so no reward reads global state. :func:`weighted` combines rewards with weights from the
config (``configs/reward/novelty.yaml``: NDCG + lambda * novelty).

The environments call :func:`check_reward_fn` at construction, so a reward with the wrong output
shape or dtype fails before the first rollout, not in the middle of training.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping

import torch
from torch import Tensor

from lares_rl.core.errors import LaresError
from lares_rl.metrics.beyond import intra_list_distance, self_information

RewardFn = Callable[..., Tensor]
REWARDS: dict[str, RewardFn] = {}


def register_reward(name: str) -> Callable[[RewardFn], RewardFn]:
    """Add a reward to :data:`REWARDS` under ``name``; a second registration of a name raises,
    so a plug-in can never silently replace a built-in."""

    def decorator(fn: RewardFn) -> RewardFn:
        if name in REWARDS:
            raise ValueError(f"reward {name!r} is already registered (by {REWARDS[name].__module__})")
        REWARDS[name] = fn
        return fn

    return decorator


def target_rank(slate: Tensor, target: Tensor, k: int | None = None) -> Tensor:
    """0-based rank of the first occurrence of ``target`` in ``slate[:, :k]``, -1 when absent.

    Shared by every built-in reward (and by the envs' ``rank`` info) so that all of them agree on
    duplicates and on ``k`` wider than the slate.
    """
    if slate.ndim != 2 or target.shape != slate.shape[:1]:
        raise ValueError(f"expected slate [B, K] and target [B], got slate {tuple(slate.shape)} and target {tuple(target.shape)}")
    if k is not None and k < 1:
        raise LaresError(f"reward option k={k} must be >= 1 (it is the cut-off of the ranking)")
    match = slate[:, :k] == target[:, None]
    # argmax returns the first maximal index, i.e. the first occurrence of the target.
    first = match.to(torch.uint8).argmax(dim=-1)
    return torch.where(match.any(dim=-1), first, torch.full_like(first, -1))


@register_reward("recall")
def recall(slate: Tensor, target: Tensor, k: int = 10) -> Tensor:
    """Recall@k = 1 if the target is among the first k slots, else 0."""
    return (target_rank(slate, target, k) >= 0).to(torch.float32)


@register_reward("hit")
def hit(slate: Tensor, target: Tensor, k: int = 10) -> Tensor:
    """Hit@k; equal to Recall@k with one held-out item, kept under the name papers also use."""
    return recall(slate, target, k)


@register_reward("ndcg")
def ndcg(slate: Tensor, target: Tensor, k: int = 10) -> Tensor:
    """NDCG@k with one relevant item: 1 / log2(rank + 2) inside the first k slots, else 0."""
    rank = target_rank(slate, target, k)
    gain = 1.0 / torch.log2(rank.clamp(min=0).to(torch.float32) + 2.0)
    return torch.where(rank >= 0, gain, torch.zeros_like(gain))


@register_reward("mrr")
def mrr(slate: Tensor, target: Tensor, k: int = 10) -> Tensor:
    """MRR@k: 1 / (rank + 1) inside the first k slots, else 0."""
    rank = target_rank(slate, target, k)
    gain = 1.0 / (rank.clamp(min=0).to(torch.float32) + 1.0)
    return torch.where(rank >= 0, gain, torch.zeros_like(gain))


# ----------------------------------------------------------------------------- beyond accuracy
# These rewards name a field of the run's item context (lares_rl.rewards.context.ItemContext) as a
# keyword parameter; the run binds it before training (bind_context), so a reward never reads
# global state and a field the data set lacks fails before the first rollout. Each returns a
# value in [0, 1], so a weight in `weighted` reads as "this much NDCG per unit of it".


@register_reward("novelty")
def novelty(slate: Tensor, target: Tensor, popularity: Tensor, k: int = 10) -> Tensor:
    """Mean self-information -log2(training share) of the first k items, divided by its largest
    possible value (an item never seen in training), so 1 = only unseen items."""
    information = self_information(popularity.to(slate.device))
    return (information[slate[:, :k]].mean(dim=1) / information.max()).to(torch.float32)


@register_reward("long_tail")
def long_tail(slate: Tensor, target: Tensor, popularity: Tensor, k: int = 10, head_share: float = 0.5) -> Tensor:
    """Share of the first k items outside the popularity head: the most popular items that
    together hold ``head_share`` of training interactions. A per-slate stand-in for catalog
    coverage (coverage itself is a property of all users' lists, not of one slate)."""
    if not 0 < head_share < 1:
        raise LaresError(f"reward option head_share={head_share} must be in (0, 1) (the share of training interactions the head holds)")
    counts = popularity.to(slate.device).double()
    order = counts[1:].argsort(descending=True)
    cumulative = counts[1:][order].cumsum(0) / counts[1:].sum().clamp(min=1.0)
    head = torch.zeros_like(counts, dtype=torch.bool)
    head[order[: int((cumulative < head_share).sum()) + 1] + 1] = True
    return (~head[slate[:, :k]]).float().mean(dim=1)


@register_reward("unexposed")
def unexposed(slate: Tensor, target: Tensor, exposure: Tensor, k: int = 10) -> Tensor:
    """Share of the first k items that the frozen SPT model shows in nobody's top 10 (exposure 0,
    lares_rl/item_context.py). Catalog coverage counts exactly those items when they enter some
    user's list, so this is coverage's per-slate credit; unlike a popularity bonus it does not
    reward items that are rare but already shown to someone."""
    return (exposure.to(slate.device)[slate[:, :k]] == 0).float().mean(dim=1)


@register_reward("diversity")
def diversity(slate: Tensor, target: Tensor, categories: Tensor, k: int = 10) -> Tensor:
    """Intra-list diversity of the first k items from item categories (mean pairwise cosine
    distance of their multi-hot category vectors)."""
    return intra_list_distance(categories.to(slate.device)[slate[:, :k]])


@register_reward("embedding_diversity")
def embedding_diversity(slate: Tensor, target: Tensor, item_embeddings: Tensor, k: int = 10) -> Tensor:
    """Intra-list diversity of the first k items from the frozen SPT item embeddings (mean
    pairwise cosine distance, clipped to [0, 1]), for data sets without categories."""
    return intra_list_distance(item_embeddings.to(slate.device)[slate[:, :k]]).clamp(0.0, 1.0)


def weighted(slate: Tensor, target: Tensor, terms: Mapping[str, RewardFn], weights: Mapping[str, float]) -> Tensor:
    """sum_name weights[name] * terms[name](slate, target): e.g. NDCG + lambda * novelty, with
    every term and weight chosen in the config (``reward.weights.novelty=0.3``)."""
    if set(terms) != set(weights):
        raise LaresError(
            f"reward.terms ({sorted(terms)}) and reward.weights ({sorted(weights)}) must name the same terms; give every term a weight"
        )
    total = torch.zeros(slate.shape[0], dtype=torch.float32, device=slate.device)
    for name, term in terms.items():
        total = total + float(weights[name]) * check_reward_output(term, term(slate, target), slate.shape[0])
    return total


def make_reward(name: str, **kwargs: object) -> RewardFn:
    """The registered reward ``name`` with its options bound, e.g. ``make_reward("ndcg", k=5)``.

    Options are checked against the function's signature here, so a typo such as ``kk=5`` fails
    now rather than at the first env step.
    """
    if name not in REWARDS:
        raise LaresError(
            f"unknown reward {name!r}; registered rewards: {sorted(REWARDS)}. "
            f"Pick one with reward=<name>, or point reward._target_ at your own function."
        )
    fn = REWARDS[name]
    try:
        inspect.signature(fn).bind_partial(None, None, **kwargs)
    except TypeError as err:
        raise LaresError(f"reward {name!r} does not accept options {sorted(kwargs)}: {err}") from err
    return functools.partial(fn, **kwargs)


def describe_reward(fn: RewardFn) -> str:
    """A readable name for messages, including the options bound by a partial, e.g. ``lares_rl.rewards.ndcg(k=10)``."""
    if isinstance(fn, functools.partial):
        options = ", ".join(f"{key}={_describe_option(value)}" for key, value in fn.keywords.items())
        return f"{describe_reward(fn.func)}({options})"
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def _describe_option(value: object) -> str:
    """A bound option for messages: nested rewards by name, context tensors by shape only."""
    if isinstance(value, Tensor):
        return f"<{value.dtype} {list(value.shape)}>"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{key!r}: {_describe_option(item)}" for key, item in value.items()) + "}"
    if callable(value):
        return describe_reward(value)
    return repr(value)


def check_reward_fn(fn: RewardFn, num_items: int) -> None:
    """Call ``fn`` on a tiny batch (one hit, one miss) and raise if its output breaks the contract.

    The contract is a finite floating tensor of shape ``[B]``; anything else would surface much
    later as a shape error inside a loss, far from its cause.
    """
    if num_items < 1:
        raise LaresError(f"num_items={num_items} must be >= 1")
    other = min(2, num_items)
    slate = torch.tensor([[1, other], [1, 1]], dtype=torch.int64)
    target = torch.tensor([other, num_items], dtype=torch.int64)  # a hit, then a miss when num_items > 1
    name = describe_reward(fn)
    try:
        out = fn(slate, target)
    except Exception as err:
        bound = getattr(fn, "keywords", {})
        extra = (
            (
                f"; the other reward.* keys are passed as keyword arguments ({', '.join(f'{k}={v!r}' for k, v in bound.items())}): "
                f"accept them, e.g. def fn(slate, target, {next(iter(bound))}=...), or drop them with ~reward.{next(iter(bound))}"
            )
            if bound
            else ""
        )
        raise LaresError(
            f"reward {name} failed on a dummy batch; a reward is called as reward(slate [B, K] int64, "
            f"target [B] int64) -> [B] float{extra}: {type(err).__name__}: {err}"
        ) from err
    if not isinstance(out, Tensor) or out.shape != (2,) or not out.is_floating_point():
        got = f"{out.dtype} tensor of shape {tuple(out.shape)}" if isinstance(out, Tensor) else type(out).__name__
        raise LaresError(f"reward {name} must return a float tensor of shape [B]; got {got} for B=2")
    if not torch.isfinite(out).all():
        raise LaresError(f"reward {name} returned non-finite values {out.tolist()} on a dummy batch")


def check_reward_output(fn: RewardFn, out: object, batch: int) -> Tensor:
    """The reward ``fn`` returned for a batch of ``batch`` slates, checked at every env step.

    :func:`check_reward_fn` only sees a dummy batch; a reward can still break its contract on
    real data (a division by a zero count, a log of 0), and a NaN reward would poison every
    advantage of its group. This turns that into one error naming the reward and what it returned.
    """
    name = describe_reward(fn)
    if not isinstance(out, Tensor) or out.shape != (batch,) or not out.is_floating_point():
        got = f"a {out.dtype} tensor of shape {tuple(out.shape)}" if isinstance(out, Tensor) else type(out).__name__
        raise LaresError(f"reward {name} returned {got} for {batch} slates; a reward must return a float tensor of shape [B]")
    bad = ~torch.isfinite(out)
    if bad.any():
        raise LaresError(
            f"reward {name} returned {int(bad.sum())} non-finite value(s) (e.g. {out[bad][0].item()}) for {batch} slates; rewards must be finite"
        )
    return out
