"""The ``aced`` command: help, errors and exit codes, train -> eval (without the training
loop), ``python -m aced``."""

import json
import os
import subprocess
import sys

import pytest
from test_loop import micro_overrides  # the same micro run, so that its compiled step is shared

from aced.cli import main
from aced.train.config import config_fields, preset

COMMANDS = ["train", "eval", "reproduce", "convert", "tokenizer", "score", "embed", "lit-decoder"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_answers_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: aced {command} ")


def test_a_command_that_parses_its_own_arguments_takes_an_option_first(tmp_path, capsys):
    # Not "unrecognized arguments" at the top level: the command's own parser reads them.
    assert main(["embed", "--out", str(tmp_path / "emb"), str(tmp_path / "nowhere")]) == 1
    assert "holds neither checkpoints nor model files" in capsys.readouterr().err


def test_train_help_documents_every_field(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--preset", "smoke", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for key, (value, about, _) in config_fields(preset("smoke")).items():
        assert f"  {key} = " in out, key
        assert about.split()[0] in out
    assert "train.steps = 20  [int]" in out  # the values are those of the chosen preset
    assert 'step.method = "aced"  [iid | kd | acid | aced]' in out
    for name in ("smoke", "iid", "kd", "acid", "aced", "reference"):
        assert f"\n  {name} " in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "train.stepz=1"], "unknown config key 'train.stepz'"),
        (["train", "train.steps=1.5"], "train.steps='1.5' must be an integer"),
        (["train", "step.selection.filter_ratio=-0.1"], r"filter_ratio=-0.1 must be in [0, 1)"),
        (["train", "--preset", "huge"], "unknown preset 'huge'"),
        (["train", "steps"], "override 'steps' must look like key=value"),
    ],
)
def test_bad_input_exits_2_with_the_reason(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_missing_inputs_exit_1(tmp_path, capsys):
    assert main(["eval", str(tmp_path / "nowhere")]) == 1
    assert "holds neither checkpoints nor model files" in capsys.readouterr().err
    assert main(["convert", "hf-siglip", str(tmp_path / "nowhere"), str(tmp_path / "out")]) == 1
    assert "config.json not found" in capsys.readouterr().err


def test_python_dash_m_aced_runs_the_cli():
    done = subprocess.run(
        [sys.executable, "-m", "aced", "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0
    listed = [  # subcommand lines; a long name's help continues on a deeper-indented line
        line.split()[0]
        for line in done.stdout.splitlines()
        if line.startswith("    ") and not line.startswith("     ")
    ]
    assert listed == COMMANDS  # each answers --help (test_every_command_answers_help)
    assert "bench" not in done.stdout  # benchmarks are scripts, not a stub subcommand


EVAL_IN_A_FRESH_PROCESS = """
import sys
from aced.cli import main
status = main(["eval", sys.argv[1]])
print("imported:", [m for m in ("aced.train.loop",) if m in sys.modules])
sys.exit(status)
"""


def test_train_then_eval_reproduces_the_run_scores(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["train", "--preset", "iid", *micro_overrides(run_dir, 2)]) == 0
    out = capsys.readouterr().out
    assert f"run {run_dir}: 2 steps" in out and "average" in out and "chance" in out
    assert "reference" not in out.splitlines()[0]  # IID: no reference cost to add
    trained = json.loads((run_dir / "eval.json").read_text())["scores"]

    assert main(["eval", str(run_dir), "--out", str(tmp_path / "again.json")]) == 0
    table = capsys.readouterr().out
    again = json.loads((tmp_path / "again.json").read_text())
    assert again["scores"] == pytest.approx(trained, abs=1e-6)
    assert f"{100 * trained['average']:6.1f}%" in table
    assert again["metadata"]["source"] == str(run_dir)

    # The exported model, same weights; in a fresh process, to see that evaluating
    # does not import the training loop.
    done = subprocess.run(
        [sys.executable, "-c", EVAL_IN_A_FRESH_PROCESS, str(run_dir / "model")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "imported: []"
    exported = json.loads((run_dir / "model" / "eval.json").read_text())["scores"]
    assert exported == pytest.approx(trained, abs=1e-6)


CACHE_PROBE = """
import os, pathlib, sys
import jax
from aced import cli
from aced.cli_common import CACHE_ENV, CACHE_MAX_BYTES, default_cache_dir, enable_compilation_cache

tmp = pathlib.Path(sys.argv[1])
os.environ[CACHE_ENV] = str(tmp / "chosen")
assert cli.main(["eval", str(tmp / "missing")]) == 1  # a command turns the cache on first
assert jax.config.jax_compilation_cache_dir == str(tmp / "chosen")
assert jax.config.jax_compilation_cache_max_size == CACHE_MAX_BYTES  # bounded, so locked
jax.config.update("jax_compilation_cache_dir", None)
os.environ[CACHE_ENV] = "off"
assert enable_compilation_cache() is None and jax.config.jax_compilation_cache_dir is None
(tmp / "file").write_text("")
os.environ[CACHE_ENV] = str(tmp / "file")
try:
    enable_compilation_cache()
    raise SystemExit("a file was taken for the cache directory")
except ValueError as error:
    assert "not a directory" in str(error) and CACHE_ENV in str(error), error
del os.environ[CACHE_ENV]
os.environ["XDG_CACHE_HOME"] = str(tmp / "xdg")
assert enable_compilation_cache() == tmp / "xdg" / "aced" / "xla" == default_cache_dir()
assert jax.config.jax_compilation_cache_max_size == CACHE_MAX_BYTES
os.environ[CACHE_ENV] = str(tmp / "other")
assert enable_compilation_cache() == default_cache_dir()  # JAX's setting, once made, wins
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.jit(lambda x: 2 * x + 1)(jax.numpy.ones(3)).block_until_ready()
print(sorted(p.name for p in default_cache_dir().iterdir()))
"""


def test_commands_turn_on_the_compilation_cache_where_asked(tmp_path):
    """``ACED_COMPILATION_CACHE`` (a directory, or off), else ``$XDG_CACHE_HOME/aced/xla``;
    JAX's own setting wins. In a fresh process: the suite sets ``JAX_COMPILATION_CACHE_DIR``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_PERSISTENT")}
    env.pop("JAX_COMPILATION_CACHE_DIR")
    done = subprocess.run(
        [sys.executable, "-c", CACHE_PROBE, str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    written = done.stdout.strip().splitlines()[-1]
    assert "jit__lambda" in written, written  # the compiled program is on disk
    assert not (tmp_path / "other").exists()  # JAX's setting, once made, wins
