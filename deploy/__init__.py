"""hwprune_deploy: the torch-free device side of hwprune.

Needs only numpy + onnxruntime (or tensorrt + pycuda for GPU engines). Installed as the
``hwprune_deploy`` package (mapped from the repo's ``deploy/`` folder) so it cannot collide with
other projects' ``deploy`` modules. Nothing here may import torch.
"""

__all__ = ["backends", "timing", "ort"]
