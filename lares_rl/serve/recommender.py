"""Top-k recommendations from a trained checkpoint, in the data set's ORIGINAL item ids.

    rec = Recommender.from_checkpoint("runs/.../checkpoints/spt_best.pt", deterministic=True)
    [r] = rec.recommend([["50", "181", "258"]], top_k=5)
    r.items, r.scores, r.titles, r.unknown_items, r.truncated

Item ids are compared as strings (``50`` and ``"50"`` are the same item). Per history:

* ids missing from the checkpoint's catalog are skipped for scoring and listed in
  ``unknown_items`` (never dropped silently);
* a history with more than ``max_len`` known items keeps its most recent ``max_len`` (the window
  the model was trained on); ``truncated`` says so and each call emits ONE
  :class:`HistoryTruncatedWarning` that counts the truncated histories;
* with ``exclude_seen`` every known item of the WHOLE history (also the part cut off by the
  window) is excluded; the padding item is never recommended. When fewer than ``top_k`` items are
  left after excluding, the list is shorter than ``top_k``;
* an empty history, or one with no known id, has nothing for the model to read: by default it is
  an error, with ``cold_start=True`` it gets the items most often interacted with in the training
  data (``Recommendation.cold_start``; scores are those training counts);
* ``on_invalid="record"`` answers a batch the way a service does: a history that cannot be
  answered becomes a :class:`Recommendation` whose ``error`` says why, the others are answered.

Randomness: LARES draws its initial thought T0 from the global torch RNG at evaluation too (policy
``t0_init="normal"``), so two calls on the same history may rank differently; ``seed=`` (or
``torch.manual_seed`` before a call) replays it. ``deterministic=True`` sets ``t0_init="zero"``
on the loaded policy and fixes the depth k (the policy's evaluation depth, or the given ``k``): an identical call (same
histories, same ``batch_size``) then gives bit-identical output. Scoring the same history inside a
different batch can move scores in the last float bits (BLAS blocking), not the ranking in
practice. Dropout is always off (eval mode).

Adaptive depth: ``halt_tol=`` stops each history's reasoning once its state has settled (relative
change per step below the tolerance; at most ``k_max`` steps, default the fixed depth), so easy
histories cost fewer steps; ``Recommendation.steps`` says how many each one took.
"""

from __future__ import annotations

import contextlib
import numbers
import warnings
from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lares_rl.catalog.topk import check_chunk, chunked_top_k, item_scorer
from lares_rl.core.checkpoint import load_checkpoint, policy_from_checkpoint
from lares_rl.core.errors import LaresError
from lares_rl.core.runtime import resolve_device
from lares_rl.eval.adaptive_depth import check_halting, check_halting_applies, default_depth
from lares_rl.eval.evaluation import check_depth_applies
from lares_rl.policies.halting import encode_until_settled

ItemId = str | int


class HistoryTruncatedWarning(UserWarning):
    """Some histories had more known items than the checkpoint's ``max_len`` window."""


class InvalidHistoryError(LaresError):
    """One history cannot be scored; ``index`` is its position in the ``histories`` argument."""

    def __init__(self, index: int, reason: str) -> None:
        super().__init__(f"history {index} {reason}")
        self.index, self.reason = index, reason


@dataclass
class Recommendation:
    """Top-k items for one history, best first.

    ``items``: original item ids; ``scores``: the model's dot-product scores (descending), or the
    training interaction counts of a cold-start answer; ``titles``: item titles when the checkpoint
    has them, else None; ``unknown_items``: history ids not in the catalog (skipped);
    ``truncated``: the history had more than ``max_len`` known items; ``cold_start``: the most
    popular items, because the history had no known item; ``error``: why the history could not be
    answered (only with ``on_invalid="record"``; ``items`` is then empty); ``steps``: reasoning
    steps the model took for this history (the fixed depth, or where adaptive halting stopped; None
    for a policy without a reasoning core, a cold start or an error).
    """

    items: list[str]
    scores: list[float]
    titles: list[str] | None
    unknown_items: list[str]
    truncated: bool
    cold_start: bool = False
    error: str | None = None
    steps: int | None = None


