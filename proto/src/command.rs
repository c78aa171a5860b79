//! Splitting a job's command string into argv, shell-style, as the original did with `shlex`.

/// Splits `command` like a POSIX shell would (quotes, escapes), without running a shell.
/// `None` when the quoting is unbalanced. An empty command gives an empty argv, which lets the
/// image's own default command run.
pub fn split(command: &str) -> Option<Vec<String>> {
    shlex::split(command)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_like_a_shell() {
        assert_eq!(
            split(r#"bash -c 'echo "it failed" && exit 123'"#).unwrap(),
            vec!["bash", "-c", r#"echo "it failed" && exit 123"#]
        );
        assert_eq!(split("").unwrap(), Vec::<String>::new());
        assert!(split("echo 'unbalanced").is_none());
    }
}
