"""Names and token strings of InternLM-XComposer v1 (no heavy imports: the registry and tiny builder read them)."""

MODEL_TYPE = "InternLMXComposer"
ARCHITECTURE = "InternLMXComposerForCausalLM"

IMAGE_TOKEN = "<ImageHere>"  # vlmbatch's placeholder; upstream concatenates embeddings instead
EOH = "<TOKENS_UNUSED_0>"  # end of human turn (id 103027 in the published tokenizer)
EOA = "<TOKENS_UNUSED_1>"  # end of assistant turn (id 103028)
