#!/usr/bin/env bash
# Rebuild the shipped Stage probes from nothing (docs/probes.md): all three branches from
# scratch; the face branch fine-tuned on a larger frame cache; the action probe retrained at the
# shipped width. Steps whose output exists are skipped, so rerun after a kill.
#   bash scripts/train_probes.sh [RUNS_DIR] [OUT]
set -euo pipefail
runs="${1:-runs}"
out="${2:-$runs/probes}"
mkdir -p "$runs"

[ -f "$runs/probes-base/card.json" ] || lpm bench train-probes --out "$runs/probes-base" --seed 0
# 10,000 fresh training identities x (6 random + 1 easy) states; only the face branch (mouth,
# blink, expression, brows, gaze) trains: pose and identity readings stay bit-identical
[ -f "$runs/probes-face/card.json" ] || OMP_NUM_THREADS=1 lpm bench train-probes \
  --out "$runs/probes-face" --seed 1 --steps 6000 --set "init_from=$runs/probes-base" \
  --set train_branches=face --set lr=1e-3 --set curriculum_frac=0 --set easy_floor=0.15 \
  --set train_ids=10000 --set easy_per_id=1
# the frame probe kept as it is (steps 0); a narrower action probe keeps all shipped weights
# within 25 MB
[ -f "$out/card.json" ] || lpm bench train-probes --out "$out" --seed 1 --steps 0 \
  --set "init_from=$runs/probes-face" --set train_branches=face --probe-set action_hidden=80
