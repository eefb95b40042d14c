"""FID, KID, IS, precision/recall/density/coverage and `argen eval`.

The metrics are checked against independent numpy/scipy computations on random features, then `argen eval` is run
as a user runs it on a tiny dataset: real test images score a small FID against the train split, noise a large one.
"""

import json

import numpy as np
import pytest
import torch
from conftest import write_idx_dataset
from scipy import linalg

from argen.cli import run
from argen.data import load_images_npz, save_images_npz
from argen.errors import ArgenError
from argen.metrics import feature_metrics, precision_recall_density_coverage


def random_features(count, *, dimension=16, shift=0.0, scale=1.0, seed=0):
    """Correlated Gaussian features; the same shift and scale give the same distribution whatever the seed."""
    mixing = np.random.default_rng(99).normal(size=(dimension, dimension)) / np.sqrt(dimension)
    generator = np.random.default_rng(seed)
    return (generator.normal(size=(count, dimension)) * scale) @ mixing + shift


def numpy_fid(real, fake):
    mean_real, mean_fake = real.mean(0), fake.mean(0)
    covariance_real, covariance_fake = np.cov(real, rowvar=False), np.cov(fake, rowvar=False)
    root = linalg.sqrtm(covariance_real @ covariance_fake).real
    return float(((mean_real - mean_fake) ** 2).sum() + np.trace(covariance_real + covariance_fake - 2 * root))


def numpy_kid(real, fake):
    """Unbiased MMD² with the polynomial kernel (x·y/d + 1)³ of Bińkowski et al. 2018, over the whole sets."""
    dimension = real.shape[1]

    def kernel(a, b):
        return (a @ b.T / dimension + 1) ** 3

    k_rr, k_ff, k_rf = kernel(real, real), kernel(fake, fake), kernel(real, fake)
    n, m = len(real), len(fake)
    within_real = (k_rr.sum() - np.trace(k_rr)) / (n * (n - 1))
    within_fake = (k_ff.sum() - np.trace(k_ff)) / (m * (m - 1))
    return float(within_real + within_fake - 2 * k_rf.mean())


def numpy_inception_score(logits):
    probabilities = np.exp(logits - logits.max(1, keepdims=True))
    probabilities /= probabilities.sum(1, keepdims=True)
    marginal = probabilities.mean(0)
    return float(np.exp((probabilities * (np.log(probabilities) - np.log(marginal))).sum(1).mean()))


def numpy_prdc(real, fake, k):
    def distances(a, b):
        return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))

    real_radii = np.sort(distances(real, real), axis=1)[:, k]
    fake_radii = np.sort(distances(fake, fake), axis=1)[:, k]
    fake_to_real = distances(fake, real)  # (M, N)
    inside = fake_to_real <= real_radii[None, :]
    return {
        "precision": inside.any(1).mean(),
        "recall": (fake_to_real.T <= fake_radii[None, :]).any(1).mean(),
        "density": inside.sum(1).mean() / k,
        "coverage": inside.any(0).mean(),
    }


def test_metrics_agree_with_numpy_and_scipy():
    real, fake = random_features(400, seed=1), random_features(300, shift=0.3, scale=1.2, seed=2)
    logits = np.random.default_rng(3).normal(size=(300, 10)) * 2
    results = feature_metrics(
        torch.from_numpy(real), torch.from_numpy(fake), fake_logits=torch.from_numpy(logits),
        kid_subsets=1, kid_subset_size=10_000, inception_splits=1, nearest_k=3,
    )  # fmt: skip
    assert results["fid"] == pytest.approx(numpy_fid(real, fake), rel=1e-6)
    assert results["inception_score"] == pytest.approx(numpy_inception_score(logits), rel=1e-6)
    expected = numpy_prdc(real, fake, 3)
    for name, value in expected.items():
        assert results[name] == pytest.approx(value, abs=1e-12), name


def test_kid_matches_numpy_when_subsets_are_the_whole_sets():
    real, fake = random_features(200, seed=4), random_features(200, shift=0.5, seed=5)
    results = feature_metrics(torch.from_numpy(real), torch.from_numpy(fake), kid_subsets=1, kid_subset_size=200)
    assert results["kid"] == pytest.approx(numpy_kid(real, fake), rel=1e-6)


def test_metrics_separate_near_from_far():
    real = torch.from_numpy(random_features(500, seed=6))
    same = torch.from_numpy(random_features(500, seed=7))
    far = torch.from_numpy(random_features(500, shift=3.0, seed=8))
    near_results, far_results = feature_metrics(real, same, kid_subsets=5), feature_metrics(real, far, kid_subsets=5)
    assert near_results["fid"] < 0.1 * far_results["fid"]
    assert near_results["kid"] < 0.1 * far_results["kid"]
    assert near_results["precision"] > 0.8 and far_results["precision"] < 0.05
    assert near_results["coverage"] > 0.8 and far_results["coverage"] < 0.05
    identical = precision_recall_density_coverage(real, real.clone(), nearest_k=5)
    assert identical["precision"] == identical["recall"] == identical["coverage"] == 1.0


