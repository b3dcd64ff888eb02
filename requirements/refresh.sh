#!/usr/bin/env bash
# Refresh the locks in requirements/ from pyproject.toml with pip-compile (pip-tools):
#
#   bash requirements/refresh.sh            # keep every pin; resolve only what pyproject.toml changed
#   bash requirements/refresh.sh --upgrade  # the newest releases within pyproject.toml's ranges
#
# requirements/pins.txt holds the constraints the locks add to pyproject.toml's ranges (each
# with its reason). base.txt locks the main job (`pip install -e .`), dev.txt the test command (extras dev + hf,
# with base.txt's pins), bench.txt benchmarks/throughput.py's environment (extra bench). After
# an upgrade, rerun the tests and the README's figures and update
# the versions the README quotes. Extra arguments go to pip-compile.
set -euo pipefail
cd "$(dirname "$0")/.."
export CUSTOM_COMPILE_COMMAND="bash requirements/refresh.sh"
compile() {
    pip-compile --quiet --strip-extras --no-emit-index-url --no-emit-find-links "$@" pyproject.toml
}
compile "$@" --constraint requirements/pins.txt --output-file requirements/base.txt
compile "$@" --constraint requirements/base.txt --extra dev --extra hf --output-file requirements/dev.txt
# benchmarks/throughput.py's own environment: open_clip, torch 2.14.1 and torchvision.
compile "$@" --constraint requirements/base.txt --extra bench --output-file requirements/bench.txt
# PyTorch's CPU build carries a local version label (2.13.0+cpu): pin the public version,
# which pip takes from that build where it lies on disk and from PyPI elsewhere.
sed -i -E 's/^(torch==[0-9.]+)\+[a-z0-9.]+/\1/' requirements/base.txt requirements/dev.txt requirements/bench.txt
