"""fp16 numerics that CUDA training with ``--amp`` meets and the CPU's
float32 runs cannot show."""
import torch

from cgrseg.models.backbones.chunked_attention import biased_scores


def test_scores_scale_q_before_matmul_in_fp16():
    """|q·k| = 16·32·256 = 131072 > 65504 overflows fp16, the scaled score
    (×d^-0.5 = 1/16 → 8192) does not: q is scaled before the matmul."""
    d = 256
    q = torch.full((1, 1, 2, d), 16., dtype=torch.half)
    k = torch.full((1, 1, d, 3), 32., dtype=torch.half)
    bias = torch.zeros(1, 1, 2, 3, dtype=torch.half)
    scores = biased_scores(q, k, d**-0.5, bias)
    assert torch.isfinite(scores).all()
    assert torch.equal(scores, torch.full_like(scores, 8192.))

