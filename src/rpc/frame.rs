//! Framing: a 4-byte big-endian length, then a postcard-encoded [`Envelope`]. A frame longer than
//! [`FRAME_BYTES_MAX`] is refused before any of it is buffered.

use bytes::Bytes;
use serde::{de::DeserializeOwned, Serialize};
use tokio_util::codec::LengthDelimitedCodec;

use super::message::Envelope;
use crate::errinput;
use crate::error::{Error, Result};

/// The largest frame either side accepts. A peer announcing a longer one gets an error and the
/// connection is closed (its stream can no longer be trusted). Rebalancing batches stay below it.
pub const FRAME_BYTES_MAX: usize = 8 * 1024 * 1024;

/// The codec for both ends of every connection.
pub fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(4)
        .big_endian()
        .max_frame_length(FRAME_BYTES_MAX)
        .new_codec()
}

/// Writes every frame that arrives on `frames` to `sink`, flushing once per burst (whatever is
/// queued goes out in one write), and half-closes the sink when every sender is gone so the
/// peer sees a clean end of stream. Returns at the first write error.
pub async fn write_coalesced<S>(mut sink: S, mut frames: tokio::sync::mpsc::Receiver<Bytes>)
where
    S: futures::Sink<Bytes> + Unpin,
{
    use futures::SinkExt;
    while let Some(first) = frames.recv().await {
        if sink.feed(first).await.is_err() {
            return;
        }
        // The write syscall, not the frame, is what costs on loopback (the receiver's side of
        // TCP runs inside it). Letting the tasks that are ready run first gives them the chance
        // to queue their frames for this same write: under load that makes one syscall of many
        // frames; idle, it costs one pass through the scheduler.
        tokio::task::yield_now().await;
        while let Ok(more) = frames.try_recv() {
            if sink.feed(more).await.is_err() {
                return;
            }
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
    let _ = sink.close().await;
}

/// Room reserved for an encoded message before encoding it, in bytes: enough for a prepare
/// with its three participants or a small value, so that most messages are encoded without
/// growing the buffer (an empty one grows by doubling, a copy each time). Larger ones still grow.
pub const ENCODE_BYTES_START: usize = 512;

/// Encodes an envelope into a frame payload.
pub fn encode<T: Serialize>(request_id: u64, body: &T) -> Result<Bytes> {
    let envelope = Envelope { request_id, body };
    postcard::serialize_with_flavor(&envelope, Presized(Vec::with_capacity(ENCODE_BYTES_START)))
        .map(Bytes::from)
        .map_err(|err| Error::Internal(format!("cannot encode message: {err}")))
}

/// postcard's `Vec` output, but starting from a buffer the caller sized.
struct Presized(Vec<u8>);

impl postcard::ser_flavors::Flavor for Presized {
    type Output = Vec<u8>;

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<Vec<u8>> {
        Ok(self.0)
    }
}

/// Decodes a frame payload in two steps, so that a body that does not decode still yields the
/// request id its error reply must carry. `Err((Some(id), _))`: the id was readable.
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<Envelope<T>, (Option<u64>, Error)> {
    let (request_id, rest) = postcard::take_from_bytes::<u64>(payload)
        .map_err(|err| (None, errinput!("undecodable frame: {err}")))?;
    let body = postcard::from_bytes::<T>(rest).map_err(|err| {
        let what = match err {
            // postcard reports a variant index past the end as a custom serde error.
            postcard::Error::DeserializeBadEnum | postcard::Error::SerdeDeCustom => {
                "unknown request, or a request malformed for this service".to_string()
            }
            other => format!("malformed message: {other}"),
        };
        (Some(request_id), Error::InvalidRequest(what))
    })?;
    Ok(Envelope { request_id, body })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::message::{Request, ServerRequest};

    #[test]
    fn a_body_that_does_not_decode_still_yields_its_request_id() {
        let mut payload = postcard::to_stdvec(&7u64).unwrap();
        payload.extend_from_slice(&[0xff, 0xff, 0xff]);
        match decode::<Request<ServerRequest>>(&payload) {
            Err((Some(7), Error::InvalidRequest(_))) => {}
            other => panic!("expected an invalid request with id 7, got {other:?}"),
        }
    }

    #[test]
    fn a_prepare_carried_whole_is_encoded_as_its_fields_after_the_variant() {
        // The variant's index, then the struct's fields: carrying it whole adds no framing.
        use crate::types::{Op, Prepare, ServerInfo, Value};
        let prepare = Prepare {
            tx: 9,
            key: "k".into(),
            op: Op::Put(Value::Text("v".into())),
            epoch: 3,
            expected_server_id: "s".into(),
            version: 7,
            participants: vec![ServerInfo {
                id: "s".into(),
                addr: "a:1".into(),
            }],
            range_lost: false,
        };
        let mut expected = vec![4u8]; // Prepare is variant 4 (after Print, Set, Get, QueryAllKeys)
        expected.extend(postcard::to_stdvec(&prepare).unwrap());
        assert_eq!(
            postcard::to_stdvec(&ServerRequest::Prepare(prepare)).unwrap(),
            expected
        );
    }

    #[test]
    fn an_encoded_envelope_decodes_to_itself() {
        let body = Request::Call(ServerRequest::Get {
            key: "k".into(),
            space: crate::types::Space::Ring,
        });
        let bytes = encode(42, &body).unwrap();
        let envelope = decode::<Request<ServerRequest>>(&bytes).unwrap();
        assert_eq!(envelope.request_id, 42);
        assert!(
            matches!(envelope.body, Request::Call(ServerRequest::Get { key, .. }) if key == "k")
        );
    }
}
