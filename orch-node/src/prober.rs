//! Probe tries, as the kubelet makes them: `tcpSocket` and `httpGet` from the node to the
//! pod's address (a status in 200..400 is success, redirects not followed), `exec` inside the
//! pod's namespaces through the runtime. Each within its timeout.

use std::time::Duration;

use orch_core::core_v1::{Container, Probe};
use orch_core::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The most bytes of an HTTP probe's response read (the kubelet reads 10 KiB of the body).
const RESPONSE_BYTES_MAX: usize = 10 << 10;

/// The port a probe names: a number, or the name of one of the container's ports.
///
/// # Errors
/// A name no port of the container has, or a number out of range.
pub fn port(port: &IntOrString, container: &Container) -> Result<u16, String> {
    match port {
        IntOrString::Int(p) => {
            u16::try_from(*p).ok().filter(|p| *p > 0).ok_or_else(|| format!("port {p} is out of range"))
        }
        IntOrString::Str(name) => container
            .ports
            .iter()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .ok_or_else(|| format!("the container has no port named {name:?}")),
    }
}

/// A TCP or HTTP try of `probe` against `host` (the probe's own `host` wins); `Ok` for
/// success, the reason otherwise. `exec` probes are the runtime's.
///
/// # Errors
/// The try failed, with why.
pub async fn network(probe: &Probe, container: &Container, host: &str, timeout: Duration) -> Result<(), String> {
    let attempt = async {
        if let Some(tcp) = &probe.tcp_socket {
            let port = port(&tcp.port, container)?;
            let host = tcp.host.as_deref().unwrap_or(host);
            tokio::net::TcpStream::connect((host, port)).await.map_err(|e| format!("dial tcp {host}:{port}: {e}"))?;
            return Ok(());
        }
        if let Some(http) = &probe.http_get {
            if http.scheme.is_some_and(|s| s == orch_core::core_v1::UriScheme::Https) {
                return Err("HTTPS probes are not supported by this agent".to_owned());
            }
            let port = port(&http.port, container)?;
            let host = http.host.as_deref().unwrap_or(host);
            let path = http.path.as_deref().unwrap_or("/");
            let mut stream = tokio::net::TcpStream::connect((host, port))
                .await
                .map_err(|e| format!("Get \"http://{host}:{port}{path}\": dial tcp {host}:{port}: {e}"))?;
            let mut request = format!(
                "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: orch-probe/1.0\r\nAccept: */*\r\nConnection: close\r\n"
            );
            for h in &http.http_headers {
                request.push_str(&format!("{}: {}\r\n", h.name, h.value));
            }
            request.push_str("\r\n");
            stream.write_all(request.as_bytes()).await.map_err(|e| format!("writing the request: {e}"))?;
            let mut buf = Vec::with_capacity(1024);
            let mut chunk = [0u8; 1024];
            // The status line is enough.
            while !buf.windows(2).any(|w| w == b"\r\n") && buf.len() < RESPONSE_BYTES_MAX {
                let n = stream.read(&mut chunk).await.map_err(|e| format!("reading the response: {e}"))?;
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let line = String::from_utf8_lossy(&buf);
            let code: u16 = line
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| "the response is not HTTP".to_owned())?;
            return if (200..400).contains(&code) {
                Ok(())
            } else {
                Err(format!("HTTP probe failed with statuscode: {code}"))
            };
        }
        Err("the probe has no tcpSocket or httpGet handler".to_owned())
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(format!("timeout after {}s", timeout.as_secs_f64())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orch_core::core_v1::{ContainerPort, HttpGetAction, TcpSocketAction};

    fn container() -> Container {
        Container {
            ports: vec![ContainerPort { name: Some("http".into()), container_port: 8080, ..ContainerPort::default() }],
            ..Container::default()
        }
    }

    #[test]
    fn ports_are_numbers_or_the_containers_port_names() {
        assert_eq!(port(&IntOrString::Int(80), &container()), Ok(80));
        assert_eq!(port(&IntOrString::Str("http".into()), &container()), Ok(8080));
        assert!(port(&IntOrString::Str("nope".into()), &container()).is_err());
        assert!(port(&IntOrString::Int(70_000), &container()).is_err());
    }

    #[tokio::test]
    async fn tcp_and_http_tries_succeed_and_fail_as_the_kubelets() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let addr = listener.local_addr().expect("addr");
        let codes = [200u16, 503, 302];
        tokio::spawn(async move {
            for code in codes {
                let (mut s, _) = listener.accept().await.expect("accepts");
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(format!("HTTP/1.1 {code} X\r\nContent-Length: 0\r\n\r\n").as_bytes()).await;
            }
        });
        let t = Duration::from_secs(5);
        let http = |port: i32| Probe {
            http_get: Some(HttpGetAction {
                port: IntOrString::Int(port),
                path: Some("/healthz".into()),
                ..HttpGetAction::default()
            }),
            ..Probe::default()
        };
        let port = i32::from(addr.port());
        assert_eq!(network(&http(port), &container(), "127.0.0.1", t).await, Ok(()));
        let e = network(&http(port), &container(), "127.0.0.1", t).await.expect_err("503");
        assert!(e.contains("503"), "{e}");
        assert_eq!(network(&http(port), &container(), "127.0.0.1", t).await, Ok(()));
        // A port something listens on, then one nothing does.
        let open = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let tcp = |port: u16| Probe {
            tcp_socket: Some(TcpSocketAction { port: IntOrString::Int(i32::from(port)), host: None }),
            ..Probe::default()
        };
        let open_port = open.local_addr().expect("addr").port();
        assert_eq!(network(&tcp(open_port), &container(), "127.0.0.1", t).await, Ok(()));
        drop(open);
        assert!(network(&tcp(open_port), &container(), "127.0.0.1", t).await.is_err());
    }
}
