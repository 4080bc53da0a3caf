//! Probe tries, as the kubelet makes them: `tcpSocket` and `httpGet` from the node to the
//! pod's address (a status in 200..400 is success, redirects not followed; `scheme: HTTPS`
//! over TLS without verifying the server's certificate, as the kubelet's
//! `InsecureSkipVerify`), `exec` inside the pod's namespaces through the runtime. Each within
//! its timeout.

use std::time::Duration;

use orch_core::core_v1::{Container, Probe};
use orch_core::intstr::IntOrString;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

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
            let https = http.scheme.is_some_and(|s| s == orch_core::core_v1::UriScheme::Https);
            let scheme = if https { "https" } else { "http" };
            let port = port(&http.port, container)?;
            let host = http.host.as_deref().unwrap_or(host);
            let path = http.path.as_deref().unwrap_or("/");
            let url = format!("{scheme}://{host}:{port}{path}");
            let tcp = tokio::net::TcpStream::connect((host, port))
                .await
                .map_err(|e| format!("Get \"{url}\": dial tcp {host}:{port}: {e}"))?;
            let mut request = format!(
                "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: orch-probe/1.0\r\nAccept: */*\r\nConnection: close\r\n"
            );
            for h in &http.http_headers {
                request.push_str(&format!("{}: {}\r\n", h.name, h.value));
            }
            request.push_str("\r\n");
            let code = if https {
                let name = rustls::pki_types::ServerName::try_from(host.to_owned())
                    .map_err(|e| format!("Get \"{url}\": {e}"))?;
                let mut stream =
                    tls::connector()?.connect(name, tcp).await.map_err(|e| format!("Get \"{url}\": TLS: {e}"))?;
                status_code(&mut stream, &request).await?
            } else {
                let mut stream = tcp;
                status_code(&mut stream, &request).await?
            };
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

/// Sends `request` on `stream` and reads the response's status code (the status line is
/// enough; at most [`RESPONSE_BYTES_MAX`] bytes are read).
async fn status_code<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, request: &str) -> Result<u16, String> {
    stream.write_all(request.as_bytes()).await.map_err(|e| format!("writing the request: {e}"))?;
    // TLS may hold the request in its buffer until flushed.
    stream.flush().await.map_err(|e| format!("writing the request: {e}"))?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(2).any(|w| w == b"\r\n") && buf.len() < RESPONSE_BYTES_MAX {
        let n = stream.read(&mut chunk).await.map_err(|e| format!("reading the response: {e}"))?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = String::from_utf8_lossy(&buf);
    line.split_whitespace().nth(1).and_then(|c| c.parse().ok()).ok_or_else(|| "the response is not HTTP".to_owned())
}

/// TLS for HTTPS probes. As the kubelet's, the server's certificate is not verified: a probe
/// asks whether the container answers, not who it is (signatures are still checked, with the
/// ring provider's algorithms). Unlike Go's `InsecureSkipVerify`, a certificate webpki cannot
/// parse (version 1, an unknown critical extension) or whose key ring does not support (RSA
/// under 2048 bits, P-521, SHA-1 signatures) fails the probe.
mod tls {
    use std::sync::{Arc, OnceLock};

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::CryptoProvider;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{DigitallySignedStruct, SignatureScheme};

    #[derive(Debug)]
    struct AnyCertificate(Arc<CryptoProvider>);

    impl ServerCertVerifier for AnyCertificate {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp_response: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }

    /// The probes' TLS connector (one configuration, made once).
    ///
    /// # Errors
    /// The TLS configuration could not be made (the provider lacks the default versions).
    pub(super) fn connector() -> Result<tokio_rustls::TlsConnector, String> {
        static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
        let config = CONFIG.get_or_init(|| {
            // ring, not aws-lc (whose C build would add minutes to a cold build); rustls
            // deprecates it for lacking post-quantum key exchange, which a probe that does not
            // even verify the server's certificate has no use for.
            #[allow(deprecated)]
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let verifier = Arc::new(AnyCertificate(Arc::clone(&provider)));
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("the probes' TLS configuration: {e}"))?
                .dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_no_client_auth();
            Ok(Arc::new(config))
        });
        config.as_ref().map(|c| tokio_rustls::TlsConnector::from(Arc::clone(c))).map_err(Clone::clone)
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

    /// `scheme: HTTPS` speaks TLS to a server whose certificate is self-signed (not verified,
    /// as the kubelet's), and judges the status as for HTTP; TLS to a plain HTTP server fails.
    #[tokio::test]
    async fn https_tries_speak_tls_without_verifying_the_certificate() {
        use std::sync::Arc;

        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("a certificate");
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(rustls::pki_types::PrivatePkcs8KeyDer::from(
            certified.signing_key.serialize_der(),
        ));
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![certified.cert.der().clone()], key)
            .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let port = i32::from(listener.local_addr().expect("addr").port());
        tokio::spawn(async move {
            for code in [200u16, 503] {
                let (tcp, _) = listener.accept().await.expect("accepts");
                let Ok(mut s) = acceptor.accept(tcp).await else { continue };
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(format!("HTTP/1.1 {code} X\r\nContent-Length: 0\r\n\r\n").as_bytes()).await;
                let _ = s.shutdown().await;
            }
        });
        let https = |port: i32| Probe {
            http_get: Some(HttpGetAction {
                port: IntOrString::Int(port),
                path: Some("/healthz".into()),
                scheme: Some(orch_core::core_v1::UriScheme::Https),
                ..HttpGetAction::default()
            }),
            ..Probe::default()
        };
        let t = Duration::from_secs(5);
        assert_eq!(network(&https(port), &container(), "127.0.0.1", t).await, Ok(()));
        let e = network(&https(port), &container(), "127.0.0.1", t).await.expect_err("503");
        assert!(e.contains("503"), "{e}");
        // A plain HTTP server: the handshake fails.
        let plain = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let plain_port = i32::from(plain.local_addr().expect("addr").port());
        tokio::spawn(async move {
            let (mut s, _) = plain.accept().await.expect("accepts");
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await;
        });
        let e = network(&https(plain_port), &container(), "127.0.0.1", t).await.expect_err("not TLS");
        assert!(e.contains("TLS"), "{e}");
    }
}
