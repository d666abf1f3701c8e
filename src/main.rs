//! The Lambda binary: logging and configuration once at cold start (clients wait for their first
//! use), then the runtime.

use std::sync::Arc;

use dsp_conversions::aws::Aws;
use dsp_conversions::config::Config;
use dsp_conversions::handler::Handler;
use lambda_runtime::{service_fn, LambdaEvent};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            // One clear line naming the variable; the runtime reports the failed start.
            tracing::error!(error = %e, "cannot start");
            std::process::exit(1);
        }
    };
    // Clients are built at their first use: no network and no TLS set-up before the first /next.
    let handler = Handler::new(config, Arc::new(Aws::from_env()));
    let handler = &handler;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        handler.handle(event).await
    }))
    .await
}
