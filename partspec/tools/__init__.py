"""The tools on top of the stages: the command line, explain, diff, tree inputs, surgery.

- :mod:`~partspec.tools.manifest`: parameter structures without parameters (JSON
  manifests, npz and safetensors headers, Orbax metadata, ``MODULE:CALLABLE``);
- :mod:`~partspec.tools.surgery`: select, replace, transfer and reset_state by glob;
- :mod:`~partspec.tools.explain` and :mod:`~partspec.tools.diff`: what a spec does, and
  what an edit changes in the optimizer state;
- :mod:`~partspec.tools.cli`: ``pspec``.
"""
