"""FLOPs per accuracy: what each method spends to reach IID's final suite average.

    python benchmarks/flops_per_accuracy.py [--preset cpu] [--out FILE.json]

Reads a reproduction study's committed run summaries
(``experiments/results/<preset>/runs/*.json``, written by ``aced reproduce``)
and prints, for each arm, the total training FLOPs at which its evaluation
curve first reaches the IID baseline's final suite average (interpolated
between evaluation points), and the ratio to IID's own FLOPs, under both
readings: reference amortised and reference included. "not reached": the
arm's curve never gets there within its run.
"""

import argparse
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))

from analysis import flops_per_accuracy, load_summaries  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--results", help="default: experiments/results/<preset>")
    parser.add_argument("--out", help="also write the rows as JSON")
    args = parser.parse_args()
    results = pathlib.Path(args.results or ROOT / "experiments" / "results" / args.preset)
    summaries = load_summaries(results)
    if not summaries:
        raise SystemExit(f"no run summaries in {results / 'runs'}: run aced reproduce first")
    rows = flops_per_accuracy(summaries)
    print(f"{'arm':24} {'amortised':>11} {'ratio':>6} {'included':>11} {'ratio':>6}")
    for row in rows:
        cells = []
        for key in ("amortised", "amortised_ratio", "included", "included_ratio"):
            value = row[key]
            width = 6 if "ratio" in key else 11
            text = (
                "n/r" if value is None else (f"{value:.2f}" if "ratio" in key else f"{value:.3g}")
            )
            cells.append(f"{text:>{width}}")
        print(f"{row['arm']:24} " + " ".join(cells))
    if args.out:
        pathlib.Path(args.out).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
