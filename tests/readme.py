"""The README's code blocks, so tests run what users copy."""

from __future__ import annotations

import re

from tests.conftest import ROOT

_BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def python_blocks(section: str) -> list[str]:
    """The ```python blocks of the README section whose heading is ``section`` (``## <section>``), in order."""
    text = (ROOT / "README.md").read_text()
    start = text.index(f"\n## {section}\n")
    end = text.find("\n## ", start + 1)
    return _BLOCK.findall(text[start: end if end != -1 else None])


def dag_snippets(spec_path: str, run_id: str) -> tuple[str, str]:
    """The two DAG API blocks of "Three ways in", the first reading ``spec_path`` and running as ``run_id``."""
    first, second = python_blocks("Three ways in")
    first = first.replace('load_spec("jobs/specs/demo.yaml")', f"load_spec({spec_path!r})")
    assert first.count('"my-run"') == 1, "the README's first DAG block names its run id once"
    return first.replace('"my-run"', repr(run_id)), second
