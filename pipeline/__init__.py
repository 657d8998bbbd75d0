"""Composition API, runner, commit protocol and run statistics.

The public entry points::

    from pipeline import Pipeline
    from pipeline.runner import run_job
"""

from pipeline.dag import Pipeline, PipelineError

__all__ = ["Pipeline", "PipelineError"]
