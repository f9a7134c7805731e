"""On the GPU: (1) Block-Skim's diagonal blocks from the current fused path vs eager probabilities; (2) whether the CUDA
memory-efficient kernel's own log-sum-exp equals the exact one (what issue 12 left for a GPU)."""

import torch

from skim.strategies.blockskim import _fused_attention_with_lse, live_diagonal_blocks

dev = "cuda" if torch.cuda.is_available() else "cpu"
torch.manual_seed(0)
B, H, n, d, bs = 4, 12, 200, 32, 32
lengths = torch.tensor([200, 150, 97, 33], device=dev)
alive = torch.arange(n, device=dev)[None] < lengths[:, None]
mask = torch.zeros(B, 1, 1, n, device=dev).masked_fill(~alive[:, None, None, :], torch.finfo(torch.float32).min)
scale = d**-0.5
for dtype in (torch.float32, torch.bfloat16):
    q, k, v = [
        (torch.randn(B, H, n, d, device=dev) * 2).to(dtype) for _ in range(3)]
    exact = torch.logsumexp(q.float() @ k.float().transpose(-1, -2) * scale + mask, -1)
    out, lse = _fused_attention_with_lse(q, k, v, mask.to(dtype), scale)
    print(f"{dev} {dtype}: skim fused-path lse vs exact max|diff| {(lse - exact).abs().max().item():.2e}")
    probs = torch.softmax(q.float() @ k.float().transpose(-1, -2) * scale + mask, -1)
    blocks = live_diagonal_blocks(q, k, lse, alive, scale, bs)
    K = (n + bs - 1) // bs
    worst = 0.0
    for i, idx in enumerate(blocks.index.tolist()):
        b, kb = divmod(idx, K)
        s, e = kb * bs, min(kb * bs + bs, n)
        ref = probs[b, :, s:e, s:e] * alive[b, s:e][None, :, None] * alive[b, s:e][None, None, :]
        worst = max(worst, (blocks.values[i, :, : e - s, : e - s].float() - ref).abs().max().item())
    print(f"{dev} {dtype}: diagonal blocks vs eager probabilities max|diff| {worst:.2e} over {len(blocks.index)} blocks")
    if dev == "cuda":
        for nn in (n, 192):
            try:
                qq, kk, vv = q[:, :, :nn], k[:, :, :nn], v[:, :, :nn]
                bias = mask[..., :nn].to(dtype).expand(B, H, nn, nn)
                res = torch.ops.aten._scaled_dot_product_efficient_attention(qq, kk, vv, bias, True, 0.0, False, scale=scale)
                ex = torch.logsumexp(qq.float() @ kk.float().transpose(-1, -2) * scale + mask[..., :nn], -1)
                print(f"cuda efficient kernel n={nn} {dtype}: lse shape {tuple(res[1].shape)}, "
                      f"max|diff| {(res[1][..., :nn].float() - ex).abs().max().item():.2e}, "
                      f"out max|diff| vs SDPA {(res[0].float() - out[:, :, :nn].float()).abs().max().item() if nn == n else float('nan'):.2e}")
            except Exception as err:  # noqa: BLE001 - a probe: report and go on
                print(f"cuda efficient kernel n={nn} {dtype}: {type(err).__name__}: {str(err)[:200]}")
