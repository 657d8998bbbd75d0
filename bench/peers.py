"""The peers' sides: bare ``vllm.LLM.generate``, Ray Data's LLM processor, the model cards' loop.

Each side gets the same model, images, prompt and sampling as the vlmbatch side
(:mod:`bench.pipeline_side`): the family's prompt from the registry, greedy decoding, exactly
``max_tokens`` new tokens with EOS ignored. Engine arguments come from the project's own
``engine_args`` so the two vLLM engines are configured alike.
"""

from __future__ import annotations

import base64
import shutil
import tempfile
import time

from bench.common import BenchParams, corpus_files, loadavg, make_corpus, peak_rss_mib
from bench.pipeline_side import MemorySampler


def _model_config(p: BenchParams):
    from schemas.spec import ModelConfig

    return ModelConfig.model_validate({
        "family": p.family, "model_id": p.resolved_model(),
        "engine": {"dtype": p.dtype, "max_model_len": p.max_model_len, "max_num_seqs": p.max_num_seqs,
                   "load_format": p.load_format},
    })


def _sampling(p: BenchParams):
    from schemas.spec import SamplingConfig

    return SamplingConfig(max_tokens=p.max_tokens, min_tokens=p.max_tokens, ignore_eos=True)


def _predecoded(p: BenchParams) -> list:
    """The corpus decoded exactly as the pipeline's decode stage does, in the form the pipeline hands
    the vLLM engine: H x W x 3 arrays (:func:`operators.vlm.engine.request_image`), or for a family
    with a CPU preparer the prepared model input (:class:`operators.vlm.engine.PreparedImage`).

    The same form on both sides: PIL images cost vLLM's front end ~15 % more per request (a copy
    for the cache key, a conversion in the processor), and raw images where the pipeline hands
    prepared ones would put the preparation into the floor's timed window.
    """
    from PIL import Image

    from operators.decode import decode_image
    from operators.vlm.engine import PreparedImage, request_image
    from operators.vlm.registry import get_family
    from schemas import columns as C
    from schemas.spec import DecodeConfig

    family = get_family(p.family)
    config = DecodeConfig()
    max_side = family.side_for(_model_config(p))  # the pipeline's decode cap when the spec sets none
    prepare = family.cpu_prepare(_model_config(p)) if family.cpu_prepare and p.cpu_prepare else None
    images = []
    for path in corpus_files(make_corpus(p.num_images, p.image_side)):
        d = decode_image(path.read_bytes(), config, max_side)
        if prepare is not None:
            rgb = Image.frombuffer("RGB", (d[C.WIDTH], d[C.HEIGHT]), d[C.PIXELS], "raw", "RGB", 0, 1)
            images.append(PreparedImage(prepare(rgb)[0]))
        else:
            images.append(request_image(d[C.PIXELS], d[C.WIDTH], d[C.HEIGHT], as_array=True))
    return images


def resolved_batched_tokens(p: BenchParams) -> int:
    """The ``max_num_batched_tokens`` vlmbatch's engine resolves for these settings (vLLM's offline
    defaults, ``UsageContext.LLM_CLASS``), so a peer's engine can be given the same step budget."""
    import vllm
    from vllm.usage.usage_lib import UsageContext

    from operators.vlm.registry import get_family
    from operators.vlm.vllm_engine import engine_args

    args = vllm.AsyncEngineArgs(**engine_args(_model_config(p), get_family(p.family)))
    return int(args.create_engine_config(UsageContext.LLM_CLASS).scheduler_config.max_num_batched_tokens)


