//! Black-box tests of sidecar mode: a real upstream (hyper), real clients (hyper HTTP/1.1 and
//! HTTP/2, rustls, tokio-tungstenite) through the sidecar, and the agent's real buffer (sled on
//! disk, `agent/src/buffer/`) as the sink; records are read back from the buffer.

#[allow(dead_code)]
mod sidecar_common;

use std::sync::Arc;
use std::time::Duration;

use groundtrail_agent::buffer::FullPolicy;
use groundtrail_agent::sink::RecordSink;
use groundtrail_agent::sources::sidecar::{
    FailureMode, IdentityConfig, IdentitySource, JwtConfig, ResourceTemplate, RouteConfig,
    SidecarTlsConfig, TrustedHeaderConfig,
};
use groundtrail_common::Record;
use http::Request;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use sidecar_common::*;

const HIDDEN: &str = "HIDDEN_DUE_TO_SECURITY_REASONS";

fn routes() -> Vec<RouteConfig> {
    vec![
        RouteConfig {
            method: "GET".into(),
            path: "/orders/{id}".into(),
            event_name: "GetOrder".into(),
            read_only: None,
            resources: vec![ResourceTemplate {
                resource_type: "Shop::Order".into(),
                arn: "arn:{partition}:shop:{region}:{account}:order/{id}".into(),
            }],
        },
        RouteConfig {
            method: "POST".into(),
            path: "/orders".into(),
            event_name: "CreateOrder".into(),
            read_only: None,
            resources: vec![],
        },
    ]
}

fn big() -> groundtrail_agent::buffer::BufferOptions {
    buffer_opts(64 << 20, FullPolicy::Block)
}

