"""Configuration: validation on construction, typed key=value overrides, presets, old run dirs."""

import dataclasses

import pytest
from step_problem import step_config as method_preset

from aced.kernels import BlockSizes
from aced.train.config import (
    PRESETS,
    DistillConfig,
    OptimConfig,
    RunConfig,
    SelectionConfig,
    StepConfig,
    apply_overrides,
    config_fields,
    from_dict,
    preset,
    to_dict,
    updated,
)


@pytest.mark.parametrize("f", [-0.1, 1.0, 1.2])
def test_filter_ratio_outside_unit_interval_is_rejected(f):
    with pytest.raises(ValueError, match=rf"filter_ratio={f} must be in \[0, 1\)"):
        SelectionConfig(filter_ratio=f)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: SelectionConfig(n_chunks=0), "n_chunks=0 must be >= 1"),
        (lambda: SelectionConfig(score="loss"), "score='loss' is not a registered pair score"),
        (lambda: SelectionConfig(rule="best"), "rule='best' is not a registered selection rule"),
        (lambda: DistillConfig(loss="cosine"), "loss='cosine' is not a registered KD loss"),
        (lambda: DistillConfig(temperature=0.0), "distill.temperature=0.0 must be > 0"),
        (lambda: OptimConfig(learning_rate=-1.0), "optim.learning_rate=-1.0 must be > 0"),
        (lambda: StepConfig(method="aced"), "set distill.weight > 0"),
        (lambda: StepConfig(method="acid", distill=DistillConfig(weight=1.0)), "has no KD term"),
        (lambda: StepConfig(method="jest"), "method='jest' is not a registered method"),
    ],
)
def test_invalid_configs_name_the_problem(make, message):
    try:
        make()
    except TypeError as error:  # the test-time jaxtyping hook checks Literal fields first
        assert "Literal" in str(error) and message.split("=")[1].split(" ")[0] in str(error)
    except ValueError as error:
        assert message in str(error)
    else:
        pytest.fail(f"no error for {message}")


def test_presets_follow_the_paper():
    step = {name: preset(name).step for name in ("iid", "kd", "acid", "aced")}
    assert not step["iid"].uses_selection and not step["iid"].uses_kd
    assert step["kd"].uses_kd and not step["kd"].uses_selection
    assert step["acid"].uses_selection and not step["acid"].uses_kd
    aced = step["aced"]
    assert aced.uses_selection and aced.uses_kd and aced.distill.weight > 0
    assert aced.selection.filter_ratio == 0.75 and aced.sub_batch_size(256) == 64
    assert aced.selection.score == "learnability" and aced.selection.rule == "jest"
    # one name, one meaning: the method presets differ only in what the method does
    for name, s in step.items():
        assert s.optim.learning_rate == 3e-3 and s.selection.filter_ratio == 0.75, name
        cached = s.uses_selection or s.uses_kd
        assert s.reference_embeddings == ("cached" if cached else "online"), name
    assert set(PRESETS) == {"smoke", "iid", "kd", "acid", "aced", "reference"}


def test_overrides_are_typed_and_nested():
    config = apply_overrides(
        method_preset("aced"),
        [
            "selection.filter_ratio=0.5",
            "selection.rule=greedy",
            "distill.loss=sigmoid",
            "optim.warmup_steps=0x10",
            "contrastive=softmax",
            "selection.interpret=false",
            "selection.block_rows=256",
            "selection.precision=bf16",
        ],
    )
    assert config.selection.filter_ratio == 0.5 and config.selection.rule == "greedy"
    assert config.selection.interpret is False
    # Unset tiles follow the kernel's mode: compiled (interpret=false) -> GPU_BLOCKS' others.
    assert config.selection.block_sizes() == BlockSizes(256, 32, "bf16", block_d=64)
    assert config.selection.block_sizes(interpret=True) == BlockSizes(256, 64, "bf16")
    assert apply_overrides(config, ["selection.interpret=none"]).selection.interpret is None
    assert config.distill.loss == "sigmoid" and config.optim.warmup_steps == 16
    assert config.contrastive == "softmax"
    assert dataclasses.is_dataclass(config) and config.method == "aced"


@pytest.mark.parametrize(
    "override, message",
    [
        ("n_chunks=4", r"unknown config key 'n_chunks'; did you mean selection.n_chunks"),
        ("selection.n_chunks=four", "must be an integer"),
        ("selection.interpret=maybe", "must be a boolean"),
        ("selection.block_cols=48", r"step.selection: block_cols=48 must be a power of two"),
        ("selection.precision=fp8", "must be one of 'highest', 'tf32', 'bf16'"),
        ("selection.gpu_lowering=cuda", "must be one of 'auto', 'triton', 'mosaic_gpu'"),
        ("selection.rule=best", "must be one of 'jest', 'greedy'"),
        ("selection.filter_ratio=1.5", r"must be in \[0, 1\)"),
        ("distill.loss=cosine", "must be one of"),
        ("selection.filter_ratio", "must look like key=value"),
    ],
)
def test_bad_overrides_are_explained(override, message):
    with pytest.raises(ValueError, match=message):
        apply_overrides(method_preset("acid"), [override])


def test_every_field_is_documented():
    fields = config_fields(method_preset("aced"))
    assert "selection.filter_ratio" in fields and "optim.learning_rate" in fields
    undocumented = [k for k, (_, help_text, _) in fields.items() if not help_text]
    assert undocumented == []


def test_override_order_does_not_matter():
    base = method_preset("aced")
    for order in (["method=iid", "distill.weight=0"], ["distill.weight=0", "method=iid"]):
        config = apply_overrides(base, order)
        assert config.method == "iid" and config.distill.weight == 0


def test_typed_updates_equal_string_overrides():
    base = preset("aced")
    typed = updated(base, {"step.selection.filter_ratio": 0.5, "train.steps": 7})
    parsed = apply_overrides(base, ["step.selection.filter_ratio=0.5", "train.steps=7"])
    assert typed == parsed and typed.step.selection.filter_ratio == 0.5
    with pytest.raises(ValueError, match="unknown config key 'steps'; did you mean train.steps"):
        updated(base, {"steps": 7})


def test_registry_fields_accept_what_is_registered_and_list_it():
    from aced.selection import SELECTION_RULES, SelectionRule, register_selection_rule

    fields = config_fields(preset("aced"))
    _, _, hint = fields["step.selection.rule"]
    assert set(hint.__args__) == set(SELECTION_RULES)
    rule = SelectionRule(SELECTION_RULES["jest"].draw, True, "the same draw under a new name")
    register_selection_rule("jest_again", rule)
    try:
        config = apply_overrides(preset("aced"), ["step.selection.rule=jest_again"])
        assert config.step.selection.rule == "jest_again"
        assert "jest_again" in config_fields(config)["step.selection.rule"][2].__args__
    finally:
        del SELECTION_RULES["jest_again"]


def test_a_run_config_of_the_old_layout_is_migrated():
    """Run directories written before `selection.rule` / `feature_l2` still load."""
    old = to_dict(preset("aced"))
    selection = old["step"]["selection"]
    del selection["rule"]
    selection.update(selection="independent", greedy=True)
    old["step"]["distill"].update(loss="feature", feature_kind="l2")
    run = from_dict(RunConfig, old)
    assert run.step.selection.rule == "independent_greedy"
    assert run.step.distill.loss == "feature_l2"
    assert old["step"]["selection"]["selection"] == "independent"  # the input is not changed
    assert from_dict(RunConfig, to_dict(run)) == run
