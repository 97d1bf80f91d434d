//! The seed scripts of the session fuzz target, written in the form
//! [`fuzz_session`](super::fuzz_session) decodes: a few valid sessions of
//! each dialect and the limits' edges, for the fuzzer to mutate.

use super::{Action, Frame, RawBytes};

/// Writes values as `arbitrary` reads them back.
#[derive(Default)]
struct Script(Vec<u8>);

impl Script {
    /// An enum's variant `index` of `count`: `arbitrary` maps a u32 `x`
    /// to `(x * count) >> 32`.
    fn variant(&mut self, index: u32, count: u32) {
        let x = (u64::from(index) << 32).div_ceil(u64::from(count));
        self.0.extend_from_slice(&(x as u32).to_le_bytes());
    }

    fn byte(&mut self, value: u8) {
        self.0.push(value);
    }

    fn flag(&mut self, value: bool) {
        self.0.push(value.into());
    }

    fn u16(&mut self, value: u16) {
        self.0.extend_from_slice(&value.to_le_bytes());
    }

    fn option(&mut self, value: Option<u8>) {
        self.flag(value.is_some());
        if let Some(value) = value {
            self.byte(value);
        }
    }

    fn action(&mut self, action: &Action) {
        const ACTIONS: u32 = 10;
        match action {
            Action::Accept { worker, nats } => {
                self.variant(0, ACTIONS);
                self.flag(*worker);
                self.flag(*nats);
            }
            Action::Frame { conn, frame } => {
                self.variant(1, ACTIONS);
                self.byte(*conn);
                self.frame(frame);
            }
            Action::Raw { conn, bytes } => {
                self.variant(2, ACTIONS);
                self.byte(*conn);
                self.u16(bytes.0.len() as u16);
                self.0.extend_from_slice(&bytes.0);
            }
            Action::Write { conn, max } => {
                self.variant(3, ACTIONS);
                self.byte(*conn);
                self.u16(*max);
            }
            Action::Flush => self.variant(4, ACTIONS),
            Action::Poll => self.variant(5, ACTIONS),
            Action::Advance { millis } => {
                self.variant(6, ACTIONS);
                self.u16(*millis);
            }
            Action::PeerClosed { conn } => {
                self.variant(7, ACTIONS);
                self.byte(*conn);
            }
            Action::Reset { conn } => {
                self.variant(8, ACTIONS);
                self.byte(*conn);
            }
            Action::Drain { worker } => {
                self.variant(9, ACTIONS);
                self.flag(*worker);
            }
        }
    }

    fn frame(&mut self, frame: &Frame) {
        const FRAMES: u32 = 7;
        match *frame {
            Frame::Connect {
                verbose,
                echo,
                headers,
                no_responders,
            } => {
                self.variant(0, FRAMES);
                for flag in [verbose, echo, headers, no_responders] {
                    self.flag(flag);
                }
            }
            Frame::Subscribe {
                filter,
                sid,
                queue,
                ack,
            } => {
                self.variant(1, FRAMES);
                self.byte(filter);
                self.byte(sid);
                self.option(queue);
                self.flag(ack);
            }
            Frame::Unsubscribe { sid, max_msgs, ack } => {
                self.variant(2, FRAMES);
                self.byte(sid);
                self.byte(max_msgs);
                self.flag(ack);
            }
            Frame::Publish {
                subject,
                reply,
                len,
                ack,
                headers,
            } => {
                self.variant(3, FRAMES);
                self.byte(subject);
                self.option(reply);
                self.u16(len);
                self.flag(ack);
                self.flag(headers);
            }
            Frame::Ping => self.variant(4, FRAMES),
            Frame::Pong => self.variant(5, FRAMES),
            Frame::Disconnect => self.variant(6, FRAMES),
        }
    }
}

/// The input that plays `actions`, with pacing on or off.
/// The script of `actions` after the setup byte (see `Setup`).
fn encode(setup: u8, actions: &[Action]) -> Vec<u8> {
    let mut script = Script::default();
    script.byte(setup);
    for action in actions {
        script.action(action);
    }
    script.0
}

