"""Fetch from a local prefix: statuses for missing, empty and oversized objects; ids."""

from __future__ import annotations

import pyarrow as pa

from operators.fetch import FetchBatch
from operators.ids import content_id
from operators.sources.prefix import PrefixSource, SourceError
from schemas import columns as C
from schemas.spec import DecodeConfig, SourceConfig
from tests import corpus


def test_listing_and_fetch_statuses(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.jpg").write_bytes(corpus.rgb())
    (tmp_path / "sub" / "b.PNG").write_bytes(corpus.gradient())
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "big.jpg").write_bytes(corpus.rgb(400, 400))
    (tmp_path / "notes.txt").write_text("not listed")
    src = SourceConfig(uri=str(tmp_path))
    listing = PrefixSource(src).listing()
    names = [s.rsplit("/", 1)[1] for s in listing.column(C.SOURCE).to_pylist()]
    assert names == ["a.jpg", "big.jpg", "empty.png", "b.PNG"]
    assert len(set(listing.column(C.ID).to_pylist())) == 4

    (tmp_path / "a.jpg").unlink()  # vanished between listing and fetch
    big = (tmp_path / "big.jpg").stat().st_size
    out = FetchBatch(src, DecodeConfig(max_bytes=big - 1, fetch_retries=1), backoff_s=0.01)(listing)
    assert out.num_rows == 4
    assert out.column(C.STATUS).to_pylist() == ["not_found", "too_large", "empty_file", "ok"]
    assert all(e for e in out.column(C.ERROR).to_pylist()[:3])
    assert out.column(C.IMAGE_BYTES).to_pylist()[3] == corpus.gradient()


def test_content_ids(tmp_path):
    (tmp_path / "a.png").write_bytes(corpus.gradient())
    (tmp_path / "copy.png").write_bytes(corpus.gradient())
    src = SourceConfig(uri=str(tmp_path), id_mode="content")
    out = FetchBatch(src, DecodeConfig())(PrefixSource(src).listing())
    assert set(out.column(C.ID).to_pylist()) == {content_id(corpus.gradient())}


def test_missing_or_empty_source_is_a_clear_error(tmp_path):
    import pytest

    with pytest.raises(SourceError, match="lists no images"):
        PrefixSource(SourceConfig(uri=str(tmp_path))).listing()
    with pytest.raises(SourceError, match="does not exist|lists no images"):
        PrefixSource(SourceConfig(uri=str(tmp_path / "nope"))).listing()


def test_failed_rows_are_not_fetched(tmp_path):
    table = pa.table({C.ID: ["x"], C.SOURCE: [str(tmp_path / "nope.jpg")], C.NUM_BYTES: [1],
                      C.STATUS: ["decode_error"], C.ERROR: ["earlier"]})
    out = FetchBatch(SourceConfig(uri=str(tmp_path)), DecodeConfig())(table)
    assert out.column(C.STATUS).to_pylist() == ["decode_error"]
    assert out.column(C.ERROR).to_pylist() == ["earlier"]


def test_error_text_never_carries_a_secret(monkeypatch):
    from operators.rows import error_text

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-value-123456")
    text = error_text(RuntimeError("signature mismatch for key s3cr3t-value-123456 in request"))
    assert "s3cr3t-value-123456" not in text and "***" in text
