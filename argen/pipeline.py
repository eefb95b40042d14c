"""The whole chain in one readable place: labels → (transformer + order + sampler) → ids → tokenizer → images.

A model directory is a pipeline: ``DIR/tokenizer/`` and ``DIR/generator/``, each a release (``config.json`` +
``model.safetensors``). Load it the way diffusers pipelines load::

    pipeline = Pipeline.from_pretrained("runs/frequency")
    output = pipeline(labels=[0, 1, 2], cfg_scale=2.0, seed=0)
    output.images[0].save("first.png")

Collaborative decoding takes a second, smaller model directory trained with the same order on the same tokenizer::

    output = pipeline(labels=[0, 1, 2], sampler="collaborative", refiner="runs/small-frequency", draft_steps=3)
"""

from __future__ import annotations

import numbers
import operator
import re
from pathlib import Path

import torch

from argen.data import float_to_images
from argen.errors import ArgenError
from argen.model import Transformer, autocast, check_compile, check_precision
from argen.model_directory import (
    SAMPLING_DEFAULTS,
    load_model_directory,
    same_tokenizer,
    save_model_directory,
)
from argen.orders import Order
from argen.pipeline_output import PipelineOutput, join_outputs, to_pil
from argen.samplers import SAMPLERS, SamplingEngine
from argen.tokenizers import Tokenizer


