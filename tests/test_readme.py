"""The README's examples work: its Python block runs, and every `argen` command line in it parses."""

import re
import shlex
from pathlib import Path

import pytest

from argen.cli import parse_arguments

README = Path(__file__).resolve().parent.parent / "README.md"


def code_blocks(language):
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.DOTALL)


def command_lines():
    """Each `argen ...` command of the bash blocks, continuation lines joined and comments dropped."""
    commands = []
    for block in code_blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            for part in line.split("&&"):
                part = part.split(" #")[0].strip()
                if part.startswith("argen "):
                    commands.append(part)
    return commands


def test_the_readme_has_examples():
    assert len(command_lines()) >= 10 and code_blocks("python")


@pytest.mark.parametrize("command", command_lines())
def test_every_readme_command_parses(command, monkeypatch):
    monkeypatch.chdir(README.parent)  # --config paths in the README are relative to the repository
    argv = shlex.split(command)[1:]
    try:
        parse_arguments(argv)
    except SystemExit as exit_:  # argparse exits on a bad flag: fail with the command, not a bare SystemExit
        if exit_.code == 0:  # --help
            return
        pytest.fail(f"README command does not parse ({exit_.code}): {command}")


def test_the_python_example_runs(tmp_path, monkeypatch):
    (tmp_path / "checkpoints").symlink_to(README.parent / "checkpoints")
    monkeypatch.chdir(tmp_path)
    for block in code_blocks("python"):
        exec(compile(block, "README.md", "exec"), {})
    assert (tmp_path / "first.png").is_file()
