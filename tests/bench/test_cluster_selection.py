"""Part of ``bench.cluster_bench`` on its own: ``--only`` setups, ``--qos`` levels, ``--shapes``
of the workers. The run is real (two ``nanoiot serve --workers N`` over mutual TLS, the
machine's NATS), small: one worker's pairs against two workers' pairs kept at QoS 1 is
what a look at the QoS 1 worker comparison needs, and nothing else may run."""

import argparse
import asyncio
from pathlib import Path

import pytest

from bench import cluster_bench
from bench.cluster_lean import LeanRow
from bench.cluster_options import parser, selection


def options(*given: str) -> argparse.Namespace:
    return parser("test").parse_args(list(given))


def test_the_whole_run_is_the_default_and_a_choice_is_named_in_the_report() -> None:
    whole = options()
    assert (whole.only, whole.qos, whole.shapes) == (
        ["mosquitto", "node", "nodes", "workers"], [0, 1], ["hash", "kept", "fleet"]
    )  # fmt: skip
    assert selection(whole) == ""
    chosen = options("--only", "workers", "--qos", "1", "--shapes", "fleet,kept")
    assert (chosen.only, chosen.qos, chosen.shapes) == (["workers"], [1], ["kept", "fleet"])
    assert selection(chosen) == " --only workers --qos 1 --shapes kept,fleet"


@pytest.mark.parametrize(
    "given", [("--only", "worker"), ("--qos", "2"), ("--shapes", "kept,split"), ("--only", ",")]
)
def test_an_unknown_name_is_refused(given: tuple[str, str]) -> None:
    with pytest.raises(SystemExit):
        options(*given)


async def selected(work: Path, args: argparse.Namespace) -> tuple[int, list[LeanRow], str]:
    rows, lean, load = await cluster_bench.run(args, work)
    return len(rows), lean, cluster_bench.report(rows, lean, load, args)


@pytest.mark.slow
def test_only_the_workers_qos_1_pairs_run(tmp_path: Path) -> None:
    args = options(
        "--only", "workers", "--qos", "1", "--shapes", "kept", "--messages", "2000",
        "--pairs", "2", "--no-save",
    )  # fmt: skip
    paced, lean, text = asyncio.run(selected(tmp_path, args))
    assert paced == 0
    assert [(r.setup, r.scenario, r.shape) for r in lean] == [
        ("NanoIoT, 1 worker(s)", "QoS 1", "pairs"),
        ("NanoIoT, 2 worker(s)", "QoS 1", "pairs kept"),
    ]
    for row in lean:
        assert (row.delivered, row.checked(), row.agree()) == (2 * 2000, "ok", "yes")
    assert "- QoS 1, pairs kept: 2 workers / 1 worker" in text
    assert "Paced" not in text
    assert "--only workers --qos 1 --shapes kept`" in text


@pytest.mark.slow
def test_the_one_pair_rows_take_their_own_count(tmp_path: Path) -> None:
    """The 1 -> 1 rows compare with Mosquitto on one pair: their count is their own, not a
    pair's share of the many pairs' run (``--messages``)."""
    args = options(
        "--only", "node", "--qos", "0", "--messages", "500", "--one-pair-messages", "3000",
        "--pairs", "2", "--no-save",
    )  # fmt: skip
    _, lean, text = asyncio.run(selected(tmp_path, args))
    assert [(r.setup, r.scenario, r.delivered) for r in lean] == [
        ("NanoIoT, one node", "1 -> 1 QoS 0", 3000)
    ]
    assert "one pair of 3,000 messages, 2 pairs of 500 each" in text
