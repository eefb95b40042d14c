"""The README's and the docs pages' examples work: every `argen` command line in their bash blocks parses, the
README's Python block runs, and so do the docs pages' Python blocks (those that need Fashion-MNIST skip without it)."""

import re
import shlex
from pathlib import Path

import pytest

from argen.cli import parse_arguments

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
# Pages whose Python blocks are templates to copy into a new file (`...` bodies, a made-up registry entry): read,
# never run, since running one would register "myorder" and friends in this process.
TEMPLATE_PAGES = {"extending.md"}


def documents():
    return [README, *sorted(DOCS.rglob("*.md"))]


def code_blocks(language, path=README):
    return re.findall(rf"```{language}\n(.*?)```", path.read_text(), flags=re.DOTALL)


def command_lines(paths=None):
    """Each `argen ...` command of the bash blocks, continuation lines joined and comments dropped."""
    commands = []
    for path in paths or documents():
        for block in code_blocks("bash", path):
            for line in block.replace("\\\n", " ").splitlines():
                for part in line.split("&&"):
                    part = part.split(" #")[0].strip()
                    if part.startswith("argen "):
                        commands.append(pytest.param(part, id=f"{path.name}: {part[:60]}"))
    return commands


def docs_python_blocks():
    blocks = []
    for path in sorted(DOCS.rglob("*.md")):
        if path.name in TEMPLATE_PAGES:
            continue
        for index, block in enumerate(code_blocks("python", path)):
            blocks.append(pytest.param(path, block, id=f"{path.relative_to(DOCS)}#{index}"))
    return blocks


def fashion_mnist_installed():
    from argen.data.idx import find_idx_files

    return find_idx_files("fashion-mnist") is not None


def test_the_readme_has_examples():
    assert len(command_lines([README])) >= 10 and code_blocks("python")
    assert len(command_lines()) > len(command_lines([README])) and docs_python_blocks()


@pytest.mark.parametrize("command", command_lines())
def test_every_documented_command_parses(command, monkeypatch):
    monkeypatch.chdir(ROOT)  # --config paths in the docs are relative to the repository
    argv = shlex.split(command)[1:]
    try:
        parse_arguments(argv)
    except SystemExit as exit_:  # argparse exits on a bad flag: fail with the command, not a bare SystemExit
        if exit_.code == 0:  # --help
            return
        pytest.fail(f"documented command does not parse ({exit_.code}): {command}")


def run_blocks(blocks, name, tmp_path, monkeypatch):
    (tmp_path / "checkpoints").symlink_to(ROOT / "checkpoints")
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        exec(compile(block, name, "exec"), {})


def test_the_python_example_runs(tmp_path, monkeypatch):
    run_blocks(code_blocks("python"), "README.md", tmp_path, monkeypatch)
    assert (tmp_path / "first.png").is_file()


@pytest.mark.parametrize(("path", "block"), docs_python_blocks())
def test_the_docs_python_examples_run(path, block, tmp_path, monkeypatch):
    if "fashion-mnist" in block and "load_dataset" in block and not fashion_mnist_installed():
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    run_blocks([block], str(path.relative_to(ROOT)), tmp_path, monkeypatch)
