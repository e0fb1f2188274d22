"""The backbone-compatibility study (the paper's second claim: the recurrent core improves other
sequence encoders): per data set, length and backbone, the plain backbone (``policy=sasrec
policy.backbone=<b>``, no core block) against LARES on the same backbone, on test with and without
the history masked, and the change the core brings.

Which run fills a side is a rule over the JSON, as in the headline: among the runs of that policy
on the same data set, max_len, training scheme and backbone, the one with the most seeds (3 is
enough), then the best mean validation NDCG@10. The history-masked columns are what BSARec's paper
reports (L=50), so its published Beauty row stands beside ours.
"""

from __future__ import annotations

import statistics

from report_headline import most_seeds_then_valid
from results_io import mean_std, training_scheme

# BSARec's paper, Amazon Beauty, L=50, history masked: (Recall@10, NDCG@10).
PUBLISHED = {("amazon-beauty", "bsarec"): (0.1008, 0.0611, "BSARec paper, L=50, history masked")}
SEEDS_TO_JUDGE = 3
COMMAND = "bash benchmarks/compatibility_table.sh plain-bsarec:0 lares-bsarec:0 plain-fmlp:0 lares-fmlp:0 ... (seeds 0-2)"


def backbone(run: dict) -> str:
    return run.get("policy_config", {}).get("backbone", "sasrec")


def pairs(runs: list[dict]) -> list[tuple[tuple, dict | None, dict | None]]:
    """``((dataset, max_len, scheme, backbone), plain, lares)`` for every setting with at least one side run."""
    keys = sorted({(r["dataset"], r["max_len"], training_scheme(r), backbone(r)) for r in runs if r["policy"] in ("sasrec", "lares")})

    def side(key: tuple, policy: str) -> dict | None:
        same = [r for r in runs if r["policy"] == policy and (r["dataset"], r["max_len"], training_scheme(r), backbone(r)) == key]
        return most_seeds_then_valid(same)

    return [(key, side(key, "sasrec"), side(key, "lares")) for key in keys if key[3] != "sasrec"]


def cells(run: dict | None) -> str:
    if run is None:
        return "0 | not run yet | - | - | -"
    seeds = run["seeds"]
    column = lambda split, metric: mean_std([s[split][metric] for s in seeds])  # noqa: E731
    return f"{len(seeds)} | {column('test', 'ndcg@10')} | {column('test', 'recall@10')} | {column('test_masked', 'ndcg@10')} | {column('test_masked', 'recall@10')}"


def core_change(plain: dict, lares: dict, split: str) -> str:
    """The core's change of mean test NDCG@10 on ``split``, judged only with 3 seeds a side."""
    mean = lambda run: statistics.mean(s[split]["ndcg@10"] for s in run["seeds"])  # noqa: E731
    gain = mean(lares) / mean(plain) - 1
    seeds = min(len(plain["seeds"]), len(lares["seeds"]))
    return f"{gain:+.1%}" + ("" if seeds >= SEEDS_TO_JUDGE else f" ({seeds} seed(s), not judged)")


def compatibility_section(runs: list[dict]) -> list[str]:
    lines = [
        "## Backbone compatibility: the recurrent core on other encoders",
        "",
        "| data set | L | scheme | backbone | model | seeds | test NDCG@10 | test Recall@10 | NDCG@10 (history masked) "
        "| Recall@10 (history masked) | the core's change of NDCG@10 (not masked / masked) |",
        "|---|---:|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    found = pairs(runs)
    for (dataset, max_len, scheme, name), plain, lares in found:
        setting = f"| {dataset} | {max_len} | {scheme} | {name}"
        change = (
            "-" if plain is None or lares is None else f"{core_change(plain, lares, 'test')} / {core_change(plain, lares, 'test_masked')}"
        )
        lines += [f"{setting} | plain | {cells(plain)} | - |", f"{setting} | LARES | {cells(lares)} | {change} |"]
        if (dataset, name) in PUBLISHED and max_len == 50:
            recall, ndcg, source = PUBLISHED[(dataset, name)]
            lines.append(f"{setting} | {source} (published) | - | - | - | {ndcg:.4f} | {recall:.4f} | - |")
    if not found:
        lines.append("| - | - | - | - | not run yet | 0 | - | - | - | - | - |")
    return lines + [
        "",
        "Plain = `policy=sasrec policy.backbone=<b>` (the backbone alone, one state); LARES = `policy=lares policy.backbone=<b>` "
        "(the same pre-block plus the recurrent core). Mean ± std over seeds, full ranking. A side is the run with the most "
        "seeds, then the best validation NDCG@10, on the same data set, length, scheme and backbone. The Beauty study "
        f"(L=50, dense, bucketed) is one resumable queue per core: `{COMMAND}`.",
        "",
    ]
