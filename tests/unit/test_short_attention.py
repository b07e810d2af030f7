"""The short-sequence packed attention kernel: exact against per-sequence softmax attention for every tile size,
ragged lengths (1 token, tile edges, several key blocks), strided inputs and head dimensions; the packed scorer
picks it only where it applies.

The kernel runs in Triton's CPU interpreter where Triton is installed (a subprocess, since the interpreter is
chosen when the kernel is defined), and compiled on CUDA in the ``gpu`` tests."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from harness.models.short_attention import MAX_LEN, short_attention_unavailable_reason, tile_for

HAS_TRITON = importlib.util.find_spec("triton") is not None
LENGTHS = [1, 16, 17, 64, 65, 3, 128, 40, 127]


def reference(q, k, v, lengths, scale):
    """softmax(scale q k^T) v per sequence, fp64."""
    out = torch.empty_like(q, dtype=torch.float64)
    start = 0
    for n in lengths:
        sl = slice(start, start + n)
        qq, kk, vv = (x[sl].double().transpose(0, 1) for x in (q, k, v))  # (heads, n, d)
        out[sl] = (torch.softmax(scale * qq @ kk.transpose(1, 2), -1) @ vv).transpose(0, 1)
        start += n
    return out


def test_tile_sizes():
    assert [tile_for(n, 64)[0] for n in (1, 15, 16, 17, 32, 33, 64, 65, 128)] == [16, 16, 16, 32, 32, 64, 64, 64, 64]
    assert tile_for(50, 64) == (64, 4) and tile_for(20, 64) == (32, 2) and tile_for(20, 128) == (32, 4)


def test_unavailable_reasons():
    assert "CUDA" in short_attention_unavailable_reason(torch.device("cpu"), torch.bfloat16, 64, 50)
    cuda = torch.device("cuda")
    assert "head dimension 48" in short_attention_unavailable_reason(cuda, torch.bfloat16, 48, 50)
    assert f"> {MAX_LEN}" in short_attention_unavailable_reason(cuda, torch.float16, 64, MAX_LEN + 1)
    assert "CUDA" in short_attention_unavailable_reason(cuda, torch.float32, 64, 50)


@pytest.mark.skipif(not HAS_TRITON, reason="Triton is not installed (the GPU tests run the kernel compiled)")
def test_kernel_in_triton_interpreter_matches_reference(tmp_path):
    script = textwrap.dedent(f"""
        import torch, sys
        sys.path.insert(0, {os.getcwd()!r})
        from harness.models import _short_attention_kernel as K
        from tests.unit.test_short_attention import reference
        lengths = {LENGTHS}
        g = torch.Generator().manual_seed(0)
        for d, block, heads in ((16, 16, 3), (32, 32, 2), (64, 64, 2), (32, 16, 1)):
            t = sum(lengths)
            qkv = torch.randn(t, heads, 3 * d + 8, generator=g)  # strided views, as the projections give
            q, k, v = qkv[..., :d], qkv[..., d:2 * d], qkv[..., 2 * d:3 * d]
            cu = torch.tensor([0] + lengths, dtype=torch.int32).cumsum(0).to(torch.int32)
            out = torch.full((t, heads, d), float("nan"))
            K.launch(q, k, v, out, cu, max(lengths), d ** -0.5, block, 2)
            err = (out.double() - reference(q, k, v, lengths, d ** -0.5)).abs().max().item()
            assert err < 1e-5, (d, block, err)
        print("ok")
    """)
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0 and res.stdout.strip().endswith("ok"), res.stderr[-3000:]


gpu = pytest.mark.skipif(not (torch.cuda.is_available() and HAS_TRITON), reason="needs CUDA and Triton")


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("d", [32, 64, 128])
def test_kernel_on_cuda_matches_reference_and_flash(dtype, d):
    from torch.nn.attention.varlen import varlen_attn

    g = torch.Generator(device="cuda").manual_seed(0)
    heads, t = 4, sum(LENGTHS)
    qkv = torch.randn(t, 3 * heads * d, device="cuda", generator=g).to(dtype)
    q, k, v = (x.view(t, heads, d) for x in qkv.split(heads * d, dim=1))
    cu = torch.tensor([0] + LENGTHS, dtype=torch.int32).cumsum(0).to(torch.int32).cuda()
    out = torch.ops.harness.packed_short_attention(q, k, v, cu, max(LENGTHS), d ** -0.5)
    ref = reference(q.cpu(), k.cpu(), v.cpu(), LENGTHS, d ** -0.5)
    flash = varlen_attn(q, k, v, cu, cu, max(LENGTHS), max(LENGTHS), scale=d ** -0.5)
    tol = 2e-2 if dtype == torch.bfloat16 else 4e-3
    assert (out.cpu().double() - ref).abs().max().item() < tol
    assert (out - flash).abs().max().item() <= max(tol, 2 * (flash.cpu().double() - ref).abs().max().item())


@pytest.mark.gpu
@gpu
def test_kernel_under_torch_compile():
    g = torch.Generator(device="cuda").manual_seed(1)
    t = sum(LENGTHS)
    q, k, v = (torch.randn(t, 2, 64, device="cuda", generator=g, dtype=torch.bfloat16) for _ in range(3))
    cu = torch.tensor([0] + LENGTHS, dtype=torch.int32).cumsum(0).to(torch.int32).cuda()

    def f(q, k, v, cu, n):
        return torch.ops.harness.packed_short_attention(q * 1.0, k, v, cu, n, 0.125) + 1

    eager = f(q, k, v, cu, max(LENGTHS))
    compiled = torch.compile(f, dynamic=True, fullgraph=True)(q, k, v, cu, max(LENGTHS))
    assert torch.equal(eager, compiled)


@pytest.mark.gpu
@gpu
def test_packed_scorer_uses_short_kernel_for_short_batches_only():
    from transformers import BertConfig, BertForSequenceClassification

    from harness.models.scorer import HFScorer
    from harness.predict import predict

    try:
        from tests.unit.test_predict import tokenized
    except ImportError:  # pragma: no cover - depends on the layout
        from test_predict import tokenized

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=100, hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=256, num_labels=3, max_position_embeddings=1024)
    model = BertForSequenceClassification(cfg).to("cuda", torch.bfloat16).eval()
    lengths = np.concatenate([np.random.default_rng(0).integers(2, 60, 200), [600, 700]])
    tok = tokenized(lengths)
    scorer = HFScorer(model)
    assert scorer.packing_mode == "short+flash"
    seen = []
    packer = scorer._packer
    orig = packer.kernel_for
    packer.kernel_for = lambda h, n: seen.append((n, orig(h, n))) or seen[-1][1]
    got = predict(scorer, tok, point="p", batch_tokens=4096).logits
    assert {k for n, k in seen if n <= MAX_LEN} == {"short"} and {k for n, k in seen if n > MAX_LEN} == {"flash"}
    packer.kernel_for = orig
    packer.attention = "flash"
    flash = predict(scorer, tok, point="p", batch_tokens=4096).logits
    padded = predict(HFScorer(model, packed=False), tok, point="p", batch_tokens=4096).logits
    np.testing.assert_allclose(got, flash, atol=3e-2, rtol=0)
    np.testing.assert_allclose(got, padded, atol=3e-2, rtol=0)


def test_packer_on_cpu_uses_the_reference_path_and_rejects_unknown_kernels():
    from transformers import BertConfig, BertForSequenceClassification

    from harness.models.packed import PackedEncoder

    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1,
                                                     num_attention_heads=2, intermediate_size=64)).eval()
    with pytest.raises(ValueError, match="attention must be"):
        PackedEncoder(model, require_kernel=False, attention="triton")
    packer = PackedEncoder(model, require_kernel=False)
    assert packer.mode == "reference"
    assert packer.kernel_for(torch.zeros(1, 4, 32), 4) == "reference"
    packer.close()
