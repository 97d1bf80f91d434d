#!/usr/bin/env python3
"""Writes the seed inputs of the `decode` fuzz target into corpus/decode/.

Tiny binary files: a valid frame of each op, the protocol.md example, and a
few malformed frames. Run from anywhere; it overwrites only the seed_* files.
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "corpus", "decode")


def frame(op, flags=0, topic=b"", body=b"", length=None):
    if length is None:
        length = 4 + len(topic) + len(body)
    return struct.pack(">IBHB", length, op, len(topic), flags) + topic + body


ACK, REPLY = 0x01, 0x02
SEEDS = {
    "connect": frame(0x01, body=b'{"protocol":1,"name":"f","verbose":true}'),
    "publish_reply_ack": frame(0x02, ACK | REPLY, b"a.b", struct.pack(">H", 3) + b"r.x" + b"hi"),
    "subscribe_queue": frame(0x03, ACK, b"a.>", struct.pack(">I", 7) + b"q"),
    "unsubscribe_max": frame(0x04, ACK, body=struct.pack(">II", 7, 3)),
    "ping_pong_disconnect": frame(0x05) + frame(0x06) + frame(0x07),
    "message_reply": frame(0x10, REPLY, b"a.b", struct.pack(">IH", 7, 1) + b"r" + b"hi"),
    "ok_error": frame(0x11) + frame(0x12, body=struct.pack(">H", 400) + b"invalid subject"),
    "info": frame(0x13, body=b'{"server_id":"s","version":"0","protocol":1,"max_payload":4096,'
                  b'"max_topic_length":255,"auth_required":false,"tls_required":false}'),
    "disconnect_reason": frame(0x07, body=b"draining"),
    "example": bytes.fromhex("0000000b 03 0003 00 612e2a 00000007"
                             "00000009 02 0003 00 612e62 6869"
                             "0000000d 10 0003 00 612e62 00000007 6869".replace(" ", "")),
    "bad_len_short": struct.pack(">I", 3) + b"\x05\x00\x00\x00",
    "bad_topic_len": frame(0x02, topic=b"", body=b"", length=4)[:5] + b"\x00\x09\x00" + b"abc",
    "bad_too_large": struct.pack(">I", 4096 + 1024 + 1) + b"\x02\x00\x00\x00",
    "bad_flags_unknown_op": frame(0x05, ACK) + frame(0x08) + frame(0x02, 0x80, b"a", b"x"),
    "bad_reply_len": frame(0x02, REPLY, b"a", b"\xff\xffx"),
    "bad_subjects": frame(0x03, 0, b"a.>.b", b"\x00\x00\x00\x01") + frame(0x02, 0, b"a..\xff\xc2\xa0", b""),
}

os.makedirs(OUT, exist_ok=True)
for name, data in SEEDS.items():
    with open(os.path.join(OUT, "seed_" + name), "wb") as f:
        f.write(data)
print(f"wrote {len(SEEDS)} seeds to {OUT}")
