"""Does a bare AOTInductor package (no hwprune code) compile in one process and load in another?

    python tools/aoti_probe.py cuda compile /tmp/m.pt2 && python tools/aoti_probe.py cuda load /tmp/m.pt2

Written to tell a torch/machine fault from ours when loading a CUDA package segfaulted (docs/export.md).
"""
import sys

import torch

if len(sys.argv) != 4 or sys.argv[1] not in ("cuda", "cpu") or sys.argv[2] not in ("compile", "load"):
    sys.exit("usage: python tools/aoti_probe.py cuda|cpu compile|load PATH.pt2")
dev, step, path = sys.argv[1], sys.argv[2], sys.argv[3]
torch.manual_seed(0)
m = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(8 * 14 * 14, 10)).to(dev).eval()
x = torch.randn(2, 3, 16, 16, device=dev)
if step == "compile":
    ep = torch.export.export(m, (x,))
    print("compiled", torch._inductor.aoti_compile_and_package(ep, package_path=path), flush=True)
else:
    r = torch._inductor.aoti_load_package(path)
    print("loaded", flush=True)
    with torch.no_grad():
        print("max |diff|", float((r(x) - m(x)).abs().max()), flush=True)
