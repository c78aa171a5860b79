//! Redaction of secret-looking environment values (`ENV_BLACKLISTED_WORDS`).
//!
//! A key is secret when its name contains one of the words, case-insensitively. Unlike the
//! original, words are matched literally (no regex injection) and an empty list redacts nothing
//! (its bug 39).
//!
//! Webhooks are redacted whatever the words: every header value is shown as `***` (headers carry
//! tokens under any name), and so is each query parameter's value and a URL's user-info password
//! (`https://u:pw@h/p?token=abc&x=1` → `https://u:***@h/p?token=***&x=***`). Parameter names stay,
//! so an operator can still tell which hook is which.

use serde_json::Value;
use std::collections::BTreeMap;

/// The replacement for a redacted value.
pub const REDACTED: &str = "***";

/// The configured words, lower-cased.
#[derive(Clone, Debug, Default)]
pub struct Redactor {
    words: Vec<String>,
}

impl Redactor {
    /// From the comma-separated configuration string.
    pub fn new(words: &str) -> Self {
        Redactor {
            words: words
                .split(',')
                .map(|word| word.trim().to_lowercase())
                .filter(|word| !word.is_empty())
                .collect(),
        }
    }

    /// Whether the value of environment variable `key` must not be shown.
    pub fn is_secret(&self, key: &str) -> bool {
        let key = key.to_lowercase();
        self.words.iter().any(|word| key.contains(word.as_str()))
    }

    /// A copy of `envs` with secret values replaced by `***`.
    pub fn redact(&self, envs: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        envs.iter()
            .map(|(key, value)| {
                let shown = if self.is_secret(key) {
                    REDACTED.to_string()
                } else {
                    value.clone()
                };
                (key.clone(), shown)
            })
            .collect()
    }
}

/// `url` with its user-info password and every query parameter's value replaced by `***`;
/// the fragment is dropped. Text that is not a URL is redacted the same way, as far as it goes.
pub fn redact_url(url: &str) -> String {
    let without_fragment = url.split('#').next().unwrap_or_default();
    let (base, query) = match without_fragment.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (without_fragment, None),
    };
    let mut shown = redact_user_info(base);
    if let Some(query) = query {
        let parameters: Vec<String> = query
            .split('&')
            .filter(|parameter| !parameter.is_empty())
            .map(|parameter| {
                let name = parameter.split('=').next().unwrap_or_default();
                format!("{name}={REDACTED}")
            })
            .collect();
        shown.push('?');
        shown.push_str(&parameters.join("&"));
    }
    shown
}

/// `scheme://user:password@host…` with the password replaced by `***`.
fn redact_user_info(base: &str) -> String {
    let Some((scheme, rest)) = base.split_once("://") else {
        return base.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((user_info, host)) => {
            // A user without a password is often a token (`https://TOKEN@host`).
            let shown = match user_info.split_once(':') {
                Some((user, _)) => format!("{user}:{REDACTED}"),
                None => REDACTED.to_string(),
            };
            format!("{scheme}://{shown}@{host}{path}")
        }
        None => base.to_string(),
    }
}

/// The `webhooks` of a job (`{"succeeds": [{"url", "headers", …}], …}`) with every URL's query
/// and every header value redacted; other fields as they were.
pub fn redact_webhooks(webhooks: &Value) -> Value {
    let mut shown = webhooks.clone();
    if let Some(lists) = shown.as_object_mut() {
        for hook in lists.values_mut().filter_map(Value::as_array_mut).flatten() {
            redact_hook(hook);
        }
    }
    shown
}

/// One webhook object (or one recorded dispatch): its `url` and `headers` redacted in place.
pub fn redact_hook(hook: &mut Value) {
    let Some(hook) = hook.as_object_mut() else {
        return;
    };
    if let Some(Value::String(url)) = hook.get_mut("url") {
        *url = redact_url(url);
    }
    if let Some(Value::Object(headers)) = hook.get_mut("headers") {
        for value in headers.values_mut() {
            *value = Value::String(REDACTED.into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_query_values_and_passwords() {
        assert_eq!(
            redact_url("https://u:pw@h.example:8/p/a?token=abc&x=1#frag"),
            "https://u:***@h.example:8/p/a?token=***&x=***"
        );
        assert_eq!(redact_url("http://h/p?token"), "http://h/p?token=***");
        assert_eq!(redact_url("http://h/p"), "http://h/p");
        assert_eq!(redact_url("http://tok@h/"), "http://***@h/");
        assert_eq!(redact_url("not a url?a=b"), "not a url?a=***");
    }

    #[test]
    fn webhooks_lose_header_values() {
        let hooks = serde_json::json!({"succeeds": [
            {"url": "http://h/?k=v", "headers": {"X-Any": "secret"}, "retries": 2}
        ], "fails": "odd"});
        let shown = redact_webhooks(&hooks);
        assert_eq!(shown["succeeds"][0]["url"], "http://h/?k=***");
        assert_eq!(shown["succeeds"][0]["headers"]["X-Any"], REDACTED);
        assert_eq!(shown["succeeds"][0]["retries"], 2);
        assert_eq!(shown["fails"], "odd");
    }

    #[test]
    fn redacts_like_the_spec_examples() {
        let redactor = Redactor::new("password,key,secret,client_id");
        for secret in ["clientSecret", "Key", "client_id", "PASSWORD_ENV", "monkey"] {
            assert!(redactor.is_secret(secret), "{secret}");
        }
        for plain in ["name", "_id"] {
            assert!(!redactor.is_secret(plain), "{plain}");
        }
        let envs = BTreeMap::from([
            ("API_KEY".to_string(), "s3cr3t".to_string()),
            ("NAME".to_string(), "x".to_string()),
        ]);
        let shown = redactor.redact(&envs);
        assert_eq!(shown["API_KEY"], REDACTED);
        assert_eq!(shown["NAME"], "x");
    }

    #[test]
    fn empty_list_and_regex_characters_are_literal() {
        assert!(!Redactor::new("").is_secret("anything"));
        let redactor = Redactor::new("a.b");
        assert!(redactor.is_secret("X_A.B"));
        assert!(!redactor.is_secret("aXb"));
    }
}
