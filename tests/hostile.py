"""What the property-based hostile-input tests share: an example budget that one environment
variable scales, and a closing line per module that says how many examples each property ran."""

import os
from collections import Counter

SCALE = float(os.environ.get("LARES_HOSTILE_SCALE", "1"))  # e.g. 20 for a long bug hunt


def scaled(examples: int) -> int:
    """``examples`` times LARES_HOSTILE_SCALE, at least one."""
    return max(1, int(examples * SCALE))


def report_examples(surface: str, counts: Counter) -> None:
    """Print the examples run per property, and append the line to $LARES_HOSTILE_COUNTS when it is set
    (a long bug hunt collects the counts of every module in one file)."""
    line = f"hostile {surface}: " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())) + f" (total {sum(counts.values())})"
    print("\n" + line)
    target = os.environ.get("LARES_HOSTILE_COUNTS")
    if target:
        with open(target, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
