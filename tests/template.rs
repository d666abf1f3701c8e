//! The SAM template passes cfn-lint (which runs the SAM transform) and wires every variable of
//! the configuration.

use std::process::Command;

fn template() -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("template.yaml"))
        .unwrap()
}

#[test]
fn cfn_lint_finds_nothing() {
    let out = Command::new("cfn-lint")
        .arg("template.yaml")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cfn-lint is installed (.ci/run installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.trim().is_empty(),
        "cfn-lint:\n{text}"
    );
}

#[test]
fn every_configuration_variable_is_set_on_the_function() {
    let t = template();
    for var in [
        "DSP_SECRET_ID",
        "DSP_REGION",
        "DSP_API_URL",
        "DSP_TOKEN_URL",
        "DSP_DEFAULT_SOURCE",
        "DSP_CONVERSION_DEFINITIONS",
        "DSP_DEFAULT_CONVERSION_DEFINITION_ID",
        "DSP_DEFAULT_COUNTRY_CODE",
        "DSP_DEFAULT_CURRENCY_CODE",
        "DSP_MAX_EVENTS_PER_REQUEST",
        "DSP_MAX_REQUESTS_PER_SECOND",
        "DSP_MAX_IN_FLIGHT",
        "DSP_MAX_ATTEMPTS",
        "REJECTS_BUCKET",
        "REJECTS_PREFIX",
        "RETRY_QUEUE_URL",
        "DRY_RUN",
        "SECRET_CACHE_TTL_SECONDS",
    ] {
        assert!(
            t.contains(&format!("{var}:")),
            "{var} is not in template.yaml"
        );
    }
    for needle in [
        "provided.al2023",
        "rust-cargolambda",
        "ReportBatchItemFailures",
        "Handler: bootstrap",
    ] {
        assert!(t.contains(needle), "{needle}");
    }
}
