#!/usr/bin/env bash
# Every GPU table in docs/training.md ("Measured speed") and docs/streaming.md ("The real scales
# (GPU)"), on this machine's first CUDA GPU, and its GPU-marked tests; the tables take about 8
# minutes on one H200:
#
#   bash benchmarks/gpu_tables.sh [OUT_DIR]     # default: gpu-tables/
#
# Each benchmark's table goes to the terminal and, with its JSON line, to OUT_DIR/<name>.txt;
# OUT_DIR/summary.txt lists what ran and its exit status. A benchmark that fails or runs past its
# time limit is recorded as such and the next one runs. Needs lpm importable (pip install -e .)
# and, for the streaming rows, transformers and tokenizers (the wav2vec2 and umT5 encoders).
set -uo pipefail
cd "$(dirname "$0")/.."

out="${1:-gpu-tables}"
if [ -e "$out" ] && [ ! -d "$out" ]; then
  echo "benchmarks/gpu_tables.sh: $out is a file; name a folder for the tables" >&2
  exit 2
fi
if ! python -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null
then
  echo "benchmarks/gpu_tables.sh needs a CUDA GPU that this PyTorch can use; 'lpm env' says" \
    "what this machine has. The CPU tables come from the benchmarks themselves (docs)." >&2
  exit 2
fi
mkdir -p "$out"
summary="$out/summary.txt"
: >"$summary"

# run NAME SECONDS COMMAND...: the command's output to the terminal and OUT_DIR/NAME.txt.
run() {
  local name=$1 limit=$2
  shift 2
  echo "== $name: $*" | tee -a "$summary"
  local start=$SECONDS
  timeout "$limit" "$@" 2>&1 | tee "$out/$name.txt"
  local rc=${PIPESTATUS[0]}
  local verdict="ok"
  [ "$rc" -eq 124 ] && verdict="ran past ${limit} s"
  [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && verdict="failed (exit $rc)"
  echo "   $verdict in $((SECONDS - start)) s" | tee -a "$summary"
}

export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
run train-nano 150 python benchmarks/train_speed.py --batch-sizes 8 32 --steps 20 --warmup 3
run train-nano-fsdp 90 torchrun --standalone --nproc_per_node=1 benchmarks/train_speed.py \
  --batch-sizes 8 --steps 10 --warmup 2
run train-1.3b 200 python benchmarks/train_speed.py --recipe base-1.3b --batch-sizes 1 \
  --steps 3 --warmup 1 --stages long listen
run train-1.3b-compiled 250 python benchmarks/train_speed.py --recipe base-1.3b --batch-sizes 1 \
  --steps 3 --warmup 2 --stages long --set compile=true
run stream-1.3b-vae 150 python benchmarks/streaming_speed.py --config lpm-1.3b-online \
  --device cuda --chunks 8
run stream-1.3b-light 120 python benchmarks/streaming_speed.py --config lpm-1.3b-online \
  --device cuda --chunks 8 --decoder light
# The projection in docs/streaming.md: real time at a lower resolution.
run stream-1.3b-320x576 120 python benchmarks/streaming_speed.py --config lpm-1.3b-online \
  --device cuda --chunks 8 --height 320 --width 576 --decoder light
run stream-nano-shipped 90 python benchmarks/streaming_speed.py \
  --model lpm/weights/lpm-nano-online --device cuda --chunks 8
run plot-streaming 60 python benchmarks/plot_streaming.py "$out"/stream-*.txt \
  --out "$out/streaming.png"
# The GPU-marked tests (a stream, generation, training, distillation and DPO on CUDA); modules
# whose optional packages are missing here are reported and the rest run.
run gpu-tests 600 python -m pytest -q -m gpu --continue-on-collection-errors -p no:cacheprovider \
  tests
echo "tables in $out/ (summary: $summary)"
