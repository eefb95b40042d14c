#!/usr/bin/env bash
# Rebuild checkpoints/fashion-mnist/ from scratch with argen's own commands (see README.md here). Rerunning resumes.
# About 2.5 hours of two CPU cores; OMP_NUM_THREADS=1 and two jobs at a time is the fastest use of 2 cores.
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=1
for kind in vq multiscale frequency; do
  argen train-tokenizer --config configs/fashion-mnist/tokenizer-$kind.toml
  argen encode --tokenizer runs/fashion-mnist/tokenizers/$kind --data fashion-mnist \
    --out runs/fashion-mnist/tokens/$kind-train.safetensors
done
argen train-classifier --config configs/fashion-mnist/classifier.toml
for order in raster scale frequency neighbor; do argen train --config configs/fashion-mnist/$order.toml; done
for order in scale frequency; do argen train --config configs/fashion-mnist/seed1/$order.toml; done
argen train --config configs/fashion-mnist/long/raster.toml
# 8 epochs of every order on the ids of the shipped tokenizers (raster and neighbor share the vq one), and the second
# training seed of scale and frequency
for order in raster scale frequency neighbor; do
  kind=$(case $order in scale) echo multiscale;; frequency) echo frequency;; *) echo vq;; esac)
  argen encode --tokenizer checkpoints/fashion-mnist/$order/tokenizer --data fashion-mnist \
    --out runs/fashion-mnist/tokens/$kind-shipped-train.safetensors
  argen train --config configs/fashion-mnist/epochs8/$order.toml
done
for order in scale frequency; do argen train --config configs/fashion-mnist/epochs8/seed1/$order.toml; done
for variant in paper-carry paper-nocarry grid-carry grid-nocarry; do  # the band-allocation ablation
  argen train-tokenizer --config configs/fashion-mnist/ablation/tokenizer-frequency-$variant.toml
  argen train --config configs/fashion-mnist/ablation/frequency-$variant.toml
done
python bench/convergence.py curves   # learning curves of every kept snapshot
python bench/convergence.py sweep    # picks each model's sampling settings, writes RUN/sampling.json
python bench/convergence.py final    # 10 000 samples per run at its settings
python bench/band_ablation.py
# float16 copies; sampling.json travels with them (the shipped generators are the 8-epoch runs)
for order in raster neighbor scale frequency; do
  argen export --model runs/fashion-mnist/epochs8/$order --out checkpoints/fashion-mnist/$order
done
for order in scale frequency; do  # the small models of collaborative decoding, trained as long as the large ones
  argen train --config configs/fashion-mnist/epochs8/refiner-$order.toml
  argen export --model runs/fashion-mnist/epochs8/refiners/$order --out checkpoints/fashion-mnist/refiners/$order
done
argen export --model runs/fashion-mnist/classifier --out checkpoints/fashion-mnist/classifier
# the lossless-mode residual models (the exported tokenizers are the ones they are tied to); neighbor shares raster's
for order in raster scale frequency; do
  argen train-residual --config configs/fashion-mnist/residual-$order.toml
  rm -rf checkpoints/fashion-mnist/$order/residual
  cp -r runs/fashion-mnist/residual/$order/release checkpoints/fashion-mnist/$order/residual
done
rm -rf checkpoints/fashion-mnist/neighbor/residual
cp -r checkpoints/fashion-mnist/raster/residual checkpoints/fashion-mnist/neighbor/residual
python bench/convergence.py final --results checkpoints/fashion-mnist/results.json  # what argen demo shows
