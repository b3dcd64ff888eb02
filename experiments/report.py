"""Rebuild a study's report from its committed run summaries.

    python experiments/report.py --preset cpu      # experiments/results/cpu/README.md + PNGs

The report holds the tables (mean ± std over seeds, every task), each claim
answered at equal training steps and, against IID, at equal total FLOPs under
both readings (`experiments/analysis.py`), the FLOPs-vs-suite-average and
selection-precision plots, the commit and the exact commands.
"""

import argparse
import pathlib

from analysis import (
    READINGS,
    by_arm,
    flops_per_accuracy,
    interpolate,
    load_summaries,
    mean_std,
    selection_means,
    total_flops,
    verdict,
)
from study import CLAIMS, study

HERE = pathlib.Path(__file__).resolve().parent


def _pm(values: list[float]) -> str:
    mean, std = mean_std(values)
    return f"{100 * mean:.1f} ± {100 * std:.1f}" if len(values) > 1 else f"{100 * mean:.1f}"


def _table(arms: dict[str, list[dict]]) -> list[str]:
    tasks = sorted({t for group in arms.values() for t in group[0]["scores"]} - {"average"})
    lines = [
        "| arm | seeds | average | " + " | ".join(tasks) + " | FLOPs | FLOPs incl. reference |",
        "|" + "---|" * (len(tasks) + 5),
    ]
    for arm, group in arms.items():
        cells = [_pm([s["scores"][t] for s in group]) for t in ["average", *tasks]]
        flops = [f"{mean_std([total_flops(s, r) for s in group])[0]:.3g}" for r in READINGS]
        lines.append(f"| {arm} | {len(group)} | " + " | ".join(cells + flops) + " |")
    return lines


def _selection(arms: dict[str, list[dict]]) -> list[str]:
    lines = [
        "| arm | clean among selected | clean in super-batch | support, first chunk "
        "| support, last chunk |",
        "|---|---|---|---|---|",
    ]
    for arm, group in arms.items():
        means = selection_means(group[0])
        if means is None:
            continue
        supports = [
            f"{means[k]:.1f}" if k in means else "" for k in ("support_first", "support_last")
        ]
        lines.append(
            f"| {arm} | {100 * means['precision']:.1f} | {100 * means['base_rate']:.1f} | "
            + " | ".join(supports)
            + " |"
        )
    return lines


def _claims(arms: dict[str, list[dict]], budget: dict[str, list[dict]]) -> list[str]:
    lines = [
        "| claim | equal steps: answer (gap, spread) | equal FLOPs: gap to the baseline's "
        "longer run |",
        "|---|---|---|",
    ]
    score = lambda arm: [s["scores"]["average"] for s in arms.get(arm, [])]  # noqa: E731
    for claim, (better, worse) in CLAIMS.items():
        if not score(better) or not score(worse):
            lines.append(f"| {claim} | not run | |")
            continue
        answer, gap, spread = verdict(score(better), score(worse))
        longer = budget.get(f"{worse}_budget")
        flop_cell = _equal_flops(arms[better], longer) if longer else ""
        lines.append(
            f"| {claim} | {answer} ({100 * gap:+.1f}, ±{100 * spread:.1f}) | {flop_cell} |"
        )
    for claim, pairs in {
        "ACID's lead holds across reference sizes": [
            ("acid", "iid"),
            ("acid_other_reference", "iid"),
        ],
        "smaller students gain most": [
            ("acid", "iid"),
            ("acid_large_student", "iid_large_student"),
        ],
    }.items():
        gains = [
            mean_std(score(a))[0] - mean_std(score(b))[0] for a, b in pairs if score(a) and score(b)
        ]
        if len(gains) < 2:
            lines.append(f"| {claim} | not run | |")
            continue
        holds = all(g > 0 for g in gains) if "sizes" in claim else gains[0] > gains[1]
        shown = ", ".join(f"{100 * g:+.1f}" for g in gains)
        lines.append(f"| {claim} | {'yes' if holds else 'no'} (gains {shown}) | |")
    return lines


def _equal_flops(group: list[dict], longer: list[dict]) -> str:
    """The arm's final average minus the baseline's at the same total FLOPs, per reading,
    read on the baseline's longer run of the same seed (less its own reference's cost
    under the included reading)."""
    cells = []
    for reading in READINGS:
        gaps, beyond = [], []
        for s in group:
            long = [b for b in longer if b["seed"] == s["seed"]]
            if not long:
                continue
            own = total_flops(long[0], reading) - long[0]["flops"]
            flops = total_flops(s, reading) - own
            at = interpolate(long[0]["curve"], flops)
            if at is not None:
                gaps.append(s["scores"]["average"] - at)
            elif flops > long[0]["curve"][-1]["flops"]:  # past the baseline's longest run
                beyond.append(s["scores"]["average"] - long[0]["curve"][-1]["average"])
        cell = _pm(gaps) if gaps else ""
        if beyond:
            cell += f"{' ' if cell else ''}(<= {_pm(beyond)} at the baseline's end)"
        cells.append(f"{reading} {cell or 'n/a'}")
    return "; ".join(cells)


