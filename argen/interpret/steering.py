"""Steering a generator with SAE features while it samples (``argen sample --steer`` / ``--clamp``).

Activation addition along a dictionary feature (Turner et al., "Steering Language Models With Activation
Engineering", arXiv 2308.10248; with SAE decoder directions as in Templeton et al.'s "Scaling Monosemanticity"
feature steering): ``--steer SAE:FEATURE=DELTA`` adds DELTA × the feature's unit decoder direction to the activation
at the SAE's hook point, at every position of every call; the SAE is not spliced in, so DELTA 0 gives exactly the
plain samples. ``--clamp SAE:FEATURE=VALUE`` sets the feature's activation a(x) through the SAE while keeping what the
SAE does not explain: x + (VALUE - a(x)) × direction.

The edits are forward hooks (`argen.interpret.activations.editing`); while one is registered the transformer runs its
blocks as modules and the sampling engine serves nothing it kept, so steered and plain generations of one pipeline
can alternate freely.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from argen.errors import ArgenError
from argen.interpret.activations import editing
from argen.interpret.sae import SparseAutoencoder, load_sparse_autoencoder
from argen.pipeline import Pipeline


@dataclass(frozen=True)
class FeatureEdit:
    """One steering edit: ``sae`` (an SAE directory), its latent ``feature``, and ``value``: the DELTA added along
    the feature's direction, or with ``clamp`` the activation the feature is set to."""

    sae: str
    feature: int
    value: float
    clamp: bool = False

    @classmethod
    def parse(cls, text: str, *, clamp: bool = False) -> FeatureEdit:
        """``"SAE:FEATURE=VALUE"`` (SAE a directory, which may itself hold ':') → the edit."""
        flag = "--clamp" if clamp else "--steer"
        path, colon, rest = text.rpartition(":")
        feature, equals, value = rest.partition("=")
        try:
            if not (colon and equals and path):
                raise ValueError
            return cls(path, int(feature), float(value), clamp)
        except ValueError:
            raise ArgenError(f"{flag} {text!r}: write SAE:FEATURE=VALUE, e.g. {flag} runs/sae:12=4.0") from None


def feature_edit(
    sae: SparseAutoencoder, feature: int, value: float, *, clamp: bool
) -> Callable[[Tensor], Tensor | None]:
    """An ``editing`` function for activations (B, L, D) or per-head (B, L, H, Dh) (flattened to the SAE's D)."""
    direction = sae.decoder_direction(feature).detach()  # (D,)
    if not clamp and value == 0:
        return lambda activation: None  # leaves every float as it was

    def edit(activation: Tensor) -> Tensor:
        flat = activation.flatten(2)  # (B, L, D)
        if flat.shape[-1] != direction.numel():
            raise ArgenError(f"the SAE reads width {direction.numel()}, the hook gives {flat.shape[-1]}: pass an SAE "
                             "trained on this model's hook point")  # fmt: skip
        step = direction.to(flat)
        if clamp:
            codes = sae.encode(flat.reshape(-1, flat.shape[-1]).float())[:, feature].view(*flat.shape[:-1], 1)
            return (flat + (value - codes.to(flat)) * step).view(activation.shape)
        return (flat + value * step).view(activation.shape)

    return edit


@contextlib.contextmanager
def steering(
    target: Pipeline | nn.Module, steer: Sequence[str | FeatureEdit] = (), clamp: Sequence[str | FeatureEdit] = ()
) -> Iterator[None]:
    """Apply the edits to every generation (or forward pass) of ``target`` inside the context.

    ``steer`` and ``clamp``: edits as `FeatureEdit` or ``"SAE:FEATURE=VALUE"`` strings. Example::

        with steering(pipeline, steer=["runs/sae-resid:17=8"]):
            images = pipeline(["Sneaker"] * 8).images
    """
    model = target.model if isinstance(target, Pipeline) else target
    edits = [e if isinstance(e, FeatureEdit) else FeatureEdit.parse(e) for e in steer]
    edits += [e if isinstance(e, FeatureEdit) else FeatureEdit.parse(e, clamp=True) for e in clamp]
    loaded: dict[str, SparseAutoencoder] = {}
    device = next(model.parameters()).device
    with contextlib.ExitStack() as stack:
        for item in edits:
            if item.sae not in loaded:
                if not Path(item.sae).is_dir():
                    raise ArgenError(f"{item.sae} is not an SAE directory (argen train-sae --out)")
                loaded[item.sae] = load_sparse_autoencoder(item.sae).to(device)
            sae = loaded[item.sae]
            if not sae.config.hook:
                raise ArgenError(f"{item.sae} does not record its hook point: train it again with argen train-sae")
            with torch.no_grad():
                edit = feature_edit(sae, item.feature, item.value, clamp=item.clamp)
            stack.enter_context(editing(model, sae.config.hook, edit))
        yield
