"""The engine a model config names, built inside the actor that holds it."""

from __future__ import annotations

from dataclasses import dataclass

from operators.vlm.engine import Engine
from schemas.spec import ModelConfig, SamplingConfig


@dataclass(frozen=True)
class EngineFactory:
    """The engine a model config names, built where it is called (inside the actor's process).

    Engine actors take a zero-argument callable that returns an :class:`Engine`; this is the one
    the pipeline passes. Tests pass their own (a fake engine), benchmarks a wrapping one.
    """

    model: ModelConfig
    sampling: SamplingConfig

    def __call__(self) -> Engine:
        from operators.vlm.registry import family_for

        family = family_for(self.model)
        if self.model.engine.kind == "vllm":
            from operators.vlm.vllm_engine import VLLMEngine

            return VLLMEngine(self.model, self.sampling, family)
        from operators.vlm.transformers_engine import TransformersEngine

        return TransformersEngine(self.model, self.sampling, family)
