"""``p2l-router decisions summarize`` on a generated decision log and on a ledger."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from test_history import line

from router.cli import main
from router.ledger import SqliteLedger


def _log(tmp_path, lines):
    path = tmp_path / "decisions.jsonl"
    text = "\n".join(json.dumps(x) for x in lines)
    path.write_text("INFO some other log line\n" + text + "\n{not json\n")
    return path


def _lines():
    now = float(int(time.time()))
    out = [line(i, now - 60 * i, team="a", model="m1", cost=0.001 * (i + 1)) for i in range(10)]
    out += [line(10 + i, now - 30 * i, team="b", model="m2", cost=0.002) for i in range(3)]
    out += [line(20, now, team="a", model="m2", status=502)]
    out += [line(21, now - 3 * 86400, team="a", model="m1", cost=5.0)]  # older than 24h
    return out


def test_summarize_a_log(tmp_path, capsys):
    path = _log(tmp_path, _lines())
    assert main(["decisions", "summarize", str(path), "--since", "24h", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    g = {(x["team"], x["model"]): x for x in s["groups"]}
    assert g["a", "m1"]["requests"] == 10
    assert g["a", "m1"]["spend_usd"] == pytest.approx(sum(0.001 * (i + 1) for i in range(10)))
    assert g["a", "m1"]["share"] == pytest.approx(10 / 11)
    assert g["a", "m2"]["errors"] == 1 and g["a", "m2"]["spend_usd"] == 0
    assert g["b", "m2"]["spend_usd"] == pytest.approx(0.006)
    assert main(["decisions", "summarize", str(path), "--team", "b"]) == 0
    table = capsys.readouterr().out
    assert "total: 3 requests, $0.006000" in table


def test_summarize_a_ledger_and_plot(tmp_path, capsys):
    lines = _lines()
    url = f"sqlite:///{tmp_path / 'ledger.db'}"

    async def fill():
        ledger = SqliteLedger(tmp_path / "ledger.db")
        await ledger.record_decisions(lines)
        await ledger.close()

    asyncio.run(fill())
    png = tmp_path / "out.png"
    args = ["decisions", "summarize", "--ledger", url, "--plot", str(png), "--bucket", "5m"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"total: {len(lines)} requests, ${sum(x['cost_usd'] or 0 for x in lines):.6f}" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["decisions", "summarize"]) == 2  # neither a log nor a ledger
