"""A trusted CA's CN rule against a real broker: a rule Python's ``re`` would backtrack on for
hours, with a device presenting the CN that triggers it, leaves every other device served at
once (RE2 matches in linear time); a rule stored before rules were checked, in syntax RE2
refuses, refuses that CA's devices with its reason, logged once; and a CN that would list as
another name (a bidirectional control) creates no device."""

import logging
import time
from pathlib import Path

import pytest
from sqlalchemy import update

from auth.connack import ConnackCode
from broker.mqtt.packets import MQTT_3_1_1, Connack, Connect, Pingreq, Pingresp
from storage.models import TrustedCARow
from tests.certgen import issue
from tests.e2e.harness import BrokerThread, write_pem
from tests.e2e.peers import Raw
from tests.e2e.trusted_ca import CA, connack, trust

# Python's re takes some 0.6 s at 24 'a's against (a+)+b and doubles with each one more: at
# 40, over ten hours of the event loop every device of the node shares.
HOSTILE_CN = "a" * 40
# Measured with RE2 on the 2-core test machine: PINGRESP within 1 ms, the refusal within 0.05 s.
MOST_DELAY = 1.0


def _connected(broker: BrokerThread, certfile: Path, client_id: str) -> Raw:
    raw = Raw(broker.port, broker.server_cert, certfile)
    raw.send(Connect(MQTT_3_1_1, client_id, True, 60))
    return raw


def test_a_hostile_cn_under_a_backtracking_rule_leaves_the_broker_responsive(
    broker: BrokerThread, tmp_path: Path
) -> None:
    trust(broker, "fleet", CA, cn_regex=r"(a+)+b", creates=True)
    _, watcher_leaf = broker.provision("watcher")
    hostile = write_pem(tmp_path, issue(HOSTILE_CN, issuer=CA), "hostile")
    with _connected(broker, write_pem(tmp_path, watcher_leaf, "watcher"), "watcher") as watcher:
        assert watcher.read() == Connack(False, 0)
        with _connected(broker, hostile, "") as attacker:
            started = time.monotonic()
            watcher.send(Pingreq())
            assert watcher.read() == Pingresp()
            answered = time.monotonic() - started
            refusal = attacker.read()
            refused = time.monotonic() - started
    assert refusal == Connack(False, ConnackCode.NOT_AUTHORIZED)
    assert answered < MOST_DELAY, answered
    assert refused < MOST_DELAY, refused
    assert broker.running.auth_log.counts["name_not_allowed"] == 1


def test_a_stored_rule_re2_cannot_use_refuses_that_cas_devices_logged_once(
    broker: BrokerThread, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="broker.authn")
    fleet = trust(broker, "fleet", CA, cn_regex=r"device-(.+)", creates=True)
    legacy_rule = r"device-(?!admin)(.+)"  # Python's syntax, stored before rules were checked

    async def store_unchecked() -> None:
        async with broker.running.store._transactions() as session, session.begin():
            await session.execute(
                update(TrustedCARow).where(TrustedCARow.id == fleet.id).values(cn_regex=legacy_rule)
            )

    async def reload_cas() -> None:  # as after any CA's change: the rule is read again
        broker.running.broker.authenticator.forget_trusted_cas()

    broker.call(store_unchecked())
    for name in ("device-pump-1", "device-pump-2"):
        assert connack(broker, tmp_path, issue(name, issuer=CA)) == ConnackCode.NOT_AUTHORIZED
        broker.call(reload_cas())
    assert broker.running.auth_log.counts["name_not_allowed"] == 2
    logged = [r.getMessage() for r in caplog.records if "its devices are refused" in r.getMessage()]
    assert logged == [
        f"trusted CA 'fleet': its devices are refused: CN rule '{legacy_rule}' is not a valid "
        "regular expression for RE2 (invalid perl operator: (?!); RE2 matches in linear time "
        "and has no backreferences or lookarounds"
    ]
    # The broker still serves everyone else.
    _, other = broker.provision("other")
    with _connected(broker, write_pem(tmp_path, other, "other"), "other") as raw:
        assert raw.read() == Connack(False, 0)


def test_a_ca_issued_cn_that_would_list_as_another_name_creates_no_device(
    broker: BrokerThread, tmp_path: Path
) -> None:
    trust(broker, "fleet", CA, cn_regex=r"device-(.+)", creates=True)
    spoofing = issue("device-invoice\u202egpj.exe", issuer=CA)
    assert connack(broker, tmp_path, spoofing) == ConnackCode.NOT_AUTHORIZED
    assert broker.running.auth_log.counts["name_not_allowed"] == 1
    assert broker.call(broker.running.store.list_devices()).total == 0
