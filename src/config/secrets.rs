//! What a configuration error may say: it names the option, but never quotes the value of one
//! that may hold a secret, and any parser's message is scrubbed of those values.

use super::ConfigError;

/// Whether an option's value may hold a secret (a password, a token, a URL or DSN with
/// credentials), so that no error message quotes it.
pub(super) fn is_secret_option(name: &str) -> bool {
    [
        "PASSWORD",
        "SECRET",
        "TOKEN",
        "DSN",
        "_URL",
        "MONGODB_CONFIG",
        "_KEY",
        "REGISTRY_AUTH",
    ]
    .iter()
    .any(|word| name.contains(word))
}

/// The texts to hide from error messages for one secret value: the value itself and, for a
/// URL, its user-info (`user:password`) and password, which parsers like to quote alone.
pub(super) fn secret_texts(value: &str) -> Vec<String> {
    let mut texts = vec![value.trim().to_string()];
    for url in value.split(['"', ' ', ',']) {
        if let Some((_, rest)) = url.split_once("://") {
            let authority = rest.split('/').next().unwrap_or_default();
            if let Some((user_info, _)) = authority.rsplit_once('@') {
                texts.push(user_info.to_string());
                if let Some((_, password)) = user_info.split_once(':') {
                    texts.push(password.to_string());
                }
            }
        }
    }
    // Very short texts would blank out unrelated words of the message.
    texts.retain(|text| text.len() >= 4);
    texts
}

/// `error` with every secret text replaced by `***`, longest first.
pub(super) fn scrub(error: ConfigError, secrets: &[String]) -> ConfigError {
    let mut secrets: Vec<&String> = secrets.iter().collect();
    secrets.sort_by_key(|secret| std::cmp::Reverse(secret.len()));
    let mut message = error.0;
    for secret in secrets {
        message = message.replace(secret.as_str(), "***");
    }
    ConfigError(message)
}

#[cfg(test)]
mod tests {
    use super::super::{load_env as load, Config};

    /// A bad secret-bearing value is reported by option name, never quoted.
    #[test]
    fn errors_never_quote_secrets() {
        for (name, value, secret) in [
            (
                "REDIS_URL",
                "redis://user:hunter22@host:notaport/0",
                "hunter22",
            ),
            (
                "REDIS_URL",
                "redis+sentinel://u:hunter22@h:1,h2:x/m",
                "hunter22",
            ),
            ("MONGODB_URL", "mongo://user:hunter22@host/db", "hunter22"),
            ("MONGODB_CONFIG", "{\"host\": \"hunter22", "hunter22"),
            (
                "MONGODB_CONFIG",
                "{\"host\": \"http://u:hunter22@h\"}",
                "hunter22",
            ),
        ] {
            let error = load(&[(name, value)]).unwrap_err().to_string();
            assert!(error.contains(name) || error.contains("MongoDB"), "{error}");
            assert!(!error.contains(secret), "{error}");
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fastlane.toml");
        std::fs::write(&path, "SMTP_PASSWORD = \"hunter22\nDEBUG = true\n").unwrap();
        let error = Config::load_from(Some(&path), |_| None)
            .unwrap_err()
            .to_string();
        assert!(error.contains("line 1"), "{error}");
        assert!(!error.contains("hunter22"), "{error}");
        std::fs::write(&path, "BASIC_AUTH_PASSWORD = 12345678\n").unwrap();
        let error = Config::load_from(Some(&path), |_| None)
            .unwrap_err()
            .to_string();
        assert!(error.contains("BASIC_AUTH_PASSWORD"), "{error}");
        assert!(!error.contains("12345678"), "{error}");
    }
}
