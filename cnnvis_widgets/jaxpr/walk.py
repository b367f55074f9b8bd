"""Reading a jaxpr without evaluating it: nested jaxprs, producers, calls, a forward propagation."""

from __future__ import annotations

from typing import Any, Callable, Iterator, Optional, Sequence

from jax.extend import core as jcore

# Call-like primitives whose body maps the call's inputs to its outputs one to one.
CALLS = frozenset({
    "pjit", "jit", "closed_call", "core_call", "remat", "remat2", "checkpoint",
    "custom_jvp_call", "custom_vjp_call", "custom_vjp_call_jaxpr", "custom_lin",
})  # fmt: skip


def sub_jaxprs(eqn) -> Iterator[Any]:
    """The jaxprs inside ``eqn`` (a jit's, a custom_jvp's, a loop's body, a cond's branches)."""
    for value in eqn.params.values():
        for item in value if isinstance(value, tuple) else (value,):  # cond: a tuple of branches
            if isinstance(item, jcore.ClosedJaxpr):
                yield item.jaxpr
            elif isinstance(item, jcore.Jaxpr):
                yield item


def eqns(jaxpr) -> Iterator[Any]:
    """Every equation of ``jaxpr`` and of the jaxprs nested in its equations, depth first."""
    for eqn in jaxpr.eqns:
        yield eqn
        for sub in sub_jaxprs(eqn):
            yield from eqns(sub)


def call_body(eqn) -> Optional[tuple[Any, Sequence[Any]]]:
    """(jaxpr, consts) of a call-like ``eqn`` whose body maps its inputs one to one, else None."""
    if eqn.primitive.name not in CALLS:
        return None
    for value in eqn.params.values():
        if isinstance(value, jcore.ClosedJaxpr):
            body, consts = value.jaxpr, value.consts
        elif isinstance(value, jcore.Jaxpr):
            body, consts = value, ()
        else:
            continue
        if len(body.invars) == len(eqn.invars) and len(body.outvars) == len(eqn.outvars):
            return body, consts
    return None


def producers(jaxpr) -> dict:
    """{var: the equation of ``jaxpr`` that computes it} (its inputs and constants have none)."""
    return {v: eqn for eqn in jaxpr.eqns for v in eqn.outvars}


def is_var(v) -> bool:
    """A variable, not a literal constant written into the equation."""
    return not isinstance(v, jcore.Literal)


def frozen(params: dict) -> tuple:
    """An equation's parameters as a hashable key (for caching the replacement built from them)."""
    return tuple(sorted(params.items()))


def read_later(jaxpr, var) -> bool:
    """Whether an equation of ``jaxpr`` reads ``var``, or (``var`` coming out of a call) an equation
    of the call's body reads the value inside it. The jaxpr's own outputs are not reads."""
    for eqn in jaxpr.eqns:
        if any(v is var for v in eqn.invars):
            return True
        body = call_body(eqn) if eqn.primitive.name in ("pjit", "jit", "closed_call") else None
        if body is not None and var in eqn.outvars:
            inner = body[0].outvars[eqn.outvars.index(var)]
            if is_var(inner) and read_later(body[0], inner):
                return True
    return False


# step(eqn, states of its inputs, states of its outputs from its body or None) -> its outputs' states
Step = Callable[[Any, list, Optional[list]], Sequence[Any]]


def propagate(jaxpr, inputs: Sequence[Any], step: Step) -> list:
    """A state carried forward through ``jaxpr``: the states of its outputs given its inputs'.

    A state is anything but None (None: not tracked; literals have none). ``step`` runs for every
    equation with a tracked input; a call whose body maps inputs one to one is entered first and
    ``step`` gets the body's output states as ``inner`` (else None).
    """
    env: dict = dict(zip(jaxpr.invars, inputs))
    read = lambda v: env.get(v) if is_var(v) else None  # noqa: E731
    for eqn in jaxpr.eqns:
        ins = [read(v) for v in eqn.invars]
        if all(g is None for g in ins):
            continue
        body = call_body(eqn)
        inner = propagate(body[0], ins, step) if body is not None else None
        env.update(zip(eqn.outvars, step(eqn, ins, inner)))
    return [read(v) for v in jaxpr.outvars]
