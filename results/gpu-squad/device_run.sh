#!/usr/bin/env bash
# The device call behind results/gpu-squad (second try; the first, first_attempt/, failed on two GPU bugs, since mended):
# dense vs Block-Skim MiniLM-L6 on the full SQuAD v1.1 training set, 1,600 steps of bs 32 each (lr 5e-5, 10 % warm-up,
# bf16), both fits side by side on the one GPU; the Block-Skim checkpoint at other thresholds on the full dev set;
# skim.benchmark at bs 32/128 bf16. Run from the repo root with .gpu-carry from ../shared/tools/gpu-carry.sh, its
# model.safetensors and train JSON xz-compressed to fit the 64 MiB transfer (this file and probe.py beside them).
# LOCAL_TEST=1: the same commands on CPU on slices (checks the script before the device time is spent).
set -u
T0=$(date +%s)
stamp() { echo "[$(($(date +%s) - T0)) s] $*"; }
OUT=${OUT:-/tmp/skim_out}
mkdir -p "$OUT"
exec > >(tee "$OUT/run.log") 2>&1
C=.gpu-carry
W=${W:-/tmp/skimgpu}
mkdir -p "$W/minilm"
if [ -z "${LOCAL_TEST:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/site $C/wheels/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
  PY=python3
  FIT_MAX=${FIT_MAX:-00:00:02:40}
  SIZE=(+trainer.max_steps=${STEPS:-1600})
  SLICE=()
  EVAL=()
  BENCH=(dtypes=[bf16] batch_sizes=[32,128] num_batches=10)
else
  export PYTHONPATH=$PWD
  PY=/tmp/gpuenv/bin/python
  FIT_MAX=00:00:01:00
  SIZE=(trainer=cpu trainer.precision=bf16-mixed +trainer.max_steps=3 data.batch_size=4 data.max_train_samples=200)
  SLICE=(data.max_eval_samples=64)
  EVAL=(trainer=cpu)
  BENCH=(dtypes=[fp32] batch_sizes=[1,4] num_batches=2 device=cpu)
fi
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=offline PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
cp $C/minilm/*.json $C/minilm/vocab.txt "$W/minilm/"
$PY - "$C" "$W" <<'PY'
import lzma, shutil, sys
c, w = sys.argv[1:]
for src, dst in ((f"{c}/minilm/model.safetensors.xz", f"{w}/minilm/model.safetensors"),
                 (f"{c}/data/train-v1.1.reconstructed.json.xz", f"{w}/train-v1.1.json")):
    with lzma.open(src) as fi, open(dst, "wb") as fo:
        shutil.copyfileobj(fi, fo, 1 << 24)
PY
stamp unpacked
$PY -c "import sys, torch, transformers, lightning, datasets, hydra; print(sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available() and torch.cuda.get_device_name(0), 'transformers', transformers.__version__, 'lightning', lightning.__version__, 'datasets', datasets.__version__, 'hydra', hydra.__version__)" | tee "$OUT/versions.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv >> "$OUT/versions.txt" 2>/dev/null
$PY $C/probe.py > "$OUT/probe.txt" 2>&1 &
PIDS=($!)

COMMON=(model.pretrained_name_or_path=$W/minilm data.train_file=$W/train-v1.1.json
        data.validation_file=$PWD/$C/data/dev-v1.1.json.gz trainer.max_epochs=${EPOCHS:-1} optim.lr=5.0e-5 data.num_proc=6
        trainer.check_val_every_n_epoch=1000 final_eval=last paths.log_dir=$W/logs callbacks.timer.duration=$FIT_MAX
        trainer.log_every_n_steps=100)
for run in dense blockskim; do
  SKIM_CACHE_DIR=$W/cache_$run $PY -m skim.train experiment=squad_minilm_$run "${COMMON[@]}" "${SIZE[@]}" "${SLICE[@]}" \
    task_name=gpu_squad_minilm_$run > "$W/train_$run.log" 2>&1 &
  PIDS+=($!)
done
wait "${PIDS[@]}"
stamp fits done
pack() { # name, folder: the run's small files (no checkpoints) into $OUT/<name>.tgz
  tar czf "$OUT/$1.tgz" --exclude='*.ckpt' --exclude='wandb' -C "$(dirname "$2")" "$(basename "$2")" "${@:3}" 2>/dev/null
}
for run in dense blockskim; do
  dir=$(ls -d $W/logs/gpu_squad_minilm_$run/runs/* | tail -1)
  cp "$W/train_$run.log" "$dir/" && pack "$run" "$dir"
  grep -h "val/f1=\|kept ratio\|Error\|error:" "$W/train_$run.log" | tail -4
done
BS=$(ls -d $W/logs/gpu_squad_minilm_blockskim/runs/* | tail -1)
export SKIM_CACHE_DIR=$W/cache_blockskim
# the trained predictors at other thresholds, side by side (the GPU is idle during post-processing)
for t in 0.5 0.8 0.9; do
  timeout 55 $PY -m skim.eval ckpt_path=$BS/checkpoints/last.ckpt skim.threshold=$t paths.log_dir=$W/logs \
    task_name=gpu_eval_blockskim_t$t "${SLICE[@]}" "${EVAL[@]}" > "$W/eval_t$t.log" 2>&1 &
  EPIDS+=($!)
done
wait "${EPIDS[@]}"
stamp sweep done
grep -h "val/f1=\|kept ratio" $W/eval_t*.log
tar czf "$OUT/sweep.tgz" -C $W/logs $(cd $W/logs && ls -d gpu_eval_*) -C $W $(cd $W && ls eval_t*.log) 2>/dev/null
# speed: dense SDPA vs Block-Skim (fused diagonal-block attention) on the same dev batches, one process each: the
# highest threshold within 1 F1 of dense (paper's 0.01 if none) and the highest that skims with F1 above 50 % of dense
read -r T_KEEP T_SKIM < <($PY - "$W/logs" <<'PY'
import glob, json, sys
f1 = lambda p: json.load(open(p))["metrics"]["val/f1"]
logs = sys.argv[1]
dense = f1(sorted(glob.glob(f"{logs}/gpu_squad_minilm_dense/runs/*/metrics.json"))[-1])
runs = {"0.01": f1(sorted(glob.glob(f"{logs}/gpu_squad_minilm_blockskim/runs/*/metrics.json"))[-1])}
for p in glob.glob(f"{logs}/gpu_eval_blockskim_t*/runs/*/metrics.json"):
    runs[p.split("gpu_eval_blockskim_t")[1].split("/")[0]] = f1(p)
keep = max((t for t, v in runs.items() if v >= dense - 1.0), key=float, default="0.01")
skim = max((t for t, v in runs.items() if v >= dense / 2 and float(t) > float(keep)), key=float, default="0.8")
print(keep, skim)
PY
)
stamp "thresholds for the benchmark: $T_KEEP (within 1 F1), $T_SKIM"
bench() { # task name, threshold, extra overrides
  timeout 45 $PY -m skim.benchmark ckpt_path=$BS/checkpoints/last.ckpt skim.threshold=$2 dense_attention=[sdpa] \
    paths.log_dir=$W/logs task_name=$1 "${BENCH[@]}" "${@:3}" > "$W/$1.log" 2>&1
  stamp "$1 done"
}
bench gpu_bench_blockskim_t$T_KEEP $T_KEEP
bench gpu_bench_blockskim_t$T_SKIM $T_SKIM
tar czf "$OUT/bench.tgz" -C $W/logs $(cd $W/logs && ls -d gpu_bench_*) -C $W $(cd $W && ls gpu_bench_*.log) 2>/dev/null
grep -h "^| " $W/gpu_bench_*.log
stamp all done
exec >&- 2>&-
