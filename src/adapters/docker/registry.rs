//! Credentials for private registries (`DOCKER_REGISTRY_AUTH`): a JSON map from registry host to
//! `{"username", "password"}` or `{"identitytoken"}`, sent with the pulls of images from that
//! registry. The values are secrets: nothing here prints them (`Debug` shows hosts only), and a
//! malformed map is reported by key and field, never by value.

use bollard::auth::DockerCredentials;
use fastlane_proto::image::ImageRef;
use serde_json::Value;
use std::collections::BTreeMap;

/// Most registries the map may name.
const MAX_REGISTRIES: usize = 100;
/// Docker Hub, whatever name the map gives it.
const DOCKER_HUB: &str = "docker.io";

/// One registry's login.
#[derive(Clone)]
enum Login {
    Password { username: String, password: String },
    IdentityToken(String),
}

/// Logins by registry host (`host[:port]`, Docker Hub as `docker.io`).
#[derive(Clone, Default)]
pub(crate) struct RegistryAuth {
    logins: BTreeMap<String, Login>,
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("registries", &self.logins.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// `https://index.docker.io/v1/`, `registry-1.docker.io` … → `docker.io`; scheme and path
/// dropped, lower case.
fn normalize_host(key: &str) -> String {
    let key = key
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = key
        .split('/')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            DOCKER_HUB.to_string()
        }
        _ => host,
    }
}

/// The registry an image is pulled from, by Docker's rule: the first path component when it
/// looks like a host (has a `.` or a `:`, or is `localhost`), else Docker Hub.
pub(crate) fn registry_of(repository: &str) -> String {
    match repository.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => {
            normalize_host(first)
        }
        _ => DOCKER_HUB.to_string(),
    }
}

impl RegistryAuth {
    /// Parses the option's value; the error names the key and field at fault, never a value.
    pub(crate) fn parse(value: &Value) -> Result<RegistryAuth, String> {
        let map = match value {
            Value::Null => return Ok(RegistryAuth::default()),
            Value::Object(map) => map,
            _ => return Err("expected a JSON object from registry host to credentials".into()),
        };
        if map.len() > MAX_REGISTRIES {
            return Err(format!("at most {MAX_REGISTRIES} registries"));
        }
        let mut logins = BTreeMap::new();
        for (key, entry) in map {
            let host = normalize_host(key);
            if host.is_empty() {
                return Err("a registry host is empty".into());
            }
            let Value::Object(fields) = entry else {
                return Err(format!(
                    "{host}: expected an object with username and password, or identitytoken"
                ));
            };
            let text = |name: &str| -> Result<Option<String>, String> {
                match fields.get(name) {
                    None | Some(Value::Null) => Ok(None),
                    Some(Value::String(text)) if !text.is_empty() => Ok(Some(text.clone())),
                    Some(_) => Err(format!("{host}: {name} must be a non-empty string")),
                }
            };
            if let Some(unknown) = fields
                .keys()
                .find(|name| !["username", "password", "identitytoken"].contains(&name.as_str()))
            {
                return Err(format!(
                    "{host}: unknown field {unknown:?} (expected username and password, or identitytoken)"
                ));
            }
            let login = match (text("username")?, text("password")?, text("identitytoken")?) {
                (Some(username), Some(password), None) => Login::Password { username, password },
                (None, None, Some(token)) => Login::IdentityToken(token),
                _ => {
                    return Err(format!(
                        "{host}: give username and password, or identitytoken alone"
                    ))
                }
            };
            if logins.insert(host.clone(), login).is_some() {
                return Err(format!("{host} is named twice"));
            }
        }
        Ok(RegistryAuth { logins })
    }

    /// What to send with a pull of `image`, if its registry has a login.
    pub(crate) fn credentials_for(&self, image: &ImageRef) -> Option<DockerCredentials> {
        let registry = registry_of(&image.repository);
        let login = self.logins.get(&registry)?;
        let serveraddress = Some(if registry == DOCKER_HUB {
            "https://index.docker.io/v1/".to_string()
        } else {
            registry
        });
        Some(match login {
            Login::Password { username, password } => DockerCredentials {
                username: Some(username.clone()),
                password: Some(password.clone()),
                serveraddress,
                ..Default::default()
            },
            Login::IdentityToken(token) => DockerCredentials {
                identitytoken: Some(token.clone()),
                serveraddress,
                ..Default::default()
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn image(text: &str) -> ImageRef {
        ImageRef::parse(text).unwrap()
    }

    #[test]
    fn registries_by_dockers_rule() {
        assert_eq!(registry_of("busybox"), "docker.io");
        assert_eq!(registry_of("library/busybox"), "docker.io");
        assert_eq!(registry_of("team/app"), "docker.io");
        assert_eq!(registry_of("127.0.0.1:5000/team/app"), "127.0.0.1:5000");
        assert_eq!(
            registry_of("Registry.Example.com/app"),
            "registry.example.com"
        );
        assert_eq!(registry_of("localhost/app"), "localhost");
    }

    #[test]
    fn credentials_go_to_their_registry_only() {
        let auth = RegistryAuth::parse(&json!({
            "https://index.docker.io/v1/": {"identitytoken": "tok-1"},
            "127.0.0.1:5000": {"username": "alice", "password": "s3cret"},
        }))
        .unwrap();
        let private = auth
            .credentials_for(&image("127.0.0.1:5000/team/app:1"))
            .unwrap();
        assert_eq!(private.username.as_deref(), Some("alice"));
        assert_eq!(private.password.as_deref(), Some("s3cret"));
        assert_eq!(private.serveraddress.as_deref(), Some("127.0.0.1:5000"));
        let hub = auth.credentials_for(&image("busybox")).unwrap();
        assert_eq!(hub.identitytoken.as_deref(), Some("tok-1"));
        assert!(auth.credentials_for(&image("127.0.0.1:5001/app")).is_none());
        assert!(!format!("{auth:?}").contains("s3cret"));
        assert!(!format!("{auth:?}").contains("tok-1"));
    }

    #[test]
    fn malformed_maps_are_refused_without_quoting_secrets() {
        for (value, expected) in [
            (json!([]), "expected a JSON object"),
            (json!({"r.io": "s3cret"}), "r.io: expected an object"),
            (
                json!({"r.io": {"username": "a"}}),
                "r.io: give username and password",
            ),
            (
                json!({"r.io": {"password": "s3cret"}}),
                "r.io: give username and password",
            ),
            (
                json!({"r.io": {"username": "a", "password": 7}}),
                "password must be",
            ),
            (
                json!({"r.io": {"username": "a", "password": "s3cret", "x": 1}}),
                "unknown field",
            ),
            (
                json!({"r.io": {"username": "a", "password": "s3cret"}, "R.IO": {"identitytoken": "t"}}),
                "named twice",
            ),
        ] {
            let error = RegistryAuth::parse(&value).unwrap_err();
            assert!(error.contains(expected), "{value}: {error}");
            assert!(!error.contains("s3cret"), "{error}");
        }
        assert!(RegistryAuth::parse(&json!({})).unwrap().logins.is_empty());
        assert!(RegistryAuth::parse(&Value::Null).unwrap().logins.is_empty());
    }
}
