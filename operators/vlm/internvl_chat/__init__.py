"""InternVL chat checkpoints (``InternVLChatModel``): served by vLLM's own implementation; the config here."""
