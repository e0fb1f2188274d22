"""Latent rollouts of a policy that can be replayed bit for bit from a recorded seed and k.

A policy here is any ``nn.Module`` with ``encode(seq, lengths, k=None) -> [B, k, d]`` and
``scores(states) -> [..., N + 1]`` (padding column at -inf); LARES and SASRec both qualify.

Every random draw of a rollout (T0 noise and dropout masks, both on torch's global RNG) happens
inside ``torch.random.fork_rng()`` after ``torch.manual_seed`` of a seed derived from
``(rollout_seed, k)``, so a rollout can be replayed, with gradients, from its recorded seed and k:
this is how the losses recompute the log-probs of the exact rollouts that acted.

Seeds: a rollout seed ``s >= 0`` means a train-mode rollout seeded from ``s``; ``s < 0`` marks an
eval-mode rollout (no dropout) whose T0 noise is seeded from ``-1 - s``. Rows are replayed in
groups of equal ``(seed, k)`` (a loop over unique k values, never over rows), so replaying THE
SAME ROWS IN THE SAME ORDER gives identical numbers; a subset of rows gets different noise.
"""

from __future__ import annotations

import torch
from tensordict import TensorDictBase
from torch import nn

from lares_rl.policies.catalog_softmax import final_entropy
from lares_rl.policies.halting import encode_until_settled

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
            (:class:`~lares_rl.policies.slates.ChunkedTopKSlate`) needs the final states only.
    """
    if halting is not None:
        if target is not None:
            raise ValueError("halting rollouts give final-step outputs only; per-step target log-probs need fixed-depth rollouts")
        evaluation_rows = (seeds < 0) if train is None else torch.full_like(seeds, not train, dtype=torch.bool)
        num_steps = torch.where(evaluation_rows, halting[1], num_steps)
    k_max = int(num_steps.max().item()) if items.shape[0] else 1
    out: dict[str, torch.Tensor] = {}
    was_training = policy.training
    try:
        for seed, k, rows in rollout_groups(num_steps, seeds):
            mode = (seed >= 0) if train is None else train
            policy.train(mode)
            base = seed if seed >= 0 else -1 - seed
            states, taken = _group_states(
                policy,
                items[rows],
                length[rows],
                k,
                _group_seed(base + noise_offset, k),
                dedupe=dedupe and not mode,
                halting=None if mode else halting,
            )
            final = policy.scores(states[:, -1]) if full_scores or target is not None else None
            if not out:
                out.update(_batch_outputs(items.shape[0], states, final, k_max, with_target=target is not None))
            _store_group(out, policy, rows, k, states, taken, final, None if target is None else target[rows])
    finally:
        policy.train(was_training)
    return out


def _group_states(
    policy: nn.Module,
    seq: torch.Tensor,
    lengths: torch.Tensor,
    k: int,
    torch_seed: int,
    *,
    dedupe: bool,
    halting: tuple[float, int] | None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One ``(seed, k)`` group's states [n, steps, d], every random draw made after seeding torch's
    RNG with ``torch_seed`` inside ``fork_rng``, and with ``halting`` the steps each row took
    (else None). ``dedupe`` encodes each distinct history once and hands its states to every row
    that repeats it."""
    unique = inverse = None
    if dedupe:
        unique, inverse = torch.unique(torch.cat([seq, lengths[:, None]], dim=1), dim=0, return_inverse=True)
    taken = None
    with torch.random.fork_rng(devices=[seq.device] if seq.device.type == "cuda" else []):
        torch.manual_seed(torch_seed)
        if unique is not None:
            seq, lengths = unique[:, :-1], unique[:, -1]
        if halting is not None:
            final_state, taken = encode_until_settled(policy, seq, lengths, halting[0], k)
            states = final_state[:, None]
        else:
            states = policy.encode(seq, lengths, k=k)
        if unique is not None:
            states = states[inverse]
            taken = None if taken is None else taken[inverse]
    return states, taken


def _batch_outputs(
    batch: int, states: torch.Tensor, final: torch.Tensor | None, k_max: int, *, with_target: bool
) -> dict[str, torch.Tensor]:
    """:func:`run_rollouts`'s outputs for ``batch`` rows, zeroed, shaped after the first group's."""
    out = {}
    if final is not None:
        out["final_scores"] = final.new_zeros((batch, final.shape[-1]))
    out["final_state"] = states.new_zeros((batch, states.shape[-1]))
    out["num_steps"] = torch.zeros(batch, dtype=torch.int64, device=states.device)
    if with_target:
        out["step_log_prob"] = final.new_zeros((batch, k_max))
        out["step_mask"] = torch.zeros((batch, k_max), dtype=torch.bool, device=states.device)
        out["entropy"] = final.new_zeros(batch)
    return out


def _store_group(
    out: dict[str, torch.Tensor],
    policy: nn.Module,
    rows: torch.Tensor,
    k: int,
    states: torch.Tensor,
    taken: torch.Tensor | None,
    final: torch.Tensor | None,
    target: torch.Tensor | None,
) -> None:
    """Write one group's outputs into ``out`` at ``rows``; with the group's ``target`` also the
    log-prob of the target at every step and the final-step entropy."""
    if final is not None:
        out["final_scores"][rows] = final
    out["final_state"][rows] = states[:, -1]
    out["num_steps"][rows] = torch.full_like(rows, k) if taken is None else taken
    if target is not None:
        steps = states.shape[1]
        step_scores = policy.scores(states)  # [n, steps, N + 1]
        picked = step_scores.gather(-1, target.view(-1, 1, 1).expand(-1, steps, 1)).squeeze(-1)
        out["step_log_prob"][rows, :steps] = picked - torch.logsumexp(step_scores, dim=-1)
        out["step_mask"][rows, :steps] = True
        out["entropy"][rows] = final_entropy(final)


def replay_step_log_probs(policy: nn.Module, td: TensorDictBase, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-step log pi(target | step j) of the exact rollouts recorded in ``td``, WITH grad.

    ``td`` holds ``("history", "items")``, ``("history", "length")``, ``"num_steps"`` and
    ``"rollout_seed"`` as written by :class:`~lares_rl.policies.rollout_scores.RolloutScores`.
    Returns ``(log_probs [B, k_max], mask [B, k_max])``; same rows + same seeds => identical
    numbers (also in train mode).
    """
    out = run_rollouts(policy, td.get(HISTORY_KEYS[0]), td.get(HISTORY_KEYS[1]), td.get("num_steps"), td.get("rollout_seed"), target)
    return out["step_log_prob"], out["step_mask"]
