"""Gauss-Legendre nodes and weights in O(n) work per Newton iteration.

numpy's ``leggauss`` solves a dense eigenproblem (O(n^3): 26 s for n = 3000).
Here, above ``EXACT_MAX`` nodes (below it numpy's values are used bit for bit,
which Captum parity needs), the nodes are found by Newton's method in
``theta`` (``x = cos(theta)``) from Tricomi's initial guesses, with
``P_n(cos theta)`` and its derivative evaluated by Stieltjes' asymptotic
expansion (Szego, Orthogonal Polynomials, 8.21.14; as in Hale & Townsend,
"Fast and accurate computation of Gauss-Legendre and Gauss-Jacobi quadrature
nodes and weights", SIAM J. Sci. Comput. 2013) for the interior nodes, and by
the three-term recurrence (``torch.special.legendre_polynomial_p``, O(n) per
node) for the ``BOUNDARY`` nodes nearest each end, where the expansion does
not converge. Everything is vectorized over the nodes.
"""

from __future__ import annotations

import math

import numpy as np
import torch

EXACT_MAX = 200  # up to this many nodes: numpy's leggauss (Captum's values, bit for bit)
BOUNDARY = 20  # nodes per end evaluated by the recurrence
TERMS = 12  # terms of the interior expansion (error ~ TERMS! / (2 pi BOUNDARY)^TERMS)
NEWTON = 3  # Newton iterations (quadratic convergence from Tricomi's guesses)


def gauss_legendre(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes (ascending, in ``(-1, 1)``) and weights of the ``n``-point rule."""
    if n <= EXACT_MAX:
        return np.polynomial.legendre.leggauss(n)
    half = (n + 1) // 2  # nodes in theta in (0, pi/2]: the rest by symmetry
    k = np.arange(1, half + 1, dtype=np.float64)
    theta = np.pi * (4 * k - 1) / (4 * n + 2)  # Tricomi's guesses, x_k = cos(theta_k)
    theta = np.arccos((1 - (n - 1) / (8.0 * n**3)) * np.cos(theta))
    edge = min(BOUNDARY, half)
    for _ in range(NEWTON):
        p, dp = _interior(n, theta[edge:])
        theta[edge:] -= p / dp
    x_edge, w_edge = _boundary(n, np.cos(theta[:edge]))
    _, dp = _interior(n, theta[edge:])
    x = np.concatenate([x_edge, np.cos(theta[edge:])])
    w = np.concatenate([w_edge, 2.0 / dp**2])
    if n % 2:  # the middle node is exactly 0
        x[-1] = 0.0
    # theta ascending = x descending; mirror the half onto (-1, 0)
    mirrored = n - half
    nodes = np.concatenate([-x[:mirrored], x[::-1]])
    weights = np.concatenate([w[:mirrored], w[::-1]])
    return nodes, weights


def _interior(n: int, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``P_n(cos theta)`` and its ``theta``-derivative by Stieltjes' expansion."""
    j = np.arange(1, n + 1, dtype=np.float64)
    c = 4 / math.pi * float(np.prod(j / (j + 0.5)))  # lgamma differences lose 1e-12 here
    s2 = 2 * np.sin(theta)
    cot2 = 2 * np.cos(theta)
    p = np.zeros_like(theta)
    dp = np.zeros_like(theta)
    h = 1.0
    scale = 1 / np.sqrt(s2)  # (2 sin theta)^-(m + 1/2)
    # alpha_m = (n + m + 1/2) theta - (m + 1/2) pi / 2 = alpha_0 + m (theta - pi / 2):
    # cos/sin by rotation, two trig calls in all
    alpha = (n + 0.5) * theta - np.pi / 4
    cos_a, sin_a = np.cos(alpha), np.sin(alpha)
    cos_d, sin_d = np.sin(theta), -np.cos(theta)  # cos/sin of (theta - pi / 2)
    for m in range(TERMS):
        if m:
            h *= (m - 0.5) ** 2 / (m * (n + m + 0.5))
            scale = scale / s2
            cos_a, sin_a = cos_a * cos_d - sin_a * sin_d, sin_a * cos_d + cos_a * sin_d
        p += h * cos_a * scale
        dp -= h * ((n + m + 0.5) * sin_a * scale + (m + 0.5) * cos_a * cot2 * scale / s2)
    return c * p, c * dp


def _boundary(n: int, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Newton on ``x`` with the recurrence, for the few nodes nearest ``x = 1``."""
    t = torch.from_numpy(x.copy())
    for _ in range(NEWTON + 2):
        p, q = (torch.special.legendre_polynomial_p(t, k) for k in (n, n - 1))
        dp = n * (q - t * p) / (1 - t * t)
        t = t - p / dp
    p, q = (torch.special.legendre_polynomial_p(t, k) for k in (n, n - 1))
    # w = 2 / ((1 - x^2) P_n'(x)^2), with P_n' = n (P_{n-1} - x P_n) / (1 - x^2): keeping
    # the x P_n term makes w insensitive to the node's last-bit error (without it, 2e-8)
    w = 2 * (1 - t) * (1 + t) / (n * (q - t * p)) ** 2
    return t.numpy(), w.numpy()