def _plots(arms: dict, budget: dict, out: pathlib.Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, reading in zip(axes, READINGS):
        for arm in ("iid", "kd", "acid", "aced"):
            for s in arms.get(arm, [])[:1]:
                shift = total_flops(s, reading) - s["flops"]
                ax.plot(
                    [p["flops"] + shift for p in s["curve"]],
                    [p["average"] for p in s["curve"]],
                    "o-",
                    label=arm,
                )
        for s in budget.get("iid_budget", [])[:1]:
            ax.plot(
                [p["flops"] for p in s["curve"]],
                [p["average"] for p in s["curve"]],
                "k--",
                label="iid (longer)",
            )
        ax.set(xscale="log", xlabel=f"training FLOPs ({reading})", title=f"reference {reading}")
    axes[0].set_ylabel("suite average")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(out / "flops_vs_average.png", dpi=120)
    plt.close(fig)
    written = ["flops_vs_average.png"]
    series = [(arm, s) for arm, group in arms.items() for s in group[:1] if s["diagnostics"]]
    precision = [(arm, s) for arm, s in series if "select/precision" in s["diagnostics"][0]]
    if precision:
        fig, ax = plt.subplots(figsize=(6, 4))
        for arm, s in precision:
            ax.plot(
                [d["step"] for d in s["diagnostics"]],
                [d["select/precision"] for d in s["diagnostics"]],
                label=arm,
            )
        ax.set(xlabel="step", ylabel="selected examples that are clean")
        ax.legend()
        fig.savefig(out / "selection_precision.png", dpi=120)
        plt.close(fig)
        written.append("selection_precision.png")
    supports = [(arm, s) for arm, s in series if "select/support/00" in s["diagnostics"][0]]
    if supports:
        fig, ax = plt.subplots(figsize=(6, 4))
        for arm, s in supports:
            chunks = sorted(k for k in s["diagnostics"][0] if k.startswith("select/support/"))
            means = [sum(d[k] for d in s["diagnostics"]) / len(s["diagnostics"]) for k in chunks]
            ax.plot(range(len(chunks)), means, marker="o", label=arm)
        ax.set(
            yscale="log",
            xlabel="chunk",
            ylabel="effective support (1 / sum p^2), mean over log steps",
        )
        ax.legend()
        fig.savefig(out / "selection_support.png", dpi=120)
        plt.close(fig)
        written.append("selection_support.png")
    return written


def write_report(preset: str, results: pathlib.Path) -> pathlib.Path:
    summaries = load_summaries(results)
    arms, budget = by_arm(summaries), by_arm(summaries, "budget")
    references = [s for s in summaries if s.get("kind") == "reference"]
    plots = _plots(arms, budget, results)
    plan = study(preset)
    expected = sum(len(plan.seeds) if a.headline else 1 for a in plan.arms)
    expected += len(plan.references) + len(plan.budget_arms) * len(plan.seeds)
    commits = sorted({s.get("commit", "unknown") for s in summaries})
    lines = [
        f"# Reproduction study `{preset}`",
        "",
        f"Produced by `aced reproduce --preset {preset}` at commit(s) "
        + ", ".join(f"`{c}`" for c in commits)
        + f"; rebuilt from the summaries in `runs/` by `python experiments/report.py --preset "
        f"{preset}`.",
        "",
        f"**{len(summaries)} of the study's {expected} runs are in.**"
        + (
            ""
            if len(summaries) >= expected
            else " The study is not finished: claims whose runs are missing say `not run`, "
            "and the equal-FLOP baselines run last. Rerun `aced reproduce` to continue."
        ),
        "",
        "## Suite scores (%, mean ± std over seeds) and training FLOPs",
        "",
        *_table(arms),
        "",
        "## References (their own suite average and training FLOPs)",
        "",
        *[
            f"- `{r['name']}`: {100 * r['scores']['average']:.1f} %, {r['flops']:.3g} FLOPs"
            for r in references
        ],
        "",
        "## Selection diagnostics (first seed, means over the log steps)",
        "",
        "Clean: the web split's quality code (`aced.train.diagnostics`); IID's row is the "
        "base rate a uniform draw gets. Support: the effective number of candidates "
        "(1 / sum p^2) of a chunk's sampling distribution.",
        "",
        *_selection(arms),
        "",
        "## The claims",
        "",
        "Equal steps: the gap of the means against the larger seed spread "
        "(`experiments/analysis.py`, `verdict`). Equal FLOPs: the arm's final average minus "
        "the baseline's at the same total FLOPs, read on the baseline's longer run of the same "
        "seed. `<= x at the baseline's end`: the arm spent more FLOPs than that whole run, so "
        "x is the gap to the run's final average, reached with fewer FLOPs than the arm's "
        "(it bounds the arm's lead only if more FLOPs would not make the baseline worse).",
        "",
        *_claims(arms, budget),
        "",
        "## FLOPs to reach IID's final average",
        "",
        "| arm | amortised | ratio | included | ratio |",
        "|---|---|---|---|---|",
    ]
    for row in flops_per_accuracy(summaries):
        cells = [
            ("n/a" if "ratio" in k else "not reached")
            if row[k] is None
            else (f"{row[k]:.3g}" if "ratio" not in k else f"{row[k]:.2f}")
            for k in ("amortised", "amortised_ratio", "included", "included_ratio")
        ]
        lines.append(f"| {row['arm']} | " + " | ".join(cells) + " |")
    lines += ["", *[f"![{p}]({p})" for p in plots], "", "## Commands", ""]
    lines += [f"- `{s['command']}`" for s in summaries if "command" in s]
    path = results / "README.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--results", help="default: experiments/results/<preset>")
    args = parser.parse_args()
    print(write_report(args.preset, pathlib.Path(args.results or HERE / "results" / args.preset)))


if __name__ == "__main__":
    main()
