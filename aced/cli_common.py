"""What the ``aced`` sub-commands share: ``--plugin`` (the Python files or modules
imported first, so that their registrations of pair scores, selection rules and KD
losses apply; docs/extending.md) and the registration of a sub-command that parses
its own arguments."""

import argparse
import importlib
import importlib.util
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


def remainder_command(commands, name: str, about: str, usage: str) -> None:
    """Register ``aced NAME`` whose arguments its module parses itself (options and
    ``data.key=value`` fields in any order, with ``parse_intermixed_args``)."""
    command = commands.add_parser(name, help=about, add_help=False)
    command.add_argument("args", nargs=argparse.REMAINDER, help=usage)
