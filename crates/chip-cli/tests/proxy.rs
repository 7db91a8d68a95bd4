//! A proxy from the environment never sees a request to a plain-http loopback URL (the mock): it
//! would read the API key in clear text and could answer in the mock's place.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::TcpListener;
use std::time::Duration;

use common::{command, mock, run};

#[tokio::test(flavor = "multi_thread")]
async fn no_command_goes_through_an_environment_proxy_to_the_mock() {
    let mock = mock().await;
    let proxy = TcpListener::bind("127.0.0.1:0").unwrap();
    proxy.set_nonblocking(true).unwrap();
    let proxy_url = format!("http://{}", proxy.local_addr().unwrap());

    // A listener for `chip trigger` to deliver to, and a webhook pointing at it.
    let mut listening = common::listen(
        &mock,
        &["--key", common::fixture("public_key.pem").to_str().unwrap()],
    )
    .await;
    let id = common::create(&mock, &listening.url).await;

    for args in [
        &["webhooks", "list", "--all"][..],
        &["webhooks", "get", &id],
        &["public-key"],
        &["trigger", "purchase.paid"],
    ] {
        let mut cmd = command(&mock, args);
        for var in [
            "HTTP_PROXY",
            "http_proxy",
            "ALL_PROXY",
            "all_proxy",
            "HTTPS_PROXY",
        ] {
            cmd.env(var, &proxy_url);
        }
        let out = tokio::time::timeout(Duration::from_secs(30), run(cmd))
            .await
            .unwrap();
        out.ok();
        match proxy.accept() {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("{args:?}: the proxy got a connection: {other:?}"),
        }
    }
    // The trigger reached the listener directly (a wrong key for it, but it arrived).
    let line = listening.line().await;
    assert!(line.contains("invalid"), "{line}");
    let _ = listening.child.kill();
    let _ = listening.child.wait();
}
