# Helpers of the benchmark queues (instruments_table.sh, compatibility_table.sh): sourced, not run.
# A queue is a list of resumable steps; each is skipped once its row is recorded.

# Every queue's start: its data file must exist (else one line naming it and the variable that
# sets it, with the expected file name), each step runs on one thread, with $PYTHON (or python).
queue_setup() {
  [[ -f "$1" ]] || { echo "error: $1 not found; set $2=<your $3>" >&2; exit 2; }
  export OMP_NUM_THREADS=1
  python=${PYTHON:-python}
}

# Splits a step <what>:<seed> into the variables what and seed, or stops naming the bad step.
split_step() {
  [[ "$1" == *:* ]] || { echo "error: step '$1' is not <what>:<seed> (e.g. $2)" >&2; exit 2; }
  what=${1%%:*} seed=${1##*:}
  [[ "$seed" =~ ^[0-9]+$ ]] || { echo "error: step '$1': the seed must be a number" >&2; exit 2; }
}

# True when the results JSON already holds a row for the seed.
has_seed() {
  [[ -f "$1" ]] && python3 -c 'import json, sys; sys.exit(0 if any(r["seed"] == int(sys.argv[2]) for r in json.load(open(sys.argv[1]))["seeds"]) else 1)' "$1" "$2"
}

# True when a search JSON says the search finished.
finished() {
  [[ -f "$1" ]] && python3 -c 'import json, sys; sys.exit(0 if json.load(open(sys.argv[1])).get("finished") else 1)' "$1"
}

run() {
  local step=$1
  shift
  echo "[table] $step: $(date -u +%FT%TZ) $*"
  "$@"
  echo "[table] $step: done $(date -u +%FT%TZ)"
}
