"""Plain amqtt 0.12.1 as the benchmark runs it: ``python -m bench.amqtt_server CONFIG.json``.

The broker as amqtt ships it, nothing of NanoIoT: the JSON file is its whole configuration
(``bench.compare_setup.amqtt_config``). Prints ``ready: <port>`` once listening and stops on
SIGTERM. amqtt logs every connection at INFO; like ``nanoiot serve`` it runs at WARNING.
"""

import asyncio
import json
import logging
import signal
import sys
from pathlib import Path

from amqtt.broker import Broker


async def serve(config: dict[str, object]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    broker = Broker(config)
    await broker.start()
    listeners = config["listeners"]
    assert isinstance(listeners, dict)
    port = str(listeners["default"]["bind"]).rsplit(":", 1)[1]
    print(f"ready: {port}", flush=True)
    await stop.wait()
    await broker.shutdown()


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    config = json.loads(Path(sys.argv[1]).read_text())
    asyncio.run(serve(config))


if __name__ == "__main__":
    main()
