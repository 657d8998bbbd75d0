"""Full-size model shapes with no weights, for GPU benchmarks with vLLM's ``load_format="dummy"``.

    python -m bench.shapes internvl2-8b DIR
    python -m bench.shapes xcomposer2-vl-7b DIR
    python -m bench.shapes share-captioner-7b DIR

A shape directory holds what a checkpoint holds except its weights: ``config.json`` with the
published dimensions, a tokenizer and a processor. There is no model hub here, so the tokenizer
is the project's tiny byte-level BPE padded with synthetic merges to the published vocabulary
size: every id the random-weight model can emit then detokenises, and the LM head is full size.
Prompt and output lengths are what the benchmark fixes (image tokens dominate the prompt), so
the compute per image matches the real model's for the same image-token count.

Shapes (from the public checkpoints' config files):

- ``internvl2-8b``: InternViT-300M-448px (24 layers, width 1024, 16 heads, patch 14, 448 px)
  + pixel-shuffle 0.5 projector + InternLM2.5-7B (32 layers, width 4096, 32 heads, 8 KV heads,
  FFN 14336, vocabulary 92553, RoPE theta 1e6) in transformers' InternVL layout; the language
  model is declared as Llama, which is InternLM2's architecture with its fused ``wqkv`` split
  (same FLOPs and bytes). One 448 x 448 tile per image: 256 image tokens.
- ``xcomposer2-vl-7b``: the project's XComposer2 config at its defaults (InternLM2-7B, vocabulary
  92544, Partial LoRA rank 256, CLIP ViT-L/14 at 490 px: 1225 image tokens), ``variant`` vl.
- ``share-captioner-7b``: InternLM-XComposer (v1) / Share-Captioner at the v1 config's defaults: EVA ViT-g/14
  at 224 px (39 blocks, width 1408), the BERT-base perceive sampler with 64 queries (66 image tokens),
  InternLM-7B (32 layers, width 4096, 32 heads, FFN 11008, q/k/v/o biases, vocabulary 103168), the released
  config.json's LoRA block (r 256, alpha 256 on q, v and the FFN's up/down), which changes nothing under
  dummy weights, where LoRA is merged or absent alike.
- ``xcomposer2-vl-1_8b``: InternLM-XComposer2-VL-1.8B, the same vision side on InternLM2-1.8B (24
  layers, width 2048, 16 heads, 8 KV heads, FFN 8192, vocabulary 92544), Partial LoRA rank 256 /
  alpha 256 like every non-4KHD XComposer2 (lmdeploy's XComposer2 reader: ``lora_r=256``, scale 1).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

INTERNLM2_7B = dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                    num_key_value_heads=8, max_position_embeddings=32768, rope_theta=1_000_000.0, rms_norm_eps=1e-5)
# InternLM2-1.8B (internlm/internlm2-1_8b), the language model of XComposer2-VL-1.8B.
INTERNLM2_1_8B = dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=24, num_attention_heads=16,
                      num_key_value_heads=8, max_position_embeddings=32768, rope_theta=1_000_000.0,
                      rms_norm_eps=1e-5)
INTERNVIT_300M = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                      image_size=[448, 448], patch_size=[14, 14], norm_type="layer_norm", use_qk_norm=False,
                      layer_scale_init_value=0.1, hidden_act="gelu", layer_norm_eps=1e-6, attention_bias=True)


def pad_vocab(directory: Path, vocab_size: int) -> int:
    """Grow the BPE tokenizer in ``directory`` to ``vocab_size`` ids with synthetic merges; returns the new size.

    New entries are concatenations of byte-level symbols appended after every existing id, so the
    special tokens keep their ids and every id below ``vocab_size`` decodes to some text.
    """
    path = directory / "tokenizer.json"
    data = json.loads(path.read_text())
    model = data["model"]
    vocab: dict[str, int] = model["vocab"]
    merges: list = model["merges"]
    next_id = max([*vocab.values(), *(t["id"] for t in data.get("added_tokens", []))]) + 1
    alphabet = sorted((tok for tok in vocab if len(tok) == 1), key=vocab.__getitem__)
    pairs_as_lists = bool(merges) and isinstance(merges[0], list)  # tokenizers writes either form
    # Pairs first, then a pair plus a symbol: enough for any published vocabulary size.
    frontier = list(alphabet)
    while next_id < vocab_size:
        grown = []
        for left in frontier:
            for right in alphabet:
                if next_id >= vocab_size:
                    break
                tok = left + right
                if tok in vocab:
                    continue
                vocab[tok] = next_id
                merges.append([left, right] if pairs_as_lists else f"{left} {right}")
                grown.append(tok)
                next_id += 1
        frontier = grown
    path.write_text(json.dumps(data, ensure_ascii=False))
    return next_id


def _weightless(directory: Path, vocab_size: int) -> int:
    """Drop the tiny model's weights from ``directory`` and pad its tokenizer; returns the vocabulary size."""
    for weights in directory.glob("*.safetensors*"):
        weights.unlink()
    return pad_vocab(directory, vocab_size)


