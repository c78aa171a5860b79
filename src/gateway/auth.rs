//! Who is asking, and what they may do: HTTP basic auth (`BASIC_AUTH_*`, every scope) and API
//! tokens (`API_TOKENS`, the scopes each lists), sent as `Authorization: Bearer <token>`.
//!
//! Only digests are kept in memory: a token is configured by its SHA-256, and the basic-auth
//! user and password are hashed at start. A presented secret is hashed and compared with each
//! digest in constant time (`subtle`), so the answer's timing says nothing about how much of it
//! was right, nor about its length.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What a route needs. Scopes are independent: a token has exactly the ones it lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scope {
    /// GETs, WebSockets and stream pages.
    Read,
    /// Creating and replacing jobs, stopping, retrying.
    Submit,
    /// The Docker host blacklist and any later management route.
    Admin,
}

impl Scope {
    fn bit(self) -> u8 {
        match self {
            Scope::Read => 1,
            Scope::Submit => 2,
            Scope::Admin => 4,
        }
    }

    /// The name used in `API_TOKENS` and in error messages.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Submit => "submit",
            Scope::Admin => "admin",
        }
    }

    fn parse(name: &str) -> Option<Scope> {
        [Scope::Read, Scope::Submit, Scope::Admin]
            .into_iter()
            .find(|scope| scope.name() == name)
    }
}

/// A set of scopes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Scopes(u8);

impl Scopes {
    const ALL: Scopes = Scopes(7);

    /// Whether `scope` is in the set.
    pub(crate) fn allows(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }
}

/// One entry of `API_TOKENS`.
#[derive(Clone, Debug)]
pub(crate) struct ApiToken {
    name: String,
    sha256: [u8; 32],
    scopes: Scopes,
}

/// Parses `API_TOKENS`: a JSON list of `{"name", "sha256", "scopes"}`. The error never quotes
/// a value, since a misplaced token would be one.
pub(crate) fn parse_tokens(value: &Value) -> Result<Vec<ApiToken>, String> {
    let entries = match value {
        Value::Null => return Ok(Vec::new()),
        Value::Array(entries) => entries,
        _ => return Err("expected a JSON list of {\"name\", \"sha256\", \"scopes\"}".into()),
    };
    let mut tokens: Vec<ApiToken> = Vec::with_capacity(entries.len());
    for (index, entry) in entries.iter().enumerate() {
        let token = parse_token(entry).map_err(|reason| format!("entry {index}: {reason}"))?;
        if tokens.iter().any(|other| other.name == token.name) {
            return Err(format!(
                "entry {index}: the name {:?} is used twice",
                token.name
            ));
        }
        tokens.push(token);
    }
    Ok(tokens)
}

fn parse_token(entry: &Value) -> Result<ApiToken, String> {
    let object = entry
        .as_object()
        .ok_or("expected an object {\"name\", \"sha256\", \"scopes\"}")?;
    if let Some(key) = object
        .keys()
        .find(|key| !matches!(key.as_str(), "name" | "sha256" | "scopes"))
    {
        return Err(format!(
            "unknown key {key:?} (only \"name\", \"sha256\" and \"scopes\"; store the token's \
             SHA-256, never the token)"
        ));
    }
    let name = object
        .get("name")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|name| !name.is_empty() && !name.contains(char::is_control))
        .ok_or("\"name\" must be a non-empty string")?;
    let sha256 = object
        .get("sha256")
        .and_then(Value::as_str)
        .and_then(decode_hex_digest)
        .ok_or("\"sha256\" must be 64 hexadecimal digits (the SHA-256 of the token)")?;
    let names = object
        .get("scopes")
        .and_then(Value::as_array)
        .filter(|names| !names.is_empty())
        .ok_or("\"scopes\" must be a non-empty list of \"read\", \"submit\", \"admin\"")?;
    let mut scopes = Scopes(0);
    for scope in names {
        let scope = scope
            .as_str()
            .and_then(Scope::parse)
            .ok_or("\"scopes\" may only hold \"read\", \"submit\" and \"admin\"")?;
        scopes.0 |= scope.bit();
    }
    Ok(ApiToken {
        name: name.to_string(),
        sha256,
        scopes,
    })
}

