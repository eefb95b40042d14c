"""docs/own-images.md, run: every `argen` command of the page's bash blocks, in order, on a tiny generated folder.

The commands are the page's own; only the budgets are cut to seconds (`TINY`). Commands that cannot run here
(serving blocks, a CUDA device, torchrun) are parsed with argen's own parser, so a flag the page names that argen
does not have still fails the test.
"""

import re
import shlex
from pathlib import Path

import numpy as np
from PIL import Image

from argen.cli import parse_arguments, run

PAGE = Path(__file__).parent.parent / "docs" / "own-images.md"
# The page's budgets → seconds-long ones (the same commands otherwise).
TINY = {
    ("train-tokenizer", "--minutes", "10"): ["--steps", "3", "--batch-size", "8"],
    ("train", "--minutes", "5"): ["--minutes", "0.03"],  # still a time budget: the settings are chosen by timing
    ("train-classifier", "--minutes", "2"): ["--steps", "3", "--batch-size", "8"],
    ("tune", "--num", "2000"): ["--num", "8", "--batch-size", "8"],
    ("eval", "--num", "2000"): ["--num", "8", "--batch-size", "8"],
}


def page_commands() -> list[list[str]]:
    blocks = re.findall(r"```bash\n(.*?)```", PAGE.read_text(), flags=re.DOTALL)
    return [shlex.split(line) for block in blocks for line in block.splitlines() if line.startswith("argen ")]


def tiny(words: list[str]) -> list[str]:
    words = words[1:]  # drop "argen"
    for (command, flag, value), replacement in TINY.items():
        for index in range(len(words) - 1):
            if words[0] == command and words[index : index + 2] == [flag, value]:
                words = words[:index] + replacement + words[index + 2 :]
                break
    return words


def runs_here(words: list[str]) -> bool:
    return words[0] != "serve" and "cuda" not in words


def make_folder(root: Path) -> None:
    """Two classes of 40 noisy 32×32 photos, red-ish cats and blue-ish ships."""
    generator = np.random.default_rng(0)
    for name, colour in (("cat", (200, 80, 40)), ("ship", (40, 80, 200))):
        (root / name).mkdir(parents=True)
        for index in range(40):
            pixels = np.clip(np.array(colour) + generator.integers(-50, 50, (32, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{index}.png")


def test_the_page_runs_on_a_tiny_folder(tmp_path, monkeypatch, capsys):
    commands = page_commands()
    names = [words[1] for words in commands]
    for needed in ("data-info", "train-tokenizer", "train", "plot", "train-classifier", "tune", "eval", "serve"):
        assert needed in names, needed
    monkeypatch.chdir(tmp_path)
    make_folder(tmp_path / "photos")
    for words in commands:
        arguments = tiny(words)
        if runs_here(arguments):
            run(arguments + (["--no-progress"] if arguments[0] in ("train-tokenizer", "train") else []))
        else:
            assert parse_arguments(arguments).handler is not None
    printed = capsys.readouterr().out
    assert "chosen" in printed  # argen train --minutes said what it chose
    assert (tmp_path / "runs" / "samples.png").is_file() and (tmp_path / "runs" / "curves.png").is_file()
    assert (tmp_path / "runs" / "model" / "sampling.json").is_file()  # argen tune wrote it
    assert "(real held-out: " in printed and "warning: these scores may mislead" in printed  # 8 images: too few
