//! DynamoDB's export to S3, as the loader reads it: the summary manifest,
//! the list of data files, and data lines in DynamoDB JSON
//! (`{"Item":{"pk":{"S":"a"}}}`, one item per line, gzip-compressed files).
//! Pure: the bytes come from the adapter.
//!
//! Layout (AWS "DynamoDB table export output format"):
//! `<prefix>/AWSDynamoDB/<export-id>/manifest-summary.json` names
//! `manifestFilesS3Key`; that file has one JSON line per data file with its
//! `dataFileS3Key` and `itemCount`. Keys are full object keys in the bucket.

use serde::Deserialize;

use crate::item::Attrs;

/// Why an export cannot be loaded. Never quotes item contents.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExportError {
    #[error("the export's manifest-summary.json is not valid: {0}")]
    Summary(String),
    #[error("the export is in {0} format; only DYNAMODB_JSON exports can be loaded")]
    Format(String),
    #[error("manifest-files.json line {line} is not valid: {why}")]
    Files { line: usize, why: String },
    #[error("{file} line {line} is not an item in DynamoDB JSON ({why})")]
    Item {
        file: String,
        line: usize,
        why: String,
    },
    #[error("{file} holds {got} items, but the manifest says {want}: the export is incomplete or damaged")]
    Count { file: String, got: u64, want: u64 },
    #[error("the export is an {0}; only a FULL_EXPORT holds every item")]
    Type(String),
    #[error("the manifests list {files} items in their data files, but the summary says {summary}: the export is incomplete or damaged")]
    Total { files: u64, summary: u64 },
}

/// What `manifest-summary.json` says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    pub export_arn: String,
    /// The table exported (when the summary names it).
    pub table_arn: Option<String>,
    /// The point in time the export is consistent to (ms since the epoch).
    pub export_time_ms: i64,
    pub item_count: u64,
    pub manifest_files_key: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawSummary {
    export_arn: Option<String>,
    table_arn: Option<String>,
    export_type: Option<String>,
    export_time: String,
    #[serde(default)]
    item_count: u64,
    manifest_files_s3_key: String,
    output_format: Option<String>,
}

/// Parses `manifest-summary.json`.
pub fn parse_summary(text: &str) -> Result<Summary, ExportError> {
    let raw: RawSummary =
        serde_json::from_str(text).map_err(|e| ExportError::Summary(e.to_string()))?;
    if let Some(f) = raw.output_format.filter(|f| f != "DYNAMODB_JSON") {
        return Err(ExportError::Format(f));
    }
    if let Some(t) = raw.export_type.filter(|t| t != "FULL_EXPORT") {
        return Err(ExportError::Type(t));
    }
    let export_time_ms = chrono::DateTime::parse_from_rfc3339(&raw.export_time)
        .map_err(|e| ExportError::Summary(format!("exportTime {:?}: {e}", raw.export_time)))?
        .timestamp_millis();
    Ok(Summary {
        export_arn: raw.export_arn.unwrap_or_default(),
        table_arn: raw.table_arn,
        export_time_ms,
        item_count: raw.item_count,
        manifest_files_key: raw.manifest_files_s3_key,
    })
}

/// One data file of an export.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataFile {
    #[serde(rename = "dataFileS3Key")]
    pub key: String,
    pub item_count: u64,
}

/// Parses `manifest-files.json` (one JSON object per line).
pub fn parse_files(text: &str) -> Result<Vec<DataFile>, ExportError> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| ExportError::Files {
                line: i + 1,
                why: e.to_string(),
            })
        })
        .collect()
}

#[derive(Deserialize)]
struct Line {
    #[serde(rename = "Item")]
    item: Attrs,
}

/// Checks that the data files hold as many items as the summary says.
pub fn check_total(summary: &Summary, files: &[DataFile]) -> Result<(), ExportError> {
    let total: u64 = files.iter().map(|f| f.item_count).sum();
    if total != summary.item_count {
        return Err(ExportError::Total {
            files: total,
            summary: summary.item_count,
        });
    }
    Ok(())
}