fn decode_hex_digest(text: &str) -> Option<[u8; 32]> {
    let text = text.trim().as_bytes();
    if text.len() != 64 {
        return None;
    }
    let mut digest = [0u8; 32];
    for (byte, pair) in digest.iter_mut().zip(text.chunks(2)) {
        let pair = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(digest)
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// The basic-auth account, as digests.
#[derive(Clone, Debug)]
struct BasicAccount {
    user: String,
    user_sha256: [u8; 32],
    password_sha256: [u8; 32],
}

/// Every credential the node accepts.
#[derive(Clone, Debug, Default)]
pub(crate) struct Credentials {
    basic: Option<BasicAccount>,
    tokens: Vec<ApiToken>,
    realm: String,
}

/// Who made a request: the name the access log shows, and what it may do.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Identity<'a> {
    /// The basic-auth user, the token's name, or `anonymous`.
    pub(crate) name: &'a str,
    /// `basic`, `token` or `anonymous`.
    pub(crate) kind: &'static str,
    scopes: Scopes,
}

impl Identity<'_> {
    /// A CORS preflight: answered without credentials, since browsers send none; it may use
    /// no route, only learn which methods a path takes.
    pub(crate) const PREFLIGHT: Identity<'static> = Identity {
        name: "-",
        kind: "preflight",
        scopes: Scopes(0),
    };

    /// Whether this identity may use a route that needs `scope`.
    pub(crate) fn allows(&self, scope: Scope) -> bool {
        self.scopes.allows(scope)
    }
}

impl Credentials {
    /// The credentials: `basic` as `(user, password)`, the parsed `API_TOKENS`, and the realm
    /// of the `WWW-Authenticate` challenge.
    pub(crate) fn new(
        basic: Option<(String, String)>,
        tokens: Vec<ApiToken>,
        realm: String,
    ) -> Credentials {
        Credentials {
            basic: basic.map(|(user, password)| BasicAccount {
                user_sha256: sha256(user.as_bytes()),
                password_sha256: sha256(password.as_bytes()),
                user,
            }),
            tokens,
            realm,
        }
    }

    /// Whether any credential is configured; without one every request is anonymous and has
    /// every scope (which is why a node then only listens on loopback, unless told otherwise).
    pub(crate) fn required(&self) -> bool {
        self.basic.is_some() || !self.tokens.is_empty()
    }