fn accept(worker: u8, nats: bool) -> Action {
    Action::Accept {
        worker: worker == 1,
        nats,
    }
}

fn frame(conn: u8, frame: Frame) -> Action {
    Action::Frame { conn, frame }
}

fn connect(conn: u8) -> Action {
    frame(
        conn,
        Frame::Connect {
            verbose: true,
            echo: true,
            headers: true,
            no_responders: true,
        },
    )
}

fn subscribe(conn: u8, filter: u8, sid: u8, queue: Option<u8>) -> Action {
    frame(
        conn,
        Frame::Subscribe {
            filter,
            sid,
            queue,
            ack: true,
        },
    )
}

fn publish(conn: u8, subject: u8, reply: Option<u8>, len: u16) -> Action {
    frame(
        conn,
        Frame::Publish {
            subject,
            reply,
            len,
            ack: true,
            headers: false,
        },
    )
}

/// Subject indexes into `SUBJECTS`.
const A: u8 = 0;
const A_B: u8 = 1;
const A_STAR: u8 = 2;
const A_GT: u8 = 3;
const INBOX: u8 = 6;

/// Two connections of `nats` (or binary) dialect, one per worker: a
/// subscriber and a publisher, messages across the ring, then goodbye.
fn session(nats: bool) -> Vec<Action> {
    vec![
        accept(0, nats),
        accept(1, nats),
        connect(0),
        connect(1),
        subscribe(0, A_STAR, 1, None),
        subscribe(0, A_GT, 2, Some(0)),
        Action::Poll,
        Action::Poll,
        publish(1, A_B, None, 5),
        publish(1, A_B, Some(INBOX), 0),
        frame(
            1,
            Frame::Publish {
                subject: A,
                reply: None,
                len: 3,
                ack: false,
                headers: nats,
            },
        ),
        Action::Poll,
        Action::Poll,
        Action::Flush,
        frame(
            0,
            Frame::Unsubscribe {
                sid: 2,
                max_msgs: 0,
                ack: true,
            },
        ),
        frame(0, Frame::Ping),
        Action::Write { conn: 0, max: 7 },
        Action::Flush,
        frame(1, Frame::Disconnect),
        Action::Flush,
        Action::PeerClosed { conn: 0 },
        Action::Flush,
    ]
}

/// Setup bytes (`Setup`'s bits).
const PLAIN: u8 = 0;
const PACING: u8 = 1;
const USERS: u8 = 2;
const RATE_PACE: u8 = 4;
const RATE_REJECT: u8 = 4 | 8;

/// alice (binary) and bob (NATS) within and past their permissions, a
/// request bob may answer twice (he tries three times), then a client without credentials and one
/// with a wrong password.
fn users_and_permissions() -> Vec<Action> {
    vec![
        accept(0, false),
        accept(1, true),
        connect(0),
        connect(1),
        subscribe(0, A_STAR, 1, None),
        subscribe(0, A_GT, 2, None),
        subscribe(0, INBOX, 3, None),
        subscribe(1, A, 1, Some(0)),
        Action::Poll,
        Action::Poll,
        publish(0, A, Some(INBOX), 8),
        publish(0, A_B, None, 8),
        Action::Poll,
        Action::Poll,
        Action::Flush,
        publish(1, INBOX, None, 2),
        publish(1, INBOX, None, 2),
        publish(1, INBOX, None, 2),
        publish(1, A, None, 2),
        Action::Poll,
        Action::Poll,
        Action::Advance { millis: 1100 },
        accept(0, true),
        accept(1, false),
        connect(2),
        connect(3),
        Action::Flush,
    ]
}

/// A publisher over its rate while a subscriber reads, with time passing.
fn rate_limited() -> Vec<Action> {
    [accept(0, false), accept(1, true), connect(0), connect(1)]
        .into_iter()
        .chain([subscribe(0, A_GT, 1, None), Action::Poll, Action::Poll])
        .chain((0..10).map(|_| publish(1, A_B, None, 300)))
        .chain([Action::Poll, Action::Flush, Action::Advance { millis: 500 }])
        .chain((0..4).map(|_| publish(1, A_B, None, 300)))
        .chain([Action::Poll, Action::Flush])
        .collect()
}

