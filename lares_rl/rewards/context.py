"""What rewards and beyond-accuracy metrics may know about the catalog, built once per run.

A novelty reward needs item popularity, a diversity reward needs item categories or an item
table; none of that is in ``(slate, target)``. Rather than module-level state (which would leak
between runs and tests), the run builds one :class:`ItemContext` from the data (and the SPT
checkpoint) and hands it to whoever asks: a reward declares a field by naming it as a keyword
parameter (``def my_reward(slate, target, popularity): ...``) and :func:`bind_context` fills it
in, or refuses before training when the data set lacks it.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor

from lares_rl.core.errors import LaresError
from lares_rl.data.embedded import embedded_ml100k_item_path
from lares_rl.rewards.builtin import RewardFn, describe_reward

CONTEXT_FIELDS = ("popularity", "categories", "item_embeddings", "exposure")
EXPOSURE_K = 10  # the list length whose exposure counts: the top 10 every beyond-accuracy target is measured at
CATEGORY_COLUMN = "class"  # RecBole's name for an item's categories (MovieLens genres), space-separated


@dataclass(frozen=True)
class ItemContext:
    """Per-item facts, every tensor indexed by item id (row 0 = padding).

    - ``popularity`` float32 [N+1]: interactions in the training part (validation and test items
      never count, so no metric or reward peeks at held-out data).
    - ``categories`` float32 [N+1, C] multi-hot, or None when the data set has none.
    - ``item_embeddings`` float32 [N+1, d]: the frozen SPT item table, or None.
    - ``exposure`` float32 [N+1]: in how many users' top-10 the SPT model puts each item, scored
      on their training histories (the counts never depend on a held-out item), or None without an SPT model.
      Computed the first time something asks for it (one evaluation pass over the users), so runs
      that never use it do not pay for it; a run binds its reward (:func:`bind_context`) before
      training, so the counts are the SPT model's, not a model RPT has moved.
    """

    popularity: Tensor
    categories: Tensor | None = None
    item_embeddings: Tensor | None = None
    dataset: str = ""
    exposure_source: Callable[[], Tensor] | None = field(default=None, repr=False, compare=False)

    @functools.cached_property  # stored in the instance __dict__, which a frozen dataclass allows
    def exposure(self) -> Tensor | None:
        return None if self.exposure_source is None else self.exposure_source()

    def features(self) -> tuple[Tensor | None, str]:
        """The item vectors intra-list diversity is measured with, and their name for reports:
        categories where the data set has them (interpretable, model-free), else the item table;
        None (no ild@K) when there is neither, e.g. a custom policy without an item table."""
        if self.categories is not None:
            return self.categories, "categories"
        if self.item_embeddings is not None:
            return self.item_embeddings, "SPT item embeddings"
        return None, "nothing (no item categories and no item table, so ild@K is left out)"

    def require(self, name: str, who: str) -> Tensor:
        """Field ``name`` for ``who``; a field the data set lacks is one error saying what to use instead."""
        if name not in CONTEXT_FIELDS:
            raise LaresError(f"{who} asks for {name!r}, which is no reward context field; the fields are {', '.join(CONTEXT_FIELDS)}")
        value = getattr(self, name)
        if value is None:
            fix = {
                "categories": "it has no item file with a 'class' column (categories); use lares_rl.rewards.embedding_diversity, which reads the frozen SPT item embeddings",
                "item_embeddings": "this run has no SPT item table (the policy has no item_embedding)",
                "exposure": "this run has no SPT model to measure exposure with (build the context with the policy and dataset.max_len)",
            }.get(name, "")
            raise LaresError(f"{who} asks for {name!r}, which data set {self.dataset!r} does not have: {fix}")
        return value


def item_categories(data, dataset: Mapping) -> Tensor | None:
    """Multi-hot categories [N+1, C] from the item file's ``class`` column, or None without one.

    The item file is ``dataset.item_file``, or for the embedded MovieLens-100K the wheel's
    ``ml-100k.item`` (19 genres). Items the file does not list get an all-zero row.
    """
    path = dataset.get("item_file")
    if not path and dataset.get("path") is None and dataset.get("name") == "ml-100k":
        path = embedded_ml100k_item_path()
    if not path or not Path(path).expanduser().is_file():
        return None
    path = Path(path).expanduser()
    header = pd.read_csv(path, sep="\t", nrows=0, quoting=3).columns
    names = {str(name).split(":", 1)[0]: str(name) for name in header}
    item_col = str(dataset.get("item_col", "item_id")).split(":", 1)[0]
    if CATEGORY_COLUMN not in names or item_col not in names:
        return None
    frame = pd.read_csv(path, sep="\t", dtype=str, quoting=3, na_filter=False, usecols=[names[item_col], names[CATEGORY_COLUMN]])
    index = {str(original): i for i, original in enumerate(data.item_ids[1:], start=1)}
    rows, labels = [], []
    for original, classes in zip(frame[names[item_col]], frame[names[CATEGORY_COLUMN]]):
        if str(original) in index:
            for label in classes.split():
                rows.append(index[str(original)])
                labels.append(label)
    if not labels:
        return None
    vocabulary = {label: j for j, label in enumerate(sorted(set(labels)))}
    multi_hot = torch.zeros(data.num_items + 1, len(vocabulary))
    multi_hot[torch.tensor(rows), torch.tensor([vocabulary[label] for label in labels])] = 1.0
    return multi_hot


def context_needs(fn: RewardFn) -> list[str]:
    """The context fields ``fn`` (a function or a partial of one) takes and does not yet have bound."""
    base, bound = (fn.func, fn.keywords) if isinstance(fn, functools.partial) else (fn, {})
    try:
        parameters = inspect.signature(base).parameters
    except (TypeError, ValueError):  # a builtin or C callable: it takes no context by name
        return []
    return [name for name in CONTEXT_FIELDS if name in parameters and name not in bound]


def bind_context(fn: RewardFn, context: ItemContext | None) -> RewardFn:
    """``fn`` with every context field it names bound from ``context``; nested rewards (a
    partial's keyword that is a reward, or a dict of them, as in :func:`lares_rl.rewards.weighted`)
    are bound too. A field that is missing is an error now, before any training."""
    if isinstance(fn, functools.partial):
        keywords = {key: _bind_nested(value, context) for key, value in fn.keywords.items()}
        fn = functools.partial(fn.func, *fn.args, **keywords)
    needs = context_needs(fn)
    if not needs:
        return fn
    who = f"reward {describe_reward(fn)}"
    if context is None:
        raise LaresError(
            f"{who} asks for {', '.join(needs)}, but no item context was built for this run; build one with lares_rl.eval.exposure.build_item_context"
        )
    return functools.partial(fn, **{name: context.require(name, who) for name in needs})


def _bind_nested(value, context: ItemContext | None):
    if isinstance(value, Mapping):
        return {key: _bind_nested(item, context) for key, item in value.items()}
    if callable(value) and not isinstance(value, (Tensor, type)):
        return bind_context(value, context)
    return value
