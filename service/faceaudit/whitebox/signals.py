"""The signals a backward pass carries, and the array helpers every rule shares.

A signal kind names what flows from the score down to the input:

- ``gradient``: the exact vector–Jacobian product, ∂(seed · score)/∂tensor.
- ``guided``: guided backpropagation (Springenberg et al. 2015, eq. in §3.4): the gradient, except
  that a rectifier passes it only where both its input and the incoming signal are positive.
- ``deconv``: the deconvnet (Zeiler & Fergus 2014, §2.1): the gradient, except that a rectifier is
  applied to the incoming signal instead of being gated by the forward input.
- ``excitation``: excitation backprop's marginal winning probability (Zhang et al. 2016, eq. 1–2;
  Castañón et al. 2018 §III; Wang et al. 2025 §2.1): at a linear map y = W x,
  p(x) = x ⊙ W⁺ᵀ (p(y) ⊘ W⁺x) with 0/0 := 0; activation functions pass p through.
- ``extended``: extended excitation backprop (eEBP, Wang et al. 2025 §2.2, eqs. 3–4): excitation
  that also explains negative responses. A parent y_i ≥ 0 is excited by x_j ≥ 0 through w⁺ and by
  x_j < 0 through w⁻; a parent y_i < 0 by x_j ≥ 0 through w⁻ and by x_j < 0 through w⁺. With
  x = x⁺ + x⁻ (x⁺ = max(x, 0), x⁻ = min(x, 0)) and the parents' responses y (the node's output):
      D⁺ = W⁺x⁺ + W⁻x⁻ ≥ 0,  D⁻ = W⁻x⁺ + W⁺x⁻ ≤ 0          (1/Z⁺, 1/Z⁻ of eqs. 3–4)
      s⁺ = [y ≥ 0] p ⊘ D⁺,     s⁻ = [y < 0] p ⊘ D⁻           (0/0 := 0)
      p(x) = x⁺ ⊙ (W⁺ᵀs⁺ + W⁻ᵀs⁻) + x⁻ ⊙ (W⁻ᵀs⁺ + W⁺ᵀs⁻)     (P⁺ + P⁻, eq. 3 + eq. 4)
  A neuron's sign is its response's (bias included) at Conv, Gemm, MatMul and pools, and the bias-free
  c·x's at elementwise rescalings and shifts (rules.linear.linear_input); `backward(responses=...)`
  can override both the responses weighed and the signs read (gweEBP's ã; the target read as a winner).
  Every term is ≥ 0, and Σ p(x) = Σ p(y) wherever the parent's D ≠ 0 (mass conserved). On
  non-negative x with p = 0 at negative parents (a ReLU network) it is ``excitation`` exactly.

- ``deeplift``: DeepLIFT's multipliers with the rescale rule (Shrikumar et al. 2017, §3.3–3.5): the
  gradient, except that an elementwise nonlinearity f passes m_x = m_y · (f(x) − f(x₀)) / (x − x₀)
  (its derivative where |x − x₀| < 1e-10), x₀ the same tensor in the reference run (backward's
  `reference`); max pooling and Max pass m_y · (y − y₀) / (x − x₀) to the winner, as captum does.
- ``lrp_epsilon``, ``lrp_alpha_beta``: layer-wise relevance propagation (Bach et al. 2015; Montavon
  et al. 2019 "Layer-wise relevance propagation: an overview", §10.2). At a layer z = A x + b:
      ε:    R_x = x ⊙ Aᵀ (R ⊘ (z + ε·sign(z)))           (z with the bias: the bias absorbs its share)
      α1β0: R_x = x⁺ ⊙ A⁺ᵀ s + x⁻ ⊙ A⁻ᵀ s,  s = R ⊘ (A⁺x⁺ + A⁻x⁻)   (the positive contributions (x w)⁺,
            bias left out, 0/0 := 0)
  Like excitation, relevance passes through activations, goes to the winner at max pooling and all
  to the signal path at gates. On x ≥ 0, α1β0 is excitation's rule: the two methods differ in their
  start (LRP starts from R = the score's value, EBP from probability 1), at negative inputs (α1β0
  keeps the (x w)⁺ of x < 0 through w < 0, EBP assumes no such input) and at residual sums under ε.

The kinds differ only at rectifiers (guided, deconv), at nonlinearities (deeplift) and at linear maps and
activations (excitation, extended, LRP); every rule implements them all, usually through one shared helper.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Signal = Literal["gradient", "guided", "deconv", "deeplift", "excitation", "extended", "lrp_epsilon", "lrp_alpha_beta"]
SIGNALS: tuple[Signal, ...] = ("gradient", "guided", "deconv", "deeplift", "excitation", "extended", "lrp_epsilon",
                               "lrp_alpha_beta")
# Conserved quantities (winning probability, relevance): activations pass them through, winners take all,
# gates take none.
EXCITATIONS: tuple[Signal, ...] = ("excitation", "extended", "lrp_epsilon", "lrp_alpha_beta")


def check_signal(signal: str) -> Signal:
    """`signal` itself, or ValueError (a programming error: users choose methods, not signals)."""
    if signal not in SIGNALS:
        raise ValueError(f"signal {signal!r} is not one of {', '.join(SIGNALS)}")
    return signal  # type: ignore[return-value]


def is_excitation(signal: str) -> bool:
    """Whether `signal` carries a conserved quantity (EBP's, eEBP's winning probability, LRP's relevance)."""
    return signal in EXCITATIONS


def safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator elementwise (broadcast), with x/0 := 0 (EBP's 0/0 := 0 convention)."""
    shape = np.broadcast_shapes(np.shape(numerator), np.shape(denominator))
    out = np.zeros(shape, dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=np.broadcast_to(denominator != 0, shape))
    return out


def unbroadcast(signal: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The adjoint of numpy broadcasting `shape` up to signal.shape: sum over the broadcast axes."""
    extra = signal.ndim - len(shape)
    reduced = signal.sum(axis=tuple(range(extra))) if extra > 0 else signal
    axes = tuple(i for i, (have, want) in enumerate(zip(reduced.shape, shape, strict=True)) if want == 1 and have != 1)
    return reduced.sum(axis=axes, keepdims=True) if axes else reduced
