//! Until accounts exist, the studio trusts whoever reaches its port, so it must make sure that
//! what reaches it is not a web page the user happens to visit:
//!
//! - **DNS rebinding**: a page on `evil.example` that re-resolves its name to 127.0.0.1 sends
//!   `Host: evil.example:8080`. A server bound to a loopback address answers only the loopback
//!   names of its own port (`127.0.0.1`, `localhost`, `[::1]`, the bound address).
//! - **Cross-site requests**: a page elsewhere can send simple requests (a multipart form, a
//!   bodyless POST) without CORS. A request whose `Origin` is not this server's own origin, or
//!   that a browser marks `Sec-Fetch-Site: cross-site|same-site`, is refused before any handler
//!   runs; so is an unsafe method with `Origin: null`.
//!
//! Workers and scripts send no `Origin` and are unaffected.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::Error;

/// What the guard accepts, from the address the server is bound to.
#[derive(Debug, Clone)]
pub struct Guard {
    /// `host:port` values accepted in `Host`; `None` when bound to a non-loopback address
    /// (the server cannot know every name it is reached by: any host is accepted, and origins
    /// must still match the host).
    hosts: Option<Vec<String>>,
    url: String,
}

impl Guard {
    pub fn new(addr: SocketAddr) -> Self {
        let port = addr.port();
        let hosts = addr.ip().is_loopback().then(|| {
            let mut hosts = vec![
                format!("127.0.0.1:{port}"),
                format!("localhost:{port}"),
                format!("[::1]:{port}"),
                addr.to_string(),
            ];
            hosts.sort();
            hosts.dedup();
            hosts
        });
        Self {
            hosts,
            url: format!("http://{addr}/"),
        }
    }

    /// Checks one request's `Host`, `Origin` and `Sec-Fetch-Site`.
    pub fn check(&self, method: &Method, headers: &axum::http::HeaderMap) -> Result<(), Error> {
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let host = text(header::HOST.as_str()).map(|h| h.trim().to_ascii_lowercase());
        if let (Some(allowed), Some(host)) = (&self.hosts, &host)
            && !allowed.iter().any(|a| a == host)
        {
            return Err(Error::Forbidden(format!(
                "Host '{host}' is not this server's address; open the studio at {}",
                self.url
            )));
        }
        let unsafe_method = !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
        if let Some(origin) = text(header::ORIGIN.as_str()) {
            let origin = origin.trim().to_ascii_lowercase();
            let own = host.as_deref().is_some_and(|h| {
                origin == format!("http://{h}") || origin == format!("https://{h}")
            });
            if origin == "null" && !unsafe_method {
                // Opaque origins reading is harmless without CORS headers.
            } else if !own {
                return Err(Error::Forbidden(format!(
                    "cross-origin request from '{origin}' refused: the studio answers only pages \
                     it served itself"
                )));
            }
        }
        if let Some(site) = text("sec-fetch-site")
            && matches!(site, "cross-site" | "same-site")
            && unsafe_method
        {
            return Err(Error::Forbidden(format!(
                "a {site} request was refused: the studio answers only pages it served itself"
            )));
        }
        Ok(())
    }
}

/// The middleware: refuses what [`Guard::check`] refuses, before routing.
pub async fn layer(State(guard): State<Arc<Guard>>, request: Request, next: Next) -> Response {
    match guard.check(request.method(), request.headers()) {
        Ok(()) => next.run(request).await,
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, HeaderValue};

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn loopback_servers_answer_only_their_own_names_and_origins() {
        let g = Guard::new("127.0.0.1:8080".parse().unwrap());
        let ok = |m: Method, h: &[(&'static str, &'static str)]| g.check(&m, &headers(h)).is_ok();
        assert!(ok(Method::GET, &[("host", "127.0.0.1:8080")]));
        assert!(ok(Method::GET, &[("host", "localhost:8080")]));
        assert!(ok(Method::POST, &[("host", "[::1]:8080")]));
        assert!(
            ok(Method::POST, &[]),
            "a request without Host (HTTP/1.0 scripts)"
        );
        // DNS rebinding: the attacker's name, resolved to loopback.
        assert!(!ok(Method::GET, &[("host", "evil.example:8080")]));
        assert!(!ok(Method::GET, &[("host", "127.0.0.1:9999")]));
        // The studio's own pages.
        assert!(ok(
            Method::POST,
            &[
                ("host", "127.0.0.1:8080"),
                ("origin", "http://127.0.0.1:8080")
            ]
        ));
        // Another site's page posting a form or a bodyless POST.
        assert!(!ok(
            Method::POST,
            &[
                ("host", "127.0.0.1:8080"),
                ("origin", "https://evil.example")
            ]
        ));
        assert!(!ok(
            Method::POST,
            &[("host", "127.0.0.1:8080"), ("origin", "null")]
        ));
        assert!(!ok(
            Method::POST,
            &[("host", "127.0.0.1:8080"), ("sec-fetch-site", "cross-site")]
        ));
        assert!(ok(
            Method::GET,
            &[("host", "127.0.0.1:8080"), ("sec-fetch-site", "cross-site")]
        ));
    }

    #[test]
    fn other_addresses_accept_any_host_but_origins_must_match_it() {
        let g = Guard::new("0.0.0.0:8080".parse().unwrap());
        let ok = |h: &[(&'static str, &'static str)]| g.check(&Method::POST, &headers(h)).is_ok();
        assert!(ok(&[("host", "studio.lan:8080")]));
        assert!(ok(&[
            ("host", "studio.lan:8080"),
            ("origin", "http://studio.lan:8080")
        ]));
        assert!(!ok(&[
            ("host", "studio.lan:8080"),
            ("origin", "http://evil.example")
        ]));
    }
}
