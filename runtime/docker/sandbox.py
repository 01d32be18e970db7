"""A sandbox of the docker backend: the slimserve worker in a container (a *stem* made ahead
of demand and handed its model), and how a bundle is put into a container's model directory."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from runtime.channel import ChannelSandbox
from runtime.docker.container_life import ContainerLife
from runtime.sandbox import oom_message

LABEL = "slimserve.instance"         # containers carry the gateway's instance, so a restart finds its own
MODEL_DIR = "/opt/ml/model"


class Stem:
    def __init__(self, container, root: Path, reader, writer, started_ms: float):
        self.container = container
        self.root = root
        self.reader, self.writer = reader, writer
        self.started_ms = started_ms


class DockerSandbox(ContainerLife, ChannelSandbox):
    """The slimserve worker in a container, reached over a Unix socket."""

    def __init__(self, spec, listeners, backend, stem: Stem):
        super().__init__(spec, listeners, stem.reader, stem.writer, backend.config.max_response_bytes)
        self._init_container(backend, stem.container, stem.root)

    def _out_of_memory_text(self) -> str:
        return oom_message(self.spec.memory_mb)

    async def _death_cause(self) -> tuple[str, str]:
        return await self.container_death()

    async def destroy(self, reason: str = "destroyed") -> None:
        if not self._begin_destroy(reason):
            return
        await self.backend.remove(self.container, self.root)
        self._mark_dead(reason)


def link_tree(src: Path, dest: Path) -> None:
    """Put the bundle into the container's model directory: hard links (no copy) where the
    two share a filesystem, copies where they do not."""
    for root, dirs, files in os.walk(src):
        rel = Path(root).relative_to(src)
        (dest / rel).mkdir(parents=True, exist_ok=True)
        for f in files:
            s, d = Path(root) / f, dest / rel / f
            try:
                os.link(s, d)
            except OSError:
                shutil.copy2(s, d)
        for d in dirs:
            (dest / rel / d).mkdir(exist_ok=True)
    for path in [dest, *dest.rglob("*")]:           # readable by the sandbox user
        try:
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        except OSError:
            pass


CPU_PERIOD_US = 100_000


def cpu_quota(vcpus: float) -> dict:
    """The container's CPU quota for ``vcpus`` (docker's cpu_period/cpu_quota; -1: none)."""
    return {"cpu_period": CPU_PERIOD_US, "cpu_quota": round(vcpus * CPU_PERIOD_US) if vcpus > 0 else -1}
