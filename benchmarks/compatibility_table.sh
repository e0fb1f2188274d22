#!/usr/bin/env bash
# The backbone-compatibility study on Amazon Beauty (the paper's second claim: the recurrent core
# improves other encoders) as a queue of resumable steps, like instruments_table.sh. Usage, from the
# repository root:
#
#   [BEAUTY=<amazon-beauty-5core.txt>] bash benchmarks/compatibility_table.sh STEP [STEP ...]
#
# STEP is <model>-<backbone>:<seed>, model plain (policy=sasrec: the backbone alone, one state) or
# lares (the same pre-block plus the recurrent core), backbone bsarec or fmlp; e.g. plain-bsarec:0.
# Every run: L=50 (BSARec's published setting), dense, bucketed, batch 128, patience 10, the
# reference alignment; the test rows are recorded with and without the history masked, so the
# report sets them beside BSARec's published history-masked row. BEAUTY defaults to the file the
# other benchmarks read (--beauty-path's default). One single-thread process per step: run one
# queue per core. Plain runs cost minutes a seed, LARES ones about an hour (Beauty L=50 epochs:
# ~25 s plain SASRec, ~2 min LARES on one core).
# Where the queue stands (rows recorded, saved states and their epochs): python benchmarks/queue_status.py amazon-beauty __L50
set -euo pipefail

main() {
  cd "$(dirname "$0")/.."
  source benchmarks/queue_steps.sh
  local beauty=${BEAUTY:-../shared/data/amazon-beauty-5core.txt}
  queue_setup "$beauty" BEAUTY amazon-beauty-5core.txt
  local step what seed model backbone policy
  for step in "$@"; do
    split_step "$step" plain-bsarec:0
    model=${what%%-*} backbone=${what#*-}
    case "$model" in plain) policy=sasrec ;; lares) policy=lares ;; *) policy= ;; esac
    [[ -n "$policy" && "$backbone" =~ ^(bsarec|fmlp)$ ]] || {
      echo "error: unknown step '$what'; use plain-bsarec, lares-bsarec, plain-fmlp or lares-fmlp" >&2
      exit 2
    }
    local result=benchmarks/results/amazon-beauty__${policy}_${backbone}__dense-bucketed__L50.json
    has_seed "$result" "$seed" && { echo "[table] $step: already in $result"; continue; }
    run "$step" nice -n 10 "$python" benchmarks/spt_benchmark.py --dataset amazon-beauty --beauty-path "$beauty" --max-len 50 \
      --policy "$policy" --policy-set "backbone=$backbone" --tag "_$backbone" --mode dense --bucket --batch-size 128 \
      --seeds "$seed" --resume
  done
}

main "$@"
exit
