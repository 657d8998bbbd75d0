"""Golden numbers for InternVL-C from OpenGVLab's public code, on vlmbatch's tiny checkpoint.

    python tests/golden_internvl_c.py PUBLIC_MODELS_DIR [OUT_JSON]

``PUBLIC_MODELS_DIR`` is the folder holding the public package ``internvl_huggingface``
(``clip_benchmark/clip_benchmark/models`` of github.com/OpenGVLab/InternVL); nothing of it is
copied into this repository, only the numbers it produces (``tests/data/golden/internvl_c.json``).
The script builds the tiny checkpoint (``make_tiny_internvl_c``, seed 0) in a temporary folder,
loads it into the public ``InternVL_C`` (strict: every published weight name), runs the public
``retrieval`` transform on the cases' images and the public ``encode_image`` / ``encode_text``, and
writes the L2-normalised vectors. Token ids come from the tiny checkpoint's tokenizer the way the
public ``InternVLTokenizer`` builds them (BOS, ``summarize:`` + text, EOS, pad 0 up to 80): the tiny
tokenizer is a fast BPE, not the published sentencepiece model, so the public wrapper is not run.
The public code imports timm's ``DropPath`` and peft, used only for training (drop path 0, LoRA off);
where they are not installed, inert stand-ins are registered for the import.
"""

from __future__ import annotations

import json
import sys
import tempfile
import types
from pathlib import Path

#: (seed, width, height) of each case image; :func:`case_image` draws it.
IMAGES = ((0, 40, 30), (1, 28, 28), (2, 64, 20), (3, 17, 33))
TEXTS = ("a photo of a red dog", "two cats sleeping on a blue sofa", "", "text " * 60)


def case_image(seed: int, width: int, height: int):
    """A deterministic smooth RGB image (uint8, H x W x 3)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    coarse = Image.fromarray((rng.random((5, 5, 3)) * 255).astype(np.uint8), "RGB")
    return np.asarray(coarse.resize((width, height), Image.Resampling.BICUBIC))


def _module(name: str) -> types.ModuleType:
    import importlib.util

    module = types.ModuleType(name)
    module.__spec__ = importlib.util.spec_from_loader(name, loader=None)
    sys.modules[name] = module
    return module


def _stand_ins() -> None:
    import torch.nn as nn

    try:
        import timm.models.layers  # noqa: F401
    except ImportError:
        _module("timm"), _module("timm.models")
        _module("timm.models.layers").DropPath = lambda p=0.0: nn.Identity()
    try:
        import peft  # noqa: F401
    except ImportError:
        stub = _module("peft")
        stub.LoraConfig = stub.get_peft_model = None


def main(public_dir: str, out: str) -> None:
    import numpy as np
    import torch
    from PIL import Image
    from safetensors.torch import load_file

    from operators.embed.internvl_c import InternVLCEmbedder
    from operators.embed.tiny import make_tiny_internvl_c

    _stand_ins()
    sys.path.insert(0, public_dir)
    import internvl_huggingface as public

    with tempfile.TemporaryDirectory() as tmp:
        make_tiny_internvl_c(Path(tmp))
        raw = json.loads((Path(tmp) / "config.json").read_text())
        config = public.InternVLConfig(**{k: v for k, v in raw.items() if k not in ("architectures", "auto_map")})
        model = public.InternVL_C(config).eval()
        missing, unexpected = model.load_state_dict(load_file(str(Path(tmp) / "model.safetensors")), strict=False)
        # Non-persistent buffers (rotary caches) are the only keys allowed to differ.
        assert not unexpected and all("cached" in k or "inv_freq" in k for k in missing), (missing, unexpected)
        ours = InternVLCEmbedder(tmp)
        ids = ours.token_ids(list(TEXTS))
        padded = torch.zeros(len(TEXTS), 80, dtype=torch.long)
        padded[:, : ids.shape[1]] = ids
        transform = public.build_transform("retrieval", raw["vision_config"]["image_size"])
        pixels = torch.stack([transform(Image.fromarray(case_image(*c))) for c in IMAGES])
        with torch.no_grad():
            img = model.encode_image(pixels).float()
            txt = model.encode_text(padded).float()
        img = img / img.norm(dim=1, keepdim=True)
        txt = txt / txt.norm(dim=1, keepdim=True)
    result = {
        "public_code": "github.com/OpenGVLab/InternVL clip_benchmark/clip_benchmark/models/internvl_huggingface "
                       "(InternVL_C.encode_image / encode_text, build_transform('retrieval'))",
        "tiny_checkpoint": "operators.embed.tiny.make_tiny_internvl_c(seed=0)",
        "dtype": "float32",
        "images": [list(c) for c in IMAGES],
        "texts": list(TEXTS),
        "token_ids": [[int(t) for t in row if t] for row in ids.tolist()],
        "pixel_checksum": float(pixels.double().sum()),
        "image_embeddings": np.round(img.numpy().astype(np.float64), 8).tolist(),
        "text_embeddings": np.round(txt.numpy().astype(np.float64), 8).tolist(),
    }
    Path(out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "tests/data/golden/internvl_c.json")
