//! `confidant proxy --upstream https://HOST:PORT --policy FILE --listen
//! 127.0.0.1:PORT`: a local plain-HTTP endpoint for unmodified OpenAI SDKs.
//! Every upstream connection is verified before use (fresh nonce, evidence
//! bound to that connection's TLS key, client policy); requests go only
//! over verified connections. When verification fails the proxy answers
//! 502 with the reason and forwards nothing.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};
use confidant_client::conn::{AttestedConnection, ClientBody, Target, open_verified};
use confidant_client::{ClientPolicy, Error};
use http_body_util::BodyExt;
use tokio::sync::Mutex;

/// Flags.
#[derive(clap::Args)]
pub struct ProxyArgs {
    /// The attested server, `https://HOST:PORT`.
    #[arg(long)]
    upstream: String,
    /// Client policy the server must satisfy.
    #[arg(long)]
    policy: PathBuf,
    /// Local address for applications (loopback only unless --allow-remote).
    #[arg(long, default_value = "127.0.0.1:8081")]
    listen: SocketAddr,
    /// Listen on a non-loopback address (anyone who reaches it uses the
    /// proxy's verified upstream).
    #[arg(long)]
    allow_remote: bool,
    /// Seconds allowed to connect and verify, and for response headers.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// Idle verified connections kept for reuse.
    #[arg(long, default_value_t = 16)]
    max_idle: usize,
}

struct Proxy {
    target: Target,
    policy: ClientPolicy,
    timeout: Duration,
    max_idle: usize,
    idle: Mutex<Vec<AttestedConnection>>,
}

/// Hop-by-hop headers never forwarded (RFC 9110 7.6.1), and `host`.
const HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
];

fn bad_gateway(message: String) -> Response {
    let body = serde_json::json!({"error": {
        "message": message,
        "type": "attestation_error",
        "param": null,
        "code": "upstream_not_verified",
    }});
    (StatusCode::BAD_GATEWAY, axum::Json(body)).into_response()
}

impl Proxy {
    /// An idle verified connection, or a new one verified now.
    async fn connection(&self) -> Result<AttestedConnection, Error> {
        {
            let mut idle = self.idle.lock().await;
            while let Some(c) = idle.pop() {
                if c.sender.is_ready() {
                    return Ok(c);
                }
            }
        }
        let c = open_verified(&self.target, &self.policy, self.timeout).await?;
        tracing::info!(
            upstream = %self.target.authority(),
            tee = c.report.tee.as_deref().unwrap_or("?"),
            model_sha256 = %c.report.model.sha256,
            tls_spki_sha256 = %c.report.tls_spki_sha256,
            "upstream connection verified"
        );
        Ok(c)
    }

    /// Puts a connection back once its response is done.
    fn recycle(self: &Arc<Self>, mut c: AttestedConnection) {
        let me = self.clone();
        tokio::spawn(async move {
            if c.sender.ready().await.is_ok() {
                let mut idle = me.idle.lock().await;
                if idle.len() < me.max_idle {
                    idle.push(c);
                }
            }
        });
    }
}

async fn forward(State(p): State<Arc<Proxy>>, req: Request) -> Response {
    let mut conn = match p.connection().await {
        Ok(c) => c,
        Err(Error::Refused { report }) => {
            tracing::error!(reasons = ?report.failed_rules(), "upstream REFUSED; not forwarding");
            return bad_gateway(format!(
                "confidant proxy: the upstream server failed attestation, nothing was sent: {}",
                report.failed_rules().join("; ")
            ));
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot verify the upstream; not forwarding");
            return bad_gateway(format!(
                "confidant proxy: cannot verify the upstream server, nothing was sent: {e}"
            ));
        }
    };
    let (parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_owned();
    let mut up = hyper::Request::builder()
        .method(parts.method)
        .uri(path)
        .header(header::HOST, p.target.authority());
    for (k, v) in &parts.headers {
        if !HOP.contains(&k.as_str()) {
            up = up.header(k, v);
        }
    }
    let body: ClientBody = body
        .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
        .boxed_unsync();
    let up = match up.body(body) {
        Ok(r) => r,
        Err(e) => return bad_gateway(format!("confidant proxy: bad request: {e}")),
    };
    let sent = tokio::time::timeout(p.timeout, conn.sender.send_request(up)).await;
    let resp = match sent {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return bad_gateway(format!("confidant proxy: upstream failed: {e}")),
        Err(_) => return bad_gateway("confidant proxy: upstream timed out".into()),
    };
    p.recycle(conn);
    let (mut parts, body) = resp.into_parts();
    for h in HOP {
        parts.headers.remove(HeaderName::from_static(h));
    }
    Response::from_parts(parts, Body::new(body))
}

/// Runs the proxy until SIGINT or SIGTERM.
pub fn run(a: ProxyArgs) -> anyhow::Result<ExitCode> {
    let policy = ClientPolicy::load(&a.policy)?;
    let target = Target::parse(&a.upstream)?;
    anyhow::ensure!(
        a.listen.ip().is_loopback() || a.allow_remote,
        "--listen {} is not a loopback address (pass --allow-remote to mean it)",
        a.listen
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let proxy = Arc::new(Proxy {
            target,
            policy,
            timeout: Duration::from_secs(a.timeout.max(1)),
            max_idle: a.max_idle,
            idle: Mutex::new(Vec::new()),
        });
        // Verify once before accepting anything: the result is logged; a
        // failure does not stop the proxy (it keeps answering 502 and
        // verifies again on the next request).
        match proxy.connection().await {
            Ok(c) => {
                eprintln!("upstream verified:\n{}", c.report);
                proxy.idle.lock().await.push(c);
            }
            Err(Error::Refused { report }) => {
                eprintln!("upstream REFUSED (requests get 502):\n{report}");
            }
            Err(e) => eprintln!("cannot verify the upstream yet (requests get 502): {e}"),
        }
        let listener = tokio::net::TcpListener::bind(a.listen).await?;
        println!(
            "confidant proxy listening on http://{}",
            listener.local_addr()?
        );
        let app = Router::new().fallback(forward).with_state(proxy);
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await?;
        Ok(ExitCode::SUCCESS)
    })
}
