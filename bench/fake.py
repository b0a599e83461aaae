"""The project's fake Streampixel, with TCP_NODELAY on its sockets.

Its handler writes the status line and headers, then the body, in two sends; with Nagle on,
the body waits for the client's delayed ACK, adding about 40 ms to every call on Linux. That
stall would dominate any per-dispatch cost we measure, so the benchmark turns Nagle off
(`python -m bench.fake` takes the same arguments as `python -m worker.dev.fake_streampixel`).
"""

from __future__ import annotations

import re
from pathlib import Path

from worker.dev import fake_streampixel
from worker.dev.procs import PY, Proc, wait_for


def start(log_dir: Path, interval_s: float) -> tuple[Proc, str]:
    """The fake as its own process; returns it and its base URL."""
    import os

    argv = [PY, "-m", "bench.fake", "--port", "0", "--interval", str(interval_s)]
    proc = Proc("fake", argv, dict(os.environ, PYTHONUNBUFFERED="1"), log_dir)
    line = wait_for(lambda: re.search(r"listening on (\S+)", proc.log()), 15, "the fake")
    assert isinstance(line, re.Match)
    return proc, line.group(1)


if __name__ == "__main__":
    fake_streampixel._Handler.disable_nagle_algorithm = True
    fake_streampixel.main()
