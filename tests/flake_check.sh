#!/usr/bin/env bash
# Proof that the checkpoint and loop tests do not flake: runs them RUNS times in a row
# (default 20) while a CPU-burning process, started and stopped here, keeps another core
# busy, and reports how many runs passed. Exits non-zero if any run failed.
#
#   bash tests/flake_check.sh [RUNS] [TEST_FILE ...]
#
# (default files: tests/test_checkpoint.py tests/test_loop.py). Each run's log is kept in
# a temporary folder named at the start; the last line is "N/RUNS runs green, M failures".
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-20}
shift || true
files=("$@")
if [ ${#files[@]} -eq 0 ]; then
    files=(tests/test_checkpoint.py tests/test_loop.py)
fi
logs=$(mktemp -d -t aced-flake-XXXXXX)

python -c "while True: pass" &
burner=$!
trap 'kill "$burner" 2>/dev/null || true' EXIT
trap 'exit 130' INT TERM
echo "flake check: ${files[*]}, $runs runs, CPU burner pid $burner, logs in $logs"

passed=0
failed=0
for run in $(seq 1 "$runs"); do
    start=$SECONDS
    # A test that hangs dumps every thread's stack after 10 minutes (pytest's faulthandler).
    if python -m pytest -q -o faulthandler_timeout=600 "${files[@]}" >"$logs/run-$run.log" 2>&1; then
        passed=$((passed + 1))
        echo "run $run/$runs: green in $((SECONDS - start)) s ($(tail -n 1 "$logs/run-$run.log"))"
    else
        status=$?
        failed=$((failed + 1))
        echo "run $run/$runs: FAILED (exit $status) in $((SECONDS - start)) s, see $logs/run-$run.log"
        grep -E "^(FAILED|ERROR) " "$logs/run-$run.log" | head -n 20 || true
    fi
done
echo "$passed/$runs runs green, $failed failures"
[ "$failed" -eq 0 ]
