"""A CreateTransformJob request, checked as the service checks it, and the job it describes.

Pure: no I/O.  Every limit of botocore's ``sagemaker`` model is checked here (a client that skips
its own validation gets the same answer), with the rules the service adds on top:
MaxPayloadInMB at most 100 and MaxPayloadInMB x MaxConcurrentTransforms at most 100, a
BatchStrategy only with a SplitType, timeouts 1-3600 s and 0-3 retries per invocation.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from gateway.batch.processing import Processing
from gateway.errors import Invalid
from gateway.sagemaker.instances import UnknownInstanceType, instance_memory_mb, instance_vcpus
from gateway.sagemaker.shapes import check_name, tags_of

DATA_TYPES = ("S3Prefix", "ManifestFile")
COMPRESSIONS = ("None", "Gzip")
SPLIT_TYPES = ("None", "Line", "RecordIO", "TFRecord")
STRATEGIES = ("MultiRecord", "SingleRecord")
ASSEMBLY = ("None", "Line")
JOIN_SOURCES = ("Input", "None")
STATUSES = ("InProgress", "Completed", "Failed", "Stopping", "Stopped")
MAX_PAYLOAD_MB = 100                  # MaxPayloadInMB, and MaxPayloadInMB x MaxConcurrentTransforms
DEFAULT_PAYLOAD_MB = 6
DEFAULT_TIMEOUT_S = 600               # ModelClientConfig's defaults, as the service documents them
DEFAULT_RETRIES = 3
MAX_INSTANCES = 100                   # instances of one job at most (a host runs only what fits anyway)
URI_RE = re.compile(r"^(?:(https|s3)://([^/]+)|(file)://([^/]*))/?(.*)$")
EXPERIMENT_RE = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,119}$")
AMI_RE = re.compile(r"^[a-zA-Z0-9]+(-[a-zA-Z0-9]+)*$")
# The CPU types of botocore's TransformInstanceType enum that slimserve knows the size of.
INSTANCE_TYPES = ("ml.m4.xlarge", "ml.m4.2xlarge", "ml.m4.4xlarge", "ml.c4.xlarge", "ml.c4.2xlarge",
                  "ml.c5.xlarge", "ml.c5.2xlarge", "ml.c5.4xlarge", "ml.m5.large", "ml.m5.xlarge", "ml.m5.2xlarge",
                  "ml.m5.4xlarge", "ml.m6i.large", "ml.m6i.xlarge", "ml.m6i.2xlarge", "ml.c6i.large", "ml.c6i.xlarge",
                  "ml.c6i.2xlarge")
ENV_KEY_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]{0,1023}$")
KMS_RE = re.compile(r"^[a-zA-Z0-9:/_-]*$")


@dataclass(frozen=True)
class TransformSpec:
    name: str
    model_name: str
    input_uri: str
    data_type: str                    # S3Prefix | ManifestFile
    content_type: str | None
    compression: str                  # None | Gzip
    split_type: str                   # None | Line | RecordIO
    batch_strategy: str               # MultiRecord | SingleRecord
    max_payload_mb: int
    max_concurrent: int               # worker sandboxes per instance
    timeout_s: int
    max_retries: int
    environment: dict[str, str]
    output_path: str
    accept: str | None
    assemble_with: str                # None | Line
    instance_type: str
    instance_count: int
    data_processing: dict = field(default_factory=dict)
    data_capture: dict | None = None

    @property
    def processing(self) -> Processing | None:
        return Processing.of(self.data_processing, self.content_type, self.accept, self.split_type)

    @property
    def max_payload_bytes(self) -> int:
        return self.max_payload_mb << 20

    @property
    def instance_memory_mb(self) -> int:
        return instance_memory_mb(self.instance_type)

    @property
    def instance_vcpus(self) -> int:
        return instance_vcpus(self.instance_type)

    def settings_line(self) -> str:
        """The first line of a job's log, as SageMaker's batch containers print it."""
        return (f"MaxConcurrentTransforms={self.max_concurrent}, MaxPayloadInMB={self.max_payload_mb}, "
                f"BatchStrategy={self.batch_strategy.upper().replace('RECORD', '_RECORD')}")

    def sandbox_env(self) -> dict[str, str]:
        """What a batch container is told about its job (the names SageMaker's toolkits read)."""
        return {"SAGEMAKER_BATCH": "true", "SAGEMAKER_MAX_PAYLOAD_IN_MB": str(self.max_payload_mb),
                "SAGEMAKER_BATCH_STRATEGY": self.batch_strategy.upper().replace("RECORD", "_RECORD"),
                "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS": str(self.max_concurrent)}


def _v(value, at: str, constraint: str) -> Invalid:
    shown = value if isinstance(value, (str, int, float)) and not isinstance(value, bool) else repr(value)
    return Invalid(f"1 validation error detected: Value '{str(shown)[:200]}' at '{at}' failed to satisfy "
                   f"constraint: {constraint}")


def _obj(req: dict, key: str, at: str, required: bool = False) -> dict:
    value = req.get(key)
    if value is None:
        if required:
            raise Invalid(f"1 validation error detected: Value null at '{at}' failed to satisfy constraint: "
                          "Member must not be null")
        return {}
    if not isinstance(value, dict):
        raise _v(value, at, "Member must be a structure")
    return value


def _enum(doc: dict, key: str, at: str, allowed: tuple, default: str | None = None) -> str | None:
    value = doc.get(key, default)
    if value is None:
        return None
    if value not in allowed:
        raise _v(value, at, f"Member must satisfy enum value set: [{', '.join(allowed)}]")
    return value


def _int(doc: dict, key: str, at: str, lo: int, hi: int | None, default: int | None) -> int | None:
    value = doc.get(key, default)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise _v(value, at, "Member must be an integer")
    if value < lo or (hi is not None and value > hi):
        bound = f"between {lo} and {hi}" if hi is not None else f"greater than or equal to {lo}"
        raise _v(value, at, f"Member must have value {bound}")
    return value


def _text(doc: dict, key: str, at: str, max_len: int, pattern: re.Pattern | None = None) -> str | None:
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _v(value, at, "Member must be a string")
    if len(value) > max_len:
        raise _v(value, at, f"Member must have length less than or equal to {max_len}")
    if pattern is not None and not pattern.match(value):
        raise _v(value, at, f"Member must satisfy regular expression pattern: {pattern.pattern}")
    return value


def _uri(doc: dict, key: str, at: str, local_ok: bool = True) -> str:
    value = _text(doc, key, at, 1024)
    if not value:
        raise Invalid(f"1 validation error detected: Value null at '{at}' failed to satisfy constraint: "
                      "Member must not be null")
    m = URI_RE.match(value)
    if m is None or (m.group(3) == "file" and not local_ok):
        raise _v(value, at, "Member must satisfy regular expression pattern: (https|s3)://([^/]+)/?(.*)"
                 + (" (slimserve also reads file:// paths under a --model-root)" if local_ok else ""))
    return value


def parse(req: dict, default_concurrency: int | None = None) -> TransformSpec:
    """The job ``req`` asks for, or Invalid naming the first member that breaks a rule.
    ``default_concurrency``: MaxConcurrentTransforms when it is not given (None: the instance's
    vCPUs, one worker per CPU as SageMaker's inference toolkit answers /execution-parameters)."""
    name = check_name(req, "TransformJobName")
    model = check_name(req, "ModelName")
    tin = _obj(req, "TransformInput", "transformInput", required=True)
    source = _obj(_obj(tin, "DataSource", "transformInput.dataSource", required=True), "S3DataSource",
                  "transformInput.dataSource.s3DataSource", required=True)
    data_type = source.get("S3DataType")
    if data_type in ("AugmentedManifestFile", "Converse"):
        raise Invalid(f"S3DataType {data_type} is not supported by slimserve's batch transform; use S3Prefix or "
                      "ManifestFile.")
    data_type = _enum(source, "S3DataType", "transformInput.dataSource.s3DataSource.s3DataType", DATA_TYPES)
    if data_type is None:
        raise Invalid("1 validation error detected: Value null at 'transformInput.dataSource.s3DataSource."
                      "s3DataType' failed to satisfy constraint: Member must not be null")
    uri = _uri(source, "S3Uri", "transformInput.dataSource.s3DataSource.s3Uri")
    split = _enum(tin, "SplitType", "transformInput.splitType", SPLIT_TYPES, "None")
    if split == "TFRecord":
        raise Invalid("SplitType TFRecord is not supported by slimserve: use RecordIO or Line, or None to send each "
                      "object whole.")
    tout = _obj(req, "TransformOutput", "transformOutput", required=True)
    res = _obj(req, "TransformResources", "transformResources", required=True)
    itype = res.get("InstanceType")
    if not isinstance(itype, str):
        raise _v(itype, "transformResources.instanceType", "Member must not be null")
    try:
        instance_memory_mb(itype)
    except UnknownInstanceType as exc:
        raise _v(itype, "transformResources.instanceType", f"Member must satisfy enum value set ({exc})") from None
    if itype not in INSTANCE_TYPES:
        raise _v(itype, "transformResources.instanceType", "Member must satisfy enum value set: "
                 f"[{', '.join(INSTANCE_TYPES)}] (the CPU transform instance types slimserve runs)")
    count = _int(res, "InstanceCount", "transformResources.instanceCount", 1, MAX_INSTANCES, None)
    if count is None:
        raise Invalid("1 validation error detected: Value null at 'transformResources.instanceCount' failed to "
                      "satisfy constraint: Member must not be null")
    _text(res, "VolumeKmsKeyId", "transformResources.volumeKmsKeyId", 2048, KMS_RE)
    _text(res, "TransformAmiVersion", "transformResources.transformAmiVersion", 63, AMI_RE)
    experiment = _obj(req, "ExperimentConfig", "experimentConfig")
    for key in ("ExperimentName", "TrialName", "TrialComponentDisplayName", "RunName"):
        _text(experiment, key, f"experimentConfig.{key[0].lower()}{key[1:]}", 120, EXPERIMENT_RE)
    concurrent = _int(req, "MaxConcurrentTransforms", "maxConcurrentTransforms", 0, None, 0)
    payload = _int(req, "MaxPayloadInMB", "maxPayloadInMB", 0, None, DEFAULT_PAYLOAD_MB)
    if payload == 0:
        raise Invalid("MaxPayloadInMB 0 (unbounded, chunked payloads) is not supported by slimserve: give a size "
                      f"of 1 to {MAX_PAYLOAD_MB} MB.")
    if payload > MAX_PAYLOAD_MB:
        raise Invalid(f"MaxPayloadInMB must be at most {MAX_PAYLOAD_MB} MB (it is {payload}).")
    if not concurrent:                    # not given: one per vCPU, within the payload rule
        concurrent = max(1, min(default_concurrency or instance_vcpus(itype), MAX_PAYLOAD_MB // payload))
    if concurrent * payload > MAX_PAYLOAD_MB:
        raise Invalid(f"MaxConcurrentTransforms ({concurrent}) x MaxPayloadInMB ({payload}) must not exceed "
                      f"{MAX_PAYLOAD_MB} MB.")
    strategy = _enum(req, "BatchStrategy", "batchStrategy", STRATEGIES)
    if strategy is not None and split == "None":
        raise Invalid(f"BatchStrategy {strategy} needs a SplitType (Line or RecordIO) to split records by; with "
                      "SplitType None each object is one request.")
    client = _obj(req, "ModelClientConfig", "modelClientConfig")
    timeout = _int(client, "InvocationsTimeoutInSeconds", "modelClientConfig.invocationsTimeoutInSeconds", 1,
                   3600, DEFAULT_TIMEOUT_S)
    retries = _int(client, "InvocationsMaxRetries", "modelClientConfig.invocationsMaxRetries", 0, 3,
                   DEFAULT_RETRIES)
    env = req.get("Environment") or {}
    if not isinstance(env, dict):
        raise _v(env, "environment", "Member must be a map")
    if len(env) > 16:
        raise Invalid("1 validation error detected: Value at 'environment' failed to satisfy constraint: Member "
                      "must have length less than or equal to 16")
    for k, v in env.items():
        if not ENV_KEY_RE.match(k):
            raise _v(k, "environment", f"Map keys must satisfy regular expression pattern: {ENV_KEY_RE.pattern}")
        if not isinstance(v, str) or len(v) > 10240:
            raise _v(v, f"environment.{k}", "Member must be a string of at most 10240 characters")
    dp = _obj(req, "DataProcessing", "dataProcessing")
    for key in ("InputFilter", "OutputFilter"):
        _text(dp, key, f"dataProcessing.{key[0].lower()}{key[1:]}", 63)
    _enum(dp, "JoinSource", "dataProcessing.joinSource", JOIN_SOURCES)
    try:
        Processing.of(dp, tin.get("ContentType"), tout.get("Accept"), split)
    except ValueError as exc:
        raise Invalid(f"DataProcessing: {exc}") from None
    capture = req.get("DataCaptureConfig")
    if capture is not None:
        capture = _obj(req, "DataCaptureConfig", "dataCaptureConfig")
        _uri(capture, "DestinationS3Uri", "dataCaptureConfig.destinationS3Uri", local_ok=False)
        _text(capture, "KmsKeyId", "dataCaptureConfig.kmsKeyId", 2048, KMS_RE)
        if "GenerateInferenceId" in capture and not isinstance(capture["GenerateInferenceId"], bool):
            raise _v(capture["GenerateInferenceId"], "dataCaptureConfig.generateInferenceId",
                     "Member must be a boolean")
    _text(tout, "KmsKeyId", "transformOutput.kmsKeyId", 2048, KMS_RE)
    tags_of(req.get("Tags"))
    return TransformSpec(
        name=name, model_name=model, input_uri=uri, data_type=data_type,
        content_type=_text(tin, "ContentType", "transformInput.contentType", 256),
        compression=_enum(tin, "CompressionType", "transformInput.compressionType", COMPRESSIONS, "None"),
        split_type=split, batch_strategy=strategy or ("SingleRecord" if split == "None" else "MultiRecord"),
        max_payload_mb=payload, max_concurrent=concurrent, timeout_s=timeout, max_retries=retries,
        environment=dict(env), output_path=_uri(tout, "S3OutputPath", "transformOutput.s3OutputPath"),
        accept=_text(tout, "Accept", "transformOutput.accept", 256),
        assemble_with=_enum(tout, "AssembleWith", "transformOutput.assembleWith", ASSEMBLY, "None"),
        instance_type=itype, instance_count=count, data_processing=dict(dp), data_capture=capture)


def check_status(value) -> str | None:
    """ListTransformJobs' StatusEquals."""
    if value is None:
        return None
    if value not in STATUSES:
        raise _v(value, "statusEquals", f"Member must satisfy enum value set: [{', '.join(STATUSES)}]")
    return value
