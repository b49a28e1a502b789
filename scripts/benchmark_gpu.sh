#!/usr/bin/env bash
# The GPU benchmarks of docs/benchmarks.md in one go, for a single lent GPU machine with a time limit:
#   1. the speed benchmark (DenseNet121, ResNet50, ResNet18 at 224 px, batch 64, bf16), alone on the GPU;
#   2. the accuracy benchmark, `gpu` profile, each task in turn x {ce, danil, random, focal} x seeds 0,1,2,
#      JOBS runs sharing the GPU at once (`--jobs`), as time allows.
# Every finished run is in the JSONs (rewritten after each run), and everything is packed into
# $OUT/results.tar.gz every 20 s, so whatever finished before DEADLINE_S comes back.
#
#   OUT=/tmp/gpu-out DATA=../shared/data scripts/benchmark_gpu.sh
#
# Environment: OUT (where results.tar.gz goes), DATA (folder with retina/, pathology/, skin/; default
# $MONAI_DANIL_DATA), DEADLINE_S (seconds after which unfinished runs are abandoned; default 470),
# DEVICE (default cuda), PROFILE (default gpu), JOBS (runs at once; default 6: 6 retina runs of 30 epochs
# took 71-77 s each on an H100, while 24 runs at once kept it 99% busy and none finished in 340 s),
# TASKS (default "skin pathology retina"), METHODS (default ce,danil,random,focal), SEEDS (default 0,1,2),
# EXTRA (extra --set overrides for every accuracy run, e.g. "--set epochs=1" for a smoke test),
# SPEED_NETS and SPEED_SIZE (default "densenet121 resnet50 resnet18" and 224).
set -u
: "${OUT:?set OUT to the folder for results.tar.gz}"
DATA=${DATA:-${MONAI_DANIL_DATA:-../shared/data}}
DEADLINE_S=${DEADLINE_S:-470}
DEVICE=${DEVICE:-cuda}
PROFILE=${PROFILE:-gpu}
JOBS=${JOBS:-6}
TASKS=${TASKS:-skin pathology retina}
METHODS=${METHODS:-ce,danil,random,focal}
SEEDS=${SEEDS:-0,1,2}
EXTRA=${EXTRA:-}
SPEED_NETS=${SPEED_NETS:-densenet121 resnet50 resnet18}
SPEED_SIZE=${SPEED_SIZE:-224}
AMP=bf16; [ "$DEVICE" = cpu ] && AMP=none
W=$(mktemp -d /tmp/monai-danil-gpu.XXXX)
mkdir -p "$OUT" "$W/logs"
start=$SECONDS

pack() {  # the JSONs, tables, logs and each run's predictions.csv (no checkpoints, no TensorBoard files)
    (cd "$W" && { ls -1 -- *.json *.md 2>/dev/null; find logs runs -type f \( -name '*.log' -o -name '*.txt' \
        -o -name predictions.csv \) 2>/dev/null; } | tar -czf "$OUT/results.tar.gz.part" -T -) \
        && mv "$OUT/results.tar.gz.part" "$OUT/results.tar.gz"
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1; nproc; python -c 'import sys, torch, monai, ignite; print(sys.version, torch.__version__, monai.__version__, ignite.__version__)'; } > "$W/logs/machine.txt" 2>&1

# 1. speed, alone on the device (the accuracy runs would share it)
for net in $SPEED_NETS; do
    timeout 90 python -m monai_danil.benchmark speed --net "$net" --image-size "$SPEED_SIZE" --batch-size 64 \
        --device "$DEVICE" --amp "$AMP" --out "$W/speed-$net.json" >> "$W/speed.md" 2>> "$W/logs/speed.log"
done
pack
echo "speed done at $((SECONDS - start)) s" >> "$W/logs/timeline.txt"

acc() {  # acc TASK: one accuracy benchmark invocation
    local task=$1
    echo "start $task at $((SECONDS - start)) s" >> "$W/logs/timeline.txt"
    # shellcheck disable=SC2086
    python -m monai_danil.benchmark --threads 1 accuracy --task "$task" --data-dir "$DATA/$task" --profile "$PROFILE" \
        --methods "$METHODS" --seeds "$SEEDS" --jobs "$JOBS" $EXTRA --work-dir "$W/runs" --out "$W/$task.json" \
        > "$W/$task.md" 2> "$W/logs/$task.log"
    echo "end $task ($?) at $((SECONDS - start)) s" >> "$W/logs/timeline.txt"
}

# 2. accuracy: one task after the other, JOBS runs of a task at once (24 at once overloaded an H100)
(for task in $TASKS; do acc "$task"; done) &

while [ -n "$(jobs -r)" ] && [ $((SECONDS - start)) -lt "$DEADLINE_S" ]; do
    sleep 20
    pack
    nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader >> "$W/logs/gpu-util.txt" 2>/dev/null
    uptime >> "$W/logs/load.txt"
done
echo "stopped at $((SECONDS - start)) s; running: $(jobs -r | wc -l)" >> "$W/logs/timeline.txt"
pack
