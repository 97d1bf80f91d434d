"""BlipMQ's NATS listener against the nats-py client.

Run by dataplane/tests/nats_py.rs: `python client_suite.py HOST:PORT MAX_PAYLOAD [CA_FILE]`;
with CA_FILE every connection is TLS (tls:// and an SSL context trusting that CA).
Each check prints one line; the first failure raises, and the exit status is 1.
Every wait is bounded.
"""

import asyncio
import ssl
import sys

import nats
from nats.errors import NoRespondersError

WITHIN = 10  # seconds, for every wait
TLS = {}  # nats.connect's TLS options, when the suite runs over TLS


async def connect(url, **options):
    return await asyncio.wait_for(
        nats.connect(url, allow_reconnect=False, **TLS, **options), WITHIN
    )


async def await_subscriptions(subscriber, publisher):
    """Waits until messages from `publisher` reach the subscriptions that
    `subscriber` made so far: a probe subscription made after them sees a
    probe from `publisher` (one connection's ops are applied in order)."""
    probe = subscriber.new_inbox()
    got = asyncio.Event()

    async def on_probe(_msg):
        got.set()

    sub = await subscriber.subscribe(probe, cb=on_probe)
    await subscriber.flush(WITHIN)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WITHIN
    while not got.is_set():
        assert loop.time() < deadline, "subscriptions not applied within 10 s"
        await publisher.publish(probe, b"probe")
        await publisher.flush(WITHIN)
        try:
            await asyncio.wait_for(got.wait(), 0.05)
        except asyncio.TimeoutError:
            pass
    await sub.unsubscribe()


async def pub_sub_wildcards(url):
    sub_nc = await connect(url)
    pub_nc = await connect(url)
    one = await sub_nc.subscribe("orders.*")
    tail = await sub_nc.subscribe("orders.>")
    await await_subscriptions(sub_nc, pub_nc)
    await pub_nc.publish("orders.us", b"a")
    await pub_nc.publish("orders.eu.new", b"b")
    await pub_nc.flush(WITHIN)
    msg = await one.next_msg(WITHIN)
    assert (msg.subject, msg.data) == ("orders.us", b"a"), msg
    assert (await tail.next_msg(WITHIN)).subject == "orders.us"
    assert (await tail.next_msg(WITHIN)).data == b"b"
    await sub_nc.close()
    await pub_nc.close()


async def queue_group(url):
    pub_nc = await connect(url)
    members = []
    counts = {}
    for i in range(3):
        nc = await connect(url)

        async def on_job(msg, i=i):
            counts.setdefault(int(msg.data), []).append(i)

        await nc.subscribe("jobs", queue="workers", cb=on_job)
        await await_subscriptions(nc, pub_nc)
        members.append(nc)
    for n in range(300):
        await pub_nc.publish("jobs", str(n).encode())
    await pub_nc.flush(WITHIN)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WITHIN
    while len(counts) < 300 and loop.time() < deadline:
        await asyncio.sleep(0.01)
    for nc in members:
        await nc.flush(WITHIN)
    assert sorted(counts) == list(range(300)), f"{300 - len(counts)} jobs missing"
    assert all(len(who) == 1 for who in counts.values()), "a job went to two members"
    for nc in members + [pub_nc]:
        await nc.close()


async def request_reply(url):
    responder = await connect(url)
    requester = await connect(url)

    async def upper(msg):
        await msg.respond(msg.data.upper())

    await responder.subscribe("svc.upper", cb=upper)
    await await_subscriptions(responder, requester)
    for word in (b"one", b"two", b"three"):
        response = await requester.request("svc.upper", word, timeout=WITHIN)
        assert response.data == word.upper(), response
    await responder.close()
    await requester.close()


async def no_responders(url):
    nc = await connect(url)
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        await nc.request("nobody.home", b"?", timeout=WITHIN)
        raise AssertionError("a request nobody subscribes to was answered")
    except NoRespondersError:
        pass
    assert loop.time() - started < 5, "no 503 status: the request timed out"
    await nc.close()


