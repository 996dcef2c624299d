//! Telemetry events and the fast code extraction the producer and worker rely on.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Largest event the pipeline accepts, in bytes. Events are ~200 B; anything over 64 KiB is
/// not telemetry and is dead-lettered as `oversize` rather than forwarded.
pub const MAX_EVENT_BYTES: usize = 64 * 1024;

/// An event code (`codigo`): 300, 301, ... It decides the topic and, with the truck, the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Code(pub u32);

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One truck telemetry event as it travels on the wire (JSON, about 200 bytes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TelemetryEvent {
    /// Truck identifier, e.g. `TRK-000042`.
    pub truck_id: String,
    /// Event code.
    pub codigo: Code,
    /// Event time at the truck, milliseconds since the Unix epoch.
    pub ts: u64,
    /// Latitude in degrees.
    pub lat: f64,
    /// Longitude in degrees.
    pub lon: f64,
    /// Speed in km/h.
    pub speed_kmh: f32,
    /// Heading in degrees, 0-359.
    pub heading: u16,
    /// Per-truck sequence number.
    pub seq: u64,
    /// Fuel level, percent.
    pub fuel_pct: f32,
    /// Engine temperature, Celsius.
    pub engine_temp_c: f32,
    /// Odometer, km.
    pub odometer_km: f64,
    /// Driver identifier.
    pub driver_id: String,
}

impl TelemetryEvent {
    /// Full, validating parse of an event: what a worker does before dispatching.
    pub fn parse(bytes: &[u8]) -> Result<Self, EventError> {
        if bytes.len() > MAX_EVENT_BYTES {
            return Err(EventError::Oversize(bytes.len()));
        }
        let text = std::str::from_utf8(bytes).map_err(|_| EventError::NotUtf8)?;
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| EventError::NotJson(e.to_string()))?;
        match value.get("codigo") {
            None => return Err(EventError::MissingCode),
            Some(serde_json::Value::Number(n))
                if n.as_u64().is_some_and(|c| c <= u32::MAX as u64) => {}
            Some(other) => return Err(EventError::InvalidCode(truncate(&other.to_string()))),
        }
        serde_json::from_value(value).map_err(|e| EventError::Schema(e.to_string()))
    }
}

/// Why an event was rejected. Every rejected event is answered: counted and dead-lettered with
/// [`EventError::class`] and the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// The bytes are not UTF-8.
    #[error("event is not valid UTF-8")]
    NotUtf8,
    /// The bytes are not JSON.
    #[error("event is not JSON: {0}")]
    NotJson(String),
    /// No `codigo` field.
    #[error("event has no \"codigo\" field")]
    MissingCode,
    /// `codigo` is present but not a non-negative integer.
    #[error("event \"codigo\" is not a non-negative integer: {0}")]
    InvalidCode(String),
    /// Valid JSON with a code, but the rest does not match the event schema.
    #[error("event does not match the schema: {0}")]
    Schema(String),
    /// Larger than [`MAX_EVENT_BYTES`].
    #[error("event is {0} bytes, over the {MAX_EVENT_BYTES} byte limit")]
    Oversize(usize),
}

impl EventError {
    /// Low-cardinality error class for metrics and dead-letter headers.
    pub fn class(&self) -> &'static str {
        match self {
            EventError::NotUtf8 => "not_utf8",
            EventError::NotJson(_) => "not_json",
            EventError::MissingCode => "missing_code",
            EventError::InvalidCode(_) => "invalid_code",
            EventError::Schema(_) => "schema",
            EventError::Oversize(_) => "oversize",
        }
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

/// Finds the value of a top-level-looking `"field":` in a JSON object without parsing it.
fn find_field<'a>(bytes: &'a [u8], field: &[u8]) -> Option<&'a [u8]> {
    let mut from = 0;
    while from + field.len() + 2 <= bytes.len() {
        let rel = bytes[from..].windows(field.len() + 2).position(|w| {
            w[0] == b'"' && &w[1..=field.len()] == field && w[field.len() + 1] == b'"'
        })?;
        let mut i = from + rel + field.len() + 2;
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if i < bytes.len() && bytes[i] == b':' {
            i += 1;
            while i < bytes.len() && bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            return Some(&bytes[i..]);
        }
        from = from + rel + 1;
    }
    None
}

/// Extracts `codigo` from raw event bytes without a full JSON parse (the producer's hot path).
///
/// Accepts an unsigned integer value (`"codigo": 300`) or a quoted one (`"codigo": "300"`),
/// as .NET producers sometimes send. Anything else is an [`EventError`]; the caller decides
/// whether that means a reject file or a dead-letter topic, never a silent drop.
pub fn extract_code(bytes: &[u8]) -> Result<Code, EventError> {
    if bytes.len() > MAX_EVENT_BYTES {
        return Err(EventError::Oversize(bytes.len()));
    }
    let rest = find_field(bytes, b"codigo").ok_or(EventError::MissingCode)?;
    let (digits_from, quoted) = if rest.first() == Some(&b'"') {
        (1, true)
    } else {
        (0, false)
    };
    let digits = &rest[digits_from..];
    let len = digits.iter().take_while(|b| b.is_ascii_digit()).count();
    let invalid = || {
        EventError::InvalidCode(truncate(&String::from_utf8_lossy(
            &rest[..rest.len().min(16)],
        )))
    };
    if len == 0 || len > 9 {
        return Err(invalid());
    }
    let terminator = digits.get(len).copied();
    let ok_end = if quoted {
        terminator == Some(b'"')
    } else {
        matches!(
            terminator,
            Some(b',') | Some(b'}') | Some(b' ') | Some(b'\n') | Some(b'\r') | Some(b'\t')
        )
    };
    if !ok_end {
        return Err(invalid());
    }
    let mut value: u32 = 0;
    for d in &digits[..len] {
        value = value * 10 + u32::from(d - b'0');
    }
    Ok(Code(value))
}

