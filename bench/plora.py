"""Partial LoRA's cost on a decode step: the plugin's decoder layers against the same layers without LoRA.

One process, the plugin's own modules (``operators/vlm/xcomposer2/vllm_model.py``: vLLM's linear
layers, RMSNorm, rotary embedding, the PLoRA projections) at XComposer2-7B's layer dimensions,
the same weights on every side, one decode token per sequence at several batch sizes:

* ``plugin``: the layers as the model runs them on a step without image tokens (every decode step);
* ``no_lora``: the same layers with their ``Plora_A`` / ``Plora_B`` removed: the model without LoRA;
* ``dense``: the formulation before issue 19 (the LoRA of every row, times a zero mask), for reference;
* ``no_lora_again``: ``no_lora`` timed once more as its own side, an A/A control: how far two timings of
  the same thing differ in this run (the noise floor the other ratios are read against).

Attention is a stand-in (``torch`` SDPA of each sequence's token over a fixed random KV context of
``plora_context`` tokens, the XComposer2-VL prompt plus half of 230 generated): vLLM's paged
attention needs the engine's runner, and it is the same work on every side. The LM head,
embeddings and sampling are left out for the same reason, which makes the ratios stricter than a
whole engine step's. One thread pinned to one core, as vLLM's CPU worker runs (one core, one
reserved). The sides take turns step by step (the first side rotating), so drift in the machine's
load hits all alike; per round the mean step time of each side, medians over rounds (``plora_steps``
steps per side per round, 16 / batch times as many below batch 16). The layers without
LoRA are the same layers, packed in place, with their LoRA modules then deleted, so the base
weights lie where they lie with LoRA. Ratio ``plugin_over_no_lora`` (target <= 1.02) and
``dense_over_no_lora`` (what the old formulation cost).

    python -m bench.run plora --runs 5 --extra '{"plora_batches": [1, 16, 64], "plora_layers": 2}'
    # GPU (bf16; the step is timed eagerly and as a captured CUDA graph, as vLLM replays decode):
    python -m bench.run plora --runs 5 --extra '{"plora_device": "cuda", "plora_batches": [1, 64, 256]}'
"""

from __future__ import annotations

import os
import statistics
import time

from bench.common import BenchParams, loadavg

TARGET = 1.02
SIDES = ("plugin", "no_lora", "dense", "no_lora_again")
# InternLM2-7B / XComposer2-7B layer dimensions; "tiny" only keeps the smoke test quick.
DIMS = {"7b": dict(hidden=4096, heads=32, kv_heads=8, ffn=14336, r=256),
        "tiny": dict(hidden=128, heads=4, kv_heads=2, ffn=256, r=8)}


def _config(d: dict, layers: int):
    from operators.vlm.xcomposer2.config import InternLMXComposer2Config

    return InternLMXComposer2Config(hidden_size=d["hidden"], num_attention_heads=d["heads"],
                                    num_key_value_heads=d["kv_heads"], intermediate_size=d["ffn"],
                                    num_hidden_layers=layers, lora_r=d["r"], lora_alpha=d["r"])


def decode_attention(heads: int, kv_heads: int, head_dim: int, batch: int, context: int, seed: int):
    """Stand-in for vLLM's attention (a module): each sequence's one query over its own fixed KV context."""
    import torch

    class DecodeAttention(torch.nn.Module):
        def forward(self, q, k, v):
            import torch.nn.functional as F

            b = q.shape[0]
            q = q.view(b, heads, 1, head_dim)
            out = F.scaled_dot_product_attention(q, self.k[:b], self.v[:b], enable_gqa=True)
            return out.reshape(b, heads * head_dim)

    g = torch.Generator().manual_seed(seed)
    attn = DecodeAttention()
    dtype, device = torch.get_default_dtype(), torch.get_default_device()
    attn.k = torch.randn(batch, kv_heads, context, head_dim, generator=g, device="cpu").to(device, dtype)
    attn.v = torch.randn(batch, kv_heads, context, head_dim, generator=g, device="cpu").to(device, dtype)
    return attn


def _dense(layer, x, mask):
    """The pre-issue-19 projection: ``W x + (B A x) * mask`` for every row."""
    out, _ = layer(x)
    low, _ = layer.Plora_A(x)
    delta, _ = layer.Plora_B(low)
    return out + delta * mask


def build_layers(d: dict, layers: int, batch: int, context: int, lora: bool):
    """``layers`` plugin decoder layers with seeded random weights, packed as vLLM packs them on load.

    Without ``lora`` the same layers are built, packed, and then lose their ``Plora_A`` / ``Plora_B``:
    the base weights sit where they sit with LoRA, so placement in memory is not a difference.
    """
    import torch
    from vllm.config import VllmConfig, set_current_vllm_config

    from operators.vlm.xcomposer2.vllm_model import XComposer2DecoderLayer

    config = _config(d, layers)
    with set_current_vllm_config(VllmConfig()):
        stack = [XComposer2DecoderLayer(config, None, prefix=f"bench.layers.{i}") for i in range(layers)]
    for i, layer in enumerate(stack):
        layer.attention.attn = decode_attention(d["heads"], d["kv_heads"], config.head_dim, batch, context, seed=i)
        torch.manual_seed(1000 + i)
        with torch.no_grad():
            for p in layer.parameters():  # the same values with and without LoRA
                p.normal_(0.0, 0.02) if p.dim() > 1 else p.fill_(1.0)
        for module in list(layer.modules()):
            method = getattr(module, "quant_method", None)
            if method is not None:
                method.process_weights_after_loading(module)
        if not lora:
            for module in list(layer.modules()):
                for child in ("Plora_A", "Plora_B"):
                    if hasattr(module, child):
                        delattr(module, child)
    return stack


