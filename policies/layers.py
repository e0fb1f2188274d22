"""Sequence-encoder layers with the ``[B, L, d] -> [B, L, d]`` contract.

Each sublayer (attention, feed-forward, frequency filter) takes ``layer_norm``:

- ``post`` (default; SASRec's RecBole port and the LARES reference code): sublayer -> dropout ->
  residual -> LayerNorm (eps 1e-12);
- ``pre`` (the authors' RecBole 3.0 port of LARES): LayerNorm -> sublayer -> dropout -> residual;
  the stack of such layers then ends in one LayerNorm (:func:`final_norm`, used by the backbones).

They take ``valid`` [B, L] (True at real items) so that non-causal mixers (the FFT filters of
FMLP-Rec and BSARec) can zero padded positions and keep padding out of the user state.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LN_EPS = 1e-12
LAYER_NORMS = ("post", "pre")


def is_pre_norm(layer_norm: str) -> bool:
    """True for ``pre``; an unknown placement is a ValueError naming the config key."""
    if layer_norm not in LAYER_NORMS:
        raise ValueError(f"policy.layer_norm={layer_norm!r} is unknown; choose one of {LAYER_NORMS}")
    return layer_norm == "pre"


def final_norm(d_model: int, layer_norm: str) -> nn.LayerNorm | None:
    """The LayerNorm that closes a stack of pre-LN layers (whose residual stream is otherwise never
    normalised); None for post-LN layers, whose outputs already are."""
    return nn.LayerNorm(d_model, eps=LN_EPS) if is_pre_norm(layer_norm) else None


class FastDropout(nn.Module):
    """Inverted dropout with the same distribution as ``nn.Dropout``, drawn with ``rand_like``.

    On CPU, ``bernoulli_`` (what ``nn.Dropout`` uses) took a quarter of a SASRec training step;
    a uniform draw plus a comparison is about 3x faster (benchmarks/profile_step.py). The mask is
    built in place in the draw's own float buffer (compare, then scale), so the forward is one
    multiply and no bool-to-float copies; the values are identical to ``x * (u >= p) / (1 - p)``."""

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        return x * torch.rand_like(x).ge_(self.p).mul_(1.0 / (1.0 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p}"


class FeedForward(nn.Module):
    """d -> inner -> d with GELU, then dropout and residual, LayerNorm after (post) or before (pre)."""

    def __init__(self, d_model: int, inner_size: int, dropout: float, layer_norm: str = "post") -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_model, inner_size)
        self.fc2 = nn.Linear(inner_size, d_model)
        self.dropout = FastDropout(dropout)
        self.norm = nn.LayerNorm(d_model, eps=LN_EPS)
        self.pre_norm = is_pre_norm(layer_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pre_norm:
            return x + self.dropout(self.fc2(F.gelu(self.fc1(self.norm(x)))))
        return self.norm(x + self.dropout(self.fc2(F.gelu(self.fc1(x)))))


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention + dropout + residual, LayerNorm after (post) or before (pre).

    Histories are left-aligned (padding on the right), so a causal mask alone already keeps every
    real position from seeing padding; that lets us use the fused ``is_causal`` SDPA kernel.
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float, attn_dropout: float, layer_norm: str = "post") -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} must be divisible by n_heads={n_heads}")
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.attn_dropout = attn_dropout
        self.dropout = FastDropout(dropout)
        self.norm = nn.LayerNorm(d_model, eps=LN_EPS)
        self.pre_norm = is_pre_norm(layer_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, length, d = x.shape
        h = self.norm(x) if self.pre_norm else x
        q, k, v = self.qkv(h).view(b, length, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        p = self.attn_dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=p)
        update = self.dropout(self.out(y.transpose(1, 2).reshape(b, length, d)))
        return x + update if self.pre_norm else self.norm(x + update)

    def forward_at(self, x: torch.Tensor, rows: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        """:meth:`forward`'s output at one position per row, ``x[rows, last]`` -> [B, d]: keys and
        values still come from every position, but only that position is queried, projected and
        normalised (a user state reads nothing else in its final layer)."""
        b, length, d = x.shape
        head = d // self.n_heads
        h = self.norm(x) if self.pre_norm else x
        here = x[rows, last]
        q = F.linear(h[rows, last], self.qkv.weight[:d], self.qkv.bias[:d]).view(b, self.n_heads, 1, head)
        k, v = F.linear(h, self.qkv.weight[d:], self.qkv.bias[d:]).view(b, length, 2, self.n_heads, head).permute(2, 0, 3, 1, 4)
        seen = (torch.arange(length, device=x.device) <= last.unsqueeze(1)).view(b, 1, 1, length)
        p = self.attn_dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=seen, dropout_p=p)
        update = self.dropout(self.out(y.reshape(b, d)))
        return here + update if self.pre_norm else self.norm(here + update)


class TransformerLayer(nn.Module):
    """One SASRec layer: causal MHA sublayer then FFN sublayer (``layer_norm``: post or pre)."""

    causal = True

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        inner_size: int,
        dropout: float,
        attn_dropout: float | None = None,
        layer_norm: str = "post",
    ) -> None:
        super().__init__()
        self.attention = CausalSelfAttention(d_model, n_heads, dropout, dropout if attn_dropout is None else attn_dropout, layer_norm)
        self.ffn = FeedForward(d_model, inner_size, dropout, layer_norm)

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return self.ffn(self.attention(x))

    def forward_at(self, x: torch.Tensor, valid: torch.Tensor, rows: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        """``forward(x, valid)[rows, last]`` without computing the other positions."""
        if len(rows) == 1:
            # a one-row product takes the matrix-vector kernel, whose rounding differs from the
            # batched one: two identical rows keep a user's state independent of how many users
            # share the call (one-process and distributed RPT then make the same updates)
            return self.forward_at(x.expand(2, -1, -1), valid.expand(2, -1), torch.arange(2, device=x.device), last.expand(2))[:1]
        return self.ffn(self.attention.forward_at(x, rows, last))


class LearnableFilter(nn.Module):
    """FMLP-Rec's frequency-domain filter: rfft over positions, multiply by a learned complex
    weight, irfft back. Padded positions are zeroed first so their content cannot leak."""

    def __init__(self, d_model: int, max_len: int, dropout: float, layer_norm: str = "post") -> None:
        super().__init__()
        self.max_len = max_len
        self.weight = nn.Parameter(torch.randn(max_len // 2 + 1, d_model, 2) * 0.02)
        self.dropout = FastDropout(dropout)
        self.norm = nn.LayerNorm(d_model, eps=LN_EPS)
        self.pre_norm = is_pre_norm(layer_norm)

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        mask = valid.unsqueeze(-1)
        x = x * mask
        h = self.norm(x) * mask if self.pre_norm else x  # a normalised padded position (the LN bias) must not leak either
        spectrum = torch.fft.rfft(h, n=self.max_len, dim=1, norm="ortho")
        y = torch.fft.irfft(spectrum * torch.view_as_complex(self.weight), n=self.max_len, dim=1, norm="ortho")
        update = self.dropout(y[:, : x.shape[1]])
        return x + update if self.pre_norm else self.norm(x + update)


class FMLPLayer(nn.Module):
    """One FMLP-Rec layer (Zhou et al., WWW 2022): learnable filter then FFN. Not causal."""

    causal = False

    def __init__(self, d_model: int, inner_size: int, dropout: float, max_len: int, layer_norm: str = "post") -> None:
        super().__init__()
        self.filter = LearnableFilter(d_model, max_len, dropout, layer_norm)
        self.ffn = FeedForward(d_model, inner_size, dropout, layer_norm)

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return self.ffn(self.filter(x, valid))


class BSARecLayer(nn.Module):
    """One BSARec layer (Shin et al., AAAI 2024): alpha * LN(x + frequency rescaler(x)) +
    (1 - alpha) * LN(x + attention(x)), then FFN. The rescaler keeps the lowest ``c`` frequencies
    and adds the high band scaled by a learned beta^2. Not causal (the FFT sees the whole window).
    Pre-LN moves each branch's LayerNorm in front of its mixer: alpha * (x + rescaler(LN(x))) +
    (1 - alpha) * (x + attention(LN'(x)))."""

    causal = False

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        inner_size: int,
        dropout: float,
        max_len: int,
        alpha: float = 0.7,
        c: int = 5,
        layer_norm: str = "post",
    ) -> None:
        super().__init__()
        self.alpha = alpha
        self.c = c // 2 + 1
        self.max_len = max_len
        self.beta = nn.Parameter(torch.randn(1, 1, d_model))
        self.attention = CausalSelfAttention(d_model, n_heads, dropout, dropout, layer_norm)
        self.filter_dropout = FastDropout(dropout)
        self.norm = nn.LayerNorm(d_model, eps=LN_EPS)
        self.ffn = FeedForward(d_model, inner_size, dropout, layer_norm)
        self.pre_norm = is_pre_norm(layer_norm)

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        mask = valid.unsqueeze(-1)
        x = x * mask
        h = self.norm(x) * mask if self.pre_norm else x  # a normalised padded position (the LN bias) must not leak either
        spectrum = torch.fft.rfft(h, n=self.max_len, dim=1, norm="ortho")
        spectrum[:, self.c :, :] = 0
        low = torch.fft.irfft(spectrum, n=self.max_len, dim=1, norm="ortho")[:, : x.shape[1]]
        rescaled = low + self.beta**2 * (h - low)
        # each branch has its own residual + LayerNorm (as in the BSARec reference code), then blend
        update = self.filter_dropout(rescaled)
        filtered = x + update if self.pre_norm else self.norm(x + update)
        return self.ffn(self.alpha * filtered + (1 - self.alpha) * self.attention(x))
