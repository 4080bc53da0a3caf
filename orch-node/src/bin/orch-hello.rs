//! `orch-hello`: a small HTTP server to run as a pod (the examples' and the tests' workload,
//! since the process runtime pulls no image). It listens on `$PORT` (8080) of every address
//! and answers
//! - `/` with `hello from <$HOSTNAME>`;
//! - `/healthz` with 200, or 500 while the file `$UNHEALTHY_FILE` exists (for liveness);
//! - `/ready` with 200, or 503 while the file `$UNREADY_FILE` exists (for readiness).
//!
//! SIGTERM ends it at once. `orch-hello get HOST:PORT [PATH]` is its client: it prints the
//! body of a GET and exits 0 on a 2xx answer (for tests that run in network namespaces).

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;

fn flagged(var: &str) -> bool {
    std::env::var_os(var).is_some_and(|f| Path::new(&f).exists())
}

fn answer(stream: TcpStream, host: &str) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    // The headers, up to the blank line (bounded: a request is small).
    let mut header = String::new();
    for _ in 0..100 {
        header.clear();
        if reader.read_line(&mut header)? == 0 || header == "\r\n" || header == "\n" {
            break;
        }
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/");
    let (code, body) = match path {
        "/healthz" if flagged("UNHEALTHY_FILE") => (500, "unhealthy\n".to_owned()),
        "/healthz" => (200, "ok\n".to_owned()),
        "/ready" if flagged("UNREADY_FILE") => (503, "not ready\n".to_owned()),
        "/ready" => (200, "ready\n".to_owned()),
        _ => (200, format!("hello from {host}\n")),
    };
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {code} X\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// `get HOST:PORT [PATH]`: the body of a GET on standard output; exit 0 on a 2xx answer.
fn get(addr: &str, path: &str) -> std::io::Result<bool> {
    use std::io::Read;
    let addr: std::net::SocketAddr =
        addr.parse().map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{addr}: {e}")))?;
    let mut s = TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(5))?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut text = String::new();
    s.take(1 << 20).read_to_string(&mut text)?;
    let ok = text.split_whitespace().nth(1).is_some_and(|c| c.starts_with('2'));
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    std::io::stdout().write_all(body.as_bytes())?;
    Ok(ok)
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("get") {
        let addr = args.get(1).map_or("127.0.0.1:8080", String::as_str);
        let ok = get(addr, args.get(2).map_or("/", String::as_str))?;
        std::process::exit(if ok { 0 } else { 1 });
    }
    let port: u16 = std::env::var("PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(8080);
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "orch-hello".to_owned());
    let listener = TcpListener::bind(("0.0.0.0", port))?;
    eprintln!("orch-hello listening on port {port}");
    for stream in listener.incoming().flatten() {
        let host = host.clone();
        std::thread::spawn(move || {
            let _ = answer(stream, &host);
        });
    }
    Ok(())
}
