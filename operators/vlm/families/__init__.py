"""Built-in model families; each module registers one :class:`~operators.vlm.registry.ModelFamily`."""
