#!/usr/bin/env bash
# The checks that need a GPU, in one short run (about 6 minutes on one H100 with the training step, 2 without):
#   1. scaled_dot_product_attention: which kernels the STUNet's attention takes (flash for the
#      temporal attention in bf16) and what each backend costs  -> sdpa.txt
#   2. bench_stunet.py at the paper's base size: 16/32/64/80 frames at 128x128, bf16 autocast, IF
#      stage I's four levels and block types at an eighth of its width (the full width's three
#      copies of a 4.3B U-Net do not fit one card beside their activations)   -> bench_stunet.txt
#   3. optional (needs a stage-0 export and a linear-motion slice of the benchmark): bf16-mixed
#      training of two base STUNets with the demo's conditioning, mean and whitened caption pooling, for MINUTES each (3 minutes:
#      about 1300 steps of 16 clips; the CPU demo affords 400 of 4), then the prompt-following probes
#      on each                                                 -> train_*.log, probe_*.json, sheet_*.png
#
#   bash benchmarks/gpu_checks.sh OUT_DIR [T2I_EXPORT_DIR DATA_DIR [MINUTES]]
#
# Logs, probe JSON, sample sheets and metrics CSVs land under OUT_DIR; step 3's checkpoints under
# outputs/demo_stunet/gpu_{mean,whitened} (replaced on every run). MINUTES is a whole number. Each
# step has its own time limit, so one failing step does not cost the others.
set -u -o pipefail
out=${1:?usage: gpu_checks.sh OUT_DIR [T2I_EXPORT_DIR DATA_DIR [MINUTES]]}
t2i=${2:-}
data=${3:-}
minutes=${4:-3}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 HYDRA_FULL_ERROR=1 WANDB_MODE=offline
python=${PYTHON:-python3}
# An eighth of IF stage I's width: at a quarter, 80 frames do not fit one 80 GB card without activation checkpointing
paper_size=(--preset if_stage1_paper --block-out-channels 64,128,192,256 --size 128)
export PYTORCH_CUDA_ALLOC_CONF=${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}  # three variants in turn fragment the cache

{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  $python -c 'import sys, torch, diffusers, lightning; print(sys.version.split()[0], "torch", torch.__version__, "diffusers", diffusers.__version__, "lightning", lightning.__version__)'
} 2>&1 | tee "$out/env.txt"

echo "== 1. scaled_dot_product_attention backends"
timeout 150 $python benchmarks/check_sdpa_backends.py --device cuda --dtype bf16 "${paper_size[@]}" --frames 80 --reps 5 \
  2>&1 | tee "$out/sdpa.txt"

echo "== 2. STUNet cost at the paper's base size"
timeout 240 $python benchmarks/bench_stunet.py --device cuda --dtype bf16 "${paper_size[@]}" --frames 16 32 64 80 --reps 5 \
  2>&1 | tee "$out/bench_stunet.txt"

[ -n "$t2i" ] && [ -n "$data" ] || exit 0

echo "== 3. bf16-mixed STUNet training on the GPU, then the probes ($minutes min each, two at once)"
train() {  # run_name pooling
  rm -rf "outputs/demo_stunet/$1"  # a fresh run: resuming would restore the old run's timer and stop at once
  timeout $((minutes * 60 + 90)) $python train.py experiment=demo_stunet trainer=gpu run_name="$1" ckpt_path=null \
    model.unet_path="$t2i/unet" model.text_encoder_path="$t2i/text_encoder" \
    data.train_shards="$data/train" data.val_shards="$data/val" data.test_shards="$data/val" data.decoder=pyav \
    data.batch_size=16 data.num_workers=4 data.epoch_length=250 \
    model.objective.loss_weighting=uniform model.stunet.temporal_conditioning.caption_frame_product=false \
    model.stunet.temporal_conditioning.pooling="$2" \
    model.lr_warmup_steps=100 model.ema_decay=0.999 \
    trainer.max_steps=20000 "+trainer.max_time=00:00:$(printf %02d "$minutes"):00" trainer.check_val_every_n_epoch=4 \
    trainer.log_every_n_steps=50 trainer.enable_progress_bar=false callbacks.model_checkpoint.every_n_train_steps=250 \
    > "$out/train_$1.log" 2>&1
  echo "train $1: exit $?"
}
train gpu_mean mean &
train gpu_whitened whitened &
wait
for run in gpu_mean gpu_whitened; do
  dir=outputs/demo_stunet/$run
  cp "$dir/csv/metrics.csv" "$out/metrics_$run.csv" 2>/dev/null
  ls "$dir/checkpoints" | tail -3
  timeout 90 $python -m lumiere.evaluation.probes stunet "$dir/checkpoints/last.ckpt" --device cuda --threads 4 \
    --scheduler ddpm --steps 50 --sheet "$out/sheet_$run.png" > "$out/probe_$run.json" 2> "$out/probe_$run.err"
  timeout 90 $python -m lumiere.evaluation.probes caption-gap "$dir/checkpoints/last.ckpt" --device cuda --threads 4 \
    --data "$data" --timesteps 200,500,800,950,999 > "$out/gap_$run.json" 2> "$out/gap_$run.err"
  grep -E '"(direction_accuracy|any_colour_direction_accuracy|any_colour_opposite_direction_rate|colour_consistency|frames_with_object)"' "$out/probe_$run.json"
done