/// Extracts `truck_id` (a JSON string without escapes) from raw event bytes, if present.
pub fn extract_truck_id(bytes: &[u8]) -> Option<&[u8]> {
    let rest = find_field(bytes, b"truck_id")?;
    if rest.first() != Some(&b'"') {
        return None;
    }
    let body = &rest[1..];
    let end = body.iter().position(|&b| b == b'"' || b == b'\\')?;
    (body[end] == b'"').then_some(&body[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample(code: u32) -> TelemetryEvent {
        TelemetryEvent {
            truck_id: "TRK-000042".into(),
            codigo: Code(code),
            ts: 1_700_000_000_000,
            lat: -23.55,
            lon: -46.63,
            speed_kmh: 72.5,
            heading: 180,
            seq: 7,
            fuel_pct: 55.0,
            engine_temp_c: 90.5,
            odometer_km: 123456.7,
            driver_id: "DRV-0042".into(),
        }
    }

    #[test]
    fn extracts_code_and_truck_from_serialized_event() {
        let bytes = serde_json::to_vec(&sample(301)).unwrap();
        assert_eq!(extract_code(&bytes), Ok(Code(301)));
        assert_eq!(extract_truck_id(&bytes), Some(&b"TRK-000042"[..]));
    }

    #[test]
    fn accepts_spaces_and_quoted_codes() {
        assert_eq!(extract_code(br#"{ "codigo" : 302 }"#), Ok(Code(302)));
        assert_eq!(extract_code(br#"{"codigo":"303","x":1}"#), Ok(Code(303)));
    }

    #[test]
    fn rejects_missing_and_invalid_codes() {
        assert_eq!(
            extract_code(br#"{"truck_id":"a"}"#),
            Err(EventError::MissingCode)
        );
        assert!(matches!(
            extract_code(br#"{"codigo":"abc"}"#),
            Err(EventError::InvalidCode(_))
        ));
        assert!(matches!(
            extract_code(br#"{"codigo":-3}"#),
            Err(EventError::InvalidCode(_))
        ));
        assert!(matches!(
            extract_code(br#"{"codigo":3.5}"#),
            Err(EventError::InvalidCode(_))
        ));
        assert!(matches!(
            extract_code(br#"{"codigo":null}"#),
            Err(EventError::InvalidCode(_))
        ));
        // A field merely containing the name is not the field.
        assert_eq!(
            extract_code(br#"{"xcodigo":300}"#),
            Err(EventError::MissingCode)
        );
    }

    #[test]
    fn full_parse_classifies_errors() {
        assert_eq!(
            TelemetryEvent::parse(&[0xff, 0xfe]).unwrap_err().class(),
            "not_utf8"
        );
        assert_eq!(
            TelemetryEvent::parse(b"{not json").unwrap_err().class(),
            "not_json"
        );
        assert_eq!(
            TelemetryEvent::parse(br#"{"truck_id":"a"}"#)
                .unwrap_err()
                .class(),
            "missing_code"
        );
        assert_eq!(
            TelemetryEvent::parse(br#"{"codigo":"x"}"#)
                .unwrap_err()
                .class(),
            "invalid_code"
        );
        assert_eq!(
            TelemetryEvent::parse(br#"{"codigo":300}"#)
                .unwrap_err()
                .class(),
            "schema"
        );
        let big = vec![b' '; MAX_EVENT_BYTES + 1];
        assert_eq!(TelemetryEvent::parse(&big).unwrap_err().class(), "oversize");
        let ok = serde_json::to_vec(&sample(300)).unwrap();
        assert_eq!(TelemetryEvent::parse(&ok).unwrap(), sample(300));
    }

    proptest! {
        #[test]
        fn fast_extraction_agrees_with_serde(code in 0u32..1_000_000_000, truck in "[A-Z0-9-]{1,20}") {
            let mut ev = sample(code);
            ev.truck_id = truck.clone();
            let bytes = serde_json::to_vec(&ev).unwrap();
            prop_assert_eq!(extract_code(&bytes), Ok(Code(code)));
            prop_assert_eq!(extract_truck_id(&bytes), Some(truck.as_bytes()));
        }

        #[test]
        fn never_panics_on_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = extract_code(&bytes);
            let _ = extract_truck_id(&bytes);
            let _ = TelemetryEvent::parse(&bytes);
        }
    }
}
