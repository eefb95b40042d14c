#!/usr/bin/env bash
# Rebuild checkpoints/fashion-mnist/ from scratch with argen's own commands (see README.md here). Rerunning resumes.
# About 2-3 hours on 2 CPU cores; OMP_NUM_THREADS=1 and two jobs at a time is the fastest use of 2 cores.
set -euo pipefail
cd "$(dirname "$0")/../.."
for kind in vq multiscale frequency; do argen train-tokenizer --config configs/fashion-mnist/tokenizer-$kind.toml; done
argen train-classifier --config configs/fashion-mnist/classifier.toml
for order in raster scale frequency neighbor; do
  argen train --config configs/fashion-mnist/$order.toml
  argen export --model runs/fashion-mnist/$order --out checkpoints/fashion-mnist/$order
done
for order in scale frequency; do  # the small models of collaborative decoding
  argen train --config configs/fashion-mnist/refiner-$order.toml
  argen export --model runs/fashion-mnist/refiners/$order --out checkpoints/fashion-mnist/refiners/$order
done
argen export --model runs/fashion-mnist/classifier --out checkpoints/fashion-mnist/classifier
argen bench --data fashion-mnist --out checkpoints/fashion-mnist --evaluate-only
