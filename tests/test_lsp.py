"""``pspec lsp`` driven as an editor drives it: JSON-RPC messages over the real server's
stdin and stdout (initialize, didOpen, didChange, hover, completion, definition,
formatting, shutdown, exit)."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("pygls", reason="pspec lsp needs pygls (the lsp extra, in the test extra)")

TREE = {
    "backbone": {"w": {"shape": [4, 3], "dtype": "float32"}},
    "head": {
        "kernel": {"shape": [3, 2], "dtype": "float32"},
        "bias": {"shape": [2], "dtype": "float32"},
    },
}
BAD = 'param lr = 1e-3\ninclude "parts/base.pspec"\nhead/** -> adma(lr * 2)\n'
GOOD = 'param lr = 1e-3\ninclude "parts/base.pspec"\nhead/** -> adam(lr * 2)\n'


class Client:
    """A minimal LSP client: Content-Length framing, requests matched to responses."""

    def __init__(self, cwd: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "partspec", "lsp"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
        )
        self.inbox: queue.Queue[dict[str, Any]] = queue.Queue()
        self.next_id = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        out = self.proc.stdout
        assert out is not None
        while True:
            headers = {}
            while True:
                line = out.readline()
                if not line:
                    return
                if line in (b"\r\n", b"\n"):
                    break
                key, _, value = line.decode("ascii").partition(":")
                headers[key.strip().lower()] = value.strip()
            body = out.read(int(headers["content-length"]))
            self.inbox.put(json.loads(body))

    def send(self, message: dict[str, Any]) -> None:
        body = json.dumps({"jsonrpc": "2.0", **message}).encode("utf-8")
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.proc.stdin.flush()

    def notify(self, method: str, params: Any) -> None:
        self.send({"method": method, "params": params})

    def wait(self, predicate: Any, what: str) -> dict[str, Any]:
        skipped = []
        while True:
            try:
                msg = self.inbox.get(timeout=60)
            except queue.Empty:
                raise AssertionError(f"no {what}; got {skipped}") from None
            if predicate(msg):
                return msg
            skipped.append(msg)

    def request(self, method: str, params: Any) -> Any:
        self.next_id += 1
        n = self.next_id
        self.send({"id": n, "method": method, "params": params})
        msg = self.wait(lambda m: m.get("id") == n and "method" not in m, f"response to {method}")
        assert "error" not in msg, msg
        return msg["result"]

    def change(self, uri: str, version: int, text: str) -> list[dict[str, Any]]:
        """Replace the document's text (as an editor does on typing); its diagnostics."""
        self.notify(
            "textDocument/didChange",
            {"textDocument": {"uri": uri, "version": version}, "contentChanges": [{"text": text}]},
        )
        return self.diagnostics(uri)

    def diagnostics(self, uri: str) -> list[dict[str, Any]]:
        msg = self.wait(
            lambda m: (
                m.get("method") == "textDocument/publishDiagnostics" and m["params"]["uri"] == uri
            ),
            "diagnostics",
        )
        return msg["params"]["diagnostics"]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / ".git").mkdir()
    (tmp_path / "pyproject.toml").write_text('[tool.partspec]\ntree = "model.tree.json"\n')
    (tmp_path / "model.tree.json").write_text(json.dumps(TREE))
    (tmp_path / "parts").mkdir()
    (tmp_path / "parts" / "base.pspec").write_text("let @body = backbone/**\n@body -> frozen\n")
    return tmp_path


def pos(text: str, needle: str, offset: int = 0) -> dict[str, int]:
    """The LSP position of ``needle`` (plus ``offset`` characters) in ``text``."""
    i = text.index(needle) + offset
    line = text[:i].count("\n")
    return {"line": line, "character": i - (text.rfind("\n", 0, i) + 1)}