/// The seed inputs, by name.
pub fn session_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let scripts: Vec<(&str, u8, Vec<Action>)> = vec![
        ("binary_session", PLAIN, session(false)),
        ("nats_session", PLAIN, session(true)),
        ("users_and_permissions", USERS, users_and_permissions()),
        ("rate_limit_pace", RATE_PACE, rate_limited()),
        ("rate_limit_reject", RATE_REJECT, rate_limited()),
        (
            "mixed_request_no_responders",
            PLAIN,
            vec![
                accept(0, true),
                accept(1, false),
                connect(0),
                connect(1),
                subscribe(0, INBOX, 9, None),
                subscribe(1, A_B, 1, Some(1)),
                Action::Poll,
                Action::Poll,
                publish(0, A, Some(INBOX), 4),
                publish(0, A_B, Some(INBOX), 4),
                Action::Poll,
                Action::Poll,
                Action::Flush,
            ],
        ),
        (
            "slow_consumer_paced",
            PACING,
            [accept(0, false), accept(1, true), connect(0), connect(1)]
                .into_iter()
                .chain([subscribe(0, A_GT, 1, None), Action::Poll, Action::Poll])
                .chain((0..12).map(|_| publish(1, A_B, None, 500)))
                .chain([Action::Poll, Action::Poll, Action::Advance { millis: 400 }])
                .chain((0..12).map(|_| publish(1, A_B, None, 500)))
                .chain([Action::Poll, Action::Flush])
                .collect(),
        ),
        (
            "ping_timeout_and_drain",
            PLAIN,
            vec![
                accept(0, true),
                accept(0, false),
                accept(1, false),
                connect(0),
                connect(1),
                Action::Advance { millis: 1100 },
                Action::Advance { millis: 1100 },
                Action::Write { conn: 1, max: 3 },
                Action::Advance { millis: 1100 },
                Action::Drain { worker: true },
                Action::Flush,
                Action::Advance { millis: 1100 },
                Action::Reset { conn: 0 },
            ],
        ),
        (
            "raw_bytes",
            PLAIN,
            vec![
                accept(0, false),
                accept(1, true),
                Action::Raw {
                    conn: 0,
                    bytes: RawBytes(b"\0\0\0\x04\x05\0\0\0\0\0\0\x02\x01\0\0{}".to_vec()),
                },
                Action::Raw {
                    conn: 1,
                    bytes: RawBytes(b"CONNECT {}\r\nSUB a 1\r\nPUB a 2\r\nhi\r\nPIN".to_vec()),
                },
                Action::Raw {
                    conn: 1,
                    bytes: RawBytes(b"G\r\nMSG a 1 1\r\n".to_vec()),
                },
                Action::Flush,
            ],
        ),
        (
            "connection_limit",
            PLAIN,
            (0..8)
                .map(|i| accept(i % 2, i % 3 == 0))
                .chain([Action::Flush])
                .collect(),
        ),
    ];
    scripts
        .into_iter()
        .map(|(name, setup, actions)| (name, encode(setup, &actions)))
        .collect()
}

/// The actions `input` decodes to, as `fuzz_session` reads them.
#[cfg(test)]
fn decode(input: &[u8]) -> Vec<Action> {
    let mut input = arbitrary::Unstructured::new(input);
    let _setup: u8 = input.arbitrary().unwrap();
    let mut actions = Vec::new();
    while !input.is_empty() {
        actions.push(input.arbitrary().unwrap());
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_decode_to_the_scripts_they_encode() {
        let scripts = [session(false), session(true)];
        for actions in scripts {
            assert_eq!(decode(&encode(PLAIN, &actions)), actions);
        }
        let raw = vec![
            Action::Raw {
                conn: 3,
                bytes: RawBytes(b"PING\r\n".to_vec()),
            },
            Action::Write { conn: 1, max: 513 },
            Action::Drain { worker: true },
            Action::Reset { conn: 2 },
            Action::Advance { millis: 9 },
            frame(2, Frame::Pong),
        ];
        assert_eq!(decode(&encode(RATE_REJECT, &raw)), raw);
    }
}
