"""Configuration: validation on construction, typed key=value overrides, method presets."""

import dataclasses

import pytest

from aced.train.config import (
    DistillConfig,
    OptimConfig,
    SelectionConfig,
    StepConfig,
    apply_overrides,
    config_fields,
    method_preset,
)


@pytest.mark.parametrize("f", [-0.1, 1.0, 1.2])
def test_filter_ratio_outside_unit_interval_is_rejected(f):
    with pytest.raises(ValueError, match=rf"filter_ratio={f} must be in \[0, 1\)"):
        SelectionConfig(filter_ratio=f)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: SelectionConfig(n_chunks=0), "n_chunks=0 must be >= 1"),
        (lambda: SelectionConfig(score="loss"), "score='loss' must be one of"),
        (lambda: DistillConfig(temperature=0.0), "distill.temperature=0.0 must be > 0"),
        (lambda: OptimConfig(learning_rate=-1.0), "optim.learning_rate=-1.0 must be > 0"),
        (lambda: StepConfig(method="aced"), "set distill.weight > 0"),
        (lambda: StepConfig(method="acid", distill=DistillConfig(weight=1.0)), "has no KD term"),
        (lambda: StepConfig(method="jest"), "method='jest' must be one of"),
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
    assert not method_preset("iid").uses_selection and not method_preset("iid").uses_kd
    assert method_preset("kd").uses_kd and not method_preset("kd").uses_selection
    assert method_preset("acid").uses_selection and not method_preset("acid").uses_kd
    aced = method_preset("aced")
    assert aced.uses_selection and aced.uses_kd and aced.distill.weight > 0
    assert aced.selection.filter_ratio == 0.8 and aced.sub_batch_size(320) == 64


def test_overrides_are_typed_and_nested():
    config = apply_overrides(
        method_preset("aced"),
        ["selection.filter_ratio=0.5", "selection.greedy=true", "distill.loss=sigmoid",
         "optim.warmup_steps=0x10", "contrastive=softmax"],
    )
    assert config.selection.filter_ratio == 0.5 and config.selection.greedy is True
    assert config.distill.loss == "sigmoid" and config.optim.warmup_steps == 16
    assert config.contrastive == "softmax"
    assert dataclasses.is_dataclass(config) and config.method == "aced"


@pytest.mark.parametrize(
    "override, message",
    [
        ("n_chunks=4", r"unknown config key 'n_chunks'; did you mean selection.n_chunks"),
        ("selection.n_chunks=four", "must be an integer"),
        ("selection.greedy=maybe", "must be a boolean"),
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
