// Tokenize texts with a TextMate grammar, as VS Code does (vscode-textmate with the
// Oniguruma regex engine). Reads {"grammar": PATH, "scope": NAME, "texts": [TEXT...]} on
// stdin; writes, for each text, its lines' tokens as [start, end, [scopes...]].
"use strict";

const fs = require("fs");
const path = require("path");
const vsctm = require("vscode-textmate");
const oniguruma = require("vscode-oniguruma");

async function main() {
  const input = JSON.parse(fs.readFileSync(0, "utf8"));
  const wasm = fs.readFileSync(
    path.join(path.dirname(require.resolve("vscode-oniguruma")), "onig.wasm")
  ).buffer;
  await oniguruma.loadWASM(wasm);
  const registry = new vsctm.Registry({
    onigLib: Promise.resolve({
      createOnigScanner: (patterns) => new oniguruma.OnigScanner(patterns),
      createOnigString: (s) => new oniguruma.OnigString(s),
    }),
    loadGrammar: async (scope) =>
      scope === input.scope
        ? vsctm.parseRawGrammar(fs.readFileSync(input.grammar, "utf8"), input.grammar)
        : null,
  });
  const grammar = await registry.loadGrammar(input.scope);
  const out = input.texts.map((text) => {
    let stack = vsctm.INITIAL;
    return text.split("\n").map((line) => {
      const r = grammar.tokenizeLine(line, stack);
      stack = r.ruleStack;
      return r.tokens.map((t, i) => [
        t.startIndex,
        i + 1 < r.tokens.length ? r.tokens[i + 1].startIndex : line.length,
        t.scopes,
      ]);
    });
  });
  process.stdout.write(JSON.stringify(out));
}

main().catch((err) => {
  process.stderr.write(String(err && err.stack ? err.stack : err) + "\n");
  process.exit(1);
});
