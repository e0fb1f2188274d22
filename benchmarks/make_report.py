"""Generate the report, docs/results/README.md (and its plots), from the JSON files the benchmark scripts wrote.

    python benchmarks/make_report.py
    python benchmarks/make_report.py --results my_results/ --docs my_docs/   # another set of runs

Nothing in the report is typed by hand: every number comes from benchmarks/results/*.json and the
JSON the RPT, beyond-accuracy and gradient scripts wrote beside their pages in docs/results/, and
each table names the command and machine that produced it. Missing runs are listed as missing.
It opens with one headline table (report_headline.py) and writes only into the --docs folder:
docs/ keeps the guides people write, docs/results/ what the scripts generate.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from beyond_accuracy import markdown as beyond_markdown  # noqa: E402
from beyond_accuracy import write_plot as write_beyond_plot
from report_compatibility import compatibility_section
from report_headline import headline_section, quality_heading, rpt_heading
from report_main_table import main_table_section
from results_io import cost, mean_std, seed_commands, training_scheme, variant_tag, write_result_text  # noqa: E402
from rpt_benchmark import markdown as rpt_markdown  # noqa: E402
from rpt_benchmark import write_plot
from rpt_direction import markdown as direction_markdown  # noqa: E402
from rpt_direction import write_plot as write_direction_plot
from rpt_gradient_snr import markdown as snr_markdown  # noqa: E402
from spt_search import markdown_table as search_markdown  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
REPORT = "README.md"  # the report opens when docs/results/ is browsed
PUBLISHED_BEAUTY = {"BSARec (published, L=50, masked)": (0.1008, 0.0611), "ICLRec (published, L=50, masked)": (0.0744, 0.0403)}


def load_spt_runs(results: Path) -> list[dict]:
    runs = []
    for path in sorted(results.glob("*.json")):
        record = json.loads(path.read_text())
        if "seeds" in record and record["seeds"] and "spt" in record:
            runs.append(record)
    return runs


def spt_sources(seeds: list[dict]) -> str:
    """The SPT checkpoints an RPT record started from, named so that two records can be told apart."""
    names = {"/".join(Path(r["spt_checkpoint"]).parts[-4:-2]) for r in seeds}
    return ", ".join(sorted(names))


def label(run: dict) -> str:
    tag = variant_tag(run)
    return f"{run['policy']}{' ' + tag if tag else ''} ({training_scheme(run)}, L={run['max_len']})"


def is_capped_tag(run: dict) -> bool:
    """``--tag _<N>ep`` / ``_speed...`` mark runs capped on purpose (diagnosis, timing)."""
    tag = variant_tag(run)
    return tag.startswith("speed") or re.search(r"(^|_)\d+ep$", tag) is not None


def is_full_run(run: dict) -> bool:
    """Runs trained to early stopping, not capped on purpose for timing or diagnosis."""
    return not is_capped_tag(run)


def diagnostics_section(runs: list[dict]) -> list[str]:
    capped = [r for r in runs if is_capped_tag(r)]
    if not capped:
        return []
    lines = [
        "## Diagnostics (capped runs for diagnosis or timing, validation only)",
        "",
        "| run | epochs | best valid NDCG@10 | best valid Recall@10 | command (machine) |",
        "|---|---:|---:|---:|---|",
    ]
    for run in capped:
        for seed in run["seeds"]:
            lines.append(
                f"| {label(run)} seed {seed['seed']} | {seed['epochs_run']} | {seed['valid']['ndcg@10']:.4f} | {seed['valid']['recall@10']:.4f} "
                f"| `{seed_commands({**run, 'seeds': [seed]})}` ({run['machine']}) |"
            )
    return lines + [
        "",
        "Capped on purpose: to compare SPT variants on validation data at equal budget, or to time an epoch; not used for model selection on test.",
        "",
    ]


def stats_section(runs: list[dict]) -> list[str]:
    seen, lines = (
        set(),
        ["## Data sets", "", "| data set | users | items | interactions | avg length | sparsity |", "|---|---:|---:|---:|---:|---:|"],
    )
    for run in runs:
        if run["dataset"] in seen:
            continue
        seen.add(run["dataset"])
        s = run["stats"]
        lines.append(
            f"| {run['dataset']} | {s['users']:,} | {s['items']:,} | {s['interactions']:,} | {s['avg_len']:.2f} | {100 * s['sparsity']:.2f}% |"
        )
    return lines + ["", "Made by `lares-rl stats` processing (5-core, leave-one-out); numbers recorded by the benchmark runs below.", ""]


def quality_section(runs: list[dict]) -> list[str]:
    lines = ["## Test quality (full ranking, mean ± std over seeds)", ""]
    for dataset in sorted({r["dataset"] for r in runs}):
        lines += [
            quality_heading(dataset),
            "",
            "| model | seeds | Recall@10 | NDCG@10 | Recall@10 (history masked) | NDCG@10 (history masked) | epochs to best | stopped by "
            "| cost per seed | command (machine) |",
            "|---|---:|---:|---:|---:|---:|---:|---|---|---|",
        ]
        for run in [r for r in runs if r["dataset"] == dataset]:
            seeds = run["seeds"]
            col = lambda split, metric: mean_std([s[split][metric] for s in seeds])  # noqa: E731
            lines.append(
                f"| {label(run)} | {len(seeds)} | {col('test', 'recall@10')} | {col('test', 'ndcg@10')} | {col('test_masked', 'recall@10')} | {col('test_masked', 'ndcg@10')} "
                f"| {statistics.mean(s['best_epoch'] + 1 for s in seeds):.0f} | {stopped_by(run)} | {cost(seeds)} | `{seed_commands(run)}` ({run['machine']}) |"
            )
        if dataset == "amazon-beauty":
            for name, (hr, ndcg) in PUBLISHED_BEAUTY.items():
                lines.append(f"| {name} | - | - | - | {hr:.4f} | {ndcg:.4f} | - | - | - | paper |")
        same_data = [r for r in runs if r["dataset"] == dataset]
        lines += ["", *comparison_lines(same_data), *validation_selection_lines(same_data), ""]
    return lines


def validation_selection_lines(runs: list[dict]) -> list[str]:
    """Each model's run with the best mean validation NDCG@10 among its runs of >= 3 seeds on the
    same max_len and training scheme, and the test change between the two picks. Test never
    chooses; the candidate counts are printed because they need not be equal (the equal-budget
    comparison is the search section's)."""
    mean = lambda run, split: statistics.mean(s[split]["ndcg@10"] for s in run["seeds"])  # noqa: E731
    lines = []
    for max_len, scheme in sorted({(r["max_len"], training_scheme(r)) for r in runs}):
        picks = {}
        for policy in ("lares", "sasrec"):
            candidates = [
                r
                for r in runs
                if r["policy"] == policy and r["max_len"] == max_len and training_scheme(r) == scheme and len(r["seeds"]) >= 3
            ]
            if candidates:
                picks[policy] = (max(candidates, key=lambda r: mean(r, "valid")), len(candidates))
        if len(picks) < 2:
            continue
        (lares, n_lares), (sasrec, n_sasrec) = picks["lares"], picks["sasrec"]
        lines.append(
            f"- Chosen on validation among runs of 3+ seeds (L={max_len}, {scheme}): {label(lares)} of {n_lares} LARES runs (valid {mean(lares, 'valid'):.4f}) "
            f"and {label(sasrec)} of {n_sasrec} SASRec runs (valid {mean(sasrec, 'valid'):.4f}): test NDCG@10 {mean(lares, 'test'):.4f} vs {mean(sasrec, 'test'):.4f}, "
            f"{100 * (mean(lares, 'test') / mean(sasrec, 'test') - 1):+.1f}%. The candidate sets are whatever was run, not an equal budget."
        )
    return lines


def stopped_by(run: dict) -> str:
    """How each seed ended: early stopping (patience epochs without a gain) or the epoch cap. A
    capped seed whose best epoch is recent was still improving, so its numbers understate the model."""
    patience = run["spt"]["patience"]
    return per_seed(
        run["seeds"],
        [
            "patience" if s["epochs_run"] - 1 - s["best_epoch"] >= patience else f"cap at {s['epochs_run']} (best {s['best_epoch'] + 1})"
            for s in run["seeds"]
        ],
    )


def per_seed(seeds: list[dict], ends: list[str]) -> str:
    """One description when every seed ended alike, else "seed s: ..." for each."""
    return ends[0] if len(set(ends)) == 1 else "; ".join(f"seed {s['seed']}: {end}" for s, end in zip(seeds, ends))


def comparison_lines(runs: list[dict]) -> list[str]:
    """LARES vs SASRec on the same data, max_len and training scheme, against the +5% target.
    A LARES variant meets the SASRec run of its own tag (``tuned`` vs ``tuned``, ``sampled128``
    vs ``sampled128``) where there is one, else the untagged SASRec."""
    lines = []
    for lares in [r for r in runs if r["policy"] == "lares"]:
        bases = [
            r for r in runs if r["policy"] == "sasrec" and r["max_len"] == lares["max_len"] and training_scheme(r) == training_scheme(lares)
        ]
        same_tag = [r for r in bases if variant_tag(r) == variant_tag(lares)]
        for base in same_tag or [r for r in bases if not variant_tag(r)]:
            for metric in ("ndcg@10", "recall@10"):
                ours = statistics.mean(s["test"][metric] for s in lares["seeds"])
                theirs = statistics.mean(s["test"][metric] for s in base["seeds"])
                change = 100 * (ours / theirs - 1)
                few = min(len(lares["seeds"]), len(base["seeds"])) < 3
                verdict = (
                    ""
                    if metric != "ndcg@10"
                    else " (not judged against the +5% target before 3 seeds each)"
                    if few
                    else f" ({'meets' if change >= 5 else 'misses'} the +5% target)"
                )
                lines.append(
                    f"- {label(lares)} vs {label(base)}: test {metric} {change:+.1f}%{verdict} (means over {len(lares['seeds'])} and {len(base['seeds'])} seeds)."
                )
    return lines


ABLATIONS = {"": "LARES-SPT (no RPT)", "noTLA": "no TLA (alpha = 0)", "noSLA": "no SLA (gamma = 0)"}


def ablation_section(runs: list[dict], docs: Path) -> list[str]:
    """One table per data set: the SASRec baseline, the full method and each ablation, with seed
    counts and the change against SASRec, so that a missing or single-seed cell is visible rather
    than silently absent."""
    lines = ["## Method comparison and ablations (test, no masking, mean ± std over seeds)", ""]
    rpt_records = [json.loads(p.read_text()) for p in sorted(docs.glob("rpt_*.json"))]
    for dataset in sorted({r["dataset"] for r in runs}):
        lares = [r for r in runs if r["dataset"] == dataset and r["policy"] == "lares"]
        if not lares:
            continue
        schemes = {(r["max_len"], training_scheme(r)) for r in lares}
        baselines = [
            r for r in runs if r["dataset"] == dataset and r["policy"] == "sasrec" and (r["max_len"], training_scheme(r)) in schemes
        ]

        def versus(values: list[float], run: dict | None) -> str:
            """Against the SASRec run of the same max_len and training scheme (none: "-")."""
            base = next(
                (b for b in baselines if run is not None and (b["max_len"], training_scheme(b)) == (run["max_len"], training_scheme(run))),
                None,
            )
            if base is None:
                return "-"
            return f"{100 * (statistics.mean(values) / statistics.mean(s['test']['ndcg@10'] for s in base['seeds']) - 1):+.1f}%"

        lines += [
            f"### {dataset}",
            "",
            "| variant | run | seeds | NDCG@10 | Recall@10 | NDCG@10 vs SASRec | how it ended |",
            "|---|---|---:|---:|---:|---:|---|",
        ]
        for run in baselines:
            ndcg = [s["test"]["ndcg@10"] for s in run["seeds"]]
            lines.append(
                f"| SASRec (baseline) | {label(run)} | {len(ndcg)} | {mean_std(ndcg)} | {mean_std([s['test']['recall@10'] for s in run['seeds']])} | reference | {stopped_by(run)} |"
            )
        records = [r for r in rpt_records if r["dataset"] == dataset]
        if not records:
            lines.append("| LARES-SPT+RPT (full method) | not run | 0 | - | - | - | - |")
        for record in records:
            seeds = record["seeds"]
            source = next((r for r in lares if any(r["name"] in s["spt_checkpoint"] for s in seeds)), None)

            def cell(metric: str, seeds=seeds) -> str:
                return f"{mean_std([s['after']['test'][metric] for s in seeds])} (its SPT: {mean_std([s['before']['test'][metric] for s in seeds])})"

            lines.append(
                f"| LARES-SPT+RPT (full method) | {record['rpt']['algorithm']}, reward {record['reward']}, from {spt_sources(seeds)} | {len(seeds)} "
                f"| {cell('ndcg@10')} | {cell('recall@10')} | {versus([s['after']['test']['ndcg@10'] for s in seeds], source)} | {rpt_ended(record)} |"
            )
        for tag, variant in ABLATIONS.items():
            matching = [r for r in lares if variant_tag(r) == tag]
            if not matching:
                lines.append(f"| {variant} | not run | 0 | - | - | - | - |")
            for run in matching:
                ndcg = [s["test"]["ndcg@10"] for s in run["seeds"]]
                lines.append(
                    f"| {variant} | {label(run)} | {len(ndcg)} | {mean_std(ndcg)} | {mean_std([s['test']['recall@10'] for s in run['seeds']])} | {versus(ndcg, run)} | {stopped_by(run)} |"
                )
        lines += [
            "",
            "Each SPT row is the run of the same label in the quality table above (its command and machine are there); the RPT row's command is in the RPT "
            "section below. The SASRec column compares means over the seeds each row has with the SASRec run of the same max_len and training scheme; "
            'the target is +5% NDCG@10. "How it ended" matters for reading the ablations: a run stopped by its epoch cap was compared at a smaller budget.',
            "",
        ]
    return lines


def rpt_ended(record: dict) -> str:
    """Which weights each RPT seed kept: an RPT epoch (1-based, of those run), or the SPT start
    when no RPT epoch beat it on validation (then the row equals its SPT model)."""
    return per_seed(
        record["seeds"],
        [
            "kept the SPT weights (no RPT epoch beat them on valid)"
            if s["rpt"]["best_epoch"] < 0
            else f"best RPT epoch {s['rpt']['best_epoch'] + 1} of {s['rpt']['epochs_run']}"
            for s in record["seeds"]
        ],
    )


def latency_section(docs: Path) -> list[str]:
    """The table of docs/results/latency.md (written by benchmarks/latency.py), inlined."""
    latency = docs / "latency.md"
    if not latency.is_file():
        return ["## Recommendation latency", "", "Not measured yet: run `python benchmarks/latency.py`.", ""]
    text = latency.read_text().splitlines()
    table = [line for line in text if line.startswith("|")]
    context = [line for line in text if line.startswith(("- ", "Model:"))]
    return ["## Recommendation latency", "", *context, "", *table, "", "Details: [latency.md](latency.md).", ""]


def eval_noise_section(docs: Path) -> list[str]:
    """docs/results/eval_noise.md (written by benchmarks/eval_noise.py) without its title, inlined: how
    much the evaluation-time T0 noise alone moves the numbers above."""
    path = docs / "eval_noise.md"
    if not path.is_file():
        return ["## Evaluation noise", "", "Not measured yet: run `python benchmarks/eval_noise.py --checkpoints ...`.", ""]
    body = [line for line in path.read_text().splitlines() if not line.startswith("# ")]
    return ["## Evaluation noise", *body, "Details: [eval_noise.md](eval_noise.md).", ""]


def demoted(body: list[str]) -> list[str]:
    """A page's ``## `` sections as ``#### `` under the report's ``### `` heading for that page."""
    return [line.replace("## ", "#### ", 1) if line.startswith("## ") else line for line in body]


def adaptive_depth_section(docs: Path) -> list[str]:
    """docs/results/adaptive_depth_<dataset>.md (benchmarks/adaptive_depth.py), halting_signals_<dataset>.md
    (benchmarks/halting_signals.py), eval_profile.md (benchmarks/eval_profile.py) and
    eval_speedup.md (benchmarks/eval_speedup.py) there, inlined without their titles: what adaptive
    halting saves against fixed depths, whether another per-user signal would save more, where an
    evaluation pass spends its time and how fast it is against the official code."""
    pages = sorted(docs.glob("adaptive_depth_*.md"))
    lines = ["## Adaptive reasoning depth (per-user halting)", ""]
    if not pages:
        lines += ["Not measured yet: run `python benchmarks/adaptive_depth.py --checkpoints ...`.", ""]
    for page in pages:
        title, *body = page.read_text().splitlines()
        lines += [
            f"### {title.removeprefix('# Adaptive reasoning depth on ')}",
            *demoted(body),
            f"Details: [{page.name}]({page.name}).",
            "",
        ]
    for page in sorted(docs.glob("halting_signals_*.md")):  # other halting rules, up to the per-setting table
        title, *body = page.read_text().splitlines()
        body = body[: body.index("## Every setting")] if "## Every setting" in body else body
        lines += [f"### {title.removeprefix('# ')}", *demoted(body), f"Every setting: [{page.name}]({page.name}).", ""]
    for page in (docs / "eval_profile.md", docs / "eval_speedup.md"):
        if page.is_file():
            title, *body = page.read_text().splitlines()
            lines += [f"### {title.removeprefix('# ')}", *demoted(body), f"Details: [{page.name}]({page.name}).", ""]
    return lines


def speed_section(runs: list[dict]) -> list[str]:
    lines = [
        "## Training and evaluation speed",
        "",
        "| data set | model | s / epoch | training samples / s | evaluation users / s | machine |",
        "|---|---|---:|---:|---:|---|",
    ]
    for run in runs:
        seeds = run["seeds"]
        lines.append(
            f"| {run['dataset']} | {label(run)} | {statistics.mean(s['seconds_per_epoch'] for s in seeds):.1f} | {statistics.mean(s['samples_per_sec'] for s in seeds):,.0f} "
            f"| {statistics.mean(s['eval_users_per_sec'] for s in seeds):,.0f} | {run['machine']} |"
        )
    return lines + [
        "",
        "Commands: the quality table above (same labels), for capped runs the diagnostics table. A training sample is one (history, next item) target; dense mode trains the same targets as rows mode. The machine has 2 cores shared with other work, so timings carry noise.",
        "",
    ]


def depth_section(runs: list[dict], docs: Path) -> list[str]:
    lines = ["## Metric vs reasoning depth k (test, no masking)", ""]
    for run in [r for r in runs if r["seeds"][0].get("depth_sweep")]:
        ks = [row["k"] for row in run["seeds"][0]["depth_sweep"]]
        fig, ax = plt.subplots(figsize=(5, 3.5))
        lines += [f"### {run['dataset']}: {label(run)}", "", "| k | NDCG@10 | Recall@10 |", "|---:|---:|---:|"]
        by_k = {k: [row for s in run["seeds"] for row in s.get("depth_sweep") or [] if row["k"] == k] for k in ks}
        for k in ks:
            lines.append(f"| {k} | {mean_std([row['ndcg@10'] for row in by_k[k]])} | {mean_std([row['recall@10'] for row in by_k[k]])} |")
        for metric in ("ndcg@10", "recall@10"):
            means = [statistics.mean(row[metric] for row in by_k[k]) for k in ks]
            spread = [statistics.stdev(row[metric] for row in by_k[k]) if len(by_k[k]) > 1 else 0.0 for k in ks]
            ax.errorbar(ks, means, yerr=spread, marker="o", capsize=3, label=metric)
        ax.set_xlabel("reasoning steps k")
        ax.set_ylabel("test metric (mean ± std over seeds)")
        ax.set_title(f"{run['dataset']}: {label(run)}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        png = docs / f"depth_{run['name']}.png"
        fig.savefig(png, dpi=110)
        plt.close(fig)
        lines += [
            "",
            f"Test sweep over each seed's best checkpoint, from `{seed_commands(run)}` ({run['machine']}).",
            "",
            f"![metric vs k]({png.name})",
            "",
        ]
    return lines


def rpt_section(docs: Path) -> list[str]:
    """SPT -> RPT from benchmarks/rpt_benchmark.py, one subsection per docs/results/rpt_*.json (each also has its own markdown report)."""
    paths = sorted(docs.glob("rpt_*.json"))
    if not paths:
        return ["## Reinforcement post-training", "", "No RPT benchmark results yet: run `python benchmarks/rpt_benchmark.py`.", ""]
    lines = ['## Reinforcement post-training (LARES-SPT -> LARES-SPT+RPT; "SPT (before)" is the no-RPT ablation)', ""]
    for path in paths:
        lines += rpt_subsection(path)
    return lines


def direction_section(docs: Path) -> list[str]:
    """The gradient-direction check (benchmarks/rpt_direction.py): does each RPT update raise the
    reward of the histories it trains on? Regenerated from docs/results/gradient_direction.json."""
    path = docs / "gradient_direction.json"
    if not path.is_file():
        return []
    record = json.loads(path.read_text())
    plot = "gradient_direction.png"
    write_direction_plot(record, docs / plot)
    write_result_text(docs / "gradient_direction.md", direction_markdown(record, plot))
    lines = direction_markdown(record, plot).splitlines()
    return ["## Does the RPT update follow the reward? (gradient-direction check)"] + lines[1:] + [""]


def search_section(results: Path) -> list[str]:
    """Equal-budget validation searches (benchmarks/spt_search.py), one table per model and data
    set, then each data set's winners side by side (validation only: the search never sees test)."""
    paths = sorted((results / "search").glob("*.json"))
    if not paths:
        return []
    lines = [
        "## Equal-budget validation search (SASRec vs LARES)",
        "",
        "Successive halving with the same trials, rungs and keep share for every model; selection on validation NDCG@10 only.",
        "",
    ]
    winners: dict[str, list[str]] = {}
    for path in paths:
        record = json.loads(path.read_text())
        lines += [f"### {record['policy']} on {record['dataset']}", "", search_markdown(record), "", f"Command: `{record['command']}`", ""]
        best = record.get("winner") or {}
        if best:
            winners.setdefault(record["dataset"], []).append(f"{record['policy']} {best['valid_ndcg@10']:.4f} ({best['settings']})")
        else:
            winners.setdefault(record["dataset"], []).append(f"{record['policy']}: search not finished")
    lines += [f"Winners on {dataset} (valid NDCG@10 at the last rung): " + "; ".join(rows) + "." for dataset, rows in winners.items()] + [
        ""
    ]
    return lines


def snr_section(docs: Path) -> list[str]:
    """Gradient signal-to-noise of the RPT losses against cross-entropy (benchmarks/rpt_gradient_snr.py)."""
    path = docs / "gradient_snr.json"
    if not path.is_file():
        return []
    record = json.loads(path.read_text())
    write_result_text(docs / "gradient_snr.md", snr_markdown(record))
    return ["## How much of an RPT update is signal? (gradient signal-to-noise)"] + snr_markdown(record).splitlines()[1:] + [""]


def rpt_subsection(path: Path) -> list[str]:
    """The RPT summary for the report; the record's own markdown and plot are regenerated from
    the JSON too, so every doc follows the current report format."""
    record = json.loads(path.read_text())
    seeds = record["seeds"]
    write_result_text(path.with_suffix(".md"), rpt_markdown(record))
    write_plot(seeds, path.parent / record["plot_name"])
    lines = [
        rpt_heading(record["dataset"], path.stem),
        "",
        f"Command: `{seed_commands(record)}`; machine: {record['machine']}. SPT checkpoint(s): {spt_sources(seeds)}.",
        "",
        "| split | metric | SPT (before) | SPT+RPT (after) | change |",
        "|---|---|---:|---:|---:|",
    ]
    for split in ("valid", "test"):
        for metric in ("ndcg@10", "recall@10"):
            before = [r["before"][split][metric] for r in seeds]
            after = [r["after"][split][metric] for r in seeds]
            change = 100 * (statistics.mean(after) / statistics.mean(before) - 1)
            lines.append(f"| {split} | {metric} | {mean_std(before)} | {mean_std(after)} | {change:+.1f}% |")
    lines += [
        "",
        f"{len(seeds)} RPT seeds; collection {statistics.mean(r['rpt']['collect_frames_per_sec'] for r in seeds):,.0f} frames/s, "
        f"whole RPT loop {statistics.mean(r['rpt']['loop_frames_per_sec'] for r in seeds):,.0f} frames/s. Per seed: {rpt_ended(record)}. "
        "The valid rows are the selection metric (the kept weights are the best of the start and the RPT epochs on valid), so they are biased upward; "
        f"the test rows are the evidence. Details: [{path.stem}.md]({path.stem}.md).",
        "",
        f"![RL training curves]({record['plot_name']})",
        "",
    ]
    return lines


def beyond_accuracy_section(docs: Path) -> list[str]:
    """RPT with a beyond-accuracy reward against re-ranking (benchmarks/beyond_accuracy.py), one
    subsection per docs/results/beyond_accuracy_*.json; each page and PNG is regenerated from its JSON."""
    paths = sorted(docs.glob("beyond_accuracy_*.json"))
    if not paths:
        return ["## Beyond accuracy", "", "Not measured yet: run `python benchmarks/beyond_accuracy.py`.", ""]
    lines = ["## Beyond accuracy: RPT with a novelty reward against re-ranking (NDCG@10 against coverage@10 and novelty@10)", ""]
    for path in paths:
        record = json.loads(path.read_text())
        page = beyond_markdown(record)
        write_result_text(path.with_suffix(".md"), page)
        write_beyond_plot(record, path.with_suffix(".png"))
        lines += [
            f"### {record['dataset']}: {path.stem}",
            *demoted(page.splitlines()[1:]),
            f"Details: [{path.stem}.md]({path.stem}.md).",
            "",
        ]
    return lines


def shown(path: Path) -> str:
    """``path`` as the report names it: relative to the repository when inside it."""
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def distributed_section(results: Path) -> list[str]:
    """Processes on one machine (benchmarks/distributed.py): SPT and RPT learners under torchrun,
    1 vs 2 processes, and RPT collection with 1 vs 2 collector worker processes."""
    path = results / "distributed.json"
    if not path.is_file():
        return []
    record = json.loads(path.read_text())
    lines = [
        "## Several processes (torchrun DDP, collector workers)",
        "",
        f"From `{shown(path)}` (`python benchmarks/distributed.py`); {record['visible_cpus']} CPU cores shared with other work, one thread per process, gloo. Not a scaling measurement: see docs/distributed.md.",
        "",
        "| what | 1 process | 2 processes | load average (1 min) before |",
        "|---|---:|---:|---:|",
    ]
    spt = record.get("spt")
    if spt:
        load = spt.get("load_before", record.get("load_before", [float("nan")]))[0]
        lines.append(
            f"| SPT, ML-100K, samples/s (DDP) | {spt['nproc1']['samples_per_sec']:,.0f} | {spt['nproc2']['samples_per_sec']:,.0f} | {load:.1f} |"
        )
    collection = record.get("collection")
    if collection:
        one, two = collection
        load = one.get("load_before", record.get("load_before", [float("nan")]))[0]
        lines.append(
            f"| RPT collection, ML-100K, frames/s (1 vs 2 collector workers) | {one['frames_per_sec']:,.0f} | {two['frames_per_sec']:,.0f} | {load:.1f} |"
        )
    learners = record.get("rpt_learners")
    if learners:
        lines.append(
            f"| RPT loop (collect + update), ML-100K, frames/s (1 vs 2 DDP learners) | {learners['nproc1']['loop_frames_per_sec']:,.0f} | {learners['nproc2']['loop_frames_per_sec']:,.0f} | {learners['load_before'][0]:.1f} |"
        )
        lines += [
            "",
            f"RPT learners: {learners['batches']} batches of {learners['histories_per_batch']} global histories; largest |difference| of the logged total loss, 1 vs 2 processes: {learners['max_abs_total_loss_difference']:.1e}.",
        ]
    return lines + [""]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results", help="the SPT benchmark JSON files")
    parser.add_argument(
        "--docs",
        type=Path,
        default=ROOT / "docs" / "results",
        help=f"the generated outputs: holds the RPT, latency and eval-noise reports; {REPORT} and the plots are written here",
    )
    return parser


def main() -> None:
    parser = build_parser()
    args = parser.parse_args()
    args.docs.mkdir(parents=True, exist_ok=True)
    runs = load_spt_runs(args.results)
    moved = [
        (flag, path)
        for flag, path in (("results", args.results), ("docs", args.docs))
        if path.resolve() != parser.get_default(flag).resolve()
    ]
    command = "python benchmarks/make_report.py" + "".join(f" --{flag} {shown(path)}" for flag, path in moved)
    lines = ["# lares_rl results", "", f"Generated by `{command}` from `{shown(args.results)}/*.json`; do not edit by hand.", ""]
    full = [r for r in runs if is_full_run(r)]
    rpt_records = [(path, json.loads(path.read_text())) for path in sorted(args.docs.glob("rpt_*.json"))]
    lines += (
        headline_section(full, rpt_records)
        + main_table_section(full, rpt_records)
        + stats_section(runs)
        + quality_section(full)
        + ablation_section(full, args.docs)
        + compatibility_section(full)
        + direction_section(args.docs)
        + snr_section(args.docs)
        + search_section(args.results)
        + rpt_section(args.docs)
        + beyond_accuracy_section(args.docs)
        + depth_section(full, args.docs)
        + diagnostics_section(runs)
        + eval_noise_section(args.docs)
        + speed_section(runs)
        + distributed_section(args.results)
        + latency_section(args.docs)
        + adaptive_depth_section(args.docs)
    )
    write_result_text(args.docs / REPORT, "\n".join(lines) + "\n")
    print(f"wrote {args.docs / REPORT}")


if __name__ == "__main__":
    main()
