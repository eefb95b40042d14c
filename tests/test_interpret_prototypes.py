"""The prototype classifier (argen.interpret.prototypes) trains and explains on a tiny set."""

import torch

from argen.cli import main
from argen.interpret.prototypes import (
    PrototypeClassifier,
    PrototypeConfig,
    load_prototype_classifier,
    prototype_loss,
    train_prototype_classifier,
)
from argen.train import TrainingConfig


def bars(count: int, *, size: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Class k (of 3) is a bright horizontal bar at rows 4k .. 4k+3 on a dark noisy background."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(count) % 3
    images = torch.randint(0, 40, (count, 1, size, size), generator=generator)
    for index, label in enumerate(labels.tolist()):
        images[index, 0, 4 * label : 4 * label + 4] = 255
    return images.to(torch.uint8), labels


def test_prototype_classifier_trains_and_explains_by_its_prototypes():
    torch.manual_seed(0)
    images, labels = bars(96)
    model = PrototypeClassifier(PrototypeConfig(channels=1, image_size=12, num_classes=3, prototypes=6, width=16))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(150):
        chosen = torch.arange(32) + (step * 32) % 96
        loss, logs = prototype_loss(model, {"images": images[chosen], "labels": labels[chosen]})
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    test_images, test_labels = bars(30, seed=1)
    predicted, nearest, distances = model.explain(test_images.float() / 255, nearest=2)
    assert float((predicted == test_labels).float().mean()) >= 0.9
    assert nearest.shape == (30, 2) and bool((distances[:, 0] <= distances[:, 1]).all())
    pictures = model.prototype_images()
    assert pictures.shape == (6, 1, 12, 12)
    # The explanation is faithful: the nearest prototype, decoded, shows a bar in the predicted class's rows.
    for index in range(30):
        rows = pictures[nearest[index, 0], 0].mean(1)  # (12,) brightness per row
        assert int(rows.argmax()) // 4 == int(predicted[index])


def test_prototype_classifier_trains_with_the_shared_loop(idx_dataset, tmp_path):
    training = TrainingConfig(out=str(tmp_path / "proto"), steps=3, batch_size=16, progress=False, save_every=2)
    result = train_prototype_classifier("fashion-mnist", training=training, prototypes=4, data_dir=str(idx_dataset))
    assert result.step == 3
    model = load_prototype_classifier(tmp_path / "proto")
    assert model.prototype_images().shape == (4, 1, 12, 12)


def test_train_classifier_command_with_prototypes(idx_dataset, tmp_path):
    out = tmp_path / "cli"
    main([
        "train-classifier", "--prototypes", "5", "--data", "fashion-mnist", "--data-dir", str(idx_dataset),
        "--steps", "2", "--batch-size", "16", "--out", str(out), "--no-progress",
    ])  # fmt: skip
    assert load_prototype_classifier(out).config.prototypes == 5
