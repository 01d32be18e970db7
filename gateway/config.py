"""Gateway settings: one dataclass, built by the CLI and passed in."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_STATE_DIR = ".slimserve"             # where serve keeps its state, and clients look for it
MEMORY_TIERS_MB = (1024, 2048, 3072, 4096, 5120, 6144)
MAX_CONCURRENCY_RANGE = (1, 200)
DEFAULT_MAX_CONCURRENCY = 20
MAX_PAYLOAD_BYTES = 6 * 1024 * 1024             # SageMaker's synchronous limit for real-time endpoints
MAX_SERVERLESS_PAYLOAD_BYTES = 4 * 1024 * 1024  # ... and for serverless invocations, requests and answers
DEFAULT_CPU_PER_GB = 1024 / 1769                # vCPUs per GB: Lambda's one vCPU per 1,769 MB
DRAIN_FACTOR = 4                                # a body up to this many caps is read (hashed, dropped) to be refused
DEFAULT_VARIANT = "AllTraffic"


@dataclass
class Settings:
    state_dir: Path = Path(DEFAULT_STATE_DIR)
    host: str = "127.0.0.1"
    port: int = 8080
    backend: str = "process"                     # process | docker
    docker_image: str = "slimserve-runtime:latest"
    docker_stems: int = 2                        # paused containers kept ready for cold starts
    invocation_timeout_s: float = 60.0
    start_timeout_s: float = 120.0
    # Fraction of host RAM that live sandboxes (each counted at its tier) may reserve.
    memory_budget_fraction: float = 0.8
    memory_budget_mb: int | None = None          # overrides the fraction when set
    # warm-pool policy: adaptive | adaptive:H | histogram | fixed | fixed:S | none
    policy: str = "adaptive"
    policy_cold_start_ms: float = 1000.0         # the cold-start latency the policy trades idle memory against
    keep_alive_s: float = 600.0                  # the window of policy "fixed"
    reaper_interval_s: float = 1.0               # how often the scaler reaps and opens pre-warm windows
    provisioned_checkpoint_s: float = 10.0       # how often provisioned wall time is written
    usage_retention_days: float | None = None    # drop raw usage records older than this (roll-ups stay)
    cgroup_mode: str = "auto"
    network_isolation: bool = True
    sandbox_pids_max: int = 1024                 # processes + threads per sandbox (cgroup pids.max)
    sandbox_uid_range: tuple[int, int] | None = None   # (first, count); None: 1024 uids chosen by the state dir
    sandbox_paths: tuple[str, ...] = ()          # host paths every sandbox also sees, read-only
    byoc_user: str | None = None                 # user for bring-your-own containers (None: the image's USER)
    header_timeout_s: float = 20.0               # a connection's first request head must arrive within this
    body_timeout_s: float = 60.0                 # a request body must arrive within this
    idle_timeout_s: float = 30.0                 # a keep-alive connection idle this long is closed
    max_connections: int = 1000                  # open client connections at most; past it: 503 and close
    max_body_bytes_held: int = 256 << 20         # request-body bytes held at once while they arrive (then 503)
    cpu_per_gb: float = DEFAULT_CPU_PER_GB       # a sandbox's CPU quota per GB of its memory (0: no quotas)
    max_bundle_mb: float | None = None           # a bundle's unpacked size at most (None: its variant's memory)
    validate_on_deploy: bool = True              # load a new bundle once before accepting it
    zygotes: bool = True                         # fork sandboxes from pre-warmed interpreters
    zygote_stems: int = 2                        # processes each zygote keeps forked ahead of demand
    zygote_preload: tuple[str, ...] = ()         # modules the base zygote imports besides the defaults
    model_zygotes_max: int = 16                  # model zygotes (bundles kept loaded) at most ...
    model_zygotes_memory_mb: int | None = None   # ... holding this much memory (None: a tenth of RAM) ...
    model_zygote_idle_s: float = 1800.0          # ... each closed when not forked from this long
    account_id: str = "123456789012"
    region: str = "us-east-1"
    max_payload_bytes: int = MAX_PAYLOAD_BYTES   # requests and answers of instance (real-time) variants
    max_serverless_payload_bytes: int = MAX_SERVERLESS_PAYLOAD_BYTES   # ... of serverless variants
    auth: str = "sigv4"                          # sigv4: every AWS-style API requires signatures | none (loopback only)
    access_keys: tuple = ()                      # credentials.AccessKey given by the operator; none: the generated pair
    model_roots: tuple[Path, ...] = ()           # where file:// and local ModelDataUrl may point (never the state dir)
    prices_path: Path | None = None              # price table for bills (default: the shipped example)
    s3: str | None = None                        # None: S3 through the standard AWS configuration; "local": run one
    s3_endpoint_url: str | None = None           # the S3 endpoint (None: AWS_ENDPOINT_URL_S3, else AWS's)
    s3_port: int | None = None                   # --s3 local's port (None: the one kept from the first start)
    model_cache_mb: int = 10240                  # S3 model data kept on disk at most, least recently used out first
    async_lease_s: float = 30.0                  # an async request's claim lasts this long (renewed while it runs)
    async_max_backlog: int = 100_000             # requests queued per async endpoint at most (then 503)
    async_s3_backoff_s: tuple[float, ...] = (2.0, 5.0, 15.0, 30.0, 60.0)   # retries of S3 outages, then failure
    autoscaling_interval_s: float = 10.0         # how often scaling policies are evaluated (and on any backlog)
    sns_endpoint_url: str | None = None          # where arn:aws:sns: topics are published (None: boto3's own)
    notify_allow: tuple[str, ...] = ()           # hosts http(s):// notification topics may be sent to (none: none)
    transform_held_mb: int = 1024                # transform jobs' request bodies held in memory at once, all jobs
    model_load_wait_s: float = 60.0              # a multi-model request waits this long for its model's load (then 429)
    multi_model_recheck_s: float = 1.0           # a target model's object is looked up again after this (new ETag?)
    multi_model_archives_mb: int = 4096          # multi-model endpoints' prepared models kept on disk at most
    extra: dict = field(default_factory=dict)

    @property
    def body_cap(self) -> int:
        """The most a synchronous request or answer may be, whatever its variant."""
        return max(self.max_payload_bytes, self.max_serverless_payload_bytes)

    def payload_limit(self, serverless: bool) -> int:
        return self.max_serverless_payload_bytes if serverless else self.max_payload_bytes

    @property
    def db_path(self) -> Path:
        return self.state_dir / "slimserve.db"

    @property
    def token_path(self) -> Path:
        return self.state_dir / "admin-token"

    @property
    def bundles_dir(self) -> Path:
        return self.state_dir / "bundles"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def s3_dir(self) -> Path:
        return self.state_dir / "s3"

    @property
    def model_cache_dir(self) -> Path:
        return self.state_dir / "model-cache"

    @property
    def max_model_bytes(self) -> int:
        """The most a model's data may unpack to under any variant (one variant's limit is checked at deploy)."""
        return int((self.max_bundle_mb or MEMORY_TIERS_MB[-1]) * (1 << 20))

    @property
    def async_spool_dir(self) -> Path:
        """Inputs and answers of asynchronous requests while they run (never in memory)."""
        return self.state_dir / "async-spool"

    @property
    def transform_dir(self) -> Path:
        """Transform jobs' installed models and spooled objects, one directory per running job."""
        return self.state_dir / "transform"

    @property
    def multi_model_dir(self) -> Path:
        """Multi-model endpoints' models, each prepared once (checked, unpacked, packed for a sandbox)."""
        return self.state_dir / "multi-model"

    @property
    def sandboxes_dir(self) -> Path:
        return self.state_dir / "sandboxes"
