//! S3: downloading an export's objects.

use std::io::Write;
use std::path::Path;

use super::{e, Objects, Sdk};
use crate::AwsError;

impl Objects for Sdk {
    async fn download(&self, bucket: &str, key: &str, dest: &Path) -> Result<u64, AwsError> {
        let out = self
            .s3
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(e("GetObject"))?;
        let io = |what: std::io::Error| {
            AwsError::permanent(
                "GetObject",
                "LocalFile",
                &format!("{}: {what}", dest.display()),
            )
        };
        let mut file = std::io::BufWriter::new(std::fs::File::create(dest).map_err(io)?);
        let mut body = out.body;
        let mut size = 0u64;
        while let Some(chunk) = body
            .try_next()
            .await
            .map_err(|err| AwsError::retryable("GetObject", "ReadBody", &err.to_string()))?
        {
            file.write_all(&chunk).map_err(io)?;
            size += chunk.len() as u64;
        }
        file.flush().map_err(io)?;
        Ok(size)
    }
}