#[tokio::test]
async fn sidecar_routes_parameters_and_record_fields() {
    let up = upstream().await;
    let mut cfg = config(&up);
    cfg.routes = routes();
    cfg.capture_headers = vec!["x-tenant".into(), "authorization".into()];
    let sc = start(cfg, big()).await;
    let c = client();

    // A matched route, with query parameters and a secret in the query.
    let (status, headers, body) = send(
        &c,
        Request::get(sc.url("/orders/42?verbose=1&api_key=k1"))
            .header("x-request-id", "rid-get")
            .header("user-agent", "sidecar-test/1.0")
            .header("x-tenant", "acme")
            .header("authorization", "Basic c2VjcmV0")
            .body(empty_body())
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-request-id"], "rid-get");
    let echo: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(echo["path"], "/orders/42");
    assert_eq!(
        echo["headers"]["x-request-id"], "rid-get",
        "requestID passed upstream"
    );
    assert_eq!(echo["headers"]["x-forwarded-for"], "127.0.0.1");

    let r = sc.record_for("rid-get").await;
    assert_eq!(r.event_source, SOURCE);
    assert_eq!(r.event_name, "GetOrder");
    assert_eq!(r.event_type, "AwsApiCall");
    assert_eq!(r.read_only, Some(true));
    assert_eq!(r.source_ip_address.as_deref(), Some("127.0.0.1"));
    assert_eq!(r.user_agent.as_deref(), Some("sidecar-test/1.0"));
    assert_eq!(r.aws_region, "onprem-1");
    assert_eq!(r.recipient_account_id.as_deref(), Some("123456789012"));
    let res = r.resources.as_ref().unwrap();
    assert_eq!(
        res[0].arn.as_deref(),
        Some("arn:aws:shop:onprem-1:123456789012:order/42")
    );
    assert_eq!(res[0].resource_type.as_deref(), Some("Shop::Order"));
    assert_eq!(
        r.request_parameters.as_ref().unwrap(),
        &json!({"id": "42", "verbose": "1", "api_key": HIDDEN})
    );
    assert_eq!(r.response_elements, Some(Value::Null), "off by default");
    assert!(r.error_code.is_none());
    assert!(r.tls_details.is_none(), "no TLS at the sidecar");
    let extra = r.additional_event_data.as_ref().unwrap();
    assert_eq!(extra["httpStatus"], 200);
    assert_eq!(extra["protocol"], "HTTP/1.1");
    assert_eq!(extra["responseComplete"], true);
    assert_eq!(extra["headers"]["x-tenant"], "acme");
    assert_eq!(extra["headers"]["authorization"], HIDDEN);
    assert_eq!(extra["identity"]["source"], "none");
    assert_eq!(
        r.user_identity.as_ref().unwrap().identity_type.as_deref(),
        Some("Unknown")
    );

    // A JSON body: merged into requestParameters, secrets hidden at any depth.
    let (status, _, _) = send(
        &c,
        post_json(
            &sc.url("/orders"),
            "rid-post",
            json!({"item": "book", "qty": 2, "card": {"number": "4111", "cvv_secret": "123"}, "password": "hunter2"}),
        ),
    )
    .await;
    assert_eq!(status, 200);
    let r = sc.record_for("rid-post").await;
    assert_eq!(r.event_name, "CreateOrder");
    assert_eq!(r.read_only, Some(false));
    assert_eq!(
        r.request_parameters.as_ref().unwrap(),
        &json!({"item": "book", "qty": 2, "card": {"number": "4111", "cvv_secret": HIDDEN}, "password": HIDDEN})
    );

    // Unmatched: the fallback name groups identifiers; a generated requestID reaches upstream.
    let (_, headers, body) = send(
        &c,
        Request::delete(sc.url("/things/99812/parts"))
            .body(empty_body())
            .unwrap(),
    )
    .await;
    let rid = headers["x-request-id"].to_str().unwrap().to_string();
    let echo: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(echo["headers"]["x-request-id"], rid.as_str());
    let r = sc.record_for(&rid).await;
    assert_eq!(r.event_name, "DELETE /things/{id}/parts");
    assert_eq!(r.read_only, Some(false));
    assert!(r.resources.is_none());
    assert_eq!(
        r.additional_event_data.as_ref().unwrap()["routeMatched"],
        false
    );
    assert!(uuid_like(&rid));

    // HTTP/2 (prior knowledge) to the sidecar, HTTP/1.1 to the upstream.
    let h2: Client<_, TestBody> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let (status, _, _) = send(&h2, get(&sc.url("/orders/7"), "rid-h2")).await;
    assert_eq!(status, 200);
    let r = sc.record_for("rid-h2").await;
    assert_eq!(r.event_name, "GetOrder");
    assert_eq!(
        r.additional_event_data.as_ref().unwrap()["protocol"],
        "HTTP/2"
    );

    // Keep-alive: all of the above used pooled connections; every call has its record.
    assert_eq!(up.hits(), 4);
    sc.stop().await;
}

fn uuid_like(s: &str) -> bool {
    s.len() == 36 && s.chars().filter(|c| *c == '-').count() == 4
}

#[tokio::test]
async fn sidecar_response_elements_when_enabled_are_redacted_and_capped() {
    let up = upstream().await;
    let mut cfg = config(&up);
    cfg.record_response = true;
    let sc = start(cfg, big()).await;
    let c = client();
    send(&c, get(&sc.url("/echo"), "rid-resp")).await;
    let r = sc.record_for("rid-resp").await;
    let re = r.response_elements.as_ref().unwrap();
    assert_eq!(re["ok"], true);
    assert_eq!(re["secretToken"], HIDDEN);
    sc.stop().await;
}

#[tokio::test]
async fn sidecar_body_larger_than_the_cap_streams_through_intact_and_is_marked() {
    let up = upstream().await;
    let sc = start(config(&up), big()).await;
    let c = client();
    let n: u64 = 3 * 1024 * 1024 + 17;
    let (status, _, body) = send(
        &c,
        Request::post(sc.url("/upload"))
            .header("x-request-id", "rid-big")
            .header("content-type", "application/json")
            .body(http_body_util::BodyExt::boxed_unsync(PatternBody::new(n)))
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        v,
        json!({"bytes": n, "ok": true}),
        "upstream got every byte, in order"
    );
    let r = sc.record_for("rid-big").await;
    let p = r.request_parameters.as_ref().unwrap();
    assert_eq!(p["omitted"], true);
    assert_eq!(p["originalSize"], n);
    assert_eq!(p["limit"], 102400);
    assert_eq!(
        r.additional_event_data.as_ref().unwrap()["bytesTransferredIn"],
        n
    );

    // And the other way: a download larger than the cap arrives intact.
    let resp = c
        .request(get(&sc.url(&format!("/download?n={n}")), "rid-down"))
        .await
        .unwrap();
    let mut body = resp.into_body();
    let mut got = 0u64;
    while let Some(f) = http_body_util::BodyExt::frame(&mut body).await {
        let f = f.unwrap();
        if let Some(d) = f.data_ref() {
            assert!(is_pattern(d, got));
            got += d.len() as u64;
        }
    }
    assert_eq!(got, n);
    let r = sc.record_for("rid-down").await;
    assert_eq!(
        r.additional_event_data.as_ref().unwrap()["bytesTransferredOut"],
        n
    );
    sc.stop().await;
}

#[tokio::test]
async fn sidecar_error_mapping() {
    let up = upstream().await;
    let sc = start(config(&up), big()).await;
    let c = client();
    for (path, rid, status) in [
        ("/status/409", "rid-409", 409),
        ("/status/404", "rid-404", 404),
        ("/status/500", "rid-500", 500),
        ("/status/302", "rid-302", 302),
    ] {
        let (s, _, _) = send(&c, get(&sc.url(path), rid)).await;
        assert_eq!(s.as_u16(), status);
    }
    let r = sc.record_for("rid-409").await;
    assert_eq!(r.error_code.as_deref(), Some("OrderLocked"));
    assert_eq!(r.error_message.as_deref(), Some("order 7 is locked"));
    let r = sc.record_for("rid-404").await;
    assert_eq!(r.error_code.as_deref(), Some("NotFound"));
    assert_eq!(r.error_message.as_deref(), Some("Not Found"));
    let r = sc.record_for("rid-500").await;
    assert_eq!(r.error_code.as_deref(), Some("InternalServerError"));
    assert_eq!(r.error_message.as_deref(), Some("database on fire"));
    let r = sc.record_for("rid-302").await;
    assert!(r.error_code.is_none(), "a redirect is not a failure");
    sc.stop().await;

    // The upstream is gone: 502, recorded as BadGateway.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut cfg = config(&up);
    cfg.upstream = format!("http://{dead}");
    let sc = start(cfg, big()).await;
    let (s, _, body) = send(&c, get(&sc.url("/orders/1"), "rid-502")).await;
    assert_eq!(s, 502);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["errorCode"],
        "BadGateway"
    );
    let r = sc.record_for("rid-502").await;
    assert_eq!(r.error_code.as_deref(), Some("BadGateway"));
    assert!(
        r.error_message
            .as_deref()
            .unwrap()
            .contains("could not be reached")
    );
    sc.stop().await;
}

