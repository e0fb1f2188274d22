"""Slate distributions over final-step scores [..., N + 1]: what turns a rollout into a ranked
slate of K distinct items, with the log-prob an RPT loss needs (DESIGN section 3).

:class:`TopKSlate` (``exploration="latent"``, the LARES reference: the latent trajectory is the
only exploration, the slate is the top-K), :class:`CategoricalSlate` (first slot sampled from
softmax, the rest filled by top-K) and :class:`PlackettLuceSlate` (Gumbel-top-K slate with its
Plackett-Luce log-prob) are ``torch.distributions`` for a ProbabilisticActor;
:class:`ChunkedTopKSlate` is the top-K slate of a state scored in item chunks.
"""

from __future__ import annotations

import torch
import torch.distributions as D
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torch import nn

from lares_rl.catalog.topk import chunked_top_k, item_scorer
from lares_rl.policies.catalog_softmax import final_entropy


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
