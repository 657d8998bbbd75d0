"""A small byte-level BPE tokenizer trained locally, saved as ``PreTrainedTokenizerFast``."""

from __future__ import annotations

import random
from pathlib import Path

_WORDS = (
    "a an the this that image photo picture shows showing of in on with and or at by near under over "
    "person man woman child dog cat bird horse car bus train boat plane tree flower grass sky cloud sun "
    "water sea river mountain road street building house window door table chair cup plate food fruit "
    "red green blue yellow black white brown gray orange purple pink large small tall short old young "
    "sitting standing walking running holding wearing looking playing eating drinking flying riding "
    "left right front back top bottom center background foreground detailed description scene color "
    "light dark bright shadow texture pattern text sign letter number coin rocket astronaut coffee "
    "describe question answer what where who how many is are there it they one two three four five"
).split()


def training_corpus(num_lines: int = 4000, seed: int = 0) -> list[str]:
    """Deterministic English-like lines for BPE training."""
    rng = random.Random(seed)
    lines = []
    for _ in range(num_lines):
        n = rng.randint(4, 16)
        words = [rng.choice(_WORDS) for _ in range(n)]
        words[0] = words[0].capitalize()
        lines.append(" ".join(words) + rng.choice([".", "?", "!", ","]))
    return lines


def build_tokenizer(
    directory: Path,
    *,
    special_tokens: list[str],
    eos_token: str,
    pad_token: str,
    bos_token: str | None = None,
    unk_token: str | None = None,
    chat_template: str | None = None,
    extra_special_tokens: dict[str, str] | None = None,
    vocab_size: int = 1024,
):
    """Train a byte-level BPE tokenizer and save it to ``directory``.

    Returns:
        The ``PreTrainedTokenizerFast`` that was saved.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=unk_token))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(training_corpus(), trainer=trainer)
    kwargs = dict(tokenizer_object=tok, eos_token=eos_token, pad_token=pad_token)
    if bos_token:
        kwargs["bos_token"] = bos_token
    if unk_token:
        kwargs["unk_token"] = unk_token
    if extra_special_tokens:
        kwargs["extra_special_tokens"] = extra_special_tokens
    fast = PreTrainedTokenizerFast(**kwargs)
    if chat_template:
        fast.chat_template = chat_template
    directory.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(directory))
    return fast
