"""Evaluation over reasoning depth: metrics at k in {1, 2, 4, 8, 12, 16} for one checkpoint."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from lares_rl.core.atomic import atomic_write_json, atomic_write_text  # noqa: E402
from lares_rl.core.errors import LaresError  # noqa: E402
from lares_rl.core.tracking import progress  # noqa: E402
from lares_rl.eval.evaluation import EvalConfig, evaluate_policy  # noqa: E402


def sweep_depths(policy: nn.Module, data, max_len: int, cfg: EvalConfig, device: torch.device) -> list[dict]:
    """One row per k: ``{"k": k, **metrics}`` on ``cfg.split``; one evaluation pass per depth, so
    progress is per depth (each pass shows its own batches). With ``cfg.halt_tol`` each k is the
    cap of adaptive halting and the rows carry ``mean_steps``."""
    if not getattr(policy, "recurrent", False):
        raise LaresError("sweep-k needs a recurrent policy (a core block); SASRec has a single state")
    depths = progress(cfg.sweep_ks, len(cfg.sweep_ks), f"sweep-k {cfg.split}", unit="depth", every=5.0)
    return [{"k": int(k), **evaluate_policy(policy, data, cfg.split, max_len, cfg, device, k=int(k))} for k in depths]


def write_sweep(rows: list[dict], out_dir: Path, title: str, stem: str = "sweep_k") -> dict[str, Path]:
    """``{stem}.json``, ``{stem}.md`` (table) and ``{stem}.png`` (NDCG@10 and Recall@10 vs k)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    columns = [c for c in ("recall@10", "ndcg@10", "mrr@10", "recall@20", "ndcg@20", "mean_steps") if c in rows[0]]
    depth = "k_max (adaptive halting)" if "mean_steps" in rows[0] else "k"
    lines = [f"### {title}", "", f"| {depth} | " + " | ".join(columns) + " |", "|---:|" + "---:|" * len(columns)]
    lines += [f"| {r['k']} | " + " | ".join(f"{r[c]:.4f}" for c in columns) + " |" for r in rows]
    paths = {"json": out_dir / f"{stem}.json", "markdown": out_dir / f"{stem}.md", "plot": out_dir / f"{stem}.png"}
    atomic_write_json(paths["json"], rows)
    atomic_write_text(paths["markdown"], "\n".join(lines) + "\n")
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for metric in ("ndcg@10", "recall@10"):
        ax.plot([r["k"] for r in rows], [r[metric] for r in rows], marker="o", label=metric)
    ax.set_xlabel("most reasoning steps k_max (adaptive halting)" if "mean_steps" in rows[0] else "reasoning steps k")
    ax.set_ylabel("metric")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = paths["plot"].with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(paths["plot"])
    return paths
