"""ViT-B/16 (224², 12 layers, width 768, 12 heads of 64, MLP 3072, 1000 classes) for one timed
training step (bench/gpu/speed.py): the same model with torch SDPA or attn.attention inside.
Plain torch.nn, bf16 autocast, AdamW."""
import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, width, heads, attention):
        super().__init__()
        self.heads, self.attention = heads, attention
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, c // self.heads).permute(
            2, 0, 3, 1, 4)
        if self.attention == "sdpa":
            o = F.scaled_dot_product_attention(q, k, v)
        else:
            import attn
            o = attn.attention(q, k, v, self.attention, None, False)
        x = x + self.proj(o.transpose(1, 2).reshape(b, n, c))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    def __init__(self, attention, image=224, patch=16, width=768, depth=12, heads=12, classes=1000):
        super().__init__()
        self.embed = nn.Conv2d(3, width, patch, patch)
        tokens = (image // patch) ** 2 + 1
        self.cls = nn.Parameter(torch.zeros(1, 1, width))
        self.pos = nn.Parameter(torch.randn(1, tokens, width) * 0.02)
        self.blocks = nn.ModuleList(Block(width, heads, attention) for _ in range(depth))
        self.norm, self.head = nn.LayerNorm(width), nn.Linear(width, classes)

    def forward(self, images):
        x = self.embed(images).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1) + self.pos
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x[:, 0]))


def step_ms(attention, batch, device, median_ms):
    """Median milliseconds of one step (forward, cross-entropy, backward, AdamW)."""
    torch.manual_seed(0)
    model = VisionTransformer(attention).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    images = torch.randn(batch, 3, 224, 224, device=device)
    labels = torch.randint(0, 1000, (batch,), device=device)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    loss = step()
    if not torch.isfinite(loss):
        raise RuntimeError(f"ViT-B/16 with {attention}: loss {loss.item()}")
    return median_ms(step, target_ms=600.0, min_reps=5, max_reps=10)
