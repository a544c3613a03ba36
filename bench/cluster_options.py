"""``bench.cluster_bench``'s command line: sizes, settings, and which part of the run to make
(``--only`` setups, ``--qos`` levels, ``--shapes`` of the workers)."""

import argparse
from collections.abc import Callable, Sequence

from bench.cluster_lean import WORKER_SHAPES, Load

SLICE = Load.slice  # messages a pair's publisher writes at once (lean)
SETUPS = ("mosquitto", "node", "nodes", "workers")  # Mosquitto, one node, two nodes, workers


def selection(args: argparse.Namespace) -> str:
    """The options that chose part of the run, as given; "" for the whole run."""
    chosen = [
        (name, values) for name, values, every in (
            ("only", args.only, SETUPS), ("qos", args.qos, (0, 1)), ("shapes", args.shapes,
            WORKER_SHAPES),
        ) if tuple(values) != every
    ]  # fmt: skip
    return "".join(f" --{name} {','.join(map(str, values))}" for name, values in chosen)


def names(allowed: Sequence[str]) -> Callable[[str], list[str]]:
    """An argparse type: a comma-separated choice among ``allowed``, in their order."""

    def parse(text: str) -> list[str]:
        given = {part.strip() for part in text.split(",") if part.strip()}
        if not given or given - set(allowed):
            raise argparse.ArgumentTypeError(f"choose among {', '.join(allowed)}")
        return [name for name in allowed if name in given]

    return parse


def parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--messages", type=int, default=12_500, help="per pair (lean)")
    parser.add_argument("--rate", type=int, default=1_000)
    parser.add_argument("--seconds", type=float, default=5.0)
    # Many pairs, as a fleet has many devices: with four, each worker's two subscribers at
    # QoS 1 waited on their PUBACK round trips (an in-flight window of 20) and left a core
    # idle (docs/scaling.md).
    parser.add_argument("--pairs", type=int, default=32)
    parser.add_argument(
        "--one-pair-messages", type=int, default=100_000, help="of the 1 -> 1 rows (lean)"
    )
    parser.add_argument("--fleet", type=int, default=1024, help="devices of the fleet shape")
    parser.add_argument("--fleet-messages", type=int, default=256, help="per fleet device")
    parser.add_argument(
        "--max-inflight", type=int, default=None,
        help="max_inflight_messages of every NanoIoT node (default: the setting's, 20)",
    )  # fmt: skip
    parser.add_argument("--slice", type=int, default=SLICE, help="messages a write (pairs)")
    parser.add_argument(
        "--qos0-window", type=int, default=0,
        help="messages in flight per pair at QoS 0 (default: as at QoS 1, 1,000)",
    )  # fmt: skip
    parser.add_argument(
        "--only",
        type=names(SETUPS),
        default=list(SETUPS),
        help=f"setups to run, of {','.join(SETUPS)} (default: all)",
    )
    parser.add_argument(
        "--qos",
        type=lambda text: [int(n) for n in names(("0", "1"))(text)],
        default=[0, 1],
        help="QoS levels to run, of 0,1 (default: both)",
    )
    parser.add_argument("--shapes", type=names(WORKER_SHAPES), default=list(WORKER_SHAPES),
                        help=f"workers' shapes to run, of {','.join(WORKER_SHAPES)} "
                        "(default: all)")  # fmt: skip
    parser.add_argument("--no-save", action="store_true")
    parser.add_argument("--suffix", default="", help="results/cluster-<date>-SUFFIX.md")
    return parser
