"""Golden fixtures for InternLM-XComposer v1 (XComposer-VL, XComposer-7B, Share-Captioner, the 4-bit layout).

    python -m tests.golden_xcomposer.make_golden --model DIR [--model-4bit DIR] [--public DIR] [--out FILE]

The oracle is public code, none of it vlmbatch's: Hugging Face transformers' BLIP-2 vision tower
(``Blip2VisionModel``: EVA ViT-g, the tower XComposer v1 and BLIP-2 share), BLIP-2 Q-Former
(``Blip2QFormerModel``: the perceive sampler's BERT with learned queries and cross-attention every second
layer) and ``LlamaForCausalLM`` with ``attention_bias`` (InternLM-7B: Llama with q/k/v/o biases), driven
by transformers' own ``generate``, wired as the published ``modeling_InternLM_XComposer.py`` wires them
(``encode_img``: ``ln_vision`` over the tower's last hidden states, ``query_tokens``, ``Qformer.bert``,
``internlm_proj``, the start/end flags; ``wrap_prompt`` and ShareGPT4V's captioning script: each text
segment tokenised on its own, BOS on the first only, embeddings concatenated). LoRA is applied as
upstream's ``LoRALinear`` computes it, ``W x + (alpha / r) B A x``, by merging; GPTQ tensors are unpacked
here with AutoGPTQ's layout. The published checkpoint names are mapped onto those modules, so a layout the
tiny checkpoints do not share with the release fails here.

``--public DIR`` (optional): a folder with the released ``modeling_InternLM_XComposer.py`` (and its
siblings) from a v1 model repository; when given, its ``wrap_prompt`` segment strings are checked against
the ones below. None of it is in this repository. The output holds only numbers and case texts: token ids,
image-token counts, greedy tokens, log-probabilities (``tests/data/goldens/xcomposer-v1.json``).
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
    parser.add_argument("--model", required=True, type=Path, help="tiny xcomposer-vl checkpoint (make-tiny-model)")
    parser.add_argument("--share-captioner", type=Path, help="tiny share-captioner checkpoint")
    parser.add_argument("--model-4bit", type=Path, help="tiny xcomposer-7b-4bit checkpoint")
    parser.add_argument("--public", type=Path, help="folder of the released v1 modeling code (optional check)")
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "data" / "goldens" / "xcomposer-v1.json")
    args = parser.parse_args(argv)
    from tests.golden_xcomposer.oracle import Oracle, cases

    if args.public:
        from tests.golden_xcomposer.oracle import check_public_segments

        check_public_segments(args.public)
    golden = {"max_new_tokens": MAX_NEW, "top": TOP, "variants": {}}
    for variant, path in (("xcomposer-vl", args.model), ("share-captioner", args.share_captioner),
                          ("xcomposer-7b-4bit", args.model_4bit)):
        if path is None:
            continue
        oracle = Oracle(path)
        golden["variants"][variant] = [oracle.run(case, MAX_NEW, TOP) for case in cases(variant)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(golden, indent=1, ensure_ascii=False) + "\n")
    print(f"{args.out}: " + ", ".join(f"{k} {len(v)} cases" for k, v in golden["variants"].items()))


if __name__ == "__main__":
    main()
