"""The registrar (switch.sip.registrar) and location service: RFC 3261 §10.3."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from switch.sip.auth import DigestAuthenticator, StaticCredentials, compute_ha1, digest_response
from switch.sip.headers import contacts, parse_auth
from switch.sip.location import Binding, LocationService, Source
from switch.sip.message import Headers, Request, Response
from switch.sip.registrar import (
    BindingAdded,
    BindingExpired,
    BindingRefreshed,
    BindingRemoved,
    RegisterResult,
    Registrar,
)

REALM = "switch.local"
USERS = StaticCredentials.from_passwords([("1001", "secret1001"), ("1002", "secret1002")])
PASSWORDS = {"1001": "secret1001", "1002": "secret1002"}
SRC = Source(transport="udp", host="192.0.2.10", port=5062)
WALL0 = 1_700_000_000.0


def counter_bytes() -> object:
    counter = itertools.count(1)
    return lambda n: next(counter).to_bytes(n, "big")


def make_registrar(**kw: object) -> Registrar:
    auth = DigestAuthenticator(REALM, secret=b"k" * 32, credentials=USERS,
                               random_bytes=counter_bytes())  # type: ignore[arg-type]
    return Registrar(auth, USERS, LocationService(),
                     random_bytes=counter_bytes(), **kw)  # type: ignore[arg-type]


class Phone:
    """A UA registering one AOR: answers every challenge (RFC 3261 §10.2, §22.2)."""

    def __init__(self, registrar: Registrar, user: str = "1001", *, auth_user: str | None = None,
                 password: str | None = None, call_id: str = "reg-1@192.0.2.10",
                 source: Source = SRC, ruri: str = "sip:switch.local") -> None:
        self.registrar = registrar
        self.user = user
        self.auth_user = auth_user or user
        self.password = password or PASSWORDS.get(self.auth_user, "x")
        self.call_id = call_id
        self.cseq = 0
        self.source = source
        self.ruri = ruri
        self.nc = 0
        self.challenge: dict[str, str] | None = None

    def build(self, contact: Sequence[str] = (), expires: int | None = None,
              extra: Sequence[tuple[str, str]] = (), now: float = 0.0) -> Request:
        self.cseq += 1
        headers = Headers([
            ("Via", f"SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK-{self.cseq};rport"),
            ("From", f"<sip:{self.user}@switch.local>;tag=ft"),
            ("To", f"<sip:{self.user}@switch.local>"),
            ("Call-ID", self.call_id),
            ("CSeq", f"{self.cseq} REGISTER"),
            ("User-Agent", "TestPhone/1.0"),
        ])
        for value in contact:
            headers.add("Contact", value)
        if expires is not None:
            headers.add("Expires", str(expires))
        for name, value in extra:
            headers.add(name, value)
        if self.challenge is not None:
            self.nc += 1
            nc = f"{self.nc:08x}"
            chal = self.challenge
            ha1 = compute_ha1("MD5", self.auth_user, REALM, self.password)
            response = digest_response(algorithm="MD5", ha1=ha1, nonce=chal["nonce"],
                                       method="REGISTER", uri=self.ruri, qop="auth", nc=nc,
                                       cnonce="abc")
            headers.add("Authorization",
                        f'Digest username="{self.auth_user}", realm="{REALM}", '
                        f'nonce="{chal["nonce"]}", uri="{self.ruri}", response="{response}", '
                        f'algorithm=MD5, qop=auth, nc={nc}, cnonce="abc", '
                        f'opaque="{chal["opaque"]}"')
        return Request("REGISTER", self.ruri, headers)

    def register(self, contact: Sequence[str] = (), expires: int | None = None, *,
                 now: float = 0.0, extra: Sequence[tuple[str, str]] = ()) -> RegisterResult:
        for _ in range(3):
            request = self.build(contact, expires, extra, now)
            result = self.registrar.handle(request, self.source, now, WALL0 + now)
            if result.status == 401:
                self.challenge = parse_auth(
                    result.response.headers.get("WWW-Authenticate") or "").params
                self.nc = 0
                continue
            return result
        raise AssertionError("never authenticated")


def listed(response: Response) -> dict[str, int]:
    """Contact URI -> expires of a 200's Contact list."""
    out = {}
    for item in contacts(response):
        value = item.param("expires")
        assert value is not None
        out[str(item.uri)] = int(value)
    return out


C1 = "<sip:1001@192.0.2.10:5062>"
C2 = "<sip:1001@192.0.2.10:5064;transport=tcp>"


