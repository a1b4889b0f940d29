"""``switch.call.offers``: its cached stream computations agree with the definitions.

``anchor_offer``, ``anchor_answer`` and ``leg_config`` compute the anchored
stream and the payload types once per distinct (formats, attributes, ...)
input.  The plain versions below build them from the public SDP primitives
each time, as the module did before the caches; both must give the same
result on phone-shaped offers and answers, including the odd ones
(session-level direction, legacy c=0.0.0.0 hold, IPv6, duplicate or
malformed rtpmaps, upper-case names, rejected streams).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from switch.call.media import Codec, LegConfig
from switch.call.offers import (
    _PLACEHOLDER_ORIGIN,
    RELAYED_CODECS,
    TELEPHONE_EVENT_PT,
    anchor_answer,
    anchor_offer,
    check_offer,
    leg_config,
    stream_direction,
)
from switch.sip.sdp import (
    TELEPHONE_EVENT,
    Connection,
    Direction,
    MediaDescription,
    SdpError,
    SdpNotAcceptable,
    SelectedFormat,
    SessionDescription,
    hold_direction,
    parse_sdp,
    select_formats,
    stream_attributes,
)

ADDRESS = "192.0.2.1"


def plain_stream_direction(sdp: SessionDescription, index: int) -> Direction:
    """RFC 3264 §8.4: the stream's direction, c=0.0.0.0 read as a hold."""
    direction = sdp.media_direction(index)
    conn = sdp.media_connection(index)
    return hold_direction(direction) if conn is not None and conn.is_unspecified else direction


def plain_anchor_offer(offer: SessionDescription, port: int) -> tuple[SessionDescription, int]:
    index = None
    streams = []
    for i, m in enumerate(offer.media):
        if index is None and not m.is_rejected and m.media.lower() == "audio" \
                and m.proto.upper() == "RTP/AVP":
            chosen = select_formats(m, RELAYED_CODECS)
            if chosen:
                index = i
                streams.append(MediaDescription(
                    "audio", port, m.proto, tuple(f.fmt for f in chosen),
                    attributes=stream_attributes(chosen, plain_stream_direction(offer, i),
                                                 m.ptime)))
                continue
        streams.append(MediaDescription(m.media, 0, m.proto, m.formats))
    if index is None:
        raise SdpNotAcceptable("no audio stream with PCMU or PCMA offered")
    return SessionDescription(_PLACEHOLDER_ORIGIN, connection=Connection.for_address(ADDRESS),
                              times=offer.times, media=tuple(streams)), index


def plain_anchor_answer(answer: SessionDescription, offer: SessionDescription, index: int,
                        port: int) -> SessionDescription:
    if index >= len(answer.media) or index >= len(offer.media) \
            or answer.media[index].is_rejected:
        raise SdpNotAcceptable("the other side rejected the audio stream")
    answered = answer.media[index]
    offered = set(offer.media[index].formats)
    formats = [SelectedFormat(str(pt), mapping, answered.fmtp(pt))
               for pt, mapping in answered.rtpmaps().items() if str(pt) in offered]
    if not formats:
        raise SdpNotAcceptable("the other side answered no offered format")
    attrs = stream_attributes(formats, plain_stream_direction(answer, index), answered.ptime)
    streams = [MediaDescription("audio", port, m.proto, tuple(f.fmt for f in formats),
                                attributes=attrs) if i == index
               else MediaDescription(m.media, 0, m.proto, m.formats)
               for i, m in enumerate(offer.media)]
    return SessionDescription(_PLACEHOLDER_ORIGIN, connection=Connection.for_address(ADDRESS),
                              times=offer.times, media=tuple(streams))


def plain_leg_config(local: SessionDescription, remote: SessionDescription,
                     index: int) -> LegConfig:
    if index >= len(local.media) or index >= len(remote.media) \
            or local.media[index].is_rejected or remote.media[index].is_rejected:
        return LegConfig(remote=None, payload_types={}, direction="inactive")
    ours, theirs = local.media[index], remote.media[index]
    conn, mine_conn = remote.media_connection(index), local.media_connection(index)
    address = None if conn is None or conn.is_unspecified else (conn.address, theirs.port)
    if conn is not None and mine_conn is not None and conn.addrtype != mine_conn.addrtype:
        address = None
    payload_types: dict[int, Codec] = {}
    event_pt = None
    for fmt in theirs.formats:
        if fmt not in ours.formats or not fmt.isdigit():
            continue
        mapping = theirs.rtpmap(int(fmt)) or ours.rtpmap(int(fmt))
        if mapping is None:
            continue
        payload_types[int(fmt)] = Codec(name=mapping.encoding, clock_rate=mapping.clock_rate,
                                        channels=mapping.channels or 1)
        if mapping.encoding.lower() == TELEPHONE_EVENT and event_pt is None:
            event_pt = int(fmt)
    mine, peer = plain_stream_direction(local, index), plain_stream_direction(remote, index)
    direction = Direction.of(mine.sends and peer.receives, mine.receives and peer.sends)
    return LegConfig(remote=address, payload_types=payload_types, telephone_event_pt=event_pt,
                     direction=direction.value)


