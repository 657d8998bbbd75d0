"""Beam search over an engine that returns each step's top log-probabilities (vLLM's offer, made async).

vLLM 0.24 / 0.29 offer beam search as a loop over one-token requests (``vllm.LLM.beam_search``,
``BeamSearchParams``; the online server's ``beam_search``): each step re-submits every beam's
prompt plus its tokens (prefix caching keeps that cheap) and asks for ``2 * beams`` log-probs.
This is that loop for the async engine, scored as Hugging Face ``generate(num_beams=k,
do_sample=False)`` does, which is what the model cards call: candidates are the top ``2k`` of
(beam score + token log-prob); one ending in a stop token becomes a finished hypothesis when its
rank is below ``k``, scored ``sum_logprobs / generated_len ** length_penalty`` (the stop token
counted); the others refill ``k`` running beams; the search ends at ``max_tokens`` or when ``k``
hypotheses are finished and no running beam can beat the worst of them at its current length
(``early_stopping=False``); running beams then compete as hypotheses. vLLM's own loop differs
(it divides by the prompt's length too and stops only at ``max_tokens``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

#: ``step(tokens) -> {token_id: logprob}``: the top log-probabilities after the prompt plus ``tokens``.
Step = Callable[[list[int]], Awaitable[dict[int, float]]]


@dataclass(frozen=True)
class BeamResult:
    tokens: list[int]  # generated tokens, the stop token included when one ended the hypothesis
    score: float
    stopped: bool


def _score(cum: float, length: int, length_penalty: float) -> float:
    return cum / (max(length, 1) ** length_penalty)


async def beam_search(step: Step, *, beams: int, max_tokens: int, stop_ids: Iterable[int], min_tokens: int = 0,
                      length_penalty: float = 1.0, ignore_eos: bool = False) -> BeamResult:
    """The best hypothesis of a ``beams``-wide search (see the module docstring)."""
    stop = set() if ignore_eos else set(stop_ids)
    running: list[tuple[float, list[int]]] = [(0.0, [])]
    finished: list[tuple[float, list[int]]] = []  # (score, tokens)
    for length in range(1, max_tokens + 1):
        tables = await asyncio.gather(*(step(tokens) for _, tokens in running))
        candidates = sorted(((cum + lp, tokens + [tid]) for (cum, tokens), table in zip(running, tables, strict=True)
                             for tid, lp in table.items()), key=lambda c: -c[0])[:2 * beams]
        running = []
        for rank, (cum, tokens) in enumerate(candidates):
            if tokens[-1] in stop and length > min_tokens:
                if rank < beams:
                    finished.append((_score(cum, length, length_penalty), tokens))
                continue
            if len(running) < beams:
                running.append((cum, tokens))
        finished = sorted(finished, key=lambda h: -h[0])[:beams]
        if not running:
            break
        best_running = _score(running[0][0], length, length_penalty)
        if len(finished) == beams and finished[-1][0] >= best_running:
            break
    pool = finished + [(_score(cum, len(tokens), length_penalty), tokens) for cum, tokens in running]
    score, tokens = max(pool, key=lambda h: h[0])
    return BeamResult(tokens, score, bool(tokens) and tokens[-1] in stop)
