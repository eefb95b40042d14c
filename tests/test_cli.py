"""The `argen` command as a user meets it: help, one-line errors, data-info, a classifier run end to end."""

import json
import subprocess
import sys

import pytest
from PIL import Image

from argen.cli import main
from argen.metrics.classifier import load_classifier


def run_main(argv, capsys):
    """Run the console entry point in-process; returns (exit code, stdout, stderr)."""
    code = 0
    try:
        main(argv)
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_help_lists_commands():
    completed = subprocess.run([sys.executable, "-m", "argen", "--help"], capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0
    for command in ("data-info", "train-classifier"):
        assert command in completed.stdout


@pytest.mark.parametrize(
    "argv, message",
    [
        (["data-info", "--data", "imagenet-please"], "unknown"),
        (["data-info", "--data", "folder:/does/not/exist"], "/does/not/exist"),
        (["train-classifier", "--data", "mnist", "--out", "unused"], None),  # no budget, or no data: either is one line
    ],
)
def test_errors_are_one_line_without_traceback(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("ARGEN_DATA", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    code, _, err = run_main(argv, capsys)
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("argen: error: "), err
    assert "Traceback" not in err
    if message:
        assert message in lines[0].lower()


def test_debug_shows_the_traceback(capsys):
    from argen.errors import ArgenError

    with pytest.raises(ArgenError):
        main(["data-info", "--data", "imagenet-please", "--debug"])


def test_data_info_prints_counts_and_writes_a_grid(idx_dataset, tmp_path, capsys):
    grid = tmp_path / "grid.png"
    code, out, _ = run_main(
        ["data-info", "--data", "mnist", "--data-dir", str(idx_dataset), "--grid", str(grid)], capsys
    )
    assert code == 0
    assert "mnist [train]: 64 images, 1×12×12" in out and "mnist [test]: 32 images" in out
    assert "10 classes" in out and "skipped files: 0" in out
    assert Image.open(grid).size[0] > 12 * 7


def test_train_classifier_end_to_end_and_resume(idx_dataset, tmp_path, capsys):
    out = tmp_path / "classifier"
    argv = [
        "train-classifier", "--data", "mnist", "--data-dir", str(idx_dataset), "--out", str(out),
        "--steps", "40", "--batch-size", "16", "--width", "8", "--no-progress", "--learning-rate", "3e-3",
        "--shift", "0",
    ]  # fmt: skip
    code, _, err = run_main(argv, capsys)
    assert code == 0, err
    model, document = load_classifier(out)
    assert document["extra"]["classes"] == [str(digit) for digit in range(10)]
    assert document["extra"]["complete"] is True and document["extra"]["step"] == 40
    # The bar dataset is easy: 40 steps learn it well above chance (10%).
    assert document["extra"]["test_accuracy"] > 0.5
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["step"] == 40 and records[-1]["loss"] < records[0]["loss"]
    # Rerunning the finished command resumes at step 40 and does no more steps.
    code, out_text, _ = run_main(argv, capsys)
    assert code == 0 and "resuming classifier training" in out_text and "from step 40" in out_text
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()][-1] == 40


def test_a_command_is_one_module_in_argen_commands(tmp_path, monkeypatch, capsys):
    """A file with NAME/HELP/add_arguments/run in argen/commands/ becomes a subcommand with --config support."""
    import sys

    import argen.commands

    (tmp_path / "hello.py").write_text(
        'NAME = "hello"\nHELP = "say hello"\nORDER = -1\n\n\n'
        "def add_arguments(parser):\n    parser.add_argument('--who', required=True)\n\n\n"
        "def run(arguments):\n    print(f'hello {arguments.who}')\n"
    )
    monkeypatch.setattr(argen.commands, "__path__", [*argen.commands.__path__, str(tmp_path)])
    monkeypatch.delitem(sys.modules, "argen.commands.hello", raising=False)
    assert argen.commands.discover()[0].NAME == "hello"  # ORDER puts it first in `argen --help`
    code, out, _ = run_main(["hello", "--who", "you"], capsys)
    assert code == 0 and out.strip() == "hello you"
    (tmp_path / "hello.toml").write_text('command = "hello"\nwho = "recipe"\n')
    code, out, _ = run_main(["hello", "--config", str(tmp_path / "hello.toml")], capsys)
    assert code == 0 and out.strip() == "hello recipe"
    code, out, _ = run_main(["--help"], capsys)
    assert code == 0 and "say hello" in out
    monkeypatch.delitem(sys.modules, "argen.commands.hello", raising=False)


def test_argen_warnings_are_one_line_and_in_full_with_verbose(tmp_path, capsys):
    from argen.errors import ArgenWarning

    folder = tmp_path / "images"
    (folder / "cat").mkdir(parents=True)
    for index in range(12):
        Image.new("L", (8, 8), index * 20).save(folder / "cat" / f"{index}.png")
    (folder / "cat" / "broken.png").write_bytes(b"not a png")
    code, _, err = run_main(["data-info", "--data", f"folder:{folder}"], capsys)
    assert code == 0
    warned = [line for line in err.splitlines() if "skipped 1 unreadable" in line]
    assert len(warned) == 1 and warned[0].startswith("argen: warning: folder:"), err
    assert ".py:" not in err and "UserWarning" not in err
    # --verbose: Python's own warning (with its source line; pytest records it here) and every skipped file listed.
    with pytest.warns(ArgenWarning, match="skipped 1 unreadable"):
        code, _, err = run_main(["data-info", "--data", f"folder:{folder}", "--verbose"], capsys)
    assert code == 0 and "argen: warning" not in err and "broken.png" in err


def test_num_means_images_in_all_and_the_old_per_label_spelling_still_works():
    import warnings

    from argen.cli import parse_arguments
    from argen.errors import ArgenWarning

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new spelling warns about nothing
        new = parse_arguments(["sample", "--model", "m", "--per-label", "3"])
    with pytest.warns(ArgenWarning, match="write --per-label"):
        old = parse_arguments(["sample", "--model", "m", "--num", "3"])
    assert new.per_label == old.per_label == 3
    with pytest.warns(ArgenWarning, match="write --per-label"):
        assert parse_arguments(["demo", "--num", "2"]).per_label == 2
    assert parse_arguments(["bench", "--data", "mnist", "--per-class", "2"]).per_class == 2  # an alias, same meaning
    for command in (["eval", "--data", "mnist", "--real", "test"], ["bench", "--data", "mnist"]):
        assert parse_arguments([*command, "--num", "50"]).num == 50