async def headers(url):
    sub_nc = await connect(url)
    pub_nc = await connect(url)
    sub = await sub_nc.subscribe("hdr.x")
    await await_subscriptions(sub_nc, pub_nc)
    await pub_nc.publish("hdr.x", b"body", headers={"Trace-Id": "abc-123", "Other": "x y"})
    await pub_nc.flush(WITHIN)
    msg = await sub.next_msg(WITHIN)
    assert msg.data == b"body", msg
    assert msg.headers == {"Trace-Id": "abc-123", "Other": "x y"}, msg.headers
    await sub_nc.close()
    await pub_nc.close()


async def auto_unsubscribe(url):
    nc = await connect(url)
    sub = await nc.subscribe("limited")
    await sub.unsubscribe(limit=3)
    await await_subscriptions(nc, nc)
    for n in range(10):
        await nc.publish("limited", str(n).encode())
    await nc.flush(WITHIN)
    got = [(await sub.next_msg(WITHIN)).data for _ in range(3)]
    assert got == [b"0", b"1", b"2"], got
    # Nothing more comes: a PING round trip later, the queue is still empty.
    await nc.flush(WITHIN)
    assert sub.pending_msgs == 0, f"{sub.pending_msgs} messages past the limit"
    await nc.close()


async def large_payload(url, max_payload):
    nc = await connect(url)
    assert nc.max_payload == max_payload, nc.max_payload
    sub = await nc.subscribe("big")
    await await_subscriptions(nc, nc)
    payload = bytes(i % 251 for i in range(max_payload))
    await nc.publish("big", payload)
    await nc.flush(WITHIN)
    assert (await sub.next_msg(WITHIN)).data == payload
    try:
        await nc.publish("big", payload + b"x")
        raise AssertionError("published past max_payload")
    except nats.errors.MaxPayloadError:
        pass
    await nc.close()


async def no_echo(url):
    quiet = await connect(url, no_echo=True)
    other = await connect(url)
    sub = await quiet.subscribe("echo.x")
    await await_subscriptions(quiet, other)
    await quiet.publish("echo.x", b"mine")
    await quiet.flush(WITHIN)
    await other.publish("echo.x", b"theirs")
    await other.flush(WITHIN)
    assert (await sub.next_msg(WITHIN)).data == b"theirs"
    await quiet.close()
    await other.close()


async def drain(url):
    sub_nc = await connect(url)
    pub_nc = await connect(url)
    got = []

    async def on_msg(msg):
        got.append(msg.data)

    await sub_nc.subscribe("drain.x", cb=on_msg)
    await await_subscriptions(sub_nc, pub_nc)
    for n in range(100):
        await pub_nc.publish("drain.x", str(n).encode())
    await pub_nc.flush(WITHIN)
    # The PONG after the publisher's flush: every message reached the
    # subscriber's queue before this round trip of the subscriber's ends.
    await sub_nc.flush(WITHIN)
    await asyncio.wait_for(sub_nc.drain(), WITHIN)
    assert got == [str(n).encode() for n in range(100)], f"{len(got)} of 100 before the drain ended"
    assert sub_nc.is_closed
    await pub_nc.close()


async def main():
    url = f"nats://{sys.argv[1]}"
    max_payload = int(sys.argv[2])
    if len(sys.argv) > 3:
        context = ssl.create_default_context(cafile=sys.argv[3])
        TLS["tls"] = context
        url = f"tls://{sys.argv[1]}"
    checks = [
        ("pub/sub with wildcards", pub_sub_wildcards(url)),
        ("queue group, each message once", queue_group(url)),
        ("request/reply", request_reply(url)),
        ("no responders", no_responders(url)),
        ("headers", headers(url)),
        ("auto-unsubscribe", auto_unsubscribe(url)),
        ("payload of max_payload", large_payload(url, max_payload)),
        ("no_echo", no_echo(url)),
        ("drain", drain(url)),
    ]
    for name, check in checks:
        await asyncio.wait_for(check, 60)
        print(f"ok: {name}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
