#!/usr/bin/env bash
# One call for a GPU (one H200, at most about 9 minutes of wall time): the speed and parity figures of
# benchmarks/README.md, written as one JSON under $OUT, with a one-screen summary on stdout.
#
#   OUT=outputs/gpu_suite DATA_TAR=path/to/cifar10-jpeg.tar.gz bash benchmarks/gpu_suite.sh     # on the GPU
#   OUT=outputs/gpu_suite bash benchmarks/gpu_suite.sh --dry                                       # CPU dry form (CI)
#
# Steps: (1) unpack the CIFAR-10 ImageFolder archive (DATA_TAR, or DATA_ROOT already unpacked);
# (2) ResNet-18 PGD-10 AT: atkit's fast path and the plain PyTorch loop, timed in the same process (ratio);
# (3) WRN-34-10 PGD-10 AT step time (atkit's fast path); (4) a briefly trained ResNet-18 (PGD-AT, a few hundred
# steps), then standard AutoAttack on 1,000 test images, extrapolated to 10,000; (5) a short bf16-vs-fp32 parity
# run. --dry runs every step on the CPU with a small CNN and the synthetic data at tiny sizes (AutoAttack replaced
# by APGD-CE at 2 iterations) so that the plumbing is tested without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
DRY=0
[ "${1:-}" = "--dry" ] && DRY=1
OUT=${OUT:?set OUT to the folder the results go to}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && PY=.venv/bin/python
STEP_LOG="$OUT/gpu_suite.log"
: > "$STEP_LOG"
began=$(date +%s)
step() { echo "[gpu_suite +$(( $(date +%s) - began ))s] $*" | tee -a "$STEP_LOG" >&2; }

if [ "$DRY" = 1 ]; then
  DEVICE=cpu; MODEL=small_cnn; WIDE=small_cnn; DATA=(--dataset synthetic)
  R18=(--batch-size 8 --steps 1 --warmup 1 --attack-steps 2 --eval-n 16 --skip-aa)
  WRN=(--batch-size 8 --steps 1 --warmup 1 --attack-steps 2 --eval-n 0 --skip-aa --paths atkit)
  TRAIN_SET=(--set dataset=synthetic --set "data={n_train: 64, n_test: 32, image_size: 16}" --set model=small_cnn
             --set epochs=1 --set max_steps_per_epoch=2 --set threat.steps=2)
  AA_N=16; AA_ATTACKS=apgd-ce; AA_ITER=2
  PARITY=(--model small_cnn --dataset synthetic --n-train 64 --batch-size 16 --epochs 1 --max-steps 2
          --attack-steps 2 --seeds 0 --eval-n 16 --schedule constant --fast-precision bf16)
else
  DEVICE=cuda; MODEL=resnet18; WIDE=wrn34_10
  DATA_ROOT=${DATA_ROOT:-data/cifar10-jpeg}
  if [ ! -d "$DATA_ROOT/train" ]; then
    [ -n "${DATA_TAR:-}" ] || { echo "gpu_suite: no $DATA_ROOT/train and no DATA_TAR to unpack" >&2; exit 2; }
    step "unpacking $DATA_TAR"
    mkdir -p "$(dirname "$DATA_ROOT")" && tar -xzf "$DATA_TAR" -C "$(dirname "$DATA_ROOT")"
  fi
  DATA=(--dataset folder --root "$DATA_ROOT")
  # The fast path is measured in bf16 (asked for: "auto" trains in fp32 unless a method's bf16 parity is measured).
  R18=(--batch-size 128 --steps 100 --warmup 10 --eval-n 1000 --skip-aa --paths atkit,reference --precision bf16)
  WRN=(--batch-size 128 --steps 20 --warmup 3 --eval-n 0 --skip-aa --paths atkit --precision bf16)
  TRAIN_SET=(--set dataset=folder --set "data.root=$DATA_ROOT" --set model=resnet18 --set epochs=2
             --set max_steps_per_epoch=150 --set schedule=constant)
  AA_N=1000; AA_ATTACKS=standard; AA_ITER=0
  PARITY=(--model resnet18 --dataset folder --root "$DATA_ROOT" --epochs 2 --max-steps 150 --seeds 0,1
          --eval-n 1000 --fast-precision bf16)
fi

step "ResNet-18 PGD-10 AT: atkit fast path vs plain loop"
$PY benchmarks/bench_at.py --device $DEVICE --model $MODEL "${DATA[@]}" "${R18[@]}" --out "$OUT/train_resnet18.json" \
  >> "$STEP_LOG" 2>&1
step "WRN-34-10 PGD-10 AT step time"
$PY benchmarks/bench_at.py --device $DEVICE --model $WIDE "${DATA[@]}" "${WRN[@]}" --out "$OUT/train_wrn34_10.json" \
  >> "$STEP_LOG" 2>&1
step "brief PGD-AT training for the AutoAttack timing"
cat > "$OUT/brief_pgd_at.yaml" <<YAML
method: pgd_at
eval: {n_test: 100, pgd_steps: 0, final_attacks: [clean], sanity: false}
YAML
$PY -m atkit train "$OUT/brief_pgd_at.yaml" --device $DEVICE --out-dir "$OUT/runs" --quiet "${TRAIN_SET[@]}" \
  > "$OUT/brief_train.json" 2>> "$STEP_LOG"
step "AutoAttack ($AA_ATTACKS) on $AA_N test images"
$PY benchmarks/gpu_suite_aa.py --run "$(tail -n 1 "$OUT/brief_train.json")" --n "$AA_N" --attacks "$AA_ATTACKS" \
  --n-iter "$AA_ITER" --device $DEVICE --out "$OUT/aa.json" >> "$STEP_LOG" 2>&1
step "bf16 vs fp32 parity"
$PY benchmarks/parity.py --device $DEVICE "${PARITY[@]}" --out "$OUT/parity.json" >> "$STEP_LOG" 2>&1
step "summary"
$PY benchmarks/gpu_suite_aa.py --summarise "$OUT" --wall-seconds $(( $(date +%s) - began )) --dry $DRY
