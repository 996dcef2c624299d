//! Settings of the local Invoke server.

/// Default request body limit: 6 MiB, Lambda's synchronous invocation payload limit, so a batch
/// that fits here fits a real Lambda too.
pub const DEFAULT_MAX_BODY_BYTES: usize = 6 * 1024 * 1024;

/// A bearer token. `Debug` prints `***` so it never reaches logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// Wraps a token; `None` for an empty string (an empty token would accept `Bearer `).
    pub fn new(token: impl Into<String>) -> Option<Self> {
        let token = token.into();
        (!token.is_empty()).then_some(Self(token))
    }

    /// Compares without an early exit on the first differing byte.
    pub fn matches(&self, presented: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), presented.as_bytes());
        let diff = a
            .iter()
            .zip(b)
            .fold(a.len() ^ b.len(), |acc, (x, y)| acc | usize::from(x ^ y));
        diff == 0
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// Settings of [`super::router`].
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Largest accepted request body; larger ones get 413. Default [`DEFAULT_MAX_BODY_BYTES`].
    pub max_body_bytes: usize,
    /// When set, Invoke requests must carry `Authorization: Bearer <token>` or
    /// `X-Fleetstream-Token: <token>` (the latter for AWS SDK clients, whose `Authorization`
    /// header holds their SigV4 signature); otherwise 401. `GET /metrics` and `GET /health`
    /// stay open: they carry no record data. Default: none.
    pub token: Option<Token>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            token: None,
        }
    }
}
