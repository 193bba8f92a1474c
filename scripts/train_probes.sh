#!/usr/bin/env bash
# Rebuild the shipped Stage probes from nothing (docs/probes.md): all three branches from
# scratch, then two fine-tunes of the face branch on fresh frame caches, the second with the
# shipped 80-channel action probe. Steps whose output exists are skipped, so rerun after a kill.
#   bash scripts/train_probes.sh [RUNS_DIR] [OUT]
set -euo pipefail
runs="${1:-runs}"
out="${2:-$runs/probes}"
mkdir -p "$runs"

[ -f "$runs/probes-base/card.json" ] || lpm bench train-probes --out "$runs/probes-base" --seed 0
# each fine-tune: 10,000 fresh training identities x (6 random + 1 easy) states; only the face
# branch (mouth, blink, expression, brows, gaze) trains, pose and identity stay bit-identical
face=(--steps 6000 --set train_branches=face --set lr=1e-3 --set curriculum_frac=0
      --set easy_floor=0.15 --set train_ids=10000 --set easy_per_id=1)
[ -f "$runs/probes-face/card.json" ] || OMP_NUM_THREADS=1 lpm bench train-probes \
  --out "$runs/probes-face" --seed 1 --set "init_from=$runs/probes-base" "${face[@]}"
# a narrower action probe keeps all shipped weights within 25 MB
[ -f "$out/card.json" ] || OMP_NUM_THREADS=1 lpm bench train-probes --out "$out" --seed 2 \
  --set "init_from=$runs/probes-face" "${face[@]}" --probe-set action_hidden=80