    /// The identity an `Authorization` header value proves, or `None` (401).
    pub(crate) fn authenticate(&self, authorization: Option<&[u8]>) -> Option<Identity<'_>> {
        if !self.required() {
            return Some(Identity {
                name: "anonymous",
                kind: "anonymous",
                scopes: Scopes::ALL,
            });
        }
        let value = std::str::from_utf8(authorization?).ok()?.trim();
        let (scheme, secret) = value.split_once(' ')?;
        let secret = secret.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            let digest = sha256(secret.as_bytes());
            // Every token is compared, so the time taken does not depend on which one matched.
            let mut found = None;
            for token in &self.tokens {
                if bool::from(token.sha256.ct_eq(&digest)) {
                    found = Some(token);
                }
            }
            return found.map(|token| Identity {
                name: &token.name,
                kind: "token",
                scopes: token.scopes,
            });
        }
        if scheme.eq_ignore_ascii_case("basic") {
            let account = self.basic.as_ref()?;
            let decoded = BASE64.decode(secret).ok()?;
            let colon = decoded.iter().position(|&byte| byte == b':')?;
            let (user, password) = (&decoded[..colon], &decoded[colon + 1..]);
            let user_ok = account.user_sha256.ct_eq(&sha256(user));
            let password_ok = account.password_sha256.ct_eq(&sha256(password));
            // `&` on `Choice`, not `&&`: both comparisons always run.
            if bool::from(user_ok & password_ok) {
                return Some(Identity {
                    name: &account.user,
                    kind: "basic",
                    scopes: Scopes::ALL,
                });
            }
        }
        None
    }

    /// The `WWW-Authenticate` challenges of a 401: `Basic` when basic auth is on (browsers
    /// then ask for a login), `Bearer` when tokens are.
    pub(crate) fn challenges(&self) -> Vec<String> {
        let realm = self.realm.replace(['"', '\\'], "");
        let mut challenges = Vec::new();
        if self.basic.is_some() {
            challenges.push(format!("Basic realm=\"{realm}\""));
        }
        if !self.tokens.is_empty() {
            challenges.push(format!("Bearer realm=\"{realm}\""));
        }
        challenges
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hex(digest: [u8; 32]) -> String {
        digest.iter().map(|byte| format!("{byte:02x}")).collect()
    }

    fn credentials() -> Credentials {
        let tokens = parse_tokens(&json!([
            {"name": "reader", "sha256": hex(sha256(b"r-token")), "scopes": ["read"]},
            {"name": "ops", "sha256": hex(sha256(b"o-token")).to_uppercase(), "scopes": ["submit", "admin"]},
        ]))
        .unwrap();
        Credentials::new(Some(("user".into(), "pass".into())), tokens, "fl".into())
    }

    #[test]
    fn tokens_and_basic_auth_prove_their_identity() {
        let credentials = credentials();
        let reader = credentials.authenticate(Some(b"Bearer r-token")).unwrap();
        assert_eq!((reader.name, reader.kind), ("reader", "token"));
        assert!(reader.allows(Scope::Read) && !reader.allows(Scope::Submit));
        let ops = credentials.authenticate(Some(b"bearer  o-token")).unwrap();
        assert!(!ops.allows(Scope::Read) && ops.allows(Scope::Admin));
        let basic = credentials
            .authenticate(Some(b"Basic dXNlcjpwYXNz"))
            .unwrap();
        assert_eq!((basic.name, basic.kind), ("user", "basic"));
        assert!(basic.allows(Scope::Admin));
        for wrong in [
            &b"Bearer nope"[..],
            b"Basic dXNlcjpwYXN6",
            b"Basic dXNlcg==",
            b"Basic !!!",
            b"Bearer",
            b"Digest x",
            b"\xff",
        ] {
            assert!(credentials.authenticate(Some(wrong)).is_none());
        }
        assert!(credentials.authenticate(None).is_none());
        assert_eq!(
            credentials.challenges(),
            ["Basic realm=\"fl\"", "Bearer realm=\"fl\""]
        );
    }

    #[test]
    fn without_credentials_everyone_is_anonymous() {
        let open = Credentials::default();
        assert!(!open.required());
        let identity = open.authenticate(None).unwrap();
        assert_eq!(identity.name, "anonymous");
        assert!(identity.allows(Scope::Admin));
    }

    #[test]
    fn bad_token_lists_are_refused_without_quoting_values() {
        let digest = hex(sha256(b"x"));
        for (value, expected) in [
            (json!({}), "JSON list"),
            (
                json!([{"name": "a", "token": "s3cret", "scopes": ["read"]}]),
                "never the token",
            ),
            (
                json!([{"name": "", "sha256": digest, "scopes": ["read"]}]),
                "\"name\"",
            ),
            (
                json!([{"name": "a", "sha256": "abc", "scopes": ["read"]}]),
                "64 hexadecimal",
            ),
            (
                json!([{"name": "a", "sha256": digest, "scopes": []}]),
                "non-empty list",
            ),
            (
                json!([{"name": "a", "sha256": digest, "scopes": ["root"]}]),
                "may only hold",
            ),
            (
                json!([{"name": "a", "sha256": digest, "scopes": ["read"]},
                       {"name": "a", "sha256": digest, "scopes": ["read"]}]),
                "used twice",
            ),
        ] {
            let error = parse_tokens(&value).unwrap_err();
            assert!(error.contains(expected), "{error}");
            assert!(!error.contains("s3cret"), "{error}");
        }
        assert!(parse_tokens(&Value::Null).unwrap().is_empty());
    }
}
