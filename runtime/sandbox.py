"""The sandbox interface every backend implements, and its lifecycle.

States (one place, checked on every move):

    STARTING --ready--> IDLE --invoke--> BUSY --result--> IDLE
        \\                 \\                \\
         `------------------`----------------`--> DEAD   (destroy, crash, timeout)

A sandbox handle is safe to misuse: ``invoke`` on a sandbox that is not IDLE
returns a ``dead`` result instead of doing harm, ``destroy`` is idempotent, and
listeners hear ``created`` first and ``destroyed`` last.
"""
from __future__ import annotations

import abc
import enum
import math
import os
import time
from dataclasses import dataclass, field
from typing import Callable


class State(enum.Enum):
    STARTING = "starting"
    IDLE = "idle"
    BUSY = "busy"
    DEAD = "dead"


_ALLOWED = {
    State.STARTING: {State.IDLE, State.DEAD},
    State.IDLE: {State.BUSY, State.DEAD},
    State.BUSY: {State.IDLE, State.DEAD},
    State.DEAD: set(),
}

# A model's Environment variable that turns the warm-up replay off ("0"); `deploy --no-warmup` sets it.
WARMUP_ENV = "SLIMSERVE_WARMUP"

# Error kinds a sandbox reports; the gateway maps each to a SageMaker error.
MODEL_RAISED = "model_raised"
BAD_OUTPUT = "bad_output"
UNSUPPORTED_MEDIA = "unsupported_media"
OUT_OF_MEMORY = "out_of_memory"
EXITED = "exited"
TIMEOUT = "timeout"
LOAD_FAILED = "load_failed"
SPAWN_FAILED = "spawn_failed"     # the host could not start a sandbox at all (not the model's fault)
DEAD_HANDLE = "dead"


@dataclass(frozen=True)
class SandboxGroup:
    """Sandboxes that share one cap: a transform job's instance, whose ``members`` worker sandboxes
    together get ``memory_mb`` and ``vcpus`` (a parent cgroup), each still running one invocation
    at a time.  ``name``: lowercase letters, digits and hyphens, unique on this gateway."""
    name: str
    memory_mb: int
    vcpus: float
    members: int


@dataclass(frozen=True)
class SandboxSpec:
    sandbox_id: str
    endpoint: str
    variant: str
    memory_mb: int
    bundle_dir: str
    bundle_kind: str
    log_path: str
    env: dict = field(default_factory=dict)
    network_isolation: bool = False   # no network even where the backend would allow it (EnableNetworkIsolation)
    image: str | None = None          # docker backend: a SageMaker-contract image to run instead of the worker
    check_only: bool = False      # a deploy's trial load: not traffic, so nothing is kept warm for it
    vcpus: float = 0.0            # CPU quota in CPUs' worth of time (0: none); thread pools follow it
    sample: "InvokeRequest | None" = None   # the request that caused this start (warm-up input)
    group: SandboxGroup | None = None       # started inside this group's shared cap (``Backend.open_group``)


@dataclass
class InvokeRequest:
    body: bytes
    content_type: str | None = None
    accept: str | None = None
    custom_attributes: str | None = None
    max_response: int | None = None   # the largest answer this caller takes (None: the sandbox's own cap)
    # Asynchronous inference (bodies up to 1 GB): the request body is this file's bytes instead of
    # ``body``, and the answer is written to ``response_file`` instead of held, so the gateway never
    # holds either in memory; the sandbox still reads the whole body into its own (capped) memory.
    body_file: str | None = None
    response_file: str | None = None
    model: str | None = None          # a multi-model sandbox: the key of the loaded model to run

    @property
    def size(self) -> int:
        return os.path.getsize(self.body_file) if self.body_file else len(self.body)


@dataclass
class InvokeResult:
    ok: bool
    body: bytes = b""
    content_type: str | None = None
    custom_attributes: str | None = None
    model_ms: float = 0.0          # run time measured inside the sandbox (or by the gateway if it died)
    error_kind: str | None = None
    message: str = ""
    original_status: int | None = None
    size: int | None = None        # bytes of the answer when it went to the request's response_file

    @property
    def nbytes(self) -> int:
        return self.size if self.size is not None else len(self.body)


@dataclass
class LoadResult:
    """What came of loading one model into a multi-model sandbox.  ``memory_bytes``: what the
    sandbox holds more than before the load, as its cap counts it (measured by the backend, not
    reported by the model's process)."""
    ok: bool
    load_ms: float = 0.0
    memory_bytes: int = 0
    error_kind: str | None = None
    message: str = ""


THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
              "VECLIB_MAXIMUM_THREADS")


def thread_env(vcpus: float, model_env: dict) -> dict:
    """What a sandbox's environment gets for its CPU quota: thread pools of ceil(vCPUs) (unless
    the model's own Environment sets them), and SM_NUM_CPUS, the same count under the name
    SageMaker's toolkits read."""
    if vcpus <= 0:
        return {}
    threads = str(max(1, math.ceil(vcpus)))
    out = {name: threads for name in THREAD_ENV if name not in model_env}
    if "SM_NUM_CPUS" not in model_env:
        out["SM_NUM_CPUS"] = threads
    return out


