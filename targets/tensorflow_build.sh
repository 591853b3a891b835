#!/bin/sh
# Put TensorFlow's CPU or GPU build in a venv, at the version pyproject.toml resolved for
# tensorflow-cpu: tensorflow-cpu and tensorflow[and-cuda] install the same module, so the one
# asked for replaces the other (never both).   usage: tensorflow_build.sh VENV_PYTHON cpu|gpu
set -eu
python=$1
build=$2
version=$("$python" -c 'from importlib.metadata import version; print(version("tensorflow-cpu"))' 2>/dev/null || true)
if [ -z "$version" ]; then
  version=$("$python" -c 'from importlib.metadata import version; print(version("tensorflow"))')
fi
case "$build" in
  gpu)
    "$python" -m pip uninstall --quiet -y tensorflow-cpu
    "$python" -m pip install --quiet "tensorflow[and-cuda]==$version"
    # its own files again: uninstalling tensorflow-cpu removed the module the two share
    "$python" -m pip install --quiet --force-reinstall --no-deps "tensorflow==$version"
    ;;
  cpu)
    if "$python" -m pip show --quiet tensorflow >/dev/null 2>&1; then  # back from a GPU build
      "$python" -m pip uninstall --quiet -y tensorflow
      "$python" -m pip install --quiet --force-reinstall --no-deps "tensorflow-cpu==$version"
    fi
    ;;
  *)
    echo "tensorflow_build.sh: build must be cpu or gpu, not '$build'" >&2
    exit 2
    ;;
esac
