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

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from argen.checkpoint import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    config_from_dict,
    config_to_dict,
    load_release_weights,
    read_release_config,
    save_release,
)
from argen.data import float_to_images, release_fingerprint
from argen.errors import ArgenError
from argen.orders import build_order
from argen.samplers import SAMPLERS
from argen.tokenizers import load_tokenizer
from argen.transformer import Transformer, TransformerConfig

GENERATOR_KIND = "generator"


@dataclass
class GeneratorConfig:
    """What config.json of a generator release holds: the order and the transformer's config."""

    order: str
    transformer: dict = field(default_factory=dict)


@dataclass
class PipelineOutput:
    """images: PIL images; ids: one (B, h, w) grid per tokenizer grid; intermediates: per step, a list of PIL
    images decoded from what the steps so far produced (only with ``return_intermediates=True``)."""

    images: list[Image.Image]
    ids: list[torch.Tensor]
    labels: torch.Tensor | None
    forward_passes: int
    pixels: torch.Tensor  # uint8 (B, C, H, W)
    intermediates: list[list[Image.Image]] | None = None
    intermediate_pixels: list[torch.Tensor] | None = None  # per step, uint8 (B, C, H, W)
    passes_by_model: dict[str, int] | None = None  # collaborative: {"drafter": N, "refiner": S - N}


def to_pil(pixels: torch.Tensor) -> list[Image.Image]:
    """uint8 (B, C, H, W) → PIL images ("L" or "RGB")."""
    arrays = pixels.permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array) for array in arrays]


def load_generator(directory: str | Path, tokenizer, *, device: torch.device | str = "cpu"):
    """A generator release → (Transformer in eval mode, order, config document); checked against ``tokenizer``."""
    document = read_release_config(directory, kind=GENERATOR_KIND)
    source = str(Path(directory) / CONFIG_NAME)
    config = config_from_dict(GeneratorConfig, document["config"], source=source)
    transformer_config = config_from_dict(TransformerConfig, config.transformer, source=source)
    order = build_order(config.order, tokenizer)
    order.check_model(transformer_config, tokenizer)
    model = Transformer(transformer_config)
    load_release_weights(directory, model)
    return model.to(device).eval(), order, document


def same_tokenizer(first: Pipeline, second: Pipeline) -> bool:
    """Whether two pipelines share one tokenizer: by release fingerprint, else (pipelines built in memory) by config
    and weights."""
    if first.tokenizer is second.tokenizer:
        return True
    if first.tokenizer_fingerprint is not None and second.tokenizer_fingerprint is not None:
        return first.tokenizer_fingerprint == second.tokenizer_fingerprint
    if getattr(first.tokenizer, "config", None) != getattr(second.tokenizer, "config", None):
        return False
    mine, theirs = first.tokenizer.state_dict(), second.tokenizer.state_dict()
    return mine.keys() == theirs.keys() and all(torch.equal(mine[name], theirs[name].to(mine[name])) for name in mine)


