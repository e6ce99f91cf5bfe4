import orjson

from sophia.shared.logging import configure_logging, get_logger


def test_logs_are_json_lines_with_bound_context(capsys):
    import structlog

    configure_logging("INFO", json=True)
    structlog.contextvars.bind_contextvars(request_id="abc")
    try:
        get_logger("test").info("hello", answer=42)
        get_logger("test").debug("hidden")
    finally:
        structlog.contextvars.clear_contextvars()
        configure_logging("WARNING", json=False)
    lines = [orjson.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    assert lines[-1]["event"] == "hello"
    assert lines[-1]["answer"] == 42
    assert lines[-1]["request_id"] == "abc"
    assert not any(line["event"] == "hidden" for line in lines)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_a_flood_of_one_kind_of_line_is_sampled_and_the_next_line_counts_what_was_left_out(monkeypatch):
    from sophia.shared import resilience
    from sophia.shared.logging import LogThrottle

    clock = Clock()
    monkeypatch.setattr(resilience.time, "monotonic", clock)
    throttle = LogThrottle(per_s=2)  # a burst of 4

    assert [throttle.admit("503 /v1/embeddings") for _ in range(10)] == [0] * 4 + [None] * 6
    assert throttle.admit("500 /api/v1/records") == 0  # another kind has its own allowance
    clock.now += 0.5  # one line's worth
    assert throttle.admit("503 /v1/embeddings") == 6
    assert throttle.admit("503 /v1/embeddings") is None
    clock.now += 0.5
    assert throttle.admit("503 /v1/embeddings") == 1


def test_rate_zero_writes_every_line_and_only_the_last_kinds_used_are_remembered(monkeypatch):
    from sophia.shared import resilience
    from sophia.shared.logging import LogThrottle

    monkeypatch.setattr(resilience.time, "monotonic", Clock())
    unlimited = LogThrottle(per_s=0)
    assert all(unlimited.admit("a") == 0 for _ in range(1_000))

    throttle = LogThrottle(per_s=1, max_kinds=2)  # a burst of 2
    assert [throttle.admit("a"), throttle.admit("a"), throttle.admit("a")] == [0, 0, None]
    throttle.admit("b")
    throttle.admit("c")  # "a" was used longest ago: forgotten, with its allowance spent
    assert throttle.admit("a") == 0
    assert len(throttle._kinds) == 2


def test_what_is_left_out_is_counted_until_a_line_of_its_kind_reports_it(monkeypatch):
    from sophia.shared import resilience
    from sophia.shared.logging import LogThrottle

    clock = Clock()
    monkeypatch.setattr(resilience.time, "monotonic", clock)
    throttle = LogThrottle(per_s=1)  # a burst of 2
    for kind in ("a", "a", "a", "a", "b", "b", "b"):
        throttle.admit(kind)
    assert throttle.left_out() == 3
    clock.now += 1
    assert throttle.admit("a") == 2
    assert throttle.left_out() == 1
