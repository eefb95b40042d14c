"""Offline evaluation behind `argen eval-tokenizer` and `argen eval`: numbers plus a picture to look at.

`argen eval` scores generated images with argen's own classifier (`argen train-classifier`) as the feature network:
its penultimate features give FID, KID and precision/recall/density/coverage against a real split, its logits the
Inception Score and the class accuracy (the fraction of class-conditional samples classified as the class asked
for). Generated images are not resized: the classifier sees them at the data's own size. The same function scores a
real split (``real="test"``: the floor a perfect generator reaches with that many images) and an npz of images
made elsewhere, so every row of a comparison table goes through one code path.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from tqdm.auto import tqdm

from argen.checkpoint import atomic_write_text
from argen.data import float_to_images, image_grid, images_to_float, load_dataset, load_images_npz, save_images_npz
from argen.errors import ArgenError, install_hint
from argen.metrics.features import feature_metrics
from argen.metrics.spectral import radial_power_spectrum, spectral_metrics
from argen.tokenizers.losses import codebook_statistics, psnr


def torchmetrics_ssim():
    """torchmetrics' SSIM, from the `eval` extra, with a clear message when it is not installed."""
    try:
        from torchmetrics.image import StructuralSimilarityIndexMeasure
    except ImportError:
        raise ArgenError(f"this command needs torchmetrics: {install_hint('eval')}") from None
    return StructuralSimilarityIndexMeasure(data_range=1.0)


@torch.no_grad()
def evaluate_tokenizer(
    directory: str | Path,
    data: str,
    *,
    split: str = "test",
    data_dir: str | None = None,
    batch_size: int = 250,
    limit: int | None = None,
    json_path: str | Path | None = None,
    image_path: str | Path | None = None,
    progress: bool = True,
) -> dict[str, float]:
    """Reconstruction quality and codebook health of a trained tokenizer on one split.

    PSNR is per image then averaged; SSIM is torchmetrics' Gaussian SSIM on [0, 1] images. Codebook usage is the
    fraction of codes that appear anywhere in the split's ids, perplexity is exp(entropy) of their histogram.
    Bits per image are given twice: nominal (tokens × log2 K, what a plain id array costs) and at the empirical
    entropy of the ids (what an order-0 entropy coder would need; the generator as entropy model does better).
    """
    from argen.tokenizers import load_tokenizer

    tokenizer, _ = load_tokenizer(directory)
    config = tokenizer.config
    dataset = load_dataset(
        data, split=split, data_dir=data_dir, image_size=config.image_size, channels=config.channels, progress=progress
    )
    count = len(dataset) if limit is None else min(limit, len(dataset))
    ssim_metric = torchmetrics_ssim()
    psnr_total, all_ids, spectra = 0.0, [], torch.zeros(2, 0, dtype=torch.float64)
    for start in tqdm(range(0, count, batch_size), desc="eval-tokenizer", unit="batch", disable=not progress):
        images = images_to_float(dataset.images[start : min(start + batch_size, count)])
        ids = tokenizer.encode(images)
        reconstruction = tokenizer.decode(ids).clamp(-1, 1)
        psnr_total += float(psnr(reconstruction, images)) * images.shape[0]
        batch_spectra = torch.stack([radial_power_spectrum(images), radial_power_spectrum(reconstruction)])
        spectra = batch_spectra * images.shape[0] + (spectra if spectra.numel() else 0)
        ssim_metric.update((reconstruction + 1) / 2, (images + 1) / 2)
        all_ids.append(ids)
    grids = [torch.cat([batch[index] for batch in all_ids]) for index in range(len(all_ids[0]))]
    statistics = codebook_statistics(grids, tokenizer.codebook_size)
    tokens_per_image = sum(height * width for height, width in tokenizer.grid_shapes)
    histogram = torch.bincount(torch.cat([grid.flatten() for grid in grids]), minlength=tokenizer.codebook_size)
    probabilities = histogram[histogram > 0].double() / histogram.sum()
    entropy_bits = float(-(probabilities * probabilities.log2()).sum())
    results = {
        "tokenizer": str(directory),
        "kind": config.kind,
        "data": data,
        "split": split,
        "images": count,
        "psnr": psnr_total / count,
        "ssim": float(ssim_metric.compute()),
        "codebook_size": tokenizer.codebook_size,
        "codebook_usage": statistics["usage"],
        "perplexity": statistics["perplexity"],
        "tokens_per_image": tokens_per_image,
        "bits_per_image_nominal": tokens_per_image * math.log2(tokenizer.codebook_size),
        "bits_per_image_entropy": tokens_per_image * entropy_bits,
    }
    results.update(spectral_metrics(spectra[0] / count, spectra[1] / count))  # reconstructions against originals
    if hasattr(tokenizer.quantizer, "band_sizes"):
        results["band_allocation"] = config.band_allocation
        results["frequencies_per_band"] = tokenizer.quantizer.band_sizes
    if json_path:
        atomic_write_text(json_path, json.dumps(results, indent=2) + "\n")
    if image_path:
        shown = min(16, count)
        originals = dataset.images[:shown]
        reconstructions = float_to_images(tokenizer.decode(tokenizer.encode(images_to_float(originals))))
        image_grid(torch.cat([originals, reconstructions]), columns=shown).save(image_path)
    return results


