"""What the ``aced`` sub-commands share: ``--plugin`` (the Python files or modules
imported first, so that their registrations of pair scores, selection rules and KD
losses apply; docs/extending.md), JAX's persistent compilation cache, and the
registration of a sub-command that parses its own arguments."""

import argparse
import importlib
import importlib.util
import os
import pathlib
import sys
from collections.abc import Sequence

EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130  # see the ``aced.cli`` docstring

PLUGIN_FLAG = ("--plugin",)
PLUGIN_OPTIONS = dict(
    action="append",
    default=[],
    metavar="FILE_OR_MODULE",
    help="a Python file or module to import first, e.g. one that registers a pair score, a "
    "selection rule or a KD loss (docs/extending.md); repeat for several",
)


CACHE_ENV = "ACED_COMPILATION_CACHE"  # a directory, or "off"; docs/training.md
CACHE_MAX_BYTES = 4 << 30  # the bound of a directory aced chooses: least recently used go


def default_cache_dir() -> pathlib.Path:
    """``$XDG_CACHE_HOME/aced/xla``, by default ``~/.cache/aced/xla``."""
    base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(base) / "aced" / "xla"


def enable_compilation_cache() -> pathlib.Path | None:
    """Turn on JAX's persistent compilation cache for this command; returns its directory.

    A program compiled once (a train step takes seconds to minutes) is loaded from
    disk by the next run that builds it: a resumed run, the next seed of a study, an
    evaluation of the same model. A loaded executable is the binary a fresh compile
    makes, so results are bit for bit the same. JAX's own setting wins
    (``JAX_COMPILATION_CACHE_DIR``, or ``jax.config`` set by the caller); otherwise
    `CACHE_ENV` names the directory, or ``off`` turns the cache off; by default it is
    `default_cache_dir`. Either is bounded to `CACHE_MAX_BYTES` unless
    ``JAX_COMPILATION_CACHE_MAX_SIZE`` says otherwise; with a bound JAX drops the least
    recently used entries and takes a file lock (``filelock``) around every read and
    write, so that commands running at once never read an entry half written. JAX
    writes only programs that took at least
    ``jax_persistent_cache_min_compile_time_secs`` (1 s) to compile, and in a run
    across processes only process 0 writes.
    """
    import jax

    if jax.config.jax_compilation_cache_dir:
        return pathlib.Path(jax.config.jax_compilation_cache_dir)
    setting = os.environ.get(CACHE_ENV, "").strip()
    if setting.lower() == "off":
        return None
    directory = pathlib.Path(setting).expanduser() if setting else default_cache_dir()
    if directory.exists() and not directory.is_dir():
        raise ValueError(
            f"{CACHE_ENV}={setting}: not a directory; name a directory for the compilation "
            f"cache, or set {CACHE_ENV}=off"
        )
    if "JAX_COMPILATION_CACHE_MAX_SIZE" not in os.environ:  # with a bound, JAX also locks
        jax.config.update("jax_compilation_cache_max_size", CACHE_MAX_BYTES)
    jax.config.update("jax_compilation_cache_dir", str(directory))
    return directory


def load_plugins(specs: Sequence[str]) -> None:
    """Import each plugin (a ``.py`` file or a module name) so that its registrations apply."""
    for spec in specs:
        path = pathlib.Path(spec)
        if spec.endswith(".py") or path.is_file():
            if not path.is_file():
                raise ValueError(f"--plugin {spec}: no such file")
            loaded = importlib.util.spec_from_file_location(f"aced_plugin_{path.stem}", path)
            module = importlib.util.module_from_spec(loaded)
            sys.modules[loaded.name] = module
            loaded.loader.exec_module(module)
        else:
            try:
                importlib.import_module(spec)
            except ModuleNotFoundError as error:
                raise ValueError(
                    f"--plugin {spec}: {error}; pass a .py file or an importable module name"
                ) from error


def plugins_in(argv: Sequence[str]) -> list[str]:
    """The values of every ``--plugin X`` / ``--plugin=X`` in `argv` (read before parsing,
    so that ``--help`` and validation list what the plugins register)."""
    found = []
    for i, item in enumerate(argv):
        if item == "--plugin" and i + 1 < len(argv):
            found.append(argv[i + 1])
        elif item.startswith("--plugin="):
            found.append(item.split("=", 1)[1])
    return found


SELF_PARSED: set[str] = set()  # the sub-commands `remainder_command` registered


def remainder_command(commands, name: str, about: str, usage: str) -> None:
    """Register ``aced NAME`` whose arguments its module parses itself (options and
    ``data.key=value`` fields in any order, with ``parse_intermixed_args``).

    ``aced.cli.main`` hands such a command everything after its name, whatever
    comes first: an argparse ``REMAINDER`` would not take a leading option, so
    ``aced NAME --help`` or ``aced NAME --out DIR ...`` would stop at the top
    level with "unrecognized arguments"."""
    command = commands.add_parser(name, help=about, add_help=False)
    command.add_argument("args", nargs=argparse.REMAINDER, help=usage)
    SELF_PARSED.add(name)
