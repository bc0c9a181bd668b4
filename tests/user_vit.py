"""A ViT written the way timm writes it: the root module owns the class token, the position
embedding (and a distillation token, DeiT, or register tokens) as raw nn.Parameters."""
import torch
from torch import nn


class Attention(nn.Module):
    def __init__(self, dim, num_heads):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        x = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(B, N, -1))


class Block(nn.Module):
    def __init__(self, dim, heads, mlp):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp), nn.GELU(), nn.Linear(mlp, dim))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    def __init__(self, num_classes=10, img=32, patch=8, dim=64, depth=2, heads=4, mlp=128, reg_tokens=0, dist_token=False):
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, patch, patch)
        n = (img // patch) ** 2
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.dist_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02) if dist_token else None
        self.reg_token = nn.Parameter(torch.randn(1, reg_tokens, dim) * 0.02) if reg_tokens else None
        self.pos_embed = nn.Parameter(torch.randn(1, n + 1 + int(dist_token), dim) * 0.02)
        self.blocks = nn.Sequential(*[Block(dim, heads, mlp) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        B = x.shape[0]
        toks = [self.cls_token.expand(B, -1, -1)] + ([self.dist_token.expand(B, -1, -1)] if self.dist_token is not None else [])
        x = torch.cat(toks + [x], 1) + self.pos_embed
        if self.reg_token is not None:
            x = torch.cat([x[:, :1], self.reg_token.expand(B, -1, -1), x[:, 1:]], 1)
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])


def vit(num_classes=10):
    return ViT(num_classes)


def deit(num_classes=10):
    return ViT(num_classes, dist_token=True)


def vit_reg(num_classes=10):
    return ViT(num_classes, reg_tokens=4)
