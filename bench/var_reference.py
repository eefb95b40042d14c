"""argen's next-scale pipeline against the official VAR sampler, side by side in one process.

VAR ("Visual Autoregressive Modeling: Scalable Image Generation via Next-Scale Prediction", Tian et al., arXiv
2404.02905; code github.com/FoundationVision/VAR) cannot be vendored, so this script imports it from a checkout
given by ``--var-path`` (kept outside the repository, never committed) and skips cleanly without one::

    git clone https://github.com/FoundationVision/VAR /tmp/var-ref
    python bench/var_reference.py --var-path /tmp/var-ref --model checkpoints/fashion-mnist/scale

VAR's model is built at the shipped next-scale model's sizes (depth 3, width 112, 4 heads, V = 1024, 32 latent
channels, scales 1,2,3,4,5,7; random weights: the cost does not depend on them) and timed with its own
``autoregressive_infer_cfg`` (guidance 1.5 on its linear ramp, top-k 100), its image decode skipped (only the token
loop and f_hat are timed). argen's `Pipeline` runs the same schedule with the same guidance (VAR's cfg c is
cfg_scale 1 + c with the "linear" schedule) and top-k, its decode *included*. The two alternate run by run, so a
busy machine slows both alike; the table gives medians and the ratio argen / VAR.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import types
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SCALES = (1, 2, 3, 4, 5, 7)


def build_var(var_path: Path, *, vocab: int, latent: int, depth: int, width: int, heads: int, classes: int):
    """VAR's VQVAE (only its quantizer and φ are used when the decode is skipped) and VAR transformer."""
    sys.path.insert(0, str(var_path))
    if "huggingface_hub" not in sys.modules:
        try:
            import huggingface_hub  # noqa: F401
        except ImportError:  # VAR imports it only for its hub mixin
            stub = types.ModuleType("huggingface_hub")
            stub.PyTorchModelHubMixin = type("PyTorchModelHubMixin", (), {})
            sys.modules["huggingface_hub"] = stub
    from models.var import VAR  # type: ignore[import-not-found]
    from models.vqvae import VQVAE  # type: ignore[import-not-found]

    vae = VQVAE(vocab_size=vocab, z_channels=latent, ch=32, test_mode=True, share_quant_resi=4, v_patch_nums=SCALES)
    var = VAR(
        vae_local=vae, num_classes=classes, depth=depth, embed_dim=width, num_heads=heads, norm_eps=1e-6,
        shared_aln=False, cond_drop_rate=0.1, attn_l2_norm=True, patch_nums=SCALES, flash_if_available=False,
        fused_if_available=False,
    )  # fmt: skip
    var.init_weights(init_adaln=0.5, init_adaln_gamma=1e-5, init_head=0.02, init_std=-1)
    vae.fhat_to_img = lambda f_hat: f_hat  # skip the image decode: time the token loop only
    return var.eval()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--var-path", help="a checkout of github.com/FoundationVision/VAR (outside this repository)")
    parser.add_argument("--model", default=str(ROOT / "checkpoints/fashion-mnist/scale"), help="argen model dir")
    parser.add_argument("--batch-sizes", default="1,64", help="comma-separated batch sizes")
    parser.add_argument("--repeats", type=int, default=30, help="alternating runs per batch size (median)")
    parser.add_argument("--cfg", type=float, default=1.5, help="VAR's guidance ratio (argen: cfg_scale 1 + cfg)")
    parser.add_argument("--top-k", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--compile", action="store_true", help="also time argen with --compile")
    arguments = parser.parse_args(argv)
    if not arguments.var_path or not (Path(arguments.var_path) / "models" / "var.py").is_file():
        print(
            f"skipped: no VAR checkout at {arguments.var_path!r} (pass --var-path to a clone of FoundationVision/VAR)"
        )
        return
    torch.set_num_threads(arguments.threads)
    sys.path.insert(0, str(ROOT))
    from argen.pipeline import Pipeline

    pipelines = {"argen": Pipeline.from_pretrained(arguments.model)}
    if arguments.compile:
        pipelines["argen compiled"] = Pipeline.from_pretrained(arguments.model, compile=True)
    config = pipelines["argen"].model.config
    var = build_var(
        Path(arguments.var_path), vocab=config.vocab_size, latent=config.feature_dim, depth=config.depth,
        width=config.width, heads=config.heads, classes=config.num_classes,
    )  # fmt: skip
    settings = dict(cfg_scale=1.0 + arguments.cfg, cfg_schedule="linear", top_k=arguments.top_k)

    def run_var(batch: int, seed: int) -> None:
        labels = torch.arange(batch) % config.num_classes
        var.autoregressive_infer_cfg(batch, labels, g_seed=seed, cfg=arguments.cfg, top_k=arguments.top_k)

    def run_argen(name: str):
        def run(batch: int, seed: int) -> None:
            pipelines[name]([index % config.num_classes for index in range(batch)], seed=seed, **settings)

        return run

    runners = {"VAR (official)": run_var, **{name: run_argen(name) for name in pipelines}}
    print(f"threads {arguments.threads}; VAR cfg {arguments.cfg} (argen cfg_scale {1 + arguments.cfg} linear), "
          f"top-k {arguments.top_k}; argen decode included, VAR decode skipped")  # fmt: skip
    print("| batch | " + " | ".join(runners) + " | argen / VAR |")
    print("|---|" + "---|" * (len(runners) + 1))
    for batch in [int(value) for value in arguments.batch_sizes.split(",")]:
        for runner in runners.values():  # warm-up (and compilation)
            runner(batch, 0)
        seconds: dict[str, list[float]] = {name: [] for name in runners}
        for repeat in range(arguments.repeats):
            for name, runner in runners.items():
                started = time.perf_counter()
                runner(batch, repeat)
                seconds[name].append(time.perf_counter() - started)
        rates = {name: batch / statistics.median(values) for name, values in seconds.items()}
        cells = " | ".join(f"{rate:.1f} img/s" for rate in rates.values())
        print(f"| {batch} | {cells} | {rates['argen'] / rates['VAR (official)']:.2f}× |", flush=True)


if __name__ == "__main__":
    with torch.no_grad():
        main()
