"""NanoIoT's MQTT protocol core: bytes in, events out; commands in, bytes out.

This package contains no networking code at all, in the spirit of h11: no asyncio, sockets,
ssl/OpenSSL, database or amqtt (``tests/broker/mqtt/test_purity.py`` enforces it). The
broker (``broker.client``) feeds it the bytes a client sent and writes the bytes it returns;
everything that decides what a byte means lives here:

- ``wire``, ``properties`` (with ``property_table``), ``packets``, ``decode``, ``encode``,
  ``rules``, ``codes``: a strict codec for MQTT 3.1 (protocol "MQIsdp", level 3), 3.1.1
  (level 4) and, in the wire format, 5.0 (properties of every packet and reason codes, both
  directions);
- ``connection`` (built on ``intake``, ``handshake`` and ``outbound``): one object per network
  connection holding its whole protocol state (level, keep-alive deadline, packet ids in
  flight both ways, QoS 2 states, limits);
- ``session``: what outlives a connection (subscriptions, the queue with byte accounting,
  outbound messages in flight, inbound QoS 2 ids awaiting PUBREL, the next packet id);
- ``trie``: subscriptions and retained topics indexed by topic level.

Imports only the standard library, ``auth.topics``, ``auth.connack``, ``nanoiot.errors`` and
``nanoiot.text`` (client-chosen text in a violation's reason goes to the log).
"""
