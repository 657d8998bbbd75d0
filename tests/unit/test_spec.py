"""Job specs: typed at the edge, secrets refused, every field described."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.specfile import SpecError, expand, load_spec, parse_spec
from schemas.reference import spec_reference
from schemas.spec import JobSpec

ROOT = Path(__file__).resolve().parents[2]
MINIMAL = {
    "name": "t",
    "source": {"uri": "s3://b/p/"},
    "model": {"family": "internvl", "model_id": "/m"},
    "sink": {"uri": "s3://b/out/"},
}


def test_every_shipped_spec_loads(monkeypatch):
    monkeypatch.setenv("VLMBATCH_HOME", "/tmp/vh")
    specs = sorted((ROOT / "jobs" / "specs").glob("*.yaml"))
    assert specs
    for path in specs:
        spec = load_spec(path)
        assert isinstance(spec, JobSpec)


def test_demo_spec_expands_environment(monkeypatch):
    monkeypatch.setenv("VLMBATCH_HOME", "/tmp/vh")
    monkeypatch.setenv("VLMBATCH_S3_ENDPOINT", "http://127.0.0.1:9999")
    spec = load_spec(ROOT / "jobs/specs/demo.yaml", {"run.run_id": "r-1"})
    assert spec.model.model_id == "/tmp/vh/models/tiny-internvl"
    assert spec.source.storage.endpoint_url == "http://127.0.0.1:9999"
    assert spec.run.run_id == "r-1"


def test_unset_variable_without_default_is_an_error():
    with pytest.raises(SpecError, match="NOPE_NOT_SET"):
        expand("a: ${NOPE_NOT_SET}", env={})
    assert expand("a: ${NOPE_NOT_SET:-x}", env={}) == "a: x"


def test_credentials_in_a_spec_are_refused():
    bad = {**MINIMAL, "source": {"uri": "s3://b/", "aws_secret_access_key": "shh"}}
    with pytest.raises(SpecError) as info:
        parse_spec(bad)
    assert "credentials" in str(info.value)
    assert "shh" not in str(info.value)


def test_unknown_key_names_the_field():
    with pytest.raises(SpecError, match="sampling.max_tokenz"):
        parse_spec({**MINIMAL, "sampling": {"max_tokenz": 3}})


def test_trust_remote_code_needs_a_pinned_revision():
    with pytest.raises(SpecError, match="pinned revision"):
        parse_spec({**MINIMAL, "model": {"family": "internvl", "model_id": "x", "trust_remote_code": True}})
    ok = parse_spec({**MINIMAL, "model": {"family": "internvl", "model_id": "x", "trust_remote_code": True,
                                          "revision": "abc123"}})
    assert ok.model.trust_remote_code


def test_digest_ignores_run_options_but_not_the_model():
    a = parse_spec(MINIMAL)
    b = parse_spec({**MINIMAL, "run": {"run_id": "other"}})
    c = parse_spec({**MINIMAL, "model": {"family": "llava", "model_id": "/m"}})
    assert a.digest() == b.digest() != c.digest()


def test_every_field_has_a_description():
    ref = spec_reference()
    for line in ref.splitlines()[2:]:
        assert not line.endswith("|  |"), f"field without description: {line}"
    assert "`sampling.max_tokens`" in ref and "`resources.batches_in_flight`" in ref


def test_bad_yaml_and_missing_file(tmp_path):
    with pytest.raises(SpecError, match="cannot read"):
        load_spec(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(bad)


def test_remote_code_is_off_unless_the_spec_turns_it_on():
    from operators.vlm.registry import get_family
    from operators.vlm.vllm_engine import engine_args

    spec = parse_spec(MINIMAL)
    assert engine_args(spec.model, get_family("internvl"))["trust_remote_code"] is False


def test_batches_in_flight_default_is_twice_the_engine_slots():
    from schemas.spec import ResourcesConfig

    assert ResourcesConfig().in_flight(64) == 8  # 2 * 64 / 16
    assert ResourcesConfig(batch_size=64).in_flight(256) == 8
    assert ResourcesConfig(batch_size=100).in_flight(64) == 2  # ceil(128 / 100), never fewer than 2
    assert ResourcesConfig(batch_size=16).in_flight(1) == 2
    assert ResourcesConfig(batches_in_flight=3).in_flight(256) == 3  # an explicit value wins


def test_object_store_budget_reaches_ray_data_and_is_reset_by_the_next_run():
    import ray.data

    from pipeline.runner import configure_data_context
    from schemas.spec import ResourcesConfig, RunConfig

    options = ray.data.DataContext.get_current().execution_options
    before = options.resource_limits
    options.resource_limits = before.copy(cpu=3)  # a limit the caller set itself
    try:
        configure_data_context(RunConfig(), ResourcesConfig(object_store_memory=256 * 2**20))
        assert options.resource_limits.object_store_memory == 256 * 2**20
        assert options.resource_limits.cpu == 3
        # A later job in the same process without a budget gets Ray Data's default back, not the old cap.
        configure_data_context(RunConfig(), ResourcesConfig())
        assert options.resource_limits.object_store_memory == float("inf")
        assert options.resource_limits.cpu == 3
    finally:
        options.resource_limits = before
    with pytest.raises(ValueError, match="object_store_memory"):
        ResourcesConfig(object_store_memory=1024)  # below 64 MiB: refused, not a stalled pipeline


def test_readme_spec_table_is_the_generated_reference():
    """The README's table is `vlmbatch spec-reference` output: a new or changed field that is not regenerated fails."""
    from schemas.reference import readme_with_reference

    text = (ROOT / "README.md").read_text()
    assert readme_with_reference(text) == text, "README drifted: run `vlmbatch spec-reference --readme README.md`"
    for section in ("schedule", "postcheck", "qa", "qa.resources"):
        assert f"| `{section}` | section |" in text


