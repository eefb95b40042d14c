"""Inside the generator: activations at named hook points, sparse autoencoders on them, automatic interpretation of
their latents without a language model, circuits from per-head codes, and a prototype classifier.

- `activations`: hook names, capture to sharded safetensors, splicing and steering hooks;
- `sae`: TopK (+ AuxK) and ReLU + L1 sparse autoencoders (Gao et al., arXiv 2406.04093);
- `interpretation`: predicates over what argen knows of each position, detection and fuzzing scores
  (delphi, arXiv 2410.13928);
- `circuits`: heads and head pairs whose codes are unique to positive examples (O'Neill & Bui, arXiv 2405.12522);
- `prototypes`: an autoencoder with a prototype layer (Li et al., arXiv 1710.04806);
- `pages`: the static feature browser of `argen features`.
"""