/// Parses one data line (`line` counts from 1, for the error). The error
/// names the kind of problem and its column, never the text (serde's own
/// messages quote values, and items are customer data).
pub fn parse_item(file: &str, line: usize, text: &str) -> Result<Attrs, ExportError> {
    serde_json::from_str::<Line>(text)
        .map(|l| l.item)
        .map_err(|e| ExportError::Item {
            file: file.to_string(),
            line,
            why: format!(
                "{} at column {}",
                match e.classify() {
                    serde_json::error::Category::Io => "a read error",
                    serde_json::error::Category::Syntax => "a JSON syntax error",
                    serde_json::error::Category::Data => "a value of the wrong shape",
                    serde_json::error::Category::Eof => "the line ends early",
                },
                e.column()
            ),
        })
}

/// The directory of an export's manifests, from the key of its summary
/// (`DescribeExport`'s `ExportManifest`), for the loader's messages.
pub fn export_dir(summary_key: &str) -> &str {
    summary_key.rsplit_once('/').map_or("", |(dir, _)| dir)
}

/// Encodes items as one export data file would hold them (uncompressed):
/// how the tests and the local end-to-end run fabricate an export.
pub fn data_lines(items: &[Attrs]) -> String {
    let mut out = String::new();
    for item in items {
        out.push_str(&serde_json::json!({ "Item": item }).to_string());
        out.push('\n');
    }
    out
}

