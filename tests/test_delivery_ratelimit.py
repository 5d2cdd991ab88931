"""Sending limits with a fake clock: the waits are computed, never slept."""

from __future__ import annotations

import asyncio

from digestd.delivery.limits import Limits, TokenBucket


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []
        self.sleepers: list[str] = []  # the task that slept, each time

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        task = asyncio.current_task()
        self.sleepers.append(task.get_name() if task else "")
        self.now += seconds
        await asyncio.sleep(0)  # let other senders run, as a real sleep would


def test_a_token_bucket_allows_one_seconds_burst_then_the_steady_rate() -> None:
    fake = FakeTime()
    bucket = TokenBucket(10, fake.clock, fake.sleep)

    async def take(n: int) -> None:
        for _ in range(n):
            await bucket.take()

    asyncio.run(take(30))
    # 10 at once (the burst), then 20 more at 10/s: two seconds.
    assert abs(fake.now - 2.0) < 1e-9


def test_rate_zero_means_no_limit() -> None:
    fake = FakeTime()
    limits = Limits(clock=fake.clock, sleep=fake.sleep)
    assert not limits.active

    async def send() -> None:
        for _ in range(1000):
            async with limits.slot("a@example.com"):
                pass

    asyncio.run(send())
    assert fake.slept == []


def test_per_domain_rate_slows_one_domain_not_the_others() -> None:
    fake = FakeTime()
    limits = Limits(domain_rate=2, clock=fake.clock, sleep=fake.sleep)
    finished: dict[str, float] = {}

    async def send(recipient: str) -> None:
        async with limits.slot(recipient):
            finished[recipient] = fake.now

    async def all_of_them() -> None:
        recipients = [f"u{i}@gmail.example" for i in range(6)]
        recipients += [f"u{i}@small.example" for i in range(2)]
        await asyncio.gather(*(asyncio.create_task(send(r), name=r) for r in recipients))

    asyncio.run(all_of_them())
    # Only gmail's senders ever waited; the small domain went straight through.
    assert fake.sleepers and all(name.endswith("@gmail.example") for name in fake.sleepers)
    gmail = sorted(t for r, t in finished.items() if r.endswith("gmail.example"))
    assert gmail[-1] >= 2.0 - 1e-9  # 6 at 2/s with a burst of 2: the last one after 2 s


def test_per_domain_concurrency_caps_messages_in_flight_to_a_domain() -> None:
    fake = FakeTime()
    limits = Limits(domain_concurrency=2, clock=fake.clock, sleep=fake.sleep)
    in_flight: dict[str, int] = {"gmail.example": 0, "other.example": 0}
    peak: dict[str, int] = {"gmail.example": 0, "other.example": 0}

    async def send(recipient: str) -> None:
        domain = recipient.rpartition("@")[2]
        async with limits.slot(recipient):
            in_flight[domain] += 1
            peak[domain] = max(peak[domain], in_flight[domain])
            for _ in range(3):
                await asyncio.sleep(0)
            in_flight[domain] -= 1

    async def all_of_them() -> None:
        await asyncio.gather(
            *(send(f"u{i}@gmail.example") for i in range(10)),
            *(send(f"u{i}@other.example") for i in range(10)),
        )

    asyncio.run(all_of_them())
    assert peak == {"gmail.example": 2, "other.example": 2}


def test_the_global_rate_applies_across_domains() -> None:
    fake = FakeTime()
    limits = Limits(rate=5, clock=fake.clock, sleep=fake.sleep)

    async def send_all() -> None:
        for i in range(15):
            async with limits.slot(f"u@d{i}.example"):
                pass

    asyncio.run(send_all())
    assert abs(fake.now - 2.0) < 1e-9  # a burst of 5, then 10 more at 5/s