@pytest.mark.parametrize("section, value, said", [
    ("model", {"family": "internvl", "model_id": "/m", "engine": {"dtype": "float33"}},
     "model.engine.dtype: Input should be 'auto', 'bfloat16', 'float16' or 'float32'"),
    ("sink", {"uri": "s3://b/out/", "compression": "zip"}, "sink.compression: Input should be 'zstd'"),
    ("sampling", {"max_tokens": 10, "min_tokens": 20}, "min_tokens (20) is more than max_tokens (10)"),
    ("source", {"uri": "s3://b/p/", "storage": {"endpoint_url": "127.0.0.1:8333"}},
     "endpoint_url '127.0.0.1:8333' needs a scheme: http://127.0.0.1:8333"),
    ("model", {"family": "internvl", "model_id": "/m", "engine": {"max_model_len": 64}},
     "sampling.max_tokens (256) leaves no room for the prompt in max_model_len (64)"),
])
def test_enumerations_and_bounds_fail_at_load_time(section, value, said):
    with pytest.raises(SpecError) as info:
        parse_spec({**MINIMAL, section: value})
    assert said in str(info.value)


def test_qa_sampling_is_bounded_by_the_qa_model():
    qa = {"question_set": ["What?"], "sampling": {"max_tokens": 512},
          "model": {"family": "internvl", "model_id": "/q", "engine": {"max_model_len": 512}}}
    with pytest.raises(SpecError, match=r"qa.sampling.max_tokens \(512\) leaves no room"):
        parse_spec({**MINIMAL, "qa": qa})


def test_an_actor_lost_while_starting_is_replaced_not_fatal():
    """Ray Data fails a run on the first actor that dies while starting (its default budget 0): a spot node lost
    while an engine loads its model would end the run. The run's budget reaches Ray Data's context."""
    import ray.data

    from pipeline.runner import configure_data_context
    from schemas.spec import RunConfig

    ctx = ray.data.DataContext.get_current()
    before = ctx.max_consecutive_actor_init_deaths
    try:
        configure_data_context(RunConfig())
        assert ctx.max_consecutive_actor_init_deaths == RunConfig().actor_start_losses == 3
        configure_data_context(RunConfig(actor_start_losses=0))
        assert ctx.max_consecutive_actor_init_deaths == 0
    finally:
        ctx.max_consecutive_actor_init_deaths = before