_PTS = [0, 3, 8, 9, 13, 18, 96, 97, TELEPHONE_EVENT_PT, 110]
_MAPS = ["opus/48000/2", "PCMU/8000", "pcma/8000", "telephone-event/8000",
         "telephone-event/48000", "CN/8000", "G722/8000", "bad", "PCMA/8000/1", "PCMU/8000/2"]


def _c(address: str) -> str:
    return f"c=IN {'IP6' if ':' in address else 'IP4'} {address}"


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    """A phone's offer or answer, odd cases included."""
    lines = ["v=0", "o=- 1 1 IN IP4 192.0.2.9", "s=-"]
    session_conn = draw(st.sampled_from(["192.0.2.9", "0.0.0.0", "::", "2001:db8::9", None]))
    if session_conn:
        lines.append(_c(session_conn))
    lines.append("t=0 0")
    lines += [f"a={a}" for a in draw(st.lists(st.sampled_from(
        ["sendrecv", "sendonly", "recvonly", "inactive", "x:1"]), max_size=2))]
    for _ in range(draw(st.integers(1, 3))):
        pts = draw(st.lists(st.sampled_from(_PTS), min_size=1, max_size=5))
        lines.append(f"m={draw(st.sampled_from(['audio', 'audio', 'AUDIO', 'video']))} "
                     f"{draw(st.sampled_from([0, 4000, 4002]))} "
                     f"{draw(st.sampled_from(['RTP/AVP', 'RTP/AVP', 'rtp/avp', 'RTP/SAVP']))} "
                     + " ".join(map(str, pts)))
        media_conn = draw(st.sampled_from([None, None, "192.0.2.3", "0.0.0.0", "2001:db8::3"]))
        if media_conn or not session_conn:
            lines.append(_c(media_conn or "192.0.2.4"))
        for _ in range(draw(st.integers(0, 7))):
            pt = draw(st.sampled_from(_PTS))
            lines.append(draw(st.sampled_from([
                f"a=rtpmap:{pt} {draw(st.sampled_from(_MAPS))}",
                f"a=RTPMAP:{pt} {draw(st.sampled_from(_MAPS))}",
                f"a=fmtp:{pt} {draw(st.sampled_from(['0-15', ' 0-16 ', 'x=1']))}",
                f"a=ptime:{draw(st.sampled_from(['20', '30', 'x', '0.5']))}",
                f"a={draw(st.sampled_from(['sendrecv', 'sendonly', 'recvonly', 'inactive']))}",
                "a=rtcp:5001", "a=foo"])))
    return ("\r\n".join(lines) + "\r\n").encode()


def _outcome(fn: Callable[[], object]) -> object:
    try:
        return fn()
    except (SdpError, SdpNotAcceptable) as exc:
        return type(exc), str(exc)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(bodies(), bodies(), st.integers(0, 2))
def test_cached_anchoring_agrees_with_the_plain_computation(
        offer_body: bytes, answer_body: bytes, index: int) -> None:
    offer, answer = parse_sdp(offer_body), parse_sdp(answer_body)
    for port in (0, 20000):
        assert _outcome(partial(anchor_offer, offer, address=ADDRESS, port=port)) \
            == _outcome(partial(plain_anchor_offer, offer, port))
    checked = _outcome(partial(check_offer, offer))
    anchored = _outcome(partial(plain_anchor_offer, offer, 0))
    assert checked == (anchored[1] if isinstance(anchored[1], int) else anchored)
    assert _outcome(partial(anchor_answer, answer, offer, index, address=ADDRESS, port=20002)) \
        == _outcome(partial(plain_anchor_answer, answer, offer, index, 20002))
    assert leg_config(offer, answer, index) == plain_leg_config(offer, answer, index)
    assert leg_config(answer, offer, index) == plain_leg_config(answer, offer, index)
    for sdp in (offer, answer):
        assert [stream_direction(sdp, i) for i in range(len(sdp.media))] \
            == [plain_stream_direction(sdp, i) for i in range(len(sdp.media))]
    # anchor_offer's plan is kept per offer object: another object, the same result
    again = parse_sdp(offer_body.replace(b"o=- 1 1 ", b"o=- 1 2 "))
    assert again is not offer
    assert _outcome(partial(anchor_offer, again, address=ADDRESS, port=20000)) \
        == _outcome(partial(plain_anchor_offer, again, 20000))


def test_leg_config_payload_types_are_a_fresh_dict() -> None:
    body = (b"v=0\r\no=- 1 1 IN IP4 192.0.2.9\r\ns=-\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\n"
            b"m=audio 4000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n")
    sdp = parse_sdp(body)
    first = leg_config(sdp, sdp, 0)
    assert first.payload_types == {0: Codec(name="PCMU"), 101: Codec(name="telephone-event")}
    assert first.telephone_event_pt == 101
    first.payload_types.clear()  # type: ignore[attr-defined]
    assert leg_config(sdp, sdp, 0).payload_types == {0: Codec(name="PCMU"),
                                                     101: Codec(name="telephone-event")}
