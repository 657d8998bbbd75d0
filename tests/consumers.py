"""What the real consumers of vlmbatch's exports check, reimplemented as plain functions (nothing vendored).

LLaVA's and ShareGPT4V's training code (``llava/train/train.py``, ``share4v/train/train.py``) read a
JSON list of ``{id, image, conversations}`` through the same ``LazySupervisedDataset``. Per record it:

- opens ``os.path.join(image_folder, record["image"])`` with PIL and calls ``convert("RGB")``;
- moves ``<image>`` to the head of the turn holding it (``preprocess_multimodal``);
- ``--version plain`` (pretraining, ShareGPT4V-PT and LLaVA's projector stage), ``preprocess_plain``:
  ``assert len(source) == 2`` and ``assert DEFAULT_IMAGE_TOKEN in source[0]["value"]``;
- ``--version v1`` (fine-tuning), ``preprocess_v1``: roles are looked up in ``{"human", "gpt"}``
  (any other ``from`` is a KeyError), a first turn that is not human is dropped, then
  ``assert role == conv.roles[j % 2]`` for every turn; targets are masked by splitting the prompt
  on the separator ``</s>``, so a turn holding that text makes a tokenization mismatch and the
  sample's labels are all ignored (a silent loss).

The model (``prepare_inputs_labels_for_multimodal``) takes one image feature per ``<image>`` token,
so a one-image record must hold exactly one. The checks below say *why* a record would be rejected,
so a test can assert the reason as well as the count.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

IMAGE_TOKEN = "<image>"
V1_SEPARATOR = "</s>"
ROLES = ("human", "gpt")
#: The oldest ``datasets`` the hf-parquet export supports, installed by infra/local/install.sh into its own
#: folder (requirements/datasets-oldest.txt), never into the environment itself.
OLDEST_DATASETS = "2.14.7"


def llava_problem(record: dict, image_folder: str | None, version: str, storage=None) -> str | None:
    """Why ``LazySupervisedDataset`` (``version`` ``plain`` or ``v1``) would reject ``record``; None if it loads."""
    turns = record.get("conversations")
    if not isinstance(turns, list) or not turns or not all(isinstance(t, dict) for t in turns):
        return "no conversation"
    if not all(isinstance(t.get("from"), str) and isinstance(t.get("value"), str) and t["value"] for t in turns):
        return "a turn without from/value"
    if sum(t["value"].count(IMAGE_TOKEN) for t in turns) != 1:
        return "not exactly one <image>"
    if not turns[0]["value"].startswith(IMAGE_TOKEN + "\n"):
        return "<image> not at the head of the first human turn"
    if version == "plain":
        if len(turns) != 2:
            return "pretraining needs two turns (assert len(source) == 2)"
    else:
        if any(t["from"] not in ROLES for t in turns):
            return "unknown role (KeyError)"
        if turns[0]["from"] != "human":
            return "first turn not human"
        if any(t["from"] != ROLES[j % 2] for j, t in enumerate(turns)):
            return "roles do not alternate (assert role == conv.roles[j % 2])"
        if any(V1_SEPARATOR in t["value"] for t in turns):
            return "a turn holds </s> (tokenization mismatch, labels ignored)"
    image = record.get("image")
    if not isinstance(image, str) or not image:
        return "no image"
    return _image_problem(image if image_folder is None else _join(image_folder, image), storage)


def _join(folder: str, name: str) -> str:
    return f"{folder.rstrip('/')}/{name}" if "://" in folder else os.path.join(folder, name)


def _image_problem(path: str, storage) -> str | None:
    from PIL import Image

    from operators.storage import filesystem

    fs, p = filesystem(path, storage)
    try:
        with fs.open(p, "rb") as f, Image.open(f) as im:
            im.convert("RGB")
    except FileNotFoundError:
        return "image file missing"
    except Exception as exc:  # noqa: BLE001 - whatever PIL raises, the loader would raise too
        return f"image does not open ({type(exc).__name__})"
    return None


def load_llava(records: list[dict], image_folder: str | None, version: str, storage=None) -> tuple[int, Counter]:
    """``(records loaded, why the others were rejected)`` for one loader over an export's records."""
    rejected: Counter = Counter()
    loaded = 0
    for rec in records:
        problem = llava_problem(rec, image_folder, version, storage)
        if problem is None:
            loaded += 1
        else:
            rejected[problem] += 1
    return loaded, rejected


def read_json_export(path: str) -> list[dict]:
    """The records of a JSON list or JSON lines export."""
    text = Path(path).read_text()
    if path.endswith(".jsonl"):
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    return json.loads(text)


_HF_LOAD = """
import json, sys
import datasets
ds = datasets.load_dataset("parquet", data_files=sys.argv[1], split="train", cache_dir=sys.argv[2])
out = {"version": datasets.__version__, "rows": ds.num_rows, "image_feature": type(ds.features["image"]).__name__,
       "conversations_feature": repr(ds.features["conversations"]), "items": []}
for item in ds:
    out["items"].append({"id": item["id"], "size": list(item["image"].size), "caption": item["caption"],
                         "conversations": item["conversations"]})
print(json.dumps(out))
"""


def oldest_datasets_dir() -> Path:
    """Where infra/local/install.sh put the oldest supported ``datasets`` (its own folder beside the venv's)."""
    return Path(sys.prefix) / "compat" / f"datasets-{OLDEST_DATASETS}"


def hf_load(data_dir: str, cache_dir: str, pythonpath: str | None = None, timeout: float = 300) -> dict:
    """``datasets.load_dataset("parquet", ...)`` of an hf-parquet export, in a subprocess.

    ``pythonpath`` first on the child's path selects another ``datasets`` (the oldest supported one);
    None uses the environment's. Returns the version, row count, feature types and every item.

    Raises:
        RuntimeError: the load failed (its stderr tail is the message).
    """
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath + os.pathsep + env.get("PYTHONPATH", "")
    env["HF_DATASETS_OFFLINE"] = env["HF_HUB_OFFLINE"] = "1"
    proc = subprocess.run([sys.executable, "-c", _HF_LOAD, f"{data_dir.rstrip('/')}/data/*.parquet", cache_dir],
                          env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "load failed")
    return json.loads(proc.stdout.strip().splitlines()[-1])
