"""Hostile and careless input (issue 26): the catalogue of cases, and the ones not tested elsewhere.

Every case of the issue, per surface, and where it is tested (file::test); the cases of this file follow the list.

Server (`argen serve`), tests/test_serve_hostile.py:
  label "²", 5000-digit label or seed, JSON nested 30 000 deep, PNG declaring 100000², temperature 1e-40, form field
  sent as a file part, long unknown field, EPS upload::test_a_hostile_request_gets_one_line_and_the_server_serves_on;
  LAB TIFF::test_a_lab_tiff_upload_is_converted; ``--host ::1`` Host check::test_the_loopback_check_covers_ipv6;
  unexpected error → 500 with an id, one log line::test_an_unexpected_error_is_a_500_with_an_id_and_one_log_line;
  stalled body::test_a_stalled_body_is_cut_off; "classes": 5 and sampling.json cfg_scale NaN at start
  ::test_model_metadata_that_cannot_be_served_is_refused_at_start_naming_the_model.
Codec (``.argz``), tests/test_codec_hostile.py:
  colliding names and suffixes::test_repeated_names_never_land_on_an_existing_name,
  ::test_cli_colliding_names_give_one_file_per_image, ::test_writing_two_names_onto_one_file_is_refused; forged
  headers (all names equal, count=0, checks=[])::test_forged_header_fields_are_damaged_files,
  ::test_a_consistent_forgery_is_called_damaged_not_a_machine_difference; names.digits=2e9, count=block_size=1e9,
  count=1e7, 1 MB zlib bomb::test_small_files_declaring_huge_sizes_are_refused_within_1_gib.
CLI and configs, tests/test_cli_validation.py, tests/test_train.py and here:
  learning rate -1/NaN, batch size 0, save-every 0, seed 2^70/-1, image size 100000, steps 2.5, weight decay -1,
  warmup -10, grad clip -1 (flags and TOML)::test_bad_flags_are_refused_in_one_line_before_any_work,
  ::test_bad_recipe_values_are_refused_naming_the_file; train ``--out`` an existing file
  ::test_out_that_is_an_existing_file_is_refused; divergence advice (test_train.py)
  ::test_divergence_before_any_checkpoint_says_none_exists_and_the_way_on,
  ::test_settings_changed_names_only_the_differing_nested_keys; disk full / permissions
  ::test_checkpoint_write_errors_are_named_in_one_line; temp files of killed writes
  ::test_temporary_files_of_a_killed_write_are_removed_on_the_next_run. Here: ``--out`` an existing file or folder
  for sample, edit, compress, decompress, eval, export, encode::test_an_output_path_that_cannot_be_written_is_refused;
  a binary ``--config`` for every command::test_a_binary_config_is_refused_by_every_command; seed 2^70/-1 for sample,
  eval, edit::test_seeds_out_of_range_are_refused_by_every_sampling_command; ``argen sample --temperature 1e-40``
  ::test_argen_sample_refuses_a_vanishing_temperature_in_one_line.
Model directories, here:
  config.json width 12000 and 20000, depth 1000 and 10^6, num_classes 10^9 (whole and as 1e9), tokenizer
  codebook_size 10^9 and width 10^5, a frequency tokenizer of a 25000² latent, a residual model of 100000² images
  ::test_declared_sizes_are_refused_before_allocation_within_1_gib; a mistyped value
  ::test_a_mistyped_config_value_is_refused_naming_the_key; sampling.json cfg_scale NaN, temperature 1e-40, top_p 0
  ::test_unusable_recommended_sampling_is_refused_at_load_naming_the_file; sampling numbers (temperature 1e-40, NaN,
  inf, -1; top_k 2.5, -1; top_p 0, 1.5; cfg_scale NaN, inf; unknown schedule) for Pipeline and edit
  ::test_sampling_numbers_are_refused_in_the_sampler_layer; labels "²", 5000 digits, 2.5, True and seeds 2^70, -1
  ::test_labels_and_seeds_the_pipeline_cannot_use_are_one_line_errors.
Data folders, tests/test_images.py and here:
  FIFO never opened, skipped and counted::test_special_files_are_never_opened_and_a_folder_skips_them, here
  ::test_data_info_on_a_folder_with_a_fifo_returns_and_counts_it; pixel limits before decoding
  ::test_pixel_limits_are_checked_before_decoding; unreadable pictures
  ::test_what_is_not_a_readable_picture_is_refused_in_one_line.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from argen.cli import main
from argen.errors import ArgenError
from argen.pipeline import Pipeline

CHECKPOINTS = Path(__file__).resolve().parent.parent / "checkpoints" / "fashion-mnist"
RASTER = CHECKPOINTS / "raster"


def run_main(argv: list[str], capsys) -> tuple[int, str]:
    code = 0
    try:
        main(argv)
    except SystemExit as exit_:
        code = exit_.code
    return code, capsys.readouterr().err


def assert_one_line_refusal(code: int, err: str, words: str) -> None:
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and lines[0].startswith("argen: error: "), err
    assert words in lines[0], lines[0]


def edited_copy(source: Path, destination: Path, part: str, changes: dict) -> Path:
    """A copy of the release or model directory ``source`` with ``part``/config.json's config updated."""
    shutil.copytree(source, destination)
    path = destination / part / "config.json"
    document = json.loads(path.read_text())
    config = document["config"]
    (config["transformer"] if "transformer" in config else config).update(changes)
    path.write_text(json.dumps(document))
    return destination


