"""Where the suite's time goes: a pytest plugin that sums XLA compile seconds per test.

    PYTHONPATH=tests python -m pytest -q -p compile_profile   # writes compile_profile-<worker>.json
    python tests/compile_profile.py   # per file: CPU s, children's CPU s, compile s, compiles

A ``jax.monitoring`` listener adds up ``/jax/core/compile/backend_compile_duration``
(a real compilation: a persistent-cache hit records none) for the test that is
running; each test's CPU seconds come from ``time.process_time``, and the CPU
seconds of the processes it started and waited for (``aced train``, the
jax.distributed workers, a pytest subprocess) from ``resource.getrusage``.
Collecting the tests (their imports) is the ``<collection>`` entry.
"""

import collections
import json
import os
import pathlib
import resource
import time

import pytest

OUT = pathlib.Path(os.environ.get("ACED_COMPILE_PROFILE_DIR", "."))
_current = ["<collection>"]
_compile, _count, _cpu, _children = (collections.defaultdict(float), collections.defaultdict(int),
                                     collections.defaultdict(float), collections.defaultdict(float))  # fmt: skip


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _listener(event: str, duration: float, **_) -> None:
    if event == "/jax/core/compile/backend_compile_duration":
        _compile[_current[0]] += duration
        _count[_current[0]] += 1


def pytest_configure(config):
    import jax.monitoring

    _cpu["<collection>"] -= time.process_time()
    jax.monitoring.register_event_duration_secs_listener(_listener)


def pytest_collection_finish(session):
    _cpu["<collection>"] += time.process_time()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    _current[0] = item.nodeid
    start, children = time.process_time(), _children_cpu()
    yield
    _cpu[item.nodeid] += time.process_time() - start
    _children[item.nodeid] += _children_cpu() - children


def pytest_unconfigure(config):
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    if _cpu:
        record = {
            "compile_s": _compile,
            "compiles": _count,
            "cpu_s": _cpu,
            "children_cpu_s": _children,
        }
        (OUT / f"compile_profile-{worker}.json").write_text(json.dumps(record, indent=1))


def summary(paths: list[pathlib.Path]) -> str:
    files = collections.defaultdict(lambda: [0.0, 0.0, 0.0, 0])
    for path in paths:
        record = json.loads(path.read_text())
        for column, key in enumerate(("cpu_s", "children_cpu_s", "compile_s")):
            for test, seconds in record.get(key, {}).items():
                files[test.split("::")[0]][column] += seconds
        for test, count in record["compiles"].items():
            files[test.split("::")[0]][3] += count
    lines = [f"{'cpu s':>8} {'children':>9} {'compile s':>10} {'compiles':>9}  file"]
    for name, (cpu, children, comp, n) in sorted(files.items(), key=lambda kv: -sum(kv[1][:2])):
        lines.append(f"{cpu:8.1f} {children:9.1f} {comp:10.1f} {n:9d}  {name}")
    total = [sum(v[i] for v in files.values()) for i in range(4)]
    lines.append(f"{total[0]:8.1f} {total[1]:9.1f} {total[2]:10.1f} {total[3]:9d}  all")
    return "\n".join(lines)


if __name__ == "__main__":
    print(summary(sorted(OUT.glob("compile_profile-*.json"))))