#[tokio::test]
async fn sidecar_upstream_timeout_and_h2c_upstream() {
    let up = upstream().await;
    let mut cfg = config(&up);
    cfg.upstream_timeout_secs = 1;
    let sc = start(cfg.clone(), big()).await;
    let c = client();
    let (s, _, _) = send(&c, get(&sc.url("/slow"), "rid-504")).await;
    assert_eq!(s, 504);
    let r = sc.record_for("rid-504").await;
    assert_eq!(r.error_code.as_deref(), Some("GatewayTimeout"));
    sc.stop().await;

    // HTTP/2 with prior knowledge to the application.
    cfg.upstream_http2 = true;
    let sc = start(cfg, big()).await;
    let (s, _, body) = send(
        &c,
        post_json(&sc.url("/orders"), "rid-h2c", json!({"a": 1})),
    )
    .await;
    assert_eq!(s, 200);
    let echo: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(echo["version"], "HTTP/2.0");
    assert_eq!(echo["bodyBytes"], 7);
    let r = sc.record_for("rid-h2c").await;
    assert_eq!(r.request_parameters.as_ref().unwrap()["a"], 1);
    sc.stop().await;
}

#[tokio::test]
async fn sidecar_websocket_passes_through_and_is_recorded_once() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let up = upstream().await;
    let sc = start(config(&up), big()).await;
    let tcp = tokio::net::TcpStream::connect(sc.addr).await.unwrap();
    let req = tokio_tungstenite::tungstenite::ClientRequestBuilder::new(
        format!("ws://{}/ws", sc.addr).parse().unwrap(),
    )
    .with_header("x-request-id", "rid-ws");
    let (mut ws, resp) = tokio_tungstenite::client_async(req, tcp).await.unwrap();
    assert_eq!(resp.status(), 101);
    for i in 0..20 {
        ws.send(Message::text(format!("hello {i}"))).await.unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::text(format!("hello {i}"))
        );
    }
    let blob = vec![7u8; 200_000];
    ws.send(Message::binary(blob.clone())).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::binary(blob));
    ws.close(None).await.unwrap();
    drop(ws);
    let r = sc.record_for("rid-ws").await;
    let extra = r.additional_event_data.as_ref().unwrap();
    assert_eq!(extra["upgrade"], "websocket");
    assert_eq!(extra["httpStatus"], 101);
    assert_eq!(r.event_name, "GET /ws");
    // Still one record for the whole session, after the traffic.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let n = sc
        .records()
        .iter()
        .filter(|r| r.request_id.as_deref() == Some("rid-ws"))
        .count();
    assert_eq!(n, 1);
    sc.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Identity

