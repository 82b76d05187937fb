"""Import only the parts of heavy dependencies that semcodec's commands use.

Package ``__init__`` files cost most of a command's start-up on a 2-core CPU (``python -X
importtime``, 2026-12-07): ``timm.models`` imports every timm model (one of them ``torch._dynamo``,
1.5 s) where semcodec needs ViT's ``Block``; timm's layers import
``torchvision.models.feature_extraction`` and ``torchvision.ops.misc``, whose package ``__init__``
files import every torchvision model and ``torchvision.ops.roi_align`` (``torch._dynamo`` again);
CompressAI's entropy models ``import scipy.stats`` for one quantile function used only when
building a scale table (about 1 s). Here those packages are registered bare: their submodules import normally from the
installed files, and the first use of anything else runs the real ``__init__`` (for torchvision) or
imports the real module (for ``scipy.stats``), so code that needs more still gets it, only later.
:mod:`semcodec.compressai_parts` does the same for CompressAI's own package ``__init__``.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from types import ModuleType

BARE_PACKAGES = {
    "torchvision": ("torchvision", "torchvision.models", "torchvision.ops"),
    "timm": ("timm", "timm.models"),
}
"""Per package, the ``__init__`` files left out, outermost first; the real ones run innermost first,
as each imports the next. ``timm.models`` imports every model file, one of which (``naflexvit``)
imports ``torch._dynamo`` itself; ``ViT``'s ``Block`` needs none of them."""


def use_light_imports() -> None:
    """Register the bare packages and the lazy ``scipy.stats`` (once; a no-op for what is already imported)."""
    for top, names in BARE_PACKAGES.items():
        if top not in sys.modules and importlib.util.find_spec(top) is not None:
            for name in names:
                register_bare(name, top)
            version = importlib.import_module(f"{top}.version")
            sys.modules[top].__dict__["__version__"] = version.__version__
    if "scipy.stats" not in sys.modules and importlib.util.find_spec("scipy") is not None:
        _register_lazy("scipy.stats")


def full_package(top: str) -> ModuleType:
    """Run ``top``'s real package ``__init__`` files, keeping the submodules loaded so far."""
    run_real_inits(BARE_PACKAGES[top])
    return sys.modules[top]


def run_real_inits(names: tuple[str, ...]) -> None:
    """Run the real ``__init__`` of each package of ``names`` registered bare (innermost, last, first)."""
    for name in reversed(names):
        module = sys.modules.get(name)
        if module is not None and module.__dict__.pop("_semcodec_bare", False):
            module.__dict__.pop("__getattr__", None)
            module.__spec__.loader.exec_module(module)


def register_bare(name: str, top: str | None = None) -> bool:
    """Put package ``name`` in ``sys.modules`` without running its ``__init__`` (its submodules import
    from the installed files as usual); ``top``: a name it lacks runs ``top``'s real ``__init__`` files
    first (:func:`full_package`). ``False`` when ``name`` is not an installed package."""
    spec = importlib.util.find_spec(name)
    if spec is None or spec.submodule_search_locations is None:
        return False
    module = importlib.util.module_from_spec(spec)
    module.__dict__["_semcodec_bare"] = True
    if top is not None:

        def __getattr__(attr: str):  # noqa: N807 (the module's own attribute hook, PEP 562)
            if attr.startswith("__"):
                raise AttributeError(attr)
            if importlib.util.find_spec(f"{name}.{attr}") is not None:  # a submodule: import just it
                return importlib.import_module(f"{name}.{attr}")
            full_package(top)
            return getattr(module, attr)

        module.__dict__["__getattr__"] = __getattr__
    sys.modules[name] = module
    parent, _, child = name.rpartition(".")
    if parent in sys.modules:
        setattr(sys.modules[parent], child, module)
    return True


class _LazyModule(ModuleType):
    """A module that imports the real one on first attribute access and hands its attributes on."""

    def __getattr__(self, attr: str):
        name = self.__name__
        if sys.modules.get(name) is self:
            del sys.modules[name]
        real = importlib.import_module(name)
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(sys.modules[parent], child, real)
        return getattr(real, attr)


def _register_lazy(name: str) -> None:
    parent, _, child = name.rpartition(".")
    package = importlib.import_module(parent)  # cheap: scipy's own __init__
    lazy = _LazyModule(name)
    sys.modules[name] = lazy
    setattr(package, child, lazy)