def _step(stack, x, positions, rows):
    residual = None
    for layer in stack:
        x, residual = layer(positions, x, residual, rows)
    return x + residual


def _round(fns: dict, steps: int) -> dict[str, float]:
    """Mean seconds per step of each side, the sides taking turns step by step (first side rotating)."""
    import torch

    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sides = list(fns)
    spent = dict.fromkeys(sides, 0.0)
    for k in range(steps):
        for side in sides[k % len(sides):] + sides[:k % len(sides)]:
            t0 = time.perf_counter()
            fns[side]()
            sync()
            spent[side] += time.perf_counter() - t0
    return {side: t / steps for side, t in spent.items()}


def _graphed(fn):
    """``fn`` captured once as a CUDA graph and replayed, as vLLM runs decode steps on a GPU."""
    import torch

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


def _init_vllm_parallel() -> None:
    from vllm.config import VllmConfig, set_current_vllm_config
    from vllm.distributed import init_distributed_environment, initialize_model_parallel

    from bench.common import free_tcp_port

    with set_current_vllm_config(VllmConfig()):
        init_distributed_environment(world_size=1, rank=0, local_rank=0, backend="gloo",
                                     distributed_init_method=f"tcp://127.0.0.1:{free_tcp_port()}")
        initialize_model_parallel(1, 1)


def measure_batch(d: dict, layers: int, batch: int, context: int, runs: int, steps: int) -> dict:
    """Per-step times of the three sides at one decode batch size (alternating within each round)."""
    import torch

    import operators.vlm.xcomposer2.vllm_model as plugin

    with_lora = build_layers(d, layers, batch, context, lora=True)
    without = build_layers(d, layers, batch, context, lora=False)
    x = torch.randn(batch, d["hidden"]) * 0.1
    positions = torch.full((batch,), context, dtype=torch.long)
    mask = torch.zeros(batch, 1)

    def dense():
        saved, plugin._plora = plugin._plora, _dense
        try:
            return _step(with_lora, x, positions, mask)
        finally:
            plugin._plora = saved

    fns = {"plugin": lambda: _step(with_lora, x, positions, None),
           "no_lora": lambda: _step(without, x, positions, None), "dense": dense}
    fns["no_lora_again"] = fns["no_lora"]
    # The image-row path runs once too (every row an image row), so a broken gather fails the bench.
    _step(with_lora, x, positions, torch.arange(batch))
    if torch.cuda.is_available():
        fns = {side: _graphed(fn) for side, fn in fns.items()}
    if torch.cuda.is_available():
        fns["no_lora_again"] = fns["no_lora"]  # the same replayed graph
    times: dict[str, list[float]] = {s: [] for s in SIDES}
    steps = steps * max(1, 16 // batch)  # small batches are quick steps: more of them per round
    _round(fns, 1)  # warm: first-call costs (oneDNN primitive creation, kernel selection) stay out
    for _ in range(runs):
        for side, t in _round(fns, steps).items():
            times[side].append(t)
    med = {s: statistics.median(v) for s, v in times.items()}
    return {
        "step_ms": {s: round(1000 * v, 3) for s, v in med.items()},
        "runs_ms": {s: [round(1000 * t, 3) for t in v] for s, v in times.items()},
        "plugin_over_no_lora": round(med["plugin"] / med["no_lora"], 4),
        "dense_over_no_lora": round(med["dense"] / med["no_lora"], 4),
        "aa_control": round(med["no_lora_again"] / med["no_lora"], 4),
    }


def compare(params: BenchParams, runs: int) -> dict:
    import torch

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    torch.set_num_threads(int(params.extra.get("plora_threads", 1)))
    device = params.extra.get("plora_device", "cpu")
    if device == "cpu" and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core, as vLLM binds its CPU worker
    torch.set_default_device(device)
    torch.set_default_dtype(torch.bfloat16 if device == "cuda" else torch.float32)
    dims_name = params.extra.get("plora_dims", "7b")
    d, layers = DIMS[dims_name], int(params.extra.get("plora_layers", 2))
    batches = [int(b) for b in params.extra.get("plora_batches", [1, 16, 64])]
    context, steps = int(params.extra.get("plora_context", 1661)), int(params.extra.get("plora_steps", 5))
    _init_vllm_parallel()
    per_batch: dict[str, dict] = {}
    loads = [loadavg()]
    with torch.inference_mode():
        for batch in batches:
            per_batch[str(batch)] = measure_batch(d, layers, batch, context, runs, steps)
            loads.append(loadavg())
    worst = max(b["plugin_over_no_lora"] for b in per_batch.values())
    return {
        "params": {"dims": dims_name, **d, "layers": layers, "batches": batches, "context": context,
                   "steps_per_run": steps, "threads": torch.get_num_threads(), "device": device,
                   "dtype": str(torch.get_default_dtype()).removeprefix("torch."),
                   "cuda_graphs": torch.cuda.is_available()},
        "per_batch": per_batch,
        "medians": {f"batch {b}": v["step_ms"] for b, v in per_batch.items()},
        "ratios": {"plugin_over_no_lora_worst": worst,
                   **{f"plugin_over_no_lora_b{b}": v["plugin_over_no_lora"] for b, v in per_batch.items()},
                   **{f"dense_over_no_lora_b{b}": v["dense_over_no_lora"] for b, v in per_batch.items()},
                   **{f"aa_control_b{b}": v["aa_control"] for b, v in per_batch.items()}},
        "targets": {"plugin_over_no_lora_worst": TARGET},
        "loads_between_batches": loads,
    }