# ---------------------------------------------------------------------------------------------------------------
# Model directories: sizes checked before allocation, under an address-space limit

BOMB_SCRIPT = """
import sys
import resource
from argen.cli import run
from argen.codec.residual import load_residual
from argen.errors import ArgenError
from argen.tokenizers import load_tokenizer

def virtual_bytes():
    for line in open("/proc/self/status"):
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024

for load in (load_residual, load_tokenizer):  # import what loading imports, so the limit binds only the load
    try:
        load(sys.argv[1])
    except ArgenError:
        pass
limit = virtual_bytes() + 2**30  # everything loaded so far, plus 1 GiB
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
for kind, path in zip(sys.argv[2::2], sys.argv[3::2]):
    try:
        if kind == "residual":
            load_residual(path)
        else:
            run(["sample", "--model", path, "--out", path + ".png", "--per-label", "1", "--labels", "0"])
        print("ACCEPTED", path)
    except ArgenError as error:
        print("REFUSED", str(error).replace(chr(10), "\\\\n"))
    except MemoryError:
        print("MEMORY", path)
"""

BOMBS = {  # name: (source, part, changes, words the refusal says)
    "width 12000": (RASTER, "generator", {"width": 12000}, "width = 12000"),
    "width 20000": (RASTER, "generator", {"width": 20000}, "width = 20000"),
    "depth 1000": (RASTER, "generator", {"depth": 1000}, "depth = 1000"),
    "depth 10^6": (RASTER, "generator", {"depth": 10**6}, "depth = 1000000"),
    "num_classes 10^9": (RASTER, "generator", {"num_classes": 10**9}, "num_classes = 1000000000"),
    "num_classes 1e9": (RASTER, "generator", {"num_classes": 1e9}, "num_classes must be a whole number"),
    "codebook_size 10^9": (RASTER, "tokenizer", {"codebook_size": 10**9}, "codebook_size = 1000000000"),
    "tokenizer width 10^5": (RASTER, "tokenizer", {"width": 10**5}, "width = 100000"),
    "frequency latent 25000²": (
        CHECKPOINTS / "frequency",
        "tokenizer",
        {"image_size": 100_000, "scales": [1, 2, 3, 4, 5, 25_000]},
        "declares a model of",
    ),  # fmt: skip
    "residual image 100000²": (RASTER / "residual", ".", {"image_size": 100_000}, "declares a model of"),
}


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmSize from /proc")
def test_declared_sizes_are_refused_before_allocation_within_1_gib(tmp_path):
    arguments = []
    for index, (name, (source, part, changes, _)) in enumerate(BOMBS.items()):
        directory = edited_copy(source, tmp_path / f"case{index}", part, changes)
        assert (directory / part / "config.json").stat().st_size < 2**20, name
        arguments += ["residual" if part == "." else "model", str(directory)]
    completed = subprocess.run(  # a fresh process: the limit must not bind this one
        [sys.executable, "-c", BOMB_SCRIPT, str(RASTER / "residual"), *arguments],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    lines = completed.stdout.splitlines()
    assert completed.returncode == 0 and len(lines) == len(BOMBS), completed.stderr[-2000:]
    for (name, (*_, words)), line in zip(BOMBS.items(), lines):
        assert line.startswith("REFUSED") and words in line, (name, line)


def test_a_mistyped_config_value_is_refused_naming_the_key(tmp_path):
    directory = edited_copy(RASTER, tmp_path / "model", "generator", {"width": "112"})
    with pytest.raises(ArgenError, match=r"generator/config.json: width must be a whole number, got '112'"):
        Pipeline.from_pretrained(directory)


# ---------------------------------------------------------------------------------------------------------------
# Sampling numbers, checked once in the sampler layer


@pytest.fixture(scope="module")
def pipeline():
    return Pipeline.from_pretrained(RASTER)


SAMPLING_CASES = [
    ({"temperature": 1e-40}, "temperature must be 0 (greedy) or a finite number of at least 0.01"),
    ({"temperature": math.nan}, "temperature must be"),
    ({"temperature": math.inf}, "temperature must be"),
    ({"temperature": -1.0}, "temperature must be"),
    ({"top_k": 2.5}, "top_k must be a whole number"),
    ({"top_k": -1}, "top_k must be a whole number"),
    ({"top_p": 0.0}, "top_p must be in (0, 1]"),
    ({"top_p": 1.5}, "top_p must be in (0, 1]"),
    ({"cfg_scale": math.nan}, "cfg_scale must be a finite number"),
    ({"cfg_scale": math.inf}, "cfg_scale must be a finite number"),
    ({"cfg_schedule": "cubic"}, "unknown cfg schedule 'cubic'"),
]


@pytest.mark.parametrize("entry", ["call", "edit"])
@pytest.mark.parametrize("settings, words", SAMPLING_CASES)
def test_sampling_numbers_are_refused_in_the_sampler_layer(pipeline, entry, settings, words):
    with pytest.raises(ArgenError) as caught:
        if entry == "call":
            pipeline([0], seed=0, **settings)
        else:
            pipeline.edit(Image.new("L", (28, 28), 128), None, [0], seed=0, **settings)
    message = str(caught.value)
    assert words in message and "\n" not in message, message


@pytest.mark.parametrize(
    "recommended, words",
    [
        ({"cfg_scale": math.nan}, "cfg_scale must be a finite number"),
        ({"temperature": 1e-40}, "temperature must be 0 (greedy)"),
        ({"top_p": 0}, "top_p must be in (0, 1]"),
    ],
)
def test_unusable_recommended_sampling_is_refused_at_load_naming_the_file(tmp_path, recommended, words):
    directory = tmp_path / "model"
    shutil.copytree(RASTER, directory)
    (directory / "sampling.json").write_text(json.dumps({"recommended": recommended}))  # NaN: JSON's extension
    with pytest.raises(ArgenError) as caught:
        Pipeline.from_pretrained(directory)
    assert str(caught.value).startswith(f"{directory / 'sampling.json'}: ") and words in str(caught.value)


def test_argen_sample_refuses_a_vanishing_temperature_in_one_line(tmp_path, capsys):
    out = tmp_path / "samples.png"
    argv = ["sample", "--model", str(RASTER), "--out", str(out), "--temperature", "1e-40", "--per-label", "1"]
    code, err = run_main(argv, capsys)
    assert_one_line_refusal(code, err, "temperature must be 0 (greedy) or a finite number of at least 0.01")
    assert not out.exists()


# ---------------------------------------------------------------------------------------------------------------
# Labels and seeds


@pytest.mark.parametrize(
    "label, words",
    [("²", "unknown class '²'"), ("9" * 5000, "(5000 digits) is out of range"), (2.5, "a label is"), (True, "a label")],
)
def test_labels_and_seeds_the_pipeline_cannot_use_are_one_line_errors(pipeline, label, words):
    with pytest.raises(ArgenError, match=None) as caught:
        pipeline([label], seed=0)
    assert words in str(caught.value) and "\n" not in str(caught.value)
    for seed in (2**70, -1):
        with pytest.raises(ArgenError, match=r"seed must be a whole number in \[0, 2\^63 - 1\]"):
            pipeline([0], seed=seed)
    assert pipeline.class_index("Bag") == 8 and pipeline.class_index("3") == 3  # names and digit strings still work


def test_argen_sample_refuses_label_superscript_two(tmp_path, capsys):
    code, err = run_main(["sample", "--model", str(RASTER), "--out", str(tmp_path / "s.png"), "--labels", "²"], capsys)
    assert_one_line_refusal(code, err, "unknown class '²'")


# ---------------------------------------------------------------------------------------------------------------
# The command line: output paths, seeds, binary configs


def command_lines(tmp_path: Path, out: str) -> dict[str, list[str]]:
    """Each command that writes output, its output flag set to ``out``; the other arguments exist."""
    image = tmp_path / "image.png"
    Image.new("L", (28, 28), 128).save(image)
    argz = tmp_path / "images.argz"
    argz.write_bytes(b"not read: the flags are refused first")
    model = str(RASTER)
    return {
        "sample": ["sample", "--model", model, "--out", out],
        "edit": ["edit", "--model", model, "--image", str(image), "--out", out],
        "compress": ["compress", "--model", model, str(image), "--out", out],
        "decompress": ["decompress", str(argz), "--out", out],
        "eval": ["eval", "--model", model, "--data", "fashion-mnist", "--json", out],
        "export": ["export", "--model", model, "--out", out],
        "encode": ["encode", "--tokenizer", f"{model}/tokenizer", "--data", "fashion-mnist", "--out", out],
    }


FOLDER_OUTPUTS = {"decompress", "export"}


@pytest.mark.parametrize("command", ["sample", "edit", "compress", "decompress", "eval", "export", "encode"])
def test_an_output_path_that_cannot_be_written_is_refused(command, tmp_path, capsys):
    existing_file, existing_folder = tmp_path / "notes.txt", tmp_path / "folder"
    existing_file.write_text("kept")
    existing_folder.mkdir()
    wrong = existing_file if command in FOLDER_OUTPUTS else existing_folder
    expected = "is an existing file, and this command writes a folder" if command in FOLDER_OUTPUTS else "is a folder"
    code, err = run_main(command_lines(tmp_path, str(wrong))[command], capsys)
    assert_one_line_refusal(code, err, expected)
    code, err = run_main(command_lines(tmp_path, str(existing_file / "inside"))[command], capsys)
    assert_one_line_refusal(code, err, "is a file, not a folder")
    assert existing_file.read_text() == "kept" and not any(existing_folder.iterdir())


@pytest.mark.parametrize("command", ["sample", "eval", "edit"])
@pytest.mark.parametrize("seed", [str(2**70), "-1"])
def test_seeds_out_of_range_are_refused_by_every_sampling_command(command, seed, tmp_path, capsys):
    argv = command_lines(tmp_path, str(tmp_path / "out.png"))[command]
    code, err = run_main([*argv, f"--seed={seed}"], capsys)
    assert_one_line_refusal(code, err, "--seed must be at least 0 and at most")


def test_a_binary_config_is_refused_by_every_command(tmp_path, capsys):
    from argen.commands import discover

    binary = tmp_path / "model.safetensors"
    binary.write_bytes(bytes(range(256)) * 4)
    for module in discover():
        code, err = run_main([module.NAME, "--config", str(binary)], capsys)
        assert_one_line_refusal(code, err, "is not a text file")


# ---------------------------------------------------------------------------------------------------------------
# Data folders


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_data_info_on_a_folder_with_a_fifo_returns_and_counts_it(tmp_path):
    for split in ("train", "test"):
        folder = tmp_path / "data" / split / "a"
        folder.mkdir(parents=True)
        for index in range(2):
            Image.new("RGB", (8, 8), (index * 90, 0, 0)).save(folder / f"{index}.png")
        os.mkfifo(folder / "fifo.png")  # opening it for reading would wait for a writer forever
    completed = subprocess.run(  # a subprocess, so that a regression is a timeout and not a hung test run
        [sys.executable, "-m", "argen", "data-info", "--data", f"folder:{tmp_path / 'data'}", "--image-size", "8"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.count("]: 2 images,") == 2 and completed.stdout.count("skipped files: 1") == 2, (
        completed.stdout
    )
