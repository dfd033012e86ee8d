//! Framing on libp2p streams. The raft stream carries frames of
//! `len: u32 (big-endian), bytes` (one encoded batch each, see `codec.rs`);
//! a large-payload stream carries one `kind: u8, len: u64, bytes` and ends.
//! Every length is checked against the receiver's limit before any buffer
//! is allocated.

use libp2p::futures::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use std::io;

/// What a large payload is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LargeKind {
    /// A raft batch too big for the raft stream (a snapshot): goes to the inbox.
    Raft = 0,
    /// An application payload: goes to the large-payload handler.
    Payload = 1,
}

impl LargeKind {
    fn from_byte(b: u8) -> io::Result<Self> {
        match b {
            0 => Ok(LargeKind::Raft),
            1 => Ok(LargeKind::Payload),
            other => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unknown payload kind {other}"),
            )),
        }
    }
}

fn too_large(len: u64, limit: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("frame of {len} bytes is over the limit of {limit} bytes"),
    )
}

/// Writes one raft frame (no flush).
pub(crate) async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, bytes: &[u8]) -> io::Result<()> {
    let len =
        u32::try_from(bytes.len()).map_err(|_| too_large(bytes.len() as u64, u32::MAX as usize))?;
    w.write_all(&len.to_be_bytes()).await?;
    w.write_all(bytes).await
}

/// Reads one raft frame; `None` at a clean end of the stream.
pub(crate) async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    limit: usize,
) -> io::Result<Option<Vec<u8>>> {
    let mut head = [0u8; 4];
    match r.read_exact(&mut head).await {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(head);
    if len as usize > limit {
        return Err(too_large(len.into(), limit));
    }
    let mut buf = vec![0u8; len as usize];
    r.read_exact(&mut buf).await?;
    Ok(Some(buf))
}

/// Writes a whole large payload and closes the stream.
pub(crate) async fn write_large<W: AsyncWrite + Unpin>(
    w: &mut W,
    kind: LargeKind,
    bytes: &[u8],
) -> io::Result<()> {
    w.write_all(&[kind as u8]).await?;
    w.write_all(&(bytes.len() as u64).to_be_bytes()).await?;
    w.write_all(bytes).await?;
    w.flush().await?;
    w.close().await
}

/// Reads a whole large payload.
pub(crate) async fn read_large<R: AsyncRead + Unpin>(
    r: &mut R,
    limit: usize,
) -> io::Result<(LargeKind, Vec<u8>)> {
    let mut head = [0u8; 9];
    r.read_exact(&mut head).await?;
    let kind = LargeKind::from_byte(head[0])?;
    let mut len = [0u8; 8];
    len.copy_from_slice(&head[1..]);
    let len = u64::from_be_bytes(len);
    if len > limit as u64 {
        return Err(too_large(len, limit));
    }
    let mut buf = vec![0u8; len as usize];
    r.read_exact(&mut buf).await?;
    Ok((kind, buf))
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::futures::executor::block_on;
    use libp2p::futures::io::Cursor;

    #[test]
    fn frames_round_trip_and_oversized_ones_are_refused() {
        block_on(async {
            let mut buf = Cursor::new(Vec::new());
            write_frame(&mut buf, b"abc").await.unwrap();
            write_frame(&mut buf, b"").await.unwrap();
            let mut r = Cursor::new(buf.into_inner());
            assert_eq!(read_frame(&mut r, 16).await.unwrap().unwrap(), b"abc");
            assert_eq!(read_frame(&mut r, 16).await.unwrap().unwrap(), b"");
            assert!(read_frame(&mut r, 16).await.unwrap().is_none());
            let mut r = Cursor::new(vec![0xff, 0xff, 0xff, 0xff, 1]);
            assert!(read_frame(&mut r, 16).await.is_err());
        });
    }

    #[test]
    fn large_payloads_round_trip_within_the_limit() {
        block_on(async {
            let mut buf = Cursor::new(Vec::new());
            write_large(&mut buf, LargeKind::Payload, &[7; 100])
                .await
                .unwrap();
            let bytes = buf.into_inner();
            let (kind, got) = read_large(&mut Cursor::new(bytes.clone()), 100)
                .await
                .unwrap();
            assert_eq!((kind, got), (LargeKind::Payload, vec![7; 100]));
            assert!(read_large(&mut Cursor::new(bytes), 99).await.is_err());
        });
    }
}
