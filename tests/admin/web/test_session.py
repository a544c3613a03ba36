"""The stateless session cookie and its CSRF tokens, without HTTP."""

from admin.web.session import SESSION_SECONDS, SessionSigner

TOKEN = "admin-token-for-session-tests"


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_new_session_is_recognised_with_its_csrf_token() -> None:
    signer = SessionSigner(TOKEN)
    session = signer.new_session()
    again = signer.session(session.cookie)
    assert again == session
    assert signer.csrf_matches(again, session.csrf_token)


def test_each_session_has_its_own_csrf_token() -> None:
    signer = SessionSigner(TOKEN)
    first, second = signer.new_session(), signer.new_session()
    assert first.csrf_token != second.csrf_token
    assert not signer.csrf_matches(first, second.csrf_token)
    assert not signer.csrf_matches(first, "")


def test_a_tampered_cookie_is_refused() -> None:
    signer = SessionSigner(TOKEN)
    cookie = signer.new_session().cookie
    expiry, nonce, signature = cookie.split(".")
    later = str(int(expiry) + 86400)
    assert signer.session(f"{later}.{nonce}.{signature}") is None  # longer life, same signature
    assert signer.session(f"{expiry}.{nonce}.{'0' * len(signature)}") is None
    assert signer.session(f"{expiry}.{nonce}") is None
    assert signer.session("") is None
    assert signer.session(None) is None
    assert signer.session("a.b.c") is None


def test_a_session_expires() -> None:
    clock = Clock()
    signer = SessionSigner(TOKEN, clock=clock)
    cookie = signer.new_session().cookie
    clock.now += SESSION_SECONDS - 1
    assert signer.session(cookie) is not None
    clock.now += 1
    assert signer.session(cookie) is None


def test_changing_the_admin_token_ends_every_session() -> None:
    cookie = SessionSigner(TOKEN).new_session().cookie
    assert SessionSigner(TOKEN + "-rotated").session(cookie) is None


def test_the_sign_in_form_token_is_tied_to_the_browser_nonce() -> None:
    signer = SessionSigner(TOKEN)
    token = signer.login_csrf("nonce-1")
    assert signer.login_csrf_matches("nonce-1", token)
    assert not signer.login_csrf_matches("nonce-2", token)
    assert not signer.login_csrf_matches(None, token)
    assert not SessionSigner(TOKEN + "x").login_csrf_matches("nonce-1", token)
