"""Stopping a paho client's network thread without paho's race.

paho's thread clears ``client._thread`` as it ends (its ``finally``), which it does by itself
after a DISCONNECT or a lost connection. ``loop_stop`` checks ``_thread`` and then joins it: a
thread that ends between the two makes it raise ``AttributeError: 'NoneType' object has no
attribute 'join'`` (seen in CI after ``disconnect()``). A thread that ended has nothing left to
stop, so that error is the thread being gone already.
"""

import paho.mqtt.client as mqtt


def stop_loop(client: mqtt.Client) -> None:
    """``client.loop_stop()``; nothing if its network thread ended meanwhile."""
    try:
        client.loop_stop()
    except AttributeError:
        if client._thread is not None:
            raise
