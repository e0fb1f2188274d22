"""The SPT loss terms (DESIGN section 2): the catalog cross-entropy L_rec, in-batch InfoNCE for the
trajectory (TLA) and step (SLA) alignment, and L_SPT, their weighted sum."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from lares_rl.catalog.fused_ce import FASTER_FROM_ITEMS, catalog_cross_entropy
from lares_rl.catalog.sampled_softmax import SampledSoftmax
from lares_rl.core.errors import LaresError
from lares_rl.spt.config import SPTConfig


def info_nce(x: torch.Tensor, y: torch.Tensor, similarity: str, temperature: float) -> torch.Tensor:
    """l(x, y) = CE((sim(x_i, y_j) / tau)_j, i): row i's positive is y_i, the batch is the negatives.
    Under autocast (``precision=bf16``) it runs in fp32: its products are small, and tau (0.07 with
    cosine) would scale bf16's rounding of the similarities fourteen-fold."""
    if torch.is_autocast_enabled(x.device.type):
        with torch.autocast(x.device.type, enabled=False):
            return info_nce(x.float(), y.float(), similarity, temperature)
    if similarity == "cosine":
        x, y = F.normalize(x, dim=-1), F.normalize(y, dim=-1)
    logits = x @ y.T / temperature
    return F.cross_entropy(logits, torch.arange(len(x), device=x.device))


def symmetric_info_nce(x: torch.Tensor, y: torch.Tensor, similarity: str, temperature: float) -> torch.Tensor:
    return (info_nce(x, y, similarity, temperature) + info_nce(y, x, similarity, temperature)) / 2


def uses_fused_catalog(policy: nn.Module, catalog_loss: str) -> bool:
    """Whether the full-catalog L_rec of ``policy`` runs fused under ``spt.catalog_loss``: ``fused``,
    or ``auto`` on a catalog of at least ``FASTER_FROM_ITEMS`` items, and only for a policy whose
    scores are a product with its item table (``score_operands``: LARES, SASRec)."""
    if getattr(policy, "score_operands", None) is None:
        return False
    return catalog_loss == "fused" or (catalog_loss == "auto" and int(policy.num_items) >= FASTER_FROM_ITEMS)


def rec_cross_entropy(
    policy: nn.Module, states: torch.Tensor, targets: torch.Tensor, softmax: SampledSoftmax | None, catalog_loss: str = "full"
) -> torch.Tensor:
    """CE of ``states`` [n, d] for ``targets`` [n]: over the whole catalog, or ``softmax``'s candidates.
    ``catalog_loss`` (``spt.catalog_loss``, :func:`uses_fused_catalog`): fused, the catalog is scored
    in item chunks without the [n, N + 1] logit matrix (:mod:`lares_rl.catalog.fused_ce`, the same
    loss and gradients); otherwise the whole matrix comes from ``policy.scores``."""
    if softmax is not None:
        return softmax.loss(states, targets, policy.item_scores)
    if uses_fused_catalog(policy, catalog_loss):
        return catalog_cross_entropy(*policy.score_operands(states), targets)
    return F.cross_entropy(policy.scores(states), targets)


def recommendation_loss(
    policy: nn.Module,
    seq: torch.Tensor,
    lengths: torch.Tensor,
    targets: torch.Tensor,
    k: int | None = None,
    softmax: SampledSoftmax | None = None,
    catalog_loss: str = "full",
) -> tuple[torch.Tensor, torch.Tensor]:
    """L_rec and every step's state at each row's last position, [B, k, d] (k = None: sampled).
    ``softmax``: sampled / in-batch negatives instead of the full catalog (None); ``catalog_loss``:
    how the full catalog is scored (:func:`rec_cross_entropy`).

    ``targets`` [B]: one row per prefix, scored at the last position. ``targets`` [B, L] (dense
    windows): every position with a non-zero target is scored in the same pass, which is exact for
    causal encoders because position i only sees items up to i; the returned states are then those
    of the window's last target, which is what the alignment terms use as the anchor."""
    if targets.dim() == 1:
        states = policy.encode(seq, lengths, k=k)
        return rec_cross_entropy(policy, states[:, -1], targets, softmax, catalog_loss), states
    states = policy.encode(seq, lengths, k=k, all_positions=True)
    width_targets = targets[:, : states.shape[2]]
    supervised = width_targets > 0
    loss = rec_cross_entropy(policy, states[:, -1][supervised], width_targets[supervised], softmax, catalog_loss)
    last = (lengths - 1).clamp(min=0).view(-1, 1, 1, 1).expand(-1, states.shape[1], 1, states.shape[-1])
    return loss, states.gather(2, last).squeeze(2)


