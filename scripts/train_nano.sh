#!/usr/bin/env bash
# Rebuild the shipped lpm-nano from nothing: nano VAE, Stage data, feature cache, DiT, bundle.
# Every step resumes or is skipped when its output already exists, so rerun after a kill.
#   bash scripts/train_nano.sh [RUNS_DIR] [BUNDLE_OUT]
set -euo pipefail
runs="${1:-runs}"
bundle="${2:-$runs/lpm-nano}"
mkdir -p "$runs"

[ -f "$runs/nano-vae0/vae/config.json" ] || lpm train-vae --out "$runs/nano-vae0"
# A deeper decoder on the same (frozen) latents: sharper frames, 1,500 more steps.
[ -f "$runs/nano-vae/vae/config.json" ] || lpm train-vae --out "$runs/nano-vae" \
  --set "init=$runs/nano-vae0/vae" --set freeze_encoder=true --set decoder_blocks=1 \
  --set temporal_weight=1.0 --set motion_weight=3.0 --set lr=5e-4 --set lr_schedule=cosine \
  --set seed=7
lpm data stage --out "$runs/stage64" --clips 2000 --seconds 2 --resolution 64 --seed 0
[ -f "$runs/nano-encoders/bundle.json" ] || lpm model pack --vae "$runs/nano-vae" --out "$runs/nano-encoders"
lpm data encode --data "$runs/stage64" --out "$runs/nano-cache" --model "$runs/nano-encoders"
train() {  # run name, then --set arguments; resumes a run that has checkpoints
  local out="$runs/$1"; shift
  local resume=()
  [ -d "$out/checkpoints" ] && resume=(--resume)
  lpm train --recipe nano-base --set "data_path=$runs/nano-cache" --out "$out" "$@" "${resume[@]}"
}
train nano
# Ordered speak tokens (docs/architecture.md): the audio path learns them first (2,000 steps),
# then the whole DiT adapts (1,600 steps over the four stages); both motion-weighted.
ordered=(--set model.speak_tokens_per_latent=2 --set motion_weight=3 --set warmup_steps=20)
train nano-ord-audio --set "init=$runs/nano" "${ordered[@]}" --set "trainable=audio|speak_embed" \
  --set lr=1e-3 --set stages.speak.steps=1600 --set stages.listen.steps=400 \
  --set stages.identity.steps=0 --set stages.long.steps=0
train nano-ord --set "init=$runs/nano-ord-audio" "${ordered[@]}" --set lr=1e-4 \
  --set stages.speak.steps=500 --set stages.listen.steps=300 --set stages.identity.steps=400 \
  --set stages.long.steps=400
# A mouth-weighted VAE (docs/nano.md; encoder trained too, so the latents change), the
# cache re-encoded with it, and the DiT fine-tuned on those latents (1,500 steps).
[ -f "$runs/nano-vae-mouth/vae/config.json" ] || lpm train-vae --out "$runs/nano-vae-mouth" \
  --set "init=$runs/nano-vae/vae" --set decoder_blocks=1 --set temporal_weight=1.0 \
  --set motion_weight=3.0 --set mouth_weight=20 --set lr=3e-4 --set lr_schedule=cosine \
  --set vae_steps=700 --set seed=11
[ -f "$runs/nano-encoders-mouth/bundle.json" ] || lpm model pack --vae "$runs/nano-vae-mouth" \
  --encoders "$runs/nano-encoders" --out "$runs/nano-encoders-mouth"
lpm data encode --data "$runs/stage64" --out "$runs/nano-cache-mouth" \
  --model "$runs/nano-encoders-mouth"
train nano-mouth --set "init=$runs/nano-ord" "${ordered[@]}" \
  --set "data_path=$runs/nano-cache-mouth" --set lr=1.5e-4 --set stages.speak.steps=500 \
  --set stages.listen.steps=300 --set stages.identity.steps=350 --set stages.long.steps=350
