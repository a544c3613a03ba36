from storage.passwords import hash_password, verify_password


def test_hash_is_argon2id_and_verifies() -> None:
    hashed = hash_password("s3cret")
    assert hashed.startswith("$argon2id$")
    assert "s3cret" not in hashed
    assert verify_password(hashed, "s3cret")
    assert not verify_password(hashed, "wrong")


def test_missing_or_malformed_hash_never_matches() -> None:
    assert not verify_password(None, "nanoiot-dummy-password")
    assert not verify_password("not-a-hash", "x")