struct Pki {
    dir: tempfile::TempDir,
    ca_der: rustls_pki_types::CertificateDer<'static>,
    client_cert: rustls_pki_types::CertificateDer<'static>,
    client_key: rustls_pki_types::PrivateKeyDer<'static>,
}

fn pki() -> Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    };
    let dir = tempfile::tempdir().unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(vec![]).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "sidecar test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate().unwrap();
    let mut sp = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    sp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = sp.signed_by(&server_key, &issuer).unwrap();

    let client_key = KeyPair::generate().unwrap();
    let mut cp = CertificateParams::new(vec![]).unwrap();
    cp.distinguished_name
        .push(DnType::CommonName, "svc-billing");
    cp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_cert = cp.signed_by(&client_key, &issuer).unwrap();

    std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(dir.path().join("server.pem"), server_cert.pem()).unwrap();
    std::fs::write(dir.path().join("server.key"), server_key.serialize_pem()).unwrap();
    Pki {
        ca_der: ca_cert.der().clone(),
        client_cert: client_cert.der().clone(),
        client_key: rustls_pki_types::PrivateKeyDer::Pkcs8(client_key.serialize_der().into()),
        dir,
    }
}

#[tokio::test]
async fn sidecar_tls_with_verified_client_certificate() {
    let up = upstream().await;
    let p = pki();
    let mut cfg = config(&up);
    cfg.tls = Some(SidecarTlsConfig {
        cert: p.dir.path().join("server.pem"),
        key: p.dir.path().join("server.key"),
        client_ca: Some(p.dir.path().join("ca.pem")),
    });
    cfg.routes = routes();
    let sc = start(cfg, big()).await;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(p.ca_der.clone()).unwrap();
    let tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots.clone())
        .with_client_auth_cert(vec![p.client_cert.clone()], p.client_key.clone_key())
        .unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let tcp = tokio::net::TcpStream::connect(sc.addr).await.unwrap();
    let stream = connector
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let resp = sender
        .send_request(
            Request::get("/orders/5")
                .header("host", "orders.example.internal")
                .header("x-request-id", "rid-tls")
                .body(empty_body())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    let echo: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(echo["headers"]["x-forwarded-proto"], "https");

    let r = sc.record_for("rid-tls").await;
    let id = r.user_identity.as_ref().unwrap();
    assert_eq!(id.identity_type.as_deref(), Some("IAMUser"));
    assert_eq!(id.user_name.as_deref(), Some("svc-billing"));
    assert_eq!(
        id.arn.as_deref(),
        Some("arn:aws:iam::123456789012:user/pod-1/svc-billing")
    );
    let t = r.tls_details.as_ref().unwrap();
    assert_eq!(t.tls_version.as_deref(), Some("TLSv1.3"));
    assert!(
        t.cipher_suite.as_deref().unwrap().starts_with("TLS_AES_")
            || t.cipher_suite
                .as_deref()
                .unwrap()
                .starts_with("TLS_CHACHA20"),
        "{t:?}"
    );
    assert_eq!(
        t.client_provided_host_header.as_deref(),
        Some("orders.example.internal")
    );
    assert_eq!(
        r.additional_event_data.as_ref().unwrap()["identity"]["source"],
        "client_cert"
    );

    // HTTP/2 over TLS (ALPN h2), as browsers and gRPC-style clients connect.
    let mut h2tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots.clone())
        .with_client_auth_cert(vec![p.client_cert.clone()], p.client_key.clone_key())
        .unwrap();
    h2tls.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(h2tls));
    let tcp = tokio::net::TcpStream::connect(sc.addr).await.unwrap();
    let stream = connector
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let resp = sender
        .send_request(
            Request::get("https://orders.example.internal/orders/9")
                .header("x-request-id", "rid-tls-h2")
                .body(empty_body())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let r = sc.record_for("rid-tls-h2").await;
    assert_eq!(
        r.additional_event_data.as_ref().unwrap()["protocol"],
        "HTTP/2"
    );
    assert_eq!(
        r.tls_details
            .as_ref()
            .unwrap()
            .client_provided_host_header
            .as_deref(),
        Some("orders.example.internal")
    );
    assert_eq!(
        r.user_identity.as_ref().unwrap().user_name.as_deref(),
        Some("svc-billing")
    );

    // Without a client certificate the handshake fails: nothing reaches the upstream.
    let hits = up.hits();
    let anon = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(anon));
    let tcp = tokio::net::TcpStream::connect(sc.addr).await.unwrap();
    let refused = match connector
        .connect("localhost".try_into().unwrap(), tcp)
        .await
    {
        Err(_) => true,
        // TLS 1.3: the server's refusal can arrive after the client finished; the request fails.
        Ok(s) => {
            match hyper::client::conn::http1::handshake::<_, TestBody>(TokioIo::new(s)).await {
                Err(_) => true,
                Ok((mut sender, conn)) => {
                    tokio::spawn(conn);
                    sender
                        .send_request(Request::get("/orders/6").body(empty_body()).unwrap())
                        .await
                        .is_err()
                }
            }
        }
    };
    assert!(refused);
    assert_eq!(up.hits(), hits);
    sc.stop().await;
}

