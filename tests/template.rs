//! The SAM template passes cfn-lint (which runs the SAM transform), wires every variable of
//! the configuration, and routes uploads the way the product needs: S3 notifies the conversions
//! queue, whose trigger bounds the concurrency that the function is told about.

use std::process::Command;

use serde_json::{json, Value};

fn template() -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("template.yaml"))
        .unwrap()
}

/// The template as JSON, intrinsic functions in their long form (`{"Ref": ...}`), read by
/// cfn-lint's own decoder.
fn decoded() -> Value {
    const DECODE: &str = "import json, sys\n\
        from cfnlint.decode import decode\n\
        template, problems = decode('template.yaml')\n\
        if problems or template is None:\n    sys.exit(str(problems))\n\
        json.dump(template, sys.stdout)";
    let out = Command::new("python3")
        .args(["-c", DECODE])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("python3 with cfn-lint is installed (.ci/run installs it)");
    assert!(
        out.status.success(),
        "decoding template.yaml: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the decoded template is JSON")
}

fn resource<'a>(t: &'a Value, name: &str) -> &'a Value {
    let r = &t["Resources"][name];
    assert!(r.is_object(), "no resource {name}");
    r
}

fn function(t: &Value) -> &Value {
    &resource(t, "DspConversionsFunction")["Properties"]
}

fn env_var<'a>(t: &'a Value, var: &str) -> &'a Value {
    let v = &function(t)["Environment"]["Variables"][var];
    assert!(!v.is_null(), "{var} is not set on the function");
    v
}

/// The statements of the function role's inline policies.
fn role_statements(t: &Value) -> Vec<Value> {
    resource(t, "FunctionRole")["Properties"]["Policies"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["PolicyDocument"]["Statement"].as_array().unwrap().clone())
        .collect()
}

