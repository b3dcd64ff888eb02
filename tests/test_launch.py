"""The launcher's allocator choice (`aced.launch`): when it preloads tcmalloc, and that
a relaunched process really runs with it."""

import ctypes.util
import os
import subprocess
import sys

import pytest

from aced.launch import ALLOCATOR_ENV, INSTALL_HINT, LARGE_ALLOC_REPORT, TCMALLOC, allocator_env

LIBRARY = "libtcmalloc_minimal.so.4"


def found(name: str) -> str | None:
    assert name == TCMALLOC
    return LIBRARY


def missing(name: str) -> None:
    return None


def test_preloads_tcmalloc_where_found():
    env = allocator_env({"PATH": "/bin"}, "linux", found)
    assert env == {
        "PATH": "/bin",
        "LD_PRELOAD": LIBRARY,
        LARGE_ALLOC_REPORT[0]: LARGE_ALLOC_REPORT[1],
    }


def test_keeps_what_is_preloaded_first_and_a_set_threshold():
    environ = {"LD_PRELOAD": "libfoo.so", LARGE_ALLOC_REPORT[0]: "5"}
    env = allocator_env(environ, "linux", found)
    assert env["LD_PRELOAD"] == f"libfoo.so {LIBRARY}"
    assert env[LARGE_ALLOC_REPORT[0]] == "5"
    assert environ == {"LD_PRELOAD": "libfoo.so", LARGE_ALLOC_REPORT[0]: "5"}  # not modified


@pytest.mark.parametrize(
    "environ, platform, find",
    [
        ({ALLOCATOR_ENV: "system"}, "linux", found),
        ({"LD_PRELOAD": "/usr/lib/libtcmalloc_minimal.so.4"}, "linux", found),  # relaunched
        ({"LD_PRELOAD": "libjemalloc.so.2"}, "linux", found),  # the user's own choice
        ({}, "linux", missing),  # auto falls back quietly
        ({ALLOCATOR_ENV: ""}, "darwin", found),  # only Linux preloads
    ],
)
def test_runs_as_is(environ, platform, find):
    assert allocator_env(environ, platform, find) is None


@pytest.mark.parametrize(
    "environ, platform, find, message",
    [
        ({ALLOCATOR_ENV: "tcmalloc"}, "linux", missing, INSTALL_HINT),
        ({ALLOCATOR_ENV: "tcmalloc"}, "darwin", found, "off Linux"),
        ({ALLOCATOR_ENV: "jemalloc"}, "linux", found, "expected one of auto, tcmalloc, system"),
    ],
)
def test_bad_choices_name_the_fix(environ, platform, find, message):
    with pytest.raises(ValueError, match=message):
        allocator_env(environ, platform, find)


def run_relaunched(choice: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"} | {ALLOCATOR_ENV: choice}
    code = (
        "from aced.launch import relaunch, allocator_in_use; relaunch(); print(allocator_in_use())"
    )
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.skipif(sys.platform != "linux", reason="the launcher preloads on Linux only")
def test_a_relaunched_process_runs_with_tcmalloc_where_installed():
    expected = "tcmalloc" if ctypes.util.find_library(TCMALLOC) else "system"
    result = run_relaunched("auto")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected
    assert run_relaunched("system").stdout.strip() == "system"


def test_a_bad_choice_stops_the_process_with_the_reason():
    result = run_relaunched("fast")
    assert result.returncode == 1
    assert f"aced: error: {ALLOCATOR_ENV}='fast'" in result.stderr