class Pipeline:
    """Tokenizer + transformer + order, sampled with one of the `argen.samplers`.

    ``tokenizer_fingerprint`` identifies the tokenizer release (set by `from_pretrained`); it is how a refiner for
    collaborative decoding is checked to share this pipeline's tokenizer.
    """

    def __init__(
        self,
        tokenizer,
        model: Transformer,
        order,
        *,
        classes: list[str] | None = None,
        tokenizer_fingerprint: str | None = None,
    ):
        self.tokenizer = tokenizer
        self.model = model
        self.order = order
        self.classes = classes or []
        self.tokenizer_fingerprint = tokenizer_fingerprint
        self._refiners: dict[str, Pipeline] = {}  # refiner directories loaded once for many calls

    @classmethod
    def from_pretrained(cls, directory: str | Path, *, device: str | torch.device = "cpu") -> Pipeline:
        """Load ``directory/tokenizer`` and ``directory/generator`` and check that they belong together."""
        directory = Path(directory)
        if not (directory / "generator" / CONFIG_NAME).is_file():
            raise ArgenError(
                f"{directory} is not an argen model directory: it needs generator/ and tokenizer/ "
                "(made by `argen train`)"
            )
        tokenizer, _ = load_tokenizer(directory / "tokenizer")
        tokenizer = tokenizer.to(device).eval()
        model, order, document = load_generator(directory / "generator", tokenizer, device=device)
        extra = document.get("extra", {})
        expected = extra.get("tokenizer_fingerprint")
        fingerprint = release_fingerprint(directory / "tokenizer")
        if expected is not None and expected != fingerprint:
            raise ArgenError(
                f"{directory}/tokenizer is not the tokenizer this generator was trained on (fingerprints differ); "
                "copy the original tokenizer back"
            )
        return cls(tokenizer, model, order, classes=extra.get("classes"), tokenizer_fingerprint=fingerprint)

    def save_pretrained(self, directory: str | Path, *, dtype: torch.dtype | None = None) -> None:
        """Write ``directory/tokenizer`` and ``directory/generator`` (``dtype=torch.float16`` halves the size)."""
        directory = Path(directory)
        save_release(
            directory / "tokenizer", kind="tokenizer", config=self.tokenizer.config,
            state_dict=self.tokenizer.state_dict(), dtype=dtype,
        )  # fmt: skip
        config = GeneratorConfig(order=self.order.name, transformer=config_to_dict(self.model.config))
        extra = {"classes": self.classes, "tokenizer_fingerprint": release_fingerprint(directory / "tokenizer")}
        save_release(
            directory / "generator", kind=GENERATOR_KIND, config=config, state_dict=self.model.state_dict(),
            dtype=dtype, extra=extra,
        )  # fmt: skip

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def class_index(self, label: int | str) -> int:
        if isinstance(label, str) and not label.lstrip("-").isdigit():
            if label not in self.classes:
                raise ArgenError(f"unknown class {label!r}; this model knows: {', '.join(self.classes)}")
            return self.classes.index(label)
        index = int(label)
        if not 0 <= index < self.model.config.num_classes:
            raise ArgenError(f"class {index} is out of range: this model has {self.model.config.num_classes} classes")
        return index

    def refiner_model(self, refiner: Pipeline | str | Path) -> Transformer:
        """The transformer of ``refiner`` (a Pipeline or a model directory, loaded once) for collaborative decoding,
        after checking that it continues this pipeline's drafts: the same order on the same tokenizer."""
        if not isinstance(refiner, Pipeline):
            key = str(Path(refiner).resolve())
            if key not in self._refiners:
                self._refiners[key] = Pipeline.from_pretrained(refiner, device=self.device)
            refiner = self._refiners[key]
        if refiner.order.name != self.order.name:
            raise ArgenError(
                f"the refiner generates in {refiner.order.name!r} order and this model in {self.order.name!r}: "
                f"use a refiner trained with --order {self.order.name}"
            )
        if not same_tokenizer(self, refiner):
            raise ArgenError(
                "the refiner was trained on another tokenizer than this model (tokenizer fingerprints differ): "
                "train the refiner on this model's tokenizer"
            )
        return refiner.model

    @torch.no_grad()
    def __call__(
        self,
        labels: list[int | str] | torch.Tensor | None = None,
        *,
        num_images: int | None = None,
        cfg_scale: float = 1.0,
        cfg_schedule: str = "constant",
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int | None = 0,
        sampler: str = "ar",
        return_intermediates: bool = False,
        **sampler_options,
    ) -> PipelineOutput:
        """Generate one image per label (or ``num_images`` unconditional ones). The same seed gives the same images.

        ``cfg_scale`` is classifier-free guidance (1 = none); ``cfg_schedule`` "linear" ramps it as VAR does.
        """
        if sampler not in SAMPLERS:
            raise ArgenError(f"unknown sampler {sampler!r}: choose one of {', '.join(SAMPLERS)}")
        if sampler == "collaborative":
            if sampler_options.get("refiner") is None or sampler_options.get("draft_steps") is None:
                raise ArgenError(
                    "the collaborative sampler needs refiner= (a Pipeline or a model directory) and draft_steps= "
                    "(the steps this model makes before the refiner takes over)"
                )
            sampler_options["refiner"] = self.refiner_model(sampler_options["refiner"])
        if labels is not None:
            if not isinstance(labels, torch.Tensor):
                labels = torch.tensor([self.class_index(label) for label in labels], dtype=torch.long)
            if self.model.config.num_classes == 0:
                raise ArgenError("this model is unconditional: pass num_images instead of labels")
        elif num_images is None:
            raise ArgenError("pass labels (class-conditional) or num_images (unconditional)")
        generator = torch.Generator(device=self.device)
        generator.manual_seed(seed if seed is not None else torch.seed())
        steps: list[torch.Tensor] = []

        def keep_step(step: int, ids: list[torch.Tensor]) -> None:
            steps.append(float_to_images(self.order.preview(ids, step + 1, self.tokenizer)))

        result = SAMPLERS[sampler](
            self.model, self.order, self.tokenizer,
            labels=labels, batch_size=None if labels is not None else num_images,
            cfg_scale=cfg_scale, cfg_schedule=cfg_schedule, temperature=temperature, top_k=top_k, top_p=top_p,
            generator=generator, callback=keep_step if return_intermediates else None, **sampler_options,
        )  # fmt: skip
        pixels = float_to_images(self.tokenizer.decode(result.ids))
        return PipelineOutput(
            images=to_pil(pixels),
            ids=result.ids,
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
        cfg_scale: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        temperature: float = 1.0,
        seed: int | None = None,
        return_intermediates: bool = False,
        num: int = 1,
        **options,
    ) -> PipelineOutput:
        """Inpaint, outpaint or class-edit ``images`` (PIL images, or uint8 (B, C, H, W)); see `argen.samplers.editing`.

        ``masks``: PIL "L" images or bool (B, H, W), white / True = regenerate (None: everything). ``labels``: one
        class (index or name) for all images, one per image, or None (the null class). ``keep_steps`` K keeps the
        first K steps of the image and regenerates the rest under ``labels`` (class editing). Outside the mask the
        output equals the input exactly unless ``paste_back=False``. ``num`` edits per image, image-major. Further
        options: ``fill`` ("smooth" or "keep"), ``particles`` (sequential Monte Carlo), ``cfg_schedule``.
        """
        from argen.samplers.editing import as_images, as_masks, edit_images

        pixels = as_images(images, channels=self.tokenizer.config.channels)
        masks = as_masks(masks, batch=pixels.shape[0], height=pixels.shape[-2], width=pixels.shape[-1])
        if labels is not None and not isinstance(labels, torch.Tensor):
            listed = labels if isinstance(labels, (list, tuple)) else [labels]
            labels = torch.tensor([self.class_index(label) for label in listed], dtype=torch.long)
        generator = torch.Generator(device=self.device)
        generator.manual_seed(seed if seed is not None else torch.seed())
        result = edit_images(
            self.model, self.order, self.tokenizer, pixels, masks, labels, keep_steps=keep_steps,
            paste_back=paste_back, num=num, cfg_scale=cfg_scale, temperature=temperature, top_k=top_k or 0,
            top_p=1.0 if top_p is None else top_p, generator=generator, return_intermediates=return_intermediates,
            **options,
        )  # fmt: skip
        steps = result.intermediate_pixels
        return PipelineOutput(
            images=to_pil(result.pixels), ids=result.ids, labels=result.labels, forward_passes=result.forward_passes,
            pixels=result.pixels, intermediates=[to_pil(step) for step in steps] if steps is not None else None,
            intermediate_pixels=steps,
        )  # fmt: skip


