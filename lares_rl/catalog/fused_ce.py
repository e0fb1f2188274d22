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

Under bf16 autocast (``precision=bf16``, lares_rl/core/precision.py) the chunk products run in bf16
and the running log-sum-exp, the loss and the sums of the gradient over chunks in fp32.
"""

from __future__ import annotations

import torch

DEFAULT_CHUNK = 512  # items per block: 256-1024 were equally fast at 1,349-24,587 items on this CPU, 2048+ slower (docs/speed_profile.md)
# Below this many items the whole logit matrix (770 positions x 2,048 x 4 B = 6 MB) stays in cache and
# the two paths measured alike within a step (ML-100K, 1,349 items); from about 2,000 items on the
# fused one is faster (1.35x at 3,000, 2.4x at 24,587 items, forward + backward; docs/speed_profile.md).
FASTER_FROM_ITEMS = 2048
REDUCTIONS = ("mean", "sum", "none")


class _CatalogCrossEntropy(torch.autograd.Function):
    """Per-row losses ``lse_j>=1(s . e_j) - s . e_target``; the module docstring gives the passes.
    ``product``: the dtype the chunk products run in (the inputs' own, or bf16 under autocast); the
    log-sum-exp and the gradients accumulate in fp32 at least whatever it is."""

    @staticmethod
    def forward(ctx, states: torch.Tensor, table: torch.Tensor, targets: torch.Tensor, chunk: int, product: torch.dtype) -> torch.Tensor:
        wide = torch.promote_types(states.dtype, torch.float32)  # fp32 at least, whatever the product's dtype
        queries, items = states.to(product), table.to(product)  # no copies when the inputs are already in that dtype
        lse = torch.full((states.shape[0],), float("-inf"), device=states.device, dtype=wide)
        for start in range(1, items.shape[0], chunk):
            logits = queries @ items[start : start + chunk].T
            lse = torch.logaddexp(lse, torch.logsumexp(logits.to(wide), dim=1))
        target_logits = (queries * items[targets]).sum(dim=1).to(wide).masked_fill(targets == 0, float("-inf"))
        ctx.save_for_backward(queries, items, targets, lse)
        ctx.chunk, ctx.grad_dtype = chunk, states.dtype
        return (lse - target_logits).to(states.dtype)

    @staticmethod
    def backward(ctx, grad_rows: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None, None]:
        queries, table, targets, lse = ctx.saved_tensors
        want_states, want_table = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        scale = grad_rows.to(lse.dtype).view(-1, 1)
        grad_states = torch.zeros(queries.shape, dtype=lse.dtype, device=queries.device) if want_states else None
        grad_table = torch.zeros(table.shape, dtype=lse.dtype, device=table.device) if want_table else None
        for start in range(1, table.shape[0], ctx.chunk):
            items = table[start : start + ctx.chunk]
            probs = (queries @ items.T).to(lse.dtype).sub_(lse.view(-1, 1)).exp_().mul_(scale).to(queries.dtype)
            if want_states:
                _add_product(grad_states, probs, items)
            if want_table:
                _write_product(grad_table[start : start + ctx.chunk], probs.T, queries)
        # the target's -1; a target 0 sits in the -inf column, which passes no gradient (as in ``policy.scores``)
        target_scale = scale.masked_fill(targets.view(-1, 1) == 0, 0.0).to(lse.dtype)
        if want_states:
            grad_states.sub_(table[targets] * target_scale)
        if want_table:
            grad_table.index_add_(0, targets, queries * -target_scale)
        return (
            None if grad_states is None else grad_states.to(ctx.grad_dtype),
            None if grad_table is None else grad_table.to(ctx.grad_dtype),
            None,
            None,
            None,
        )


def _add_product(total: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """``total += a @ b``: in place when the dtypes match, else the product in ``a``'s dtype (bf16)
    added in ``total``'s (fp32), so the sum over chunks is an fp32 one."""
    if total.dtype == a.dtype:
        torch.addmm(total, a, b, out=total)  # in place (as addmm_, which FLOP counters miss)
    else:
        total.add_(a @ b)


def _write_product(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """``out[:] = a @ b``, computed in ``a``'s dtype and stored in ``out``'s."""
    if out.dtype == a.dtype:
        torch.mm(a, b, out=out)
    else:
        out.copy_(a @ b)


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

    Under autocast (``precision=bf16``) the chunk products run in autocast's dtype, as autocast
    runs a matrix product, while the log-sum-exp, the loss (as autocast's ``F.cross_entropy``) and
    the gradient sums over chunks are fp32; ``states`` and ``table`` may then differ in dtype.
    """
    device = states.device.type
    product = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None
    if product is not None:
        states, table = (
            states.to(torch.promote_types(states.dtype, torch.float32)),
            table.to(torch.promote_types(table.dtype, torch.float32)),
        )
    check_inputs(states, table, targets, chunk, reduction)
    kept = targets != ignore_index
    bad = kept & ((targets < 0) | (targets >= table.shape[0]))
    if bool(bad.any()):
        raise ValueError(
            f"targets must be item ids in 0..{table.shape[0] - 1} or ignore_index={ignore_index}, got {targets[bad][:5].tolist()}"
        )
    every_row = bool(kept.all())
    rows_in = (states if every_row else states[kept], table, targets if every_row else targets[kept], chunk)
    if product is None:
        rows = _CatalogCrossEntropy.apply(*rows_in, states.dtype)
    else:
        with torch.autocast(device, enabled=False):  # inside, only the products run in ``product``; nothing else is recast
            rows = _CatalogCrossEntropy.apply(*rows_in, product)
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
