"""Settings from the environment and the key ring's file rotation."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from worker.settings import KeyRing, Settings

USER = "0" * 23 + "1"


def test_defaults_match_the_interface(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("SPDIST_"):
            monkeypatch.delenv(name)
    s = Settings()
    assert s.database_url == "sqlite:///./spdist.db"
    assert s.redis_url == "redis://localhost:6379/0"
    assert s.streampixel_url == "https://api.streampixel.io/pixelStripeApi"
    assert (s.min_interval_s, s.max_attempts, s.http_timeout_s) == (120, 8, 30)
    assert s.api_keys == {} and s.token_list() == []


def test_environment_and_dotenv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("SPDIST_MIN_INTERVAL_S=1.5\nSPDIST_API_TOKENS=a, b\n")
    monkeypatch.setenv("SPDIST_API_KEYS", json.dumps({USER: "k1"}))
    s = Settings()
    assert s.min_interval_s == 1.5 and s.token_list() == ["a", "b"]
    assert KeyRing(s).get(USER) == "k1"


def test_secrets_are_not_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    s = Settings(api_keys={USER: "sk-very-secret"}, api_tokens="tok-secret")
    assert "sk-very-secret" not in repr(s) and "tok-secret" not in repr(s)


def test_key_file_is_reread_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({USER: "old-key"}))
    ring = KeyRing(Settings(api_keys_file=path))
    assert ring.get(USER) == "old-key"
    path.write_text(json.dumps({USER: "new-key-longer"}))
    os.utime(path, (1, 2_000_000_000))
    assert ring.get(USER) == "new-key-longer"
    path.write_text("{half-written")
    os.utime(path, (1, 2_000_000_100))
    assert ring.get(USER) == "new-key-longer"
    path.unlink()
    assert ring.get(USER) is None


def test_guard_scales_with_the_interval() -> None:
    assert Settings(min_interval_s=120).guard_s == pytest.approx(0.48)
    assert Settings(min_interval_s=1).guard_s == pytest.approx(0.01)
    assert Settings(min_interval_s=1, pacer_guard_s=0).guard_s == 0
