"""The Hugging Face ``generate`` loop over the v1 reference: greedy, sampling, beam search and beam sampling.

ShareGPT4V built its captions with ``internlm_model.generate(inputs_embeds=..., num_beams=3, do_sample=True,
repetition_penalty=1.5, length_penalty=1.0, min_length=1, max_length=500)`` on a batch of images that share
one prompt length. :func:`generate` does what transformers (4.33, the version that script pinned) does for
those settings, on a batch of equal-length prompts with a KV cache:

* scores are ``log_softmax(logits)``; the repetition penalty is applied to them (``s < 0``: ``s * p``, else
  ``s / p``) over the tokens generated so far (upstream's ``input_ids`` hold only generated tokens when
  generating from embeddings); before ``min_new_tokens``, EOS scores are ``-inf``;
* beams: the ``2 * num_beams`` best (or, sampling, drawn from ``softmax``) continuations of all beams of an
  item; an EOS among the first ``num_beams`` ends a hypothesis scored ``sum logprob / len ** length_penalty``;
  an item is done when its worst kept hypothesis beats the best running one (``early_stopping=False``).

Not the point here: exact sampled tokens (torch's generator is not transformers'); the benchmark uses this
as the per-batch loop it times, and the transformers engine for greedy and sampled single sequences.
"""

from __future__ import annotations

import torch


def _penalise(scores: torch.Tensor, generated: list[list[int]], penalty: float) -> torch.Tensor:
    if penalty == 1.0:
        return scores
    for row, seen in enumerate(generated):
        if seen:
            idx = torch.tensor(sorted(set(seen)))
            vals = scores[row, idx]
            scores[row, idx] = torch.where(vals < 0, vals * penalty, vals / penalty)
    return scores


class _Hypotheses:
    def __init__(self, num_beams: int, length_penalty: float):
        self.num_beams, self.length_penalty = num_beams, length_penalty
        self.kept: list[tuple[float, list[int]]] = []

    def add(self, tokens: list[int], sum_logprob: float) -> None:
        score = sum_logprob / (max(len(tokens), 1) ** self.length_penalty)
        if len(self.kept) < self.num_beams or score > min(s for s, _ in self.kept):
            self.kept.append((score, tokens))
            self.kept.sort(key=lambda h: -h[0])
            del self.kept[self.num_beams:]

    def done(self, best_running: float, cur_len: int) -> bool:
        if len(self.kept) < self.num_beams:
            return False
        return min(s for s, _ in self.kept) >= best_running / (max(cur_len, 1) ** self.length_penalty)


@torch.no_grad()
def generate(lm, embeds: torch.Tensor, *, max_new_tokens: int, eos_token_id: int | list[int] | None = None,
             num_beams: int = 1, do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0,
             repetition_penalty: float = 1.0, length_penalty: float = 1.0, min_new_tokens: int = 0,
             generator: torch.Generator | None = None) -> list[list[int]]:
    """Generated token ids (EOS included when reached) for each row of ``embeds`` ``[B, T, H]``.

    ``lm(embeds, past, start) -> (logits [B, T, V], past)`` is the reference language model.
    """
    eos = sorted({eos_token_id} if isinstance(eos_token_id, int) else set(eos_token_id or ()))
    b = embeds.shape[0]
    k = max(1, num_beams)
    x = embeds.repeat_interleave(k, 0)  # [B*k, T, H], beams of an item adjacent
    logits, past = lm(x)
    start = x.shape[1]
    beam_scores = torch.zeros(b, k)
    if k > 1:
        beam_scores[:, 1:] = -1e9  # only the first beam is live at step 0, as in transformers
    seqs: list[list[int]] = [[] for _ in range(b * k)]
    hyps = [_Hypotheses(k, length_penalty) for _ in range(b)]
    done = [False] * b
    for step in range(max_new_tokens):
        scores = torch.log_softmax(logits[:, -1].float(), -1)
        scores = _penalise(scores, seqs, repetition_penalty)
        if eos and step < min_new_tokens:
            scores[:, eos] = float("-inf")
        if k == 1:
            nxt = _pick(scores, do_sample, temperature, top_p, generator)
            for row in range(b):
                if not done[row]:
                    seqs[row].append(int(nxt[row]))
                    done[row] = int(nxt[row]) in eos
            if all(done):
                break
            order = torch.arange(b)
        else:
            order, nxt = _beam_step(scores, beam_scores, seqs, hyps, done, k, eos, do_sample, temperature,
                                    generator, step)
            if all(done):
                break
        past = [(pk[order], pv[order]) for pk, pv in past]
        logits, past = lm(lm.model.embed_tokens(nxt.view(-1, 1)), past, start)
        start += 1
    if k == 1:
        return seqs[:b]
    out = []
    for item in range(b):
        if not hyps[item].kept or len(hyps[item].kept) < k:
            for j in range(k):
                hyps[item].add(seqs[item * k + j], float(beam_scores[item, j]))
        out.append(hyps[item].kept[0][1])
    return out


def _pick(scores, do_sample, temperature, top_p, generator) -> torch.Tensor:
    if not do_sample:
        return scores.argmax(-1)
    probs = torch.softmax(scores / max(temperature, 1e-5), -1)
    sorted_p, idx = probs.sort(-1, descending=True)
    sorted_p = sorted_p * ((sorted_p.cumsum(-1) - sorted_p) < top_p)
    choice = torch.multinomial(sorted_p / sorted_p.sum(-1, keepdim=True), 1, generator=generator)
    return idx.gather(-1, choice).squeeze(-1)


def _beam_step(scores, beam_scores, seqs, hyps, done, k, eos, do_sample, temperature, generator, step):
    b, vocab = beam_scores.shape[0], scores.shape[-1]
    total = (scores + beam_scores.view(-1, 1)).view(b, k * vocab)
    if do_sample:
        probs = torch.softmax(total / max(temperature, 1e-5), -1)
        cand = torch.multinomial(probs, 2 * k, generator=generator)
        cand_scores = total.gather(-1, cand)
        cand_scores, order = cand_scores.sort(-1, descending=True)
        cand = cand.gather(-1, order)
    else:
        cand_scores, cand = total.topk(2 * k, -1)
    order = torch.empty(b * k, dtype=torch.long)
    nxt = torch.empty(b * k, dtype=torch.long)
    new_seqs: list[list[int]] = []
    for item in range(b):
        picked = 0
        for rank in range(2 * k):
            beam, token = int(cand[item, rank]) // vocab, int(cand[item, rank]) % vocab
            row = item * k + beam
            score = float(cand_scores[item, rank])
            if done[item]:
                break
            if token in eos:
                if rank < k:
                    hyps[item].add(seqs[row] + [token], score)
                continue
            order[item * k + picked], nxt[item * k + picked] = row, token
            beam_scores[item, picked] = score
            new_seqs.append(seqs[row] + [token])
            picked += 1
            if picked == k:
                break
        if done[item] or picked < k:  # a finished item keeps stepping dummies, as transformers pads it
            for j in range(picked, k):
                order[item * k + j], nxt[item * k + j] = item * k, eos[0] if eos else 0
                new_seqs.append(seqs[item * k] + [nxt[item * k + j].item()])
        done[item] = done[item] or hyps[item].done(float(beam_scores[item].max()), step + 1)
    seqs[:] = new_seqs
    return order, nxt