/// Splits `s3://bucket/key/prefix` (a trailing `/` or
/// `/manifest-summary.json` is dropped).
pub fn parse_s3_dir(uri: &str) -> Result<(String, String), String> {
    let rest = uri
        .strip_prefix("s3://")
        .ok_or_else(|| format!("{uri:?} is not an s3:// URI"))?;
    let (bucket, key) = rest
        .split_once('/')
        .ok_or_else(|| format!("{uri:?} names a bucket but no export directory"))?;
    let key = key
        .trim_end_matches('/')
        .trim_end_matches("manifest-summary.json")
        .trim_end_matches('/');
    if bucket.is_empty() || key.is_empty() {
        return Err(format!(
            "{uri:?}: expected s3://BUCKET/PREFIX/AWSDynamoDB/EXPORT_ID"
        ));
    }
    Ok((bucket.to_string(), key.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::item::AttributeValue as A;

    // Shaped like the examples in AWS's "DynamoDB table export output format".
    const SUMMARY: &str = r#"{"version":"2020-06-30","exportArn":"arn:aws:dynamodb:us-east-1:123456789012:table/ProductCatalog/export/01234567890123-a1b2c3d4","startTime":"2020-11-04T07:28:34.028Z","endTime":"2020-11-04T07:33:43.897Z","tableArn":"arn:aws:dynamodb:us-east-1:123456789012:table/ProductCatalog","tableId":"12345a12-abcd-123a-ab12-1234abc12345","exportTime":"2020-11-04T07:28:34.028Z","s3Bucket":"ddb-productcatalog-export","s3Prefix":"2020-Nov","s3SseAlgorithm":"AES256","s3SseKmsKeyId":null,"manifestFilesS3Key":"2020-Nov/AWSDynamoDB/01234567890123-a1b2c3d4/manifest-files.json","billedSizeBytes":0,"itemCount":8,"outputFormat":"DYNAMODB_JSON","exportType":"FULL_EXPORT"}"#;
    const FILES: &str = "{\"itemCount\":8,\"md5Checksum\":\"sQMSpEILNgoQmarvDFonGQ==\",\"etag\":\"af83d6f217c19b8b0fff8023d8ca4716-1\",\"dataFileS3Key\":\"2020-Nov/AWSDynamoDB/01234567890123-a1b2c3d4/data/asdl123dasas.json.gz\"}\n{\"itemCount\":0,\"md5Checksum\":\"x\",\"etag\":\"y\",\"dataFileS3Key\":\"2020-Nov/AWSDynamoDB/01234567890123-a1b2c3d4/data/empty.json.gz\"}\n";

    #[test]
    fn the_documented_manifests_parse() {
        let s = parse_summary(SUMMARY).unwrap();
        assert_eq!(s.export_time_ms, 1_604_474_914_028);
        assert_eq!(s.item_count, 8);
        assert!(s.manifest_files_key.ends_with("/manifest-files.json"));
        assert_eq!(
            export_dir(&s.manifest_files_key),
            "2020-Nov/AWSDynamoDB/01234567890123-a1b2c3d4"
        );
        let files = parse_files(FILES).unwrap();
        assert_eq!(files.len(), 2);
        assert_eq!(files[0].item_count, 8);
        assert!(files[1].key.ends_with("data/empty.json.gz"));
    }

    #[test]
    fn every_type_round_trips_through_a_data_line() {
        let item: Attrs = [
            ("pk".to_string(), A::S("a".into())),
            ("n".to_string(), A::N("-1.50".into())),
            ("b".to_string(), A::B(vec![0, 159, 146, 150])),
            ("bs".to_string(), A::Bs(vec![vec![1], vec![2, 3]])),
            ("ss".to_string(), A::Ss(vec!["x".into()])),
            ("ns".to_string(), A::Ns(vec!["1".into(), "2e3".into()])),
            ("t".to_string(), A::Bool(true)),
            ("z".to_string(), A::Null(true)),
            (
                "m".to_string(),
                A::M([("l".to_string(), A::L(vec![A::S(String::new())]))].into()),
            ),
        ]
        .into();
        let lines = data_lines(std::slice::from_ref(&item));
        assert_eq!(parse_item("f", 1, lines.trim_end()).unwrap(), item);
        // Binary is base64 in DynamoDB JSON, as AWS writes it.
        let aws = r#"{"Item":{"pk":{"S":"a"},"b":{"B":"AJ+Slg=="}}}"#;
        assert_eq!(
            parse_item("f", 1, aws).unwrap()["b"],
            A::B(vec![0, 159, 146, 150])
        );
    }

    #[test]
    fn bad_manifests_and_lines_are_clear_errors_that_quote_no_data() {
        assert!(matches!(parse_summary("{"), Err(ExportError::Summary(_))));
        let ion = SUMMARY.replace("\"DYNAMODB_JSON\"", "\"ION\"");
        assert_eq!(parse_summary(&ion), Err(ExportError::Format("ION".into())));
        let bad_time = SUMMARY.replace(
            "2020-11-04T07:28:34.028Z\",\"s3Bucket",
            "yesterday\",\"s3Bucket",
        );
        assert!(matches!(
            parse_summary(&bad_time),
            Err(ExportError::Summary(_))
        ));
        assert!(matches!(
            parse_files("{\"itemCount\":1}\n"),
            Err(ExportError::Files { line: 1, .. })
        ));
        for bad in [
            r#"{"Item":{"secret":{"Q":"hunter2"}}}"#,
            r#"{"Item":{"secret":{"BOOL":"hunter2"}}}"#,
            r#"{"Item":{"secret":"hunter2"}}"#,
            r#"{"Item":{"secret":{"S":"hunter2""#,
        ] {
            let msg = parse_item("data/x.json.gz", 7, bad)
                .unwrap_err()
                .to_string();
            assert!(msg.contains("data/x.json.gz line 7"), "{msg}");
            assert!(!msg.contains("hunter2"), "{msg}");
        }
        let incremental = SUMMARY.replace("FULL_EXPORT", "INCREMENTAL_EXPORT");
        assert_eq!(
            parse_summary(&incremental),
            Err(ExportError::Type("INCREMENTAL_EXPORT".into()))
        );
        let s = parse_summary(SUMMARY).unwrap();
        let files = parse_files(FILES).unwrap();
        assert_eq!(check_total(&s, &files), Ok(()));
        assert_eq!(
            check_total(&s, &files[1..]),
            Err(ExportError::Total {
                files: 0,
                summary: 8
            })
        );
    }

    #[test]
    fn export_uris_name_a_bucket_and_a_directory() {
        assert_eq!(
            parse_s3_dir("s3://b/p/AWSDynamoDB/0123-ab/").unwrap(),
            ("b".into(), "p/AWSDynamoDB/0123-ab".into())
        );
        assert_eq!(
            parse_s3_dir("s3://b/AWSDynamoDB/0123-ab/manifest-summary.json").unwrap(),
            ("b".into(), "AWSDynamoDB/0123-ab".into())
        );
        assert!(parse_s3_dir("b/p").is_err());
        assert!(parse_s3_dir("s3://b").is_err());
        assert!(parse_s3_dir("s3://b/").is_err());
    }
}
