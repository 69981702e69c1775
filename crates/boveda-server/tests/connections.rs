//! Issue 22, 3: connections no client can hoard, over real sockets. Idle
//! connections were never closed (1 050 of them stopped all service under
//! `ulimit -n 1024`) and half-sent headers were held a minute with no 408.
//! Clients here come from several loopback addresses, as different hosts.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use boveda_server::guard::{Guarded, Limits};
use common::fixture;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

async fn connect_from(ip: [u8; 4], to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::from((ip, 0))).expect("bind a loopback address");
    socket.connect(to).await.expect("connect")
}

/// What the server sends before it closes, within `limit`.
async fn answer(conn: &mut TcpStream, limit: Duration) -> String {
    let mut all = Vec::new();
    let _ = tokio::time::timeout(limit, conn.read_to_end(&mut all)).await;
    String::from_utf8_lossy(&all).into_owned()
}

async fn get_vaults(from: [u8; 4], to: SocketAddr, token: &str) -> String {
    let mut conn = connect_from(from, to).await;
    let req =
        format!("GET /api/v1/vaults HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n");
    conn.write_all(req.as_bytes()).await.expect("write");
    answer(&mut conn, Duration::from_secs(10)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_connections_are_closed_and_no_address_holds_them_all() {
    let f = fixture();
    let token = f.token("Reader").to_string();
    let limits =
        Limits { max_connections: 40, per_address: 10, headers: Duration::from_secs(1), idle: Duration::from_secs(2) };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(boveda_server::serve(
        Guarded::new(listener, limits),
        boveda_server::router(f.app.clone()),
        async move {
            let _ = rx.await;
        },
    ));

    // one address opens all it may and sends nothing
    let mut idle = Vec::new();
    for _ in 0..10 {
        idle.push(connect_from([127, 0, 0, 2], addr).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut over = connect_from([127, 0, 0, 2], addr).await;
    let refused = answer(&mut over, Duration::from_secs(5)).await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.to_ascii_lowercase().contains("retry-after: 1"), "{refused}");
    // everyone else is still served meanwhile
    let served = get_vaults([127, 0, 0, 1], addr, &token).await;
    assert!(served.starts_with("HTTP/1.1 200"), "{served}");

    // idle connections are closed after the idle limit
    let started = Instant::now();
    for conn in &mut idle {
        let said = answer(conn, Duration::from_secs(6)).await;
        assert!(said.is_empty(), "closed without a word: {said}");
    }
    assert!(started.elapsed() < Duration::from_secs(6), "closed by the idle limit");
    drop(idle);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let again = get_vaults([127, 0, 0, 2], addr, &token).await;
    assert!(again.starts_with("HTTP/1.1 200"), "the address may connect again: {again}");

    // half-sent headers get a 408 once the header limit passes
    let mut slow = connect_from([127, 0, 0, 3], addr).await;
    slow.write_all(b"GET /api/v1/vaults HTTP/1.1\r\nHost: x\r\n").await.expect("write");
    let started = Instant::now();
    let said = answer(&mut slow, Duration::from_secs(6)).await;
    assert!(said.starts_with("HTTP/1.1 408"), "{said}");
    assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());
    // ... also when they trickle in a byte at a time
    let mut trickle = connect_from([127, 0, 0, 3], addr).await;
    let started = Instant::now();
    let mut closed = false;
    for b in b"GET /api/v1/vaults HTTP/1.1\r\nHost: xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n" {
        if trickle.write_all(&[*b]).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        if started.elapsed() > Duration::from_secs(5) {
            break;
        }
    }
    let said = answer(&mut trickle, Duration::from_secs(3)).await;
    assert!(closed || said.starts_with("HTTP/1.1 408"), "{said}");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());

    // the total: four addresses take 40; a fifth is refused, not queued
    let mut many = Vec::new();
    for ip in 4..8u8 {
        for _ in 0..10 {
            many.push(connect_from([127, 0, 0, ip], addr).await);
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut fifth = connect_from([127, 0, 0, 9], addr).await;
    let refused = answer(&mut fifth, Duration::from_secs(5)).await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    drop(many);

    let _ = tx.send(());
    server.await.expect("join").expect("served");
}
