"""Stable ids: same location, same id, whatever the spelling; different locations differ."""

from __future__ import annotations

from operators.ids import content_id, location_id, normalise_location


def test_location_id_is_stable_and_normalised():
    a = location_id("s3://bucket/a/b.jpg")
    assert a == location_id("s3://bucket/a/b.jpg")
    assert a == location_id("s3a://bucket//a/b.jpg")
    assert a == location_id(" s3://bucket/a/b.jpg ")
    assert len(a) == 32


def test_different_locations_differ():
    ids = {location_id(f"s3://bucket/img-{i}.jpg") for i in range(10_000)}
    assert len(ids) == 10_000


def test_unicode_forms_agree():
    composed = "s3://b/caf\u00e9.jpg"
    decomposed = "s3://b/cafe\u0301.jpg"
    assert location_id(composed) == location_id(decomposed)


def test_local_paths_get_a_scheme():
    assert normalise_location("/data/x.png") == "file:///data/x.png"


def test_content_id():
    assert content_id(b"abc") == content_id(b"abc") != content_id(b"abd")
