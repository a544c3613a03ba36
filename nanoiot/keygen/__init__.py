"""Key, certificate and keystore generation behind ``server.keygen.sh`` / ``client.keygen.sh``.

Modules, from pure to I/O:

- ``propfile``: the ``KEY=VALUE`` syntax of ``keygen.properties`` and its small expansion;
- ``properties``: every property validated into one frozen ``KeygenProperties``;
- ``certs``: keys and X.509 certificates (server, device, device CA), no I/O, no clock;
- ``keystore``: PKCS#12 files Java and OpenSSL both read (key entry + trusted entries);
- ``outputs``: which files each script writes, built in memory;
- ``files``: writing them (0600 for private material, atomic) and the overwrite policy.

Nothing here imports the CLI or the store; ``nanoiot.cli.keygen`` wires it to both.
Errors are ``nanoiot.errors.KeygenError`` with a one-line message naming the property or file.
"""
