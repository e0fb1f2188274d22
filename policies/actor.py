"""TorchRL actors for any policy exposing per-step user states and full-catalog scores (DESIGN section 3).

A policy here is any ``nn.Module`` with ``encode(seq, lengths, k=None) -> [B, k, d]`` and
``scores(states) -> [..., N + 1]`` (padding column at -inf); LARES and SASRec both qualify.

The actor is a :class:`torchrl.modules.ProbabilisticActor` made of two parts:

1. :class:`RolloutScores` runs the latent rollout: ``("history", "items")``, ``("history", "length")``
   -> ``"logits"`` (final-step scores [B, N + 1]), ``"num_steps"`` (the rollout's k, [B]) and
   ``"rollout_seed"`` (int64 [B]). Every random draw of the rollout (T0 noise and dropout masks,
   both on torch's global RNG) happens inside ``torch.random.fork_rng()`` after
   ``torch.manual_seed`` of a seed derived from ``(rollout_seed, k)``, so a rollout can be
   replayed bit for bit, with gradients, from its recorded seed and k.
2. A slate distribution over the final-step scores: :class:`TopKSlate` (``exploration="latent"``,
   the LARES reference: the latent trajectory is the only exploration, the slate is the top-K),
   :class:`CategoricalSlate` (first slot sampled from softmax, the rest filled by top-K) or
   :class:`PlackettLuceSlate` (Gumbel-top-K slate with its Plackett-Luce log-prob). The actor
   writes ``"action"`` [B, K] and ``"action_log_prob"`` [B].

When is a rollout drawn and when replayed? Decided by the exploration type, on purpose:

- ``ExplorationType.RANDOM`` (what a Collector sets): a fresh rollout. With ``latent_noise`` the
  policy runs in train mode, each row draws its own k from the policy's sampler (private
  generator), and dropout and T0 noise come from a fresh seed; item sampling comes on top.
- any other type (``DETERMINISTIC`` is what ``LossModule.forward`` and ``evaluate`` use): if the
  input holds ``"num_steps"`` and ``"rollout_seed"`` the recorded rollout is REPLAYED (this is how
  ClipPPOLoss recomputes log-probs of the exact rollout that acted); otherwise an evaluation
  rollout: eval mode, k = the policy's evaluation depth, the top-K slate, no sampling.

How rollouts are seeded and replayed: :mod:`lares_rl.policies.rollouts`. The parts live in one
module each: :mod:`~lares_rl.policies.rollout_scores` (:class:`RolloutScores`),
:mod:`~lares_rl.policies.gaussian_latent` (the Gaussian latent policy),
:mod:`~lares_rl.policies.slates` (the slate distributions) and
:mod:`~lares_rl.policies.row_share` (a DDP rank's share of the random draws).
"""

from __future__ import annotations

from tensordict.nn import TensorDictSequential
from torch import nn
from torchrl.modules import ProbabilisticActor

from lares_rl.policies.catalog_softmax import catalog_kl, final_entropy
from lares_rl.policies.gaussian_latent import GaussianLatentScores, latent_scale
from lares_rl.policies.rollout_scores import RolloutScores
from lares_rl.policies.rollouts import replay_step_log_probs, run_rollouts
from lares_rl.policies.row_share import RowShare
from lares_rl.policies.slates import SLATE_DISTRIBUTIONS, CategoricalSlate, ChunkedTopKSlate

# what lares_rl.rpt imports (or its docs name) from here: the actor's parts, importable by their old address too
__all__ = [
    "EXPLORATION",
    "CategoricalSlate",
    "GaussianLatentScores",
    "RolloutScores",
    "RowShare",
    "catalog_kl",
    "final_entropy",
    "latent_scale",
    "make_slate_actor",
    "replay_step_log_probs",
    "run_rollouts",
]

EXPLORATION = ("latent", "categorical", "plackett_luce", "gaussian")