def bare_vllm_side(p: BenchParams) -> dict:
    """``vllm.LLM`` in this process over pre-decoded images: the floor of what any pipeline can cost."""
    from bench.procstat import cpu_by_role, tree_cpu
    from operators.vlm.engine import GenerationRequest
    from operators.vlm.registry import get_family
    from operators.vlm.vllm_engine import engine_args, sampling_params, vllm_prompt

    family = get_family(p.family)
    images = _predecoded(p)
    prompt = family.build_prompt(p.prompt)
    ids = None
    if family.encode_prompt is not None:  # token ids as the card tokenises, as vlmbatch's engine sends them
        from transformers import AutoTokenizer

        ids = family.encode_prompt(prompt, AutoTokenizer.from_pretrained(p.resolved_model()))
    # Keyed like the pipeline's requests (an id per image), so neither side hashes image bytes.
    prompts = [vllm_prompt(GenerationRequest(f"img-{k}", prompt, (im,), (f"img-{k}",)), ids)
               for k, im in enumerate(images)]
    load_before = loadavg()
    with MemorySampler() as mem:
        t0 = time.perf_counter()
        import vllm

        llm = vllm.LLM(**engine_args(_model_config(p), family))
        t_load = time.perf_counter() - t0
        cpu_before, started = tree_cpu(), time.time()
        outs = llm.generate(prompts, sampling_params(_sampling(p), family), use_tqdm=False)
        wall = time.perf_counter() - t0
        spent = cpu_by_role(cpu_before, tree_cpu())
        by_process = mem.cpu_between(started, time.time())
    gen = [len(o.outputs[0].token_ids) for o in outs]
    return {
        "side": "bare_vllm", "images": len(images), "ok": sum(g == p.max_tokens for g in gen),
        "wall_s": round(wall, 3), "load_s": round(t_load, 3), "generate_s": round(wall - t_load, 3),
        "images_per_s": round(len(images) / wall, 4),
        "steady_images_per_s": round(len(images) / (wall - t_load), 4), "generated_tokens": sum(gen),
        "prompt_tokens_per_image": round(sum(len(o.prompt_token_ids) for o in outs) / len(outs), 1),
        "engine_cpu_s": spent, "steady_cpu_by_process": by_process, "sampler_cpu_s": round(mem.sampler_cpu_s, 3),
        "engine_cpu_ms_per_image": {k: round(1000 * v / len(images), 2) for k, v in spent.items()},
        "max_num_batched_tokens": llm.llm_engine.vllm_config.scheduler_config.max_num_batched_tokens,
        "driver_peak_rss_mib": peak_rss_mib(), **mem.summary(), "load_before": load_before, "load_after": loadavg(),
    }


def ray_llm_side(p: BenchParams) -> dict:
    """``ray.data.llm.build_processor`` with the vLLM engine, fed the way its docs show (data URLs).

    Configured like vlmbatch's engine: the same engine arguments and the same ``max_num_batched_tokens``
    (vlmbatch's engine resolves vLLM's offline default, which Ray's engine would not take: it builds
    its engine with the server's). Not alike, and stated: Ray's engine stage builds ``SamplingParams``
    from each row's Arrow-typed dict, so vLLM's ``RequestOutputKind.FINAL_ONLY`` (an enum, not an int)
    cannot be passed; its engine makes a cumulative output per request per token, vlmbatch's final
    outputs only. On CPU machines: one CPU bundle instead of a GPU, no Serve metrics, and more logical
    CPUs than cores, or its five stage actors deadlock on two cores.
    """
    import ray
    import ray.data
    from ray.data.llm import build_processor, vLLMEngineProcessorConfig

    from operators.vlm.registry import get_family
    from operators.vlm.vllm_engine import engine_args

    family = get_family(p.family)
    files = corpus_files(make_corpus(p.num_images, p.image_side))
    kwargs = engine_args(_model_config(p), family)
    kwargs["max_num_batched_tokens"] = batched = resolved_batched_tokens(p)
    model = kwargs.pop("model")
    kwargs.pop("tokenizer", None)
    system, prompt, n = family.default_system_prompt, p.prompt, p.max_tokens
    sink = tempfile.mkdtemp(prefix="vlmbatch-bench-rayllm-")
    load_before = loadavg()
    mem = MemorySampler().__enter__()
    t0 = time.perf_counter()
    on_gpu = p.gpus_per_engine > 0
    ray.init(num_cpus=None if on_gpu else 8, _node_ip_address="127.0.0.1", log_to_driver=False)
    try:
        config = vLLMEngineProcessorConfig(
            model_source=model, engine_kwargs=kwargs, batch_size=p.batch_size, concurrency=1,
            prepare_multimodal_stage=True, chat_template_stage=True, tokenize_stage=True, detokenize_stage=True,
            log_engine_metrics=False,
            placement_group_config=None if on_gpu else {"bundles": [{"CPU": 1}]},
        )

        def pre(row: dict) -> dict:
            url = "data:image/jpeg;base64," + base64.b64encode(row["bytes"]).decode()
            return {"messages": [{"role": "system", "content": system},
                                 {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                                              {"type": "text", "text": prompt}]}],
                    "sampling_params": {"max_tokens": n, "min_tokens": n, "temperature": 0.0, "ignore_eos": True}}

        def post(row: dict) -> dict:
            return {"generated_text": row["generated_text"], "num_generated_tokens": row["num_generated_tokens"],
                    "num_input_tokens": row["num_input_tokens"]}

        processor = build_processor(config, preprocess=pre, postprocess=post)
        ds = ray.data.read_binary_files([str(f) for f in files])
        processor(ds).write_parquet(sink)
        wall = time.perf_counter() - t0
        table = ray.data.read_parquet(sink).to_arrow_refs()
        import pyarrow as pa

        table = pa.concat_tables(ray.get(table))
    finally:
        ray.shutdown()
        mem.__exit__(None, None, None)
        shutil.rmtree(sink, ignore_errors=True)
    gen = table.column("num_generated_tokens").to_pylist()
    inp = table.column("num_input_tokens").to_pylist()
    return {
        "side": "ray_data_llm", "images": table.num_rows, "ok": sum(g == n for g in gen), "wall_s": round(wall, 3),
        "images_per_s": round(table.num_rows / wall, 4), "generated_tokens": sum(gen),
        "prompt_tokens_per_image": round(sum(inp) / len(inp), 1), "max_num_batched_tokens": batched,
        "output_kind": "cumulative", "driver_peak_rss_mib": peak_rss_mib(), **mem.summary(),
        "load_before": load_before, "load_after": loadavg(),
    }


