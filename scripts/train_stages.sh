# The stages both demo-model recipes share (scripts/train_demo_model.sh, train_context_model.sh),
# sourced after they set RUN and MODEL. Every stage is skipped when done and resumed from its
# checkpoint when interrupted.
CKPT=$MODEL/.checkpoint
hsl() { python -m hsl_demo "$@"; }
stamp() { echo "[$(date -u +%H:%M:%S)] $*"; }

# train NAME CHECKPOINT DONE_FILE ARGS...: skipped when DONE_FILE exists, resumed when CHECKPOINT does
train() {
  local name=$1 checkpoint=$2 done_file=$3; shift 3
  if [[ -e $done_file ]]; then stamp "$name: done already"; return; fi
  local resume=()
  [[ -e $CKPT/$checkpoint/train_state.safetensors ]] && resume=(--resume)
  stamp "$name: start ${resume[*]}"
  SECONDS=0
  hsl train "$@" --out "$MODEL" --checkpoint-every 250 "${resume[@]}"
  stamp "$name: finished in ${SECONDS}s"
}

# index_catalogs WORLD: both catalogs of a rendered world (products/, looks/) into RUN/catalogs
index_catalogs() {
  local catalog
  for catalog in products looks; do
    if [[ ! -e $RUN/catalogs/$catalog/manifest.json ]]; then
      stamp "index $catalog"
      hsl index "$1/$catalog/images" --metadata "$1/$catalog/metadata.jsonl" \
        --model "$MODEL" --out "$RUN/catalogs/$catalog"
    fi
  done
}
