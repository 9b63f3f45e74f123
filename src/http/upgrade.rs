//! Byte copying both ways after `101 Switching Protocols`.
//!
//! exec, attach and port-forward (SPDY or WebSocket) speak their own protocol
//! once the upstream answered 101; we only copy bytes until either side
//! closes, then close both.

use std::io;

use smol::{
    future, io as fio,
    io::{AsyncRead, AsyncWrite, AsyncWriteExt},
};

/// Copies `a <-> b` until either direction ends. `a_rest`/`b_rest` are bytes
/// already read from `a`/`b` past the HTTP heads; they are delivered first.
/// Returns the bytes copied (a to b, b to a) of the direction that ended.
pub async fn splice<A, B>(a: A, a_rest: Vec<u8>, b: B, b_rest: Vec<u8>) -> io::Result<()>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (a_read, mut a_write) = fio::split(a);
    let (b_read, mut b_write) = fio::split(b);
    b_write.write_all(&a_rest).await?;
    b_write.flush().await?;
    a_write.write_all(&b_rest).await?;
    a_write.flush().await?;
    let a_to_b = async {
        let r = fio::copy(a_read, &mut b_write).await;
        let _ = b_write.close().await;
        r.map(|_| ())
    };
    let b_to_a = async {
        let r = fio::copy(b_read, &mut a_write).await;
        let _ = a_write.close().await;
        r.map(|_| ())
    };
    future::race(a_to_b, b_to_a).await
}
