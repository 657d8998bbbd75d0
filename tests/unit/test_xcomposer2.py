"""InternLM-XComposer2 pieces that need no engine: config, 4KHD layout, tiny checkpoint layout, reference."""

from __future__ import annotations

import json

import pytest

from operators.vlm.registry import get_family
from operators.vlm.xcomposer2.hd import check_prepared, hd_grid, hd_num_tokens, hd_size, hd_transform, prepare_4khd

# config.json of internlm/internlm-xcomposer2-vl-7b as published (remote-code pointers included).
PUBLISHED_CONFIG = {
    "architectures": ["InternLMXComposer2ForCausalLM"],
    "auto_map": {"AutoConfig": "configuration_internlm_xcomposer2.InternLMXcomposer2Config",
                 "AutoModel": "modeling_internlm_xcomposer2.InternLMXComposer2ForCausalLM",
                 "AutoModelForCausalLM": "modeling_internlm_xcomposer2.InternLMXComposer2ForCausalLM"},
    "bias": False, "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu", "hidden_size": 4096,
    "initializer_range": 0.02, "intermediate_size": 14336, "max_length": 4096, "max_position_embeddings": 32768,
    "model_type": "internlmxcomposer2", "num_attention_heads": 32, "num_hidden_layers": 32,
    "num_key_value_heads": 8, "pad_token_id": 2, "rms_norm_eps": 1e-05,
    "rope_scaling": {"factor": 1.0, "type": "dynamic"}, "rope_theta": 1000000, "tie_word_embeddings": False,
    "torch_dtype": "bfloat16", "transformers_version": "4.33.2", "use_cache": False, "vocab_size": 92544,
}


def test_published_config_loads_without_remote_code(tmp_path):
    from transformers import AutoConfig

    from operators.vlm.xcomposer2.config import register_config

    register_config()
    (tmp_path / "config.json").write_text(json.dumps(PUBLISHED_CONFIG))
    config = AutoConfig.from_pretrained(str(tmp_path), trust_remote_code=False)
    assert type(config).__name__ == "InternLMXComposer2Config"
    assert (config.hidden_size, config.head_dim, config.num_key_value_heads) == (4096, 128, 8)
    assert config.rope_parameters == {"rope_type": "default", "rope_theta": 1000000.0}
    assert config.variant(str(tmp_path)) == "vl"
    clip = config.clip_config("vl")
    facts = (clip["image_size"], clip["patch_size"], clip["hidden_size"], clip["num_hidden_layers"])
    assert facts == (490, 14, 1024, 24)
    assert config.clip_config("4khd")["image_size"] == 336


