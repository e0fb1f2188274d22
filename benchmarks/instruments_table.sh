#!/usr/bin/env bash
# The Amazon 2023 Instruments table (the LARES paper's own data) as a queue of resumable steps, so
# that a campaign spread over many sessions is one command per core. Usage, from the repository root:
#
#   [DATA=<amazon2023-instruments-5core.txt>] bash benchmarks/instruments_table.sh STEP [STEP ...]
#
# DATA defaults to ../shared/data/amazon2023-instruments-5core.txt beside the repository, where the
# other benchmarks look for it too.
# STEP is <what>:<seed>, run in the order given; each step is skipped when its seed's row is already
# in the results file, and otherwise started with --resume (a step cut by Ctrl-C or a session's end
# continues from its saved state when the queue is run again):
#   spt-lares:S      LARES-SPT with the reference alignment (dot, tau 1, alpha 0.1, gamma 0.5, dropout
#                    0.5, positive pass with gradient), in dense mode, bucketed, batch 128, patience 10:
#                    preset=paper's rows mode would cost ~20x the epochs on one core
#   spt-defaults:S   LARES-SPT at the project's alignment defaults (configs/spt/default.yaml: cosine
#                    at tau 0.07, stop-gradient positive pass), same scheme
#   spt-sasrec:S     SASRec, same scheme
#   search-sasrec:S  SASRec's validation search (successive halving, search seed S): 8 of the 16
#                    points of dropout x lr x score similarity (dot / cosine at 0.07) x layer norm
#                    (post / pre), rungs of 1, 3 and 9 epochs (28 epochs in all). LARES is not
#                    searched here (it runs at its two alignments' defaults), so SASRec has the larger
#                    budget and any LARES margin is conservative
#   spt-tuned:S      SASRec at the search's winner (tag _tuned), the headline's SASRec row
#   rpt-expected:S   RPT rpt=expected_pg (the default) from seed S's validation-best LARES-SPT checkpoint
#   rpt-grpo:S       the reference RPT: rpt=grpo with the paper's Recall@10 reward, same start, on the
#                    budget of the Beauty grpo rows (12 validation intervals of 20 batches: the
#                    reference's 50 passes over the kept rows would take days on one core)
#   adaptive:S       adaptive halting's cost/accuracy on seed S's LARES-SPT checkpoint (4 tolerances,
#                    one timed pass each: ~24 passes over 57k users, ~25 min)
# Each step is one single-thread process (OMP_NUM_THREADS=1, niced): run one queue per core, e.g.
#   bash benchmarks/instruments_table.sh spt-lares:0 rpt-expected:0 rpt-grpo:0 &
#   bash benchmarks/instruments_table.sh spt-lares:1 spt-sasrec:1 &
# Costs measured on one AMD EPYC core: a LARES-SPT epoch ~6 min (30-40 epochs to early stopping),
# a SASRec epoch ~5 min (~17 epochs); the results files record each row's core-hours.
# Where the queue stands (rows recorded, saved states and their epochs): python benchmarks/queue_status.py amazon2023-instruments
set -euo pipefail