def export_model(source: str | Path, destination: str | Path, *, dtype: torch.dtype | None = None) -> None:
    """What `argen export` does to a model directory: its tokenizer and generator, weights stored as ``dtype``.

    The token cache and training state stay behind. The tokenizer's fingerprint changes with its weights, so the
    generator's record of it is rewritten; the pair is loaded once at the end to prove it still fits together.
    """
    from argen.checkpoint import export_release

    source, destination = Path(source), Path(destination)
    Pipeline.from_pretrained(source)  # refuse a broken or mismatched source before writing anything
    export_release(source / "tokenizer", destination / "tokenizer", dtype=dtype)
    fingerprint = release_fingerprint(destination / "tokenizer")
    export_release(
        source / "generator",
        destination / "generator",
        dtype=dtype,
        extra_updates={"tokenizer_fingerprint": fingerprint},
    )
    Pipeline.from_pretrained(destination)


def copy_release(source: str | Path, destination: str | Path) -> None:
    """Copy a release directory's two files (used to put the tokenizer beside a generator)."""
    destination = Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    for name in (WEIGHTS_NAME, CONFIG_NAME):  # config last: its presence marks a complete release
        temporary = destination / f".{name}.copy"
        shutil.copyfile(Path(source) / name, temporary)
        temporary.replace(destination / name)


