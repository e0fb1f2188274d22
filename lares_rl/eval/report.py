"""Plain-text result tables printed by the CLI and written into docs by the benchmarks."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

from lares_rl.metrics.beyond import BEYOND_NAMES
from lares_rl.metrics.ranking import METRIC_NAMES


def model_label(policy_name: str, rpt: bool = False) -> str:
    """A result row's label, the same in every command's table and in metrics.json: the model, not
    the stage. The policy's ``name`` (``name:`` in configs/policy/<option>.yaml, so any registered
    policy: ``sasrec``, ``lares``, ``mostpop``; a plug-in backbone keeps its policy's name unless
    ``policy.name=...`` gives the variant its own), with ``+rpt`` once RPT trained it: ``lares+rpt``."""
    return f"{policy_name}+rpt" if rpt else policy_name


def checkpoint_label(payload: Mapping) -> str:
    """:func:`model_label` of the model a checkpoint holds (its policy and the phase that wrote it)."""
    return model_label(str(payload["policy_config"]["name"]), rpt=payload.get("phase") == "rpt")


def results_table(results: Mapping[str, Mapping[str, float]], ks: Sequence[int]) -> str:
    """Markdown table: one row per model/stage, one column per metric@k, then the beyond-accuracy
    measures @10 when every row has them (all cut-offs are in metrics.json)."""
    columns = [f"{name}@{k}" for name in METRIC_NAMES for k in ks]
    columns += [f"{name}@10" for name in BEYOND_NAMES if all(f"{name}@10" in metrics for metrics in results.values())]
    lines = ["| model | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for label, metrics in results.items():
        lines.append(
            f"| {label} | "
            + " | ".join(f"{metrics[c]:.1f}" if c.startswith("popularity@") else f"{metrics[c]:.4f}" for c in columns)
            + " |"
        )
    return "\n".join(lines)


def comparison_table(rows: Mapping[str, tuple[Mapping[str, float], str]], changes: Mapping[str, str] | None = None) -> str:
    """Markdown table of test NDCG@10 and Recall@10 (and coverage@10, novelty@10 when every row has
    them), one row per model, each with how its training ended: a number from a capped run is a
    budget number, and the table must say so. ``changes`` (label -> text) adds each row's NDCG@10
    change against the row above with its paired-bootstrap interval (lares_rl/eval/paired.py)."""
    beyond = [name for name in ("coverage@10", "novelty@10") if all(name in metrics for metrics, _ in rows.values())]
    change_header = "NDCG@10 vs the row above | " if changes is not None else ""
    lines = [
        "| model | test NDCG@10 | test Recall@10 | " + "".join(f"test {name} | " for name in beyond) + change_header + "training ended |",
        "|---|---:|---:|" + "---:|" * len(beyond) + ("---:|" if changes is not None else "") + "---|",
    ]
    lines += [
        f"| {label} | {metrics['ndcg@10']:.4f} | {metrics['recall@10']:.4f} | "
        + "".join(f"{metrics[name]:.4f} | " for name in beyond)
        + (f"{changes.get(label, '')} | " if changes is not None else "")
        + f"{ended} |"
        for label, (metrics, ended) in rows.items()
    ]
    return "\n".join(lines)


def format_recommendations(recommender, data, user_index: int = 0, top_k: int = 10, shown_history: int = 5) -> str:
    """The top-k for one user's full known history (the next-item setting of the test split),
    with original item ids and titles when the data set has them."""
    start, stop = int(data.offsets[user_index]), int(data.offsets[user_index + 1])
    history = [str(data.item_ids[i]) for i in data.items[start : stop - 1]]
    with warnings.catch_warnings():  # the window keeps the most recent max_len items, as in evaluation
        warnings.simplefilter("ignore")
        result = recommender.recommend([history], top_k=top_k, exclude_seen=True)[0]
    titles = result.titles or [""] * len(result.items)

    def describe(item: str) -> str:
        index = data.encode_items([item])[0]
        title = data.item_titles[index[0]] if data.item_titles is not None and len(index) else ""
        return f"{item} {title}".rstrip()

    lines = [
        f"Top-{top_k} for user {data.user_ids[user_index]} (history of {len(history)} items; most recent: {', '.join(describe(i) for i in history[-shown_history:])}):"
    ]
    lines += [f"  {rank:2d}. {item:>8}  {title}" for rank, (item, title) in enumerate(zip(result.items, titles), start=1)]
    return "\n".join(lines)
