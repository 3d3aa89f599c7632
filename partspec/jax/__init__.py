"""The JAX backend: pytrees resolved leaf by leaf, and optax built from the resolution.

- :mod:`~partspec.jax.tree`: leaf paths of any pytree, and the labelling walk;
- :mod:`~partspec.jax.optimizers`: optax from evaluated actions, plus partspec's own
  transformations (``frozen``, ``frozen until``, the gate before ``global``);
- :mod:`~partspec.jax.plan`: ``compile``: a spec and a pytree to a :class:`Plan`.

Importing it imports JAX and optax (the ``jax`` extra).
"""
