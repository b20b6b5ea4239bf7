//! Deterministic embedding vectors and their base64 form.

use serde_json::Value;

/// A unit vector of `dimensions` floats that depends only on `input`, so the
/// same text always embeds the same way and different texts (almost surely)
/// differ.
pub(crate) fn vector(input: &Value, dimensions: usize) -> Vec<f32> {
    let text = match input {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut state = fnv1a(text.as_bytes()) | 1;
    let mut values: Vec<f32> = (0..dimensions)
        .map(|_| {
            // Xorshift64*: small, fast and plenty random for test vectors.
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let bits = state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40;
            (bits as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    let norm = values.iter().map(|v| v * v).sum::<f32>().sqrt();
    if norm > 0.0 {
        values.iter_mut().for_each(|v| *v /= norm);
    }
    values
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The vector as OpenAI's `encoding_format: "base64"` sends it: little-endian
/// 32-bit floats, base64 encoded. The `openai` SDKs ask for this by default.
pub(crate) fn base64(values: &[f32]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for group in bytes.chunks(3) {
        let n = group
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= group.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn vectors_are_deterministic_unit_length_and_distinct() {
        let a = vector(&json!("hello"), 8);
        assert_eq!(a, vector(&json!("hello"), 8));
        assert_ne!(a, vector(&json!("world"), 8));
        let norm: f32 = a.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "{norm}");
    }

    #[test]
    fn base64_matches_known_encodings() {
        assert_eq!(base64(&[]), "");
        // 1.0f32 is 00 00 80 3f little-endian.
        assert_eq!(base64(&[1.0]), "AACAPw==");
        assert_eq!(base64(&[1.0, 1.0]), "AACAPwAAgD8=");
    }
}