fn b64(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// Minimal DER reader: (tag, content, rest).
fn tlv(b: &[u8]) -> (u8, &[u8], &[u8]) {
    let tag = b[0];
    let (len, hdr) = if b[1] & 0x80 == 0 {
        (b[1] as usize, 2)
    } else {
        let n = (b[1] & 0x7f) as usize;
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | b[2 + i] as usize;
        }
        (len, 2 + n)
    };
    (tag, &b[hdr..hdr + len], &b[hdr + len..])
}

fn strip_zero(b: &[u8]) -> &[u8] {
    if b.len() > 1 && b[0] == 0 { &b[1..] } else { b }
}

/// Keys for RS256 and ES256 tokens, and the JWKS that verifies them.
struct JwtKeys {
    rsa: jsonwebtoken::EncodingKey,
    ec: jsonwebtoken::EncodingKey,
    jwks: Value,
}

fn jwt_keys() -> JwtKeys {
    let rsa = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    // PKCS#8 -> the PKCS#1 RSAPrivateKey inside (what jsonwebtoken's from_rsa_der takes).
    let der = rsa.serialize_der();
    let (_, info, _) = tlv(&der);
    let (_, _version, rest) = tlv(info);
    let (_, _alg, rest) = tlv(rest);
    let (_, pkcs1, _) = tlv(rest);
    // RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }
    let (_, seq, _) = tlv(rsa.public_key_raw());
    let (_, n, rest) = tlv(seq);
    let (_, e, _) = tlv(rest);
    let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let point = ec.public_key_raw();
    assert_eq!(point.len(), 65);
    JwtKeys {
        rsa: jsonwebtoken::EncodingKey::from_rsa_der(pkcs1),
        ec: jsonwebtoken::EncodingKey::from_ec_der(&ec.serialize_der()),
        jwks: json!({"keys": [
            {"kty": "RSA", "kid": "r1", "alg": "RS256", "use": "sig", "n": b64(strip_zero(n)), "e": b64(strip_zero(e))},
            {"kty": "EC", "kid": "e1", "crv": "P-256", "x": b64(&point[1..33]), "y": b64(&point[33..])},
        ]}),
    }
}

fn token(
    alg: jsonwebtoken::Algorithm,
    kid: Option<&str>,
    key: &jsonwebtoken::EncodingKey,
    claims: Value,
) -> String {
    let mut h = jsonwebtoken::Header::new(alg);
    h.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&h, &claims, key).unwrap()
}

