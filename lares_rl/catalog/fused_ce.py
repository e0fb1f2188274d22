"""Full-catalog cross-entropy without the [positions x items] logit matrix.

The recommendation loss scores every supervised position against the whole item table,
``CE(states @ table^T, targets)`` with item 0 (padding) at -inf. Built plainly, that is an
n x (N + 1) matrix, its log-softmax and its gradient: on a 24,587-item catalog with 770 positions
a step three 76 MB matrices allocated, written, read and freed, which costs more than the three
matrix products themselves (docs/speed_profile.md).

Here the items are taken ``chunk`` at a time (in the spirit of cut-cross-entropy and Liger's fused
linear cross-entropy):

- forward: each chunk's logits [n, chunk], their log-sum-exp folded into a running one in fp32,
  then dropped; the target's logit is one dot product per row. Saved: states, table, targets and
  the [n] log-sum-exp, nothing catalog-sized.
- backward: each chunk's logits recomputed, ``softmax = exp(logits - lse)`` from the saved lse,
  scaled by each row's incoming gradient, and turned at once into that chunk's share of the state
  gradient (``p @ table_chunk``, accumulated) and its rows of the table gradient
  (``p^T @ states``); the target's ``-1`` is applied as one gather and one index_add.

Item 0 is never scored (as ``policy.scores`` puts it at -inf), so its row of the table gets no
gradient from this loss, as today. A target 0 has logit -inf and an infinite loss, as in
``F.cross_entropy`` over the masked logits.
"""

from __future__ import annotations

import torch

DEFAULT_CHUNK = 512  # items per block: 256-1024 were equally fast at 1,349-24,587 items on this CPU, 2048+ slower (docs/speed_profile.md)
REDUCTIONS = ("mean", "sum", "none")


class _CatalogCrossEntropy(torch.autograd.Function):
    """Per-row losses ``lse_j>=1(s . e_j) - s . e_target``; the module docstring gives the passes."""

    @staticmethod
    def forward(ctx, states: torch.Tensor, table: torch.Tensor, targets: torch.Tensor, chunk: int) -> torch.Tensor:
        wide = torch.promote_types(states.dtype, torch.float32)  # fp32 at least, whatever the product's dtype
        lse = torch.full((states.shape[0],), float("-inf"), device=states.device, dtype=wide)
        for start in range(1, table.shape[0], chunk):
            logits = states @ table[start : start + chunk].T
            lse = torch.logaddexp(lse, torch.logsumexp(logits.to(wide), dim=1))
        target_logits = (states * table[targets]).sum(dim=1).to(wide).masked_fill(targets == 0, float("-inf"))
        ctx.save_for_backward(states, table, targets, lse)
        ctx.chunk = chunk
        return (lse - target_logits).to(states.dtype)

    @staticmethod
    def backward(ctx, grad_rows: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None]:
        states, table, targets, lse = ctx.saved_tensors
        want_states, want_table = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        scale = grad_rows.to(lse.dtype).view(-1, 1)
        grad_states = torch.zeros_like(states) if want_states else None
        grad_table = torch.zeros_like(table) if want_table else None
        for start in range(1, table.shape[0], ctx.chunk):
            items = table[start : start + ctx.chunk]
            probs = (states @ items.T).to(lse.dtype).sub_(lse.view(-1, 1)).exp_().mul_(scale).to(states.dtype)
            if want_states:
                torch.addmm(grad_states, probs, items, out=grad_states)  # in place (as addmm_, which FLOP counters miss)
            if want_table:
                torch.mm(probs.T, states, out=grad_table[start : start + ctx.chunk])
        # the target's -1; a target 0 sits in the -inf column, which passes no gradient (as in ``policy.scores``)
        target_scale = scale.masked_fill(targets.view(-1, 1) == 0, 0.0).to(states.dtype)
        if want_states:
            grad_states.sub_(table[targets] * target_scale)
        if want_table:
            grad_table.index_add_(0, targets, states * -target_scale)
        return grad_states, grad_table, None, None


def catalog_cross_entropy(
    states: torch.Tensor,
    table: torch.Tensor,
    targets: torch.Tensor,
    *,
    chunk: int = DEFAULT_CHUNK,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> torch.Tensor:
    """``F.cross_entropy(scores, targets, ignore_index=..., reduction=...)`` where ``scores =
    states @ table^T`` with column 0 at -inf (``policy.scores``), computed ``chunk`` items at a time.

    Args:
        states: [n, d] user states.
        table: [N + 1, d] item table, row 0 the padding item.
        targets: [n] item ids in 1..N, or ``ignore_index`` for rows that carry no loss.
        chunk: items per block (the working memory is n x chunk); any size >= 1 gives the same loss.
        ignore_index, reduction: as in ``F.cross_entropy`` (``mean`` over the rows not ignored;
            with none left it is NaN there too; ``none``: [n], 0 at ignored rows).
    """
    check_inputs(states, table, targets, chunk, reduction)
    kept = targets != ignore_index
    bad = kept & ((targets < 0) | (targets >= table.shape[0]))
    if bool(bad.any()):
        raise ValueError(
            f"targets must be item ids in 0..{table.shape[0] - 1} or ignore_index={ignore_index}, got {targets[bad][:5].tolist()}"
        )
    every_row = bool(kept.all())
    rows = _CatalogCrossEntropy.apply(states if every_row else states[kept], table, targets if every_row else targets[kept], chunk)
    if reduction == "mean":
        return rows.mean()
    if reduction == "sum":
        return rows.sum()
    return rows if every_row else rows.new_zeros(len(targets)).masked_scatter(kept, rows)


def check_inputs(states: torch.Tensor, table: torch.Tensor, targets: torch.Tensor, chunk: int, reduction: str) -> None:
    """Shapes, dtypes and options, each failing with what was passed and what is needed."""
    if states.dim() != 2 or table.dim() != 2 or states.shape[1] != table.shape[1]:
        raise ValueError(f"states [n, d] and table [N + 1, d] must share d, got {tuple(states.shape)} and {tuple(table.shape)}")
    if targets.dim() != 1 or len(targets) != len(states):
        raise ValueError(f"targets must be [n] with n = {len(states)} (one per state), got {tuple(targets.shape)}")
    if targets.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"targets must be integer item ids, got {targets.dtype}")
    if table.shape[0] < 2:
        raise ValueError(f"the table needs the padding row and at least one item, got {table.shape[0]} rows")
    if states.dtype != table.dtype or states.device != table.device:
        raise ValueError(
            f"states and table must share dtype and device, got {states.dtype}/{states.device} and {table.dtype}/{table.device}"
        )
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be a positive number of items, got {chunk!r}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}")
