"""The LARES depth-recurrent reasoner (Liu et al., "LARES: Latent Reasoning for Sequential
Recommendation", arXiv 2505.16865), DESIGN section 1.

    X0  = Dropout(LN1(E[seq] + P))
    H   = PreBlock(X0)
    T0  = omega * TruncNormal(0, sigma, [-3 sigma, 3 sigma])          (or zeros)
    T_i = CoreBlock(LN2(f(T_{i-1}, H)))   for i = 1..k, core weights shared across steps
    h_i = T_i[length - 1];  s_i = h_i @ E^T (tied, full catalog, padding column at -inf)
          or with ``score_similarity=cosine``: s_i = cos(h_i, E) / tau (both L2-normalised)

SASRec is this class with ``n_core_layers = 0``: no core block, the single user state is
H[length - 1]. Both share every line of code below, which keeps the baseline honest.

NOTE (departure from the authors' code): the core block sees a validity mask so that non-causal
backbones (FFT filters) zero padded positions; with the default causal SASRec layers this is a
no-op because padding sits to the right of every real item.

The authors' later RecBole 3.0 port scores with cosine / tau (tau 0.07) and uses pre-LN layers;
both are options here (``score_similarity``, ``score_temperature``, ``layer_norm``) whose defaults
(dot, 1, post) are the original code's. Its zeroed padding embedding is what this class always does
(``padding_idx=0``: the row starts at zero and never receives a gradient).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lares_rl.policies.backbones import read_last, resolve_backbone
from lares_rl.policies.layers import LAYER_NORMS, FastDropout
from lares_rl.policies.steps import STEP_SAMPLERS, eval_steps, sample_steps

AGGREGATIONS = ("add", "concat", "gate")
T0_INITS = ("normal", "zero", "normal_train_only")
SCORE_SIMILARITIES = ("dot", "cosine")
COSINE_SCORE_TEMPERATURE = 0.07  # the authors' RecBole 3.0 port: cos(h, e) / 0.07
# Options added after checkpoints and resumable runs already existed: a saved policy config
# without one of them ran with this value (resume compares configs with these filled in).
OPTIONS_ADDED_LATER = {"layer_norm": "post", "score_similarity": "dot", "score_temperature": 1.0}
# Inference runs the layers on row chunks of about this many positions (rows x width): at d = 64 a
# chunk's largest activation (the 256-wide feed-forward input) then stays near a core's 2 MB L2
# cache instead of streaming a 1024-history batch through memory layer by layer
# (docs/results/eval_profile.md times several sizes).
INFERENCE_CHUNK_POSITIONS = 2048


def runs_inference(module: nn.Module) -> bool:
    """Eval mode without autograd: the only passes the inference shortcuts (row chunks, the final
    layer at the read position only) apply to. Training and gradient passes stay plain: there the
    activations are kept for the backward pass anyway and dropout would draw in a different order."""
    return not (module.training or torch.is_grad_enabled())


def inference_chunk_rows(module: nn.Module, batch: int, width: int) -> int | None:
    """Rows per chunk when ``module`` runs inference (:func:`runs_inference`) on more rows than
    one chunk holds, else None."""
    rows = max(1, INFERENCE_CHUNK_POSITIONS // max(1, width))
    if batch <= rows or not runs_inference(module):
        return None
    return rows


class LaresReasoner(nn.Module):
    """Per-step user states and full-catalog scores for item-id histories.

    Args:
        num_items: N; item ids are 1..N and 0 is padding.
        max_len: L, the history window (positions embedding size).
        d_model, n_heads, inner_size, dropout: layer sizes (defaults 64, 2, 256, 0.5).
        n_pre_layers, n_core_layers: depth of the pre-block and the shared core block (2, 2);
            ``n_core_layers = 0`` gives SASRec.
        backbone: registry name or dotted path for the pre-block (``sasrec``, ``fmlp``, ``bsarec``).
        core_backbone: same for the core block (defaults to ``backbone``).
        aggregation: input injection ``f``: ``add`` ((T + H) / 2), ``concat``, ``gate``.
        t0_init, t0_sigma, t0_omega: initial thought (``normal`` keeps noise at evaluation too).
        step_sampler, mean_recurrence, lognormal_s: the distribution of k during training.
        backbone_options: extra keyword arguments for the backbone factories (e.g. ``bsarec_alpha``).
        layer_norm: ``post`` (LayerNorm after each residual, SASRec and the reference) or ``pre``
            (before each sublayer, a final LayerNorm per block; the authors' RecBole 3.0 port).
        score_similarity, score_temperature: item scores are ``dot(h, e) / tau`` or
            ``cos(h, e) / tau`` (the port: cosine, 0.07); ``dot`` and 1 are the reference's. A
            ``score_temperature`` of None takes the similarity's: 1 for dot, 0.07 for cosine.
    """

    def __init__(
        self,
        num_items: int,
        max_len: int = 20,
        d_model: int = 64,
        n_heads: int = 2,
        inner_size: int = 256,
        dropout: float = 0.5,
        n_pre_layers: int = 2,
        n_core_layers: int = 2,
        backbone: str = "sasrec",
        core_backbone: str | None = None,
        aggregation: str = "add",
        t0_init: str = "normal",
        t0_sigma: float = 1.0,
        t0_omega: float = 3.0,
        step_sampler: str = "poisson_lognormal",
        mean_recurrence: int = 4,
        lognormal_s: float = 0.5,
        backbone_options: dict | None = None,
        layer_norm: str = "post",
        score_similarity: str = "dot",
        score_temperature: float | None = None,
    ) -> None:
        super().__init__()
        checks = {
            "policy.aggregation": (aggregation, AGGREGATIONS),
            "policy.t0_init": (t0_init, T0_INITS),
            "policy.step_sampler": (step_sampler, STEP_SAMPLERS),
            "policy.layer_norm": (layer_norm, LAYER_NORMS),
            "policy.score_similarity": (score_similarity, SCORE_SIMILARITIES),
        }
        for key, (value, allowed) in checks.items():
            if value not in allowed:
                raise ValueError(f"{key}={value!r} is unknown; choose one of {allowed}")
        if num_items < 1 or max_len < 1 or mean_recurrence < 1 or n_pre_layers < 0 or n_core_layers < 0:
            raise ValueError("num_items, max_len and policy.mean_recurrence must be >= 1, layer counts >= 0")
        if score_temperature is None:  # the temperature each similarity wants, so a search can switch the similarity alone
            score_temperature = COSINE_SCORE_TEMPERATURE if score_similarity == "cosine" else 1.0
        if isinstance(score_temperature, bool) or not isinstance(score_temperature, (int, float)) or not score_temperature > 0:
            raise ValueError(
                f"policy.score_temperature={score_temperature!r} must be a number > 0 or null (null: 1.0 for dot, "
                f"{COSINE_SCORE_TEMPERATURE} for cosine, the port's)"
            )
        self.num_items, self.max_len, self.d_model = num_items, max_len, d_model
        self.aggregation, self.t0_init, self.t0_sigma, self.t0_omega = aggregation, t0_init, t0_sigma, t0_omega
        self.step_sampler, self.mean_recurrence, self.lognormal_s = step_sampler, mean_recurrence, lognormal_s
        self.score_similarity, self.score_temperature = score_similarity, float(score_temperature)

        self.item_embedding = nn.Embedding(num_items + 1, d_model, padding_idx=0)
        self.position_embedding = nn.Embedding(max_len, d_model)
        self.input_norm = nn.LayerNorm(d_model, eps=1e-12)
        self.input_dropout = FastDropout(dropout)
        sizes = dict(
            d_model=d_model,
            n_heads=n_heads,
            inner_size=inner_size,
            dropout=dropout,
            max_len=max_len,
            layer_norm=layer_norm,
            **(backbone_options or {}),
        )
        self.pre_block = resolve_backbone(backbone)(n_layers=n_pre_layers, **sizes) if n_pre_layers else None
        self.core_block = (
            resolve_backbone(core_backbone or backbone, "policy.core_backbone" if core_backbone else "policy.backbone")(
                n_layers=n_core_layers, **sizes
            )
            if n_core_layers
            else None
        )
        if self.core_block is not None:
            self.core_norm = nn.LayerNorm(d_model, eps=1e-12)
            if aggregation == "concat":
                self.concat_proj = nn.Linear(2 * d_model, d_model)
            elif aggregation == "gate":
                self.gate_logit = nn.Parameter(torch.zeros(()))
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.data.normal_(0.0, 0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            module.bias.data.zero_()
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            module.weight.data[module.padding_idx].zero_()

    @property
    def recurrent(self) -> bool:
        """False for SASRec (no core block): one state, nothing to align across steps."""
        return self.core_block is not None

    @property
    def causal(self) -> bool:
        blocks = [b for b in (self.pre_block, self.core_block) if b is not None]
        return all(getattr(b, "causal", False) for b in blocks)

    def sample_steps(self, generator: torch.Generator | None = None) -> int:
        """k for one forward call: drawn in training, the fixed mean in evaluation, 0 for SASRec."""
        if not self.recurrent:
            return 0
        if self.training:
            return sample_steps(self.step_sampler, self.mean_recurrence, self.lognormal_s, generator)
        return eval_steps(self.step_sampler, self.mean_recurrence)

    def initial_thought(self, like: torch.Tensor) -> torch.Tensor:
        """T0 with the shape of H. Uses the global RNG so that ``torch.random.fork_rng`` + a seed replays it."""
        if self.t0_init == "zero" or (self.t0_init == "normal_train_only" and not self.training):
            return torch.zeros_like(like)
        noise = torch.empty_like(like)
        nn.init.trunc_normal_(noise, 0.0, self.t0_sigma, -3 * self.t0_sigma, 3 * self.t0_sigma)
        return self.t0_omega * noise

    def _aggregate(self, thought: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        if self.aggregation == "add":
            return (thought + context) / 2
        if self.aggregation == "concat":
            return self.concat_proj(torch.cat([thought, context], dim=-1))
        gate = torch.sigmoid(self.gate_logit)
        return gate * thought + (1 - gate) * context

    def context(self, seq: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """H = PreBlock(X0) for ``seq`` [B, L] (left-aligned) and the validity mask from ``lengths``
        (not from ``seq > 0``, so whatever sits after a history can never count as history)."""
        x, valid = self._embed(seq, lengths)
        return (self.pre_block(x, valid) if self.pre_block is not None else x), valid

    def _embed(self, seq: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """X0 and the validity mask."""
        positions = torch.arange(seq.shape[1], device=seq.device)
        valid = positions < lengths.unsqueeze(1)
        return self.input_dropout(self.input_norm(self.item_embedding(seq) + self.position_embedding(positions))), valid

    def core_step(self, thought: torch.Tensor, context: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """One reasoning step, T_i = CoreBlock(LN2(f(T_{i-1}, H))), on whatever rows are passed:
        adaptive halting (:mod:`lares_rl.policies.halting`) calls it on the still-active users only."""
        return self.core_block(self._core_input(thought, context), valid)

    def core_step_at(
        self, thought: torch.Tensor, context: torch.Tensor, valid: torch.Tensor, rows: torch.Tensor, last: torch.Tensor
    ) -> torch.Tensor:
        """``core_step(...)[rows, last]`` -> [B, d], computing only that position in the core
        block's final layer where the block allows it: for a step whose full state nobody reads."""
        return read_last(self.core_block, self._core_input(thought, context), valid, rows, last)

    def _core_input(self, thought: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return self.core_norm(self._aggregate(thought, context))

    def encode(
        self,
        seq: torch.Tensor,
        lengths: torch.Tensor,
        k: int | None = None,
        t0: torch.Tensor | None = None,
        all_positions: bool = False,
    ) -> torch.Tensor:
        """Per-step user states.

        Returns [B, k, d] (the last valid position of every step; [B, 1, d] for SASRec), or with
        ``all_positions`` [B, k, W, d] for dense training, W = the longest length in the batch. ``k``/``t0`` replay a rollout; by default
        k comes from :meth:`sample_steps` and T0 from :meth:`initial_thought`.
        """
        # Histories are left-aligned, so columns past the longest one hold only padding: dropping
        # them is exact (absolute positions are unchanged) and saves most of the work on short data.
        width = max(1, int(lengths.max())) if len(lengths) else seq.shape[1]
        seq = seq[:, :width]
        if t0 is not None:
            t0 = t0[:, :width]
        # Inference (eval mode, no autograd, last positions only) runs in row chunks and computes
        # only the read position in the final layer; training keeps the plain full-width pass, so
        # its dropout draws and saved activations are those of every earlier run.
        inference = not all_positions and runs_inference(self)
        chunk = inference_chunk_rows(self, len(lengths), width) if inference else None
        if chunk is None:
            return self._encode_window(seq, lengths, k, t0, all_positions, inference)
        # T0 is drawn first for the whole batch, with the shape the unchunked call draws, so every
        # user gets the same noise whatever the chunk size; every chunk keeps the batch's width, so
        # its products have the shapes (and float rounding) of the unchunked pass
        steps = self.sample_steps() if k is None else k
        if self.core_block is not None and t0 is None:
            t0 = self.initial_thought(self.item_embedding.weight.new_empty((*seq.shape, self.d_model)))
        parts = [
            self._encode_window(
                seq[start : start + chunk],
                lengths[start : start + chunk],
                steps,
                None if t0 is None else t0[start : start + chunk],
                False,
                True,
            )
            for start in range(0, len(lengths), chunk)
        ]
        return torch.cat(parts)

    def _encode_window(
        self, seq: torch.Tensor, lengths: torch.Tensor, k: int | None, t0: torch.Tensor | None, all_positions: bool, inference: bool
    ) -> torch.Tensor:
        """:meth:`encode` on histories already cut to their window; ``inference`` reads only the
        last position of the final layer."""
        rows, last = torch.arange(len(lengths), device=seq.device), (lengths - 1).clamp(min=0)

        def kept(state: torch.Tensor) -> torch.Tensor:
            # only the last real position is read unless dense training asks for all: picking it
            # per step avoids stacking k full [B, W, d] states just to gather one row of each
            return state if all_positions else state[rows, last]

        if self.core_block is None:
            if inference and self.pre_block is not None:
                return read_last(self.pre_block, *self._embed(seq, lengths), rows, last).unsqueeze(1)
            return kept(self.context(seq, lengths)[0]).unsqueeze(1)
        context, valid = self.context(seq, lengths)
        steps = self.sample_steps() if k is None else k
        if steps < 1:
            raise ValueError(f"number of reasoning steps k must be >= 1, got {steps}")
        thought = self.initial_thought(context) if t0 is None else t0
        step_states = []
        for step in range(1, steps + 1):
            if inference and step == steps:
                step_states.append(self.core_step_at(thought, context, valid, rows, last))
                break
            thought = self.core_step(thought, context, valid)
            step_states.append(kept(thought))
        return torch.stack(step_states, dim=1)

    def score_operands(self, states: torch.Tensor, items: slice | torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(queries [..., d], item table [n, d]) whose product ``queries @ table.T`` is the item
        scores: the one place the scoring options act, so the full, chunked, sampled and fused
        scorers all score alike. ``items``: the rows of the tied table to return (a slice or 1-D
        tensor of ids); None: all N + 1 rows, row 0 being padding, which every scorer of the whole
        table must mask (as :meth:`scores` does). Cosine L2-normalises both sides; the temperature
        divides the queries. The defaults (dot, 1) return ``states`` and the table untouched."""
        table = self.item_embedding.weight if items is None else self.item_embedding.weight[items]
        if self.score_similarity == "cosine":
            states, table = F.normalize(states, dim=-1), F.normalize(table, dim=-1)
        if self.score_temperature != 1.0:
            states = states / self.score_temperature
        return states, table

    def scores(self, states: torch.Tensor) -> torch.Tensor:
        """[..., d] -> [..., N + 1] scores against the tied item table (:meth:`score_operands`); padding at -inf."""
        queries, table = self.score_operands(states)
        logits = queries @ table.T
        logits[..., 0] = float("-inf")
        return logits

    def item_scores(self, states: torch.Tensor, items: slice | torch.Tensor) -> torch.Tensor:
        """[..., d] -> [..., n]: scores against the given items only (a slice or 1-D tensor of ids
        >= 1). Chunked top-K and sampled softmax use it so that no [..., N + 1] matrix is built."""
        queries, table = self.score_operands(states, items)
        return queries @ table.T

    def forward(self, seq: torch.Tensor, lengths: torch.Tensor, k: int | None = None) -> torch.Tensor:
        """Full-catalog scores of the final step, [B, N + 1]."""
        return self.scores(self.encode(seq, lengths, k)[:, -1])

    def extra_repr(self) -> str:
        params = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return f"num_items={self.num_items}, max_len={self.max_len}, recurrent={self.recurrent}, trainable_params={params}"
