#!/usr/bin/env bash
# The next embedded model (issue 28): the demo world with context (product photos among props, a
# mannequin, a second product, occlusion, textured backdrops: `make-demo-catalog --scenes 1`),
# a longer backbone schedule that also sees the scenes and the crops around their products, and
# the three heads trained with scenes in their photo pools. Into RUN (default
# /root/hsl-demo-runs/demo-v3): the world, the model, both catalogs, then every evaluation.
#
# Resumable: a finished stage is skipped, an interrupted one resumes from its checkpoint (every
# 250 steps), so it survives a restart of the machine or the session:
#
#   nohup nice -n 19 bash scripts/train_context_model.sh [RUN] >> RUN.log 2>&1 &
#
# Nothing in checkpoints/ or assets/ is touched: copy RUN/model, RUN/world and RUN/catalogs/*
# there once the figures meet their targets. Quick check of the whole pipeline (minutes):
#   STEPS_SCALE=0.01 LOOKS=20 bash scripts/train_context_model.sh /tmp/ctx-smoke
set -euo pipefail
RUN=${1:-/root/hsl-demo-runs/demo-v3}
SCALE=${STEPS_SCALE:-1}
LOOKS=${LOOKS:-400}
MODEL=$RUN/model
WORLD=$RUN/world
mkdir -p "$RUN"
steps() { python -c "print(max(2, round($1 * $SCALE)))"; }
# shellcheck source=scripts/train_stages.sh
source "$(dirname "$0")/train_stages.sh"

if [[ ! -e $WORLD/products/metadata.jsonl ]]; then
  stamp "render the world with context"
  hsl make-demo-catalog --out "$WORLD" --scenes 1 --looks "$LOOKS"
fi

train backbone backbone "$MODEL/open_clip_model.safetensors" backbone \
  --architecture hsl-demo-small --texts grammar --hard-negatives 0.5 --look-crops 1500 --scenes 2 \
  --steps "$(steps 8000)"
export OMP_NUM_THREADS=1
train hsl hsl "$MODEL/hsl/model.safetensors" hsl --model "$MODEL" --texts grammar \
  --steps "$(steps 4500)" --batch-size 128 --variants 30 --scenes 10 > "$RUN/hsl.log" 2>&1 &
HSL_PID=$!
train composed-domain composed-domain "$RUN/.composed-domain-done" composed --model "$MODEL" --texts grammar \
  --stage domain --steps "$(steps 1500)"
touch "$RUN/.composed-domain-done"
train composed-hybrid composed-hybrid "$RUN/.composed-hybrid-done" composed --model "$MODEL" --texts grammar \
  --stage hybrid --steps "$(steps 1500)"
touch "$RUN/.composed-hybrid-done"
train hmrn hmrn "$MODEL/hmrn/model.safetensors" hmrn --model "$MODEL" --texts grammar --steps "$(steps 1500)"
wait "$HSL_PID" || { stamp "hsl failed: see $RUN/hsl.log"; exit 1; }
unset OMP_NUM_THREADS

index_catalogs "$WORLD"

stamp "evaluate"
P=$RUN/catalogs/products
L=$RUN/catalogs/looks
hsl evaluate --model "$MODEL" --catalog "$P" --queries "$WORLD/products/queries.test.jsonl" --ablation
hsl evaluate --model "$MODEL" --catalog "$P" --queries "$WORLD/products/queries.composed.test.jsonl" --ablation
hsl evaluate --model "$MODEL" --catalog "$L" --queries "$WORLD/looks/queries.multi.test.jsonl" --ablation
python scripts/region_marks_check.py --model "$MODEL" --catalog "$P" \
  --queries "$WORLD/products/queries.test.heldout.jsonl" --scenes-only
python scripts/region_marks_check.py --model "$MODEL" --catalog "$P" \
  --queries "$WORLD/products/queries.test.heldout.jsonl"
python -c "
from hsl_demo.models.hsl import HSLHead
head = HSLHead.from_pretrained('$MODEL/hsl')
print('HSL weights:', dict(zip(head.term_names(), [round(w, 3) for w in head.weights.tolist()])))"
stamp "all done"
