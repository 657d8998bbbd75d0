"""Deterministic tiny random-weight embedding checkpoints in the published layouts.

- ``clip``: transformers' ``CLIPModel`` layout (``config.json``, ``model.safetensors``, a
  ``CLIPImageProcessor`` and a tokenizer that adds ``<|startoftext|>`` / ``<|endoftext|>``).
- ``internvl-c``: the InternVL-14B-224px remote-code layout (``config.json`` of model_type
  ``internvl`` with ``vision_config`` / ``qllama_config``, every published weight name, InternVL-G's
  included, and a LLaMA-style tokenizer with ``<unk>`` = 0, ``<s>`` = 1, ``</s>`` = 2).

Random weights give meaningless similarities; they exist to check code paths against references.
"""

from __future__ import annotations

from pathlib import Path

CLIP_IMAGE = 32
INTERNVL_C_IMAGE = 28
INTERNVL_C_NUM_QUERY = 96
# modeling_qllama.LlamaCrossAttention builds its key/value projections for InternViT-6B's width, whatever the config.
QLLAMA_CROSS_WIDTH = 3200


def make_tiny_clip(directory: Path, seed: int = 0) -> None:
    """Write a tiny CLIP checkpoint (vision 32 px / patch 8, projection 16) to ``directory``."""
    import torch
    from tokenizers import processors
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    from operators.vlm.tiny.tokenizer import build_tokenizer

    directory = Path(directory)
    tok = build_tokenizer(directory, special_tokens=["<|startoftext|>", "<|endoftext|>"], eos_token="<|endoftext|>",
                          pad_token="<|endoftext|>", bos_token="<|startoftext|>")
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>",
        special_tokens=[("<|startoftext|>", tok.bos_token_id), ("<|endoftext|>", tok.eos_token_id)])
    tok.model_max_length = 77
    tok.save_pretrained(str(directory))
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=77, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=CLIP_IMAGE, patch_size=8),
        projection_dim=16,
    )
    torch.manual_seed(seed)
    CLIPModel(config).eval().save_pretrained(str(directory), safe_serialization=True)
    CLIPImageProcessor(size={"shortest_edge": CLIP_IMAGE}, crop_size={"height": CLIP_IMAGE, "width": CLIP_IMAGE}
                       ).save_pretrained(str(directory))


def internvl_c_config(vocab_size: int) -> dict:
    """The tiny checkpoint's ``config.json`` (the published keys, toy sizes)."""
    vision = dict(model_type="intern_vit_6b", architectures=["InternVisionModel"], num_channels=3, patch_size=7,
                  image_size=INTERNVL_C_IMAGE, qkv_bias=False, hidden_size=32, num_attention_heads=2,
                  intermediate_size=64, qk_normalization=True, num_hidden_layers=2, use_flash_attn=False,
                  hidden_act="gelu", layer_norm_eps=1e-6, dropout=0.0, drop_path_rate=0.0, attention_dropout=0.0,
                  initializer_range=0.02, initializer_factor=0.1)
    qllama = dict(model_type="llama", architectures=["LlamaForCausalLM"], vocab_size=vocab_size, hidden_size=32,
                  intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, hidden_act="silu",
                  max_position_embeddings=128, rms_norm_eps=1e-6, bos_token_id=1, eos_token_id=2, pad_token_id=0,
                  tie_word_embeddings=False, num_query_token=INTERNVL_C_NUM_QUERY, cross_attention_frequency=2)
    return dict(
        architectures=["InternVLModel"], model_type="internvl",
        auto_map={"AutoConfig": "configuration_internvl.InternVLConfig",
                  "AutoModel": "modeling_internvl.InternVLModel"},
        vision_config=vision, qllama_config=qllama, clip_embed_dim=16, attn_pool_num_heads=2,
        num_query_token=INTERNVL_C_NUM_QUERY, label_smoothing=0.0, cross_attention_frequency=2,
        use_backbone_lora=0, use_qllama_lora=0, force_image_size=None, initializer_range=0.02,
        hidden_size=32, torch_dtype="float32",
    )


