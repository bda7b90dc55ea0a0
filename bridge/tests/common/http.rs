//! A plain HTTP/1.1 client for tests that need a status and a body, with request headers.
// Each test binary compiles this module on its own and uses only part of it; what one binary
// leaves unused is dead code there, though another uses it.
#![allow(dead_code)]

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// `GET url` with these request headers: status, `Content-Type` and body.
pub(crate) async fn get(url: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    try_get(url, headers).await.unwrap()
}

/// [`get`], or why no answer came (nothing listening yet, say).
pub(crate) async fn try_get(
    url: &str,
    headers: &[(&str, &str)],
) -> Result<(u16, String, String), String> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut request = axum::http::Request::get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = tokio::time::timeout(
        Duration::from_secs(15),
        client.request(request.body(Full::default()).unwrap()),
    )
    .await
    .map_err(|_| format!("{url}: no answer within 15 s"))?
    .map_err(|err| format!("{url}: {err}"))?;
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|err| format!("{url}: {err}"))?
        .to_bytes();
    Ok((
        status,
        content_type,
        String::from_utf8_lossy(&body).into_owned(),
    ))
}
