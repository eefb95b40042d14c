"""Training settings are checked where they are parsed: flags and TOML recipes alike, each refusal one line."""

import pytest

from argen.cli import main


def run_main(argv, capsys):
    code = 0
    try:
        main(argv)
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_refusal(code, err, words):
    assert code == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("argen: error: "), err
    assert "Traceback" not in err
    assert words in lines[0], lines[0]


BAD_FLAGS = [
    (["--learning-rate=-1"], "--learning-rate must be a finite number above 0"),
    (["--learning-rate", "nan"], "--learning-rate must be a finite number above 0, got 'nan'"),
    (["--batch-size", "0"], "--batch-size must be at least 1"),
    (["--save-every", "0"], "--save-every must be at least 1"),
    (["--seed", str(2**70)], "--seed must be at least 0 and at most"),
    (["--seed=-1"], "--seed must be at least 0"),
    (["--steps", "2.5"], "--steps takes a whole number"),
    (["--weight-decay=-1"], "--weight-decay must be a finite number at least 0"),
    (["--warmup-steps=-10"], "--warmup-steps must be at least 0"),
    (["--grad-clip=-1"], "--grad-clip must be a finite number at least 0"),
    (["--image-size", "100000"], "--image-size must be at least 1 and at most 1024"),
]


@pytest.mark.parametrize("flags, words", BAD_FLAGS)
@pytest.mark.parametrize("command", ["train-classifier", "train-tokenizer --tokenizer vq"])
def test_bad_flags_are_refused_in_one_line_before_any_work(command, flags, words, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ARGEN_DATA", str(tmp_path))  # no data there: a refusal must come before it is looked for
    argv = [*command.split(), "--data", "mnist", "--out", str(tmp_path / "run"), "--steps", "3", *flags]
    code, _, err = run_main(argv, capsys)
    assert_one_line_refusal(code, err, words)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "line, words",
    [
        ("learning-rate = -1.0", "--learning-rate must be a finite number above 0"),
        ("learning-rate = nan", "--learning-rate must be a finite number above 0"),
        ("batch-size = 0", "--batch-size must be at least 1"),
        ("save-every = 0", "--save-every must be at least 1"),
        (f"seed = {2**62 * 4}", "--seed must be at least 0 and at most"),
        ("seed = -1", "--seed must be at least 0"),
        ("steps = 2.5", "--steps takes a whole number, got 2.5"),
        ("weight-decay = -1.0", "--weight-decay must be"),
        ("warmup-steps = -10", "--warmup-steps must be at least 0"),
        ("grad-clip = -1.0", "--grad-clip must be"),
        ("image-size = 100000", "--image-size must be at least 1 and at most 1024"),
    ],
)
def test_bad_recipe_values_are_refused_naming_the_file(line, words, tmp_path, capsys):
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(f'data = "mnist"\nout = "{tmp_path / "run"}"\nepochs = 1\n{line}\n')
    code, _, err = run_main(["train-classifier", "--config", str(recipe)], capsys)
    assert_one_line_refusal(code, err, words)
    assert str(recipe) in err


def test_out_that_is_an_existing_file_is_refused(tmp_path, capsys):
    existing = tmp_path / "notes.txt"
    existing.write_text("not a run directory")
    argv = ["train-classifier", "--data", "mnist", "--out", str(existing), "--steps", "3"]
    code, _, err = run_main(argv, capsys)
    assert_one_line_refusal(code, err, "is an existing file, not a run directory")
    assert existing.read_text() == "not a run directory"


def test_a_binary_config_file_is_refused(tmp_path, capsys):
    binary = tmp_path / "model.safetensors"
    binary.write_bytes(bytes(range(256)) * 4)
    code, _, err = run_main(["train-classifier", "--config", str(binary)], capsys)
    assert_one_line_refusal(code, err, "is not a text file")


def test_help_shows_every_training_default_and_the_flags_match_the_dataclass(capsys):
    from dataclasses import fields

    from argen.train import TrainingConfig

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for expected in (
        # --batch-size, --preset, --warmup-steps: the recipe, or with --minutes chosen by timing (argen.train.budget)
        "--batch-size BATCH_SIZE global batch size (split over the processes) (default: 128; with --minutes, chosen",
        "(default: 3m; with --minutes, chosen to fit the budget here)",  # --preset
        "(default: 0.001)",  # --learning-rate
        "(default: 200; with --minutes",  # --warmup-steps, the generator recipe's own
        "checkpoint every N steps (default: 1000)",  # one default, the dataclass's (was 500 on the flag)
        "--final-learning-rate-ratio",
    ):
        assert expected in text, expected
    flags = {
        field.name: field.metadata.get("flag", "--" + field.name.replace("_", "-")) for field in fields(TrainingConfig)
    }
    for flag in flags.values():
        assert flag in text, flag


def test_a_recipe_switch_keeps_its_meaning_through_the_inverted_flag(tmp_path):
    from argen.cli import parse_arguments
    from argen.commands.arguments import training_config

    recipe = tmp_path / "recipe.toml"
    recipe.write_text(f'data = "mnist"\nout = "{tmp_path / "run"}"\nsteps = 3\nno-progress = true\n')
    arguments = parse_arguments(["train-classifier", "--config", str(recipe)])
    assert training_config(arguments).progress is False
    arguments = parse_arguments(["train-classifier", "--data", "mnist", "--out", str(tmp_path / "run"), "--steps", "3"])
    config = training_config(arguments)
    assert config.progress is True and config.save_every == 1000 and config.final_learning_rate_ratio == 0.1
