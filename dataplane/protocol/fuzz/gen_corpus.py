#!/usr/bin/env python3
"""Writes the seed inputs of the `decode` fuzz target into corpus/decode/,
and those of `nats_decode` into corpus/nats_decode/.

Tiny files: a valid frame of each op, the protocol.md example, and a few
malformed frames; for NATS, valid client streams and bad ones. Run from
anywhere; it overwrites only the seed_* files.
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "corpus", "decode")
NATS_OUT = os.path.join(HERE, "corpus", "nats_decode")


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

# NATS client streams, as nats-server 2.9+ parses them (limits of the fuzz
# target: 256-byte control lines, 1024-byte payloads).
HDRS = b"NATS/1.0\r\nK: v\r\n\r\n"
NATS_SEEDS = {
    "session": b'CONNECT {"verbose":false,"pedantic":false,"headers":true,"name":"f"}\r\n'
               b"SUB a.* 1\r\nSUB a.> q 2\r\nPUB a.b 5\r\nhello\r\n"
               b"PUB a.b _INBOX.1 0\r\n\r\nPING\r\nPONG\r\nUNSUB 1 3\r\nUNSUB 2\r\n",
    "hpub": b"HPUB a.b %d %d\r\n" % (len(HDRS), len(HDRS) + 2) + HDRS + b"hi\r\n"
            + b"HPUB a.b r %d %d\r\n" % (len(HDRS), len(HDRS)) + HDRS + b"\r\n",
    "lenient": b"connect{}\npub\ta\t\t2 \nhi\r\nSuB  a  \t 1\nping foo\r\nUNSUB 1 x\n",
    "payload_with_crlf": b"PUB a 9\r\nPUB a 1\r\n\r\n",
    "bad_unknown_op": b"PING\r\nMSG a 1 1\r\nx\r\n",
    "bad_no_blank": b"PUBa 1\r\nx\r\n",
    "bad_max_payload": b"PUB a 1025\r\n",
    "bad_control_line": b"SUB " + b"a" * 300 + b" 1\r\n",
    "bad_args": b"PUB a\r\nSUB a b c d\r\n",
    "bad_sizes": b"PUB a 1234567890\r\n",
    "bad_hpub_sizes": b"HPUB a 6 5\r\nhello\r\n",
    "bad_payload_end": b"PUB a 2\r\nhiX\r\n",
    "bad_connect_json": b"CONNECT {\"verbose\":\"yes\"}\r\nCONNECT\r\n",
}

for out, seeds in ((OUT, SEEDS), (NATS_OUT, NATS_SEEDS)):
    os.makedirs(out, exist_ok=True)
    for name, data in seeds.items():
        with open(os.path.join(out, "seed_" + name), "wb") as f:
            f.write(data)
    print(f"wrote {len(seeds)} seeds to {out}")
