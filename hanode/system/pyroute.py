"""pyroute2's IPRoute and NetlinkError, loaded without the package's plugin scan.

``import pyroute2`` runs the package's ``__init__``, which asks importlib.metadata for
the entry points of every installed distribution and loads each of pyroute2's (NDB,
IPSet, the wireless and the remote APIs, ...): on Debian 12's pyroute2 0.7 that is 60%
of the import, 0.04 s on a server and 0.7 s of CPU in the lab's emulated guests, spent
on modules an address change never touches. hanode needs two names, and both live in
ordinary modules: ``pyroute2.iproute.linux.IPRoute`` (what ``pyroute2.IPRoute`` is on
Linux) and ``pyroute2.netlink.exceptions.NetlinkError``.

So, when nothing in the process has imported pyroute2 yet, the package is registered
from its own import spec without running its ``__init__`` (what the import system does
before it runs a package's code), and the two modules are imported through it. Anything
else (another pyroute2 layout, an import error on the way) falls back to the package's
ordinary import: the lean path can only be faster, never different in what it loads
from these two modules. The package registered so completes itself: the first name asked
of it that its ``__init__`` defines (``from pyroute2 import NetNS`` anywhere later in the
process) runs that ``__init__`` into it, as the ordinary import would have.
"""

from __future__ import annotations

import gc
import importlib
import importlib.machinery
import importlib.util
import logging
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

log = logging.getLogger(__name__)

PACKAGE = "pyroute2"
IPROUTE_MODULE = "pyroute2.iproute.linux"
EXCEPTIONS_MODULE = "pyroute2.netlink.exceptions"

# the warm-up thread and the step may both ask at once; reentrant: a module imported
# under it may complete the package (below)
_lock = threading.RLock()
_registered: dict[str, ModuleType] = {}  # the package module registered here, if any


def iproute_class() -> Any:
    """pyroute2's IPRoute class (Linux)."""
    module: Any = _module(IPROUTE_MODULE)
    return module.IPRoute


def netlink_error() -> type[BaseException]:
    """pyroute2's NetlinkError: what a refused netlink request raises."""
    module: Any = _module(EXCEPTIONS_MODULE)
    error: type[BaseException] = module.NetlinkError
    return error


def lean() -> bool:
    """Whether pyroute2 was loaded here without its package ``__init__``."""
    return PACKAGE in _registered and sys.modules.get(PACKAGE) is _registered[PACKAGE]


def _module(name: str) -> ModuleType:
    with _collector_paused(), _lock:
        loaded = sys.modules.get(name)
        if loaded is not None:
            return loaded
        if PACKAGE not in sys.modules:
            try:
                return _import_lean(name)
            except Exception as err:  # any surprise: the ordinary import decides
                log.debug("pyroute2 without its plugin scan failed (%s): importing it whole", err)
                _forget()
        return importlib.import_module(name)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """The cyclic collector off while pyroute2 loads: the import builds some 30,000
    objects that live as long as the process (its modules, classes and message tables),
    so the 35 collections it would trigger free nothing (a tenth of the import's time)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _import_lean(name: str) -> ModuleType:
    """Import ``name`` under a package module that is registered but not executed."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.submodule_search_locations is None:
        raise ImportError(f"{PACKAGE} is not an importable package")
    package = importlib.util.module_from_spec(spec)
    package.__dict__["__getattr__"] = _completion(package, spec)
    sys.modules[PACKAGE] = package
    _registered[PACKAGE] = package
    return importlib.import_module(name)


def _completion(package: ModuleType, spec: importlib.machinery.ModuleSpec) -> Any:
    """The package's module __getattr__ (PEP 562): on the first public name it lacks, run
    the package's own ``__init__`` into it, then answer from what that defined."""

    def __getattr__(name: str) -> Any:
        if name.startswith("__") and name not in ("__all__", "__version__"):
            return _missing(name)
        if _submodule(package, name):
            return _missing(name)  # `from pyroute2 import config`: the import system loads it
        with _lock:
            if package.__dict__.pop("__getattr__", None) is not None and spec.loader:
                log.debug("pyroute2.%s asked for: running the package's __init__", name)
                spec.loader.exec_module(package)
        return package.__dict__[name] if name in package.__dict__ else _missing(name)

    return __getattr__


def _submodule(package: ModuleType, name: str) -> bool:
    """Whether ``name`` is a module or subpackage of the package (imported or not)."""
    if f"{PACKAGE}.{name}" in sys.modules:
        return True
    found = importlib.machinery.PathFinder.find_spec(f"{PACKAGE}.{name}", list(package.__path__))
    return found is not None


def _missing(name: str) -> Any:
    raise AttributeError(f"module {PACKAGE!r} has no attribute {name!r}")


def _forget() -> None:
    """Drop every pyroute2 module a failed lean import left, so the whole one starts clean."""
    for loaded in [key for key in sys.modules if key == PACKAGE or key.startswith(PACKAGE + ".")]:
        del sys.modules[loaded]
    _registered.clear()
