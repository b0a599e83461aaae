"""Fault hooks for the processes a test starts: the context's seams from the environment."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any


def seams_from_env() -> dict[str, Any]:
    """`build_context` seams for a process a fault test starts, from its environment
    (named by SPDIST_CONTEXT_SEAMS=worker.dev.faults:seams_from_env):

    SPDIST_TEST_LEASE_S     a shorter claim lease, so a lease-expiry scenario fits in seconds
    SPDIST_TEST_CLAIM_GATE  dir: the first claim for the upload named in dir/upload stops
                            between the reservation and the claim's SQL: it creates
                            dir/at-claim and waits for dir/go (a test cuts the database there)
    SPDIST_TEST_SEND_GATE   dir: the first call for the upload named in dir/upload, once it
                            has taken its slot, writes its pid to dir/at-send and waits for
                            dir/go before it sends (a test SIGSTOPs the process there)
    """
    from worker.context import Hooks

    seams: dict[str, Any] = {}
    if lease := os.environ.get("SPDIST_TEST_LEASE_S"):
        seams["lease_s"] = float(lease)
    claim_gate = os.environ.get("SPDIST_TEST_CLAIM_GATE")
    send_gate = os.environ.get("SPDIST_TEST_SEND_GATE")
    seams["hooks"] = Hooks(
        before_claim=_gate(Path(claim_gate), "at-claim") if claim_gate else Hooks.before_claim,
        after_fire=_gate(Path(send_gate), "at-send") if send_gate else Hooks.after_fire,
    )
    return seams


def _gate(folder: Path, marker: str) -> Any:
    """A hook that stops the first time it sees the upload named in folder/upload: it
    creates folder/`marker` (holding this pid) and waits up to 30 s for folder/go."""

    def stop(name: str) -> None:
        target = folder / "upload"
        if not (target.exists() and name.endswith(target.read_text().strip())):
            return
        try:
            fd = os.open(folder / marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return  # another attempt already stopped here once
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        deadline = time.monotonic() + 30
        while not (folder / "go").exists() and time.monotonic() < deadline:
            time.sleep(0.001)

    return stop