main() {
  cd "$(dirname "$0")/.."
  source benchmarks/queue_steps.sh
  local DATA=${DATA:-../shared/data/amazon2023-instruments-5core.txt}
  queue_setup "$DATA" DATA amazon2023-instruments-5core.txt
  local common=(--dataset amazon2023-instruments --dataset-set "path=$DATA")
  local spt_run=amazon2023-instruments__lares__dense-bucketed__L20
  local search=benchmarks/results/search/amazon2023-instruments__sasrec.json
  local step what seed
  for step in "$@"; do
    split_step "$step" spt-lares:0
    local best=benchmarks/runs/$spt_run/seed$seed/checkpoints/spt_best.pt
    case "$what" in
      spt-lares | spt-sasrec | spt-defaults)
        local policy=${what#spt-} variant=()
        [[ "$policy" == defaults ]] && policy=lares_defaults variant=(--similarity cosine --spt-set positive_gradient=false --tag _defaults)
        local result=benchmarks/results/amazon2023-instruments__${policy}__dense-bucketed__L20.json
        has_seed "$result" "$seed" && { echo "[table] $step: already in $result"; continue; }
        run "$step" nice -n 10 "$python" benchmarks/spt_benchmark.py "${common[@]}" --policy "${policy%_defaults}" "${variant[@]}" \
          --mode dense --bucket --batch-size 128 --seeds "$seed" --resume
        ;;
      search-sasrec)
        finished "$search" && { echo "[table] $step: already in $search"; continue; }
        run "$step" nice -n 10 "$python" benchmarks/spt_search.py "${common[@]}" --policy sasrec --seed "$seed" \
          --space policy.dropout=0.2,0.5 spt.lr=0.001,0.002 policy.score_similarity=dot,cosine policy.layer_norm=post,pre \
          --policy-set score_temperature=null --trials 8 --rungs 1 3 9 --keep 0.5 --mode dense --batch-size 128 \
          --spt-set bucket_by_length=true --resume
        ;;
      spt-tuned)
        local result=benchmarks/results/amazon2023-instruments__sasrec_tuned__dense-bucketed__L20.json
        has_seed "$result" "$seed" && { echo "[table] $step: already in $result"; continue; }
        finished "$search" || { echo "error: $step needs the finished SASRec search; queue search-sasrec:0 before it" >&2; exit 2; }
        local winner
        mapfile -t winner < <(winner_flags "$search")
        run "$step" nice -n 10 "$python" benchmarks/spt_benchmark.py "${common[@]}" --policy sasrec --batch-size 128 "${winner[@]}" \
          --tag _tuned --mode dense --bucket --seeds "$seed" --resume
        ;;
      rpt-expected | rpt-grpo)
        local result args
        if [[ "$what" == rpt-expected ]]; then
          result=docs/results/rpt_amazon2023-instruments__expected_pg
          args=(--rpt expected_pg)
        else
          result=docs/results/rpt_amazon2023-instruments__grpo_recall10
          args=(--rpt grpo --reward recall --reward-set k=10 --rpt-set epochs=12 batches_per_epoch=20)
        fi
        has_seed "$result.json" "$seed" && { echo "[table] $step: already in $result.json"; continue; }
        needs_checkpoint "$step" "$best"
        run "$step" nice -n 10 "$python" benchmarks/rpt_benchmark.py "${common[@]}" --checkpoints "$best" --seeds "$seed" \
          "${args[@]}" --out "$result.md" --resume
        ;;
      adaptive)
        [[ -f docs/results/adaptive_depth_amazon2023-instruments.json ]] && { echo "[table] $step: already measured"; continue; }
        needs_checkpoint "$step" "$best"
        run "$step" nice -n 10 "$python" benchmarks/adaptive_depth.py "${common[@]}" --checkpoints "$best" --tols 0.5 0.3 0.2 0.1 --repeats 1
        ;;
      *)
        echo "error: unknown step '$what' (spt-lares, spt-defaults, spt-sasrec, search-sasrec, spt-tuned, rpt-expected, rpt-grpo, adaptive)" >&2
        exit 2
        ;;
    esac
  done
}

# The spt_benchmark flags of a finished search's winner, one per line: spt.lr and spt.batch_size as
# their flags, other spt.* keys through --spt-set, policy.* keys (and the search's score_temperature
# rule) through --policy-set.
winner_flags() {
  python3 - "$1" <<'PY'
import json, sys
settings = json.load(open(sys.argv[1]))["winner"]["settings"]
named = {"spt.lr": "--lr", "spt.batch_size": "--batch-size"}
print("\n".join(f"{named[k]}\n{v}" for k, v in settings.items() if k in named))
spt = [f"{k[4:]}={v}" for k, v in settings.items() if k.startswith("spt.") and k not in named]
policy = [f"{k[7:]}={v}" for k, v in settings.items() if k.startswith("policy.")] + ["score_temperature=null"]
print("\n".join((["--spt-set", *spt] if spt else []) + ["--policy-set", *policy]))
PY
}

# An RPT or halting step starts from a finished LARES-SPT seed; say which step to run first.
needs_checkpoint() {
  has_seed benchmarks/results/amazon2023-instruments__lares__dense-bucketed__L20.json "${1##*:}" && [[ -f "$2" ]] && return 0
  echo "error: $1 starts from LARES-SPT seed ${1##*:}, which has not finished; queue spt-lares:${1##*:} before it" >&2
  exit 2
}

main "$@"
exit
