//! The client end of blipmqd's Unix control socket: one JSON object per
//! line each way (see `blipmq_dataplane::control`).

use std::fmt;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use blipmq_dataplane::control::socket::{default_socket_path, SOCKET_ENV};
use serde_json::{Map, Value};

/// Bound on connecting, sending a request and waiting for its reply.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The socket to use: `--socket`, else `$BLIPMQ_SOCKET`, else the broker's
/// default ("auto") path.
pub fn resolve_socket_path(flag: Option<PathBuf>) -> PathBuf {
    flag.or_else(|| {
        std::env::var_os(SOCKET_ENV)
            .filter(|value| !value.is_empty())
            .map(PathBuf::from)
    })
    .unwrap_or_else(default_socket_path)
}

/// Why a command over the socket failed; the `Display` is what operators see.
#[derive(Debug)]
pub enum ClientError {
    NotRunning(PathBuf),
    NobodyListening(PathBuf),
    PermissionDenied(PathBuf),
    TimedOut(PathBuf),
    Io(PathBuf, io::Error),
    /// The broker closed the connection or answered something that is not
    /// a reply object.
    BadReply(String),
    /// The broker answered `"ok": false` with this error.
    Refused(String),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::NotRunning(path) => write!(
                f,
                "blipmqd is not running (no control socket at {}); start it or pass --socket",
                path.display()
            ),
            ClientError::NobodyListening(path) => write!(
                f,
                "no blipmqd is listening on {} (stale socket?)",
                path.display()
            ),
            ClientError::PermissionDenied(path) => write!(
                f,
                "permission denied on {}: the socket is mode 0600, run as the broker's user",
                path.display()
            ),
            ClientError::TimedOut(path) => write!(
                f,
                "blipmqd did not answer on {} within {}s",
                path.display(),
                TIMEOUT.as_secs()
            ),
            ClientError::Io(path, error) => write!(f, "control socket {}: {error}", path.display()),
            ClientError::BadReply(message) | ClientError::Refused(message) => f.write_str(message),
        }
    }
}

impl ClientError {
    fn from_io(path: &Path, error: io::Error) -> ClientError {
        let path = path.to_path_buf();
        match error.kind() {
            io::ErrorKind::NotFound => ClientError::NotRunning(path),
            io::ErrorKind::ConnectionRefused => ClientError::NobodyListening(path),
            io::ErrorKind::PermissionDenied => ClientError::PermissionDenied(path),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ClientError::TimedOut(path),
            _ => ClientError::Io(path, error),
        }
    }
}

/// A connection to the control socket; requests are answered in order.
pub struct ControlClient {
    path: PathBuf,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl ControlClient {
    pub fn connect(path: &Path) -> Result<ControlClient, ClientError> {
        let stream = connect_with_timeout(path)?;
        let setup = |stream: &UnixStream| -> io::Result<UnixStream> {
            stream.set_read_timeout(Some(TIMEOUT))?;
            stream.set_write_timeout(Some(TIMEOUT))?;
            stream.try_clone()
        };
        let writer = setup(&stream).map_err(|error| ClientError::from_io(path, error))?;
        Ok(ControlClient {
            path: path.to_path_buf(),
            reader: BufReader::new(stream),
            writer,
        })
    }

    /// Sends `request` and returns the reply's fields without `"ok"`.
    pub fn request(&mut self, request: &Value) -> Result<Map<String, Value>, ClientError> {
        let io_error = |error| ClientError::from_io(&self.path, error);
        let mut line = request.to_string();
        line.push('\n');
        self.writer.write_all(line.as_bytes()).map_err(io_error)?;
        let mut reply = String::new();
        if self.reader.read_line(&mut reply).map_err(io_error)? == 0 {
            return Err(ClientError::BadReply(format!(
                "blipmqd closed the control connection on {} without answering",
                self.path.display()
            )));
        }
        parse_reply(&reply)
    }

    /// A request that is only a command name, such as `status`.
    pub fn command(&mut self, cmd: &str) -> Result<Map<String, Value>, ClientError> {
        self.request(&serde_json::json!({ "cmd": cmd }))
    }
}

/// One-shot convenience: connect, ask, disconnect.
pub fn ask(path: &Path, request: &Value) -> Result<Map<String, Value>, ClientError> {
    ControlClient::connect(path)?.request(request)
}

/// Unix connect has no timeout in std; a full accept backlog would block,
/// so connect on a helper thread and stop waiting after [`TIMEOUT`].
fn connect_with_timeout(path: &Path) -> Result<UnixStream, ClientError> {
    let (done, result) = mpsc::channel();
    let target = path.to_path_buf();
    std::thread::Builder::new()
        .name("blipmqctl-connect".into())
        .spawn(move || {
            let _ = done.send(UnixStream::connect(&target));
        })
        .map_err(|error| ClientError::Io(path.to_path_buf(), error))?;
    match result.recv_timeout(TIMEOUT) {
        Ok(connected) => connected.map_err(|error| ClientError::from_io(path, error)),
        Err(_) => Err(ClientError::TimedOut(path.to_path_buf())),
    }
}

fn parse_reply(line: &str) -> Result<Map<String, Value>, ClientError> {
    let mut fields = match serde_json::from_str::<Value>(line) {
        Ok(Value::Object(fields)) => fields,
        Ok(_) | Err(_) => {
            return Err(ClientError::BadReply(format!(
                "blipmqd sent a reply that is not a JSON object: {:?}",
                line.trim_end()
            )))
        }
    };
    match fields.remove("ok") {
        Some(Value::Bool(true)) => Ok(fields),
        _ => Err(ClientError::Refused(
            fields
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("blipmqd refused the command without saying why")
                .to_owned(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_lose_ok_and_errors_carry_the_message() {
        let fields = parse_reply("{\"ok\":true,\"kicked\":3}\n").unwrap();
        assert_eq!(Value::Object(fields), serde_json::json!({"kicked": 3}));
        match parse_reply("{\"ok\":false,\"error\":\"no open connection with id 9\"}") {
            Err(ClientError::Refused(message)) => {
                assert_eq!(message, "no open connection with id 9")
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(parse_reply("[1]"), Err(ClientError::BadReply(_))));
    }

    #[test]
    fn connect_errors_are_explained() {
        let path = Path::new("/run/x.sock");
        let message = |kind: io::ErrorKind| ClientError::from_io(path, kind.into()).to_string();
        assert_eq!(
            message(io::ErrorKind::NotFound),
            "blipmqd is not running (no control socket at /run/x.sock); start it or pass --socket"
        );
        assert_eq!(
            message(io::ErrorKind::ConnectionRefused),
            "no blipmqd is listening on /run/x.sock (stale socket?)"
        );
        assert_eq!(
            message(io::ErrorKind::PermissionDenied),
            "permission denied on /run/x.sock: the socket is mode 0600, run as the broker's user"
        );
        assert!(message(io::ErrorKind::WouldBlock).contains("did not answer"));
    }

    #[test]
    fn the_flag_wins() {
        let flag = PathBuf::from("/tmp/flag.sock");
        assert_eq!(resolve_socket_path(Some(flag.clone())), flag);
    }
}
