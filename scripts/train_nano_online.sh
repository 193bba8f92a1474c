#!/usr/bin/env bash
# Distil lpm-nano-online from a Base lpm-nano bundle: teacher trajectories, the four stages of
# DESIGN §3, then a bundle whose backbone and refiner are rank-22 deltas from the base and
# whose VAE and encoders are the base's. Needs the feature cache of scripts/train_nano.sh.
# Every step resumes or is skipped when its output already exists, so rerun after a kill.
#   bash scripts/train_nano_online.sh [RUNS_DIR] [BASE_BUNDLE] [BUNDLE_OUT] [CACHE]
# CACHE is the feature cache made with the base's VAE (default: RUNS_DIR/nano-cache-m40).
#
# At this CPU budget the DMD stages 2-3 lowered held-out identity (docs/distill.md has the
# table per stage), so the shipped backbone is stage 1's and the refiner (stage 4) is trained
# on its rollouts; STAGES23=1 also runs stages 2-3 and ships the stage-3 backbone. The refiner,
# trained at T2 = 500, keeps identity better when the stream re-noises to 250 (measured).
set -euo pipefail
runs="${1:-runs}"
base="${2:-lpm/weights/lpm-nano}"
bundle="${3:-$runs/lpm-nano-online}"
cache="${4:-$runs/nano-cache-m40}"
# the teacher guides its timed cues at TEACHER_CUE_SCALE (default 4, as the shipped students
# were distilled; Base itself samples at 5 since docs/nano.md "Cue guidance 5") on the cued
# frames, at every noise level (students of a teacher limited to sigma >= 0.7, as Base samples,
# follow fewer cues: docs/distill.md); a base bundle without cue guidance is distilled without
sampling() { python -c 'import json, sys
print(json.load(open(sys.argv[1]))["sampling"].get(sys.argv[2], 0.0))' "$base/bundle.json" "$1"; }
teacher_cue=0.0
[ "$(sampling cue_scale)" != "0.0" ] && teacher_cue="${TEACHER_CUE_SCALE:-4.0}"
cue=(--set "cue_scale=$teacher_cue" --set "cue_min_sigma=0")
common=(--recipe nano-online --set "teacher=$base" --set "data_path=$cache" "${cue[@]}")
dmd=(--set lr=1e-5 --set critic_lr=1e-4)

lpm distill trajectories --recipe nano-online --teacher "$base" --set "data_path=$cache" \
  "${cue[@]}" --out "$runs/online-traj" --count 192 --shard-size 32
stage() {  # stage number, run name, extra --set arguments
  local n="$1" out="$runs/$2"; shift 2
  local resume=()
  [ -d "$out/checkpoints" ] && resume=(--resume)
  lpm distill "${common[@]}" --stage "$n" "$@" --out "$out" "${resume[@]}"
}
stage 1 online-s1 --set "trajectories=$runs/online-traj"
# 200 more ODE steps on the same trajectories: the 150-step student moved its mouth while
# listening and followed fewer cues (docs/distill.md, "Students of the mirrored-clips Base")
stage 1 online-s1b --set "trajectories=$runs/online-traj" --set "init=$runs/online-s1" \
  --set stage_steps=200,100,100,80
backbone="$runs/online-s1b"
if [ "${STAGES23:-0}" = 1 ]; then
  stage 2 online-s2 --set "trajectories=$runs/online-traj" --set "init=$backbone" "${dmd[@]}"
  stage 3 online-s3 --set "init=$runs/online-s2" "${dmd[@]}"
  backbone="$runs/online-s3"
fi
stage 4 online-s4 --set "backbone=$backbone" "${dmd[@]}"
# a cue model's stream guides the cues that name an action at 5.5 (docs/distill.md)
stream=()
[ "$(sampling cue_scale)" != "0.0" ] && stream=(--cue-scale 5.5 --cue-actions-only)
OMP_NUM_THREADS=1 lpm model pack-online --base "$base" --backbone "$backbone" \
  --refiner "$runs/online-s4" --rank 22 --refiner-timestep 250 "${stream[@]}" --out "$bundle" \
  --overwrite
