"""vLLM against the v1 golden file: shared by the CPU parity test and the GPU tier."""

from __future__ import annotations

import json

from tests.conftest import ROOT
from tests.golden_xcomposer.oracle import images

GOLDEN_PATH = ROOT / "tests/data/goldens/xcomposer-v1.json"


def golden() -> dict:
    return json.loads(GOLDEN_PATH.read_text())


def compare_with_golden(llm, variant: str, prepared_from: str | None = None) -> tuple[float, int, int]:
    """Run ``variant``'s golden cases through ``llm`` (one batch, greedy) and compare.

    ``prepared_from``: a model directory: send each image as the pipeline does, as the model input the
    family's CPU preparer makes for that model (``operators/vlm/xcomposer/image.py``), instead of the
    raw image the plugin's processor prepares.

    Asserts, per case: the prompt token ids, the number of image positions and the greedy tokens exactly;
    every golden top entry must be among vLLM's top entries of the same step.

    Returns:
        (max |d logprob| over the compared entries, entries compared, cases).
    """
    from vllm import SamplingParams

    from operators.vlm.registry import get_family

    gold = golden()
    cases = gold["variants"][variant]
    image_id = llm.get_tokenizer().convert_tokens_to_ids("<ImageHere>")
    pics = images()
    prompts = []
    for case in cases:
        text = get_family(case["family"]).build_prompt(case["instruction"], case["system"],
                                                       num_images=len(case["images"]))
        p: dict = {"prompt": text}
        if case["images"] and prepared_from:
            from operators.vlm.engine import GenerationRequest, PreparedImage
            from operators.vlm.vllm_engine import vllm_prompt
            from schemas.spec import ModelConfig

            prepare = get_family(case["family"]).cpu_prepare(
                ModelConfig.model_validate({"family": case["family"], "model_id": prepared_from}))
            image = PreparedImage(prepare(pics[case["images"][0]])[0])
            p = vllm_prompt(GenerationRequest(case["name"], text, (image,), (f"{case['name']}-0",)), None)
        elif case["images"]:
            p["multi_modal_data"] = {"image": pics[case["images"][0]]}
        prompts.append(p)
    params = SamplingParams(max_tokens=gold["max_new_tokens"], temperature=0.0, ignore_eos=True,
                            logprobs=gold["top"], prompt_logprobs=1)
    worst, compared = 0.0, 0
    for case, out in zip(cases, llm.generate(prompts, params), strict=True):
        label = f"{variant}/{case['name']}"
        ids = list(out.prompt_token_ids)
        assert ids == case["prompt_ids"], f"{label}: prompt token ids"
        assert ids.count(image_id) == sum(case["image_tokens"]), f"{label}: image positions"
        assert list(out.outputs[0].token_ids) == case["greedy"], f"{label}: greedy tokens"
        for i, token, lp in case["prompt_logprobs"]:
            worst = max(worst, abs(out.prompt_logprobs[i][token].logprob - lp))
            compared += 1
        for step, got in zip(case["steps"], out.outputs[0].logprobs, strict=True):
            assert all(token in got for token, _ in step["top"]), f"{label}: top entries differ"
            for token, lp in step["top"]:
                worst = max(worst, abs(got[token].logprob - lp))
                compared += 1
    return worst, compared, len(cases)
