//! The REST key/value API (the PySyncObj assignment's contract): values are lists of strings.
//!
//! * `GET /keys/{key}`: 200 with a JSON array of strings; 404 if the key does not exist; 400 if
//!   it holds a text (set by `setr`); 500 on an unexpected error.
//! * `POST /keys/{key}`, media type `application/json`, body `{"type": "PUT", "value": [..]}`
//!   (replace) or `{"type": "APPEND", "value": "c"}` (add one item; a list adds its items in
//!   order; a missing key becomes the list): 204. Anything else: 400 with a text naming the
//!   problem.
//!
//! Keys may contain slashes, raw or URL-encoded (`%2F`): the route takes the rest of the path.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, Response, StatusCode};
use axum::response::IntoResponse;

use super::{text, Gateway};
use crate::error::Error;
use crate::types::Value;

pub async fn get_key(
    State(gateway): State<Arc<Gateway>>,
    Path(key): Path<String>,
) -> Response<Body> {
    match gateway.client.getr(&key).await {
        Ok(Some(found)) => match found.value.value {
            Value::List(items) => (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                serde_json::json!(items).to_string(),
            )
                .into_response(),
            Value::Text(_) => text(
                StatusCode::BAD_REQUEST,
                format!("{key:?} holds a text, not a list of strings\n"),
            ),
        },
        Ok(None) => text(StatusCode::NOT_FOUND, format!("no key {key:?}\n")),
        Err(Error::InvalidRequest(why)) => text(StatusCode::BAD_REQUEST, format!("{why}\n")),
        Err(err) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{err}\n")),
    }
}

/// A parsed POST body.
#[derive(Debug, PartialEq, Eq)]
pub enum Update {
    Put(Vec<String>),
    Append(Vec<String>),
}

/// Parses and checks a POST: media type, JSON, type, value shape. `Err` is the 400 message.
pub fn parse_update(headers: &HeaderMap, body: &[u8]) -> Result<Update, String> {
    let media_type = headers
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("(not text)").to_string())
        .unwrap_or_else(|| "none".into());
    let essence = media_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence != "application/json" {
        return Err(format!(
            "the media type must be application/json, got {media_type}"
        ));
    }
    let doc: serde_json::Value =
        serde_json::from_slice(body).map_err(|err| format!("malformed JSON: {err}"))?;
    let object = doc
        .as_object()
        .ok_or("the body must be a JSON object with \"type\" and \"value\"")?;
    let kind = object
        .get("type")
        .and_then(|t| t.as_str())
        .ok_or("missing \"type\" (PUT or APPEND)")?;
    let value = object.get("value").ok_or("missing \"value\"")?;
    let strings = |value: &serde_json::Value| -> Option<Vec<String>> {
        value
            .as_array()?
            .iter()
            .map(|item| item.as_str().map(str::to_string))
            .collect()
    };
    match kind {
        "PUT" => strings(value)
            .map(Update::Put)
            .ok_or_else(|| "a PUT value must be a list of strings".to_string()),
        "APPEND" => match value {
            serde_json::Value::String(item) => Ok(Update::Append(vec![item.clone()])),
            _ => match strings(value) {
                Some(items) if !items.is_empty() => Ok(Update::Append(items)),
                _ => Err("an APPEND value must be a string or a non-empty list of strings".into()),
            },
        },
        other => Err(format!("unknown type {other:?}: expected PUT or APPEND")),
    }
}

pub async fn post_key(
    State(gateway): State<Arc<Gateway>>,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let update = match parse_update(&headers, &body) {
        Ok(update) => update,
        Err(why) => return text(StatusCode::BAD_REQUEST, format!("{why}\n")),
    };
    let outcome = match update {
        Update::Put(items) => gateway
            .client
            .setr(&key, Value::List(items))
            .await
            .map(|_| ()),
        Update::Append(items) => {
            let mut outcome = Ok(());
            for item in items {
                outcome = gateway.client.append(&key, &item).await.map(|_| ());
                if outcome.is_err() {
                    break;
                }
            }
            outcome
        }
    };
    match outcome {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(Error::InvalidRequest(why)) => text(StatusCode::BAD_REQUEST, format!("{why}\n")),
        Err(err) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{err}\n")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_headers(media_type: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, media_type.parse().unwrap());
        headers
    }

    #[test]
    fn put_and_append_bodies_parse_with_or_without_parameters() {
        let h = json_headers("application/json; charset=utf-8");
        assert_eq!(
            parse_update(&h, br#"{"type":"PUT","value":["a","b"]}"#),
            Ok(Update::Put(vec!["a".into(), "b".into()]))
        );
        assert_eq!(
            parse_update(&h, br#"{"type":"APPEND","value":"c"}"#),
            Ok(Update::Append(vec!["c".into()]))
        );
        assert_eq!(
            parse_update(&h, br#"{"type":"APPEND","value":["mouse"]}"#),
            Ok(Update::Append(vec!["mouse".into()]))
        );
    }

    #[test]
    fn bad_requests_name_the_problem() {
        let h = json_headers("application/json");
        let cases: [(&HeaderMap, &[u8], &str); 6] = [
            (
                &json_headers("text/plain"),
                br#"{"type":"PUT","value":[]}"#,
                "media type",
            ),
            (&h, b"{not json", "malformed JSON"),
            (&h, br#"{"type":"DELETE","value":[]}"#, "unknown type"),
            (&h, br#"{"type":"PUT","value":"x"}"#, "list of strings"),
            (&h, br#"{"type":"APPEND","value":[1]}"#, "APPEND value"),
            (&h, br#"{"value":[]}"#, "missing \"type\""),
        ];
        for (headers, body, needle) in cases {
            match parse_update(headers, body) {
                Err(why) => assert!(why.contains(needle), "{why:?} should mention {needle:?}"),
                Ok(update) => panic!("{:?} parsed as {update:?}", String::from_utf8_lossy(body)),
            }
        }
    }
}
