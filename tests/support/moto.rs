//! moto_server (S3, SQS and Secrets Manager) on a free loopback port, and the SDK clients that
//! set up and inspect it.

use std::collections::BTreeSet;
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::process::Proc;

/// moto_server: S3, SQS and Secrets Manager.
pub struct Moto {
    _proc: Proc,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
}

impl Moto {
    /// Starts moto_server on a free port.
    pub fn start() -> Self {
        let port = free_port();
        let mut cmd = Command::new("moto_server");
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
        let proc = Proc::spawn(cmd);
        wait_for_port(port);
        Self {
            _proc: proc,
            endpoint: format!("http://127.0.0.1:{port}"),
        }
    }

    /// The SDK configuration for it.
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        sdk_config(&self.endpoint).await
    }

    /// The function's environment for it.
    pub(super) fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ENDPOINT_URL".into(), self.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID".into(), "testing".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "testing".into()),
            ("AWS_REGION".into(), "us-east-1".into()),
            ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
        ]
    }

    /// SDK clients of it.
    pub async fn clients(&self) -> Clients {
        Clients::for_endpoint(&self.endpoint).await
    }
}

/// A free port on 127.0.0.1 (moto_server cannot pick one and say which).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Waits (up to 30 s) until something listens on `port`.
fn wait_for_port(port: u16) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "nothing listens on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The SDK configuration for an emulator at `endpoint`.
async fn sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "testing", "testing", None, None, "tests",
        ))
        .load()
        .await
}

/// SDK clients for test setup and inspection.
pub struct Clients {
    /// Path-style, as moto wants.
    pub s3: aws_sdk_s3::Client,
    sqs: aws_sdk_sqs::Client,
    secrets: aws_sdk_secretsmanager::Client,
}

impl Clients {
    /// SDK clients of it.of the emulator at `endpoint`.
    pub async fn for_endpoint(endpoint: &str) -> Self {
        let config = sdk_config(endpoint).await;
        let s3 = aws_sdk_s3::config::Builder::from(&config)
            .force_path_style(true)
            .build();
        Clients {
            s3: aws_sdk_s3::Client::from_conf(s3),
            sqs: aws_sdk_sqs::Client::new(&config),
            secrets: aws_sdk_secretsmanager::Client::new(&config),
        }
    }

    /// Creates a bucket.
    pub async fn bucket(&self, name: &str) {
        self.s3
            .create_bucket()
            .bucket(name)
            .send()
            .await
            .expect("create bucket");
    }

    /// Stores an object.
    pub async fn put(&self, bucket: &str, key: &str, bytes: Vec<u8>) {
        self.s3
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(bytes.into())
            .send()
            .await
            .expect("put object");
    }

    /// The bytes of an object.
    async fn get(&self, bucket: &str, key: &str) -> Vec<u8> {
        let out = self
            .s3
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .expect("get object");
        out.body
            .collect()
            .await
            .expect("body")
            .into_bytes()
            .to_vec()
    }

    /// All keys of a bucket.
    pub async fn keys(&self, bucket: &str) -> Vec<String> {
        let out = self
            .s3
            .list_objects_v2()
            .bucket(bucket)
            .send()
            .await
            .expect("list");
        out.contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_owned))
            .collect()
    }

    /// The lines of every object in a bucket, parsed.
    pub async fn ndjson_lines(&self, bucket: &str) -> Vec<Value> {
        let mut lines = Vec::new();
        for key in self.keys(bucket).await {
            let bytes = self.get(bucket, &key).await;
            for line in String::from_utf8(bytes).unwrap().lines() {
                lines.push(serde_json::from_str(line).expect("NDJSON line"));
            }
        }
        lines
    }

    /// `(messageId, record)` of every line of the rejects objects in `bucket`.
    pub async fn rejected_origins(&self, bucket: &str) -> BTreeSet<(String, u64)> {
        self.ndjson_lines(bucket)
            .await
            .iter()
            .map(|l| {
                (
                    l["origin"]["messageId"].as_str().unwrap().to_owned(),
                    l["origin"]["record"].as_u64().unwrap(),
                )
            })
            .collect()
    }

    /// Creates a queue; returns its URL.
    pub async fn queue(&self, name: &str) -> String {
        let out = self
            .sqs
            .create_queue()
            .queue_name(name)
            .send()
            .await
            .expect("create queue");
        out.queue_url().expect("url").to_owned()
    }

    /// Sends `body` to the queue at `url`.
    pub async fn send(&self, url: &str, body: &str) {
        self.sqs
            .send_message()
            .queue_url(url)
            .message_body(body)
            .send()
            .await
            .expect("send");
    }

    /// Every message waiting in a queue (removed).
    pub async fn drain(&self, url: &str) -> Vec<String> {
        let mut bodies = Vec::new();
        loop {
            let out = self
                .sqs
                .receive_message()
                .queue_url(url)
                .max_number_of_messages(10)
                .send()
                .await
                .expect("receive");
            let messages = out.messages();
            if messages.is_empty() {
                return bodies;
            }
            for m in messages {
                bodies.push(m.body().unwrap_or_default().to_owned());
                self.sqs
                    .delete_message()
                    .queue_url(url)
                    .receipt_handle(m.receipt_handle().unwrap())
                    .send()
                    .await
                    .expect("delete");
            }
        }
    }

    /// Creates the secret `id`, or gives it a new value if it exists.
    pub async fn secret(&self, id: &str, value: &str) {
        let exists = self
            .secrets
            .describe_secret()
            .secret_id(id)
            .send()
            .await
            .is_ok();
        if exists {
            self.secrets
                .put_secret_value()
                .secret_id(id)
                .secret_string(value)
                .send()
                .await
                .expect("put secret");
        } else {
            self.secrets
                .create_secret()
                .name(id)
                .secret_string(value)
                .send()
                .await
                .expect("create secret");
        }
    }
}
