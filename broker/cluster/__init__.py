"""Joining a cluster of NanoIoT nodes through NATS: loaded only when ``nats_url`` is set.

``link`` connects (credentials, TLS) and answers who is there, ``kv`` gives JetStream
key-value buckets with compare-and-set, ``errors`` turns NATS's errors into NanoIoT's.
"""