# 700 more VAE steps at mouth weight 40 (clip lip-sync ceiling 0.40 -> 0.51), the cache
# re-encoded once more and the DiT fine-tuned on those latents (docs/nano.md).
[ -f "$runs/nano-vae-m40/vae/config.json" ] || lpm train-vae --out "$runs/nano-vae-m40" \
  --set "init=$runs/nano-vae-mouth/vae" --set decoder_blocks=1 --set temporal_weight=1.0 \
  --set motion_weight=3.0 --set mouth_weight=40 --set lr=2e-4 --set lr_schedule=cosine \
  --set vae_steps=700 --set seed=12
[ -f "$runs/nano-encoders-m40/bundle.json" ] || lpm model pack --vae "$runs/nano-vae-m40" \
  --encoders "$runs/nano-encoders" --out "$runs/nano-encoders-m40"
lpm data encode --data "$runs/stage64" --out "$runs/nano-cache-m40" \
  --model "$runs/nano-encoders-m40"
train nano-m40 --set "init=$runs/nano-mouth" "${ordered[@]}" \
  --set "data_path=$runs/nano-cache-m40" --set lr=1.5e-4 --set stages.speak.steps=500 \
  --set stages.listen.steps=300 --set stages.identity.steps=350 --set stages.long.steps=350
# The decoder that hears the speech (docs/nano.md): seven decoder runs on the frozen encoder of
# nano-vae-m40, so the latents, the DiT and the online students stay as they are (~3 h 10 min).
speech=(--set freeze_encoder=true --set decoder_blocks=1 --set temporal_weight=1.0
  --set motion_weight=3.0 --set speech=true --set lr_schedule=cosine)
decoder() {  # run name, init run, then --set arguments
  local out="$runs/$1" init="$runs/$2/vae"; shift 2
  [ -f "$out/vae/config.json" ] || lpm train-vae --out "$out" --set "init=$init" "${speech[@]}" "$@"
}
decoder nano-vae-sp1 nano-vae-m40 --set frames=9 --set vae_steps=600 --set lr=5e-4 \
  --set mouth_weight=40 --set latent_noise=0.2 --set seed=21
decoder nano-vae-sp2 nano-vae-sp1 --set frames=9 --set vae_steps=800 --set lr=4e-4 \
  --set mouth_weight=60 --set latent_noise=0.2 --set latent_blur=1.0 --set seed=22
decoder nano-vae-sp3 nano-vae-sp2 --set frames=9 --set vae_steps=800 --set lr=4e-4 \
  --set mouth_weight=80 --set latent_noise=0.3 --set latent_blur=1.0 --set seed=23
decoder nano-vae-sp4 nano-vae-sp3 --set frames=13 --set vae_steps=600 --set lr=3e-4 \
  --set mouth_weight=60 --set latent_noise=0.2 --set latent_blur=0.7 --set latent_shift=0.5 \
  --set seed=24
decoder nano-vae-sp5 nano-vae-sp4 --set frames=13 --set vae_steps=700 --set lr=3e-4 \
  --set mouth_weight=60 --set mouth_labels=5 --set speech_stages=3 --set latent_noise=0.2 \
  --set latent_blur=0.7 --set latent_shift=0.5 --set seed=31
decoder nano-vae-sp6 nano-vae-sp5 --set frames=13 --set vae_steps=550 --set lr=3e-4 \
  --set mouth_weight=60 --set mouth_labels=5 --set speech_stages=3 --set latent_noise=0.2 \
  --set latent_blur=0.5 --set latent_shift=0.3 --set mouth_swap=0.7 --set seed=32
decoder nano-vae-sp7 nano-vae-sp6 --set frames=13 --set vae_steps=400 --set lr=3e-4 \
  --set mouth_weight=60 --set mouth_labels=5 --set speech_stages=3 --set latent_noise=0.2 \
  --set latent_blur=0.5 --set latent_shift=0.3 --set mouth_swap=1.0 --set seed=33
lpm model pack --vae "$runs/nano-vae-sp7" --checkpoint "$runs/nano-m40" \
  --encoders "$runs/nano-encoders" --text-scale 2 --audio-scale 2 --out "$bundle" --overwrite