class Pipeline:
    """Tokenizer + transformer + order, sampled with one of the `argen.samplers`.

    ``tokenizer_fingerprint`` identifies the tokenizer release (set by `from_pretrained`); it is how a refiner for
    collaborative decoding is checked to share this pipeline's tokenizer.

    The pipeline owns one `argen.samplers.SamplingEngine` for its lifetime (``engine``: what generations share, e.g.
    the class contexts and first calls); whatever changes the model's weights tells it: `to` does, and code that
    changes ``pipeline.model`` in place calls `weights_changed`.

    ``compile=True`` compiles the sampling engine (`argen.samplers.SamplingEngine.compile`; the first calls of each
    shape pay the compile time); ``precision="bf16"`` samples under bfloat16 autocast (`argen.model.autocast`),
    meant for GPUs. Both change floats in the last bits, so a seed may give other ids than in eager fp32.

    On a CPU the pipeline stores its tokenizer's conv weights channels-last (faster oneDNN kernels; the tokenizer
    passed in is changed in place, and still trains, saves and loads as before).
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        model: Transformer,
        order: Order,
        *,
        classes: list[str] | None = None,
        tokenizer_fingerprint: str | None = None,
        recommended: dict[str, float | str] | None = None,
        compile: bool = False,
        precision: str = "fp32",
    ):
        check_precision(precision, next(model.parameters()).device)
        self.engine = SamplingEngine(model)
        if compile:
            check_compile()
            self.engine.compile()
        self.compiled, self.precision = compile, precision
        if next(tokenizer.parameters()).device.type == "cpu":
            # oneDNN's channels-last convolutions beat the default layout's (im2col) ones on a CPU at these sizes:
            # the shipped 28×28 decoder 0.97 → 0.80 ms at batch 1, 25 → 21 ms at batch 64 (bench/kernels.py). Only
            # the conv weights' memory layout changes (values, names and saved checkpoints do not); outputs move in
            # the last bits.
            tokenizer.to(memory_format=torch.channels_last)
        self.tokenizer = tokenizer
        self.model = model
        self.order = order
        self.classes = classes or []
        self.tokenizer_fingerprint = tokenizer_fingerprint
        # Sampling settings that travel with the model (DIR/sampling.json); a caller's own argument always wins.
        self.recommended: dict[str, float | str] = dict(recommended or {})
        self._refiners: dict[str, Pipeline] = {}  # refiner directories loaded once for many calls

    @classmethod
    def from_pretrained(
        cls,
        directory: str | Path,
        *,
        device: str | torch.device = "cpu",
        compile: bool = False,
        precision: str = "fp32",
    ) -> Pipeline:
        """Load ``directory/tokenizer`` and ``directory/generator`` and check that they belong together (``compile``,
        ``precision``: see `Pipeline`)."""
        check_precision(precision, device)
        found = load_model_directory(directory, device=device)
        return cls(
            found.tokenizer, found.model, found.order, classes=found.classes,
            tokenizer_fingerprint=found.tokenizer_fingerprint, recommended=found.recommended, compile=compile,
            precision=precision,
        )  # fmt: skip

    def save_pretrained(self, directory: str | Path, *, dtype: torch.dtype | None = None) -> None:
        """Write ``directory/tokenizer`` and ``directory/generator`` (``dtype=torch.float16`` halves the size)."""
        save_model_directory(
            directory, tokenizer=self.tokenizer, model=self.model, order=self.order, classes=self.classes,
            recommended=self.recommended, dtype=dtype,
        )  # fmt: skip

    def sampling_settings(self, **given: float | str | None) -> dict[str, float | str]:
        """The sampling settings a call uses: each given (non-None) value, else the model's recommended one
        (DIR/sampling.json), else the library default (no guidance, the whole vocabulary, temperature 1)."""
        return {
            name: given[name] if given.get(name) is not None else self.recommended.get(name, default)
            for name, default in SAMPLING_DEFAULTS.items()
        }

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: torch.device | str) -> Pipeline:
        """Move the tokenizer and the model (and loaded refiners) to ``device``; returns the pipeline."""
        check_precision(self.precision, device)
        self.tokenizer.to(device)
        self.model.to(device)
        for refiner in self._refiners.values():
            refiner.to(device)
        self.weights_changed()
        return self

    def weights_changed(self) -> None:
        """Tell the sampling engine that the model's weights changed (loaded, trained, cast in place): what it kept
        from earlier generations is recomputed."""
        self.engine.invalidate()

    def class_index(self, label: int | str) -> int:
        """A class index (an int, or ASCII digits: "3") or a class name → the index; else a one-line ArgenError
        ("²" is a digit to `str.isdigit` but no number; 5000 digits are past `int`'s limit)."""
        number = isinstance(label, str) and re.fullmatch(r"-?[0-9]+", label) is not None
        if isinstance(label, str) and not number:
            if label not in self.classes:
                shown = repr(label) if len(label) <= 40 else f"{label[:40]!r}... ({len(label)} characters)"
                raise ArgenError(f"unknown class {shown}; this model knows: {', '.join(self.classes)}")
            return self.classes.index(label)
        if number and len(label) > 18:
            raise ArgenError(f"class {label[:20]}... ({len(label)} digits) is out of range")
        try:  # operator.index: ints, numpy and 0-d tensor integers pass, 2.5 does not
            index = int(label) if number else operator.index(label)
        except TypeError:
            index = None
        if index is None or isinstance(label, bool):
            raise ArgenError(f"a label is a class name or a whole number, got {label!r}")
        if not 0 <= index < self.model.config.num_classes:
            raise ArgenError(f"class {index} is out of range: this model has {self.model.config.num_classes} classes")
        return index

    def refiner_engine(self, refiner: Pipeline | str | Path) -> SamplingEngine:
        """The sampling engine of ``refiner`` (a Pipeline or a model directory, loaded once) for collaborative
        decoding, after checking that it continues this pipeline's drafts: the same order on the same tokenizer."""
        if not isinstance(refiner, Pipeline):
            key = str(Path(refiner).resolve())
            if key not in self._refiners:
                self._refiners[key] = Pipeline.from_pretrained(
                    refiner, device=self.device, compile=self.compiled, precision=self.precision
                )
            refiner = self._refiners[key]
        if refiner.order.name != self.order.name:
            raise ArgenError(
                f"the refiner generates in {refiner.order.name!r} order and this model in {self.order.name!r}: "
                f"use a refiner trained with --order {self.order.name}"
            )
        if not same_tokenizer(
            self.tokenizer, self.tokenizer_fingerprint, refiner.tokenizer, refiner.tokenizer_fingerprint
        ):
            raise ArgenError(
                "the refiner was trained on another tokenizer than this model (tokenizer fingerprints differ): "
                "train the refiner on this model's tokenizer"
            )
        return refiner.engine

    def sampler_options(self, sampler: str, options: dict[str, object]) -> dict[str, object]:
        """``options`` checked against the sampler's registered ones: the required ones are there, and model
        options (a refiner's directory or Pipeline) become that model's sampling engine."""
        info = SAMPLERS.info(sampler)
        required = [option for option in info.options if option.required]
        if any(options.get(option.keyword) is None for option in required):
            needed = " and ".join(f"{option.keyword}=" for option in required)
            raise ArgenError(f"the {sampler} sampler needs {needed} (its options: argen sample --help)")
        options = dict(options)
        for option in info.options:
            if option.model and options.get(option.keyword) is not None:
                options[option.keyword] = self.refiner_engine(options[option.keyword])
        return options

    @torch.no_grad()
    def __call__(
        self,
        labels: list[int | str] | torch.Tensor | None = None,
        *,
        num_images: int | None = None,
        cfg_scale: float | None = None,
        cfg_schedule: str | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = 0,
        sampler: str = "ar",
        return_intermediates: bool = False,
        **sampler_options,
    ) -> PipelineOutput:
        """Generate one image per label (or ``num_images`` unconditional ones). The same seed gives the same images.

        ``cfg_scale`` is classifier-free guidance (1 = none); ``cfg_schedule`` "linear" ramps it as VAR does. A
        sampling setting left at None takes the model's recommended value (`sampling_settings`).
        """
        sampler_options = self.sampler_options(sampler, sampler_options)
        settings = self.sampling_settings(
            cfg_scale=cfg_scale, cfg_schedule=cfg_schedule, temperature=temperature, top_k=top_k, top_p=top_p
        )
        if labels is not None:
            if not isinstance(labels, torch.Tensor):
                labels = torch.tensor([self.class_index(label) for label in labels], dtype=torch.long)
            if self.model.config.num_classes == 0:
                raise ArgenError("this model is unconditional: pass num_images instead of labels")
        elif num_images is None:
            raise ArgenError("pass labels (class-conditional) or num_images (unconditional)")
        if seed is not None and (
            isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2**63
        ):
            raise ArgenError(f"seed must be a whole number in [0, 2^63 - 1], got {seed!r}")
        generator = torch.Generator(device=self.device)
        generator.manual_seed(seed if seed is not None else torch.seed())
        steps: list[torch.Tensor] = []

        def keep_step(step: int, ids: list[torch.Tensor]) -> None:
            steps.append(float_to_images(self.order.preview(ids, step + 1, self.tokenizer)))

        # Inference mode skips autograd's per-operation bookkeeping (about 8% of a small model's batch-1 time); what
        # leaves it is cloned into ordinary tensors, so that callers may modify the outputs in place.
        with torch.inference_mode(), autocast(self.precision, self.device):
            result = SAMPLERS[sampler](
                self.engine, self.order, self.tokenizer,
                labels=labels, batch_size=None if labels is not None else num_images,
                **settings, generator=generator, callback=keep_step if return_intermediates else None,
                **sampler_options,
            )  # fmt: skip
            latent = result.latent  # the sampler's running latent, when it kept one: decoding recomposes nothing
            decoded = self.tokenizer.decode_latent(latent) if latent is not None else self.tokenizer.decode(result.ids)
            pixels = float_to_images(decoded)
        pixels, ids, steps = pixels.clone(), [grid.clone() for grid in result.ids], [step.clone() for step in steps]
        return PipelineOutput(
            images=to_pil(pixels),
            ids=ids,
            labels=labels,
            forward_passes=result.forward_passes,
            pixels=pixels,
            intermediates=[to_pil(step) for step in steps] if return_intermediates else None,
            intermediate_pixels=steps if return_intermediates else None,
            passes_by_model=result.passes_by_model,
        )

    @torch.no_grad()
    def edit(
        self,
        images,
        masks,
        labels,
        *,
        keep_steps: int | None = None,
        paste_back: bool = True,
        cfg_scale: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        temperature: float | None = None,
        seed: int | None = None,
        return_intermediates: bool = False,
        num: int = 1,
        **options,
    ) -> PipelineOutput:
        """Inpaint, outpaint or class-edit ``images`` (PIL images, or uint8 (B, C, H, W)); see `argen.editing`.

        ``masks``: PIL "L" images or bool (B, H, W), white / True = regenerate (None: everything). ``labels``: one
        class (index or name) for all images, one per image, or None (the null class). ``keep_steps`` K keeps the
        first K steps of the image and regenerates the rest under ``labels`` (class editing). Outside the mask the
        output equals the input exactly unless ``paste_back=False``. ``num`` edits per image, image-major. Further
        options: ``fill`` ("smooth" or "keep"), ``known_tokens`` ("requantized" or "encoded"), ``particles``
        (sequential Monte Carlo), ``cfg_schedule``. A sampling setting left at None (the default for each) takes the
        model's recommended value (`sampling_settings`), as in `__call__`.
        """
        from argen.editing import edit

        return edit(
            self, images, masks, labels, keep_steps=keep_steps, paste_back=paste_back, cfg_scale=cfg_scale,
            top_k=top_k, top_p=top_p, temperature=temperature, seed=seed, return_intermediates=return_intermediates,
            num=num, **options,
        )  # fmt: skip

    def generate_batched(
        self,
        labels: torch.Tensor | None,
        *,
        num_images: int,
        batch_size: int,
        seed: int = 0,
        progress: bool = True,
        return_intermediates: bool = False,
        **options,
    ) -> PipelineOutput:
        """``num_images`` images in batches of ``batch_size``, batch b seeded ``seed + b``, joined into one output.

        ``labels`` (N,) gives each image's class (None for an unconditional model). The one seeded batch loop of
        `argen sample` and `argen eval`: a seed and a batch size reproduce the same images. ``forward_passes`` and
        ``passes_by_model`` are summed over the ``batches``; ``seconds`` is the wall time of the whole loop.
        """
        import time

        from tqdm.auto import tqdm

        outputs, started = [], time.perf_counter()
        starts = range(0, num_images, batch_size)
        for batch_index, start in enumerate(tqdm(starts, desc="sample", unit="batch", disable=not progress)):
            count = min(batch_size, num_images - start)
            batch_labels = labels[start : start + count] if labels is not None else None
            outputs.append(
                self(
                    batch_labels,
                    num_images=None if labels is not None else count,
                    seed=seed + batch_index,
                    return_intermediates=return_intermediates,
                    **options,
                )  # fmt: skip
            )
        seconds = time.perf_counter() - started
        return join_outputs(outputs, labels=labels, seconds=seconds, intermediates=return_intermediates)
