"""On a CUDA GPU (`make test-gpu`; skipped elsewhere): what the first GPU run found broken, checked in a minute before
any device time goes to training (with the CUDA case of test_blockskim.py's bf16 autocast test, marked gpu there).
Each check failed there before its mend, or ran there as a one-off probe (H200, torch 2.11). The short run reads
SQuAD dev from SKIM_SHARED_DATA (<dir>/squad_v1.1/dev-v1.1.json.gz)."""

from __future__ import annotations

import json

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra

from skim.strategies import blockskim
from skim.strategies.blockskim import _cuda_efficient_with_lse, _fused_attention_with_lse, live_diagonal_blocks
from skim.train import train
from skim.utils.run import task_wrapper
from tests.conftest import SQUAD_DEV, require_shared
from tests.helpers.runs import compose_cfg

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("n", [200, 173])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_diagonal_blocks_on_cuda_are_the_eager_probabilities(dtype, n):
    if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    """The inference path's row log-sum-exp, from the CUDA memory-efficient kernel itself (not the full-score
    fallback), and its diagonal blocks against eager softmax probabilities, with padding, a ragged last block and a
    length that is no multiple of 8 (the bias is padded for the kernel's alignment). The probe of the first GPU run:
    the kernel's log-sum-exp within 1.05e-5 of the exact one, the blocks within 1.3e-6."""
    torch.manual_seed(0)
    B, H, d, bs = 4, 12, 32, 32
    alive = torch.arange(n, device="cuda")[None] < torch.tensor([n, 150, 97, 33], device="cuda")[:, None]
    mask = torch.zeros(B, 1, 1, n, device="cuda").masked_fill(~alive[:, None, None, :], torch.finfo(torch.float32).min)
    # HF's layout: [B, H, n, d] views of [B, n, H, d] projections
    q, k, v = ((torch.randn(B, n, H, d, device="cuda") * 2).to(dtype).transpose(1, 2) for _ in range(3))
    scores = q.float() @ k.float().transpose(-1, -2) * d**-0.5 + mask
    assert _cuda_efficient_with_lse(q, k, v, mask.to(dtype), d**-0.5) is not None, blockskim._CUDA_FALLBACK
    out, lse = _fused_attention_with_lse(q, k, v, mask.to(dtype), d**-0.5)
    torch.testing.assert_close(lse, torch.logsumexp(scores, -1), rtol=0, atol=1e-4)
    sdpa = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask.to(dtype), scale=d**-0.5)
    bf16 = dtype == torch.bfloat16  # SDPA may pick another bf16 kernel: a rounding apart (the probe: 1.6e-2)
    torch.testing.assert_close(out, sdpa, rtol=1.6e-2 if bf16 else 1e-5, atol=1e-2 if bf16 else 1e-5)
    probs, blocks, K = scores.softmax(-1), live_diagonal_blocks(q, k, lse, alive, d**-0.5, bs), -(-n // bs)
    # exp(s - lse): a probability moves by about its size times the log-sum-exp error (the CUDA kernel: 1.05e-5 fp32,
    # 4.8e-6 bf16 in the probe; the CPU kernel bf16: 5e-5)
    atol = 3e-5 if dtype == torch.float32 else 1e-4
    for i, idx in enumerate(blocks.index.tolist()):
        b, kb = divmod(idx, K)
        s, e = kb * bs, min(kb * bs + bs, n)
        live = alive[b, s:e]
        want = probs[b, :, s:e, s:e] * live[None, :, None] * live[None, None, :]
        torch.testing.assert_close(blocks.values[i, :, : e - s, : e - s].float(), want, rtol=0, atol=atol)


@pytest.mark.parametrize("skim", ["none", "blockskim", "transkimmer"])
def test_a_short_bf16_run_on_the_gpu(skim, tmp_run_root):
    """A few bf16-mixed steps and a validation with every statistics callback on the GPU (the dense run's first
    validation batch failed on a CPU count beside CUDA tensors before the mend)."""
    require_shared(SQUAD_DEV)
    GlobalHydra.instance().clear()
    out = tmp_run_root / "run"
    cfg = compose_cfg([
        "model=tiny", "data=squad_local", f"data.train_file={SQUAD_DEV}", f"data.validation_file={SQUAD_DEV}",
        "data.max_train_samples=64", "data.max_eval_samples=32", "data.batch_size=8", f"skim={skim}",
        "trainer=gpu", "+trainer.max_steps=4", "final_eval=last",
    ], output_dir=out)  # fmt: skip
    metrics = task_wrapper(train)(cfg)
    GlobalHydra.instance().clear()
    assert 0.0 <= metrics["val/f1"] <= 100.0 and metrics["val/flops/skim_gflops"] > 0
    assert json.loads((out / "metrics.json").read_text())["metrics"]["val/num_scored"] == 32