def test_a_session_of_typing_hovering_completing_and_formatting(project: Path) -> None:
    spec = project / "main.pspec"
    spec.write_text(BAD)
    uri = spec.as_uri()
    client = Client(project)
    try:
        caps = client.request(
            "initialize", {"processId": None, "rootUri": project.as_uri(), "capabilities": {}}
        )["capabilities"]
        assert caps["hoverProvider"] and caps["definitionProvider"]
        assert caps["documentFormattingProvider"] and "completionProvider" in caps
        client.notify("initialized", {})
        doc = {"uri": uri, "languageId": "pspec", "version": 1, "text": BAD}
        client.notify("textDocument/didOpen", {"textDocument": doc})

        # A diagnostic as pspec check gives it, where the typo is, linked to its docs.
        (d,) = client.diagnostics(uri)
        assert (d["code"], d["severity"], d["source"]) == ("E401", 1, "pspec")
        assert d["range"]["start"] == pos(BAD, "adma")
        assert d["range"]["end"] == pos(BAD, "adma", 4)
        assert "did you mean `adam`?" in d["message"]
        assert d["codeDescription"]["href"].endswith("/language/#E401")

        # Fix it: no diagnostics; the tree from [tool.partspec] is checked (coverage).
        assert client.change(uri, 2, GOOD) == []
        broken = GOOD.replace("head/**", "head/*/x")
        codes = sorted(d["code"] for d in client.change(uri, 3, broken))
        assert codes == ["E501", "W601"]
        assert client.change(uri, 4, GOOD) == []

        # Hover on a rule: what it owns and its learning rate; on a name: its value.
        td = {"uri": uri}
        got = client.request(
            "textDocument/hover", {"textDocument": td, "position": pos(GOOD, "head/**", 2)}
        )
        text = got["contents"]["value"]
        assert "owns 2 leaves, 8 parameters" in text and "learning rate constant 0.002" in text
        got = client.request(
            "textDocument/hover", {"textDocument": td, "position": pos(GOOD, "lr * 2", 1)}
        )
        assert got["contents"]["value"] == "**`param lr`** = `0.001`"
        got = client.request(
            "textDocument/hover", {"textDocument": td, "position": pos(GOOD, "adam", 1)}
        )
        assert "optimizer" in got["contents"]["value"] and "b1=0.9" in got["contents"]["value"]

        # Completion: optimizers after `->`, keyword arguments inside a call.
        typing = GOOD + "extra/** -> ada"
        client.change(uri, 5, typing)
        end = pos(typing, "-> ada", 6)
        items = client.request("textDocument/completion", {"textDocument": td, "position": end})
        labels = [i["label"] for i in items["items"]]
        assert "adam" in labels and "adamw" in labels and "sgd" not in labels
        typing = GOOD + "extra/** -> adamw(1e-3, we"
        client.change(uri, 6, typing)
        end = pos(typing, ", we", 4)
        items = client.request("textDocument/completion", {"textDocument": td, "position": end})
        (item,) = [i for i in items["items"] if i["label"] == "weight_decay"]
        assert item["insertText"] == "weight_decay="

        # Go to definition: a param, a named pattern of an included file, the include.
        messy = 'param lr=1e-3\ninclude "parts/base.pspec"\nhead/**->adam( lr*2 )\n'
        client.change(uri, 7, messy)
        loc = client.request(
            "textDocument/definition", {"textDocument": td, "position": pos(messy, "lr*2")}
        )
        assert loc["uri"] == uri and loc["range"]["start"] == pos(messy, "lr=")
        loc = client.request(
            "textDocument/definition", {"textDocument": td, "position": pos(messy, "parts/")}
        )
        assert loc["uri"] == (project / "parts" / "base.pspec").as_uri()

        # Formatting: one edit that gives what `pspec fmt` writes.
        edits = client.request(
            "textDocument/formatting",
            {"textDocument": td, "options": {"tabSize": 4, "insertSpaces": True}},
        )
        (edit,) = edits
        assert edit["newText"] == GOOD
        assert edit["range"]["start"] == {"line": 0, "character": 0}

        assert client.request("shutdown", None) is None
        client.notify("exit", None)
        assert client.proc.wait(timeout=30) == 0
    finally:
        if client.proc.poll() is None:
            client.proc.kill()
        client.proc.wait()


def test_without_the_extra_pspec_lsp_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib.util

    from partspec.tools.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name in ("pygls", "lsprotocol") else real(name, *a),
    )
    assert main(["lsp"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'partspec[lsp]'" in err and "Traceback" not in err
