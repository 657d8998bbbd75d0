"""Golden fixtures for InternLM-XComposer v1 (XComposer-VL, XComposer-7B, Share-Captioner, the 4-bit layout).

    PYTHONPATH=$PYTHONPATH:<dir with timm and einops> python -m tests.golden_xcomposer.make_golden \\
        --public DIR [--public-4bit DIR] [--source TEXT] --model DIR [--share-captioner DIR] [--model-4bit DIR]

The oracle is the released v1 remote code (``tests/golden_xcomposer/public.py``): ``--public`` names a folder
holding a v1 model repository's ``modeling_InternLM_XComposer.py``, ``modeling_vit.py``,
``modeling_perceive_sampler.py``, ``modeling_InternLM.py``, ``modeling_utils.py``,
``configuration_InternLM_XComposer.py`` and its ``config.json`` (e.g. InternLM/InternLM-XComposer's
``huggingface/internlm-xcomposer-vl/``); ``--public-4bit`` the 4-bit release's folder (with its
``quantize_config.json``; default: ``--public``). The tiny checkpoints (``vlmbatch make-tiny-model
xcomposer-vl | share-captioner | xcomposer-7b-4bit``) must have the released layout fields, checked first.
Share-Captioner has no code of its own in that repository: it is the XComposer-7B architecture, run by the
same files with ShareGPT4V's captioning segments. ``--source`` (free text: where the folder came from, e.g. a
repository and revision) and the files' sha256 are recorded in the output's ``oracle`` block with the
script's patches. None of the public code is in this repository; the output holds only numbers and case
texts: token ids, image-token counts, greedy tokens, log-probabilities (``tests/data/goldens/xcomposer-v1.json``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAX_NEW = 6
TOP = 8


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--public", required=True, type=Path, help="folder of the released v1 remote code")
    parser.add_argument("--public-4bit", type=Path, help="folder of the released 4-bit remote code (default --public)")
    parser.add_argument("--source", default="", help="where the public folders came from (recorded verbatim)")
    parser.add_argument("--model", required=True, type=Path, help="tiny xcomposer-vl checkpoint (make-tiny-model)")
    parser.add_argument("--share-captioner", type=Path, help="tiny share-captioner checkpoint")
    parser.add_argument("--model-4bit", type=Path, help="tiny xcomposer-7b-4bit checkpoint")
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "data" / "goldens" / "xcomposer-v1.json")
    args = parser.parse_args(argv)
    from tests.golden_xcomposer.oracle import cases
    from tests.golden_xcomposer.public import PATCHES, PublicOracle, fingerprint

    public_4bit = args.public_4bit or args.public
    golden = {"max_new_tokens": MAX_NEW, "top": TOP,
              "oracle": {"code": "released InternLM-XComposer v1 remote code (InternLMXComposerForCausalLM)",
                         "source": args.source, "files": fingerprint(args.public),
                         "files_4bit": fingerprint(public_4bit), "patches": PATCHES},
              "variants": {}}
    for variant, path, folder in (("xcomposer-vl", args.model, args.public),
                                  ("share-captioner", args.share_captioner, args.public),
                                  ("xcomposer-7b-4bit", args.model_4bit, public_4bit)):
        if path is None:
            continue
        oracle = PublicOracle(folder, path)
        golden["variants"][variant] = [oracle.run(case, MAX_NEW, TOP) for case in cases(variant)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(golden, indent=1, ensure_ascii=False) + "\n")
    print(f"{args.out}: " + ", ".join(f"{k} {len(v)} cases" for k, v in golden["variants"].items()))


if __name__ == "__main__":
    main()
