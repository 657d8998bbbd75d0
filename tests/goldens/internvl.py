"""InternVL chat goldens from the public ``modeling_internvl_chat.py`` + ``conversation.py``.

What runs is the public code: its config class reads the tiny ``config.json``; the model card's
``load_image`` (``dynamic_preprocess`` + ``build_transform``, published in the card and in the
InternVL repository's ``internvl/train/dataset.py``) makes the tiles; ``InternVLChatModel.chat()``
builds the prompt with the conversation template the config names, expands ``<image>`` into
``<img>`` + ``<IMG_CONTEXT>`` x N + ``</img>``, tokenises it and calls ``generate``, which makes the
input embeddings (``extract_feature``, pixel shuffle, ``mlp1``) and hands them to the language
model's ``generate``. That last call is intercepted: its ``inputs_embeds`` are kept and greedy
decoding is a loop over the language model's ``forward`` (what ``generate(do_sample=False)``
computes), so every step's log-probabilities can be recorded.

The folder may be the InternVL GitHub tree's ``internvl_chat`` (holding ``internvl/``) or a model
repository's flat files (relative imports). Shims: ``timm`` (``DropPath``, identity at rate 0),
``peft``, ``decord``, ``cv2`` and ``imageio`` are stubbed when absent (imported, unused here).
"""

from __future__ import annotations

import sys
from pathlib import Path

from tests.goldens.cases import CASES, MAX_NEW_TOKENS, TOP, Case, image
from tests.goldens.public import RecordingTokenizer, load_package, module, stub

PACKAGE = "internvl_public"
SHIMS = [
    "InternVLChatConfig.from_pretrained(..., has_no_defaults_at_init=True): transformers 5 default-constructs "
    "configs to print them, which the public class refuses (vLLM passes the same)",
    "timm / peft / decord / cv2 / imageio stubbed when not installed (imported by the public code, unused here)",
    "greedy decoding: a loop over the language model's forward on the inputs_embeds chat() built",
]


def _stubs() -> None:
    import importlib.util

    import transformers  # noqa: F401 - its optional-package probes run before any stub exists
    import transformers.modeling_utils  # noqa: F401
    from torch import nn

    class DropPath(nn.Module):
        def __init__(self, drop_prob: float = 0.0):
            super().__init__()
            if drop_prob:
                raise SystemExit("the stub DropPath serves drop_path_rate 0 only")

        def forward(self, x):
            return x

    for name, attrs in (("timm.models.layers", {"DropPath": DropPath}),
                        ("peft", {"LoraConfig": object, "get_peft_model": None}),
                        ("decord", {"VideoReader": object}), ("cv2", {}), ("imageio", {})):
        if importlib.util.find_spec(name.split(".")[0]) is None:
            stub(name, **attrs)


def _modules(public: Path):
    """(modeling, configuration, conversation, dataset) modules of the public code in ``public``."""
    _stubs()
    if (public / "internvl").is_dir():  # the GitHub tree: absolute ``internvl.*`` imports
        sys.path.insert(0, str(public))
        import importlib

        return tuple(importlib.import_module(f"internvl.{m}") for m in (
            "model.internvl_chat.modeling_internvl_chat", "model.internvl_chat.configuration_internvl_chat",
            "conversation", "train.dataset"))
    load_package(public, PACKAGE)
    return tuple(module(PACKAGE, m) for m in ("modeling_internvl_chat", "configuration_internvl_chat",
                                               "conversation", "dataset"))


