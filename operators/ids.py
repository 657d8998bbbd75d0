"""Stable row ids.

An id is derived from the image's normalised location (``s3://bucket/key``), or from its
bytes where a spec asks for content ids, so a rerun, a resumed run and a scheduled run all
agree on what is done. 128 bits keeps collisions out of reach at billions of images.
"""

from __future__ import annotations

import hashlib
import unicodedata

_ID_HEX = 32


def normalise_location(uri: str) -> str:
    """Canonical form of an image location: NFC unicode, no duplicate or trailing slashes."""
    uri = unicodedata.normalize("NFC", uri.strip())
    scheme, sep, rest = uri.partition("://")
    if not sep:
        scheme, rest = "file", uri
    if scheme == "s3a":
        scheme = "s3"
    while "//" in rest:
        rest = rest.replace("//", "/")
    return f"{scheme}://{rest.rstrip('/')}"


def location_id(uri: str) -> str:
    """Id of an image from where it lives."""
    return hashlib.sha256(normalise_location(uri).encode()).hexdigest()[:_ID_HEX]


def content_id(data: bytes) -> str:
    """Id of an image from its bytes."""
    return hashlib.sha256(data).hexdigest()[:_ID_HEX]