# --- the basic flow -------------------------------------------------------------

def test_register_challenge_then_200_with_bindings() -> None:
    reg = make_registrar()
    phone = Phone(reg)
    first = reg.handle(phone.build([C1], 3600), SRC, 0.0, WALL0)
    assert first.status == 401
    assert first.events == ()
    phone.challenge = parse_auth(first.response.headers.get("WWW-Authenticate") or "").params
    result = reg.handle(phone.build([C1], 3600), SRC, 0.0, WALL0)
    assert result.status == 200
    assert listed(result.response) == {"sip:1001@192.0.2.10:5062": 3600}
    assert result.response.headers.get("Date") == "Tue, 14 Nov 2023 22:13:20 GMT"
    assert "path" in (result.response.headers.get("Supported") or "")
    assert ";tag=" in (result.response.headers.get("To") or "")
    [event] = result.events
    assert isinstance(event, BindingAdded)
    b = event.binding
    assert (b.aor, b.contact, b.expires, b.cseq) == ("1001", "sip:1001@192.0.2.10:5062", 3600, 2)
    assert b.source == SRC and b.user_agent == "TestPhone/1.0"
    assert b.expires_at == 3600.0 and b.expires_at_wall == WALL0 + 3600
    assert str(b.source) == "udp:192.0.2.10:5062"


def test_refresh_and_remove() -> None:
    reg = make_registrar()
    phone = Phone(reg)
    assert phone.register([C1], 600, now=0).status == 200
    result = phone.register([C1], 600, now=100)
    assert [type(e) for e in result.events] == [BindingRefreshed]
    assert listed(result.response) == {"sip:1001@192.0.2.10:5062": 600}
    result = phone.register([C1], 0, now=200)
    assert [type(e) for e in result.events] == [BindingRemoved]
    assert isinstance(result.events[0], BindingRemoved)
    assert result.events[0].reason == "unregistered"
    assert result.response.headers.get("Contact") is None
    assert reg.lookup("1001", 200) == []


def test_query_without_contact_lists_bindings() -> None:
    reg = make_registrar()
    phone = Phone(reg)
    phone.register([C1, C2], 600, now=0)
    result = phone.register(now=10)
    assert result.status == 200 and result.events == ()
    assert listed(result.response) == {"sip:1001@192.0.2.10:5062": 590,
                                       "sip:1001@192.0.2.10:5064;transport=tcp": 590}


def test_wrong_password_gets_401_again() -> None:
    reg = make_registrar()
    phone = Phone(reg, password="wrong")
    with pytest.raises(AssertionError, match="never authenticated"):
        phone.register([C1], 600)
    assert reg.all_bindings(0) == []


# --- domain, Require, authorization, unknown extension -------------------------------

def test_foreign_domain_is_404_before_auth() -> None:
    reg = make_registrar(domains=["switch.local", "192.0.2.1"])
    phone = Phone(reg, ruri="sip:example.com")
    result = reg.handle(phone.build([C1], 600), SRC, 0, WALL0)
    assert result.status == 404
    assert "WWW-Authenticate" not in result.response.headers


def test_own_ip_is_accepted_as_domain() -> None:
    reg = make_registrar(domains=["192.0.2.1"])
    assert Phone(reg, ruri="sip:192.0.2.1:5060").register([C1], 600).status == 200


def test_unknown_require_is_420_with_unsupported() -> None:
    reg = make_registrar()
    phone = Phone(reg)
    result = reg.handle(phone.build([C1], 600, extra=[("Require", "path, foo, gruu")]),
                        SRC, 0, WALL0)
    assert result.status == 420
    assert result.response.headers.get("Unsupported") == "foo, gruu"


def test_require_path_is_supported() -> None:
    reg = make_registrar()
    result = Phone(reg).register([C1], 600, extra=[("Require", "path"),
                                                   ("Supported", "path")])
    assert result.status == 200


def test_user_may_not_register_someone_elses_extension() -> None:
    reg = make_registrar()
    phone = Phone(reg, user="1002", auth_user="1001")   # valid 1001 credentials
    result = phone.register([C1], 600)
    assert result.status == 403
    assert reg.all_bindings(0) == []


def test_unknown_extension_looks_like_wrong_password() -> None:
    reg = make_registrar()
    result = Phone(reg, user="1999").register  # never gets past authentication
    with pytest.raises(AssertionError, match="never authenticated"):
        result([C1], 600)


