"""Tests of harness.numfmt: no number the harness prints reads "-0.000" (issue 19, fresh-user trial)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.numfmt import fmt_g, fmt_num


@pytest.mark.parametrize("v", [-0.0, np.float64(-0.0), np.float32(-0.0), -0.00004, -1e-12])
def test_negative_zero_prints_unsigned(v):
    assert f"{float(v):.3f}" == "-0.000"  # what plain format gives, the reason for the helper
    assert fmt_num(v) == "0.000"
    assert fmt_num(v, 4) == "0.0000"
    assert fmt_num(v, signed=True) == "+0.000"


def test_ordinary_numbers_and_missing():
    assert fmt_num(0.8734) == "0.873" and fmt_num(-0.0216, signed=True) == "-0.022"
    assert fmt_num(0.021, signed=True) == "+0.021" and fmt_num(-0.0006, 3) == "-0.001"
    assert fmt_num(None) == "n/a" and fmt_num(math.nan, missing="-") == "-" and fmt_num(math.inf) == "n/a"
    assert fmt_num(True) == "n/a" and fmt_num("0.5") == "n/a"


def test_fmt_g():
    assert fmt_g(-0.0) == "0" and fmt_g(0.02) == "0.02" and fmt_g(-0.02) == "-0.02" and fmt_g(None) == "n/a"