#[tokio::test]
async fn sidecar_jwt_identities_hmac_rsa_ecdsa_and_forged() {
    use jsonwebtoken::Algorithm;
    let up = upstream().await;
    let keys = jwt_keys();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hmac"), "shared-secret\n").unwrap();
    std::fs::write(dir.path().join("jwks.json"), keys.jwks.to_string()).unwrap();
    let mut cfg = config(&up);
    cfg.identity = IdentityConfig {
        order: vec![IdentitySource::Jwt],
        jwt: Some(JwtConfig {
            hmac_secret_file: Some(dir.path().join("hmac")),
            jwks_file: Some(dir.path().join("jwks.json")),
            issuers: vec!["https://idp.test".into()],
            audiences: vec!["orders".into()],
            role_claim: Some("role".into()),
            ..JwtConfig::default()
        }),
        trusted_header: None,
    };
    let sc = start(cfg, big()).await;
    let c = client();
    let exp = jsonwebtoken::get_current_timestamp() + 600;
    let claims = |sub: &str, role: Option<&str>| {
        let mut v = json!({"sub": sub, "preferred_username": sub, "iss": "https://idp.test", "aud": "orders", "exp": exp, "iat": exp - 600});
        if let Some(r) = role {
            v["role"] = json!(r);
        }
        v
    };
    let hmac = jsonwebtoken::EncodingKey::from_secret(b"shared-secret");
    let cases = [
        (
            "rid-hs",
            token(Algorithm::HS256, None, &hmac, claims("alice", None)),
        ),
        (
            "rid-rs",
            token(
                Algorithm::RS256,
                Some("r1"),
                &keys.rsa,
                claims("bob", Some("admin")),
            ),
        ),
        (
            "rid-es",
            token(
                Algorithm::ES256,
                Some("e1"),
                &keys.ec,
                claims("carol", None),
            ),
        ),
        // Forged: signed with another secret; and a valid RSA token for another audience.
        (
            "rid-forged",
            token(
                Algorithm::HS256,
                None,
                &jsonwebtoken::EncodingKey::from_secret(b"guess"),
                claims("root", Some("admin")),
            ),
        ),
        (
            "rid-aud",
            token(Algorithm::RS256, Some("r1"), &keys.rsa, {
                let mut v = claims("mallory", None);
                v["aud"] = json!("billing");
                v
            }),
        ),
    ];
    for (rid, tok) in &cases {
        let req = Request::get(sc.url("/orders/1"))
            .header("x-request-id", *rid)
            .header("authorization", format!("Bearer {tok}"))
            .body(empty_body())
            .unwrap();
        let (s, _, _) = send(&c, req).await;
        assert_eq!(
            s, 200,
            "the sidecar records identities, it does not enforce them"
        );
    }
    let r = sc.record_for("rid-hs").await;
    let id = r.user_identity.unwrap();
    assert_eq!(id.identity_type.as_deref(), Some("WebIdentityUser"));
    assert_eq!(id.user_name.as_deref(), Some("alice"));
    assert_eq!(id.identity_provider.as_deref(), Some("https://idp.test"));
    let r = sc.record_for("rid-rs").await;
    let id = r.user_identity.unwrap();
    assert_eq!(id.identity_type.as_deref(), Some("AssumedRole"));
    assert_eq!(
        id.arn.as_deref(),
        Some("arn:aws:sts::123456789012:assumed-role/admin/bob")
    );
    let r = sc.record_for("rid-es").await;
    assert_eq!(r.user_identity.unwrap().user_name.as_deref(), Some("carol"));
    for (rid, reason, sub) in [
        ("rid-forged", "InvalidSignature", "root"),
        ("rid-aud", "InvalidAudience", "mallory"),
    ] {
        let r = sc.record_for(rid).await;
        let id = r.user_identity.as_ref().unwrap();
        assert_eq!(id.identity_type.as_deref(), Some("Unknown"), "{rid}");
        assert!(
            id.user_name.is_none() && id.arn.is_none(),
            "{rid}: never trusted"
        );
        let note = &r.additional_event_data.as_ref().unwrap()["identity"];
        assert_eq!(note["verified"], false);
        assert_eq!(note["rejected"][0]["reason"], reason);
        assert_eq!(note["rejected"][0]["unverifiedClaims"]["sub"], sub);
    }
    sc.stop().await;
}