def make_slate_actor(
    policy: nn.Module,
    slate_size: int = 10,
    exploration: str = "latent",
    *,
    latent_noise: bool = True,
    eval_seed: int = 0,
    seed: int | None = None,
    latent_sigma: float = 0.1,
    antithetic: bool = False,
    halting: tuple[float, int] | None = None,
    item_chunk: int | None = None,
) -> ProbabilisticActor | TensorDictSequential:
    """A TorchRL actor over ``policy``: in ``("history", "items")``, ``("history", "length")``;
    out ``"action"`` (slate [B, K]), ``"action_log_prob"`` [B], ``"num_steps"`` [B],
    ``"rollout_seed"`` [B], ``"logits"`` [B, N + 1] and ``"user_state"`` [B, d].

    ``exploration``: ``latent`` (reference; needs ``latent_noise``), ``categorical`` or
    ``plackett_luce`` (item sampling on top of the latent rollout, or alone with
    ``latent_noise=False``), or ``gaussian`` (a Gaussian policy over the final user state with
    relative scale ``latent_sigma``, :class:`GaussianLatentScores`; the slate is the top-K of the
    perturbed state, and ``"latent_noise"`` is written too). ``halting=(tol, k_max)`` makes the
    evaluation rollouts adaptive in depth (:func:`run_rollouts`). ``item_chunk`` (``latent`` and
    ``gaussian`` only, whose slate is a top-K): the slate comes from a chunked running top-K
    (:class:`ChunkedTopKSlate`) and no ``"logits"`` are written; the actor is then a
    TensorDictSequential, not a ProbabilisticActor. Item sampling (``categorical``,
    ``plackett_luce``) draws from the softmax over the whole catalog and always scores all of it.
    ``actor.module[0]`` is the :class:`RolloutScores` (for ``gaussian``: the first
    module of ``actor.module[0]``); the wrapped policy is its ``.policy``.

    Example::

        >>> actor = make_slate_actor(LaresReasoner(num_items=30, max_len=5), slate_size=3, seed=0)
        >>> td = TensorDict({"history": {"items": items, "length": length}}, batch_size=[8])
        >>> with set_exploration_type(ExplorationType.RANDOM):
        ...     td = actor(td)                       # fresh latent rollouts
        >>> td["action"].shape, td["num_steps"].shape
        (torch.Size([8, 3]), torch.Size([8]))
    """
    if exploration not in EXPLORATION:
        raise ValueError(f"exploration={exploration!r} is unknown; choose one of {EXPLORATION}")
    if exploration == "latent" and not latent_noise:
        raise ValueError("exploration='latent' needs latent_noise=True (otherwise nothing explores)")
    num_items = getattr(policy, "num_items", None)
    if num_items is not None and slate_size > num_items:
        raise ValueError(f"slate_size={slate_size} exceeds the catalog ({num_items} items)")
    chunked = item_chunk is not None and exploration in ("latent", "gaussian")
    scores = RolloutScores(
        policy,
        latent_noise=latent_noise,
        eval_seed=eval_seed,
        seed=seed,
        dedupe=exploration == "gaussian",
        halting=halting,
        full_scores=not chunked,
    )
    module = scores
    if exploration == "gaussian":
        module = TensorDictSequential(
            scores, GaussianLatentScores(policy, latent_sigma, scores.generator, antithetic=antithetic, full_scores=not chunked)
        )
    if chunked:
        return TensorDictSequential(
            module, ChunkedTopKSlate(policy, slate_size, item_chunk, "slate_state" if exploration == "gaussian" else "user_state")
        )
    return ProbabilisticActor(
        module=module,
        in_keys=["logits"],
        out_keys=["action"],
        distribution_class=SLATE_DISTRIBUTIONS[exploration],
        distribution_kwargs={"slate_size": slate_size},
        return_log_prob=True,
        log_prob_key="action_log_prob",
    )
