"""The partspec language: text to AST to a checked spec. Pure Python; needs lark only.

The stages, each importing only the ones before it:

- :mod:`~partspec.language.vocabulary`: keywords, dtype names, leaf properties;
- :mod:`~partspec.language.ast`: frozen dataclasses with source spans;
- :mod:`~partspec.language.parser`: text to AST (Lark, LALR; the parse tree never
  leaves it) and :mod:`~partspec.language.formatter`: AST to canonical text;
- :mod:`~partspec.language.includes`: ``include`` statements resolved;
- :mod:`~partspec.language.checker`: names, calls and types checked, every value
  evaluated (no JAX, no optax: the allow-list is data);
- :mod:`~partspec.language.load`: ``parse`` and ``load``, the stages composed.

>>> from partspec.language import load
>>> load.parse("head/** -> adam(5e-3)").rules[0].action.func
'adam'
"""
