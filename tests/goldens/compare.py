"""The tests' side of the goldens: the cases through a vLLM engine, compared with what the public code gave.

Used by the XComposer2 parity engines (CPU and GPU tiers) and the InternVL chat engine; the numbers
come from ``tests/goldens/make_goldens.py`` (``tests/data/goldens/<family>.json``).
"""

from __future__ import annotations

import gc
import json

from tests.conftest import ROOT


def load_golden(family: str) -> dict:
    """The golden file of ``family`` (``tests/data/goldens/<family>.json``)."""
    return json.loads((ROOT / "tests" / "data" / "goldens" / f"{family}.json").read_text())


def golden_prompts(golden: dict, family, tok, image_token: str, encode=None) -> list[tuple[str, dict, list[int]]]:
    """(case name, vLLM prompt, expected expanded prompt ids) per golden case, the prompt built by ``family``.

    Asserts, per case, that the family's own prompt tokens (before image expansion) are the golden's.
    ``encode(text, tok)``: the family's tokenisation (None: text prompts, checked after expansion).
    """
    from tests.goldens.cases import image

    image_id = tok.convert_tokens_to_ids(image_token) if image_token else None
    out = []
    for name, case in golden["cases"].items():
        text = family.build_prompt(case["instruction"], case["system"], num_images=len(case["images"]))
        expected, collapsed = [], []
        for item in case["prompt"]:
            if isinstance(item, dict):
                expected.extend([image_id] * item["image"])
                collapsed.append(image_id)
            else:
                expected.append(item)
                collapsed.append(item)
        prompt: dict
        if encode is not None:
            ids = encode(text, tok)
            assert ids == collapsed, f"{name}: prompt tokens differ from the card's chat()"
            prompt = {"prompt_token_ids": ids}
        else:
            prompt = {"prompt": text}
        images = [image(n) for n in case["images"]]
        if images:
            prompt["multi_modal_data"] = {"image": images if len(images) > 1 else images[0]}
        hd_num = case.get("hd_num") or golden.get("hd_num_default")
        if hd_num:
            prompt["mm_processor_kwargs"] = {"hd_num": hd_num}
        out.append((name, prompt, expected))
    return out


def image_runs(ids: list[int], image_id: int) -> list[int]:
    """Lengths of the runs of ``image_id`` in ``ids``: the image-token count of each image."""
    runs, n = [], 0
    for t in [*ids, None]:
        if t == image_id:
            n += 1
        elif n:
            runs.append(n)
            n = 0
    return runs


def _first_difference(got: list[int], want: list[int]) -> int | None:
    if got == want:
        return None
    return next((i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b), min(len(got), len(want)))


def compare_with_goldens(llm, tok, golden: dict, prompts: list[tuple[str, dict, list[int]]],
                         image_id: int) -> dict[str, dict]:
    """Run the golden cases through ``llm`` greedily; per case: tokens equal, greedy equal, max |d logprob|.

    Log-probs compared: the golden's top entries at every generated step, and the prompt token at every
    text position after the first (image positions hold embeddings, not tokens). Image-token counts:
    the runs of image tokens on both sides (adjacent images make one run; the golden's per-image
    counts are in the expected ids, which ``tokens_equal`` compares).
    """
    from vllm import SamplingParams

    params = SamplingParams(max_tokens=golden["max_new_tokens"], temperature=0.0, ignore_eos=True,
                            logprobs=len(tok), prompt_logprobs=1)
    outs = llm.generate([p for _, p, _ in prompts], params)
    report = {}
    for (name, _, expected), out in zip(prompts, outs, strict=True):
        case, got = golden["cases"][name], list(out.prompt_token_ids)
        worst = 0.0
        for pos, want in enumerate(case["prompt_logprobs"], start=1):
            if want is not None and pos < len(got):
                worst = max(worst, abs(out.prompt_logprobs[pos][got[pos]].logprob - want))
        for step, top in zip(out.outputs[0].logprobs, case["step_logprobs"], strict=False):
            for token, want in top.items():
                worst = max(worst, abs(step[int(token)].logprob - want))
        report[name] = {"tokens_equal": got == expected, "first_difference": _first_difference(got, expected),
                        "image_tokens_equal": image_runs(got, image_id) == image_runs(expected, image_id),
                        "image_tokens": case["image_tokens"],
                        "greedy_equal": list(out.outputs[0].token_ids) == case["greedy"],
                        "max_dlogprob": worst, "prompt_tokens": len(expected)}
    return report


def shutdown_llm(llm) -> None:
    """Stop a ``vllm.LLM``'s engine process now (not when the garbage collector gets to it)."""
    core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
    if core is not None and hasattr(core, "shutdown"):
        core.shutdown()
    del llm
    gc.collect()


def assert_matches(report: dict[str, dict], label: str, tol: float) -> None:
    """Print ``report`` (:func:`compare_with_goldens`) and assert every case matched the public code."""
    for name, r in report.items():
        print(f"\n{label} golden {name}: {r}")
    for name, r in report.items():
        assert r["tokens_equal"] and r["image_tokens_equal"], f"{name}: prompt tokens differ from chat(): {r}"
        assert r["greedy_equal"], f"{name}: greedy tokens differ from the public code"
        assert r["max_dlogprob"] < tol, f"{name}: log-probs differ by {r['max_dlogprob']:.2e}"