def test_variant_detected_from_the_weight_index(tmp_path):
    from operators.vlm.xcomposer2.config import detect_variant

    index = {"weight_map": {"plora_glb_GN": "a.bin", "plora_sub_GN": "a.bin", "output.weight": "b.bin"}}
    (tmp_path / "hd").mkdir()
    (tmp_path / "hd" / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    assert detect_variant(tmp_path / "hd") == "4khd"
    (tmp_path / "vl").mkdir()
    (tmp_path / "vl" / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": {"output.weight": "b"}}))
    assert detect_variant(tmp_path / "vl") == "vl"


@pytest.mark.parametrize("size", [(1000, 300), (300, 1000), (336, 336), (4000, 3000), (17, 900), (672, 336)])
@pytest.mark.parametrize("hd_num", [1, 4, 9, 25])
def test_hd_layout(size, hd_num):
    from PIL import Image

    out = prepare_4khd(Image.new("RGB", size, (10, 20, 30)), hd_num)
    assert out.size == hd_size(*size, hd_num)
    assert out.width % 336 == 0 and out.height % 336 == 0
    assert (out.width // 336) * (out.height // 336) <= hd_num
    check_prepared(*out.size, hd_grid(*out.size))
    # Orientation is kept: a portrait image stays portrait-or-square.
    if size[1] > size[0]:
        assert out.height >= out.width


@pytest.mark.parametrize(("size", "hd_num", "grid", "tokens"), [
    # A multiple of 336 is rescaled to the largest grid as the public HD_transform does (issue 13:
    # public 3817 tokens for a 336x336 image at hd_num 25, not the 313 of leaving it as it is).
    ((336, 336), 25, (5, 5), 3817),
    ((1800, 1200), 25, (4, 6), 3661),
    ((336, 336), 9, (3, 3), 1489),
    ((672, 336), 4, (1, 2), 457),
])
def test_every_raw_image_is_rescaled_to_the_largest_grid(size, hd_num, grid, tokens):
    from PIL import Image

    out = prepare_4khd(Image.new("RGB", size, (0, 0, 0)), hd_num)
    assert hd_grid(*out.size) == grid
    assert hd_num_tokens(*out.size, 336, 12) == tokens
    check_prepared(*out.size, grid)
    with pytest.raises(ValueError, match=f"marked as laid out in {grid[0] + 1}x{grid[1]} tiles"):
        check_prepared(*out.size, (grid[0] + 1, grid[1]))


def test_hd_transform_pads_white_and_centres():
    from PIL import Image

    out = hd_transform(Image.new("RGB", (1000, 300), (0, 0, 0)), 4)
    # 3 crops across (4 would need 2 rows: 8 > 4); 1008 / (1000 / 300) = 302 rows, padded to 336.
    assert out.size == (1008, 336)
    assert out.getpixel((10, 0)) == (255, 255, 255) and out.getpixel((10, 335)) == (255, 255, 255)
    assert out.getpixel((10, 17)) == (0, 0, 0) and out.getpixel((10, 16)) == (255, 255, 255)
    assert hd_num_tokens(1008, 336, 336, 12) == (3 + 1) * 144 + 1 + 2 * 12


def test_family_prompt_matches_the_model_card():
    fam = get_family("xcomposer2-vl")
    prompt = fam.build_prompt("Describe.", "")
    assert prompt == "[UNUSED_TOKEN_146]user\n<ImageHere>Describe.[UNUSED_TOKEN_145]\n[UNUSED_TOKEN_146]assistant\n"
    full = fam.build_prompt("Describe.")
    assert full.startswith("[UNUSED_TOKEN_146]system\nYou are an AI assistant whose name is InternLM-XComposer")
    assert fam.stop == ("[UNUSED_TOKEN_145]",)
    # Both variants' images are prepared on the CPU stage (vlmbatch owns their processor).
    assert get_family("xcomposer2-4khd").cpu_prepare is not None and fam.cpu_prepare is not None
    assert dict(fam.sampling_defaults) == {"repetition_penalty": 1.005}


def test_card_prompt_ids_give_every_text_part_its_bos(tiny):
    """chat(): each text part tokenised on its own (BOS after every image); text-only: "<s>" + BOS = two."""
    from transformers import AutoTokenizer

    from operators.vlm.families.xcomposer2 import card_prompt_ids

    tok = AutoTokenizer.from_pretrained(str(tiny["vl"]))
    fam, bos, image = get_family("xcomposer2-vl"), tok.bos_token_id, tok.convert_tokens_to_ids("<ImageHere>")
    two = card_prompt_ids(fam.build_prompt("Compare.", "", num_images=2), tok)
    first = tok("[UNUSED_TOKEN_146]user\n")["input_ids"]
    assert two[:len(first)] == first and first[0] == bos
    assert two[len(first):len(first) + 3] == [image, image, bos], "adjacent images share no text part; BOS after them"
    assert two.count(bos) == 2
    text = card_prompt_ids(fam.build_prompt("Hello?", num_images=0), tok)
    assert text[:2] == [bos, bos] and text.count(bos) == 2 and image not in text


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from operators.vlm.tiny.xcomposer2 import make_tiny_xcomposer2

    out = {}
    for variant in ("vl", "4khd"):
        d = tmp_path_factory.mktemp(f"xc2-{variant}")
        make_tiny_xcomposer2(d, variant)
        out[variant] = d
    return out


@pytest.mark.parametrize("variant", ["vl", "4khd"])
def test_tiny_checkpoint_uses_the_published_layout(tiny, variant):
    from safetensors import safe_open

    with safe_open(str(tiny[variant] / "model.safetensors"), "pt") as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    cfg = json.loads((tiny[variant] / "config.json").read_text())
    h, kv, d = cfg["hidden_size"], cfg["num_key_value_heads"], cfg["hidden_size"] // cfg["num_attention_heads"]
    r, inter = cfg["lora_r"], cfg["intermediate_size"]
    qkv_r = 8 if variant == "4khd" else r  # 4KHD's wqkv LoRA, as published
    assert (r, cfg["lora_alpha"]) == (256, 256), "the public code fixes rank and alpha at 256"
    qkv_rows = (cfg["num_attention_heads"] + 2 * kv) * d
    expected = {
        "model.tok_embeddings.weight": (cfg["vocab_size"], h),
        "model.layers.0.attention.wqkv.weight": (qkv_rows, h),
        "model.layers.0.attention.wqkv.Plora_A.weight": (qkv_r, h),
        "model.layers.0.attention.wqkv.Plora_B.weight": (qkv_rows, qkv_r),
        "model.layers.0.attention.wo.Plora_B.weight": (h, r),
        "model.layers.0.feed_forward.w1.weight": (inter, h),
        "model.layers.0.feed_forward.w2.Plora_A.weight": (r, inter),
        "model.layers.0.feed_forward.w3.Plora_B.weight": (inter, r),
        "model.layers.1.attention_norm.weight": (h,),
        "model.layers.1.ffn_norm.weight": (h,),
        "model.norm.weight": (h,),
        "output.weight": (cfg["vocab_size"], h),
        "vit.vision_tower.vision_model.embeddings.class_embedding": (64,),
        "vit.vision_tower.vision_model.encoder.layers.1.self_attn.q_proj.weight": (64, 64),
        "vit.vision_tower.vision_model.post_layernorm.weight": (64,),
        "vision_proj.0.weight": (h, 64 * (4 if variant == "4khd" else 1)),
        "vision_proj.2.weight": (h, h),
    }
    if variant == "4khd":
        expected.update({"plora_glb_GN": (1, 1, 256), "plora_sub_GN": (1, 1, 1, 256)})
    for name, shape in expected.items():
        assert shapes.get(name) == shape, name
    assert not any(k.startswith("plora_") for k in shapes) or variant == "4khd"
    assert cfg["model_type"] == "internlmxcomposer2" and cfg["architectures"] == ["InternLMXComposer2ForCausalLM"]
    # The public config class requires these (its defaults differ: rms_norm_eps 1e-6; 2-field rope_scaling).
    assert cfg["rms_norm_eps"] == 1e-5 and cfg["rope_scaling"] == {"type": "dynamic", "factor": 1.0}
    if variant == "4khd":
        assert cfg["vision_config"]["image_size"] == 336 and cfg["vision_config"]["patch_size"] == 14


@pytest.mark.parametrize("variant", ["vl", "4khd"])
def test_reference_image_tokens_and_partial_lora(tiny, variant):
    import torch
    from PIL import Image
    from transformers import AutoTokenizer

    from operators.vlm.xcomposer2.reference import XComposer2Reference

    model = XComposer2Reference.from_pretrained(tiny[variant])
    tok = AutoTokenizer.from_pretrained(str(tiny[variant]))
    image = Image.new("RGB", (150, 90), (200, 30, 30))
    emb = model.encode_image(image)
    if variant == "vl":
        assert emb.shape == (64, 128)
    else:
        w, h = model.prepare(image, hd_num=4).size
        emb = model.encode_image(image, hd_num=4)
        assert emb.shape == (hd_num_tokens(w, h, 336, 12), 128)
    from operators.vlm.families.xcomposer2 import card_prompt_ids

    image_id = tok.convert_tokens_to_ids("<ImageHere>")
    ids = card_prompt_ids(get_family(f"xcomposer2-{variant}").build_prompt("Describe the image.", ""), tok)
    assert ids[0] == tok.bos_token_id and ids.count(image_id) == 1
    full = model.expand(ids, image_id, [emb.shape[0]])
    x, mask = model.embed(full, [emb], image_id)
    with_lora = model.logits_from_embeds(x, mask)
    without = model.logits_from_embeds(x, torch.zeros_like(mask))
    # The Partial LoRA must matter, at image positions and (through attention) after them.
    assert (with_lora - without).abs().max() > 0.5
    first_image = int(mask.nonzero()[0])
    assert torch.equal(with_lora[:first_image], without[:first_image]), "text before the image is untouched"


def test_published_tokenizer_layout_loads_without_remote_code(tmp_path):
    """A SentencePiece ``tokenizer.model`` + the published ``tokenizer_config.json`` (remote-code class name)."""
    import sentencepiece as spm
    from transformers import AutoTokenizer

    from operators.vlm.tiny.tokenizer import training_corpus
    from operators.vlm.xcomposer2.plugin import register

    (tmp_path / "corpus.txt").write_text("\n".join(training_corpus()))
    spm.SentencePieceTrainer.train(input=str(tmp_path / "corpus.txt"), model_prefix=str(tmp_path / "tokenizer"),
                                   vocab_size=300, model_type="bpe", bos_id=1, eos_id=2, unk_id=0, minloglevel=2,
                                   user_defined_symbols=["[UNUSED_TOKEN_145]", "[UNUSED_TOKEN_146]"])
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({
        "auto_map": {"AutoTokenizer": ["tokenization_internlm_xcomposer2.InternLMXComposer2Tokenizer", None]},
        "tokenizer_class": "InternLMXComposer2Tokenizer", "bos_token": "<s>", "eos_token": "</s>",
        "pad_token": "</s>", "unk_token": "<unk>", "add_bos_token": True}))
    (tmp_path / "config.json").write_text(json.dumps({**PUBLISHED_CONFIG, "vocab_size": 300}))
    try:
        register()
    except ImportError:  # vLLM absent: the tokenizer half still has to work
        from operators.vlm.xcomposer2.tokenizer import register_tokenizer

        register_tokenizer()
    tok = AutoTokenizer.from_pretrained(str(tmp_path), trust_remote_code=False)
    ids = tok(get_family("xcomposer2-vl").build_prompt("Describe the image.", ""))["input_ids"]
    image = tok.convert_tokens_to_ids("<ImageHere>")
    assert ids[0] == 1 and ids.count(image) == 1 and image >= 300  # past the vocabulary: masked by the model
    assert ids.count(tok.convert_tokens_to_ids("[UNUSED_TOKEN_146]")) == 2
    assert tok.convert_tokens_to_ids("[UNUSED_TOKEN_145]") in ids


@pytest.mark.parametrize("tp", [2, 4])
def test_tensor_parallel_wqkv_bookkeeping(tp):
    """Shard ``wqkv`` the way vLLM's fused-QKV loader does, run each rank, gather: same heads as one rank."""
    import torch

    from operators.vlm.xcomposer2.tp import restore_row_order, split_grouped

    heads, kv, d, hidden, t = 8, 4, 4, 16, 5
    torch.manual_seed(0)
    w = torch.randn((heads + 2 * kv) * d, hidden)
    x = torch.randn(t, hidden)
    q_full, k_full, v_full = split_grouped(x @ w.T, heads, kv, d)
    q_rows, kv_rows = heads * d, kv * d
    seg = [w[:q_rows], w[q_rows:q_rows + kv_rows], w[q_rows + kv_rows:]]
    outs = [x @ torch.cat([s.chunk(tp)[r] for s in seg]).T for r in range(tp)]
    gathered = torch.cat(outs, dim=-1)
    full = restore_row_order(gathered, tp, q_rows // tp, kv_rows // tp)
    torch.testing.assert_close(full, x @ w.T)
    for r in range(tp):
        q, k, v = split_grouped(full, heads, kv, d, tp, r)
        torch.testing.assert_close(q, q_full.chunk(tp, dim=-1)[r])
        torch.testing.assert_close(k, k_full.chunk(tp, dim=-1)[r])
        torch.testing.assert_close(v, v_full.chunk(tp, dim=-1)[r])


def test_prepare_stage_makes_the_model_input_and_passes_failures():
    import numpy as np
    import pyarrow as pa
    from PIL import Image

    from operators.prepare import PrepareBatch
    from operators.vlm.xcomposer2.cpu import hd_preparer, model_input_4khd, vl_preparer
    from operators.vlm.xcomposer2.hd import normalize
    from schemas import columns as C

    im = Image.new("RGB", (1000, 300), (0, 0, 0))
    im.paste((250, 10, 10), (100, 50, 400, 250))
    table = pa.table({
        C.ID: ["a", "b"], C.PIXELS: [im.tobytes(), None], C.WIDTH: [1000, None], C.HEIGHT: [300, None],
        C.STATUS: ["ok", "not_an_image"], C.ERROR: [None, "bytes are not an image"],
    })
    out = PrepareBatch(hd_preparer("internlm/internlm-xcomposer2-4khd-7b"))(table)
    assert C.PIXELS not in out.column_names  # the raw pixels stop here
    rows = out.to_pylist()
    # hd_num 25 crops of 336: 8 across, 1008 / 3.33 rows -> 3 rows of crops; channels first.
    assert rows[0][C.MODEL_INPUT_SHAPE] == [3, 1008, 2688] and rows[0][C.STATUS] == "ok"
    array = np.frombuffer(rows[0][C.MODEL_INPUT], dtype=np.float32).reshape(rows[0][C.MODEL_INPUT_SHAPE])
    np.testing.assert_array_equal(array, model_input_4khd(im, 25, 336)[0])
    np.testing.assert_array_equal(array, normalize(hd_transform(im, 25)))  # layout, then CLIP normalisation
    # The layout is recorded on the row: its tile grid, and the laid-out size the model saw.
    assert rows[0][C.TILE_GRID] == [3, 8] and (rows[0][C.WIDTH], rows[0][C.HEIGHT]) == (2688, 1008)
    assert rows[1][C.STATUS] == "not_an_image" and rows[1][C.MODEL_INPUT] is None and rows[1][C.TILE_GRID] is None
    # The spec's hd_num wins over the checkpoint's (the 4KHD card's examples use 55).
    assert PrepareBatch(hd_preparer("internlm/internlm-xcomposer2-4khd-7b", 55))(table).to_pylist()[0][C.TILE_GRID] \
        == [4, 13]
    vl = PrepareBatch(vl_preparer("internlm/internlm-xcomposer2-vl-7b"))(table)
    assert C.TILE_GRID not in vl.column_names  # VL cuts no tiles: nothing to record, the decoded size stays
    assert vl.to_pylist()[0][C.MODEL_INPUT_SHAPE] == [3, 490, 490] and vl.to_pylist()[0][C.WIDTH] == 1000


def test_vl_1_8b_shape_has_the_published_dimensions_vocabulary_and_lora_rank(tmp_path):
    """bench/shapes.py's VL-1.8B: InternLM2-1.8B under the VL vision side, every weight at its published shape."""
    import torch

    from bench.shapes import SHAPES
    from operators.vlm.xcomposer2.config import InternLMXComposer2Config
    from operators.vlm.xcomposer2.reference import XComposer2Reference

    directory = SHAPES["xcomposer2-vl-1_8b"](tmp_path / "shape")
    raw = json.loads((directory / "config.json").read_text())
    published = dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=24, num_attention_heads=16,
                     num_key_value_heads=8, vocab_size=92544, lora_r=256, lora_alpha=256)
    assert {k: raw[k] for k in published} == published
    config = InternLMXComposer2Config(**raw)
    with torch.device("meta"):  # shapes only, no memory
        model = XComposer2Reference(config, "vl")
    shapes = {k: tuple(v.shape) for k, v in model.published_state_dict().items()}
    assert shapes["model.tok_embeddings.weight"] == shapes["output.weight"] == (92544, 2048)
    assert shapes["model.layers.23.attention.wqkv.weight"] == ((16 + 2 * 8) * 128, 2048)
    assert shapes["model.layers.0.attention.wqkv.Plora_A.weight"] == (256, 2048)
    assert shapes["model.layers.0.feed_forward.w2.Plora_B.weight"] == (2048, 256)
    assert shapes["vision_proj.0.weight"] == (2048, 1024) and shapes["vision_proj.2.weight"] == (2048, 2048)
    assert shapes["vit.vision_tower.vision_model.embeddings.position_embedding.weight"] == (35 * 35 + 1, 1024)
    assert "model.layers.24.attention.wqkv.weight" not in shapes


def test_prepare_stage_fails_a_row_not_its_batch():
    import pyarrow as pa

    from operators.prepare import PrepareBatch
    from operators.vlm.xcomposer2.cpu import vl_preparer
    from schemas import columns as C

    table = pa.table({C.ID: ["short", "fine"], C.PIXELS: [b"\x00" * 5, b"\x00" * 12], C.WIDTH: [2, 2],
                      C.HEIGHT: [2, 2], C.STATUS: ["ok", "ok"], C.ERROR: [None, None]})
    rows = PrepareBatch(vl_preparer("x"))(table).to_pylist()
    assert rows[0][C.STATUS] == "decode_error" and "not enough image data" in rows[0][C.ERROR]
    assert rows[1][C.STATUS] == "ok" and rows[1][C.MODEL_INPUT_SHAPE] == [3, 490, 490]


def test_the_plugin_parser_tells_prepared_images_from_raw_ones_by_their_form():
    import numpy as np
    import torch
    from vllm.multimodal.parse import ImageProcessorItems, MultiModalDataParser

    from operators.vlm.vllm_prepared import PreparedImageItems, prepared_parser

    parser = prepared_parser(MultiModalDataParser())
    items = parser.parse_mm_data({"image": {"pixel_values": [torch.zeros(3, 56, 112), torch.zeros(3, 56, 56)]}})
    prepared = items.get_items("image", PreparedImageItems)
    assert prepared.get_count() == 2 and prepared.get_processor_data() == {}
    assert [tuple(t.shape) for t in prepared.get_passthrough_data()["pixel_values"]] == [(3, 56, 112), (3, 56, 56)]
    # A raw image, even one whose sides are multiples of the crop, stays raw: nothing is guessed from its size.
    raw = parser.parse_mm_data({"image": np.zeros((336, 336, 3), np.uint8)})
    assert isinstance(raw["image"], ImageProcessorItems)
    with pytest.raises(ValueError, match="pixel_values"):
        parser.parse_mm_data({"image": {"image_embeds": torch.zeros(4, 8)}})
