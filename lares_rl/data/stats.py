"""Human-readable dataset summary printed by ``lares-rl stats``."""

from __future__ import annotations

from lares_rl.data.sequences import SequenceData


def format_stats(data: SequenceData) -> str:
    """Multi-line block: name, source, size, density, and what each filter removed."""
    s = data.stats()
    lines = [
        f"dataset       {data.name or '-'}",
        f"source        {data.source}",
        f"fingerprint   {data.fingerprint[:16]}",
        f"users         {s['users']:,}",
        f"items         {s['items']:,}",
        f"interactions  {s['interactions']:,}",
        f"avg length    {s['avg_len']:.2f}",
        f"sparsity      {s['sparsity']:.4%}",
    ]
    log = data.filter_log
    if log:
        lines += [
            f"raw           {_counts(log, 'raw')}",
            f"k-core        {_counts(log, 'kcore')}  (user >= {log['user_core']}, item >= {log['item_core']})",
            f"short users   {log['dropped_short_users']:,} dropped (< 3 interactions, needed for leave-one-out)",
        ]
    return "\n".join(lines)


def _counts(log: dict, stage: str) -> str:
    return f"{log[stage + '_users']:,} users / {log[stage + '_items']:,} items / {log[stage + '_interactions']:,} interactions"
