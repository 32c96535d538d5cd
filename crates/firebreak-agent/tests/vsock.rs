//! The agent over a real `AF_VSOCK` socket, through the host's vsock
//! loopback (`vsock_loopback` module). Prints `SKIPPED: …` and passes when
//! this host cannot connect to itself over vsock.

use std::sync::Arc;
use std::time::Duration;

use firebreak_agent::{AgentClient, SessionEnd};
use tokio_vsock::{VsockAddr, VsockStream, VMADDR_CID_LOCAL};

#[tokio::test]
async fn agent_serves_vsock_until_shutdown() {
    let port = 40_000 + std::process::id() % 20_000;
    let server = tokio::spawn(firebreak_agent::vsock::serve_vsock(
        port,
        Arc::new(Default::default()),
        |_| {},
    ));
    tokio::time::sleep(Duration::from_millis(50)).await;
    if server.is_finished() {
        match server.await {
            Ok(Err(e)) => eprintln!("SKIPPED: cannot listen on vsock here: {e}"),
            other => eprintln!("SKIPPED: vsock listener ended early: {other:?}"),
        }
        return;
    }
    let addr = VsockAddr::new(VMADDR_CID_LOCAL, port);
    let stream =
        match tokio::time::timeout(Duration::from_secs(2), VsockStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                eprintln!("SKIPPED: no vsock loopback on this host: {e}");
                server.abort();
                return;
            }
            Err(_) => {
                eprintln!("SKIPPED: no vsock loopback on this host (connect timed out)");
                server.abort();
                return;
            }
        };
    let (r, w) = stream.into_split();
    let client = AgentClient::new(r, w);
    client.hello().await.expect("hello");
    client.ping().await.expect("ping");
    client.shutdown().await.expect("shutdown");
    let end = tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("listener stops after shutdown")
        .expect("join")
        .expect("serve");
    assert_eq!(end, SessionEnd::Shutdown);
}
