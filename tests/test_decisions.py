"""DecisionLog: one JSON line per record; a stalled file never stalls the caller and a line
that cannot be written is counted and logged, never lost silently. Real files: a FIFO
nobody reads (a stalled stderr pipe) and /dev/full (a full disk)."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from router.observability.decisions import DecisionLog, DecisionRecord

DESIGN_KEYS = {
    "ts", "decision_id", "team", "requested_model", "strategy", "candidates", "chosen",
    "reason", "fallbacks", "served_by", "prompt_tokens", "completion_tokens", "cost_usd",
    "budget_remaining_usd", "scoring_ms", "upstream_ms", "ttft_ms", "status",
}  # fmt: skip


def record(i: int, **kw: object) -> DecisionRecord:
    return DecisionRecord(decision_id=f"d{i}", team="red", **kw)


def test_one_json_line_per_record_with_attempts(tmp_path):
    path = tmp_path / "decisions.jsonl"
    log = DecisionLog(str(path))
    fb = [{"model": "o1", "error": "timeout", "message": "read timed out"}]
    log.write(record(1, served_by="gpt-4o", attempts=3, fallbacks=fb, status=200))
    log.write(record(2, status=401))
    assert log.flush(timeout=10)
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert [x["decision_id"] for x in lines] == ["d1", "d2"]
    assert set(lines[0]) >= DESIGN_KEYS
    assert lines[0]["attempts"] == 3 and lines[0]["fallbacks"] == fb
    assert lines[1]["attempts"] == 0 and lines[1]["status"] == 401
    assert "prompt" not in lines[0]
    log.close()
    assert log.lost == 0


def test_close_writes_out_everything_queued(tmp_path):
    path = tmp_path / "decisions.jsonl"
    log = DecisionLog(str(path))
    for i in range(500):
        log.write(record(i))
    log.close()
    ids = [json.loads(x)["decision_id"] for x in path.read_text().splitlines()]
    assert ids == [f"d{i}" for i in range(500)]


def test_stalled_file_does_not_block_writes_and_drops_are_counted(tmp_path, caplog):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # open, but nobody reads yet
    log = DecisionLog(str(fifo), max_pending=20)
    big = "x" * 2000  # ~32 lines fill a 64 KiB pipe buffer
    for i in range(1000):  # would hang here if write() waited on the pipe
        log.write(record(i, prompt=big))
    assert log.dropped > 0 and log.pending > 0
    assert "dropped" in caplog.text
    accepted = 1000 - log.dropped

    os.set_blocking(reader, True)
    chunks: list[bytes] = []

    def drain() -> None:
        while chunk := os.read(reader, 1 << 16):
            chunks.append(chunk)

    t = threading.Thread(target=drain)
    t.start()
    assert log.flush(timeout=30)
    log.close()  # EOF for the reader
    t.join(30)
    os.close(reader)
    lines = b"".join(chunks).splitlines()
    assert len(lines) == accepted
    ids = [int(json.loads(x)["decision_id"][1:]) for x in lines]
    assert ids == sorted(ids) and ids[0] == 0  # written in order, oldest first
    assert log.lost == log.dropped and log.failed == 0


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_file_that_refuses_lines_is_counted_and_logged(caplog):
    log = DecisionLog("/dev/full")
    for i in range(3):
        log.write(record(i))
    assert log.flush(timeout=10)
    assert log.failed == 3 and log.lost == 3
    assert "lost" in caplog.text and "No space left" in caplog.text
    log.close()


def test_write_after_close_is_counted(tmp_path):
    log = DecisionLog(str(tmp_path / "d.jsonl"))
    log.close()
    log.write(record(1))
    assert log.dropped == 1


def test_off_writes_nothing(tmp_path):
    log = DecisionLog("off")
    log.write(record(1))
    assert log.flush(timeout=1) and log.lost == 0 and log.pending == 0
    log.close()
