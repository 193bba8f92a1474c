#!/usr/bin/env bash
# Distil lpm-nano-online from a Base lpm-nano bundle: teacher trajectories, the four stages of
# DESIGN §3, then a bundle whose backbone and refiner are low-rank deltas from the base and
# whose VAE and encoders are the base's. Needs the feature cache of scripts/train_nano.sh.
# Every step resumes or is skipped when its output already exists, so rerun after a kill.
#   bash scripts/train_nano_online.sh [RUNS_DIR] [BASE_BUNDLE] [BUNDLE_OUT]
set -euo pipefail
runs="${1:-runs}"
base="${2:-lpm/weights/lpm-nano}"
bundle="${3:-$runs/lpm-nano-online}"
common=(--recipe nano-online --set "teacher=$base" --set "data_path=$runs/nano-cache")

lpm distill trajectories --recipe nano-online --teacher "$base" --set "data_path=$runs/nano-cache" \
  --out "$runs/online-traj" --count 192 --shard-size 32
stage() {  # stage number, run name, extra --set arguments
  local n="$1" out="$runs/$2"; shift 2
  local resume=()
  [ -d "$out/checkpoints" ] && resume=(--resume)
  lpm distill "${common[@]}" --stage "$n" "$@" --out "$out" "${resume[@]}"
}
stage 1 online-s1 --set "trajectories=$runs/online-traj"
stage 2 online-s2 --set "trajectories=$runs/online-traj" --set "init=$runs/online-s1" \
  --set lr=3e-5 --set critic_lr=3e-5
stage 3 online-s3 --set "init=$runs/online-s2" --set lr=3e-5 --set critic_lr=3e-5
stage 4 online-s4 --set "backbone=$runs/online-s3" --set lr=3e-5 --set critic_lr=3e-5
lpm model pack-online --base "$base" --backbone "$runs/online-s3" --refiner "$runs/online-s4" \
  --out "$bundle" --overwrite
