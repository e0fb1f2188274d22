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

Seeds: a rollout seed ``s >= 0`` means a train-mode rollout seeded from ``s``; ``s < 0`` marks an
eval-mode rollout (no dropout) whose T0 noise is seeded from ``-1 - s``. Rows are replayed in
groups of equal ``(seed, k)`` (a loop over unique k values, never over rows), so replaying THE
SAME ROWS IN THE SAME ORDER gives identical numbers; a subset of rows gets different noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributions as D
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase, TensorDictSequential
from torch import nn
from torchrl.envs.utils import ExplorationType, exploration_type
from torchrl.modules import ProbabilisticActor

from lares_rl.catalog.topk import chunked_top_k, item_scorer
from lares_rl.policies.halting import encode_until_settled

EXPLORATION = ("latent", "categorical", "plackett_luce", "gaussian")
HISTORY_KEYS = (("history", "items"), ("history", "length"))
_SEED_MIX = 1_000_003


def _group_seed(seed: int, k: int) -> int:
    """One torch seed per (rollout seed, k) group, so groups of different depth draw independent noise."""
    return (abs(seed) * _SEED_MIX + k) % (2**63 - 1)


def rollout_groups(num_steps: torch.Tensor, seeds: torch.Tensor) -> list[tuple[int, int, torch.Tensor]]:
    """``(seed, k, rows)`` for each unique ``(seed, k)`` pair, rows in their original order."""
    pairs = torch.stack([seeds.long(), num_steps.long()], dim=1).cpu()
    unique, inverse = torch.unique(pairs, dim=0, return_inverse=True)
    return [(int(s), int(k), (inverse == g).nonzero().squeeze(1).to(num_steps.device)) for g, (s, k) in enumerate(unique.tolist())]


