"""Pre-flight checks that need no store and no Ray: models, resources, error kinds, signals, the run id."""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

from jobs.caption import run_spec_file
from operators.storage_errors import describe, is_transient
from pipeline.cluster_check import Pool, ResourceError, check, demands
from pipeline.interrupt import Interrupted, interruptible, ray_starting
from pipeline.model_check import ModelError, check_model, looks_like_path
from pipeline.plan import build_pipeline
from pipeline.shards import retry
from schemas.spec import JobSpec, ModelConfig


def model(model_id: str, family: str = "internvl") -> ModelConfig:
    return ModelConfig(family=family, model_id=model_id)


@pytest.fixture
def checkpoint(tmp_path):
    d = tmp_path / "ckpt"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"architectures": ["InternVLForConditionalGeneration"]}))
    return d


def test_a_good_checkpoint_passes_and_each_model_mistake_is_named(checkpoint, tmp_path, monkeypatch):
    check_model(model(str(checkpoint)))
    cases = {
        str(tmp_path / "nowhere"): "model directory {} does not exist",
        "./relative/missing": "model directory {} does not exist",
        str(checkpoint / "config.json"): "{} is a file, not a model directory",
    }
    for model_id, said in cases.items():
        with pytest.raises(ModelError, match="^model.model_id: " + said.format(model_id).replace(".", r"\.")):
            check_model(model(model_id))
    with pytest.raises(ModelError, match="is a checkpoint of InternVLForConditionalGeneration, which family 'llava' "
                                         "does not serve .*; set model.family to 'internvl'"):
        check_model(model(str(checkpoint), family="llava"))
    (checkpoint / "config.json").write_text('{"architectures": ["InternVLFor')  # cut mid-copy
    with pytest.raises(ModelError, match=r"config.json is not valid JSON \(.* at line 1 column \d+\)"):
        check_model(model(str(checkpoint)))
    (checkpoint / "config.json").unlink()
    with pytest.raises(ModelError, match="has no config.json"):
        check_model(model(str(checkpoint)))
    # A hub id, with the hub out of reach: said as a hub id that cannot be found, in one line, at once.
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(ModelError, match="'org/no-such-model': no local directory of that name and not in the "
                                         "Hugging Face cache .*HF_HUB_OFFLINE is set"):
        check_model(model("org/no-such-model"))


def test_paths_and_hub_ids_are_told_apart():
    assert all(looks_like_path(p) for p in ("/abs/dir", "./d", "../d", "~/m", "a/b/c", "with space"))
    assert not any(looks_like_path(p) for p in ("OpenGVLab/InternVL3-1B-hf", "gpt2", "llava-hf/llava-1.5-7b-hf"))


def test_pools_must_fit_a_node_and_the_cluster():
    caption = Pool("caption", 1, 1.0, 1.0)
    with pytest.raises(ResourceError, match="caption pool asks for 1 CPU and 1 GPU per actor; no node .* 0 GPU.*"
                                            "no autoscaler can add one"):
        check([caption], 1.0, [{"CPU": 2, "GPU": 0}])
    check([caption], 1.0, [{"CPU": 2, "GPU": 0}], node_types=[{"CPU": 8, "GPU": 1}], autoscaler_max={"GPU": 4,
                                                                                                       "CPU": 32})
    with pytest.raises(ResourceError, match=r"need 3 GPU \(caption 3 x 1\); .* has 2, its autoscaler at most 2"):
        check([Pool("caption", 3, 1.0, 1.0)], 1.0, [{"CPU": 16, "GPU": 2}], [{"CPU": 16, "GPU": 2}], {"GPU": 2})
    with pytest.raises(ResourceError, match=r"need 3 CPU \(caption 1 x 2 \+ 1 CPU task 1\); .* has 2, and no"):
        check([Pool("caption", 1, 2.0, 0.0)], 1.0, [{"CPU": 2}])
    check([Pool("caption", 2, 1.0, 0.5)], 1.0, [{"CPU": 4, "GPU": 1}])  # two half-GPU engines share one


def test_the_demand_comes_from_the_pipelines_stages():
    spec = JobSpec.model_validate({"name": "t", "source": {"uri": "/x/"}, "model": {"family": "internvl",
                                   "model_id": "/m"}, "sink": {"uri": "/out/"},
                                   "resources": {"num_engines": 3, "gpus_per_engine": 0.5, "cpus_per_engine": 2}})
    pools, task_cpus = demands(build_pipeline(spec, "r"))
    assert Pool("caption", 3, 2.0, 0.5) in pools and task_cpus == 1.0


def test_configuration_errors_are_not_retried_transient_ones_are():
    denied = PermissionError("Access Denied")
    denied.__cause__ = ClientError({"Error": {"Code": "AccessDenied", "Message": "Access Denied"}}, "PutObject")
    bucket = FileNotFoundError("gone")
    bucket.__cause__ = ClientError({"Error": {"Code": "NoSuchBucket"}}, "ListObjectsV2")
    slow = OSError(16, "busy")
    slow.__cause__ = ClientError({"Error": {"Code": "SlowDown"}}, "PutObject")
    unreachable = EndpointConnectionError(endpoint_url="http://127.0.0.1:1")
    for exc in (denied, bucket, NoCredentialsError(), ValueError("bad codec"), TypeError("bug")):
        assert not is_transient(exc), exc
    for exc in (slow, unreachable, ConnectionResetError(), TimeoutError()):
        assert is_transient(exc), exc
    assert describe(denied) == "AccessDenied: this identity is not allowed to do that"
    assert describe(bucket) == "NoSuchBucket: the bucket does not exist"
    assert describe(NoCredentialsError()).startswith("no credentials found")

    calls = []

    def fail(exc):
        calls.append(1)
        raise exc

    with pytest.raises(PermissionError):
        retry(lambda: fail(denied), "put", base_s=0.001)
    assert len(calls) == 1
    with pytest.raises(OSError):
        retry(lambda: fail(slow), "put", attempts=3, base_s=0.001)
    assert len(calls) == 4


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_sigint_and_sigterm_raise_one_interruption(sig):
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted) as info, interruptible():
        os.kill(os.getpid(), sig)
        time.sleep(5)  # the handler raises here, at once
    assert info.value.signum == sig and info.value.exit_code == 128 + sig
    assert isinstance(info.value, KeyboardInterrupt)
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_sigterm_while_ray_starts_is_an_interruption_and_ours_are_the_handlers_after():
    with interruptible():
        with pytest.raises(Interrupted) as info, ray_starting():
            signal.signal(signal.SIGTERM, lambda *a: sys.exit(1))  # what ray.init installs for a local node
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        assert info.value.exit_code == 143
        with ray_starting():
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL  # put back after a clean start


def test_a_signal_during_a_finalizer_is_raised_at_the_next_check(capsys):
    from pipeline.interrupt import check

    class Finalized:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(100_000):  # the handler runs here, inside __del__
                pass

    with pytest.raises(Interrupted) as info, interruptible():
        obj = Finalized()
        del obj  # raising here would be printed and dropped
        reached = True
        check()
    assert reached and info.value.exit_code == 130
    assert "Exception ignored" not in capsys.readouterr().err


def test_an_empty_run_id_is_an_error(capsys):
    assert run_spec_file("does-not-matter.yaml", "") == 2
    assert "--run-id is empty" in capsys.readouterr().err
