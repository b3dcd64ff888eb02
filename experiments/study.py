"""The reproduction study's presets (``aced reproduce --preset smoke|cpu|full``): its arms.

A study is a list of runs, each one ``aced train`` run directory:

- **references**, each trained once (the ``reference`` preset: IID on the
  curated split) and shared by every arm that names it; its own suite score and
  training FLOPs are reported beside the students';
- **arms**: a method preset plus ``key=value`` overrides, a reference and a
  student size, run for each of its seeds;
- **the equal-FLOP baselines** ``<arm>_budget`` for each of `budget_arms`
  (IID, and KD at CPU and accelerator scale): the arm run long enough to spend
  the largest training FLOPs (reference amortised) of any arm of its student
  size, evaluated every ``budget_eval_every`` steps. The method presets keep the learning rate
  constant after warm-up (``step.optim.decay_steps=0``), so the first s steps
  of this run are exactly the arm's run of s steps: its evaluation curve is
  that baseline at every FLOP budget, read at each other arm's FLOPs.

Every number the report prints comes from these runs; nothing is tuned to
the outcome. The claims each arm serves are listed in `CLAIMS`.
"""

import dataclasses
from dataclasses import dataclass

from aced.models import decode_variant
from aced.train.config import preset
from aced.train.config.run import BUILTIN_IMAGE_SIZE

# What the report answers, and the two arms of each comparison (better, worse).
CLAIMS: dict[str, tuple[str, str]] = {
    "ACID beats IID": ("acid", "iid"),
    "ACID beats KD": ("acid", "kd"),
    "ACED beats ACID": ("aced", "acid"),
    "ACED beats KD": ("aced", "kd"),
    "learnability beats easy-reference": ("acid", "acid_easy_reference"),
    "learnability beats hard-learner": ("acid", "acid_hard_learner"),
    "joint beats independent": ("acid", "acid_independent"),
}


@dataclass(frozen=True)
class Arm:
    """One configuration of the study, run once per seed."""

    name: str
    preset: str  # iid | kd | acid | aced
    overrides: tuple[str, ...] = ()
    reference: str | None = None  # a key of `Study.references`; None: no reference
    student: str = "small"  # a key of `Study.students`
    headline: bool = False  # run for every seed of the study (else its first seed only)


@dataclass(frozen=True)
class Study:
    name: str
    about: str
    common: tuple[str, ...]  # overrides of every student run
    students: dict[str, tuple[str, ...]]
    references: dict[str, tuple[str, ...]]  # overrides of the `reference` preset
    arms: tuple[Arm, ...]
    seeds: tuple[int, ...]
    budget_eval_every: int
    # Arms given a longer run per seed (``<arm>_budget``): the equal-FLOP baselines.
    budget_arms: tuple[str, ...] = ("iid",)

    def arm(self, name: str) -> Arm:
        return next(a for a in self.arms if a.name == name)


def _arms(main: str, other: str, fs: tuple[float, ...], flexi: int) -> tuple[Arm, ...]:
    """The arms every scale shares; `main` names the headline reference and `other` the
    second reference size, `flexi` the image side the learner scores at in the Flexi arm."""
    kd, acid, aced = (dict(preset=p, reference=main) for p in ("kd", "acid", "aced"))
    arms = [
        Arm("iid", "iid", headline=True),
        Arm("kd", **kd, headline=True),
        Arm("acid", **acid, headline=True),
        Arm("aced", **aced, headline=True),
        Arm("kd_sigmoid", **kd, overrides=("step.distill.loss=sigmoid",)),
        Arm("kd_feature", **kd, overrides=("step.distill.loss=feature",)),
        Arm("acid_easy_reference", **acid, overrides=("step.selection.score=easy_reference",)),
        Arm("acid_hard_learner", **acid, overrides=("step.selection.score=hard_learner",)),
        Arm("acid_independent", **acid, overrides=("step.selection.rule=independent",)),
        Arm("acid_normalised", **acid, overrides=("step.selection.rule=jest_normalised",)),
        Arm("acid_flexi", **acid, overrides=(f"step.selection.score_image_size={flexi}",)),
        Arm("aced_iid_distill", **aced, overrides=("step.distill.batch=iid",)),
        Arm("acid_other_reference", "acid", reference=other),
        Arm("kd_other_reference", "kd", reference=other),
        Arm("iid_large_student", "iid", student="large"),
        Arm("acid_large_student", "acid", reference=main, student="large"),
    ]
    arms += [Arm(f"acid_f{int(100 * f)}", **acid, overrides=_filter_ratio(f)) for f in fs]
    return tuple(arms)


