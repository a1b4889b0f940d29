"""SDP across the two sides of a B2BUA: anchor offers and answers on the engine.

Theory of operation
-------------------
The engine relays payloads without transcoding, so both sides of a bridge
must use the same codecs and payload type numbers.  An offer from one side
(X) is therefore passed on to the other side (Y) nearly as it is
(``anchor_offer``): the first audio RTP/AVP stream with a codec we relay
(PCMU, PCMA; telephone-event rides along, RFC 4733 §7.1.1) keeps the offered
payload type numbers, in the offerer's order, and moves to the engine's
address and the port of Y's media leg; every other m-line keeps its place
with port 0 (RFC 3264 §8.2), so that Y's answer maps line by line back onto
X's offer.  Y's answer is turned into the answer to X the same way
(``anchor_answer``).  The direction attributes travel unchanged: Y answers
the direction X offered, so the answer X gets is the §6.1 answer to its own
offer, and hold/resume (RFC 3264 §8.4: sendonly/inactive, or the RFC 2543
``c=0.0.0.0`` form, turned into a direction attribute here) reaches the other
side as it was meant.  The o= line is each leg's own (``OriginState.stamp``).

``leg_config`` derives what the media relay needs for one leg from the SDP
we sent on it and the SDP its phone sent.  ``local_offer``/``local_answer``
produce SDP for a leg with no peer (a held leg, a new leg of a transfer).
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache

from switch.call.media import Codec, LegConfig
from switch.sip.sdp import (
    PCMA,
    PCMU,
    TELEPHONE_EVENT,
    Answer,
    Connection,
    Direction,
    MediaDescription,
    NoCommonMedia,
    Origin,
    SdpNotAcceptable,
    SelectedFormat,
    SessionDescription,
    negotiate,
    select_formats,
    stream_attributes,
)
from switch.sip.sdp import Codec as SdpCodec

__all__ = [
    "RELAYED_CODECS",
    "anchor_answer",
    "anchor_offer",
    "check_offer",
    "leg_config",
    "local_answer",
    "local_offer",
    "offer_in_use",
    "stream_direction",
]

RELAYED_CODECS: tuple[SdpCodec, ...] = (PCMU, PCMA)
TELEPHONE_EVENT_PT = 101
_PLACEHOLDER_ORIGIN = Origin("-", "0", 0, "IN", "IP4", "0.0.0.0")


stream_direction = SessionDescription.stream_direction
"""``stream_direction(sdp, index)``: the direction of stream ``index``, the legacy
``c=0.0.0.0`` hold included (§8.4)."""


# What the anchored stream of an offer or an answer becomes depends only on the
# stream's formats and attributes (not on its port or address), and phones send
# the same ones call after call: the two functions below run once per distinct
# input.  They return the stream's formats and attributes, or None.
Stream = tuple[tuple[str, ...], tuple[tuple[str, str | None], ...]]
_PORTLESS = 0


@lru_cache(maxsize=1024)
def _relayed_offer_stream(formats: tuple[str, ...], attributes: tuple[tuple[str, str | None], ...],
                          proto: str, direction: Direction) -> Stream | None:
    offered = MediaDescription("audio", _PORTLESS, proto, formats, attributes=attributes)
    chosen = select_formats(offered, RELAYED_CODECS)
    if not chosen:
        return None
    return (tuple(f.fmt for f in chosen),
            stream_attributes(chosen, direction, offered.ptime))


@lru_cache(maxsize=1024)
def _relayed_answer_stream(formats: tuple[str, ...],
                           attributes: tuple[tuple[str, str | None], ...], proto: str,
                           offered_formats: tuple[str, ...], direction: Direction
                           ) -> Stream | None:
    answered = MediaDescription("audio", _PORTLESS, proto, formats, attributes=attributes)
    offered = set(offered_formats)
    chosen = [SelectedFormat(fmt, mapping, answered.fmtp(pt))
              for pt, mapping in answered.rtpmaps().items() if (fmt := str(pt)) in offered]
    if not chosen:
        return None
    return (tuple(f.fmt for f in chosen),
            stream_attributes(chosen, direction, answered.ptime))


# The engine's c= line, the same in every body it sends.
_connection_for = lru_cache(maxsize=64)(Connection.for_address)


def check_offer(offer: SessionDescription) -> int:
    """The index of the stream ``anchor_offer`` would anchor, without building the
    offer; raises ``SdpNotAcceptable`` (488) as it does."""
    plan = _offer_plan(offer)
    if plan is None:
        raise SdpNotAcceptable("no audio stream with PCMU or PCMA offered")
    return plan[0]


def anchor_offer(offer: SessionDescription, *, address: str, port: int
                 ) -> tuple[SessionDescription, int]:
    """The offer to pass on to the other side, and the index of the anchored stream.

    Raises ``SdpNotAcceptable`` (488) when no stream carries a codec we relay.
    """
    plan = _offer_plan(offer)
    if plan is None:
        raise SdpNotAcceptable("no audio stream with PCMU or PCMA offered")
    index, streams, proto, (formats, attributes) = plan
    anchored = MediaDescription("audio", port, proto, formats, attributes=attributes)
    sdp = SessionDescription(_PLACEHOLDER_ORIGIN, connection=_connection_for(address),
                             times=offer.times,
                             media=(*streams[:index], anchored, *streams[index + 1:]))
    return sdp, index


# anchor_offer's work but the port: the anchored stream's index, the streams with
# port 0 (the anchored one's place too), its proto and relayed formats and attributes.
_OfferPlan = tuple[int, tuple[MediaDescription, ...], str, Stream]
# The controller anchors each offer twice (the codec check in _route, the fork's
# offer), and parse_sdp hands out one description per repeated body: the plans of
# the last few offers are kept, by identity (each entry holds its offer, so the id
# is not reused while the entry is there).
_PLANS_MAX = 64
_plans: dict[int, tuple[SessionDescription, _OfferPlan | None]] = {}


def _offer_plan(offer: SessionDescription) -> _OfferPlan | None:
    entry = _plans.get(id(offer))
    if entry is not None and entry[0] is offer:
        return entry[1]
    index, relayed = 0, None
    streams: list[MediaDescription] = []
    for i, m in enumerate(offer.media):
        if relayed is None and m.port != 0 and m.media.lower() == "audio" \
                and m.proto.upper() == "RTP/AVP":
            relayed = _relayed_offer_stream(m.formats, m.attributes, m.proto,
                                            offer.stream_direction(i))
            index = i
        streams.append(MediaDescription(m.media, 0, m.proto, m.formats))
    plan = None if relayed is None else (index, tuple(streams), streams[index].proto, relayed)
    if len(_plans) >= _PLANS_MAX:
        del _plans[next(iter(_plans))]
    _plans[id(offer)] = (offer, plan)
    return plan


def anchor_answer(answer: SessionDescription, offer: SessionDescription, index: int, *,
                  address: str, port: int) -> SessionDescription:
    """The answer to ``offer`` (the offerer's own) built from the other side's ``answer``.

    Raises ``SdpNotAcceptable`` when the other side rejected the anchored stream.
    """
    if index >= len(answer.media) or index >= len(offer.media) \
            or answer.media[index].port == 0:
        raise SdpNotAcceptable("the other side rejected the audio stream")
    answered = answer.media[index]
    relayed = _relayed_answer_stream(answered.formats, answered.attributes, answered.proto,
                                     offer.media[index].formats,
                                     answer.stream_direction(index))
    if relayed is None:
        raise SdpNotAcceptable("the other side answered no offered format")
    streams: list[MediaDescription] = []
    for i, m in enumerate(offer.media):
        if i == index:
            streams.append(MediaDescription("audio", port, m.proto, relayed[0],
                                            attributes=relayed[1]))
        else:
            streams.append(MediaDescription(m.media, 0, m.proto, m.formats))
    return SessionDescription(_PLACEHOLDER_ORIGIN, connection=_connection_for(address),
                              times=offer.times, media=tuple(streams))


def local_offer(*, address: str, port: int, direction: Direction = Direction.SENDRECV
                ) -> SessionDescription:
    """Our own offer (no peer to relay from): PCMU, PCMA, telephone-event 0-16."""
    stream = MediaDescription(
        "audio", port, "RTP/AVP", ("0", "8", str(TELEPHONE_EVENT_PT)),
        attributes=(("rtpmap", "0 PCMU/8000"), ("rtpmap", "8 PCMA/8000"),
                    ("rtpmap", f"{TELEPHONE_EVENT_PT} {TELEPHONE_EVENT}/8000"),
                    ("fmtp", f"{TELEPHONE_EVENT_PT} 0-16"), ("ptime", "20"),
                    (direction.value, None)))
    return SessionDescription(origin=_PLACEHOLDER_ORIGIN,
                              connection=Connection.for_address(address), media=(stream,))


def local_answer(offer: SessionDescription, *, address: str, port: int,
                 direction: Direction = Direction.SENDRECV) -> tuple[SessionDescription, int]:
    """Our own answer to ``offer`` (no peer); raises ``SdpNotAcceptable`` (488)."""
    ports = [port] * len(offer.media)
    result = negotiate(offer, RELAYED_CODECS, origin=_PLACEHOLDER_ORIGIN, address=address,
                       ports=ports, local_direction=direction)
    if isinstance(result, NoCommonMedia):
        raise result.to_error()
    assert isinstance(result, Answer)
    accepted = [s.index for s in result.streams if s.accepted]
    index = accepted[0]
    # One media leg per call leg: streams after the first accepted one are disabled.
    media = tuple(m if i == index or m.is_rejected else replace(m, port=0)
                  for i, m in enumerate(result.sdp.media))
    return replace(result.sdp, media=media), index


def offer_in_use(local: SessionDescription, remote: SessionDescription | None,
                 index: int) -> SessionDescription:
    """A fresh offer for a leg whose phone asked for one (a re-INVITE without SDP,
    RFC 3261 §14.2): the SDP we last sent on it, stream ``index`` limited to the
    formats its phone last agreed to.  We relay without transcoding, so the phone
    must not pick a codec the other side of the bridge is not using.  (The o=
    version is the caller's to bump, ``OriginState.stamp``.)"""
    if remote is None or index >= len(local.media) or index >= len(remote.media) \
            or local.media[index].is_rejected or remote.media[index].is_rejected:
        return local
    ours = local.media[index]
    agreed = set(remote.media[index].formats)
    kept = tuple(f for f in ours.formats if f in agreed)
    if not kept or kept == ours.formats:
        return local
    dropped = set(ours.formats) - set(kept)

    def keep(attribute: tuple[str, str | None]) -> bool:
        name, value = attribute
        if name.lower() in ("rtpmap", "fmtp") and value is not None:
            return value.split(" ", 1)[0] not in dropped
        return True

    stream = replace(ours, formats=kept, attributes=tuple(a for a in ours.attributes if keep(a)))
    return replace(local, media=tuple(stream if i == index else m
                                      for i, m in enumerate(local.media)))


def leg_config(local: SessionDescription, remote: SessionDescription, index: int) -> LegConfig:
    """The media relay's view of one leg: what we sent on it (``local``) and what it sent."""
    if index >= len(local.media) or index >= len(remote.media) \
            or local.media[index].port == 0 or remote.media[index].port == 0:   # rejected
        return LegConfig(remote=None, payload_types={}, direction=Direction.INACTIVE.value)
    ours, theirs = local.media[index], remote.media[index]
    # media_connection(index) of each, without the method calls (twice a call)
    conn = theirs.connections[0] if theirs.connections else remote.connection
    mine_conn = ours.connections[0] if ours.connections else local.connection
    address = None if conn is None or conn.is_unspecified else (conn.address, theirs.port)
    if conn is not None and mine_conn is not None and conn.addrtype != mine_conn.addrtype:
        # An IP6 address for an IP4 relay (or the reverse) cannot be sent to: wait
        # for the phone's first packet and latch to its source (symmetric RTP).
        address = None
    payload_types, event_pt = _payload_types(theirs.formats, theirs.attributes, theirs.proto,
                                              ours.formats, ours.attributes, ours.proto)
    direction = _LEG_DIRECTION[local.stream_direction(index), remote.stream_direction(index)]
    return LegConfig(remote=address, payload_types=dict(payload_types),
                     telephone_event_pt=event_pt, direction=direction)


# (what we said, what the phone said) -> what we may do on the leg: send if we
# said we send and the phone receives, receive if we receive and it sends.
_LEG_DIRECTION = {
    (mine, peer): Direction.of(mine.sends and peer.receives, mine.receives and peer.sends).value
    for mine in Direction for peer in Direction
}


@lru_cache(maxsize=1024)
def _payload_types(their_formats: tuple[str, ...],
                   their_attributes: tuple[tuple[str, str | None], ...], their_proto: str,
                   our_formats: tuple[str, ...],
                   our_attributes: tuple[tuple[str, str | None], ...], our_proto: str
                   ) -> tuple[tuple[tuple[int, Codec], ...], int | None]:
    """The common payload types of two streams (by the phone's rtpmap, else ours) and
    the telephone-event one: the same inputs call after call, so computed once."""
    theirs = MediaDescription("audio", _PORTLESS, their_proto, their_formats,
                              attributes=their_attributes)
    ours = MediaDescription("audio", _PORTLESS, our_proto, our_formats,
                            attributes=our_attributes)
    payload_types: dict[int, Codec] = {}
    event_pt: int | None = None
    for fmt in theirs.formats:
        if fmt not in our_formats or not fmt.isdigit():
            continue
        mapping = theirs.rtpmap(int(fmt)) or ours.rtpmap(int(fmt))
        if mapping is None:
            continue
        payload_types[int(fmt)] = Codec(name=mapping.encoding, clock_rate=mapping.clock_rate,
                                        channels=mapping.channels or 1)
        if mapping.encoding.lower() == TELEPHONE_EVENT and event_pt is None:
            event_pt = int(fmt)
    return tuple(payload_types.items()), event_pt
