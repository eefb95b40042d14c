"""Sparse autoencoders on a generator's activations: TopK with the AuxK loss, after Gao et al., "Scaling and evaluating
sparse autoencoders" (arXiv 2406.04093), and the ReLU + L1 baseline they compare against.

Both share one parameterisation (§2.1, 2.2): ``pre = relu(W_enc (x - b_dec) + b_enc)``, codes = pre (ReLU) or its k
largest entries (TopK, §2.3), ``x̂ = W_dec codes + b_dec``. The decoder's rows are kept at unit norm by normalising
them in the forward pass, which also removes the gradient component parallel to each row (what the reference code
does by hand after every step, §A.1), so the training loop needs no extra hook.

AuxK (§A.2): a latent is dead when it has not fired for ``dead_tokens`` training positions; the ``k_aux`` largest
pre-activations among the dead latents reconstruct the main reconstruction's error e = x - x̂ through the decoder
without its bias, and ``auxk_coefficient`` × ||e - ê||² / total variance is added to the loss (k_aux = D/2, the
coefficient 1/32, scaled down when fewer than k_aux latents are dead, as in EleutherAI's sparsify).

Metrics: L0 (mean active latents per position), FVU (fraction of variance unexplained, ||x - x̂||² summed over
the batch / ||x - mean||² summed), dead fraction (latents that never fired on an evaluation set).

Steering and splicing are forward hooks around the hooked module (argen.interpret.activations): `decoder_direction`
gives the vector that ``--steer FEATURE=DELTA`` adds, DELTA × direction, at every position.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from argen.checkpoint import load_release
from argen.errors import ArgenError

if TYPE_CHECKING:  # argen.train pulls in the transformer; this module is light to import without it
    from argen.train import FitResult, TrainingConfig

SAE_KIND = "sparse-autoencoder"
SAE_KINDS = ("topk", "relu")


@dataclass
class SparseAutoencoderConfig:
    """What config.json of an SAE release holds. ``width`` D is the hooked activation's size (per-head outputs
    (H, Dh) are flattened to H·Dh), ``latents`` M the dictionary size."""

    kind: str
    width: int
    latents: int
    k: int = 32  # TopK: active latents per position
    l1_coefficient: float = 1e-3  # ReLU: weight of the L1 penalty on the codes
    auxk_coefficient: float = 1 / 32  # TopK: weight of AuxK (0 disables it)
    auxk_k: int = 0  # latents of the AuxK reconstruction; 0 = width // 2 (Gao et al. App. B.1)
    dead_tokens: int = 100_000  # positions without firing after which a latent counts as dead
    hook: str = ""  # the hook point it was trained on (argen.interpret.activations)
    model: str = ""  # the model directory the activations came from

    def __post_init__(self) -> None:
        if self.kind not in SAE_KINDS:
            raise ArgenError(f"unknown SAE kind {self.kind!r}; choose one of {', '.join(SAE_KINDS)}")
        if self.width < 1 or self.latents < 1:
            raise ArgenError(f"an SAE needs width ≥ 1 and latents ≥ 1, got {self.width} and {self.latents}")
        if self.kind == "topk" and not 1 <= self.k <= self.latents:
            raise ArgenError(f"--k must lie in [1, {self.latents}] (the latents), got {self.k}")


class SparseOutput(NamedTuple):
    reconstruction: Tensor  # (N, D)
    codes: Tensor  # (N, M) sparse
    pre_activations: Tensor  # (N, M) relu(W_enc (x - b_dec) + b_enc)


class SparseAutoencoder(nn.Module):
    """x (N, D) → codes (N, M) → x̂ (N, D); see the module docstring for the equations."""

    def __init__(self, config: SparseAutoencoderConfig):
        super().__init__()
        self.config = config
        self.encoder = nn.Linear(config.width, config.latents)
        # Gao et al. §A.1: the encoder starts as the decoder's transpose, decoder rows random unit vectors.
        direction = F.normalize(torch.randn(config.latents, config.width), dim=1)
        self.decoder_weight = nn.Parameter(direction.clone())  # (M, D), rows normalised in `decoder_directions`
        self.decoder_bias = nn.Parameter(torch.zeros(config.width))
        with torch.no_grad():
            self.encoder.weight.copy_(direction)
            self.encoder.bias.zero_()
        # Positions since each latent last fired in training: what AuxK calls dead (saved, so resume is exact).
        self.register_buffer("tokens_since_fired", torch.zeros(config.latents, dtype=torch.long))

    def decoder_directions(self) -> Tensor:
        """(M, D) unit-norm dictionary rows."""
        return F.normalize(self.decoder_weight, dim=1)

    def decoder_direction(self, feature: int) -> Tensor:
        """(D,) the unit direction feature ``feature`` writes; steering adds DELTA times this."""
        if not 0 <= feature < self.config.latents:
            raise ArgenError(f"feature {feature} is out of range: this SAE has {self.config.latents} latents")
        return self.decoder_directions()[feature]

    def pre_activations(self, x: Tensor) -> Tensor:
        """(N, D) → (N, M) relu(W_enc (x - b_dec) + b_enc)."""
        return F.relu(self.encoder(x - self.decoder_bias))

    def sparsify(self, pre: Tensor) -> Tensor:
        """(N, M) pre-activations → (N, M) codes: all of them (ReLU) or the k largest (TopK)."""
        if self.config.kind == "relu":
            return pre
        values, indices = pre.topk(self.config.k, dim=-1, sorted=False)
        return torch.zeros_like(pre).scatter_(-1, indices, values)

    def encode(self, x: Tensor) -> Tensor:
        """(N, D) → (N, M) codes."""
        return self.sparsify(self.pre_activations(x))

    def decode(self, codes: Tensor, *, bias: bool = True) -> Tensor:
        """(N, M) → (N, D)."""
        out = codes @ self.decoder_directions()
        return out + self.decoder_bias if bias else out

    def forward(self, x: Tensor) -> SparseOutput:
        pre = self.pre_activations(x)
        codes = self.sparsify(pre)
        return SparseOutput(self.decode(codes), codes, pre)


def fraction_of_variance_unexplained(x: Tensor, reconstruction: Tensor) -> Tensor:
    """||x - x̂||² / ||x - mean(x)||², both summed over the batch (N, D)."""
    total = (x - x.mean(0)).pow(2).sum().clamp_min(1e-12)
    return (x - reconstruction).pow(2).sum() / total


def sparse_autoencoder_loss(
    model: nn.Module, batch: dict[str, Tensor], *, update_dead: bool = True
) -> tuple[Tensor, dict[str, float]]:
    """The training loss of one batch ``batch["activations"]`` (N, D), and what to log.

    TopK: FVU + AuxK (module docstring). ReLU: FVU + λ · mean L1 of the codes / mean norm of the centred data (the
    decoder rows have unit norm, so the penalty cannot be dodged by shrinking codes and growing rows).
    ``model`` may be DDP-wrapped: it is called, and its buffers read through ``.module``.
    """
    sae: SparseAutoencoder = getattr(model, "module", model)
    config = sae.config
    x = batch["activations"]
    output = model(x)
    fvu = fraction_of_variance_unexplained(x, output.reconstruction)
    fired = (output.codes > 0).any(0)
    if update_dead and sae.training:
        with torch.no_grad():
            sae.tokens_since_fired.add_(x.shape[0]).masked_fill_(fired, 0)
    logs = {"fvu": float(fvu.detach()), "l0": float((output.codes > 0).sum(-1).float().mean())}
    if config.kind == "relu":
        # The L1 of the codes over the data's typical norm: like FVU, the loss does not change with the data's scale.
        scale = (x - x.mean(0)).norm(dim=-1).mean().clamp_min(1e-12)
        l1 = output.codes.sum(-1).mean() / scale
        return fvu + config.l1_coefficient * l1, {**logs, "l1": float(l1.detach())}
    dead = sae.tokens_since_fired >= config.dead_tokens
    num_dead = int(dead.sum())
    logs["dead"] = float(num_dead / config.latents)
    if config.auxk_coefficient <= 0 or num_dead == 0:
        return fvu, logs
    k_aux = config.auxk_k or max(1, config.width // 2)
    scale = min(num_dead / k_aux, 1.0)  # fewer dead latents than k_aux: a smaller share of the residual
    k_aux = min(k_aux, num_dead)
    candidates = torch.where(dead[None], output.pre_activations, -torch.inf)
    values, indices = candidates.topk(k_aux, dim=-1, sorted=False)
    auxiliary = torch.zeros_like(output.pre_activations).scatter_(-1, indices, values.clamp_min(0))
    error = (x - output.reconstruction).detach()
    total = (x - x.mean(0)).pow(2).sum().clamp_min(1e-12)
    auxk = scale * (sae.decode(auxiliary, bias=False) - error).pow(2).sum() / total
    return fvu + config.auxk_coefficient * auxk, {**logs, "auxk": float(auxk.detach())}


@torch.no_grad()
def evaluate_sparse_autoencoder(sae: SparseAutoencoder, activations: Tensor, *, batch: int = 4096) -> dict[str, float]:
    """L0, FVU and dead fraction (latents that never fire) of ``sae`` on ``activations`` (N, D)."""
    sae.eval()
    squared_error, active, fired = 0.0, 0.0, torch.zeros(sae.config.latents, dtype=torch.bool)
    for start in range(0, activations.shape[0], batch):
        x = activations[start : start + batch]
        output = sae(x)
        squared_error += float((x - output.reconstruction).pow(2).sum())
        active += float((output.codes > 0).sum())
        fired |= (output.codes > 0).any(0).cpu()
    total = float((activations - activations.mean(0)).pow(2).sum())
    return {
        "l0": active / activations.shape[0],
        "fvu": squared_error / max(total, 1e-12),
        "dead_fraction": float((~fired).float().mean()),
    }


def train_sparse_autoencoder(
    activations: Tensor, config: SparseAutoencoderConfig, training: TrainingConfig, *, extra: dict | None = None
) -> FitResult:
    """Train an SAE on ``activations`` (N, D) with argen's loop (budgets, resume, divergence stop), EMA off: an
    average of weights whose decoder rows are each normalised is not itself a sensible dictionary, and Gao et al.
    use none. The release (config.json + model.safetensors, ``extra`` in its config) is written to ``training.out``."""
    from argen.train import TrainingTask, fit

    if activations.dim() != 2 or activations.shape[1] != config.width:
        raise ArgenError(f"activations must be (N, {config.width}), got {tuple(activations.shape)}")
    mean = activations[:65536].mean(0)

    def build() -> SparseAutoencoder:
        sae = SparseAutoencoder(config)
        with torch.no_grad():  # b_dec starts at the data mean (Gao et al. use the geometric median)
            sae.decoder_bias.copy_(mean)
        return sae

    task = TrainingTask(
        kind=SAE_KIND,
        config=config,
        build_model=build,
        tensors={"activations": activations},
        loss=sparse_autoencoder_loss,
        extra=dict(extra or {}),
    )
    return fit(task, replace(training, ema_decay=0.0))


def load_sparse_autoencoder(directory: str | Path) -> SparseAutoencoder:
    """An SAE release directory → the SAE in eval mode."""
    sae, _ = load_release(directory, kind=SAE_KIND, config_class=SparseAutoencoderConfig, build=SparseAutoencoder)
    return sae
