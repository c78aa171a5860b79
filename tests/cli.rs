//! The command line: `config` prints every option; `start` refuses a bad configuration with a
//! message naming the option and a non-zero exit code, before doing anything.

use std::process::Command;

fn fastlane(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_fastlane-node"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

#[test]
fn config_prints_every_option_with_its_default() {
    let output = fastlane(&["config"], &[]);
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    for option in [
        "DOCKER_HOSTS",
        "HARD_EXECUTION_TIMEOUT_SECONDS = 1800",
        "PAGINATION_PER_PAGE = 10",
        "ENV_BLACKLISTED_WORDS",
    ] {
        assert!(text.contains(option), "{option} missing");
    }
}

#[test]
fn start_refuses_bad_values_naming_the_option() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    for (name, value) in [
        ("HARD_EXECUTION_TIMEOUT_SECONDS", "thirty"),
        ("DOCKER_HOSTS", "[{\"hosts\": [\"no-port\"]}]"),
        ("DOCKER_HOSTS", "not json"),
        ("DEBUG", "perhaps"),
        ("PAGINATION_PER_PAGE", "-3"),
        ("SQLITE_SYNCHRONOUS", "sometimes"),
    ] {
        let output = fastlane(&["start", "-p", "0"], &[(name, value), ("DATA_DIR", data)]);
        assert!(!output.status.success(), "{name}={value} was accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(name), "{name}={value}: {stderr}");
    }
    let output = fastlane(
        &["start", "-c", "/nonexistent/fastlane.toml"],
        &[("DATA_DIR", data)],
    );
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("not found"));
}
