#!/usr/bin/env bash
# Evidence that training the heads on your catalog helps (README, "Your catalog, your Space"):
# the demo photos indexed with a backbone other than the embedded one (MODEL: a model folder
# with a backbone and no heads), the three heads trained with --catalog, and each head's
# held-out table (untrained vs trained) printed from its training.json.
#
#   MODEL=path/to/backbone-folder bash scripts/catalog_heads_evidence.sh [RUN]
set -euo pipefail
RUN=${1:-/root/hsl-demo-runs/evidence}
MODEL=${MODEL:?a backbone folder other than the embedded model}
hsl() { python -m hsl_demo "$@"; }
mkdir -p "$RUN"
for catalog in products looks; do
  [[ -e $RUN/$catalog/manifest.json ]] || hsl index "assets/demo/$catalog/images" \
    --metadata "assets/demo/$catalog/metadata.jsonl" --model "$MODEL" --out "$RUN/$catalog"
done
time_head() { local head=$1; shift; SECONDS=0; hsl train "$head" --model "$MODEL" --out "$RUN/model" "$@";
              echo "$head: ${SECONDS}s" >> "$RUN/times.txt"; }
[[ -e $RUN/model/hsl/training.json ]] || time_head hsl --catalog "$RUN/products" --steps 1500 --batch-size 128
[[ -e $RUN/model/composed/training.json ]] || time_head composed --catalog "$RUN/products" --steps 1500
[[ -e $RUN/model/hmrn/training.json ]] || time_head hmrn --catalog "$RUN/looks" --steps 600
python - "$RUN/model" <<'PY'
import json, sys
from pathlib import Path
for head in ("hsl", "composed", "hmrn"):
    info = json.loads((Path(sys.argv[1]) / head / "training.json").read_text())
    table, cat = info["evaluation"], info["catalog"]
    print(f"{head}: catalog {cat['name']} ({cat['items']} items, {cat['heldout_items']} held out); "
          f"untrained {table['untrained']}; trained {table['trained']}; {info['train_seconds']} s")
PY
