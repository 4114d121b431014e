//! A PostgreSQL server that speaks just enough of the protocol to see what a client sends:
//! whether it asks for TLS or GSSAPI encryption (answered 'N'), its startup parameters and
//! its password (asked for in clear text, then refused as a wrong password). It listens on
//! 127.0.0.1 and 127.0.0.2 at one port, on a socket in a folder of its own, and, where it
//! may, on a socket where psql looks when no host is given.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const SSL_REQUEST: i32 = 80_877_103;
const GSSENC_REQUEST: i32 = 80_877_104;
const PROTOCOL_3: i32 = 196_608;

/// What one connection brought.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// Which listener took it: `127.0.0.1`, `127.0.0.2`, `socket` or `default socket`.
    pub listener: &'static str,
    pub asked_tls: bool,
    pub asked_gss: bool,
    /// The startup parameters; empty when the client went away before sending them.
    pub params: BTreeMap<String, String>,
    pub password: Option<String>,
}

/// The connections seen so far, and how many are still being read.
#[derive(Default)]
struct Log {
    attempts: Vec<Attempt>,
    open: usize,
}

pub struct FakeServer {
    pub port: u16,
    /// The folder holding this server's own socket.
    pub socket_dir: PathBuf,
    /// The socket where psql looks by default, when this server could listen there.
    pub default_socket: Option<PathBuf>,
    log: Arc<Mutex<Log>>,
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        if let Some(path) = &self.default_socket {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl FakeServer {
    /// Listens in `socket_dir` and, if given, in `default_dir` too.
    pub async fn start(socket_dir: &Path, default_dir: Option<&Path>) -> FakeServer {
        let log = Arc::new(Mutex::new(Log::default()));
        let first = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = first.local_addr().unwrap().port();
        let second = tokio::net::TcpListener::bind(("127.0.0.2", port))
            .await
            .expect("127.0.0.2 is a loopback address on Linux");
        for (listener, name) in [(first, "127.0.0.1"), (second, "127.0.0.2")] {
            let log = log.clone();
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    log.lock().unwrap().open += 1;
                    tokio::spawn(record(stream, name, log.clone()));
                }
            });
        }
        let socket = |dir: &Path| dir.join(format!(".s.PGSQL.{port}"));
        listen_on_socket(&socket(socket_dir), "socket", &log).expect("a socket in a temp folder");
        let default_socket = default_dir
            .map(socket)
            .filter(|path| listen_on_socket(path, "default socket", &log).is_ok());
        FakeServer {
            port,
            socket_dir: socket_dir.to_path_buf(),
            default_socket,
            log,
        }
    }

    /// The connections since the last call, once every one of them has been read to its end
    /// (the client has exited, so each ends at once).
    pub async fn take(&self) -> Vec<Attempt> {
        crate::common::poll("the fake server to read every connection", || async {
            let mut log = self.log.lock().unwrap();
            (log.open == 0).then(|| std::mem::take(&mut log.attempts))
        })
        .await
    }
}

fn listen_on_socket(path: &Path, name: &'static str, log: &Arc<Mutex<Log>>) -> std::io::Result<()> {
    let _ = std::fs::remove_file(path);
    let listener = tokio::net::UnixListener::bind(path)?;
    let log = log.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            log.lock().unwrap().open += 1;
            tokio::spawn(record(stream, name, log.clone()));
        }
    });
    Ok(())
}

/// Reads one connection to its end and logs what it brought. The connection was counted
/// open when accepted: every client waits for an answer, so none can exit uncounted.
async fn record<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    listener: &'static str,
    log: Arc<Mutex<Log>>,
) {
    let mut attempt = Attempt {
        listener,
        asked_tls: false,
        asked_gss: false,
        params: BTreeMap::new(),
        password: None,
    };
    let _ = converse(&mut stream, &mut attempt).await;
    let mut log = log.lock().unwrap();
    log.open -= 1;
    log.attempts.push(attempt);
}

/// The server's side, up to refusing the password; an error is the client going away.
async fn converse<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    attempt: &mut Attempt,
) -> std::io::Result<()> {
    loop {
        let len = stream.read_i32().await?;
        let code = stream.read_i32().await?;
        let mut body = vec![0; usize::try_from(len - 8).unwrap_or(0)];
        stream.read_exact(&mut body).await?;
        match code {
            SSL_REQUEST => attempt.asked_tls = true,
            GSSENC_REQUEST => attempt.asked_gss = true,
            PROTOCOL_3 => {
                attempt.params = startup_params(&body);
                break;
            }
            _ => return Ok(()),
        }
        stream.write_all(b"N").await?;
    }
    // AuthenticationCleartextPassword.
    stream.write_all(&[b'R', 0, 0, 0, 8, 0, 0, 0, 3]).await?;
    if stream.read_u8().await? != b'p' {
        return Ok(());
    }
    let len = stream.read_i32().await?;
    let mut password = vec![0; usize::try_from(len - 4).unwrap_or(0)];
    stream.read_exact(&mut password).await?;
    let password = password.strip_suffix(&[0]).unwrap_or(&password);
    attempt.password = Some(String::from_utf8_lossy(password).into_owned());
    let mut fields = Vec::new();
    for (code, text) in [
        (b'S', "FATAL"),
        (b'V', "FATAL"),
        (b'C', "28P01"),
        (b'M', "password authentication failed (a recording server)"),
    ] {
        fields.push(code);
        fields.extend_from_slice(text.as_bytes());
        fields.push(0);
    }
    fields.push(0);
    let mut message = vec![b'E'];
    message.extend_from_slice(&(fields.len() as i32 + 4).to_be_bytes());
    message.extend_from_slice(&fields);
    stream.write_all(&message).await?;
    stream.flush().await?;
    // Wait for the client to hang up.
    let _ = stream.read_u8().await;
    Ok(())
}

/// `name\0value\0…\0`.
fn startup_params(body: &[u8]) -> BTreeMap<String, String> {
    let mut parts = body
        .split(|b| *b == 0)
        .map(|s| String::from_utf8_lossy(s).into_owned());
    let mut params = BTreeMap::new();
    while let (Some(name), Some(value)) = (parts.next(), parts.next()) {
        if name.is_empty() {
            break;
        }
        params.insert(name, value);
    }
    params
}