def anchor_and_rec(
    policy: nn.Module,
    batch: tuple[torch.Tensor, ...],
    shared: bool,
    softmax: SampledSoftmax | None = None,
    generator: torch.Generator | None = None,
    catalog_loss: str = "full",
) -> tuple[torch.Tensor, int, torch.Tensor]:
    """(L_rec, its k, the anchor's per-step states [B, k', d]). Shared: one pass at k' serves both;
    otherwise the reference's order (recommendation pass at its own k, then the anchor pass at k')
    so that ``shared_anchor=false`` replays the reference's random draws. ``generator`` draws the
    depths (a distributed run passes one shared by all ranks, so the global batch has one k');
    None: the global stream, as a single-process run always did. ``catalog_loss``: :func:`rec_cross_entropy`."""
    seq, lengths, targets = batch
    if shared:
        k_prime = policy.sample_steps(generator)
        loss_rec, anchor_steps = recommendation_loss(policy, seq, lengths, targets, k=k_prime, softmax=softmax, catalog_loss=catalog_loss)
        return loss_rec, k_prime, anchor_steps
    loss_rec, rec_steps = recommendation_loss(
        policy,
        seq,
        lengths,
        targets,
        k=None if generator is None else policy.sample_steps(generator),
        softmax=softmax,
        catalog_loss=catalog_loss,
    )
    return loss_rec, rec_steps.shape[1], policy.encode(seq, lengths, k=policy.sample_steps(generator))


def spt_loss(
    policy: nn.Module,
    batch: tuple[torch.Tensor, ...],
    positive: tuple[torch.Tensor, torch.Tensor],
    cfg: SPTConfig,
    softmax: SampledSoftmax | None = None,
    contrast: Callable[..., torch.Tensor] = symmetric_info_nce,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """The passes of one SPT step (two with ``cfg.shared_anchor``, else three). ``loss_*`` entries
    sum to L_SPT (weights applied); ``k``, ``k_prime``, ``tla``, ``sla`` are detached diagnostics.
    The alignment terms always use each row's last position (in dense mode: the window's last
    target). The positive pass runs over its own batch, so ``encode`` trims it to the longest
    positive, not the anchor's width, and without autograd when ``cfg.positive_gradient`` is false.
    ``softmax``: L_rec over sampled / in-batch negatives (None: the full catalog, scored as ``cfg.catalog_loss`` says).
    ``contrast`` is the symmetric InfoNCE (a distributed run swaps in one whose negatives come from
    every rank); ``generator`` draws k' and the SLA step."""
    if not policy.recurrent or (cfg.alpha == 0 and cfg.gamma == 0):
        loss_rec, states = recommendation_loss(policy, *batch, softmax=softmax, catalog_loss=cfg.catalog_loss)
        return {"loss_rec": loss_rec, "k": torch.tensor(float(states.shape[1]))}
    loss_rec, k, anchor_steps = anchor_and_rec(policy, batch, cfg.shared_anchor, softmax, generator, cfg.catalog_loss)
    k_prime = anchor_steps.shape[1]
    anchor = anchor_steps[:, -1]
    out = {"loss_rec": loss_rec, "k": torch.tensor(float(k)), "k_prime": torch.tensor(float(k_prime))}
    if cfg.alpha > 0:
        pos_seq, pos_lengths = positive
        with torch.set_grad_enabled(cfg.positive_gradient and torch.is_grad_enabled()):
            positive_state = policy.encode(pos_seq, pos_lengths, k=k_prime)[:, -1]
        tla = contrast(anchor, positive_state, cfg.similarity, cfg.temperature)
        out["loss_tla"], out["tla"] = cfg.alpha * tla, tla.detach()
    if cfg.gamma > 0 and k_prime > 1:
        j = int(torch.randint(1, k_prime + 1, (), generator=generator).item())
        sla = contrast(anchor, anchor_steps[:, j - 1], cfg.similarity, cfg.temperature)
        out["loss_sla"], out["sla"] = cfg.gamma * sla, sla.detach()
    return out


def total_loss(terms: Mapping[str, torch.Tensor], step: int) -> torch.Tensor:
    """Sum of the ``loss_*`` entries; a NaN/inf term stops training naming the term and step."""
    for name, value in terms.items():
        if name.startswith("loss_") and not torch.isfinite(value):
            raise LaresError(
                f"non-finite {name} ({value.item()}) at step {step}; training stopped. The last good state (checkpoints/spt_last.pt, spt_best.pt) is kept; lower spt.lr or check the data"
            )
    return sum(v for name, v in terms.items() if name.startswith("loss_"))