def final_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of softmax(logits) over the last dim; -inf columns (padding) contribute 0."""
    log_p = torch.log_softmax(logits, dim=-1)
    # clamp before the product: where() alone still backpropagates 0 * (-inf) = NaN
    finite_log_p = log_p.clamp(min=torch.finfo(log_p.dtype).min)
    return -(log_p.exp() * finite_log_p).sum(-1)


def catalog_kl(log_p: torch.Tensor, ref_log_p: torch.Tensor) -> torch.Tensor:
    """Exact KL(p || p_ref) over the last dim from two log-softmaxes; the padding column, -inf in
    both, contributes 0 (its -inf - -inf is NaN before the zero weight would cancel it)."""
    return (log_p.exp() * (log_p - ref_log_p).nan_to_num(0.0)).sum(-1)


def run_rollouts(
    policy: nn.Module,
    items: torch.Tensor,
    length: torch.Tensor,
    num_steps: torch.Tensor,
    seeds: torch.Tensor,
    target: torch.Tensor | None = None,
    *,
    train: bool | None = None,
    noise_offset: int = 0,
    dedupe: bool = False,
    halting: tuple[float, int] | None = None,
    full_scores: bool = True,
) -> dict[str, torch.Tensor]:
    """Replay (or run) the rollouts given by ``num_steps``/``seeds``; grad follows the caller's mode.

    Returns ``final_scores`` [B, N + 1], ``final_state`` [B, d] and ``num_steps`` [B] (the steps
    each rollout took); with ``target`` [B] also
    ``step_log_prob`` [B, k_max] (log softmax(s_j)[target] for every step j <= k, 0 after),
    ``step_mask`` [B, k_max] and ``entropy`` [B] of the final-step softmax.

    Args:
        train: None = the mode recorded in the seed (``>= 0`` train, ``< 0`` eval); True/False
            forces it (the frozen reference runs in eval mode).
        noise_offset: added to every seed: another model's "own noise" with the same k.
        dedupe: evaluation-mode groups run each distinct history once and share its states (and
            its T0 draw) among the rows that repeat it: the G rows of a group under the Gaussian
            latent policy, G times less encoder work. Train-mode groups are never deduplicated
            (their rows must draw their own dropout and T0 noise: that is the reference's exploration).
        halting: ``(tol, k_max)``: evaluation-mode rollouts stop per row once the state has settled
            (:func:`~lares_rl.policies.halting.encode_until_settled`). Their recorded ``num_steps``
            is then an outcome, not an input: such rows are grouped by seed alone and re-run with
            the same halting, which repeats the same decisions for the same rows in the same order
            (so a replay reproduces the rollout). Train-mode rows keep their sampled k. Gives
            final-step outputs only, so ``target`` must be None.
        full_scores: False leaves out ``final_scores`` (no [B, N + 1] matrix): the chunked slate
            (:class:`ChunkedTopKSlate`) needs the final states only.
    """
    was_training = policy.training
    batch = items.shape[0]
    if halting is not None:
        if target is not None:
            raise ValueError("halting rollouts give final-step outputs only; per-step target log-probs need fixed-depth rollouts")
        evaluation_rows = (seeds < 0) if train is None else torch.full_like(seeds, not train, dtype=torch.bool)
        num_steps = torch.where(evaluation_rows, halting[1], num_steps)
    k_max = int(num_steps.max().item()) if batch else 1
    out: dict[str, torch.Tensor] = {}
    device = items.device
    devices = [device] if device.type == "cuda" else []
    try:
        for seed, k, rows in rollout_groups(num_steps, seeds):
            mode = (seed >= 0) if train is None else train
            base = seed if seed >= 0 else -1 - seed
            policy.train(mode)
            unique = inverse = None
            if dedupe and not mode:
                unique, inverse = torch.unique(torch.cat([items[rows], length[rows, None]], dim=1), dim=0, return_inverse=True)
            taken = None
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(_group_seed(base + noise_offset, k))
                seq, lengths = (items[rows], length[rows]) if unique is None else (unique[:, :-1], unique[:, -1])
                if halting is not None and not mode:
                    final_state, taken = encode_until_settled(policy, seq, lengths, halting[0], k)
                    states = final_state[:, None]
                else:
                    states = policy.encode(seq, lengths, k=k)
                if unique is not None:
                    states = states[inverse]
                    taken = None if taken is None else taken[inverse]
            steps = states.shape[1]
            final = policy.scores(states[:, -1]) if full_scores or target is not None else None
            if not out:
                if final is not None:
                    out["final_scores"] = final.new_zeros((batch, final.shape[-1]))
                out["final_state"] = states.new_zeros((batch, states.shape[-1]))
                out["num_steps"] = torch.zeros(batch, dtype=torch.int64, device=device)
                if target is not None:
                    out["step_log_prob"] = final.new_zeros((batch, k_max))
                    out["step_mask"] = torch.zeros((batch, k_max), dtype=torch.bool, device=device)
                    out["entropy"] = final.new_zeros(batch)
            if final is not None:
                out["final_scores"][rows] = final
            out["final_state"][rows] = states[:, -1]
            out["num_steps"][rows] = torch.full_like(rows, k) if taken is None else taken
            if target is not None:
                step_scores = policy.scores(states)  # [n, steps, N + 1]
                picked = step_scores.gather(-1, target[rows].view(-1, 1, 1).expand(-1, steps, 1)).squeeze(-1)
                out["step_log_prob"][rows, :steps] = picked - torch.logsumexp(step_scores, dim=-1)
                out["step_mask"][rows, :steps] = True
                out["entropy"][rows] = final_entropy(final)
    finally:
        policy.train(was_training)
    return out


def replay_step_log_probs(policy: nn.Module, td: TensorDictBase, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-step log pi(target | step j) of the exact rollouts recorded in ``td``, WITH grad.

    ``td`` holds ``("history", "items")``, ``("history", "length")``, ``"num_steps"`` and
    ``"rollout_seed"`` as written by :class:`RolloutScores`. Returns ``(log_probs [B, k_max],
    mask [B, k_max])``; same rows + same seeds => identical numbers (also in train mode).
    """
    out = run_rollouts(policy, td.get(HISTORY_KEYS[0]), td.get(HISTORY_KEYS[1]), td.get("num_steps"), td.get("rollout_seed"), target)
    return out["step_log_prob"], out["step_mask"]


@dataclass(frozen=True)
class RowShare:
    """This process's share of a global batch under DDP RPT learners: the global batch is groups of
    ``group_size`` contiguous rows, and rank ``rank`` of ``world_size`` holds groups
    ``rank, rank + world_size, ...`` in order. The actor's random draws (k, rollout seeds, Gaussian
    noise) are made for the whole global batch and this share is kept, so every rank draws exactly
    what a one-process run draws for the same rows."""

    rank: int
    world_size: int
    group_size: int

    def global_rows(self, rows: int) -> int:
        return rows * self.world_size

    def take(self, values: torch.Tensor) -> torch.Tensor:
        """This rank's rows of ``values`` [global rows, ...]."""
        grouped = values.reshape(-1, self.world_size, self.group_size, *values.shape[1:])
        return grouped[:, self.rank].reshape(-1, *values.shape[1:])


class RolloutScores(TensorDictModuleBase):
    """The latent rollout of ``policy`` as a TensorDict module (see the module docstring).

    Args:
        policy: an ``nn.Module`` with ``encode``/``scores``.
        latent_noise: True (default, required by ``exploration="latent"``): RANDOM rollouts run
            the policy in train mode with a per-row k from its sampler, fresh T0 noise and
            dropout. False: RANDOM rollouts are evaluation rollouts too (only item sampling explores).
        eval_seed: seeds the T0 noise of evaluation rollouts (``t0_init=normal`` keeps noise at eval).
        seed: seeds the private generator that draws k and rollout seeds (None: nondeterministic).
        halting: ``(tol, k_max)``: evaluation rollouts stop per row once the state has settled, and
            ``"num_steps"`` records the steps each took (see :func:`run_rollouts`); None: fixed depth.
    """

    in_keys = list(HISTORY_KEYS)
    out_keys = ["logits", "num_steps", "rollout_seed", "user_state"]

    def __init__(
        self,
        policy: nn.Module,
        latent_noise: bool = True,
        eval_seed: int = 0,
        seed: int | None = None,
        dedupe: bool = False,
        halting: tuple[float, int] | None = None,
        full_scores: bool = True,
    ) -> None:
        super().__init__()
        self.policy = policy
        self.full_scores = full_scores  # False: no "logits" (the chunked slate ranks "user_state" itself)
        if not full_scores:
            self.out_keys = [key for key in self.out_keys if key != "logits"]
        self.halting = halting
        self.latent_noise = latent_noise
        self.dedupe = dedupe
        self.eval_seed = eval_seed
        self.share: RowShare | None = None  # set by the DDP learners (lares_rl.rpt.distributed)
        self.generator = torch.Generator()
        if seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(seed)

    def eval_steps(self) -> int:
        """The policy's evaluation depth (states produced in eval mode, >= 1)."""
        was_training = self.policy.training
        self.policy.eval()
        try:
            return max(int(self.policy.sample_steps()), 1) if hasattr(self.policy, "sample_steps") else 1
        finally:
            self.policy.train(was_training)

    def draw(self, batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(num_steps, rollout_seed) for a fresh train-mode rollout of ``batch`` rows (with a
        :class:`RowShare`: drawn for the global batch, this rank's rows kept)."""
        drawn = batch if self.share is None else self.share.global_rows(batch)
        was_training = self.policy.training
        self.policy.train()
        try:
            if hasattr(self.policy, "sample_steps"):
                ks = [max(int(self.policy.sample_steps(self.generator)), 1) for _ in range(drawn)]
            else:
                ks = [1] * drawn
        finally:
            self.policy.train(was_training)
        seed = int(torch.randint(0, 2**62, (), generator=self.generator))
        ks = torch.tensor(ks, dtype=torch.int64)
        if self.share is not None:
            ks = self.share.take(ks)
        return ks.to(device), torch.full((batch,), seed, dtype=torch.int64, device=device)

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        items, length = tensordict.get(HISTORY_KEYS[0]), tensordict.get(HISTORY_KEYS[1])
        batch_shape = length.shape
        items, length = items.reshape(-1, items.shape[-1]), length.reshape(-1)
        batch, device = length.shape[0], length.device
        recorded = tensordict.get("num_steps", None) is not None and tensordict.get("rollout_seed", None) is not None
        if exploration_type() == ExplorationType.RANDOM and self.latent_noise:
            num_steps, seeds = self.draw(batch, device)
        elif exploration_type() != ExplorationType.RANDOM and recorded:
            num_steps, seeds = tensordict.get("num_steps").reshape(-1), tensordict.get("rollout_seed").reshape(-1)
        else:
            num_steps = torch.full((batch,), self.eval_steps(), dtype=torch.int64, device=device)
            seeds = torch.full((batch,), -1 - self.eval_seed, dtype=torch.int64, device=device)
        out = run_rollouts(
            self.policy, items, length, num_steps, seeds, dedupe=self.dedupe, halting=self.halting, full_scores=self.full_scores
        )
        if self.full_scores:
            tensordict.set("logits", out["final_scores"].reshape(*batch_shape, -1))
        tensordict.set("user_state", out["final_state"].reshape(*batch_shape, -1))
        tensordict.set("num_steps", out["num_steps"].reshape(batch_shape))
        tensordict.set("rollout_seed", seeds.reshape(batch_shape))
        return tensordict


def latent_scale(user_state: torch.Tensor, sigma: float) -> torch.Tensor:
    """Per-row std of the Gaussian latent policy, [B, 1]: ``sigma`` times the root-mean-square of
    the state, detached. Relative to the state's own size, so one ``sigma`` means the same
    perturbation for any d_model or layer norm scale; detached, so the policy cannot lower its
    log-prob's denominator to game the objective."""
    return sigma * user_state.detach().pow(2).mean(-1, keepdim=True).sqrt().clamp(min=1e-6)


class GaussianLatentScores(TensorDictModuleBase):
    """A Gaussian policy in latent space: the action is a perturbed user state ``h = mu + s * eps``
    with ``mu`` the reasoner's final state (``"user_state"``), ``eps ~ N(0, I)`` and ``s`` from
    :func:`latent_scale`; the slate is then the top-K of ``h``'s scores.

    Unlike the reference's latent exploration (T0 noise, dropout and k, whose probability under the
    policy is not defined), ``log N(h; mu_theta, s^2)`` is an exact, differentiable log-prob of
    what was explored, so a REINFORCE/PPO update on it follows the gradient of the expected reward
    (see :class:`lares_rl.rpt.losses.LatentPolicyGradientLoss`).

    ``antithetic``: rows (2i, 2i + 1) get ``eps`` and ``-eps``; with an even group size each pair
    stays inside one history's group, and their advantages then act as a finite difference along
    ``eps`` (much lower variance than independent draws for the same G).

    RANDOM exploration draws ``eps`` from ``generator`` (shared with the :class:`RolloutScores`, so
    one saved stream resumes both) and writes ``"latent_noise"`` [B, d]; any other exploration type
    scores ``mu`` itself (evaluation).
    """

    in_keys = ["user_state"]
    out_keys = ["logits", "latent_noise"]

    def __init__(
        self, policy: nn.Module, sigma: float, generator: torch.Generator, antithetic: bool = False, full_scores: bool = True
    ) -> None:
        super().__init__()
        if sigma <= 0:
            raise ValueError(f"sigma={sigma} must be > 0")
        self.policy, self.sigma, self.generator, self.antithetic = policy, sigma, generator, antithetic
        self.full_scores = full_scores  # False: write the perturbed state as "slate_state" for the chunked slate, no "logits"
        if not full_scores:
            self.out_keys = ["slate_state", "latent_noise"]
        self.share: RowShare | None = None  # set by the DDP learners (lares_rl.rpt.distributed)

    def draw_noise(self, mu: torch.Tensor) -> torch.Tensor:
        """``eps`` for the rows of ``mu`` (with a :class:`RowShare`: drawn for the global batch,
        this rank's rows kept, so antithetic pairs and groups are the one-process run's)."""
        rows = mu.shape[0] if self.share is None else self.share.global_rows(mu.shape[0])
        if self.antithetic:
            if rows % 2:
                raise ValueError(f"antithetic noise pairs rows (2i, 2i + 1); got an odd batch of {rows}")
            half = torch.randn((rows // 2, *mu.shape[1:]), generator=self.generator)
            noise = torch.stack([half, -half], dim=1).reshape(rows, *mu.shape[1:])
        else:
            noise = torch.randn((rows, *mu.shape[1:]), generator=self.generator)
        if self.share is not None:
            noise = self.share.take(noise)
        return noise.to(mu.device, mu.dtype)

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        mu = tensordict.get("user_state")
        noise = torch.zeros_like(mu) if exploration_type() != ExplorationType.RANDOM else self.draw_noise(mu)
        state = mu + latent_scale(mu, self.sigma) * noise
        if self.full_scores:
            tensordict.set("logits", self.policy.scores(state))
        else:
            tensordict.set("slate_state", state)
        tensordict.set("latent_noise", noise)
        return tensordict


# ----------------------------------------------------------------------------- slate distributions


def _top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    return logits.topk(k, dim=-1).indices


class _SlateDistribution(D.Distribution):
    """A distribution over slates (int64 [..., K] of distinct item ids) given scores [..., N + 1]."""

    arg_constraints: dict = {}
    has_rsample = False

    def __init__(self, logits: torch.Tensor, slate_size: int) -> None:
        if slate_size > logits.shape[-1] - 1:
            raise ValueError(f"slate_size={slate_size} exceeds the catalog ({logits.shape[-1] - 1} items)")
        self.logits = logits
        self.slate_size = slate_size
        super().__init__(batch_shape=logits.shape[:-1], event_shape=torch.Size([slate_size]), validate_args=False)

    @property
    def deterministic_sample(self) -> torch.Tensor:
        """The top-K slate (what DETERMINISTIC exploration returns)."""
        return _top_k(self.logits.detach(), self.slate_size)

    @property
    def mode(self) -> torch.Tensor:
        return self.deterministic_sample

    def expand(self, batch_shape, _instance=None):
        return type(self)(self.logits.expand(*batch_shape, self.logits.shape[-1]), self.slate_size)


class TopKSlate(_SlateDistribution):
    """Point mass on the top-K slate (LARES reference: exploration lives in the latent rollout).
    ``log_prob`` is 0: given the latent trajectory the slate is deterministic."""

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        return self.deterministic_sample.expand(*sample_shape, *self.batch_shape, self.slate_size)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return torch.zeros(value.shape[:-1], dtype=self.logits.dtype, device=value.device)


class CategoricalSlate(_SlateDistribution):
    """First slot ~ softmax(scores), the other K - 1 slots the best remaining items.
    ``log_prob(slate) = log softmax(scores)[slate[..., 0]]`` (the rest is determined)."""

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            logits = self.logits.expand(*sample_shape, *self.logits.shape)
            first = D.Categorical(logits=logits).sample()
            rest = logits.scatter(-1, first.unsqueeze(-1), float("-inf"))
            return torch.cat([first.unsqueeze(-1), _top_k(rest, self.slate_size - 1)], dim=-1)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(self.logits, dim=-1).gather(-1, value[..., :1]).squeeze(-1)

    def entropy(self) -> torch.Tensor:
        return final_entropy(self.logits)


class PlackettLuceSlate(_SlateDistribution):
    """Plackett-Luce ranking of K items without replacement: sample by Gumbel-top-K,
    ``log_prob(a) = sum_i [s_{a_i} - log sum_{v not in a_<i} exp(s_v)]``.

    The denominators come from subtracting the mass of the already placed items, in float64 for
    accuracy. ``entropy`` is not implemented (use ``entropy_bonus=False`` in PPO)."""

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            logits = self.logits.expand(*sample_shape, *self.logits.shape)
            uniform = torch.rand_like(logits).clamp_(1e-20, 1.0)
            return _top_k(logits - torch.log(-torch.log(uniform)), self.slate_size)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        logits = self.logits.expand(*value.shape[:-1], self.logits.shape[-1]).double()
        picked = logits.gather(-1, value)  # [..., K]
        log_z = torch.logsumexp(logits, dim=-1, keepdim=True)
        # log of the mass already placed before slot i (exclusive cumulative logsumexp)
        placed = torch.logcumsumexp(picked, dim=-1)
        placed = torch.cat([torch.full_like(placed[..., :1], float("-inf")), placed[..., :-1]], dim=-1)
        remaining = log_z + torch.log1p(-torch.exp(placed - log_z).clamp(max=1 - 1e-12))
        return (picked - remaining).sum(-1).to(self.logits.dtype)


class ChunkedTopKSlate(TensorDictModuleBase):
    """The top-K slate of a state scored ``item_chunk`` items at a time with a running top-K
    (:func:`lares_rl.catalog.topk.chunked_top_k`): the same slate as :class:`TopKSlate` over the
    full scores, without the [B, N + 1] matrix. For the explorations whose slate is the top-K of a
    latent state (``latent``, ``gaussian``); ``"action_log_prob"`` is 0, as for :class:`TopKSlate`."""

    out_keys = ["action", "action_log_prob"]

    def __init__(self, policy: nn.Module, slate_size: int, item_chunk: int, state_key: str) -> None:

        super().__init__()
        self.policy, self.slate_size, self.item_chunk, self.state_key = policy, slate_size, item_chunk, state_key
        self.in_keys = [state_key]
        self.score_items = item_scorer(policy, "eval.item_chunk")

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:

        state = tensordict.get(self.state_key)
        flat = state.reshape(-1, state.shape[-1])
        slate = chunked_top_k(flat.detach(), self.score_items, self.policy.num_items, self.slate_size, self.item_chunk)[1]
        tensordict.set("action", slate.reshape(*state.shape[:-1], self.slate_size))
        tensordict.set("action_log_prob", flat.new_zeros(flat.shape[0]).reshape(state.shape[:-1]))
        return tensordict


SLATE_DISTRIBUTIONS = {"latent": TopKSlate, "categorical": CategoricalSlate, "plackett_luce": PlackettLuceSlate, "gaussian": TopKSlate}


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
