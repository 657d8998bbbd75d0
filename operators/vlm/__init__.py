"""Vision-language engines, the model-family registry and tiny-model builders.

Nothing here imports torch, transformers or vllm at module import: engines load them inside
their actors, tiny-model builders inside the build call.
"""