def _internvl_g_extras(config: dict, gen) -> dict:
    """The published tensors InternVL-C does not use (QLLaMA cross-attention and head, InternVL-G's parts)."""
    import torch

    tc, d, e = config["qllama_config"], config["qllama_config"]["hidden_size"], config["clip_embed_dim"]
    r = lambda *shape: torch.randn(*shape, generator=gen) * 0.02  # noqa: E731
    out = {"query_tokens": r(1, config["num_query_token"], d), "logit_scale": torch.tensor(2.6592),
           "qllama.lm_head.weight": r(tc["vocab_size"], d), "itm_head.weight": r(2, d),
           "itm_head.bias": torch.zeros(2)}
    for i in range(0, tc["num_hidden_layers"], config["cross_attention_frequency"]):
        p = f"qllama.model.layers.{i}.cross_attn."
        out.update({p + "q_proj.weight": r(d, d), p + "o_proj.weight": r(d, d), p + "norm1.weight": torch.ones(d),
                    p + "k_proj.weight": r(d, QLLAMA_CROSS_WIDTH), p + "v_proj.weight": r(d, QLLAMA_CROSS_WIDTH),
                    p + "norm2.weight": torch.ones(QLLAMA_CROSS_WIDTH)})
    p = "clip_projector2."
    for n in ("norm1_q", "norm1_k", "norm1_v"):
        out.update({f"{p}{n}.weight": torch.ones(d), f"{p}{n}.bias": torch.zeros(d)})
    for n in ("q", "k", "v"):
        out.update({f"{p}cross_attn.{n}.weight": r(d, d), f"{p}cross_attn.{n}_bias": torch.zeros(d)})
    out.update({p + "cross_attn.proj.weight": r(e, d), p + "cross_attn.proj.bias": torch.zeros(e)})
    return out


def make_tiny_internvl_c(directory: Path, seed: int = 0) -> None:
    """Write a tiny InternVL-C checkpoint (InternViT 28 px, patch 7; QLLaMA 2 layers; 16-vectors) to ``directory``."""
    import json

    import torch
    from safetensors.torch import save_file

    from operators.embed.internvl_c import InternVLC
    from operators.vlm.tiny.tokenizer import build_tokenizer

    directory = Path(directory)
    tok = build_tokenizer(directory, special_tokens=["<unk>", "<s>", "</s>"], eos_token="</s>", pad_token="<unk>",
                          bos_token="<s>", unk_token="<unk>")
    config = internvl_c_config(len(tok))
    gen = torch.Generator().manual_seed(seed)
    model = InternVLC(config)
    weights = {}
    for name, tensor in model.state_dict().items():
        if name.endswith((".ls1", ".ls2")):
            value = torch.full_like(tensor, config["vision_config"]["initializer_factor"])
        elif "norm" in name and name.endswith(".weight"):
            value = 1.0 + 0.1 * torch.randn(tensor.shape, generator=gen)
        elif name.endswith(("bias", "_bias")):
            value = 0.02 * torch.randn(tensor.shape, generator=gen)
        else:
            # Wider than the published init (0.02) so a tiny model's outputs differ visibly between inputs.
            value = 0.2 * torch.randn(tensor.shape, generator=gen)
        weights[name] = value.contiguous()
    weights.update(_internvl_g_extras(config, gen))
    save_file({k: v.contiguous() for k, v in weights.items()}, str(directory / "model.safetensors"),
              metadata={"format": "pt"})
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    (directory / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "CLIPImageProcessor", "do_resize": True, "size": {"shortest_edge": INTERNVL_C_IMAGE},
        "resample": 3, "do_center_crop": True, "crop_size": {"height": INTERNVL_C_IMAGE, "width": INTERNVL_C_IMAGE},
        "do_normalize": True, "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}, indent=2))


#: ``vlmbatch make-tiny-model`` builders of the embedding kinds (beside the VLM families).
BUILDERS = {"clip": make_tiny_clip, "internvl-c": make_tiny_internvl_c}
