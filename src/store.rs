//! The small traits through which the pipeline reaches object storage, the retry queue and the
//! secret store, with in-memory and local-file implementations (the AWS ones are in [`crate::aws`]).

use std::collections::HashMap;
use std::future::Future;
use std::io::Read;
use std::path::Path;
use std::pin::Pin;
use std::sync::Mutex;

/// A boxed, sendable future: keeps the traits object-safe without a macro crate.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An object opened for reading.
pub struct Object {
    /// The bytes, as a blocking reader (it must be read on a blocking thread).
    pub reader: Box<dyn Read + Send>,
    /// `Content-Type`, if any.
    pub content_type: Option<String>,
    /// `Content-Encoding`, if any.
    pub content_encoding: Option<String>,
    /// What identifies this content (ETag or version id), for derived dedupe ids.
    pub revision: Option<String>,
    /// The ETag, which a later read can require (`If-Match`).
    pub etag: Option<String>,
}

/// Which part of which content of an object to read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Part<'a> {
    /// Only while its ETag is still this one; otherwise [`OpenError::Changed`].
    pub if_match: Option<&'a str>,
    /// From this byte on (a ranged read); 0 for all of it.
    pub from: u64,
}

/// Why an object cannot be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// It does not exist (any more).
    #[error("the object does not exist")]
    NotFound,
    /// Its content is not the one asked for any more (`If-Match` failed).
    #[error("the object has changed")]
    Changed,
    /// A ranged read starts at or past its end: nothing is left to read.
    #[error("nothing is left to read")]
    PastTheEnd,
    /// The function may not read it.
    #[error("access denied: {0}")]
    Denied(String),
    /// Network or service failure.
    #[error("{0}")]
    Failed(String),
}

/// A failure of a store operation other than opening.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(pub String);

/// Why a secret cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// No such secret.
    #[error("the secret does not exist")]
    NotFound,
    /// The function may not read it.
    #[error("access denied: {0}")]
    Denied(String),
    /// It has no string value.
    #[error("the secret has no string value")]
    NotString,
    /// Network or service failure.
    #[error("{0}")]
    Failed(String),
}

/// Object storage: S3, or local files for the check tool.
pub trait ObjectStore: Send + Sync {
    /// Opens `part` of `bucket`/`key` for reading.
    fn open<'a>(
        &'a self,
        bucket: &'a str,
        key: &'a str,
        part: Part<'a>,
    ) -> BoxFuture<'a, Result<Object, OpenError>>;
    /// Stores the file at `path` as `bucket`/`key`.
    fn put_file<'a>(
        &'a self,
        bucket: &'a str,
        key: &'a str,
        path: &'a Path,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
}

/// A message queue: SQS.
pub trait MessageQueue: Send + Sync {
    /// Sends one message.
    fn send<'a>(
        &'a self,
        queue_url: &'a str,
        body: String,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
}

/// A secret store: Secrets Manager.
pub trait SecretStore: Send + Sync {
    /// The secret's string value.
    fn get<'a>(&'a self, secret_id: &'a str) -> BoxFuture<'a, Result<String, SecretError>>;
}

/// An in-memory object store, queue and secret store, for tests.
#[derive(Default)]
pub struct Memory {
    /// Objects by `(bucket, key)`.
    pub objects: Mutex<HashMap<(String, String), Vec<u8>>>,
    /// Messages sent, with their queue.
    pub messages: Mutex<Vec<(String, String)>>,
    /// Secrets by id.
    pub secrets: Mutex<HashMap<String, String>>,
}

impl Memory {
    /// Adds an object.
    pub fn put(&self, bucket: &str, key: &str, bytes: impl Into<Vec<u8>>) {
        if let Ok(mut objects) = self.objects.lock() {
            objects.insert((bucket.into(), key.into()), bytes.into());
        }
    }

    /// An object's bytes.
    pub fn get(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        self.objects
            .lock()
            .ok()?
            .get(&(bucket.into(), key.into()))
            .cloned()
    }
}

impl ObjectStore for Memory {
    fn open<'a>(
        &'a self,
        bucket: &'a str,
        key: &'a str,
        part: Part<'a>,
    ) -> BoxFuture<'a, Result<Object, OpenError>> {
        Box::pin(async move {
            let bytes = self.get(bucket, key).ok_or(OpenError::NotFound)?;
            let etag = sha256_tag(&bytes);
            if part.if_match.is_some_and(|want| want != etag) {
                return Err(OpenError::Changed);
            }
            let from = usize::try_from(part.from).unwrap_or(usize::MAX);
            if from > 0 && from >= bytes.len() {
                return Err(OpenError::PastTheEnd);
            }
            Ok(Object {
                reader: Box::new(std::io::Cursor::new(bytes[from..].to_vec())),
                content_type: None,
                content_encoding: None,
                revision: None,
                etag: Some(etag),
            })
        })
    }

    fn put_file<'a>(
        &'a self,
        bucket: &'a str,
        key: &'a str,
        path: &'a Path,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let bytes = std::fs::read(path).map_err(|e| StoreError(e.to_string()))?;
            self.put(bucket, key, bytes);
            Ok(())
        })
    }
}

impl MessageQueue for Memory {
    fn send<'a>(
        &'a self,
        queue_url: &'a str,
        body: String,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            self.messages
                .lock()
                .map_err(|e| StoreError(e.to_string()))?
                .push((queue_url.to_owned(), body));
            Ok(())
        })
    }
}

impl SecretStore for Memory {
    fn get<'a>(&'a self, secret_id: &'a str) -> BoxFuture<'a, Result<String, SecretError>> {
        Box::pin(async move {
            self.secrets
                .lock()
                .map_err(|e| SecretError::Failed(e.to_string()))?
                .get(secret_id)
                .cloned()
                .ok_or(SecretError::NotFound)
        })
    }
}

/// The in-memory store's ETag: a digest of the content, so a replaced object is noticed.
fn sha256_tag(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(&Sha256::digest(bytes)[..16])
}

/// Local files: the "bucket" is ignored and the key is a path. Used by `dsp-conversions-check`.
pub struct LocalFiles;

impl ObjectStore for LocalFiles {
    fn open<'a>(
        &'a self,
        _bucket: &'a str,
        key: &'a str,
        part: Part<'a>,
    ) -> BoxFuture<'a, Result<Object, OpenError>> {
        Box::pin(async move {
            let mut file = std::fs::File::open(key).map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => OpenError::NotFound,
                std::io::ErrorKind::PermissionDenied => OpenError::Denied(e.to_string()),
                _ => OpenError::Failed(e.to_string()),
            })?;
            if part.from > 0 {
                use std::io::Seek;
                file.seek(std::io::SeekFrom::Start(part.from))
                    .map_err(|e| OpenError::Failed(e.to_string()))?;
            }
            Ok(Object {
                reader: Box::new(file),
                content_type: None,
                content_encoding: None,
                revision: None,
                etag: None,
            })
        })
    }

    fn put_file<'a>(
        &'a self,
        _bucket: &'a str,
        key: &'a str,
        path: &'a Path,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            std::fs::copy(path, key)
                .map(drop)
                .map_err(|e| StoreError(e.to_string()))
        })
    }
}