def transformers_loop_side(p: BenchParams) -> dict:
    """The model cards' way: load with transformers, then open, process and ``generate`` one image at a time."""
    import torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from operators.vlm.registry import get_family

    family = get_family(p.family)
    files = corpus_files(make_corpus(p.num_images, p.image_side))
    prompt = family.build_prompt(p.prompt)
    load_before = loadavg()
    t0 = time.perf_counter()
    processor = AutoProcessor.from_pretrained(p.resolved_model())
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if p.load_format == "dummy":
        # Full-size shapes with random weights, as vLLM's dummy loader does: only the config is needed.
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(p.resolved_model())
        with torch.device(device):  # initialise on the GPU: an 8B random init on the CPU takes minutes
            model = AutoModelForImageTextToText.from_config(config, dtype=getattr(torch, p.dtype)).eval()
    else:
        model = AutoModelForImageTextToText.from_pretrained(p.resolved_model(), dtype=p.dtype).eval()
    model.to(device)
    t_load = time.perf_counter() - t0
    gen, prompt_tokens = [], []
    for path in files:
        image = Image.open(path).convert("RGB")
        inputs = processor(text=[prompt], images=[image], return_tensors="pt").to(device, dtype=model.dtype)
        with torch.inference_mode():
            out = model.generate(**inputs, max_new_tokens=p.max_tokens, min_new_tokens=p.max_tokens,
                                 do_sample=False)
        n_prompt = int(inputs["input_ids"].shape[1])
        prompt_tokens.append(n_prompt)
        gen.append(int(out.shape[1]) - n_prompt)
    wall = time.perf_counter() - t0
    return {
        "side": "transformers_loop", "images": len(files), "ok": sum(g == p.max_tokens for g in gen),
        "wall_s": round(wall, 3), "load_s": round(t_load, 3), "images_per_s": round(len(files) / wall, 4),
        "steady_images_per_s": round(len(files) / (wall - t_load), 4), "generated_tokens": sum(gen),
        "prompt_tokens_per_image": round(sum(prompt_tokens) / len(prompt_tokens), 1),
        "driver_peak_rss_mib": peak_rss_mib(), "load_before": load_before, "load_after": loadavg(),
    }
