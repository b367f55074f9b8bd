"""The one jaxpr toolkit: a traced model read, and evaluated again with rules and taps.

- ``evaluate``: ``evaluate(jaxpr, consts, args, rules, taps)`` and ``rewrite(fn, *rules)``, the
  one evaluator; ``answered(rule, fn, *args)`` counts where a rule applies.
- ``walk``: reading without evaluating (``sub_jaxprs``, ``eqns``, ``call_body``, ``producers``,
  ``read_later``) and ``propagate``, a state carried forward (receptive fields, unit centres).
- ``match``: predicates (``activation``: a ``jax.nn.relu`` / ``relu6`` call; conv and pool shapes).
- ``speed``: rules computing convolutions and pools in XLA:CPU's fast forms (``FORWARD``,
  ``GRADIENTS``). ``gradients``: ReLU gradient rules (``relu_rule``).
- ``lrp``: layer-wise relevance propagation as gradient rules (``lrp(fn, composite)``: the gradient
  is the relevance; ε, γ, z⁺, flat and w² rules per linear layer, composed by ``COMPOSITES``).

Every JAX internal this package relies on is pinned by ``tests/jaxpr/test_jax_internals.py``.
Walkers elsewhere that stay as they are, and why:
- ``models.kernels._Walker``: walks backward from one value across call scopes and evaluates only
  the kernel's cone;
- ``models.post_activation.find``: a region grown forward from one value, stopped by order and
  last reads, not a state per value;
- ``engine.ascent._live_bytes``: a backward liveness pass from chosen outputs;
- ``engine.sanity._first_use``: the first top-level equation reading each input, one loop.

This package imports nothing from ``models`` or ``engine`` (they use it).
"""
