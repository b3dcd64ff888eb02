"""Test configuration in the Equinox manner.

Eight simulated CPU devices and fast-compiling code generation (``xla_flags.py``,
set before JAX is imported), strict dtype and rank
promotion, a ``getkey`` fixture and a deterministic hypothesis profile. Runtime
shape checking of the whole ``aced`` package comes from
``--jaxtyping-packages=aced,beartype.beartype`` in ``pyproject.toml``.

One persistent XLA compilation cache serves the whole session, this process and
every subprocess a test starts (``aced train`` runs, the jax.distributed
workers): a program compiled once is loaded, not compiled again, by the next
test or process that builds it. A loaded executable is the same binary, so
results are bit for bit those of a fresh compile. The cache lives in a fresh
temporary directory, removed at exit, unless ``JAX_COMPILATION_CACHE_DIR`` is
set already.
"""

import atexit
import os
import shutil
import tempfile

from xla_flags import fast_compile, with_suite_flags  # noqa: E402  (tests/ is on sys.path: rootdir conftest)

os.environ["XLA_FLAGS"] = with_suite_flags(os.environ.get("XLA_FLAGS", ""))
os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="aced-xla-cache-")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import itertools  # noqa: E402

import hypothesis  # noqa: E402
import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")

hypothesis.settings.register_profile(
    "aced", derandomize=True, deadline=None, database=None, max_examples=25
)
hypothesis.settings.load_profile("aced")


@pytest.fixture
def getkey():
    """Return a function producing fresh, deterministic PRNG keys."""
    counter = itertools.count()
    base = jax.random.key(0)

    def _getkey():
        return jax.random.fold_in(base, next(counter))

    return _getkey


# pytest-xdist runs each file on one worker (``--dist loadfile``). Its default order,
# files with the most tests first, would start the few-test, minute-long files last and
# leave a core idle at the end; `--no-loadscope-reorder` (pyproject.toml) keeps this
# order instead: the longest files first (seconds per file, `--durations=0` at 7e139d1:
# 185, 159, 89, 75, 65, 60, 50, 37, 35, 29, 29), then the rest as collected.
LONGEST_FIRST = (
    "test_distributed.py",
    "test_behaviour.py",
    "test_step.py",
    "test_step_properties.py",
    "test_checkpoint.py",
    "test_loop.py",
    "test_reproduce.py",
    "test_default_codegen.py",
    "test_jest_blocked.py",
    "test_hf_reference.py",
    "test_extending.py",
    "test_jest.py",
)


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
    if fast_compile():  # bit-for-bit claims across programs: tests/test_default_codegen.py
        skip = pytest.mark.skip(reason="runs under XLA's default code generation, in "
                                "tests/test_default_codegen.py")  # fmt: skip
        for item in items:
            if item.get_closest_marker("default_codegen"):
                item.add_marker(skip)