def test_known_credentials_for_extension_missing_from_directory_is_404() -> None:
    class Directory:
        def has_extension(self, extension: str) -> bool:
            return False

    auth = DigestAuthenticator(REALM, secret=b"k" * 32, credentials=USERS)
    reg = Registrar(auth, Directory(), LocationService())
    assert Phone(reg).register([C1], 600).status == 404


def test_to_in_foreign_domain_is_404() -> None:
    reg = make_registrar(domains=["switch.local"])
    phone = Phone(reg)
    original = phone.build

    def build(*args: object, **kw: object) -> Request:
        request = original(*args, **kw)  # type: ignore[arg-type]
        request.headers.set("To", "<sip:1001@example.com>")
        return request

    phone.build = build  # type: ignore[method-assign]
    assert phone.register([C1], 600).status == 404


# --- Contact: * ---------------------------------------------------------------------

def test_wildcard_with_expires_zero_removes_all() -> None:
    reg = make_registrar()
    phone = Phone(reg)
    phone.register([C1, C2], 600)
    result = phone.register(["*"], 0, now=1)
    assert result.status == 200
    assert sorted(type(e).__name__ for e in result.events) == ["BindingRemoved"] * 2
    assert reg.lookup("1001", 1) == []


@pytest.mark.parametrize(("contact", "expires"), [
    (["*"], None), (["*"], 60), (["*", C1], 0),
])
def test_wildcard_misuse_is_400(contact: list[str], expires: int | None) -> None:
    reg = make_registrar()
    phone = Phone(reg)
    phone.register([C1], 600)
    result = phone.register(contact, expires, now=1)
    assert result.status == 400
    assert len(reg.lookup("1001", 1)) == 1


# --- expiry values ------------------------------------------------------------------

def test_expires_param_wins_over_header_and_default_applies() -> None:
    reg = make_registrar(default_expires=1800)
    phone = Phone(reg)
    result = phone.register([C1 + ";expires=120", C2], 300)
    assert listed(result.response) == {"sip:1001@192.0.2.10:5062": 120,
                                       "sip:1001@192.0.2.10:5064;transport=tcp": 300}
    result = Phone(reg, user="1002").register(["<sip:1002@192.0.2.11>"])
    assert listed(result.response) == {"sip:1002@192.0.2.11": 1800}


def test_too_brief_is_423_with_min_expires() -> None:
    reg = make_registrar(min_expires=60)
    result = Phone(reg).register([C1], 30)
    assert result.status == 423
    assert result.response.headers.get("Min-Expires") == "60"
    assert reg.all_bindings(0) == []


def test_too_brief_in_one_contact_fails_the_whole_request() -> None:
    reg = make_registrar(min_expires=60)
    result = Phone(reg).register([C1 + ";expires=10", C2], 600)
    assert result.status == 423
    assert reg.all_bindings(0) == []


def test_too_long_is_clamped() -> None:
    reg = make_registrar(max_expires=3600)
    result = Phone(reg).register([C1], 99999999999)
    assert listed(result.response) == {"sip:1001@192.0.2.10:5062": 3600}


@pytest.mark.parametrize("bad", ["abc", "-5", "1.5"])
def test_malformed_expires_is_400(bad: str) -> None:
    reg = make_registrar()
    assert Phone(reg).register([C1], extra=[("Expires", bad)]).status == 400
    assert Phone(reg, user="1002").register(
        [f"<sip:1002@h>;expires={bad}"]).status == 400


def test_expiry_sweep_emits_expired_events() -> None:
    reg = make_registrar()
    Phone(reg).register([C1], 100, now=0)
    Phone(reg, user="1002").register(["<sip:1002@h>"], 200, now=0)
    assert reg.next_expiry() == 100
    assert reg.expire(99.9) == []
    [event] = reg.expire(100.0)
    assert isinstance(event, BindingExpired) and event.binding.aor == "1001"
    assert reg.lookup("1001", 100.0) == []
    assert len(reg.lookup("1002", 100.0)) == 1
    assert reg.next_expiry() == 200


def test_refresh_postpones_expiry() -> None:
    reg = make_registrar()
    phone = Phone(reg)
    phone.register([C1], 100, now=0)
    phone.register([C1], 100, now=90)
    assert reg.expire(150) == []
    assert [e.binding.contact for e in reg.expire(190)] == ["sip:1001@192.0.2.10:5062"]


# --- Call-ID / CSeq ordering (§10.3 step 7) --------------------------------------------

