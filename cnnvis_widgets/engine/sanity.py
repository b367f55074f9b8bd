"""Sanity checks: do the explanations depend on what the network learned?

``randomization_cascade`` re-initializes the model's parameters from the top layer
down, one module at a time, and measures how similar each saliency method's maps stay
to the trained model's (Spearman rank correlation and SSIM). A method whose maps barely
change is explaining the input, not the model.
``regularizer_ablation`` runs activation maximization with the same seed and each
regularizer switched off in turn, to show what each one contributes.

References: Adebayo et al. 2018, "Sanity Checks for Saliency Maps" (NeurIPS).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jcore

from cnnvis_widgets.engine import ascent, recipes, regularizers
from cnnvis_widgets.engine.saliency import METHODS, saliency
from cnnvis_widgets.models.probe import require_probe


@dataclasses.dataclass
class CascadeResult:
    """Similarity of each method's maps to the trained model's, as more layers are randomized.

    steps: labels of the randomization steps, ``steps[0] == "trained"`` then one module more
    each step, top down; spearman, ssim: (steps, methods, images); maps: (steps, methods, N, H, W).
    """

    steps: list[str]
    methods: list[str]
    spearman: np.ndarray
    ssim: np.ndarray
    maps: np.ndarray
    targets: np.ndarray


def parameter_groups(probe, variables: Any = None) -> list[tuple[str, list]]:
    """The model's parameter modules in forward order: [(label, [leaf paths])].

    A module is the path of a ``params`` leaf without its last key (e.g. ``conv4_op`` for
    ``params/conv4_op/kernel``); its position is where the forward computation first uses it.
    """
    variables = probe.variables if variables is None else variables
    x = jnp.zeros((1, *probe.input_shape), jnp.float32)
    jaxpr = jax.make_jaxpr(lambda v, x: probe.reference_forward(v, x)[0])(variables, x).jaxpr
    first_use = _first_use(jaxpr)
    groups: dict[str, list] = {}
    order: dict[str, int] = {}
    for (path, label), var in zip(_parameter_leaves(variables), jaxpr.invars):
        if label is None:
            continue
        groups.setdefault(label, []).append(path)
        order[label] = min(order.get(label, 1 << 30), first_use.get(var, 1 << 30))
    return sorted(groups.items(), key=lambda kv: order[kv[0]])


def randomize(variables: Any, paths: Sequence, key: jax.Array) -> Any:
    """``variables`` with the leaves at ``paths`` re-drawn from N(mean, std) of each leaf.

    Drawn with NumPy (seeded from ``key``): JAX would compile a kernel per leaf shape,
    ~17 s of a cold cascade on digits-cnn.
    """
    chosen = {tuple(p) for p in paths}
    seed = np.asarray(jax.random.key_data(key)).ravel().tolist()
    flat, treedef = jax.tree_util.tree_flatten_with_path(variables)
    out = []
    for i, (path, leaf) in enumerate(flat):
        if tuple(path) in chosen and np.size(leaf) > 1:
            leaf = np.asarray(leaf)
            noise = np.random.default_rng([*seed, i]).standard_normal(leaf.shape).astype(leaf.dtype)
            leaf = jnp.asarray(leaf.mean() + leaf.std() * noise)
        out.append(leaf)
    return jax.tree_util.tree_unflatten(treedef, out)


def randomization_cascade(
    probe,
    images,
    methods: Sequence[str] = ("vanilla", "guided_backprop", "gradcam"),
    target=None,
    *,
    seed: int = 0,
    max_steps: int | None = None,
    **options,
) -> CascadeResult:
    """Cascading parameter randomization, top layer first (Adebayo et al. 2018).

    The target is fixed to the trained model's (predicted class by default), so only the
    weights change. ``options`` go to ``saliency`` (e.g. ``layer=`` for Grad-CAM).
    """
    from scipy.stats import spearmanr
    from skimage.metrics import structural_similarity

    images = require_probe(probe, "randomization_cascade").check_images(images)
    methods = (methods,) if isinstance(methods, str) else tuple(methods)
    unknown = [m for m in methods if not isinstance(m, str) or m not in METHODS]
    if unknown or not methods:
        raise ValueError(
            f"methods must be one or more saliency methods, got {list(methods)!r}"
            + (f" ({', '.join(map(repr, unknown))} unknown)" if unknown else "")
            + f". Valid methods: {', '.join(METHODS)}."
        )
    if max_steps is not None and (
        isinstance(max_steps, bool) or not isinstance(max_steps, (int, np.integer)) or max_steps < 1
    ):
        raise ValueError(
            f"max_steps must be a positive integer (modules to randomize) or None, got {max_steps!r}."
        )
    trained = {m: saliency(probe, images, m, target, normalize=True, **_opts(m, options)) for m in methods}
    targets = next(iter(trained.values())).targets
    fixed_target = target if _is_unit(target) else targets
    groups = parameter_groups(probe)[::-1]
    if max_steps is not None:
        groups = groups[:max_steps]
    steps, variables, key = ["trained"], probe.variables, jax.random.key(seed)
    all_maps = [[trained[m].maps for m in methods]]
    for label, paths in groups:
        variables = randomize(variables, paths, jax.random.fold_in(key, len(steps)))
        steps.append(label)
        all_maps.append(
            [
                saliency(
                    probe, images, m, fixed_target, normalize=True, variables=variables, **_opts(m, options)
                ).maps
                for m in methods
            ]
        )
    maps = np.asarray(all_maps, np.float32)  # (S, M, N, H, W)
    s, m, n = maps.shape[:3]
    rho = np.zeros((s, m, n), np.float32)
    sim = np.zeros((s, m, n), np.float32)
    for i in range(s):
        for j in range(m):
            for k in range(n):
                a, b = maps[0, j, k], maps[i, j, k]
                constant = a.std() == 0 or b.std() == 0  # a flat map ranks nothing: no correlation
                rho[i, j, k] = 0.0 if constant else spearmanr(a.ravel(), b.ravel()).statistic
                sim[i, j, k] = structural_similarity(a, b, data_range=1.0)
    return CascadeResult(steps, list(methods), rho, sim, maps, np.asarray(targets))


def regularizer_ablation(
    probe, layer: str, filters=None, *, regularizers_: Sequence | None = None, **kwargs
) -> dict[str, ascent.AscentResult]:
    """Activation maximization with all regularizers, then with each one off (same seed).

    Returns ``{"all": result, "no <name>": result, ...}``. The default regularizers are the
    literature's priors (``recipes.CLASSIC``: L2 decay, total variation, blur), whatever the
    model's own recipe uses. Weights are traced, so this compiles once.
    """
    require_probe(probe, "regularizer_ablation")
    regs = tuple(regularizers_ if regularizers_ is not None else recipes.build_priors(recipes.CLASSIC))
    weights = np.asarray(regularizers.default_weights(regs))
    out = {
        "all": ascent.visualize_filters(probe, layer, filters, regularizers=regs, weights=weights, **kwargs)
    }
    for i, reg in enumerate(regs):
        off = weights.copy()
        off[i] = 0.0
        out[f"no {reg.name}"] = ascent.visualize_filters(
            probe, layer, filters, regularizers=regs, weights=off, **kwargs
        )
    return out


# ---------------------------------------------------------------- internals
def _opts(method: str, options: dict) -> dict:
    from cnnvis_widgets.engine.saliency import method_options

    allowed = set(method_options(method))
    return {k: v for k, v in options.items() if k in allowed}


def _is_unit(target) -> bool:
    return isinstance(target, tuple)


def _key(k) -> str:
    return str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))))


def _parameter_leaves(variables) -> list[tuple[tuple, str | None]]:
    """(array-leaf path, module label or None for non-parameters such as batch statistics)."""
    from flax import nnx

    is_var = lambda x: isinstance(x, nnx.Variable)
    out = []
    for path, node in jax.tree_util.tree_flatten_with_path(variables, is_leaf=is_var)[0]:
        keys = [_key(k) for k in path]
        if is_var(node):  # nnx: one array leaf per Variable, at path + .value
            sub = jax.tree_util.tree_flatten_with_path(node)[0]
            label = "/".join(keys[:-1]) if isinstance(node, nnx.Param) else None
            out.extend((tuple(path) + tuple(p), label) for p, _ in sub)
        else:  # linen: {'params': {...}, 'batch_stats': {...}}
            out.append((tuple(path), "/".join(keys[1:-1]) if keys[:1] == ["params"] else None))
    return out


def _first_use(jaxpr) -> dict:
    """{input var: index of the first top-level equation that reads it (or a nested one)}."""
    first: dict = {}
    for i, eqn in enumerate(jaxpr.eqns):
        for v in eqn.invars:
            if not isinstance(v, jcore.Literal):
                first.setdefault(v, i)
    return first
