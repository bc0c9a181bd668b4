"""Small built-in networks for demos and tests (no downloads).

``tiny_resnet`` is a CIFAR-style ResNet with basic blocks (random init, like a torchvision name
without --weights), small enough to train on the synthetic data in a minute or two on 2 CPU cores
and wide enough (up to 128 channels) that pruning it changes measured latency.
``tiny_resnet_synthetic`` is tiny_resnet with the shipped weights trained on the synthetic
data (``hwprune.data``): the embedded default of ``hwprune run`` and the model the examples prune,
since a search among candidates of a random-init network compares noise.
``tiny_mobilenet`` is a MobileNetV2-style network for 32 px (inverted residuals, depthwise convs)
whose latency does not follow its FLOPs.
"""
from __future__ import annotations

import os
from typing import Optional

import torch
from torch import nn

#: weights of ``tiny_resnet_synthetic`` (made by ``python tools/train_default.py``)
TRAINED_ASSET = os.path.join(os.path.dirname(__file__), "assets", "tiny_resnet_synthetic.pt")


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class TinyResNet(nn.Module):
    """ResNet-style CNN for 32x32 inputs: stem + 3 stages of ``depth`` basic blocks each."""

    def __init__(self, num_classes: int = 10, width: int = 32, depth: int = 2):
        super().__init__()
        widths = (width, 2 * width, 4 * width)
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
        layers, cin = [], widths[0]
        for i, w in enumerate(widths):
            for j in range(depth):
                layers.append(BasicBlock(cin, w, stride=2 if (i > 0 and j == 0) else 1))
                cin = w
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.layers(self.stem(x))), 1))


def tiny_resnet(num_classes: int = 10, width: int = 32, depth: int = 2) -> nn.Module:
    return TinyResNet(num_classes=num_classes, width=width, depth=depth)


class TinyMobileNet(nn.Module):
    """MobileNetV2-style CNN for 32x32 inputs: a 3x3 stem, stages of torchvision's inverted residual
    blocks (MobileNetV2, Sandler et al. CVPR 2018: 1x1 expansion, 3x3 depthwise, linear 1x1
    projection) given as (expansion, channels, blocks, stride) at 32, 16 and 8 px, a 1x1 head conv,
    pooling and a linear classifier. Its depthwise convs are memory-bound where the 1x1s are GEMMs,
    so its latency does not follow its FLOPs the way a plain ResNet's does."""

    #: (expansion, output channels as multiples of ``width``, blocks, stride)
    STAGES = ((1, 1, 1, 1), (4, 2, 2, 2), (4, 3, 2, 2), (4, 4, 2, 1))

    def __init__(self, num_classes: int = 10, width: int = 16, head: int = 256):
        from torchvision.models.mobilenetv2 import InvertedResidual
        from torchvision.ops.misc import Conv2dNormActivation

        super().__init__()
        self.stem = Conv2dNormActivation(3, width, 3, activation_layer=nn.ReLU6)
        layers, cin = [], width
        for t, mult, n, s in self.STAGES:
            for j in range(n):
                layers.append(InvertedResidual(cin, mult * width, s if j == 0 else 1, t))
                cin = mult * width
        self.layers = nn.Sequential(*layers)
        self.head = Conv2dNormActivation(cin, head, 1, activation_layer=nn.ReLU6)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(head, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.head(self.layers(self.stem(x)))), 1))


def tiny_mobilenet(num_classes: int = 10, width: int = 16, head: int = 256) -> nn.Module:
    return TinyMobileNet(num_classes=num_classes, width=width, head=head)


def tiny_vit(num_classes: int = 10, image_size: int = 32) -> nn.Module:
    """A 2-layer torchvision ViT for 32x32 inputs (patch 8, 4 heads, dim 64)."""
    from torchvision.models.vision_transformer import VisionTransformer

    return VisionTransformer(image_size=image_size, patch_size=8, num_layers=2, num_heads=4,
                             hidden_dim=64, mlp_dim=128, num_classes=num_classes)


def tiny_resnet_synthetic(path: Optional[str] = None) -> nn.Module:
    """``tiny_resnet`` with the shipped weights trained on the synthetic data (eval mode).
    Raises FileNotFoundError when the asset is missing (make it with ``python tools/train_default.py``)."""
    path = path or TRAINED_ASSET
    if not os.path.isfile(path):
        raise FileNotFoundError(f"default model weights {path!r} are missing; run: python tools/train_default.py")
    model = tiny_resnet()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()


#: name -> (factory, default input size)
ZOO = {"tiny_resnet": (tiny_resnet, 32), "tiny_resnet_synthetic": (tiny_resnet_synthetic, 32),
       "tiny_vit": (tiny_vit, 32), "tiny_mobilenet": (tiny_mobilenet, 32)}