def test_same_call_id_lower_cseq_fails_and_changes_nothing() -> None:
    reg = make_registrar()
    phone = Phone(reg)
    phone.register([C1], 600, now=0)
    phone.cseq = 0             # an old REGISTER (CSeq 1 < 2) arriving late
    result = phone.register([C1, C2], 0, now=1)
    assert result.status == 500
    assert result.events == ()
    assert len(reg.lookup("1001", 1)) == 1


def test_other_call_id_may_update_regardless_of_cseq() -> None:
    reg = make_registrar()
    Phone(reg).register([C1], 600, now=0)
    other = Phone(reg, call_id="other@host")
    result = other.register([C1], 300, now=1)
    assert result.status == 200
    assert [type(e) for e in result.events] == [BindingRefreshed]
    assert reg.lookup("1001", 1)[0].call_id == "other@host"


def test_wildcard_respects_cseq_ordering() -> None:
    reg = make_registrar()
    phone = Phone(reg)
    phone.register([C1], 600, now=0)
    phone.cseq = 0
    assert phone.register(["*"], 0, now=1).status == 500
    assert len(reg.lookup("1001", 1)) == 1


# --- several contacts, cap, q, instance, Path, source --------------------------------

def test_cap_evicts_least_recently_updated() -> None:
    reg = make_registrar(max_bindings_per_aor=3)
    phone = Phone(reg)
    for i in range(3):
        phone.register([f"<sip:1001@10.0.0.{i}>"], 600, now=float(i))
    result = phone.register(["<sip:1001@10.0.0.9>"], 600, now=10)
    removed = [e for e in result.events if isinstance(e, BindingRemoved)]
    assert [(e.binding.contact, e.reason) for e in removed] == [("sip:1001@10.0.0.0", "evicted")]
    assert set(listed(result.response)) == {"sip:1001@10.0.0.1", "sip:1001@10.0.0.2",
                                            "sip:1001@10.0.0.9"}


def test_more_new_contacts_than_the_cap_in_one_request_is_403() -> None:
    reg = make_registrar(max_bindings_per_aor=2)
    result = Phone(reg).register([f"<sip:1001@10.0.0.{i}>" for i in range(3)], 600)
    assert result.status == 403
    assert reg.all_bindings(0) == []


def test_q_values_kept_and_listed() -> None:
    reg = make_registrar()
    result = Phone(reg).register([C1 + ";q=0.5", C2 + ";q=1.0"], 600)
    values = {str(c.uri): c.param("q") for c in contacts(result.response)}
    assert values == {"sip:1001@192.0.2.10:5062": "0.5",
                      "sip:1001@192.0.2.10:5064;transport=tcp": "1"}
    assert [b.q for b in reg.lookup("1001", 0)] == [1.0, 0.5]


def test_bad_q_is_400() -> None:
    reg = make_registrar()
    assert Phone(reg).register([C1 + ";q=2"], 600).status == 400


def test_instance_id_replaces_binding_with_new_contact() -> None:
    reg = make_registrar()
    phone = Phone(reg)
    inst = ';+sip.instance="<urn:uuid:00000000-0000-1000-8000-000A95A0E128>";reg-id=1'
    phone.register(["<sip:1001@10.0.0.1:5060>" + inst], 600, now=0)
    # Rebooted behind NAT: new port, same instance -> replaces, not adds.
    other = Phone(reg, call_id="after-reboot")
    result = other.register(["<sip:1001@10.0.0.1:6000>" + inst], 600, now=5)
    assert [type(e) for e in result.events] == [BindingRefreshed]
    [binding] = reg.lookup("1001", 5)
    assert binding.contact == "sip:1001@10.0.0.1:6000"
    assert binding.instance_id == "<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"
    assert binding.reg_id == 1
    [listed_contact] = contacts(result.response)
    assert listed_contact.param("reg-id") == "1"
    assert listed_contact.param("+sip.instance") == \
        '"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"'


def test_path_stored_when_supported() -> None:
    reg = make_registrar()
    result = Phone(reg).register([C1], 600, extra=[("Supported", "path"),
                                                   ("Path", "<sip:edge.example;lr>")])
    assert reg.lookup("1001", 0)[0].path == ("<sip:edge.example;lr>",)
    assert result.response.headers.get("Path") == "<sip:edge.example;lr>"


def test_path_ignored_without_supported_path() -> None:
    reg = make_registrar()
    result = Phone(reg).register([C1], 600, extra=[("Path", "<sip:edge.example;lr>")])
    assert reg.lookup("1001", 0)[0].path == ()
    assert result.response.headers.get("Path") is None


