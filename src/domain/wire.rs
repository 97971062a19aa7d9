//! How server functions' answers (and their errors) travel: JSON, as with server_fn's own
//! `Json`, but read from text rather than bytes. Resources hydrate their values from text
//! (`serde_json::from_str`); reading answers the same way compiles one JSON reader per type
//! into the WASM instead of two (one over `&str`, one over `&[u8]`).

use serde::{de::DeserializeOwned, Serialize};
use server_fn::codec::Post;
use server_fn::{Bytes, ContentType, Decodes, Encodes, Format, FormatType};

/// JSON read with `serde_json::from_str`: `output = JsonAnswer` on every server function.
pub struct JsonText;

/// The `output` encoding of the dashboard's server functions.
pub type JsonAnswer = Post<JsonText>;

impl ContentType for JsonText {
    const CONTENT_TYPE: &'static str = "application/json";
}

impl FormatType for JsonText {
    const FORMAT_TYPE: Format = Format::Text;
}

impl<T: Serialize> Encodes<T> for JsonText {
    type Error = serde_json::Error;

    fn encode(output: &T) -> Result<Bytes, Self::Error> {
        serde_json::to_vec(output).map(Bytes::from)
    }
}

impl<T: DeserializeOwned> Decodes<T> for JsonText {
    type Error = serde_json::Error;

    fn decode(bytes: Bytes) -> Result<T, Self::Error> {
        // Invalid UTF-8 is invalid JSON; `from_str` would say so too, with a position.
        let text = std::str::from_utf8(&bytes).map_err(|e| <serde_json::Error as serde::de::Error>::custom(e))?;
        serde_json::from_str(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::error::ApiError;

    #[test]
    fn answers_round_trip_and_bad_bytes_are_errors() {
        let error = ApiError::field(400, "Validation failed", "leadId", "is required");
        let bytes = <JsonText as Encodes<ApiError>>::encode(&error).unwrap();
        assert_eq!(<JsonText as Decodes<ApiError>>::decode(bytes).unwrap(), error);
        let not_utf8 = Bytes::from_static(b"\"\xff\"");
        assert!(<JsonText as Decodes<String>>::decode(not_utf8).is_err());
        assert!(<JsonText as Decodes<u64>>::decode(Bytes::from_static(b"1.5")).is_err());
    }
}
