"""Exporters of committed runs (caption runs and dataset builds) into formats training code reads without glue.

- :mod:`pipeline.export.llava`: ShareGPT4V / LLaVA JSON (a list) and JSONL.
- :mod:`pipeline.export.hf_parquet`: Hugging Face ``datasets`` Parquet with an ``Image`` column.
- :mod:`pipeline.export.rows`: the rows and conversations both export, per stage (pretrain, finetune).
- :mod:`pipeline.export.images`: where each record's image is (or is written to), and its bytes.

All read a run only through its committed manifest and export only ``ok`` rows (and, within
them, only ``ok`` question-answer pairs); :class:`~pipeline.export.rows.ExportSummary` says
how many rows and pairs were left out and why, and is written beside the export as its record.
"""
