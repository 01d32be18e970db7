"""A multi-model sandbox's side: the models it was given, by the gateway's key.

The gateway sends a model as an uncompressed tar of a checked bundle (``load``), which is
unpacked into this sandbox's own temporary directory (tmpfs inside a confined sandbox:
counted in its memory) and loaded as a single-model sandbox would load it; ``unload`` drops
it and gives its memory back to the system where the allocator can.  Keys are the gateway's
names (``m`` and hex digits), never a client's path.
"""
from __future__ import annotations

import ctypes
import gc
import io
import os
import re
import shutil
import sys
import tarfile
import tempfile
import time
import traceback

from runtime import bundle
from runtime.sandbox import LOAD_FAILED, OUT_OF_MEMORY

KEY_RE = re.compile(r"^m[0-9a-f]{1,32}$")


def _trim() -> None:
    """Hand freed heap back to the kernel (glibc keeps it otherwise), so that the gateway's
    measure of this sandbox's memory after an unload is what it holds."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class ModelHost:
    def __init__(self):
        self.root = tempfile.mkdtemp(prefix="models-")
        self.models: dict[str, object] = {}

    def _dir(self, key: str) -> str:
        return os.path.join(self.root, key)

    def load(self, key: str, kind: str, archive: bytes) -> dict:
        if not KEY_RE.match(key or "") or kind not in (bundle.PICKLE, bundle.SAGEMAKER):
            return {"ok": False, "error_kind": LOAD_FAILED, "message": "the gateway sent a load this sandbox refuses"}
        if key in self.models:
            return {"ok": True}
        dest = self._dir(key)
        t0 = time.perf_counter()
        self._forget_imports()                 # its `import helper` finds its own helper, not another model's
        try:
            shutil.rmtree(dest, ignore_errors=True)
            os.makedirs(dest)
            with tarfile.open(fileobj=io.BytesIO(archive), mode="r:") as tar:
                tar.extractall(dest, filter="data")
            del archive
            handler = bundle.load(dest, kind, module_name=f"inference_{key}")
        except MemoryError as exc:
            self._forget(key, None)
            return {"ok": False, "fatal": True, "error_kind": OUT_OF_MEMORY, "message": f"MemoryError: {exc}"}
        except BaseException as exc:  # noqa: BLE001 - model code may raise anything, SystemExit too
            traceback.print_exc()
            self._forget(key, None)
            return {"ok": False, "error_kind": LOAD_FAILED, "message": f"{type(exc).__name__}: {exc}"}
        if kind == bundle.PICKLE:                  # unpickled: its file is not read again
            shutil.rmtree(dest, ignore_errors=True)
        self.models[key] = handler
        return {"ok": True, "load_ms": (time.perf_counter() - t0) * 1000.0}

    def unload(self, key: str) -> dict:
        handler = self.models.pop(key, None)
        self._forget(key, handler)
        del handler
        gc.collect()
        _trim()
        return {"ok": True}

    def _forget(self, key: str, handler) -> None:
        """Remove what loading ``key`` left: its files, its entry script's module and anything
        imported from its code directory."""
        dest = self._dir(key)
        code_dir = getattr(handler, "code_dir", None)
        if code_dir in sys.path:
            sys.path.remove(code_dir)
        for name, mod in list(sys.modules.items()):
            where = getattr(mod, "__file__", None) or ""
            if name == f"inference_{key}" or where.startswith(dest + os.sep):
                del sys.modules[name]
        shutil.rmtree(dest, ignore_errors=True)

    def _forget_imports(self) -> None:
        """Modules other models imported from their code directories leave ``sys.modules`` (the
        models keep the module objects they hold), so a model's imports resolve in its own code."""
        for name, mod in list(sys.modules.items()):
            if (getattr(mod, "__file__", None) or "").startswith(self.root + os.sep):
                del sys.modules[name]

    def invoke(self, body: bytes, ctx) -> tuple[bytes, str]:
        handler = self.models.get(ctx.extra.get("model"))
        if handler is None:
            raise LookupError(f"model {ctx.extra.get('model')!r} is not loaded in this sandbox")
        return handler.invoke(body, ctx)