@torch.no_grad()
def classifier_outputs(
    classifier, images: torch.Tensor, *, batch_size: int = 500, progress: bool = False, description: str = "features"
) -> tuple[torch.Tensor, torch.Tensor]:
    """(features (N, D), logits (N, classes)) of uint8 ``images`` (N, C, H, W), in batches, in eval mode."""
    classifier.eval()
    device = next(classifier.parameters()).device
    features, logits = [], []
    for start in tqdm(range(0, images.shape[0], batch_size), desc=description, unit="batch", disable=not progress):
        batch_features = classifier.features(images_to_float(images[start : start + batch_size].to(device)))
        features.append(batch_features.float().cpu())
        logits.append(classifier.head(batch_features).float().cpu())
    return torch.cat(features), torch.cat(logits)


def check_images_fit(classifier, image_shape: tuple[int, int, int], *, what: str) -> None:
    """Refuse, before any work, images the classifier was not trained for (metrics never resize)."""
    config = classifier.config
    expected = (config.channels, config.image_size, config.image_size)
    if tuple(image_shape) != expected:
        raise ArgenError(
            f"{what} makes {image_shape[0]}×{image_shape[1]}×{image_shape[2]} images but the classifier was trained "
            f"on {expected[0]}×{expected[1]}×{expected[2]}: train a classifier on this data "
            "(`argen train-classifier`) and pass it with --classifier"
        )


def classifier_split(classifier, data: str, *, split: str, data_dir: str | None, progress: bool):
    """One split of ``data`` (an `argen.data.ImageDataset`) at the classifier's image size and channels."""
    config = classifier.config
    return load_dataset(
        data, split=split, data_dir=data_dir, image_size=config.image_size, channels=config.channels, progress=progress
    )


