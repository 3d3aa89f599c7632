"""``python -m partspec.language``: regenerate the parser tables after editing the grammar."""

from partspec.language.grammar import TABLES, grammar_text, render

TABLES.write_text(render(grammar_text()), encoding="utf-8")
print(f"wrote {TABLES}")
