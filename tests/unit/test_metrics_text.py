"""api/metrics_lanes.write produces exactly what prometheus_client's generate_latest does."""

from __future__ import annotations

from typing import Any

from prometheus_client import generate_latest
from prometheus_client.core import CollectorRegistry, GaugeMetricFamily
from prometheus_client.registry import Collector

from api.metrics_lanes import Family, write

AWKWARD = ['a"b', "back\\slash", "new\nline", "ünï €", "", "6" * 24]
VALUES = [
    0,
    1,
    999_999,
    1_000_000,
    -2,
    True,
    2.5,
    -3.25,
    1234567.0,
    1e-7,
    12345678901.5,
    float("inf"),
    float("nan"),
    10**7,
]
AWKWARD += [f"u{i}" for i in range(len(VALUES) - len(AWKWARD))]


class _Fixed(Collector):
    def __init__(self, families: list[Family]) -> None:
        self.families = families

    def collect(self) -> Any:
        for f in self.families:
            g = GaugeMetricFamily(f.name, f.doc, labels=[f.label])
            for value, x in f.samples:
                g.add_metric([value], x)
            yield g


def _reference(families: list[Family]) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(families))
    return generate_latest(registry).decode()


def test_text_equals_generate_latest() -> None:
    families = [
        Family(
            "spdist_lane_depth",
            "Requests waiting per user.",
            list(zip(AWKWARD, VALUES, strict=True)),
        ),
        Family("spdist_x", 'Help with a \\ backslash,\na newline and "quotes".', [("u", 1.0)]),
        Family("spdist_empty", "No lanes.", []),
        Family("spdist_values", "Every value.", [(f"u{i}", v) for i, v in enumerate(VALUES)]),
    ]
    assert write(families) == _reference(families)


def test_no_families_no_text() -> None:
    assert write([]) == _reference([]) == ""
