"""Pre-flight of resources: the cluster has room for every actor pool, or an autoscaler can add it.

Ray schedules an actor that no node can hold by waiting for one ("may hang forever"): a spec that
asks for a GPU per engine on a machine without one never starts and never fails. So before the
dataset runs, each fixed pool's actors (``size`` actors of ``num_cpus`` / ``num_gpus`` each, from
the pipeline's stages) must fit: one actor on one node, all of them in the cluster's total, plus
the CPUs of one CPU task (fetch and decode cannot run if the pools hold every CPU). A local
instance is checked before it starts (its CPUs are ``run.num_cpus`` or the machine's, its GPUs
the ones Ray would detect); a joined cluster with its live nodes and, where an autoscaler
publishes its node types (``ray._private.state``, as Ray Train does), what those could add.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.preflight import RESOURCES, PreflightError
from schemas.spec import RunConfig


class ResourceError(PreflightError):
    """The cluster cannot hold what the spec asks for (exit 7)."""

    exit_code = RESOURCES


@dataclass(frozen=True)
class Pool:
    """One fixed actor pool: ``size`` actors of ``cpus`` and ``gpus`` each."""

    name: str
    size: int
    cpus: float
    gpus: float


def demands(pipeline) -> tuple[list[Pool], float]:
    """The pipeline's actor pools, and the most CPUs one of its CPU tasks asks for.

    A barrier (``pipeline.dag.Barrier``) is no stage of its own: its passes run the chain's stages.
    """
    from operators.base import Stage

    stages = [s for s in pipeline.stages if isinstance(s, Stage)]
    pools = [Pool(s.name, s.pool.size, s.resources.num_cpus, s.resources.num_gpus)
             for s in stages if s.pool is not None]
    tasks = [s.resources.num_cpus for s in stages if s.pool is None]
    return pools, max(tasks, default=0.0)


def _fmt(x: float) -> str:
    return f"{x:g}"


def check(pools: list[Pool], task_cpus: float, nodes: list[dict], node_types: list[dict] | None = None,
          autoscaler_max: dict | None = None, where: str = "the cluster") -> None:
    """Raise :class:`ResourceError` unless ``nodes`` (or what an autoscaler may add) can hold the pools.

    Args:
        nodes: resources of each live node (``{"CPU": 2, "GPU": 0, ...}``).
        node_types: resources of one node of each type an autoscaler may start (None: no autoscaler).
        autoscaler_max: the most of each resource the autoscaler may bring the cluster to.
    """
    shapes = list(nodes) + list(node_types or [])
    for pool in pools:
        fits = any(n.get("CPU", 0) >= pool.cpus and n.get("GPU", 0) >= pool.gpus for n in shapes)
        if not fits:
            largest = max(shapes, key=lambda n: (n.get("GPU", 0), n.get("CPU", 0)), default={})
            raise ResourceError(
                f"the {pool.name} pool asks for {_fmt(pool.cpus)} CPU and {_fmt(pool.gpus)} GPU per actor; no node "
                f"of {where} has that (largest: {_fmt(largest.get('CPU', 0))} CPU, {_fmt(largest.get('GPU', 0))} "
                f"GPU){'' if node_types else ' and no autoscaler can add one'}: lower resources.gpus_per_engine / "
                "cpus_per_engine or run where they are")
    for kind, need, extra in (("GPU", sum(p.size * p.gpus for p in pools), 0.0),
                              ("CPU", sum(p.size * p.cpus for p in pools), task_cpus)):
        have = sum(n.get(kind, 0) for n in nodes)
        ceiling = max(have, (autoscaler_max or {}).get(kind, 0))
        if need + extra > ceiling + 1e-9:
            parts = " + ".join(f"{p.name} {p.size} x {_fmt(p.gpus if kind == 'GPU' else p.cpus)}" for p in pools
                               if (p.gpus if kind == "GPU" else p.cpus))
            tasks = f" + 1 CPU task {_fmt(extra)}" if extra else ""
            scale = f", its autoscaler at most {_fmt(ceiling)}" if autoscaler_max else ", and no autoscaler"
            raise ResourceError(f"the actor pools need {_fmt(need + extra)} {kind} ({parts}{tasks}); {where} has "
                                f"{_fmt(have)}{scale}: lower resources.num_engines or the per-engine resources")


def local_node(run: RunConfig) -> dict:
    """What a local Ray instance started for ``run`` would have, without starting it."""
    from ray._private.accelerators import get_accelerator_manager_for_resource
    from ray._private.utils import get_num_cpus

    gpu = get_accelerator_manager_for_resource("GPU")
    gpus = gpu.get_current_node_num_accelerators()
    visible = gpu.get_current_process_visible_accelerator_ids()
    if visible is not None:
        gpus = min(gpus, len(visible))
    return {"CPU": float(run.num_cpus or get_num_cpus()), "GPU": float(gpus)}


def joins_a_cluster(run: RunConfig) -> bool:
    import os

    import ray

    return ray.is_initialized() or bool(run.ray_address or os.environ.get("RAY_ADDRESS"))


def check_local(run: RunConfig, pipeline) -> None:
    """Before a local instance starts: its CPUs and GPUs hold the pools (a joined cluster: later)."""
    if joins_a_cluster(run):
        return
    pools, task_cpus = demands(pipeline)
    node = local_node(run)
    where = f"this machine's local Ray instance ({_fmt(node['CPU'])} CPU, {_fmt(node['GPU'])} GPU)"
    check(pools, task_cpus, [node], where=where)


def check_joined(run: RunConfig, pipeline) -> None:
    """Once Ray is up: the joined cluster's live nodes, and what its autoscaler may add."""
    if not joins_a_cluster(run):
        return
    import ray
    from ray._private.state import state

    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    node_types, ceiling = None, None
    try:
        config = state.get_cluster_config()
        if config is not None and config.node_group_configs:
            node_types = [dict(g.resources) for g in config.node_group_configs if g.max_count != 0]
            ceiling = state.get_max_resources_from_cluster_config()
    except Exception:  # noqa: BLE001 - no autoscaler state: judge the live nodes alone
        pass
    pools, task_cpus = demands(pipeline)
    check(pools, task_cpus, nodes, node_types, ceiling, where=f"the Ray cluster ({len(nodes)} nodes)")