def test_metrics_are_deterministic_and_leave_the_global_generator_alone():
    real, fake = torch.randn(300, 8), torch.randn(300, 8) + 0.2
    logits = torch.randn(300, 4)
    torch.manual_seed(123)
    first = feature_metrics(real, fake, kid_subsets=10, kid_subset_size=100, fake_logits=logits)
    after_first = torch.rand(3)
    torch.manual_seed(123)
    second = feature_metrics(real, fake, kid_subsets=10, kid_subset_size=100, fake_logits=logits)
    assert first == second
    assert torch.equal(after_first, torch.rand(3))  # the caller's random stream is where it was
    torch.manual_seed(7)
    assert feature_metrics(real, fake, kid_subsets=10, kid_subset_size=100, fake_logits=logits) == first


def test_metric_inputs_are_checked():
    with pytest.raises(ArgenError, match="one D"):
        feature_metrics(torch.randn(10, 4), torch.randn(10, 5))
    with pytest.raises(ArgenError, match="k=5"):
        precision_recall_density_coverage(torch.randn(4, 3), torch.randn(10, 3))


def test_images_npz_round_trip_and_refusals(tmp_path):
    images = torch.randint(0, 256, (5, 3, 6, 6), dtype=torch.uint8)
    save_images_npz(tmp_path / "rgb.npz", images, torch.arange(5))
    loaded, labels = load_images_npz(tmp_path / "rgb.npz")
    assert torch.equal(loaded, images) and labels.tolist() == [0, 1, 2, 3, 4]
    save_images_npz(tmp_path / "gray.npz", images[:, :1], None)
    loaded, labels = load_images_npz(tmp_path / "gray.npz")
    assert torch.equal(loaded, images[:, :1]) and labels is None
    np.savez(tmp_path / "float.npz", images=np.zeros((2, 6, 6), dtype=np.float32))
    with pytest.raises(ArgenError, match="uint8"):
        load_images_npz(tmp_path / "float.npz")
    np.savez(tmp_path / "other.npz", pictures=np.zeros((2, 6, 6), dtype=np.uint8))
    with pytest.raises(ArgenError, match="no 'images'"):
        load_images_npz(tmp_path / "other.npz")
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    with pytest.raises(ArgenError, match="cannot read"):
        load_images_npz(tmp_path / "broken.npz")


@pytest.fixture(scope="module")
def evaluation_workspace(tmp_path_factory):
    """A 12×12 10-class dataset, a classifier trained on it, and a tiny generator (scale order).

    No shift augmentation: the class is the row of a bar, which a shift would move into another class's row.
    """
    root = tmp_path_factory.mktemp("evaluation")
    data = write_idx_dataset(root / "idx", train=400, test=200, size=12)
    common = ["--data", "mnist", "--data-dir", str(data), "--no-progress"]
    run(["train-classifier", *common, "--out", str(root / "classifier"), "--steps", "60", "--batch-size", "32",
         "--width", "8", "--warmup-steps", "5", "--shift", "0"])  # fmt: skip
    run(["train-tokenizer", *common, "--tokenizer", "multiscale", "--out", str(root / "tokenizer"), "--steps", "5",
         "--batch-size", "16", "--width", "8", "--latent-dim", "8", "--codebook-size", "32"])  # fmt: skip
    run(["train", *common, "--tokenizer", str(root / "tokenizer"), "--order", "scale", "--out", str(root / "model"),
         "--preset", "tiny", "--steps", "5", "--batch-size", "16", "--warmup-steps", "2"])  # fmt: skip
    return root, common


def evaluate(workspace, tmp_path, name, *arguments):
    root, common = workspace
    path = tmp_path / f"{name}.json"
    run(["eval", *common, "--classifier", str(root / "classifier"), "--json", str(path), *arguments])
    return json.loads(path.read_text())


def test_eval_real_split_scores_far_better_than_noise(evaluation_workspace, tmp_path, capsys):
    real = evaluate(evaluation_workspace, tmp_path, "real", "--real", "test", "--num", "200")
    noise = np.random.default_rng(0).integers(0, 256, size=(200, 12, 12), dtype=np.uint8)
    np.savez(tmp_path / "noise.npz", images=noise, labels=np.arange(200) % 10)
    scored = evaluate(evaluation_workspace, tmp_path, "noise", "--samples", str(tmp_path / "noise.npz"))
    assert real["images"] == scored["images"] == 200 and real["reference"]["images"] == 400
    assert real["fid"] < 0.2 * scored["fid"], (real["fid"], scored["fid"])
    assert real["class_accuracy"] > 0.9 and scored["class_accuracy"] < 0.5
    assert real["precision"] > scored["precision"]
    printed = capsys.readouterr().out
    assert "fid" in printed and "class_accuracy" in printed and "JSON:" in printed


