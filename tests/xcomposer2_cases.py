"""XComposer2 parity cases: a vLLM engine against the plain PyTorch reference and against the goldens.

Shared by the CPU parity test (tests/integration/test_xcomposer2_parity.py) and the GPU tier
(tests/gpu/): the same cases, compared the same way, on either device. The reference comparison
checks the plugin's model math; the golden comparison (``tests/data/goldens/``, numbers the public
remote code produced, ``tests/goldens/make_goldens.py``; :mod:`tests.goldens.compare`) checks what a
user of the cards gets: prompt tokens, image-token counts, greedy tokens, log-probabilities.
"""

from __future__ import annotations

from operators.vlm.families.xcomposer2 import card_prompt_ids
from operators.vlm.registry import get_family

MAX_TOKENS = 6
TOP = 20
#: 4KHD tiles per image in the reference comparison, asked per request (the goldens carry their own hd_num per
#: case). Not an engine-wide setting: vLLM sizes its encoder cache from the engine-wide hd_num, and the golden
#: cases at hd_num 25 (3817 image tokens) must fit in it.
PARITY_HD_NUM = 4


def _images():
    from PIL import Image, ImageDraw

    def picture(size, colour, seed):
        im = Image.new("RGB", size, colour)
        d = ImageDraw.Draw(im)
        for k in range(6):
            x, y = (seed * 37 + k * 53) % size[0], (seed * 11 + k * 29) % size[1]
            d.ellipse([x, y, x + size[0] // 4, y + size[1] // 4], fill=((k * 80) % 256, 255 - k * 40, seed * 60 % 256))
        return im

    return [picture((150, 90), (200, 30, 30), 1), picture((64, 200), (20, 160, 40), 2),
            picture((300, 300), (30, 30, 220), 3), picture((90, 40), (240, 240, 10), 4)]


def _cases(variant: str):
    fam = get_family(f"xcomposer2-{variant}")
    ims = _images()
    long_text = "Describe the image in detail, the colors, the shapes and where each one is, left or right."
    return [
        ("text-only", fam.build_prompt("What is in the sky?", "", num_images=0), []),
        ("one-image", fam.build_prompt("Describe the image.", "", num_images=1), [ims[0]]),
        ("one-image-long", fam.build_prompt(long_text, None, num_images=1), [ims[1]]),
        ("two-images", fam.build_prompt("Compare the two images.", "", num_images=2), [ims[2], ims[3]]),
        ("one-image-short", fam.build_prompt("What?", "", num_images=1), [ims[3]]),
    ]


def compare_with_reference(llm, ref, tok, variant: str,
                           prepared_from: str | None = None) -> tuple[float, int, int, int]:
    """Run every case through ``llm`` greedily and compare with ``ref``.

    Asserts, per case: the expanded prompt token by token and the greedy tokens exactly.

    Args:
        prepared_from: a model directory: send each image as the pipeline does, as the model input the
            family's CPU preparer makes for that model (``operators/vlm/xcomposer2/cpu.py``), instead
            of the raw image the plugin's processor prepares itself.

    Returns:
        (max |d logprob| over every compared entry, entries compared, greedy tokens agreeing, greedy tokens).
    """
    import torch
    from vllm import SamplingParams

    image_id = tok.convert_tokens_to_ids("<ImageHere>")
    cases = _cases(variant)
    prompts = []
    for name, text, images in cases:
        p: dict = {"prompt_token_ids": card_prompt_ids(text, tok)}
        if images and prepared_from:
            from operators.vlm.engine import GenerationRequest, PreparedImage
            from operators.vlm.vllm_engine import vllm_prompt
            from schemas.spec import ModelConfig

            # The preparer the pipeline's prepare stage gets, at the hd_num the engine and reference use.
            model = ModelConfig.model_validate({"family": f"xcomposer2-{variant}", "model_id": prepared_from,
                                                "hd_num": PARITY_HD_NUM if variant == "4khd" else None})
            prepare = get_family(model.family).cpu_prepare(model)
            keys = tuple(f"{name}-{k}" for k in range(len(images)))
            request = GenerationRequest(name, text, tuple(PreparedImage(prepare(im)[0]) for im in images), keys)
            p = vllm_prompt(request, p["prompt_token_ids"])
        elif images:
            p["multi_modal_data"] = {"image": images if len(images) > 1 else images[0]}
            if variant == "4khd":  # per request: the engine-wide hd_num stays the goldens' (its encoder cache too)
                p["mm_processor_kwargs"] = {"hd_num": PARITY_HD_NUM}
        prompts.append(p)
    params = SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0, ignore_eos=True, logprobs=len(tok),
                            prompt_logprobs=TOP)
    outs = llm.generate(prompts, params)

    worst, compared, agree, total = 0.0, 0, 0, 0
    for (name, text, images), out in zip(cases, outs, strict=True):
        ids = card_prompt_ids(text, tok)
        expanded, greedy, _ = ref.greedy(ids, images, image_id, MAX_TOKENS)
        assert list(out.prompt_token_ids) == expanded, f"{name}: placeholder expansion differs"
        got = list(out.outputs[0].token_ids)
        agree += sum(a == b for a, b in zip(got, greedy, strict=False))
        total += len(greedy)
        assert got == greedy, f"{name}: vLLM {got} vs reference {greedy}"
        embeds = [ref.encode_image(im) for im in images]
        x, mask = ref.embed(expanded + greedy[:-1], embeds, image_id)
        ref_lp = torch.log_softmax(ref.logits_from_embeds(x, mask), -1)
        n = len(expanded)
        for i in range(1, n):
            for token, lp in out.prompt_logprobs[i].items():
                worst = max(worst, abs(lp.logprob - float(ref_lp[i - 1, token].float())))
                compared += 1
        for j, step in enumerate(out.outputs[0].logprobs):
            assert len(step) >= len(tok) - 1
            for token, lp in step.items():
                worst = max(worst, abs(lp.logprob - float(ref_lp[n - 1 + j, token].float())))
                compared += 1
    return worst, compared, agree, total

