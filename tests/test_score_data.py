"""``aced score``: per-example curation scores of a dataset and a contact sheet."""

import numpy as np
import pytest
from test_loop import micro_overrides  # the same micro run as the loop's tests

from aced import cli


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two micro runs on the built-in scenes: a learner (1 step) and a reference (3 steps)."""
    root = tmp_path_factory.mktemp("score")
    for name, steps in (("learner", 1), ("reference", 3)):
        assert cli.main(["train", "--preset", "iid", *micro_overrides(root / name, steps)]) == 0
    return root


def test_scores_are_the_losses_and_their_combinations(models, tmp_path, capsys):
    import pyarrow.parquet as pq

    out, sheet = tmp_path / "scores.parquet", tmp_path / "sheet.png"
    argv = ["score", str(models / "learner"), "--reference", str(models / "reference")]
    argv += ["--out", str(out), "--sheet", str(sheet), "--limit", "40", "--per-side", "4"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "scored 40 of 40 examples" in printed and "mean learnability" in printed
    table = pq.read_table(out).to_pydict()
    learner, reference = np.array(table["loss/learner"]), np.array(table["loss/reference"])
    assert np.all(learner > 0) and np.all(reference > 0) and not np.allclose(learner, reference)
    np.testing.assert_allclose(table["score/learnability"], learner - reference, rtol=1e-5)
    np.testing.assert_allclose(table["score/easy_reference"], -reference, rtol=1e-6)
    np.testing.assert_allclose(table["score/hard_learner"], learner, rtol=1e-6)
    assert table["index"] == list(range(40)) and set(table["quality"]) <= set(range(5))
    assert sheet.stat().st_size > 10_000  # a rendered PNG
    assert not list(tmp_path.glob("*.partial"))


def test_bad_input_is_named(models, tmp_path, capsys):
    base = ["score", str(models / "learner"), "--reference", str(models / "reference")]
    base += ["--out", str(tmp_path / "s.parquet")]
    assert cli.main([*base, "--by", "loudest"]) == 2
    assert "choose a pair score of" in capsys.readouterr().err
    assert cli.main([*base, "train.steps=2"]) == 2
    assert "only data.* fields" in capsys.readouterr().err
    assert cli.main([*base, "--keep", "label", "--limit", "4"]) == 2
    assert "no column 'label'" in capsys.readouterr().err
    assert cli.main([*base[:3], str(tmp_path / "nothing"), *base[4:]]) == 1
    assert "holds neither checkpoints nor model files" in capsys.readouterr().err
    assert not (tmp_path / "s.parquet").exists()
