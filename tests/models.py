"""Model functions deployed by the tests.  They live in a module of their own so
that the client pickles them by value (a sandbox cannot import tests/)."""
from __future__ import annotations

import os
import time


def echo(x):
    return {"echo": x}


def kind_of(x):
    return type(x).__name__


def numpy_out(x):
    import numpy as np

    return np.arange(int(x), dtype=np.float64) * 0.5


def raises(x):
    raise ValueError(f"bad input {x!r}")


def unserialisable(x):
    return object()


def exits(x):
    os._exit(7)


def hangs(x):
    time.sleep(3600)


def sleeps(x):
    time.sleep(float(x))
    return x


def allocates(x):
    """Touch ``x`` MB of memory page by page, so it is really resident."""
    block = bytearray(int(x) * 1024 * 1024)
    for i in range(0, len(block), 4096):
        block[i] = 1
    return len(block)


def with_context(x, context):
    context.response_custom_attributes = f"seen={context.custom_attributes}"
    return x


def tmp_and_net(x):
    import socket
    import tempfile

    out = {"tmpdir": tempfile.gettempdir(), "cuda": os.environ.get("CUDA_VISIBLE_DEVICES")}
    try:
        socket.create_connection(("127.0.0.1", 1), timeout=1)
        out["net"] = "connected"
    except OSError as exc:
        out["net"] = exc.errno
    return out


class Doubler:
    def predict(self, x):
        return [2 * v for v in x]


def randoms(x):
    import random

    import numpy as np

    return [random.random(), float(np.random.rand())]
