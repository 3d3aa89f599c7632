// The partspec extension: the grammar and language configuration are declarative
// (package.json); this starts `pspec lsp` (diagnostics, hover, completion, definition,
// formatting) for .pspec files when the command is available.
"use strict";

const vscode = require("vscode");

let client;

async function activate(context) {
  const command = vscode.workspace.getConfiguration("partspec").get("server.command");
  if (!Array.isArray(command) || command.length === 0) {
    return; // highlighting only
  }
  const { LanguageClient } = require("vscode-languageclient/node");
  client = new LanguageClient(
    "partspec",
    "partspec",
    { command: command[0], args: command.slice(1) },
    { documentSelector: [{ scheme: "file", language: "pspec" }] }
  );
  try {
    await client.start();
  } catch (err) {
    vscode.window.showWarningMessage(
      `partspec: could not start \`${command.join(" ")}\` (pip install 'partspec[lsp]'): ${err}`
    );
  }
  context.subscriptions.push({ dispose: () => client && client.stop() });
}

function deactivate() {
  return client ? client.stop() : undefined;
}

module.exports = { activate, deactivate };
