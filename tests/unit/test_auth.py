"""Digest authentication (switch.sip.auth): RFC 2617 / 7616 / 8760 behaviour."""

from __future__ import annotations

import hashlib
import itertools
import re

import pytest

from switch.sip.auth import (
    AuthOutcome,
    DigestAuthenticator,
    StaticCredentials,
    UserCredentials,
    compute_ha1,
    digest_response,
)
from switch.sip.headers import parse_auth
from switch.sip.message import Headers, Request, Response

REALM = "switch.local"
SECRET = b"0123456789abcdef0123456789abcdef"
USERS = StaticCredentials.from_passwords([("1001", "secret1001"), ("1002", "secret1002")])
IP = "192.0.2.10"


def counter_bytes() -> object:
    counter = itertools.count(1)
    return lambda n: next(counter).to_bytes(n, "big")


def make_auth(**kw: object) -> DigestAuthenticator:
    kw.setdefault("credentials", USERS)
    kw.setdefault("random_bytes", counter_bytes())
    return DigestAuthenticator(REALM, secret=SECRET, **kw)  # type: ignore[arg-type]


def request(method: str = "REGISTER", uri: str = "sip:switch.local",
            authorization: str | None = None, user: str = "1001") -> Request:
    headers = Headers([
        ("Via", "SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK-1;rport"),
        ("From", f"<sip:{user}@switch.local>;tag=abc"),
        ("To", f"<sip:{user}@switch.local>"),
        ("Call-ID", "call-1@192.0.2.10"),
        ("CSeq", f"2 {method}"),
        ("Contact", f"<sip:{user}@192.0.2.10:5062>"),
    ])
    if authorization is not None:
        name = "Authorization" if method == "REGISTER" else "Proxy-Authorization"
        headers.add(name, authorization)
    return Request(method, uri, headers)


def challenge_params(response: Response, index: int = 0) -> dict[str, str]:
    name = "WWW-Authenticate" if response.status == 401 else "Proxy-Authenticate"
    return parse_auth(response.headers.get_all(name)[index]).params


def _h(algorithm: str, text: str) -> str:
    fn = hashlib.sha256 if algorithm.upper().startswith("SHA-256") else hashlib.md5
    return fn(text.encode()).hexdigest()


def answer(chal: dict[str, str], *, username: str = "1001", password: str = "secret1001",
           method: str = "REGISTER", uri: str = "sip:switch.local", nc: int | None = 1,
           cnonce: str = "0a4f113b", qop: bool = True, algorithm: str | None = None,
           realm: str | None = None, opaque: bool = True) -> str:
    """A client's Authorization value, computed independently of switch.sip.auth."""
    alg = algorithm or chal.get("algorithm", "MD5")
    realm = realm or chal["realm"]
    nonce = chal["nonce"]
    ha1 = _h(alg, f"{username}:{realm}:{password}")
    if alg.lower().endswith("-sess"):
        ha1 = _h(alg, f"{ha1}:{nonce}:{cnonce}")
    ha2 = _h(alg, f"{method}:{uri}")
    parts = [f'username="{username}"', f'realm="{realm}"', f'nonce="{nonce}"', f'uri="{uri}"']
    if qop:
        assert nc is not None
        ncs = f"{nc:08x}"
        response = _h(alg, f"{ha1}:{nonce}:{ncs}:{cnonce}:auth:{ha2}")
        parts += [f'response="{response}"', f"algorithm={alg}", f'cnonce="{cnonce}"',
                  f"nc={ncs}", "qop=auth"]
    else:
        response = _h(alg, f"{ha1}:{nonce}:{ha2}")
        parts += [f'response="{response}"', f"algorithm={alg}"]
    if opaque and "opaque" in chal:
        parts.append(f'opaque="{chal["opaque"]}"')
    return "Digest " + ", ".join(parts)


def fresh_challenge(auth: DigestAuthenticator, now: float = 1000.0,
                    method: str = "REGISTER", index: int = 0) -> dict[str, str]:
    result = auth.authenticate(request(method), IP, now)
    assert result.outcome is AuthOutcome.CHALLENGE
    assert result.response is not None
    return challenge_params(result.response, index)


# --- hash functions against the RFC vectors ------------------------------------

