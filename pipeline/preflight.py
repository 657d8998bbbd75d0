"""Pre-flight on the driver: every mistake a run can know of before Ray or an engine starts, in one line.

:class:`pipeline.runner.Run` calls :func:`check_stores` first and, holding its lease and knowing the
run is not committed, :func:`check_engines`; each stops at the first problem with a
:class:`PreflightError` whose ``exit_code`` the command returns:

============  =====  =====================================================================
check         exit   what
============  =====  =====================================================================
storage       5      the stores answer and accept the credentials: the source lists (its
                     bucket exists, this identity may list it), the sink takes a probe
                     object that is then removed
model         6      each model's directory or hub id resolves to a readable config.json
                     of the family's architecture (:mod:`pipeline.model_check`)
resources     7      the cluster (or its autoscaler) has room for every actor pool
                     (:mod:`pipeline.cluster_check`); a local instance is checked before it
                     starts, a cluster once joined
============  =====  =====================================================================

Then the source is listed, still before Ray starts.

Store probes use a client of their own that neither retries nor waits long: a wrong endpoint,
rejected credentials, a missing bucket or a denied action answer the same every time, so the
first answer is the one line to print (:mod:`operators.storage_errors`). During the run the usual
retries of transient errors apply.
"""

from __future__ import annotations

import os
import uuid

from operators.storage import join_uri, split_uri, storage_options
from operators.storage_errors import describe, error_code, is_unreachable, no_credentials
from schemas.spec import JobSpec, StorageConfig

STORAGE, MODEL, RESOURCES = 5, 6, 7
_REJECTED = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken", "TokenRefreshRequired"}


class PreflightError(RuntimeError):
    """A check before the run starts failed; the message is one line, ``exit_code`` says which check."""

    exit_code = 1

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class StoreError(PreflightError):
    """The source cannot be listed or the sink cannot be written (exit 5)."""

    exit_code = STORAGE


def endpoint_of(storage: StorageConfig) -> str:
    """The endpoint a store client uses, said the way the user set it."""
    if storage.endpoint_url:
        return storage.endpoint_url
    env = os.environ.get("AWS_ENDPOINT_URL")
    return f"{env} (AWS_ENDPOINT_URL)" if env else "AWS S3 (no endpoint_url, AWS_ENDPOINT_URL unset)"


def probe_filesystem(uri: str, storage: StorageConfig):
    """A fresh filesystem for ``uri`` that answers at once: no retries, short timeouts, nothing cached."""
    import fsspec

    protocol, path = split_uri(uri)
    options = storage_options(protocol, storage)
    if protocol in ("s3", "s3a"):
        env = os.environ.get("AWS_ENDPOINT_URL")
        if not storage.endpoint_url and env and not env.startswith(("http://", "https://")):
            raise StoreError(f"AWS_ENDPOINT_URL {env!r} needs a scheme: http://{env} or https://{env}")
        options["config_kwargs"] = {"retries": {"max_attempts": 1, "mode": "standard"}, "connect_timeout": 5,
                                    "read_timeout": 20}
        options["skip_instance_cache"] = True
    fs = fsspec.filesystem(protocol, **options)
    if hasattr(fs, "retries"):
        fs.retries = 1  # s3fs's own retry loop, on top of botocore's
    return fs, path


def store_problem(role: str, uri: str, storage: StorageConfig, exc: BaseException, action: str) -> StoreError:
    """The one line for a store that refused ``action`` on ``uri``."""
    code = error_code(exc)
    endpoint = endpoint_of(storage)
    if is_unreachable(exc):
        return StoreError(f"{role} {uri}: cannot reach the object store at {endpoint}: {describe(exc)}")
    if code in _REJECTED:
        return StoreError(f"{role} {uri}: the object store at {endpoint} rejected the credentials ({describe(exc)})")
    if no_credentials(exc):
        return StoreError(f"{role} {uri}: {describe(exc)}")
    if code == "NoSuchBucket":
        bucket = split_uri(uri)[1].split("/", 1)[0]
        return StoreError(f"{role} {uri}: bucket {bucket!r} does not exist at {endpoint}")
    if code in ("AccessDenied", "AllAccessDisabled", "403") or isinstance(exc, PermissionError):
        return StoreError(f"{role} {uri}: access denied: this identity may not {action} there ({describe(exc)})")
    return StoreError(f"{role} {uri}: cannot {action} there: {describe(exc)}")


def check_source(uri: str, storage: StorageConfig) -> None:
    """The source location exists and this identity may list it."""
    protocol, path = split_uri(uri)
    try:
        fs, _ = probe_filesystem(uri, storage)
        if protocol in ("s3", "s3a"):
            bucket, _, key = path.partition("/")
            found = fs.call_s3("list_objects_v2", Bucket=bucket, Prefix=key, MaxKeys=1).get("KeyCount", 0)
        else:
            found = fs.exists(path)
    except StoreError:
        raise
    except Exception as exc:  # noqa: BLE001 - every answer becomes one line
        raise store_problem("source", uri, storage, exc, "list") from None
    if not found:
        kind = "directory or file" if protocol == "file" else "prefix (no object under it)"
        raise StoreError(f"source {uri} does not exist: no such {kind}")


def check_sink(run_root: str, storage: StorageConfig) -> None:
    """This identity may write under the run root: a probe object is written, then removed."""
    protocol, path = split_uri(run_root)
    probe = f"{path}/.probe-{uuid.uuid4().hex[:12]}"
    action = "write objects"
    try:
        fs, _ = probe_filesystem(run_root, storage)
        if protocol in ("s3", "s3a"):
            bucket, _, key = probe.partition("/")
            fs.call_s3("put_object", Bucket=bucket, Key=key, Body=b"")
            action = "delete objects"  # the run removes its lease when it ends: writing alone is not enough
            fs.call_s3("delete_object", Bucket=bucket, Key=key)
        else:
            fs.makedirs(path, exist_ok=True)
            fs.pipe_file(probe, b"")
            fs.rm_file(probe)
    except StoreError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise store_problem("sink", run_root, storage, exc, action) from None


def check_stores(spec: JobSpec, run_id: str) -> None:
    """The source lists and the run root takes writes (exit 5 otherwise).

    Raises:
        StoreError: the first store problem, in one line.
    """
    check_source(spec.source.uri, spec.source.storage)
    check_sink(join_uri(spec.sink.uri, run_id), spec.sink.storage)


def check_engines(spec: JobSpec, pipeline) -> None:
    """The models the pipeline's engine stages load resolve (exit 6); a local instance has room for the pools (exit 7).

    A joined cluster's resources are checked once it is joined (:func:`pipeline.cluster_check.check_joined`).
    The source is not listed here: :func:`check_stores` showed it can be, and the run lists it in
    CPU tasks (never whole on the driver); a listing problem found there is still one line.
    """
    from pipeline.cluster_check import check_local
    from pipeline.model_check import check_model

    for model, where in pipeline_models(pipeline):
        check_model(model, where)
    check_local(spec.run, pipeline)


def pipeline_models(pipeline) -> list[tuple[object, str]]:
    """``(model config, spec field)`` of every model the pipeline's engine stages build, each once.

    An engine builder without a ``model`` (a test's fake engine) loads no checkpoint: nothing to check.
    """
    from schemas.spec import ModelConfig

    out: list[tuple[object, str]] = []
    for stage in pipeline.stages:
        model = getattr((getattr(stage, "args", None) or {}).get("engine"), "model", None)
        if isinstance(model, ModelConfig) and all(model != m for m, _ in out):
            out.append((model, "qa.model" if stage.name == "qa" else "model"))
    return out
