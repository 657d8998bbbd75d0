"""Composition API, the builder, the run owner, the commit protocol and run statistics.

The public entry points::

    from pipeline import Pipeline, Run, build_pipeline
    manifest = Run(spec).execute()                                # what `vlmbatch run` does
    manifest = Run(spec, pipeline=my_pipeline).execute()          # a pipeline composed by hand
"""

from pipeline.dag import Pipeline, PipelineError
from pipeline.plan import build_pipeline
from pipeline.runner import Run, run_job

__all__ = ["Pipeline", "PipelineError", "Run", "build_pipeline", "run_job"]
