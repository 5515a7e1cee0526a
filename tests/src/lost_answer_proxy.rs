//! An HTTP/1.1 proxy in front of dynalite that loses the answers of some writes after they
//! applied, as a DynamoDB answer lost on the network looks to its client: the write is in the
//! table, and the client sees a retryable failure and sends the same request again.
//!
//! Every request and answer is forwarded byte for byte, several per connection (keep-alive),
//! bodies framed by `Content-Length` or `Transfer-Encoding: chunked` (the AWS SDK sends its JSON
//! with a length; dynalite answers with a length, and its "request too large" answer chunked).
//! Of the writes (`X-Amz-Target` one of [`WRITE_OPERATIONS`]) that dynalite answers with 200 —
//! applied — every `every`-th one (counted over all connections, so deterministic for a given
//! order of writes) has its answer discarded once read in full, and the client gets DynamoDB's
//! `InternalServerError` (HTTP 500) instead, which the SDK's standard retry mode retries.
//! Answers that refused a write (a failed condition) are never lost: nothing applied.
//!
//! The upstream is dialled per client connection, so a dynalite restarted on the same port is
//! found again; a failed dial, a broken upstream connection or an answer not read within
//! [`UPSTREAM_ANSWER`] closes the client's connection (what a client of a dead server sees), and
//! an upstream that closes an idle connection (node's keep-alive timeout) closes the client's
//! too, so a client never writes into a connection nobody will answer.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

/// The DynamoDB operations that write (`X-Amz-Target: DynamoDB_20120810.<operation>`).
pub const WRITE_OPERATIONS: [&str; 5] = ["UpdateItem", "PutItem", "DeleteItem", "TransactWriteItems", "BatchWriteItem"];

/// What a lost answer is replaced with: DynamoDB's own retryable server error.
pub const LOST_ANSWER_BODY: &str =
    r#"{"__type":"com.amazonaws.dynamodb.v20120810#InternalServerError","message":"answer lost (injected)"}"#;

/// Longer than any attempt the workers allow themselves (`WORLDLAND_AWS_ATTEMPT_TIMEOUT_MS`), so
/// only a server that stopped answering meets it.
pub const UPSTREAM_ANSWER: Duration = Duration::from_secs(10);
const UPSTREAM_DIAL: Duration = Duration::from_secs(2);
/// A head longer than this is not HTTP from the SDK or dynalite: the connection is dropped.
const MAX_HEAD: usize = 64 * 1024;

pub struct LostAnswerProxy {
    port: u16,
    shared: Arc<Shared>,
}

struct Shared {
    upstream: String,
    /// Lose the answer of every `every`-th applied write; 0 loses none.
    every: AtomicU64,
    /// Writes dynalite answered "applied" (HTTP 200), lost or not.
    applied: AtomicU64,
    requests: AtomicU64,
    connections: AtomicU64,
    /// Answers lost so far, by operation and by table.
    lost: Mutex<BTreeMap<String, u64>>,
    lost_by_table: Mutex<BTreeMap<String, u64>>,
    /// The accept loop and the connections' tasks, ended when the proxy is dropped.
    tasks: Mutex<Vec<AbortHandle>>,
}

impl LostAnswerProxy {
    /// A proxy on a spare port of 127.0.0.1 to `upstream` (`host:port`) that loses the answer of
    /// every `every`-th applied write (0: none).
    pub async fn start(upstream: &str, every: u64) -> Self {
        // Port 0: a spare port chosen by the kernel as the listener binds it (no race).
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port for the proxy");
        let port = listener.local_addr().expect("its address").port();
        let shared = Arc::new(Shared {
            upstream: upstream.to_string(),
            every: AtomicU64::new(every),
            applied: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            lost: Mutex::new(BTreeMap::new()),
            lost_by_table: Mutex::new(BTreeMap::new()),
            tasks: Mutex::new(vec![]),
        });
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        shared.tasks.lock().unwrap().push(accept.abort_handle());
        Self { port, shared }
    }

    /// `http://127.0.0.1:<port>`, for `WORLDLAND_DYNAMODB_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// From now on, lose the answer of every `every`-th applied write (0: none).
    pub fn set_every(&self, every: u64) {
        self.shared.every.store(every, Ordering::SeqCst);
    }

    /// Answers lost so far, by operation.
    pub fn lost(&self) -> BTreeMap<String, u64> {
        self.shared.lost.lock().unwrap().clone()
    }

