#!/usr/bin/env bash
# Trains the embedded demo model from scratch into RUN (default /root/hsl-demo-runs/demo-v2):
# backbone, then the three heads on it (and the fixed-weight composed ablation), then both
# catalogs indexed with it, then every evaluation. Safe to run again after an interruption: a finished stage is skipped, an
# interrupted one resumes from its checkpoint. Nothing in checkpoints/ or assets/ is touched;
# copy RUN/model and RUN/catalogs/* there once the figures are what you want.
#
#   nohup bash scripts/train_demo_model.sh [RUN] > RUN.log 2>&1 &
set -euo pipefail
RUN=${1:-/root/hsl-demo-runs/demo-v2}
MODEL=${MODEL:-$RUN/model}  # the model folder: backbone, then heads written into it
mkdir -p "$RUN"
# shellcheck source=scripts/train_stages.sh
source "$(dirname "$0")/train_stages.sh"

train backbone backbone "$MODEL/open_clip_model.safetensors" backbone \
  --architecture hsl-demo-small --texts grammar --hard-negatives 0.5 --look-crops 1500 --steps 3000
# The heads train on a frozen backbone, each on one core: HSL beside the other two.
export OMP_NUM_THREADS=1
train hsl hsl "$MODEL/hsl/model.safetensors" hsl --model "$MODEL" --texts grammar \
  --steps 4500 --batch-size 128 --variants 40 > "$RUN/hsl.log" 2>&1 &
HSL_PID=$!
train composed-domain composed-domain "$RUN/.composed-domain-done" composed --model "$MODEL" --texts grammar \
  --stage domain
touch "$RUN/.composed-domain-done"
train composed-hybrid composed-hybrid "$RUN/.composed-hybrid-done" composed --model "$MODEL" --texts grammar \
  --stage hybrid
touch "$RUN/.composed-hybrid-done"
train hmrn hmrn "$MODEL/hmrn/model.safetensors" hmrn --model "$MODEL" --texts grammar
wait "$HSL_PID" || { stamp "hsl failed: see $RUN/hsl.log"; exit 1; }
unset OMP_NUM_THREADS

# The "combiner without weights" ablation: the same two composed stages with --fixed-weights,
# into a copy of the model folder without its composed head.
FIXED=$RUN/fixed
if [[ ! -e $RUN/.fixed-done ]]; then
  if [[ ! -e $FIXED/open_clip_config.json ]]; then
    rm -rf "$FIXED" && cp -r "$MODEL" "$FIXED" && rm -rf "$FIXED/composed" "$FIXED/.checkpoint"
  fi
  for stage in domain hybrid; do
    if [[ ! -e $RUN/.fixed-$stage-done ]]; then
      resume=(); [[ -e $FIXED/.checkpoint/composed-$stage/train_state.safetensors ]] && resume=(--resume)
      hsl train composed --model "$MODEL" --out "$FIXED" --texts grammar --stage $stage --fixed-weights \
        --checkpoint-every 250 "${resume[@]}"
      touch "$RUN/.fixed-$stage-done"
    fi
  done
  touch "$RUN/.fixed-done"
fi

index_catalogs assets/demo

stamp "evaluate"
P=$RUN/catalogs/products
L=$RUN/catalogs/looks
hsl evaluate --model "$MODEL" --catalog "$P" --queries assets/demo/products/queries.test.jsonl --ablation
hsl evaluate --model "$MODEL" --catalog "$P" --queries assets/demo/products/queries.composed.test.jsonl --ablation
hsl evaluate --model "$FIXED" --catalog "$P" --queries assets/demo/products/queries.composed.test.jsonl
hsl evaluate --model "$MODEL" --catalog "$L" --queries assets/demo/looks/queries.multi.test.jsonl --ablation
for q in "crimson tee with stripes" "navy polka dot dress" "a scarf, green, with dots"; do
  hsl search --model "$MODEL" --catalog "$P" -k 3 --text "$q"
done
hsl search --model "$MODEL" --catalog "$P" -k 3 --reference p00024 --text "make it blue and striped"
hsl search --model "$MODEL" --catalog "$L" -k 5 --region "a red handbag" --region "white sneakers"
stamp "all done"
