#!/usr/bin/env bash
# Compact, committable results of one scripts/frontier_steps.py run (no weights):
#   bash scripts/collect_frontier.sh runs/frontier/mosr results/frontier-2026-12-05/mosr
# frontier.json/.md, the training run's run.json and loss curve, and a result bundle
# (mosr bundle) of every validation evaluation.
set -euo pipefail
src=$1; dst=$2
mkdir -p "$dst"
cp "$src/frontier.json" "$src/frontier.md" "$dst/"
cp "$src/train/run.json" "$dst/train-run.json"
cp "$src/train/losses.csv" "$dst/losses.csv"
if [ -f "$src/train/oalw_weights.csv" ]; then cp "$src/train/oalw_weights.csv" "$dst/"; fi
for ev in "$src"/val-step-*; do
  b=$(basename "$ev")
  [ -d "$dst/$b" ] || mosr bundle "$ev" --out "$dst/$b" > /dev/null
done
du -sh "$dst"
