//! Image references: `name[:tag]`, `registry:port/name[:tag]`, `name@sha256:…`.
//! Unlike the original, a registry port or a digest does not break the split (its bug 10).

/// An image reference split into repository and tag (or digest).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRef {
    /// Everything before the tag: `registry:5000/team/name`.
    pub repository: String,
    /// The tag, `latest` when none was given; empty for a digest reference.
    pub tag: String,
    /// `sha256:…` for a digest reference.
    pub digest: Option<String>,
}

impl ImageRef {
    /// Parses an image string. `None` for an empty or whitespace-containing string.
    pub fn parse(image: &str) -> Option<ImageRef> {
        if image.is_empty() || image.chars().any(char::is_whitespace) {
            return None;
        }
        if let Some((repository, digest)) = image.split_once('@') {
            if repository.is_empty() || digest.is_empty() {
                return None;
            }
            return Some(ImageRef {
                repository: repository.to_string(),
                tag: String::new(),
                digest: Some(digest.to_string()),
            });
        }
        let last_slash = image.rfind('/').map(|index| index + 1).unwrap_or(0);
        let (repository, tag) = match image[last_slash..].rfind(':') {
            Some(colon) => {
                let colon = last_slash + colon;
                (&image[..colon], &image[colon + 1..])
            }
            None => (image, "latest"),
        };
        if repository.is_empty() || tag.is_empty() {
            return None;
        }
        Some(ImageRef {
            repository: repository.to_string(),
            tag: tag.to_string(),
            digest: None,
        })
    }

    /// The full reference Docker understands.
    pub fn full(&self) -> String {
        match &self.digest {
            Some(digest) => format!("{}@{digest}", self.repository),
            None => format!("{}:{}", self.repository, self.tag),
        }
    }

    /// Pull policy: a moving `latest` tag is always refreshed; other references only when absent.
    pub fn always_pull(&self) -> bool {
        self.digest.is_none() && self.tag == "latest"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_tags_ports_and_digests() {
        let plain = ImageRef::parse("ubuntu").unwrap();
        assert_eq!(
            (plain.repository.as_str(), plain.tag.as_str()),
            ("ubuntu", "latest")
        );
        assert!(plain.always_pull());
        let tagged = ImageRef::parse("registry:5000/team/app:1.2").unwrap();
        assert_eq!(tagged.repository, "registry:5000/team/app");
        assert_eq!(tagged.tag, "1.2");
        assert!(!tagged.always_pull());
        let untagged_with_port = ImageRef::parse("registry:5000/app").unwrap();
        assert_eq!(untagged_with_port.full(), "registry:5000/app:latest");
        let digest = ImageRef::parse("app@sha256:abc").unwrap();
        assert_eq!(digest.full(), "app@sha256:abc");
        assert!(!digest.always_pull());
        assert!(ImageRef::parse("").is_none());
        assert!(ImageRef::parse("app:").is_none());
        assert!(ImageRef::parse("a b").is_none());
    }
}