def _filter_ratio(f: float) -> tuple[str, ...]:
    """ACID at filter ratio `f`; where the preset's chunk count does not divide the sub-batch
    b = (1 - f) B, the largest count below it that does (f = 0.9 at B = 256: b = 26, 13 chunks)."""
    run = preset("acid")
    selection = dataclasses.replace(run.step.selection, filter_ratio=f)
    b = dataclasses.replace(run.step, selection=selection).sub_batch_size(run.data.super_batch_size)
    n_chunks = max(n for n in range(1, selection.n_chunks + 1) if b % n == 0)
    chunks = () if n_chunks == selection.n_chunks else (f"step.selection.n_chunks={n_chunks}",)
    return (f"step.selection.filter_ratio={f}", *chunks)


_SCALE_FREE = ("step.optim.decay_steps=0",)


def reference_learning_rate(variant: str) -> float:
    """A reference's peak learning rate: the presets' (tuned for the `mu` width) scaled by
    mu's width over the reference's, as muP scales Adam's rate for hidden weights.

    At the presets' rate the wider towers do not train: `micro/7` sat on the
    loss plateau of the all-negative solution for 250 of its 300 steps, and
    `nano/7` diverged for 50 steps (experiments/README.md, "References").
    """
    base = preset("reference").step.optim.learning_rate
    return base * decode_variant("mu/7")["width"] / decode_variant(variant)["width"]


def _scaled(
    name: str,
    about: str,
    *,
    students: tuple[str, str],
    references: dict[str, str],
    steps: tuple[int, int, int],
    data_size: int,
    reference_steps: int,
    fs: tuple[float, ...],
) -> Study:
    """A full study: `students` (small, large) image towers, `references` name -> variant
    (the headline reference first), `steps` = (train steps, eval every, the IID budget's eval every)."""
    train_steps, eval_every, budget_every = steps
    main, other = references
    return Study(
        name=name,
        about=about,
        common=(*_SCALE_FREE, f"train.steps={train_steps}", f"train.eval_every={eval_every}"),
        students={
            size: (f"model.image_variant={variant}",)
            for size, variant in zip(("small", "large"), students)
        },
        references={
            ref: (
                f"model.image_variant={variant}",
                f"model.text_variant={variant.split('/')[0]}",
                f"data.size={data_size}",
                f"train.steps={reference_steps}",
                f"step.optim.learning_rate={reference_learning_rate(variant):g}",
                f"train.eval_every={eval_every}",
            )
            for ref, variant in references.items()
        },
        arms=_arms(main, other, fs, flexi=BUILTIN_IMAGE_SIZE // 2),
        seeds=(0, 1, 2),
        budget_eval_every=budget_every,
        budget_arms=("iid", "kd"),
    )


STUDIES: dict[str, Study] = {
    "smoke": Study(
        name="smoke",
        about="every stage of the study on tiny runs (the test suite runs it)",
        common=(
            *_SCALE_FREE,
            "model.image_variant=mu/14",
            "model.embed_dim=16",
            "model.max_len=12",
            "data.size=256",
            "data.super_batch_size=32",
            "step.selection.filter_ratio=0.5",
            "step.selection.n_chunks=2",
            "step.optim.warmup_steps=1",
            "train.steps=4",
            "train.eval_every=2",
            "train.log_every=2",
            "train.checkpoint_every=4",
            "train.eval_per_task=8",
            "train.eval_retrieval_size=8",
            "train.eval_batch_size=64",
        ),
        students={"small": ()},
        references={
            "ref": (
                "model.image_variant=mu/14",
                "model.embed_dim=16",
                "model.max_len=12",
                "data.size=64",
                "data.super_batch_size=32",
                "train.steps=2",
                "step.optim.warmup_steps=1",
                "train.eval_per_task=8",
                "train.eval_retrieval_size=8",
                "train.eval_batch_size=64",
            )
        },
        arms=(
            Arm("iid", "iid", headline=True),
            Arm("acid", "acid", reference="ref", headline=True),
            Arm("aced", "aced", reference="ref", headline=True),
        ),
        seeds=(0,),
        budget_eval_every=4,
    ),
    "cpu": _scaled(
        "cpu",
        "the study at CPU scale: mu/7 students, nano/7 and micro/7 references",
        students=("mu/7", "nano/7"),
        references={"nano": "nano/7", "micro": "micro/7"},
        steps=(300, 100, 50),
        data_size=10000,
        reference_steps=300,
        fs=(0.5, 0.8, 0.9),
    ),
    "full": _scaled(
        "full",
        "the same study at accelerator scale (B/16-class references, 10x the steps)",
        students=("nano/7", "S/7"),
        references={"B": "B/7", "S": "S/7"},
        steps=(3000, 500, 250),
        data_size=100000,
        reference_steps=6000,
        fs=(0.5, 0.8, 0.9),
    ),
}


def study(name: str) -> Study:
    if name not in STUDIES:
        raise ValueError(f"unknown study preset {name!r}; choose one of {', '.join(STUDIES)}")
    return STUDIES[name]
