"""Golden fixtures from the model cards' PUBLIC modeling code, run on the project's tiny checkpoints.

    python -m tests.goldens.make_goldens xcomposer2-vl   --public DIR --model DIR [--out FILE]
    python -m tests.goldens.make_goldens xcomposer2-4khd --public DIR --model DIR [--out FILE]
    python -m tests.goldens.make_goldens internvl-chat   --public DIR --model DIR [--out FILE]

``--public``: a folder holding the checkpoint family's published remote code, as downloaded from
the model repository (XComposer2: ``modeling_internlm_xcomposer2.py``, ``modeling_internlm2.py``,
``configuration_internlm_xcomposer2.py``, ``build_mlp.py``, and for 4KHD ``ixc_utils.py`` and the
4KHD ``build_mlp.py``; InternVL: ``modeling_internvl_chat.py``, ``modeling_intern_vit.py``,
``configuration_internvl_chat.py``, ``configuration_intern_vit.py``, ``conversation.py``).
Nothing of it is in this repository. ``--model``: the tiny checkpoint, from
``vlmbatch make-tiny-model FAMILY DIR``. The output (``tests/data/goldens/<family>.json`` by
default) holds only numbers and the texts of the cases: prompt token layout, image-token counts,
greedy tokens, log-probabilities; and the list of shims the run needed (each module's docstring
says why). Run it on CPU in float32; the tests compare vLLM against these files.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("family", choices=["xcomposer2-vl", "xcomposer2-4khd", "internvl-chat"])
    parser.add_argument("--public", required=True, type=Path, help="folder of the family's public modeling code")
    parser.add_argument("--model", required=True, type=Path, help="the tiny checkpoint's folder")
    parser.add_argument("--out", type=Path, help="output file (default tests/data/goldens/<family>.json)")
    args = parser.parse_args(argv)
    if args.family.startswith("xcomposer2"):
        from tests.goldens.xcomposer2 import make

        golden = make(args.public, args.model, args.family.split("-", 1)[1])
    else:
        from tests.goldens.internvl import make

        golden = make(args.public, args.model)
    out = args.out or ROOT / "tests" / "data" / "goldens" / f"{args.family}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(golden, indent=1, ensure_ascii=False) + "\n")
    print(f"{out}: {len(golden['cases'])} cases")


if __name__ == "__main__":
    main()
