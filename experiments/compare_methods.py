"""IID vs KD vs ACID vs ACED on the built-in data, with one shared reference.

    python experiments/compare_methods.py --out results/compare_methods.json [key=value ...]

Trains the reference once (the presets' default, under the first KD run's
directory), then each method's preset with that reference, and prints the evaluation suite
average next to each run's cumulative training FLOPs (the x-axis of a
FLOPs-per-accuracy comparison). Extra ``key=value`` overrides apply to every
method's run (e.g. ``train.steps=600``). On 2 CPU cores the default presets
take a few minutes per method.
"""

import argparse
import json
import pathlib

from aced.train.config import apply_overrides, preset
from aced.train.loop import train

METHODS = ("iid", "kd", "acid", "aced")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/compare_methods.json")
    parser.add_argument("--runs", default="runs/compare", help="parent directory of the runs")
    parser.add_argument("overrides", nargs="*", help="key=value applied to every method's run")
    args = parser.parse_args()

    reference = None  # the first method that needs a reference trains it; the rest load it
    rows = []
    for method in METHODS:
        run = apply_overrides(
            preset(method), [f"train.out_dir={args.runs}/{method}", *args.overrides]
        )
        if run.needs_reference and reference is not None:
            run = apply_overrides(run, [f"reference.path={reference}"])
        result = train(run)
        if run.needs_reference and reference is None:
            reference = f"{run.train.out_dir}/reference/model"
        rows.append(
            {
                "method": method,
                "average": result.get("eval/average"),
                "flops_cumulative": result["flops_cumulative"],
                "steps": result["step"],
            }
        )
        print(json.dumps(rows[-1]))

    print(f"\n{'method':8} {'average':>8} {'training FLOPs':>16}")
    for row in rows:
        average = "n/a" if row["average"] is None else f"{100 * row['average']:.1f}%"
        print(f"{row['method']:8} {average:>8} {row['flops_cumulative']:16.3e}")
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "command": "python experiments/compare_methods.py " + " ".join(args.overrides),
                "rows": rows,
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
