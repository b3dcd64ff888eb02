"""Pure functions over a study's run summaries (``<results>/runs/*.json``).

The report (`experiments/report.py`) and the FLOPs-per-accuracy benchmark
(`benchmarks/flops_per_accuracy.py`) read only these summaries, never the run
directories, so both can be rebuilt from what is committed.

Two FLOP readings of every arm: **amortised** (its training FLOPs, as if the
reference were a public pretrained model, the paper's reading) and
**included** (plus the FLOPs that trained its reference).
"""

import json
import math
import pathlib
import statistics
from collections import defaultdict

READINGS = ("amortised", "included")


def load_summaries(results: pathlib.Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((results / "runs").glob("*.json"))]


def total_flops(summary: dict, reading: str) -> float:
    extra = summary.get("reference_flops", 0.0) if reading == "included" else 0.0
    return summary["flops"] + extra


def by_arm(summaries: list[dict], kind: str = "arm") -> dict[str, list[dict]]:
    """Summaries of one kind grouped by arm name, each group in seed order."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for s in summaries:
        if s.get("kind") == kind:
            groups[s["arm"]].append(s)
    return {arm: sorted(group, key=lambda s: s["seed"]) for arm, group in groups.items()}


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def interpolate(curve: list[dict], flops: float) -> float | None:
    """The suite average at `flops` on an evaluation curve (linear between its points);
    None beyond either end (never extrapolated)."""
    points = [(p["flops"], p["average"]) for p in curve]
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x0 <= flops <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (flops - x0) / (x1 - x0)
    if points and math.isclose(flops, points[-1][0], rel_tol=1e-9):
        return points[-1][1]
    return None


def flops_to_reach(curve: list[dict], target: float, offset: float = 0.0) -> float | None:
    """The FLOPs (plus `offset`) at which a curve first reaches `target`, interpolated
    between evaluation points; None when it never does."""
    previous = None
    for p in curve:
        if p["average"] >= target:
            if previous is None or p["average"] == previous["average"]:
                return p["flops"] + offset
            share = (target - previous["average"]) / (p["average"] - previous["average"])
            return previous["flops"] + share * (p["flops"] - previous["flops"]) + offset
        previous = p
    return None


def verdict(better: list[float], worse: list[float]) -> tuple[str, float, float]:
    """ "yes" when the mean gap exceeds the larger seed spread, "no" when it is below minus
    it, else "unclear"; with one seed each the spread is 0 (the report says so).

    **Returns:** (answer, gap of the means, the spread it was compared with).
    """
    (mb, sb), (mw, sw) = mean_std(better), mean_std(worse)
    gap, spread = mb - mw, max(sb, sw)
    if gap > spread:
        return "yes", gap, spread
    if gap < -spread:
        return "no", gap, spread
    return "unclear", gap, spread


def flops_per_accuracy(summaries: list[dict]) -> list[dict]:
    """For each arm (seed-averaged where it has several seeds): the FLOPs it needs to reach
    IID's final suite average (seed-averaged), under both readings, and the ratio to the
    FLOPs at which IID's own curve first reaches it (so IID's ratio is 1; None when
    an IID seed never reaches it)."""
    arms = by_arm(summaries)
    if "iid" not in arms:
        return []
    target = statistics.fmean(s["scores"]["average"] for s in arms["iid"])
    # IID's own FLOPs to the target, per seed on its longest curve (the equal-FLOP run
    # where there is one): a seed that ends below the mean may reach it later, or never
    # (then no ratio is defined, and the FLOPs are still shown).
    longer = {s["seed"]: s for s in by_arm(summaries, "budget").get("iid_budget", [])}
    iid_reached = [flops_to_reach(longer.get(s["seed"], s)["curve"], target) for s in arms["iid"]]
    iid_flops = None if None in iid_reached else statistics.fmean(iid_reached)
    rows = []
    for arm, group in arms.items():
        row: dict = {"arm": arm, "target": target, "seeds": len(group)}
        for reading in READINGS:
            # IID is read where its FLOPs to the target were: on each seed's longest curve
            curves = [longer.get(s["seed"], s) if arm == "iid" else s for s in group]
            reached = [
                flops_to_reach(c["curve"], target, total_flops(s, reading) - s["flops"])
                for c, s in zip(curves, group, strict=True)
            ]
            if any(r is None for r in reached):
                row[reading], row[f"{reading}_ratio"] = None, None
            else:
                row[reading] = statistics.fmean(reached)
                row[f"{reading}_ratio"] = row[reading] / iid_flops if iid_flops else None
        rows.append(row)
    return rows


def selection_means(summary: dict) -> dict[str, float] | None:
    """A run's selection diagnostics averaged over its log steps (None without precision):
    ``precision`` and ``base_rate`` (clean among the selected / the super-batch), and the
    effective support of the first and the last chunk when the rule samples."""
    records = [d for d in summary.get("diagnostics", []) if "select/precision" in d]
    if not records:
        return None
    mean = lambda key: statistics.fmean(d[key] for d in records)  # noqa: E731
    out = {"precision": mean("select/precision"), "base_rate": mean("select/base_rate")}
    supports = sorted(k for k in records[0] if k.startswith("select/support/"))
    if supports:
        out["support_first"], out["support_last"] = mean(supports[0]), mean(supports[-1])
    return out
