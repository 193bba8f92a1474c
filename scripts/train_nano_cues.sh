#!/usr/bin/env bash
# Teach lpm-nano's DiT to follow timed cues (docs/nano.md, "Cues in the package form"),
# continuing the runs of scripts/train_nano.sh: 14,400 steps in eight runs from its nano-m40 DiT
# on the nano-m40 cache, then 3,200 on that cache with every clip also mirrored left to right
# (~3.5 h on 2 CPU cores), three more decoder runs (45 min beside other jobs, then 14,000 steps
# best run on a GPU), and a bundle with the last decoder: the shipped lpm-nano (then
# scripts/train_nano_online.sh RUNS BUNDLE distils its lpm-nano-online; the decoder runs change
# no latent, so the students need not follow them).
# Each latent frame reads the cue in force ("The character nods.") through the cue path, whose
# learning rate is 10x and whose frames weigh 4x. Every run resumes after a kill.
#   bash scripts/train_nano_cues.sh [RUNS_DIR] [BUNDLE_OUT]
# The measured runs began with 6,400 steps on cues naming only the action (expression
# sentences joined later); this script trains every run on the cues `lpm data stage` writes now.
set -euo pipefail
runs="${1:-runs}"
bundle="${2:-$runs/lpm-nano-cues}"
for need in "$runs/nano-m40" "$runs/nano-cache-m40/index.jsonl" "$runs/nano-vae-sp7/vae"; do
  [ -e "$need" ] || { echo "missing $need: run scripts/train_nano.sh $runs first" >&2; exit 1; }
done

cue_run() {  # run name, init run, the speak, listen, identity and long stage steps, extra --set
  local out="$runs/$1" init="$runs/$2" steps=("$3" "$4" "$5" "$6") resume=() extra=()
  shift 6
  for set in "$@"; do extra+=(--set "$set"); done
  [ -d "$out/checkpoints" ] && resume=(--resume)
  lpm train --recipe nano-base --set "data_path=$runs/nano-cache-m40" --out "$out" \
    --set "init=$init" --set model.speak_tokens_per_latent=2 --set model.text_cues=true \
    --set motion_weight=3 --set warmup_steps=20 --set cue_lr_scale=10 --set cue_weight=3 \
    --set lr=2e-4 --set "stages.speak.steps=${steps[0]}" --set "stages.listen.steps=${steps[1]}" \
    --set "stages.identity.steps=${steps[2]}" --set "stages.long.steps=${steps[3]}" "${extra[@]}" \
    "${resume[@]}"
}
cue_run nano-cue1 nano-m40 400 400 400 400
cue_run nano-cue2 nano-cue1 200 400 400 600
cue_run nano-cue3 nano-cue2 200 400 400 600
cue_run nano-cue4 nano-cue3 200 400 400 600
cue_run nano-cue5 nano-cue4 400 1200 800 800
cue_run nano-cue6 nano-cue5 200 600 400 400
cue_run nano-cue7 nano-cue6 200 600 400 400
cue_run nano-cue8 nano-cue7 200 600 400 400 balance_actions=true  # rare actions drawn more often
# Every clip a second time, mirrored (frames, references, left/right words and turn labels
# swapped; docs/nano.md, "Mirrored clips"): left turns as common as right ones. Waves are
# not mirrored: the hand then blurred on both sides.
lpm data encode --data "$runs/stage64" --out "$runs/nano-cache-m40-mirror" \
  --model "$runs/nano-encoders-m40" --mirror
mirrored=("data_path=$runs/nano-cache-m40-mirror" balance_actions=true mirror_skip_actions=wave)
cue_run nano-cue9 nano-cue8 200 600 400 400 "${mirrored[@]}"
cue_run nano-cue10 nano-cue9 200 600 400 400 "${mirrored[@]}"
# Cue guidance 4 on the cued frames and at noise levels >= 0.7 follows the most actions with
# the listening mouth shut (docs/nano.md, "Cue guidance where the cue is").
# 500 more decoder steps in the Stage world where every character's lip lead is one frame
# (docs/nano.md, "One lip lead for every character"; the clips render on the fly).
[ -f "$runs/nano-vae-sp8/vae/config.json" ] || lpm train-vae --out "$runs/nano-vae-sp8" \
  --set "init=$runs/nano-vae-sp7/vae" --set freeze_encoder=true --set decoder_blocks=1 \
  --set temporal_weight=1.0 --set motion_weight=3.0 --set speech=true --set lr_schedule=cosine \
  --set frames=13 --set vae_steps=500 --set lr=3e-4 --set mouth_weight=60 --set mouth_labels=5 \
  --set speech_stages=3 --set latent_noise=0.2 --set latent_blur=0.5 --set latent_shift=0.3 \
  --set mouth_swap=1.0 --set seed=41
# Then 6,000 and 8,000 more steps of the same recipe (docs/nano.md, "Decoder runs on a GPU"):
# on a GPU with 15 processes rendering the clips (4 and 7.5 min on one H200); on CPU alone the
# two runs take about 20 hours.
if python -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
  gpu=(--set device=cuda --set workers="$(( $(nproc) > 1 ? $(nproc) - 1 : 1 ))")
else
  gpu=()
fi
decoder_run() {  # run name, init run, steps, seed
  [ -f "$runs/$1/vae/config.json" ] || lpm train-vae --out "$runs/$1" \
    --set "init=$runs/$2/vae" --set freeze_encoder=true --set decoder_blocks=1 \
    --set temporal_weight=1.0 --set motion_weight=3.0 --set speech=true --set lr_schedule=cosine \
    --set frames=13 --set "vae_steps=$3" --set lr=3e-4 --set mouth_weight=60 --set mouth_labels=5 \
    --set speech_stages=3 --set latent_noise=0.2 --set latent_blur=0.5 --set latent_shift=0.3 \
    --set mouth_swap=1.0 --set "seed=$4" "${gpu[@]}"
}
decoder_run nano-vae-sp9 nano-vae-sp8 6000 42
decoder_run nano-vae-sp10 nano-vae-sp9 8000 43
lpm model pack --vae "$runs/nano-vae-sp10" --checkpoint "$runs/nano-cue10" \
  --encoders "$runs/nano-encoders" --text-scale 2 --audio-scale 3 --cue-scale 5 --cue-min-sigma 0.7 \
  --out "$bundle" --overwrite