def test_source_address_recorded_per_binding() -> None:
    reg = make_registrar()
    nat = Source(transport="tcp", host="203.0.113.5", port=40123)
    Phone(reg, source=nat).register(["<sip:1001@10.0.0.5:5060;transport=tcp>"], 600)
    assert reg.lookup("1001", 0)[0].source == nat


def test_non_sip_contact_is_400() -> None:
    reg = make_registrar()
    assert Phone(reg).register(["<tel:+14155550101>"], 600).status == 400


def test_contact_uri_comparison_is_case_insensitive_on_host_and_params() -> None:
    reg = make_registrar()
    phone = Phone(reg)
    phone.register(["<sip:1001@Host.Example;transport=UDP;ob>"], 600)
    result = phone.register(["<sip:1001@host.example;ob;transport=udp>"], 600, now=1)
    assert [type(e) for e in result.events] == [BindingRefreshed]


def test_restore_rebases_on_wall_clock() -> None:
    reg = make_registrar()
    Phone(reg).register([C1], 600, now=0)
    [saved] = reg.all_bindings(0)
    fresh = make_registrar()
    # Restarted 100 s later on a monotonic clock that started at 5.0.
    assert fresh.restore([saved], now=5.0, now_wall=WALL0 + 100) == 1
    [restored] = fresh.lookup("1001", 5.0)
    assert restored.remaining(5.0) == 500
    assert fresh.restore([saved], now=5.0, now_wall=WALL0 + 700) == 0


def test_non_register_is_a_programming_error() -> None:
    reg = make_registrar()
    with pytest.raises(ValueError):
        reg.handle(Request("INVITE", "sip:switch.local"), SRC, 0, WALL0)


# --- location service heap ----------------------------------------------------------

def _binding(aor: str, key: str, expires_at: float) -> Binding:
    return Binding(aor=aor, key=key, contact=f"sip:{key}@h", expires=60, expires_at=expires_at,
                   expires_at_wall=expires_at, updated_at_wall=0.0, call_id="c", cseq=1,
                   source=SRC)


def test_location_heap_stays_bounded_under_refresh_storm() -> None:
    loc = LocationService()
    for i in range(10_000):
        loc.put(_binding("1001", f"k{i % 5}", float(i)))
    assert len(loc) == 5
    assert len(loc._heap) <= 2 * 5 + 64 + 1
    assert sorted(b.key for b in loc.expire(1e9)) == [f"k{i}" for i in range(5)]
    assert len(loc) == 0 and loc.next_expiry() is None


# --- properties -----------------------------------------------------------------------

_contact_hosts = st.sampled_from([f"10.0.0.{i}" for i in range(6)])
_step = st.tuples(
    st.floats(min_value=0, max_value=400),                   # time advance
    st.lists(_contact_hosts, min_size=0, max_size=4),        # contacts
    st.one_of(st.none(), st.integers(min_value=0, max_value=5000)),  # Expires header
    st.booleans(),                                           # Contact: *
    st.booleans(),                                           # run the sweep first
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_step, min_size=1, max_size=12))
def test_register_sequences_keep_invariants(steps: list[tuple[float, list[str], int | None,
                                                                bool, bool]]) -> None:
    cap = 3
    reg = make_registrar(min_expires=60, max_expires=3600, max_bindings_per_aor=cap)
    phone = Phone(reg)
    now = 0.0
    for advance, hosts, expires, wildcard, sweep in steps:
        now += advance
        if sweep:
            for event in reg.expire(now):
                assert event.binding.expires_at <= now
        if wildcard:
            result = phone.register(["*"], 0, now=now)
            assert result.status == 200
            assert reg.lookup("1001", now) == []
            continue
        contact_values = [f"<sip:1001@{h}>" for h in hosts]
        result = phone.register(contact_values, expires, now=now)
        new = set(hosts)
        if expires is not None and 0 < expires < 60 and hosts:
            assert result.status == 423
            continue
        if len(new) > cap and expires != 0:
            assert result.status == 403
            continue
        assert result.status == 200, result.detail
        shown = listed(result.response)
        for value in shown.values():
            assert 0 < value <= 3600
        assert len(shown) <= cap
        if expires == 0:
            for host in new:
                assert f"sip:1001@{host}" not in shown
        elif hosts:
            for host in new:
                assert f"sip:1001@{host}" in shown
        assert len(reg.lookup("1001", now)) <= cap
        assert set(shown) == {b.contact for b in reg.lookup("1001", now)}