/// `x`, or the items of `x` when it is a list.
fn items(x: &Value) -> Vec<Value> {
    match x {
        Value::Array(a) => a.clone(),
        other => vec![other.clone()],
    }
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
        "DSP_LOOKUP_DEFINITIONS",
        "DEFINITIONS_CACHE_TTL_SECONDS",
        "DSP_DEFAULT_COUNTRY_CODE",
        "DSP_DEFAULT_CURRENCY_CODE",
        "DSP_MAX_EVENTS_PER_REQUEST",
        "DSP_MAX_REQUESTS_PER_SECOND",
        "DSP_CONCURRENCY",
        "DSP_MAX_IN_FLIGHT",
        "DSP_MAX_ATTEMPTS",
        "REJECTS_BUCKET",
        "REJECTS_PREFIX",
        "RETRY_QUEUE_URL",
        "DSP_DELETIONS_PREFIX",
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

#[test]
fn uploads_and_deletions_notify_the_conversions_queue_not_the_function() {
    let t = decoded();
    let bucket = &resource(&t, "UploadBucket")["Properties"];
    let notifications = &bucket["NotificationConfiguration"];
    assert!(notifications["LambdaConfigurations"].is_null());
    let queues = notifications["QueueConfigurations"].as_array().unwrap();
    let queue = json!({"Fn::GetAtt": ["ConversionsQueue", "Arn"]});
    let mut routed = Vec::new();
    for q in queues {
        assert_eq!(q["Queue"], queue, "{q}");
        assert_eq!(q["Event"], "s3:ObjectCreated:*", "{q}");
        let rules = q["Filter"]["S3Key"]["Rules"].as_array().unwrap();
        let rule = |name: &str| {
            rules
                .iter()
                .find(|r| r["Name"] == name)
                .map(|r| r["Value"].clone())
                .unwrap_or_else(|| panic!("no {name} rule in {q}"))
        };
        routed.push((rule("prefix"), rule("suffix")));
    }
    for prefix in ["UploadPrefix", "DeletionsPrefix"] {
        for suffix in [
            ".json",
            ".json.gz",
            ".ndjson",
            ".ndjson.gz",
            ".jsonl",
            ".jsonl.gz",
            ".csv",
            ".csv.gz",
        ] {
            assert!(
                routed.contains(&(json!({"Ref": prefix}), json!(suffix))),
                "{prefix} {suffix} is not routed to the queue"
            );
        }
    }
    assert_eq!(routed.len(), 16, "{routed:?}");
    assert_eq!(
        env_var(&t, "DSP_DELETIONS_PREFIX"),
        &json!({"Ref": "DeletionsPrefix"})
    );
    for (name, event) in function(&t)["Events"].as_object().unwrap() {
        assert_eq!(event["Type"], "SQS", "event {name} is not the SQS trigger");
    }
}

#[test]
fn the_queue_policy_lets_only_the_upload_bucket_of_this_account_send() {
    let t = decoded();
    let policy = &resource(&t, "ConversionsQueuePolicy")["Properties"];
    assert_eq!(policy["Queues"], json!([{"Ref": "ConversionsQueue"}]));
    let statements = policy["PolicyDocument"]["Statement"].as_array().unwrap();
    let [s] = statements.as_slice() else {
        panic!("one statement expected: {statements:?}")
    };
    assert_eq!(s["Effect"], "Allow");
    assert_eq!(s["Principal"], json!({"Service": "s3.amazonaws.com"}));
    assert_eq!(items(&s["Action"]), vec![json!("sqs:SendMessage")]);

    // aws:SourceArn is the ARN of the bucket's name, built the same way as the name itself (the
    // bucket cannot be referred to: it waits for this policy).
    let bucket = resource(&t, "UploadBucket");
    let name = &bucket["Properties"]["BucketName"]["Fn::Sub"];
    let source_arn = &s["Condition"]["ArnEquals"]["aws:SourceArn"]["Fn::Sub"];
    assert_eq!(
        source_arn[0].as_str().unwrap(),
        format!("arn:${{AWS::Partition}}:s3:::{}", name[0].as_str().unwrap())
    );
    assert_eq!(source_arn[1], name[1]);
    assert_eq!(
        s["Condition"]["StringEquals"]["aws:SourceAccount"],
        json!({"Ref": "AWS::AccountId"})
    );
    assert!(
        items(&bucket["DependsOn"]).contains(&json!("ConversionsQueuePolicy")),
        "the bucket must wait for the queue policy"
    );
}

#[test]
fn the_sqs_trigger_bounds_concurrency_and_the_function_is_told() {
    let t = decoded();
    let trigger = &function(&t)["Events"]["Conversions"]["Properties"];
    assert_eq!(
        trigger["Queue"],
        json!({"Fn::GetAtt": ["ConversionsQueue", "Arn"]})
    );
    let maximum = &trigger["ScalingConfig"]["MaximumConcurrency"];
    assert_eq!(maximum, &json!({"Ref": "MaximumConcurrency"}));
    assert_eq!(env_var(&t, "DSP_CONCURRENCY"), maximum);
    assert_eq!(
        trigger["FunctionResponseTypes"],
        json!(["ReportBatchItemFailures"])
    );
    assert_eq!(
        env_var(&t, "RETRY_QUEUE_URL"),
        &json!({"Ref": "ConversionsQueue"})
    );
}

#[test]
fn continuation_chains_are_not_cut_by_recursive_loop_detection() {
    assert_eq!(function(&decoded())["RecursiveLoop"], "Allow");
}

#[test]
fn the_role_lists_the_upload_bucket_only_under_the_two_prefixes() {
    let t = decoded();
    let statements = role_statements(&t);
    let list: Vec<&Value> = statements
        .iter()
        .filter(|s| items(&s["Action"]).contains(&json!("s3:ListBucket")))
        .collect();
    let [list] = list.as_slice() else {
        panic!("one ListBucket statement expected: {list:?}")
    };
    assert_eq!(list["Effect"], "Allow");
    assert_eq!(
        list["Resource"],
        json!({"Fn::GetAtt": ["UploadBucket", "Arn"]})
    );
    assert_eq!(
        items(&list["Condition"]["StringLike"]["s3:prefix"]),
        vec![
            json!({"Fn::Sub": "${UploadPrefix}*"}),
            json!({"Fn::Sub": "${DeletionsPrefix}*"})
        ]
    );
    let read = statements
        .iter()
        .find(|s| items(&s["Action"]).contains(&json!("s3:GetObject")))
        .expect("a GetObject statement");
    assert_eq!(
        items(&read["Resource"]),
        vec![
            json!({"Fn::Sub": "${UploadBucket.Arn}/${UploadPrefix}*"}),
            json!({"Fn::Sub": "${UploadBucket.Arn}/${DeletionsPrefix}*"})
        ]
    );
}

#[test]
fn outputs_name_the_queues_and_the_bucket() {
    let t = decoded();
    let outputs = &t["Outputs"];
    for (name, value) in [
        (
            "DeadLetterQueueArn",
            json!({"Fn::GetAtt": ["DeadLetterQueue", "Arn"]}),
        ),
        ("DeadLetterQueueUrl", json!({"Ref": "DeadLetterQueue"})),
        ("RetryQueueUrl", env_var(&t, "RETRY_QUEUE_URL").clone()),
        ("ConversionsQueueUrl", json!({"Ref": "ConversionsQueue"})),
        ("UploadBucketName", json!({"Ref": "UploadBucket"})),
    ] {
        assert_eq!(outputs[name]["Value"], value, "output {name}");
    }
}

#[test]
fn parameters_validate_like_the_function_and_default_all_but_the_secret() {
    let t = decoded();
    let parameters = t["Parameters"].as_object().unwrap();
    for (name, p) in parameters {
        assert_eq!(
            p.get("Default").is_none(),
            name == "DspSecretId",
            "{name}: only the secret has no default"
        );
    }
    for url in ["DspApiUrl", "DspTokenUrl"] {
        assert_eq!(
            parameters[url]["AllowedPattern"], "^(https://[^\\s]+)?$",
            "{url} must be https://"
        );
    }
    assert_eq!(
        parameters["DspDefaultCountryCode"]["AllowedPattern"],
        "^([A-Za-z]{2})?$"
    );
    assert_eq!(parameters["DeletionsPrefix"]["Default"], "deletions/");
    assert_eq!(parameters["DspLookupDefinitions"]["Default"], "true");
    assert_eq!(
        env_var(&t, "DSP_LOOKUP_DEFINITIONS"),
        &json!({"Ref": "DspLookupDefinitions"})
    );
    assert_eq!(
        env_var(&t, "DEFINITIONS_CACHE_TTL_SECONDS"),
        &json!({"Ref": "DefinitionsCacheTtlSeconds"})
    );
}
