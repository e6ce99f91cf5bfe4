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