#[tokio::test]
async fn sidecar_trusted_auth_proxy_header_and_forwarded_for() {
    let up = upstream().await;
    let mut cfg = config(&up);
    cfg.identity = IdentityConfig {
        order: vec![IdentitySource::TrustedHeader],
        jwt: None,
        trusted_header: Some(TrustedHeaderConfig::default()),
    };
    cfg.trusted_proxies = vec!["127.0.0.0/8".into()];
    let sc = start(cfg.clone(), big()).await;
    let c = client();
    let req = Request::get(sc.url("/orders/1"))
        .header("x-request-id", "rid-th")
        .header("x-forwarded-user", "dave")
        .header("x-forwarded-for", "203.0.113.9")
        .body(empty_body())
        .unwrap();
    let (_, _, body) = send(&c, req).await;
    let echo: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(echo["headers"]["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(echo["headers"]["x-forwarded-user"], "dave");
    let r = sc.record_for("rid-th").await;
    assert_eq!(r.source_ip_address.as_deref(), Some("203.0.113.9"));
    let id = r.user_identity.unwrap();
    assert_eq!(id.user_name.as_deref(), Some("dave"));
    assert_eq!(id.identity_provider.as_deref(), Some("trusted-auth-proxy"));
    sc.stop().await;

    // The same request from a peer that is not a trusted proxy: header ignored (and not passed
    // on, so the app cannot be fooled either), X-Forwarded-For ignored.
    cfg.trusted_proxies = vec!["10.9.9.9".into()];
    let sc = start(cfg, big()).await;
    let req = Request::get(sc.url("/orders/1"))
        .header("x-request-id", "rid-th2")
        .header("x-forwarded-user", "dave")
        .header("x-forwarded-for", "203.0.113.9")
        .body(empty_body())
        .unwrap();
    let (_, _, body) = send(&c, req).await;
    let echo: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(echo["headers"]["x-forwarded-for"], "127.0.0.1");
    assert!(echo["headers"].get("x-forwarded-user").is_none());
    let r = sc.record_for("rid-th2").await;
    assert_eq!(r.source_ip_address.as_deref(), Some("127.0.0.1"));
    assert_eq!(
        r.user_identity.as_ref().unwrap().identity_type.as_deref(),
        Some("Unknown")
    );
    assert_eq!(
        r.additional_event_data.as_ref().unwrap()["identity"]["rejected"][0]["reason"],
        "UntrustedPeer"
    );
    sc.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Full buffer

fn filler() -> Record {
    let mut r = Record::new(
        "filler.test",
        "Fill",
        "AwsApiCall",
        "onprem-1",
        "123456789012",
    );
    r.user_identity = Some(Default::default());
    // Random text, so that it stays large after the buffer's zstd.
    let pad: String = (0..1500)
        .map(|_| uuid::Uuid::new_v4().to_string())
        .collect();
    r.request_parameters = Some(json!({ "pad": pad }));
    r
}

/// A buffer that is already over its limit (one append is always admitted when empty): one
/// filler record of ~28 KB compressed against a 20 KB limit. Once cleared, there is room for
/// dozens of the test's records.
async fn full_buffer(policy: FullPolicy) -> (groundtrail_agent::buffer::Buffer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (b, _) = groundtrail_agent::buffer::Buffer::open(
        &dir.path().join("buffer"),
        buffer_opts(20_000, policy),
        host(),
    )
    .unwrap();
    RecordSink::append(&b, vec![filler()], None).await.unwrap();
    (b, dir)
}

fn clear(b: &groundtrail_agent::buffer::Buffer) {
    let last = b.status().next_seq - 1;
    b.ack_up_to(last).unwrap();
}

#[tokio::test]
async fn sidecar_fail_open_serves_and_the_loss_reaches_the_trail() {
    let up = upstream().await;
    let (buffer, dir) = full_buffer(FullPolicy::DropNewest).await;
    let sc = start_with(config(&up), buffer.clone(), dir).await;
    let c = client();
    let (s, _, _) = send(&c, get(&sc.url("/orders/1"), "rid-open")).await;
    assert_eq!(s, 200, "fail_open: the call is served");
    assert_eq!(up.hits(), 1);
    for _ in 0..200 {
        if buffer.status().dropped_total > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        buffer.status().dropped_total,
        1,
        "the buffer counted the dropped record"
    );
    // Room again: the loss is written to the trail as a record.
    clear(&buffer);
    let rs = sc
        .wait_records(|rs| rs.iter().any(|r| r.event_name == "RecordsDropped"))
        .await;
    let d = rs
        .iter()
        .find(|r| r.event_name == "RecordsDropped")
        .unwrap();
    assert_eq!(d.request_parameters.as_ref().unwrap()["count"], 1);
    sc.stop().await;
}

#[tokio::test]
async fn sidecar_fail_open_with_a_blocked_buffer_counts_its_own_losses() {
    let up = upstream().await;
    let (buffer, dir) = full_buffer(FullPolicy::Block).await;
    let mut cfg = config(&up);
    cfg.max_pending_records = 1;
    let sc = start_with(cfg, buffer.clone(), dir).await;
    let c = client();
    for i in 0..5 {
        let (s, _, _) = send(&c, get(&sc.url("/orders/1"), &format!("rid-b{i}"))).await;
        assert_eq!(s, 200);
    }
    // One record waits inside the blocked append, one in the queue; three were lost.
    tokio::time::sleep(Duration::from_millis(200)).await;
    clear(&buffer);
    let rs = sc
        .wait_records(|rs| rs.iter().any(|r| r.event_name == "SidecarRecordsLost"))
        .await;
    let lost = rs
        .iter()
        .find(|r| r.event_name == "SidecarRecordsLost")
        .unwrap();
    let p = lost.request_parameters.as_ref().unwrap();
    let served = rs.iter().filter(|r| r.event_source == SOURCE).count() as u64;
    assert_eq!(p["count"].as_u64().unwrap() + served, 5, "{p}");
    assert!(p["reasons"]["queueFull"].as_u64().unwrap() >= 1);
    assert_eq!(lost.event_source, "groundtrail.test.internal");
    sc.stop().await;
}

#[tokio::test]
async fn sidecar_fail_closed_refuses_before_forwarding_when_the_buffer_is_full() {
    for policy in [FullPolicy::DropNewest, FullPolicy::Block] {
        let up = upstream().await;
        let (buffer, dir) = full_buffer(policy).await;
        let mut cfg = config(&up);
        cfg.failure_mode = FailureMode::FailClosed;
        cfg.fail_closed_timeout_ms = 300;
        cfg.routes = routes();
        let sc = start_with(cfg, buffer.clone(), dir).await;
        let c = client();
        let (s, _, body) = send(
            &c,
            post_json(&sc.url("/orders"), "rid-closed", json!({"qty": 1})),
        )
        .await;
        assert_eq!(s, 503, "{policy:?}");
        assert_eq!(
            serde_json::from_slice::<Value>(&body).unwrap()["errorCode"],
            "ServiceUnavailable"
        );
        assert_eq!(up.hits(), 0, "{policy:?}: nothing reached the upstream");

        // Room again: calls go through, each with a durable write-ahead record first.
        clear(&buffer);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (s, _, _) = send(
            &c,
            post_json(&sc.url("/orders"), "rid-ok", json!({"qty": 3})),
        )
        .await;
        assert_eq!(s, 200);
        assert_eq!(up.hits(), 1);
        let rs = sc
            .wait_records(|rs| {
                rs.iter()
                    .filter(|r| r.request_id.as_deref() == Some("rid-ok"))
                    .count()
                    == 2
            })
            .await;
        let mine: Vec<&Record> = rs
            .iter()
            .filter(|r| r.request_id.as_deref() == Some("rid-ok"))
            .collect();
        let (ahead, done) = (mine[0], mine[1]);
        assert_eq!(
            ahead.additional_event_data.as_ref().unwrap()["phase"],
            "request"
        );
        assert_eq!(ahead.event_name, "CreateOrder");
        let a = done.addendum.as_ref().unwrap();
        assert_eq!(a["reason"], "UPDATED_DATA");
        assert_eq!(a["originalEventID"], json!(ahead.event_id));
        assert_eq!(done.request_parameters.as_ref().unwrap()["qty"], 3);
        assert_eq!(
            done.additional_event_data.as_ref().unwrap()["httpStatus"],
            200
        );
        sc.stop().await;
    }
}
