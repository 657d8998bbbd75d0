"""The published checkpoints' SentencePiece tokenizer, loadable without remote code.

internlm/internlm-xcomposer2-* ship ``tokenizer.model`` (SentencePiece) and a
``tokenizer_config.json`` naming the remote-code class ``InternLMXComposer2Tokenizer``. This
class reads the same file with transformers' SentencePiece backend, prepends BOS like the
original (``add_bos_token``), and adds ``<ImageHere>`` as a special token: upstream splits the
prompt on that text and embeds the parts separately; vLLM needs one placeholder token per image
instead (its id may be past the embedding table: the model masks image positions to id 0
before the lookup). ``[UNUSED_TOKEN_145]`` / ``[UNUSED_TOKEN_146]`` come from the checkpoint's
``added_tokens_decoder`` as in the original.
"""

from __future__ import annotations

from transformers.tokenization_utils_sentencepiece import SentencePieceBackend

from operators.vlm.xcomposer2.config import IMAGE_TOKEN


class InternLMXComposer2Tokenizer(SentencePieceBackend):
    """SentencePiece tokenizer of InternLM2 / XComposer2 checkpoints (``tokenizer.model``)."""

    vocab_files_names = {"vocab_file": "tokenizer.model"}
    model_input_names = ["input_ids", "attention_mask"]
    is_fast = False

    def __init__(self, vocab_file: str, unk_token: str = "<unk>", bos_token: str = "<s>", eos_token: str = "</s>",
                 pad_token: str = "</s>", add_bos_token: bool = True, add_eos_token: bool = False, **kwargs):
        self.vocab_file = vocab_file
        self.add_bos_token = add_bos_token
        self.add_eos_token = add_eos_token
        kwargs.pop("auto_map", None)
        super().__init__(vocab_file=vocab_file, unk_token=unk_token, bos_token=bos_token, eos_token=eos_token,
                         pad_token=pad_token, **kwargs)
        if IMAGE_TOKEN not in self.get_vocab():
            self.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})

    def build_inputs_with_special_tokens(self, token_ids_0: list[int], token_ids_1: list[int] | None = None):
        bos = [self.bos_token_id] if self.add_bos_token else []
        eos = [self.eos_token_id] if self.add_eos_token else []
        out = bos + token_ids_0 + eos
        if token_ids_1 is not None:
            out += bos + token_ids_1 + eos
        return out


def register_tokenizer() -> None:
    """Let ``AutoTokenizer`` resolve the checkpoints' tokenizer class without remote code (idempotent)."""
    from transformers import AutoTokenizer

    from operators.vlm.xcomposer2.config import InternLMXComposer2Config

    try:
        AutoTokenizer.register(InternLMXComposer2Config, slow_tokenizer_class=InternLMXComposer2Tokenizer)
    except ValueError:
        pass  # already registered in this process
