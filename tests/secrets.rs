//! Secrets stay out of what triage prints: `triage config` with a SASL password and
//! secret librdkafka options from the environment, and from a config file.

mod common;

use common::*;

const SECRETS: [&str; 4] = [
    "sasl-hunter2",
    "key-hunter2",
    "oauth-hunter2",
    "store-hunter2",
];

#[test]
fn config_prints_secrets_redacted_and_other_options_as_they_are() {
    let dir = scratch("secrets");
    let file = dir.join("triage.toml");
    std::fs::write(
        &file,
        r#"
[kafka]
sasl_username = "svc-triage"
[kafka.librdkafka_options]
"ssl.keystore.password" = "store-hunter2"
"fetch.min.bytes" = "4096"
"client.id" = "triage-test"
"#,
    )
    .unwrap();
    let out = triage(&dir)
        .arg("--config")
        .arg(&file)
        .arg("config")
        .env("TRIAGE__KAFKA__SASL_PASSWORD", SECRETS[0])
        .env(
            "TRIAGE__KAFKA__LIBRDKAFKA_OPTIONS__ssl.key.password",
            SECRETS[1],
        )
        .env(
            "TRIAGE__KAFKA__LIBRDKAFKA_OPTIONS__sasl.oauthbearer.client.secret",
            SECRETS[2],
        )
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    for secret in SECRETS {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "{stdout}{stderr}"
        );
    }
    for shown in [
        r#"sasl_password = "***""#,
        r#""ssl.key.password" = "***""#,
        r#""sasl.oauthbearer.client.secret" = "***""#,
        r#""ssl.keystore.password" = "***""#,
        r#""fetch.min.bytes" = "4096""#,
        r#""client.id" = "triage-test""#,
        r#"sasl_username = "svc-triage""#,
    ] {
        assert!(stdout.contains(shown), "{shown} missing from:\n{stdout}");
    }
}
