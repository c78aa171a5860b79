//! Redaction of secret-looking environment values (`ENV_BLACKLISTED_WORDS`).
//!
//! A key is secret when its name contains one of the words, case-insensitively. Unlike the
//! original, words are matched literally (no regex injection) and an empty list redacts nothing
//! (its bug 39).

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

#[cfg(test)]
mod tests {
    use super::*;

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
