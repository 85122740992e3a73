//! Images in a conversation, engine-neutral: which image URLs a request may carry and the limits on
//! them. Only `data:` URLs of PNG, JPEG, GIF or WebP images are taken: the app-server refuses remote
//! URLs, and the proxy does not fetch any (so it cannot be made to reach a private, loopback or
//! link-local address for a client). An adapter checks every image with [`check_image_url`] and
//! the count against [`MAX_IMAGES`]; the exec engine writes the decoded bytes ([`decode_data_url`])
//! to private files for `--image`.

use base64::Engine as _;

/// The most images one request may carry (over all its messages).
pub const MAX_IMAGES: usize = 16;
/// The most decoded bytes of one image (the model service's own limit is 20 MB per image; the
/// request body limit, `max_request_bytes`, usually binds first).
pub const MAX_IMAGE_BYTES: usize = 20 * 1024 * 1024;
/// The image types a `data:` URL may hold, with the file extension the exec engine gives them.
pub const IMAGE_TYPES: &[(&str, &str)] = &[
    ("image/png", "png"),
    ("image/jpeg", "jpg"),
    ("image/gif", "gif"),
    ("image/webp", "webp"),
];

/// Why an image URL is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageProblem {
    /// Not a URL the proxy takes (400).
    Invalid(String),
    /// Over [`MAX_IMAGE_BYTES`] (413).
    TooLarge(String),
}

/// A decoded `data:` image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataImage {
    /// One of [`IMAGE_TYPES`].
    pub mime: &'static str,
    pub extension: &'static str,
    pub bytes: Vec<u8>,
}

/// Whether the proxy can carry `url` to the model (see the module documentation).
pub fn check_image_url(url: &str) -> Result<(), ImageProblem> {
    decode_data_url(url).map(|_| ())
}

/// The image of a `data:image/…;base64,…` URL.
pub fn decode_data_url(url: &str) -> Result<DataImage, ImageProblem> {
    let lower: String = url
        .chars()
        .take(16)
        .collect::<String>()
        .to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        return Err(ImageProblem::Invalid(
            "remote image URLs are not supported: this proxy does not fetch images (Codex takes only inline images). Send the image as a data: URL (data:image/png;base64,…)".to_string(),
        ));
    }
    let Some(rest) = url.strip_prefix("data:") else {
        return Err(ImageProblem::Invalid(
            "an image URL must be a data: URL (data:image/png;base64,…)".to_string(),
        ));
    };
    let Some((header, data)) = rest.split_once(',') else {
        return Err(ImageProblem::Invalid(
            "the data: URL has no ',' before its data".to_string(),
        ));
    };
    let Some(mime) = header.strip_suffix(";base64") else {
        return Err(ImageProblem::Invalid(
            "the data: URL must be base64-encoded (data:image/png;base64,…)".to_string(),
        ));
    };
    let mime = mime.to_ascii_lowercase();
    let Some((mime, extension)) = IMAGE_TYPES.iter().find(|(known, _)| *known == mime) else {
        return Err(ImageProblem::Invalid(format!(
            "unsupported image type '{}': use image/png, image/jpeg, image/gif or image/webp",
            mime.chars().take(40).collect::<String>()
        )));
    };
    // Base64 holds 3 bytes in 4 characters: refuse a huge image before decoding it.
    if data.len() / 4 * 3 > MAX_IMAGE_BYTES + 3 {
        return Err(too_large());
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map_err(|err| {
            ImageProblem::Invalid(format!("the image's base64 data is invalid ({err})"))
        })?;
    if bytes.len() > MAX_IMAGE_BYTES {
        return Err(too_large());
    }
    if bytes.is_empty() {
        return Err(ImageProblem::Invalid("the image is empty".to_string()));
    }
    Ok(DataImage {
        mime,
        extension,
        bytes,
    })
}

fn too_large() -> ImageProblem {
    ImageProblem::TooLarge(format!(
        "an image may hold at most {} MiB once decoded",
        MAX_IMAGE_BYTES >> 20
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_data_urls_of_the_four_types_only() {
        let image = decode_data_url("data:image/PNG;base64,iVBORw0K").unwrap();
        assert_eq!((image.mime, image.extension), ("image/png", "png"));
        assert_eq!(image.bytes[1..4], *b"PNG");
        for url in [
            "https://169.254.169.254/latest/meta-data",
            "http://127.0.0.1/x.png",
            "file:///etc/passwd",
            "data:image/svg+xml;base64,PHN2Zz4=",
            "data:image/png,raw",
            "data:image/png;base64,***",
            "data:image/png;base64,",
        ] {
            assert!(
                matches!(decode_data_url(url), Err(ImageProblem::Invalid(_))),
                "{url}"
            );
        }
        let huge = format!(
            "data:image/png;base64,{}",
            "A".repeat(MAX_IMAGE_BYTES / 3 * 4 + 8)
        );
        assert!(matches!(
            decode_data_url(&huge),
            Err(ImageProblem::TooLarge(_))
        ));
    }
}