def test_eval_model_writes_json_and_npz(evaluation_workspace, tmp_path):
    npz = tmp_path / "generated.npz"
    results = evaluate(evaluation_workspace, tmp_path, "model", "--model", str(evaluation_workspace[0] / "model"),
                       "--num", "30", "--batch-size", "16", "--cfg-scale", "1.5", "--save-npz", str(npz))  # fmt: skip
    for name in ("fid", "kid", "kid_std", "inception_score", "precision", "recall", "density", "coverage"):
        assert np.isfinite(results[name]), name
    assert 0.0 <= results["class_accuracy"] <= 1.0
    assert results["order"] == "scale" and results["images"] == 30
    # plain decoding makes one forward pass per step of the order's schedule
    from argen import Pipeline

    pipeline = Pipeline.from_pretrained(evaluation_workspace[0] / "model")
    steps = pipeline.order.layout(pipeline.tokenizer.grid_shapes).num_steps
    assert results["forward_passes_per_image"] == steps
    assert results["images_per_second"] > 0 and results["sampling"]["cfg_scale"] == 1.5
    images, labels = load_images_npz(npz)
    assert images.shape == (30, 1, 12, 12) and labels.tolist() == [index % 10 for index in range(30)]
    # The npz scores exactly as the run that made it.
    again = evaluate(evaluation_workspace, tmp_path, "again", "--samples", str(npz))
    for name in ("fid", "kid", "precision", "recall", "class_accuracy", "inception_score"):
        assert again[name] == pytest.approx(results[name], rel=1e-9), name


def test_eval_refuses_mismatches_before_work(evaluation_workspace, tmp_path):
    root, common = evaluation_workspace
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, images=np.zeros((20, 16, 16), dtype=np.uint8))
    with pytest.raises(ArgenError, match="classifier was trained on 1×12×12"):
        run(["eval", *common, "--classifier", str(root / "classifier"), "--samples", str(wrong)])
    with pytest.raises(ArgenError, match="with itself"):
        run(["eval", *common, "--classifier", str(root / "classifier"), "--real", "train"])
    with pytest.raises(ArgenError, match="holds a .tokenizer. checkpoint, but a classifier"):
        run(["eval", *common, "--classifier", str(root / "tokenizer"), "--real", "test"])


def test_inception_fid_refuses_before_sampling_when_it_cannot_run(evaluation_workspace, tmp_path):
    root, common = evaluation_workspace
    arguments = ["eval", *common, "--classifier", str(root / "classifier"), "--model", str(root / "model")]
    with pytest.raises(ArgenError, match="is not a file"):
        run([*arguments, "--inception-weights", str(tmp_path / "missing.pth")])
    # a file that is no Inception checkpoint (and, on this machine, no torch-fidelity): refused in one line, and
    # before any image is generated, so nothing is written
    (tmp_path / "fake.pth").write_bytes(b"not weights")
    with pytest.raises(ArgenError, match="Inception-FID needs torch-fidelity"):
        run([*arguments, "--inception-weights", str(tmp_path / "fake.pth"), "--json", str(tmp_path / "out.json")])
    assert not (tmp_path / "out.json").exists()


def test_reference_features_are_cached_by_classifier_and_images(evaluation_workspace, monkeypatch, tmp_path):
    import argen.metrics.evaluate as evaluate_module
    from argen.metrics.evaluate import load_evaluation_classifier, reference_features

    root, _ = evaluation_workspace
    monkeypatch.setenv("ARGEN_DATA", str(tmp_path))
    classifier, _ = load_evaluation_classifier(root / "classifier")
    options = {"data_dir": str(root / "idx"), "progress": False}
    first = reference_features(classifier, "mnist", split="test", **options)
    cached = list((tmp_path / "features").iterdir())
    assert len(cached) == 1
    calls = []
    real_outputs = evaluate_module.classifier_outputs
    monkeypatch.setattr(evaluate_module, "classifier_outputs", lambda *a, **k: calls.append(1) or real_outputs(*a, **k))
    again = reference_features(classifier, "mnist", split="test", **options)
    assert not calls and torch.equal(again["features"], first["features"])
    reference_features(classifier, "mnist", split="train", **options)  # other images: computed, cached apart
    assert len(calls) == 1 and len(list((tmp_path / "features").iterdir())) == 2
    with torch.no_grad():
        classifier.head.bias.add_(1.0)  # other weights: computed
    changed = reference_features(classifier, "mnist", split="test", **options)
    assert len(calls) == 2 and not torch.equal(changed["logits"], first["logits"])
    cached[0].write_bytes(b"damaged")  # a damaged file is recomputed, not trusted
    classifier, _ = load_evaluation_classifier(root / "classifier")  # the original weights: the damaged file's key
    repaired = reference_features(classifier, "mnist", split="test", **options)
    assert len(calls) == 3 and torch.equal(repaired["features"], first["features"])
    assert reference_features(classifier, "mnist", split="test", **options) and len(calls) == 3  # rewritten
