"""The launcher's allocator choice (`aced.launch`): when it preloads tcmalloc, and that
a relaunched process really runs with the allocator chosen."""

import ast
import ctypes.util
import importlib.metadata
import os
import pathlib
import subprocess
import sys

import pytest

from aced.launch import (
    ALLOCATOR_ENV,
    INSTALL_HINT,
    LARGE_ALLOC_REPORT,
    RELAUNCHED,
    TCMALLOC,
    allocator_env,
    allocator_in_use,
)

LIBRARY = "libtcmalloc_minimal.so.4"
PID = 1234
INSTALLED = sys.platform == "linux" and ctypes.util.find_library(TCMALLOC) is not None


def found(name: str) -> str | None:
    assert name == TCMALLOC
    return LIBRARY


def missing(name: str) -> None:
    return None


def choose(environ: dict, platform: str = "linux", find=found) -> dict | None:
    return allocator_env(environ, platform, find, pid=PID)


def test_preloads_tcmalloc_where_found():
    env = choose({"PATH": "/bin"})
    assert env == {
        "PATH": "/bin",
        "LD_PRELOAD": LIBRARY,
        LARGE_ALLOC_REPORT[0]: LARGE_ALLOC_REPORT[1],
        RELAUNCHED: str(PID),
    }
    assert choose({ALLOCATOR_ENV: "tcmalloc"})["LD_PRELOAD"] == LIBRARY


def test_keeps_what_is_preloaded_first_and_a_set_threshold():
    environ = {"LD_PRELOAD": "libfoo.so", LARGE_ALLOC_REPORT[0]: "5"}
    env = choose(environ)
    assert env["LD_PRELOAD"] == f"libfoo.so {LIBRARY}"
    assert env[LARGE_ALLOC_REPORT[0]] == "5"
    assert environ == {"LD_PRELOAD": "libfoo.so", LARGE_ALLOC_REPORT[0]: "5"}  # not modified


def test_system_takes_the_allocators_out_of_ld_preload():
    environ = {
        ALLOCATOR_ENV: "system",
        "LD_PRELOAD": f"libfoo.so:/usr/lib/{LIBRARY} libjemalloc.so.2",
    }
    env = choose(environ)
    assert env["LD_PRELOAD"] == "libfoo.so" and env[RELAUNCHED] == str(PID)


@pytest.mark.parametrize(
    "environ, platform, find",
    [
        ({ALLOCATOR_ENV: "system"}, "linux", found),
        ({ALLOCATOR_ENV: "system", "LD_PRELOAD": "libfoo.so"}, "linux", found),
        ({"LD_PRELOAD": f"/usr/lib/{LIBRARY}"}, "linux", found),  # relaunched
        ({ALLOCATOR_ENV: "tcmalloc", "LD_PRELOAD": LIBRARY}, "linux", found),
        ({"LD_PRELOAD": "libjemalloc.so.2"}, "linux", found),  # the user's own choice
        ({RELAUNCHED: str(PID)}, "linux", found),  # this very process, re-executed
        ({}, "linux", missing),  # auto falls back quietly
        ({ALLOCATOR_ENV: ""}, "darwin", found),  # only Linux preloads
    ],
)
def test_runs_as_is(environ, platform, find):
    assert choose(environ, platform, find) is None


def test_a_child_of_a_relaunched_process_chooses_for_itself():
    assert choose({RELAUNCHED: str(PID + 1)})["LD_PRELOAD"] == LIBRARY


@pytest.mark.parametrize(
    "environ, platform, find, message",
    [
        ({ALLOCATOR_ENV: "tcmalloc"}, "linux", missing, INSTALL_HINT),
        ({ALLOCATOR_ENV: "tcmalloc"}, "darwin", found, "Linux only, not on darwin; set"),
        ({ALLOCATOR_ENV: "tcmalloc", "LD_PRELOAD": "libjemalloc.so.2"}, "linux", found,
         "LD_PRELOAD already names jemalloc"),
        ({ALLOCATOR_ENV: "jemalloc"}, "linux", found, "expected one of auto, tcmalloc, system"),
    ],
)  # fmt: skip
def test_bad_choices_name_the_fix(environ, platform, find, message):
    with pytest.raises(ValueError, match=message):
        choose(environ, platform, find)


def test_allocator_in_use_reads_library_file_names(tmp_path):
    maps = tmp_path / "maps"
    line = "7f00-7f01 r-xp 00000000 08:01 42 {}\n"
    maps.write_text(line.format("/opt/jemalloc-build/lib/libc.so.6") + "7f02-7f03 rw-p 0 0 0\n")
    assert allocator_in_use(maps) == "system"
    maps.write_text(line.format(f"/usr/lib/x86_64-linux-gnu/{LIBRARY}"))
    assert allocator_in_use(maps) == "tcmalloc"


def run_python(code: str, choice: str, preload: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", RELAUNCHED)}
    env |= {ALLOCATOR_ENV: choice} | ({"LD_PRELOAD": preload} if preload else {})
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )


RELAUNCHED_CODE = "from aced.launch import *; relaunch(); print(allocator_in_use())"


@pytest.mark.skipif(not INSTALLED, reason="tcmalloc is not installed (.ci/run installs it)")
@pytest.mark.parametrize(
    "choice, preload, expected",
    [("auto", None, "tcmalloc"), ("tcmalloc", None, "tcmalloc"), ("system", LIBRARY, "system")],
)
def test_a_relaunched_process_runs_with_the_allocator_chosen(choice, preload, expected):
    # Without `relaunch` the same process runs with the other allocator.
    as_started = run_python("from aced.launch import *; print(allocator_in_use())", choice, preload)
    assert as_started.stdout.strip() != expected
    result = run_python(RELAUNCHED_CODE, choice, preload)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected


@pytest.mark.skipif(sys.platform != "linux", reason="LD_PRELOAD is the Linux loader's")
def test_tcmalloc_that_does_not_load_is_an_error():
    result = run_python(RELAUNCHED_CODE, "tcmalloc", preload="libtcmalloc_nowhere.so")
    assert result.returncode == 1
    assert "tcmalloc did not load" in result.stderr and INSTALL_HINT in result.stderr


def test_a_bad_choice_stops_the_process_with_the_reason():
    result = run_python(RELAUNCHED_CODE, "fast")
    assert result.returncode == 1
    assert f"aced: error: {ALLOCATOR_ENV}='fast'" in result.stderr


def test_the_aced_command_and_python_m_aced_go_through_the_launcher():
    (script,) = [
        e for e in importlib.metadata.entry_points(group="console_scripts") if e.name == "aced"
    ]
    assert script.value == "aced.launch:main"
    main = pathlib.Path(__file__).parents[1] / "aced" / "__main__.py"
    calls = [n for n in ast.walk(ast.parse(main.read_text())) if isinstance(n, ast.ImportFrom)]
    assert [(c.module, [a.name for a in c.names]) for c in calls] == [("aced.launch", ["main"])]
