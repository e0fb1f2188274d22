#!/usr/bin/env bash
# The GPU speed check in one command (issue 34 item 7): installs this tree without its
# dependencies, then runs benchmarks/gpu_speed.py (SPT LARES/SASRec at fp32/bf16 x compile off/on,
# evaluation and the RPT filter, ML-100K and Instruments) and leaves its table and JSON in $OUT
# (or benchmarks/results/). Under 8 minutes on one H100. Usage, from the repository root:
#   DATA_DIR=<folder holding amazon2023-instruments-5core.txt> bash benchmarks/gpu_speed.sh
# On a machine without the project's Python dependencies (torchrl, tensordict, hydra-core,
# gymnasium, recbole for ML-100K), install their wheels first; without DATA_DIR the Instruments
# rows are skipped with one line.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results}
SITE=${SITE:-/tmp/lares_site}
python3 -m pip install -q --no-deps --no-build-isolation --no-compile --target "$SITE" . >/dev/null
export PYTHONPATH="$SITE:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
python3 benchmarks/gpu_speed.py ${DATA_DIR:+--data-dir "$DATA_DIR"} --out "$OUT/gpu_speed.json" | tee "$OUT/gpu_speed.md"
