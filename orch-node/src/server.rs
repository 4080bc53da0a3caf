//! The agent's own endpoint (the kubelet's port 10250), which `orchctl logs` and `orchctl exec`
//! reach directly: the agent registers it in its Node's `orch.dev/agent-endpoint` annotation
//! (until `status.daemonEndpoints` joins the model). Plain HTTP/1.1, one request per
//! connection, **unauthenticated** (as a kubelet with anonymous auth; authentication is on
//! the roadmap): bind it to an address only the cluster reaches.
//!
//! - `GET /containerLogs/<namespace>/<pod>/<container>?tailLines=N&follow=true&previous=true`:
//!   the run's output (the rotated files of the current run, or of the previous one), the last
//!   `N` lines; with `follow`, then what it writes until it ends or the client goes.
//! - `POST /exec/<namespace>/<pod>/<container>?command=A&command=B...`: runs the command in the
//!   pod's namespaces (no TTY, no stdin) within a minute; its output, and its exit code in the
//!   `X-Exit-Code` header.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::process::ProcessRuntime;
use crate::runtime::Runtime;

/// The Node annotation that holds the agent's endpoint (`host:port`).
pub const ENDPOINT_ANNOTATION: &str = "orch.dev/agent-endpoint";
/// The header every request must carry (any value; orchctl sends its name).
pub const CLIENT_HEADER: &str = "X-Orch-Client";
/// The most bytes of a request's head.
const HEAD_BYTES_MAX: usize = 16 << 10;
/// The most arguments of an exec.
const EXEC_ARGS_MAX: usize = 1_024;
/// How long an exec may run.
const EXEC_TIMEOUT: Duration = Duration::from_secs(60);
/// How often a followed log is looked at.
const FOLLOW_EVERY: Duration = Duration::from_millis(200);

/// Serves the endpoint on `listener` for ever.
pub async fn serve(listener: TcpListener, runtime: Arc<ProcessRuntime>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let runtime = Arc::clone(&runtime);
        tokio::spawn(async move {
            if let Err(e) = handle(stream, &runtime).await {
                tracing::debug!(error = %e, "an agent endpoint request failed");
            }
        });
    }
}

/// `%XX` and `+` decoded.
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"), 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn respond(stream: &mut TcpStream, code: u16, headers: &str, body: &[u8]) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {code} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n{headers}\r\n",
        if code == 200 { "OK" } else { "Error" },
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await
}

async fn handle(mut stream: TcpStream, runtime: &ProcessRuntime) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > HEAD_BYTES_MAX {
            return respond(&mut stream, 400, "", b"request head too long\n").await;
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut words = head.split_whitespace();
    let (method, target) = (words.next().unwrap_or_default(), words.next().unwrap_or_default());
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let params: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect();
    let param = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let parts: Vec<String> = path.trim_start_matches('/').split('/').map(decode).collect();
    let (kind, ns, pod, container) = match parts.as_slice() {
        [kind, ns, pod, container] => (kind.as_str(), ns.as_str(), pod.as_str(), container.as_str()),
        _ => {
            return respond(
                &mut stream,
                404,
                "",
                b"not found: /containerLogs/NS/POD/CONTAINER or /exec/NS/POD/CONTAINER\n",
            )
            .await;
        }
    };
    // A custom header: a browser cannot send one to another origin without asking first, so a
    // web page cannot make a visitor's browser post an exec here.
    if !head.lines().any(|l| l.to_ascii_lowercase().starts_with(&format!("{}:", CLIENT_HEADER.to_ascii_lowercase()))) {
        return respond(&mut stream, 403, "", format!("the {CLIENT_HEADER} header is required\n").as_bytes()).await;
    }
    let Some((uid, dir)) = runtime.find(ns, pod) else {
        return respond(&mut stream, 404, "", format!("pod {ns}/{pod} does not run on this node\n").as_bytes()).await;
    };
    // Only a container of the pod's spec: the name becomes part of a path.
    if !runtime.has_container(uid, container) {
        return respond(
            &mut stream,
            404,
            "",
            format!("container {container:?} is not valid for pod {ns}/{pod}\n").as_bytes(),
        )
        .await;
    }
    match (method, kind) {
        ("GET", "containerLogs") => {
            let previous = param("previous").is_some_and(|v| v == "true" || v == "1");
            let follow = param("follow").is_some_and(|v| v == "true" || v == "1");
            let tail = param("tailLines").and_then(|v| v.parse::<usize>().ok());
            logs(&mut stream, runtime, uid, &dir, container, previous, follow, tail).await
        }
        ("POST", "exec") => {
            let argv: Vec<String> =
                params.iter().filter(|(k, _)| k == "command").map(|(_, v)| v.clone()).take(EXEC_ARGS_MAX).collect();
            if argv.is_empty() {
                return respond(&mut stream, 400, "", b"no command\n").await;
            }
            match runtime.exec(uid, container, argv, EXEC_TIMEOUT).await {
                Ok((code, output)) => respond(&mut stream, 200, &format!("X-Exit-Code: {code}\r\n"), &output).await,
                Err(e) => respond(&mut stream, 500, "", format!("{e}\n").as_bytes()).await,
            }
        }
        _ => respond(&mut stream, 405, "", b"GET containerLogs or POST exec\n").await,
    }
}