def test_rfc2617_section_3_5_vector() -> None:
    ha1 = compute_ha1("MD5", "Mufasa", "testrealm@host.com", "Circle Of Life")
    assert digest_response(algorithm="MD5", ha1=ha1, nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
                           method="GET", uri="/dir/index.html", qop="auth", nc="00000001",
                           cnonce="0a4f113b") == "6629fae49393a05397450978507c4ef1"


@pytest.mark.parametrize(("algorithm", "expected"), [
    ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
    ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
])
def test_rfc7616_section_3_9_1_vectors(algorithm: str, expected: str) -> None:
    ha1 = compute_ha1(algorithm, "Mufasa", "http-auth@example.org", "Circle of Life")
    got = digest_response(algorithm=algorithm, ha1=ha1,
                          nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
                          method="GET", uri="/dir/index.html", qop="auth", nc="00000001",
                          cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ")
    assert got == expected


def test_rfc2069_no_qop_formula() -> None:
    ha1 = compute_ha1("MD5", "u", "r", "p")
    ha2 = hashlib.md5(b"REGISTER:sip:r").hexdigest()
    assert digest_response(algorithm="MD5", ha1=ha1, nonce="n", method="REGISTER",
                           uri="sip:r") == hashlib.md5(f"{ha1}:n:{ha2}".encode()).hexdigest()


# --- challenges ------------------------------------------------------------------

def test_register_without_credentials_gets_401_challenge() -> None:
    auth = make_auth()
    result = auth.authenticate(request(), IP, 1000.0)
    assert result.outcome is AuthOutcome.CHALLENGE
    assert result.response is not None and result.response.status == 401
    chal = challenge_params(result.response)
    assert chal["realm"] == REALM
    assert chal["qop"] == "auth"
    assert chal["algorithm"] == "MD5"
    assert chal["opaque"]
    assert "stale" not in chal
    assert ";tag=" in (result.response.headers.get("to") or "")
    assert "Proxy-Authenticate" not in result.response.headers


def test_invite_gets_407_proxy_authenticate() -> None:
    auth = make_auth()
    result = auth.authenticate(request("INVITE", "sip:1002@switch.local"), IP, 1000.0)
    assert result.response is not None and result.response.status == 407
    assert result.response.headers.count("Proxy-Authenticate") == 1
    assert "WWW-Authenticate" not in result.response.headers


def test_one_challenge_per_algorithm_sha256_first() -> None:
    auth = make_auth(algorithms=("MD5", "SHA-256"))
    result = auth.authenticate(request(), IP, 1000.0)
    assert result.response is not None
    values = result.response.headers.get_all("WWW-Authenticate")
    assert [parse_auth(v).params["algorithm"] for v in values] == ["SHA-256", "MD5"]


def test_unknown_algorithm_in_config_is_refused() -> None:
    with pytest.raises(KeyError):
        make_auth(algorithms=("SHA-1",))


def test_nonces_are_unique_per_challenge() -> None:
    auth = make_auth()
    nonces = {fresh_challenge(auth, 1000.0)["nonce"] for _ in range(20)}
    assert len(nonces) == 20


# --- verification ---------------------------------------------------------------

def test_md5_qop_auth_ok() -> None:
    auth = make_auth()
    chal = fresh_challenge(auth)
    result = auth.authenticate(request(authorization=answer(chal)), IP, 1001.0)
    assert result.outcome is AuthOutcome.OK
    assert result.response is None
    assert result.user is not None and result.user.extension == "1001"
    assert result.algorithm == "MD5"


def test_sha256_ok() -> None:
    auth = make_auth(algorithms=("SHA-256", "MD5"))
    chal = fresh_challenge(auth, index=0)
    assert chal["algorithm"] == "SHA-256"
    result = auth.authenticate(request(authorization=answer(chal)), IP, 1001.0)
    assert result.outcome is AuthOutcome.OK
    assert result.algorithm == "SHA-256"


def test_md5_answer_to_a_sha256_plus_md5_challenge_ok() -> None:
    auth = make_auth(algorithms=("SHA-256", "MD5"))
    chal = fresh_challenge(auth, index=1)
    assert chal["algorithm"] == "MD5"
    assert auth.authenticate(request(authorization=answer(chal)), IP, 1001.0).ok


def test_algorithm_not_offered_fails() -> None:
    auth = make_auth(algorithms=("MD5",))
    chal = fresh_challenge(auth)
    result = auth.authenticate(request(authorization=answer(chal, algorithm="SHA-256")),
                               IP, 1001.0)
    assert result.outcome is AuthOutcome.FAILED


@pytest.mark.parametrize("algorithm", ["MD5-sess", "SHA-256-sess"])
def test_sess_algorithms(algorithm: str) -> None:
    auth = make_auth(algorithms=(algorithm,))
    chal = fresh_challenge(auth)
    assert chal["algorithm"] == algorithm
    assert auth.authenticate(request(authorization=answer(chal)), IP, 1001.0).ok


def test_missing_algorithm_parameter_means_md5() -> None:
    auth = make_auth()
    chal = fresh_challenge(auth)
    value = answer(chal).replace(", algorithm=MD5", "")
    assert "algorithm" not in value
    assert auth.authenticate(request(authorization=value), IP, 1001.0).ok


def test_legacy_no_qop_answer_pyvoip_style() -> None:
    # pyVoIP 1.6.8: no qop/nc/cnonce/opaque, uri with ;transport=UDP, Request-URI without.
    auth = make_auth()
    chal = fresh_challenge(auth)
    value = answer(chal, qop=False, opaque=False, uri="sip:switch.local;transport=UDP")
    result = auth.authenticate(request(authorization=value), IP, 1001.0)
    assert result.outcome is AuthOutcome.OK


def test_legacy_no_qop_refused_when_disabled() -> None:
    auth = make_auth(allow_legacy_no_qop=False)
    chal = fresh_challenge(auth)
    result = auth.authenticate(request(authorization=answer(chal, qop=False)), IP, 1001.0)
    assert result.outcome is AuthOutcome.FAILED
    assert result.response is not None and result.response.status == 401


def test_precomputed_ha1() -> None:
    ha1 = hashlib.md5(b"1003:switch.local:pw").hexdigest()
    users = StaticCredentials([UserCredentials(username="1003", extension="1003",
                                               ha1={"MD5": ha1})])
    auth = make_auth(credentials=users)
    chal = fresh_challenge(auth)
    value = answer(chal, username="1003", password="pw")
    assert auth.authenticate(request(authorization=value, user="1003"), IP, 1001.0).ok


def test_wrong_password_fails_with_fresh_challenge() -> None:
    auth = make_auth()
    chal = fresh_challenge(auth)
    result = auth.authenticate(request(authorization=answer(chal, password="nope")), IP, 1001.0)
    assert result.outcome is AuthOutcome.FAILED
    assert result.response is not None and result.response.status == 401
    assert challenge_params(result.response)["nonce"] != chal["nonce"]


def test_uri_must_match_request_uri() -> None:
    auth = make_auth()
    chal = fresh_challenge(auth)
    value = answer(chal, uri="sip:other.example")
    result = auth.authenticate(request(authorization=value), IP, 1001.0)
    assert result.outcome is AuthOutcome.FAILED
    assert result.response is not None and result.response.status == 400


@pytest.mark.parametrize("uri", ["sip:switch.local:5060", "sip:SWITCH.local",
                                 "sip:switch.local;transport=tcp"])
def test_uri_comparison_is_lenient(uri: str) -> None:
    auth = make_auth()
    chal = fresh_challenge(auth)
    assert auth.authenticate(request(authorization=answer(chal, uri=uri)), IP, 1001.0).ok


def test_credentials_for_another_realm_are_a_challenge() -> None:
    auth = make_auth()
    chal = fresh_challenge(auth)
    value = answer(chal, realm="other.realm")
    result = auth.authenticate(request(authorization=value), IP, 1001.0)
    assert result.outcome is AuthOutcome.CHALLENGE


def test_missing_parameters_are_400() -> None:
    auth = make_auth()
    chal = fresh_challenge(auth)
    value = re.sub(r'response="[0-9a-f]+", ', "", answer(chal))
    result = auth.authenticate(request(authorization=value), IP, 1001.0)
    assert result.outcome is AuthOutcome.FAILED
    assert result.response is not None and result.response.status == 400


def test_malformed_authorization_is_400() -> None:
    auth = make_auth()
    result = auth.authenticate(request(authorization='Digest username="unterminated'),
                               IP, 1001.0)
    assert result.outcome is AuthOutcome.FAILED
    assert result.response is not None and result.response.status == 400


# --- nonces: stale, forged, replay --------------------------------------------------

def test_expired_nonce_with_valid_digest_is_stale() -> None:
    auth = make_auth(nonce_lifetime=300)
    chal = fresh_challenge(auth, 1000.0)
    result = auth.authenticate(request(authorization=answer(chal)), IP, 1000.0 + 301)
    assert result.outcome is AuthOutcome.STALE
    assert result.response is not None and result.response.status == 401
    new = challenge_params(result.response)
    assert new["stale"] == "true"
    assert new["nonce"] != chal["nonce"]
    # The client retries with the new nonce and succeeds.
    assert auth.authenticate(request(authorization=answer(new)), IP, 1302.0).ok


def test_expired_nonce_with_wrong_password_is_not_stale() -> None:
    auth = make_auth(nonce_lifetime=300)
    chal = fresh_challenge(auth, 1000.0)
    result = auth.authenticate(request(authorization=answer(chal, password="x")), IP, 1301.0)
    assert result.outcome is AuthOutcome.FAILED
    assert result.response is not None
    assert "stale" not in challenge_params(result.response)


def test_nonce_from_another_realm_is_refused() -> None:
    other = DigestAuthenticator("other.realm", secret=SECRET, credentials=USERS)
    nonce = other.make_nonce(1000.0)
    auth = make_auth()
    chal = {"realm": REALM, "nonce": nonce, "algorithm": "MD5"}
    result = auth.authenticate(request(authorization=answer(chal)), IP, 1001.0)
    assert result.outcome is AuthOutcome.FAILED


@pytest.mark.parametrize("mangle", [
    lambda n: n[:-2] + ("AA" if n[-2:] != "AA" else "BB"),   # bad HMAC
    lambda n: "A" + n[1:] if n[0] != "A" else "B" + n[1:],    # timestamp changed
    lambda n: n + "x",                                         # wrong length
    lambda n: "not-a-nonce",
])
def test_forged_nonce_is_refused(mangle: object) -> None:
    auth = make_auth()
    chal = fresh_challenge(auth)
    chal["nonce"] = mangle(chal["nonce"])  # type: ignore[operator]
    result = auth.authenticate(request(authorization=answer(chal)), IP, 1001.0)
    assert result.outcome is AuthOutcome.FAILED


def test_nonce_from_other_secret_is_refused() -> None:
    other = DigestAuthenticator(REALM, secret=b"another secret", credentials=USERS)
    chal = {"realm": REALM, "nonce": other.make_nonce(1000.0), "algorithm": "MD5"}
    result = make_auth().authenticate(request(authorization=answer(chal, opaque=False)),
                                      IP, 1001.0)
    assert result.outcome is AuthOutcome.FAILED


def test_nonce_count_replay_is_refused() -> None:
    auth = make_auth()
    chal = fresh_challenge(auth)
    first = answer(chal, nc=1)
    assert auth.authenticate(request(authorization=first), IP, 1001.0).ok
    replay = auth.authenticate(request(authorization=first), IP, 1002.0)
    assert replay.outcome is AuthOutcome.FAILED
    assert replay.response is not None and replay.response.status == 401
    assert auth.authenticate(request(authorization=answer(chal, nc=2)), IP, 1003.0).ok
    assert auth.authenticate(request(authorization=answer(chal, nc=3, cnonce="x")),
                             IP, 1003.5).ok
    older = auth.authenticate(request(authorization=answer(chal, nc=2)), IP, 1004.0)
    assert older.outcome is AuthOutcome.FAILED


def test_unseen_nonce_with_high_count_asks_for_fresh_nonce() -> None:
    auth = make_auth()
    chal = fresh_challenge(auth)
    result = auth.authenticate(request(authorization=answer(chal, nc=7)), IP, 1001.0)
    assert result.outcome is AuthOutcome.STALE


def test_nonce_count_table_is_bounded() -> None:
    auth = make_auth(nc_capacity=8)
    for i in range(20):
        chal = fresh_challenge(auth, 1000.0 + i)
        assert auth.authenticate(request(authorization=answer(chal)), IP, 1000.5 + i).ok
    assert len(auth._nc_seen) == 8


# --- indistinguishability ---------------------------------------------------------

def _shape(response: Response) -> bytes:
    text = response.encode()
    text = re.sub(rb'nonce="[^"]+"', b'nonce="N"', text)
    return re.sub(rb";tag=[0-9a-f]+", b";tag=T", text)


@pytest.mark.parametrize("algorithms", [("MD5",), ("SHA-256", "MD5")])
def test_wrong_password_and_unknown_user_look_the_same(algorithms: tuple[str, ...]) -> None:
    auth = make_auth(algorithms=algorithms)
    chal = fresh_challenge(auth)
    wrong = auth.authenticate(request(authorization=answer(chal, password="bad")), IP, 1001.0)
    chal = fresh_challenge(auth)
    unknown = auth.authenticate(
        request(authorization=answer(chal, username="1001x", password="bad"), user="1001"),
        IP, 1001.0)
    assert wrong.outcome is unknown.outcome is AuthOutcome.FAILED
    assert wrong.response is not None and unknown.response is not None
    assert _shape(wrong.response) == _shape(unknown.response)


def test_secrets_not_in_reprs() -> None:
    user = UserCredentials(username="u", extension="u", password="hunter2",
                           ha1={"MD5": "deadbeef"})
    assert "hunter2" not in repr(user) and "deadbeef" not in repr(user)
    auth = make_auth()
    chal = fresh_challenge(auth)
    value = answer(chal, password="bad")
    result = auth.authenticate(request(authorization=value), IP, 1001.0)
    response_value = re.search(r'response="([0-9a-f]+)"', value)
    assert response_value is not None
    assert response_value.group(1) not in repr(result)
    assert "secret1001" not in repr(result)


# --- brute-force limiter ------------------------------------------------------------

def _fail(auth: DigestAuthenticator, now: float, ip: str = IP,
          username: str = "1001") -> AuthOutcome:
    chal = fresh_challenge(auth, now)
    value = answer(chal, username=username, password="wrong")
    return auth.authenticate(request(authorization=value), ip, now).outcome


def test_limiter_blocks_after_n_failures_and_unblocks_after_cooldown() -> None:
    auth = make_auth(failure_limit=5, failure_window=60, block_seconds=300)
    now = 1000.0
    for i in range(5):
        assert _fail(auth, now + i) is AuthOutcome.FAILED
    # Blocked: even the right password is refused with 403 without being checked.
    chal = fresh_challenge(auth, now + 10)
    blocked = auth.authenticate(request(authorization=answer(chal)), IP, now + 10)
    assert blocked.outcome is AuthOutcome.BLOCKED
    assert blocked.response is not None and blocked.response.status == 403
    assert "WWW-Authenticate" not in blocked.response.headers
    # Another user at the same address, and the same user elsewhere, still work.
    chal = fresh_challenge(auth, now + 10)
    other_user = answer(chal, username="1002", password="secret1002")
    assert auth.authenticate(request(authorization=other_user, user="1002"), IP, now + 10).ok
    chal = fresh_challenge(auth, now + 10)
    assert auth.authenticate(request(authorization=answer(chal)), "198.51.100.1", now + 10).ok
    # After the cooldown, the right password works again.
    later = now + 4 + 300 + 1
    chal = fresh_challenge(auth, later)
    assert auth.authenticate(request(authorization=answer(chal)), IP, later).ok


def test_failures_outside_the_window_do_not_accumulate() -> None:
    auth = make_auth(failure_limit=3, failure_window=10, block_seconds=300)
    for i in range(10):
        assert _fail(auth, 1000.0 + i * 6) is AuthOutcome.FAILED


def test_limiter_counts_unknown_users_per_source() -> None:
    auth = make_auth(failure_limit=5, source_failure_limit=8, failure_window=60,
                     block_seconds=100)
    for i in range(8):
        assert _fail(auth, 1000.0, username=f"9{i:03d}") is AuthOutcome.FAILED
    assert auth.authenticate(request(), IP, 1001.0).outcome is AuthOutcome.BLOCKED
    assert auth.authenticate(request(), "198.51.100.1", 1001.0).outcome is AuthOutcome.CHALLENGE
    assert auth.authenticate(request(), IP, 1101.0).outcome is AuthOutcome.CHALLENGE


def test_limiter_memory_is_bounded() -> None:
    auth = make_auth(limiter_capacity=16)
    for i in range(100):
        _fail(auth, 1000.0, ip=f"10.0.{i // 256}.{i % 256}")
    assert len(auth._source_limiter) == 16
    assert len(auth._pair_limiter) == 16


def test_zero_block_seconds_disables_limiter() -> None:
    auth = make_auth(failure_limit=2, block_seconds=0)
    for i in range(10):
        assert _fail(auth, 1000.0 + i) is AuthOutcome.FAILED
