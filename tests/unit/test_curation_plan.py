"""Curation in the plan: spec sections, stage order, the barrier's two passes, column types, the mark stage."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.specfile import SpecError, parse_spec
from operators.content_hash import ContentHashBatch
from operators.dedup_mark import DedupMarkBatch
from pipeline.dedup.barrier import DECISION_SCHEMA
from pipeline.plan import build_pipeline
from pipeline.schedule import dataset_version
from pipeline.shards import WRITER_NEEDS
from schemas import columns as C
from schemas.records import record_schema


def spec(tmp_path, **extra) -> dict:
    return {"name": "curate", "source": {"uri": str(tmp_path / "in")}, "sink": {"uri": str(tmp_path / "out")},
            "model": {"family": "internvl", "model_id": str(tmp_path / "m")}, **extra}


def test_dedup_plan_has_two_passes_and_typed_columns(tmp_path):
    s = parse_spec(spec(tmp_path, embedding={"kind": "perceptual", "dtype": "float16"}, dedup={}))
    pipe = build_pipeline(s, "r1")
    assert pipe.describe() == "list -> fetch -> content-hash -> decode -> embed -> dedup -> caption -> postcheck"
    assert pipe.index_pass().describe() == "list -> fetch -> content-hash -> decode -> embed"
    schema = record_schema(pipe.validate(WRITER_NEEDS), pipe.column_types())
    assert schema.field(C.IMAGE_EMBEDDING).type == pa.list_(pa.float16(), 63)
    for name in (C.CONTENT_HASH, C.DUPLICATE_OF, C.DUPLICATE_SIMILARITY):
        assert name in schema.names
    index_schema = record_schema(pipe.index_pass().validate(WRITER_NEEDS), pipe.index_pass().column_types())
    assert C.IMAGE_EMBEDDING in index_schema.names and C.CAPTION not in index_schema.names


def test_preflight_demands_skip_the_barrier(tmp_path):
    from pipeline.cluster_check import demands

    s = parse_spec(spec(tmp_path, embedding={"kind": "perceptual", "cpus_per_actor": 0}, dedup={}))
    pools, task_cpus = demands(build_pipeline(s, "r1"))  # the barrier has no pool nor resources
    assert {p.name for p in pools} == {"embed", "caption"} and task_cpus > 0


def test_exact_only_dedup_needs_no_model(tmp_path):
    pipe = build_pipeline(parse_spec(spec(tmp_path, dedup={"near": False})), "r1")
    assert pipe.describe() == "list -> fetch -> content-hash -> decode -> dedup -> caption -> postcheck"


def test_spec_refuses_curation_without_a_model_for_it(tmp_path):
    with pytest.raises(SpecError, match="dedup.near needs an embedding section"):
        parse_spec(spec(tmp_path, dedup={}))
    with pytest.raises(SpecError, match="alignment needs an embedding section whose kind embeds text"):
        parse_spec(spec(tmp_path, embedding={"kind": "perceptual"}, alignment={}))
    with pytest.raises(SpecError, match="needs embedding.model_id"):
        parse_spec(spec(tmp_path, embedding={"kind": "clip"}))


def test_dataset_version_changes_with_curation_only_when_present(tmp_path):
    base = parse_spec(spec(tmp_path))
    curated = parse_spec(spec(tmp_path, embedding={"kind": "perceptual"}, dedup={"threshold": 0.9}))
    more_actors = parse_spec(spec(tmp_path, embedding={"kind": "perceptual", "num_actors": 4},
                                  dedup={"threshold": 0.9}))
    other = parse_spec(spec(tmp_path, embedding={"kind": "perceptual"}, dedup={"threshold": 0.8}))
    assert "dedup" not in dataset_version(base)[1]
    assert dataset_version(curated)[0] == dataset_version(more_actors)[0] != dataset_version(other)[0]


def test_mark_stage_sets_status_and_evidence(tmp_path):
    path = tmp_path / "decisions.parquet"
    pq.write_table(pa.table([pa.array(["b"]), pa.array(["a"]), pa.array([0.97], pa.float32()),
                             pa.array(["near duplicate of a"])], schema=DECISION_SCHEMA), path)
    rows = pa.table({C.ID: ["a", "b", "c"], C.STATUS: ["ok", "ok", "not_found"], C.ERROR: [None, None, "gone"]})
    out = DedupMarkBatch(str(path), None)(rows).to_pylist()
    assert [r[C.STATUS] for r in out] == ["ok", "duplicate", "not_found"]
    assert out[1][C.DUPLICATE_OF] == "a" and out[1][C.DUPLICATE_SIMILARITY] == pytest.approx(0.97)
    assert out[1][C.ERROR] == "near duplicate of a" and out[0][C.DUPLICATE_OF] is None


def test_content_hash_is_sha256_of_ok_rows():
    import hashlib

    rows = pa.table({C.IMAGE_BYTES: pa.array([b"x", None, b"y"], pa.binary()), C.STATUS: ["ok", "ok", "not_found"]})
    out = ContentHashBatch()(rows).column(C.CONTENT_HASH).to_pylist()
    assert out == [hashlib.sha256(b"x").hexdigest(), None, None]


def test_exporter_leaves_curated_rows_out_and_counts_them(tmp_path):
    from pipeline.export.rows import exportable
    from tests.curation import commit_index

    n = 4
    table = pa.table({C.ID: [f"{k:032x}" for k in range(n)], C.SOURCE: [f"file:///img/{k}.png" for k in range(n)],
                      C.STATUS: ["ok", "duplicate", "low_alignment", "ok"], C.ERROR: [None, "dup", "low", None],
                      C.INSTRUCTION: ["Describe."] * n, C.CAPTION: ["a", None, "b", "c"],
                      C.QA: pa.nulls(n, C.TYPES[C.QA])})
    commit_index(str(tmp_path / "run"), table)
    manifest = (tmp_path / "run" / "manifest.json")
    manifest.write_text(manifest.read_text().replace('"record": "caption"', '"record": "dataset"'))
    rows, summary, _ = exportable(str(tmp_path / "run"), None, "finetune", "llava-json")
    assert [r[C.ID] for r in rows] == [f"{0:032x}", f"{3:032x}"]
    assert summary.skipped == {"status duplicate": 1, "status low_alignment": 1}


def test_missing_embedding_checkpoint_fails_at_build_naming_the_stage(tmp_path):
    from operators.base import PipelineError

    s = parse_spec(spec(tmp_path, embedding={"kind": "clip", "model_id": str(tmp_path / "nope")}, dedup={}))
    with pytest.raises(PipelineError, match=r"^embed: embedding.model_id .* no config.json"):
        build_pipeline(s, "r1")


def test_index_pass_stages_compose_on_real_rows_and_conform(tmp_path):
    """The index pass's UDFs on a local folder (no Ray): hashes, vectors, the committed schema casts them."""
    import pyarrow.compute as pc

    from operators.sources.prefix import PrefixSource
    from schemas.records import conform
    from tests.corpus import gradient, text_as_jpg

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.png").write_bytes(gradient(80, 60))
    (tmp_path / "in" / "b.png").write_bytes(gradient(80, 60))  # same bytes
    (tmp_path / "in" / "c.jpg").write_bytes(text_as_jpg())
    s = parse_spec(spec(tmp_path, embedding={"kind": "perceptual", "dtype": "float16"}, dedup={}))
    pipe = build_pipeline(s, "r1").index_pass()
    rows = PrefixSource(s.source).listing()
    for stage in pipe.stages:
        rows = stage.udf(**stage.args)(rows)
    schema = record_schema(pipe.validate(WRITER_NEEDS), pipe.column_types())
    out = conform(rows, schema)
    assert out.schema.field(C.IMAGE_EMBEDDING).type == pa.list_(pa.float16(), 63)
    by = {r[C.SOURCE].rsplit("/", 1)[1]: r for r in out.to_pylist()}
    assert by["a.png"][C.CONTENT_HASH] == by["b.png"][C.CONTENT_HASH]
    assert by["a.png"][C.IMAGE_EMBEDDING] == by["b.png"][C.IMAGE_EMBEDDING]
    assert by["c.jpg"][C.STATUS] == "not_an_image" and by["c.jpg"][C.IMAGE_EMBEDDING] is None
    assert pc.sum(pc.list_value_length(out.column(C.IMAGE_EMBEDDING))).as_py() == 2 * 63
    pq.write_table(out, tmp_path / "shard.parquet")
    back = pq.read_table(tmp_path / "shard.parquet")
    assert back.schema.field(C.IMAGE_EMBEDDING).type == pa.list_(pa.float16(), 63), "Parquet keeps the fixed size"
    assert back.column(C.IMAGE_EMBEDDING).to_pylist() == out.column(C.IMAGE_EMBEDDING).to_pylist()