def sample_to_files(
    model_directory: str | Path,
    *,
    labels: list[str] | None = None,
    per_label: int = 8,
    grid_path: str | Path | None = "samples.png",
    progress_path: str | Path | None = None,
    npz_path: str | Path | None = None,
    batch_size: int = 64,
    device: str = "cpu",
    seed: int = 0,
    verbose: bool = True,
    **sampling,
) -> PipelineOutput:
    """What `argen sample` does: ``per_label`` images for each label (default every class), a grid with one row per
    label, optionally a GIF of every step and an npz of the images. Batches use seeds seed, seed+1, ... so a seed
    and batch size reproduce the same files."""
    import time

    from tqdm.auto import tqdm

    from argen.data import image_grid, save_images_npz

    pipeline = Pipeline.from_pretrained(model_directory, device=device)
    conditional = pipeline.model.config.num_classes > 0
    if conditional:
        chosen = [pipeline.class_index(label) for label in labels] if labels else list(range(len(pipeline.classes)))
        wanted = torch.tensor(chosen, dtype=torch.long).repeat_interleave(per_label)
    elif labels:
        raise ArgenError("this model is unconditional: drop --labels")
    total = len(wanted) if conditional else per_label
    outputs, start_time = [], time.perf_counter()
    for batch_index, start in enumerate(
        tqdm(range(0, total, batch_size), desc="sample", unit="batch", disable=not verbose)
    ):
        count = min(batch_size, total - start)
        outputs.append(
            pipeline(
                wanted[start : start + count] if conditional else None,
                num_images=None if conditional else count,
                seed=seed + batch_index,
                return_intermediates=progress_path is not None,
                **sampling,
            )
        )
    seconds = time.perf_counter() - start_time
    pixels = torch.cat([output.pixels for output in outputs])
    ids = [torch.cat([output.ids[index] for output in outputs]) for index in range(len(outputs[0].ids))]
    result = PipelineOutput(
        images=[image for output in outputs for image in output.images],
        ids=ids,
        labels=wanted if conditional else None,
        forward_passes=sum(output.forward_passes for output in outputs),
        pixels=pixels,
    )
    if grid_path:
        image_grid(pixels, columns=per_label).save(grid_path)
    if progress_path:
        frames = []
        for step in range(len(outputs[0].intermediate_pixels)):
            step_pixels = torch.cat([output.intermediate_pixels[step] for output in outputs])
            frames.append(image_grid(step_pixels, columns=per_label))
        durations = [250] * (len(frames) - 1) + [1500]  # hold the finished image
        frames[0].save(progress_path, save_all=True, append_images=frames[1:], duration=durations, loop=0)
    if npz_path:
        save_images_npz(npz_path, pixels, wanted if conditional else None)
    if outputs[0].passes_by_model is not None:
        result.passes_by_model = {
            name: sum(output.passes_by_model[name] for output in outputs) for name in outputs[0].passes_by_model
        }
    if verbose:
        passes = result.forward_passes / len(outputs)
        split = ""
        if result.passes_by_model is not None:  # collaborative decoding: which model made the calls
            counts = ", ".join(f"{name} {count / len(outputs):.0f}" for name, count in result.passes_by_model.items())
            split = f" ({counts})"
        print(
            f"{total} images in {seconds:.2f} s ({total / seconds:.1f} images/s), "
            f"{passes:.0f} forward passes per batch{split}"
        )
        for path, what in ((grid_path, "grid"), (progress_path, "progress GIF"), (npz_path, "npz")):
            if path:
                print(f"{what}: {path}")
    return result