class Recommender:
    """A policy plus its item catalog, ready to rank the full catalog for raw histories.

    Args:
        policy: a module with ``encode(seq, lengths, k)`` -> [B, k, d] and ``scores(states)`` ->
            [..., N + 1] (``LaresReasoner`` or any policy following that contract).
        item_ids: original id of every internal index; index 0 is padding (``"<pad>"``).
        max_len: the history window the policy was trained with.
        item_titles: one title per index (index 0 unused) or None.
        device: where the policy lives and runs.
        k: reasoning depth; None uses the policy's evaluation depth.
        deterministic: zero T0 noise and fixed k, so identical input gives identical output.
        item_counts: training interactions per index (index 0 unused), for cold-start answers;
            checkpoints store it.
        item_chunk: score the catalog this many items at a time with a running top-K, so memory
            does not grow with the catalog (needs ``policy.item_scores``); None scores it at once.
        halt_tol: adaptive depth: each history stops once its state's relative change per step is
            below this (None: the fixed depth ``k``).
        k_max: most steps with ``halt_tol`` (None: ``k``, else the policy's evaluation depth).

    Usually built with :meth:`from_checkpoint`.
    """

    def __init__(
        self,
        policy: nn.Module,
        item_ids: Sequence[str],
        max_len: int,
        item_titles: Sequence[str] | None = None,
        device: torch.device | str = "cpu",
        k: int | None = None,
        deterministic: bool = False,
        item_counts: Sequence[int] | None = None,
        item_chunk: int | None = None,
        halt_tol: float | None = None,
        k_max: int | None = None,
    ) -> None:
        if k is not None and (isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1):
            raise LaresError(
                f"k={k!r} is invalid; the number of reasoning steps must be an integer >= 1 (or None for the checkpoint's evaluation depth)"
            )
        if max_len < 1:
            raise LaresError(f"max_len={max_len} must be >= 1")
        check_depth_applies(policy, k, "k")
        check_chunk(item_chunk, "item_chunk")
        self.item_chunk = item_chunk
        self._score_items = None if item_chunk is None else item_scorer(policy, "item_chunk")
        check_halting(halt_tol, k_max, "halt_tol", "k_max")
        check_halting_applies(policy, halt_tol, "halt_tol")
        self.device = torch.device(device)
        self.policy = policy.to(self.device).eval()
        self.item_ids = [str(x) for x in item_ids]
        self.num_items = len(self.item_ids) - 1
        self.item_titles = None if item_titles is None else [str(x) for x in item_titles]
        self.max_len = int(max_len)
        self.deterministic = bool(deterministic)
        if self.deterministic:
            if hasattr(self.policy, "t0_init"):
                self.policy.t0_init = "zero"
            if k is None and getattr(self.policy, "recurrent", False):
                k = self.policy.sample_steps()  # eval mode: the fixed evaluation depth
        self.k = None if k is None else int(k)
        self.halt_tol = None if halt_tol is None else float(halt_tol)
        recurrent = getattr(self.policy, "recurrent", False)
        self._depth = (self.k or default_depth(self.policy)) if recurrent else None  # steps of a fixed-depth call
        self.k_max = None if halt_tol is None else int(k_max or self._depth)
        self.item_counts = None if item_counts is None else np.asarray(item_counts, dtype=np.int64)
        if self.item_counts is not None and len(self.item_counts) != len(self.item_ids):
            raise LaresError(
                f"item_counts has {len(self.item_counts)} entries but the catalog has {len(self.item_ids)} (num_items + 1); pass one count per index"
            )
        # internal index of every catalog id; "<pad>" (index 0) is deliberately not a catalog item
        self._index = {item: i for i, item in enumerate(self.item_ids) if i > 0}

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        device: str = "auto",
        k: int | None = None,
        deterministic: bool = False,
        item_chunk: int | None = None,
        halt_tol: float | None = None,
        k_max: int | None = None,
    ) -> Recommender:
        """Load a checkpoint written by lares-rl (any problem is a LaresError naming the file).

        ``device``: ``auto`` (cuda when available), ``cpu``, ``cuda`` or ``cuda:<n>``.
        """

        payload = load_checkpoint(path)
        missing = [key for key in ("dataset", "item_ids", "item_titles", "policy_config", "policy_state") if key not in payload]
        if missing:
            raise LaresError(f"checkpoint {path} lacks {', '.join(missing)}; the file is incomplete, retrain or restore it")
        dataset, item_ids, titles = payload["dataset"], payload["item_ids"], payload["item_titles"]
        try:
            num_items, max_len = int(dataset["num_items"]), int(dataset["max_len"])
        except (KeyError, TypeError, ValueError) as err:
            raise LaresError(
                f"checkpoint {path} has no valid dataset.num_items/max_len ({err!r}); the file is incomplete, retrain or restore it"
            ) from err
        if len(item_ids) != num_items + 1:
            raise LaresError(
                f"checkpoint {path} has {len(item_ids)} item_ids but dataset.num_items={num_items} (expected num_items + 1); the file is inconsistent, retrain or restore it"
            )
        if titles is not None and len(titles) != num_items + 1:
            raise LaresError(
                f"checkpoint {path} has {len(titles)} item_titles but dataset.num_items={num_items} (expected num_items + 1); the file is inconsistent, retrain or restore it"
            )
        resolved = resolve_device(device)
        policy = policy_from_checkpoint(payload, resolved)
        return cls(
            policy,
            item_ids,
            max_len,
            titles,
            resolved,
            k=k,
            deterministic=deterministic,
            item_counts=payload.get("item_counts"),
            item_chunk=item_chunk,
            halt_tol=halt_tol,
            k_max=k_max,
        )

    # ------------------------------------------------------------------ id remapping

    def _known(self, history: Sequence[ItemId], h: int) -> tuple[list[int], list[str]]:
        """Internal indices of the known items (in order) and the unknown ids of one history;
        either list may be empty (the caller decides whether that is an error or a cold start)."""
        # str/bytes would be split into characters, a set or mapping has no time order, a 0-d
        # array has no len(): all are refused instead of being scored as something else
        if (
            isinstance(history, (str, bytes, bytearray, memoryview, Set, Mapping))
            or not (hasattr(history, "__len__") and hasattr(history, "__iter__"))
            or getattr(history, "ndim", 1) != 1
        ):
            kind = type(history).__name__ + (f" of shape {tuple(history.shape)}" if hasattr(history, "shape") else "")
            raise InvalidHistoryError(h, f"must be a list of item ids, oldest first, got {kind}")
        index = self._index
        known, unknown = [], []
        for item in history:
            if type(item) is not str:
                if isinstance(item, bool) or not isinstance(item, (str, numbers.Integral)):
                    raise InvalidHistoryError(h, f"holds {item!r} of type {type(item).__name__}; item ids must be strings or integers")
                item = str(item)
            i = index.get(item)
            if i is None:
                unknown.append(item)
            else:
                known.append(i)
        return known, unknown

    def _parse(self, history: Sequence[ItemId], h: int, top_k: int, cold_start: bool) -> tuple[list[int], list[str]] | Recommendation:
        """(known, unknown) to score, or the cold-start answer of a history with nothing known."""
        known, unknown = self._known(history, h)
        if known:
            return known, unknown
        if cold_start:
            return self._popular(top_k, unknown)
        if not unknown:
            raise InvalidHistoryError(
                h, "is empty; every history needs at least one item id (or ask for a cold-start answer: cold_start=True, --cold-start)"
            )
        shown = ", ".join(repr(x) for x in unknown[:5]) + (", ..." if len(unknown) > 5 else "")
        raise InvalidHistoryError(
            h,
            f"has no item id known to the checkpoint's catalog ({shown}); check that the ids are the data set's original item ids (or ask for a cold-start answer: cold_start=True, --cold-start)",
        )

    def _popular(self, top_k: int, unknown: list[str]) -> Recommendation:
        """The ``top_k`` items most often interacted with in training (ties: lower index first)."""
        order = np.argsort(-self.item_counts[1:], kind="stable")[:top_k] + 1
        return Recommendation(
            items=[self.item_ids[i] for i in order],
            scores=[float(self.item_counts[i]) for i in order],
            titles=None if self.item_titles is None else [self.item_titles[i] for i in order],
            unknown_items=unknown,
            truncated=False,
            cold_start=True,
        )

    # ------------------------------------------------------------------ scoring

    @torch.inference_mode()
    def recommend_ids(
        self, seq: torch.Tensor, lengths: torch.Tensor, top_k: int, exclude: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Top-k over internal indices: ``seq`` [B, max_len] left-aligned, 0-padded; ``lengths`` [B];
        ``exclude`` [B, S] indices to mask (0 entries are harmless: padding is masked anyway).
        Returns (scores [B, top_k], indices [B, top_k], steps [B] or None) on the recommender's
        device, best first; masked items carry -inf; ``steps`` is the reasoning steps each row
        took (None for a policy without a reasoning core)."""
        seq, lengths = seq.to(self.device), lengths.to(self.device)
        if self.halt_tol is not None:
            states, steps = encode_until_settled(self.policy, seq, lengths, self.halt_tol, self.k_max)
        else:
            states = self.policy.encode(seq, lengths, self.k)[:, -1]
            steps = None if self._depth is None else torch.full_like(lengths, self._depth)
        if self.item_chunk is not None:
            history = None
            if exclude is not None:
                seen = exclude.to(self.device) > 0
                history = (torch.cat([seen.new_zeros(1, dtype=torch.long), seen.sum(1).cumsum(0)]), exclude.to(self.device)[seen])
            values, indices, _ = chunked_top_k(states, self._score_items, self.num_items, top_k, self.item_chunk, history=history)
            return values, indices, steps
        scores = self.policy.scores(states)
        scores[:, 0] = float("-inf")
        if exclude is not None:
            scores.scatter_(1, exclude.to(self.device), float("-inf"))
        values, indices = torch.topk(scores, top_k, dim=1)
        return values, indices, steps

    def recommend(
        self,
        histories: Sequence[Sequence[ItemId]],
        top_k: int = 10,
        exclude_seen: bool = True,
        batch_size: int = 1024,
        seed: int | None = None,
        *,
        cold_start: bool = False,
        on_invalid: str = "raise",
    ) -> list[Recommendation]:
        """One :class:`Recommendation` per history (original item ids, oldest first), in order.

        ``seed`` fixes this call's T0 noise (as ``eval.seed`` does for evaluation) without touching
        the global RNG: the same call (same histories, same ``batch_size``) gives the same output;
        the noise is drawn per batch, so other batches redraw it. None draws from the global RNG.

        ``cold_start``: an empty or all-unknown history gets the most popular training items
        instead of an error (needs a checkpoint that stores item counts). ``on_invalid``: "raise"
        (default) or "record", which answers every other history and returns a Recommendation
        with ``error`` set for each history that cannot be answered.

        Raises LaresError for a bad ``top_k``/``batch_size``/``exclude_seen``/``on_invalid`` or a
        ``histories`` that is not a list of histories, and (with ``on_invalid="raise"``)
        :class:`InvalidHistoryError` (a LaresError with ``.index``) for a history that is empty,
        unordered (set, dict), not 1-D, holds an id that is neither a string nor an integer, or
        has no known item.
        """
        if isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral) or not 1 <= top_k <= self.num_items:
            raise LaresError(f"top_k={top_k!r} is invalid; it must be an integer between 1 and the catalog size N={self.num_items}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
            raise LaresError(f"batch_size={batch_size!r} is invalid; it must be an integer >= 1")
        if not isinstance(exclude_seen, (bool, np.bool_)):
            raise LaresError(f"exclude_seen={exclude_seen!r} is invalid; it must be True or False")
        if isinstance(histories, (str, bytes, bytearray, Mapping)) or not isinstance(histories, Iterable):
            raise LaresError(f"histories must be a list of histories (each a list of item ids), got {type(histories).__name__}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
            raise LaresError(f"seed={seed!r} is invalid; it must be an integer or None")
        if on_invalid not in ("raise", "record"):
            raise LaresError(
                f"on_invalid={on_invalid!r} is invalid; use 'raise' (stop at the first bad history) or 'record' (answer the others)"
            )
        if cold_start and self.item_counts is None:
            raise LaresError(
                "cold_start=True needs item popularity, and this checkpoint was written before lares_rl stored it; retrain it, or answer without cold starts"
            )
        parsed = [self._parse_or_record(history, h, int(top_k), bool(cold_start), on_invalid) for h, history in enumerate(histories)]
        to_score = [p for p in parsed if isinstance(p, tuple)]
        with (
            contextlib.nullcontext() if seed is None else torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else [])
        ):
            if seed is not None:
                torch.manual_seed(int(seed))
            scored, truncated_count = self._score(to_score, int(top_k), bool(exclude_seen), batch_size)
        answers = iter(scored)
        results = [next(answers) if isinstance(p, tuple) else p for p in parsed]
        if truncated_count:
            warnings.warn(
                f"{truncated_count} of {len(parsed)} histories have more than max_len={self.max_len} known items; "
                f"the most recent {self.max_len} of each were used (see Recommendation.truncated)",
                HistoryTruncatedWarning,
                stacklevel=2,
            )
        return results

    def _parse_or_record(
        self, history: Sequence[ItemId], h: int, top_k: int, cold_start: bool, on_invalid: str
    ) -> tuple[list[int], list[str]] | Recommendation:
        """:meth:`_parse`, with an unanswerable history turned into an error record when asked."""
        try:
            return self._parse(history, h, top_k, cold_start)
        except InvalidHistoryError as err:
            if on_invalid == "raise":
                raise
            return Recommendation(items=[], scores=[], titles=None, unknown_items=[], truncated=False, error=f"the history {err.reason}")

    def _score(
        self, parsed: list[tuple[list[int], list]], top_k: int, exclude_seen: bool, batch_size: int
    ) -> tuple[list[Recommendation], int]:
        """Recommendations for parsed histories (known indices, unknown ids), and how many were truncated."""
        length_cap, results, truncated_count = self.max_len, [], 0
        for start in range(0, len(parsed), batch_size):
            chunk = parsed[start : start + batch_size]
            seq = np.zeros((len(chunk), length_cap), dtype=np.int64)
            lengths = np.empty(len(chunk), dtype=np.int64)
            for row, (known, _) in enumerate(chunk):
                window = known[-length_cap:]
                seq[row, : len(window)] = window
                lengths[row] = len(window)
            exclude = None
            if exclude_seen:
                exclude = np.zeros((len(chunk), max(len(known) for known, _ in chunk)), dtype=np.int64)
                for row, (known, _) in enumerate(chunk):
                    exclude[row, : len(known)] = known
                exclude = torch.from_numpy(exclude)
            values, indices, steps = self.recommend_ids(torch.from_numpy(seq), torch.from_numpy(lengths), top_k, exclude)
            row_steps = [None] * len(chunk) if steps is None else steps.cpu().tolist()
            for (known, unknown), row_values, row_indices, taken in zip(chunk, values.cpu().tolist(), indices.cpu().tolist(), row_steps):
                if exclude_seen and row_values[-1] == float("-inf"):  # fewer than top_k items left
                    keep = sum(v != float("-inf") for v in row_values)
                    row_values, row_indices = row_values[:keep], row_indices[:keep]
                truncated = len(known) > length_cap
                truncated_count += truncated
                results.append(
                    Recommendation(
                        items=[self.item_ids[i] for i in row_indices],
                        scores=row_values,
                        titles=None if self.item_titles is None else [self.item_titles[i] for i in row_indices],
                        unknown_items=unknown,
                        truncated=truncated,
                        steps=taken,
                    )
                )
        return results, truncated_count

    def __repr__(self) -> str:
        halting = "" if self.halt_tol is None else f", halt_tol={self.halt_tol}, k_max={self.k_max}"
        return f"Recommender(num_items={self.num_items}, max_len={self.max_len}, k={self.k}{halting}, deterministic={self.deterministic}, device={self.device})"
