#!/usr/bin/env bash
# Issue 17's device checks in one command, on a GPU machine (torch + transformers; no Spark, no collm wheel, no
# internet), from the repo root, after `make gpu-prep` here carried benchmarks/.work/gpu there:
#
#   bash benchmarks/gpu_device.sh            # GPU: 6 to 9 minutes; figures and logs into $OUT
#   SMOKE=1 bash benchmarks/gpu_device.sh    # CPU here: every part at tiny sizes, a few minutes
#
# Parts, each under its own timeout (a slow part cannot eat the others' time), within BUDGET seconds in all:
#   1. pytest -m gpu tests/test_gpu.py                  -> pytest-gpu.xml
#   2. gpu_core.py: the scorer, 0.5B and 1.5B shapes     -> gpu-core-<card>.json
#   3. gpu_train.py speed + ddp                          -> gpu-train-<card>.json
#   4. gpu_train.py quality on every pair of ML-100K     -> quality-ml-100k-full-<card>.{json,md}
# plus env.json (the Python packages found) and device.log (everything printed). $OUT defaults to
# benchmarks/.work/out. The script exits 0 when every part did; a part's failure is in device.log and its JSON.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/.work/out}
mkdir -p "$OUT"
PREP=${PREP:-benchmarks/.work/gpu}
SCALE=1; [ "${SMOKE:-0}" = 1 ] && SCALE=3  # CPU smoke: tiny sizes, but a slow (and shared) CPU
BUDGET=${BUDGET:-$((540 * SCALE))}
PY=${PY:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export COLLM_TOKENIZER_DIR="$PREP/tok"
START=$SECONDS
exec > >(tee -a "$OUT/device.log") 2>&1

left() { echo $((BUDGET - (SECONDS - START))); }
# part NAME CAP CMD...: run CMD under min(CAP, what is left of the budget) seconds; record its status
STATUS=()
part() {
  local name=$1 cap=$(($2 * SCALE)); shift 2
  local t=$(( $(left) < cap ? $(left) : cap ))
  if (( t < 20 )); then echo "== $name: skipped, ${t}s left of the ${BUDGET}s budget"; STATUS+=("$name=skipped"); return; fi
  echo "== $name (timeout ${t}s): $*"
  local t0=$SECONDS
  timeout --kill-after=10 "$t" "$@"
  local rc=$?
  echo "== $name: rc $rc in $((SECONDS - t0))s"
  STATUS+=("$name=$rc")
}

echo "== $(date -u +%FT%TZ) $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null)"
$PY - "$OUT/env.json" <<'EOF'
import importlib, json, sys
found = {}
for m in ("torch", "transformers", "safetensors", "peft", "pandas", "sklearn", "pyarrow", "pytest", "yaml", "tqdm",
          "numpy", "pyspark"):
    try:
        found[m] = getattr(importlib.import_module(m), "__version__", "present")
    except Exception as e:  # noqa: BLE001
        found[m] = f"missing ({type(e).__name__})"
import torch
found["cuda"] = torch.cuda.is_available()
found["gpu"] = torch.cuda.get_device_name() if found["cuda"] else None
json.dump(found, open(sys.argv[1], "w"), indent=1)
print("packages:", json.dumps(found))
EOF
CARD=$($PY -c "import sys, torch; sys.path.insert(0, 'benchmarks'); from gpu_common import card; print(card(torch.device('cuda' if torch.cuda.is_available() else 'cpu')))")
for f in "$PREP/tok/vocab.txt" "$PREP/minilm-fp16/model.safetensors" "$PREP/ml-100k-full.npz"; do
  [ -f "$f" ] || echo "== missing $f: run make gpu-prep here and carry $PREP"
done

if [ "${SMOKE:-0}" = 1 ]; then
  CORE=(--smoke); TRAIN=(--smoke)
else
  CORE=(--deadline 130); TRAIN=()
fi
part pytest 90 $PY -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py --junitxml="$OUT/pytest-gpu.xml"
part core 190 $PY benchmarks/gpu_core.py "${CORE[@]}" --tokenizer "$PREP/tok" --out "$OUT/gpu-core-$CARD.json"
part train 75 $PY benchmarks/gpu_train.py "${TRAIN[@]}" --parts speed ddp --tokenizer "$PREP/tok" \
  --out "$OUT/gpu-train-$CARD.json"
part quality 400 $PY benchmarks/gpu_train.py "${TRAIN[@]}" --parts quality --tokenizer "$PREP/tok" \
  --data "$PREP/ml-100k-full.npz" --backbone "$PREP/minilm-fp16" --out "$OUT/gpu-train-quality-log.json" \
  --quality-out "$OUT/quality-ml-100k-full-$CARD.json"
rm -f "$OUT/gpu-train-quality-log.json"  # the quality JSON holds it all; 8 files at most come back
echo "== done in $((SECONDS - START))s: ${STATUS[*]}"
ls -la "$OUT"
for s in "${STATUS[@]}"; do [ "${s#*=}" = 0 ] || exit 1; done
