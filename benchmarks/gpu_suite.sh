#!/usr/bin/env bash
# The first GPU figures in one call on a bare device machine (Python 3.12, torch, torchvision, numpy, pandas, scipy,
# seaborn, matplotlib, tqdm, PyYAML; no pyautoattack, no atkit install, no network), in about 6.5 minutes:
#
#   bash benchmarks/gpu_suite.sh                  # on the GPU machine (results in $OUT, default outputs/gpu_suite)
#   bash benchmarks/gpu_suite.sh --dry            # the CPU form at tiny sizes (CI: tests/test_benchmark.py)
#   bash benchmarks/gpu_suite.sh --summarize      # the one-screen summary again, from whatever $OUT holds
#   bash benchmarks/gpu_suite.sh --prepare --archive path/to/cifar10-jpeg.tar.gz   # on the sending machine
#   ... --steps train,autoattack                  # a subset (steps: train autoattack wrn_profile compile parity)
#
# What it does: installs the carried pyautoattack wheel (.whl/*.whl, or $WHEELS/*.whl) into a target folder,
# unpacks the carried CIFAR-10 JPEG archive (.device/cifar10-jpeg.tar.gz, or DATA_TAR), imports atkit from this
# tree (PYTHONPATH), then runs the measurement steps of benchmarks/gpu_suite_steps.py, each in its own process
# under its own time limit, all inside SUITE_SECONDS (default 390). Every result goes into $OUT/gpu_suite.json the
# moment it exists, everything else into $OUT/gpu_suite.log: two files. A failing or cut step never stops the
# others (no set -e). Per-step limits (seconds): LIMIT_train, LIMIT_autoattack, LIMIT_wrn_profile, LIMIT_compile,
# LIMIT_parity. Scratch (the wheel's target folder, the images, run folders): WORK (default a fresh /tmp folder).
set -u
cd "$(dirname "$0")/.."
REPO=$PWD
PY=${PYTHON:-python3}
MODE=gpu
STEPS=train,autoattack,wrn_profile,compile
PASS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --dry) MODE=dry ;;
    --summarize) MODE=summarize ;;
    --prepare) MODE=prepare ;;
    --steps) STEPS=${2:?--steps needs a comma list}; shift ;;
    *) PASS+=("$1") ;;
  esac
  shift
done
if [ "$MODE" = prepare ]; then exec $PY benchmarks/gpu_suite.py prepare "${PASS[@]}"; fi
if [ ${#PASS[@]} -gt 0 ]; then echo "gpu_suite.sh: unknown argument(s): ${PASS[*]}" >&2; exit 2; fi
OUT=${OUT:-outputs/gpu_suite}
mkdir -p "$OUT" || exit 2
if [ "$MODE" = summarize ]; then exec $PY benchmarks/gpu_suite.py summarize "$OUT"; fi

WORK=${WORK:-$(mktemp -d "${TMPDIR:-/tmp}/atkit_gpu_suite.XXXXXX")}
mkdir -p "$WORK" || exit 2
LOG=$OUT/gpu_suite.log
: > "$LOG"
began=$(date +%s)
if [ "$MODE" = dry ]; then BUDGET=${SUITE_SECONDS:-300}; DRY=--dry; else BUDGET=${SUITE_SECONDS:-390}; DRY=; fi
deadline=$((began + BUDGET))
note() { echo "[gpu_suite +$(( $(date +%s) - began ))s] $*" | tee -a "$LOG"; }
note "mode $MODE, budget ${BUDGET}s, steps $STEPS, work $WORK, python $($PY -c 'import sys; print(sys.version.split()[0])')"

# 1. pyautoattack from the carried wheel, into a target folder (nothing is installed into the machine's Python).
SITE=$WORK/site
WHEELS=${WHEELS:-.whl}
if compgen -G "$WHEELS/*.whl" > /dev/null; then
  if $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl \
      >> "$LOG" 2>&1; then
    note "installed into $SITE: $(cd "$WHEELS" && ls *.whl | tr '\n' ' ')"
  else
    note "pip install of $WHEELS/*.whl FAILED (see the log): the AutoAttack step will fail, the others run"
  fi
else
  note "no $WHEELS/*.whl: pyautoattack must already be importable (gpu_suite.py prepare makes the wheel)"
fi
# 2. atkit from this tree, not installed.
export PYTHONPATH="$SITE:$REPO${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
# 3. the CIFAR-10 JPEG archive, unpacked once.
DATA_TAR=${DATA_TAR:-.device/cifar10-jpeg.tar.gz}
DATA_ROOT=
if [ -f "$DATA_TAR" ]; then
  mkdir -p "$WORK/data" && tar -xzf "$DATA_TAR" -C "$WORK/data" >> "$LOG" 2>&1
  train_dir=$(find "$WORK/data" -maxdepth 3 -type d -name train | head -n 1)
  if [ -n "$train_dir" ]; then DATA_ROOT=$(dirname "$train_dir"); note "data: $DATA_TAR unpacked to $DATA_ROOT"
  else note "data: $DATA_TAR has no train/ folder"; fi
elif [ "$MODE" = dry ]; then
  note "data: no $DATA_TAR; the dry form uses the synthetic data"
else
  note "data: no $DATA_TAR (carry .device): the steps will fail"
fi
$PY benchmarks/gpu_suite.py init --out "$OUT" $DRY --budget "$BUDGET" --steps "$STEPS" --data-root "$DATA_ROOT" \
  --command "bash benchmarks/gpu_suite.sh${DRY:+ $DRY} --steps $STEPS" >> "$LOG" 2>&1 || note "init FAILED"

# 4. the steps, each in its own process under min(its limit, what is left of the budget).
default_limit() {
  case "$1" in train) echo 90 ;; autoattack) echo 200 ;; wrn_profile) echo 50 ;; compile) echo 110 ;; *) echo 240 ;; esac
}
RESERVE=8   # for the summary
for step in ${STEPS//,/ }; do
  var=LIMIT_$step
  limit=${!var:-$(default_limit "$step")}
  left=$(( deadline - $(date +%s) - RESERVE ))
  if [ "$left" -lt 20 ]; then
    note "step $step: skipped (${left}s left of the budget)"
    $PY benchmarks/gpu_suite.py mark "$step" 0 --out "$OUT" --skipped "${left}s left of the ${BUDGET}s budget" >> "$LOG" 2>&1
    continue
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  note "step $step: start (limit ${limit}s)"
  timeout -k 10 "$limit" $PY benchmarks/gpu_suite.py step "$step" --out "$OUT" $DRY --deadline $(( $(date +%s) + limit - 3 )) \
    --data-root "$DATA_ROOT" --work "$WORK" >> "$LOG" 2>&1
  rc=$?
  $PY benchmarks/gpu_suite.py mark "$step" "$rc" --out "$OUT" --limit "$limit" >> "$LOG" 2>&1
  note "step $step: exit $rc"
done
find "$OUT" -maxdepth 1 -name '*.tmp' -delete 2>/dev/null
note "done"
$PY benchmarks/gpu_suite.py summarize "$OUT" --wall-seconds $(( $(date +%s) - began )) | tee -a "$LOG"
