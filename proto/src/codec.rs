//! The codec every Seawall service uses: prost, but a message that does not
//! decode is answered with `INVALID_ARGUMENT` naming the problem (tonic's
//! own answer is INTERNAL), so a bad client learns it sent bad input. A
//! message larger than [`MAX_MESSAGE`] is refused by tonic from its length
//! prefix (OUT_OF_RANGE), before any of it is buffered.

use bytes::Buf;
use prost::Message;
use std::marker::PhantomData;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

/// The largest message a Seawall service accepts.
pub const MAX_MESSAGE: usize = 1024 * 1024;

/// tonic's limit on servers using this codec: the same, because tonic
/// reserves a buffer of the declared length as soon as it reads the
/// prefix, so a higher limit lets a client make the server allocate it.
pub const TRANSPORT_LIMIT: usize = MAX_MESSAGE;

/// Prost with strict decoding.
#[derive(Debug)]
pub struct StrictCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for StrictCodec<T, U> {
    fn default() -> Self {
        StrictCodec(PhantomData)
    }
}

impl<T, U> Codec for StrictCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = StrictEncoder<T>;
    type Decoder = StrictDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        StrictEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        StrictDecoder(PhantomData)
    }
}

/// Encodes with prost.
#[derive(Debug)]
pub struct StrictEncoder<T>(PhantomData<T>);

impl<T: Message> Encoder for StrictEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(buf)
            .map_err(|e| Status::internal(format!("encoding a reply: {e}")))
    }
}

/// Decodes with prost, refusing bad and oversized input as INVALID_ARGUMENT.
#[derive(Debug)]
pub struct StrictDecoder<U>(PhantomData<U>);

impl<U: Message + Default> Decoder for StrictDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        let len = buf.remaining();
        if len > MAX_MESSAGE {
            return Err(Status::invalid_argument(format!(
                "message of {len} bytes is larger than the {MAX_MESSAGE}-byte limit"
            )));
        }
        U::decode(buf).map(Some).map_err(|e| {
            Status::invalid_argument(format!(
                "message is not a valid {}: {e}",
                std::any::type_name::<U>()
            ))
        })
    }
}
