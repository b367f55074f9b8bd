"""Gradient rules: ReLUs whose backward pass is an attribution method's, forward values unchanged.

``relu_rule(kind)`` is a rule for ``evaluate.rewrite`` that computes every ``jax.nn.relu`` and
``jax.nn.relu6`` (flax's ``nn.relu``, ``nnx.relu``; recognised by ``match.activation``) with the
ReLU of ``RELU_RULES[kind]``. A hand-written ``jnp.maximum(x, 0)`` is not recognised, and so keeps
its exact gradient, as does a normalization's variance clamp ``max(0, E[x²] - E[x]²)``.

Kinds: "redirected" (Lucid's redirected ReLU gradient: when no gradient passes a ReLU for a whole
image, let through the part that would raise negative inputs, so a grey start on a silent unit
still moves); "guided" (guided backprop, Springenberg et al. 2015: the gradient passes only where
the input was positive AND the incoming gradient is positive); "deconvnet" (Zeiler & Fergus
2014: the positive part of the incoming gradient passes, whatever the input). Sign convention: a
rule sees the cotangent of whatever is differentiated. "guided" and "deconvnet" assume that is the
score being explained (larger = more evidence); "redirected" assumes a loss being minimized.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from cnnvis_widgets.jaxpr import match


def _relu_fwd(x):
    return jnp.maximum(x, 0.0), x


@jax.custom_vjp
def _redirected_relu(x):
    return jnp.maximum(x, 0.0)


def _redirected_bwd(x, g):
    """Lucid's redirected_relu_grad (g: cotangent of a loss being minimized)."""
    # The ReLU's own gradient where(x < 0, 0, g) if any of it is non-zero; otherwise the
    # redirected one where((x < 0) & (g > 0), 0, g), which passes only what pushes negative
    # inputs up. Written as one select after one reduction, so XLA fuses it into two passes.
    negative = x < 0
    passes = jnp.any(~negative & (g != 0))
    return (jnp.where(negative & (passes | (g > 0)), jnp.zeros_like(g), g),)


_redirected_relu.defvjp(_relu_fwd, _redirected_bwd)


@jax.custom_vjp
def _guided_relu(x):
    return jnp.maximum(x, 0.0)


def _guided_bwd(x, g):
    """Guided backprop (Springenberg et al. 2015): pass g only where x > 0 AND g > 0.

    g is the cotangent of the quantity being differentiated, which must be the score being
    explained (larger = more evidence). Differentiating a loss (e.g. -score) flips g's sign and
    would keep the negative evidence instead: differentiate the score itself.
    """
    return (jnp.where((x > 0) & (g > 0), g, jnp.zeros_like(g)),)


_guided_relu.defvjp(_relu_fwd, _guided_bwd)


@jax.custom_vjp
def _deconvnet_relu(x):
    return jnp.maximum(x, 0.0)


def _deconvnet_bwd(x, g):
    """Deconvnet (Zeiler & Fergus 2014): relu(g) whatever x was (same sign convention as guided)."""
    del x
    return (jnp.maximum(g, 0.0),)


_deconvnet_relu.defvjp(_relu_fwd, _deconvnet_bwd)
RELU_RULES = {"redirected": _redirected_relu, "guided": _guided_relu, "deconvnet": _deconvnet_relu}


def relu_rule(kind: str):
    """The rule computing ``jax.nn.relu`` and ``relu6`` with ``RELU_RULES[kind]``'s gradient
    (relu6 as ``min(relu(x), 6)``, as jax.nn writes it)."""
    if kind not in RELU_RULES:
        raise ValueError(f"Unknown ReLU rule {kind!r}; valid: {sorted(RELU_RULES)} or None.")
    relu = RELU_RULES[kind]

    def rule(eqn, ins, producer=None):
        name = match.activation(eqn)
        if name == "relu":
            return [relu(ins[0])]
        if name == "relu6":
            return [jnp.minimum(relu(ins[0]), 6.0)]
        return None

    rule.__name__ = rule.__qualname__ = f"relu_rule_{kind}"
    return rule


def relu_rules(kind: str | None) -> tuple:
    """``(relu_rule(kind),)``, or no rules for ``None`` (exact gradients)."""
    return () if kind is None else (relu_rule(kind),)