def build(public: Path, model_dir: Path):
    import torch
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    modeling, configuration, conversation, dataset = _modules(public)
    # transformers 5 default-constructs a config to print it, which this class cannot do (vLLM passes the same).
    config = configuration.InternVLChatConfig.from_pretrained(str(model_dir), has_no_defaults_at_init=True)
    model = modeling.InternVLChatModel(config, use_flash_attn=False).float().eval()
    missing, unexpected = model.load_state_dict(load_file(str(model_dir / "model.safetensors")), strict=False)
    missing = [m for m in missing if not m.endswith(("position_ids", "inv_freq"))]
    if missing or unexpected:
        raise SystemExit(f"checkpoint does not fit the public model: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    torch.manual_seed(0)
    return model, AutoTokenizer.from_pretrained(str(model_dir)), config, conversation, dataset


def _pixels(config, dataset, names):
    """The card's ``load_image`` for each image: tiles of ``dynamic_preprocess``, ``build_transform``."""
    import torch

    size = config.force_image_size or config.vision_config.image_size
    transform = dataset.build_transform(is_train=False, input_size=size)
    tiles, counts = [], []
    for name in names:
        if config.dynamic_image_size:
            parts = dataset.dynamic_preprocess(image(name), min_num=config.min_dynamic_patch,
                                               max_num=config.max_dynamic_patch, image_size=size,
                                               use_thumbnail=config.use_thumbnail)
        else:
            parts = [image(name)]
        tiles.extend(transform(p) for p in parts)
        counts.append(len(parts))
    return (torch.stack(tiles) if tiles else None), counts


def run_case(model, tokenizer, config, dataset, case: Case) -> dict:
    import torch

    rec = RecordingTokenizer(tokenizer)
    captured = {}

    def generate(inputs_embeds=None, **kwargs):
        captured["embeds"] = inputs_embeds
        return torch.zeros(1, 1, dtype=torch.long)

    model.language_model.generate = generate
    if case.system is not None:
        model.system_message = case.system
    pixels, counts = _pixels(config, dataset, case.images)
    # The card's question: one image is prefixed by chat() itself; several carry one <image> each.
    question = case.instruction if len(case.images) < 2 else "<image>\n" * len(case.images) + case.instruction
    with torch.no_grad():
        if pixels is None:
            # chat() with no image skips the vision path; its generate() then embeds the ids itself.
            model.chat(rec, None, question, dict(max_new_tokens=MAX_NEW_TOKENS, do_sample=False))
        else:
            model.chat(rec, pixels, question, dict(max_new_tokens=MAX_NEW_TOKENS, do_sample=False),
                       num_patches_list=counts)
        ids = rec.calls[-1]
        x = captured["embeds"]
        lm = model.language_model
        greedy, steps, prompt_lp = [], [], None
        for step in range(MAX_NEW_TOKENS):
            logp = torch.log_softmax(lm(inputs_embeds=x, use_cache=False).logits[0].float(), -1)
            if step == 0:
                prompt_lp = [float(logp[i - 1, t]) for i, t in enumerate(ids) if i > 0]
            nxt = int(logp[-1].argmax())
            top = torch.topk(logp[-1], TOP)
            steps.append({str(int(t)): float(v) for t, v in zip(top.indices, top.values, strict=True)})
            greedy.append(nxt)
            x = torch.cat([x, lm.get_input_embeddings()(torch.tensor([[nxt]]))], dim=1)
    context = tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")
    runs, n = [], 0
    for t in ids + [None]:
        if t == context:
            n += 1
        elif n:
            runs.append(n)
            n = 0
    model.system_message = model.conv_template.system_message
    return {"instruction": case.instruction, "images": list(case.images), "system": case.system,
            "tiles": counts, "prompt": ids, "image_tokens": runs, "greedy": greedy, "step_logprobs": steps,
            "prompt_logprobs": prompt_lp}


def _templates(conversation) -> dict:
    """Each registered template's prompt for one question, with its default and with an empty system message."""
    out = {}
    for name in sorted(conversation.conv_templates):
        t = conversation.get_conv_template(name)
        rendered = {}
        for label, system in (("default", None), ("empty", "")):
            conv = conversation.get_conv_template(name)
            if system is not None:
                conv.system_message = system
            conv.append_message(conv.roles[0], "<image>\nQ?")
            conv.append_message(conv.roles[1], None)
            rendered[label] = conv.get_prompt()
        out[name] = {"system_message": t.system_message, "stop": t.sep.strip(), "prompt": rendered}
    return out


def make(public: Path, model_dir: Path) -> dict:
    import torch
    import transformers

    model, tokenizer, config, conversation, dataset = build(public, model_dir)
    cases = {c.name: run_case(model, tokenizer, config, dataset, c) for c in CASES["internvl-chat"]}
    return {
        "family": "internvl-chat", "template": config.template,
        "public_code": "InternVLChatModel.chat (modeling_internvl_chat.py, conversation.py, card load_image)",
        "transformers": transformers.__version__, "torch": torch.__version__, "shims": SHIMS,
        "templates": _templates(conversation), "max_new_tokens": MAX_NEW_TOKENS, "cases": cases,
    }
