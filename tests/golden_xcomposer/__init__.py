"""Golden fixtures of InternLM-XComposer v1 from public code (see make_golden)."""
