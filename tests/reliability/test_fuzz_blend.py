"""Issue 7, part 5b: blending invariants for random shapes, dtypes, magnitudes and alphas (hypothesis).

* ``interpolate`` at alpha 0 and 1 returns the base and the adapted tensors exactly;
* in between it is linear in alpha: f(a) = (1 - a) f(0) + a f(1) elementwise, within fp32 rounding (and one
  rounding to the storage dtype for bf16/fp16);
* integer buffers are copied unchanged;
* ``BlendEngine.apply`` writes the same bits as ``interpolate`` into a live module, for any sequence of alphas.

Fixed-shape versions on a tiny BERT: tests/unit/test_blend.py (test_endpoints_are_exact,
test_interior_points_are_linear_in_alpha, test_engine_agrees_bit_for_bit_with_interpolate_*).
"""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.models.blend import BlendEngine, interpolate
from harness.records import canonical_alpha

SETTINGS = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# unit roundoff of the storage dtype (fp32 arithmetic inside the blend adds at most a few fp32 ulps)
UNIT = {torch.float32: 2.0 ** -24, torch.bfloat16: 2.0 ** -8, torch.float16: 2.0 ** -11}

shapes = st.lists(st.integers(1, 9), min_size=0, max_size=3).map(tuple)
alphas = st.one_of(st.sampled_from([0.0, 1.0, 0.5, 1e-6, 1 - 1e-6, 0.1, 0.3333333]),
                   st.floats(0.0, 1.0, allow_nan=False))


class Bag(torch.nn.Module):
    """A module whose parameters (and one integer buffer) are exactly the given tensors."""

    def __init__(self, sd: dict[str, torch.Tensor]) -> None:
        super().__init__()
        for name, t in sd.items():
            if t.is_floating_point():
                self.register_parameter(name, torch.nn.Parameter(t.clone(), requires_grad=False))
            else:
                self.register_buffer(name, t.clone())


@st.composite
def pairs(draw):
    n = draw(st.integers(1, 5))
    dtype = DTYPES[draw(st.sampled_from(sorted(DTYPES)))]
    scale = draw(st.sampled_from([1e-3, 1.0, 30.0]))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    base, adapted = {}, {}
    for i in range(n):
        shape = draw(shapes)
        tdtype = dtype if draw(st.booleans()) else torch.float32  # mixed dtypes in one model
        base[f"w{i}"] = (scale * torch.randn(shape, generator=g)).to(tdtype)
        same = draw(st.integers(0, 9)) == 0  # sometimes a tensor the fine-tuning did not change
        adapted[f"w{i}"] = base[f"w{i}"].clone() if same else (scale * torch.randn(shape, generator=g)).to(tdtype)
    if draw(st.booleans()):
        ids = torch.arange(draw(st.integers(1, 7)))
        base["ids"], adapted["ids"] = ids, ids.clone()
    return base, adapted


@SETTINGS
@given(pair=pairs(), alpha=alphas)
def test_interpolate_is_exact_at_the_ends_and_linear_between(pair, alpha):
    base, adapted = pair
    snapshot = {k: (v.clone(), adapted[k].clone()) for k, v in base.items()}
    f0, f1 = interpolate(base, adapted, 0.0), interpolate(base, adapted, 1.0)
    a = canonical_alpha(alpha)
    fa = interpolate(base, adapted, a)
    for k in base:
        assert torch.equal(f0[k], base[k]) and torch.equal(f1[k], adapted[k]), k
        assert fa[k].dtype == base[k].dtype and fa[k].shape == base[k].shape
        if not base[k].is_floating_point():
            assert torch.equal(fa[k], base[k])
            continue
        b, c = f0[k].double(), f1[k].double()
        want = (1 - a) * b + a * c
        info = torch.finfo(base[k].dtype)  # + the subnormal spacing: fp16 weights of 1e-3 * N(0, 1) reach it
        tol = 4 * UNIT[base[k].dtype] * (b.abs() + c.abs()) + info.smallest_normal * info.eps
        assert bool(((fa[k].double() - want).abs() <= tol).all()), (k, a, base[k].dtype)
        if torch.equal(base[k], adapted[k]):
            assert torch.equal(fa[k], base[k])  # an unchanged tensor stays bit-identical at every alpha
    for k, (b, c) in snapshot.items():  # inputs are never modified
        assert torch.equal(base[k], b) and torch.equal(adapted[k], c)


@SETTINGS
@given(pair=pairs(), seq=st.lists(alphas, min_size=1, max_size=4))
def test_engine_writes_the_same_bits_as_interpolate(pair, seq):
    base, adapted = pair
    model = Bag(base)
    engine = BlendEngine(model, base, adapted)
    for alpha in seq:
        engine.apply(alpha)
        want = interpolate(base, adapted, alpha)
        got = model.state_dict()
        for k, v in want.items():
            assert got[k].dtype == v.dtype and torch.equal(got[k], v), (k, alpha, v.dtype, tuple(v.shape))


@settings(max_examples=100, deadline=None, derandomize=True, database=None)
@given(pair=pairs(), a=alphas, b=alphas)
def test_interpolation_is_monotone_between_the_endpoints(pair, a, b):
    """Each weight moves from base to adapted without overshoot: f(a) lies between f(0) and f(1), and moving
    alpha towards 1 never moves a weight away from the adapted value (fp32 storage; bf16 rounding may tie)."""
    base, adapted = pair
    lo, hi = sorted((canonical_alpha(a), canonical_alpha(b)))
    f_lo, f_hi = interpolate(base, adapted, lo), interpolate(base, adapted, hi)
    for k, v in base.items():
        if not v.is_floating_point():
            continue
        x, y, t = v.double(), adapted[k].double(), f_lo[k].double()
        assert bool(((t >= torch.minimum(x, y)) & (t <= torch.maximum(x, y))).all()), k
        if v.dtype == torch.float32:
            assert bool(((y - f_hi[k].double()).abs() <= (y - t).abs() + 1e-6 * (x.abs() + y.abs())).all()), k
