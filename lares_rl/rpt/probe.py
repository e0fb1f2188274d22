"""RPT learning diagnostics that do not depend on which batch came next.

A training curve of the batch reward mixes learning with the luck of the draw (each batch holds
other histories). The probe is a fixed set of kept training histories, the same for the whole run
(and after a resume); every ``rpt.probe_every`` batches it is scored in evaluation mode, so its
curve moves only when the policy does. Also here: the per-term gradient norms, which say whether
the policy term or the KL term is driving the update.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from lares_rl.catalog.topk import chunked_top_k, item_scorer
from lares_rl.core.errors import LaresError
from lares_rl.metrics.ranking import target_ranks
from lares_rl.policies.actor import catalog_kl
from lares_rl.rewards.builtin import check_reward_output

# Kept rows the greedy training reward is measured on, before and after RPT (a fixed sample: over
# every kept row the two evaluation passes cost about a quarter of a one-pass RPT on ML-100K).
GREEDY_REWARD_ROWS = 16_384


def probe_rows(kept: torch.Tensor, size: int, seed: int) -> torch.Tensor:
    """A fixed, seed-determined subset of ``size`` kept row indices (all of them when fewer)."""
    if len(kept) <= size:
        return kept
    generator = torch.Generator().manual_seed(seed + 7919)
    return kept[torch.randperm(len(kept), generator=generator)[:size]].sort().values


@torch.no_grad()
def probe_metrics(
    policy: nn.Module,
    reference: nn.Module,
    probe: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    reward_fn,
    slate_size: int,
    device: torch.device,
    seed: int = 0,
    batch_size: int = 1024,
) -> dict[str, float | torch.Tensor]:
    """Evaluation-mode metrics of ``policy`` on the probe histories: the reward of its top-K slate
    (``reward``, plus the per-row ``rewards`` tensor), the target's mean 0-based rank over the full
    catalog (``target_rank``, pessimistic on ties) and the exact ``KL(pi || pi_ref)`` of the
    final-step softmax to the frozen reference (``kl_to_ref``). Both models draw the same
    evaluation T0 noise (``seed``), so at the start the KL is exactly 0."""
    seqs, lengths, targets = probe
    modes = [(model, model.training) for model in (policy, reference)]
    policy.eval(), reference.eval()
    rewards, ranks, kls = [], [], []
    try:
        for start in range(0, len(targets), batch_size):
            rows = slice(start, start + batch_size)
            seq, length, target = seqs[rows].to(device), lengths[rows].to(device), targets[rows].to(device)
            log_p = _final_log_softmax(policy, seq, length, seed, device)
            ref_log_p = _final_log_softmax(reference, seq, length, seed, device)
            rewards.append(
                check_reward_output(reward_fn, reward_fn(log_p.topk(slate_size, dim=-1).indices, target), len(target)).float().cpu()
            )
            ranks.append(target_ranks(log_p, target).float().cpu())
            kls.append(catalog_kl(log_p, ref_log_p).cpu())
    finally:
        for model, mode in modes:
            model.train(mode)
    per_row = torch.cat(rewards)
    return {
        "reward": per_row.mean().item(),
        "rewards": per_row,
        "target_rank": torch.cat(ranks).mean().item(),
        "kl_to_ref": torch.cat(kls).mean().item(),
    }


def _final_log_softmax(model: nn.Module, seq: torch.Tensor, length: torch.Tensor, seed: int, device: torch.device) -> torch.Tensor:
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        return torch.log_softmax(model.scores(model.encode(seq, length)[:, -1]), dim=-1)


def check_learning_signal(rewards: torch.Tensor, reward_name: str) -> None:
    """Refuse to train when the reward is the same on every probe history: no group can then have
    an advantage, and RPT would spend its whole budget on the KL term alone."""
    if len(rewards) > 1 and bool((rewards == rewards[0]).all()):
        raise LaresError(
            f"reward {reward_name} is {rewards[0].item():g} on all {len(rewards)} probe histories before training: it carries no learning signal. "
            f"Pick a denser reward (e.g. reward=ndcg with a larger reward.k and rpt.slate_size) or a policy/filter under which it varies"
        )


def term_grad_norms(terms: Mapping[str, torch.Tensor], parameters: Sequence[torch.Tensor]) -> dict[str, float]:
    """L2 norm of the gradient of each ``loss_*`` term alone, e.g. ``grad_norm_policy``; the graph is
    retained, so the caller still runs its own ``backward`` on the total afterwards."""
    params = [p for p in parameters if p.requires_grad]
    norms = {}
    for name, value in terms.items():
        if name.startswith("loss_") and value.requires_grad:
            grads = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
            squared = sum(float(g.pow(2).sum()) for g in grads if g is not None)
            norms[f"grad_norm_{name[len('loss_') :]}"] = squared**0.5
    return norms


@torch.no_grad()
def greedy_reward(
    policy: nn.Module,
    seqs: torch.Tensor,
    lengths: torch.Tensor,
    targets: torch.Tensor,
    reward_fn,
    slate_size: int,
    device: torch.device,
    seed: int = 0,
    batch_size: int = 1024,
    item_chunk: int | None = None,
) -> float:
    """Mean reward of the evaluation-mode top-K slate on the given rows (a deterministic training-reward probe);
    ``item_chunk`` builds the slate from a chunked top-K (:mod:`lares_rl.catalog.topk`)."""
    was_training = policy.training
    policy.eval()
    total = 0.0
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            for start in range(0, len(targets), batch_size):
                rows = slice(start, start + batch_size)
                states = policy.encode(seqs[rows].to(device), lengths[rows].to(device))[:, -1]
                if item_chunk is None:
                    slate = policy.scores(states).topk(slate_size, dim=-1).indices
                else:
                    slate = chunked_top_k(states, item_scorer(policy, "eval.item_chunk"), policy.num_items, slate_size, item_chunk)[1]
                total += reward_fn(slate, targets[rows].to(device)).sum().item()
    finally:
        policy.train(was_training)
    return total / max(len(targets), 1)
