"""Where the suite's time goes: a pytest plugin that sums XLA compile seconds per test.

    PYTHONPATH=tests python -m pytest -q -p compile_profile   # writes compile_profile-<worker>.json
    python tests/compile_profile.py                 # per file: CPU s, compile s, compiles

A ``jax.monitoring`` listener adds up ``/jax/core/compile/backend_compile_duration``
(a real compilation: a persistent-cache hit records none) for the test that is
running; each test's CPU seconds come from ``time.process_time``. Processes that
tests start (``aced train``, jax.distributed workers) are not counted.
"""

import collections
import json
import os
import pathlib
import time

import pytest

OUT = pathlib.Path(os.environ.get("ACED_COMPILE_PROFILE_DIR", "."))
_current = ["<collection>"]
_compile, _count, _cpu = (collections.defaultdict(float), collections.defaultdict(int),
                          collections.defaultdict(float))  # fmt: skip


def _listener(event: str, duration: float, **_) -> None:
    if event == "/jax/core/compile/backend_compile_duration":
        _compile[_current[0]] += duration
        _count[_current[0]] += 1


def pytest_configure(config):
    import jax.monitoring

    jax.monitoring.register_event_duration_secs_listener(_listener)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    _current[0] = item.nodeid
    start = time.process_time()
    yield
    _cpu[item.nodeid] += time.process_time() - start


def pytest_unconfigure(config):
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    if _cpu:
        record = {"compile_s": _compile, "compiles": _count, "cpu_s": _cpu}
        (OUT / f"compile_profile-{worker}.json").write_text(json.dumps(record, indent=1))


def summary(paths: list[pathlib.Path]) -> str:
    files = collections.defaultdict(lambda: [0.0, 0.0, 0])
    for path in paths:
        record = json.loads(path.read_text())
        for test, seconds in record["cpu_s"].items():
            files[test.split("::")[0]][0] += seconds
        for test, seconds in record["compile_s"].items():
            files[test.split("::")[0]][1] += seconds
            files[test.split("::")[0]][2] += record["compiles"][test]
    lines = [f"{'cpu s':>8} {'compile s':>10} {'compiles':>9}  file"]
    for name, (cpu, comp, n) in sorted(files.items(), key=lambda kv: -kv[1][0]):
        lines.append(f"{cpu:8.1f} {comp:10.1f} {n:9d}  {name}")
    total = [sum(v[i] for v in files.values()) for i in range(3)]
    lines.append(f"{total[0]:8.1f} {total[1]:10.1f} {total[2]:9d}  all")
    return "\n".join(lines)


if __name__ == "__main__":
    print(summary(sorted(OUT.glob("compile_profile-*.json"))))
