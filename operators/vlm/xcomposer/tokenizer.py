"""The published v1 checkpoints' SentencePiece tokenizer, loadable without remote code.

internlm/internlm-xcomposer-* and Lin-Chen/ShareCaptioner ship ``tokenizer.model`` (SentencePiece, 103168
pieces, ``<TOKENS_UNUSED_0>`` / ``<TOKENS_UNUSED_1>`` = 103027 / 103028 as ordinary pieces) and a
``tokenizer_config.json`` naming the remote-code class ``InternLMXComposerTokenizer``. This class of the
same name reads that file with transformers' SentencePiece backend (BOS prepended, as upstream's
``add_special_tokens=True`` on the first segment) and adds vlmbatch's ``<ImageHere>`` placeholder, exactly
as the XComposer2 tokenizer does (``operators/vlm/xcomposer2/tokenizer.py``).

Upstream never tokenizes the placeholder: it encodes the text before and after the image separately and
concatenates embeddings. Encoding the joined prompt can differ from that at a segment boundary where the
SentencePiece model would merge across it; the golden fixtures check the tiny models' ids, and the real
``tokenizer.model`` could not be checked here (see the issue's closing note).
"""

from __future__ import annotations

from operators.vlm.xcomposer2.tokenizer import InternLMXComposer2Tokenizer


class InternLMXComposerTokenizer(InternLMXComposer2Tokenizer):
    """SentencePiece tokenizer of XComposer v1 checkpoints (``tokenizer.model``)."""


def register_tokenizer() -> None:
    """Let ``AutoTokenizer`` resolve the checkpoints' tokenizer class without remote code (idempotent)."""
    from transformers import AutoTokenizer

    from operators.vlm.xcomposer.config import InternLMXComposerConfig

    try:
        AutoTokenizer.register(InternLMXComposerConfig, slow_tokenizer_class=InternLMXComposerTokenizer)
    except ValueError:
        pass  # already registered in this process
