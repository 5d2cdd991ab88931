"""The outcome recorder on its own: at most ``limit`` sent messages wait unrecorded (the
crash window), writes happen in chunks while sending goes on, and a failed write stops
admission and surfaces at close."""

from __future__ import annotations

import asyncio

import pytest

from digestd.delivery.recorder import Recorder


class Writes:
    """A write that can be held open (a slow database) or made to fail."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail: Exception | None = None

    async def __call__(self, entries: list[int]) -> None:
        await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        self.batches.append(entries)


async def _admitted(recorder: Recorder[int], count: int) -> int:
    """How many of ``count`` admissions get through without waiting on a write (a waiting
    one is cancelled: no real time passes)."""
    passed = 0
    for _ in range(count):
        admission = asyncio.ensure_future(recorder.admit())
        for _ in range(3):
            await asyncio.sleep(0)  # every ready callback runs
        if not admission.done():
            admission.cancel()
            break
        passed += 1
    return passed


def test_no_more_than_limit_sent_messages_wait_unrecorded() -> None:
    async def scenario() -> None:
        writes = Writes()
        writes.gate.clear()  # the database is slow: nothing gets written yet
        recorder: Recorder[int] = Recorder(writes, limit=4)
        assert await _admitted(recorder, 4) == 4
        for n in range(4):
            recorder.add(n, admitted=True)
        assert await _admitted(recorder, 1) == 0  # a fifth must wait for a write
        writes.gate.set()
        await recorder.settle()
        assert await _admitted(recorder, 4) == 4  # room again once recorded
        assert sorted(n for batch in writes.batches for n in batch) == [0, 1, 2, 3]

    asyncio.run(scenario())


def test_outcomes_are_written_in_chunks_while_sending_goes_on() -> None:
    async def scenario() -> None:
        writes = Writes()
        recorder: Recorder[int] = Recorder(writes, limit=8)  # chunks of 2
        for n in range(5):
            await recorder.admit()
            recorder.add(n, admitted=True)
            await asyncio.sleep(0)  # the background write gets its turn
        await recorder.close()
        assert [n for batch in writes.batches for n in batch] == [0, 1, 2, 3, 4]
        assert max(len(batch) for batch in writes.batches) <= 3

    asyncio.run(scenario())


def test_a_failed_write_stops_admission_and_is_raised_at_close() -> None:
    async def scenario() -> None:
        writes = Writes()
        writes.fail = ConnectionError("database went away")
        recorder: Recorder[int] = Recorder(writes, limit=2)
        await recorder.admit()
        await recorder.admit()
        waiting = asyncio.ensure_future(recorder.admit())  # full: waits for a write
        recorder.add(1, admitted=True)
        recorder.add(2, admitted=True)
        await asyncio.wait_for(waiting, timeout=1)  # woken by the failure, not left hanging
        assert isinstance(recorder.failed, ConnectionError)
        with pytest.raises(ConnectionError, match="went away"):
            await recorder.close()

    asyncio.run(scenario())


def test_an_outcome_waits_for_its_chunk_only_so_long() -> None:
    """A slow relay fills a chunk in minutes: the outcomes it took are written after
    ``flush_after`` anyway (a kill -9 then repeats those on the wire, not a chunk)."""

    async def scenario() -> None:
        writes = Writes()
        waiting: Recorder[int] = Recorder(writes, limit=400, flush_after=3600)
        prompt: Recorder[int] = Recorder(writes, limit=400, flush_after=0)
        for recorder, entry in ((waiting, 1), (prompt, 2)):
            await recorder.admit()
            recorder.add(entry, admitted=True)
        for _ in range(3):
            await asyncio.sleep(0)  # the timer at 0 s fires, its write runs
        assert writes.batches == [[2]]  # 1 waits for its chunk of 100 (or its hour)
        await waiting.close()
        await prompt.close()
        assert writes.batches == [[2], [1]]

    asyncio.run(scenario())