/// The log files of a container's runs, by run number.
fn runs(dir: &Path, container: &str) -> Vec<(u32, PathBuf)> {
    let mut runs: Vec<(u32, PathBuf)> = std::fs::read_dir(dir.join("logs").join(container))
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let n = name.strip_suffix(".log")?.parse().ok()?;
                    Some((n, e.path()))
                })
                .collect()
        })
        .unwrap_or_default();
    runs.sort();
    runs
}

/// A run's whole log: its rotated files, oldest first, then the current one.
fn read_all(path: &Path) -> Vec<u8> {
    let mut rotated: Vec<(u32, PathBuf)> = std::fs::read_dir(path.parent().unwrap_or(Path::new("/")))
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let base = path.file_name()?.to_string_lossy().into_owned();
                    let n = name.strip_prefix(&format!("{base}."))?.parse().ok()?;
                    Some((n, e.path()))
                })
                .collect()
        })
        .unwrap_or_default();
    rotated.sort();
    let mut all = Vec::new();
    for (_, p) in rotated.iter().rev() {
        all.extend(std::fs::read(p).unwrap_or_default());
    }
    all.extend(std::fs::read(path).unwrap_or_default());
    all
}

/// The last `n` lines of `text`.
fn tail(text: &[u8], n: usize) -> &[u8] {
    if n == 0 {
        return &[];
    }
    let trimmed = text.strip_suffix(b"\n").unwrap_or(text);
    let start = trimmed.iter().enumerate().rev().filter(|(_, b)| **b == b'\n').nth(n - 1).map_or(0, |(i, _)| i + 1);
    &text[start..]
}

#[allow(clippy::too_many_arguments)]
async fn logs(
    stream: &mut TcpStream,
    runtime: &ProcessRuntime,
    uid: orch_core::ids::Uid,
    dir: &Path,
    container: &str,
    previous: bool,
    follow: bool,
    lines: Option<usize>,
) -> std::io::Result<()> {
    let runs = runs(dir, container);
    // The previous run is the one before the newest, unless the newest has ended (the
    // container waits to restart): then it is the newest, as the kubelet's lastState.
    let newest_live = match runs.last() {
        Some((n, _)) => runtime.run_live(uid, container, *n).await,
        None => false,
    };
    let pick = match (previous, newest_live) {
        (true, true) => runs.len().checked_sub(2),
        _ => runs.len().checked_sub(1),
    };
    let Some((attempt, path)) = pick.and_then(|i| runs.get(i)).cloned() else {
        let what = if previous { "previous terminated container" } else { "container" };
        return respond(stream, 400, "", format!("{what} {container:?} in pod {uid} not found\n").as_bytes()).await;
    };
    let all = read_all(&path);
    let first = lines.map_or(&all[..], |n| tail(&all, n));
    if !follow || previous {
        return respond(stream, 200, "", first).await;
    }
    // Streamed: no length; the connection's end is the log's.
    stream
        .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n")
        .await?;
    stream.write_all(first).await?;
    let mut offset = std::fs::metadata(&path).map_or(0, |m| m.len());
    loop {
        tokio::time::sleep(FOLLOW_EVERY).await;
        let len = match std::fs::metadata(&path) {
            Ok(m) => m.len(),
            Err(_) => return Ok(()),
        };
        if len < offset {
            // Rotated: the new file from its start.
            offset = 0;
        }
        if len > offset {
            let mut f = tokio::fs::File::open(&path).await?;
            tokio::io::AsyncSeekExt::seek(&mut f, std::io::SeekFrom::Start(offset)).await?;
            let mut chunk = Vec::new();
            (&mut f).take(len - offset).read_to_end(&mut chunk).await?;
            stream.write_all(&chunk).await?;
            offset = len;
        }
        // Done once the run ended (and what it wrote was sent), or a newer run began.
        if !runtime.run_live(uid, container, attempt).await && std::fs::metadata(&path).map_or(0, |m| m.len()) == offset
        {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails_and_decoding() {
        assert_eq!(tail(b"a\nb\nc\n", 2), b"b\nc\n");
        assert_eq!(tail(b"a\nb\nc", 5), b"a\nb\nc");
        assert_eq!(tail(b"a\nb\n", 0), b"");
        assert_eq!(decode("sh+-c%20%27echo%20hi%27"), "sh -c 'echo hi'");
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%zz"), "%zz");
    }
}
