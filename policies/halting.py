"""Adaptive reasoning depth: run the core block per user until that user's state has settled.

The recurrence T_i = CoreBlock(LN2(f(T_{i-1}, H))) contracts: the relative change of a user's
last-position state roughly halves with every step (its quantiles per step on real checkpoints:
docs/results/adaptive_depth_ml-100k.md, docs/results/adaptive_depth_amazon-beauty.md), so a fixed k spends the
same steps on users whose state stopped moving long ago. Here a user halts at the first step
i >= 2 with

    ||h_i - h_{i-1}|| / ||h_i|| < tol        (h_i = T_i[length - 1])

or at ``k_max``, and its final state is h_i. Halted users leave the batch: every later step runs
the core block on the index-selected rows of the users still active (and, for causal blocks, only
on the columns up to the longest active history), so the work really shrinks; it is not a mask.

Determinism: T0 is drawn once for the whole batch from the global RNG, exactly as
:meth:`LaresReasoner.encode` draws it, so a seeded call replays bit for bit, and with a ``tol``
that no user reaches the states equal those of a fixed ``k = k_max`` (up to float rounding of the
smaller matrix products). Gradients flow through the selected rows (RPT replays halted rollouts).
At inference (eval mode, no autograd) the batch runs in the reasoner's row chunks, and the
``k_max`` step computes only the read position, as :meth:`LaresReasoner.encode` does for its
last step.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lares_rl.policies.reasoner import inference_chunk_rows, runs_inference

_NORM_FLOOR = 1e-12


def check_halting_args(tol: float, k_max: int) -> None:
    """ValueError for a tolerance that is not a positive finite number or a ``k_max`` below 1
    (the callers in lares_rl turn it into an error naming their own config key)."""
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or math.isnan(tol) or not 0 < tol < math.inf:
        raise ValueError(f"the halting tolerance must be a positive finite number, got {tol!r}")
    if isinstance(k_max, bool) or not isinstance(k_max, int) or k_max < 1:
        raise ValueError(f"k_max must be an integer >= 1, got {k_max!r}")


def encode_until_settled(
    policy: nn.Module, seq: torch.Tensor, lengths: torch.Tensor, tol: float, k_max: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Final user states [B, d] and the number of core steps each user took, int64 [B].

    ``policy`` is a recurrent :class:`~lares_rl.policies.reasoner.LaresReasoner` (or any module
    with ``recurrent``, ``causal``, ``d_model``, ``context``, ``initial_thought`` and ``core_step``); its mode
    (train/eval) is the caller's. ``seq`` [B, L] left-aligned, ``lengths`` [B]. Inference runs in
    row chunks like :meth:`~lares_rl.policies.reasoner.LaresReasoner.encode`, with T0 drawn first
    for the whole batch, so the result does not depend on the chunk size.
    """
    check_halting_args(tol, k_max)
    if not getattr(policy, "recurrent", False):
        raise ValueError("adaptive halting needs a policy with a reasoning core (a core block); this one has none (e.g. SASRec)")
    batch = len(lengths)
    if batch == 0:
        return seq.new_zeros((0, policy.d_model), dtype=torch.float32), torch.zeros(0, dtype=torch.int64, device=seq.device)
    width = max(1, int(lengths.max()))
    chunk = inference_chunk_rows(policy, batch, width)
    if chunk is None:
        return _settle(policy, seq, lengths, None, tol, k_max)
    t0 = policy.initial_thought(next(policy.parameters()).new_empty((batch, width, policy.d_model)))
    seq = seq[:, :width]  # every chunk keeps the batch's width: the shapes (and rounding) of the unchunked pass
    parts = [
        _settle(policy, seq[start : start + chunk], lengths[start : start + chunk], t0[start : start + chunk], tol, k_max)
        for start in range(0, batch, chunk)
    ]
    return torch.cat([states for states, _ in parts]), torch.cat([steps for _, steps in parts])


def _settle(
    policy: nn.Module, seq: torch.Tensor, lengths: torch.Tensor, t0: torch.Tensor | None, tol: float, k_max: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`encode_until_settled` on one chunk of rows, from the given T0 of the chunk's width
    (None: the whole batch, cut to its longest history, with T0 drawn here after the context,
    exactly as :meth:`~lares_rl.policies.reasoner.LaresReasoner.encode` draws it)."""
    batch = len(lengths)
    if t0 is None:
        seq = seq[:, : max(1, int(lengths.max()))]
    context, valid = policy.context(seq, lengths)
    thought = policy.initial_thought(context) if t0 is None else t0
    last = (lengths - 1).clamp(min=0)
    rows = torch.arange(batch, device=seq.device)
    active = rows
    steps = torch.full((batch,), k_max, dtype=torch.int64, device=seq.device)
    done_rows: list[torch.Tensor] = []
    done_states: list[torch.Tensor] = []
    previous = None
    tol_squared = float(tol) ** 2
    # the last allowed step's full state is never read: at inference only its read position is computed
    read_only_last = hasattr(policy, "core_step_at") and runs_inference(policy)
    for step in range(1, k_max + 1):
        if step == k_max:
            if read_only_last:
                state = policy.core_step_at(thought, context, valid, rows[: len(active)], last)
            else:
                state = policy.core_step(thought, context, valid)[rows[: len(active)], last]
            done_rows.append(active)
            done_states.append(state)
            break
        thought = policy.core_step(thought, context, valid)
        state = thought[rows[: len(active)], last]
        if previous is not None:
            # ||h_i - h_{i-1}|| < tol ||h_i||, compared squared: no roots, no division
            settled = (state - previous).pow(2).sum(-1) < tol_squared * state.pow(2).sum(-1).clamp(min=_NORM_FLOOR)
            count = int(settled.sum())
            if count == len(active):  # the common end (and every single-history call): no reshuffle
                done_rows.append(active)
                done_states.append(state)
                steps[active] = step
                break
            if count:
                done_rows.append(active[settled])
                done_states.append(state[settled])
                steps[active[settled]] = step
                keep = settled.logical_not().nonzero().squeeze(1)
                active, last, state = active[keep], last[keep], state[keep]
                thought, context, valid = thought[keep], context[keep], valid[keep]
                if getattr(policy, "causal", False):  # columns past the longest active history hold only padding
                    cut = int(last.max()) + 1
                    thought, context, valid = thought[:, :cut], context[:, :cut], valid[:, :cut]
        previous = state
    if len(done_rows) == 1:  # everyone finished at the same step, in the original order
        return done_states[0], steps
    order = torch.cat(done_rows)
    states = torch.cat(done_states)
    # rows were finished out of order; put each back at its own index
    return states[torch.argsort(order)], steps
