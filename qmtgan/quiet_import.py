"""TensorFlow prints its start-up noise (absl's pre-init warning, the oneDNN banner) from C++
straight to file descriptors 1 and 2 the first time it is imported, before any logging setting
applies. `install` keeps that out of the console: the import runs with both descriptors
captured, and what it printed is shown only if the import fails."""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys


class _Captured(importlib.abc.Loader):
    """The real loader, executing the module with the console captured."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        from qmtgan.runtime.quiet import native_output_captured

        with native_output_captured():
            self._loader.exec_module(module)

    def __getattr__(self, name):  # resources, get_data, ...: the real loader's
        return getattr(self._loader, name)


class _QuietImport(importlib.abc.MetaPathFinder):
    def __init__(self, names: set[str]):
        self.names = set(names)

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in self.names:
            return None
        sys.meta_path.remove(self)  # let the normal finders find it; this hook's job ends here
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _Captured(spec.loader)
        return spec


def install(names: tuple[str, ...] = ("tensorflow",)) -> None:
    if not any(isinstance(f, _QuietImport) for f in sys.meta_path) and not any(
        n in sys.modules for n in names
    ):
        sys.meta_path.insert(0, _QuietImport(set(names)))
