//! Bytes on the wire: batches of raft messages tagged with their group (a
//! snapshot message carries only its descriptor, see `snapshot.rs`). Every
//! length is checked against the input before anything is allocated, and a
//! batch over the receiver's limit is refused whole.

use protobuf::Message as _;
use raft::eraftpb::Message;

use crate::{GroupId, ReplicationError, Result};

/// A raft message for one group: what a transport carries.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupMessage {
    pub group: GroupId,
    pub msg: Message,
}

/// Encodes a batch: `count: u32`, then per message `group: u32, len: u32, bytes`.
pub fn encode_batch(batch: &[GroupMessage]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend((batch.len() as u32).to_be_bytes());
    for m in batch {
        // Encoding a message raft built cannot fail; an empty frame is refused
        // by the receiver rather than panicking here.
        let bytes = m.msg.write_to_bytes().unwrap_or_default();
        out.extend(m.group.to_be_bytes());
        out.extend((bytes.len() as u32).to_be_bytes());
        out.extend(bytes);
    }
    out
}

/// Decodes a batch, refusing anything over `limit` bytes before reading it.
pub fn decode_batch(bytes: &[u8], limit: usize) -> Result<Vec<GroupMessage>> {
    if bytes.len() > limit {
        return Err(ReplicationError::MessageTooLarge {
            size: bytes.len(),
            limit,
        });
    }
    let mut r = Reader(bytes);
    let count = r.u32()?;
    let mut out = Vec::new();
    for _ in 0..count {
        let group = r.u32()?;
        let frame = r.frame()?;
        let msg = Message::parse_from_bytes(frame)
            .map_err(|e| ReplicationError::Malformed(format!("raft message: {e}")))?;
        out.push(GroupMessage { group, msg });
    }
    if !r.0.is_empty() {
        return Err(ReplicationError::Malformed(format!(
            "{} trailing bytes",
            r.0.len()
        )));
    }
    Ok(out)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn u32(&mut self) -> Result<u32> {
        let (head, rest) = self
            .0
            .split_first_chunk::<4>()
            .ok_or_else(|| ReplicationError::Malformed("truncated length".into()))?;
        self.0 = rest;
        Ok(u32::from_be_bytes(*head))
    }

    fn frame(&mut self) -> Result<&'a [u8]> {
        let len = self.u32()? as usize;
        if len > self.0.len() {
            return Err(ReplicationError::Malformed(format!(
                "frame of {len} bytes, {} left",
                self.0.len()
            )));
        }
        let (frame, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::eraftpb::{Entry, MessageType};

    fn sample() -> Vec<GroupMessage> {
        let mut msg = Message::default();
        msg.set_msg_type(MessageType::MsgAppend);
        msg.to = 2;
        msg.from = 1;
        msg.term = 7;
        let e = Entry {
            index: 3,
            data: b"hello".to_vec().into(),
            ..Default::default()
        };
        msg.entries.push(e);
        vec![
            GroupMessage {
                group: 4,
                msg: msg.clone(),
            },
            GroupMessage { group: 9, msg },
        ]
    }

    #[test]
    fn a_batch_round_trips() {
        let batch = sample();
        let bytes = encode_batch(&batch);
        assert_eq!(decode_batch(&bytes, 1 << 20).unwrap(), batch);
    }

    #[test]
    fn oversized_truncated_and_trailing_input_is_refused() {
        let bytes = encode_batch(&sample());
        assert!(matches!(
            decode_batch(&bytes, 10),
            Err(ReplicationError::MessageTooLarge { .. })
        ));
        for cut in [0, 3, 9, bytes.len() - 1] {
            assert!(
                decode_batch(&bytes[..cut], 1 << 20).is_err(),
                "cut at {cut}"
            );
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(decode_batch(&long, 1 << 20).is_err());
        // A count that promises more than the bytes hold.
        let mut lying = bytes;
        lying[..4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(decode_batch(&lying, 1 << 20).is_err());
    }
}