@torch.no_grad()
def reference_features(
    classifier,
    data: str,
    *,
    split: str = "train",
    data_dir: str | None = None,
    limit: int | None = None,
    progress: bool = True,
    cache: bool = True,
) -> dict:
    """Features and logits of the real images of one split, at the classifier's image size and channels.

    Computing them takes minutes on a CPU for 60 000 images, and every evaluation needs the same ones, so they are
    kept in ``$ARGEN_DATA/features/`` (or ``~/.cache/argen/features/``) under a key made of the classifier's
    weights and the images' bytes: another classifier, or a folder whose files changed, gets fresh features.
    """
    import hashlib

    from safetensors.torch import load_file, save_file

    from argen.checkpoint import atomic_write
    from argen.data import cache_directory

    images = classifier_split(classifier, data, split=split, data_dir=data_dir, progress=progress).images[:limit]
    digest = hashlib.sha256(images.numpy().tobytes())
    for name, tensor in sorted(classifier.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    path = cache_directory("features") / f"{digest.hexdigest()[:24]}.safetensors"
    features = logits = None
    if cache and path.is_file():
        try:
            stored = load_file(str(path))
            features, logits = stored["features"], stored["logits"]
        except Exception:  # a damaged cache file is recomputed, never trusted
            features = logits = None
    if features is None or features.shape[0] != images.shape[0]:
        features, logits = classifier_outputs(classifier, images, progress=progress, description=f"real {split}")
        if cache:
            path.parent.mkdir(parents=True, exist_ok=True)
            tensors = {"features": features.contiguous(), "logits": logits.contiguous()}
            atomic_write(path, lambda temporary: save_file(tensors, str(temporary)))
    return {
        "features": features,
        "logits": logits,
        "spectrum": radial_power_spectrum(images),  # a second or two, so not cached
        "data": data,
        "split": split,
        "images": images.shape[0],
    }


def generate_images(
    pipeline,
    *,
    num_images: int,
    batch_size: int = 100,
    seed: int = 0,
    progress: bool = True,
    **sampling,
) -> dict:
    """``num_images`` samples, classes balanced (image i asks for class i mod classes), batch b seeded seed + b.

    Returns uint8 ``images`` (N, C, H, W), ``labels`` (N,) or None, the sampling ``seconds`` (model calls and
    decoding), and ``forward_passes_per_image``: model calls one image waits for, i.e. calls per batch (a call
    serves the whole batch), averaged over batches.
    """
    num_classes = pipeline.model.config.num_classes
    labels = torch.arange(num_images) % num_classes if num_classes > 0 else None
    output = pipeline.generate_batched(
        labels, num_images=num_images, batch_size=batch_size, seed=seed, progress=progress, **sampling
    )
    return {
        "images": output.pixels,
        "labels": labels,
        "seconds": output.seconds,
        "forward_passes_per_image": output.forward_passes / output.batches,
    }


def score_images(
    images: torch.Tensor, labels: torch.Tensor | None, *, classifier, reference: dict, progress: bool = True
) -> dict[str, float]:
    """Every metric of uint8 ``images`` (N, C, H, W) against ``reference`` (from `reference_features`)."""
    features, logits = classifier_outputs(classifier, images, progress=progress, description="generated")
    results = feature_metrics(reference["features"], features, fake_logits=logits)
    if labels is not None:
        results["class_accuracy"] = float((logits.argmax(1) == labels).double().mean())
    if "spectrum" in reference:
        spectrum = radial_power_spectrum(images)
        results.update(spectral_metrics(reference["spectrum"], spectrum))
        results["radial_power_spectrum"] = {"real": reference["spectrum"].tolist(), "generated": spectrum.tolist()}
    return results


def load_evaluation_classifier(directory: str | Path, *, device: str | torch.device = "cpu"):
    """The classifier whose features define the metrics, and its test accuracy (None if not recorded)."""
    from argen.metrics.classifier import load_classifier

    classifier, document = load_classifier(directory)
    return classifier.to(device).eval(), document.get("extra", {}).get("test_accuracy")


def _open_model(
    model: str | Path, classifier_model: torch.nn.Module, sampling: dict, *, device: str, compile: bool,
    precision: str, progress: bool,
):  # fmt: skip
    """(the model directory's Pipeline, the sampling settings with the model's recommendations filling the gaps)."""
    from argen.model_directory import SAMPLING_DEFAULTS
    from argen.pipeline import Pipeline

    pipeline = Pipeline.from_pretrained(model, device=device, compile=compile, precision=precision)
    # The model's recommended settings fill what the caller left out, and the results record what was used.
    given = {name: sampling.get(name) for name in SAMPLING_DEFAULTS}
    sampling = {**sampling, **pipeline.sampling_settings(**given)}
    if progress:
        print("sampling: " + ", ".join(f"{name} {sampling[name]}" for name in SAMPLING_DEFAULTS))
    config = pipeline.tokenizer.config
    check_images_fit(classifier_model, (config.channels, config.image_size, config.image_size), what=str(model))
    return pipeline, sampling


def _sample(
    pipeline, model: str | Path, sampling: dict, results: dict, *, num_images: int, batch_size: int, seed: int,
    progress: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:  # fmt: skip
    """Generate ``num_images`` with ``pipeline``, record how in ``results``; returns (images, labels)."""
    generated = generate_images(
        pipeline, num_images=num_images, batch_size=batch_size, seed=seed, progress=progress, **sampling
    )
    # JSON-ready: an option naming another model (a directory, or a Pipeline) is recorded as text
    options = {key: value if isinstance(value, (str, int, float, bool)) or value is None else str(value)
               for key, value in sampling.items()}  # fmt: skip
    results.update(
        model=str(model), order=pipeline.order.name, seed=seed, batch_size=batch_size, sampling=options,
        sampling_seconds=generated["seconds"], images_per_second=num_images / generated["seconds"],
        forward_passes_per_image=generated["forward_passes_per_image"],
    )  # fmt: skip
    return generated["images"], generated["labels"]


def evaluate_generator(
    *,
    classifier: str | Path,
    data: str,
    model: str | Path | None = None,
    samples: str | Path | None = None,
    real: str | None = None,
    num_images: int = 10000,
    reference_split: str = "train",
    data_dir: str | None = None,
    batch_size: int = 100,
    seed: int = 0,
    device: str = "cpu",
    json_path: str | Path | None = None,
    npz_path: str | Path | None = None,
    reference: dict | None = None,
    inception_weights: str | Path | None = None,
    progress: bool = True,
    compile: bool = False,
    precision: str = "fp32",
    **sampling,
) -> dict:
    """What `argen eval` does: generate (or read, or take a real split), score, and write JSON.

    Exactly one of ``model`` (a model directory: ``num_images`` samples with ``sampling`` options such as
    cfg_scale, sampler, window), ``samples`` (an npz from `argen sample --save-npz` or elsewhere) or ``real``
    (a split of ``data``: the baseline a perfect generator would reach) gives the images. ``reference`` reuses
    features from `reference_features` (a benchmark scoring several models computes them once).
    ``inception_weights`` adds the papers' Inception-FID (``inception_fid``), checked before any sampling.
    ``compile`` and ``precision`` are those of `argen.Pipeline.from_pretrained`.
    """
    chosen = [name for name, value in (("model", model), ("samples", samples), ("real", real)) if value is not None]
    if len(chosen) != 1:
        raise ArgenError("give exactly one of --model, --samples or --real")
    if real is not None and real == reference_split:
        raise ArgenError(f"--real {real} would compare the {real} split with itself: use the other split")
    classifier_model, classifier_accuracy = load_evaluation_classifier(classifier, device=device)
    inception = inception_metric(inception_weights) if inception_weights is not None else None
    results: dict = {"data": data, "classifier": str(classifier), "classifier_test_accuracy": classifier_accuracy}
    pipeline = None
    if model is not None:
        pipeline, sampling = _open_model(
            model, classifier_model, sampling, device=device, compile=compile, precision=precision, progress=progress
        )
    elif samples is not None:
        images, labels = load_images_npz(samples)
        check_images_fit(classifier_model, tuple(images.shape[1:]), what=str(samples))
    if reference is None:
        reference = reference_features(
            classifier_model, data, split=reference_split, data_dir=data_dir, progress=progress
        )
    if pipeline is not None:
        images, labels = _sample(
            pipeline, model, sampling, results, num_images=num_images, batch_size=batch_size, seed=seed,
            progress=progress,
        )  # fmt: skip
    elif samples is not None:
        results["samples"] = str(samples)
    else:
        real_set = classifier_split(classifier_model, data, split=real, data_dir=data_dir, progress=progress)
        images, labels = real_set.images[:num_images], real_set.labels[:num_images]
        results["real"] = real
    results.update(images=images.shape[0], reference={key: reference[key] for key in ("data", "split", "images")})
    results.update(score_images(images, labels, classifier=classifier_model, reference=reference, progress=progress))
    if inception is not None:
        real_images = classifier_split(
            classifier_model, data, split=reference_split, data_dir=data_dir, progress=progress
        ).images
        results["inception_fid"] = inception_fid(inception, real_images, images, progress=progress)
    if npz_path:
        save_images_npz(npz_path, images, labels)
    if json_path:
        atomic_write_text(json_path, json.dumps(results, indent=2) + "\n")
    return results


def inception_metric(weights: str | Path):
    """torchmetrics' Inception-v3 FID (2048 pool features, the papers' network) loaded from a local weights file.

    It needs torch-fidelity, which imports torchvision: both must match the installed torch. The metric is built
    here, before any sampling, so a missing piece fails in one line and loses no work.
    """
    if not Path(weights).is_file():
        raise ArgenError(
            f"--inception-weights {weights} is not a file: download pt_inception-2015-12-05-6726825d.pth (the "
            "torch-fidelity Inception weights) and pass its path"
        )
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance

        return FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=str(weights))
    except (ImportError, RuntimeError, OSError) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ArgenError(
            "Inception-FID needs torch-fidelity and a torchvision that matches your torch "
            f"(pip install torch-fidelity): {message}"
        ) from None


@torch.no_grad()
def inception_fid(
    metric, real: torch.Tensor, fake: torch.Tensor, *, batch_size: int = 50, progress: bool = True
) -> float:
    """FID between uint8 (N, C, H, W) image sets with the papers' Inception network (grayscale repeated to RGB;
    torchmetrics resizes to 299×299 as the reference implementation does)."""
    for images, real_side in ((real, True), (fake, False)):
        description = "Inception " + ("real" if real_side else "generated")
        for start in tqdm(range(0, images.shape[0], batch_size), desc=description, disable=not progress):
            batch = images[start : start + batch_size]
            metric.update(batch.expand(-1, 3, -1, -1) if batch.shape[1] == 1 else batch, real=real_side)
    return float(metric.compute())
