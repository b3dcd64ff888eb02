"""The ``aced`` command: help, errors and exit codes, train -> eval (without the training
loop), ``python -m aced``."""

import json
import subprocess
import sys

import pytest
from test_loop import micro_overrides  # the same micro run, so that its compiled step is shared

from aced.cli import main
from aced.train.config import config_fields, preset


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
    assert listed == [
        "train",
        "eval",
        "reproduce",
        "convert",
        "tokenizer",
        "score",
        "embed",
        "lit-decoder",
    ]  # each works
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
