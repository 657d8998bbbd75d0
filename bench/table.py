"""The results table in ``bench/README.md``, from the newest ``bench/results/<name>-<date>.json`` of each bench.

``python -m bench.table`` prints it; ``python -m bench.table --write`` puts it in the README
between the ``<!-- results -->`` markers.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from bench.common import RESULTS

README = Path(__file__).resolve().parent / "README.md"
BEGIN, END = "<!-- results -->", "<!-- /results -->"
GPU_BEGIN, GPU_END = "<!-- gpu-results -->", "<!-- /gpu-results -->"
GPU_RESULTS = RESULTS / "gpu"
ORDER = ("overhead", "overhead:xcomposer2", "vs_ray_llm", "vs_transformers", "preprocess", "growth", "vs_sharegpt4v",
         "curation", "plora", "engine_cpu", "scale", "node_loss")


def latest(name: str, results_dir: Path = RESULTS) -> dict | None:
    """The newest ``<name>-<date>.json``; ``name:variant`` the newest ``<name>-<date>-<variant>.json``."""
    name, _, variant = name.partition(":")
    pattern = re.compile(rf"{re.escape(name)}-\d{{8}}" + (rf"-{re.escape(variant)}" if variant else "") + "$")
    files = sorted(f for f in results_dir.glob(f"{name}-*.json") if pattern.fullmatch(f.stem))
    return json.loads(files[-1].read_text()) if files else None


def _loads(body: dict) -> str:
    values = [body["load_start"][0], body["load_end"][0]]
    runs = body.get("runs", {})
    for rs in runs.values() if isinstance(runs, dict) else []:
        for r in rs:
            values += [x[0] for x in (r.get("load_before"), r.get("load_after")) if x]
    return f"{min(values):.1f}-{max(values):.1f}"


def _scale_figures(body: dict) -> str:
    parts = []
    for r in body.get("runs", []):
        f, z = r["fresh"], r["resume"]
        parts.append(f"{r['source']} {r['rows']:,} rows: driver {f['driver_peak_rss_mib']:.0f} MiB "
                     f"({f.get('driver_peak_anon_mib') or 0:.0f} private), list {f['list_s_per_million']} s/M, "
                     f"commit {f['commit_s_per_million']} s/M, {f['shards']} shards; resume: driver "
                     f"{z['driver_peak_rss_mib']:.0f} MiB, scan {z['scan_s_per_million']} s/M, "
                     f"{z['rows_resumed']:,} resumed")
    return "; ".join(parts)


def _node_loss_figures(body: dict) -> str:
    return "; ".join(f"{name}: {m['wall_s']:.1f} s, {m['images']} committed, lost {m['lost']}, duplicated "
                     f"{m['duplicated']}, +{m['extra_wall_s']:.1f} s" for name, m in body.get("medians", {}).items())


def _figures(name: str, body: dict) -> str:
    med = body.get("medians", {})
    if name == "scale":
        return _scale_figures(body)
    if name == "node_loss":
        return _node_loss_figures(body)
    if name == "preprocess":
        return "; ".join(f"{side}: {m['1_cores']:.0f} img/s on 1, {m['2_cores']:.0f} on 2" for side, m in med.items())
    if name == "growth":
        parts = [f"{k}: {m['images']} img, {m['s_per_image']:.3f} s/img"
                 + (f" ({m['steady_s_per_image']:.4f} steady)" if m.get("steady_s_per_image") else "")
                 + f", driver {m['driver_peak_rss_mib']:.0f} MiB"
                 + (f" ({m['driver_peak_anon_mib']:.0f} private, C heap in use at the end "
                    f"{m['driver_heap_in_use_mib']:.0f})" if m.get("driver_heap_in_use_mib") else "")
                 + f", largest worker {m['worker_peak_rss_mib']:.0f} MiB"
                 + (f" ({m['worker_peak_anon_mib']:.0f} private)" if m.get("worker_peak_anon_mib") else "")
                 + (f", engine {m['engine_peak_anon_mib']:.0f} MiB private" if m.get("engine_peak_anon_mib") else "")
                 + (f", CPU worker {m['cpu_worker_peak_rss_mib']:.0f} MiB" if "cpu_worker_peak_rss_mib" in m else "")
                 + (f" ({m['cpu_worker_peak_anon_mib']:.0f} private, "
                    f"{m['cpu_worker_peak_shmem_mib']:.0f} object store)" if m.get("cpu_worker_peak_anon_mib") else "")
                 for k, m in med.items()]
        marg = body.get("marginal_s_per_image", {})
        budget = body.get("params", {}).get("object_store_memory")
        if budget:
            parts.insert(0, f"object-store budget {budget / 2**20:.0f} MiB")
        return "; ".join(parts) + "; marginal s/img " + ", ".join(f"{k} {v}" for k, v in marg.items())
    if name == "plora":
        p = body["params"]
        return (f"ms per decode step ({p['layers']} layers of {p['dims']}, rank {p['r']}, context {p['context']}, "
                f"{p['threads']} thread): " + "; ".join(
                    f"{b}: " + ", ".join(f"{side} {ms:.1f}" for side, ms in m.items()) for b, m in med.items()))
    parts = []
    for side, m in med.items():
        bits = [f"{m['images_per_s']:.3f} img/s e2e"] if "images_per_s" in m else []
        for key, label in (("steady_images_per_s", "steady"), ("span_images_per_s", "span")):
            if key in m:
                bits.append(f"{m[key]:.1f} {label}")
        if "process_wall_s" in m:
            bits.append(f"process {m['process_wall_s']:.1f} s")
        cpu = {k: v for k, v in (m.get("engine_cpu_ms_per_image") or {}).items() if v}
        if cpu:
            bits.append("engine CPU ms/img " + ", ".join(f"{k} {v:.1f}" for k, v in cpu.items()))
        parts.append(f"{side}: " + ", ".join(bits))
    return "; ".join(parts)


def table(results_dir: Path = RESULTS) -> str:
    lines = ["| bench | ratio | value | target | runs/side | images | medians | load (1-min) | date (UTC) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for label in ORDER:
        body = latest(label, results_dir)
        if body is None:
            continue
        name = label.partition(":")[0]
        if label != name:
            label = f"{name} ({body['params']['family']})"
        p = body.get("params", {})
        images = p.get("images_range") or p.get("images") or p.get("num_images")
        if name == "growth":
            images = body.get("images_range")
        if name == "scale":
            images = f"{min(p['sizes']):,}-{max(p['sizes']):,} rows"
        for key, value in body.get("ratios", {}).items():
            target = body.get("targets", {}).get(key, "")
            lines.append(f"| {label} | {key} | {value} | {target} | {body.get('runs_per_side')} | {images} | "
                         f"{_figures(name, body) if key == next(iter(body['ratios'])) else ''} | "
                         f"{_loads(body)} | {body['utc'][:16]} |")
    bodies = [b for b in (latest(label, results_dir) for label in ORDER) if b]
    m = max(bodies, key=lambda b: b["utc"])["machine"] if bodies else None  # the newest run's machine
    if m:
        v = m["versions"]
        lines.append("")
        lines.append(f"Machine: {m['cpus']} CPUs, {m['mem_gib']} GiB, GPU: {m['gpu'] or 'none'}; "
                     + ", ".join(f"{k} {x}" for k, x in v.items()) + ". Shared with other engineers' test runs: "
                     "see the load column (1-minute load average seen before/after each side).")
    return "\n".join(lines)


def gpu_table(results_dir: Path = GPU_RESULTS) -> str:
    """Every GPU result (``results/gpu/<name>-<device>-<shape>-<date>.json``) with the roofline beside it."""
    from bench.bound import PEAKS, SHAPES, bound

    lines = ["| bench | shape | ratio | value | target | runs/side | images | tokens in/out | images/s per side "
             "| roofline images/s (datasheet / measured peaks) | device | date (UTC) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    extra = []
    for path in sorted(results_dir.glob("*.json")):
        body = json.loads(path.read_text())
        if "model_id" not in body.get("params", {}):  # a module-level bench (plora): its ratios on a line
            extra.append(f"- {body['name']} on {body['machine']['gpu']} ({body['utc'][:16]}): "
                         + ", ".join(f"{k} {v}" for k, v in body["ratios"].items()))
            continue
        p, med = body["params"], body["medians"]
        shape = p["model_id"].removeprefix("shape:")
        tokens_in = next((m["prompt_tokens_per_image"] for m in med.values() if "prompt_tokens_per_image" in m), None)
        roof = ""
        if shape in SHAPES and tokens_in:
            roof = " / ".join(str(bound(SHAPES[shape], round(tokens_in), p["max_tokens"], p["max_num_seqs"], *peak)
                                  ["images_per_s"]) for peak in PEAKS.values())
        sides = "; ".join(f"{side}: " + ", ".join(f"{label} {m[k]:.1f}" for k, label in
                                                  (("steady_images_per_s", "steady"), ("span_images_per_s", "span"))
                                                  if k in m) for side, m in med.items())
        for key, value in body["ratios"].items():
            first = key == next(iter(body["ratios"]))
            lines.append(f"| {body['name']} | {shape} | {key} | {value} | {body.get('targets', {}).get(key, '')} | "
                         f"{body['runs_per_side']} | {p['num_images']} | {tokens_in}/{p['max_tokens']} | "
                         f"{sides if first else ''} | {roof if first else ''} | {body['machine']['gpu']} | "
                         f"{body['utc'][:16]} |")
    return "\n".join(lines + ([""] + extra if extra else []))


def _replace(readme: str, begin: str, end: str, text: str) -> str:
    head, _, rest = readme.partition(begin)
    _, _, tail = rest.partition(end)
    return f"{head}{begin}\n{text}\n{end}{tail}"


def main(argv: list[str]) -> int:
    text, gpu = table(), gpu_table()
    if "--write" in argv:
        readme = _replace(README.read_text(), BEGIN, END, text)
        if GPU_BEGIN in readme:
            readme = _replace(readme, GPU_BEGIN, GPU_END, gpu)
        README.write_text(readme)
    else:
        print(text + "\n\n" + gpu)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
