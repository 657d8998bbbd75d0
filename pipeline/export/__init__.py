"""Exporters of committed dataset runs into formats training code reads without glue.

- :mod:`pipeline.export.llava`: ShareGPT4V / LLaVA JSON (a list) and JSONL.
- :mod:`pipeline.export.hf_parquet`: Hugging Face ``datasets`` Parquet with an ``Image`` column.

Both read a run only through its committed manifest and export only ``ok`` rows (and, within
them, only ``ok`` question-answer pairs); :class:`~pipeline.export.rows.ExportSummary` says
how many rows were left out and why.
"""
