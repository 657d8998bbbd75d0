"""InternVL chat checkpoints in their own remote-code layout (``InternVLChatModel``), served natively by vLLM.

The layout of InternVL-Chat-V1-1 / V1-2 / V1-2-Plus / V1-5, Mini-InternVL-Chat-*-V1-5, InternVL2-*
and InternVL2_5-* (https://huggingface.co/OpenGVLab/InternVL2_5-8B and their cards), as their
``modeling_internvl_chat.py`` ``chat()`` runs them: the question carries ``<image>`` per image
(``'<image>\\n'`` before the question, as ``chat()`` adds it), which becomes ``<img>`` +
``<IMG_CONTEXT>`` x N + ``</img>`` (vLLM's processor does the same); the prompt is the conversation
template the checkpoint's ``config.json`` names (``template``), with that template's system message,
rendered as ``conversation.py`` renders it (:data:`TEMPLATES`); generation stops at the template's
separator. Tiling (``dynamic_image_size``, ``max_dynamic_patch``, ``use_thumbnail``,
``force_image_size``) comes from the config through vLLM's processor, which follows the cards'
``load_image`` (``dynamic_preprocess`` + bicubic resize, ImageNet normalisation).

Which checkpoints vLLM serves (0.24 / 0.29, ``vllm/model_executor/models/internvl.py``) and what is
refused at validation, with the reason (:func:`refusal`): the architecture must be
``InternVLChatModel`` (the InternVL-Chat V1.0 LLaVA-format checkpoints and the InternVL-C/G
retrieval models are other architectures); the language model one vLLM implements; a template
listed here; no LoRA left wrapped in the weights (``use_backbone_lora`` / ``use_llm_lora``, which
vLLM does not apply); and ``force_image_size`` equal to the vision tower's ``image_size`` (vLLM
tiles at the latter and counts tokens at the former).
"""

from __future__ import annotations

import json
from pathlib import Path

from operators.vlm.registry import ModelFamily, register

#: Language-model architectures vLLM's ``InternVLChatModel`` can host (vLLM implements each natively).
SERVED_LLMS = ("LlamaForCausalLM", "InternLM2ForCausalLM", "Phi3ForCausalLM", "Qwen2ForCausalLM",
               "Qwen3ForCausalLM", "Qwen3MoeForCausalLM", "GptOssForCausalLM")

_SYSTEM_V1 = ("你是由上海人工智能实验室联合商汤科技开发的书生多模态大模型，"
              "英文名叫InternVL, 是一个有用无害的人工智能助手。")
_SYSTEM_V2_5 = ("你是书生·万象，英文名是InternVL，"
                "是由上海人工智能实验室、清华大学及多家合作单位联合开发的多模态大语言模型。")

#: template name -> (system block, user turn, assistant opening, stop, default system message).
#: The "MPT" style of conversation.py: system text + sep, then role + message + sep per turn; the
#: system block is written even for an empty system message.
TEMPLATES: dict[str, tuple[str, str, str, str, str]] = {
    "Hermes-2": ("<|im_start|>system\n{system}<|im_end|>", "<|im_start|>user\n{user}<|im_end|>",
                 "<|im_start|>assistant\n", "<|im_end|>", _SYSTEM_V1),
    "internlm2-chat": ("<|im_start|>system\n{system}<|im_end|>", "<|im_start|>user\n{user}<|im_end|>",
                       "<|im_start|>assistant\n", "<|im_end|>", _SYSTEM_V1),
    "phi3-chat": ("<|system|>\n{system}<|end|>", "<|user|>\n{user}<|end|>", "<|assistant|>\n", "<|end|>", _SYSTEM_V1),
    "internvl2_5": ("<|im_start|>system\n{system}<|im_end|>\n", "<|im_start|>user\n{user}<|im_end|>\n",
                    "<|im_start|>assistant\n", "<|im_end|>", _SYSTEM_V2_5),
    # InternVL-Chat-V1-1: the INTERNVL_ZH style, seps (" ", "</s>"), no system message.
    "internvl_zh": ("{system} ", "<human>: {user} ", "<bot>:", "</s>", ""),
}


def _config(model) -> dict:
    """The checkpoint's ``config.json`` (a local directory, or the hub's file through transformers' cache)."""
    path = Path(model.model_id) / "config.json"
    if path.is_file():
        return json.loads(path.read_text())
    from transformers import PretrainedConfig

    return PretrainedConfig.get_config_dict(model.model_id, revision=model.revision,
                                            trust_remote_code=model.trust_remote_code)[0]


def refusal(config: dict) -> str | None:
    """Why vLLM cannot serve a checkpoint with this ``config.json`` as its card's code does; None if it can."""
    archs = config.get("architectures") or []
    if archs != ["InternVLChatModel"]:
        return (f"architecture {archs} is not InternVLChatModel (vLLM's InternVL implementation serves only that "
                "layout; InternVL-Chat V1.0 checkpoints are LLaVA-format, InternVL-C/G are retrieval models)")
    llm = (config.get("llm_config") or {}).get("architectures") or [None]
    if llm[0] not in SERVED_LLMS:
        return f"language model {llm[0]} is not one vLLM's InternVLChatModel can host ({', '.join(SERVED_LLMS)})"
    template = config.get("template")
    if template not in TEMPLATES:
        return f"conversation template {template!r} is not one this family renders ({', '.join(TEMPLATES)})"
    if config.get("use_backbone_lora") or config.get("use_llm_lora"):
        return "the weights hold unmerged LoRA (use_backbone_lora / use_llm_lora), which vLLM does not apply"
    vision = (config.get("vision_config") or {}).get("image_size")
    forced = config.get("force_image_size")
    if forced and vision and forced != vision:
        return (f"force_image_size {forced} differs from vision_config.image_size {vision}: vLLM tiles at the "
                "latter and counts image tokens at the former")
    return None


def _for_model(family: ModelFamily, model) -> ModelFamily:
    config = _config(model)
    reason = refusal(config)
    if reason:
        raise ValueError(f"vLLM cannot serve this checkpoint: {reason}")
    system, user, assistant, stop, default_system = TEMPLATES[config["template"]]
    size = int(config.get("force_image_size") or config["vision_config"]["image_size"])
    tiles = int(config.get("max_dynamic_patch", 6)) if config.get("dynamic_image_size") else 1
    return family.replace(
        prompt_template="{system}" + user + assistant, system_block=system,
        system_always=True, default_system_prompt=default_system, stop=(stop,),
        # dynamic_preprocess resizes to at most max_dynamic_patch tiles of the input size on a side.
        max_side=size * tiles,
    )


def _make_tiny(directory: Path) -> None:
    from operators.vlm.tiny.internvl_chat import make_tiny_internvl_chat

    make_tiny_internvl_chat(directory)


INTERNVL_CHAT = register(
    ModelFamily(
        name="internvl-chat",
        architectures=("InternVLChatModel",),
        model_card="https://huggingface.co/OpenGVLab/InternVL2_5-8B",
        image_placeholder="<image>",
        # The checkpoint's own template replaces these (for_model); internvl2_5's as the default.
        prompt_template="{system}<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n",
        system_block="<|im_start|>system\n{system}<|im_end|>\n",
        system_always=True,
        default_system_prompt=_SYSTEM_V2_5,
        stop=("<|im_end|>",),
        max_side=448 * 12,
        make_tiny=_make_tiny,
        for_model=_for_model,
        # transformers has no InternVLChatModel (only the checkpoints' remote code does).
        transformers_reference=False,
    )
)
