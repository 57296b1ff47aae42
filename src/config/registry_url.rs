//! `paths.registry_url`, read without connecting: the schemes this build takes and
//! the parts of a URL. The registry (`crate::registry::store`) opens it; the
//! configuration checks it at start-up with this parser, so neither imports the
//! other the wrong way.

use object_store::path::Path as ObjectPath;

/// The URL schemes `paths.registry_url` takes in this build.
pub fn supported_schemes() -> &'static [&'static str] {
    &[
        "s3",
        "s3a",
        #[cfg(feature = "gcs")]
        "gs",
        #[cfg(feature = "azure")]
        "az",
        #[cfg(feature = "azure")]
        "abfs",
        #[cfg(feature = "azure")]
        "abfss",
    ]
}

/// `(scheme, bucket, prefix)` of `scheme://bucket/prefix`.
pub fn parse(url: &str) -> Result<(&str, &str, &str), String> {
    let schemes = supported_schemes().join(", ");
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!(
            "{url:?} is not a URL; expected SCHEME://BUCKET/PREFIX with a scheme of {schemes}"
        ));
    };
    if !supported_schemes().contains(&scheme) {
        let hint = match scheme {
            "gs" => " (build with `--features gcs` for Google Cloud Storage)",
            "az" | "abfs" | "abfss" => " (build with `--features azure` for Azure)",
            "file" => " (a folder is `paths.registry_dir`)",
            _ => "",
        };
        return Err(format!(
            "scheme {scheme:?} is not supported{hint}; use one of {schemes}"
        ));
    }
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(format!(
            "{url:?} names no bucket; expected {scheme}://BUCKET/PREFIX"
        ));
    }
    let prefix = prefix.trim_end_matches('/');
    ObjectPath::parse(prefix).map_err(|e| format!("prefix {prefix:?} of {url:?}: {e}"))?;
    Ok((scheme, bucket, prefix))
}