    /// Answers lost so far, by the (first) table the write named.
    pub fn lost_by_table(&self) -> BTreeMap<String, u64> {
        self.shared.lost_by_table.lock().unwrap().clone()
    }

    pub fn lost_total(&self) -> u64 {
        self.lost().values().sum()
    }

    /// Writes dynalite answered "applied", their answers lost or not.
    pub fn applied_writes(&self) -> u64 {
        self.shared.applied.load(Ordering::SeqCst)
    }

    /// Requests read from clients so far.
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Client connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::SeqCst)
    }
}

impl Drop for LostAnswerProxy {
    fn drop(&mut self) {
        for task in self.shared.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    while let Ok((client, _)) = listener.accept().await {
        shared.connections.fetch_add(1, Ordering::SeqCst);
        let task = tokio::spawn(serve(client, shared.clone()));
        let mut tasks = shared.tasks.lock().unwrap();
        // A long run accepts many connections: forget those already ended.
        tasks.retain(|t| !t.is_finished());
        tasks.push(task.abort_handle());
    }
}

/// The upstream side of one client connection.
struct Upstream {
    from: Reader<OwnedReadHalf>,
    to: OwnedWriteHalf,
}

/// Forwards one client connection's requests, one at a time, over one upstream connection.
/// Returning closes both.
async fn serve(client: TcpStream, shared: Arc<Shared>) {
    let (client_in, mut client_out) = client.into_split();
    let mut client_in = Reader::new(client_in);
    let mut upstream: Option<Upstream> = None;
    loop {
        if client_in.buf.is_empty() {
            // Idle between requests: a closing upstream ends the client's connection too.
            let more = match upstream.as_mut() {
                Some(up) => tokio::select! {
                    more = client_in.fill() => more,
                    _ = up.from.fill() => return,
                },
                None => client_in.fill().await,
            };
            if !matches!(more, Ok(true)) {
                return;
            }
        }
        let Ok(request) = client_in.message(Side::Request).await else {
            return;
        };
        shared.requests.fetch_add(1, Ordering::SeqCst);
        if upstream.is_none() {
            let Ok(Ok(s)) = tokio::time::timeout(UPSTREAM_DIAL, TcpStream::connect(&shared.upstream)).await else {
                return;
            };
            let (from, to) = s.into_split();
            upstream = Some(Upstream {
                from: Reader::new(from),
                to,
            });
        }
        let Some(up) = upstream.as_mut() else { return };
        let Ok(Ok(answer)) = tokio::time::timeout(UPSTREAM_ANSWER, exchange(up, &request)).await else {
            return;
        };
        let reply = match shared.loses(&request, &answer) {
            Some(n) => lost_answer(n),
            None => answer.raw.clone(),
        };
        if client_out.write_all(&reply).await.is_err() || request.closes || answer.closes {
            return;
        }
    }
}

async fn exchange(up: &mut Upstream, request: &Message) -> std::io::Result<Message> {
    up.to.write_all(&request.raw).await?;
    up.from.message(Side::Answer).await
}

impl Shared {
    /// Whether `answer` to `request` is to be lost: `Some(its number among the lost)`.
    fn loses(&self, request: &Message, answer: &Message) -> Option<u64> {
        let op = request.operation.as_deref().filter(|op| WRITE_OPERATIONS.contains(op))?;
        if answer.status != Some(200) {
            return None;
        }
        let n = self.applied.fetch_add(1, Ordering::SeqCst) + 1;
        let every = self.every.load(Ordering::SeqCst);
        if every == 0 || !n.is_multiple_of(every) {
            return None;
        }
        let table = table_named(&request.raw).unwrap_or_else(|| "?".into());
        *self.lost_by_table.lock().unwrap().entry(table).or_default() += 1;
        let mut lost = self.lost.lock().unwrap();
        *lost.entry(op.to_string()).or_default() += 1;
        Some(lost.values().sum())
    }
}

/// The first `"TableName":"…"` in a request (the SDK writes its JSON without spaces), for the
/// figures only.
fn table_named(raw: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(raw);
    let (_, rest) = text.split_once(r#""TableName":""#)?;
    rest.split('"').next().map(str::to_string)
}

fn lost_answer(n: u64) -> Vec<u8> {
    format!(
        "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/x-amz-json-1.0\r\n\
         x-amzn-RequestId: lost-answer-{n}\r\nContent-Length: {}\r\n\r\n{LOST_ANSWER_BODY}",
        LOST_ANSWER_BODY.len()
    )
    .into_bytes()
}

// ---------- just enough HTTP/1.1 to find where each message ends ----------

#[derive(Clone, Copy, PartialEq)]
enum Side {
    Request,
    Answer,
}

/// One whole message as read, and what the proxy needs to know of it.
struct Message {
    raw: Vec<u8>,
    /// An answer's status code.
    status: Option<u16>,
    /// A request's DynamoDB operation (`X-Amz-Target` after its last dot).
    operation: Option<String>,
    /// The connection ends after this message (`Connection: close`, or a body ended by closing).
    closes: bool,
}

enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

/// A read half and the bytes read from it that no message has taken yet.
struct Reader<R> {
    io: R,
    buf: Vec<u8>,
}

impl<R: AsyncRead + Unpin> Reader<R> {
    fn new(io: R) -> Self {
        Self { io, buf: vec![] }
    }

    /// Reads more into the buffer; false at the end of the stream. Cancel-safe (one read).
    async fn fill(&mut self) -> std::io::Result<bool> {
        self.buf.reserve(16 * 1024);
        Ok(self.io.read_buf(&mut self.buf).await? > 0)
    }

    async fn fill_or_eof_error(&mut self) -> std::io::Result<()> {
        if self.fill().await? {
            Ok(())
        } else {
            Err(std::io::ErrorKind::UnexpectedEof.into())
        }
    }

    /// Moves the first `n` buffered bytes (reading until there are that many) onto `out`.
    async fn take(&mut self, n: usize, out: &mut Vec<u8>) -> std::io::Result<()> {
        while self.buf.len() < n {
            self.fill_or_eof_error().await?;
        }
        out.extend(self.buf.drain(..n));
        Ok(())
    }

    /// Moves everything up to and including the next `delim` onto `out`; its length.
    async fn take_through(&mut self, delim: &[u8], out: &mut Vec<u8>) -> std::io::Result<usize> {
        loop {
            if let Some(at) = self.buf.windows(delim.len()).position(|w| w == delim) {
                let n = at + delim.len();
                self.take(n, out).await?;
                return Ok(n);
            }
            if self.buf.len() > MAX_HEAD {
                return Err(std::io::ErrorKind::InvalidData.into());
            }
            self.fill_or_eof_error().await?;
        }
    }

    /// The next whole message: its head and its body.
    async fn message(&mut self, side: Side) -> std::io::Result<Message> {
        let mut raw = vec![];
        self.take_through(b"\r\n\r\n", &mut raw).await?;
        let head = String::from_utf8_lossy(&raw).into_owned();
        let mut lines = head.split("\r\n");
        let first = lines.next().unwrap_or_default();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let header = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let status = (side == Side::Answer)
            .then(|| first.split(' ').nth(1).and_then(|s| s.parse::<u16>().ok()))
            .flatten();
        let chunked = header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        let length = header("content-length").and_then(|v| v.parse::<usize>().ok());
        let framing = match (side, status) {
            (Side::Answer, Some(s)) if s < 200 || s == 204 || s == 304 => Framing::Length(0),
            _ if chunked => Framing::Chunked,
            _ => match (length, side) {
                (Some(n), _) => Framing::Length(n),
                (None, Side::Request) => Framing::Length(0),
                (None, Side::Answer) => Framing::UntilClose,
            },
        };
        let closes = header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close")) || matches!(framing, Framing::UntilClose);
        let operation = header("x-amz-target").and_then(|t| t.rsplit('.').next()).map(str::to_string);
        self.body(framing, &mut raw).await?;
        Ok(Message {
            raw,
            status,
            operation,
            closes,
        })
    }

    async fn body(&mut self, framing: Framing, out: &mut Vec<u8>) -> std::io::Result<()> {
        match framing {
            Framing::Length(n) => self.take(n, out).await,
            Framing::UntilClose => {
                while self.fill().await? {}
                out.append(&mut self.buf);
                Ok(())
            }
            Framing::Chunked => loop {
                let start = out.len();
                self.take_through(b"\r\n", out).await?;
                let line = String::from_utf8_lossy(&out[start..out.len() - 2]).into_owned();
                let size = line.split(';').next().unwrap_or_default().trim();
                let size = usize::from_str_radix(size, 16).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidData))?;
                if size == 0 {
                    // Trailers, if any, then the blank line.
                    while self.take_through(b"\r\n", out).await? > 2 {}
                    return Ok(());
                }
                self.take(size + 2, out).await?;
            },
        }
    }
}
