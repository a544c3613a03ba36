"""The two-workers-against-one lines of the cluster benchmark's report: pure arithmetic."""

from bench.cluster_lean import LeanRow
from bench.cluster_shapes import ratios


def row(workers: int, shape: str, wall_s: float, cpu_s: float) -> LeanRow:
    result = {"received": 1000, "wall_s": wall_s}
    return LeanRow("QoS 0", f"NanoIoT, {workers} worker(s)", shape, result, cpu_s, 0.0, None,
                   workers)  # fmt: skip


def test_pairs_kept_on_a_worker_compare_with_one_workers_pairs() -> None:
    rows = [
        row(1, "pairs", 1.0, 1.0),
        row(1, "fleet, 1 consumer(s)", 2.0, 2.0),
        row(2, "pairs, kernel's hash", 0.8, 1.0),
        row(2, "pairs kept", 0.5, 1.0),
        row(2, "fleet, 2 consumer(s)", 1.0, 2.0),
    ]
    assert ratios(rows) == [
        "- QoS 0, pairs, kernel's hash: 2 workers / 1 worker 1.25x by wall clock, "
        "2.00x by capacity",
        "- QoS 0, pairs kept: 2 workers / 1 worker 2.00x by wall clock, 2.00x by capacity",
        "- QoS 0, fleet, 2 consumer(s): 2 workers / 1 worker 2.00x by wall clock, "
        "2.00x by capacity",
        "",
    ]
