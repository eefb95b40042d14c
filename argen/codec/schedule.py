"""The one schedule encoder and decoder both run, one block of images at a time.

Encoding runs the order's inference schedule with teacher forcing (one model call per step, batched over the block,
KV cache as in sampling); decoding replays the very same schedule, sampling nothing and taking each step's tokens
from the coder. Every model call and every probability is computed the same way on both sides; only where the
symbols come from differs. Legend: B images in a block, L sequence, V vocabulary, T_s positions of step s.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from argen.checkpoint import release_fingerprint
from argen.codec.container import content_checksum
from argen.codec.probabilities import Streams, quantize_log_probs
from argen.codec.residual import RESIDUAL_DIRECTORY, ResidualModel, load_residual
from argen.data import float_to_images, images_to_float
from argen.errors import ArgenError
from argen.orders.scale import CoarseToFineOrder
from argen.pipeline import Pipeline


class Schedule:
    """A model directory's coding schedule: the order's inference steps run with teacher forcing (encode) or with
    the symbols taken from the coder (decode), block by block. `argen.codec.Codec` adds files and checks to it.

    ``residual`` (a directory) is the p(x | x̂) model for lossless mode; by default ``DIR/residual`` when it exists.
    """

    def __init__(self, directory: str | Path, *, residual: str | Path | None = None, device: str = "cpu"):
        self.directory = Path(directory)
        self.pipeline = Pipeline.from_pretrained(self.directory, device=device)
        self.device = torch.device(device)
        self.tokenizer, self.model, self.order = self.pipeline.tokenizer, self.pipeline.model, self.pipeline.order
        self.layout = self.order.layout(self.tokenizer.grid_shapes)
        self.progressive = isinstance(self.order, CoarseToFineOrder)
        self.fingerprints = {
            "tokenizer": release_fingerprint(self.directory / "tokenizer"),
            "generator": release_fingerprint(self.directory / "generator"),
        }
        config = self.tokenizer.config
        self.shape = (int(config.channels), int(config.image_size), int(config.image_size))
        self.num_classes = int(self.model.config.num_classes)
        self.residual_directory = Path(residual) if residual is not None else self.directory / RESIDUAL_DIRECTORY
        self._residual: ResidualModel | None = None

    @property
    def token_streams(self) -> int:
        return self.layout.num_steps if self.progressive else 1

    def residual(self) -> ResidualModel:
        """The residual model (loaded once), checked to belong to this tokenizer."""
        if self._residual is None:
            if not (self.residual_directory / "config.json").is_file():
                raise ArgenError(
                    f"lossless mode needs a residual model and {self.residual_directory} has none: train one with "
                    f"`argen train-residual --model {self.directory}` or pass --residual DIR"
                )
            model, document = load_residual(self.residual_directory)
            trained_for = document.get("extra", {}).get("tokenizer_fingerprint")
            if trained_for != self.fingerprints["tokenizer"]:
                raise ArgenError(
                    f"the residual model {self.residual_directory} was trained for another tokenizer (fingerprint "
                    f"{trained_for}, this model's is {self.fingerprints['tokenizer']}): retrain it with "
                    f"`argen train-residual --model {self.directory}`"
                )
            if (model.config.channels, model.config.image_size) != self.shape[:2]:
                raise ArgenError(f"the residual model {self.residual_directory} is for another image shape")
            self._residual = model.to(self.device).eval()
            self.fingerprints["residual"] = release_fingerprint(self.residual_directory)
        return self._residual

    # -- the one schedule both sides run -------------------------------------------------------------------------

    @torch.no_grad()
    def _block(
        self,
        streams: Streams,
        batch: int,
        *,
        class_prior: str,
        lossless: bool,
        steps: int,
        images: Tensor | None = None,
        bits: dict[str, float] | None = None,
        classes: Tensor | None = None,
    ) -> tuple[Tensor, list[int], Tensor | None]:
        """Code (``images`` given) or decode one block of ``batch`` images.

        Returns (uint8 (B, C, H, W) pixels, the content checks, (B,) the coded classes or None). Every model call and
        every probability is computed the same way on both sides; only where the symbols come from differs (the
        images' tokens, or the coder).
        """
        truth_ids = None if images is None else self.tokenizer.encode(images_to_float(images.to(self.device)))
        labels = self._code_labels(streams, batch, class_prior, truth_ids=truth_ids, classes=classes, bits=bits)
        ids, checks = self._code_tokens(streams, batch, labels, steps, truth_ids=truth_ids, bits=bits)
        coded_classes = labels.cpu() if class_prior == "uniform" and self.num_classes else None
        if steps < self.layout.num_steps:
            return float_to_images(self.order.preview(ids, steps, self.tokenizer)), checks, coded_classes
        reconstruction = float_to_images(self.tokenizer.decode(ids))
        if not lossless:
            return reconstruction, checks, coded_classes
        known = self._code_residual(streams, reconstruction, images=images, bits=bits)
        return known, [*checks, content_checksum(known)], coded_classes

    def _code_labels(
        self,
        streams: Streams,
        batch: int,
        class_prior: str,
        *,
        truth_ids: list[Tensor] | None,
        classes: Tensor | None,
        bits: dict[str, float] | None,
    ) -> Tensor | None:
        """(B,) the block's class labels: coded with a uniform prior on stream 0, the null class, or None."""
        if not self.num_classes:
            return None
        if class_prior != "uniform":
            return torch.full((batch,), self.num_classes, dtype=torch.long, device=self.device)
        truth = None
        if truth_ids is not None:
            truth = classes.to(self.device) if classes is not None else self._cheapest_classes(truth_ids)
        weights = quantize_log_probs(torch.zeros(batch, self.num_classes))
        if bits is not None:
            bits["class"] += batch * math.log2(self.num_classes)
        return torch.from_numpy(streams.code(0, weights, truth)).long().to(self.device)

    def _code_tokens(
        self,
        streams: Streams,
        batch: int,
        labels: Tensor | None,
        steps: int,
        *,
        truth_ids: list[Tensor] | None,
        bits: dict[str, float] | None,
    ) -> tuple[list[Tensor], list[int]]:
        """The first ``steps`` steps of the schedule → (the id grids, one content check per step or one in all)."""
        layout, order, device = self.layout, self.order, self.device
        truth_targets = order.targets(truth_ids) if truth_ids is not None else None  # (B, L)
        ids = [torch.zeros(batch, h, w, dtype=torch.long, device=device) for h, w in layout.grid_shapes]
        cache = self.model.new_cache(batch, capacity=layout.length)
        checks: list[int] = []
        for step in range(steps):
            inputs = order.step_inputs(step, ids, self.tokenizer)
            outputs = self.model(inputs, labels, layout=layout, index=layout.inputs_of_step[step], cache=cache)
            outputs = outputs[:, -len(layout.inputs_of_step[step]) :]  # this step's positions
            logits = order.logits(outputs, layout, step)  # (B, T_s, V)
            flat = logits.reshape(-1, logits.shape[-1])
            true = None
            if truth_targets is not None:
                true = truth_targets[:, layout.targets_of_step[step].to(device)].reshape(-1)
            symbols = streams.code(step if self.progressive else 0, quantize_log_probs(flat), true)
            if bits is not None:
                log_probs = F.log_softmax(flat.double(), dim=-1).gather(1, true.view(-1, 1))
                bits["tokens"] += float(-log_probs.sum()) / math.log(2)
            ids = order.scatter(ids, step, torch.from_numpy(symbols).long().view(batch, -1).to(device))
            if self.progressive:
                checks.append(content_checksum(labels if step == 0 else None, ids[step]))
        if not self.progressive:
            checks.append(content_checksum(labels, *ids))
        return ids, checks

    def _code_residual(
        self, streams: Streams, reconstruction: Tensor, *, images: Tensor | None, bits: dict[str, float] | None
    ) -> Tensor:
        """The exact uint8 (B, C, H, W) pixels given the reconstruction, stage by stage, on the last stream."""
        residual = self.residual()
        batch, channels = reconstruction.shape[:2]
        known = images.to(self.device).clone() if images is not None else torch.zeros_like(reconstruction)
        flat_known = known.view(batch, channels, -1)  # (B, C, H·W), a view: writes land in ``known``
        for stage in range(residual.config.stages):
            where = (residual.stages_of == stage).flatten().nonzero().flatten()
            true = flat_known[:, :, where] if images is not None else None  # (B, C, P)
            if bits is None:
                log_pmf = residual.stage_log_pmf(known, reconstruction, stage)  # (B, C, P, 256)
            else:
                log_pmf, chosen = residual.stage_log_pmf(known, reconstruction, stage, values=true)
                bits["residual"] += float(-chosen.double().sum()) / math.log(2)
            symbols = streams.code(self.token_streams, quantize_log_probs(log_pmf.reshape(-1, 256)), true)
            flat_known[:, :, where] = torch.from_numpy(symbols).to(torch.uint8).view(batch, channels, -1)
        return known

    @torch.no_grad()
    def _cheapest_classes(self, ids: list[Tensor]) -> Tensor:
        """(B,) the class under which each image's tokens cost least (one teacher-forced pass per class).

        Only the encoder runs this: any class decodes, so these floats need not match anything."""
        inputs, targets = self.order.train_inputs(ids, self.tokenizer)
        costs = []
        for label in range(self.num_classes):
            labels = torch.full((targets.shape[0],), label, dtype=torch.long, device=self.device)
            logits = self.order.logits(self.model(inputs, labels, layout=self.layout), self.layout)
            # on a contiguous (B·L, V) block: cross-entropy over a transposed (B, V, L) view reads V-strided memory
            flat = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")
            costs.append(flat.view(targets.shape).sum(1))
        return torch.stack(costs, dim=1).argmin(dim=1)
