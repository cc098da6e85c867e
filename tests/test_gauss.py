"""Gauss-Legendre nodes (fnattr/_gauss.py) as returned by ``fnattr.quadrature``."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import fnattr
from fnattr import _gauss


@pytest.mark.parametrize("n", [30, 201, 500])
def test_fast_gauss_legendre_equals_numpy(n, monkeypatch):
    monkeypatch.setattr(_gauss, "EXACT_MAX", 0)  # the asymptotic path, also for small n
    nodes, weights = _gauss.gauss_legendre(n)
    ref_nodes, ref_weights = np.polynomial.legendre.leggauss(n)
    np.testing.assert_allclose(nodes, ref_nodes, rtol=0, atol=1e-15)
    np.testing.assert_allclose(weights, ref_weights, rtol=0, atol=5e-14)


def test_gauss_legendre_up_to_200_is_numpys_bit_for_bit():
    for n in (1, 2, 7, 50, 200):
        nodes, weights = np.polynomial.legendre.leggauss(n)
        alphas, w = fnattr.quadrature("gausslegendre", n)
        assert alphas == tuple((0.5 * (1 + nodes)).tolist())
        assert w == tuple((0.5 * weights).tolist())


def test_gauss_legendre_large_n_integrates_exactly():
    n = 20_000  # leggauss would take minutes; the rule must integrate degree < 2n exactly
    alphas, weights = map(np.array, fnattr.quadrature("gausslegendre", n))
    assert len(alphas) == n and np.all(np.diff(alphas) > 0)
    assert abs(weights.sum() - 1) < 1e-13
    assert abs((weights * alphas**3).sum() - 0.25) < 1e-13
    assert abs((weights * np.cos(40 * alphas)).sum() - np.sin(40) / 40) < 1e-13
    rules = sys.modules[fnattr.quadrature.__module__]  # where the rule cache lives
    for n in range(2, 2 + 2 * rules.QUADRATURE_CACHE):
        fnattr.quadrature("riemann_left", n)
    assert len(rules._QUADRATURE) <= rules.QUADRATURE_CACHE