def oom_message(memory_mb: int, while_loading: bool = False) -> str:
    """What a caller reads when a model went past its memory tier, whichever backend caught it."""
    what = "loading the model" if while_loading else "the model"
    return f"{what} exceeded its memory tier of {memory_mb} MB and was stopped; deploy it with a larger memory size"


def too_large_message(size: int, limit: int) -> str:
    """What a caller reads when a model's answer is over the synchronous size limit."""
    return (f"the model's answer of {size} bytes is over the limit of {limit} bytes for a synchronous "
            "response; return less, or use asynchronous inference")


@dataclass
class StartFacts:
    """What a backend knows about how one sandbox started: ``describe`` shows it, and a cold
    start's usage record keeps ``path`` and the phases of ``timings``."""
    path: str | None = None       # fresh, zygote, model-zygote, stem, container ...
    pid: int | None = None
    start_ms: float | None = None
    load_ms: float | None = None
    timings: dict[str, float] = field(default_factory=dict)     # phases of the start, in ms
    protections: dict | None = None
    container: str | None = None  # docker: the container's short id
    stem: bool | None = None      # process: handed a ready stem (True) or forked one on demand

    def __post_init__(self):
        # Phases partly come from the sandbox's own hello: keep only what is a number.
        self.timings = {k: float(v) for k, v in (self.timings or {}).items()
                        if isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool)}


class StartError(Exception):
    """A sandbox could not be started or could not load its bundle."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind
        self.message = message


Listener = Callable[[str, "Sandbox"], None]


class Sandbox(abc.ABC):
    def __init__(self, spec: SandboxSpec, listeners: list[Listener]):
        self.spec = spec
        self.state = State.STARTING
        self.created_at = time.time()
        self.facts = StartFacts()
        self.death_reason: str | None = None
        self._listeners = list(listeners)
        self._emit("created")

    @property
    def id(self) -> str:
        return self.spec.sandbox_id

    def _emit(self, event: str) -> None:
        for listener in self._listeners:
            listener(event, self)

    def _move(self, new: State) -> None:
        if new not in _ALLOWED[self.state]:
            raise RuntimeError(f"sandbox {self.id}: illegal move {self.state.value} -> {new.value}")
        self.state = new
        self._emit(new.value if new is not State.DEAD else "destroyed")

    def _mark_dead(self, reason: str) -> bool:
        """Move to DEAD once; returns False if already dead."""
        if self.state is State.DEAD:
            return False
        self.death_reason = reason
        self._move(State.DEAD)
        return True

    @property
    def alive(self) -> bool:
        return self.state is not State.DEAD

    @abc.abstractmethod
    async def invoke(self, request: InvokeRequest, timeout_s: float) -> InvokeResult:
        """Run one invocation. Model faults come back as a failed result, never raised."""

    @abc.abstractmethod
    async def destroy(self, reason: str = "destroyed") -> None:
        """Stop the sandbox and free what it holds. Idempotent."""

    @abc.abstractmethod
    def memory_bytes(self) -> int:
        """Memory the sandbox holds now, as its cap counts it."""

    async def load_model(self, key: str, kind: str, archive: bytes, timeout_s: float) -> LoadResult:
        """Load one more model (``archive``: its bundle as an uncompressed tar) under ``key``, in a
        sandbox started from a ``multi-model`` bundle.  Failures come back as a failed result."""
        return LoadResult(False, error_kind=LOAD_FAILED, message="this sandbox cannot load models on demand")

    async def unload_model(self, key: str, timeout_s: float) -> bool:
        """Drop the model loaded under ``key``; False if the sandbox could not (it is then dead)."""
        return False


class Backend(abc.ABC):
    name: str = "abstract"

    @abc.abstractmethod
    async def start(self, spec: SandboxSpec) -> Sandbox:
        """Start a sandbox and wait until its bundle is loaded; raises StartError."""

    @abc.abstractmethod
    def protections(self) -> dict:
        """What this backend enforces on this machine, and why anything is missing."""

    def can_run_image(self, image: str) -> bool:
        """Whether ``image`` can be served as the model's own (SageMaker-contract) server.  May block
        (it can ask an engine): call it off the event loop."""
        return False

    def snapshot(self) -> dict:
        """What the backend keeps warm besides sandboxes (zygotes, stems), for ``/admin/zygotes``."""
        return {"enabled": False}

    async def open_group(self, group: SandboxGroup) -> bool:
        """Make ``group``'s shared cap; sandboxes whose spec names it start inside it.  False when
        this backend cannot share one cap among sandboxes: the caller then gives each member its
        share (memory and vCPUs divided by ``members``) instead."""
        return False

    async def close_group(self, group: SandboxGroup) -> None:  # noqa: B027 - optional hook
        """Remove ``group``'s cap once its sandboxes are destroyed.  Idempotent."""

    async def release_bundle(self, bundle_dir: str) -> None:  # noqa: B027 - optional hook, no-op by default
        """No pool serves this bundle any more: drop what was kept warm for it (a model zygote)."""

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Start background work (watchdogs, orphan sweeps)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Stop background work; sandboxes are destroyed by their owners first."""
