"""Backbone registry: the pre-block and the core block of the reasoner are built from here.

A backbone is a factory ``(d_model, n_heads, inner_size, dropout, max_len, n_layers, layer_norm) -> nn.Module``
whose module maps ``(x [B, L, d], valid [B, L] bool) -> [B, L, d]``; ``layer_norm`` is ``post`` or
``pre`` (``policy.layer_norm``: where each sublayer's LayerNorm sits, see :mod:`lares_rl.policies.layers`). Add one either with
``@register_backbone("name")`` or by naming a dotted path (``policy.backbone=my_pkg.blocks.GRUBlock``):
any callable accepting those keyword arguments (extra ones are ignored via ``**kwargs``) works,
and the trainers never need to change.

A module may also offer ``forward_at(x, valid, rows, last) -> [B, d]``, its output at one position
per row (``LayerStack`` does): inference reads only each user's last position, so the reasoner
then skips the other positions of the final layer.

A module may set ``causal = False`` (the FFT filters do); dense training, which supervises every
position of a window at once, is only valid for causal backbones and refuses the others.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import torch
from torch import nn

from lares_rl.policies.layers import BSARecLayer, FMLPLayer, TransformerLayer, final_norm

BackboneFactory = Callable[..., nn.Module]
BACKBONES: dict[str, BackboneFactory] = {}


def register_backbone(name: str) -> Callable[[BackboneFactory], BackboneFactory]:
    def decorator(factory: BackboneFactory) -> BackboneFactory:
        if name in BACKBONES:
            raise ValueError(f"backbone {name!r} is already registered")
        BACKBONES[name] = factory
        return factory

    return decorator


class LayerStack(nn.Module):
    """n layers applied in order, each seeing the validity mask; ``norm`` (pre-LN stacks, see
    :func:`lares_rl.policies.layers.final_norm`) normalises the last layer's output."""

    def __init__(self, layers: list[nn.Module], norm: nn.Module | None = None) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.causal = all(getattr(layer, "causal", False) for layer in layers)
        self.norm = norm  # None adds no parameters: post-LN stacks keep their checkpoint keys

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, valid)
        return self._normed(x)

    def _normed(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.norm is None else self.norm(x)

    def forward_at(self, x: torch.Tensor, valid: torch.Tensor, rows: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        """``forward(x, valid)[rows, last]`` -> [B, d]. Every layer but the last needs all
        positions (the next layer attends to them); the last one computes only the read position
        when it offers ``forward_at`` (TransformerLayer does), else it runs in full."""
        if not len(self.layers):
            return self._normed(x[rows, last])
        for layer in self.layers[:-1]:
            x = layer(x, valid)
        return self._normed(read_last(self.layers[-1], x, valid, rows, last))


def read_last(module: nn.Module, x: torch.Tensor, valid: torch.Tensor, rows: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
    """``module(x, valid)[rows, last]``, through ``module.forward_at`` when it offers one (only that
    position computed), else the full pass and a gather. Works for a layer or a whole block."""
    if hasattr(module, "forward_at"):
        return module.forward_at(x, valid, rows, last)
    return module(x, valid)[rows, last]


@register_backbone("sasrec")
def sasrec_block(
    *, d_model: int, n_heads: int, inner_size: int, dropout: float, n_layers: int, layer_norm: str = "post", **_: object
) -> nn.Module:
    layers = [TransformerLayer(d_model, n_heads, inner_size, dropout, layer_norm=layer_norm) for _ in range(n_layers)]
    return LayerStack(layers, final_norm(d_model, layer_norm))


@register_backbone("fmlp")
def fmlp_block(
    *, d_model: int, inner_size: int, dropout: float, max_len: int, n_layers: int, layer_norm: str = "post", **_: object
) -> nn.Module:
    return LayerStack(
        [FMLPLayer(d_model, inner_size, dropout, max_len, layer_norm) for _ in range(n_layers)], final_norm(d_model, layer_norm)
    )


@register_backbone("bsarec")
def bsarec_block(
    *,
    d_model: int,
    n_heads: int,
    inner_size: int,
    dropout: float,
    max_len: int,
    n_layers: int,
    bsarec_alpha: float = 0.7,
    bsarec_c: int = 5,
    layer_norm: str = "post",
    **_: object,
) -> nn.Module:
    layers = [BSARecLayer(d_model, n_heads, inner_size, dropout, max_len, bsarec_alpha, bsarec_c, layer_norm) for _ in range(n_layers)]
    return LayerStack(layers, final_norm(d_model, layer_norm))


def resolve_backbone(name: str, key: str = "policy.backbone") -> BackboneFactory:
    """A registered name, or a dotted path ``package.module.Factory`` to a user's factory/class;
    ``key`` is the config key errors name."""
    if name in BACKBONES:
        return BACKBONES[name]
    if "." in name:
        module_name, _, attr = name.rpartition(".")
        try:
            return getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as err:
            raise ValueError(f"{key}={name!r}: cannot import {attr!r} from {module_name!r} ({err})") from err
    raise ValueError(f"{key}={name!r} is unknown; registered backbones: {sorted(BACKBONES)}, or give a dotted path to your own module")