def make_internvl2_8b(directory: Path) -> Path:
    """InternVL2-8B's dimensions in transformers' InternVL layout, the tiny processor at 448 px."""
    from transformers import (
        GotOcr2ImageProcessorPil,
        InternVLConfig,
        InternVLProcessor,
        InternVLVideoProcessor,
        LlamaConfig,
        PreTrainedTokenizerFast,
    )

    from operators.vlm.tiny.internvl import CHAT_TEMPLATE, make_tiny_internvl

    make_tiny_internvl(directory)  # tokenizer, chat template, processor files
    vocab = _weightless(directory, 92553)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(directory))
    assert len(tokenizer) == vocab, (len(tokenizer), vocab)
    text = LlamaConfig(vocab_size=vocab, tie_word_embeddings=False, bos_token_id=None,
                       eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"), pad_token_id=tokenizer.pad_token_id,
                       **INTERNLM2_7B)
    text.architectures = ["LlamaForCausalLM"]
    config = InternVLConfig(vision_config=dict(INTERNVIT_300M), text_config=text.to_dict(),
                            image_token_id=tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>"), image_seq_length=256,
                            downsample_ratio=0.5, projector_hidden_act="gelu", tie_word_embeddings=False)
    config.architectures = ["InternVLForConditionalGeneration"]
    config.dtype = "bfloat16"
    config.save_pretrained(str(directory))
    size = {"height": 448, "width": 448}
    InternVLProcessor(image_processor=GotOcr2ImageProcessorPil(size=size, crop_to_patches=False, max_patches=1),
                      tokenizer=tokenizer, video_processor=InternVLVideoProcessor(size=size), image_seq_length=256,
                      chat_template=CHAT_TEMPLATE).save_pretrained(str(directory))
    return directory


def make_xcomposer2_7b(directory: Path, variant: str = "vl", dims: dict | None = None) -> Path:
    """InternLM-XComposer2-{VL,4KHD}-7B's dimensions (the config class's defaults), tiny tokenizer padded;
    ``dims``: other language-model dimensions (VL-1.8B: :data:`INTERNLM2_1_8B`)."""
    from operators.vlm.tiny.xcomposer2 import make_tiny_xcomposer2
    from operators.vlm.xcomposer2.config import InternLMXComposer2Config

    make_tiny_xcomposer2(directory, variant)
    vocab = _weightless(directory, 92544)
    config = InternLMXComposer2Config(vocab_size=vocab, xcomposer_variant=variant,
                                      hd_num=9 if variant == "4khd" else None, **(dims or {}))
    config.architectures = ["InternLMXComposer2ForCausalLM"]
    config.dtype = "bfloat16"
    config.save_pretrained(str(directory))
    return directory


def make_share_captioner_7b(directory: Path) -> Path:
    """Share-Captioner / InternLM-XComposer-7B's dimensions (the v1 config class's defaults, 64 queries)."""
    from operators.vlm.tiny.xcomposer import make_tiny_xcomposer
    from operators.vlm.xcomposer.config import InternLMXComposerConfig

    make_tiny_xcomposer(directory, seed=1)
    vocab = _weightless(directory, 103168)
    lora = dict(lora_r=256, lora_alpha=256, lora_dropout=0.05, learn_param=["q", "v", "ffn"], freeze=False)
    config = InternLMXComposerConfig(vocab_size=vocab, num_query_token=64, rms_norm_eps=1e-5, pad_token_id=-1,
                                     internlm_lora=lora, lora_cfg=dict(lora))
    config.architectures = ["InternLMXComposerForCausalLM"]
    config.dtype = "bfloat16"
    config.save_pretrained(str(directory))
    return directory


# Shape name -> builder; run each with the family of the same prefix (--family internvl, xcomposer2-vl, ...).
SHAPES = {
    "internvl2-8b": make_internvl2_8b,
    "xcomposer2-vl-7b": lambda d: make_xcomposer2_7b(d, "vl"),
    "xcomposer2-4khd-7b": lambda d: make_xcomposer2_7b(d, "4khd"),
    "share-captioner-7b": make_share_captioner_7b,
    "xcomposer2-vl-1_8b": lambda d: make_xcomposer2_7b(d, "vl", INTERNLM2_1_8B),
}


def shape_dir(name: str, cache: Path) -> Path:
    """Directory of shape ``name`` under ``cache``, built on first use."""
    if name not in SHAPES:
        raise SystemExit(f"unknown shape {name!r}; known: {', '.join(SHAPES)}")
    directory = cache / "models" / f"shape-{name}"
    if not (directory / ".complete").exists():
        SHAPES[name](directory)
        (directory / ".complete").write_text("ok\n")
    return directory


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    print(SHAPES[sys.argv[1]](Path(sys.argv[2])))
