#!/usr/bin/env bash
# A CI step that gates a softmax implementation with smcheck.
#
#   bash examples/ci-check.sh        (from the repository root, with smcheck on PATH)
#
# 1. Gate: the stable implementation must pass every check (--check makes the verdict the exit
#    status, and set -e stops the job at the first failure).
# 2. Report: run the naive implementation on an overflowing input, read the --json document with
#    python3 (no jq needed), and show that its --check exit status is 1 without failing this job.
# 3. Input conditions: a loss target on a z_i that the dtype cannot resolve is the input's
#    fault, not the implementation's: --check exits 3, and the JSON's "input_conditions" says
#    which. A gate decides what 3 means for it (here: report it, do not fail the job).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."   # run from the repository root, wherever called from

command -v smcheck >/dev/null || { echo "ci-check: smcheck is not on PATH" >&2; exit 2; }
echo "== $(smcheck --version)"

# --- 1. gate --------------------------------------------------------------------------------
gate() {
    echo "-- gate: smcheck forward $* --impl stable --check"
    smcheck forward "$@" --impl stable --check --quiet
    echo "   passed"
}
gate examples/logits.npy --dtype float64
gate examples/logits.npy --dtype bfloat16
gate examples/logits.txt --dtype float16 --log   # log-softmax in half precision
gate examples/batch.csv --dtype float32          # a batch; -inf entries are masked positions
gate examples/overflow.json --dtype float64      # fine once the max is subtracted

# --- 2. what the naive formula does to an overflowing input -----------------------------------
echo "-- report: smcheck forward --x-file examples/overflow.json --impl naive --json"
report=$(smcheck forward --x-file examples/overflow.json --impl naive --json)
printf '%s' "$report" | python3 -c '
import json, sys
doc = json.load(sys.stdin)
ref = next(c for c in doc["checks"] if c["name"] == "reference")
ov = doc["overflow"]
print("   reference check: passed=%s, max ULP error=%s" % (ref["passed"], ref["max_ulp"]))
print("   exp(x_i) overflows (x_i > log(realmax) = %.2f in %s) at indices: %s"
      % (ov["log_realmax"], doc["dtype"], ov["overflow_indices"]))
'

status=0
smcheck forward --x-file examples/overflow.json --impl naive --check --quiet || status=$?
echo "   naive --check exit status: $status (1 = a check failed)"
if [ "$status" -ne 1 ]; then
    echo "ci-check: expected the naive implementation to fail with status 1, got $status" >&2
    exit 1
fi

# --- 3. an input condition is not a failure ------------------------------------------------------
echo "-- input condition: smcheck loss (examples/zero_z) --check"
status=0
smcheck loss --x-file examples/zero_z/x.txt --v-file examples/zero_z/v.txt \
    --t-file examples/zero_z/t.txt --check --quiet || status=$?
echo "   exit status: $status (3 = no check of the implementation failed, the input is unjudgeable)"
if [ "$status" -ne 3 ]; then
    echo "ci-check: expected exit status 3 for the zero_z input, got $status" >&2
    exit 1
fi
smcheck loss --x-file examples/zero_z/x.txt --v-file examples/zero_z/v.txt \
    --t-file examples/zero_z/t.txt --json | python3 -c '
import json, sys
doc = json.load(sys.stdin)
for c in doc["input_conditions"]:
    print("   %s: %s" % (c["kind"], c["message"][:100]))
'

echo "== all gates passed"
